// The memory-bound passes of a training step that the wasm kernels share between threads (the ReLU gradient,
// MaxPoolGrad 2×2 by slabs of rows, the bias gradient's Sum by blocks of rows), and a Dense layer's input gradient
// dy·Wᵀ by chunks of W's rows, against their definitions (plain
// loops; test/backend/kernels.test.ts holds them against the cpu backend on smaller shapes), with 2
// threads: sizes that give several chunks and a short last one, odd map sizes (rows and columns outside every
// pooling window), and the convnet's first layer at batch 20. The other kernel tests run with the suite's one
// thread, which leaves these chunks to the main thread alone.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, wasmSimdKernelsLoaded, wasmSimdWorkers } from '@catdog/backend';
import { isolatePlanCache, random, runKernel } from '../helpers/kernels.js';

isolatePlanCache();
const SIMD = process.env.CATDOG_WASM_SIMD_KERNELS !== '0';
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const input = (shape: number[], seed: number) => ({ shape, values: random(size(shape), seed) });

before(async () => {
  const choice = await initBackend({ backend: 'wasm', threads: 2, log: () => {} });
  assert.equal(choice.threads, 2);
  for (let i = 0; i < 600 && SIMD && wasmSimdWorkers() < 1; i++) await new Promise((r) => setTimeout(r, 50));
});

function assertSame(got: Float32Array, want: Float32Array, label: string, tolerance = 0): void {
  assert.equal(got.length, want.length, label);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]!));
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  }
  assert.ok(scale > 0, `${label}: nonzero output`);
  assert.ok(worst <= tolerance * scale, `${label}: max abs error ${worst} (scale ${scale})`);
}

test('the SIMD kernels run on both threads', { skip: !SIMD && 'CATDOG_WASM_SIMD_KERNELS=0' }, () => {
  assert.ok(wasmSimdKernelsLoaded());
  assert.equal(wasmSimdWorkers(), 1);
});

test('ReLU gradient shared between threads: x > 0 ? dy : 0 everywhere (several chunks, a short last one)', () => {
  // 16 384 vectors per chunk: 20×148×148×32 is 215 chunks; 3×41×37×36 (163 836 floats) ends mid-chunk.
  for (const shape of [
    [20, 148, 148, 32],
    [3, 41, 37, 36],
    [5, 7, 3],
  ]) {
    const x = input(shape, 11);
    const dy = input(shape, 12);
    const want = dy.values.map((g, i) => (x.values[i]! > 0 ? g : 0));
    assertSame(runKernel('wasm', 'CatdogReluGrad', { dy, x }, {}).values, want, JSON.stringify(shape));
  }
});

/** MaxPoolGrad 2×2 stride 2 'valid', as the cpu backend: dy at each window's first maximum, 0 elsewhere. */
function maxPoolGrad(x: Float32Array, dy: Float32Array, [B, H, W, C]: readonly number[]): Float32Array {
  const Ho = H >> 1;
  const Wo = W >> 1;
  const dx = new Float32Array(x.length);
  for (let b = 0; b < B; b++)
    for (let i = 0; i < Ho; i++)
      for (let j = 0; j < Wo; j++)
        for (let c = 0; c < C; c++) {
          let best = -1;
          for (const [di, dj] of [
            [0, 0],
            [0, 1],
            [1, 0],
            [1, 1],
          ] as const) {
            const at = ((b * H + 2 * i + di) * W + 2 * j + dj) * C + c;
            if (best < 0 || x[at]! > x[best]!) best = at;
          }
          dx[best] = dy[((b * Ho + i) * Wo + j) * C + c]!;
        }
  return dx;
}

test('MaxPoolGrad 2×2 by slabs of rows: the convnet’s layers, odd maps (rows and columns outside every window)', () => {
  for (const shape of [
    [20, 148, 148, 32], // the convnet's first pooling at batch 20
    [20, 34, 34, 128],
    [3, 67, 45, 64],
    [2, 9, 11, 4],
  ] as const) {
    const [B, H, W, C] = shape;
    // Ties included: ReLU outputs have many zeros, and the first maximum of a window takes the gradient.
    const x = input([...shape], 13);
    x.values = x.values.map((v) => Math.max(0, Math.round(v * 4) / 4));
    const dy = input([B, H >> 1, W >> 1, C], 14);
    const got = runKernel(
      'wasm',
      'MaxPoolGrad',
      { dy, input: x },
      { filterSize: [2, 2], strides: [2, 2], pad: 'valid' },
    );
    assertSame(got.values, maxPoolGrad(x.values, dy.values, shape), JSON.stringify(shape));
  }
});

test('Sum over leading axes by blocks of rows on both threads (bias gradients): the sums within float32 rounding', () => {
  for (const shape of [
    [20, 148, 148, 32], // 428 blocks of 1024 rows
    [20, 72, 72, 64],
    [7, 33, 31, 12], // a short last block
    [20, 512],
  ]) {
    const x = input(shape, 15);
    const inner = shape.at(-1)!;
    const want = new Float64Array(inner);
    for (let i = 0; i < x.values.length; i++) want[i % inner] += x.values[i]!;
    const got = runKernel('wasm', 'Sum', { x }, { axis: [...shape.keys()].slice(0, -1), keepDims: false });
    assertSame(got.values, Float32Array.from(want), JSON.stringify(shape), 1e-5);
  }
});

test('A·Bᵀ by chunks of B’s rows on both threads (a Dense input gradient dy·Wᵀ): the products in float32', () => {
  // The fine-tuned MobileNetV2 head's dy·Wᵀ at batch 20 (32000 rows of W: 125 chunks), and an odd batch.
  for (const [M, K, N] of [
    [20, 256, 32000],
    [3, 512, 6276],
  ] as const) {
    const a = input([M, K], 16);
    const b = input([N, K], 17);
    const want = new Float32Array(M * N);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let sum = 0;
        for (let k = 0; k < K; k++) sum += a.values[m * K + k]! * b.values[n * K + k]!;
        want[m * N + n] = sum;
      }
    const got = runKernel('wasm', 'BatchMatMul', { a, b }, { transposeA: false, transposeB: true });
    assert.deepEqual(got.shape, [M, N]);
    assertSame(got.values, want, JSON.stringify({ M, K, N }), 1e-5);
  }
});
