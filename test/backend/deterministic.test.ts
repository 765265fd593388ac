// Every multi-threaded wasm kernel is bit-reproducible at a fixed thread count and plan (issue 12: a resumed run must
// retrace the uninterrupted one): with 2 threads, each kernel and plan runs several times on the same inputs and
// every output must equal the first bit for bit, including a first call made while the SIMD worker threads are still
// starting (the work is split by the thread count, not by the workers that happen to be up). Reductions split
// between threads (the filter gradient's images) sum per-slice partials in slice order, never in completion order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { isolatePlanCache, random, runKernel, type KernelInputs } from '../helpers/kernels.js';
import { initBackend, resetKernelPlans, rmsprop, wasmSimdKernelsLoaded, wasmSimdWorkers } from '@catdog/backend';

const THREADS = 2;
const REPS = 4;
const SIMD = process.env.CATDOG_WASM_SIMD_KERNELS !== '0';
const saved = { plan: process.env.CATDOG_KERNEL_PLAN, tune: process.env.CATDOG_AUTOTUNE };

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const input = (shape: number[], seed: number) => ({ shape, values: random(size(shape), seed) });

interface Case {
  label: string;
  kernel: string;
  /** CATDOG_KERNEL_PLAN for the case (unset: the kernel has no plan, or the default one). */
  plan?: string;
  inputs: KernelInputs;
  attrs: Record<string, unknown>;
}

// Enough images and rows that both threads take part and a thread's share takes long enough for timing to vary.
const conv = { strides: [1, 1], pad: 'valid', dataFormat: 'NHWC', dilations: [1, 1] };
const x = input([8, 18, 18, 32], 1);
const w = input([3, 3, 32, 32], 2);
const dy = input([8, 16, 16, 32], 3);
const x1 = input([8, 12, 12, 32], 4);
const dy1 = input([8, 12, 12, 48], 5);
const w1 = input([1, 1, 32, 48], 6);
const dwFilter = input([3, 3, 32, 1], 7);

const filterGrad = (plan: string): Case => ({
  label: `Conv2DBackpropFilter ${plan}`,
  kernel: 'Conv2DBackpropFilter',
  plan: `backprop-filter=${plan}`,
  inputs: { x, dy },
  attrs: { ...conv, filterShape: w.shape },
});

const CASES: Case[] = [
  filterGrad('direct'),
  filterGrad('direct-taps'),
  filterGrad('xnnpack'),
  filterGrad('winograd3:block=32'),
  filterGrad('winograd4:block=16'),
  filterGrad('winograd6:block=16'),
  {
    label: 'Conv2DBackpropFilter pointwise (xᵀ·dy)',
    kernel: 'Conv2DBackpropFilter',
    inputs: { x: x1, dy: dy1 },
    attrs: { ...conv, filterShape: w1.shape },
  },
  {
    label: 'Conv2DBackpropFilter pointwise, K in slices (a 1024-channel dy)',
    kernel: 'Conv2DBackpropFilter',
    inputs: { x: x1, dy: input([8, 12, 12, 1024], 21) },
    attrs: { ...conv, filterShape: [1, 1, 32, 1024] },
  },
  ...['direct', 'winograd4:block=32', 'xnnpack'].map(
    (plan): Case => ({
      label: `Conv2DBackpropInput ${plan}`,
      kernel: 'Conv2DBackpropInput',
      plan: `backprop-input=${plan}`,
      inputs: { dy, filter: w },
      attrs: { ...conv, inputShape: x.shape },
    }),
  ),
  {
    label: 'Conv2DBackpropInput pointwise (dy·wᵀ)',
    kernel: 'Conv2DBackpropInput',
    inputs: { dy: dy1, filter: w1 },
    attrs: { ...conv, inputShape: x1.shape },
  },
  ...['direct', 'winograd3:block=16', 'winograd4:block=32', 'winograd6:block=16', 'xnnpack'].map(
    (plan): Case => ({
      label: `Conv2D ${plan}`,
      kernel: 'Conv2D',
      plan: `conv2d=${plan}`,
      inputs: { x, filter: w },
      attrs: conv,
    }),
  ),
  {
    label: 'FusedConv2D winograd4 (bias, relu)',
    kernel: 'FusedConv2D',
    plan: 'conv2d=winograd4:block=32',
    inputs: { x, filter: w, bias: input([32], 8) },
    attrs: { ...conv, activation: 'relu' },
  },
  {
    label: 'FusedConv2D pointwise direct (bias, relu6)',
    kernel: 'FusedConv2D',
    plan: 'conv2d=direct',
    inputs: { x: x1, filter: w1, bias: input([48], 20) },
    attrs: { ...conv, activation: 'relu6' },
  },
  {
    label: 'DepthwiseConv2dNativeBackpropFilter',
    kernel: 'DepthwiseConv2dNativeBackpropFilter',
    inputs: { x, dy: input([8, 16, 16, 32], 9) },
    attrs: { ...conv, filterShape: dwFilter.shape },
  },
  {
    label: 'DepthwiseConv2dNativeBackpropInput',
    kernel: 'DepthwiseConv2dNativeBackpropInput',
    inputs: { dy: input([8, 16, 16, 32], 10), filter: dwFilter },
    attrs: { ...conv, inputShape: x.shape },
  },
  {
    label: 'BatchMatMul A·B, few rows, large B (chunked)',
    kernel: 'BatchMatMul',
    inputs: { a: input([8, 4100], 11), b: input([4100, 64], 12) },
    attrs: { transposeA: false, transposeB: false },
  },
  {
    label: 'BatchMatMul Aᵀ·B (a Dense kernel gradient)',
    kernel: 'BatchMatMul',
    inputs: { a: input([4100, 200], 13), b: input([4100, 32], 14) },
    attrs: { transposeA: true, transposeB: false },
  },
  // XNNPACK's own threaded kernels (MobileNetV2's forward pass): the backend's pthreadpool, split by output tiles.
  {
    label: 'DepthwiseConv2dNative (XNNPACK)',
    kernel: 'DepthwiseConv2dNative',
    inputs: { x, filter: dwFilter },
    attrs: conv,
  },
  {
    label: 'BatchMatMul A·B (XNNPACK)',
    kernel: 'BatchMatMul',
    inputs: { a: input([96, 512], 15), b: input([512, 40], 16) },
    attrs: { transposeA: false, transposeB: false },
  },
  {
    label: 'FusedBatchNorm (XNNPACK 1×1 depthwise)',
    kernel: 'FusedBatchNorm',
    inputs: {
      x,
      mean: input([32], 17),
      variance: { shape: [32], values: random(32, 18).map((v) => v + 1.5) },
      scale: input([32], 19),
      offset: input([32], 20),
    },
    attrs: { varianceEpsilon: 1e-3 },
  },
  {
    label: 'MaxPoolGrad 2×2 (slabs of rows)',
    kernel: 'MaxPoolGrad',
    inputs: { dy: input([8, 8, 8, 32], 21), input: input([8, 17, 16, 32], 22) },
    attrs: { filterSize: [2, 2], strides: [2, 2], pad: 'valid' },
  },
  {
    label: 'ReLU gradient',
    kernel: 'CatdogReluGrad',
    inputs: { dy: input([8, 72, 72, 32], 23), x: input([8, 72, 72, 32], 24) },
    attrs: {},
  },
  {
    label: 'Sum over leading axes (bias gradient)',
    kernel: 'Sum',
    inputs: { x: dy },
    attrs: { axis: [0, 1, 2], keepDims: false },
  },
];

function run(c: Case): Float32Array {
  if (c.plan === undefined) delete process.env.CATDOG_KERNEL_PLAN;
  else process.env.CATDOG_KERNEL_PLAN = c.plan;
  resetKernelPlans();
  return runKernel('wasm', c.kernel, c.inputs, c.attrs).values;
}

function assertSameBits(got: Float32Array, want: Float32Array, label: string): void {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  assert.equal(a.length, b.length, `${label}: length`);
  let differ = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      differ++;
      if (first < 0) first = i;
    }
  }
  assert.equal(
    differ,
    0,
    `${label}: ${differ} of ${a.length} values differ (first at ${first}: ${got[first]} vs ${want[first]})`,
  );
}

/** The filter gradient's first call, made before the SIMD worker threads are up (as in a freshly started process). */
let coldFilterGrad: Float32Array | null = null;
let coldWorkers = -1;

before(async () => {
  isolatePlanCache();
  process.env.CATDOG_AUTOTUNE = '0';
  const choice = await initBackend({ backend: 'wasm', threads: THREADS, log: () => {} });
  assert.equal(choice.threads, THREADS);
  if (SIMD) {
    coldWorkers = wasmSimdWorkers();
    coldFilterGrad = run(CASES[0]!);
  }
  for (let i = 0; i < 600 && SIMD && wasmSimdWorkers() < THREADS - 1; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(wasmSimdWorkers(), SIMD ? THREADS - 1 : 0, 'SIMD worker threads ready');
});

after(() => {
  for (const [k, v] of [
    ['CATDOG_KERNEL_PLAN', saved.plan],
    ['CATDOG_AUTOTUNE', saved.tune],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

test('with 2 threads every threaded kernel and plan gives bit-identical outputs run after run', () => {
  assert.equal(wasmSimdKernelsLoaded(), SIMD);
  for (const c of CASES) {
    const first = run(c);
    for (let rep = 1; rep < REPS; rep++) assertSameBits(run(c), first, `${c.label}, run ${rep + 1}`);
  }
});

test('the filter gradient called while the worker threads start equals the one with every thread up', {
  skip: SIMD ? false : 'CATDOG_WASM_SIMD_KERNELS=0',
}, () => {
  assert.ok(coldFilterGrad);
  assertSameBits(
    run(CASES[0]!),
    coldFilterGrad,
    `Conv2DBackpropFilter direct (first call with ${coldWorkers} workers up)`,
  );
});

test('CatdogRMSProp with 2 threads: the same variables after the same updates, bit for bit', () => {
  tf.setBackend('wasm');
  const n = 300_000; // several chunks per thread
  const results: Float32Array[] = [];
  for (let rep = 0; rep < 3; rep++) {
    const v = tf.variable(tf.tensor1d(random(n, 20)));
    const opt = rmsprop(0.01, 0.9, 0.5);
    for (let step = 0; step < 3; step++) opt.applyGradients({ [v.name]: tf.tensor1d(random(n, 21 + step)) });
    results.push(v.dataSync() as Float32Array);
    opt.dispose();
    v.dispose();
  }
  for (let rep = 1; rep < results.length; rep++) assertSameBits(results[rep]!, results[0]!, `RMSprop run ${rep + 1}`);
});
