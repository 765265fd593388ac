// Which samples make batch `index` of an epoch: the one definition the in-process stream and the augmentation
// service share, so a batch is the same wherever it is made.
import { epochOrder } from './random.js';
import { splitEpochOrder, type LoadedSamples } from './source.js';

/**
 * The epoch's sample order (indices into the loaded samples): for a prepared split, the streaming reader's order
 * (a pure function of seed, epoch, the manifest's shard counts and windowShards, so the in-memory and the streaming
 * path agree); for other sources, epochOrder's permutation of the keys when shuffling, else the source's order.
 */
export function epochSampleOrder(
  samples: Pick<LoadedSamples, 'keys' | 'shardCounts'>,
  shuffle: boolean,
  seed: number,
  epoch: number,
  windowShards?: number,
): number[] {
  if (samples.shardCounts) return splitEpochOrder(samples.shardCounts, shuffle, seed, epoch, windowShards);
  const keys = samples.keys;
  return shuffle ? epochOrder(keys, seed, epoch) : Array.from({ length: keys.length }, (_, i) => i);
}

/** The sample indices of batch `index` in an epoch's order, less any `missing` (samples of skipped shards). */
export function batchIndices(
  order: readonly number[],
  index: number,
  batchSize: number,
  missing?: ReadonlySet<number>,
): number[] {
  const indices = order.slice(index * batchSize, (index + 1) * batchSize);
  return missing ? indices.filter((i) => !missing.has(i)) : indices;
}

/** Batches per epoch: ceil(size / batchSize), floor with dropRemainder. */
export function stepsPerEpoch(size: number, batchSize: number, dropRemainder: boolean): number {
  return dropRemainder ? Math.floor(size / batchSize) : Math.ceil(size / batchSize);
}

/**
 * Where a stream starting at `start` begins, as a batch number counted from `start.epoch`'s first batch: the
 * position (samples into the epoch's order) must fall on a batch boundary of that epoch.
 */
export function startBatchOf(
  start: { epoch: number; position: number },
  size: number,
  batchSize: number,
  steps: number,
): number {
  const { epoch, position } = start;
  if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`start.epoch must be an integer >= 0, got ${epoch}`);
  if (!Number.isInteger(position) || position < 0 || position >= size) {
    throw new RangeError(
      `start.position must be an integer in [0, ${size - 1}] (samples into the epoch), got ${position}`,
    );
  }
  if (position % batchSize !== 0) {
    throw new RangeError(`start.position ${position} is not a batch boundary (a multiple of batchSize ${batchSize})`);
  }
  const index = position / batchSize;
  if (index >= steps) throw new RangeError(`start.position ${position} is past the epoch's last batch (dropRemainder)`);
  return index;
}
