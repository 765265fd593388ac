// The service's one authentication: a shared bearer token on every call (the health check excepted).
import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { CallStatus } from './call-status.js';

/** True when the call may go on; else it has answered UNAUTHENTICATED through `refuse`. */
export type CallGuard = (
  call: { metadata: grpc.Metadata; getPeer(): string },
  refuse: (status: CallStatus) => void,
) => boolean;

/** Admits calls that carry `authorization: Bearer <token>`, or every call when `token` is null. */
export function tokenGuard(token: string | null, log: (line: string) => void): CallGuard {
  if (token === null) return () => true;
  // Compared as digests: equal lengths for timingSafeEqual, and nothing learned from how long the check takes.
  const expected = sha256(token);
  return (call, refuse) => {
    const header = call.metadata.get('authorization')[0];
    const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : null;
    if (given !== null && timingSafeEqual(sha256(given), expected)) return true;
    log(`augment serve: refused a call from ${call.getPeer()}: ${given === null ? 'no token' : 'wrong token'}`);
    refuse({ code: grpc.status.UNAUTHENTICATED, details: 'missing or wrong token' });
    return false;
  };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
