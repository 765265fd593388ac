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
import { openSource, type IgnoredFile, type Source, type SourceItem } from './sources.js';
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

/** One shard to write, and where its per-image progress goes. */
interface ShardJob {
  out: Storage;
  plan: Plan;
  shard: PlannedShard;
  concurrency: number;
  signal?: AbortSignal;
  /** Called once per planned image; `skipped` when that image was broken (whether or not a spare replaced it). */
  onImage: (skipped: boolean) => void;
}

type AddImage = (e: Encoded) => Promise<void>;

/** Adds encoded images to the shard (and, with --folders, as loose files), counting re-encodes per reason. */
function shardAdder(job: ShardJob, writer: ShardWriter) {
  const { out, plan, shard, concurrency } = job;
  const converted: Record<string, number> = {};
  const folderWrites: Promise<void>[] = [];
  const add: AddImage = async (e) => {
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
  return { add, converted, folderWrites };
}

/**
 * Records a broken image and keeps the split's counts exact: takes this shard's next usable spare image of the
 * same class (`spares` is consumed). Returns the skip entries: the broken image first, then any broken spares.
 */
async function replaceBroken(e: Encoded, job: ShardJob, spares: SourceItem[], add: AddImage): Promise<SkippedFile[]> {
  const entry: SkippedFile = {
    source: e.item.name,
    className: e.item.className,
    split: job.shard.split,
    reason: e.reason!,
  };
  const skipped = [entry];
  while (spares.length) {
    const spare = await encodeItem(spares.shift()!, job.plan);
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
  return skipped;
}

async function writeShard(job: ShardJob): Promise<{ finished: Promise<ShardRecord> }> {
  const { out, plan, shard } = job;
  const writer = new ShardWriter(out, shard.path);
  const skipped: SkippedFile[] = [];
  const reserve = new Map([...shard.reserve].map(([c, l]) => [c, l.slice()]));
  const { add, converted, folderWrites } = shardAdder(job, writer);
  try {
    for await (const e of orderedMap(shard.items, job.concurrency, (item) => encodeItem(item, plan))) {
      if (job.signal?.aborted) throw new AbortedError();
      if (e.bytes) await add(e);
      else skipped.push(...(await replaceBroken(e, job, reserve.get(e.item.className) ?? [], add)));
      job.onImage(!e.bytes);
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

/** State one prep split run shares between its steps: what it writes where, what it reports, how far it got. */
interface PrepRun {
  out: Storage;
  plan: Plan;
  options: PrepareOptions;
  /** This worker's shards, in plan order. */
  mine: PlannedShard[];
  report: PrepReport;
  progress: PrepProgress;
}

function emitProgress(run: PrepRun): void {
  run.options.onProgress?.({ ...run.progress });
}

function checkWorkers(options: PrepareOptions): { workerIndex: number; workerCount: number } {
  const workerCount = options.workerCount ?? 1;
  const workerIndex = options.workerIndex ?? 0;
  if (!Number.isInteger(workerCount) || workerCount < 1)
    throw new UserError(`worker count must be a positive integer (got ${workerCount})`);
  if (!Number.isInteger(workerIndex) || workerIndex < 0 || workerIndex >= workerCount) {
    throw new UserError(
      `worker index must be in 0..${workerCount - 1} (got ${workerIndex}); set --worker-count (or CATDOG_WORKER_COUNT) to the number of workers`,
    );
  }
  return { workerIndex, workerCount };
}

/** Plans the dataset and picks this worker's shards; nothing is written yet. */
function planRun(
  out: Storage,
  source: Source,
  options: PrepareOptions,
  workers: { workerIndex: number; workerCount: number },
): PrepRun {
  const plan = buildPlan(source, options);
  const mine = plan.shards.filter((s) => s.globalIndex % workers.workerCount === workers.workerIndex);
  const progress: PrepProgress = {
    phase: 'plan',
    done: 0,
    total: mine.reduce((a, s) => a + s.items.length, 0),
    skipped: 0,
    shardsDone: 0,
    shardsTotal: mine.length,
  };
  const report: PrepReport = {
    out: out.url,
    planId: plan.id,
    ...workers,
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
  return { out, plan, options, mine, report, progress };
}

/** Dataset files at the output that do not belong to this run: another dataset's, or parts of another worker count. */
async function findLeftovers(run: PrepRun, existing: Manifest | undefined) {
  const { out, plan } = run;
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
      else if (
        /part-\d+-of-\d+\.json$/.test(f) &&
        !f.endsWith(`-of-${String(run.report.workerCount).padStart(5, '0')}.json`)
      )
        stale.push(f);
    } else if (SPLITS.some((s) => f.startsWith(`${s}/`)) && f.endsWith('.tar') && !planPaths.has(f)) {
      foreign.push(f);
    }
  }
  return { foreign, stale, planPaths };
}

/** Checks the output location before anything is written; with force, removes what belongs to another dataset. */
async function preflight(run: PrepRun): Promise<Manifest | undefined> {
  const { out, plan, options } = run;
  const existing = await readJson<Manifest>(out, MANIFEST_FILE);
  if (existing && existing.planId === plan.id && !options.force) return existing;
  const { foreign, stale, planPaths } = await findLeftovers(run, existing);
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
  const owned = new Set(run.mine.map((s) => s.path));
  for (const f of [...foreign, ...stale]) {
    if (f === MANIFEST_FILE) continue;
    // A record for a shard of this plan is rewritten by the worker owning that shard; leave other workers' to them.
    const shard = shardOfRecord(f);
    if (shard && planPaths.has(shard) && !owned.has(shard)) continue;
    await out.delete(f);
  }
  return undefined;
}

/** Temp files of killed earlier runs (never a live writer's: see removeStaleWrites). */
async function removeStaleTemps(run: PrepRun): Promise<void> {
  // Best effort: a store that refuses the listing (e.g. no s3:ListBucketMultipartUploads) does not stop the run.
  try {
    run.report.staleRemoved = (await removeStaleWrites(run.out)).removed;
  } catch (err) {
    run.report.staleCleanupFailed = err instanceof Error ? err.message : String(err);
  }
}

/** Whether the published manifest lists each of this worker's shards with the size and hash it has now. */
async function publishedIntact(run: PrepRun, existing: Manifest): Promise<boolean> {
  const listed = new Map(SPLITS.flatMap((s) => existing.splits[s].shards.map((sh) => [sh.path, sh] as const)));
  for (const shard of run.mine) {
    const info = listed.get(shard.path);
    const st = info && (await run.out.stat(shard.path));
    if (!info || st?.size !== info.bytes || (await hashObject(run.out, shard.path)).sha256 !== info.sha256)
      return false;
  }
  return true;
}

/** The record of a shard a previous run finished, if it matches this plan and the bytes still hash right. */
async function reusableRecord(run: PrepRun, shard: PlannedShard): Promise<ShardRecord | undefined> {
  const rec = await readJson<ShardRecord>(run.out, recordPath(shard.path));
  if (!rec || rec.planId !== run.plan.id) return undefined;
  const st = await run.out.stat(shard.path);
  if (st?.size !== rec.shard.bytes) return undefined;
  return (await hashObject(run.out, shard.path)).sha256 === rec.shard.sha256 ? rec : undefined;
}

/** Counts a finished shard (written or reused) in the report and the progress. */
function shardDone(run: PrepRun, paths: string[], path: string, record: ShardRecord, records: ShardRecord[]): void {
  records.push(record);
  paths.push(path);
  run.report.skipped.push(...record.skipped);
  run.progress.shardsDone++;
}

/** Starts writing a shard; if encoding fails, lets the previous shard's upload finish first (so a rerun reuses it). */
async function startShard(run: PrepRun, shard: PlannedShard, inflight: Promise<void>) {
  const { out, plan, options, progress, report } = run;
  try {
    return await writeShard({
      out,
      plan,
      shard,
      concurrency: options.concurrency ?? 8,
      signal: options.signal,
      onImage: (skipped) => {
        progress.done++;
        if (skipped) progress.skipped++;
        report.images++;
        emitProgress(run);
      },
    });
  } catch (err) {
    await inflight.catch(() => {});
    throw err;
  }
}

/** Writes (or reuses) this worker's shards in plan order, each followed by its record; returns the records. */
async function writeShards(run: PrepRun): Promise<ShardRecord[]> {
  const { out, options, progress, report } = run;
  const records: ShardRecord[] = [];
  let inflight: Promise<void> = Promise.resolve();
  for (const shard of run.mine) {
    if (options.signal?.aborted) throw new AbortedError();
    const reused = await reusableRecord(run, shard);
    if (reused) {
      await inflight;
      shardDone(run, report.shardsReused, shard.path, reused, records);
      progress.done += shard.items.length;
      progress.phase = 'reuse';
      emitProgress(run);
      continue;
    }
    progress.phase = 'encode';
    const { finished } = await startShard(run, shard, inflight);
    // At most one shard finishing its upload while the next is encoded; records stay in plan order.
    await inflight;
    inflight = finished.then(async (record) => {
      await out.write(recordPath(shard.path), JSON.stringify(record, null, 2));
      shardDone(run, report.shardsWritten, shard.path, record, records);
      emitProgress(run);
    });
    inflight.catch(() => {});
  }
  await inflight;
  return records;
}

/** Writes this worker's part file: its shard records plus all finalize needs to write the manifest. */
async function writePart(run: PrepRun, source: Source, records: ShardRecord[]): Promise<void> {
  const { plan, report } = run;
  const planShards = Object.fromEntries(
    SPLITS.map((s) => [s, plan.shards.filter((p) => p.split === s).map((p) => p.path)]),
  ) as Record<SplitName, string[]>;
  const part: PartFile = {
    formatVersion: FORMAT_VERSION,
    planId: plan.id,
    workerIndex: report.workerIndex,
    workerCount: report.workerCount,
    base: manifestBase(plan, source.url, source.layout),
    planShards,
    shards: records,
    source: { files: report.sourceFiles, ignored: source.ignored },
  };
  await run.out.write(partPath(report.workerIndex, report.workerCount), JSON.stringify(part, null, 2));
}

/** Finalizes from a worker: publishes when every part is there; with several workers, missing parts just wait. */
async function finalizeFromWorker(run: PrepRun): Promise<void> {
  const { options, report } = run;
  run.progress.phase = 'finalize';
  emitProgress(run);
  try {
    report.finalize = await finalizeDataset(run.out.url, {
      storage: options.storage,
      workerCount: report.workerCount,
      allowShort: options.allowShort,
    });
    report.complete = report.finalize.complete;
  } catch (err) {
    // With many workers each may try: the last one to finish sees every part (list-after-write) and publishes.
    if (!(err instanceof MissingPartsError) || report.workerCount === 1) throw err;
    report.waitingFor = err.missingParts;
  }
}

/** prep split: plan, write this worker's shards (reusing verified ones), its part file, and (by default with one worker) the manifest. */
export async function prepareDataset(options: PrepareOptions): Promise<PrepReport> {
  const started = performance.now();
  const workers = checkWorkers(options);
  const sourceUrl = resolveLocation(options.source);
  const outUrl = resolveLocation(options.out);
  const out = openStorage(outUrl, options.storage);
  const source = await openSource(sourceUrl, options.storage);
  try {
    const run = planRun(out, source, options, workers);
    const { report } = run;
    const existing = await preflight(run);
    await removeStaleTemps(run);
    if (existing) {
      // Same dataset already published: check this worker's shards; a damaged one unpublishes the manifest
      // and is rewritten below (its record no longer matches), everything else is reused.
      if (await publishedIntact(run, existing)) {
        report.complete = true;
        report.alreadyComplete = true;
        report.seconds = (performance.now() - started) / 1000;
        return report;
      }
      await out.delete(MANIFEST_FILE);
    }
    emitProgress(run);
    const records = await writeShards(run);
    await writePart(run, source, records);
    report.seconds = (performance.now() - started) / 1000;
    report.imagesPerSecond = report.images / Math.max(report.seconds, 1e-9);
    if (options.finalize ?? workers.workerCount === 1) await finalizeFromWorker(run);
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

/** The worker count to finalize for: as requested, else the one all part files agree on. */
async function partsWorkerCount(out: Storage, requested: number | undefined): Promise<number> {
  const partFiles: string[] = [];
  for await (const e of out.list(`${PARTS_DIR}/part-`)) partFiles.push(e.path);
  const counts = new Set(partFiles.map((p) => Number(/-of-(\d+)\.json$/.exec(p)?.[1])).filter((n) => n > 0));
  if (partFiles.length === 0)
    throw new UserError(`${out.url}: no part files in ${PARTS_DIR}/ (run prep split first)`, { code: 'missing-parts' });
  if (requested !== undefined) return requested;
  if (counts.size > 1)
    throw new UserError(
      `${out.url}: part files from runs with different worker counts (${[...counts].join(', ')}); pass --worker-count`,
      { code: 'bad-dataset' },
    );
  return [...counts][0];
}

/** Every worker's part file, all of the same plan; throws naming the missing ones. */
async function readParts(out: Storage, requested: number | undefined) {
  const workerCount = await partsWorkerCount(out, requested);
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
  return { parts, workerCount };
}

function addCounts(into: Record<string, number>, counts: Record<string, number>): void {
  for (const [key, n] of Object.entries(counts)) into[key] = (into[key] ?? 0) + n;
}

interface CollectedShards {
  splits: Record<SplitName, SplitInfo>;
  skipped: SkippedFile[];
  convertedBy: Record<string, number>;
}

/** The plan's shards per split from the workers' records; throws if one is unrecorded or its size changed. */
async function collectShards(out: Storage, parts: PartFile[]): Promise<CollectedShards> {
  const byPath = new Map<string, ShardRecord>();
  for (const p of parts) for (const r of p.shards) byPath.set(r.shard.path, r);
  const collected: CollectedShards = { splits: {} as Record<SplitName, SplitInfo>, skipped: [], convertedBy: {} };
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
      collected.skipped.push(...rec.skipped);
      addCounts(collected.convertedBy, rec.converted ?? {});
    }
    const classCounts: Record<string, number> = Object.fromEntries(parts[0].base.classes.map((c) => [c, 0]));
    for (const s of shards) addCounts(classCounts, s.classCounts);
    collected.splits[split] = { count: shards.reduce((a, s) => a + s.count, 0), classCounts, shards };
  }
  if (absent.length) {
    throw new UserError(
      `${out.url}: not finalized: shard${absent.length > 1 ? 's' : ''} missing or changed since written: ${absent.slice(0, 5).join(', ')}${absent.length > 5 ? ', …' : ''}`,
      { code: 'missing-parts' },
    );
  }
  return collected;
}

/** Per split, how many samples short of the plan: broken images no spare replaced. */
function shortfall(skipped: SkippedFile[]): Partial<Record<SplitName, number>> {
  const short: Partial<Record<SplitName, number>> = {};
  for (const split of SPLITS) {
    const deficit = skipped.filter((s) => s.split === split && !s.replacedBy).length;
    if (deficit > 0) short[split] = deficit;
  }
  return short;
}

function summarizeSplits(splits: Record<SplitName, SplitInfo>): FinalizeReport['splits'] {
  return Object.fromEntries(
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
}

/** What became of every source file (parts of older runs carry no source listing: then undefined). */
function accountSource(source: PartFile['source'], collected: CollectedShards): SourceAccounting | undefined {
  if (!source) return undefined;
  const { splits, skipped, convertedBy } = collected;
  const used = SPLITS.reduce((a, s) => a + splits[s].count, 0);
  const converted = Object.values(convertedBy).reduce((a, n) => a + n, 0);
  const files = source.files;
  return {
    files,
    used,
    converted,
    skipped: skipped.length,
    ignored: source.ignored.length,
    spare: files - used - skipped.length - source.ignored.length,
  };
}

/**
 * prep finalize: when every worker's part file is present (and every shard it lists exists with its size),
 * writes prep-report.json and then manifest.json. Otherwise throws naming the missing parts.
 */
export async function finalizeDataset(url: string, options: FinalizeOptions = {}): Promise<FinalizeReport> {
  const out = openStorage(resolveLocation(url), options.storage);
  const { parts, workerCount } = await readParts(out, options.workerCount);
  const base = parts[0].base;
  const collected = await collectShards(out, parts);
  const { splits, skipped, convertedBy } = collected;
  const short = shortfall(skipped);
  const summary = summarizeSplits(splits);
  const ignored = parts[0].source?.ignored ?? [];
  const accounting = accountSource(parts[0].source, collected);
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
  return {
    out: out.url,
    complete: true,
    missingParts: [],
    splits: summary,
    skipped,
    short,
    accounting,
    convertedBy,
    ignored,
    manifest,
  };
}
