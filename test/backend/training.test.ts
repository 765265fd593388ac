// Training on the wasm backend with the package's kernels: a short seeded fit on real images in which
// the loss falls, and 100 steps without tensor leaks and with a bounded wasm heap.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { isolatePlanCache } from '../helpers/kernels.js';

isolatePlanCache(); // the convolutions tune their kernel plans into a cache of this test's own

const SIZE = 64;

async function loadImages(n: number): Promise<{ xs: tf.Tensor4D; ys: tf.Tensor2D }> {
  const pixels = new Float32Array(n * SIZE * SIZE * 3);
  const labels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const dog = i % 2 === 1;
    const file = join(kaggleTrainDir, `${dog ? 'dog' : 'cat'}.${i >> 1}.jpg`);
    const raw = await sharp(file).resize(SIZE, SIZE, { fit: 'fill' }).removeAlpha().raw().toBuffer();
    for (let j = 0; j < raw.length; j++) pixels[i * SIZE * SIZE * 3 + j] = raw[j]! / 255;
    labels[i] = dog ? 1 : 0;
  }
  return { xs: tf.tensor4d(pixels, [n, SIZE, SIZE, 3]), ys: tf.tensor2d(labels, [n, 1]) };
}

/** A tiny convnet with seeded initial weights: the same network in every run. */
function tinyConvnet(size: number, withDepthwise: boolean): tf.Sequential {
  let seed = 17;
  const init = () => tf.initializers.glorotUniform({ seed: seed++ });
  const m = tf.sequential();
  m.add(
    tf.layers.conv2d({
      inputShape: [size, size, 3],
      filters: 8,
      kernelSize: 3,
      activation: 'relu',
      kernelInitializer: init(),
    }),
  );
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  if (withDepthwise) {
    m.add(
      tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', activation: 'relu', depthwiseInitializer: init() }),
    );
    m.add(tf.layers.batchNormalization());
  }
  m.add(
    tf.layers.conv2d({
      filters: 16,
      kernelSize: 3,
      strides: 2,
      padding: 'same',
      activation: 'relu',
      kernelInitializer: init(),
    }),
  );
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.flatten());
  m.add(tf.layers.dense({ units: 16, activation: 'relu', kernelInitializer: init() }));
  m.add(tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: init() }));
  return m;
}

/**
 * Loss per epoch of the seeded convnet fitted on `xs`, `ys` in a fixed order (no shuffle), and the trainable
 * weights the fit left unchanged (the dense layers alone can lower the loss: a convolution whose gradient is lost
 * shows only here).
 */
async function seededFit(xs: tf.Tensor4D, ys: tf.Tensor2D): Promise<{ loss: number[]; unmoved: string[] }> {
  const model = tinyConvnet(SIZE, true);
  model.compile({ optimizer: tf.train.rmsprop(1e-3), loss: 'binaryCrossentropy', metrics: ['accuracy'] });
  const values = (w: tf.LayerVariable) => w.read().dataSync();
  const before = model.trainableWeights.map((w) => values(w).slice());
  const history = await model.fit(xs, ys, { epochs: 8, batchSize: 10, shuffle: false, verbose: 0 });
  const unmoved = model.trainableWeights
    .filter((w, i) => values(w).every((v, j) => v === before[i]![j]))
    .map((w) => w.name);
  model.dispose();
  return { loss: history.history.loss as number[], unmoved };
}

before(async () => {
  const choice = await initBackend({ backend: 'wasm', log: () => {} });
  assert.equal(choice.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
});

test('a short seeded fit on 40 real images on wasm lowers the loss and updates every weight', async () => {
  const { xs, ys } = await loadImages(40);
  const { loss, unmoved } = await seededFit(xs, ys);
  assert.deepEqual(unmoved, [], 'every trainable weight is updated');
  assert.equal(loss.length, 8);
  for (const l of loss) assert.ok(Number.isFinite(l), `loss is finite: ${loss.join(', ')}`);
  if (process.env.CATDOG_TEST_VERBOSE) console.log(loss);
  const first = loss[0]!;
  const last = Math.min(...loss.slice(-2));
  assert.ok(
    last < 0.8 * first,
    `loss fell from ${first.toFixed(4)} to ${last.toFixed(4)}: ${loss.map((l) => l.toFixed(3)).join(', ')}`,
  );
  xs.dispose();
  ys.dispose();
});

test('100 training steps leak no tensors and keep the wasm heap bounded', async () => {
  const model = tinyConvnet(24, true);
  model.compile({ optimizer: tf.train.rmsprop(1e-3), loss: 'binaryCrossentropy' });
  const xs = tf.randomUniform([8, 24, 24, 3]);
  const ys = tf.tensor2d([0, 1, 0, 1, 1, 0, 1, 0], [8, 1]);
  const backend = tf.backend() as unknown as { numDataIds(): number; wasm: { HEAPU8: Uint8Array } };
  const heapBytes = () => backend.wasm.HEAPU8.buffer.byteLength;
  for (let i = 0; i < 10; i++) await model.trainOnBatch(xs, ys);
  const tensorsAfterWarmup = tf.memory().numTensors;
  const buffersAfterWarmup = backend.numDataIds();
  const heapAfterWarmup = heapBytes();
  for (let i = 0; i < 100; i++) {
    await model.trainOnBatch(xs, ys);
    assert.equal(tf.memory().numTensors, tensorsAfterWarmup, `tensor count after step ${i + 1}`);
  }
  assert.equal(backend.numDataIds(), buffersAfterWarmup, 'backend data buffers (kernel intermediates included)');
  assert.ok(
    heapBytes() <= heapAfterWarmup + (1 << 20),
    `wasm heap grew from ${heapAfterWarmup} to ${heapBytes()} bytes`,
  );
  model.dispose();
  xs.dispose();
  ys.dispose();
});
