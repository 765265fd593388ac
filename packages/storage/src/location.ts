// The one place that decides what a user-given location is: an s3://bucket/prefix URL or a local path.
// Anything that looks like a URL of another scheme (gs://, S3://, s3:/bucket, http://, file://host/…) is refused
// here, before anything is opened or created, so a typo never becomes a folder named `gs:`.
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '@catdog/errors';

export type Location = { kind: 's3'; url: string } | { kind: 'local'; path: string };

const SUPPORTED = 'use a local path or s3://bucket/prefix';

function refuse(location: string, why: string): never {
  throw new UserError(`${location}: ${why}`, { code: 'unsupported-scheme' });
}

/**
 * Classifies a location without touching the filesystem or the network. Throws a UserError with code
 * 'unsupported-scheme' for anything that names a scheme other than lowercase `s3://` or a local `file:///path`.
 * A local file or folder whose name really starts with `word:` can be given as `./word:…`.
 */
export function parseLocation(location: string): Location {
  if (location === '') refuse('(empty location)', SUPPORTED);
  // A scheme is two or more letters (so Windows drive letters like C:\ stay paths) followed by ':'.
  const m = /^([A-Za-z][A-Za-z0-9+.-]+):(.*)$/s.exec(location);
  if (!m) return { kind: 'local', path: location };
  const [, scheme, rest] = m;
  if (scheme === 's3') {
    if (!rest.startsWith('//')) {
      // s3:/bucket/x, s3:bucket/x
      refuse(location, `malformed S3 URL; did you mean s3://${rest.replace(/^\/+/, '')}?`);
    }
    const bucket = /^\/\/([^/]*)/.exec(rest)![1];
    if (!bucket) refuse(location, 'S3 URL without a bucket (expected s3://bucket/prefix)');
    // Lenient on purpose (legacy buckets and S3-compatible stores allow more than today's AWS rules).
    if (!/^[A-Za-z0-9._-]+$/.test(bucket)) refuse(location, `"${bucket}" is not a valid S3 bucket name`);
    return { kind: 's3', url: location };
  }
  if (scheme.toLowerCase() === 's3') {
    // Refused rather than guessed: URL schemes are case-insensitive by RFC, but S3 tools write s3:// and a
    // silently accepted variant would make two spellings of one dataset.
    refuse(location, `unsupported URL scheme "${scheme}:"; did you mean s3://${rest.replace(/^\/+/, '')}?`);
  }
  if (scheme === 'file') {
    // Only the absolute local form: file:///abs/path (or file://localhost/abs/path).
    if (!/^\/\/(localhost)?\//.test(rest))
      refuse(location, `unsupported file URL (expected file:///absolute/path; ${SUPPORTED})`);
    try {
      return { kind: 'local', path: fileURLToPath(location.replace(/^file:\/\/localhost\//, 'file:///')) };
    } catch (err) {
      refuse(location, `unsupported file URL (${(err as Error).message})`);
    }
  }
  const hint =
    scheme.toLowerCase() === 'gs'
      ? ' (Google Cloud Storage is reachable through its S3-compatible endpoint: s3:// with --s3-endpoint)'
      : '';
  refuse(
    location,
    `unsupported URL scheme "${scheme}:"${hint}; ${SUPPORTED} (prefix a local name that contains ':' with ./)`,
  );
}

export function isS3Url(url: string): boolean {
  return url.startsWith('s3://');
}

/**
 * Resolves a user-given location: s3:// URLs unchanged, local paths absolute against `base`
 * (default INIT_CWD, the directory the user ran npm/npx/nx from, then the process cwd).
 * Throws UserError 'unsupported-scheme' (see parseLocation) before anything is created.
 */
export function resolveLocation(location: string, base: string = process.env.INIT_CWD ?? process.cwd()): string {
  const loc = parseLocation(location);
  if (loc.kind === 's3') return loc.url;
  return isAbsolute(loc.path) ? loc.path : resolve(base, loc.path);
}
