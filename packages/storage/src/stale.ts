// Litter of killed writers: temp files in local directories, unfinished multipart uploads on S3.
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { Storage } from './types.js';

/** How long a write may go without progress (local: file mtime; S3: upload start) before it counts as abandoned. */
export const DEFAULT_STALE_AFTER_MS = 6 * 60 * 60 * 1000;

export interface StaleCleanupOptions {
  /** Default DEFAULT_STALE_AFTER_MS (6 h). Writers on this host that are known dead are cleaned regardless. */
  staleAfterMs?: number;
  now?: number;
}

export interface StaleCleanupReport {
  /** Paths (relative to the root) of temp files removed or multipart uploads aborted. */
  removed: string[];
  /** Paths of writes that may still be in progress, left alone. */
  kept: string[];
  /** False when the store cannot list unfinished uploads (s3rver has no ListMultipartUploads). */
  supported: boolean;
}

/**
 * Removes what killed writers left under `storage`, never what a live writer is still writing: local temp files
 * (`*.catdog-tmp-*`) of dead processes on this host, or of any writer idle for `staleAfterMs`; on S3, multipart
 * uploads started more than `staleAfterMs` ago.
 */
export async function removeStaleWrites(
  storage: Storage,
  options: StaleCleanupOptions = {},
): Promise<StaleCleanupReport> {
  const after = options.staleAfterMs ?? DEFAULT_STALE_AFTER_MS;
  const now = options.now ?? Date.now();
  if (storage instanceof LocalStorage) return { ...(await storage.removeStaleTemp(after, now)), supported: true };
  if (storage instanceof S3Storage) {
    const r = await storage.abortStaleUploads(after, now);
    return { removed: r.aborted, kept: r.kept, supported: r.supported };
  }
  return { removed: [], kept: [], supported: false };
}
