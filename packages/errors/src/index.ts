// @catdog/errors: the errors users see. Callers branch on `code`, never on message text.

/**
 * Machine-readable causes. Storage failures keep the codes @catdog/storage has always used
 * ('not-found', 'access-denied', ...); the others name the layer that raised them.
 */
export type ErrorCode =
  // storage
  | 'not-found'
  | 'access-denied'
  | 'no-such-bucket'
  | 'unreachable'
  | 'credentials'
  | 'config'
  | 'throttled'
  | 'unsupported-scheme'
  | 'io'
  // dataset
  | 'no-manifest'
  | 'bad-manifest'
  | 'bad-dataset'
  | 'bad-source'
  | 'missing-parts'
  | 'missing-shard'
  | 'corrupt-shard'
  | 'aborted'
  // models and training
  | 'bad-weights'
  | 'backend-unavailable'
  | 'nan-loss'
  | 'out-of-memory'
  | 'stack-overflow'
  | 'bad-config'
  | 'bad-run'
  // command lines
  | 'usage'
  // anything else a user can act on from the message alone
  | 'user';

/** An error whose message is meant for the user: CLIs print `error: <message>` and exit 1. */
export class UserError extends Error {
  readonly code: ErrorCode | (string & {});
  constructor(message: string, options: { code?: ErrorCode | (string & {}); cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'UserError';
    this.code = options.code ?? 'user';
  }
}

/** A command line that cannot be run as given (unknown flag, bad value): CLIs exit 2. */
export class UsageError extends UserError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { ...options, code: 'usage' });
    this.name = 'UsageError';
  }
}

/** True when `err` is a UserError, and (when given) carries `code`. */
export function isUserError(err: unknown, code?: ErrorCode): err is UserError {
  return err instanceof UserError && (code === undefined || err.code === code);
}

/** The exit code every CLI uses: 0 ok, 1 failure, 2 usage. */
export function exitCodeOf(err: unknown): 1 | 2 {
  // A location no storage can open is a bad command line, wherever it was caught (docs/errors.md).
  return err instanceof UsageError || isUserError(err, 'unsupported-scheme') ? 2 : 1;
}

/** The `code` of an error from Node, the AWS SDK or an AggregateError (happy-eyeballs connects nest theirs). */
export function systemCodeOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; Code?: unknown; cause?: unknown; errors?: unknown[] } | undefined;
  if (!e || typeof e !== 'object') return undefined;
  if (typeof e.code === 'string') return e.code;
  if (typeof e.Code === 'string') return e.Code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const c = systemCodeOf(inner);
      if (c) return c;
    }
  }
  return e.cause ? systemCodeOf(e.cause) : undefined;
}

/** One line for the user: a UserError's message as it is, other errors' first line with their system code. */
export function formatError(err: unknown): string {
  if (err instanceof UserError) return err.message;
  if (err instanceof Error) {
    const code = systemCodeOf(err);
    const first = err.message.split('\n')[0] || err.name;
    return code && !first.includes(code) ? `${first} (${code})` : first;
  }
  return String(err);
}

/** The debug switch every CLI honours: CATDOG_DEBUG=1 prints stacks. */
export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.CATDOG_DEBUG;
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

/** Prints `error: <message>` (and the stack under CATDOG_DEBUG) to stderr and returns the exit code to use. */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): 1 | 2 {
  stderr.write(`error: ${formatError(err)}\n`);
  if (debugEnabled() && err instanceof Error && err.stack) stderr.write(`${err.stack}\n`);
  return exitCodeOf(err);
}
