// A fault-injecting HTTP proxy on 127.0.0.1 in front of a real S3 server (s3rver): throttling (503 SlowDown),
// 500 InternalError, connection resets before the response and in the middle of a body, stalls, and bodies cut
// short. Which request gets which fault is a pure function of the seed and the request (method, path, query
// and how many times that same request was seen), so a seed reproduces the same schedule whatever the timing.
import http from 'node:http';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';

export type FaultKind = 'slowdown' | 'internal' | 'reset-before' | 'reset-mid-body' | 'stall' | 'truncate';
export const ALL_FAULTS: FaultKind[] = ['slowdown', 'internal', 'reset-before', 'reset-mid-body', 'stall', 'truncate'];

export interface FaultProxyOptions {
  /** The real server, e.g. http://127.0.0.1:40123. */
  upstream: string;
  seed: number;
  /** Chance that an attempt gets a fault, 0–1. */
  rate: number;
  kinds?: FaultKind[];
  /**
   * At most this many faults for one request (same method, path and query): later attempts pass through, so a
   * client with more attempts than this always gets through. Default 2.
   */
  maxFaultsPerRequest?: number;
  /** How long a stall holds a request before dropping it (the client should time out first). Default 5000 ms. */
  stallMs?: number;
  /** Requests that always fail with 500 (to test the clear-failure path), whatever the schedule. */
  alwaysFail?: { method?: string; path: RegExp };
}

export interface InjectedFault {
  kind: FaultKind;
  method: string;
  path: string;
}

export interface FaultProxy {
  endpoint: string;
  /** Faults injected so far, in the order they happened. */
  injected: InjectedFault[];
  /** Requests seen so far. */
  requests: number;
  stop(): Promise<void>;
}

/** The request's identity for the schedule: signatures, dates and upload ids differ per run, so they are left out. */
function requestKey(method: string, url: string): string {
  const u = new URL(url, 'http://proxy');
  const params = [...u.searchParams.entries()]
    .filter(([k]) => !/^x-amz-/i.test(k) && k !== 'uploadId')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${method} ${u.pathname}?${params.map(([k, v]) => `${k}=${v}`).join('&')}`;
}

function unit(seed: number, text: string): number {
  return createHash('sha256').update(`${seed}\0${text}`).digest().readUInt32BE(0) / 2 ** 32;
}

function errorXml(code: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by s3-fault-proxy</Message></Error>`;
}

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  const kinds = options.kinds ?? ALL_FAULTS;
  const maxFaults = options.maxFaultsPerRequest ?? 2;
  const stallMs = options.stallMs ?? 5000;
  const attempts = new Map<string, number>();
  const faults = new Map<string, number>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state: FaultProxy = { endpoint: '', injected: [], requests: 0, stop: async () => {} };

  const pick = (method: string, url: string): FaultKind | undefined => {
    const key = requestKey(method, url);
    const n = attempts.get(key) ?? 0;
    attempts.set(key, n + 1);
    if (
      options.alwaysFail &&
      (!options.alwaysFail.method || options.alwaysFail.method === method) &&
      options.alwaysFail.path.test(new URL(url, 'http://proxy').pathname)
    ) {
      return 'internal';
    }
    if ((faults.get(key) ?? 0) >= maxFaults) return undefined;
    if (unit(options.seed, `${key}#${n}`) >= options.rate) return undefined;
    let kind = kinds[Math.floor(unit(options.seed, `${key}#${n}/kind`) * kinds.length)];
    // Only a GET has a body worth cutting; elsewhere those faults become a reset before the response.
    if ((kind === 'reset-mid-body' || kind === 'truncate') && method !== 'GET') kind = 'reset-before';
    faults.set(key, (faults.get(key) ?? 0) + 1);
    return kind;
  };

  const server = http.createServer((req, res) => {
    state.requests++;
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const fault = pick(method, url);
    if (fault) state.injected.push({ kind: fault, method, path: new URL(url, 'http://proxy').pathname });
    if (fault === 'slowdown' || fault === 'internal') {
      req.resume();
      req.on('end', () => {
        const [status, code] = fault === 'slowdown' ? [503, 'SlowDown'] : [500, 'InternalError'];
        res.writeHead(status, { 'content-type': 'application/xml', connection: 'close' });
        res.end(errorXml(code));
      });
      return;
    }
    if (fault === 'reset-before') {
      req.socket.resetAndDestroy();
      return;
    }
    if (fault === 'stall') {
      // Hold the request without a byte of answer; the client's idle timeout must give up and retry.
      req.resume();
      const t = setTimeout(() => {
        timers.delete(t);
        req.socket.destroy();
      }, stallMs);
      timers.add(t);
      req.socket.once('close', () => {
        clearTimeout(t);
        timers.delete(t);
      });
      return;
    }
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method, path: url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        const length = Number(up.headers['content-length'] ?? 0);
        if ((fault === 'reset-mid-body' || fault === 'truncate') && length > 1) {
          // Half the body (as announced by Content-Length), then a reset or a clean close.
          const cut = Math.max(1, Math.floor(length / 2));
          let sent = 0;
          up.on('data', (chunk: Buffer) => {
            if (sent >= cut) return;
            const part = chunk.subarray(0, cut - sent);
            sent += part.length;
            res.write(part);
            if (sent >= cut) {
              up.destroy();
              setImmediate(() => (fault === 'truncate' ? res.socket?.end() : res.socket?.resetAndDestroy()));
            }
          });
          return;
        }
        up.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  state.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.stop = async () => {
    for (const t of timers) clearTimeout(t);
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  };
  return state;
}
