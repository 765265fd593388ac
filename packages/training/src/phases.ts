// The two kinds of phase every strategy is made of, and the matching test-time predictors: phases on image
// batches (optionally above a frozen, compiled bottom) and phases on cached features.
import type * as tf from '@tensorflow/tfjs';
import { rmsprop } from '@catdog/backend';
import { classifierLoss } from '@catdog/models';
import { featureFeed, frozenForward, throughFrozen, type FeatureSet } from './features.js';
import type { BatchFeed } from './fit.js';
import { predictFeed, type Predictions } from './metrics.js';
import { PHASE_START, type PhaseSpec, type StrategyContext } from './strategy.js';

/**
 * Compiles a classifier with RMSprop and the loss its output calls for (classifierLoss: binary crossentropy for the
 * book's sigmoid, sparse categorical crossentropy for a softmax over N classes); 'acc' follows the loss.
 */
export function compileClassifier(model: tf.LayersModel, learningRate: number): void {
  // rmsprop: tf.train.rmsprop's arithmetic, one fused pass per variable on wasm.
  model.compile({ optimizer: rmsprop(learningRate), loss: classifierLoss(model), metrics: ['acc'] });
}

/** The name it had while every model was binary. */
export const compileBinary = compileClassifier;

/** Steps of one pass over `n` images, unless configured. */
export const stepsFor = (n: number, batch: number, configured: number | null): number =>
  configured ?? Math.ceil(n / batch);

export interface ImagePhaseOptions {
  name: string;
  epochs: number;
  learningRate: number;
  /** The model this phase trains (compiled when the phase starts). */
  model: tf.LayersModel;
  /** Runs when the phase starts, before compiling (e.g. unfreezing layers). */
  prepare?: () => void;
  /**
   * Train `frozen.top` on what the frozen `frozen.bottom` makes of each batch, run through compileFrozenBase
   * (BatchNorm folded, ReLU6 fused): the same computation as training the whole model with the bottom frozen,
   * without its slower layer-by-layer forward.
   */
  frozen?: { bottom: tf.LayersModel; top: tf.LayersModel };
  /**
   * With `frozen`: the validation images' cached outputs of `frozen.bottom`, validated on instead of running the
   * bottom over the (unaugmented) validation images every epoch: the same numbers, a third less work per epoch.
   */
  validationFeatures?: () => Promise<FeatureSet>;
}

/** A phase on image batches of the training split (augmented when the config says so), validated on images. */
export function imagePhase(ctx: StrategyContext, o: ImagePhaseOptions): PhaseSpec {
  const { cfg, counts } = ctx;
  return {
    name: o.name,
    epochs: o.epochs,
    async make(at = PHASE_START) {
      o.prepare?.();
      const model = o.frozen?.top ?? o.model;
      compileClassifier(model, o.learningRate);
      const validationSteps = stepsFor(counts.validation, cfg.batchSize, cfg.validationSteps);
      let train: BatchFeed = await ctx.imageFeed('train', {
        augment: Boolean(cfg.augment),
        repeat: true,
        shuffle: true,
        start: at.trainBatches,
      });
      const validationStart = at.epochs * validationSteps;
      let validation: BatchFeed =
        o.frozen && o.validationFeatures
          ? featureFeed(await o.validationFeatures(), cfg.batchSize, {
              shuffle: false,
              repeat: true,
              seed: 0,
              start: validationStart,
            })
          : await ctx.imageFeed('validation', { augment: false, repeat: true, shuffle: false, start: validationStart });
      if (o.frozen) {
        ctx.log(
          `${o.name}: the frozen ${o.frozen.bottom.name} runs compiled (BatchNorm folded); training ${o.frozen.top.name} on its output${o.validationFeatures ? ', validated on its cached output' : ''}`,
        );
        const forward = frozenForward(o.frozen.bottom, ctx.log);
        train = throughFrozen(train, forward, true);
        if (!o.validationFeatures) validation = throughFrozen(validation, forward, false);
      }
      return {
        name: o.name,
        model,
        epochs: o.epochs,
        batchSize: cfg.batchSize,
        stepsPerEpoch: stepsFor(counts.train, cfg.batchSize, cfg.stepsPerEpoch),
        validationSteps,
        train,
        validation,
      };
    },
  };
}

export interface FeaturePhaseOptions {
  name: string;
  epochs: number;
  learningRate: number;
  batchSize: number;
  /** The model trained on the features (compiled when the phase starts). */
  model: tf.LayersModel;
  /** The cached inputs of `model` per split. */
  features(split: 'train' | 'validation'): Promise<FeatureSet>;
  /** Training steps per epoch (null: one pass) and validation steps (null: one pass). */
  stepsPerEpoch: number | null;
  validationSteps: number | null;
  /** Seed of the training split's shuffles. */
  seed: number;
  /** Runs when the phase starts, before compiling; gets the training features. */
  prepare?: (train: FeatureSet) => void;
}

/** A phase on cached features (the book's fast feature extraction): shuffled training features, all of validation. */
export function featurePhase(o: FeaturePhaseOptions): PhaseSpec {
  return {
    name: o.name,
    epochs: o.epochs,
    async make(at = PHASE_START) {
      const train = await o.features('train');
      const val = await o.features('validation');
      o.prepare?.(train);
      compileClassifier(o.model, o.learningRate);
      const validationSteps = stepsFor(val.count, o.batchSize, o.validationSteps);
      return {
        name: o.name,
        model: o.model,
        epochs: o.epochs,
        batchSize: o.batchSize,
        stepsPerEpoch: stepsFor(train.count, o.batchSize, o.stepsPerEpoch),
        validationSteps,
        train: featureFeed(train, o.batchSize, { shuffle: true, repeat: true, seed: o.seed, start: at.trainBatches }),
        validation: featureFeed(val, o.batchSize, {
          shuffle: false,
          repeat: true,
          seed: 0,
          start: at.epochs * validationSteps,
        }),
      };
    },
  };
}

/** The test split's images through `model`, one pass. */
export async function predictTestImages(ctx: StrategyContext, model: tf.LayersModel): Promise<Predictions> {
  const feed = await ctx.imageFeed('test', { augment: false, repeat: false, shuffle: false });
  try {
    return await predictFeed(model, feed, ctx.progress, 'test', Math.ceil(ctx.counts.test / ctx.cfg.batchSize));
  } finally {
    await feed.close();
  }
}

/** The test split's cached features through `model` (the head-only model of extract). */
export async function predictTestFeatures(
  ctx: StrategyContext,
  model: tf.LayersModel,
  set: FeatureSet,
): Promise<Predictions> {
  const feed = featureFeed(set, ctx.cfg.batchSize, { shuffle: false, repeat: false, seed: 0 });
  return predictFeed(model, feed, ctx.progress, 'test', Math.ceil(set.count / ctx.cfg.batchSize));
}
