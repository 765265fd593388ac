// The trainer's shard cache and --skip-corrupt (issue 12), as a user runs them: the CLI as a subprocess, the
// dataset on a real S3-protocol server (s3rver) behind a counting proxy on 127.0.0.1. A second run with the same
// --cache-dir reads no shard from S3; a cache directory that cannot be written only warns; a corrupt shard fails
// the run naming it, or with --skip-corrupt is skipped, logged and listed in the run's skipped-shards.json.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readManifest, type Manifest } from '@catdog/dataset';
import { openStorage } from '@catdog/storage';
import { runTrainerAsync, startS3Dataset, type S3Dataset } from './helpers.js';

const BUCKET = 'cache-bucket';
const DATA = `s3://${BUCKET}/data`;

let ds: S3Dataset;
let root = '';
let proxy: { endpoint: string; shardGets: string[]; stop(): Promise<void> };
let manifest: Manifest;

/** Forwards every request to s3rver and records the shard (.tar) GETs: what the trainer fetched from S3. */
async function countingProxy(upstream: string): Promise<typeof proxy> {
  const target = new URL(upstream);
  const shardGets: string[] = [];
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'GET' && path.endsWith('.tar')) shardGets.push(path);
    const out = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    shardGets,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const train = (data: string, out: string, ...extra: string[]) =>
  runTrainerAsync(
    [
      'scratch',
      '--data',
      data,
      '--out',
      out,
      '--preset',
      'ci-smoke',
      '--epochs',
      '1',
      '--steps-per-epoch',
      '2',
      '--validation-steps',
      '1',
      '--threads',
      '1',
      ...extra,
    ],
    { ...ds.s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint },
  );

before(async () => {
  // 5 shards of 4 train images: a skipped shard leaves the others to train on.
  ds = await startS3Dataset({ bucket: BUCKET, prefix: 'data', samplesPerShard: 4 });
  root = ds.root;
  proxy = await countingProxy(ds.s3.endpoint);
  manifest = await readManifest(DATA);
  assert.ok(manifest.splits.train.shards.length >= 3, 'several train shards');
});

after(async () => {
  await proxy?.stop();
  await ds?.stop();
});

test('--cache-dir: the second run reads every shard from the cache, none from S3; an unwritable cache only warns', async () => {
  const cacheDir = join(root, 'shard-cache');
  proxy.shardGets.length = 0;
  const first = await train(DATA, join(root, 'run1'), '--cache-dir', cacheDir, '--cache-limit', '1GiB');
  assert.equal(first.code, 0, first.stderr);
  const fetched = new Set(proxy.shardGets.map((p) => p.replace(/^.*\/data\//, '')));
  for (const s of manifest.splits.train.shards) assert.ok(fetched.has(s.path), `${s.path} fetched by the first run`);
  const cached = (await readdir(cacheDir)).filter((f) => f.endsWith('.tar'));
  const splits = [manifest.splits.train, manifest.splits.validation, manifest.splits.test];
  assert.equal(
    cached.length,
    splits.reduce((n, s) => n + s.shards.length, 0),
    'every shard read is cached',
  );

  proxy.shardGets.length = 0;
  const second = await train(DATA, join(root, 'run2'), '--cache-dir', cacheDir, '--cache-limit', '1GiB');
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(proxy.shardGets, [], 'the second run fetched no shard from S3');

  // A cache "directory" that is a file: the cache turns itself off with one warning; training goes on from S3.
  const notADir = join(root, 'not-a-dir');
  await writeFile(notADir, 'x');
  proxy.shardGets.length = 0;
  const third = await train(DATA, join(root, 'run3'), '--cache-dir', notADir);
  assert.equal(third.code, 0, third.stderr);
  assert.match(third.stderr, /warning: shard cache .*not-a-dir: .*reading on without caching/);
  assert.ok(proxy.shardGets.length > 0, 'read from S3 instead');

  const badLimit = await train(DATA, join(root, 'run4'), '--cache-dir', cacheDir, '--cache-limit', 'lots');
  assert.equal(badLimit.code, 2, badLimit.stderr);
  assert.match(badLimit.stderr, /--cache-limit.*must be a size such as 2GiB/);
});

test('--memory-budget: a split over it is streamed a window of shards at a time, one under it read into memory', async () => {
  const inMemory = await train(DATA, join(root, 'budget-default'));
  assert.equal(inMemory.code, 0, inMemory.stderr);
  assert.match(inMemory.stderr, /reading the split into memory: [\d.]+ MB ≤ budget 537 MB/);
  const streamed = await train(DATA, join(root, 'budget-1k'), '--memory-budget', '1KiB');
  assert.equal(streamed.code, 0, streamed.stderr);
  assert.match(streamed.stderr, /streaming shards: [\d.]+ MB > budget 0\.0 MB \(\d+ shards, \d+ per window\)/);
  assert.doesNotMatch(streamed.stderr, /reading the split into memory/);
  const history = async (run: string) => JSON.parse(await readFile(join(root, run, 'history.json'), 'utf8'));
  assert.deepEqual((await history('budget-1k')).epoch, [1]);
  const bad = await train(DATA, join(root, 'budget-bad'), '--memory-budget', 'plenty');
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--memory-budget.*must be a size such as 160MiB/);
});

test('a corrupt shard fails the run naming it; --skip-corrupt skips it, says so and lists it in skipped-shards.json', async () => {
  const damaged = `s3://${BUCKET}/damaged`;
  const from = openStorage(DATA);
  const to = openStorage(damaged);
  for await (const e of from.list()) await to.write(e.path, await from.read(e.path));
  const bad = manifest.splits.train.shards[1];
  const bytes = Buffer.from(await to.read(bad.path));
  bytes[bytes.length >> 1] ^= 0xff; // same length, wrong sha256
  await to.write(bad.path, bytes);
  const badUrl = `${damaged}/${bad.path}`;

  const failing = await train(damaged, join(root, 'corrupt'));
  assert.equal(failing.code, 1, failing.stderr);
  assert.ok(failing.stderr.includes(`error: ${badUrl}: `), failing.stderr);

  const out = join(root, 'skipping');
  const skipping = await train(damaged, out, '--skip-corrupt');
  assert.equal(skipping.code, 0, skipping.stderr);
  assert.ok(skipping.stderr.includes(`skip-corrupt: skipped ${badUrl} (train)`), skipping.stderr);
  const record = JSON.parse(await readFile(join(out, 'skipped-shards.json'), 'utf8')) as {
    count: number;
    skipped: { shard: string; split: string }[];
  };
  assert.ok(record.count >= 1 && record.count === record.skipped.length, JSON.stringify(record));
  assert.ok(
    record.skipped.every((s) => s.shard === badUrl && s.split === 'train'),
    JSON.stringify(record),
  );
  const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
  assert.equal(config.skipCorrupt, true);
});
