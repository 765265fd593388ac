// @catdog/storage: one API over local directories and s3://bucket/prefix URLs.
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { Storage, StorageOptions } from './types.js';
import { parseLocation } from './location.js';

export { userCacheDir } from './cache-dir.js';
export { StorageError, isNotFound, describeS3Error } from './errors.js';
export { LocalStorage, TEMP_MARKER, parseTempName, type TempOwner } from './local.js';
export { parseLocation, resolveLocation, isS3Url, type Location } from './location.js';
export {
  removeStaleWrites,
  DEFAULT_STALE_AFTER_MS,
  type StaleCleanupOptions,
  type StaleCleanupReport,
} from './stale.js';
export { S3Storage, parseS3Url, resolveS3Options, type S3Location, type ResolvedS3Options } from './s3.js';
export type { Storage, StorageOptions, StorageEntry, ByteRange } from './types.js';

/**
 * Opens a local directory path or an s3://bucket/prefix URL. Local relative paths resolve against the process cwd.
 * Any other scheme (or a malformed s3 URL) is a UserError 'unsupported-scheme', decided by parseLocation.
 */
export function openStorage(url: string, options: StorageOptions = {}): Storage {
  const loc = parseLocation(url);
  return loc.kind === 's3' ? new S3Storage(loc.url, options) : new LocalStorage(loc.path);
}

/** Joins '/'-separated path segments, dropping empty ones. */
export function joinPath(...parts: string[]): string {
  return parts
    .flatMap((p) => p.split('/'))
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}
