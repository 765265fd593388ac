// The batch stream: epochs of shuffled, augmented batches computed on a piscina pool, delivered in order with a
// bounded number of batches in flight.
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Batch, BatchStream, BatchStreamOptions, EpochReport, SkippedSample, StreamStats } from './batch-stream.js';
import type { Interpolation, JpegDecoder } from './decode.js';
import { resolveAugmentOptions, type AugmentOptions } from './options.js';
import { batchIndices, epochSampleOrder, stepsPerEpoch } from './plan.js';
import { loadSamples, openDatasetSource, type LoadedSamples, type SampleSource } from './source.js';
import { BatchPool } from './batch-pool.js';
import { createRemoteBatchStream } from './service/client.js';
import type { BatchResult, BatchTask } from './worker.js';

interface Pending {
  epoch: number;
  index: number;
  indices: number[];
  result: Promise<BatchResult>;
}

const MAX_SKIPPED_KEPT = 10_000;

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

/**
 * Opens the source (reading its encoded samples into memory) and starts the worker pool; with `augmentService`,
 * connects to augmentation servers instead, which do both.
 */
export async function createBatchStream(options: BatchStreamOptions): Promise<BatchStream> {
  if (options.augmentService) return createRemoteBatchStream(options);
  const batchSize = positiveInt('batchSize', options.batchSize ?? 32);
  const [height, width] = options.targetSize ?? [150, 150];
  positiveInt('targetSize height', height);
  positiveInt('targetSize width', width);
  const augment = options.augment ? resolveAugmentOptions(options.augment) : null;
  const shuffle = options.shuffle ?? augment !== null;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  const workers = positiveInt('workers', options.workers ?? availableParallelism());
  const prefetch = positiveInt('prefetch', options.prefetch ?? 2 * workers);
  const epochs = options.epochs ?? Infinity;
  if (!(epochs > 0)) throw new RangeError(`epochs must be > 0, got ${epochs}`);
  const initialEpoch = options.initialEpoch ?? 0;
  const dtype = options.dtype ?? 'float32';
  const rescale = options.rescale ?? 1 / 255;
  const interpolation = options.interpolation ?? 'nearest';
  const jpegDecoder = options.jpegDecoder ?? 'fast';

  const source =
    typeof options.source === 'string'
      ? await openDatasetSource(options.source, options.split ?? 'train', options.cacheDir)
      : options.source;
  const loaded = await loadSamples(source, options.maxSourceBytes);
  return new PooledBatchStream(loaded, {
    batchSize, height, width, augment, shuffle, seed, workers, prefetch, epochs, initialEpoch, dtype, rescale,
    interpolation, jpegDecoder, dropRemainder: options.dropRemainder ?? false, onEpochEnd: options.onEpochEnd,
    crashMarker: options.crashMarker,
  });
}

interface Resolved {
  batchSize: number;
  height: number;
  width: number;
  augment: AugmentOptions | null;
  shuffle: boolean;
  seed: number;
  workers: number;
  prefetch: number;
  epochs: number;
  initialEpoch: number;
  dtype: 'float32' | 'uint8';
  rescale: number;
  interpolation: Interpolation;
  jpegDecoder: JpegDecoder;
  dropRemainder: boolean;
  onEpochEnd?: (report: EpochReport) => void;
  crashMarker?: string;
}

class PooledBatchStream implements BatchStream {
  readonly classes: string[];
  readonly size: number;
  readonly stepsPerEpoch: number;
  readonly batchSize: number;
  readonly seed: number;
  readonly workers: number;
  private readonly pool: BatchPool;
  private readonly inflight: Pending[] = [];
  private nextEpoch: number;
  private nextIndex = 0;
  private readonly batchBytes: number;
  private order: number[] | null = null;
  private orderEpoch = -1;
  private closed = false;
  private delivered = 0;
  private images = 0;
  private mainMs = 0;
  private workerMs = 0;
  private readonly skipped: SkippedSample[] = [];
  /** released batch buffers (or shared batch memories), reused by later tasks */
  private readonly spare: (ArrayBuffer | WebAssembly.Memory)[] = [];
  private epochSkipped: SkippedSample[] = [];
  private epochImages = 0;

  constructor(private readonly data: LoadedSamples, private readonly o: Resolved) {
    this.classes = data.classes;
    this.size = data.keys.length;
    this.batchSize = o.batchSize;
    this.seed = o.seed;
    this.workers = o.workers;
    this.stepsPerEpoch = stepsPerEpoch(this.size, o.batchSize, o.dropRemainder);
    if (this.stepsPerEpoch === 0) {
      throw new RangeError(`dropRemainder with batchSize ${o.batchSize} leaves no batch from ${this.size} samples`);
    }
    this.nextEpoch = o.initialEpoch;
    this.batchBytes = o.batchSize * o.height * o.width * 3 * (o.dtype === 'uint8' ? 1 : 4);
    this.pool = new BatchPool(data.shared, o.workers);
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch, undefined> {
    return {
      next: () => this.next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  private epochIndices(epoch: number): number[] {
    if (this.orderEpoch !== epoch) {
      this.order = epochSampleOrder(this.data.keys, this.o.shuffle, this.o.seed, epoch);
      this.orderEpoch = epoch;
    }
    return this.order!;
  }

  private dispatch(): void {
    while (!this.closed && this.inflight.length < this.o.prefetch && this.nextEpoch < this.o.initialEpoch + this.o.epochs) {
      const epoch = this.nextEpoch;
      const index = this.nextIndex;
      const order = this.epochIndices(epoch);
      const indices = batchIndices(order, index, this.o.batchSize);
      const task: BatchTask = {
        epoch,
        indices,
        keys: indices.map((i) => this.data.keys[i]),
        height: this.o.height,
        width: this.o.width,
        augment: this.o.augment,
        seed: this.o.seed,
        dtype: this.o.dtype,
        rescale: this.o.rescale,
        interpolation: this.o.interpolation,
        jpegDecoder: this.o.jpegDecoder,
        crashMarker: this.o.crashMarker,
      };
      const result = this.pool.run(task, this.spare.pop(), `batch ${index} of epoch ${epoch}`);
      result.catch(() => {}); // surfaced when the batch is awaited
      this.inflight.push({ epoch, index, indices, result });
      this.nextIndex++;
      if (this.nextIndex >= this.stepsPerEpoch) {
        this.nextIndex = 0;
        this.nextEpoch++;
      }
    }
  }

  async next(): Promise<IteratorResult<Batch, undefined>> {
    let t = performance.now();
    this.dispatch();
    const head = this.inflight.shift();
    this.mainMs += performance.now() - t;
    if (!head) {
      await this.close();
      return { done: true, value: undefined };
    }
    let res: BatchResult;
    try {
      res = await head.result;
    } catch (err) {
      await this.close();
      throw err;
    }
    t = performance.now();
    this.dispatch();
    const { height: h, width: w } = this.o;
    const n = res.kept.length;
    const keys = new Array<string>(n);
    const ys = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const i = head.indices[res.kept[j]];
      keys[j] = this.data.keys[i];
      ys[j] = this.data.labels[i];
    }
    const skipped = res.skipped.map((s) => ({ key: this.data.keys[head.indices[s.position]], epoch: head.epoch, reason: s.reason }));
    for (const s of skipped) {
      if (this.skipped.length < MAX_SKIPPED_KEPT) this.skipped.push(s);
      this.epochSkipped.push(s);
    }
    const len = n * h * w * 3;
    const xs = this.o.dtype === 'uint8' ? new Uint8Array(res.xs, 0, len) : new Float32Array(res.xs, 0, len);
    const reusable = res.memory ? res.xs.byteLength > this.batchBytes : res.xs.byteLength === this.batchBytes;
    const recycled = res.memory ?? (res.xs as ArrayBuffer);
    let released = false;
    const release = () => {
      if (released || this.closed) return;
      released = true;
      if (reusable && this.spare.length < this.o.prefetch) this.spare.push(recycled);
    };
    const batch: Batch = { xs, ys, keys, shape: [n, h, w, 3], epoch: head.epoch, index: head.index, skipped, release };
    this.delivered++;
    this.images += n;
    this.epochImages += n;
    this.workerMs += res.workerMs;
    if (head.index === this.stepsPerEpoch - 1) {
      const report: EpochReport = { epoch: head.epoch, images: this.epochImages, skipped: this.epochSkipped };
      this.epochSkipped = [];
      this.epochImages = 0;
      this.mainMs += performance.now() - t;
      this.o.onEpochEnd?.(report);
    } else {
      this.mainMs += performance.now() - t;
    }
    return { done: false, value: batch };
  }

  private readonly created = performance.now();

  async ready(): Promise<void> {
    const o = this.o;
    await this.pool.warmUp({
      height: o.height, width: o.width, augment: o.augment, seed: o.seed, dtype: o.dtype, rescale: o.rescale,
      interpolation: o.interpolation, jpegDecoder: o.jpegDecoder,
    });
  }

  stats(): StreamStats {
    const seconds = (performance.now() - this.created) / 1000;
    return {
      batches: this.delivered,
      images: this.images,
      seconds,
      imagesPerSecond: seconds > 0 ? this.images / seconds : 0,
      skipped: [...this.skipped],
      retries: this.pool.retries,
      mainThreadMsPerBatch: this.delivered ? this.mainMs / this.delivered : 0,
      workerMsPerBatch: this.delivered ? this.workerMs / this.delivered : 0,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let in-flight batches finish first: destroying piscina with tasks running races their replies.
    const pending = this.inflight.splice(0).map((p) => p.result);
    await Promise.allSettled(pending);
    await this.pool.destroy();
  }
}
