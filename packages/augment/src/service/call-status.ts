// How a failed call is answered: the gRPC status code a client can act on, and the message naming the cause.
import * as grpc from '@grpc/grpc-js';
import { formatError, UserError } from '@catdog/errors';
import { BadRequest } from './protocol.js';

export type CallStatus = { code: grpc.status; details: string };

export function statusOf(err: unknown): CallStatus {
  if (err instanceof BadRequest) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  if (err instanceof UserError) {
    const notFound = err.code === 'not-found' || err.code === 'no-manifest' || err.code === 'no-such-bucket';
    return { code: notFound ? grpc.status.NOT_FOUND : grpc.status.FAILED_PRECONDITION, details: err.message };
  }
  return { code: grpc.status.INTERNAL, details: formatError(err) };
}
