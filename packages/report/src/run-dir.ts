// Reading run directories for reports. The format and its types belong to @catdog/training (run-dir.ts); the
// report reads leniently (runs of older versions, Keras histories of other tools): every file is optional except
// that a run has config.json or history.json; files that exist must be valid JSON, and errors name the file.
import { readFile, readdir, stat, mkdir, writeFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { UserError } from '@catdog/errors';
import type {
  History,
  Misclassified,
  RunConfig as TrainerRunConfig,
  RunMetrics as TrainerRunMetrics,
} from '@catdog/training';

export type { History };

/**
 * A history as the report accepts it: the trainer's history.json (`History`, owned by @catdog/training's run-dir
 * module) or another tool's Keras `History.history` object (`accuracy`/`val_accuracy` aliases, no `epoch`).
 */
export type AnyHistory = History | Record<string, unknown>;

/** The series the report uses, with Keras' aliases (`accuracy`, `val_accuracy`) folded in and missing values as null. */
export interface NormalizedHistory {
  epoch: number[];
  loss: (number | null)[] | null;
  acc: (number | null)[] | null;
  val_loss: (number | null)[] | null;
  val_acc: (number | null)[] | null;
  seconds: (number | null)[] | null;
  images_per_s: (number | null)[] | null;
  /** The strategy's phase of each epoch ('head', 'finetune', …) when the trainer records it. */
  phase: string[] | null;
}

/** A misclassified test image as metrics.json lists it (the label may be a class name in runs of other tools). */
export type MisclassifiedImage = Omit<Misclassified, 'label'> & { label: number | string };

/**
 * metrics.json and config.json as the report reads them: the trainer's schemas (RunMetrics, RunConfig), every
 * field optional because runs of older versions and other tools lack some.
 */
export type RunMetrics = Partial<Omit<TrainerRunMetrics, 'test'>> & {
  test?: Partial<TrainerRunMetrics['test']> & { misclassified?: MisclassifiedImage[] };
};
export type RunConfig = Partial<TrainerRunConfig> & Record<string, unknown>;

/** Everything the report knows about one run. */
export interface RunData {
  dir: string;
  /** Display name: the run directory's path relative to the runs directory (or its base name). */
  name: string;
  config: RunConfig | null;
  history: NormalizedHistory | null;
  metrics: RunMetrics | null;
  summary: string | null;
}

/** Reads and parses a JSON file; a missing file gives null when `optional`, invalid JSON always names the file. */
export async function readJsonFile<T = unknown>(path: string, optional = false): Promise<T | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (optional && code === 'ENOENT') return null;
    if (code === 'ENOENT') throw new UserError(`${path}: file not found`);
    throw new UserError(`${path}: cannot read (${code ?? (err as Error).message})`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
  }
}

async function readTextFile(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new UserError(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function series(h: Record<string, unknown>, keys: string[], where: string): (number | null)[] | null {
  for (const key of keys) {
    const v = h[key];
    if (v === undefined || v === null) continue;
    if (!Array.isArray(v)) throw new UserError(`${where}: "${key}" must be an array of numbers, got ${typeof v}`);
    return v.map((x, i) => {
      if (x === null) return null;
      if (typeof x !== 'number') throw new UserError(`${where}: "${key}"[${i}] is ${JSON.stringify(x)}, not a number`);
      return Number.isFinite(x) ? x : null;
    });
  }
  return null;
}

/**
 * Checks a history object and folds Keras' key aliases together. `where` names the source in errors.
 * `epoch` defaults to 1…n; every series must have one value per epoch (null for a missing value).
 */
export function normalizeHistory(history: unknown, where = 'history'): NormalizedHistory {
  if (!isPlainObject(history))
    throw new UserError(
      `${where}: expected an object of per-epoch arrays, got ${Array.isArray(history) ? 'an array' : typeof history}`,
    );
  const out = {
    loss: series(history, ['loss'], where),
    acc: series(history, ['acc', 'accuracy'], where),
    val_loss: series(history, ['val_loss'], where),
    val_acc: series(history, ['val_acc', 'val_accuracy'], where),
    seconds: series(history, ['seconds'], where),
    images_per_s: series(history, ['images_per_s'], where),
  };
  if (!out.loss && !out.acc && !out.val_loss && !out.val_acc) {
    throw new UserError(
      `${where}: no "loss", "acc", "val_loss" or "val_acc" series (keys found: ${Object.keys(history).join(', ') || 'none'})`,
    );
  }
  const explicitEpoch = series(history, ['epoch'], where);
  const n = explicitEpoch?.length ?? Math.max(...Object.values(out).map((s) => s?.length ?? 0));
  const epoch = explicitEpoch
    ? explicitEpoch.map((e, i) => {
        if (e === null || !Number.isInteger(e))
          throw new UserError(`${where}: "epoch"[${i}] is ${JSON.stringify(e)}, not an integer`);
        return e;
      })
    : Array.from({ length: n }, (_, i) => i + 1);
  for (const [key, s] of Object.entries(out)) {
    if (s && s.length !== epoch.length) {
      throw new UserError(`${where}: "${key}" has ${s.length} values but there are ${epoch.length} epochs`);
    }
  }
  let phase: string[] | null = null;
  if (
    Array.isArray(history.phase) &&
    history.phase.length === epoch.length &&
    history.phase.every((p) => typeof p === 'string')
  ) {
    phase = history.phase as string[];
  }
  return { epoch, ...out, phase };
}

/** Reads `history.json` (optional) of a run. */
export async function readHistory(path: string, optional = false): Promise<NormalizedHistory | null> {
  const raw = await readJsonFile(path, optional);
  return raw === null ? null : normalizeHistory(raw, path);
}

/** True when `dir` looks like a run directory (has config.json or history.json). */
export async function isRunDir(dir: string): Promise<boolean> {
  for (const f of ['config.json', 'history.json']) {
    try {
      if ((await stat(join(dir, f))).isFile()) return true;
    } catch {
      /* not there */
    }
  }
  return false;
}

/** Throws a UserError unless `dir` exists and is a directory; `what` names it in the message. */
async function requireDirectory(dir: string, what: string): Promise<void> {
  let s;
  try {
    s = await stat(dir);
  } catch {
    throw new UserError(`${what} ${dir} does not exist`);
  }
  if (!s.isDirectory()) throw new UserError(`${dir} is not a directory`);
}

/** Loads a run directory; throws a UserError when it is not one or when a file in it is garbage. */
export async function loadRun(dir: string, name = basename(dir)): Promise<RunData> {
  await requireDirectory(dir, 'run directory');
  if (!(await isRunDir(dir)))
    throw new UserError(`${dir} is not a run directory (it has neither config.json nor history.json)`);
  const configPath = join(dir, 'config.json');
  const config = await readJsonFile<unknown>(configPath, true);
  if (config !== null && !isPlainObject(config)) throw new UserError(`${configPath}: expected a JSON object`);
  const metricsPath = join(dir, 'metrics.json');
  const metrics = await readJsonFile<unknown>(metricsPath, true);
  if (metrics !== null && !isPlainObject(metrics)) throw new UserError(`${metricsPath}: expected a JSON object`);
  if (metrics && metrics.test !== undefined && !isPlainObject(metrics.test))
    throw new UserError(`${metricsPath}: "test" must be an object`);
  return {
    dir,
    name,
    config: config as RunConfig | null,
    history: await readHistory(join(dir, 'history.json'), true),
    metrics: metrics as RunMetrics | null,
    summary: await readTextFile(join(dir, 'summary.txt')),
  };
}

/** Folders inside a run that never hold runs themselves. */
const RUN_INTERNALS = new Set(['model', 'curves', 'misclassified', 'checkpoints', 'evaluations', 'node_modules']);

async function subdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !RUN_INTERNALS.has(e.name))
    .map((e) => e.name)
    .sort();
}

/**
 * Every run directory under `runsDir`: `runsDir` itself if it is a run, its children that are runs, and their
 * children one level deeper (runs grouped in folders). A run's own folders are not searched.
 */
export async function findRunDirs(runsDir: string): Promise<string[]> {
  await requireDirectory(runsDir, 'runs directory');
  if (await isRunDir(runsDir)) return [runsDir];
  const found: string[] = [];
  for (const child of await subdirs(runsDir)) {
    const childDir = join(runsDir, child);
    if (await isRunDir(childDir)) {
      found.push(childDir);
      continue;
    }
    for (const grandchild of await subdirs(childDir)) {
      const dir = join(childDir, grandchild);
      if (await isRunDir(dir)) found.push(dir);
    }
  }
  return found;
}

/** Writes a file atomically (temporary file + rename) so a failed run never leaves half a report. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new UserError(`${path}: cannot write (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}
