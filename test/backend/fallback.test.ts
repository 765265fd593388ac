// The package's wasm kernels hand the cases they do not cover to tfjs' own wasm kernels (int32 data, trailing or all
// axes, batched products, other fused activations, non-per-channel statistics): those answers equal tfjs' cpu backend.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend, wasmTrainingKernelNames } from '@catdog/backend';
import { isolatePlanCache } from '../helpers/kernels.js';

isolatePlanCache();

/** Deterministic values in [-1, 1). */
const values = (n: number, seed: number) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) % 1);

type Case = [string, () => tf.Tensor];
const CASES: Case[] = [
  ['Sum of int32', () => tf.sum(tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3], 'int32'), 0)],
  ['Sum over the trailing axis', () => tf.sum(tf.tensor3d(values(60, 1), [3, 4, 5]), 2)],
  ['Sum over a middle axis', () => tf.sum(tf.tensor3d(values(60, 2), [3, 4, 5]), 1)],
  ['Sum over every axis', () => tf.sum(tf.tensor3d(values(60, 3), [3, 4, 5]))],
  [
    'Sum over leading axes (the package kernel, for contrast)',
    () => tf.sum(tf.tensor3d(values(60, 4), [3, 4, 5]), [0, 1]),
  ],
  [
    'batched BatchMatMul',
    () => tf.matMul(tf.tensor3d(values(24, 5), [3, 2, 4]), tf.tensor3d(values(36, 6), [3, 4, 3])),
  ],
  [
    'FusedConv2D with elu',
    () =>
      tf.fused.conv2d({
        x: tf.tensor4d(values(2 * 6 * 6 * 4, 7), [2, 6, 6, 4]),
        filter: tf.tensor4d(values(3 * 3 * 4 * 8, 8), [3, 3, 4, 8]),
        strides: 1,
        pad: 'same',
        bias: tf.tensor1d(values(8, 9)),
        activation: 'elu',
      }),
  ],
  [
    'FusedConv2D with prelu',
    () =>
      tf.fused.conv2d({
        x: tf.tensor4d(values(2 * 6 * 6 * 4, 10), [2, 6, 6, 4]),
        filter: tf.tensor4d(values(3 * 3 * 4 * 8, 11), [3, 3, 4, 8]),
        strides: 1,
        pad: 'valid',
        activation: 'prelu',
        preluActivationWeights: tf.scalar(0.2),
      }),
  ],
  [
    'FusedBatchNorm with scalar statistics',
    () =>
      tf.batchNorm(
        tf.tensor4d(values(2 * 3 * 3 * 4, 12), [2, 3, 3, 4]),
        tf.scalar(0.1),
        tf.scalar(2),
        tf.scalar(-0.5),
        tf.scalar(1.5),
        1e-3,
      ),
  ],
];

function runAll(): Float32Array[] {
  return CASES.map(([, f]) => tf.tidy(() => Float32Array.from(f().dataSync())));
}

let cpu: Float32Array[];

before(async () => {
  await initBackend({ backend: 'cpu', log: () => {} });
  cpu = runAll();
  await initBackend({ backend: 'wasm', log: () => {} });
  assert.equal(tf.getBackend(), 'wasm');
  for (const k of ['Sum', 'BatchMatMul', 'FusedConv2D', 'FusedBatchNorm'])
    assert.ok(wasmTrainingKernelNames.includes(k), k);
});

test('cases the package kernels do not cover give tfjs cpu backend answers on wasm', () => {
  const wasm = runAll();
  CASES.forEach(([name], i) => {
    assert.equal(wasm[i]!.length, cpu[i]!.length, name);
    const scale = Math.max(1, ...Array.from(cpu[i]!, Math.abs));
    wasm[i]!.forEach((v, j) =>
      assert.ok(Math.abs(v - cpu[i]![j]!) <= 1e-5 * scale, `${name}[${j}]: wasm ${v}, cpu ${cpu[i]![j]}`),
    );
  });
});
