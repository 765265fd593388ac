// How a failed call is answered: the gRPC status code a client can act on, and the message naming the cause.
import { formatError, UserError } from '@catdog/errors';
import { CallFailure, Status } from './grpc-server.js';
import { BadRequest } from './protocol.js';

export function failureOf(err: unknown): CallFailure {
  if (err instanceof CallFailure) return err;
  if (err instanceof BadRequest) return new CallFailure(Status.INVALID_ARGUMENT, err.message);
  if (err instanceof UserError) {
    const notFound = err.code === 'not-found' || err.code === 'no-manifest' || err.code === 'no-such-bucket';
    return new CallFailure(notFound ? Status.NOT_FOUND : Status.FAILED_PRECONDITION, err.message);
  }
  return new CallFailure(Status.INTERNAL, formatError(err));
}
