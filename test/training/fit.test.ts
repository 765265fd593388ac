// The fit loop in process: early stopping (Keras' EarlyStopping on val_loss), checkpoint contents, and the
// out-of-memory explanation, on the cpu backend with a small dense model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  fitPhase,
  initialState,
  emptyHistory,
  explainOutOfMemory,
  isOutOfMemory,
  readCheckpointState,
  RunDir,
  type ProgressSink,
} from '@catdog/training';
import { rowFeed } from './row-feed.js';

const quiet: ProgressSink = { start() {}, update() {}, stop() {}, log() {} };

test('early stopping ends a phase when val_loss stops improving; checkpoints and history are written every epoch', async () => {
  await tf.setBackend('cpu');
  const dir = await mkdtemp(join(tmpdir(), 'catdog-fit-'));
  try {
    const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 1, activation: 'sigmoid' })] });
    // A learning rate so small that the weights (and so val_loss) do not change: no improvement after epoch 1.
    model.compile({ optimizer: tf.train.rmsprop(1e-30), loss: 'binaryCrossentropy', metrics: ['acc'] });
    const xs = Float32Array.from({ length: 64 }, (_, i) => ((i * 37) % 11) / 11 - 0.5);
    const ys = Float32Array.from({ length: 16 }, (_, i) => i % 2);
    const state = initialState(emptyHistory());
    const ctx = {
      runDir: RunDir.open(dir),
      runModel: model,
      state,
      progress: quiet,
      earlyStopping: 2,
      keepBest: false,
    };
    await fitPhase(ctx, {
      name: 'train',
      model,
      epochs: 10,
      stepsPerEpoch: 2,
      validationSteps: 2,
      batchSize: 8,
      train: rowFeed(xs, ys, 8),
      validation: rowFeed(xs, ys, 8),
    });
    assert.equal(state.stoppedEarly, true);
    assert.equal(state.epoch, 3, 'epoch 1 sets the best val_loss, epochs 2 and 3 do not improve, patience 2 stops');
    const saved = await readCheckpointState(dir);
    assert.equal(saved?.epoch, 3);
    assert.equal(saved?.stoppedEarly, true);
    const h = JSON.parse(await readFile(join(dir, 'history.json'), 'utf8'));
    assert.deepEqual(h.epoch, [1, 2, 3]);
    assert.ok(h.val_loss.every((v: number) => v === h.val_loss[0]));
    // A resumed run whose checkpoint stopped early does not train further.
    await fitPhase(
      { ...ctx, state: saved! },
      {
        name: 'train',
        model,
        epochs: 10,
        stepsPerEpoch: 2,
        validationSteps: 2,
        batchSize: 8,
        train: rowFeed(xs, ys, 8),
        validation: rowFeed(xs, ys, 8),
      },
    );
    assert.equal(saved!.epoch, 3);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('allocation failures become a message saying what to lower', () => {
  let err: unknown;
  try {
    new ArrayBuffer(2 ** 53);
  } catch (e) {
    err = e;
  }
  assert.ok(isOutOfMemory(err), String(err));
  const explained = explainOutOfMemory(err, { batchSize: 32, inputSize: 150, workers: 2 }) as Error;
  assert.match(
    explained.message,
    /^out of memory .*lower --batch-size \(now 32\), --input-size \(now 150\) or --workers \(now 2\)$/,
  );
  assert.equal((explained as { code?: string }).code, 'out-of-memory');
  // A stack overflow is told apart: smaller batches would not help.
  let deep: unknown;
  const recurse = (n: number): number => recurse(n + 1) + 1;
  try {
    recurse(0);
  } catch (e) {
    deep = e;
  }
  assert.ok(!isOutOfMemory(deep));
  const overflow = explainOutOfMemory(deep, { batchSize: 32, inputSize: 150, workers: 2 }) as Error & { code?: string };
  assert.equal(overflow.code, 'stack-overflow');
  assert.match(overflow.message, /^stack overflow \(Maximum call stack size exceeded\): .*not a lack of memory/);
  assert.doesNotMatch(overflow.message, /--batch-size/);
  const other = new Error('something else');
  assert.equal(explainOutOfMemory(other, { batchSize: 1, inputSize: 1, workers: 1 }), other);
});
