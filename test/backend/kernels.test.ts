// Every wasm training kernel registered by @catdog/backend against the cpu backend's reference
// kernel, over a grid of shapes, strides, paddings, dilations, channel counts and batch sizes.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { errorAndScale, isolatePlanCache, random, runKernel } from '../helpers/kernels.js';
import { initBackend, rmsprop, wasmSimdKernelsLoaded, wasmSimdWorkers, wasmTrainingKernelNames } from '@catdog/backend';

type Pad = 'valid' | 'same';

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function assertClose(
  actual: { shape: number[]; values: Float32Array },
  expected: { shape: number[]; values: Float32Array },
  label: string,
): void {
  assert.deepEqual(actual.shape, expected.shape, `${label}: shape`);
  const { worst, scale: largest } = errorAndScale(actual.values, expected.values);
  const scale = Math.max(1, largest);
  assert.ok(worst <= 1e-5 * scale * 10, `${label}: max abs error ${worst} (scale ${scale})`);
}

function compare(
  kernelName: string,
  inputs: Record<string, { shape: number[]; values: Float32Array }>,
  attrs: Record<string, unknown>,
  label: string,
): void {
  assertClose(runKernel('wasm', kernelName, inputs, attrs), runKernel('cpu', kernelName, inputs, attrs), label);
}

/** A [k, k, C, m] filter with d-1 zeros between taps: dilation d equals dilation 1 with it. */
function dilateFilter(
  values: Float32Array,
  k: number,
  C: number,
  m: number,
  d: number,
): { shape: number[]; values: Float32Array } {
  const K = (k - 1) * d + 1;
  const out = new Float32Array(K * K * C * m);
  for (let i = 0; i < k; i++)
    for (let j = 0; j < k; j++) {
      out.set(values.subarray((i * k + j) * C * m, (i * k + j + 1) * C * m), (i * d * K + j * d) * C * m);
    }
  return { shape: [K, K, C, m], values: out };
}

function convCases(): Array<{
  B: number;
  H: number;
  W: number;
  Ci: number;
  Co: number;
  kh: number;
  kw: number;
  s: number;
  pad: Pad;
}> {
  const cases = [];
  for (const [B, H, W] of [
    [1, 7, 7],
    [3, 8, 11],
    [2, 5, 4],
    // Rows of >= 8 outputs at stride 2 too (the direct filter gradient needs them).
    [2, 9, 17],
  ] as const) {
    for (const [Ci, Co] of [
      [1, 2],
      [3, 8],
      [6, 5],
      // Co % 16 == 0: the direct SIMD filter gradient (odd and even Ci).
      [3, 16],
      [1, 32],
      [4, 16],
      [7, 16],
      // Ci % 16 == 0: the direct SIMD input gradient.
      [16, 4],
      [32, 16],
    ] as const) {
      for (const [kh, kw] of [
        [1, 1],
        [3, 3],
        [2, 3],
      ] as const) {
        if (kh > H || kw > W) continue;
        for (const s of [1, 2])
          for (const pad of ['valid', 'same'] as Pad[]) cases.push({ B, H, W, Ci, Co, kh, kw, s, pad });
      }
    }
  }
  return cases;
}

let wasmThreads = 1;

// The convolutions below tune their kernel plans at first use (autotune.ts), into a cache of this test's own.
isolatePlanCache();

before(async () => {
  wasmThreads = (await initBackend({ backend: 'wasm', log: () => {} })).threads;
  // With the threaded build, wait for the SIMD worker threads so the checks below cover the
  // filter gradient split between threads, not only the main thread's share.
  // Worker threads start asynchronously: wait for them (polled, up to 30 s on a loaded machine; usually ms).
  for (
    let i = 0;
    i < 600 && wasmThreads > 1 && process.env.CATDOG_WASM_SIMD_KERNELS !== '0' && wasmSimdWorkers() === 0;
    i++
  ) {
    await new Promise((r) => setTimeout(r, 50));
  }
  await tf.setBackend('cpu');
  await tf.ready();
});

test('the package registers the training kernels for wasm', () => {
  for (const name of [
    'Conv2DBackpropInput',
    'Conv2DBackpropFilter',
    'DepthwiseConv2dNativeBackpropInput',
    'DepthwiseConv2dNativeBackpropFilter',
  ]) {
    assert.ok(wasmTrainingKernelNames.includes(name), name);
    assert.ok(tf.getKernel(name, 'wasm'), `${name} registered for wasm`);
  }
  // The SIMD kernels must really load (else the checks below would only cover the JS loops).
  assert.equal(wasmSimdKernelsLoaded(), process.env.CATDOG_WASM_SIMD_KERNELS !== '0');
  if (wasmThreads > 1 && process.env.CATDOG_WASM_SIMD_KERNELS !== '0' && process.env.CATDOG_WASM_SIMD_WORKERS !== '0') {
    assert.equal(wasmSimdWorkers(), wasmThreads - 1, 'SIMD worker threads ready');
  }
});

test('Conv2DBackpropInput matches cpu over shapes, strides and paddings', () => {
  let n = 0;
  for (const c of convCases()) {
    const info = tf.backend_util.computeConv2DInfo([c.B, c.H, c.W, c.Ci], [c.kh, c.kw, c.Ci, c.Co], c.s, 1, c.pad);
    const dyShape = [c.B, info.outHeight, info.outWidth, c.Co];
    const wShape = [c.kh, c.kw, c.Ci, c.Co];
    compare(
      'Conv2DBackpropInput',
      {
        dy: { shape: dyShape, values: random(size(dyShape), ++n) },
        filter: { shape: wShape, values: random(size(wShape), ++n) },
      },
      { inputShape: [c.B, c.H, c.W, c.Ci], strides: [c.s, c.s], pad: c.pad, dataFormat: 'NHWC' },
      `dx ${JSON.stringify(c)}`,
    );
  }
  assert.ok(n > 300);
});

test('Conv2D (forward) matches cpu over shapes, strides, paddings and dilations', () => {
  let n = 7000;
  for (const c of convCases()) {
    for (const d of c.s === 1 ? [1, 2] : [1]) {
      if ((c.kh - 1) * d + 1 > c.H || (c.kw - 1) * d + 1 > c.W) continue;
      const xShape = [c.B, c.H, c.W, c.Ci];
      const wShape = [c.kh, c.kw, c.Ci, c.Co];
      compare(
        'Conv2D',
        {
          x: { shape: xShape, values: random(size(xShape), ++n) },
          filter: { shape: wShape, values: random(size(wShape), ++n) },
        },
        { strides: [c.s, c.s], pad: c.pad, dataFormat: 'NHWC', dilations: [d, d] },
        `conv ${JSON.stringify({ ...c, d })}`,
      );
    }
  }
  assert.ok(n > 7300);
});

test('Conv2DBackpropFilter matches cpu over shapes, strides and paddings', () => {
  let n = 0;
  for (const c of convCases()) {
    const info = tf.backend_util.computeConv2DInfo([c.B, c.H, c.W, c.Ci], [c.kh, c.kw, c.Ci, c.Co], c.s, 1, c.pad);
    const xShape = [c.B, c.H, c.W, c.Ci];
    const dyShape = [c.B, info.outHeight, info.outWidth, c.Co];
    compare(
      'Conv2DBackpropFilter',
      {
        x: { shape: xShape, values: random(size(xShape), ++n) },
        dy: { shape: dyShape, values: random(size(dyShape), ++n) },
      },
      { filterShape: [c.kh, c.kw, c.Ci, c.Co], strides: [c.s, c.s], pad: c.pad, dataFormat: 'NHWC' },
      `dW ${JSON.stringify(c)}`,
    );
  }
  assert.ok(n > 300);
});

test('Conv2D gradients with explicit padding and rectangular strides match cpu', () => {
  const xShape = [2, 9, 10, 3];
  const wShape = [3, 2, 3, 4];
  const pad = [
    [0, 0],
    [1, 2],
    [0, 1],
    [0, 0],
  ];
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    wShape as [number, number, number, number],
    [2, 1],
    1,
    pad as tf.backend_util.ExplicitPadding,
  );
  const dyShape = [2, info.outHeight, info.outWidth, 4];
  const attrs = { strides: [2, 1], pad, dataFormat: 'NHWC' };
  compare(
    'Conv2DBackpropInput',
    {
      dy: { shape: dyShape, values: random(size(dyShape), 7) },
      filter: { shape: wShape, values: random(size(wShape), 8) },
    },
    { ...attrs, inputShape: xShape },
    'dx explicit',
  );
  compare(
    'Conv2DBackpropFilter',
    {
      x: { shape: xShape, values: random(size(xShape), 9) },
      dy: { shape: dyShape, values: random(size(dyShape), 10) },
    },
    { ...attrs, filterShape: wShape },
    'dW explicit',
  );
});

test('SIMD convolutions with explicit (asymmetric) padding match cpu: forward, dx and dW', () => {
  // 16 channels in and out: the SIMD loops; stride 1 (forward) and 1, 2 (gradients).
  const xShape = [2, 9, 12, 16];
  const wShape = [3, 3, 16, 16];
  const pad = [
    [0, 0],
    [1, 0],
    [0, 1],
    [0, 0],
  ];
  for (const s of [1, 2]) {
    const info = tf.backend_util.computeConv2DInfo(
      xShape as [number, number, number, number],
      wShape as [number, number, number, number],
      s,
      1,
      pad as tf.backend_util.ExplicitPadding,
    );
    const dyShape = [2, info.outHeight, info.outWidth, 16];
    const attrs = { strides: [s, s], pad, dataFormat: 'NHWC' };
    const x = { shape: xShape, values: random(size(xShape), 11 + s) };
    const w = { shape: wShape, values: random(size(wShape), 13 + s) };
    const dy = { shape: dyShape, values: random(size(dyShape), 15 + s) };
    compare('Conv2D', { x, filter: w }, { ...attrs, dilations: [1, 1] }, `conv explicit s${s}`);
    compare('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: xShape }, `dx explicit s${s}`);
    compare('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: wShape }, `dW explicit s${s}`);
  }
});

test('depthwise conv gradients match cpu over shapes, strides, dilations, multipliers and paddings', () => {
  let n = 0;
  for (const [B, H, W] of [
    [1, 7, 7],
    [3, 8, 9],
  ] as const) {
    for (const C of [1, 4, 7, 16]) {
      // C % 4 == 0 with m = 1: the SIMD runs
      for (const m of [1, 2]) {
        for (const k of [1, 3]) {
          for (const [s, d] of [
            [1, 1],
            [2, 1],
            [1, 2],
          ] as const) {
            for (const pad of ['valid', 'same'] as Pad[]) {
              const xShape = [B, H, W, C];
              const wShape = [k, k, C, m];
              const info = tf.backend_util.computeConv2DInfo(
                xShape as [number, number, number, number],
                wShape as [number, number, number, number],
                s,
                d,
                pad,
                undefined,
                true,
              );
              const dyShape = [B, info.outHeight, info.outWidth, C * m];
              const attrs = { strides: [s, s], dilations: [d, d], pad };
              const label = JSON.stringify({ B, H, W, C, m, k, s, d, pad });
              const dy = { shape: dyShape, values: random(size(dyShape), ++n) };
              const filter = { shape: wShape, values: random(size(wShape), ++n) };
              const x = { shape: xShape, values: random(size(xShape), ++n) };
              if (d === 1) {
                compare(
                  'DepthwiseConv2dNativeBackpropInput',
                  { dy, filter },
                  { ...attrs, inputShape: xShape },
                  `depthwise dx ${label}`,
                );
                compare(
                  'DepthwiseConv2dNativeBackpropFilter',
                  { x, dy },
                  { ...attrs, filterShape: wShape },
                  `depthwise dW ${label}`,
                );
              } else {
                // The cpu kernels ignore dilations; the reference is dilation 1 with a zero-dilated filter.
                const big = dilateFilter(filter.values, k, C, m, d);
                const plain = { strides: [s, s], dilations: [1, 1], pad };
                assertClose(
                  runKernel(
                    'wasm',
                    'DepthwiseConv2dNativeBackpropInput',
                    { dy, filter },
                    { ...attrs, inputShape: xShape },
                  ),
                  runKernel(
                    'cpu',
                    'DepthwiseConv2dNativeBackpropInput',
                    { dy, filter: big },
                    { ...plain, inputShape: xShape },
                  ),
                  `depthwise dx ${label}`,
                );
                const gBig = runKernel(
                  'cpu',
                  'DepthwiseConv2dNativeBackpropFilter',
                  { x, dy },
                  { ...plain, filterShape: big.shape },
                );
                const K = big.shape[0]!;
                const taps = new Float32Array(size(wShape));
                for (let i = 0; i < k; i++)
                  for (let j = 0; j < k; j++) {
                    taps.set(
                      gBig.values.subarray((i * d * K + j * d) * C * m, (i * d * K + j * d + 1) * C * m),
                      (i * k + j) * C * m,
                    );
                  }
                assertClose(
                  runKernel(
                    'wasm',
                    'DepthwiseConv2dNativeBackpropFilter',
                    { x, dy },
                    { ...attrs, filterShape: wShape },
                  ),
                  { shape: wShape, values: taps },
                  `depthwise dW ${label}`,
                );
              }
            }
          }
        }
      }
    }
  }
  assert.ok(n > 200);
});

test('end-to-end gradients of conv2d + depthwise + relu through tf.grads match cpu', () => {
  const xShape = [2, 12, 12, 3];
  const x0 = random(size(xShape), 101);
  const w1 = random(3 * 3 * 3 * 8, 102);
  const w2 = random(3 * 3 * 8 * 1, 103);
  const grads = (backend: string) => {
    tf.setBackend(backend);
    return tf.tidy(() => {
      const x = tf.tensor4d(x0, xShape as [number, number, number, number]);
      const a = tf.tensor4d(w1, [3, 3, 3, 8]);
      const b = tf.tensor4d(w2, [3, 3, 8, 1]);
      const f = (x: tf.Tensor4D, a: tf.Tensor4D, b: tf.Tensor4D) =>
        tf
          .depthwiseConv2d(tf.relu(tf.conv2d(x, a, 2, 'same')), b, 1, 'valid')
          .square()
          .mean();
      return tf
        .grads(f as (...args: tf.Tensor[]) => tf.Tensor)([x, a, b])
        .map((g) => g.dataSync() as Float32Array);
    });
  };
  const expected = grads('cpu');
  const actual = grads('wasm');
  for (let k = 0; k < expected.length; k++) {
    const e = expected[k]!;
    const a = actual[k]!;
    let scale = 1e-6;
    for (const v of e) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < e.length; i++) assert.ok(Math.abs(a[i]! - e[i]!) <= 1e-4 * scale, `grad ${k}[${i}]`);
  }
});

test('MaxPoolGrad matches cpu over pool sizes, strides, paddings, channels and batch sizes', () => {
  let n = 500;
  let count = 0;
  for (const [B, H, W, C] of [
    [1, 6, 6, 1],
    [2, 9, 7, 5],
    [3, 8, 8, 16],
    // Channel counts a multiple of 4 take the SIMD kernel for 2×2/2 windows; odd sizes leave a
    // last row/column outside every window.
    [2, 9, 7, 8],
    [1, 5, 6, 4],
    [2, 7, 9, 12],
  ] as const) {
    for (const f of [2, 3]) {
      for (const s of [1, 2]) {
        for (const pad of ['valid', 'same'] as Pad[]) {
          const xShape = [B, H, W, C];
          const x = { shape: xShape, values: random(size(xShape), ++n) };
          const attrs = { filterSize: [f, f], strides: [s, s], pad };
          const y = runKernel('cpu', 'MaxPool', { x }, attrs);
          const dy = { shape: y.shape, values: random(size(y.shape), ++n) };
          compare(
            'MaxPoolGrad',
            { dy, input: x, output: y },
            attrs,
            `maxpool grad ${JSON.stringify({ B, H, W, C, f, s, pad })}`,
          );
          count++;
        }
      }
    }
  }
  assert.equal(count, 48);
});

test('Sum matches cpu for leading-axis (bias gradient) and other reductions', () => {
  // 6 channels: the JS loop; 8 channels: the SIMD kernel, with more rows than one float32 block.
  for (const xShape of [
    [3, 5, 4, 6],
    [3, 5, 4, 8],
    [2, 70, 60, 8],
  ]) {
    const x = { shape: xShape, values: random(size(xShape), 900) };
    for (const [axis, keepDims] of [
      [[0, 1, 2], false],
      [[0, 1, 2], true],
      [[0], false],
      [[0, 1], true],
      [[3], false],
      [[1, 2], false],
      [[0, 1, 2, 3], false],
      [-1, true],
    ] as const) {
      compare(
        'Sum',
        { x },
        { axis, keepDims },
        `sum ${JSON.stringify(xShape)} axis ${JSON.stringify(axis)} keepDims ${keepDims}`,
      );
    }
  }
});

test('BatchMatMul matches cpu for every transpose combination, ranks 2 and 3, batched and not', () => {
  let n = 1000;
  for (const [M, K, N] of [
    [3, 5, 4],
    [20, 70, 9],
    [4, 6, 50],
    [131, 20, 32], // Aᵀ·B with N % 16 == 0: the SIMD product (odd M, three blocks of rows)
    [5, 700, 96], // A·B with few rows and a large B: the chunked SIMD product (a short last chunk)
    [137, 200, 512], // Aᵀ·B with K in slices of 128 (a short last one) and 3–4 blocks of rows (a short last one)
    [7, 256, 1300], // A·Bᵀ on the row-dot-product loop: odd M (a zero row added), a short last chunk of B's rows
    [20, 68, 1024], // A·Bᵀ: K not a multiple of 16, four whole chunks
  ] as const) {
    for (const batch of [0, 1, 3]) {
      for (const transposeA of [false, true]) {
        for (const transposeB of [false, true]) {
          const pre = batch === 0 ? [] : [batch];
          const aShape = [...pre, ...(transposeA ? [K, M] : [M, K])];
          const bShape = [...pre, ...(transposeB ? [N, K] : [K, N])];
          compare(
            'BatchMatMul',
            {
              a: { shape: aShape, values: random(size(aShape), ++n) },
              b: { shape: bShape, values: random(size(bShape), ++n) },
            },
            { transposeA, transposeB },
            `matmul ${JSON.stringify({ M, K, N, batch, transposeA, transposeB })}`,
          );
        }
      }
    }
  }
});

test('_FusedMatMul (Dense outside training) matches cpu: the SIMD product with bias and each activation, and what XNNPACK keeps', () => {
  let n = 1500;
  const cases: Array<{
    M: number;
    K: number;
    N: number;
    bias?: number[];
    activation: string;
    tA?: boolean;
    tB?: boolean;
    prelu?: boolean;
  }> = [
    // The small-rows SIMD product (M ≤ 64, N % 16 == 0, K·N ≥ 64 k): a validation batch of the extract head, scaled down.
    ...['linear', 'relu', 'relu6', 'sigmoid', 'elu', 'leakyrelu'].map((activation) => ({
      M: 20,
      K: 700,
      N: 96,
      bias: [96],
      activation,
    })),
    { M: 1, K: 4100, N: 32, activation: 'relu' }, // one row, no bias, a short last chunk of K
    { M: 64, K: 300, N: 256, bias: [1, 256], activation: 'linear' },
    { M: 7, K: 1000, N: 80, bias: [80], activation: 'relu' },
    // Transposed operands: BatchMatMul's products, then bias and activation (tfjs' own kernel is wrong for transposeA).
    { M: 20, K: 700, N: 96, bias: [96], activation: 'relu', tA: true },
    { M: 7, K: 5, N: 16, bias: [16], activation: 'relu', tA: true },
    { M: 20, K: 700, N: 96, bias: [20, 96], activation: 'linear', tB: true },
    { M: 9, K: 30, N: 12, activation: 'sigmoid', tA: true, tB: true },
    // tfjs' kernel (XNNPACK) keeps these: too many rows, N % 16 != 0, PReLU.
    { M: 65, K: 1100, N: 64, bias: [64], activation: 'relu' },
    { M: 20, K: 700, N: 90, bias: [90], activation: 'relu' },
    { M: 20, K: 700, N: 96, bias: [96], activation: 'prelu', prelu: true },
  ];
  for (const c of cases) {
    const pre = [1]; // tfjs-core's fused.matMul hands its kernel rank-3 operands
    const aShape = [...pre, ...(c.tA ? [c.K, c.M] : [c.M, c.K])];
    const bShape = [...pre, ...(c.tB ? [c.N, c.K] : [c.K, c.N])];
    const inputs: Record<string, { shape: number[]; values: Float32Array }> = {
      a: { shape: aShape, values: random(size(aShape), ++n) },
      b: { shape: bShape, values: random(size(bShape), ++n) },
    };
    if (c.bias) inputs.bias = { shape: c.bias, values: random(size(c.bias), ++n) };
    if (c.prelu) inputs.preluActivationWeights = { shape: [c.N], values: random(c.N, ++n) };
    compare(
      '_FusedMatMul',
      inputs,
      { transposeA: c.tA ?? false, transposeB: c.tB ?? false, activation: c.activation, leakyreluAlpha: 0.3 },
      `fused matmul ${JSON.stringify(c)}`,
    );
  }
});

test('Identity shares data safely: a clone outlives its source', () => {
  tf.setBackend('wasm');
  const a = tf.tensor1d([1, 2, 3]);
  const b = a.clone();
  a.dispose();
  assert.deepEqual(Array.from(b.dataSync()), [1, 2, 3]);
  const v = tf.variable(tf.tensor1d([4, 5]));
  const snapshot = tf.engine().runKernel('Identity', { x: v }) as tf.Tensor;
  v.assign(tf.tensor1d([6, 7]));
  assert.deepEqual(Array.from(snapshot.dataSync()), [4, 5]);
  assert.deepEqual(Array.from(v.dataSync()), [6, 7]);
  b.dispose();
  v.dispose();
  snapshot.dispose();
});

test('Slice copies what cpu copies: ranks 1–5, cut and whole trailing axes, negative sizes, int32, bool, empty', () => {
  const cases: Array<{ shape: number[]; begin: number[]; size: number[]; dtype?: 'float32' | 'int32' | 'bool' }> = [
    { shape: [7], begin: [2], size: [4] },
    { shape: [5, 6], begin: [1, 0], size: [3, 6] }, // whole rows: one run
    { shape: [5, 6], begin: [1, 2], size: [3, 3] },
    { shape: [4, 15, 15, 24], begin: [0, 0, 0, 0], size: [-1, 14, 14, -1] }, // ZeroPadding2D's gradient
    { shape: [4, 15, 15, 24], begin: [1, 1, 1, 3], size: [2, 13, 12, 17] },
    { shape: [3, 4, 5, 6], begin: [0, 1, 0, 0], size: [3, 2, 5, 6] },
    { shape: [2, 3, 4, 5, 6], begin: [1, 0, 2, 1, 0], size: [1, 3, 2, 3, 6] },
    { shape: [4, 6], begin: [1, 1], size: [2, 4], dtype: 'int32' },
    { shape: [4, 6], begin: [1, 1], size: [2, 4], dtype: 'bool' },
    { shape: [4, 6], begin: [1, 1], size: [0, 4] },
  ];
  for (const c of cases) {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const values = Array.from(random(n, n), (v) => (c.dtype === 'float32' || !c.dtype ? v : Math.round(v * 50)));
    const results = ['wasm', 'cpu'].map((backend) => {
      tf.setBackend(backend);
      return tf.tidy(() => {
        const x = tf.tensor(values, c.shape, c.dtype ?? 'float32');
        const y = tf.slice(x, c.begin, c.size);
        return { shape: y.shape, values: Array.from(y.dataSync()) };
      });
    });
    assert.deepEqual(results[0], results[1], JSON.stringify(c));
  }
  tf.setBackend('wasm');
  assert.ok(wasmTrainingKernelNames.includes('Slice'));
});

test('FusedBatchNorm matches cpu with and without scale/offset, per-channel and full-shape statistics', () => {
  let n = 2000;
  for (const xShape of [
    [2, 5, 4, 7],
    [6, 3],
  ]) {
    const C = xShape[xShape.length - 1]!;
    const x = { shape: xShape, values: random(size(xShape), ++n) };
    const stat = (shift: number) => ({ shape: [C], values: random(C, ++n).map((v) => v + shift) });
    const mean = stat(0);
    const variance = stat(1.5);
    for (const withScale of [false, true]) {
      for (const withOffset of [false, true]) {
        const inputs: Record<string, { shape: number[]; values: Float32Array }> = { x, mean, variance };
        if (withScale) inputs.scale = stat(0.2);
        if (withOffset) inputs.offset = stat(0);
        compare(
          'FusedBatchNorm',
          inputs,
          { varianceEpsilon: 1e-3 },
          `batchnorm ${xShape} scale ${withScale} offset ${withOffset}`,
        );
      }
    }
    // Statistics shaped like x (not per channel) go through the backend's own kernel.
    const full = { shape: xShape, values: random(size(xShape), ++n).map((v) => v + 1.5) };
    compare(
      'FusedBatchNorm',
      { x, mean: full, variance: full },
      { varianceEpsilon: 1e-3 },
      `batchnorm ${xShape} full-shape stats`,
    );
  }
});

test('batchNorm gradients (all five inputs) match autodiff of the same formula in primitive ops', () => {
  const xShape = [3, 4, 5, 6] as [number, number, number, number];
  const vals = {
    x: random(size(xShape), 3001),
    mean: random(6, 3002),
    variance: random(6, 3003).map((v) => v + 1.5),
    scale: random(6, 3004),
    offset: random(6, 3005),
    w: random(size(xShape), 3006),
  };
  const eps = 1e-3;
  const grads = (backend: string, primitive: boolean) => {
    tf.setBackend(backend);
    return tf.tidy(() => {
      const w = tf.tensor(vals.w, xShape);
      const args = [
        tf.tensor(vals.x, xShape),
        tf.tensor1d(vals.mean),
        tf.tensor1d(vals.variance),
        tf.tensor1d(vals.scale),
        tf.tensor1d(vals.offset),
      ];
      const f = (x: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) =>
        tf.sum(
          tf.mul(
            primitive
              ? tf.add(tf.mul(tf.mul(tf.sub(x, m), tf.rsqrt(tf.add(v, tf.scalar(eps)))), s), o)
              : tf.batchNorm(x, m as tf.Tensor1D, v as tf.Tensor1D, o as tf.Tensor1D, s as tf.Tensor1D, eps),
            w,
          ),
        );
      return tf
        .grads(f as (...a: tf.Tensor[]) => tf.Tensor)(args)
        .map((g) => ({ shape: g.shape, values: g.dataSync() as Float32Array }));
    });
  };
  const reference = grads('cpu', true);
  for (const backend of ['wasm', 'cpu']) {
    const actual = grads(backend, false);
    reference.forEach((r, i) => assertClose(actual[i]!, r, `${backend} batchNorm grad of input ${i}`));
  }
});

test('ReLU gradient on wasm matches cpu (sizes not a multiple of 4, exact zeros)', () => {
  for (const shape of [[3, 5, 7], [2, 8], [1]]) {
    const xv = random(size(shape), 4000 + shape.length);
    for (let i = 0; i < xv.length; i += 3) xv[i] = 0; // step(0) = 0: no gradient at 0
    const dyv = random(size(shape), 5000 + shape.length);
    const grad = (backend: string) => {
      tf.setBackend(backend);
      return tf.tidy(() => {
        const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.relu(x), tf.tensor(dyv, shape))))(tf.tensor(xv, shape));
        return { shape: g.shape, values: g.dataSync() as Float32Array };
      });
    };
    const actual = grad('wasm');
    assertClose(actual, grad('cpu'), `relu grad ${JSON.stringify(shape)}`);
    for (let i = 0; i < xv.length; i++)
      assert.equal(actual.values[i], xv[i]! > 0 ? dyv[i] : 0, `relu grad element ${i}`);
  }
});

test('ClipByValue gradient (ReLU6) on wasm matches cpu, bounds included, NaN gives 0', () => {
  for (const shape of [[3, 5, 7], [2, 8], [1]]) {
    const xv = random(size(shape), 6000 + shape.length).map((v) => v * 8);
    for (let i = 0; i < xv.length; i += 5) xv[i] = i % 2 ? 0 : 6; // exactly at the bounds: gradient passes
    if (xv.length > 3) xv[3] = NaN;
    const dyv = random(size(shape), 7000 + shape.length);
    const grad = (backend: string) => {
      tf.setBackend(backend);
      return tf.tidy(() => {
        const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.clipByValue(x, 0, 6), tf.tensor(dyv, shape))))(
          tf.tensor(xv, shape),
        );
        return { shape: g.shape, values: g.dataSync() as Float32Array };
      });
    };
    const actual = grad('wasm');
    assert.deepEqual(actual, grad('cpu'), `clip grad ${JSON.stringify(shape)}`);
    for (let i = 0; i < xv.length; i++)
      assert.equal(actual.values[i], xv[i]! >= 0 && xv[i]! <= 6 ? dyv[i] : 0, `element ${i}`);
  }
});

test("rmsprop(): the fused wasm update gives tf.train.rmsprop's values bit for bit, with its slots", async () => {
  tf.setBackend('wasm');
  const shapes = [[1003], [7, 64, 33]];
  const run = async (optimizer: tf.Optimizer) => {
    const vars = shapes.map((s, k) => tf.tidy(() => tf.variable(tf.tensor(random(size(s), 8000 + k), s))));
    for (let step = 0; step < 3; step++) {
      tf.tidy(() =>
        optimizer.applyGradients(
          vars.map((v, k) => ({ name: v.name, tensor: tf.tensor(random(v.size, 9000 + 10 * step + k), v.shape) })),
        ),
      );
    }
    const values = vars.map((v) => Array.from(v.dataSync()));
    const weights = await optimizer.getWeights();
    const slots = weights.map((w) => [w.name.replace(/^.*?\//, ''), Array.from(w.tensor.dataSync())]);
    weights.forEach((w) => w.tensor.dispose());
    optimizer.dispose();
    vars.forEach((v) => v.dispose());
    return { values, slots };
  };
  for (const momentum of [0, 0.5]) {
    const before = tf.memory().numTensors;
    const reference = await run(tf.train.rmsprop(0.01, 0.9, momentum));
    const fused = await run(rmsprop(0.01, 0.9, momentum));
    assert.deepEqual(fused.values, reference.values, `momentum ${momentum}: variables`);
    assert.deepEqual(fused.slots, reference.slots, `momentum ${momentum}: slots (names and values)`);
    assert.equal(fused.slots.length, 1 + 2 * shapes.length, 'iterations, then ms and momentum per variable');
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  }
});
