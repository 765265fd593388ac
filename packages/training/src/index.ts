// @catdog/training: the book's five strategies, the fit loop, callbacks, checkpoints and the run directory.
export {
  STRATEGIES,
  BASES,
  PRESETS,
  STRATEGY_DEFAULTS,
  PRESET_VALUES,
  resolveConfig,
  readExperimentFile,
  normalizeKeys,
  type TrainConfig,
  type Strategy,
  type BaseName,
  type PresetName,
  type InputScaling,
  type ResolveInputs,
} from './config.js';
export { train, type TrainOptions, type TrainResult } from './run.js';
export { evaluate, type EvaluateOptions, type EvaluateResult } from './evaluate.js';
export { computeMetrics, contractLine, confusionText, type TestMetrics, type Predictions, type Misclassified } from './metrics.js';
export { fitPhase, initialState, evaluateFeed, readCheckpointState, type Batch, type BatchFeed, type Phase, type CheckpointState } from './fit.js';
export { emptyHistory, historyCsv, type History, type EpochLogs } from './history.js';
export { saveModel, loadModel, namedVariables } from './model-io.js';
export { featureCacheKey, type FeatureKeyParts } from './features.js';
export { defaultWeightsDir, defaultFeatureCacheDir, splitAtLayer } from './build.js';
export { scaleInput, openFeed, checkDataset, openEvaluationSource } from './data.js';
export { createProgress, type ProgressSink } from './progress.js';
export { NanLossError, isOutOfMemory, explainOutOfMemory } from './errors.js';
