// What a strategy is: a module that builds its model(s) and says which phases train them and how the test split
// is predicted. train() (train.ts) runs the phases through the one fit loop; strategies/index.ts registers them.
import type * as tf from '@tensorflow/tfjs';
import type { SplitName } from '@catdog/dataset';
import type { PresetName, TrainConfig } from './config.js';
import type { Feed } from './data.js';
import type { CheckpointState, Phase } from './fit.js';
import type { Predictions } from './metrics.js';
import type { ProgressSink } from './progress.js';

/**
 * Where a phase's feeds start: batches already consumed by an interrupted run of this phase (0 for a new phase).
 * Opening the feeds there gives exactly the batches the uninterrupted run would have seen next.
 */
export interface FeedPosition {
  /** Training batches consumed in the phase (the checkpoint's phaseStep). */
  trainBatches: number;
  /** Epochs finished in the phase: validation has consumed this many × its validation steps. */
  epochs: number;
}

export const PHASE_START: FeedPosition = { trainBatches: 0, epochs: 0 };

/** A phase to run: `make(at)` compiles its model and opens its feeds at `at` when the phase starts (not before). */
export interface PhaseSpec {
  /** 'train' for one-phase strategies; a checkpoint records it so --resume continues the right phase. */
  name: string;
  epochs: number;
  make(at?: FeedPosition): Promise<Phase>;
}

/** What a strategy hands to train(). */
export interface StrategyPlan {
  /** The model saved in checkpoints and at the end (model/); phases may train parts of it. */
  model: tf.LayersModel;
  phases: PhaseSpec[];
  /** Predicts the test split with the trained model (after the last phase). */
  predictTest(): Promise<Predictions>;
  /** Frees memory the strategy holds (e.g. cached features); called once the run ends, failed or not. */
  release?(): void;
}

/** Image batches of a split of the run's dataset, scaled for the model. */
export interface ImageFeedOptions {
  augment: boolean;
  repeat: boolean;
  shuffle: boolean;
  /** Resuming: batches already consumed from this (repeating) feed; the feed starts with the next one. */
  start?: number;
}

/** What train() gives a strategy to build with. */
export interface StrategyContext {
  cfg: TrainConfig;
  /** Images per split of the dataset. */
  counts: Record<SplitName, number>;
  /** The dataset's classes (sorted; label = index): two give the book's sigmoid output, more a softmax. */
  classes: string[];
  /** The loop state (restored from a checkpoint when resuming). */
  state: CheckpointState;
  progress: ProgressSink;
  log(line: string): void;
  /** Opens image batches of `split` with the run's batch size, input size, scaling, seed and workers. */
  imageFeed(split: SplitName, options: ImageFeedOptions): Promise<Feed>;
  /** Where feature caches live (one subfolder per cache key). */
  featureCacheRoot: string;
  /** sha256 of the dataset's manifest.json (part of every feature cache key). */
  manifestSha256: string;
}

/** A strategy's settings where they differ from the config schema's defaults. */
export type StrategySettings = Partial<Omit<TrainConfig, 'strategy' | 'data' | 'out'>>;

export interface StrategyDefinition {
  /** One line for --help. */
  help: string;
  /** The book's settings for this strategy, over the schema's defaults. A strategy that names a `base` here uses one (--base, --weights). */
  defaults: StrategySettings;
  /** Preset values for this strategy, over the preset's values for every strategy. */
  presets?: Partial<Record<PresetName, StrategySettings>>;
  build(ctx: StrategyContext): Promise<StrategyPlan>;
}

/** Whether a strategy uses a pretrained conv base: its defaults name one. */
export const usesBase = (strategy: StrategyDefinition): boolean => strategy.defaults.base !== undefined;
