// A training run end to end: resolve the run (new or resumed), build the strategy's model and phases, run the
// phases through the fit loop (checkpoints every epoch), then the final model, test metrics and the run
// directory (docs/ARCHITECTURE.md, "Run directory"). Curves and diagrams are the report's job (apps/trainer calls it).
import type * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { initBackend, type BackendChoice } from '@catdog/backend';
import { classifierOutput, countParams, INPUT_SCALINGS, modelSummary } from '@catdog/models';
import { UserError } from '@catdog/errors';
import type { Manifest } from '@catdog/dataset';
import { parseSize, type TrainConfig } from './config.js';
import { checkDataset, openFeed, SkippedShardLog, splitSource } from './data.js';
import { defaultFeatureCacheDir } from './features.js';
import { fitPhase, initialState, restoreBest, restoreCheckpoint, type FitContext } from './fit.js';
import { computeMetrics, confusionText, contractLine, writeMisclassifiedThumbnails } from './metrics.js';
import {
  emptyHistory,
  RunDir,
  type CheckpointState,
  type History,
  type RunConfig,
  type TestMetrics,
} from './run-dir.js';
import { createProgress, type ProgressSink } from './progress.js';
import { explainOutOfMemory } from './errors.js';
import { STRATEGIES } from './strategies/index.js';
import { usesBase, type StrategyContext, type StrategyPlan } from './strategy.js';
import { resolveWeights } from './transfer.js';

export interface TrainOptions {
  progress?: ProgressSink;
}

export interface TrainResult {
  /** The run directory's location (a local path or s3:// URL). */
  runDir: string;
  config: TrainConfig;
  history: History;
  metrics: TestMetrics;
}

/** The config of the run to train: `cfgIn` for a new run; for --resume, the run's own config.json with only where and how to compute taken from `cfgIn`. */
async function resolveRun(
  cfgIn: TrainConfig,
  runDir: RunDir,
  log: (line: string) => void,
): Promise<{ cfg: TrainConfig; checkpoint: CheckpointState | null; savedPlanId?: string }> {
  const cfg = { ...cfgIn, out: runDir.url };
  if (!cfg.resume) {
    if (await runDir.holdsRun())
      throw new UserError(`${runDir.url} already holds a run; pass --resume to continue it, or choose a new --out`, {
        code: 'bad-run',
      });
    return { cfg, checkpoint: null };
  }
  const checkpoint = await runDir.readCheckpointState();
  if (!checkpoint)
    throw new UserError(
      `nothing to resume in ${runDir.url}: no checkpoint (checkpoints/last.json); start a new run without --resume`,
      { code: 'bad-run' },
    );
  const saved = await runDir.readConfig();
  if (!saved) throw new UserError(`nothing to resume in ${runDir.url}: no config.json`, { code: 'bad-run' });
  if (saved.strategy !== cfg.strategy)
    throw new UserError(`${runDir.url} holds a ${saved.strategy} run; resume it with the ${saved.strategy} strategy`, {
      code: 'bad-run',
    });
  log(
    `resuming ${runDir.url} after epoch ${checkpoint.epoch}${checkpoint.epochPartial ? ` and step ${checkpoint.phaseStep} of phase ${checkpoint.phase}` : ''} (global step ${checkpoint.globalStep})`,
  );
  const {
    weights: _w,
    totalEpochs: _t,
    backend: _b,
    backendRequest: _r,
    dataset,
    inputScalingFormula: _f,
    writtenAt: _a,
    ...savedConfig
  } = saved;
  // The run's own settings win (same total epochs, same data); only where and how to compute may change.
  return {
    cfg: {
      ...savedConfig,
      data: cfgIn.data || saved.data,
      backend: cfg.backend,
      threads: cfg.threads,
      workers: cfg.workers,
      resume: true,
      out: runDir.url,
      debugNanAtStep: cfg.debugNanAtStep,
      debugEpochDelayMs: cfg.debugEpochDelayMs,
      checkpointEvery: cfgIn.checkpointEvery ?? saved.checkpointEvery,
      cacheDir: cfgIn.cacheDir,
      cacheLimit: cfgIn.cacheLimit,
      skipCorrupt: cfgIn.skipCorrupt,
      s3Endpoint: cfgIn.s3Endpoint,
      s3Region: cfgIn.s3Region,
      s3Profile: cfgIn.s3Profile,
      s3PathStyle: cfgIn.s3PathStyle,
    },
    checkpoint,
    savedPlanId: dataset.planId,
  };
}

/** Keras' names of the losses classifierOutput picks, as config.json records them. */
const KERAS_LOSS_NAMES = {
  binaryCrossentropy: 'binary_crossentropy',
  sparseCategoricalCrossentropy: 'sparse_categorical_crossentropy',
} as const;

/** config.json: the resolved config and what the run found (weights, backend, dataset). */
function configJson(
  cfg: TrainConfig,
  plan: StrategyPlan,
  backend: BackendChoice,
  manifest: Manifest,
  manifestSha256: string,
): RunConfig {
  return {
    ...cfg,
    loss: KERAS_LOSS_NAMES[classifierOutput(manifest.classes.length).loss],
    weights: usesBase(STRATEGIES[cfg.strategy]) ? resolveWeights(cfg) : undefined,
    totalEpochs: plan.phases.reduce((n, p) => n + p.epochs, 0),
    backend: { name: backend.name, threads: backend.threads, reason: backend.reason },
    backendRequest: cfg.backend,
    dataset: {
      url: cfg.data,
      planId: manifest.planId,
      classes: manifest.classes,
      counts: Object.fromEntries(Object.entries(manifest.splits).map(([k, v]) => [k, v.count])),
      manifestSha256,
    },
    inputScalingFormula: INPUT_SCALINGS[cfg.inputScaling ?? 'unit'].formula,
    writtenAt: new Date().toISOString(),
  };
}

/** Runs the plan's phases from the checkpoint (if any): phases finished before it are skipped, the checkpoint is restored once. */
async function runPhases(
  plan: StrategyPlan,
  ctx: FitContext,
  checkpoint: CheckpointState | null,
  strategy: string,
): Promise<void> {
  const ckIndex = checkpoint ? plan.phases.findIndex((s) => s.name === checkpoint.phase) : -1;
  if (checkpoint?.phase && ckIndex < 0)
    throw new UserError(`checkpoint phase "${checkpoint.phase}" does not belong to the ${strategy} strategy`, {
      code: 'bad-run',
    });
  let restored = !checkpoint;
  for (let i = Math.max(ckIndex, 0); i < plan.phases.length; i++) {
    const spec = plan.phases[i];
    if (i === ckIndex && (checkpoint!.phaseEpoch >= spec.epochs || checkpoint!.stoppedEarly)) continue;
    // The checkpoint's phase continues where its feeds stopped; later phases start at their beginning.
    const phase = await spec.make(
      i === ckIndex ? { trainBatches: checkpoint!.phaseStep, epochs: checkpoint!.phaseEpoch } : undefined,
    );
    try {
      if (!restored) {
        await restoreCheckpoint(ctx.runDir, plan.model, i === ckIndex ? phase.model : null);
        restored = true;
      }
      await fitPhase(ctx, phase);
    } finally {
      await phase.train.close?.();
      await phase.validation?.close?.();
    }
  }
  if (!restored) await restoreCheckpoint(ctx.runDir, plan.model, null);
}

/**
 * The strategies' image feeds (StrategyContext.imageFeed): the run's dataset, batch, input size, seed, cache and
 * service settings. Exported for tests that hand a strategy what train() would.
 */
export function imageFeeds(
  cfg: TrainConfig,
  manifest: Manifest,
  o: {
    log: (line: string) => void;
    cacheLimit?: number;
    memoryBudget?: number;
    onWarning: (m: string) => void;
    /** where shards skipped under --skip-corrupt are recorded */
    skippedShards?: SkippedShardLog;
  },
): StrategyContext['imageFeed'] {
  return (split, f) =>
    openFeed({
      source: cfg.data,
      split,
      batchSize: cfg.batchSize,
      inputSize: cfg.inputSize,
      scaling: cfg.inputScaling ?? 'unit',
      augment: f.augment ? (typeof cfg.augment === 'object' ? cfg.augment : true) : false,
      shuffle: f.shuffle,
      seed: cfg.seed,
      workers: cfg.workers,
      repeat: f.repeat,
      start: f.start,
      splitSize: manifest.splits[split].count,
      augmentService: cfg.augmentService ? { addresses: cfg.augmentService, tokenFile: cfg.tokenFile } : undefined,
      ...(cfg.batchDigests && split === 'train' ? { batchDigests: cfg.batchDigests } : {}),
      log: o.log,
      cacheDir: cfg.cacheDir,
      cacheLimit: o.cacheLimit,
      memoryBudget: o.memoryBudget,
      skipCorrupt: cfg.skipCorrupt,
      onWarning: o.onWarning,
      onSkippedShards: (shards, s) => o.skippedShards?.add(shards, s),
    });
}

/** The test split's misclassified thumbnails, then metrics.json (written last: its presence means the run is done). */
async function writeResults(
  runDir: RunDir,
  model: tf.LayersModel,
  metrics: TestMetrics,
  cfg: TrainConfig,
  state: CheckpointState,
  o: {
    log: (line: string) => void;
    shardOptions: Parameters<typeof splitSource>[2];
    wallSeconds: number;
    backend: { name: string; threads: number };
  },
): Promise<void> {
  await writeMisclassifiedThumbnails(
    runDir,
    metrics,
    await splitSource(cfg.data, 'test', o.shardOptions),
    undefined,
    undefined,
    { model, inputScaling: cfg.inputScaling ?? 'unit', log: o.log },
  );
  const best = bestOf(state.history);
  const images = state.history.images_per_s;
  await runDir.writeMetrics({
    test: metrics,
    bestValAcc: best.acc,
    bestEpoch: best.epoch,
    keptEpoch: cfg.keepBest ? (state.bestEpoch ?? state.epoch) : state.epoch,
    wallSeconds: Math.round(o.wallSeconds * 10) / 10,
    imagesPerSecond: images.length ? images.reduce((a, b) => a + b, 0) / images.length : null,
    epochs: state.epoch,
    stoppedEarly: state.stoppedEarly,
    backend: o.backend,
  });
}

/** Trains `cfg.strategy` into the run directory `cfg.out`; with cfg.resume continues its last checkpoint. */
export async function train(cfgIn: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const progress = opts.progress ?? createProgress();
  const log = (line: string) => progress.log(line);
  const runDir = RunDir.open(cfgIn.out);
  const { cfg, checkpoint, savedPlanId } = await resolveRun(cfgIn, runDir, log);
  const manifest = await checkDataset(cfg.data);
  if (savedPlanId && manifest.planId !== savedPlanId) {
    throw new UserError(
      `${cfg.data} is not the dataset this run was trained on (manifest planId ${manifest.planId}, the run's ${savedPlanId}); resume without --data to use the run's own, or start a new --out`,
      { code: 'bad-run' },
    );
  }
  const manifestSha256 = createHash('sha256').update(JSON.stringify(manifest)).digest('hex');
  const backend = await initBackend({ backend: cfg.backend, threads: cfg.threads, log });
  const startedAt = Date.now();
  const priorWall = checkpoint ? checkpoint.history.seconds.reduce((a, b) => a + b, 0) : 0;
  const state = checkpoint ?? initialState(emptyHistory());
  const skippedShards = new SkippedShardLog(runDir.storage, log);
  const cacheLimit = cfg.cacheLimit === undefined ? undefined : parseSize(cfg.cacheLimit);
  const memoryBudget = cfg.memoryBudget === undefined ? undefined : parseSize(cfg.memoryBudget);
  const onWarning = (m: string) => log(`warning: ${m}`);
  const strategyCtx: StrategyContext = {
    cfg,
    counts: {
      train: manifest.splits.train.count,
      validation: manifest.splits.validation.count,
      test: manifest.splits.test.count,
    },
    classes: manifest.classes,
    state,
    progress,
    log,
    imageFeed: imageFeeds(cfg, manifest, { log, cacheLimit, memoryBudget, onWarning, skippedShards }),
    featureCacheRoot: resolve(cfg.featureCacheDir ?? defaultFeatureCacheDir(runDir.url)),
    manifestSha256,
  };
  const plan = await STRATEGIES[cfg.strategy].build(strategyCtx);
  const config = configJson(cfg, plan, backend, manifest, manifestSha256);
  const params = countParams(plan.model);
  log(
    `${cfg.strategy}: ${plan.model.name}, ${params.total.toLocaleString('en')} parameters (${params.trainable.toLocaleString('en')} trainable at start), input ${cfg.inputSize}×${cfg.inputSize} scaled ${config.inputScalingFormula}, backend ${backend.name}`,
  );

  const ctx: FitContext = {
    runDir,
    runModel: plan.model,
    state,
    progress,
    earlyStopping: cfg.earlyStopping,
    keepBest: cfg.keepBest,
    debugNanAtStep: cfg.debugNanAtStep,
    debugEpochDelayMs: cfg.debugEpochDelayMs,
    seed: cfg.seed,
    checkpointEvery: cfg.checkpointEvery,
  };
  // The run directory appears once the models are built, so a run that fails to start (e.g. missing weights) leaves
  // nothing behind.
  await runDir.writeConfig(config);
  try {
    await runPhases(plan, ctx, checkpoint, cfg.strategy);
    if (cfg.keepBest && state.bestEpoch !== null && state.bestEpoch !== state.epoch) {
      if (await restoreBest(ctx))
        log(`keep-best: restored the weights of epoch ${state.bestEpoch} (val_acc ${state.bestValAcc?.toFixed(4)})`);
    }
    await runDir.writeHistory(state.history);
    await runDir.saveModel(plan.model);
    await runDir.writeSummary(`${modelSummary(plan.model)}\n`);

    const metrics = computeMetrics(await plan.predictTest(), manifest.classes);
    await writeResults(runDir, plan.model, metrics, cfg, state, {
      log,
      shardOptions: { cacheDir: cfg.cacheDir, cacheLimit, skipCorrupt: cfg.skipCorrupt, onWarning },
      wallSeconds: priorWall + (Date.now() - startedAt) / 1000,
      backend: { name: backend.name, threads: backend.threads },
    });
    log(confusionText(metrics));
    log(`test: ${contractLine(metrics)}`);
    return { runDir: runDir.url, config: cfg, history: state.history, metrics };
  } catch (err) {
    throw explainOutOfMemory(err, { batchSize: cfg.batchSize, inputSize: cfg.inputSize, workers: cfg.workers });
  } finally {
    await skippedShards.flush();
    plan.release?.();
  }
}

function bestOf(h: History): { acc: number | null; epoch: number | null } {
  let acc: number | null = null;
  let epoch: number | null = null;
  h.val_acc.forEach((v, i) => {
    if (v !== null && (acc === null || v > acc)) {
      acc = v;
      epoch = h.epoch[i];
    }
  });
  return { acc, epoch };
}
