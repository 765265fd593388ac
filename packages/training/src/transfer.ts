// What the transfer strategies share: the base's weights, the base + head model (bases and heads from
// @catdog/models), and the feature cache of the frozen base.
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { baseFeatures, baseSpec, buildSharedHead, loadBase, type SharedHead } from '@catdog/models';
import type { TrainConfig } from './config.js';
import { extractedFeatures, type FeatureCache, type FeatureKeyParts, type FeatureSet } from './features.js';
import { featurePhase, imagePhase } from './phases.js';
import type { PhaseSpec, StrategyContext, StrategySettings } from './strategy.js';

/** The book's settings for feature extraction (5.3.1): RMSprop 2e-5, batch 20, 30 epochs × 100 steps, Dropout 0.5 in the head. */
export const FEATURE_EXTRACTION_DEFAULTS: StrategySettings = {
  base: 'mobilenet_v2',
  inputSize: 150,
  batchSize: 20,
  epochs: 30,
  stepsPerEpoch: 100,
  validationSteps: 50,
  learningRate: 2e-5,
  dropout: 0.5,
};

/** Where the shared weights live: $CATDOG_WEIGHTS_DIR, else ../shared/weights beside the workspace root. */
export function defaultWeightsDir(workspaceRoot = process.cwd()): string | undefined {
  if (process.env.CATDOG_WEIGHTS_DIR) return process.env.CATDOG_WEIGHTS_DIR;
  const shared = resolve(workspaceRoot, '..', 'shared', 'weights');
  return existsSync(shared) ? shared : undefined;
}

/** The weights a base is loaded with, as a string that identifies them (recorded in config.json). */
export function resolveWeights(cfg: Pick<TrainConfig, 'base' | 'weights' | 'weightsDir'>): string {
  if (cfg.weights && cfg.weights !== 'imagenet') return cfg.weights;
  return baseSpec(cfg.base!).imagenetWeights(cfg.weightsDir ?? defaultWeightsDir());
}

/**
 * A string identifying the weights: the file's path and a sha256 of its content (a Keras .h5, or a tfjs model.json
 * with every weight file its manifest lists), so weights rewritten in place miss the feature cache. Hashing reads
 * the weights once more (MobileNetV2: 14 MB, tens of milliseconds), against minutes of extraction saved wrongly.
 */
async function weightsIdentity(weights: string): Promise<string> {
  if (weights === 'imagenet' || /^s3:\/\//.test(weights)) return weights;
  for (const p of [weights, join(weights, 'model.json')]) {
    try {
      if (!(await stat(p)).isFile()) continue;
    } catch {
      continue;
    }
    const hash = createHash('sha256');
    const text = await readFile(p);
    hash.update(text);
    if (p.endsWith('.json')) {
      const manifest = (JSON.parse(text.toString('utf8')) as { weightsManifest?: { paths?: string[] }[] })
        .weightsManifest;
      for (const group of manifest ?? [])
        for (const file of group.paths ?? []) hash.update(await readFile(join(dirname(p), file)));
    }
    return `${resolve(p)}:${hash.digest('hex')}`;
  }
  return weights;
}

/** The base + head model of a transfer strategy, and what its phases train on. */
export interface TransferModel {
  base: tf.LayersModel;
  /** The base's output as the head sees it (pooled or not). */
  features: tf.SymbolicTensor;
  head: SharedHead;
  /** base → head, the model the run saves. */
  model: tf.LayersModel;
  /** base → features (the frozen part when the base is frozen). */
  extractor: tf.LayersModel;
  /** The feature cache key of `extractor`'s output. */
  keyParts: FeatureKeyParts;
  /** The extractor's features per split, cached on disk. */
  cache: FeatureCache;
}

/**
 * Loads the configured base with its weights (resolveWeights), puts the book's dense head on it and freezes the
 * base (`conv_base.trainable = False`), saying how many weight tensors still train.
 */
export async function buildTransferModel(ctx: StrategyContext): Promise<TransferModel> {
  const { cfg } = ctx;
  const weights = resolveWeights(cfg);
  const base = await loadBase(cfg.base!, { inputShape: [cfg.inputSize, cfg.inputSize, 3], weights });
  const features = baseFeatures(base, cfg.headPooling);
  const head = buildSharedHead({
    inputShape: features.shape.slice(1) as number[],
    units: cfg.headUnits,
    dropout: cfg.dropout,
    seed: cfg.seed,
    classes: ctx.classes.length,
  });
  const model = tf.model({
    inputs: base.inputs,
    outputs: head.apply(features),
    name: `${base.name}_${cfg.strategy.replace('-', '_')}`,
  });
  const extractor = tf.model({ inputs: base.inputs, outputs: features, name: `${base.name}_features` });
  const keyParts: FeatureKeyParts = {
    base: cfg.base!,
    weights: await weightsIdentity(weights),
    inputSize: cfg.inputSize,
    inputScaling: cfg.inputScaling!,
    pooling: cfg.headPooling,
    manifestSha256: ctx.manifestSha256,
  };
  const cache = extractedFeatures({
    root: ctx.featureCacheRoot,
    keyParts,
    extractor,
    openFeed: (split) => ctx.imageFeed(split, { augment: false, repeat: false, shuffle: false }),
    progress: ctx.progress,
    batchSize: cfg.batchSize,
  });
  const before = model.trainableWeights.length;
  for (const l of base.layers) l.trainable = false;
  ctx.log(`trainable weight tensors: ${before} before freezing the base, ${model.trainableWeights.length} after`);
  return { base, features, head, model, extractor, keyParts, cache };
}

export interface HeadPhaseOptions {
  name: string;
  epochs: number;
  learningRate: number;
  /** Train on these cached inputs of the head (batches of headBatchSize); without them, on image batches. */
  features?: (split: 'train' | 'validation') => Promise<FeatureSet>;
  /** On image batches: validate on the validation split's cached features instead of its images (the same numbers). */
  validateOnCache?: boolean;
}

/**
 * A phase that trains the head with the base frozen: on cached features (fast: the base ran once per image) or on
 * image batches (augmented when the config says so) through the frozen base, run compiled.
 */
export function headPhase(ctx: StrategyContext, t: TransferModel, o: HeadPhaseOptions): PhaseSpec {
  const { cfg } = ctx;
  if (o.features)
    return featurePhase({
      name: o.name,
      epochs: o.epochs,
      learningRate: o.learningRate,
      batchSize: cfg.headBatchSize,
      model: t.head.model,
      features: o.features,
      stepsPerEpoch: null,
      validationSteps: null,
      seed: cfg.seed,
    });
  return imagePhase(ctx, {
    name: o.name,
    epochs: o.epochs,
    learningRate: o.learningRate,
    model: t.model,
    frozen: { bottom: t.extractor, top: t.head.model },
    validationFeatures: o.validateOnCache ? () => t.cache.get('validation') : undefined,
  });
}
