// A training run end to end: checks, backend, the strategy's phases, checkpoints/resume, the final model,
// test evaluation and the run directory (docs/ARCHITECTURE.md, "Run directory").
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { initBackend } from '@catdog/backend';
import { buildConvnet, countParams, FINE_TUNE_FROM, modelSummary, setTrainableFrom } from '@catdog/models';
import { UserError } from '@catdog/errors';
import type { SplitName } from '@catdog/dataset';
import type { TrainConfig } from './config.js';
import { checkDataset, openFeed, type Feed } from './data.js';
import { buildDenseHead, compileBinary, defaultFeatureCacheDir, featureTensor, loadConvBase, resolveWeights, splitAtLayer, weightsIdentity } from './build.js';
import { extractFeatures, featureCacheKey, featureFeed, frozenForward, mapFeatureSet, throughFrozen, type FeatureKeyParts, type FeatureSet } from './features.js';
import { fitPhase, initialState, readCheckpointState, restoreBest, restoreCheckpoint, type BatchFeed, type FitContext, type Phase } from './fit.js';
import { emptyHistory, writeHistory, type History } from './history.js';
import { computeMetrics, confusionText, contractLine, predictFeed, writeMisclassifiedThumbnails, type Predictions, type TestMetrics } from './metrics.js';
import { saveModel, writeFileAtomic } from './model-io.js';
import { createProgress, type ProgressSink } from './progress.js';
import { explainOutOfMemory } from './errors.js';

export interface TrainOptions {
  progress?: ProgressSink;
  /** Where the shared weights live when cfg.weightsDir is unset (default: $CATDOG_WEIGHTS_DIR or ../shared/weights). */
  workspaceRoot?: string;
}

export interface TrainResult {
  runDir: string;
  config: TrainConfig;
  history: History;
  metrics: TestMetrics;
}

interface PhaseSpec {
  name: string;
  epochs: number;
  make(): Promise<Phase>;
}

const closeFeed = async (f: BatchFeed | null) => {
  await f?.close?.();
};

/** Trains `cfg.strategy` into the run directory `cfg.out`; with cfg.resume continues its last checkpoint. */
export async function train(cfgIn: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const progress = opts.progress ?? createProgress();
  const log = (line: string) => progress.log(line);
  const runDir = resolve(cfgIn.out);
  let cfg = { ...cfgIn, out: runDir };
  const checkpoint = cfg.resume ? await readCheckpointState(runDir) : null;
  let savedPlanId: string | undefined;
  if (cfg.resume) {
    if (!checkpoint) throw new UserError(`nothing to resume in ${runDir}: no checkpoint (checkpoints/last/state.json); start a new run without --resume`);
    const saved = JSON.parse(await readFile(join(runDir, 'config.json'), 'utf8')) as TrainConfig & { backend: unknown };
    if (saved.strategy !== cfg.strategy) throw new UserError(`${runDir} holds a ${saved.strategy} run; resume it with the ${saved.strategy} strategy`);
    // The run's own settings win (same total epochs, same data); only where and how to compute may change.
    cfg = {
      ...(saved as TrainConfig),
      data: cfgIn.data || saved.data,
      backend: cfg.backend,
      threads: cfg.threads,
      workers: cfg.workers,
      resume: true,
      out: runDir,
      debugNanAtStep: cfg.debugNanAtStep,
      debugEpochDelayMs: cfg.debugEpochDelayMs,
    };
    savedPlanId = (saved as unknown as { dataset?: { planId?: string } }).dataset?.planId;
    log(`resuming ${runDir} after epoch ${checkpoint.epoch}`);
  } else if (existsSync(join(runDir, 'checkpoints')) || existsSync(join(runDir, 'history.json'))) {
    throw new UserError(`${runDir} already holds a run; pass --resume to continue it, or choose a new --out`);
  }
  const manifest = await checkDataset(cfg.data);
  if (savedPlanId && manifest.planId !== savedPlanId) {
    throw new UserError(`${cfg.data} is not the dataset this run was trained on (manifest planId ${manifest.planId}, the run's ${savedPlanId})`);
  }
  const manifestSha256 = createHash('sha256').update(JSON.stringify(manifest)).digest('hex');
  const backend = await initBackend({ backend: cfg.backend, threads: cfg.threads, log });
  const transfer = cfg.strategy !== 'scratch' && cfg.strategy !== 'augmented';
  const weights = transfer ? resolveWeights(cfg) : undefined;
  const totalEpochs = cfg.strategy === 'finetune' ? cfg.headEpochs + cfg.epochs : cfg.epochs;
  const startedAt = Date.now();
  const priorWall = checkpoint ? checkpoint.history.seconds.reduce((a, b) => a + b, 0) : 0;
  const configJson = {
    ...cfg,
    weights,
    totalEpochs,
    backend: { name: backend.name, threads: backend.threads, reason: backend.reason },
    backendRequest: cfg.backend,
    dataset: { url: cfg.data, planId: manifest.planId, classes: manifest.classes, counts: Object.fromEntries(Object.entries(manifest.splits).map(([k, v]) => [k, v.count])), manifestSha256 },
    inputScalingFormula: cfg.inputScaling === 'symmetric' ? 'x / 127.5 - 1' : 'x / 255',
    writtenAt: new Date().toISOString(),
  };

  const scaling = cfg.inputScaling ?? 'unit';
  const imageFeed = (split: SplitName, o: { augment: boolean; repeat: boolean; shuffle: boolean; batchSize?: number; initialEpoch?: number }): Promise<Feed> =>
    openFeed({
      source: cfg.data,
      split,
      batchSize: o.batchSize ?? cfg.batchSize,
      inputSize: cfg.inputSize,
      scaling,
      augment: o.augment ? (typeof cfg.augment === 'object' ? cfg.augment : true) : false,
      shuffle: o.shuffle,
      seed: cfg.seed,
      workers: cfg.workers,
      repeat: o.repeat,
      initialEpoch: o.initialEpoch,
    });
  const counts = { train: manifest.splits.train.count, validation: manifest.splits.validation.count, test: manifest.splits.test.count };
  const stepsFor = (n: number, batch: number, configured: number | null) => configured ?? Math.ceil(n / batch);

  const state = checkpoint ?? initialState(emptyHistory());
  // Build the strategy's model(s) and phases.
  let runModel: tf.LayersModel;
  const specs: PhaseSpec[] = [];
  let testPredict: () => Promise<Predictions>;
  const featureSets = new Map<SplitName, FeatureSet>();
  let featuresOf: ((split: SplitName) => Promise<FeatureSet>) | null = null;
  /**
   * A phase that trains on image batches; it compiles when it starts, after `prepare` (e.g. unfreezing). With
   * `split`, the phase trains `split.top` (the part of runModel above its frozen part, sharing its layers) on what
   * the frozen `split.bottom` makes of each batch, run through compileFrozenBase (BatchNorm folded, ReLU6 fused):
   * the same computation as training runModel with the bottom frozen, without its slower layer-by-layer forward.
   */
  const imagePhase = (
    name: string,
    epochs: number,
    learningRate: number,
    prepare?: () => void,
    split?: { bottom: tf.LayersModel; top: tf.LayersModel },
  ): PhaseSpec => ({
    name,
    epochs,
    async make() {
      prepare?.();
      const model = split?.top ?? runModel;
      compileBinary(model, learningRate);
      const augment = Boolean(cfg.augment);
      let train: BatchFeed = await imageFeed('train', { augment, repeat: true, shuffle: true, initialEpoch: state.phase === name ? state.phaseEpoch : 0 });
      let validation: BatchFeed = await imageFeed('validation', { augment: false, repeat: true, shuffle: false });
      if (split) {
        log(`${name}: the frozen ${split.bottom.name} runs compiled (BatchNorm folded); training ${split.top.name} on its output`);
        const forward = frozenForward(split.bottom, log);
        train = throughFrozen(train, forward, true);
        validation = throughFrozen(validation, forward, false);
      }
      return {
        name,
        model,
        epochs,
        batchSize: cfg.batchSize,
        stepsPerEpoch: stepsFor(counts.train, cfg.batchSize, cfg.stepsPerEpoch),
        validationSteps: stepsFor(counts.validation, cfg.batchSize, cfg.validationSteps),
        train,
        validation,
      };
    },
  });
  const imageTestPredict = async () => {
    const feed = await imageFeed('test', { augment: false, repeat: false, shuffle: false });
    try {
      return await predictFeed(runModel, feed, progress, 'test', Math.ceil(counts.test / cfg.batchSize));
    } finally {
      await feed.close();
    }
  };
  testPredict = imageTestPredict;

  if (!transfer) {
    runModel = buildConvnet({ inputShape: [cfg.inputSize, cfg.inputSize, 3], dropout: cfg.dropout, seed: cfg.seed });
    specs.push(imagePhase('train', cfg.epochs, cfg.learningRate));
  } else {
    const base = await loadConvBase(cfg, weights!);
    const features = featureTensor(base, cfg.headPooling);
    const featureShape = features.shape.slice(1) as number[];
    const head = buildDenseHead(featureShape, { units: cfg.headUnits, dropout: cfg.dropout, seed: cfg.seed });
    runModel = tf.model({ inputs: base.inputs, outputs: head.apply(features), name: `${base.name}_${cfg.strategy.replace('-', '_')}` });
    const freezeBase = () => {
      for (const l of base.layers) l.trainable = false;
    };
    const extractor = tf.model({ inputs: base.inputs, outputs: features, name: `${base.name}_features` });
    const keyParts: FeatureKeyParts = {
      base: cfg.base!,
      weights: await weightsIdentity(weights!),
      inputSize: cfg.inputSize,
      inputScaling: scaling,
      pooling: cfg.headPooling,
      manifestSha256,
    };
    const cacheDir = join(resolve(cfg.featureCacheDir ?? defaultFeatureCacheDir(runDir)), featureCacheKey(keyParts));
    featuresOf = async (split: SplitName) => {
      let set = featureSets.get(split);
      if (!set) {
        set = await extractFeatures({
          dir: cacheDir,
          split,
          extractor,
          openFeed: () => imageFeed(split, { augment: false, repeat: false, shuffle: false }),
          progress,
          batchSize: cfg.batchSize,
          keyParts,
        });
        featureSets.set(split, set);
      }
      return set;
    };
    const featurePhase = (name: string, epochs: number, lr: number, batch: number, steps: number | null): PhaseSpec => ({
      name,
      epochs,
      async make() {
        const train = await featuresOf!('train');
        const val = await featuresOf!('validation');
        compileBinary(head.model, lr);
        return {
          name,
          model: head.model,
          epochs,
          batchSize: batch,
          stepsPerEpoch: steps ?? Math.ceil(train.count / batch),
          validationSteps: Math.ceil(val.count / batch),
          train: featureFeed(train, batch, { shuffle: true, repeat: true, seed: cfg.seed }),
          validation: featureFeed(val, batch, { shuffle: false, repeat: true, seed: cfg.seed }),
        };
      },
    });
    if (cfg.strategy === 'extract') {
      freezeBase();
      specs.push(featurePhase('train', cfg.epochs, cfg.learningRate, cfg.batchSize, cfg.stepsPerEpoch));
      testPredict = async () => {
        const set = await featuresOf!('test');
        return predictFeed(head.model, featureFeed(set, cfg.batchSize, { shuffle: false, repeat: false, seed: 0 }) as never, progress, 'test', Math.ceil(set.count / cfg.batchSize));
      };
    } else if (cfg.strategy === 'extract-augmented') {
      const before = runModel.trainableWeights.length;
      freezeBase();
      log(`trainable weight tensors: ${before} before freezing the base, ${runModel.trainableWeights.length} after`);
      specs.push(imagePhase('train', cfg.epochs, cfg.learningRate, undefined, { bottom: extractor, top: head.model }));
    } else {
      // finetune: the head first with the base frozen, then the top of the base unfrozen.
      const before = runModel.trainableWeights.length;
      freezeBase();
      log(`trainable weight tensors: ${before} before freezing the base, ${runModel.trainableWeights.length} after`);
      const from = cfg.fineTuneFrom ?? FINE_TUNE_FROM[cfg.base!];
      let finetunePhase: PhaseSpec;
      // The base below `from` stays frozen in both phases: `bottom` computes the input of `from`, `top` is the rest
      // of runModel (unfrozen top of the base + head, sharing runModel's layers).
      const split = () => {
        try {
          return splitAtLayer(runModel, from, base.name);
        } catch (err) {
          throw err instanceof UserError ? new UserError(`--fine-tune-from ${from}: ${err.message}`) : err;
        }
      };
      if (cfg.fineTuneInput === 'cached-activations') {
        // The frozen lower part of the base runs once per image; its output (the input of `from`) is cached, and
        // both phases train on it: the head through the (frozen) top, then the unfrozen top itself.
        const { bottom, top } = split();
        const topFeatures = tf.model({ inputs: top.model.inputs, outputs: top.map(features), name: `${base.name}_top_features` });
        const actParts: FeatureKeyParts = { ...keyParts, pooling: `activations@${from}` };
        const actDir = join(resolve(cfg.featureCacheDir ?? defaultFeatureCacheDir(runDir)), featureCacheKey(actParts));
        const activations = new Map<SplitName, FeatureSet>();
        const activationsOf = async (split: SplitName) => {
          let set = activations.get(split);
          if (!set) {
            set = await extractFeatures({
              dir: actDir,
              split,
              extractor: bottom,
              openFeed: () => imageFeed(split, { augment: false, repeat: false, shuffle: false }),
              progress,
              batchSize: cfg.batchSize,
              keyParts: actParts,
            });
            activations.set(split, set);
          }
          return set;
        };
        featuresOf = async (split: SplitName) => {
          let set = featureSets.get(split);
          if (!set) {
            const t0 = performance.now();
            set = mapFeatureSet(topFeatures, await activationsOf(split), cfg.batchSize);
            log(`features: ${split} head features from cached activations in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
            featureSets.set(split, set);
          }
          return set;
        };
        finetunePhase = {
          name: 'finetune',
          epochs: cfg.epochs,
          async make() {
            const train = await activationsOf('train');
            const val = await activationsOf('validation');
            const r = setTrainableFrom(base, from);
            log(`fine-tuning from ${from} on cached activations [${train.shape}]: ${r.trainable.length} layers train, ${r.frozen.length} stay frozen; trainable weight tensors: ${top.model.trainableWeights.length}`);
            compileBinary(top.model, cfg.learningRate);
            return {
              name: 'finetune',
              model: top.model,
              epochs: cfg.epochs,
              batchSize: cfg.batchSize,
              stepsPerEpoch: stepsFor(train.count, cfg.batchSize, cfg.stepsPerEpoch),
              validationSteps: stepsFor(val.count, cfg.batchSize, cfg.validationSteps),
              train: featureFeed(train, cfg.batchSize, { shuffle: true, repeat: true, seed: cfg.seed + state.phaseEpoch }),
              validation: featureFeed(val, cfg.batchSize, { shuffle: false, repeat: true, seed: 0 }),
            };
          },
        };
      } else {
        // Image batches can always go through the whole runModel; the split (when `from` allows one) is faster.
        let frozenBottom: { bottom: tf.LayersModel; top: tf.LayersModel } | undefined;
        try {
          const { bottom, top } = split();
          frozenBottom = { bottom, top: top.model };
        } catch {
          frozenBottom = undefined;
        }
        finetunePhase = imagePhase('finetune', cfg.epochs, cfg.learningRate, () => {
          const r = setTrainableFrom(base, from);
          log(`fine-tuning from ${from}: ${r.trainable.length} layers train, ${r.frozen.length} stay frozen; trainable weight tensors: ${runModel.trainableWeights.length}`);
        }, frozenBottom);
      }
      if (cfg.headEpochs > 0) {
        if (cfg.headTraining === 'features') {
          specs.push(featurePhase('head', cfg.headEpochs, cfg.headLearningRate, cfg.headBatchSize, null));
        } else {
          specs.push(imagePhase('head', cfg.headEpochs, cfg.headLearningRate, undefined, { bottom: extractor, top: head.model }));
        }
      }
      specs.push(finetunePhase);
    }
  }
  const params = countParams(runModel);
  log(`${cfg.strategy}: ${runModel.name}, ${params.total.toLocaleString('en')} parameters (${params.trainable.toLocaleString('en')} trainable at start), input ${cfg.inputSize}×${cfg.inputSize} scaled ${configJson.inputScalingFormula}, backend ${backend.name}`);

  const ctx: FitContext = {
    runDir,
    runModel,
    state,
    progress,
    earlyStopping: cfg.earlyStopping,
    keepBest: cfg.keepBest,
    debugNanAtStep: cfg.debugNanAtStep,
    debugEpochDelayMs: cfg.debugEpochDelayMs,
  };
  // The run directory appears once the models are built, so a run that fails to start (e.g. missing weights) leaves
  // nothing behind.
  await mkdir(runDir, { recursive: true });
  await writeFileAtomic(join(runDir, 'config.json'), JSON.stringify(configJson, null, 2));
  const oom = (err: unknown) => explainOutOfMemory(err, { batchSize: cfg.batchSize, inputSize: cfg.inputSize, workers: cfg.workers });
  try {
    const ckIndex = checkpoint ? specs.findIndex((s) => s.name === checkpoint.phase) : -1;
    if (checkpoint && checkpoint.phase && ckIndex < 0) throw new UserError(`checkpoint phase "${checkpoint.phase}" does not belong to the ${cfg.strategy} strategy`);
    let restored = !checkpoint || checkpoint.epoch === 0;
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i];
      if (i < ckIndex) continue;
      const phaseDone = i === ckIndex && (checkpoint!.phaseEpoch >= spec.epochs || checkpoint!.stoppedEarly);
      if (phaseDone) continue;
      const phase = await spec.make();
      try {
        if (!restored) {
          await restoreCheckpoint(runDir, runModel, i === ckIndex ? phase.model : null);
          restored = true;
        }
        await fitPhase(ctx, phase);
      } finally {
        await closeFeed(phase.train);
        await closeFeed(phase.validation);
      }
    }
    if (!restored) await restoreCheckpoint(runDir, runModel, null);
    if (cfg.keepBest && state.bestEpoch !== null && state.bestEpoch !== state.epoch) {
      if (await restoreBest(ctx)) log(`keep-best: restored the weights of epoch ${state.bestEpoch} (val_acc ${state.bestValAcc?.toFixed(4)})`);
    }
    await writeHistory(runDir, state.history);
    await saveModel(runModel, join(runDir, 'model'));
    await writeFileAtomic(join(runDir, 'summary.txt'), `${modelSummary(runModel)}\n`);

    const pred = await testPredict();
    const metrics = computeMetrics(pred, manifest.classes);
    await writeMisclassifiedThumbnails(runDir, metrics, cfg.data);
    const wallSeconds = priorWall + (Date.now() - startedAt) / 1000;
    const seen = state.history.images_per_s.length ? state.history.images_per_s.reduce((a, b) => a + b, 0) / state.history.images_per_s.length : null;
    await writeFileAtomic(
      join(runDir, 'metrics.json'),
      JSON.stringify(
        {
          test: { accuracy: metrics.accuracy, loss: metrics.loss, n: metrics.n, confusion: metrics.confusion, classes: metrics.classes, misclassified: metrics.misclassified },
          bestValAcc: bestOf(state.history).acc,
          bestEpoch: bestOf(state.history).epoch,
          keptEpoch: cfg.keepBest ? state.bestEpoch ?? state.epoch : state.epoch,
          wallSeconds: Math.round(wallSeconds * 10) / 10,
          imagesPerSecond: seen,
          epochs: state.epoch,
          stoppedEarly: state.stoppedEarly,
          backend: { name: backend.name, threads: backend.threads },
        },
        null,
        2,
      ),
    );
    await writeRunViews(runDir, state.history, log);
    log(confusionText(metrics));
    log(`test: ${contractLine(metrics)}`);
    return { runDir, config: cfg, history: state.history, metrics };
  } catch (err) {
    throw oom(err);
  } finally {
    for (const set of featureSets.values()) set.features = new Float32Array(0);
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

/** Curves and the model diagram through @catdog/report, skipped with a note when it is unavailable. */
async function writeRunViews(runDir: string, history: History, log: (line: string) => void): Promise<void> {
  let report: { writeCurves?: (h: unknown, dir: string, o?: unknown) => Promise<string[]>; writeModelViews?: (m: string, dir: string, o?: unknown) => Promise<string[]> };
  try {
    const spec = '@catdog/report';
    report = (await import(spec)) as typeof report;
  } catch (err) {
    log(`note: curves and model diagram skipped (@catdog/report unavailable: ${(err as Error).message.split('\n')[0]})`);
    return;
  }
  try {
    if (report.writeCurves) await report.writeCurves(history, runDir);
    if (report.writeModelViews) await report.writeModelViews(join(runDir, 'model', 'model.json'), runDir);
  } catch (err) {
    log(`note: curves or model diagram not written: ${(err as Error).message.split('\n')[0]}`);
  }
}
