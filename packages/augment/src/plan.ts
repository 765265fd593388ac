// Which samples make batch `index` of an epoch: the one definition the in-process stream and the augmentation
// service share, so a batch is the same wherever it is made.
import { epochOrder } from './random.js';

/** The epoch's sample order: epochOrder's permutation when shuffling, else the source's order. */
export function epochSampleOrder(keys: readonly string[], shuffle: boolean, seed: number, epoch: number): number[] {
  return shuffle ? epochOrder(keys, seed, epoch) : Array.from({ length: keys.length }, (_, i) => i);
}

/** The sample indices of batch `index` in an epoch's order. */
export function batchIndices(order: readonly number[], index: number, batchSize: number): number[] {
  return order.slice(index * batchSize, (index + 1) * batchSize);
}

/** Batches per epoch: ceil(size / batchSize), floor with dropRemainder. */
export function stepsPerEpoch(size: number, batchSize: number, dropRemainder: boolean): number {
  return dropRemainder ? Math.floor(size / batchSize) : Math.ceil(size / batchSize);
}
