// What the pool computes next: batch after batch of (epoch, index, samples), from a split held in memory or from
// the streaming shard reader. Both cut an epoch's order into the same batches, from any starting batch.
import type { ShardStream, StreamedSample } from '@catdog/dataset';
import { batchIndices, epochSampleOrder, stepsPerEpoch } from './plan.js';
import type { LoadedSamples } from './source.js';
import type { SharedSamples } from './worker.js';

export interface FedBatch {
  epoch: number;
  /** batch index within the epoch */
  index: number;
  /** the epoch's last batch */
  last: boolean;
  /** indices into the split in memory, or (with `encoded`) into this batch's own samples */
  indices: number[];
  keys: string[];
  labels: ArrayLike<number>;
  encoded?: SharedSamples;
}

/** The shard reader's counters, as stats().shards reports them. */
export interface ShardReadStats {
  /** 'memory': the split was read once into memory; 'stream': shards are streamed window by window */
  mode: 'memory' | 'stream';
  /** why that mode (the line logged when the stream opened) */
  reason: string;
  shardsRead: number;
  bytesFetched: number;
  cacheHits: number;
  /** most encoded sample bytes the reader held at once (streaming: about a window plus its prefetch) */
  peakBytesHeld: number;
  /** shards skipped under skipCorrupt, and the samples lost with them */
  skippedShards: string[];
  skippedSamples: number;
}

export interface BatchFeed {
  readonly classes: string[];
  /** samples per epoch */
  readonly size: number;
  readonly stepsPerEpoch: number;
  next(): Promise<FedBatch | null>;
  shardStats(): ShardReadStats | undefined;
  close(): Promise<void>;
}

/** Walks batch numbers: (epoch, index) from a start to the end epoch (exclusive). */
export class BatchCursor {
  constructor(
    readonly size: number,
    readonly batchSize: number,
    readonly steps: number,
    public epoch: number,
    public index: number,
    readonly endEpoch: number,
  ) {}

  next(): { epoch: number; index: number; lo: number; hi: number; last: boolean } | null {
    if (this.epoch >= this.endEpoch) return null;
    const { epoch, index } = this;
    const lo = index * this.batchSize;
    const hi = Math.min(lo + this.batchSize, this.size);
    const last = index === this.steps - 1;
    if (last) {
      this.epoch++;
      this.index = 0;
    } else {
      this.index++;
    }
    return { epoch, index, lo, hi, last };
  }
}

/** Batches over a split held in memory: each epoch's order computed once, batches sliced from it. */
export class MemoryFeed implements BatchFeed {
  readonly classes: string[];
  readonly size: number;
  readonly stepsPerEpoch: number;
  private order: number[] = [];
  private orderEpoch = -1;

  constructor(
    private readonly data: LoadedSamples,
    private readonly cursor: BatchCursor,
    private readonly o: { shuffle: boolean; seed: number; batchSize: number; windowShards?: number },
    private readonly reader?: ShardStream,
    private readonly reason = '',
  ) {
    this.classes = data.classes;
    this.size = data.keys.length;
    this.stepsPerEpoch = cursor.steps;
  }

  async next(): Promise<FedBatch | null> {
    return this.nextSync();
  }

  nextSync(): FedBatch | null {
    const b = this.cursor.next();
    if (!b) return null;
    if (this.orderEpoch !== b.epoch) {
      this.order = epochSampleOrder(this.data, this.o.shuffle, this.o.seed, b.epoch, this.o.windowShards);
      this.orderEpoch = b.epoch;
    }
    const indices = batchIndices(this.order, b.index, this.o.batchSize, this.data.missing);
    return {
      epoch: b.epoch,
      index: b.index,
      last: b.last,
      indices,
      keys: indices.map((i) => this.data.keys[i]),
      labels: indices.map((i) => this.data.labels[i]),
    };
  }

  shardStats(): ShardReadStats | undefined {
    return this.reader ? readStats('memory', this.reason, this.reader) : undefined;
  }

  async close(): Promise<void> {}
}

/**
 * Batches straight from the shard reader: positions [index × batchSize, …) of each epoch's order, read in order with
 * one sample of lookahead. Each batch's encoded bytes are copied once into their own SharedArrayBuffer (what the
 * in-memory path does once per split), so memory holds the reader's window plus the batches in flight.
 */
export class StreamFeed implements BatchFeed {
  readonly classes: string[];
  readonly size: number;
  readonly stepsPerEpoch: number;
  private readonly samples: AsyncIterator<StreamedSample>;
  private peeked: StreamedSample | null = null;
  private ended = false;

  constructor(
    private readonly reader: ShardStream,
    private readonly cursor: BatchCursor,
    private readonly reason: string,
  ) {
    this.classes = reader.classes;
    this.size = reader.count;
    this.stepsPerEpoch = cursor.steps;
    const epochs = cursor.endEpoch - cursor.epoch;
    this.samples = reader
      .epochs({ epoch: cursor.epoch, start: cursor.index * cursor.batchSize, epochs })
      [Symbol.asyncIterator]();
  }

  private async pull(): Promise<StreamedSample | null> {
    if (this.peeked) {
      const s = this.peeked;
      this.peeked = null;
      return s;
    }
    if (this.ended) return null;
    const r = await this.samples.next();
    if (r.done) {
      this.ended = true;
      return null;
    }
    return r.value;
  }

  async next(): Promise<FedBatch | null> {
    const b = this.cursor.next();
    if (!b) return null;
    const got: StreamedSample[] = [];
    for (;;) {
      const s = await this.pull();
      if (!s) break;
      // Samples before the batch: the remainder dropped by dropRemainder.
      if (s.epoch < b.epoch || (s.epoch === b.epoch && s.position < b.lo)) continue;
      if (s.epoch > b.epoch || s.position >= b.hi) {
        this.peeked = s;
        break;
      }
      got.push(s);
    }
    return {
      epoch: b.epoch,
      index: b.index,
      last: b.last,
      indices: got.map((_, i) => i),
      keys: got.map((s) => s.key),
      labels: got.map((s) => s.label),
      encoded: packSamples(got),
    };
  }

  shardStats(): ShardReadStats {
    return readStats('stream', this.reason, this.reader);
  }

  async close(): Promise<void> {
    this.ended = true;
    await this.samples.return?.();
  }
}

function readStats(mode: 'memory' | 'stream', reason: string, reader: ShardStream): ShardReadStats {
  const s = reader.stats;
  return {
    mode,
    reason,
    shardsRead: s.shardsRead,
    bytesFetched: s.bytesFetched,
    cacheHits: s.cacheHits,
    peakBytesHeld: s.peakBytesHeld,
    skippedShards: [...s.skippedShards],
    skippedSamples: s.skippedSamples,
  };
}

export { stepsPerEpoch };

/** A batch's encoded samples in one SharedArrayBuffer (with [start, length] spans) that every worker reads in place. */
export function packSamples(samples: { bytes: Uint8Array }[]): SharedSamples {
  const total = samples.reduce((n, s) => n + s.bytes.byteLength, 0);
  const bytes = new SharedArrayBuffer(total);
  const spans = new SharedArrayBuffer(samples.length * 2 * 8);
  const view = new Uint8Array(bytes);
  const spanView = new Float64Array(spans);
  let at = 0;
  samples.forEach((s, i) => {
    view.set(s.bytes, at);
    spanView[2 * i] = at;
    spanView[2 * i + 1] = s.bytes.byteLength;
    at += s.bytes.byteLength;
  });
  return { bytes, spans };
}
