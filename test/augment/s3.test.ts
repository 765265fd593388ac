// Streams from a dataset prepared by @catdog/dataset on S3 (real s3rver on loopback), with a local shard cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset } from '@catdog/dataset';
import { BOOK_AUGMENTATION, createBatchStream } from '@catdog/augment';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { startLoopbackS3 } from '../helpers/s3-server.js';
import { drain } from './helpers.js';

test('train and validation streams from s3:// shards, cached locally, identical on the second read', async () => {
  const s3 = await startLoopbackS3(['augment-bucket']);
  const src = await mkdtemp(join(tmpdir(), 'catdog-augment-src-'));
  const cache = await mkdtemp(join(tmpdir(), 'catdog-augment-cache-'));
  try {
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`])
        .flat()
        .map((f) => copyFile(join(kaggleTrainDir, f), join(src, f))),
    );
    const url = 's3://augment-bucket/ds';
    await prepareDataset({
      source: src,
      out: url,
      train: 4,
      validation: 1,
      test: 1,
      resize: { width: 64, height: 64 },
      samplesPerShard: 3,
    });
    const options = {
      source: url,
      split: 'train' as const,
      targetSize: [64, 64] as [number, number],
      augment: BOOK_AUGMENTATION,
      seed: 5,
      batchSize: 3,
      workers: 2,
      epochs: 1,
      cacheDir: cache,
    };
    const first = await drain(await createBatchStream(options));
    assert.equal(first.images.size, 8);
    assert.deepEqual([...first.order.get(0)!].sort(), [
      'cat.0',
      'cat.1',
      'cat.2',
      'cat.3',
      'dog.0',
      'dog.1',
      'dog.2',
      'dog.3',
    ]);
    assert.ok((await readdir(cache)).filter((f) => f.endsWith('.tar')).length >= 3, 'shards cached');
    const second = await drain(await createBatchStream(options));
    for (const [k, v] of first.images) assert.deepEqual(second.images.get(k), v);
    const validation = await createBatchStream({
      source: url,
      split: 'validation',
      targetSize: [64, 64],
      batchSize: 32,
      workers: 1,
      epochs: 1,
    });
    assert.equal(validation.size, 2);
    const v = await drain(validation);
    assert.deepEqual(
      v.batches.map((b) => b.shape),
      [[2, 64, 64, 3]],
    );
    assert.deepEqual(Array.from(v.batches[0].ys).sort(), [0, 1]);
  } finally {
    await s3.stop();
    await rm(src, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  }
});
