// The book's 5.3.2: the head first with the base frozen, then the top of the base unfrozen and trained with it.
// Both phases can run on cached inputs (head on cached features, top on cached activations of the frozen part):
// exact for frozen layers, and much faster on a CPU.
import * as tf from '@tensorflow/tfjs';
import { baseSpec, setTrainableFrom } from '@catdog/models';
import { UserError } from '@catdog/errors';
import { extractedFeatures, mapFeatureSet, memoizedFeatures } from '../features.js';
import { splitAtLayer } from '../graph.js';
import { featurePhase, imagePhase, predictTestImages } from '../phases.js';
import type { PhaseSpec, StrategyContext, StrategyDefinition } from '../strategy.js';
import { buildTransferModel, FEATURE_EXTRACTION_DEFAULTS, headPhase, type TransferModel } from '../transfer.js';

export const finetune: StrategyDefinition = {
  help: 'head with the base frozen, then the top of the base unfrozen (RMSprop 1e-5, 100 epochs)',
  // The book's 5.3.2: RMSprop 1e-5, 100 epochs on augmented batches.
  defaults: { ...FEATURE_EXTRACTION_DEFAULTS, epochs: 100, learningRate: 1e-5, augment: true },
  presets: {
    // The head on cached, globally pooled MobileNetV2 features, then a few fine-tune epochs at a low learning rate
    // polish the top block. On the book's split: 97.3% test accuracy at 160 px, 98.1% at 224 px (BENCHMARKS.md).
    'cpu-quick': {
      inputSize: 224,
      headPooling: 'avg',
      headTraining: 'features',
      headEpochs: 20,
      headLearningRate: 1e-3,
      headBatchSize: 32,
      fineTuneInput: 'cached-activations',
      epochs: 2,
      stepsPerEpoch: null,
      validationSteps: null,
      learningRate: 1e-5,
      batchSize: 32,
      augment: false,
      keepBest: true,
    },
    'ci-smoke': {
      inputSize: 96,
      epochs: 1,
      headTraining: 'features',
      headLearningRate: 1e-3,
      headPooling: 'avg',
      augment: false,
      fineTuneInput: 'cached-activations',
    },
  },
  async build(ctx) {
    const { cfg } = ctx;
    const t = await buildTransferModel(ctx);
    const from = cfg.fineTuneFrom ?? baseSpec(cfg.base!).fineTuneFrom;
    const top = cfg.fineTuneInput === 'cached-activations' ? onCachedActivations(ctx, t, from) : onImages(ctx, t, from);
    const phases: PhaseSpec[] = [];
    if (cfg.headEpochs > 0) {
      phases.push(
        headPhase(ctx, t, {
          name: 'head',
          epochs: cfg.headEpochs,
          learningRate: cfg.headLearningRate,
          features: cfg.headTraining === 'features' ? top.headFeatures : undefined,
        }),
      );
    }
    phases.push(top.phase);
    return { model: t.model, phases, predictTest: () => predictTestImages(ctx, t.model), release: top.release };
  },
};

/**
 * `model` cut below the layer `from`: the frozen bottom computes the input of `from`, the top (unfrozen part of the
 * base + head) shares the model's layers. Fails when a connection bypasses `from`.
 */
function splitAt(t: TransferModel, from: string) {
  try {
    return splitAtLayer(t.model, from, t.base.name);
  } catch (err) {
    throw err instanceof UserError
      ? new UserError(`--fine-tune-from ${from}: ${err.message}`, { code: 'bad-config' })
      : err;
  }
}

interface TopPhase {
  phase: PhaseSpec;
  /** What the head phase trains on when it trains on features. */
  headFeatures: (split: 'train' | 'validation') => ReturnType<TransferModel['cache']['get']>;
  release(): void;
}

/** Fine-tuning on images (the book): every step runs the frozen bottom (compiled when the split allows) and the top. */
function onImages(ctx: StrategyContext, t: TransferModel, from: string): TopPhase {
  let frozen: { bottom: tf.LayersModel; top: tf.LayersModel } | undefined;
  try {
    const { bottom, top } = splitAt(t, from);
    frozen = { bottom, top: top.model };
  } catch {
    // Image batches can always go through the whole model; the split is only faster.
    frozen = undefined;
  }
  const prepare = () => {
    const r = setTrainableFrom(t.base, from);
    ctx.log(
      `fine-tuning from ${from}: ${r.trainable.length} layers train, ${r.frozen.length} stay frozen; trainable weight tensors: ${t.model.trainableWeights.length}`,
    );
  };
  return {
    phase: imagePhase(ctx, {
      name: 'finetune',
      epochs: ctx.cfg.epochs,
      learningRate: ctx.cfg.learningRate,
      model: t.model,
      prepare,
      frozen,
    }),
    headFeatures: (split) => t.cache.get(split),
    release: () => t.cache.release(),
  };
}

/**
 * Fine-tuning on cached activations: the frozen lower part of the base runs once per image and its output (the
 * input of `from`) is cached; the head trains on the (frozen) top's output of those, then the top itself trains.
 */
function onCachedActivations(ctx: StrategyContext, t: TransferModel, from: string): TopPhase {
  const { cfg } = ctx;
  const { bottom, top } = splitAt(t, from);
  const topFeatures = tf.model({
    inputs: top.model.inputs,
    outputs: top.map(t.features),
    name: `${t.base.name}_top_features`,
  });
  const activations = extractedFeatures({
    root: ctx.featureCacheRoot,
    keyParts: { ...t.keyParts, pooling: `activations@${from}` },
    extractor: bottom,
    openFeed: (split) => ctx.imageFeed(split, { augment: false, repeat: false, shuffle: false }),
    progress: ctx.progress,
    batchSize: cfg.batchSize,
  });
  const headFeatures = memoizedFeatures(async (split) => {
    const cached = await activations.get(split); // (extracted first if need be: its own log line and time)
    const t0 = performance.now();
    const set = mapFeatureSet(topFeatures, cached, cfg.batchSize);
    ctx.log(
      `features: ${split} head features from cached activations in ${((performance.now() - t0) / 1000).toFixed(1)}s`,
    );
    return set;
  });
  const phase = featurePhase({
    name: 'finetune',
    epochs: cfg.epochs,
    learningRate: cfg.learningRate,
    batchSize: cfg.batchSize,
    model: top.model,
    features: (split) => activations.get(split),
    stepsPerEpoch: cfg.stepsPerEpoch,
    validationSteps: cfg.validationSteps,
    seed: cfg.seed,
    prepare: (train) => {
      const r = setTrainableFrom(t.base, from);
      ctx.log(
        `fine-tuning from ${from} on cached activations [${train.shape}]: ${r.trainable.length} layers train, ${r.frozen.length} stay frozen; trainable weight tensors: ${top.model.trainableWeights.length}`,
      );
    },
  });
  return {
    phase,
    headFeatures: (split) => headFeatures.get(split),
    release: () => {
      headFeatures.release();
      activations.release();
    },
  };
}
