// The same seeded fit on the wasm backend (the package's training kernels) and on tfjs' pure-JS cpu backend (tfjs'
// own kernels, an independent reference) follows the same loss curve, and every weight of the wasm fit moved.
// "The loss falls" alone is not enough: with the convolutions' filter gradients zeroed, the dense layers still
// lower the loss on 40 images by themselves (test/backend/training passes so). 20 photos at 32 px, 4 epochs: the
// cpu backend's convolutions are slow.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { kaggleTrainDir } from '../helpers/fixtures.js';

const SIZE = 32;
const N = 20;

async function photos(): Promise<{ pixels: Float32Array; labels: Float32Array }> {
  const pixels = new Float32Array(N * SIZE * SIZE * 3);
  const labels = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const dog = i % 2 === 1;
    const raw = await sharp(join(kaggleTrainDir, `${dog ? 'dog' : 'cat'}.${i >> 1}.jpg`))
      .resize(SIZE, SIZE, { fit: 'fill' })
      .removeAlpha()
      .raw()
      .toBuffer();
    for (let j = 0; j < raw.length; j++) pixels[i * SIZE * SIZE * 3 + j] = raw[j]! / 255;
    labels[i] = dog ? 1 : 0;
  }
  return { pixels, labels };
}

/** Conv (+ MaxPool), depthwise conv, BatchNorm, strided conv, Dense: the kernels the strategies train with. */
function seededConvnet(): tf.Sequential {
  let seed = 5;
  const init = () => tf.initializers.glorotUniform({ seed: seed++ });
  const m = tf.sequential();
  m.add(
    tf.layers.conv2d({
      inputShape: [SIZE, SIZE, 3],
      filters: 8,
      kernelSize: 3,
      activation: 'relu',
      kernelInitializer: init(),
    }),
  );
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(
    tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', activation: 'relu', depthwiseInitializer: init() }),
  );
  m.add(tf.layers.batchNormalization());
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

/** Loss per epoch, and per weight how far it moved (max |after − before|), of the seeded fit on `backend`. */
async function seededFit(
  backend: 'wasm' | 'cpu',
  data: { pixels: Float32Array; labels: Float32Array },
): Promise<{ loss: number[]; moved: number[] }> {
  await initBackend({ backend, log: () => {} });
  const model = seededConvnet();
  model.compile({ optimizer: tf.train.rmsprop(1e-3), loss: 'binaryCrossentropy' });
  const before = model.getWeights().map((w) => Float32Array.from(w.dataSync()));
  const xs = tf.tensor4d(data.pixels, [N, SIZE, SIZE, 3]);
  const ys = tf.tensor2d(data.labels, [N, 1]);
  const h = await model.fit(xs, ys, { epochs: 4, batchSize: 10, shuffle: false, verbose: 0 });
  const moved = model.getWeights().map((w, i) => {
    const after = Float32Array.from(w.dataSync());
    return after.reduce((m, v, j) => Math.max(m, Math.abs(v - before[i]![j]!)), 0);
  });
  tf.dispose([xs, ys]);
  model.dispose();
  return { loss: h.history.loss as number[], moved };
}

test('a seeded convnet fit on wasm follows the cpu backend’s loss curve; every weight moves', async () => {
  const data = await photos();
  const wasm = await seededFit('wasm', data);
  const cpu = await seededFit('cpu', data);
  const seen = `wasm ${wasm.loss.map((l) => l.toFixed(5))}, cpu ${cpu.loss.map((l) => l.toFixed(5))}`;
  if (process.env.CATDOG_TEST_VERBOSE) console.log(seen, wasm.moved);
  assert.ok(
    wasm.loss.every((l, i) => Math.abs(l - cpu.loss[i]!) <= 2e-3 * Math.max(1, cpu.loss[i]!)),
    `loss curves differ: ${seen}`,
  );
  // BatchNorm's moving statistics are weights too, and move; every kernel, bias, gamma and beta must.
  wasm.moved.forEach((m, i) => assert.ok(m > 1e-5, `weight ${i} did not move (max change ${m})`));
});
