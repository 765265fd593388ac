// The batch stream: epochs of shuffled, augmented batches computed on a piscina pool, delivered in order with a
// bounded number of batches in flight.
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Batch, BatchStream, BatchStreamOptions, StreamStats } from './batch-stream.js';
import {
  DeliveryLog,
  epochEnd,
  iterate,
  positiveInt,
  resolveStreamOptions,
  startPoint,
  type ResolvedStreamOptions,
} from './delivery.js';
import { BatchCursor, MemoryFeed, StreamFeed, type BatchFeed } from './feed.js';
import { stepsPerEpoch } from './plan.js';
import {
  chooseReadMode,
  DEFAULT_MEMORY_BUDGET,
  isPreparedDataset,
  loadSamples,
  loadSplit,
  openDatasetSource,
  openShards,
  type LoadedSamples,
} from './source.js';
import { BatchPool } from './batch-pool.js';
import { createRemoteBatchStream } from './service/client.js';
import type { BatchResult } from './worker.js';
import { DEFAULT_WINDOW_SHARDS, type ShardStream } from '@catdog/dataset';

interface Pending {
  epoch: number;
  index: number;
  last: boolean;
  keys: string[];
  labels: ArrayLike<number>;
  result: Promise<BatchResult>;
}

/**
 * Opens the source and starts the worker pool. A prepared split within `memoryBudget` is read into memory first;
 * a larger one is streamed (the first batch after one shard window). With `augmentService`, connects to
 * augmentation servers instead, which do both.
 */
export async function createBatchStream(options: BatchStreamOptions): Promise<BatchStream> {
  const resolved = resolveStreamOptions(options);
  if (options.augmentService) return createRemoteBatchStream(options, resolved);
  const workers = positiveInt('workers', options.workers ?? availableParallelism());
  const budget = options.memoryBudget ?? DEFAULT_MEMORY_BUDGET;
  if (!(budget >= 0)) throw new RangeError(`memoryBudget must be a number of bytes >= 0, got ${budget}`);
  if (options.cacheLimit !== undefined && !(options.cacheLimit >= 0))
    throw new RangeError(`cacheLimit must be a number of bytes >= 0, got ${options.cacheLimit}`);
  const log = options.log ?? ((line: string) => process.stderr.write(`augment: ${line}\n`));
  const startOf = (steps: number, size: number) => startPoint(options, resolved, steps, size);
  const plan = { ...resolved, workers, prefetch: options.prefetch ?? 2 * workers, crashMarker: options.crashMarker };
  const fromMemory = (data: LoadedSamples, reader?: ShardStream, reason?: string) => {
    const steps = checkedSteps(data.keys.length, resolved);
    const [epoch, index] = startOf(steps, data.keys.length);
    const cursor = new BatchCursor(
      data.keys.length,
      resolved.batchSize,
      steps,
      epoch,
      index,
      epochEnd(resolved, options),
    );
    const feed = new MemoryFeed(data, cursor, { ...resolved, windowShards: options.windowShards }, reader, reason);
    return new PooledBatchStream(feed, data.shared, plan);
  };
  if (typeof options.source !== 'string') return fromMemory(await loadSamples(options.source, options.maxSourceBytes));
  const url = options.source;
  const split = options.split ?? 'train';
  if (!(await isPreparedDataset(url, options)))
    return fromMemory(await loadSamples(await openDatasetSource(url, split), options.maxSourceBytes));
  // A prepared split: its size is in the manifest, so the read mode is chosen before reading a byte.
  // In manifest order: the in-memory path's loader (the epoch order is then computed over it).
  const loader = await openShards(url, split, resolved.seed, false, options);
  const bytes = loader.shards.reduce((n, s) => n + s.bytes, 0);
  const { mode, reason } = chooseReadMode(
    bytes,
    budget,
    loader.shards.length,
    options.windowShards ?? DEFAULT_WINDOW_SHARDS,
  );
  log(reason);
  if (mode === 'memory') return fromMemory(await loadSplit(loader), loader, reason);
  const ordered = await openShards(url, split, resolved.seed, resolved.shuffle, options);
  const steps = checkedSteps(ordered.count, resolved);
  const [epoch, index] = startOf(steps, ordered.count);
  const cursor = new BatchCursor(ordered.count, resolved.batchSize, steps, epoch, index, epochEnd(resolved, options));
  return new PooledBatchStream(new StreamFeed(ordered, cursor, reason), null, plan);
}

function checkedSteps(size: number, o: ResolvedStreamOptions): number {
  const steps = stepsPerEpoch(size, o.batchSize, o.dropRemainder);
  if (steps === 0)
    throw new RangeError(`dropRemainder with batchSize ${o.batchSize} leaves no batch from ${size} samples`);
  return steps;
}

const EMPTY: BatchResult = { xs: new ArrayBuffer(0), kept: [], skipped: [], workerMs: 0 };

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
  private readonly batchBytes: number;
  private closed = false;
  private fed = false;
  private feeding: Promise<void> | null = null;
  private feedError: unknown = null;
  private readonly log: DeliveryLog;
  /** released batch buffers (or shared batch memories), reused by later tasks */
  private readonly spare: (ArrayBuffer | WebAssembly.Memory)[] = [];

  constructor(
    private readonly feed: BatchFeed,
    shared: LoadedSamples['shared'] | null,
    private readonly o: Resolved,
  ) {
    this.classes = feed.classes;
    this.size = feed.size;
    this.batchSize = o.batchSize;
    this.seed = o.seed;
    this.workers = o.workers;
    this.stepsPerEpoch = feed.stepsPerEpoch;
    this.batchBytes = o.batchSize * o.height * o.width * 3 * (o.dtype === 'uint8' ? 1 : 4);
    this.pool = new BatchPool(shared, o.workers);
    this.log = new DeliveryLog(o.onEpochEnd);
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch, undefined> {
    return iterate(this);
  }

  /** Starts the feed's next batches on the pool until `prefetch` are in flight; one fill runs at a time. */
  private dispatch(): Promise<void> {
    if (this.feeding || this.fed || this.closed || this.feedError) return this.feeding ?? Promise.resolve();
    const fill = async () => {
      while (!this.closed && this.inflight.length < this.o.prefetch) {
        // The in-memory feed answers at once; the streaming one waits for its shards.
        const next = this.feed instanceof MemoryFeed ? this.feed.nextSync() : await this.feed.next();
        if (!next || this.closed) {
          this.fed = !next;
          return;
        }
        const { epoch, index } = next;
        if (next.indices.length === 0) {
          // Every sample of this batch was in skipped shards (skipCorrupt): nothing to make or deliver.
          this.inflight.push({ epoch, index, last: next.last, keys: [], labels: [], result: Promise.resolve(EMPTY) });
          continue;
        }
        const result = this.pool.run(
          {
            epoch,
            indices: next.indices,
            keys: next.keys,
            height: this.o.height,
            width: this.o.width,
            augment: this.o.augment,
            seed: this.o.seed,
            dtype: this.o.dtype,
            rescale: this.o.rescale,
            interpolation: this.o.interpolation,
            jpegDecoder: this.o.jpegDecoder,
            crashMarker: this.o.crashMarker,
            encoded: next.encoded,
          },
          this.spare.pop(),
          `batch ${index} of epoch ${epoch}`,
        );
        result.catch(() => {}); // surfaced when the batch is awaited
        this.inflight.push({ epoch, index, last: next.last, keys: next.keys, labels: next.labels, result });
      }
    };
    this.feeding = fill()
      .catch((err: unknown) => {
        this.feedError = err;
      })
      .finally(() => {
        this.feeding = null;
      });
    return this.feeding;
  }

  async next(): Promise<IteratorResult<Batch, undefined>> {
    let t = performance.now();
    const filling = this.dispatch();
    // Batches already started are delivered before a feed error (a bad shard) surfaces.
    if (this.inflight.length === 0) await filling;
    const head = this.inflight.shift();
    this.log.addMainMs(performance.now() - t);
    if (!head) {
      const err = this.feedError;
      await this.close();
      if (err) throw err;
      return { done: true, value: undefined };
    }
    let res: BatchResult;
    try {
      res = await head.result;
    } catch (err) {
      await this.close();
      throw err;
    }
    if (head.keys.length === 0) {
      this.log.empty(head.epoch, head.last);
      return this.next();
    }
    t = performance.now();
    void this.dispatch();
    const { height: h, width: w } = this.o;
    const n = res.kept.length;
    const keys = new Array<string>(n);
    const ys = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      keys[j] = head.keys[res.kept[j]];
      ys[j] = head.labels[res.kept[j]];
    }
    const skipped = res.skipped.map((s) => ({ key: head.keys[s.position], epoch: head.epoch, reason: s.reason }));
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
    this.log.record(batch, head.last, res.workerMs, performance.now() - t);
    return { done: false, value: batch };
  }

  async ready(): Promise<void> {
    const o = this.o;
    await this.pool.warmUp({
      height: o.height,
      width: o.width,
      augment: o.augment,
      seed: o.seed,
      dtype: o.dtype,
      rescale: o.rescale,
      interpolation: o.interpolation,
      jpegDecoder: o.jpegDecoder,
    });
  }

  stats(): StreamStats {
    const shards = this.feed.shardStats();
    return { ...this.log.stats(this.pool.retries), ...(shards ? { shards } : {}) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let in-flight batches finish first: destroying piscina with tasks running races their replies.
    const pending = this.inflight.splice(0).map((p) => p.result);
    await Promise.allSettled(pending);
    await this.feeding;
    await this.feed.close();
    await this.pool.destroy();
  }
}
