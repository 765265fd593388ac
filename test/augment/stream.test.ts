// The batch stream on real images: determinism, restarts, corrupt samples, crashed workers, flat memory, tfjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as tf from '@tensorflow/tfjs';
import { BOOK_AUGMENTATION, createBatchStream, toTfDataset, type EpochReport } from '@catdog/augment';
import { drain, kaggleSamples, memorySource } from './helpers.js';

const samples = kaggleSamples(10); // 20 real images
const base = {
  source: memorySource(samples),
  targetSize: [40, 48] as [number, number],
  augment: BOOK_AUGMENTATION,
  seed: 11,
  epochs: 2,
};

test('identical batches whatever the worker count, batch size or prefetch', async () => {
  const a = await drain(await createBatchStream({ ...base, workers: 1, batchSize: 8 }));
  // ready() warms every worker up on synthetic images first: that must not change a pixel.
  const warmed = await createBatchStream({ ...base, workers: 2, batchSize: 6, prefetch: 1 });
  await warmed.ready();
  const b = await drain(warmed);
  const recycled = await drain(await createBatchStream({ ...base, workers: 2, batchSize: 8 }), true);
  assert.equal(a.images.size, 40);
  for (const [k, v] of a.images) assert.deepEqual(recycled.images.get(k), v, `image ${k} in a recycled buffer`);
  assert.deepEqual([...b.order], [...a.order]);
  for (const [k, v] of a.images) assert.deepEqual(b.images.get(k), v, `image ${k}`);
  // shuffled, and differently in each epoch; every image once per epoch
  assert.notDeepEqual(a.order.get(0), a.order.get(1));
  assert.deepEqual([...a.order.get(0)!].sort(), samples.map((s) => s.key).sort());
  // augmented: the same image differs between epochs
  assert.notDeepEqual(a.images.get('0/cat.0'), a.images.get('1/cat.0'));
  // batch shapes, labels, pixel range after rescale
  const first = a.batches[0];
  assert.deepEqual(first.shape, [8, 40, 48, 3]);
  assert.deepEqual(
    Array.from(first.ys),
    first.keys.map((k) => (k.startsWith('dog') ? 1 : 0)),
  );
  assert.ok(first.xs instanceof Float32Array && first.xs.every((v) => v >= 0 && v <= 1));
  // written by the WASM sampler in place, in memory shared with the workers (no copy out of the worker)
  assert.ok(first.xs.buffer instanceof SharedArrayBuffer);
  assert.deepEqual(
    a.batches.map((x) => [x.epoch, x.index, x.shape[0]]),
    [
      [0, 0, 8],
      [0, 1, 8],
      [0, 2, 4],
      [1, 0, 8],
      [1, 1, 8],
      [1, 2, 4],
    ],
  );
});

test('a restarted stream (initialEpoch) reproduces the uninterrupted one', async () => {
  const full = await drain(await createBatchStream({ ...base, workers: 2, batchSize: 8 }));
  const resumed = await drain(
    await createBatchStream({ ...base, workers: 1, batchSize: 8, epochs: 1, initialEpoch: 1 }),
  );
  assert.deepEqual(resumed.order.get(1), full.order.get(1));
  for (const [k, v] of resumed.images) assert.deepEqual(v, full.images.get(k));
});

test('validation stream: no augmentation, no shuffle, uint8 pixels equal to the decoded image', async () => {
  const s = await createBatchStream({
    source: memorySource(samples),
    targetSize: [40, 48],
    batchSize: 32,
    workers: 1,
    epochs: 1,
    dtype: 'uint8',
  });
  const { batches } = await drain(s);
  assert.equal(batches.length, 1);
  assert.deepEqual(
    batches[0].keys,
    samples.map((x) => x.key),
  );
  const { decodeResized } = await import('@catdog/augment');
  const expected = await decodeResized(samples[3].bytes, { height: 40, width: 48 });
  assert.deepEqual(Array.from(batches[0].xs.subarray(3 * 40 * 48 * 3, 4 * 40 * 48 * 3)), Array.from(expected));
});

test('a corrupt sample is skipped, counted and reported at the end of the epoch; the stream goes on', async () => {
  const real = kaggleSamples(4);
  const garbage = {
    key: 'cat.garbage',
    label: 0,
    className: 'cats',
    bytes: new Uint8Array(3000).map((_, i) => (i * 7919) % 251),
    ext: 'jpg',
  };
  const truncated = {
    key: 'dog.truncated',
    label: 1,
    className: 'dogs',
    bytes: real[1].bytes.subarray(0, 3000),
    ext: 'jpg',
  };
  const reports: EpochReport[] = [];
  const s = await createBatchStream({
    source: memorySource([...real, garbage, truncated]),
    targetSize: [32, 32],
    augment: BOOK_AUGMENTATION,
    seed: 3,
    batchSize: 4,
    workers: 2,
    epochs: 2,
    onEpochEnd: (r) => reports.push(r),
  });
  const { batches, order } = await drain(s);
  assert.equal(order.get(0)!.length, 8);
  assert.equal(order.get(1)!.length, 8);
  for (const b of batches) {
    assert.ok(!b.keys.includes('cat.garbage') && !b.keys.includes('dog.truncated'));
    // 10 samples in batches of 4, 4, 2: a batch holding a corrupt sample comes out that much shorter
    assert.equal(b.shape[0] + b.skipped.length, b.index < 2 ? 4 : 2);
    assert.equal(b.xs.length, b.shape[0] * 32 * 32 * 3);
  }
  assert.deepEqual(
    reports.map((r) => [r.epoch, r.images, r.skipped.map((x) => x.key).sort()]),
    [
      [0, 8, ['cat.garbage', 'dog.truncated']],
      [1, 8, ['cat.garbage', 'dog.truncated']],
    ],
  );
  for (const r of reports[0].skipped) assert.ok(r.reason.length > 0);
  assert.equal(s.stats().skipped.length, 4);
});

test('a crashed worker is replaced and its batch retried once, with identical output', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'catdog-augment-'));
  const marker = join(dir, 'crash-once');
  await writeFile(marker, '');
  const reference = await drain(await createBatchStream({ ...base, epochs: 1, workers: 2, batchSize: 8 }));
  const s = await createBatchStream({ ...base, epochs: 1, workers: 2, batchSize: 8, crashMarker: marker });
  const crashed = await drain(s);
  assert.equal(existsSync(marker), false, 'a worker took the crash');
  assert.equal(s.stats().retries, 1);
  assert.deepEqual([...crashed.order], [...reference.order]);
  for (const [k, v] of reference.images) assert.deepEqual(crashed.images.get(k), v);
  await rm(dir, { recursive: true });
});

test('memory stays flat over 20 epochs', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const s = await createBatchStream({
    source: memorySource(kaggleSamples(4)),
    targetSize: [24, 24],
    augment: BOOK_AUGMENTATION,
    seed: 1,
    batchSize: 4,
    workers: 2,
    epochs: 20,
  });
  const used = () => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  let atEpoch5 = 0;
  let last = -1;
  for await (const b of s) {
    if (b.epoch === 5 && b.index === 0) atEpoch5 = used();
    last = b.epoch;
  }
  assert.equal(last, 19);
  const growth = used() - atEpoch5;
  assert.ok(growth < 2 * 1024 ** 2, `memory grew by ${(growth / 1024).toFixed(0)} KiB between epochs 5 and 20`);
});

test('tfjs adapter: steps_per_epoch over an endless stream with model.fitDataset', async () => {
  await tf.setBackend('cpu');
  const s = await createBatchStream({
    source: memorySource(samples),
    targetSize: [16, 16],
    augment: BOOK_AUGMENTATION,
    seed: 2,
    batchSize: 5,
    workers: 1,
  });
  assert.equal(s.stepsPerEpoch, 4);
  const ds = toTfDataset(s, { stepsPerEpoch: 3 });
  const it = await ds.iterator();
  const first = (await it.next()).value as { xs: tf.Tensor4D; ys: tf.Tensor2D };
  assert.deepEqual(first.xs.shape, [5, 16, 16, 3]);
  assert.deepEqual(first.ys.shape, [5, 1]);
  tf.dispose(first);
  const model = tf.sequential({
    layers: [tf.layers.flatten({ inputShape: [16, 16, 3] }), tf.layers.dense({ units: 1, activation: 'sigmoid' })],
  });
  model.compile({ optimizer: 'sgd', loss: 'binaryCrossentropy', metrics: ['accuracy'] });
  const history = await model.fitDataset(ds, { epochs: 2, verbose: 0 });
  assert.equal(history.history.loss.length, 2);
  // 1 batch read directly + 2 epochs × 3 steps, from the one endless stream
  assert.equal(s.stats().batches, 7);
  await s.close();
});
