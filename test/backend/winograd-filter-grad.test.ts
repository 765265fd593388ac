// The wasm Winograd filter gradient (Conv2DBackpropFilter, 3×3 stride 1: packages/backend/src/kernels/
// winograd-filter-grad.ts) against the cpu backend: every tile (F3, F4, F6) forced, 'same' and 'valid' padding, map
// sizes that are not multiples of the tile (edge tiles), an output smaller than a tile, the book's convnet's layer
// shapes at small batches; with 2 threads (this process: two slices of tiles, each its own partial) and with the
// single-threaded build (a child process, CATDOG_WASM_THREADS=0); each run twice must give the same bits. The
// convnet's layers are checked against the same sum in float64 instead (plain loops below): the cpu backend's
// Conv2DBackpropFilter runs at ~2 M multiply-adds/s, 85 s for one image of the three layers.
//
// Tolerance: max |wasm - reference| ≤ 5e-5 (F3) or 1e-4 (F4, F6) × max |reference|. The cpu backend is within ~5e-8
// of a float64 sum here; the error is the wasm kernel's: float32 sums over every tile of the batch, of transformed values
// up to (1+2+4+8)² times dy's (F4), recombined by Gᵀ M G with cancellation. Measured on these cases: 1–11e-6 (F3),
// 2–17e-6 (F4), 2–9e-6 (F6), the largest on the 74×74×32→64 layer (the direct loop: up to 4e-6); at the convnet's
// batch of 20, 7e-6–4e-5 (the direct loop 3e-6–1.1e-5). An indexing mistake gives errors of the output's own size.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import {
  SINGLE_THREADED_CHILD,
  assertPassesSingleThreaded,
  isolatePlanCache,
  random,
  runKernel,
  type KernelInputs,
} from '../helpers/kernels.js';
import { initBackend, kernelPlans, resetKernelPlans, wasmSimdKernelsLoaded, wasmSimdWorkers } from '@catdog/backend';

type Pad = 'valid' | 'same';
interface Case {
  B: number;
  H: number;
  W: number;
  Ci: number;
  Co: number;
  pad: Pad;
  /** Checked against float64FilterGrad instead of the cpu backend (too slow for it). */
  float64?: true;
}

isolatePlanCache();
const CHILD = SINGLE_THREADED_CHILD;
const SIMD = process.env.CATDOG_WASM_SIMD_KERNELS !== '0';
const skip = SIMD ? false : 'CATDOG_WASM_SIMD_KERNELS=0';
const TOLERANCE = { 3: 5e-5, 4: 1e-4, 6: 1e-4 } as const;
const saved = { plan: process.env.CATDOG_KERNEL_PLAN, tune: process.env.CATDOG_AUTOTUNE };

const CASES: Case[] = [
  { B: 1, H: 9, W: 9, Ci: 16, Co: 16, pad: 'same' },
  { B: 3, H: 13, W: 11, Ci: 32, Co: 16, pad: 'same' },
  { B: 2, H: 12, W: 17, Ci: 16, Co: 32, pad: 'valid' },
  { B: 2, H: 20, W: 23, Ci: 20, Co: 48, pad: 'same' },
  { B: 1, H: 6, W: 6, Ci: 16, Co: 16, pad: 'valid' }, // a 4×4 output: one partial F6 tile
  // The book's convnet (3×3 'valid'): 72×72 outputs (whole tiles), 34×34 and 15×15 (edge tiles).
  { B: 2, H: 74, W: 74, Ci: 32, Co: 64, pad: 'valid', float64: true },
  { B: 2, H: 36, W: 36, Ci: 64, Co: 128, pad: 'valid', float64: true },
  { B: 3, H: 17, W: 17, Ci: 128, Co: 128, pad: 'valid', float64: true },
];

/** dW[ki][kj][ci][co] = Σ x·dy in float64 (stride 1, NHWC): the reference for layers too large for the cpu backend. */
function float64FilterGrad(c: Case, k: ReturnType<typeof inputs>): Float64Array {
  const info = tf.backend_util.computeConv2DInfo([c.B, c.H, c.W, c.Ci], [3, 3, c.Ci, c.Co], 1, 1, c.pad);
  const { outHeight: Ho, outWidth: Wo, padInfo } = info;
  const x = k.inputs.x!.values;
  const dy = k.inputs.dy!.values;
  const dw = new Float64Array(9 * c.Ci * c.Co);
  for (let b = 0; b < c.B; b++)
    for (let oi = 0; oi < Ho; oi++)
      for (let oj = 0; oj < Wo; oj++) {
        const d0 = ((b * Ho + oi) * Wo + oj) * c.Co;
        for (let ki = 0; ki < 3; ki++) {
          const i = oi + ki - padInfo.top;
          if (i < 0 || i >= c.H) continue;
          for (let kj = 0; kj < 3; kj++) {
            const j = oj + kj - padInfo.left;
            if (j < 0 || j >= c.W) continue;
            const x0 = ((b * c.H + i) * c.W + j) * c.Ci;
            for (let ci = 0; ci < c.Ci; ci++) {
              const xv = x[x0 + ci]!;
              const w0 = ((ki * 3 + kj) * c.Ci + ci) * c.Co;
              for (let co = 0; co < c.Co; co++) dw[w0 + co] += xv * dy[d0 + co]!;
            }
          }
        }
      }
  return dw;
}

function inputs(c: Case, seed: number): { inputs: KernelInputs; attrs: Record<string, unknown> } {
  const info = tf.backend_util.computeConv2DInfo([c.B, c.H, c.W, c.Ci], [3, 3, c.Ci, c.Co], 1, 1, c.pad);
  const dyShape = [c.B, info.outHeight, info.outWidth, c.Co];
  return {
    inputs: {
      x: { shape: [c.B, c.H, c.W, c.Ci], values: random(c.B * c.H * c.W * c.Ci, seed) },
      dy: {
        shape: dyShape,
        values: random(
          dyShape.reduce((a, b) => a * b, 1),
          seed + 1,
        ),
      },
    },
    attrs: { strides: [1, 1], pad: c.pad, dataFormat: 'NHWC', dilations: [1, 1], filterShape: [3, 3, c.Ci, c.Co] },
  };
}

/** Runs the filter gradient on wasm under CATDOG_KERNEL_PLAN=backprop-filter=<plan>; returns it and the plan that ran. */
function runPlan(plan: string, k: ReturnType<typeof inputs>): { values: Float32Array; ran: string } {
  process.env.CATDOG_KERNEL_PLAN = `backprop-filter=${plan}`;
  resetKernelPlans();
  const { values } = runKernel('wasm', 'Conv2DBackpropFilter', k.inputs, k.attrs);
  const records = kernelPlans().filter((r) => r.family === 'backprop-filter');
  return { values, ran: records.map((r) => `${r.plan} (${r.source})`).join(', ') };
}

let threads = 0;

before(async () => {
  threads = (await initBackend({ backend: 'wasm', threads: CHILD ? 1 : 2, log: () => {} })).threads;
  for (let i = 0; i < 600 && threads > 1 && wasmSimdWorkers() < threads - 1; i++)
    await new Promise((r) => setTimeout(r, 50));
  await tf.setBackend('cpu');
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

test('the SIMD kernels run with the expected threads', { skip }, () => {
  assert.ok(wasmSimdKernelsLoaded(), 'SIMD kernels loaded');
  assert.equal(threads, CHILD ? 1 : 2);
  if (threads > 1) assert.equal(wasmSimdWorkers(), threads - 1, 'worker threads ready');
});

test('Winograd filter gradient (F3, F4, F6) matches cpu and gives the same bits twice: paddings, edge tiles, the convnet layers', {
  skip,
}, () => {
  for (const [i, c] of CASES.entries()) {
    const k = inputs(c, 700 + 3 * i);
    const want = c.float64
      ? float64FilterGrad(c, k)
      : runKernel('cpu', 'Conv2DBackpropFilter', k.inputs, k.attrs).values;
    let scale = 0;
    for (const v of want) scale = Math.max(scale, Math.abs(v));
    assert.ok(scale > 1, `${JSON.stringify(c)}: nonzero gradient`);
    for (const m of [3, 4, 6] as const) {
      // Blocks of 16 tiles (several blocks per slice, the last one short) and the layer's default.
      for (const plan of [`winograd${m}:block=16`, `winograd${m}`]) {
        const label = `${plan} ${JSON.stringify(c)} (${threads} thread${threads > 1 ? 's' : ''})`;
        const got = runPlan(plan, k);
        assert.match(got.ran, new RegExp(`^winograd${m}:block=\\d+ \\(forced\\)$`), `${label}: ran ${got.ran}`);
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got.values[i]! - want[i]!));
        assert.ok(worst <= TOLERANCE[m] * scale, `${label}: max abs error ${worst} (scale ${scale})`);
        const again = runPlan(plan, k).values;
        const a = new Uint32Array(got.values.buffer, got.values.byteOffset, got.values.length);
        const b = new Uint32Array(again.buffer, again.byteOffset, again.length);
        assert.ok(
          a.every((v, i) => v === b[i]),
          `${label}: the second run differs in some bits`,
        );
      }
    }
  }
});

test('without autotuning the cost model gives the convnet layers Winograd; it does not apply to stride 2, 5×5 or Co % 16 ≠ 0', {
  skip,
}, () => {
  process.env.CATDOG_AUTOTUNE = '0';
  delete process.env.CATDOG_KERNEL_PLAN;
  try {
    const planOf = (c: Case, k = 3, s = 1) => {
      resetKernelPlans();
      const info = tf.backend_util.computeConv2DInfo([c.B, c.H, c.W, c.Ci], [k, k, c.Ci, c.Co], s, 1, c.pad);
      const dy = [c.B, info.outHeight, info.outWidth, c.Co];
      runKernel(
        'wasm',
        'Conv2DBackpropFilter',
        {
          x: { shape: [c.B, c.H, c.W, c.Ci], values: random(c.B * c.H * c.W * c.Ci, 1) },
          dy: {
            shape: dy,
            values: random(
              dy.reduce((a, b) => a * b, 1),
              2,
            ),
          },
        },
        { strides: [s, s], pad: c.pad, dataFormat: 'NHWC', filterShape: [k, k, c.Ci, c.Co] },
      );
      return kernelPlans().map((r) => `${r.plan} (${r.source})`);
    };
    for (const c of CASES.slice(-3))
      assert.match(planOf(c).join(), /^winograd4:block=\d+ \(default\)$/, JSON.stringify(c));
    const layer: Case = { B: 1, H: 36, W: 36, Ci: 64, Co: 128, pad: 'valid' };
    assert.deepEqual(planOf(layer, 3, 2), ['direct (default)'], 'stride 2');
    assert.deepEqual(planOf(layer, 5), ['direct (default)'], '5×5');
    assert.deepEqual(planOf({ ...layer, Co: 120 }), [], 'Co % 16 ≠ 0: XNNPACK only, no plan');
    process.env.CATDOG_WASM_WINOGRAD = '0';
    assert.deepEqual(planOf(layer), ['direct (default)'], 'CATDOG_WASM_WINOGRAD=0');
    process.env.CATDOG_WASM_WINOGRAD = '6';
    assert.deepEqual(planOf(layer), [], 'CATDOG_WASM_WINOGRAD=6 forces the tile (no plan decided)');
  } finally {
    delete process.env.CATDOG_WASM_WINOGRAD;
    delete process.env.CATDOG_AUTOTUNE;
  }
});

test('the same checks pass with the single-threaded wasm build', { skip: CHILD || skip }, () => {
  assertPassesSingleThreaded(fileURLToPath(import.meta.url), 3, 240_000);
});
