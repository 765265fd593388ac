// @catdog/augment: Keras ImageDataGenerator transforms on a piscina worker pool, streaming batches.
export {
  BOOK_AUGMENTATION,
  NO_AUGMENTATION,
  resolveAugmentOptions,
  zoomBounds,
  type AugmentOptions,
  type FillMode,
} from './options.js';
export { hashString, createRng, sampleRng, epochOrder, type Rng } from './random.js';
export {
  sampleTransform,
  transformMatrix,
  applyAffine,
  applyAffineReference,
  IDENTITY_PARAMS,
  type TransformParams,
  packedLayout,
  type AffineImage,
  type AffineOptions,
  type AffineOutput,
  type SourceLayout,
} from './transform.js';
export { threadSampler, type Sampler } from './affine-wasm.js';
export {
  decodeResized,
  decodeForSampling,
  nearestLayout,
  resizeNearest,
  jpegSize,
  endsWithEoi,
  type DecodeOptions,
  type Interpolation,
  type JpegDecoder,
} from './decode.js';
export {
  loadSamples,
  loadSplit,
  openDatasetSource,
  isPreparedDataset,
  DEFAULT_MAX_SOURCE_BYTES,
  DEFAULT_MEMORY_BUDGET,
  type SampleSource,
  type LoadedSamples,
  type ShardReadOptions,
} from './source.js';
export type { ShardReadStats } from './feed.js';
export { createBatchStream } from './stream.js';
export type {
  BatchStream,
  BatchStreamOptions,
  Batch,
  StreamStats,
  SkippedSample,
  EpochReport,
  ServerStats,
} from './batch-stream.js';
export { parseServiceAddresses, readServiceToken, type AugmentServiceOptions } from './service/addresses.js';
export {
  startAugmentServer,
  openServedSamples,
  type ServedSamples,
  type ServedReadOptions,
  type AugmentServer,
  type AugmentServerOptions,
} from './service/server.js';
export { ShardWindow, type WindowBatch } from './service/window.js';
export { toTfDataset, batchToTensors, type TfDatasetOptions } from './tfjs.js';
