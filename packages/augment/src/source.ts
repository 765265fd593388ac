// Samples for the stream: a prepared split (local or s3:// shards, via @catdog/dataset's streaming reader), a plain
// folder of images, or any SampleSource. A split that fits the memory budget is read once into one SharedArrayBuffer
// that every worker reads without copies (epochs then only permute indices); a larger one is streamed shard window by
// shard window (see feed.ts). Both visit a split's samples in the reader's order, so the choice never changes a batch.
import {
  openImageFolder,
  openStream,
  streamOrder,
  locate,
  type EncodedSample,
  type ShardStream,
  type SplitName,
} from '@catdog/dataset';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation, type StorageOptions } from '@catdog/storage';
import type { SharedSamples } from './worker.js';

/** Anything that lists encoded samples: @catdog/dataset's openSplit / openImageFolder results fit. */
export interface SampleSource {
  classes: string[];
  count?: number;
  samples(): AsyncIterable<EncodedSample>;
}

export interface LoadedSamples {
  classes: string[];
  keys: string[];
  labels: Float32Array;
  shared: SharedSamples;
  /** encoded bytes held in memory */
  bytes: number;
  /**
   * A prepared split's samples per shard (manifest order): the epoch order is then the streaming reader's (shard
   * shuffle + window shuffle), and keys[i] is the split's i-th sample in manifest order. Absent for other sources.
   */
  shardCounts?: number[];
  /** Manifest-order indices of samples lost with skipped shards (skipCorrupt): left out of every batch. */
  missing?: Set<number>;
}

/** Default bound on the encoded bytes held in memory (the book's 2000 JPEGs are ~45 MB; prepped at 150, ~10 MB). */
export const DEFAULT_MAX_SOURCE_BYTES = 2 * 1024 ** 3;

/** Default budget under which a prepared split is read into memory rather than streamed. */
export const DEFAULT_MEMORY_BUDGET = 512 * 1024 ** 2;

/** How a prepared split's shards are read: the streaming reader's options the batch stream passes through. */
export interface ShardReadOptions extends StorageOptions {
  /** Local directory keeping verified shards (LRU beyond cacheLimit) for later epochs and runs. */
  cacheDir?: string;
  /** Bytes the shard cache may hold. Default: no limit. */
  cacheLimit?: number;
  /** Shards per shuffle window (the streaming order's block shuffle). Default 4. */
  windowShards?: number;
  /** Shards read ahead of the window being consumed. Default windowShards. */
  prefetchShards?: number;
  /** Shard downloads in flight. Default 3. */
  fetchConcurrency?: number;
  /** Skip (and count in stats().shards) a missing or corrupt shard instead of failing. Default false. */
  skipCorrupt?: boolean;
  /** Where warnings go (skipped shards, cache trouble). Default: stderr. */
  onWarning?: (message: string) => void;
}

/** The order's seed: the stream's (any safe integer) folded to the reader's 32 bits. */
export function orderSeed(seed: number): number {
  return ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** True when the URL is a prepared dataset (has manifest.json). */
export async function isPreparedDataset(url: string, storage: StorageOptions = {}): Promise<boolean> {
  return Boolean(await openStorage(resolveLocation(url), storage).stat('manifest.json'));
}

/**
 * Opens a dataset URL: a directory or s3://bucket/prefix with manifest.json is a prepared dataset (its `split`
 * is streamed in manifest order, shards cached in cacheDir when given); anything else is read as a folder of images
 * (Kaggle's flat cat.N.jpg / dog.N.jpg, or one folder per class).
 */
export async function openDatasetSource(url: string, split: SplitName, cacheDir?: string): Promise<SampleSource> {
  if (await isPreparedDataset(url)) {
    const shards = await openStream(url, split, { shuffle: false, cacheDir });
    return { classes: shards.classes, count: shards.count, samples: () => shards.samples() };
  }
  return openImageFolder(resolveLocation(url));
}

export async function loadSamples(source: SampleSource, maxBytes = DEFAULT_MAX_SOURCE_BYTES): Promise<LoadedSamples> {
  const chunks: Uint8Array[] = [];
  const keys: string[] = [];
  const labels: number[] = [];
  const seen = new Set<string>();
  let total = 0;
  for await (const sample of source.samples()) {
    if (seen.has(sample.key)) {
      throw new UserError(
        `sample key ${sample.key} appears twice: keys must be unique (they seed each sample's transforms)`,
      );
    }
    seen.add(sample.key);
    total += sample.bytes.byteLength;
    if (total > maxBytes) {
      throw new UserError(
        `the split's encoded images exceed ${(maxBytes / 1024 ** 2).toFixed(0)} MiB (maxSourceBytes): ` +
          'prep it with --resize, or raise the bound if the memory is there',
      );
    }
    chunks.push(sample.bytes);
    keys.push(sample.key);
    labels.push(sample.label);
  }
  if (keys.length === 0) throw new UserError('the source has no samples');
  return pack(source.classes, chunks, keys, labels, total);
}

function pack(classes: string[], chunks: Uint8Array[], keys: string[], labels: number[], total: number): LoadedSamples {
  const bytes = new SharedArrayBuffer(total);
  const spans = new SharedArrayBuffer(keys.length * 2 * 8);
  const view = new Uint8Array(bytes);
  const spanView = new Float64Array(spans);
  let at = 0;
  chunks.forEach((chunk, i) => {
    view.set(chunk, at);
    spanView[2 * i] = at;
    spanView[2 * i + 1] = chunk.byteLength;
    at += chunk.byteLength;
  });
  return { classes, keys, labels: Float32Array.from(labels), shared: { bytes, spans }, bytes: total };
}

/**
 * Reads a whole prepared split into memory through the streaming reader (manifest order, so sample i is position i).
 * Samples of shards skipped under skipCorrupt are recorded in `missing`.
 */
export async function loadSplit(reader: ShardStream): Promise<LoadedSamples> {
  const count = reader.count;
  const chunks: Uint8Array[] = new Array(count).fill(new Uint8Array(0));
  const keys: string[] = new Array(count).fill('');
  const labels: number[] = new Array(count).fill(0);
  const missing = new Set<number>(Array.from({ length: count }, (_, i) => i));
  const seen = new Set<string>();
  let total = 0;
  for await (const sample of reader.samples()) {
    if (seen.has(sample.key)) {
      throw new UserError(
        `sample key ${sample.key} appears twice: keys must be unique (they seed each sample's transforms)`,
      );
    }
    seen.add(sample.key);
    chunks[sample.position] = sample.bytes;
    keys[sample.position] = sample.key;
    labels[sample.position] = sample.label;
    missing.delete(sample.position);
    total += sample.bytes.byteLength;
  }
  if (missing.size === count) throw new UserError(`${reader.url}: split ${reader.split} has no samples`);
  const loaded = pack(reader.classes, chunks, keys, labels, total);
  loaded.shardCounts = reader.shards.map((s) => s.count);
  if (missing.size) loaded.missing = missing;
  return loaded;
}

/** Opens a prepared split for reading in manifest order (the loader of the in-memory path) or in epoch order (streaming). */
export function openShards(
  url: string,
  split: SplitName,
  seed: number,
  shuffle: boolean,
  o: ShardReadOptions,
): Promise<ShardStream> {
  // Picked field by field: a batch stream's options also hold `workers` (threads), which to the reader would mean
  // data-loader partitions.
  return openStream(url, split, {
    seed: orderSeed(seed),
    shuffle,
    windowShards: o.windowShards,
    prefetchShards: o.prefetchShards,
    fetchConcurrency: o.fetchConcurrency,
    cacheDir: o.cacheDir,
    cacheLimit: o.cacheLimit,
    skipCorrupt: o.skipCorrupt,
    onWarning: o.onWarning,
    endpoint: o.endpoint,
    region: o.region,
    profile: o.profile,
    forcePathStyle: o.forcePathStyle,
    checksumMode: o.checksumMode,
    maxAttempts: o.maxAttempts,
    connectTimeoutMs: o.connectTimeoutMs,
    socketTimeoutMs: o.socketTimeoutMs,
  });
}

/** The manifest-order indices of an epoch's positions, under the streaming reader's order (one partition). */
export function splitEpochOrder(
  counts: readonly number[],
  shuffle: boolean,
  seed: number,
  epoch: number,
  windowShards?: number,
): number[] {
  const order = streamOrder(counts, epoch, { seed: orderSeed(seed), shuffle, windowShards });
  const offsets: number[] = [];
  let at = 0;
  for (const c of counts) {
    offsets.push(at);
    at += c;
  }
  const out = new Array<number>(order.length);
  for (let p = 0; p < order.length; p++) {
    const ref = locate(order, p);
    out[p] = offsets[ref.shard] + ref.index;
  }
  return out;
}

const mb = (n: number) => (n === Infinity ? 'unlimited' : `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`);

/** Whether a split of `bytes` encoded bytes is read into memory under `budget`, and the line saying why. */
export function chooseReadMode(
  bytes: number,
  budget: number,
  shards: number,
  windowShards: number,
): { mode: 'memory' | 'stream'; reason: string } {
  if (bytes <= budget)
    return { mode: 'memory', reason: `reading the split into memory: ${mb(bytes)} ≤ budget ${mb(budget)}` };
  return {
    mode: 'stream',
    reason: `streaming shards: ${mb(bytes)} > budget ${mb(budget)} (${shards} shards, ${windowShards} per window)`,
  };
}
