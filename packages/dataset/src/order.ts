// The sample order of an epoch, computed rather than buffered (as MosaicML Streaming): a pure function of
// (seed, epoch, the manifest's per-shard counts, window size, partition). Shards are shuffled, then samples are
// shuffled within windows of consecutive shards (block shuffle), then the epoch's positions are cut into
// contiguous ranges, one per (rank, data-loader worker). Any position maps to (shard, index in shard) by
// arithmetic plus one window's permutation: a resumed run skips what it has seen without reading it.
import { createHash } from 'node:crypto';
import { UserError } from '@catdog/errors';
import { seededRandom } from './plan.js';

export interface OrderOptions {
  /** Shuffle seed; the same seed, epoch and manifest give the same order on any machine. Default 0. */
  seed?: number;
  /** Shuffle shards and samples within windows. false: manifest order (evaluation). Default true. */
  shuffle?: boolean;
  /** Shards per shuffle window; memory holds about one window (plus prefetch). Default 4. */
  windowShards?: number;
  /** Number of training processes (ranks / replicas). Default 1. */
  replicas?: number;
  /** This process's rank, 0 ≤ rank < replicas. Default 0. */
  rank?: number;
  /** Data-loader workers per rank. Default 1. */
  workers?: number;
  /** This worker's index, 0 ≤ worker < workers. Default 0. */
  worker?: number;
}

export const DEFAULT_WINDOW_SHARDS = 4;

export interface OrderWindow {
  /** Global position of the window's first sample. */
  first: number;
  count: number;
  /** Manifest indices of the window's shards, in reading order. */
  shards: number[];
  /** offsets[i]: index, in the window's concatenation, of shards[i]'s first sample. */
  offsets: number[];
}

export interface StreamOrder {
  seed: number;
  epoch: number;
  shuffle: boolean;
  windowShards: number;
  /** Samples per shard, manifest order. */
  counts: readonly number[];
  /** Samples in the epoch, all partitions together. */
  total: number;
  windows: OrderWindow[];
  /** partitions = replicas × workers; partition = rank × workers + worker. */
  partitions: number;
  partition: number;
  /** This partition's global positions: [start, end). Partition sizes differ by at most one. */
  start: number;
  end: number;
  /** end - start: the positions this partition reads (0 … length-1). */
  length: number;
}

export interface SampleRef {
  /** Manifest index of the shard. */
  shard: number;
  /** Index of the sample within its shard (member order). */
  index: number;
  /** Global position in the epoch. */
  global: number;
  /** Index into order.windows. */
  window: number;
}

function checkInt(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UserError(`${name} must be an integer in [${min}, ${max}], got ${value}`, { code: 'bad-config' });
  }
  return value;
}

/** A 32-bit seed for one stream of the order, from the user's seed and where it is used. */
function streamSeed(...parts: (string | number)[]): number {
  return createHash('sha256')
    .update(`catdog-order:${parts.join(':')}`)
    .digest()
    .readUInt32LE(0);
}

/** Contiguous range of partition `index` out of `partitions` over `total` positions; sizes differ by at most one. */
export function partitionRange(total: number, partitions: number, index: number): { start: number; end: number } {
  return { start: Math.floor((index * total) / partitions), end: Math.floor(((index + 1) * total) / partitions) };
}

/** The order of one epoch over shards with the given sample counts (manifest order). */
export function streamOrder(counts: readonly number[], epoch: number, options: OrderOptions = {}): StreamOrder {
  const seed = checkInt('seed', options.seed ?? 0, 0, 0xffffffff);
  checkInt('epoch', epoch, 0);
  const shuffle = options.shuffle ?? true;
  const windowShards = checkInt('windowShards', options.windowShards ?? DEFAULT_WINDOW_SHARDS, 1);
  const replicas = checkInt('replicas', options.replicas ?? 1, 1);
  const workers = checkInt('workers', options.workers ?? 1, 1);
  const rank = checkInt('rank', options.rank ?? 0, 0, replicas - 1);
  const worker = checkInt('worker', options.worker ?? 0, 0, workers - 1);
  counts.forEach((c, i) => checkInt(`count of shard ${i}`, c, 0));

  const shardOrder = counts.map((_, i) => i);
  if (shuffle) {
    const random = seededRandom(streamSeed(seed, epoch, 'shards'));
    for (let i = shardOrder.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [shardOrder[i], shardOrder[j]] = [shardOrder[j], shardOrder[i]];
    }
  }
  const windows: OrderWindow[] = [];
  let total = 0;
  for (let s = 0; s < shardOrder.length; s += windowShards) {
    const shards = shardOrder.slice(s, s + windowShards);
    const offsets: number[] = [];
    let count = 0;
    for (const shard of shards) {
      offsets.push(count);
      count += counts[shard];
    }
    windows.push({ first: total, count, shards, offsets });
    total += count;
  }
  const partitions = replicas * workers;
  const partition = rank * workers + worker;
  const { start, end } = partitionRange(total, partitions, partition);
  return {
    seed,
    epoch,
    shuffle,
    windowShards,
    counts,
    total,
    windows,
    partitions,
    partition,
    start,
    end,
    length: end - start,
  };
}

// The last few window permutations, so a sequential walk does not rebuild one per sample.
const permutations = new Map<string, Uint32Array>();

/** The permutation applied inside window `w`: sample j of the window's output is sample perm[j] of its concatenation. */
export function windowPermutation(order: StreamOrder, w: number): Uint32Array {
  const window = order.windows[w];
  const id = `${order.seed}:${order.epoch}:${order.shuffle}:${w}:${window.count}`;
  let perm = permutations.get(id);
  if (perm) return perm;
  perm = new Uint32Array(window.count);
  for (let i = 0; i < perm.length; i++) perm[i] = i;
  if (order.shuffle) {
    const random = seededRandom(streamSeed(order.seed, order.epoch, 'window', w));
    for (let i = perm.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      const t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
  }
  if (permutations.size >= 4) permutations.delete(permutations.keys().next().value!);
  permutations.set(id, perm);
  return perm;
}

/** Index of the window holding global position `global` (binary search). */
export function windowAt(order: StreamOrder, global: number): number {
  let lo = 0;
  let hi = order.windows.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (order.windows[mid].first <= global) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Where the sample at `position` of this partition (0 ≤ position < order.length) lives, without reading any data. */
export function locate(order: StreamOrder, position: number): SampleRef {
  checkInt('position', position, 0, order.length - 1);
  const global = order.start + position;
  const w = windowAt(order, global);
  const window = order.windows[w];
  const { shard, index } = sampleInWindow(order, window, windowPermutation(order, w)[global - window.first]);
  return { shard, index, global, window: w };
}

/** Sample `q` of a window's concatenation: its shard (manifest index), its index there, and which of the window's shards it is. */
export function sampleInWindow(
  order: StreamOrder,
  window: OrderWindow,
  q: number,
): { shard: number; index: number; slot: number } {
  let slot = window.offsets.length - 1;
  // Empty shards share their successor's offset: skip them.
  while (window.offsets[slot] > q || order.counts[window.shards[slot]] === 0) slot--;
  return { shard: window.shards[slot], index: q - window.offsets[slot], slot };
}
