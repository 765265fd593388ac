// The batch stream: epochs of shuffled, augmented batches computed on a piscina pool, delivered in order with a
// bounded number of batches in flight.
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Batch, BatchStream, BatchStreamOptions, StreamStats } from './batch-stream.js';
import { DeliveryLog, iterate, positiveInt, resolveStreamOptions, type ResolvedStreamOptions } from './delivery.js';
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

/**
 * Opens the source (reading its encoded samples into memory) and starts the worker pool; with `augmentService`,
 * connects to augmentation servers instead, which do both.
 */
export async function createBatchStream(options: BatchStreamOptions): Promise<BatchStream> {
  const resolved = resolveStreamOptions(options);
  if (options.augmentService) return createRemoteBatchStream(options, resolved);
  const workers = positiveInt('workers', options.workers ?? availableParallelism());
  const source =
    typeof options.source === 'string'
      ? await openDatasetSource(options.source, options.split ?? 'train', options.cacheDir)
      : options.source;
  const loaded = await loadSamples(source, options.maxSourceBytes);
  return new PooledBatchStream(loaded, { ...resolved, workers, prefetch: options.prefetch ?? 2 * workers, crashMarker: options.crashMarker });
}

interface Resolved extends ResolvedStreamOptions {
  workers: number;
  prefetch: number;
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
  private readonly log: DeliveryLog;
  /** released batch buffers (or shared batch memories), reused by later tasks */
  private readonly spare: (ArrayBuffer | WebAssembly.Memory)[] = [];

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
    this.log = new DeliveryLog(o.onEpochEnd);
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch, undefined> {
    return iterate(this);
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
    this.log.addMainMs(performance.now() - t);
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
    this.log.record(batch, head.index === this.stepsPerEpoch - 1, res.workerMs, performance.now() - t);
    return { done: false, value: batch };
  }

  async ready(): Promise<void> {
    const o = this.o;
    await this.pool.warmUp({
      height: o.height, width: o.width, augment: o.augment, seed: o.seed, dtype: o.dtype, rescale: o.rescale,
      interpolation: o.interpolation, jpegDecoder: o.jpegDecoder,
    });
  }

  stats(): StreamStats {
    return this.log.stats(this.pool.retries);
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
