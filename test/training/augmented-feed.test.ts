// The augmented strategy's training feed really augments: the same images in the same order, with augmentation on,
// come out as other pixels than with it off (seeded: the same augmented pixels on a second opening); real photos.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { prepareDataset } from '@catdog/dataset';
import { openFeed } from '@catdog/training';

type FeedOptions = Parameters<typeof openFeed>[0];
import { kaggleTrainDir } from '../helpers/fixtures.js';

await tf.setBackend('cpu');

let root = '';
let data = '';

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'catdog-augfeed-'));
  const src = join(root, 'src');
  await mkdir(src);
  for (let i = 0; i < 8; i++)
    for (const c of ['cat', 'dog']) await copyFile(join(kaggleTrainDir, `${c}.${i}.jpg`), join(src, `${c}.${i}.jpg`));
  data = join(root, 'data');
  await prepareDataset({ source: src, out: data, train: 4, validation: 2, test: 2, resize: { width: 64, height: 64 } });
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

async function firstBatch(o: Partial<FeedOptions>): Promise<{ keys: string[]; pixels: Float32Array }> {
  const feed = await openFeed({
    source: data,
    split: 'train',
    batchSize: 8,
    inputSize: 64,
    scaling: 'unit',
    augment: false,
    shuffle: false,
    seed: 7,
    workers: 1,
    repeat: true,
    ...o,
  } as FeedOptions);
  try {
    const b = (await feed.next())!;
    const out = { keys: b.keys, pixels: Float32Array.from(b.xs.dataSync()) };
    tf.dispose([b.xs, b.ys]);
    return out;
  } finally {
    await feed.close();
  }
}

test('augmentation on: the same images in the same order, other pixels for each; seeded, so reproducible', async () => {
  const plain = await firstBatch({});
  const augmented = await firstBatch({ augment: true });
  const again = await firstBatch({ augment: true });
  assert.deepEqual(augmented.keys, plain.keys, 'same samples, same order');
  const per = 64 * 64 * 3;
  for (let i = 0; i < plain.keys.length; i++) {
    let diff = 0;
    for (let j = i * per; j < (i + 1) * per; j++) diff += Math.abs(augmented.pixels[j]! - plain.pixels[j]!);
    assert.ok(diff / per > 0.01, `${plain.keys[i]}: mean |augmented − original| ${diff / per}`);
  }
  assert.deepEqual(again.pixels, augmented.pixels, 'the same seed draws the same transforms');
});
