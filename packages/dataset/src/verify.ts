// prep verify / prep inspect: re-hash every shard against its manifest; counts and image statistics.
import { Readable } from 'node:stream';
import sharp from 'sharp';
import { openStorage, resolveLocation, StorageError, type StorageOptions } from '@catdog/storage';
import { readManifestFrom, SPLITS, type Manifest, type SplitName } from './manifest.js';
import { memberNamingOf, parseShard, sha256 } from './shards.js';

export interface ShardProblem {
  split: SplitName;
  /** Shard path relative to the dataset root. */
  shard: string;
  url: string;
  problem: string;
}

export interface VerifyReport {
  url: string;
  ok: boolean;
  shards: number;
  samples: number;
  bytes: number;
  problems: ShardProblem[];
}

export interface VerifyOptions {
  storage?: StorageOptions;
  /** Called after each shard. */
  onShard?: (done: number, total: number, problem?: ShardProblem) => void;
}

/** Re-hashes every shard listed by the manifest and checks sizes, members, keys and labels; reports every mismatch. */
export async function verifyDataset(url: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const storage = openStorage(resolveLocation(url), options.storage);
  const manifest = await readManifestFrom(storage);
  const report: VerifyReport = { url: storage.url, ok: true, shards: 0, samples: 0, bytes: 0, problems: [] };
  const all = SPLITS.flatMap((split) => manifest.splits[split].shards.map((shard) => ({ split, shard })));
  const seen = new Set<string>();
  for (const [i, { split, shard }] of all.entries()) {
    const where = storage.urlOf(shard.path);
    let problem: string | undefined;
    try {
      const data = await storage.read(shard.path);
      report.bytes += data.length;
      const digest = sha256(data);
      if (data.length !== shard.bytes) problem = `size ${data.length} bytes, manifest says ${shard.bytes}`;
      else if (digest !== shard.sha256) problem = `sha256 mismatch (got ${digest}, manifest says ${shard.sha256})`;
      else {
        let count = 0;
        const classCounts: Record<string, number> = {};
        for await (const s of parseShard(Readable.from([data]), where, manifest.classes, memberNamingOf(manifest.formatVersion))) {
          count++;
          classCounts[s.className] = (classCounts[s.className] ?? 0) + 1;
          if (seen.has(s.key)) problem ??= `key ${s.key} appears more than once in the dataset`;
          seen.add(s.key);
        }
        report.samples += count;
        if (count !== shard.count) problem = `${count} samples, manifest says ${shard.count}`;
        for (const [c, n] of Object.entries(shard.classCounts ?? {})) {
          if ((classCounts[c] ?? 0) !== n) problem ??= `${classCounts[c] ?? 0} ${c}, manifest says ${n}`;
        }
      }
    } catch (err) {
      problem = err instanceof StorageError && err.code === 'not-found' ? 'missing' : (err as Error).message.replace(`${where}: `, '');
      if (err instanceof StorageError && ['unreachable', 'access-denied', 'no-such-bucket', 'credentials'].includes(err.code)) throw err;
    }
    report.shards++;
    const p = problem ? { split, shard: shard.path, url: where, problem } : undefined;
    if (p) report.problems.push(p);
    options.onShard?.(i + 1, all.length, p);
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
  splits: Record<SplitName, { count: number; classCounts: Record<string, number>; shards: number; bytes: number; width?: Stats; height?: Stats }>;
  totalBytes: number;
  skipped: number;
}

function stats(values: number[]): Stats | undefined {
  if (!values.length) return undefined;
  return { min: Math.min(...values), max: Math.max(...values), mean: values.reduce((a, b) => a + b, 0) / values.length };
}

/** Counts per split and class, bytes, and (unless images is false) image size statistics read from the shards. */
export async function inspectDataset(url: string, options: { storage?: StorageOptions; images?: boolean } = {}): Promise<InspectReport> {
  const storage = openStorage(resolveLocation(url), options.storage);
  const manifest = await readManifestFrom(storage);
  const splits = {} as InspectReport['splits'];
  let totalBytes = 0;
  for (const split of SPLITS) {
    const info = manifest.splits[split];
    const bytes = info.shards.reduce((a, s) => a + s.bytes, 0);
    totalBytes += bytes;
    const entry: InspectReport['splits'][SplitName] = { count: info.count, classCounts: info.classCounts, shards: info.shards.length, bytes };
    if (options.images !== false) {
      const widths: number[] = [];
      const heights: number[] = [];
      for (const shard of info.shards) {
        const data = await storage.read(shard.path);
        for await (const s of parseShard(Readable.from([data]), storage.urlOf(shard.path), manifest.classes, memberNamingOf(manifest.formatVersion))) {
          const meta = await sharp(s.bytes).metadata();
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
