// What a batch stream is, wherever its batches are made: the in-process pool (stream.ts) or augmentation servers
// (service/client.ts).
import type { SplitName } from '@catdog/dataset';
import type { Interpolation, JpegDecoder } from './decode.js';
import type { AugmentOptions } from './options.js';
import type { SampleSource } from './source.js';
import type { AugmentServiceOptions } from './service/addresses.js';
import type { ShardReadOptions } from './source.js';
import type { ShardReadStats } from './feed.js';

export interface BatchStreamOptions extends ShardReadOptions {
  /** A SampleSource, or a dataset URL (prepared dataset dir / s3:// prefix, or a folder of images). */
  source: SampleSource | string;
  /** Split of a prepared dataset. Default 'train'. */
  split?: SplitName;
  /** Default 32. */
  batchSize?: number;
  /** [height, width]. Default [150, 150]. */
  targetSize?: [number, number];
  /** Augmentation (e.g. BOOK_AUGMENTATION), or false for validation/test streams. Default false. */
  augment?: Partial<AugmentOptions> | false;
  /** Default: true when augmenting, false otherwise. */
  shuffle?: boolean;
  /** Keys the shuffle and every transform. Default: random (read it back from stream.seed). */
  seed?: number;
  /** Worker threads. Default os.availableParallelism(). */
  workers?: number;
  /** Batches in flight (computed ahead of the consumer). Default 2 × workers. */
  prefetch?: number;
  /** Default 'float32'. */
  dtype?: 'float32' | 'uint8';
  /** Multiplies float32 pixels after the transform (Keras' rescale). Default 1/255. */
  rescale?: number;
  /** Resize kernel to the target size. Default 'nearest' (Keras' default). */
  interpolation?: Interpolation;
  /** JPEG decoding: 'fast' (TurboJPEG's fast IDCT, default) or 'exact' (PIL's pixels, through sharp). */
  jpegDecoder?: JpegDecoder;
  /** Epochs to produce; Infinity = endless like flow_from_directory. Default Infinity. */
  epochs?: number;
  /** First epoch number (resuming a run gives the same batches as an uninterrupted one). Default 0. */
  initialEpoch?: number;
  /**
   * Start mid-epoch: the first batch is the one at `position` (samples into epoch `epoch`'s order; a multiple of
   * batchSize) and every batch after it is exactly what an uninterrupted stream delivers there. Replaces
   * initialEpoch; `epochs` still counts whole epochs from `epoch` on.
   */
  start?: { epoch: number; position: number };
  /**
   * Start at the run's `startBatch`-th batch counted from initialEpoch across epochs (a trainer's global step when
   * each step takes one batch). The same as start: { epoch: initialEpoch + ⌊b / steps⌋, position: (b mod steps) × batchSize }.
   */
  startBatch?: number;
  /**
   * A prepared split whose shards hold at most this many bytes is read into memory once (fastest); a larger one is
   * streamed shard window by window (memory: about windowShards + prefetchShards shards plus the batches in flight).
   * The same batches either way. 0 always streams; Infinity never does. Default 512 MiB.
   */
  memoryBudget?: number;
  /** Where the read-mode line ("reading the split into memory: …" / "streaming shards: …") goes. Default: stderr. */
  log?: (line: string) => void;
  /** Drop each epoch's last partial batch. Default false (Keras yields it). */
  dropRemainder?: boolean;
  /** Bound on the encoded bytes of a SampleSource or image folder held in memory. Default 2 GiB. */
  maxSourceBytes?: number;
  /** Called when the last batch of an epoch is delivered. */
  onEpochEnd?: (report: EpochReport) => void;
  /** Test hook: a worker deletes this file and exits mid-task, to exercise crash recovery. */
  crashMarker?: string;
  /**
   * Make the batches on augmentation servers (`augment serve`) instead of in this process: the same batches, pixel
   * for pixel. `source` must then be a URL the servers can read; `workers` is ignored (the servers have theirs) and
   * `prefetch` defaults to 2 × the servers' workers.
   */
  augmentService?: AugmentServiceOptions;
}

export interface SkippedSample {
  key: string;
  epoch: number;
  reason: string;
}

export interface EpochReport {
  epoch: number;
  images: number;
  skipped: SkippedSample[];
}

export interface Batch {
  /** n × h × w × 3, rescaled float32 or raw uint8 */
  xs: Float32Array | Uint8Array;
  /** n labels (class indices as floats, Keras' class_mode 'binary') */
  ys: Float32Array;
  keys: string[];
  shape: [number, number, number, 3];
  epoch: number;
  /** batch index within the epoch */
  index: number;
  /** corrupt samples left out of this batch (it is that much shorter) */
  skipped: SkippedSample[];
  /**
   * Optional: hands xs' buffer back to the stream, which reuses it for a later batch (no allocation, no GC of
   * 8.6 MB buffers on the main thread). Do not touch xs afterwards: a later batch is written there (xs is a view of
   * memory shared with the worker threads). toTfDataset calls it once the tensor holds a copy.
   */
  release(): void;
}

export interface StreamStats {
  batches: number;
  images: number;
  seconds: number;
  imagesPerSecond: number;
  skipped: SkippedSample[];
  retries: number;
  /** main-thread time spent per delivered batch (dispatch, bookkeeping, assembling), ms */
  mainThreadMsPerBatch: number;
  /** worker time per batch (decode + resize + augment), ms */
  workerMsPerBatch: number;
  /** with augmentService: each server's state and load, as of its last batch */
  servers?: ServerStats[];
  /** a prepared split read in process: how (memory or stream) and the shard reader's counters */
  shards?: ShardReadStats;
}

export interface ServerStats {
  address: string;
  state: 'up' | 'down';
  workers: number;
  imagesPerSecond: number;
  queueDepth: number;
  /** batches received from it */
  batches: number;
  /** frame bytes received from it */
  bytes: number;
}

export interface BatchStream extends AsyncIterable<Batch> {
  readonly classes: string[];
  /** samples per epoch */
  readonly size: number;
  /** batches per epoch, ceil(size / batchSize) (floor with dropRemainder) */
  readonly stepsPerEpoch: number;
  readonly batchSize: number;
  readonly seed: number;
  readonly workers: number;
  next(): Promise<IteratorResult<Batch, undefined>>;
  stats(): StreamStats;
  /**
   * Resolves once every worker thread has started and run its per-image path on a few hundred synthetic images, so
   * that V8 has compiled it (benchmarks call it before timing; a stream works without it).
   */
  ready(): Promise<void>;
  close(): Promise<void>;
}
