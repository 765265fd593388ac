// The service's one authentication: a shared bearer token on every call (the health check excepted).
import { createHash, timingSafeEqual } from 'node:crypto';
import { CallFailure, type ServerCall, Status } from './grpc-server.js';

/** Returns when the call may go on; else throws UNAUTHENTICATED. */
export type CallGuard = (call: ServerCall) => void;

/** Admits calls that carry `authorization: Bearer <token>`, or every call when `token` is null. */
export function tokenGuard(token: string | null, log: (line: string) => void): CallGuard {
  if (token === null) return () => {};
  // Compared as digests: equal lengths for timingSafeEqual, and nothing learned from how long the check takes.
  const expected = sha256(token);
  return (call) => {
    const header = call.metadata.authorization;
    const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : null;
    if (given !== null && timingSafeEqual(sha256(given), expected)) return;
    log(`augment serve: refused a call from ${call.peer}: ${given === null ? 'no token' : 'wrong token'}`);
    throw new CallFailure(Status.UNAUTHENTICATED, 'missing or wrong token');
  };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
