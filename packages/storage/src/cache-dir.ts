// The user's cache folder, one root for everything catdog caches on a machine (kernel plans, downloaded weights,
// extracted features of remote runs): CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog, else ~/.cache/catdog.
// (@catdog/backend resolves its plan cache the same way, without depending on this package.)
import { homedir } from 'node:os';
import { join } from 'node:path';

/** `<cache root>/<parts…>`; the root from CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog, else ~/.cache/catdog. */
export function userCacheDir(...parts: string[]): string {
  const root = process.env.CATDOG_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'catdog');
  return join(root, ...parts);
}
