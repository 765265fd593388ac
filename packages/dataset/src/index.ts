// @catdog/dataset: sources, the book's split, WebDataset tar shards, manifest.json and readers.
export {
  MANIFEST_FILE,
  FORMAT_VERSION,
  MIN_FORMAT_VERSION,
  SPLITS,
  BOOK_CLASSES,
  readManifest,
  readManifestFrom,
  validateManifest,
  type Manifest,
  type ShardInfo,
  type SplitInfo,
  type SplitName,
  type ResizeSpec,
  type SkippedFile,
  type SourceAccounting,
} from './manifest.js';
export {
  ShardWriter,
  readShard,
  parseShard,
  hashObject,
  sha256,
  splitMemberName,
  memberKeyOf,
  keyOfMember,
  memberNamingOf,
  type MemberNaming,
  checkShardBytes,
  type EncodedSample,
  type ReadShardOptions,
} from './shards.js';
export { openSource, naturalCompare, flatClassName, type Source, type SourceItem, type SourceLayout, type IgnoredFile } from './sources.js';
export {
  openStream,
  type StreamOptions,
  type StreamedSample,
  type StreamStats,
  type SampleRange,
  type ShardStream,
} from './stream.js';
export {
  streamOrder,
  locate,
  partitionRange,
  windowPermutation,
  windowAt,
  sampleInWindow,
  DEFAULT_WINDOW_SHARDS,
  type OrderOptions,
  type StreamOrder,
  type OrderWindow,
  type SampleRef,
} from './order.js';
export { ShardCache, type ShardCacheOptions, type CacheStats, type CacheWriter } from './cache.js';
export { openSplit, openImageFolder, type SampleSource, type SplitSource, type OpenSplitOptions } from './readers.js';
export {
  buildPlan,
  parseResize,
  seededRandom,
  shardPath,
  BOOK_SPLIT,
  DEFAULT_SAMPLES_PER_SHARD,
  DEFAULT_QUALITY,
  type Plan,
  type PlanOptions,
  type PlannedShard,
  type SplitSpec,
} from './plan.js';
export { encodeImage, checkDecodes, type EncodeOptions, type EncodeResult } from './images.js';
export {
  prepareDataset,
  finalizeDataset,
  workerDefaults,
  partPath,
  AbortedError,
  MissingPartsError,
  PARTS_DIR,
  REPORT_FILE,
  type PrepareOptions,
  type PrepProgress,
  type PrepReport,
  type FinalizeOptions,
  type FinalizeReport,
  type PartFile,
  type ShardRecord,
} from './prepare.js';
export { verifyDataset, inspectDataset, type VerifyReport, type VerifyOptions, type ShardProblem, type InspectReport, type Stats } from './verify.js';
