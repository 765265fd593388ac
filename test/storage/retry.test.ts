// Faults between the client and a real S3 server: throttling, 5xx and a connection cut mid-body are retried.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { openStorage } from '@catdog/storage';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';

let s3: LoopbackS3;
let proxy: http.Server;
let proxyUrl: string;
const seen: { method: string; url: string; range?: string; injected?: string }[] = [];
/** Faults to inject, consumed in order by matching requests. */
const faults: { method: string; match: RegExp; kind: 'slowdown' | '500' | 'cut' }[] = [];

before(async () => {
  s3 = await startLoopbackS3(['retry-bucket']);
  const upstream = new URL(s3.endpoint);
  proxy = http.createServer((req, res) => {
    const i = faults.findIndex((f) => f.method === req.method && f.match.test(req.url ?? ''));
    const fault = i >= 0 ? faults.splice(i, 1)[0] : undefined;
    seen.push({
      method: req.method!,
      url: req.url!,
      range: req.headers.range as string | undefined,
      injected: fault?.kind,
    });
    if (fault?.kind === 'slowdown' || fault?.kind === '500') {
      req.resume();
      const [status, code] = fault.kind === 'slowdown' ? [503, 'SlowDown'] : [500, 'InternalError'];
      res.writeHead(status, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`);
      return;
    }
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode!, up.headers);
        if (fault?.kind === 'cut') {
          // Send part of the body, then drop the connection.
          let sent = 0;
          up.on('data', (chunk: Buffer) => {
            if (sent > 100_000) return;
            res.write(chunk);
            sent += chunk.length;
            if (sent > 100_000) setTimeout(() => res.socket?.destroy(), 20);
          });
        } else up.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

after(async () => {
  proxy?.closeAllConnections();
  await new Promise((r) => proxy?.close(r));
  await s3?.stop();
});

test('throttling (503 SlowDown) and 5xx are retried with backoff; a body cut mid-stream resumes with a ranged GET', async () => {
  const storage = openStorage('s3://retry-bucket/r', { endpoint: proxyUrl, maxAttempts: 4 });
  faults.push({ method: 'PUT', match: /a\.txt/, kind: 'slowdown' });
  await storage.write('a.txt', 'hello');
  assert.deepEqual(
    seen.filter((s) => s.method === 'PUT').map((s) => s.injected),
    ['slowdown', undefined],
  );

  faults.push({ method: 'GET', match: /list-type=2/, kind: '500' });
  const listed = [];
  for await (const e of storage.list()) listed.push(e.path);
  assert.deepEqual(listed, ['a.txt']);
  assert.equal(seen.filter((s) => s.injected === '500').length, 1);

  const big = randomBytes(1_000_000);
  await storage.write('big.bin', big);
  faults.push({ method: 'GET', match: /big\.bin/, kind: 'cut' });
  const back = await storage.read('big.bin');
  assert.equal(back.length, big.length);
  assert.ok(back.equals(big));
  const gets = seen.filter((s) => s.method === 'GET' && s.url.includes('big.bin'));
  assert.equal(gets[0].injected, 'cut');
  assert.match(gets[1].range ?? '', /^bytes=\d+-$/);
  assert.ok(Number(/bytes=(\d+)-/.exec(gets[1].range!)![1]) > 100_000);
});
