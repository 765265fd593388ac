// Shared by the wasm kernel tests: deterministic inputs, and one kernel run on a named backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

export type KernelInputs = Record<string, { shape: number[]; values: Float32Array }>;

/** n deterministic values in [-1, 1) (an LCG), so failures reproduce. */
export function random(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Runs one kernel on a backend with the given inputs (as flat arrays) and returns its output. */
export function runKernel(
  backend: string,
  kernelName: string,
  inputs: KernelInputs,
  attrs: Record<string, unknown>,
): { shape: number[]; values: Float32Array } {
  tf.setBackend(backend);
  return tf.tidy(() => {
    const ins: Record<string, tf.Tensor> = {};
    for (const [k, v] of Object.entries(inputs)) ins[k] = tf.tensor(v.values, v.shape);
    const out = tf.engine().runKernel(kernelName, ins, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
    return { shape: out.shape, values: out.dataSync() as Float32Array };
  });
}

/**
 * Points the wasm kernels' plan cache (CATDOG_CACHE_DIR) at a directory of this test process's own,
 * removed at exit, so tests tune plans without writing to the user's ~/.cache (child processes inherit it).
 */
export function isolatePlanCache(): void {
  if (process.env.CATDOG_CACHE_DIR) return;
  const dir = mkdtempSync(join(tmpdir(), 'catdog-plans-'));
  process.env.CATDOG_CACHE_DIR = dir;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
}
