// @catdog/dataset: sources, the book's split, WebDataset tar shards, manifest.json and readers.
export {
  MANIFEST_FILE,
  FORMAT_VERSION,
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
} from './manifest.js';
export {
  ShardWriter,
  readShard,
  parseShard,
  hashObject,
  sha256,
  splitMemberName,
  checkShardBytes,
  type EncodedSample,
  type ReadShardOptions,
} from './shards.js';
export { openSource, naturalCompare, flatClassName, type Source, type SourceItem, type SourceLayout } from './sources.js';
export { openSplit, openImageFolder, type SampleSource, type SplitSource, type OpenSplitOptions } from './readers.js';
