// Multi-threaded wasm backend in Node.
//
// @tensorflow/tfjs-backend-wasm 4.22 ships a threaded SIMD build but disables it in Node
// (tfjs#3830), for three reasons this module works around:
//  1. its pthread workers are created from `blob:` URLs, which Node's Worker rejects: the worker
//     script is written to a temporary file and `URL.createObjectURL` returns that path while the
//     backend initialises;
//  2. the worker loads the main script from a Blob posted to it: the worker script is patched to
//     load the same source from a temporary file instead (captured when the backend builds the
//     Blob);
//  3. the C++ side clamps the thread count to a default derived from the core count (half of
//     them, so 1 on a 2-core machine): the clamp value is raised to the requested count and the
//     thread pool re-created. This step relies on the 4.22 binary's memory layout and is checked
//     before it is applied; when the check fails the backend keeps its default thread count.
// Pthread workers are unref'd so they never keep a process alive.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';

const require = createRequire(import.meta.url);

const WORKER_LOAD_FROM_BLOB =
  'if(typeof e.data.urlOrBlob=="string"){importScripts(e.data.urlOrBlob)}else{var objectUrl=URL.createObjectURL(e.data.urlOrBlob);importScripts(objectUrl);URL.revokeObjectURL(objectUrl)}';
const MAIN_SCRIPT_PREFIX = 'var WasmBackendModuleThreadedSimd = ';
// Names the bundle's factory source refers to (rollup's CommonJS shims), defined for the worker.
const MAIN_SCRIPT_SHIMS =
  "var require$$0=require('fs'),require$$1=require('path'),require$$3=require('perf_hooks'),require$$4=require('os');" +
  'var commonjsGlobal=globalThis;\n';

// Addresses of the thread-count clamp in tfjs-backend-wasm-threaded-simd.wasm 4.22.0
// (init_with_threads_count: n = min(max(n, MIN), MAX, DEFAULT)).
const LAYOUT_4_22 = { defaultThreads: 23568, maxThreads: 23204, minThreads: 23200, maxValue: 8 };

interface EmscriptenModule {
  HEAP32: Int32Array;
  PThread?: { unusedWorkers: Array<{ unref(): void }>; runningWorkers: Array<{ unref(): void }> };
  tfjs: { initWithThreadsCount(n: number): void; getThreadsCount(): number };
}

function wasmModule(): EmscriptenModule {
  return (tf.backend() as unknown as { wasm: EmscriptenModule }).wasm;
}

function unrefWorkers(m: EmscriptenModule): void {
  for (const w of [...(m.PThread?.unusedWorkers ?? []), ...(m.PThread?.runningWorkers ?? [])]) w.unref();
}

let tempDir: string | null = null;

function prepareWorkerFiles(): { workerPath: string; mainPath: string } {
  const bundle = readFileSync(require.resolve('@tensorflow/tfjs-backend-wasm'), 'utf8');
  const match = bundle.match(/var wasmWorkerContents = ("(?:[^"\\]|\\.)*");/);
  if (!match) throw new Error('worker script not found in the tfjs-backend-wasm bundle');
  // The bundle escapes newlines the same way before making its Blob.
  const worker = (JSON.parse(match[1]!) as string).replace(/\n/g, '\\n');
  if (!worker.includes(WORKER_LOAD_FROM_BLOB))
    throw new Error('unexpected worker script in the tfjs-backend-wasm bundle');
  tempDir = mkdtempSync(join(tmpdir(), 'catdog-wasm-threads-'));
  const dir = tempDir;
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const mainPath = join(dir, 'main.cjs');
  const workerPath = join(dir, 'worker.cjs');
  writeFileSync(workerPath, worker.replace(WORKER_LOAD_FROM_BLOB, `importScripts(${JSON.stringify(mainPath)});`));
  return { workerPath, mainPath };
}

/**
 * Initialises the 'wasm' backend with its threaded SIMD build and `threads` threads. Returns the
 * thread count the backend runs with. Throws (leaving the 'wasm' backend unregistered from the
 * engine's instance cache, so a plain initialisation can follow) when the threaded build fails.
 */
export async function initThreadedWasm(threads: number): Promise<number> {
  const { workerPath, mainPath } = prepareWorkerFiles();
  const OriginalBlob = globalThis.Blob;
  const originalCreateObjectURL = URL.createObjectURL;
  const workerBlobs = new WeakSet<Blob>();
  class CapturingBlob extends OriginalBlob {
    constructor(parts?: BlobPart[], options?: BlobPropertyBag) {
      super(parts, options);
      if (parts && parts.length === 1 && typeof parts[0] === 'string') {
        const text = parts[0];
        if (text.startsWith(MAIN_SCRIPT_PREFIX)) writeFileSync(mainPath, MAIN_SCRIPT_SHIMS + text);
        else if (text.includes('WasmBackendModuleThreadedSimd(Module)')) workerBlobs.add(this);
      }
    }
  }
  globalThis.Blob = CapturingBlob;
  URL.createObjectURL = (obj: Blob) => (workerBlobs.has(obj) ? workerPath : originalCreateObjectURL(obj));
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  tfWasm.setThreadsCount(threads);
  let ok = false;
  try {
    ok = await tf.setBackend('wasm');
  } finally {
    globalThis.Blob = OriginalBlob;
    URL.createObjectURL = originalCreateObjectURL;
  }
  if (!ok) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    throw new Error('the threaded wasm build did not initialise');
  }
  const m = wasmModule();
  unrefWorkers(m);
  let actual = m.tfjs.getThreadsCount();
  if (actual < threads && tfWasm.version_wasm === '4.22.0') {
    const L = LAYOUT_4_22;
    const heap = m.HEAP32;
    const def = heap[L.defaultThreads / 4]!;
    if (heap[L.maxThreads / 4] === L.maxValue && heap[L.minThreads / 4] === 1 && def === actual) {
      heap[L.defaultThreads / 4] = Math.min(threads, L.maxValue);
      m.tfjs.initWithThreadsCount(threads);
      actual = m.tfjs.getThreadsCount();
      unrefWorkers(m);
    }
  }
  return actual;
}
