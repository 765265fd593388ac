// How the server reads a dataset: a prepared split within the memory budget into memory once, a larger one through a
// window of shards (window.ts), an image folder into memory.
import { createHash } from 'node:crypto';
import { DEFAULT_WINDOW_SHARDS, type ShardStream } from '@catdog/dataset';
import {
  chooseReadMode,
  DEFAULT_MEMORY_BUDGET,
  isPreparedDataset,
  loadSamples,
  loadSplit,
  openDatasetSource,
  openShards,
  type LoadedSamples,
} from '../source.js';
import type { DatasetRef } from './protocol.js';
import { ShardWindow } from './window.js';

/** How the server reads a prepared split's shards (cache, budget, skipCorrupt). */
export interface ServedReadOptions {
  cacheDir?: string;
  cacheLimit?: number;
  memoryBudget?: number;
  skipCorrupt?: boolean;
  onWarning?: (message: string) => void;
  log?: (line: string) => void;
}

/** A dataset as the server holds it: all samples in memory, or a prepared split behind a window of shards. */
export type ServedSamples =
  | { kind: 'memory'; samples: LoadedSamples; digest: string }
  | { kind: 'window'; window: ShardWindow; reader: ShardStream; digest: string };

/**
 * The server's one access to samples: a prepared split within the memory budget is read into memory through the
 * streaming reader (manifest order, so epochs follow the same order as the in-process stream), a larger one is
 * served from a window of shards; an image folder is read into memory as before. Requests name batches by index in
 * any order: the window path reads the shards a batch needs (and the next window's) on demand.
 */
export async function openServedSamples(ref: DatasetRef, o: ServedReadOptions = {}): Promise<ServedSamples> {
  if (!(await isPreparedDataset(ref.dataset))) {
    const samples = await loadSamples(await openDatasetSource(ref.dataset, ref.split));
    return { kind: 'memory', samples, digest: keysDigest(samples) };
  }
  const reader = await openShards(ref.dataset, ref.split, 0, false, o);
  // The manifest's record of the split: the same whichever way a server reads it.
  const digest = createHash('sha256')
    .update(JSON.stringify({ classes: reader.classes, shards: reader.shards }))
    .digest('hex');
  const bytes = reader.shards.reduce((n, s) => n + s.bytes, 0);
  const { mode, reason } = chooseReadMode(
    bytes,
    o.memoryBudget ?? DEFAULT_MEMORY_BUDGET,
    reader.shards.length,
    DEFAULT_WINDOW_SHARDS,
  );
  o.log?.(
    `augment serve: ${ref.dataset} ${ref.split}: ${mode === 'stream' ? reason.replace('streaming shards', 'serving from a window of shards') : reason}`,
  );
  if (mode === 'memory') return { kind: 'memory', samples: await loadSplit(reader), digest };
  return { kind: 'window', window: new ShardWindow(reader), reader, digest };
}

function keysDigest(samples: LoadedSamples): string {
  const h = createHash('sha256');
  samples.keys.forEach((k, i) => h.update(`${k}\t${samples.labels[i]}\n`));
  return h.digest('hex');
}
