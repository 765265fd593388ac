// Errors meant for users, and one-line descriptions of storage failures.

/** An error whose message is meant for the user: CLIs print `error: <message>` and exit 1. */
export class UserError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UserError';
  }
}

/** A storage operation that failed; `message` names the URL and the cause in one line. */
export class StorageError extends UserError {
  readonly url: string;
  /** Short machine-readable cause: 'unreachable' | 'access-denied' | 'no-such-bucket' | 'not-found' | 'credentials' | 'io' | ... */
  readonly code: string;
  constructor(url: string, code: string, cause: string, options?: { cause?: unknown }) {
    super(`${url}: ${cause}`, options);
    this.name = 'StorageError';
    this.url = url;
    this.code = code;
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

function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; name?: unknown; Code?: unknown; errno?: unknown; cause?: unknown; errors?: unknown[] } | undefined;
  if (!e || typeof e !== 'object') return undefined;
  if (typeof e.code === 'string') return e.code;
  if (typeof e.Code === 'string') return e.Code;
  // AggregateError from happy-eyeballs connects carries the codes in `errors`.
  if (Array.isArray(e.errors)) for (const inner of e.errors) {
    const c = errorCode(inner);
    if (c) return c;
  }
  if (e.cause) return errorCode(e.cause);
  return undefined;
}

/** Maps an S3 SDK (or network) error to a short cause code and a human phrase. */
export function describeS3Error(err: unknown, endpoint?: string): { code: string; cause: string } {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  const name = e?.name ?? '';
  const status = e?.$metadata?.httpStatusCode;
  const code = errorCode(err) ?? '';
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
  if (name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
    return { code: 'access-denied', cause: `access denied (${name || 'HTTP 403'})` };
  }
  if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'ExpiredToken') {
    return { code: 'credentials', cause: `credentials rejected (${name})` };
  }
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return { code: 'not-found', cause: 'not found' };
  if (name === 'SlowDown' || status === 503) return { code: 'throttled', cause: `throttled by the server after retries (${name})` };
  const message = (e?.message ?? String(err)).split('\n')[0];
  return { code: name || code || 'error', cause: `${name || code || 'error'}: ${message}${status ? ` (HTTP ${status})` : ''}` };
}

/** One line for the user: the URL and the cause for storage errors, the message otherwise. */
export function formatError(err: unknown): string {
  if (err instanceof UserError) return err.message;
  if (err instanceof Error) {
    const code = errorCode(err);
    const first = err.message.split('\n')[0] || err.name;
    return code && !first.includes(code) ? `${first} (${code})` : first;
  }
  return String(err);
}
