// Conv2D layers in training on wasm run as one FusedConv2D kernel with its own gradient
// (packages/backend/src/fused-conv-training.ts): the gradients of every weight and of the input match the cpu
// backend and tfjs-layers' own path; the forward records FusedConv2D instead of Conv2D + Add + Relu; the input
// gradient of the first layer is not computed when nothing reads it; other activations keep tfjs' path.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '@catdog/backend';
import { isolatePlanCache, random } from '../helpers/kernels.js';

isolatePlanCache();

before(async () => {
  await initBackend({ backend: 'wasm', threads: 2, log: () => {} });
});

/** Seeded convolutions of every kind the route takes (and one it leaves to tfjs), then a sigmoid unit. */
function network(): tf.Sequential {
  let seed = 5;
  const init = () => tf.initializers.glorotUniform({ seed: seed++ });
  const bias = () => tf.initializers.randomUniform({ minval: -0.2, maxval: 0.2, seed: seed++ });
  const conv = (o: Partial<Parameters<typeof tf.layers.conv2d>[0]>) =>
    tf.layers.conv2d({
      filters: 16,
      kernelSize: 3,
      kernelInitializer: init(),
      biasInitializer: bias(),
      ...o,
    } as Parameters<typeof tf.layers.conv2d>[0]);
  const m = tf.sequential();
  m.add(conv({ inputShape: [19, 21, 3], activation: 'relu' })); // 3 channels in, 'valid', ReLU and bias
  m.add(conv({ filters: 32, activation: 'relu', padding: 'same' })); // 3×3 stride 1 (Winograd where planned)
  m.add(conv({ filters: 16, activation: 'relu', strides: 2, padding: 'same' })); // stride 2
  m.add(conv({ filters: 32, kernelSize: 1, activation: 'linear', useBias: false })); // pointwise, linear, no bias
  m.add(conv({ filters: 16, kernelSize: [3, 1], activation: 'relu' })); // rectangular
  m.add(conv({ filters: 16, activation: 'elu', padding: 'same' })); // not routed: tfjs-layers' own path
  m.add(tf.layers.flatten());
  m.add(tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: init() }));
  return m;
}

const X = { shape: [3, 19, 21, 3], values: random(3 * 19 * 21 * 3, 41) };
const Y = [1, 0, 1];

/** The test batch: X and its labels Y as tensors. */
function batch(): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return { x: tf.tensor4d(X.values, X.shape as [number, number, number, number]), y: tf.tensor2d(Y, [3, 1]) };
}

/** network(), compiled for trainOnBatch (plain SGD), with the test batch. */
function compiledNetwork(): { m: tf.Sequential; x: tf.Tensor4D; y: tf.Tensor2D } {
  const m = network();
  m.compile({ optimizer: tf.train.sgd(0.01), loss: 'binaryCrossentropy' });
  return { m, ...batch() };
}

/** The loss's gradients for every weight and for the input, on the current backend. */
function gradients(m: tf.Sequential): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  tf.tidy(() => {
    const { x, y } = batch();
    const weights = m.trainableWeights.map((w) => w.read() as tf.Variable);
    const loss = (input: tf.Tensor) =>
      tf.losses.sigmoidCrossEntropy(y, m.apply(input, { training: true }) as tf.Tensor);
    const { grads } = tf.variableGrads(() => loss(x) as tf.Scalar, weights);
    for (const w of weights) out.set(w.name, grads[w.name]!.dataSync() as Float32Array);
    out.set('input', tf.grad(loss)(x).dataSync() as Float32Array);
  });
  return out;
}

function assertClose(got: Map<string, Float32Array>, want: Map<string, Float32Array>, label: string): void {
  assert.deepEqual([...got.keys()], [...want.keys()]);
  for (const [name, w] of want) {
    const g = got.get(name)!;
    let scale = 0;
    let worst = 0;
    for (let i = 0; i < w.length; i++) {
      scale = Math.max(scale, Math.abs(w[i]!));
      worst = Math.max(worst, Math.abs(g[i]! - w[i]!));
    }
    assert.ok(scale > 0, `${label} ${name}: a nonzero gradient`);
    assert.ok(worst <= 2e-5 * scale, `${label} ${name}: max abs error ${worst} against max ${scale}`);
  }
}

test('weight and input gradients through routed Conv2D layers match cpu and tfjs-layers’ own path', () => {
  const m = network();
  tf.setBackend('cpu');
  const cpu = gradients(m);
  tf.setBackend('wasm');
  const routed = gradients(m);
  process.env.CATDOG_WASM_FUSED_CONV_TRAINING = '0';
  try {
    const own = gradients(m);
    assertClose(own, cpu, 'wasm, tfjs-layers path');
  } finally {
    delete process.env.CATDOG_WASM_FUSED_CONV_TRAINING;
  }
  assertClose(routed, cpu, 'wasm, FusedConv2D route');
  m.dispose();
});

test('the forward records FusedConv2D, not Conv2D + Add + Relu; the first layer’s input gradient is skipped', async () => {
  const { m, x, y } = compiledNetwork();
  const count = async () => {
    const info = await tf.profile(() => m.trainOnBatch(x, y));
    const n = new Map<string, number>();
    for (const k of info.kernels) n.set(k.name, (n.get(k.name) ?? 0) + 1);
    return n;
  };
  const routed = await count();
  process.env.CATDOG_WASM_FUSED_CONV_TRAINING = '0';
  const own = await count().finally(() => delete process.env.CATDOG_WASM_FUSED_CONV_TRAINING);
  const info = JSON.stringify({ routed: [...routed], own: [...own] });
  // tfjs-layers' own path: Conv2D, Add and Relu for the four ReLU layers and Conv2D, Add and Elu for the elu one;
  // the linear layer as FusedConv2D under tfjs-core's custom gradient
  assert.equal(own.get('FusedConv2D'), 1, info);
  assert.equal(own.get('Conv2D'), 5, info);
  // routed: five FusedConv2D; the elu layer as before; 4 fewer Relu passes (the loss has one of its own)
  assert.equal(routed.get('FusedConv2D'), 5, info);
  assert.equal(routed.get('Conv2D'), 1, info);
  assert.equal(routed.get('Relu'), own.get('Relu')! - 4, info);
  assert.equal(routed.get('Add'), own.get('Add')! - 4, info);
  // six filter gradients; input gradients of all but the first layer, on both paths
  assert.equal(routed.get('Conv2DBackpropFilter'), 6, info);
  assert.equal(routed.get('Conv2DBackpropInput'), 5, info);
  assert.equal(own.get('Conv2DBackpropFilter'), 6, info);
  assert.equal(own.get('Conv2DBackpropInput'), 5, info);
  tf.dispose([x, y]);
  m.dispose();
});

test('routed training steps change the weights and leak no tensor', async () => {
  const { m, x, y } = compiledNetwork();
  const predict = () => {
    const p = m.predict(x) as tf.Tensor;
    const values = Array.from(p.dataSync());
    p.dispose();
    return values;
  };
  const predicted = predict();
  await m.trainOnBatch(x, y); // creates the optimizer's slots
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) await m.trainOnBatch(x, y);
  assert.equal(tf.memory().numTensors, before);
  assert.notDeepEqual(predict(), predicted, 'the steps changed the weights');
  tf.dispose([x, y]);
  m.dispose();
});
