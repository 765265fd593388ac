// A prepared split served from a window of shards: the augmentation server makes batch (epoch, index) from the
// samples at positions [index × batch, …) of the streaming reader's epoch order (@catdog/dataset's streamOrder, the
// same order the in-process stream reads), located by arithmetic (locate), fetched shard by shard through the
// reader (verified, shard cache, skipCorrupt) and kept in a small LRU of decoded shards. Memory holds about two
// shuffle windows of shards (the window being served and the next, read ahead) plus the batches being made, not
// the split, so a server serves datasets larger than its memory.
import { locate, streamOrder, type EncodedSample, type ShardStream, type StreamOrder } from '@catdog/dataset';
import { packSamples } from '../feed.js';
import { orderSeed } from '../source.js';
import type { SharedSamples } from '../worker.js';

/** The samples of one batch, copied into memory the worker threads share. */
export interface WindowBatch {
  keys: string[];
  labels: number[];
  encoded: SharedSamples;
  /** Samples of the batch lost with shards skipped under skipCorrupt. */
  lost: number;
}

export interface OrderRecipe {
  seed: number;
  shuffle: boolean;
  batchSize: number;
  windowShards?: number;
}

interface Held {
  samples: Promise<EncodedSample[] | undefined>;
  /** batches being assembled from it: not evicted meanwhile */
  pins: number;
  bytes: number;
}

export class ShardWindow {
  readonly classes: string[];
  readonly size: number;
  /** Decoded shards by manifest index; Map order is least recently used first. */
  private readonly held = new Map<number, Held>();
  private readonly orders = new Map<string, StreamOrder>();
  private readonly counts: number[];
  /** Encoded bytes of the shards held now, and at most (what the window costs in memory). */
  bytesHeld = 0;
  peakBytesHeld = 0;
  /** Most shards held at once (loaded or loading): about two windows. */
  peakShardsHeld = 0;

  constructor(private readonly reader: ShardStream) {
    this.classes = reader.classes;
    this.counts = reader.shards.map((s) => s.count);
    this.size = this.counts.reduce((a, b) => a + b, 0);
  }

  private orderOf(r: OrderRecipe, epoch: number): StreamOrder {
    const id = `${r.shuffle}/${r.seed}/${epoch}/${r.windowShards ?? ''}`;
    let order = this.orders.get(id);
    if (!order) {
      order = streamOrder(this.counts, epoch, {
        seed: orderSeed(r.seed),
        shuffle: r.shuffle,
        windowShards: r.windowShards,
      });
      if (this.orders.size >= 8) this.orders.delete(this.orders.keys().next().value!);
      this.orders.set(id, order);
    }
    return order;
  }

  /** The shard, loading it unless held; marks it most recently used. */
  private use(shard: number): Held {
    let h = this.held.get(shard);
    if (h) {
      this.held.delete(shard);
    } else {
      h = { samples: this.reader.readShard(shard), pins: 0, bytes: 0 };
      const entry = h;
      entry.samples.then(
        (samples) => {
          entry.bytes = samples?.reduce((n, s) => n + s.bytes.byteLength, 0) ?? 0;
          if (this.held.get(shard) !== entry) return; // evicted before it arrived
          this.bytesHeld += entry.bytes;
          this.peakBytesHeld = Math.max(this.peakBytesHeld, this.bytesHeld);
        },
        () => {
          // A failed read is not kept: the next batch that needs the shard tries again.
          if (this.held.get(shard) === entry) this.held.delete(shard);
        },
      );
    }
    this.held.set(shard, h);
    this.peakShardsHeld = Math.max(this.peakShardsHeld, this.held.size);
    return h;
  }

  /** Drops least recently used shards that no batch is using (and not in `keep`) until `capacity` are held. */
  private evict(capacity: number, keep?: Set<number>): void {
    for (const [shard, h] of this.held) {
      if (this.held.size <= capacity) break;
      if (h.pins > 0 || keep?.has(shard)) continue;
      this.held.delete(shard);
      this.bytesHeld -= h.bytes;
    }
  }

  /** The samples of batch `index` of `epoch` under recipe `r` (throws naming a shard that cannot be read). */
  async batch(r: OrderRecipe, epoch: number, index: number): Promise<WindowBatch> {
    const order = this.orderOf(r, epoch);
    const lo = index * r.batchSize;
    const hi = Math.min(lo + r.batchSize, order.length);
    const refs = [];
    for (let p = lo; p < hi; p++) refs.push(locate(order, p));
    const shards = [...new Set(refs.map((ref) => ref.shard))];
    // The next window is read while this one is served, as the in-process reader prefetches. Shards of neither
    // (the previous window, another epoch's) make room first, so about two windows are held. (A batch across two
    // windows needs both; the one after them is read from the next batch on.)
    const at = refs[0].window;
    const next = order.windows[at + 1];
    const capacity = 2 * order.windowShards;
    const keep = new Set([...shards, ...order.windows[at].shards, ...(next?.shards ?? [])]);
    this.evict(capacity - shards.filter((s) => !this.held.has(s)).length, keep);
    const entries = shards.map((s) => this.use(s));
    for (const e of entries) e.pins++;
    if (next) {
      const missing = next.shards.filter((s) => !this.held.has(s));
      this.evict(capacity - missing.length, keep);
      for (const s of missing) {
        if (this.held.size >= capacity) break;
        this.use(s).samples.catch(() => {}); // surfaced when a batch needs it
      }
    }
    try {
      const loaded = new Map<number, EncodedSample[] | undefined>();
      for (let i = 0; i < shards.length; i++) loaded.set(shards[i], await entries[i].samples);
      const got: EncodedSample[] = [];
      let lost = 0;
      for (const ref of refs) {
        const sample = loaded.get(ref.shard)?.[ref.index];
        if (sample) got.push(sample);
        else lost++;
      }
      return { ...pack(got), lost };
    } finally {
      for (const e of entries) e.pins--;
      this.evict(capacity);
    }
  }

  /** Bytes the reader fetched, shards read and skipped (its stats). */
  get stats(): ShardStream['stats'] {
    return this.reader.stats;
  }
}

function pack(got: EncodedSample[]): Omit<WindowBatch, 'lost'> {
  return { keys: got.map((s) => s.key), labels: got.map((s) => s.label), encoded: packSamples(got) };
}
