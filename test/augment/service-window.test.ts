// The augmentation server's window of shards (ShardWindow, what `augment serve` uses for a split above its
// --memory-budget), in process: batch for batch the samples of the in-process stream, about two windows of shards
// held, each shard read once per epoch when batches come in order, and any batch reached without reading the
// shards before it. (test/augment/service.test.ts compares the pixels through real servers.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBatchStream, ShardWindow } from '@catdog/augment';
import { openStream, prepareDataset } from '@catdog/dataset';
import { kaggleTrainDir } from '../helpers/fixtures.js';

let dir: string;
let dataset: string;
const WINDOW = 2;
const SHARDS = 10;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'catdog-service-window-'));
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
    resize: { width: 32, height: 32 },
    samplesPerShard: 2,
  });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const recipe = { seed: 5, shuffle: true, batchSize: 3, windowShards: WINDOW };

test('batch for batch the in-process samples, two epochs, about two windows held, each shard read once an epoch', async () => {
  const stream = await createBatchStream({
    source: dataset,
    split: 'train',
    batchSize: recipe.batchSize,
    targetSize: [8, 8],
    seed: recipe.seed,
    shuffle: true,
    windowShards: WINDOW,
    workers: 1,
    dtype: 'uint8',
    epochs: 2,
    memoryBudget: 0,
    log: () => {},
  });
  const expected: string[][] = [];
  for await (const b of stream) expected.push(b.keys);
  assert.equal(expected.length, 2 * 7);

  const reader = await openStream(dataset, 'train', { shuffle: false, onWarning: () => {} });
  assert.equal(reader.shards.length, SHARDS);
  const window = new ShardWindow(reader);
  const got: string[][] = [];
  for (let epoch = 0; epoch < 2; epoch++) {
    for (let i = 0; i < 7; i++) {
      const b = await window.batch(recipe, epoch, i);
      assert.equal(b.lost, 0);
      assert.equal(b.labels.length, b.keys.length);
      got.push(b.keys);
    }
    assert.equal(reader.stats.shardsRead, (epoch + 1) * SHARDS, 'each shard read once per epoch');
  }
  assert.deepEqual(got, expected);
  assert.ok(window.peakShardsHeld <= 2 * WINDOW, `held ${window.peakShardsHeld} shards`);
});

test("a batch anywhere in the epoch is made from its own window's shards, without reading the ones before", async () => {
  const reader = await openStream(dataset, 'train', { shuffle: false, onWarning: () => {} });
  const window = new ShardWindow(reader);
  const last = await window.batch(recipe, 3, 6);
  assert.equal(last.keys.length, 20 - 6 * 3);
  assert.ok(reader.stats.shardsRead <= WINDOW, `read ${reader.stats.shardsRead} shards for the last batch`);
  // Concurrent requests for batches of one window (as a trainer's prefetch sends them) share its shards.
  const before = reader.stats.shardsRead;
  await Promise.all([0, 1, 2].map((i) => window.batch(recipe, 4, i)));
  assert.ok(reader.stats.shardsRead - before <= 2 * WINDOW, `read ${reader.stats.shardsRead - before}`);
});
