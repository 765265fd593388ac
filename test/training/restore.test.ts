// Restoring a checkpoint is exact: the weights and the RMSprop slots read back into fresh models equal, bit for
// bit, what the checkpoint was written from, in both phases of a finetune-shaped run (the head alone with the base
// frozen, then the top of the base unfrozen with the head), with checkpoints written inside epochs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { rmsprop } from '@catdog/backend';
import {
  emptyHistory,
  fitPhase,
  initialState,
  restoreCheckpoint,
  RunDir,
  type BatchFeed,
  type FitContext,
  type ProgressSink,
} from '@catdog/training';

const quiet: ProgressSink = { start() {}, update() {}, stop() {}, log() {} };

/** A base (two Dense layers) under a head with Dropout: the shape of finetune's base + head, small. */
function build(seed: number) {
  const input = tf.input({ shape: [6] });
  const b1 = tf.layers.dense({
    units: 8,
    activation: 'relu',
    name: 'base_1',
    kernelInitializer: tf.initializers.glorotUniform({ seed }),
  });
  const b2 = tf.layers.dense({
    units: 8,
    activation: 'relu',
    name: 'base_2',
    kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
  });
  const drop = tf.layers.dropout({ rate: 0.5, name: 'head_dropout' });
  const out = tf.layers.dense({
    units: 1,
    activation: 'sigmoid',
    name: 'head_out',
    kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }),
  });
  const features = b2.apply(b1.apply(input)) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: out.apply(drop.apply(features)) as tf.SymbolicTensor, name: 'run' });
  const headIn = tf.input({ shape: [8] });
  const head = tf.model({ inputs: headIn, outputs: out.apply(drop.apply(headIn)) as tf.SymbolicTensor, name: 'head' });
  return { model, head, b1, b2 };
}

function feed(inputs: number): BatchFeed {
  let k = 0;
  return {
    async next() {
      k++;
      const xs = tf.tensor2d(
        Float32Array.from({ length: 4 * inputs }, (_, i) => Math.sin(i * 0.7 + k)),
        [4, inputs],
      );
      return { xs, ys: tf.tensor2d([k % 2, 1, 0, (k + 1) % 2], [4, 1]), n: 4 };
    },
  };
}

const bits = (t: tf.Tensor) => Buffer.from(new Uint8Array((t.dataSync() as Float32Array).slice().buffer));

async function optimizerBits(model: tf.LayersModel): Promise<Buffer[]> {
  return (await (model.optimizer as tf.Optimizer).getWeights()).map((w) => bits(w.tensor));
}

async function assertRestored(
  runDir: RunDir,
  written: { model: tf.LayersModel; phaseModel: tf.LayersModel },
  fresh: { model: tf.LayersModel; phaseModel: tf.LayersModel },
  label: string,
) {
  await restoreCheckpoint(runDir, fresh.model, fresh.phaseModel);
  const a = written.model.getWeights().map(bits);
  const b = fresh.model.getWeights().map(bits);
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.ok(x.equals(b[i]), `${label}: weight ${i} differs`));
  const oa = await optimizerBits(written.phaseModel);
  const ob = await optimizerBits(fresh.phaseModel);
  assert.ok(oa.length > 1, `${label}: the optimizer has slots`);
  assert.equal(ob.length, oa.length, `${label}: same number of optimizer slots`);
  oa.forEach((x, i) => assert.ok(x.equals(ob[i]), `${label}: optimizer slot ${i} differs`));
}

test('restoreCheckpoint gives back weights and RMSprop slots bit for bit, in the head phase and in the fine-tuning phase', async () => {
  await tf.setBackend('cpu');
  const dir = await mkdtemp(join(tmpdir(), 'catdog-restore-'));
  try {
    const runDir = RunDir.open(dir);
    const w = build(7);
    const state = initialState(emptyHistory());
    const ctx: FitContext = {
      runDir,
      runModel: w.model,
      state,
      progress: quiet,
      earlyStopping: null,
      keepBest: false,
      seed: 3,
      checkpointEvery: 4,
    };
    // Phase 1: the head alone (the base frozen). Steps 1..5: the last checkpoint is the mid-epoch one of step 4.
    w.head.compile({ optimizer: rmsprop(1e-2), loss: 'binaryCrossentropy', metrics: ['acc'] });
    const headFeed = feed(8);
    await fitPhase(ctx, {
      name: 'head',
      model: w.head,
      epochs: 1,
      stepsPerEpoch: 5,
      validationSteps: 0,
      batchSize: 4,
      train: headFeed,
      validation: null,
    });
    const afterHead = await runDir.readCheckpointState();
    assert.equal(afterHead?.globalStep, 5, 'the epoch-end checkpoint is the last');
    const f1 = build(99);
    f1.head.compile({ optimizer: rmsprop(1e-2), loss: 'binaryCrossentropy', metrics: ['acc'] });
    await assertRestored(
      runDir,
      { model: w.model, phaseModel: w.head },
      { model: f1.model, phaseModel: f1.head },
      'head phase',
    );

    // Phase 2: the top of the base unfrozen with the head; stop inside an epoch (a checkpoint at global step 8).
    w.b1.trainable = false;
    w.model.compile({ optimizer: rmsprop(1e-3), loss: 'binaryCrossentropy', metrics: ['acc'] });
    await fitPhase(ctx, {
      name: 'finetune',
      model: w.model,
      epochs: 1,
      stepsPerEpoch: 3,
      validationSteps: 0,
      batchSize: 4,
      train: feed(6),
      validation: null,
    });
    const mid = await runDir.readCheckpointState();
    assert.equal(mid?.phase, 'finetune');
    assert.equal(mid?.globalStep, 8);
    assert.equal(mid?.phaseStep, 3);
    const f2 = build(123);
    f2.b1.trainable = false;
    f2.model.compile({ optimizer: rmsprop(1e-3), loss: 'binaryCrossentropy', metrics: ['acc'] });
    await assertRestored(
      runDir,
      { model: w.model, phaseModel: w.model },
      { model: f2.model, phaseModel: f2.model },
      'fine-tuning phase',
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a checkpoint inside an epoch carries the epoch so far; one at an epoch end does not', async () => {
  await tf.setBackend('cpu');
  const dir = await mkdtemp(join(tmpdir(), 'catdog-restore-'));
  try {
    const runDir = RunDir.open(dir);
    const w = build(1);
    w.head.compile({ optimizer: rmsprop(1e-2), loss: 'binaryCrossentropy', metrics: ['acc'] });
    const state = initialState(emptyHistory());
    const ctx: FitContext = {
      runDir,
      runModel: w.model,
      state,
      progress: quiet,
      earlyStopping: null,
      keepBest: false,
      seed: 3,
      checkpointEvery: 2,
    };
    // 2 epochs of 3 steps: checkpoints at 2 (inside epoch 1), 3 (end), 4 (inside epoch 2), 6 (end).
    const seen: { step: number; partial: boolean; epochs: number[] }[] = [];
    const orig = runDir.writeCheckpoint.bind(runDir);
    runDir.writeCheckpoint = async (slot, epoch, parts, hooks) => {
      if (parts.state)
        seen.push({
          step: parts.state.globalStep,
          partial: parts.state.epochPartial !== null,
          epochs: [...parts.state.history.epoch],
        });
      return orig(slot, epoch, parts, hooks);
    };
    await fitPhase(ctx, {
      name: 'head',
      model: w.head,
      epochs: 2,
      stepsPerEpoch: 3,
      validationSteps: 0,
      batchSize: 4,
      train: feed(8),
      validation: null,
    });
    assert.deepEqual(seen, [
      { step: 2, partial: true, epochs: [] },
      { step: 3, partial: false, epochs: [1] },
      { step: 4, partial: true, epochs: [1] },
      { step: 6, partial: false, epochs: [1, 2] },
    ]);
    // Only the current checkpoint's folder is left.
    const folders = new Set<string>();
    for await (const e of runDir.storage.list('checkpoints/')) folders.add(e.path.split('/').slice(0, 2).join('/'));
    assert.equal(folders.size, 2, [...folders].join(', '));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
