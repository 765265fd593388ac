// The streaming reader against a real S3-protocol server (s3rver on 127.0.0.1): same order and bytes as local
// disk, the shard cache keeps later epochs off the network, bad shards and bad buckets give clear errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { isUserError } from '@catdog/errors';
import { openStorage } from '@catdog/storage';
import { openStream, prepareDataset, readManifest, sha256, type Manifest, type StreamedSample } from '@catdog/dataset';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { flatSource, tempDir } from './helpers.js';

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const s of it) out.push(s);
  return out;
}

let s3: LoopbackS3;
let src: string;
let local: string;
let manifest: Manifest;
const URL = 's3://stream-bucket/ds';

before(async () => {
  s3 = await startLoopbackS3(['stream-bucket']);
  src = await flatSource(14);
  local = await tempDir('stream-local');
  const counts = { train: 12, validation: 1, test: 1, samplesPerShard: 4 };
  await prepareDataset({ source: src, out: local, ...counts });
  await prepareDataset({ source: src, out: URL, storage: { endpoint: s3.endpoint }, ...counts });
  manifest = await readManifest(URL, { endpoint: s3.endpoint });
  assert.deepEqual(manifest.splits, (await readManifest(local)).splits);
});
after(async () => {
  await s3?.stop();
  await rm(src, { recursive: true, force: true });
  await rm(local, { recursive: true, force: true });
});

const view = (samples: StreamedSample[]) => samples.map((s) => `${s.key}:${s.label}:${s.position}:${sha256(s.bytes)}`);

test('S3: the same partitions, order and bytes as local disk; the cache keeps later epochs off the network', async () => {
  const options = { seed: 4, windowShards: 2, replicas: 2, fetchConcurrency: 2 };
  for (const rank of [0, 1]) {
    const fromS3 = await openStream(URL, 'train', { ...options, rank, endpoint: s3.endpoint });
    const fromDisk = await openStream(local, 'train', { ...options, rank });
    assert.deepEqual(view(await all(fromS3.samples({ epoch: 2 }))), view(await all(fromDisk.samples({ epoch: 2 }))));
    assert.deepEqual(
      view(await all(fromS3.samples({ epoch: 2, start: 5 }))),
      view(await all(fromDisk.samples({ epoch: 2, start: 5 }))),
    );
  }
  const cacheDir = await tempDir('s3-cache');
  const shards = manifest.splits.train.shards;
  const stream = await openStream(URL, 'train', { seed: 4, endpoint: s3.endpoint, cacheDir });
  const e0 = await all(stream.samples({ epoch: 0 }));
  assert.equal(e0.length, 24);
  assert.equal(
    stream.stats.bytesFetched,
    shards.reduce((a, s) => a + s.bytes, 0),
  );
  const fetched = stream.stats.bytesFetched;
  const e1 = await all(stream.samples({ epoch: 1 }));
  assert.equal(stream.stats.bytesFetched, fetched, 'epoch 1 should come from the cache');
  assert.equal(stream.stats.cacheHits, shards.length);
  assert.deepEqual(e1.map((s) => s.key).sort(), e0.map((s) => s.key).sort());
  await rm(cacheDir, { recursive: true });
});

test('S3: a corrupt or missing shard object names its s3:// URL; skipCorrupt skips and counts it', async () => {
  const storage = openStorage(URL, { endpoint: s3.endpoint });
  const shard = manifest.splits.train.shards[2];
  const good = await storage.read(shard.path);
  const bad = Buffer.from(good);
  bad[2000] ^= 0x10;
  await storage.write(shard.path, bad);
  const options = { seed: 1, endpoint: s3.endpoint };
  await assert.rejects(
    all((await openStream(URL, 'train', options)).samples()),
    (err) => isUserError(err, 'corrupt-shard') && err.message.startsWith(`${URL}/${shard.path}: sha256 mismatch`),
  );
  const skipping = await openStream(URL, 'train', { ...options, skipCorrupt: true, onWarning: () => {} });
  assert.equal((await all(skipping.samples())).length, 24 - shard.count);
  assert.deepEqual(skipping.stats.skippedShards, [`${URL}/${shard.path}`]);
  await storage.delete(shard.path);
  await assert.rejects(
    all((await openStream(URL, 'train', options)).samples()),
    (err) =>
      isUserError(err, 'missing-shard') &&
      err.message.startsWith(`${URL}/${shard.path}: shard listed in the manifest is missing`),
  );
  await storage.write(shard.path, good);
  assert.equal((await all((await openStream(URL, 'train', options)).samples())).length, 24);
});

test('S3: an unreachable endpoint, a missing bucket or rejected credentials fail at open with the cause', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  await assert.rejects(
    openStream(URL, 'train', { endpoint: `http://127.0.0.1:${port}`, maxAttempts: 1 }),
    (err) => isUserError(err, 'unreachable') && /unreachable/.test(err.message) && err.message.includes(URL),
  );
  await assert.rejects(
    openStream('s3://no-such-bucket/ds', 'train', { endpoint: s3.endpoint }),
    (err) => isUserError(err, 'no-such-bucket') && err.message.includes('s3://no-such-bucket/ds'),
  );
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  try {
    process.env.AWS_ACCESS_KEY_ID = 'SOMEONE-ELSE';
    process.env.AWS_SECRET_ACCESS_KEY = 'wrong';
    await assert.rejects(openStream(URL, 'train', { endpoint: s3.endpoint, region: 'eu-west-1' }), (err) => {
      assert.ok(isUserError(err), String(err));
      assert.ok(['credentials', 'access-denied'].includes((err as { code: string }).code), (err as Error).message);
      return true;
    });
  } finally {
    process.env.AWS_ACCESS_KEY_ID = saved.id;
    process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
  }
});

test('S3: the endpoint going away mid-epoch fails with the unreachable shard URL, after the samples already read', async () => {
  const gone = await startLoopbackS3(['gone-bucket']);
  const url = 's3://gone-bucket/ds';
  await prepareDataset({
    source: src,
    out: url,
    storage: { endpoint: gone.endpoint },
    train: 6,
    validation: 0,
    test: 0,
    samplesPerShard: 2,
  });
  const stream = await openStream(url, 'train', {
    endpoint: gone.endpoint,
    maxAttempts: 1,
    windowShards: 1,
    prefetchShards: 0,
    fetchConcurrency: 1,
  });
  let read = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of stream.samples()) {
        if (++read === 1) await gone.stop();
      }
    })(),
    (err) =>
      isUserError(err, 'unreachable') &&
      new RegExp(`^${url}/train/train-00000\\d\\.tar: endpoint .* unreachable`).test((err as Error).message),
  );
  // The first window (one shard of two samples) was read before the server stopped.
  assert.equal(read, 2);
  // startLoopbackS3 set the process-wide endpoint to this server: point it back at the suite's.
  Object.assign(process.env, s3.env);
});
