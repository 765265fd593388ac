// prep split / finalize: each worker writes its disjoint, deterministic subset of the plan's shards plus a part
// file; the manifest is written last, only when every part is present.
import { systemCodeOf, UserError } from '@catdog/errors';
import {
  openStorage,
  removeStaleWrites,
  resolveLocation,
  StorageError,
  type Storage,
  type StorageOptions,
} from '@catdog/storage';
import {
  FORMAT_VERSION,
  MANIFEST_FILE,
  SPLITS,
  type Manifest,
  type ShardInfo,
  type SkippedFile,
  type SourceAccounting,
  type SplitInfo,
  type SplitName,
} from './manifest.js';
import { buildPlan, type Plan, type PlanOptions, type PlannedShard } from './plan.js';
import { ShardWriter, hashObject } from './shards.js';
import { openSource, type IgnoredFile, type SourceItem } from './sources.js';
import { encodeImage } from './images.js';

export const PARTS_DIR = '_parts';
export const REPORT_FILE = 'prep-report.json';
export const TOOL = { tool: '@catdog/prep', version: '0.1.0' };

export interface PrepareOptions extends PlanOptions {
  /** Source folder or .zip, local path or s3:// URL. */
  source: string;
  /** Output dataset root, local directory or s3://bucket/prefix. */
  out: string;
  storage?: StorageOptions;
  /** This worker's index (0-based) and the number of workers. Default 0 of 1. */
  workerIndex?: number;
  workerCount?: number;
  /** Replace an output location that holds a different dataset. */
  force?: boolean;
  /** Publish the manifest even if broken images left a split short (the report lists them). Default false. */
  allowShort?: boolean;
  /** Write the manifest when this worker is done and all parts are present. Default: only with one worker. */
  finalize?: boolean;
  /** Images encoded concurrently. Default 8. */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: (progress: PrepProgress) => void;
}

export interface PrepProgress {
  phase: 'plan' | 'reuse' | 'encode' | 'finalize';
  /** Images handled by this worker so far (written or reused), and in total. */
  done: number;
  total: number;
  skipped: number;
  shardsDone: number;
  shardsTotal: number;
}

export interface ShardRecord {
  planId: string;
  shard: ShardInfo;
  split: SplitName;
  skipped: SkippedFile[];
  /** Samples of this shard that were re-encoded, counted per reason (absent in records of older runs). */
  converted?: Record<string, number>;
}

export interface PartFile {
  formatVersion: number;
  planId: string;
  workerIndex: number;
  workerCount: number;
  /** Everything the manifest needs besides the shard results (so finalize needs no source access). */
  base: Omit<Manifest, 'splits' | 'skipped' | 'createdAt' | 'createdBy'>;
  /** Every shard path of the plan, per split, in order. */
  planShards: Record<SplitName, string[]>;
  shards: ShardRecord[];
  /** The source as listed (the same for every worker): its file count and the files that are not samples. */
  source?: { files: number; ignored: IgnoredFile[] };
}

export interface PrepReport {
  out: string;
  planId: string;
  workerIndex: number;
  workerCount: number;
  shardsWritten: string[];
  shardsReused: string[];
  /** Images written by this worker (reused shards not counted). */
  images: number;
  seconds: number;
  imagesPerSecond: number;
  skipped: SkippedFile[];
  /** Files the source listed, and those that are not samples of its layout (with reasons). */
  sourceFiles: number;
  ignored: IgnoredFile[];
  /** Temp files (or multipart uploads) of killed earlier runs removed from --out before writing. */
  staleRemoved: string[];
  /** Why the cleanup of stale temp files could not run (the run went on without it). */
  staleCleanupFailed?: string;
  /** True when the manifest is published (by this call or before). */
  complete: boolean;
  alreadyComplete?: boolean;
  finalize?: FinalizeReport;
  /** With finalize on several workers: the workers whose parts were not there yet (the last one publishes). */
  waitingFor?: number[];
}

export interface FinalizeReport {
  out: string;
  complete: boolean;
  missingParts: number[];
  splits: Record<SplitName, { count: number; classCounts: Record<string, number>; shards: number; bytes: number }>;
  skipped: SkippedFile[];
  /** Per split, how many samples short of the plan (broken images with no spare left). */
  short: Partial<Record<SplitName, number>>;
  /** What became of every source file; `convertedBy` counts re-encoded samples per reason. */
  accounting?: SourceAccounting;
  convertedBy: Record<string, number>;
  ignored: IgnoredFile[];
  manifest?: Manifest;
}

/** finalize found parts missing: the dataset is not complete yet (other workers still running, or failed). */
export class MissingPartsError extends UserError {
  constructor(
    message: string,
    readonly missingParts: number[],
  ) {
    super(message, { code: 'missing-parts' });
    this.name = 'MissingPartsError';
  }
}

export class AbortedError extends UserError {
  constructor() {
    super('interrupted: no manifest written; rerun the same command to resume (finished shards are reused)', {
      code: 'aborted',
    });
    this.name = 'AbortedError';
  }
}

function recordPath(shardPath: string): string {
  return `${PARTS_DIR}/shards/${shardPath.replace(/\//g, '__')}.json`;
}

export function partPath(index: number, count: number): string {
  return `${PARTS_DIR}/part-${String(index).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.json`;
}

async function readJson<T>(storage: Storage, path: string): Promise<T | undefined> {
  try {
    return JSON.parse((await storage.read(path)).toString('utf8')) as T;
  } catch (err) {
    if (err instanceof StorageError && err.code === 'not-found') return undefined;
    if (err instanceof SyntaxError) return undefined;
    throw err;
  }
}

function isDatasetFile(path: string): boolean {
  return (
    path === MANIFEST_FILE ||
    path === REPORT_FILE ||
    path.startsWith(`${PARTS_DIR}/`) ||
    SPLITS.some((s) => path.startsWith(`${s}/`))
  );
}

export function workerDefaults(env: NodeJS.ProcessEnv = process.env): { workerIndex: number; workerCount: number } {
  const index = Number(env.JOB_COMPLETION_INDEX ?? env.CATDOG_WORKER_INDEX ?? 0);
  const count = Number(env.CATDOG_WORKER_COUNT ?? env.JOB_COMPLETION_COUNT ?? env.JOB_COMPLETIONS ?? 1);
  return { workerIndex: index, workerCount: count };
}

function manifestBase(plan: Plan, sourceUrl: string, layout: Manifest['source']['layout']): PartFile['base'] {
  return {
    formatVersion: FORMAT_VERSION,
    planId: plan.id,
    source: { url: sourceUrl, layout },
    split: {
      requested: plan.requested,
      perClass: plan.perClass,
      order: plan.order,
      ...(plan.seed !== undefined ? { seed: plan.seed } : {}),
    },
    classes: plan.classes,
    image: {
      format: 'jpeg',
      ...(plan.resize ? { resize: plan.resize } : {}),
      quality: plan.quality,
      reencode: plan.resize ? 'always' : 'when-needed',
    },
    sharding: { samplesPerShard: plan.samplesPerShard },
    ...(plan.folders ? { folders: true } : {}),
  };
}

/** Runs items through `fn` with bounded concurrency, yielding results in input order. */
async function* orderedMap<T, R>(items: T[], concurrency: number, fn: (item: T) => Promise<R>): AsyncGenerator<R> {
  const pending: Promise<R>[] = [];
  let next = 0;
  const fill = () => {
    while (next < items.length && pending.length < concurrency) {
      const p = fn(items[next++]);
      p.catch(() => {});
      pending.push(p);
    }
  };
  fill();
  while (pending.length) {
    const r = await pending.shift()!;
    fill();
    yield r;
  }
}

interface Encoded {
  item: SourceItem;
  bytes?: Buffer;
  /** Why it could not be used (no bytes). */
  reason?: string;
  /** Why it was re-encoded (bytes differ from the source file). */
  converted?: string;
}

/** Storage failures that mean the source itself is unusable (stop), as opposed to one bad file (skip it). */
const SOURCE_FAILURES = new Set([
  'unreachable',
  'access-denied',
  'no-such-bucket',
  'credentials',
  'config',
  'throttled',
]);

async function encodeItem(item: SourceItem, plan: Plan): Promise<Encoded> {
  let buf: Buffer;
  try {
    buf = await item.read();
  } catch (err) {
    const system = systemCodeOf((err as { cause?: unknown })?.cause) ?? systemCodeOf(err);
    // A local file the OS will not let us read is one bad file; denied or unreachable S3 is the whole source.
    const oneFile = system === 'EACCES' || system === 'EPERM';
    if (err instanceof StorageError && SOURCE_FAILURES.has(err.code) && !oneFile) throw err;
    return { item, reason: `unreadable (${system ?? (err as Error).message})` };
  }
  const r = await encodeImage(buf, { resize: plan.resize, quality: plan.quality });
  return r.ok ? { item, bytes: r.bytes, converted: r.converted } : { item, reason: r.reason };
}

async function writeShard(
  out: Storage,
  plan: Plan,
  shard: PlannedShard,
  concurrency: number,
  signal: AbortSignal | undefined,
  onImage: (skipped: boolean) => void,
): Promise<{ finished: Promise<ShardRecord> }> {
  const writer = new ShardWriter(out, shard.path);
  const skipped: SkippedFile[] = [];
  const converted: Record<string, number> = {};
  const reserve = new Map([...shard.reserve].map(([c, l]) => [c, l.slice()]));
  const folderWrites: Promise<void>[] = [];
  const add = async (e: Encoded) => {
    await writer.add({
      key: e.item.key,
      label: plan.classes.indexOf(e.item.className),
      className: e.item.className,
      bytes: e.bytes!,
      ext: 'jpg',
    });
    if (e.converted) converted[e.converted] = (converted[e.converted] ?? 0) + 1;
    if (plan.folders) {
      folderWrites.push(out.write(`${shard.split}/${e.item.className}/${e.item.key}.jpg`, e.bytes!));
      if (folderWrites.length >= concurrency) await Promise.all(folderWrites.splice(0));
    }
  };
  try {
    for await (const e of orderedMap(shard.items, concurrency, (item) => encodeItem(item, plan))) {
      if (signal?.aborted) throw new AbortedError();
      if (e.bytes) {
        await add(e);
        onImage(false);
        continue;
      }
      // Keep the split's counts exact: take this shard's next spare image of the same class.
      const entry: SkippedFile = {
        source: e.item.name,
        className: e.item.className,
        split: shard.split,
        reason: e.reason!,
      };
      skipped.push(entry);
      const spares = reserve.get(e.item.className) ?? [];
      while (spares.length) {
        const spare = await encodeItem(spares.shift()!, plan);
        if (spare.bytes) {
          entry.replacedBy = spare.item.key;
          await add(spare);
          break;
        }
        skipped.push({
          source: spare.item.name,
          className: spare.item.className,
          split: 'reserve',
          reason: spare.reason!,
        });
      }
      onImage(true);
    }
    await Promise.all(folderWrites);
  } catch (err) {
    await Promise.allSettled(folderWrites);
    await writer.abort(err as Error);
    throw err;
  }
  // The caller encodes the next shard while this one's upload completes.
  const finished = writer
    .finish()
    .then((info) => ({ planId: plan.id, shard: info, split: shard.split, skipped, converted }));
  finished.catch(() => {});
  return { finished };
}

function shardOfRecord(path: string): string | undefined {
  const m = new RegExp(`^${PARTS_DIR}/shards/(.+)\\.json$`).exec(path);
  return m ? m[1].replace(/__/g, '/') : undefined;
}

/** Checks the output location before anything is written; with force, removes what belongs to another dataset. */
async function preflight(
  out: Storage,
  plan: Plan,
  options: PrepareOptions,
  owned: Set<string>,
  workerCount: number,
): Promise<Manifest | undefined> {
  const existing = await readJson<Manifest>(out, MANIFEST_FILE);
  if (existing && existing.planId === plan.id && !options.force) return existing;
  const files: string[] = [];
  for await (const e of out.list()) if (isDatasetFile(e.path)) files.push(e.path);
  const planPaths = new Set(plan.shards.map((s) => s.path));
  const foreign: string[] = [];
  const stale: string[] = [];
  if (existing) foreign.push(MANIFEST_FILE);
  for (const f of files) {
    if (f.startsWith(`${PARTS_DIR}/`) && f.endsWith('.json')) {
      const rec = await readJson<{ planId?: string }>(out, f);
      if (rec?.planId !== undefined && rec.planId !== plan.id) foreign.push(f);
      // Parts of an earlier run of this same plan with another worker count.
      else if (/part-\d+-of-\d+\.json$/.test(f) && !f.endsWith(`-of-${String(workerCount).padStart(5, '0')}.json`))
        stale.push(f);
    } else if (SPLITS.some((s) => f.startsWith(`${s}/`)) && f.endsWith('.tar') && !planPaths.has(f)) {
      foreign.push(f);
    }
  }
  if (foreign.length && !options.force) {
    const what = existing
      ? `a different dataset (manifest plan ${existing.planId}, created ${existing.createdAt})`
      : `files of a different or unfinished dataset (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''})`;
    throw new UserError(`${out.url} already holds ${what}; use --force to replace it, or choose another --out`, {
      code: 'bad-dataset',
    });
  }
  // The manifest goes first so no reader trusts a half-replaced dataset.
  if (options.force) {
    await out.delete(MANIFEST_FILE);
    await out.delete(REPORT_FILE);
  }
  for (const f of [...foreign, ...stale]) {
    if (f === MANIFEST_FILE) continue;
    // A record for a shard of this plan is rewritten by the worker owning that shard; leave other workers' to them.
    const shard = shardOfRecord(f);
    if (shard && planPaths.has(shard) && !owned.has(shard)) continue;
    await out.delete(f);
  }
  return undefined;
}

/** prep split: plan, write this worker's shards (reusing verified ones), its part file, and (by default with one worker) the manifest. */
export async function prepareDataset(options: PrepareOptions): Promise<PrepReport> {
  const started = performance.now();
  const workerCount = options.workerCount ?? 1;
  const workerIndex = options.workerIndex ?? 0;
  if (!Number.isInteger(workerCount) || workerCount < 1)
    throw new UserError(`worker count must be a positive integer (got ${workerCount})`);
  if (!Number.isInteger(workerIndex) || workerIndex < 0 || workerIndex >= workerCount) {
    throw new UserError(
      `worker index must be in 0..${workerCount - 1} (got ${workerIndex}); set --worker-count (or CATDOG_WORKER_COUNT) to the number of workers`,
    );
  }
  const sourceUrl = resolveLocation(options.source);
  const outUrl = resolveLocation(options.out);
  const out = openStorage(outUrl, options.storage);
  const source = await openSource(sourceUrl, options.storage);
  try {
    const plan = buildPlan(source, options);
    const mine = plan.shards.filter((s) => s.globalIndex % workerCount === workerIndex);
    const owned = new Set(mine.map((s) => s.path));
    const total = mine.reduce((a, s) => a + s.items.length, 0);
    const progress: PrepProgress = {
      phase: 'plan',
      done: 0,
      total,
      skipped: 0,
      shardsDone: 0,
      shardsTotal: mine.length,
    };
    const report: PrepReport = {
      out: out.url,
      planId: plan.id,
      workerIndex,
      workerCount,
      shardsWritten: [],
      shardsReused: [],
      images: 0,
      seconds: 0,
      imagesPerSecond: 0,
      skipped: [],
      sourceFiles: sourceFileCount(source),
      ignored: source.ignored,
      staleRemoved: [],
      complete: false,
    };
    const existing = await preflight(out, plan, options, owned, workerCount);
    // Temp files of killed earlier runs (never a live writer's: see removeStaleWrites).
    // Best effort: a store that refuses the listing (e.g. no s3:ListBucketMultipartUploads) does not stop the run.
    try {
      report.staleRemoved = (await removeStaleWrites(out)).removed;
    } catch (err) {
      report.staleCleanupFailed = err instanceof Error ? err.message : String(err);
    }
    if (existing) {
      // Same dataset already published: check this worker's shards; a damaged one unpublishes the manifest
      // and is rewritten below (its record no longer matches), everything else is reused.
      const listed = new Map(SPLITS.flatMap((s) => existing.splits[s].shards.map((sh) => [sh.path, sh] as const)));
      let intact = true;
      for (const shard of mine) {
        const info = listed.get(shard.path);
        const st = info && (await out.stat(shard.path));
        if (!info || st?.size !== info.bytes || (await hashObject(out, shard.path)).sha256 !== info.sha256) {
          intact = false;
          break;
        }
      }
      if (intact) {
        report.complete = true;
        report.alreadyComplete = true;
        report.seconds = (performance.now() - started) / 1000;
        return report;
      }
      await out.delete(MANIFEST_FILE);
    }
    options.onProgress?.({ ...progress });
    const records: ShardRecord[] = [];
    let inflight: Promise<void> = Promise.resolve();
    for (const shard of mine) {
      if (options.signal?.aborted) throw new AbortedError();
      // Reuse a shard a previous run finished, if its record matches this plan and the bytes still hash right.
      const rec = await readJson<ShardRecord>(out, recordPath(shard.path));
      if (rec && rec.planId === plan.id) {
        const st = await out.stat(shard.path);
        if (st?.size === rec.shard.bytes && (await hashObject(out, shard.path)).sha256 === rec.shard.sha256) {
          await inflight;
          records.push(rec);
          report.shardsReused.push(shard.path);
          report.skipped.push(...rec.skipped);
          progress.done += shard.items.length;
          progress.shardsDone++;
          progress.phase = 'reuse';
          options.onProgress?.({ ...progress });
          continue;
        }
      }
      progress.phase = 'encode';
      let finished: Promise<ShardRecord>;
      try {
        ({ finished } = await writeShard(out, plan, shard, options.concurrency ?? 8, options.signal, (skipped) => {
          progress.done++;
          if (skipped) progress.skipped++;
          report.images++;
          options.onProgress?.({ ...progress });
        }));
      } catch (err) {
        // Let the previous shard finish and be recorded, so a rerun reuses it.
        await inflight.catch(() => {});
        throw err;
      }
      // At most one shard finishing its upload while the next is encoded; records stay in plan order.
      await inflight;
      inflight = finished.then(async (record) => {
        await out.write(recordPath(shard.path), JSON.stringify(record, null, 2));
        records.push(record);
        report.shardsWritten.push(shard.path);
        report.skipped.push(...record.skipped);
        progress.shardsDone++;
        options.onProgress?.({ ...progress });
      });
      inflight.catch(() => {});
    }
    await inflight;
    const planShards = Object.fromEntries(
      SPLITS.map((s) => [s, plan.shards.filter((p) => p.split === s).map((p) => p.path)]),
    ) as Record<SplitName, string[]>;
    const part: PartFile = {
      formatVersion: FORMAT_VERSION,
      planId: plan.id,
      workerIndex,
      workerCount,
      base: manifestBase(plan, source.url, source.layout),
      planShards,
      shards: records,
      source: { files: report.sourceFiles, ignored: source.ignored },
    };
    await out.write(partPath(workerIndex, workerCount), JSON.stringify(part, null, 2));
    report.seconds = (performance.now() - started) / 1000;
    report.imagesPerSecond = report.images / Math.max(report.seconds, 1e-9);
    if (options.finalize ?? workerCount === 1) {
      progress.phase = 'finalize';
      options.onProgress?.({ ...progress });
      try {
        report.finalize = await finalizeDataset(out.url, {
          storage: options.storage,
          workerCount,
          allowShort: options.allowShort,
        });
        report.complete = report.finalize.complete;
      } catch (err) {
        // With many workers each may try: the last one to finish sees every part (list-after-write) and publishes.
        if (!(err instanceof MissingPartsError) || workerCount === 1) throw err;
        report.waitingFor = err.missingParts;
      }
    }
    return report;
  } finally {
    await source.close();
  }
}

function sourceFileCount(source: { byClass: Map<string, SourceItem[]>; ignored: IgnoredFile[] }): number {
  let n = source.ignored.length;
  for (const list of source.byClass.values()) n += list.length;
  return n;
}

export interface FinalizeOptions {
  storage?: StorageOptions;
  /** Expected number of workers; default: taken from the part files found. */
  workerCount?: number;
  allowShort?: boolean;
}

/**
 * prep finalize: when every worker's part file is present (and every shard it lists exists with its size),
 * writes prep-report.json and then manifest.json. Otherwise throws naming the missing parts.
 */
export async function finalizeDataset(url: string, options: FinalizeOptions = {}): Promise<FinalizeReport> {
  const out = openStorage(resolveLocation(url), options.storage);
  const partFiles: string[] = [];
  for await (const e of out.list(`${PARTS_DIR}/part-`)) partFiles.push(e.path);
  const counts = new Set(partFiles.map((p) => Number(/-of-(\d+)\.json$/.exec(p)?.[1])).filter((n) => n > 0));
  if (partFiles.length === 0)
    throw new UserError(`${out.url}: no part files in ${PARTS_DIR}/ (run prep split first)`, { code: 'missing-parts' });
  let workerCount = options.workerCount;
  if (workerCount === undefined) {
    if (counts.size > 1)
      throw new UserError(
        `${out.url}: part files from runs with different worker counts (${[...counts].join(', ')}); pass --worker-count`,
        { code: 'bad-dataset' },
      );
    workerCount = [...counts][0];
  }
  const parts: PartFile[] = [];
  const missing: number[] = [];
  for (let i = 0; i < workerCount; i++) {
    const part = await readJson<PartFile>(out, partPath(i, workerCount));
    if (part) parts.push(part);
    else missing.push(i);
  }
  if (missing.length) {
    throw new MissingPartsError(
      `${out.url}: not finalized: missing part${missing.length > 1 ? 's' : ''} from worker${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${workerCount} (${partPath(missing[0], workerCount)}…); rerun those workers, then finalize`,
      missing,
    );
  }
  const planIds = new Set(parts.map((p) => p.planId));
  if (planIds.size > 1)
    throw new UserError(
      `${out.url}: part files belong to different plans (${[...planIds].join(', ')}); rerun prep split with --force`,
      { code: 'bad-dataset' },
    );
  const base = parts[0].base;
  const byPath = new Map<string, ShardRecord>();
  for (const p of parts) for (const r of p.shards) byPath.set(r.shard.path, r);
  const splits = {} as Record<SplitName, SplitInfo>;
  const skipped: SkippedFile[] = [];
  const convertedBy: Record<string, number> = {};
  const absent: string[] = [];
  for (const split of SPLITS) {
    const shards: ShardInfo[] = [];
    for (const path of parts[0].planShards[split]) {
      const rec = byPath.get(path);
      if (!rec) {
        absent.push(path);
        continue;
      }
      const st = await out.stat(path);
      if (st?.size !== rec.shard.bytes) absent.push(path);
      shards.push(rec.shard);
      skipped.push(...rec.skipped);
      for (const [why, n] of Object.entries(rec.converted ?? {})) convertedBy[why] = (convertedBy[why] ?? 0) + n;
    }
    const classCounts: Record<string, number> = Object.fromEntries(base.classes.map((c) => [c, 0]));
    for (const s of shards)
      for (const [c, n] of Object.entries(s.classCounts)) classCounts[c] = (classCounts[c] ?? 0) + n;
    splits[split] = { count: shards.reduce((a, s) => a + s.count, 0), classCounts, shards };
  }
  if (absent.length) {
    throw new UserError(
      `${out.url}: not finalized: shard${absent.length > 1 ? 's' : ''} missing or changed since written: ${absent.slice(0, 5).join(', ')}${absent.length > 5 ? ', …' : ''}`,
      { code: 'missing-parts' },
    );
  }
  const short: Partial<Record<SplitName, number>> = {};
  for (const split of SPLITS) {
    const deficit = skipped.filter((s) => s.split === split && !s.replacedBy).length;
    if (deficit > 0) short[split] = deficit;
  }
  const summary = Object.fromEntries(
    SPLITS.map((s) => [
      s,
      {
        count: splits[s].count,
        classCounts: splits[s].classCounts,
        shards: splits[s].shards.length,
        bytes: splits[s].shards.reduce((a, x) => a + x.bytes, 0),
      },
    ]),
  ) as FinalizeReport['splits'];
  const ignored = parts[0].source?.ignored ?? [];
  let accounting: SourceAccounting | undefined;
  if (parts[0].source) {
    const used = SPLITS.reduce((a, s) => a + splits[s].count, 0);
    const converted = Object.values(convertedBy).reduce((a, n) => a + n, 0);
    const files = parts[0].source.files;
    accounting = {
      files,
      used,
      converted,
      skipped: skipped.length,
      ignored: ignored.length,
      spare: files - used - skipped.length - ignored.length,
    };
  }
  const result: FinalizeReport = {
    out: out.url,
    complete: false,
    missingParts: [],
    splits: summary,
    skipped,
    short,
    accounting,
    convertedBy,
    ignored,
  };
  const reportBody = {
    planId: base.planId,
    workers: workerCount,
    splits: summary,
    accounting,
    convertedBy,
    skipped,
    ignored,
    short,
  };
  if (Object.keys(short).length && !options.allowShort) {
    await out.write(REPORT_FILE, JSON.stringify(reportBody, null, 2));
    const list = Object.entries(short)
      .map(([s, n]) => `${s} ${n} short`)
      .join(', ');
    throw new UserError(
      `${out.url}: not finalized: broken images with no spare left to replace them (${list}); see ${REPORT_FILE}; rerun with --allow-short to publish anyway`,
      { code: 'bad-source' },
    );
  }
  const manifest: Manifest = {
    ...base,
    createdBy: { ...TOOL, workers: workerCount },
    createdAt: new Date().toISOString(),
    splits,
    skipped,
    ...(accounting ? { accounting } : {}),
  };
  await out.write(REPORT_FILE, JSON.stringify(reportBody, null, 2));
  // Last: readers trust only what a manifest lists.
  await out.write(MANIFEST_FILE, JSON.stringify(manifest, null, 2));
  result.complete = true;
  result.manifest = manifest;
  return result;
}
