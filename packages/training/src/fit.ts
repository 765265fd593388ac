// The fit loop: steps over batch feeds, validation, history, a checkpoint every epoch, resume,
// early stopping and keep-best in the spirit of Keras callbacks, and a NaN stop.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { NanLossError } from './errors.js';
import type { ProgressSink } from './progress.js';
import { assignNamedWeights, namedWeights } from './model-io.js';
import { RunDir, type CheckpointState, type History } from './run-dir.js';

export type { CheckpointState };

/** One epoch's numbers as history.json records them. */
export interface EpochLogs {
  loss: number;
  acc: number;
  val_loss: number | null;
  val_acc: number | null;
  seconds: number;
  images_per_s: number;
}

function appendEpoch(h: History, epoch: number, logs: EpochLogs, phase: string): void {
  h.epoch.push(epoch);
  h.loss.push(logs.loss);
  h.acc.push(logs.acc);
  h.val_loss.push(logs.val_loss);
  h.val_acc.push(logs.val_acc);
  h.seconds.push(logs.seconds);
  h.images_per_s.push(logs.images_per_s);
  h.phase.push(phase);
}

export interface Batch {
  xs: tf.Tensor;
  ys: tf.Tensor;
  n: number;
}

/** An endless (or, for evaluation, finite) source of batches; tensors handed out belong to the caller. */
export interface BatchFeed {
  next(): Promise<Batch | null>;
  close?(): Promise<void> | void;
}

export interface Phase {
  /** 'train' for one-phase strategies, 'head' then 'finetune' for finetune. */
  name: string;
  /** The model trained in this phase (compiled). */
  model: tf.LayersModel;
  epochs: number;
  stepsPerEpoch: number;
  validationSteps: number;
  train: BatchFeed;
  validation: BatchFeed | null;
  batchSize: number;
}

export interface FitContext {
  runDir: RunDir;
  /** The model saved in checkpoints and at the end (for finetune: base + head; a phase may train only the head). */
  runModel: tf.LayersModel;
  state: CheckpointState;
  progress: ProgressSink;
  earlyStopping: number | null;
  keepBest: boolean;
  debugNanAtStep?: number;
  debugEpochDelayMs?: number;
  /** Seed of the dropout masks (one per step, a pure function of seed and step, so a resumed run draws the same). */
  seed?: number;
  /** Also checkpoint every this many training steps (global steps); null (default): at epoch ends only. */
  checkpointEvery?: number | null;
}

/** Test aid, not an option: CATDOG_TEST_CHECKPOINT_KILL_AT_STEP=<n> kills the process (SIGKILL) while writing the checkpoint of global step n, after its files and before the pointer switch. */
const KILL_AT_STEP = Number(process.env.CATDOG_TEST_CHECKPOINT_KILL_AT_STEP) || null;

export function initialState(history: History): CheckpointState {
  return {
    phase: '',
    phaseEpoch: 0,
    epoch: 0,
    globalStep: 0,
    history,
    bestValAcc: null,
    bestEpoch: null,
    esBest: null,
    esWait: 0,
    stoppedEarly: false,
    phaseStep: 0,
    epochPartial: null,
  };
}

async function optimizerWeights(model: tf.LayersModel): Promise<{ name: string; tensor: tf.Tensor }[]> {
  const opt = model.optimizer as tf.Optimizer | undefined;
  if (!opt) return [];
  const list = await opt.getWeights();
  return list.map((w, i) => ({ name: `${String(i).padStart(5, '0')}|${w.name}`, tensor: w.tensor }));
}

/** Writes the run model's weights, the phase model's optimizer state and the loop state as the run's last checkpoint. */
export async function writeCheckpoint(ctx: FitContext, phaseModel: tf.LayersModel): Promise<void> {
  const step = ctx.state.globalStep;
  const optimizer = await optimizerWeights(phaseModel);
  try {
    await ctx.runDir.writeCheckpoint(
      'last',
      ctx.state.epoch,
      { weights: namedWeights(ctx.runModel), optimizer, state: ctx.state },
      { beforeSwitch: KILL_AT_STEP === step ? () => void process.kill(process.pid, 'SIGKILL') : undefined },
    );
  } finally {
    // getWeights() makes a new scalar of the iteration count at each call (one tensor leaked per checkpoint, as
    // bench:soak showed); the other entries are the optimizer's own variables and stay.
    for (const w of optimizer) if (w.name.endsWith('|iter')) w.tensor.dispose();
  }
}

/**
 * The Dropout layers of `model` (nested models included). tfjs draws dropout masks from an unseeded generator;
 * seedDropout gives each layer a seed per step, so the masks are a pure function of (seed, step, layer).
 */
function dropoutLayers(model: tf.LayersModel): { seed?: number }[] {
  const out: { seed?: number }[] = [];
  const walk = (layers: tf.layers.Layer[]) => {
    for (const l of layers) {
      if (l.getClassName() === 'Dropout') out.push(l as unknown as { seed?: number });
      const inner = (l as unknown as { layers?: tf.layers.Layer[] }).layers;
      if (Array.isArray(inner)) walk(inner);
    }
  };
  walk(model.layers);
  return out;
}

function seedDropout(layers: { seed?: number }[], seed: number, step: number): void {
  // A 32-bit mix of (seed, step, layer): distinct masks per step and layer, the same ones on every run.
  layers.forEach((l, i) => {
    let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(step + 1, 0xc2b2ae35) ^ Math.imul(i + 1, 0x27d4eb2f);
    h ^= h >>> 16;
    l.seed = h >>> 0;
  });
}

/** The loop state of the run's last checkpoint, or null. */
export async function readCheckpointState(runDir: RunDir | string): Promise<CheckpointState | null> {
  return (typeof runDir === 'string' ? RunDir.open(runDir) : runDir).readCheckpointState();
}

/** Loads a checkpoint's weights into `model` (and its optimizer state into `phaseModel`); false when there is none. */
async function restore(
  runDir: RunDir,
  slot: 'last' | 'best',
  model: tf.LayersModel,
  phaseModel: tf.LayersModel | null,
): Promise<boolean> {
  const ck = await runDir.readCheckpoint(slot);
  if (!ck) return false;
  try {
    assignNamedWeights(model, ck.weights);
    const names = Object.keys(ck.optimizer ?? {}).sort();
    if (names.length && phaseModel?.optimizer) {
      await (phaseModel.optimizer as tf.Optimizer).setWeights(
        names.map((k) => ({ name: k.slice(k.indexOf('|') + 1), tensor: ck.optimizer![k] })),
      );
    }
  } finally {
    tf.dispose([...Object.values(ck.weights), ...Object.values(ck.optimizer ?? {})]);
  }
  return true;
}

/** Restores the last checkpoint: weights into the run model, optimizer state into the phase model (compiled, same trainable set). */
export async function restoreCheckpoint(
  runDir: RunDir,
  runModel: tf.LayersModel,
  phaseModel: tf.LayersModel | null,
): Promise<void> {
  // Restoring is exact (bit for bit): weights and optimizer slots are float32 written and read as they are.
  if (!(await restore(runDir, 'last', runModel, phaseModel)))
    throw new UserError(`${runDir.url}: no checkpoint to restore`, { code: 'bad-run' });
}

/** Mean loss and accuracy of `model` over `steps` batches of `feed` (all of it when steps is Infinity). */
export async function evaluateFeed(
  model: tf.LayersModel,
  feed: BatchFeed,
  steps: number,
): Promise<{ loss: number; acc: number; n: number }> {
  let lossSum = 0;
  let accSum = 0;
  let n = 0;
  for (let s = 0; s < steps; s++) {
    const b = await feed.next();
    if (!b) break;
    const [l, a] = tf.tidy(() => {
      const pred = model.predict(b.xs) as tf.Tensor;
      const y = b.ys.reshape([-1]);
      const classes = pred.shape[pred.shape.length - 1]!;
      if (classes > 1) {
        // Softmax over N classes, integer labels: categorical crossentropy of the true class, argmax accuracy.
        const p = pred.reshape([-1, classes]).clipByValue(1e-7, 1 - 1e-7);
        const truth = tf.oneHot(y.toInt(), classes);
        const loss = tf.neg(tf.sum(tf.mul(truth, tf.log(p))));
        const acc = tf.equal(tf.argMax(p, 1), y.toInt()).cast('float32').sum();
        return [loss.dataSync()[0], acc.dataSync()[0]];
      }
      const p = pred.reshape([-1]).clipByValue(1e-7, 1 - 1e-7);
      const loss = tf.neg(tf.add(tf.mul(y, tf.log(p)), tf.mul(tf.sub(1, y), tf.log(tf.sub(1, p))))).sum();
      const acc = tf.equal(tf.greater(p, 0.5).cast('float32'), y).cast('float32').sum();
      return [loss.dataSync()[0], acc.dataSync()[0]];
    });
    tf.dispose([b.xs, b.ys]);
    lossSum += l;
    accSum += a;
    n += b.n;
  }
  return { loss: n ? lossSum / n : NaN, acc: n ? accSum / n : NaN, n };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one phase from `ctx.state` (which may come from a checkpoint) to its last epoch, checkpointing after
 * every epoch. Returns early when early stopping triggers; throws NanLossError when the loss is not finite.
 */
export async function fitPhase(ctx: FitContext, phase: Phase): Promise<void> {
  const st = ctx.state;
  if (st.phase !== phase.name) {
    // Callbacks are per phase, as per Keras fit() call: early stopping and keep-best start afresh.
    st.phase = phase.name;
    st.phaseEpoch = 0;
    st.phaseStep = 0;
    st.epochPartial = null;
    st.esBest = null;
    st.esWait = 0;
    st.stoppedEarly = false;
    st.bestValAcc = null;
    st.bestEpoch = null;
  }
  if (st.stoppedEarly) return;
  const { model } = phase;
  const dropouts = dropoutLayers(model);
  for (let e = st.phaseEpoch + 1; e <= phase.epochs; e++) {
    const globalEpoch = st.epoch + 1;
    const label = `${phase.name === 'train' ? '' : `${phase.name} `}epoch ${e}/${phase.epochs}`;
    // A checkpoint inside this epoch (--checkpoint-every) carries the epoch's sums so far.
    const partial = st.epochPartial;
    const firstStep = partial ? st.phaseStep - st.phaseEpoch * phase.stepsPerEpoch + 1 : 1;
    const t0 = performance.now() - (partial?.seconds ?? 0) * 1000;
    let lossSum = partial?.lossSum ?? 0;
    let accSum = partial?.accSum ?? 0;
    let seen = partial?.seen ?? 0;
    st.epochPartial = null;
    ctx.progress.start(label, phase.stepsPerEpoch);
    try {
      for (let s = firstStep; s <= phase.stepsPerEpoch; s++) {
        const b = await phase.train.next();
        if (!b) throw new Error('training data ended early');
        seedDropout(dropouts, ctx.seed ?? 0, st.globalStep);
        const out = (await model.trainOnBatch(b.xs, b.ys)) as number[];
        tf.dispose([b.xs, b.ys]);
        st.globalStep++;
        st.phaseStep++;
        let loss = Array.isArray(out) ? out[0] : (out as number);
        const acc = Array.isArray(out) ? out[1] : NaN;
        if (ctx.debugNanAtStep !== undefined && st.globalStep === ctx.debugNanAtStep) loss = NaN;
        if (!Number.isFinite(loss)) {
          ctx.progress.stop();
          const kept =
            st.epoch > 0
              ? `the last good checkpoint (epoch ${st.epoch}) is kept in ${ctx.runDir.urlOf('checkpoints')}`
              : 'no epoch finished, so there is no checkpoint';
          throw new NanLossError(
            `loss became ${loss} at epoch ${globalEpoch}, step ${s}: training stopped; ${kept}. Lower --learning-rate or check the data.`,
          );
        }
        lossSum += loss * b.n;
        accSum += acc * b.n;
        seen += b.n;
        const secs = (performance.now() - t0) / 1000;
        ctx.progress.update(s, { loss: lossSum / seen, acc: accSum / seen, imagesPerSecond: seen / secs });
        if (ctx.checkpointEvery && st.globalStep % ctx.checkpointEvery === 0 && s < phase.stepsPerEpoch) {
          st.epochPartial = { lossSum, accSum, seen, seconds: secs };
          await writeCheckpoint(ctx, model);
          st.epochPartial = null;
          ctx.progress.log(`checkpoint: step ${st.globalStep} (${label}, step ${s}/${phase.stepsPerEpoch})`);
        }
      }
    } finally {
      ctx.progress.stop();
    }
    const trainSeconds = (performance.now() - t0) / 1000;
    const val = phase.validation ? await evaluateFeed(model, phase.validation, phase.validationSteps) : null;
    const seconds = (performance.now() - t0) / 1000;
    const logs = {
      loss: lossSum / seen,
      acc: accSum / seen,
      val_loss: val ? val.loss : null,
      val_acc: val ? val.acc : null,
      seconds: Math.round(seconds * 1000) / 1000,
      images_per_s: Math.round((seen / trainSeconds) * 10) / 10,
    };
    appendEpoch(st.history, globalEpoch, logs, phase.name);
    st.epoch = globalEpoch;
    st.phaseEpoch = e;
    ctx.progress.log(
      `${label} - ${seconds.toFixed(1)}s - loss ${logs.loss.toFixed(4)} - acc ${logs.acc.toFixed(4)}` +
        (val ? ` - val_loss ${val.loss.toFixed(4)} - val_acc ${val.acc.toFixed(4)}` : '') +
        ` - ${logs.images_per_s} img/s`,
    );
    // keep-best: best val_acc of this phase (the last phase's best is what the run keeps), saved beside the checkpoint.
    if (val && (st.bestValAcc === null || val.acc > st.bestValAcc)) {
      st.bestValAcc = val.acc;
      st.bestEpoch = globalEpoch;
      if (ctx.keepBest) await ctx.runDir.writeCheckpoint('best', globalEpoch, { weights: namedWeights(ctx.runModel) });
    }
    // Early stopping monitors val_loss (Keras' default), min_delta 0.
    if (ctx.earlyStopping !== null && val) {
      if (st.esBest === null || val.loss < st.esBest) {
        st.esBest = val.loss;
        st.esWait = 0;
      } else if (++st.esWait >= ctx.earlyStopping) {
        st.stoppedEarly = true;
      }
    }
    await writeCheckpoint(ctx, model);
    await ctx.runDir.writeHistory(st.history);
    if (st.stoppedEarly) {
      ctx.progress.log(
        `early stopping: val_loss has not improved for ${ctx.earlyStopping} epochs (best ${st.esBest?.toFixed(4)})`,
      );
      return;
    }
    if (ctx.debugEpochDelayMs) await sleep(ctx.debugEpochDelayMs);
  }
}

/** keep-best: loads the best val_acc weights (saved during training) into the run model; false when none were saved. */
export function restoreBest(ctx: FitContext): Promise<boolean> {
  return restore(ctx.runDir, 'best', ctx.runModel, null);
}
