// The fit loop holds tfjs memory flat: after the first epoch, every further epoch (train steps, validation,
// checkpoint, history) leaves as many live tensors as it found. A checkpoint once leaked the optimizer's iteration
// scalar (getWeights() makes a new one per call); bench:soak showed it as one tensor more per epoch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { fitPhase, initialState, emptyHistory, RunDir, type ProgressSink } from '@catdog/training';
import { rowFeed } from './row-feed.js';

test('each epoch after the first leaves the live tensor count unchanged (train, validation, checkpoint)', async () => {
  await tf.setBackend('cpu');
  const dir = await mkdtemp(join(tmpdir(), 'catdog-fit-memory-'));
  try {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [4], units: 8, activation: 'relu' }),
        tf.layers.dropout({ rate: 0.5 }),
        tf.layers.dense({ units: 1, activation: 'sigmoid' }),
      ],
    });
    model.compile({ optimizer: tf.train.rmsprop(1e-3), loss: 'binaryCrossentropy', metrics: ['acc'] });
    const xs = Float32Array.from({ length: 64 }, (_, i) => ((i * 37) % 11) / 11 - 0.5);
    const ys = Float32Array.from({ length: 16 }, (_, i) => i % 2);
    const counts: number[] = [];
    // Sampled at each epoch's log line, as bench:soak does.
    const progress: ProgressSink = {
      start() {},
      update() {},
      stop() {},
      log(line) {
        if (/ - loss /.test(line)) counts.push(tf.memory().numTensors);
      },
    };
    await fitPhase(
      {
        runDir: RunDir.open(dir),
        runModel: model,
        state: initialState(emptyHistory()),
        progress,
        earlyStopping: null,
        keepBest: false,
      },
      {
        name: 'train',
        model,
        epochs: 5,
        stepsPerEpoch: 2,
        validationSteps: 2,
        batchSize: 8,
        train: rowFeed(xs, ys, 8),
        validation: rowFeed(xs, ys, 8),
      },
    );
    assert.equal(counts.length, 5);
    assert.deepEqual(
      counts.slice(1),
      counts.slice(1).map(() => counts[1]),
      `live tensors per epoch: ${counts.join(', ')}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
