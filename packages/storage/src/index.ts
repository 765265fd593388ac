// @catdog/storage: one API over local directories and s3://bucket/prefix URLs.
import { isAbsolute, resolve } from 'node:path';
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { Storage, StorageOptions } from './types.js';
import { UserError } from '@catdog/errors';

export { StorageError, isNotFound, describeS3Error } from './errors.js';
export { LocalStorage, TEMP_MARKER } from './local.js';
export { S3Storage, parseS3Url, resolveS3Options, type S3Location, type ResolvedS3Options } from './s3.js';
export type { Storage, StorageOptions, StorageEntry, ByteRange } from './types.js';

export function isS3Url(url: string): boolean {
  return url.startsWith('s3://');
}

/**
 * Resolves a user-given location: s3:// URLs unchanged, local paths absolute against `base`
 * (default INIT_CWD, the directory the user ran npm/npx/nx from, then the process cwd).
 */
export function resolveLocation(location: string, base: string = process.env.INIT_CWD ?? process.cwd()): string {
  if (isS3Url(location)) return location;
  if (location.startsWith('file://')) return new URL(location).pathname;
  return isAbsolute(location) ? location : resolve(base, location);
}

/** Opens a local directory path or an s3://bucket/prefix URL. Local relative paths resolve against the process cwd. */
export function openStorage(url: string, options: StorageOptions = {}): Storage {
  if (isS3Url(url)) return new S3Storage(url, options);
  if (url.startsWith('file://')) return new LocalStorage(new URL(url).pathname);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw new UserError(`${url}: unsupported URL scheme (use a local path or s3://bucket/prefix)`, { code: 'unsupported-scheme' });
  }
  return new LocalStorage(url);
}

/** Joins '/'-separated path segments, dropping empty ones. */
export function joinPath(...parts: string[]): string {
  return parts
    .flatMap((p) => p.split('/'))
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}
