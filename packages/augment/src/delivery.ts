// What every batch stream does the same way, wherever its batches are made: resolving its options, counting what it
// delivers, reporting epochs and stats.
import { performance } from 'node:perf_hooks';
import type {
  Batch,
  BatchStreamOptions,
  EpochReport,
  ServerStats,
  SkippedSample,
  StreamStats,
} from './batch-stream.js';
import type { Interpolation, JpegDecoder } from './decode.js';
import { resolveAugmentOptions, type AugmentOptions } from './options.js';
import { startBatchOf } from './plan.js';

export function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

/** BatchStreamOptions with defaults filled in and values checked (RangeError naming the option). */
export interface ResolvedStreamOptions {
  batchSize: number;
  height: number;
  width: number;
  augment: AugmentOptions | null;
  shuffle: boolean;
  seed: number;
  epochs: number;
  initialEpoch: number;
  dtype: 'float32' | 'uint8';
  rescale: number;
  interpolation: Interpolation;
  jpegDecoder: JpegDecoder;
  dropRemainder: boolean;
  onEpochEnd?: (report: EpochReport) => void;
}

export function resolveStreamOptions(options: BatchStreamOptions): ResolvedStreamOptions {
  const batchSize = positiveInt('batchSize', options.batchSize ?? 32);
  const [height, width] = options.targetSize ?? [150, 150];
  positiveInt('targetSize height', height);
  positiveInt('targetSize width', width);
  const augment = options.augment ? resolveAugmentOptions(options.augment) : null;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  const epochs = options.epochs ?? Infinity;
  if (!(epochs > 0)) throw new RangeError(`epochs must be > 0, got ${epochs}`);
  if (options.prefetch !== undefined) positiveInt('prefetch', options.prefetch);
  return {
    batchSize,
    height,
    width,
    augment,
    shuffle: options.shuffle ?? augment !== null,
    seed,
    epochs,
    initialEpoch: options.initialEpoch ?? 0,
    dtype: options.dtype ?? 'float32',
    rescale: options.rescale ?? 1 / 255,
    interpolation: options.interpolation ?? 'nearest',
    jpegDecoder: options.jpegDecoder ?? 'fast',
    dropRemainder: options.dropRemainder ?? false,
    onEpochEnd: options.onEpochEnd,
  };
}

/** The epoch whole epochs are counted from: start.epoch, else initialEpoch. */
export function baseEpoch(options: BatchStreamOptions, o: ResolvedStreamOptions): number {
  return options.start ? options.start.epoch : o.initialEpoch;
}

/** The first epoch past the stream: `epochs` whole epochs from the base epoch. */
export function epochEnd(o: ResolvedStreamOptions, options: BatchStreamOptions): number {
  return baseEpoch(options, o) + o.epochs;
}

/** [epoch, batch index] of the stream's first batch, from start / startBatch / initialEpoch (RangeError naming a bad one). */
export function startPoint(
  options: BatchStreamOptions,
  o: ResolvedStreamOptions,
  steps: number,
  size: number,
): [number, number] {
  if (options.start && options.startBatch !== undefined) throw new RangeError('give start or startBatch, not both');
  if (options.start && options.initialEpoch !== undefined && options.initialEpoch !== options.start.epoch) {
    throw new RangeError(
      `start.epoch ${options.start.epoch} and initialEpoch ${options.initialEpoch} disagree: give one`,
    );
  }
  if (options.start) return [options.start.epoch, startBatchOf(options.start, size, o.batchSize, steps)];
  if (options.startBatch !== undefined) {
    const b = options.startBatch;
    if (!Number.isSafeInteger(b) || b < 0) throw new RangeError(`startBatch must be an integer >= 0, got ${b}`);
    return [o.initialEpoch + Math.floor(b / steps), b % steps];
  }
  return [o.initialEpoch, 0];
}

const MAX_SKIPPED_KEPT = 10_000;

/** Counts delivered batches and reports each epoch's end. */
export class DeliveryLog {
  private readonly created = performance.now();
  private batches = 0;
  private images = 0;
  private mainMs = 0;
  private workerMs = 0;
  private readonly skipped: SkippedSample[] = [];
  private epochSkipped: SkippedSample[] = [];
  private epochImages = 0;

  constructor(private readonly onEpochEnd?: (report: EpochReport) => void) {}

  get count(): number {
    return this.batches;
  }

  /** Main-thread time spent outside delivered() (dispatching, waiting excluded). */
  addMainMs(ms: number): void {
    this.mainMs += ms;
  }

  /** Records a batch about to be returned; after the epoch's last one, reports the epoch. */
  record(batch: Batch, lastOfEpoch: boolean, workerMs: number, mainMs: number): void {
    this.batches++;
    this.images += batch.shape[0];
    this.epochImages += batch.shape[0];
    this.workerMs += workerMs;
    this.mainMs += mainMs;
    for (const s of batch.skipped) {
      if (this.skipped.length < MAX_SKIPPED_KEPT) this.skipped.push(s);
      this.epochSkipped.push(s);
    }
    if (lastOfEpoch) {
      const report: EpochReport = { epoch: batch.epoch, images: this.epochImages, skipped: this.epochSkipped };
      this.epochSkipped = [];
      this.epochImages = 0;
      this.onEpochEnd?.(report);
    }
  }

  /** A batch left empty by skipped shards: not delivered, but it may end its epoch. */
  empty(epoch: number, lastOfEpoch: boolean): void {
    if (!lastOfEpoch) return;
    const report: EpochReport = { epoch, images: this.epochImages, skipped: this.epochSkipped };
    this.epochSkipped = [];
    this.epochImages = 0;
    this.onEpochEnd?.(report);
  }

  stats(retries: number, servers?: ServerStats[]): StreamStats {
    const seconds = (performance.now() - this.created) / 1000;
    return {
      batches: this.batches,
      images: this.images,
      seconds,
      imagesPerSecond: seconds > 0 ? this.images / seconds : 0,
      skipped: [...this.skipped],
      retries,
      mainThreadMsPerBatch: this.batches ? this.mainMs / this.batches : 0,
      workerMsPerBatch: this.batches ? this.workerMs / this.batches : 0,
      ...(servers ? { servers } : {}),
    };
  }
}

/** `for await` over a stream; breaking out of the loop closes it. */
export function iterate(stream: {
  next(): Promise<IteratorResult<Batch, undefined>>;
  close(): Promise<void>;
}): AsyncIterator<Batch, undefined> {
  return {
    next: () => stream.next(),
    return: async () => {
      await stream.close();
      return { done: true, value: undefined };
    },
  };
}
