// Kernel plans chosen by measurement on the machine at hand, the way FFTW plans: the first time a
// convolution of a given per-image shape runs, each variant that applies (Winograd tile size and
// block of tiles, direct SIMD loop, XNNPACK) is timed on a small proxy of the layer (fewer images
// or rows, same channels, filter and strides), and the fastest is kept for the process and in a
// plan cache file keyed by CPU model and thread count, so later processes on the same machine
// reuse it without timing. Block sizes and algorithm crossovers tuned on one microarchitecture
// (an AMD EPYC, Zen 4: 1 MB of L2 per core, four 128-bit FP pipes) lost 40–65% on another (a
// Sapphire Rapids Xeon: 2 MB of L2, three), hence measuring instead of a fixed cost model.
//
// Environment:
//   CATDOG_AUTOTUNE=0          no timing, no cache: every layer takes the default plan (the cost
//                              model's choice)
//   CATDOG_AUTOTUNE=refresh    time every layer again and replace its cached plan (e.g. plans tuned
//                              while the machine was busy)
//   CATDOG_KERNEL_PLAN=…       force plans per kernel family, e.g.
//                              "conv2d=winograd4:block=256,backprop-filter=direct,backprop-input=xnnpack"
//                              (a forced plan that does not apply to a layer leaves that layer's
//                              default; families not named are tuned as usual)
//   CATDOG_CACHE_DIR=dir       plan cache directory (default $XDG_CACHE_HOME/catdog, else ~/.cache/catdog)
//
// Noise (a machine shared with other work): each candidate's time is the minimum of several short
// interleaved runs; the default plan is kept unless beaten by 3%.
//
// Reproducibility (issue 12: a resumed run must retrace the uninterrupted one): a layer's plan is
// fixed for the process from its first call (tuning waits for the SIMD worker threads rather than
// running the default plan meanwhile), and a cached plan is never replaced except under
// CATDOG_AUTOTUNE=refresh (two processes that tune the same layer at once both take the plan
// written first), so every process on a machine, a resumed run included, runs the same plans.
import { cpus, homedir, loadavg } from 'node:os';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '@catdog/errors';
import { wasmFusedMultiplyAdd } from './simd-kernels.js';

/** Kernel families with plans: the forward convolution (Conv2D and FusedConv2D) and its two gradients. */
export const PLAN_FAMILIES = ['conv2d', 'backprop-input', 'backprop-filter'] as const;
export type PlanFamily = (typeof PLAN_FAMILIES)[number];

/**
 * One way to run a convolution:
 *  - `xnnpack`: the wasm backend's own kernel (XNNPACK), or for the gradients the rewrite onto it;
 *  - `direct`: the SIMD loop per filter tap and output row (2×16 block of the result in registers),
 *    threads taking images;
 *  - `direct-taps` (backprop-filter): the same loop, threads taking filter taps (no partial sums);
 *  - `winograd3|4|6:block=n` (3×3 stride 1): F(m×m, 3×3) with blocks of n tiles per thread job (n × (Ci + Co)
 *    floats per transformed position should stay in L2 while its product runs); the input gradient as the
 *    correlation of dy with the flipped filter, the filter gradient as the transposed Winograd identity.
 */
export type KernelPlan =
  | { kind: 'xnnpack' }
  | { kind: 'direct' }
  | { kind: 'direct-taps' }
  | { kind: 'winograd'; m: 3 | 4 | 6; block: number };

export function formatPlan(plan: KernelPlan): string {
  return plan.kind === 'winograd' ? `winograd${plan.m}:block=${plan.block}` : plan.kind;
}

/** A plan as written in CATDOG_KERNEL_PLAN or the cache (`block` optional for a forced Winograd plan: 0 = default). */
export function parsePlan(text: string): KernelPlan | null {
  const t = text.trim();
  if (t === 'xnnpack' || t === 'direct' || t === 'direct-taps') return { kind: t };
  const w = /^winograd([346])(?::block=(\d+))?$/.exec(t);
  if (!w) return null;
  const block = w[2] === undefined ? 0 : Number(w[2]);
  if (w[2] !== undefined && !(block >= 1 && block <= 4096)) return null;
  return { kind: 'winograd', m: Number(w[1]) as 3 | 4 | 6, block };
}

/** CATDOG_KERNEL_PLAN parsed; throws a UserError naming the variable and the bad entry. */
export function forcedPlans(env: NodeJS.ProcessEnv = process.env): Partial<Record<PlanFamily, KernelPlan>> {
  const value = env.CATDOG_KERNEL_PLAN?.trim();
  const out: Partial<Record<PlanFamily, KernelPlan>> = {};
  if (!value) return out;
  for (const entry of value.split(',')) {
    const eq = entry.indexOf('=');
    const family = entry.slice(0, eq).trim() as PlanFamily;
    const plan = eq > 0 ? parsePlan(entry.slice(eq + 1)) : null;
    if (
      eq <= 0 ||
      !PLAN_FAMILIES.includes(family) ||
      !plan ||
      (plan.kind === 'direct-taps' && family !== 'backprop-filter')
    ) {
      throw new UserError(
        `CATDOG_KERNEL_PLAN: bad entry "${entry.trim()}": expected <family>=<plan>, family one of ${PLAN_FAMILIES.join(', ')}, ` +
          'plan one of xnnpack, direct, direct-taps (backprop-filter only), winograd3|4|6[:block=<tiles>]',
        { code: 'bad-config' },
      );
    }
    out[family] = plan;
  }
  return out;
}

/** False under CATDOG_AUTOTUNE=0 (default plans, nothing timed or cached). */
export function autotuneEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.CATDOG_AUTOTUNE;
  return !(v === '0' || v === 'false' || v === 'off');
}

/** CATDOG_AUTOTUNE=refresh: cached plans are ignored, every layer is timed again and its cache entry replaced. */
export function autotuneRefresh(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.CATDOG_AUTOTUNE === 'refresh';
}

let model: string | null = null;

/** The CPU model as the OS names it (os.cpus() reads /proc/cpuinfo's "model name" on Linux). */
export function cpuModel(): string {
  model ??= readCpuModel();
  return model;
}

function readCpuModel(): string {
  const name = cpus()[0]?.model?.trim();
  if (name) return name.replace(/\s+/g, ' ');
  try {
    const line = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (line) return line[1]!.trim().replace(/\s+/g, ' ');
  } catch {
    // no /proc: fall through
  }
  return 'unknown CPU';
}

/** Where plans are cached: CATDOG_CACHE_DIR, else $XDG_CACHE_HOME/catdog, else ~/.cache/catdog. */
export function planCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CATDOG_CACHE_DIR) return env.CATDOG_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'catdog');
}

export const PLAN_CACHE_FILE = 'kernel-plans.json';
/**
 * Plans timed by an older build are dropped when a variant's speed changed enough to change choices: 2, the SIMD
 * kernels are optimized code from their first call (before, the first layers tuned timed them in V8's baseline
 * code, 4–7× slower) and the pointwise forward splits its pixels evenly between threads.
 */
const CACHE_VERSION = 2;

interface CachedPlan {
  plan: string;
  /** Best time of each candidate on the proxy, µs (what the choice was based on); −1 if it failed. */
  us: Record<string, number>;
  tuned: string;
  /** The machine's load per core when it was tuned (1-minute load average / cores). */
  load?: number;
}
interface CacheFile {
  version: number;
  /** `<cpu model> | <threads> threads` -> `<family> <shape>` -> plan. */
  machines: Record<string, Record<string, CachedPlan>>;
}

function readCache(path: string): CacheFile {
  try {
    const data = JSON.parse(readFileSync(path, 'utf8')) as CacheFile;
    if (data && data.version === CACHE_VERSION && typeof data.machines === 'object' && data.machines) return data;
  } catch {
    // missing or unreadable: start afresh (a cache is never worth failing a run for)
  }
  return { version: CACHE_VERSION, machines: {} };
}

/**
 * Adds one plan to the cache file (read, merge, write to a temporary file, rename: never half-written) and returns
 * the entry the file holds for the layer: `entry`, or the one another process wrote first (kept unless `replace`).
 */
function writeCachedPlan(dir: string, machine: string, key: string, entry: CachedPlan, replace: boolean): CachedPlan {
  try {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, PLAN_CACHE_FILE);
    return withLock(path, () => {
      const data = readCache(path);
      const existing = data.machines[machine]?.[key];
      if (existing && !replace) return existing;
      data.machines[machine] = { ...data.machines[machine], [key]: entry };
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, `${JSON.stringify(data, null, 1)}\n`);
      renameSync(tmp, path);
      return entry;
    });
  } catch {
    // read-only home, full disk: the plan still holds for this process
  }
  return entry;
}

/**
 * Runs `fn` holding `<path>.lock` (created exclusively), so that two processes tuning at once cannot both find no
 * entry and both write; a lock older than 10 s is a crashed writer's and is taken over; after 2 s without it, `fn`
 * runs anyway (a cache is never worth stalling a run for).
 */
function withLock<T>(path: string, fn: () => T): T {
  const lock = `${path}.lock`;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 2000;
  let held = false;
  while (!held) {
    try {
      closeSync(openSync(lock, 'wx'));
      held = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || Date.now() > deadline) break;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 10_000) unlinkSync(lock);
      } catch {
        // released meanwhile
      }
      Atomics.wait(pause, 0, 0, 10);
    }
  }
  try {
    return fn();
  } finally {
    if (held) {
      try {
        unlinkSync(lock);
      } catch {
        // already gone
      }
    }
  }
}

/** Where a layer's plan came from. */
export type PlanSource = 'tuned' | 'cache' | 'forced' | 'default';

export interface PlanRecord {
  family: PlanFamily;
  /** Per-image shape: `HxWxCi -> Co, khxkw, stride, dilation, padding`. */
  shape: string;
  plan: string;
  source: PlanSource;
  /** Best proxy time of each candidate, µs, and `total`: the time tuning took (tuned or from the cache). */
  us?: Record<string, number>;
}

const decided = new Map<string, PlanRecord>();
/** Layers that got their default plan because the worker threads never came up: they keep it for the process. */
const untuned = new Set<string>();
let cacheLoaded: { dir: string; machine: string; entries: Record<string, CachedPlan> } | null = null;

/** The plan cache's key for this machine: CPU model, thread count, and whether the loops fuse multiply-adds. */
export function machineKey(threads: number): string {
  return `${cpuModel()} | ${threads} thread${threads === 1 ? '' : 's'}${wasmFusedMultiplyAdd() ? ' | fma' : ''}`;
}

function cachedEntries(machine: string): Record<string, CachedPlan> {
  const dir = planCacheDir();
  if (!cacheLoaded || cacheLoaded.dir !== dir || cacheLoaded.machine !== machine) {
    cacheLoaded = { dir, machine, entries: readCache(join(dir, PLAN_CACHE_FILE)).machines[machine] ?? {} };
  }
  return cacheLoaded.entries;
}

/** Plans decided so far in this process, in the order the layers first ran. */
export function kernelPlans(): PlanRecord[] {
  return [...decided.values()];
}

/** Forgets this process's plans (the cache file stays): the next call of each layer decides again. */
export function resetKernelPlans(): void {
  decided.clear();
  untuned.clear();
  cacheLoaded = null;
}

/** A candidate: its plan and a function that runs it once on the proxy problem (and frees what it made). */
export interface Candidate {
  plan: KernelPlan;
  run: () => void;
}

/** Interleaved runs per candidate at most: on a shared 2-vCPU VM, 4 let bursts of load decide between variants 25% apart. */
const REPS = 8;
/** After two runs (the first may pay for a cold cache or a lazily built operator), a candidate this many times slower than the best is not run again. */
const HOPELESS = 2;
/** The machine's load per core now (1-minute load average over the cores; 0 where the OS has none). */
export function loadPerCore(): number {
  return Math.round((loadavg()[0]! / Math.max(1, cpus().length)) * 100) / 100;
}

/** A layer whose first stage took longer than this (ms; a loaded machine) is not refined further. */
const STAGE_BUDGET_MS = 300;
/** A candidate must beat the default by this fraction to replace it (noise on a shared machine). */
export const MARGIN = 0.03;

/**
 * Times candidates (µs, the minimum of up to REPS interleaved runs, so a burst of load from other
 * work hits all of them alike; after two runs, clear losers are dropped and no further round
 * starts once `budgetMs` is spent). Returns the times by formatted plan.
 */
export function timeCandidates(candidates: readonly Candidate[], budgetMs = STAGE_BUDGET_MS / 2): Map<string, number> {
  const best = new Map<string, number>();
  const t0 = performance.now();
  for (let rep = 0; rep < REPS; rep++) {
    // Two runs each at least (the first may be cold); more while the budget lasts.
    if (rep >= 2 && performance.now() - t0 > budgetMs) break;
    const fastest = Math.min(...best.values());
    for (const c of candidates) {
      const name = formatPlan(c.plan);
      const prior = best.get(name);
      if (rep > 1 && (prior === undefined || prior > HOPELESS * fastest)) continue;
      const t0 = performance.now();
      try {
        c.run();
      } catch {
        // a variant that fails on this layer (e.g. out of memory for its scratch) is never chosen
        best.set(name, Infinity);
        continue;
      }
      const us = (performance.now() - t0) * 1000;
      best.set(name, Math.min(prior ?? Infinity, us));
    }
  }
  return best;
}

/** What a kernel knows about one layer when it asks for a plan. */
export interface PlanRequest {
  family: PlanFamily;
  shape: string;
  threads: number;
  /** The plans that apply to this layer, the default among them. */
  applicable: (plan: KernelPlan) => boolean;
  defaultPlan: KernelPlan;
  /**
   * Waits (bounded) for the worker threads the variants use, called only when the layer is to be
   * tuned; false if they never came up: the layer then keeps its default plan for the process
   * (timing now would time one thread, and switching plans later would change its rounding mid-run).
   */
  ready: () => boolean;
  /** Fills what a forced plan left open (a Winograd plan without `block`: the layer's default block). */
  normalize: (plan: KernelPlan) => KernelPlan;
  /**
   * The candidates to time, built lazily (only when no plan is forced, known or cached). Called in
   * stages: stage 0 (winner null), then stage 1 with stage 0's winner to refine it (e.g. Winograd's
   * block of tiles); an empty list ends tuning.
   */
  candidates: (stage: number, winner: KernelPlan | null) => Candidate[];
}

/**
 * The plan for a layer: forced (CATDOG_KERNEL_PLAN), else default (CATDOG_AUTOTUNE=0), else decided
 * earlier in this process, else cached for this CPU model and thread count, else tuned now.
 */
export function choosePlan(req: PlanRequest): KernelPlan {
  const forced = forcedPlans()[req.family];
  if (forced) {
    const plan = req.normalize(forced);
    const ok = req.applicable(plan);
    return remember(req, ok ? plan : req.defaultPlan, ok ? 'forced' : 'default');
  }
  if (!autotuneEnabled()) return remember(req, req.defaultPlan, 'default');
  const key = `${req.family} ${req.shape}`;
  const id = `${req.threads} ${key}`;
  const known = decided.get(id);
  if (known && (known.source === 'tuned' || known.source === 'cache' || untuned.has(id))) {
    const plan = parsePlan(known.plan);
    if (plan && req.applicable(plan)) return plan;
  }
  const machine = machineKey(req.threads);
  const refresh = autotuneRefresh();
  const cached = refresh ? undefined : cachedEntries(machine)[key];
  const cachedPlan = cached ? parsePlan(cached.plan) : null;
  // An entry that did not time every plan the layer has now (tuned before a newer kernel) is tuned again and replaced.
  const outdated = cached !== undefined && !timedEveryCandidate(req, cached);
  if (cached && cachedPlan && req.applicable(cachedPlan) && !outdated)
    return remember(req, cachedPlan, 'cache', cached.us);

  if (!req.ready()) {
    untuned.add(id);
    return remember(req, req.defaultPlan, 'default');
  }
  const us: Record<string, number> = {};
  let winner: KernelPlan | null = null;
  const t0 = performance.now();
  for (let stage = 0; stage < 2 && performance.now() - t0 < STAGE_BUDGET_MS; stage++) {
    const candidates = req.candidates(stage, winner).filter((c) => req.applicable(c.plan));
    if (candidates.length < 2) break;
    const times = timeCandidates(candidates);
    // −1: the variant failed on this layer (still recorded: it was a candidate).
    for (const [name, t] of times)
      us[stage === 0 ? name : `${name} (block proxy)`] = Number.isFinite(t) ? Math.round(t) : -1;
    winner = pickWinner(times, winner ?? req.defaultPlan);
  }
  const plan = winner ?? req.defaultPlan;
  us.total = Math.round((performance.now() - t0) * 1000);
  const entry: CachedPlan = { plan: formatPlan(plan), us, tuned: new Date().toISOString(), load: loadPerCore() };
  const kept = writeCachedPlan(planCacheDir(), machine, key, entry, refresh || outdated);
  const keptPlan = kept === entry ? null : parsePlan(kept.plan);
  // Another process tuned the layer first: take its plan, so that every process runs the same one.
  if (keptPlan && req.applicable(keptPlan)) {
    if (cacheLoaded) cacheLoaded.entries[key] = kept;
    return remember(req, keptPlan, 'cache', kept.us);
  }
  if (cacheLoaded) cacheLoaded.entries[key] = entry;
  return remember(req, plan, 'tuned', us);
}

/**
 * Whether a cached tuning timed every plan that would be timed for the layer now: a plan tuned before a newer
 * kernel existed (or while CATDOG_WASM_WINOGRAD=0 ruled one out) is tuned again instead of being kept for good.
 */
function timedEveryCandidate(req: PlanRequest, cached: CachedPlan): boolean {
  const now = req.candidates(0, null).filter((c) => req.applicable(c.plan));
  return now.length < 2 || now.every((c) => formatPlan(c.plan) in cached.us);
}

/** The fastest plan, unless it beats the incumbent (the default, or the previous stage's winner) by less than MARGIN. */
function pickWinner(times: Map<string, number>, incumbent: KernelPlan): KernelPlan {
  let bestName = '';
  let bestTime = Infinity;
  for (const [name, t] of times) {
    if (t < bestTime) {
      bestName = name;
      bestTime = t;
    }
  }
  const incumbentTime = times.get(formatPlan(incumbent));
  if (incumbentTime !== undefined && bestTime > (1 - MARGIN) * incumbentTime) return incumbent;
  return parsePlan(bestName) ?? incumbent;
}

function remember(req: PlanRequest, plan: KernelPlan, source: PlanSource, us?: Record<string, number>): KernelPlan {
  const id = `${req.threads} ${req.family} ${req.shape}`;
  const prior = decided.get(id);
  const text = formatPlan(plan);
  if (!prior || prior.plan !== text || prior.source !== source) {
    decided.set(id, { family: req.family, shape: req.shape, plan: text, source, ...(us ? { us } : {}) });
  }
  return plan;
}
