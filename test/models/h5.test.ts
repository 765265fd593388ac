// Keras HDF5 weight files: the real fixtures in ../shared/fixtures/keras-h5 (see their SOURCE.md notes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { kerasH5Dir } from '../helpers/fixtures.js';
import { readKerasH5Weights, loadKerasH5Weights, leafLayers } from '@catdog/models';

await tf.setBackend('cpu');
const mnistFile = join(kerasH5Dir, 'mnist_cnn_full_model.h5');
const mobilenetFile = join(kerasH5Dir, 'mobilenet_2_5_224_tf_no_top.h5');

/** The training script's model (kerasMNIST.py), with tf.keras' layer names. */
function buildMnist(denseUnits = 128, extra = false): tf.LayersModel {
  const m = tf.sequential();
  m.add(tf.layers.conv2d({ name: 'conv2d', filters: 30, kernelSize: 5, activation: 'relu', inputShape: [28, 28, 1] }));
  m.add(tf.layers.maxPooling2d({ name: 'max_pooling2d', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2d_1', filters: 15, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ name: 'max_pooling2d_1', poolSize: 2 }));
  m.add(tf.layers.dropout({ name: 'dropout', rate: 0.2 }));
  m.add(tf.layers.flatten({ name: 'flatten' }));
  m.add(tf.layers.dense({ name: 'dense', units: denseUnits, activation: 'relu' }));
  m.add(tf.layers.dense({ name: 'dense_1', units: 50, activation: 'relu' }));
  m.add(tf.layers.dense({ name: 'dense_2', units: 10, activation: 'softmax' }));
  if (extra) m.add(tf.layers.dense({ name: 'dense_3', units: 2 }));
  return m;
}

const sum = (a: Float32Array | number[]) => Array.from(a).reduce((s, v) => s + v, 0);

test('reads a full-model file (model_weights group): layer names, weight names, shapes, values', async () => {
  const f = await readKerasH5Weights(mnistFile);
  assert.equal(f.kind, 'model');
  assert.equal(f.kerasVersion, '2.4.0');
  assert.equal(f.backend, 'tensorflow');
  assert.deepEqual(f.layerNames, [
    'conv2d',
    'max_pooling2d',
    'conv2d_1',
    'max_pooling2d_1',
    'dropout',
    'flatten',
    'dense',
    'dense_1',
    'dense_2',
  ]);
  assert.deepEqual([...f.layers.keys()], ['conv2d', 'conv2d_1', 'dense', 'dense_1', 'dense_2']);
  const [kernel, bias] = f.layers.get('conv2d')!;
  assert.equal(kernel.name, 'conv2d/kernel:0');
  assert.deepEqual(kernel.shape, [5, 5, 1, 30]);
  assert.ok(Math.abs(kernel.values[0] - 0.0005567583) < 1e-9);
  assert.ok(Math.abs(kernel.values[1] - 0.1742226) < 1e-6);
  assert.ok(Math.abs(sum(kernel.values) - -15.740608) < 1e-3);
  assert.deepEqual(bias.shape, [30]);
  assert.deepEqual(f.layers.get('dense')![0].shape, [375, 128]);
  assert.ok(Math.abs(sum(f.layers.get('dense')![0].values) - -851.71789) < 1e-2);
  const params = [...f.layers.values()].flat().reduce((n, w) => n + w.values.length, 0);
  assert.equal(params, 59933);
});

test('loads the full-model file into the same architecture built in code and runs it', async () => {
  const model = buildMnist();
  const result = await loadKerasH5Weights(model, mnistFile);
  assert.deepEqual(result.loaded, ['conv2d', 'conv2d_1', 'dense', 'dense_1', 'dense_2']);
  assert.deepEqual(result.missing, []);
  assert.deepEqual(result.unused, []);
  const k = model.getLayer('dense_2').getWeights()[0];
  assert.deepEqual(k.shape, [50, 10]);
  const kv = k.dataSync();
  assert.ok(Math.abs(kv[0] - -0.3683812) < 1e-6 && Math.abs(kv[1] - 0.07413241) < 1e-6);
  assert.ok(Math.abs(sum(model.getLayer('dense_2').getWeights()[1].dataSync() as Float32Array) - -0.028086) < 1e-4);
  // A forward pass: a white vertical bar on black, roughly a "1"; the trained net gives a probability distribution.
  const img = tf.tidy(() => {
    const buf = tf.buffer([1, 28, 28, 1]);
    for (let y = 4; y < 24; y++) for (let x = 13; x < 16; x++) buf.set(1, 0, y, x, 0);
    return buf.toTensor();
  });
  const p = (model.predict(img) as tf.Tensor).dataSync();
  assert.equal(p.length, 10);
  assert.ok(Math.abs(sum(p as Float32Array) - 1) < 1e-4);
  const loadedOut = Array.from(p);
  // The loaded weights, not random ones, produce it.
  const fresh = (buildMnist().predict(img) as tf.Tensor).dataSync();
  assert.notDeepEqual(Array.from(fresh), loadedOut);
});

/** Handwritten-style strokes (SVG paths on a 28×28 canvas, MNIST's white on black, digit in the middle 20×20). */
const DIGIT_STROKES: Record<number, string> = {
  0: 'M 14 5 C 6 5 7 23 14 23 C 21 23 22 5 14 5 Z',
  1: 'M 14 5 L 14 23',
  2: 'M 8 9 C 9 3 20 3 19 10 C 18 15 9 20 8 23 L 21 23',
  3: 'M 8 6 C 14 2 21 7 14 13 C 22 15 18 26 8 22',
  4: 'M 17 23 L 17 5 L 7 17 L 21 17',
  7: 'M 8 6 L 20 6 L 12 23',
};

/** Renders a digit with sharp (librsvg) as the model's input: 28×28×1 grey levels scaled to [0, 1]. */
async function renderDigit(d: number): Promise<tf.Tensor4D> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><rect width="28" height="28" fill="black"/><path d="${DIGIT_STROKES[d]}" stroke="white" stroke-width="2.5" fill="none" stroke-linecap="round" stroke-linejoin="round"/></svg>`;
  const { data, info } = await sharp(Buffer.from(svg)).greyscale().raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [28, 28, 1]);
  return tf.tensor4d(
    Float32Array.from(data, (v) => v / 255),
    [1, 28, 28, 1],
  );
}

test('the loaded MNIST model reads digits the test draws: 0, 1, 2, 3, 4 and 7 each predicted confidently', async () => {
  const model = buildMnist();
  await loadKerasH5Weights(model, mnistFile);
  for (const d of Object.keys(DIGIT_STROKES).map(Number)) {
    const x = await renderDigit(d);
    const p = Array.from((model.predict(x) as tf.Tensor).dataSync());
    const predicted = p.indexOf(Math.max(...p));
    assert.equal(predicted, d, `drawn ${d}, predicted ${predicted} (${p.map((v) => v.toFixed(2)).join(' ')})`);
    assert.ok(p[d] > 0.9, `drawn ${d}: probability ${p[d]}`);
    x.dispose();
  }
});

test('shape mismatch names the layer, expected and found shapes; nothing is assigned', async () => {
  const model = buildMnist(64);
  const before = model.getLayer('conv2d').getWeights()[0].dataSync().slice(0, 4);
  await assert.rejects(loadKerasH5Weights(model, mnistFile), (err: Error) => {
    assert.equal(err.name, 'UserError');
    assert.match(
      err.message,
      /layer 'dense' weight 0 'dense\/kernel:0': expected shape \[375, 64\], found \[375, 128\]/,
    );
    assert.match(err.message, /layer 'dense_1'.*expected shape \[64, 50\], found \[128, 50\]/);
    return true;
  });
  assert.deepEqual(model.getLayer('conv2d').getWeights()[0].dataSync().slice(0, 4), before);
  const skipped = await loadKerasH5Weights(model, mnistFile, { skipMismatch: true });
  assert.deepEqual(skipped.loaded, ['conv2d', 'conv2d_1', 'dense_2']);
  assert.deepEqual(
    skipped.skipped.map((s) => s.layer),
    ['dense', 'dense_1'],
  );
});

test('missing layers are named; allowMissing loads the rest', async () => {
  const model = buildMnist(128, true);
  await assert.rejects(
    loadKerasH5Weights(model, mnistFile),
    /1 model layer\(s\) have no weights in the file: dense_3 \(the file has: conv2d, conv2d_1, dense, dense_1, dense_2\)/,
  );
  const r = await loadKerasH5Weights(model, mnistFile, { allowMissing: true });
  assert.deepEqual(r.missing, ['dense_3']);
  assert.equal(r.loaded.length, 5);
});

test('bad files: not found, not HDF5', async () => {
  await assert.rejects(readKerasH5Weights(join(kerasH5Dir, 'nope.h5')), /nope\.h5: Keras weight file not found/);
  await assert.rejects(readKerasH5Weights(join(kerasH5Dir, 'mnist_cnn_full_model.SOURCE.md')), /not an HDF5 file/);
});

/** Keras' MobileNet v1 (alpha 0.25) conv base in code: conv1 + 13 depthwise-separable blocks, BN after every conv, ReLU6. */
function buildMobileNetV1(alpha: number, size: number): tf.LayersModel {
  const input = tf.input({ shape: [size, size, 3], name: 'input_1' });
  const relu6 = (name: string) => tf.layers.reLU({ maxValue: 6, name });
  let x = tf.layers
    .conv2d({ name: 'conv1', filters: 32 * alpha, kernelSize: 3, strides: 2, padding: 'same', useBias: false })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'conv1_bn' }).apply(x) as tf.SymbolicTensor;
  x = relu6('conv1_relu').apply(x) as tf.SymbolicTensor;
  const blocks: [number, number][] = [
    [64, 1],
    [128, 2],
    [128, 1],
    [256, 2],
    [256, 1],
    [512, 2],
    [512, 1],
    [512, 1],
    [512, 1],
    [512, 1],
    [512, 1],
    [1024, 2],
    [1024, 1],
  ];
  blocks.forEach(([filters, stride], i) => {
    const id = i + 1;
    x = tf.layers
      .depthwiseConv2d({ name: `conv_dw_${id}`, kernelSize: 3, strides: stride, padding: 'same', useBias: false })
      .apply(x) as tf.SymbolicTensor;
    x = tf.layers.batchNormalization({ name: `conv_dw_${id}_bn` }).apply(x) as tf.SymbolicTensor;
    x = relu6(`conv_dw_${id}_relu`).apply(x) as tf.SymbolicTensor;
    x = tf.layers
      .conv2d({ name: `conv_pw_${id}`, filters: filters * alpha, kernelSize: 1, useBias: false })
      .apply(x) as tf.SymbolicTensor;
    x = tf.layers.batchNormalization({ name: `conv_pw_${id}_bn` }).apply(x) as tf.SymbolicTensor;
    x = relu6(`conv_pw_${id}_relu`).apply(x) as tf.SymbolicTensor;
  });
  return tf.model({ inputs: input, outputs: x, name: 'mobilenet_0.25_224' });
}

test('reads the weights-only MobileNet v1 file (root layer_names, Keras 2.0.4) by name', async () => {
  const f = await readKerasH5Weights(mobilenetFile);
  assert.equal(f.kind, 'weights');
  assert.equal(f.kerasVersion, '2.0.4');
  assert.equal(f.layerNames.length, 83);
  assert.equal(f.layerNames[0], 'input_1');
  assert.equal(f.layerNames[82], 'global_average_pooling2d_1');
  assert.equal(f.layers.size, 83 - 29);
  const all = [...f.layers.values()].flat();
  assert.equal(all.length, 135);
  assert.equal(
    all.reduce((n, w) => n + w.values.length, 0),
    218544,
  );
  const bn = f.layers.get('conv_dw_1_bn')!;
  assert.deepEqual(
    bn.map((w) => w.name),
    ['conv_dw_1_bn/gamma:0', 'conv_dw_1_bn/beta:0', 'conv_dw_1_bn/moving_mean:0', 'conv_dw_1_bn/moving_variance:0'],
  );
  assert.ok(Math.abs(bn[2].values[0] - 48.27794) < 1e-4);
  assert.deepEqual(f.layers.get('conv_dw_13')![0].shape, [3, 3, 256, 1]);
  assert.deepEqual(f.layers.get('conv_pw_13')![0].shape, [1, 1, 256, 256]);
  assert.ok(Math.abs(sum(f.layers.get('conv_pw_13_bn')![0].values) - 2058.310894) < 1e-2);
});

test('loads the MobileNet v1 file into MobileNet v1 built in code; pretrained BN statistics keep activations sane', async () => {
  const model = buildMobileNetV1(0.25, 64);
  const r = await loadKerasH5Weights(model, mobilenetFile);
  assert.equal(r.loaded.length, 54);
  assert.deepEqual(r.unused, []);
  assert.equal(leafLayers(model).filter((l) => l.weights.length > 0).length, 54);
  assert.equal(model.countParams(), 218544);
  const mv = model.getLayer('conv1_bn').getWeights()[3].dataSync();
  assert.ok(Math.abs(mv[0] - 4.523281) < 1e-5);
  const x = tf.randomUniform([2, 64, 64, 3], -1, 1, 'float32', 7);
  const y = model.predict(x) as tf.Tensor;
  assert.deepEqual(y.shape, [2, 2, 2, 256]);
  const v = y.dataSync();
  assert.ok(v.every((e) => Number.isFinite(e) && e >= 0 && e <= 6));
  assert.ok(v.some((e) => e > 0));
  // A subset of the layers (the stem) in its own stack also loads by name.
  const stemIn = tf.input({ shape: [32, 32, 3] });
  let s = tf.layers
    .conv2d({ name: 'conv1', filters: 8, kernelSize: 3, strides: 2, padding: 'same', useBias: false })
    .apply(stemIn) as tf.SymbolicTensor;
  s = tf.layers.batchNormalization({ name: 'conv1_bn' }).apply(s) as tf.SymbolicTensor;
  const stem = tf.model({ inputs: stemIn, outputs: s });
  const rs = await loadKerasH5Weights(stem, mobilenetFile);
  assert.deepEqual(rs.loaded, ['conv1', 'conv1_bn']);
  assert.equal(rs.unused.length, 52);
  assert.ok(Math.abs(stem.getLayer('conv1').getWeights()[0].dataSync()[0] - 0.656571) < 1e-6);
});

test('a full-model file whose first layer is a nested model (model_weights/<base>/<layer>/kernel:0) loads into the stacked model', async () => {
  // Written with h5wasm in tf.keras 2.x's layout for Sequential([base, Flatten(), Dense(1)]).
  const h5wasm = await import('h5wasm/node');
  await h5wasm.ready;
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'catdog-h5-'));
  const path = join(dir, 'nested.h5');
  const k1 = Float32Array.from({ length: 3 * 3 * 3 * 4 }, (_, i) => i / 100);
  const b1 = Float32Array.from([1, 2, 3, 4]);
  const k2 = Float32Array.from({ length: 4 * 1 }, (_, i) => -i);
  const b2 = Float32Array.from([0.5]);
  try {
    const f = new h5wasm.File(path, 'w');
    f.create_attribute('keras_version', '2.4.0');
    f.create_attribute('backend', 'tensorflow');
    const mw = f.create_group('model_weights');
    mw.create_attribute('layer_names', ['tiny', 'flatten', 'dense']);
    const tiny = mw.create_group('tiny');
    tiny.create_attribute('weight_names', ['block1_conv1/kernel:0', 'block1_conv1/bias:0']);
    tiny.create_group('block1_conv1');
    tiny.create_dataset({ name: 'block1_conv1/kernel:0', data: k1, shape: [3, 3, 3, 4], dtype: '<f' });
    tiny.create_dataset({ name: 'block1_conv1/bias:0', data: b1, shape: [4], dtype: '<f' });
    const flatten = mw.create_group('flatten');
    flatten.create_attribute('weight_names', new Float64Array(0), [0], '<d');
    const dense = mw.create_group('dense');
    dense.create_attribute('weight_names', ['dense/kernel:0', 'dense/bias:0']);
    dense.create_group('dense');
    dense.create_dataset({ name: 'dense/kernel:0', data: k2, shape: [4, 1], dtype: '<f' });
    dense.create_dataset({ name: 'dense/bias:0', data: b2, shape: [1], dtype: '<f' });
    f.close();

    const input = tf.input({ shape: [8, 8, 3] });
    const conv = tf.layers
      .conv2d({ name: 'block1_conv1', filters: 4, kernelSize: 3, padding: 'same' })
      .apply(input) as tf.SymbolicTensor;
    const pooled = tf.layers.maxPooling2d({ name: 'pool', poolSize: 8 }).apply(conv) as tf.SymbolicTensor;
    const base = tf.model({ inputs: input, outputs: pooled, name: 'tiny' });
    const model = tf.sequential({
      layers: [base, tf.layers.flatten({ name: 'flatten' }), tf.layers.dense({ name: 'dense', units: 1 })],
    });
    const r = await loadKerasH5Weights(model, path);
    assert.deepEqual(r.loaded, ['block1_conv1', 'dense']);
    assert.deepEqual(Array.from(base.getLayer('block1_conv1').getWeights()[1].dataSync()), [1, 2, 3, 4]);
    assert.deepEqual(Array.from(model.getLayer('dense').getWeights()[0].dataSync()), [-0, -1, -2, -3]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
