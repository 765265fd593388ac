// Loader for the hand-written WASM SIMD kernels (../wasm/training-kernels.wat), instantiated on
// the memory of the tfjs wasm backend so that they read and write tensor buffers in place.
// Returns null (callers keep their JS loops) when the memory cannot be found or the module does
// not instantiate, e.g. on a tfjs-backend-wasm whose memory layout differs.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SimdKernels {
  /** MaxPoolGrad, 2×2 windows at stride 2, channels-last, C % 4 == 0 (byte offsets). */
  maxpool_grad_2x2(
    x: number,
    dy: number,
    dx: number,
    B: number,
    H: number,
    W: number,
    C: number,
    Ho: number,
    Wo: number,
  ): void;
  /** maxpool_grad_2x2 for `rows` output rows of one image (x, dy, dx at the first): B = 1, H = 2·rows, Ho = rows. */
  maxpool_grad_2x2_rows(x: number, dy: number, dx: number, rows: number, W: number, C: number, Wo: number): void;
  /**
   * out[m·os + j] = Σ_k a[m·K + k]·b[j·K + k] for m < M, j < n: A·Bᵀ on a chunk of B's rows; K % 4 == 0, n % 4 == 0,
   * A with an even number of rows (byte offsets, os in bytes).
   */
  abt_run(a: number, M: number, b: number, n: number, K: number, out: number, os: number): void;
  /** out[c] = Σ_r x[r, c], C % 4 == 0, rows ≥ 1 (byte offsets). */
  sum_rows(x: number, out: number, rows: number, C: number): void;
  /** dw[ci, co] += Σ_(p<n) x[p·xs + ci] · dy[p·Co + co], Co % 16 == 0 (byte offsets, xs in bytes); = with n | 0x80000000. */
  conv_filter_grad_run(x: number, xs: number, dy: number, n: number, Ci: number, Co: number, dw: number): void;
  /** dx[p·dxs + ci] += Σ_co dy[p·Co + co] · wt[co·Ci + ci], Ci % 16 == 0 (byte offsets, dxs in bytes). */
  conv_input_grad_run(dy: number, n: number, Co: number, wt: number, Ci: number, dx: number, dxs: number): void;
  /**
   * y[p·Co + co] = act(bias[co] + Σ_ci x[p·Ci + ci] · w[ci·Co + co]) for p < n & 0x3fffffff, act = n >>> 30
   * (0 linear, 1 ReLU, 2 ReLU6), Co % 16 == 0 (byte offsets): a pointwise convolution with bias and activation.
   */
  pointwise_run(x: number, n: number, Ci: number, w: number, Co: number, y: number, bias: number): void;
  /** out[i] = x[i] > 0 ? dy[i] : 0 for the first 4·vectors floats (byte offsets). */
  relu_grad(x: number, dy: number, out: number, vectors: number): void;
  /** out[i] = lo <= x[i] <= hi ? dy[i] : 0 for the first 4·vectors floats (byte offsets). */
  clip_grad(x: number, dy: number, out: number, vectors: number, lo: number, hi: number): void;
  /**
   * RMSprop update of float vectors v0 .. v1 - 1; prm = byte offset of int32 g, ms, mom, var, ms', mom', var'
   * (byte offsets) and float32 ρ, 1-ρ, lr, ε, μ (the last three arguments are unused).
   */
  rmsprop_run(prm: number, v0: number, v1: number, a3: number, a4: number, a5: number, a6: number): void;
  /** dx[p·xs + c] += dy[p·ys + c] · w[c] for p < n, C % 4 == 0 (byte offsets, xs and ys in bytes). */
  dw_input_grad_run(dy: number, ys: number, w: number, n: number, C: number, xs: number, dx: number): void;
  /** acc[c] += Σ_(p<n) x[p·xs + c] · dy[p·ys + c], C % 4 == 0 (byte offsets, xs and ys in bytes). */
  dw_filter_grad_run(x: number, xs: number, dy: number, ys: number, n: number, C: number, acc: number): void;
  /**
   * Winograd F(m×m, 3×3) filter transform (m = 3, 4 or 6) of a [3, 3, Ci, Co] filter into [(m+2)², Ci·Co + 16],
   * for the Ci·Co/4 float vectors v0 .. v1 - 1 (byte offsets w, u).
   */
  winograd_filter_job(w: number, Ci: number, Co: number, u: number, v0: number, v1: number, m: number): void;
  /**
   * One block of Winograd tiles (see the .wat): prm = byte offset of the int32 parameters, tiles
   * first .. first + count - 1, scratch = this thread's scratch (byte offset).
   */
  winograd_tiles(prm: number, first: number, count: number, a3: number, a4: number, a5: number, scratch: number): void;
  /**
   * One block of Winograd filter-gradient tiles (see the .wat): prm = byte offset of the int32 parameters, tiles
   * first .. first + count - 1 added into (assign = 1: assigned to) the partial products at Mp, scratch = this
   * thread's scratch (byte offsets).
   */
  winograd_filter_grad_tiles(
    prm: number,
    first: number,
    count: number,
    Mp: number,
    assign: number,
    a5: number,
    scratch: number,
  ): void;
  /** dW = Gᵀ (Σ partials M) G for the Ci·Co/4 float vectors v0 .. v1 - 1 (prm as winograd_filter_grad_tiles'). */
  winograd_filter_grad_out(prm: number, v0: number, v1: number, a3: number, a4: number, a5: number, a6: number): void;
}

interface EmscriptenLike {
  wasmMemory?: WebAssembly.Memory;
  asm?: { memory?: WebAssembly.Memory };
}

interface Loaded {
  kernels: SimdKernels;
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  shared: boolean;
}

const cache = new WeakMap<object, Loaded | null>();

const V128_ZERO = [253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // v128.const 0
/** A module whose one function computes f32x4.relaxed_madd(0, 0, 0): it validates where the engine has relaxed SIMD. */
const RELAXED_MADD_PROBE = new Uint8Array([
  ...[0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 62, 1, 60, 0],
  ...V128_ZERO,
  ...V128_ZERO,
  ...V128_ZERO,
  ...[253, 133, 2, 26, 11], // f32x4.relaxed_madd, drop, end
]);

let fusedMultiplyAdd: boolean | undefined;

/**
 * Whether the kernels run with fused multiply-adds (training-kernels-fma*.wasm: relaxed SIMD's relaxed_madd in the
 * product loops, one FMA instruction where the CPU has it, against a multiply and an add): when the engine has
 * relaxed SIMD (Node 22 and later ship it; Node 20 has it behind a V8 flag, turned on here), unless
 * CATDOG_WASM_FMA=0. The results differ from the unfused loops' in the last bits (one rounding instead of two).
 */
export function wasmFusedMultiplyAdd(): boolean {
  if (fusedMultiplyAdd !== undefined) return fusedMultiplyAdd;
  fusedMultiplyAdd = false;
  if (process.env.CATDOG_WASM_FMA === '0') return fusedMultiplyAdd;
  try {
    if (!WebAssembly.validate(RELAXED_MADD_PROBE)) setFlagsFromString('--experimental-wasm-relaxed-simd');
    fusedMultiplyAdd = WebAssembly.validate(RELAXED_MADD_PROBE);
  } catch {
    fusedMultiplyAdd = false;
  }
  return fusedMultiplyAdd;
}

/** V8 flags turned off while the kernels compile, unless the process was started with them off. */
const EAGER_TURBOFAN = ['wasm-lazy-compilation', 'liftoff'];

/**
 * Compiles the kernels with V8's optimizing compiler up front. By default V8 compiles each wasm function at its
 * first call with its baseline compiler (Liftoff), whose code runs these SIMD loops 4–7× slower, and swaps in
 * optimized code only after a few calls: the autotuner, which times each variant at a layer's first use, then
 * timed the direct loops in baseline code against XNNPACK's optimized code and picked XNNPACK where the direct
 * loop is 25–50% faster. The flags are restored at once, so other modules (tfjs' own) compile as before.
 */
function compileOptimized(bytes: BufferSource): WebAssembly.Module {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  const toggled = EAGER_TURBOFAN.filter((f) => !given.some((a) => a.replace(/_/g, '-') === `--no-${f}`));
  try {
    for (const f of toggled) setFlagsFromString(`--no-${f}`);
  } catch {
    // an engine without these flags compiles as it does
  }
  try {
    return new WebAssembly.Module(bytes);
  } finally {
    for (const f of toggled) {
      try {
        setFlagsFromString(`--${f}`);
      } catch {
        // as above
      }
    }
  }
}

function load(module: object): Loaded | null {
  if (cache.has(module)) return cache.get(module)!;
  let loaded: Loaded | null = null;
  if (process.env.CATDOG_WASM_SIMD_KERNELS !== '0') {
    try {
      const m = module as EmscriptenLike;
      const memory = m.wasmMemory ?? m.asm?.memory;
      if (memory instanceof WebAssembly.Memory) {
        const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
        const here = dirname(fileURLToPath(import.meta.url));
        const variant = `training-kernels${wasmFusedMultiplyAdd() ? '-fma' : ''}${shared ? '-shared' : ''}.wasm`;
        const bytes = readFileSync(join(here, '..', 'wasm', variant));
        const wasmModule = compileOptimized(bytes);
        const instance = new WebAssembly.Instance(wasmModule, { env: { memory } });
        loaded = { kernels: instance.exports as unknown as SimdKernels, module: wasmModule, memory, shared };
      }
    } catch {
      loaded = null;
    }
  }
  cache.set(module, loaded);
  return loaded;
}

export function simdKernels(module: object): SimdKernels | null {
  return load(module)?.kernels ?? null;
}

// ---------------------------------------------------------------------------------------------
// Thread pool: with the threaded tfjs build (shared memory) the kernels also run on worker
// threads, on the same memory. Jobs are lists of kernel calls (7 int32 arguments each, JOB_KERNELS)
// written to wasm memory; workers are woken and joined with Atomics on a small control array.

export const JOB_ARGS = 7;
/**
 * How long a job may run on a worker before the worker is taken for dead (CATDOG_SIMD_JOB_TIMEOUT_MS overrides it,
 * for tests). Counted in time this process was running: see joinJob.
 */
const JOB_TIMEOUT_MS = Number(process.env.CATDOG_SIMD_JOB_TIMEOUT_MS) || 120_000;
/** A wait slice that took this much longer than asked means the process was suspended meanwhile. */
const SUSPENDED_MS = 5_000;

export interface PoolWorker {
  ctrl: Int32Array;
  seq: number;
}

const pools = new WeakMap<object, PoolWorker[]>();

/**
 * Up to `count` ready workers for the backend's module: fewer, or none, while they start (the
 * caller then does their share itself) or when they cannot start.
 */
export function simdWorkers(module: object, count: number): PoolWorker[] {
  const loaded = load(module);
  if (!loaded?.shared || count <= 0 || process.env.CATDOG_WASM_SIMD_WORKERS === '0') return [];
  let pool = pools.get(module);
  if (!pool) {
    pool = [];
    pools.set(module, pool);
  }
  while (pool.length < count) {
    try {
      const control = new SharedArrayBuffer(8 * 4);
      const worker = new Worker(new URL('./simd-worker.mjs', import.meta.url), {
        workerData: { memory: loaded.memory, module: loaded.module, control },
      });
      const ctrl = new Int32Array(control);
      // A worker that fails or exits is never handed a job again (ready word cleared).
      const retire = () => Atomics.store(ctrl, 5, 0);
      worker.on('error', retire);
      worker.on('exit', retire);
      worker.unref();
      pool.push({ ctrl, seq: 0 });
    } catch {
      break;
    }
  }
  return pool.filter((w) => Atomics.load(w.ctrl, 5) === 1).slice(0, count);
}

/**
 * Starts `count` workers and blocks until they are ready or `timeoutMs` has passed (they start on
 * threads of their own, so this thread may wait for them); returns how many are ready.
 */
export function awaitSimdWorkers(module: object, count: number, timeoutMs: number): number {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ready = simdWorkers(module, count).length;
    const pool = pools.get(module);
    const left = deadline - Date.now();
    if (ready >= count || !pool || left <= 0) return ready;
    const waiting = pool.find((w) => Atomics.load(w.ctrl, 5) !== 1);
    if (!waiting) return ready;
    Atomics.wait(waiting.ctrl, 5, 0, Math.min(left, 50));
  }
}

/** Kernels a worker job can run (7 int32 arguments per call). */
export const JOB_KERNELS = {
  conv_filter_grad_run: 0,
  conv_input_grad_run: 1,
  winograd_tiles: 2,
  winograd_filter_job: 3,
  rmsprop_run: 4,
  dw_input_grad_run: 5,
  dw_filter_grad_run: 6,
  winograd_filter_grad_tiles: 7,
  winograd_filter_grad_out: 8,
  pointwise_run: 9,
  relu_grad: 10,
  sum_rows: 11,
  maxpool_grad_2x2_rows: 12,
  abt_run: 13,
} as const;

/**
 * Starts a job on a worker. The job (int32 words at byte offset `job` in wasm memory) is
 * [next chunk, chunk count, chunk starts (count + 1, in calls), calls (7 words each)]: every
 * thread on the job takes the next chunk with an atomic increment until none is left, so a
 * thread that is descheduled (busy machine) delays no one. `base` is added to each call's last
 * argument (each thread's own Winograd scratch; 0 otherwise). Which chunks a thread gets varies
 * run to run: no chunk's result may depend on it (see runChunks in kernels/base.ts).
 */
export function startJob(worker: PoolWorker, kernel: keyof typeof JOB_KERNELS, job: number, base: number): void {
  worker.ctrl[2] = job;
  worker.ctrl[6] = JOB_KERNELS[kernel];
  worker.ctrl[7] = base;
  worker.seq++;
  Atomics.store(worker.ctrl, 0, worker.seq);
  Atomics.notify(worker.ctrl, 0);
}

/**
 * Waits for a worker's job; throws if it failed, or if it has not finished after JOB_TIMEOUT_MS of waiting. A wait
 * slice during which the process was suspended (SIGSTOP, a paused VM or container, a laptop asleep) does not count:
 * the worker was stopped too, and a training job paused for minutes must go on when resumed.
 */
export function joinJob(worker: PoolWorker): void {
  let waited = 0;
  for (;;) {
    const done = Atomics.load(worker.ctrl, 1);
    if (done === worker.seq) break;
    if (waited > JOB_TIMEOUT_MS) {
      Atomics.store(worker.ctrl, 5, 0);
      throw new Error(`a SIMD kernel worker thread did not finish within ${JOB_TIMEOUT_MS / 1000} s`);
    }
    const slice = Math.min(1000, JOB_TIMEOUT_MS);
    const t0 = performance.now();
    Atomics.wait(worker.ctrl, 1, done, slice);
    const took = performance.now() - t0;
    if (took < slice + SUSPENDED_MS) waited += took;
  }
  if (worker.ctrl[4] !== 0) throw new Error('a SIMD kernel failed on a worker thread');
}
