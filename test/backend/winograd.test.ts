// The wasm Winograd convolutions (Conv2D and FusedConv2D, 3×3 stride 1) against the cpu backend:
// every tile size (F3, F4, F6) forced over a grid of map sizes that are not multiples of the tile, 'same' and
// 'valid' padding, channel counts (one with Ci·Co > 64 k, where the direct loop does not apply)
// and batch sizes, with the worker threads (this process) and without (a child process with the
// single-threaded build, CATDOG_WASM_THREADS=0).
//
// Tolerance: max |wasm - cpu| ≤ 5e-5 (F3, F4) or 2e-4 (F6) × max |cpu output|. The float32 rounding
// of the transforms grows with the tile's interpolation points (F3 uses 0, ±1, 2, F4 0, ±1, ±2, F6
// also ±½ with larger coefficients); measured errors are 1–8e-6 (F3, F4) and 1–2e-5 (F6) of the output's scale on
// these sums of up to 9·512 products. An indexing mistake gives errors of the output's own size.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { isolatePlanCache, random, runKernel, type KernelInputs } from '../helpers/kernels.js';
import { initBackend, wasmSimdKernelsLoaded, wasmSimdWorkers, wasmWinogradTileSize } from '@catdog/backend';

type Pad = 'valid' | 'same';
type Shape4 = [number, number, number, number];

isolatePlanCache();
const CHILD = process.env.CATDOG_WINOGRAD_TEST_CHILD === '1';
const SIMD = process.env.CATDOG_WASM_SIMD_KERNELS !== '0';
const skip = SIMD ? false : 'CATDOG_WASM_SIMD_KERNELS=0';
const TOLERANCE = { 3: 5e-5, 4: 5e-5, 6: 2e-4 } as const;

/** Runs the kernel on wasm with tile m forced and on cpu; asserts the tile was used and the outputs agree. */
function check(
  m: 3 | 4 | 6,
  kernelName: 'Conv2D' | 'FusedConv2D',
  c: { B: number; H: number; W: number; Ci: number; Co: number; pad: Pad },
  extra: { bias?: boolean; activation?: string },
  seed: number,
): void {
  const xShape: Shape4 = [c.B, c.H, c.W, c.Ci];
  const wShape: Shape4 = [3, 3, c.Ci, c.Co];
  const inputs: KernelInputs = {
    x: { shape: xShape, values: random(c.B * c.H * c.W * c.Ci, seed) },
    filter: { shape: wShape, values: random(9 * c.Ci * c.Co, seed + 1) },
  };
  if (extra.bias) inputs.bias = { shape: [c.Co], values: random(c.Co, seed + 2).map((v) => 4 * v) };
  const attrs: Record<string, unknown> = { strides: [1, 1], pad: c.pad, dataFormat: 'NHWC', dilations: [1, 1] };
  if (kernelName === 'FusedConv2D') attrs.activation = extra.activation ?? 'linear';
  const label = `${kernelName} F${m} ${JSON.stringify({ ...c, ...extra })}`;
  process.env.CATDOG_WASM_WINOGRAD = String(m);
  try {
    tf.setBackend('wasm');
    assert.equal(wasmWinogradTileSize(xShape, wShape, 1, c.pad), m, `${label}: runs Winograd`);
    const actual = runKernel('wasm', kernelName, inputs, attrs);
    const expected = runKernel('cpu', kernelName, inputs, attrs);
    assert.deepEqual(actual.shape, expected.shape, `${label}: shape`);
    let scale = 0;
    let worst = 0;
    for (let i = 0; i < expected.values.length; i++) {
      scale = Math.max(scale, Math.abs(expected.values[i]!));
      worst = Math.max(worst, Math.abs(actual.values[i]! - expected.values[i]!));
    }
    assert.ok(scale > 1, `${label}: nonzero output`);
    assert.ok(worst <= TOLERANCE[m] * scale, `${label}: max abs error ${worst} (scale ${scale})`);
  } finally {
    delete process.env.CATDOG_WASM_WINOGRAD;
  }
}

let threads = 1;

before(async () => {
  threads = (await initBackend({ backend: 'wasm', log: () => {} })).threads;
  // Worker threads start asynchronously: wait for them (polled, up to 30 s on a loaded machine; usually ms).
  for (let i = 0; i < 600 && threads > 1 && wasmSimdWorkers() === 0; i++) await new Promise((r) => setTimeout(r, 50));
  await tf.setBackend('cpu');
  await tf.ready();
});

test('CATDOG_WASM_SIMD_KERNELS=0 turns Winograd off too', { skip: SIMD }, () => {
  tf.setBackend('wasm');
  assert.equal(wasmWinogradTileSize([20, 37, 37, 256], [3, 3, 256, 256], 1, 'same'), 0);
});

test('the SIMD kernels run with the expected threads', { skip }, () => {
  assert.ok(wasmSimdKernelsLoaded(), 'SIMD kernels loaded');
  if (CHILD) assert.equal(threads, 1, 'single-threaded build');
  else if (threads > 1) assert.equal(wasmSimdWorkers(), threads - 1, 'worker threads ready');
});

test('Winograd Conv2D matches cpu: map sizes not multiples of the tile, both paddings, channels, batches', {
  skip,
}, () => {
  let seed = 100;
  const cases: Array<{ B: number; H: number; W: number; Ci: number; Co: number; pad: Pad }> = [
    { B: 1, H: 9, W: 9, Ci: 16, Co: 16, pad: 'same' },
    { B: 3, H: 9, W: 9, Ci: 16, Co: 32, pad: 'valid' },
    { B: 1, H: 18, W: 18, Ci: 32, Co: 64, pad: 'same' },
    { B: 3, H: 18, W: 13, Ci: 64, Co: 48, pad: 'valid' },
    { B: 1, H: 37, W: 37, Ci: 128, Co: 64, pad: 'same' },
    { B: 3, H: 10, W: 7, Ci: 20, Co: 128, pad: 'same' },
    { B: 3, H: 4, W: 6, Ci: 16, Co: 16, pad: 'valid' }, // output smaller than one tile
  ];
  for (const m of [3, 4, 6] as const) for (const c of cases) check(m, 'Conv2D', c, {}, (seed += 3));
});

test('Winograd FusedConv2D (bias, relu / relu6 / linear) matches cpu, including Ci·Co > 64 k', { skip }, () => {
  let seed = 500;
  for (const m of [3, 4, 6] as const) {
    check(
      m,
      'FusedConv2D',
      { B: 3, H: 9, W: 11, Ci: 32, Co: 64, pad: 'same' },
      { bias: true, activation: 'relu' },
      (seed += 3),
    );
    check(
      m,
      'FusedConv2D',
      { B: 1, H: 18, W: 18, Ci: 64, Co: 32, pad: 'valid' },
      { bias: true, activation: 'relu6' },
      (seed += 3),
    );
    check(m, 'FusedConv2D', { B: 1, H: 13, W: 9, Ci: 16, Co: 16, pad: 'same' }, { activation: 'linear' }, (seed += 3));
    check(
      m,
      'FusedConv2D',
      { B: 1, H: 9, W: 9, Ci: 256, Co: 512, pad: 'same' },
      { bias: true, activation: 'relu' },
      (seed += 3),
    );
  }
});

test('the tile is chosen per layer, and only where Winograd applies', { skip }, () => {
  tf.setBackend('wasm');
  const tile = (x: Shape4, w: Shape4, s: number, pad: Pad, d = 1) => wasmWinogradTileSize(x, w, s, pad, d);
  // VGG16 at 150×150, batch 20: every 3×3 layer but the 3-channel first one.
  assert.equal(tile([20, 150, 150, 3], [3, 3, 3, 64], 1, 'same'), 0);
  assert.notEqual(tile([20, 150, 150, 64], [3, 3, 64, 64], 1, 'same'), 0);
  assert.notEqual(tile([20, 37, 37, 256], [3, 3, 256, 256], 1, 'same'), 0);
  assert.equal(tile([20, 18, 18, 512], [3, 3, 512, 512], 1, 'same'), 6, '18×18: F6 tiles fit exactly');
  assert.equal(tile([20, 9, 9, 512], [3, 3, 512, 512], 1, 'same'), 3, '9×9: F3 tiles fit exactly');
  // The book's convnet's layers with ≥ 32 input channels (3×3 'valid').
  assert.notEqual(tile([20, 74, 74, 32], [3, 3, 32, 64], 1, 'valid'), 0);
  // Not 3×3 stride 1 dilation 1, or channels the micro-kernel cannot take.
  assert.equal(tile([20, 74, 74, 32], [3, 3, 32, 64], 2, 'valid'), 0);
  assert.equal(tile([20, 74, 74, 32], [3, 3, 32, 64], 1, 'valid', 2), 0);
  assert.equal(tile([20, 74, 74, 32], [5, 5, 32, 64], 1, 'valid'), 0);
  assert.equal(tile([20, 74, 74, 32], [3, 3, 32, 40], 1, 'valid'), 0);
  assert.equal(tile([20, 74, 74, 30], [3, 3, 30, 64], 1, 'valid'), 0);
  process.env.CATDOG_WASM_WINOGRAD = '0';
  try {
    assert.equal(tile([20, 37, 37, 256], [3, 3, 256, 256], 1, 'same'), 0, 'CATDOG_WASM_WINOGRAD=0 turns it off');
  } finally {
    delete process.env.CATDOG_WASM_WINOGRAD;
  }
});

test('the same checks pass with the single-threaded wasm build', { skip: CHILD || skip }, () => {
  const file = fileURLToPath(import.meta.url);
  // Without NODE_TEST_CONTEXT (set for this file's own run), the child is a test run of its own.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], {
    env: { ...env, CATDOG_WASM_THREADS: '0', CATDOG_WINOGRAD_TEST_CHILD: '1' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(child.status, 0, `child run failed:\n${child.stdout}\n${child.stderr}`);
  assert.match(child.stdout, /^# pass 4$/m, `child ran the checks:\n${child.stdout}`);
});
