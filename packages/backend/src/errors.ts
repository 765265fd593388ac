/**
 * A backend that was asked for cannot be used. The message names the cause and the fix; CLIs
 * print it as `error: <message>` and exit 1 (its `name` is 'UserError', as @catdog/storage's).
 */
export class BackendUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UserError';
  }
}
