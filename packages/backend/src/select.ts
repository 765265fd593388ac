// Picks and initialises the tfjs backend: tfjs-node-gpu → tfjs-node → wasm → cpu.
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { forcedPlans } from './autotune.js';
import { dirname, sep } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';
import { BackendUnavailableError } from './errors.js';
import { registerWasmTrainingKernels } from './wasm-kernels.js';
import { initThreadedWasm } from './wasm-threads.js';

export const BACKEND_REQUESTS = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendRequest = (typeof BACKEND_REQUESTS)[number];

export interface BackendChoice {
  name: 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
  /** Threads the backend actually runs with (as far as it reports). */
  threads: number;
  /** Why this backend was chosen, for logs and run configs. */
  reason: string;
}

export interface InitBackendOptions {
  backend?: BackendRequest;
  /** Threads to use; default: $CATDOG_THREADS, else all available cores. */
  threads?: number;
  /** Where the one line saying which backend was chosen goes; default: stderr. */
  log?: (line: string) => void;
}

const require = createRequire(import.meta.url);

function isInstalled(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/** A CUDA GPU is visible when the NVIDIA driver lists one (and CUDA_VISIBLE_DEVICES does not hide it). */
function gpuVisible(): boolean {
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && (visible.trim() === '' || visible.trim() === '-1')) return false;
  try {
    if (existsSync('/proc/driver/nvidia/gpus') && readdirSync('/proc/driver/nvidia/gpus').length > 0) return true;
  } catch {
    // unreadable: fall through
  }
  return existsSync('/dev/nvidia0');
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

async function loadTensorflow(
  pkg: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node',
  threads: number,
): Promise<void> {
  // libtensorflow reads its thread pool sizes from the environment when it loads.
  process.env.TF_NUM_INTRAOP_THREADS ??= String(threads);
  process.env.TF_NUM_INTEROP_THREADS ??= '1';
  await import(pkg);
  if (!(await tf.setBackend('tensorflow')))
    throw new Error(`${pkg} loaded but its 'tensorflow' backend did not initialise`);
  await tf.ready();
}

let wasmPathsSet = false;
let threadedNote = '';

async function loadWasm(threads: number): Promise<number> {
  registerWasmTrainingKernels();
  if (!wasmPathsSet && tf.findBackend('wasm') == null) {
    // Load the .wasm binaries from the installed package (no download, works offline).
    const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + sep;
    tfWasm.setWasmPaths(dist);
    wasmPathsSet = true;
  }
  if (tf.findBackend('wasm') == null && threads > 1 && process.env.CATDOG_WASM_THREADS !== '0') {
    try {
      return await initThreadedWasm(threads);
    } catch (err) {
      threadedNote = `threaded wasm build failed (${firstLine(err)}), running single-threaded`;
    }
  }
  tfWasm.setThreadsCount(threads);
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
  await tf.ready();
  // Ask the module itself: tfjs's getThreadsCount() caches the count from construction time.
  return (tf.backend() as unknown as { wasm: { tfjs: { getThreadsCount(): number } } }).wasm.tfjs.getThreadsCount();
}

async function loadCpu(): Promise<void> {
  if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
  await tf.ready();
}

let current: { key: string; choice: Promise<BackendChoice> } | null = null;

/**
 * Selects and initialises the tfjs backend (idempotent: the same request returns the same
 * choice without re-initialising; a different request switches backend). `auto` picks
 * tfjs-node-gpu when it is installed and a GPU is visible, else tfjs-node, else wasm (with the
 * training kernels of this package), else cpu. Logs once which backend it chose and why.
 */
/**
 * CATDOG_THREADS, else every core. (Several trainers on one machine, e.g. tests run two files at a time, each take
 * fewer: the wasm pool's threads wait by spinning, so more threads than cores slow everyone down.)
 */
function defaultThreads(): number {
  const env = process.env.CATDOG_THREADS;
  return env ? Number(env) : availableParallelism();
}

export function initBackend(options: InitBackendOptions = {}): Promise<BackendChoice> {
  const request = options.backend ?? 'auto';
  if (!BACKEND_REQUESTS.includes(request)) {
    return Promise.reject(
      new BackendUnavailableError(
        `unknown backend '${String(request)}' (expected one of ${BACKEND_REQUESTS.join(', ')})`,
      ),
    );
  }
  const threads = options.threads ?? defaultThreads();
  if (!Number.isInteger(threads) || threads < 1) {
    return Promise.reject(
      new BackendUnavailableError(
        `threads must be a positive integer, got ${options.threads ?? `CATDOG_THREADS=${process.env.CATDOG_THREADS}`}`,
      ),
    );
  }
  try {
    forcedPlans(); // a bad CATDOG_KERNEL_PLAN fails here, before any training starts
  } catch (err) {
    return Promise.reject(err);
  }
  const key = `${request}/${threads}`;
  if (current?.key === key) return current.choice;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const choice = select(request, threads).then((c) => {
    log(`backend: ${c.name} (${c.threads} thread${c.threads === 1 ? '' : 's'}) — ${c.reason}`);
    return c;
  });
  current = { key, choice };
  choice.catch(() => {
    if (current?.choice === choice) current = null;
  });
  return choice;
}

async function select(request: BackendRequest, threads: number): Promise<BackendChoice> {
  const notes: string[] = [];

  if (request === 'auto' || request === 'tensorflow') {
    const gpuInstalled = isInstalled('@tensorflow/tfjs-node-gpu');
    const hasGpu = gpuInstalled && gpuVisible();
    if (gpuInstalled && hasGpu) {
      try {
        await loadTensorflow('@tensorflow/tfjs-node-gpu', threads);
        return { name: 'tensorflow-gpu', threads, reason: 'tfjs-node-gpu is installed and a GPU is visible' };
      } catch (err) {
        notes.push(`tfjs-node-gpu failed to load (${firstLine(err)})`);
      }
    } else {
      notes.push(gpuInstalled ? 'tfjs-node-gpu is installed but no GPU is visible' : 'tfjs-node-gpu is not installed');
    }
    if (isInstalled('@tensorflow/tfjs-node')) {
      try {
        await loadTensorflow('@tensorflow/tfjs-node', threads);
        return { name: 'tensorflow', threads, reason: [...notes, 'using tfjs-node (libtensorflow on CPU)'].join('; ') };
      } catch (err) {
        notes.push(`tfjs-node failed to load (${firstLine(err)})`);
      }
    } else {
      notes.push('tfjs-node is not installed');
    }
    if (request === 'tensorflow') {
      throw new BackendUnavailableError(
        `backend 'tensorflow' is not available: ${notes.join('; ')}. ` +
          'Install @tensorflow/tfjs-node (or -gpu; its install downloads libtensorflow), or use --backend wasm.',
      );
    }
  }

  if (request === 'auto' || request === 'wasm') {
    try {
      const actual = await loadWasm(threads);
      const threadNote =
        (threadedNote ? `; ${threadedNote}` : '') +
        (actual < threads ? `; ${threads} threads requested, the wasm backend runs ${actual}` : '');
      return {
        name: 'wasm',
        threads: actual,
        reason: [...notes, request === 'wasm' ? 'requested' : 'fastest backend available'].join('; ') + threadNote,
      };
    } catch (err) {
      if (request === 'wasm') {
        throw new BackendUnavailableError(`backend 'wasm' failed to initialise: ${firstLine(err)}`, { cause: err });
      }
      notes.push(`wasm failed to initialise (${firstLine(err)})`);
    }
  }

  await loadCpu();
  return {
    name: 'cpu',
    threads: 1,
    reason: [...notes, request === 'cpu' ? 'requested' : 'no faster backend available'].join('; '),
  };
}
