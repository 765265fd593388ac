// One-line descriptions of storage failures, as StorageErrors carrying a typed code.
import { UserError, systemCodeOf, type ErrorCode } from '@catdog/errors';

/** A storage operation that failed; `message` names the URL and the cause in one line. */
export class StorageError extends UserError {
  readonly url: string;
  constructor(url: string, code: ErrorCode | (string & {}), cause: string, options?: { cause?: unknown }) {
    super(`${url}: ${cause}`, { code, cause: options?.cause });
    this.name = 'StorageError';
    this.url = url;
  }
}

export function isNotFound(err: unknown): boolean {
  if (err instanceof StorageError) return err.code === 'not-found';
  const e = err as { code?: string; name?: string } | undefined;
  return e?.code === 'ENOENT' || e?.name === 'NoSuchKey' || e?.name === 'NotFound';
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'TimeoutError',
  'RequestTimeout',
]);

/** Maps an S3 SDK (or network) error to a short cause code and a human phrase. */
export function describeS3Error(err: unknown, endpoint?: string): { code: string; cause: string } {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  const name = e?.name ?? '';
  const status = e?.$metadata?.httpStatusCode;
  const code = systemCodeOf(err) ?? '';
  if (NETWORK_CODES.has(code) || NETWORK_CODES.has(name)) {
    return { code: 'unreachable', cause: `endpoint ${endpoint ?? '(AWS default)'} unreachable (${code || name})` };
  }
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(e?.message ?? '')) {
    return {
      code: 'credentials',
      cause: 'no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role)',
    };
  }
  if (/Region is missing/i.test(e?.message ?? '')) {
    return { code: 'config', cause: 'no AWS region configured (set AWS_REGION, a profile region, or --s3-region)' };
  }
  if (name === 'NoSuchBucket') return { code: 'no-such-bucket', cause: 'bucket does not exist (NoSuchBucket)' };
  // Rejected keys come with HTTP 403 too: named before the status decides.
  if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'ExpiredToken') {
    return { code: 'credentials', cause: `credentials rejected (${name})` };
  }
  // A HEAD answer has no body, so no error code: a 403 there may be a policy or a rejected key.
  if (status === 403 && (!name || name === 'Unknown' || name === 'Forbidden'))
    return { code: 'access-denied', cause: 'access denied or credentials rejected (HTTP 403 without a reason)' };
  if (name === 'AccessDenied' || status === 403) {
    return { code: 'access-denied', cause: `access denied (${name || 'HTTP 403'})` };
  }
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return { code: 'not-found', cause: 'not found' };
  if (name === 'SlowDown' || status === 503)
    return { code: 'throttled', cause: `throttled by the server after retries (${name})` };
  const message = (e?.message ?? String(err)).split('\n')[0];
  return {
    code: name || code || 'error',
    cause: `${name || code || 'error'}: ${message}${status ? ` (HTTP ${status})` : ''}`,
  };
}
