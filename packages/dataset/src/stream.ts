// Streaming reader for a prepared split (local or s3://): shards are fetched a few at a time, hashed against the
// manifest's sha256 as their bytes stream in, decoded into samples and released once yielded. Memory holds one
// shuffle window of shards plus a bounded prefetch, never the dataset; the first sample arrives after one window.
// The order is order.ts's: a pure function of (seed, epoch, manifest, partition), so a run resumes at any position.
import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation, StorageError, type Storage, type StorageOptions } from '@catdog/storage';
import { ShardCache } from './cache.js';
import { readManifestFrom, SPLITS, type Manifest, type ShardInfo, type SplitName } from './manifest.js';
import {
  sampleInWindow,
  streamOrder,
  windowAt,
  windowPermutation,
  type StreamOrder,
  type OrderOptions,
} from './order.js';
import { memberNamingOf, parseShard, type EncodedSample, type MemberNaming } from './shards.js';

export interface StreamOptions extends OrderOptions, StorageOptions {
  /** Local directory keeping verified shards (named by sha256) for later epochs and runs. Default: no cache. */
  cacheDir?: string;
  /** Bytes the cache may hold; least recently used shards are evicted. Default: no limit. */
  cacheLimit?: number;
  /** Shard downloads in flight at once. Default 3. */
  fetchConcurrency?: number;
  /** Shards fetched ahead of the window being read. Default: windowShards. */
  prefetchShards?: number;
  /** Skip (and count in stats) a shard that is missing or fails verification, instead of failing. Default false. */
  skipCorrupt?: boolean;
  /** Where warnings go (skipped shards, cache trouble). Default: stderr. */
  onWarning?: (message: string) => void;
}

export interface StreamedSample extends EncodedSample {
  epoch: number;
  /** Position within this partition's epoch order: resume with `samples({ epoch, start: position + 1 })`. */
  position: number;
  /** Shard path relative to the dataset root. */
  shard: string;
}

export interface StreamStats {
  /** Shards read to the end and verified (from storage or cache). */
  shardsRead: number;
  /** Shard bytes read from storage (not from the cache). */
  bytesFetched: number;
  cacheHits: number;
  /** Encoded sample bytes decoded and not yet yielded, now and at most. */
  bytesHeld: number;
  peakBytesHeld: number;
  /** URLs of shards skipped under skipCorrupt, and the samples lost with them. */
  skippedShards: string[];
  skippedSamples: number;
}

export interface SampleRange {
  /** Default 0. */
  epoch?: number;
  /** First position (within this partition) to yield. Default 0. */
  start?: number;
}

export interface ShardStream {
  url: string;
  manifest: Manifest;
  split: SplitName;
  classes: string[];
  shards: ShardInfo[];
  /** Samples this partition reads per epoch. */
  count: number;
  /** The order of an epoch (positions → shards, by arithmetic: see locate()). */
  order(epoch: number): StreamOrder;
  /** This partition's samples of one epoch from `start`, in order. */
  samples(range?: SampleRange): AsyncIterable<StreamedSample>;
  /**
   * Epoch after epoch from `{ epoch, start }` (`epochs` of them, default endless), the next epoch's first window
   * read while the last one of the current epoch is consumed, so an epoch boundary does not stall the consumer.
   */
  epochs(range?: SampleRange & { epochs?: number }): AsyncIterable<StreamedSample>;
  /**
   * One shard's samples in member order, fetched (or taken from the cache) and verified like the stream's reads;
   * undefined when it is skipped under skipCorrupt. For readers that pick their own shards (an augmentation server
   * making batches in any order keeps a window of them); the caller holds the bytes, not bytesHeld.
   */
  readShard(shard: number): Promise<EncodedSample[] | undefined>;
  stats: StreamStats;
  cache?: ShardCache;
}

const STREAM_DEFAULTS = { fetchConcurrency: 3 };

/** Opens a split of a prepared dataset (local directory or s3://bucket/prefix) for streaming. */
export async function openStream(url: string, split: SplitName, options: StreamOptions = {}): Promise<ShardStream> {
  if (!SPLITS.includes(split))
    throw new UserError(`unknown split ${String(split)} (expected ${SPLITS.join(', ')})`, { code: 'usage' });
  const storage = openStorage(resolveLocation(url), options);
  const manifest = await readManifestFrom(storage);
  const shards = manifest.splits[split].shards;
  const counts = shards.map((s) => s.count);
  const stats: StreamStats = {
    shardsRead: 0,
    bytesFetched: 0,
    cacheHits: 0,
    bytesHeld: 0,
    peakBytesHeld: 0,
    skippedShards: [],
    skippedSamples: 0,
  };
  const warn = options.onWarning ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const cache = options.cacheDir
    ? new ShardCache({ dir: options.cacheDir, limit: options.cacheLimit, onWarning: warn })
    : undefined;
  const orderOf = (epoch: number) => streamOrder(counts, epoch, options);
  const first = orderOf(0);
  const reader = new ShardReader(
    storage,
    manifest.classes,
    memberNamingOf(manifest.formatVersion),
    stats,
    cache,
    warn,
    options,
  );
  return {
    url: storage.url,
    manifest,
    split,
    classes: manifest.classes,
    shards,
    count: first.length,
    order: orderOf,
    samples: (range = {}) => reader.read(shards, orderOf(range.epoch ?? 0), range.start ?? 0),
    epochs: (range = {}) =>
      chainEpochs(
        reader,
        shards,
        orderOf,
        range.epoch ?? 0,
        range.start ?? 0,
        range.epochs ?? Number.POSITIVE_INFINITY,
      ),
    readShard: async (i) => {
      if (!Number.isInteger(i) || i < 0 || i >= shards.length)
        throw new RangeError(`shard ${i} is not one of the split's ${shards.length}`);
      const all = new Set(Array.from({ length: shards[i].count }, (_, k) => k));
      const loaded = await reader.loadShard(shards[i], all, new Set());
      if (!loaded) return undefined;
      const out: EncodedSample[] = [];
      for (let k = 0; k < shards[i].count; k++) {
        const sample = loaded.get(k)!;
        stats.bytesHeld -= sample.bytes.byteLength;
        out.push(sample);
      }
      return out;
    },
    stats,
    cache,
  };
}

async function* chainEpochs(
  reader: ShardReader,
  shards: ShardInfo[],
  orderOf: (epoch: number) => StreamOrder,
  epoch: number,
  start: number,
  epochs: number,
): AsyncGenerator<StreamedSample> {
  const last = epoch + epochs;
  let current: AsyncGenerator<StreamedSample> | undefined =
    epoch < last ? reader.read(shards, orderOf(epoch), start) : undefined;
  let upcoming:
    | { iterator: AsyncGenerator<StreamedSample>; first: Promise<IteratorResult<StreamedSample>> }
    | undefined;
  try {
    while (current) {
      const order = orderOf(epoch);
      // A partition without samples has none in any epoch: endless epochs of nothing would spin.
      if (order.length === 0) return;
      // The next epoch starts loading when this one enters its final window.
      const finalWindow = order.windows[windowAt(order, order.end - 1)];
      const prefetchAt = Math.max(0, finalWindow.first - order.start);
      for (;;) {
        const r = await current.next();
        if (r.done) break;
        if (!upcoming && epoch + 1 < last && r.value.position >= prefetchAt) {
          const iterator = reader.read(shards, orderOf(epoch + 1), 0);
          upcoming = { iterator, first: iterator.next() };
          upcoming.first.catch(() => {});
        }
        yield r.value;
      }
      epoch++;
      if (epoch >= last) break;
      if (!upcoming) {
        const iterator = reader.read(shards, orderOf(epoch), 0);
        upcoming = { iterator, first: iterator.next() };
      }
      const { iterator, first } = upcoming;
      upcoming = undefined;
      current = iterator;
      const r = await first;
      if (!r.done) yield r.value;
    }
  } finally {
    await current?.return(undefined);
    await upcoming?.iterator.return(undefined).catch(() => {});
  }
}

interface Job {
  shard: number;
  /** Indices within the shard this partition needs. */
  needed: Set<number>;
  result?: Promise<Map<number, EncodedSample> | undefined>;
}

class ShardReader {
  constructor(
    private readonly storage: Storage,
    private readonly classes: string[],
    private readonly naming: MemberNaming,
    private readonly stats: StreamStats,
    private readonly cache: ShardCache | undefined,
    private readonly warn: (message: string) => void,
    private readonly options: StreamOptions,
  ) {}

  async *read(shards: ShardInfo[], order: StreamOrder, start: number): AsyncGenerator<StreamedSample> {
    if (!Number.isInteger(start) || start < 0 || start > order.length) {
      throw new UserError(`start position ${start} is outside this partition's ${order.length} samples`, {
        code: 'bad-config',
      });
    }
    const from = order.start + start;
    // Per window overlapping [from, end): the shards and sample indices it needs, in reading order.
    const plan: { w: number; lo: number; hi: number; jobs: Job[] }[] = [];
    for (let w = 0; w < order.windows.length; w++) {
      const win = order.windows[w];
      const lo = Math.max(from, win.first) - win.first;
      const hi = Math.min(order.end, win.first + win.count) - win.first;
      if (hi <= lo) continue;
      const perm = windowPermutation(order, w);
      const needed = win.shards.map(() => new Set<number>());
      for (let j = lo; j < hi; j++) {
        const { slot, index } = sampleInWindow(order, win, perm[j]);
        needed[slot].add(index);
      }
      const jobs = win.shards.map((shard, i) => ({ shard, needed: needed[i] })).filter((j) => j.needed.size > 0);
      plan.push({ w, lo, hi, jobs });
    }

    // Fetch in reading order: at most fetchConcurrency downloads at once, and at most one window plus
    // prefetchShards shards decoded or in flight, so memory is bounded by the window, not the dataset.
    const queue = plan.flatMap((p) => p.jobs);
    const concurrency = Math.max(1, this.options.fetchConcurrency ?? STREAM_DEFAULTS.fetchConcurrency);
    const capacity = order.windowShards + Math.max(0, this.options.prefetchShards ?? order.windowShards);
    let next = 0;
    let inFlight = 0;
    let held = 0;
    let stopped = false;
    const active = new Set<Readable>();
    const pump = () => {
      while (!stopped && next < queue.length && inFlight < concurrency && held < capacity) {
        const job = queue[next++];
        inFlight++;
        held++;
        job.result = this.loadShard(shards[job.shard], job.needed, active).finally(() => {
          inFlight--;
          pump();
        });
        job.result.catch(() => {});
      }
    };

    try {
      pump();
      for (const { w, lo, hi, jobs } of plan) {
        const win = order.windows[w];
        const loaded = new Map<number, Map<number, EncodedSample> | undefined>();
        for (const job of jobs) {
          // Every job of this window has been started: capacity ≥ windowShards.
          while (!job.result) await new Promise((r) => setImmediate(r));
          loaded.set(job.shard, await job.result);
        }
        const perm = windowPermutation(order, w);
        for (let j = lo; j < hi; j++) {
          const { shard, index } = sampleInWindow(order, win, perm[j]);
          const samples = loaded.get(shard);
          const sample = samples?.get(index);
          if (!sample) {
            this.stats.skippedSamples++;
            continue;
          }
          samples!.delete(index);
          this.stats.bytesHeld -= sample.bytes.byteLength;
          yield { ...sample, epoch: order.epoch, position: win.first + j - order.start, shard: shards[shard].path };
        }
        held -= jobs.length;
        pump();
      }
    } finally {
      stopped = true;
      // With an error, so the decodes reading them settle instead of waiting for an end that never comes.
      for (const s of active) s.destroy(new Error('stream stopped'));
      // Samples decoded ahead of a consumer that stopped early are dropped.
      for (const job of queue) {
        const samples = await job.result?.catch(() => undefined);
        for (const s of samples?.values() ?? []) this.stats.bytesHeld -= s.bytes.byteLength;
        samples?.clear();
      }
    }
  }

  /** One shard's needed samples, verified; undefined when skipped under skipCorrupt. */
  async loadShard(
    shard: ShardInfo,
    needed: Set<number>,
    active: Set<Readable>,
  ): Promise<Map<number, EncodedSample> | undefined> {
    const where = this.storage.urlOf(shard.path);
    try {
      if (this.cache) {
        const cached = await this.cache.open(shard.sha256, shard.bytes);
        if (cached) {
          try {
            const out = await this.decode(shard, where, cached, needed, active);
            this.stats.cacheHits++;
            return out;
          } catch (err) {
            if (!(err instanceof UserError && err.code === 'corrupt-shard')) throw err;
            // A damaged cache file is dropped and the shard fetched again.
            this.warn(
              `shard cache: ${shard.sha256.slice(0, 12)}.tar (${where}) failed verification; fetching it again`,
            );
            await this.cache.remove(shard.sha256);
          }
        }
      }
      let source: Readable;
      try {
        source = await this.storage.readStream(shard.path);
      } catch (err) {
        if (err instanceof StorageError && err.code === 'not-found') {
          throw new UserError(`${where}: shard listed in the manifest is missing`, {
            code: 'missing-shard',
            cause: err,
          });
        }
        throw err;
      }
      const writer = await this.cache?.writer(shard.sha256, shard.bytes);
      try {
        const out = await this.decode(shard, where, source, needed, active, writer?.write, true);
        await writer?.commit();
        return out;
      } catch (err) {
        await writer?.abort();
        throw err;
      }
    } catch (err) {
      if (
        this.options.skipCorrupt &&
        err instanceof UserError &&
        (err.code === 'corrupt-shard' || err.code === 'missing-shard')
      ) {
        this.stats.skippedShards.push(where);
        this.warn(`skipping shard (${err.message})`);
        return undefined;
      }
      throw err;
    }
  }

  /** Streams a shard through sha256 and the tar parser; keeps only `needed` samples; throws naming the shard on any mismatch. */
  private async decode(
    shard: ShardInfo,
    where: string,
    source: Readable,
    needed: Set<number>,
    active: Set<Readable>,
    tee?: (chunk: Buffer) => Promise<void>,
    remote = false,
  ): Promise<Map<number, EncodedSample>> {
    const hash = createHash('sha256');
    let bytes = 0;
    const meter = new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        hash.update(chunk);
        bytes += chunk.length;
        if (remote) this.stats.bytesFetched += chunk.length;
        if (bytes > shard.bytes) return cb(corrupt(where, `shard is longer than the manifest's ${shard.bytes} bytes`));
        if (tee) tee(chunk).then(() => cb(null, chunk), cb);
        else cb(null, chunk);
      },
    });
    source.on('error', (err) => meter.destroy(err));
    source.pipe(meter);
    active.add(source);
    const kept = new Map<number, EncodedSample>();
    let index = 0;
    try {
      for await (const sample of parseShard(meter, where, this.classes, this.naming)) {
        if (needed.has(index)) {
          kept.set(index, sample);
          this.stats.bytesHeld += sample.bytes.byteLength;
          this.stats.peakBytesHeld = Math.max(this.stats.peakBytesHeld, this.stats.bytesHeld);
        }
        index++;
      }
      // The tar end marker may come before the last bytes (padding): read to the end before judging the hash.
      meter.resume();
      if (!meter.readableEnded) await finished(meter);
      if (bytes !== shard.bytes) throw corrupt(where, `shard is ${bytes} bytes, manifest says ${shard.bytes}`);
      const digest = hash.digest('hex');
      if (digest !== shard.sha256)
        throw corrupt(where, `sha256 mismatch (got ${digest}, manifest says ${shard.sha256})`);
      if (index !== shard.count) throw corrupt(where, `${index} samples, manifest says ${shard.count}`);
      this.stats.shardsRead++;
      return kept;
    } catch (err) {
      for (const s of kept.values()) this.stats.bytesHeld -= s.bytes.byteLength;
      kept.clear();
      throw err;
    } finally {
      active.delete(source);
      source.destroy();
    }
  }
}

function corrupt(where: string, why: string): UserError {
  return new UserError(`${where}: ${why}`, { code: 'corrupt-shard' });
}
