// Shared by the wasm kernel tests: deterministic inputs, and one kernel run on a named backend.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
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
  const out = tf.tidy(() => {
    const ins: Record<string, tf.Tensor> = {};
    for (const [k, v] of Object.entries(inputs)) ins[k] = tf.tensor(v.values, v.shape);
    return tf.engine().runKernel(kernelName, ins, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
  });
  // Read outside the tidy: tidy walks what it returns for tensors, every element of a typed array included
  // (20 s for 14 M floats).
  try {
    return { shape: out.shape, values: out.dataSync() as Float32Array };
  } finally {
    out.dispose();
  }
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

/** The largest |actual − expected| (worst) and the largest |expected| (the scale it is judged against). */
export function errorAndScale(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
): { worst: number; scale: number } {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  }
  return { worst, scale };
}

/** Set in the child run of assertPassesSingleThreaded (its file then skips that test). */
export const SINGLE_THREADED_CHILD = process.env.CATDOG_WINOGRAD_TEST_CHILD === '1';

/** Runs the test file `file` again in a child on the single-threaded wasm build and asserts that `passes` tests pass. */
export function assertPassesSingleThreaded(file: string, passes: number, timeoutMs: number): void {
  // Without NODE_TEST_CONTEXT (set for this file's own run), the child is a test run of its own.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], {
    env: { ...env, CATDOG_WASM_THREADS: '0', CATDOG_WINOGRAD_TEST_CHILD: '1' },
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  assert.equal(child.status, 0, `child run failed:\n${child.stdout}\n${child.stderr}`);
  assert.match(child.stdout, new RegExp(`^# pass ${passes}$`, 'm'), `child ran the checks:\n${child.stdout}`);
}
