// Loader for the hand-written WASM SIMD kernels (../wasm/training-kernels.wat), instantiated on
// the memory of the tfjs wasm backend so that they read and write tensor buffers in place.
// Returns null (callers keep their JS loops) when the memory cannot be found or the module does
// not instantiate, e.g. on a tfjs-backend-wasm whose memory layout differs.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SimdKernels {
  /** MaxPoolGrad, 2×2 windows at stride 2, channels-last, C % 4 == 0 (byte offsets). */
  maxpool_grad_2x2(x: number, dy: number, dx: number, B: number, H: number, W: number, C: number, Ho: number, Wo: number): void;
  /** out[c] = Σ_r x[r, c], C % 4 == 0, rows ≥ 1 (byte offsets). */
  sum_rows(x: number, out: number, rows: number, C: number): void;
  /** dw[ci, co] += Σ_(p<n) x[p·xs + ci] · dy[p·Co + co], Co % 16 == 0 (byte offsets, xs in bytes). */
  conv_filter_grad_run(x: number, xs: number, dy: number, n: number, Ci: number, Co: number, dw: number): void;
}

interface EmscriptenLike {
  wasmMemory?: WebAssembly.Memory;
  asm?: { memory?: WebAssembly.Memory };
}

const cache = new WeakMap<object, SimdKernels | null>();

export function simdKernels(module: object): SimdKernels | null {
  if (cache.has(module)) return cache.get(module)!;
  let kernels: SimdKernels | null = null;
  if (process.env.CATDOG_WASM_SIMD_KERNELS !== '0') {
    try {
      const m = module as EmscriptenLike;
      const memory = m.wasmMemory ?? m.asm?.memory;
      if (memory instanceof WebAssembly.Memory) {
        const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
        const here = dirname(fileURLToPath(import.meta.url));
        const bytes = readFileSync(join(here, '..', 'wasm', shared ? 'training-kernels-shared.wasm' : 'training-kernels.wasm'));
        const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
        kernels = instance.exports as unknown as SimdKernels;
      }
    } catch {
      kernels = null;
    }
  }
  cache.set(module, kernels);
  return kernels;
}
