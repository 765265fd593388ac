// Prepared splits read through @catdog/dataset's streaming reader: in memory (small splits) or shard window by
// shard window (memoryBudget), the same batches either way; bounded memory; a start at any batch equal to the tail
// of an uninterrupted stream; a missing or corrupt shard named, or skipped and counted with skipCorrupt.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, copyFile, mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset, readManifest, type Manifest } from '@catdog/dataset';
import { BOOK_AUGMENTATION, createBatchStream, type Batch, type BatchStreamOptions } from '@catdog/augment';
import { isUserError } from '@catdog/errors';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { startLoopbackS3 } from '../helpers/s3-server.js';

let dir: string;
let dataset: string;
let manifest: Manifest;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'catdog-augment-streaming-'));
  const src = join(dir, 'src');
  await mkdir(src);
  await Promise.all(
    Array.from({ length: 14 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`])
      .flat()
      .map((f) => copyFile(join(kaggleTrainDir, f), join(src, f))),
  );
  dataset = join(dir, 'ds');
  // 20 train samples in 10 shards of 2.
  await prepareDataset({
    source: src,
    out: dataset,
    train: 10,
    validation: 2,
    test: 2,
    resize: { width: 48, height: 48 },
    samplesPerShard: 2,
  });
  manifest = await readManifest(dataset);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const digest = (b: Batch) =>
  createHash('sha256')
    .update(`${b.epoch}/${b.index}/${b.keys.join(',')}/${Array.from(b.ys).join(',')}`)
    .update(new Uint8Array(b.xs.buffer, b.xs.byteOffset, b.xs.byteLength))
    .digest('hex');

const base = (): Omit<BatchStreamOptions, 'source'> => ({
  split: 'train',
  targetSize: [32, 32],
  batchSize: 3,
  augment: BOOK_AUGMENTATION,
  seed: 11,
  workers: 2,
  windowShards: 2,
  prefetchShards: 1,
  log: () => {},
});

async function run(options: BatchStreamOptions): Promise<{
  digests: string[];
  batches: Batch[];
  stats: ReturnType<Awaited<ReturnType<typeof createBatchStream>>['stats']>;
  log: string[];
}> {
  const log: string[] = [];
  const stream = await createBatchStream({ ...options, log: (l) => log.push(l) });
  const batches: Batch[] = [];
  const digests: string[] = [];
  for await (const b of stream) {
    batches.push(b);
    digests.push(digest(b));
  }
  return { digests, batches, stats: stream.stats(), log };
}

test('a split read in memory and one streamed by shard windows give the same batches; streaming holds about a window', async () => {
  const memory = await run({ source: dataset, ...base(), epochs: 2, memoryBudget: Infinity });
  const streamed = await run({ source: dataset, ...base(), epochs: 2, memoryBudget: 0 });
  assert.match(memory.log[0], /^reading the split into memory: [\d.]+ MB ≤ budget/);
  assert.match(streamed.log[0], /^streaming shards: [\d.]+ MB > budget 0\.0 MB \(10 shards, 2 per window\)/);
  assert.equal(memory.stats.shards?.mode, 'memory');
  assert.equal(streamed.stats.shards?.mode, 'stream');
  assert.equal(memory.digests.length, 14); // ceil(20 / 3) = 7 batches × 2 epochs
  assert.deepEqual(streamed.digests, memory.digests);
  // Each epoch holds every sample once, in a different order.
  const keysOf = (e: number) => memory.batches.filter((b) => b.epoch === e).flatMap((b) => b.keys);
  assert.equal(new Set(keysOf(0)).size, 20);
  assert.deepEqual([...keysOf(1)].sort(), [...keysOf(0)].sort());
  assert.notDeepEqual(keysOf(1), keysOf(0));
  // Bounded: never more than a window plus its prefetch (3 shards of 10), far below the split.
  const shardBytes = manifest.splits.train.shards.map((s) => s.bytes).sort((a, b) => b - a);
  const window = shardBytes.slice(0, 3).reduce((a, b) => a + b, 0);
  const split = shardBytes.reduce((a, b) => a + b, 0);
  const peak = streamed.stats.shards!.peakBytesHeld;
  assert.ok(peak > 0 && peak <= window, `peak ${peak} bytes held, window + prefetch ${window}`);
  assert.ok(peak < split / 2, `peak ${peak} vs split ${split}`);
  // The first batch comes after one window: the reader has not read the split.
  // (prefetch 1: one batch computed ahead, so what was read is what the first batches needed.)
  const early = await createBatchStream({ source: dataset, ...base(), memoryBudget: 0, workers: 1, prefetch: 1 });
  const first = await early.next();
  assert.equal(first.done, false);
  const readAtFirst = early.stats().shards!.shardsRead;
  await early.close();
  // Window 0 (2 shards) and the reader's 1-shard prefetch, plus at most window 1 for the batch dispatched next.
  assert.ok(readAtFirst <= 5, `${readAtFirst} of 10 shards read when the first batch arrived`);
  // Another seed, another order: the order is keyed by the seed.
  const other = await run({ source: dataset, ...base(), seed: 12, epochs: 1, memoryBudget: 0 });
  assert.notDeepEqual(
    other.batches.flatMap((b) => b.keys),
    keysOf(0),
  );
});

test('a stream started at (epoch, position) or startBatch gives the tail of the uninterrupted stream, both paths', async () => {
  for (const memoryBudget of [Infinity, 0]) {
    const whole = await run({ source: dataset, ...base(), epochs: 3, memoryBudget });
    assert.equal(whole.digests.length, 21);
    // 7 batches per pass; a schedule of e.g. 10 steps per "epoch" resumes at batch 10 = pass 1, position 9 (mid-pass).
    const tail = whole.digests.slice(10);
    const fromStart = await run({
      source: dataset,
      ...base(),
      start: { epoch: 1, position: 9 },
      epochs: 2,
      memoryBudget,
    });
    assert.deepEqual(fromStart.digests, tail, `start, memoryBudget ${memoryBudget}`);
    assert.deepEqual([fromStart.batches[0].epoch, fromStart.batches[0].index], [1, 3]);
    const fromBatch = await run({ source: dataset, ...base(), startBatch: 10, epochs: 3, memoryBudget });
    assert.deepEqual(fromBatch.digests, tail, `startBatch, memoryBudget ${memoryBudget}`);
    // The partial last batch of a pass (20 = 6 × 3 + 2) is a valid start too.
    const last = await run({ source: dataset, ...base(), start: { epoch: 2, position: 18 }, epochs: 1, memoryBudget });
    assert.deepEqual(last.digests, whole.digests.slice(20));
    assert.equal(last.batches[0].shape[0], 2);
  }
  await assert.rejects(
    createBatchStream({ source: dataset, ...base(), start: { epoch: 0, position: 4 } }),
    /not a batch boundary/,
  );
  await assert.rejects(
    createBatchStream({ source: dataset, ...base(), start: { epoch: 0, position: 20 } }),
    /start\.position must be an integer in \[0, 19\]/,
  );
});

test('a corrupt or missing shard mid-epoch is named; with skipCorrupt it is skipped, counted, and both paths agree', async () => {
  const damaged = join(dir, 'damaged');
  await cp(dataset, damaged, { recursive: true });
  const shards = manifest.splits.train.shards;
  const bad = shards[5];
  const file = join(damaged, bad.path);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1] ^= 0xff; // same length, wrong sha256
  await writeFile(file, bytes);
  for (const memoryBudget of [Infinity, 0]) {
    const err = await run({ source: damaged, ...base(), epochs: 1, memoryBudget }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isUserError(err) && err.code === 'corrupt-shard', String(err));
    assert.ok((err as Error).message.includes(bad.path), (err as Error).message);
  }
  const warnings: string[] = [];
  const skipped = await Promise.all(
    [Infinity, 0].map((memoryBudget) =>
      run({
        source: damaged,
        ...base(),
        epochs: 2,
        memoryBudget,
        skipCorrupt: true,
        onWarning: (w) => warnings.push(w),
      }),
    ),
  );
  assert.deepEqual(skipped[1].digests, skipped[0].digests);
  for (const r of skipped) {
    assert.equal(r.stats.images, 2 * (20 - bad.count));
    assert.ok(
      r.stats.shards!.skippedShards.some((s) => s.endsWith(bad.path)),
      JSON.stringify(r.stats.shards),
    );
    assert.ok(r.stats.shards!.skippedSamples >= bad.count);
  }
  assert.ok(warnings.some((w) => w.includes(bad.path)));
  // Missing: the shard file is gone.
  await copyFile(join(dataset, bad.path), file);
  await unlink(join(damaged, shards[8].path));
  const missing = await run({ source: damaged, ...base(), epochs: 1, memoryBudget: 0 }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(isUserError(missing) && missing.code === 'missing-shard', String(missing));
  assert.ok((missing as Error).message.includes(shards[8].path));
});

test('streaming from s3:// with a size-limited shard cache: later runs read the cache, same batches as in memory', async () => {
  const s3 = await startLoopbackS3(['stream-bucket']);
  const cache = join(dir, 'cache');
  try {
    const url = 's3://stream-bucket/ds';
    const src = join(dir, 'src');
    await prepareDataset({
      source: src,
      out: url,
      train: 10,
      validation: 2,
      test: 2,
      resize: { width: 48, height: 48 },
      samplesPerShard: 2,
    });
    const options: BatchStreamOptions = {
      source: url,
      ...base(),
      epochs: 1,
      cacheDir: cache,
      cacheLimit: 10 * 1024 ** 2,
    };
    const first = await run({ ...options, memoryBudget: 0 });
    assert.ok(first.stats.shards!.bytesFetched > 0);
    const second = await run({ ...options, memoryBudget: 0 });
    assert.equal(second.stats.shards!.bytesFetched, 0);
    assert.equal(second.stats.shards!.cacheHits, 10);
    assert.deepEqual(second.digests, first.digests);
    const memory = await run({ ...options, memoryBudget: Infinity });
    assert.deepEqual(memory.digests, first.digests);
    const local = await run({ source: dataset, ...base(), epochs: 1, memoryBudget: 0 });
    assert.deepEqual(
      local.batches.map((b) => b.keys),
      first.batches.map((b) => b.keys),
    );
  } finally {
    await s3.stop();
  }
});
