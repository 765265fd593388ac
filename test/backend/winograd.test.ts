// The wasm Winograd convolutions (Conv2D and FusedConv2D, 3×3 stride 1, and Conv2DBackpropInput as the
// correlation of dy with the flipped filter) against the cpu backend: every tile size (F3, F4, F6) forced over a
// grid of map sizes that are not multiples of the tile, 'same' and 'valid' padding, channel counts (one with
// Ci·Co > 64 k, where the direct loop does not apply) and batch sizes, with the worker threads (this process) and
// without (a child process with the single-threaded build, CATDOG_WASM_THREADS=0).
//
// Tolerance: max |wasm - cpu| ≤ 5e-5 (F3, F4) or 2e-4 (F6) × max |cpu output|. The float32 rounding
// of the transforms grows with the tile's interpolation points (F3 uses 0, ±1, 2, F4 0, ±1, ±2, F6
// also ±½ with larger coefficients); measured errors are 1–8e-6 (F3, F4) and 1–2e-5 (F6) of the output's scale on
// these sums of up to 9·512 products. An indexing mistake gives errors of the output's own size.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import {
  SINGLE_THREADED_CHILD,
  assertPassesSingleThreaded,
  errorAndScale,
  isolatePlanCache,
  random,
  runKernel,
  type KernelInputs,
} from '../helpers/kernels.js';
import {
  initBackend,
  kernelPlans,
  resetKernelPlans,
  wasmSimdKernelsLoaded,
  wasmSimdWorkers,
  wasmWinogradTileSize,
} from '@catdog/backend';

type Pad = 'valid' | 'same';
type Shape4 = [number, number, number, number];

isolatePlanCache();
const CHILD = SINGLE_THREADED_CHILD;
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
    const { worst, scale } = errorAndScale(actual.values, expected.values);
    assert.ok(scale > 1, `${label}: nonzero output`);
    assert.ok(worst <= TOLERANCE[m] * scale, `${label}: max abs error ${worst} (scale ${scale})`);
  } finally {
    delete process.env.CATDOG_WASM_WINOGRAD;
  }
}

type GradCase = { B: number; H: number; W: number; Ci: number; Co: number; pad: Pad | number };
const gradReference = new Map<string, { shape: number[]; values: Float32Array }>();

/**
 * Conv2DBackpropInput (dx of a layer [B, H, W, Ci] -> Co) on wasm with the Winograd plan of tile m forced
 * (CATDOG_KERNEL_PLAN, so kernelPlans() says it ran), or with CATDOG_WASM_WINOGRAD=m (`viaOverride`), against cpu.
 */
function checkInputGrad(m: 3 | 4 | 6, c: GradCase, seed: number, viaOverride = false): void {
  const xShape: Shape4 = [c.B, c.H, c.W, c.Ci];
  const info = tf.backend_util.computeConv2DInfo(xShape, [3, 3, c.Ci, c.Co], 1, 1, c.pad);
  const dyShape = [c.B, info.outHeight, info.outWidth, c.Co];
  const inputs: KernelInputs = {
    dy: {
      shape: dyShape,
      values: random(
        dyShape.reduce((a, b) => a * b, 1),
        seed,
      ),
    },
    filter: { shape: [3, 3, c.Ci, c.Co], values: random(9 * c.Ci * c.Co, seed + 1) },
  };
  const attrs = { strides: [1, 1], pad: c.pad, dataFormat: 'NHWC', inputShape: xShape };
  const label = `Conv2DBackpropInput F${m} ${JSON.stringify(c)}`;
  if (viaOverride) process.env.CATDOG_WASM_WINOGRAD = String(m);
  else process.env.CATDOG_KERNEL_PLAN = `backprop-input=winograd${m}`;
  resetKernelPlans();
  try {
    const actual = runKernel('wasm', 'Conv2DBackpropInput', inputs, attrs);
    if (!viaOverride) {
      const plans = kernelPlans().map((r) => `${r.plan} ${r.source}`);
      assert.equal(plans.length, 1, `${label}: one plan`);
      assert.match(plans[0]!, new RegExp(`^winograd${m}:block=\\d+ forced$`), `${label}: runs Winograd`);
    }
    const key = `${JSON.stringify(c)} ${seed}`;
    if (!gradReference.has(key)) gradReference.set(key, runKernel('cpu', 'Conv2DBackpropInput', inputs, attrs));
    const expected = gradReference.get(key)!;
    assert.deepEqual(actual.shape, expected.shape, `${label}: shape`);
    const { worst, scale } = errorAndScale(actual.values, expected.values);
    assert.ok(scale > 1, `${label}: nonzero output`);
    assert.ok(worst <= TOLERANCE[m] * scale, `${label}: max abs error ${worst} (scale ${scale})`);
  } finally {
    delete process.env.CATDOG_KERNEL_PLAN;
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

test('Winograd Conv2DBackpropInput matches cpu: odd map sizes, both paddings, the convnet layers', { skip }, () => {
  let seed = 700;
  const cases: GradCase[] = [
    { B: 1, H: 9, W: 9, Ci: 16, Co: 16, pad: 'same' },
    { B: 3, H: 13, W: 11, Ci: 32, Co: 20, pad: 'valid' }, // Co % 16 != 0: the flipped filter's Ci is 20
    { B: 2, H: 18, W: 13, Ci: 48, Co: 64, pad: 'same' },
    { B: 3, H: 10, W: 7, Ci: 128, Co: 16, pad: 'same' },
    { B: 1, H: 4, W: 6, Ci: 16, Co: 16, pad: 'valid' }, // dy (2×4) smaller than one tile
    { B: 2, H: 11, W: 9, Ci: 16, Co: 32, pad: 1 }, // explicit padding
    // The book's convnet ('valid'), one image each: 74×74×32 -> 64, 36×36×64 -> 128, 17×17×128 -> 128.
    { B: 1, H: 74, W: 74, Ci: 32, Co: 64, pad: 'valid' },
    { B: 1, H: 36, W: 36, Ci: 64, Co: 128, pad: 'valid' },
    { B: 2, H: 17, W: 17, Ci: 128, Co: 128, pad: 'valid' },
  ];
  for (const c of cases) {
    seed += 3;
    for (const m of [3, 4, 6] as const) checkInputGrad(m, c, seed);
  }
  // CATDOG_WASM_WINOGRAD=m forces the tile for input gradients too (no plan recorded, as for the forward).
  checkInputGrad(4, { B: 2, H: 13, W: 11, Ci: 32, Co: 16, pad: 'same' }, 800, true);
});

test('the Winograd input gradient is a plan only where it applies; the cost model picks it for the convnet', {
  skip,
}, () => {
  const plan = (c: GradCase, k = 3, s = 1): string => {
    const xShape: Shape4 = [c.B, c.H, c.W, c.Ci];
    const info = tf.backend_util.computeConv2DInfo(xShape, [k, k, c.Ci, c.Co], s, 1, c.pad);
    const dyShape = [c.B, info.outHeight, info.outWidth, c.Co];
    const inputs: KernelInputs = {
      dy: {
        shape: dyShape,
        values: random(
          dyShape.reduce((a, b) => a * b, 1),
          1,
        ),
      },
      filter: { shape: [k, k, c.Ci, c.Co], values: random(k * k * c.Ci * c.Co, 2) },
    };
    resetKernelPlans();
    runKernel('wasm', 'Conv2DBackpropInput', inputs, {
      strides: [s, s],
      pad: c.pad,
      dataFormat: 'NHWC',
      inputShape: xShape,
    });
    return kernelPlans()
      .filter((r) => r.family === 'backprop-input')
      .map((r) => `${r.plan} ${r.source}`)
      .join();
  };
  process.env.CATDOG_AUTOTUNE = '0';
  try {
    // Without timing, the cost model's tile: F4 for the convnet's layers.
    assert.match(plan({ B: 4, H: 36, W: 36, Ci: 64, Co: 128, pad: 'valid' }), /^winograd4:block=\d+ default$/);
    process.env.CATDOG_KERNEL_PLAN = 'backprop-input=winograd4';
    // Not Winograd: stride 2, a 5×5 filter, Co = 8 (the flipped filter's Ci < 16), a padding of 3.
    const notWinograd = /^(direct|xnnpack) default$/;
    assert.match(plan({ B: 1, H: 19, W: 19, Ci: 16, Co: 16, pad: 'same' }, 3, 2), notWinograd);
    assert.match(plan({ B: 1, H: 19, W: 19, Ci: 16, Co: 16, pad: 'same' }, 5), notWinograd);
    assert.match(plan({ B: 1, H: 19, W: 19, Ci: 16, Co: 8, pad: 'same' }), notWinograd);
    assert.match(plan({ B: 1, H: 19, W: 19, Ci: 16, Co: 16, pad: 3 }), notWinograd);
    process.env.CATDOG_WASM_WINOGRAD = '0';
    delete process.env.CATDOG_KERNEL_PLAN;
    assert.match(plan({ B: 4, H: 36, W: 36, Ci: 64, Co: 128, pad: 'valid' }), /^direct default$/, 'off');
  } finally {
    delete process.env.CATDOG_AUTOTUNE;
    delete process.env.CATDOG_KERNEL_PLAN;
    delete process.env.CATDOG_WASM_WINOGRAD;
  }
});

test('gradients of a small convnet through tf.grads (Winograd forward and input gradients) match cpu', { skip }, () => {
  // Three 3×3 layers, 'valid' and 'same', odd maps; tanh (smooth: no ReLU mask to flip on a rounding difference).
  const xShape: Shape4 = [2, 21, 19, 16];
  const shapes: Shape4[] = [
    [3, 3, 16, 32],
    [3, 3, 32, 32],
    [3, 3, 32, 16],
  ];
  const x0 = random(
    xShape.reduce((a, b) => a * b, 1),
    901,
  );
  const w0 = shapes.map((w, i) =>
    random(
      w.reduce((a, b) => a * b, 1),
      902 + i,
    ).map((v) => v / 8),
  );
  const grads = (backend: string) => {
    tf.setBackend(backend);
    return tf.tidy(() => {
      const f = (x: tf.Tensor4D, a: tf.Tensor4D, b: tf.Tensor4D, c: tf.Tensor4D) =>
        tf
          .conv2d(tf.tanh(tf.conv2d(tf.tanh(tf.conv2d(x, a, 1, 'valid')), b, 1, 'same')), c, 1, 'valid')
          .square()
          .mean();
      const args = [tf.tensor4d(x0, xShape), ...w0.map((w, i) => tf.tensor4d(w, shapes[i]!))];
      return tf
        .grads(f as (...args: tf.Tensor[]) => tf.Tensor)(args)
        .map((g) => g.dataSync() as Float32Array);
    });
  };
  process.env.CATDOG_KERNEL_PLAN = 'conv2d=winograd4,backprop-input=winograd4';
  resetKernelPlans();
  try {
    const actual = grads('wasm');
    const dx = kernelPlans().filter((r) => r.family === 'backprop-input');
    assert.equal(dx.length, 3, 'the input gradient of every layer (x included) has a plan');
    for (const r of dx) assert.match(`${r.plan} ${r.source}`, /^winograd4:block=\d+ forced$/, r.shape);
    const expected = grads('cpu');
    expected.forEach((e, k) => {
      const { worst, scale } = errorAndScale(actual[k]!, e);
      assert.ok(scale > 0 && worst <= 1e-4 * scale, `gradient ${k}: max abs error ${worst} (scale ${scale})`);
    });
  } finally {
    delete process.env.CATDOG_KERNEL_PLAN;
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
  assertPassesSingleThreaded(fileURLToPath(import.meta.url), 7, 120_000);
});
