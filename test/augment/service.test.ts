// The augmentation service on loopback, servers as real `augment serve` subprocesses: the same batches as in process,
// a server killed mid-epoch, tokens, malformed and oversized requests, a stalled client.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { BOOK_AUGMENTATION, createBatchStream, type Batch, type BatchStreamOptions } from '@catdog/augment';
import { isUserError } from '@catdog/errors';
import { prepareDataset } from '@catdog/dataset';
import { killAugmentServes, startAugmentServe, type AugmentServeProcess } from '../helpers/augment-servers.js';
import { kaggleTrainDir } from '../helpers/fixtures.js';

const TOKEN = 'test-token-4f1c';
let dir: string;
let images: string;
let tokenFile: string;
const servers: AugmentServeProcess[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'catdog-augment-service-'));
  images = join(dir, 'images');
  // 24 real photos and one corrupt file (skipped the same way in process and remotely)
  const names = Array.from({ length: 12 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`]).flat();
  mkdirSync(images);
  for (const n of names) copyFileSync(join(kaggleTrainDir, n), join(images, n));
  writeFileSync(join(images, 'cat.999.jpg'), Buffer.alloc(2000, 7));
  tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
});

after(() => {
  killAugmentServes(servers);
  rmSync(dir, { recursive: true, force: true });
});

type Server = AugmentServeProcess;

/** `augment serve --workers 1` with the test's token on 127.0.0.1 (port 0 = any), once it is listening. */
async function startServer(args: string[] = [], port = 0): Promise<Server> {
  const server = await startAugmentServe({ tokenFile, port, args });
  servers.push(server);
  return server;
}

const digest = (b: Batch) =>
  createHash('sha256')
    .update(`${b.epoch}/${b.index}/${b.keys.join(',')}/${Array.from(b.ys).join(',')}`)
    .update(new Uint8Array(b.xs.buffer, b.xs.byteOffset, b.xs.byteLength))
    .digest('hex');

const recipe = (): Omit<BatchStreamOptions, 'source'> => ({
  targetSize: [32, 40],
  batchSize: 5,
  augment: BOOK_AUGMENTATION,
  seed: 7,
  epochs: 2,
});

async function digests(
  options: BatchStreamOptions,
  onBatch?: (b: Batch, i: number) => void | Promise<void>,
): Promise<{ digests: string[]; keys: Map<number, string[]> }> {
  const stream = await createBatchStream(options);
  const out: string[] = [];
  const keys = new Map<number, string[]>();
  let i = 0;
  for await (const b of stream) {
    out.push(digest(b));
    keys.set(b.epoch, [...(keys.get(b.epoch) ?? []), ...b.keys]);
    await onBatch?.(b, i++);
  }
  return { digests: out, keys };
}

let local: { digests: string[]; keys: Map<number, string[]> };
let pair: Server[];

test('two servers deliver exactly the in-process batches, batch for batch', async () => {
  pair = await Promise.all([startServer(), startServer()]);
  local = await digests({ source: images, ...recipe(), workers: 2 });
  assert.equal(local.digests.length, 10); // 24 decodable + 1 corrupt = 25 samples, 5 batches × 2 epochs
  const stream = await createBatchStream({
    source: images,
    ...recipe(),
    augmentService: { addresses: pair.map((s) => s.address).join(','), token: TOKEN },
  });
  assert.equal(stream.size, 25);
  assert.equal(stream.stepsPerEpoch, 5);
  assert.equal(stream.workers, 2);
  const remote: string[] = [];
  const skipped: string[] = [];
  for await (const b of stream) {
    remote.push(digest(b));
    skipped.push(...b.skipped.map((s) => s.key));
  }
  assert.deepEqual(remote, local.digests);
  assert.deepEqual(skipped, ['cat.999', 'cat.999']);
  const servers = stream.stats().servers!;
  assert.equal(servers.length, 2);
  assert.ok(
    servers.every((s) => s.batches > 0),
    `both servers made batches: ${JSON.stringify(servers)}`,
  );
});

test('a prepared split: remote batches equal the in-process ones, in memory and streamed, and from a mid-epoch start', async () => {
  const src = join(dir, 'split-src');
  mkdirSync(src);
  for (const n of Array.from({ length: 8 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`]).flat())
    copyFileSync(join(kaggleTrainDir, n), join(src, n));
  const prepared = join(dir, 'prepared');
  // 12 train samples in 6 shards of 2: 3 batches of 5 per epoch.
  await prepareDataset({
    source: src,
    out: prepared,
    train: 6,
    validation: 1,
    test: 1,
    resize: { width: 48, height: 48 },
    samplesPerShard: 2,
  });
  const options = { source: prepared, ...recipe(), windowShards: 2, log: () => {} };
  const streamed = await digests({ ...options, workers: 2, memoryBudget: 0 });
  const inMemory = await digests({ ...options, workers: 2, memoryBudget: Infinity });
  assert.equal(streamed.digests.length, 6);
  assert.deepEqual(inMemory.digests, streamed.digests);
  const service = { addresses: pair.map((s) => s.address).join(','), token: TOKEN };
  const remote = await digests({ ...options, augmentService: service });
  assert.deepEqual(remote.digests, streamed.digests);
  // Epoch 1 from position 5 (its second batch): the tail of the uninterrupted stream, remote and in process.
  const tail = streamed.digests.slice(4);
  assert.deepEqual(
    (await digests({ ...options, start: { epoch: 1, position: 5 }, epochs: 1, augmentService: service })).digests,
    tail,
  );
  assert.deepEqual(
    (await digests({ ...options, start: { epoch: 1, position: 5 }, epochs: 1, workers: 2, memoryBudget: 0 })).digests,
    tail,
  );
  assert.deepEqual((await digests({ ...options, startBatch: 4, augmentService: service })).digests, tail);

  // A server that serves the split from a window of shards (--memory-budget 0), alone and beside one that holds it
  // in memory: the same batches, and the two agree on the dataset.
  const windowed = await startServer(['--memory-budget', '0']);
  try {
    const alone = { addresses: windowed.address, token: TOKEN };
    assert.deepEqual((await digests({ ...options, augmentService: alone })).digests, streamed.digests);
    assert.match(windowed.stderr(), /serving from a window of shards/);
    const mixed = { addresses: `${windowed.address},${pair[0].address}`, token: TOKEN };
    assert.deepEqual((await digests({ ...options, augmentService: mixed })).digests, streamed.digests);
    assert.deepEqual((await digests({ ...options, startBatch: 4, augmentService: alone })).digests, tail);
  } finally {
    windowed.process.kill('SIGTERM');
  }
});

test('a server killed mid-epoch: its batches go to the other, then to its replacement; every sample exactly once', async () => {
  const [a, b] = pair;
  let replacement: Server | null = null;
  let aBatchesAtKill = 0;
  const stream = await createBatchStream({
    source: images,
    ...recipe(),
    epochs: 3,
    augmentService: { addresses: `${a.address},${b.address}`, token: TOKEN },
  });
  const got: string[] = [];
  const keys = new Map<number, string[]>();
  for await (const batch of stream) {
    got.push(digest(batch));
    keys.set(batch.epoch, [...(keys.get(batch.epoch) ?? []), ...batch.keys]);
    if (got.length === 2) {
      a.process.kill('SIGKILL');
      aBatchesAtKill = stream.stats().servers!.find((s) => s.address === a.address)!.batches;
    }
    if (got.length === 6) {
      replacement = await startServer([], a.port); // comes back on the same address
      // the client probes it within a few seconds and gives it work again
      for (let i = 0; i < 300 && stream.stats().servers!.find((s) => s.address === a.address)!.state !== 'up'; i++)
        await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.deepEqual(got.slice(0, 10), local.digests);
  assert.equal(got.length, 15);
  for (const [epoch, k] of keys) {
    assert.equal(k.length, 24, `epoch ${epoch}`);
    assert.equal(new Set(k).size, 24, `epoch ${epoch}: no sample twice`);
  }
  const st = stream.stats();
  assert.ok(replacement, 'replacement started');
  const aStats = st.servers!.find((s) => s.address === a.address)!;
  assert.ok(aStats.batches > aBatchesAtKill, `the replacement got work: ${JSON.stringify(st.servers)}`);
  pair = [replacement!, b];
});

test('a wrong or missing token is refused with a clear error; the server goes on', async () => {
  const addresses = pair.map((s) => s.address).join(',');
  for (const token of ['wrong', null]) {
    await assert.rejects(
      createBatchStream({ source: images, ...recipe(), augmentService: { addresses, token } }),
      (err: unknown) =>
        isUserError(err, 'access-denied') &&
        /missing or wrong token/.test((err as Error).message) &&
        !(err as Error).message.includes(TOKEN),
    );
  }
  assert.match(pair[1].stderr(), /refused a call from .*: wrong token/);
  // the standard gRPC health check (Kubernetes' grpc readiness probe) needs no token and tells nothing but SERVING
  const health = await unaryCall(pair[1].address, '/grpc.health.v1.Health/Check', null);
  assert.deepEqual([...health.reply!], [0x08, 0x01]);
  assert.ok(!pair[1].stderr().includes(TOKEN), 'the token is never logged');
});

/** A unary call with an empty request on its own grpc-js client, carrying `token` (null: none). */
async function unaryCall(
  address: string,
  path: string,
  token: string | null = TOKEN,
): Promise<{ reply?: Buffer; error?: grpc.ServiceError }> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  try {
    return await new Promise((resolve) =>
      client.makeUnaryRequest(
        path,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        md,
        (error, reply) => resolve(error ? { error } : { reply: reply! }),
      ),
    );
  } finally {
    client.close();
  }
}

/** A Batches call on its own grpc-js client (close it when done), raw bytes both ways, carrying `token`. */
function batchesCall(address: string, request: Buffer, token = TOKEN) {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 * 1024 ** 2,
  });
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const raw = (b: Buffer) => b;
  const call = client.makeServerStreamRequest('/catdog.augment.v1.Augment/Batches', raw, raw, request, md, {});
  call.on('error', () => {});
  return { client, call };
}

function rawCall(
  address: string,
  request: Buffer,
  token = TOKEN,
): Promise<{ code: grpc.status; details: string; messages: number }> {
  const { client, call } = batchesCall(address, request, token);
  return new Promise((resolve) => {
    let messages = 0;
    call.on('data', () => messages++);
    call.on('status', (s: grpc.StatusObject) => {
      client.close();
      resolve({ code: s.code, details: s.details, messages });
    });
  });
}

const validRequest = (over: Record<string, unknown> = {}) => ({
  dataset: images,
  split: 'train',
  seed: 1,
  shuffle: true,
  batchSize: 4,
  height: 16,
  width: 16,
  augment: null,
  dtype: 'float32',
  rescale: 1 / 255,
  interpolation: 'nearest',
  jpegDecoder: 'fast',
  epoch: 0,
  batches: [0],
  ...over,
});

test('malformed and oversized requests are refused; the server keeps serving', async () => {
  const address = pair[1].address;
  const garbage = await rawCall(address, Buffer.from('{not json'));
  assert.equal(garbage.code, grpc.status.INVALID_ARGUMENT);
  assert.match(garbage.details, /not a JSON document/);
  const bad = await rawCall(address, Buffer.from(JSON.stringify(validRequest({ height: -3 }))));
  assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
  assert.match(bad.details, /height must be an integer/);
  const huge = await rawCall(
    address,
    Buffer.from(JSON.stringify(validRequest({ batchSize: 4096, height: 4096, width: 4096 }))),
  );
  assert.equal(huge.code, grpc.status.INVALID_ARGUMENT);
  assert.match(huge.details, /exceeds the server's/);
  const past = await rawCall(address, Buffer.from(JSON.stringify(validRequest({ batches: [99] }))));
  assert.equal(past.code, grpc.status.INVALID_ARGUMENT);
  const oversized = await rawCall(address, Buffer.alloc(200 * 1024, 0x20));
  assert.equal(oversized.code, grpc.status.RESOURCE_EXHAUSTED);
  const missing = await rawCall(
    address,
    Buffer.from(JSON.stringify(validRequest({ dataset: join(dir, 'no-such-dataset') }))),
  );
  assert.ok([grpc.status.NOT_FOUND, grpc.status.FAILED_PRECONDITION].includes(missing.code), missing.details);
  assert.match(missing.details, /no-such-dataset/);
  // not one of the service's methods, and not gRPC at all (a plain HTTP/2 GET)
  const { error: unknown } = await unaryCall(address, '/catdog.augment.v1.Augment/NoSuchMethod');
  assert.equal(unknown?.code, grpc.status.UNIMPLEMENTED);
  assert.match(unknown.details, /unknown method \/catdog\.augment\.v1\.Augment\/NoSuchMethod/);
  const session = http2.connect(`http://${address}`);
  const httpStatus = await new Promise<unknown>((resolve, reject) => {
    const get = session.request({ ':method': 'GET', ':path': '/' });
    get.on('response', (h) => resolve(h[':status']));
    get.on('error', reject);
    get.end();
  });
  assert.equal(httpStatus, 415);
  // a client that leaves in the middle of its request (half a message prefix, then a reset)
  const half = session.request({
    ':method': 'POST',
    ':path': '/catdog.augment.v1.Augment/Batches',
    'content-type': 'application/grpc',
    authorization: `Bearer ${TOKEN}`,
  });
  half.on('error', () => {});
  half.write(Buffer.from([0, 0, 0]));
  await new Promise((r) => setTimeout(r, 100));
  half.close(http2.constants.NGHTTP2_CANCEL);
  session.close();
  const ok = await rawCall(address, Buffer.from(JSON.stringify(validRequest({ batches: [0, 1] }))));
  assert.equal(ok.code, grpc.status.OK, ok.details);
  assert.equal(ok.messages, 2);
});

test('a stalled client does not grow server memory: the server stops making its batches', async () => {
  const address = pair[1].address;
  const status = async () => {
    const { reply, error } = await unaryCall(address, '/catdog.augment.v1.Augment/Status');
    if (error) throw error;
    return JSON.parse(reply!.toString()) as {
      batches: number;
      queueDepth: number;
      rss: number;
      making: number;
      waitingOnClients: number;
    };
  };
  // The server's own account, polled: nothing on its pool, and the call waiting for its client to take what was
  // written (the state a stalled client leaves it in), the same over `reads` reads in a row with no batch sent.
  const settled = async (reads: number, ok: (s: Awaited<ReturnType<typeof status>>) => boolean) => {
    let last = await status();
    for (let same = 0, polls = 0; same < reads; polls++) {
      if (polls > 1200) assert.fail(`the server never settled: ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 100));
      const now = await status();
      same = ok(now) && now.batches === last.batches ? same + 1 : 0;
      last = now;
    }
    return last;
  };
  // 60 batches of 25 × 150 × 150 float32 (6.75 MB each, 400 MB in all) asked for, and never read
  const request = validRequest({
    batchSize: 25,
    height: 150,
    width: 150,
    augment: BOOK_AUGMENTATION,
    batches: Array.from({ length: 60 }, () => 0),
  });
  const before = await settled(2, (s) => s.queueDepth === 0 && s.making === 0);
  const { client, call } = batchesCall(address, Buffer.from(JSON.stringify(request)));
  // A consumer that stops reading (grpc-js keeps buffering for a stream nobody listens to, so listen, then pause).
  call.on('data', () => {});
  call.pause();
  const stalled = await settled(5, (s) => s.waitingOnClients === 1 && s.making === 0);
  const made = stalled.batches - before.batches;
  // gRPC's client buffers up to 16 messages before HTTP/2 flow control stops the stream; the server adds one.
  const info = JSON.stringify({ before, stalled });
  assert.ok(made <= 20, `the server sent ${made} batches to a client that reads none: ${info}`);
  assert.ok(
    stalled.rss - before.rss < 100 * 1024 ** 2,
    `server memory grew by ${((stalled.rss - before.rss) / 1024 ** 2).toFixed(0)} MiB`,
  );
  assert.equal(stalled.queueDepth, 60 - made);
  call.cancel();
  client.close();
  // the cancelled call's work is dropped
  const after = await settled(1, (s) => s.queueDepth === 0 && s.waitingOnClients === 0);
  assert.equal(after.batches, stalled.batches);
});

/** One server stopped with SIGTERM while a long call streams from it: its exit, log, the call's status, messages read. */
async function sigtermDuringStream() {
  const server = await startAugmentServe({ tokenFile, workers: 2, args: ['--shutdown-grace', '1'] });
  servers.push(server);
  // A call far longer than the grace period whose batches are small (25 × 32 × 32 × 3 floats, 300 KB) but costly
  // to make (25 full-size JPEG decodes): the client keeps up with the server even on a loaded machine, so both
  // workers are busy when the call is cut off. (150 × 150 batches are 6.75 MB: a starved client left the server
  // waiting on it, making nothing, at every try of a CI run.)
  const request = validRequest({
    batchSize: 25,
    height: 32,
    width: 32,
    augment: BOOK_AUGMENTATION,
    batches: Array.from({ length: 1000 }, () => 0),
  });
  const { client, call } = batchesCall(server.address, Buffer.from(JSON.stringify(request)));
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  let messages = 0;
  await new Promise<void>((resolve) =>
    call.on('data', () => {
      if (++messages === 1) resolve();
    }),
  );
  const exit = await server.stop('SIGTERM');
  const status = await ended;
  client.close();
  const stderr = server.stderr();
  const pools = /pools stopped after (\d+) batches being made finished \((\d+) still running\)/.exec(stderr);
  assert.ok(pools, stderr);
  return { exit, stderr, status, messages, finished: Number(pools[1]), running: Number(pools[2]) };
}

test('SIGTERM during a busy stream: the call is ended, the batches being made finish, the server exits 0', async () => {
  // Terminating a worker thread while it is inside native code (sharp, TurboJPEG) aborts the process ("terminate
  // called after throwing an instance of 'Napi::Error'"); the pools used to be destroyed with batches running. The
  // server's log says how many batches it let finish first, and that none was running when its pools stopped.
  // Whether batches are being made when the grace period ends depends on how fast this process reads (a slow
  // reader leaves the server waiting on it, making nothing): up to three tries for a stop with work in flight.
  const tries: Awaited<ReturnType<typeof sigtermDuringStream>>[] = [];
  for (let i = 0; i < 3 && !tries.some((t) => t.finished > 0); i++) {
    const t = await sigtermDuringStream();
    tries.push(t);
    assert.deepEqual(t.exit, { code: 0, signal: null }, t.stderr);
    assert.doesNotMatch(t.stderr, /terminate called|Napi::Error/);
    assert.match(t.stderr, /augment serve: SIGTERM: stopping \(running calls get 1 s\)/);
    assert.equal(t.running, 0, `no batch running when the pools stopped: ${t.stderr}`);
    assert.match(t.stderr, /augment serve: stopped/);
    assert.notEqual(t.status.code, grpc.status.OK, 'the call was cut short after the grace period');
    assert.ok(t.messages < 1000);
  }
  assert.ok(
    tries.some((t) => t.finished > 0),
    `SIGTERM came while batches were being made: ${tries.map((t) => t.stderr).join('\n')}`,
  );
});

test('TLS: a server given a certificate is reached by DNS name with the CA trusted, and refuses plaintext', async () => {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const made = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(made.status, 0, made.stderr);
  const server = await startServer(['--tls-cert', cert, '--tls-key', key]);
  const options = { source: images, ...recipe(), epochs: 1 };
  // 'localhost' resolves to 127.0.0.1 (and perhaps ::1, where nothing listens: that address is just marked down)
  const secure = await digests({
    ...options,
    augmentService: { addresses: `localhost:${server.port}`, token: TOKEN, tls: { ca: readFileSync(cert) } },
  });
  assert.deepEqual(secure.digests, local.digests.slice(0, 5));
  await assert.rejects(
    createBatchStream({ ...options, augmentService: { addresses: server.address, token: TOKEN } }),
    (err: unknown) => isUserError(err, 'unreachable'),
  );
  server.process.kill('SIGTERM');
});

test('host names are re-resolved: a server that appears in discovery gets work', async () => {
  const [first, second] = pair;
  let joined = false;
  // Two names, as two headless Services would be: the second resolves to nothing until its server "appears".
  const stream = await createBatchStream({
    source: images,
    ...recipe(),
    epochs: 3,
    augmentService: {
      addresses: `augment.test:${first.port},augment-joining.test:${second.port}`,
      token: TOKEN,
      refreshMs: 200,
      resolve: async (host) => (host === 'augment.test' || joined ? ['127.0.0.1'] : []),
    },
  });
  assert.equal(stream.stats().servers!.length, 1);
  const got: string[] = [];
  for await (const b of stream) {
    got.push(digest(b));
    if (got.length === 3) {
      joined = true;
      for (let i = 0; i < 100 && stream.stats().servers!.filter((s) => s.state === 'up').length < 2; i++)
        await new Promise((r) => setTimeout(r, 100));
    }
  }
  const servers = stream.stats().servers!;
  assert.deepEqual(servers.map((s) => s.address).sort(), [first.address, second.address].sort());
  assert.ok(
    servers.every((s) => s.batches > 0),
    `the server that appeared got work: ${JSON.stringify(servers)}`,
  );
  assert.deepEqual(got.slice(0, 10), local.digests);
});
