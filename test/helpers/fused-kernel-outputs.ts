// Prints, as JSON, the outputs of the convolution kernels whose product loops fuse multiply-adds (forward Winograd
// and direct, filter gradient direct and Winograd, input gradient direct and Winograd), on fixed inputs, one thread,
// with whichever wasm kernel variant this process loaded (CATDOG_WASM_FMA=0: the unfused one).
// test/backend/fma.test.ts runs it once per variant.
import { initBackend, wasmFusedMultiplyAdd } from '@catdog/backend';
import { random, runKernel } from './kernels.js';

const conv = { strides: [1, 1], pad: 'valid', dataFormat: 'NHWC', dilations: [1, 1] };
const x = { shape: [2, 18, 18, 32], values: random(2 * 18 * 18 * 32, 1) };
const w = { shape: [3, 3, 32, 32], values: random(3 * 3 * 32 * 32, 2) };
const dy = { shape: [2, 16, 16, 32], values: random(2 * 16 * 16 * 32, 3) };

const FUSED_CASES = [
  ['conv2d=winograd4:block=32', 'Conv2D', { x, filter: w }, conv],
  ['conv2d=direct', 'Conv2D', { x, filter: w }, conv],
  ['backprop-filter=direct', 'Conv2DBackpropFilter', { x, dy }, { ...conv, filterShape: w.shape }],
  ['backprop-filter=winograd4:block=16', 'Conv2DBackpropFilter', { x, dy }, { ...conv, filterShape: w.shape }],
  ['backprop-input=direct', 'Conv2DBackpropInput', { dy, filter: w }, { ...conv, inputShape: x.shape }],
  ['backprop-input=winograd4:block=32', 'Conv2DBackpropInput', { dy, filter: w }, { ...conv, inputShape: x.shape }],
] as const;

await initBackend({ backend: 'wasm', threads: 1, log: () => {} });
const outputs: Record<string, number[]> = {};
for (const [plan, kernel, inputs, attrs] of FUSED_CASES) {
  process.env.CATDOG_KERNEL_PLAN = plan;
  outputs[plan] = [...runKernel('wasm', kernel, inputs, attrs as Record<string, unknown>).values];
}
process.stdout.write(JSON.stringify({ fused: wasmFusedMultiplyAdd(), outputs }));
