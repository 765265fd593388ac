import { UserError } from '@catdog/errors';

/** A backend that was asked for cannot be used. The message names the cause and the fix. */
export class BackendUnavailableError extends UserError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { code: 'backend-unavailable', cause: options?.cause });
    this.name = 'BackendUnavailableError';
  }
}
