// prep verify / prep inspect: re-hash every shard against its manifest; counts and image statistics.
import { Readable } from 'node:stream';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import { openStorage, resolveLocation, StorageError, type StorageOptions } from '@catdog/storage';
import { readManifestFrom, SPLITS, type Manifest, type SplitName } from './manifest.js';
import { memberNamingOf, memberProblem, parseShard, sha256 } from './shards.js';
import { checkDecodes } from './images.js';

export interface ShardProblem {
  split: SplitName;
  /** Shard path relative to the dataset root. */
  shard: string;
  url: string;
  /** The sample concerned, when the problem is one image (with decode). */
  key?: string;
  problem: string;
}

export interface VerifyReport {
  url: string;
  ok: boolean;
  shards: number;
  samples: number;
  bytes: number;
  /** Images decoded (with decode), and how many of them failed. */
  decoded?: number;
  undecodable?: number;
  problems: ShardProblem[];
}

export interface VerifyOptions {
  storage?: StorageOptions;
  /** Also decode every image completely (as training will) and report each one that fails, by shard and key. */
  decode?: boolean;
  /** Images decoded at once with decode. Default 4. */
  concurrency?: number;
  /** Called after each shard with that shard's problems (empty when it passed). */
  onShard?: (done: number, total: number, problems: ShardProblem[]) => void;
}

/**
 * Checks every tar member: a regular file with a relative name that stays inside the shard's folder. Readers
 * never follow other members, but a shard holding them is malformed (and another tool might extract them).
 */
/** Thrown past a shard's sample checks when its members are malformed. */
class MalformedShard extends Error {}

async function checkMembers(data: Buffer): Promise<string[]> {
  const problems: string[] = [];
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const problem = memberProblem(entry.header);
      if (problem) problems.push(problem);
      entry.resume();
    }
  })();
  extract.end(data);
  try {
    await done;
  } catch (err) {
    // A member declaring more bytes than the shard holds ends the tar early: its header is the problem to name.
    if (!problems.length) throw err;
  }
  return problems;
}

/** Runs `fn` over `items` with at most `limit` at once. */
async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const run = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
}

/**
 * Re-hashes every shard listed by the manifest and checks sizes, members (names and types), keys and labels;
 * with decode, decodes every image. Reports every mismatch; throws only when the store itself fails.
 */
export async function verifyDataset(url: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const storage = openStorage(resolveLocation(url), options.storage);
  const manifest = await readManifestFrom(storage);
  const report: VerifyReport = { url: storage.url, ok: true, shards: 0, samples: 0, bytes: 0, problems: [] };
  if (options.decode) {
    report.decoded = 0;
    report.undecodable = 0;
  }
  const all = SPLITS.flatMap((split) => manifest.splits[split].shards.map((shard) => ({ split, shard })));
  const seen = new Set<string>();
  for (const [i, { split, shard }] of all.entries()) {
    const where = storage.urlOf(shard.path);
    const problems: ShardProblem[] = [];
    const add = (problem: string, key?: string) =>
      problems.push({ split, shard: shard.path, url: where, ...(key !== undefined ? { key } : {}), problem });
    try {
      const data = await storage.read(shard.path);
      report.bytes += data.length;
      const digest = sha256(data);
      if (data.length !== shard.bytes) add(`size ${data.length} bytes, manifest says ${shard.bytes}`);
      else if (digest !== shard.sha256) add(`sha256 mismatch (got ${digest}, manifest says ${shard.sha256})`);
      else {
        const memberProblems = await checkMembers(data);
        for (const p of memberProblems) add(p);
        // A shard with hostile members is malformed: its samples are not read (the reader would refuse it again).
        if (memberProblems.length) throw new MalformedShard();
        let count = 0;
        const classCounts: Record<string, number> = {};
        const images: { key: string; bytes: Uint8Array }[] = [];
        for await (const s of parseShard(
          Readable.from([data]),
          where,
          manifest.classes,
          memberNamingOf(manifest.formatVersion),
        )) {
          count++;
          classCounts[s.className] = (classCounts[s.className] ?? 0) + 1;
          if (seen.has(s.key)) add(`key ${s.key} appears more than once in the dataset`, s.key);
          seen.add(s.key);
          if (options.decode) images.push({ key: s.key, bytes: s.bytes });
        }
        report.samples += count;
        if (count !== shard.count) add(`${count} samples, manifest says ${shard.count}`);
        for (const [c, n] of Object.entries(shard.classCounts ?? {})) {
          if ((classCounts[c] ?? 0) !== n) add(`${classCounts[c] ?? 0} ${c}, manifest says ${n}`);
        }
        if (options.decode) {
          const failed = new Map<string, string>();
          await forEachLimited(images, options.concurrency ?? 4, async (img) => {
            const why = await checkDecodes(img.bytes);
            if (why) failed.set(img.key, why);
          });
          report.decoded! += images.length;
          report.undecodable! += failed.size;
          // In shard order, whatever order the decodes finished in.
          for (const img of images) if (failed.has(img.key)) add(`image ${img.key}: ${failed.get(img.key)}`, img.key);
        }
      }
    } catch (err) {
      if (err instanceof MalformedShard) {
        // its member problems are reported already
      } else if (
        err instanceof StorageError &&
        ['unreachable', 'access-denied', 'no-such-bucket', 'credentials', 'config', 'throttled'].includes(err.code)
      )
        throw err;
      else
        add(
          err instanceof StorageError && err.code === 'not-found'
            ? 'missing'
            : (err as Error).message.replace(`${where}: `, ''),
        );
    }
    report.shards++;
    report.problems.push(...problems);
    options.onShard?.(i + 1, all.length, problems);
  }
  report.ok = report.problems.length === 0;
  return report;
}

export interface Stats {
  min: number;
  max: number;
  mean: number;
}

export interface InspectReport {
  url: string;
  manifest: Manifest;
  splits: Record<
    SplitName,
    { count: number; classCounts: Record<string, number>; shards: number; bytes: number; width?: Stats; height?: Stats }
  >;
  totalBytes: number;
  skipped: number;
}

function stats(values: number[]): Stats | undefined {
  if (!values.length) return undefined;
  return {
    min: Math.min(...values),
    max: Math.max(...values),
    mean: values.reduce((a, b) => a + b, 0) / values.length,
  };
}

/** Counts per split and class, bytes, and (unless images is false) image size statistics read from the shards. */
export async function inspectDataset(
  url: string,
  options: { storage?: StorageOptions; images?: boolean } = {},
): Promise<InspectReport> {
  const storage = openStorage(resolveLocation(url), options.storage);
  const manifest = await readManifestFrom(storage);
  const splits = {} as InspectReport['splits'];
  let totalBytes = 0;
  for (const split of SPLITS) {
    const info = manifest.splits[split];
    const bytes = info.shards.reduce((a, s) => a + s.bytes, 0);
    totalBytes += bytes;
    const entry: InspectReport['splits'][SplitName] = {
      count: info.count,
      classCounts: info.classCounts,
      shards: info.shards.length,
      bytes,
    };
    if (options.images !== false) {
      const widths: number[] = [];
      const heights: number[] = [];
      for (const shard of info.shards) {
        const data = await storage.read(shard.path);
        for await (const s of parseShard(
          Readable.from([data]),
          storage.urlOf(shard.path),
          manifest.classes,
          memberNamingOf(manifest.formatVersion),
        )) {
          const meta = await sharp(s.bytes, { limitInputPixels: false }).metadata(); // the header only
          if (meta.width && meta.height) {
            widths.push(meta.width);
            heights.push(meta.height);
          }
        }
      }
      entry.width = stats(widths);
      entry.height = stats(heights);
    }
    splits[split] = entry;
  }
  return { url: storage.url, manifest, splits, totalBytes, skipped: manifest.skipped?.length ?? 0 };
}
