// @catdog/training: the book's five strategies, the fit loop, callbacks, checkpoints and the run directory.
export {
  STRATEGY_NAMES,
  BASE_NAMES,
  PRESETS,
  STRATEGY_DEFAULTS,
  presetValues,
  FIELDS,
  FIELD_NAMES,
  TrainConfigSchema,
  flagName,
  experimentFileKeys,
  experimentFileTable,
  resolveConfig,
  readExperimentFile,
  normalizeKeys,
  parseSize,
  type FieldName,
  type FieldSpec,
  type FlagSpec,
  type TrainConfig,
  type Strategy,
  type BaseName,
  type PresetName,
  type InputScaling,
  type ResolveInputs,
} from './config.js';
export { imageFeeds, train, type TrainOptions, type TrainResult } from './train.js';
export { STRATEGIES, isStrategy } from './strategies/index.js';
export type {
  StrategyDefinition,
  StrategyContext,
  StrategyPlan,
  PhaseSpec,
  FeedPosition,
  StrategySettings,
  ImageFeedOptions,
} from './strategy.js';
export {
  imagePhase,
  featurePhase,
  predictTestImages,
  predictTestFeatures,
  compileBinary,
  compileClassifier,
  stepsFor,
  type ImagePhaseOptions,
  type FeaturePhaseOptions,
} from './phases.js';
export { buildTransferModel, resolveWeights, defaultWeightsDir, type TransferModel } from './transfer.js';
export { evaluate, locateModel, type EvaluateOptions, type EvaluateResult } from './evaluate.js';
export {
  predict,
  listPhotos,
  formatPredictions,
  predictionWriter,
  type PredictionWriter,
  formatOfFile,
  csvRows,
  jsonRecord,
  kaggleId,
  kaggleSubmission,
  topClasses,
  CSV_HEADER,
  PHOTO_EXTENSIONS,
  PREDICTION_FORMATS,
  type PredictOptions,
  type PredictResult,
  type PhotoPrediction,
  type PhotoList,
  type PredictionFormat,
} from './predict.js';
export { exportRun, explain, type ExportRunOptions, type ExportRunResult, type ExplainOptions } from './use-model.js';
export {
  computeMetrics,
  perClassMetrics,
  contractLine,
  confusionText,
  type TestMetrics,
  type Predictions,
  type Misclassified,
} from './metrics.js';
export {
  fitPhase,
  initialState,
  evaluateFeed,
  readCheckpointState,
  restoreCheckpoint,
  writeCheckpoint,
  type FitContext,
  type Batch,
  type BatchFeed,
  type Phase,
  type EpochLogs,
} from './fit.js';
export {
  RunDir,
  RUN_FILES,
  RUN_FILE_SCHEMAS,
  HistorySchema,
  RunConfigSchema,
  RunMetricsSchema,
  EvaluationSchema,
  TestMetricsSchema,
  CheckpointStateSchema,
  emptyHistory,
  historyCsv,
  datasetId,
  runDirFieldsDoc,
  type History,
  type RunConfig,
  type RunMetrics,
  type Evaluation,
  type CheckpointState,
} from './run-dir.js';
export { namedVariables } from './model-io.js';
export {
  featureCacheKey,
  extractedFeatures,
  memoizedFeatures,
  defaultFeatureCacheDir,
  type FeatureKeyParts,
  type FeatureSet,
  type FeatureCache,
} from './features.js';
export { splitAtLayer, modelFrom } from './graph.js';
export {
  scaleInput,
  openFeed,
  streamPosition,
  checkDataset,
  openEvaluationSource,
  SkippedShardLog,
  SKIPPED_SHARDS_FILE,
  type SkippedShard,
} from './data.js';
export { createProgress, type ProgressSink } from './progress.js';
export { NanLossError, isOutOfMemory, isStackOverflow, explainOutOfMemory } from './errors.js';
