// compileFrozenBase: the folded/fused forward pass equals model.predict on real photos, for the project's bases
// (MobileNetV2 1.0 and 0.35 with the shared ImageNet weights, VGG16) and for graphs that exercise every branch of
// the compiler (BatchNorm with real statistics, depthwise multipliers, shared tensors, unknown layers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { kaggleTrainDir, mobilenetV2Dir } from '../helpers/fixtures.js';
import {
  buildConvnet,
  compileFrozenBase,
  loadMobileNetV2Base,
  buildVgg16Base,
  stackBaseAndHead,
  inputScaling,
} from '@catdog/models';
import { initBackend } from '@catdog/backend';

await initBackend({ backend: 'wasm', log: () => {} });

const PHOTOS = ['cat.0.jpg', 'cat.1234.jpg', 'dog.7.jpg', 'dog.2500.jpg'];

/** A batch of real photos resized to size×size and scaled as `base` expects (as the project's readers do). */
async function photos(size: number, base: string): Promise<tf.Tensor4D> {
  const s = inputScaling(base);
  const raws = await Promise.all(
    PHOTOS.map(
      async (p) =>
        await sharp(join(kaggleTrainDir, p)).resize(size, size, { fit: 'fill' }).removeAlpha().raw().toBuffer(),
    ),
  );
  return tf.tidy(
    () =>
      tf
        .tensor4d(Uint8Array.from(Buffer.concat(raws)), [raws.length, size, size, 3], 'int32')
        .toFloat()
        .mul(s.scale)
        .add(s.offset) as tf.Tensor4D,
  );
}

/** max |a − b| relative to max |b| (the reference), over every output. */
function relativeError(a: tf.Tensor, b: tf.Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / Math.max(tf.max(tf.abs(b)).dataSync()[0], 1e-12));
}

/** compiled.predict(x) vs model.predict(x), with no tensor left behind by predict or by compile + dispose. */
function checkAgainstPredict(model: tf.LayersModel, x: tf.Tensor, tolerance = 1e-3) {
  const before = tf.memory().numTensors;
  const compiled = compileFrozenBase(model);
  const ref = model.predict(x) as tf.Tensor;
  const afterCompile = tf.memory().numTensors;
  const out = compiled.predict(x) as tf.Tensor;
  assert.equal(tf.memory().numTensors, afterCompile + 1, 'predict leaves only its result');
  const err = relativeError(out, ref);
  assert.ok(err <= tolerance, `${model.name}: relative error ${err} > ${tolerance}`);
  const stats = compiled.stats;
  tf.dispose([out, ref]);
  compiled.dispose();
  assert.equal(tf.memory().numTensors, before, 'compile + predict + dispose leaves nothing');
  return { err, stats };
}

test('MobileNetV2 1.0 at 150×150: every BatchNorm folded, every ReLU6 fused, outputs equal model.predict on real photos', async () => {
  const base = await loadMobileNetV2Base({ alpha: 1.0, from: mobilenetV2Dir('1.0') });
  const x = await photos(150, 'mobilenet_v2');
  const { err, stats } = checkAgainstPredict(base, x);
  assert.deepEqual(stats, {
    convolutions: 52,
    foldedBatchNorms: 52,
    fusedActivations: 35,
    foldedPaddings: 5,
    direct: 10,
    fallbacks: [],
  });
  assert.ok(err < 1e-3);
  // The photos give distinct, non-trivial features (not a degenerate all-zero comparison).
  const y = compileFrozenBase(base);
  const f = y.predict(x) as tf.Tensor;
  assert.ok(tf.tidy(() => tf.sum(tf.greater(f, 0)).dataSync()[0]) > f.size * 0.05);
  tf.dispose([f, x]);
  y.dispose();
  tf.dispose(base.getWeights());
});

test('MobileNetV2 0.35: the project extractor (global average pooling) and the fine-tune bottom (an inner tensor as output)', async () => {
  const base = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35') });
  const x = await photos(150, 'mobilenet_v2_0.35');
  const whole = checkAgainstPredict(base, x);
  assert.equal(whole.stats.foldedBatchNorms, 52);
  assert.deepEqual(whole.stats.fallbacks, []);
  // As the extract strategy builds it: the base's output through a pooling layer, as one model.
  const pooled = tf.layers.globalAveragePooling2d({ name: 'head_pool' }).apply(base.outputs[0]) as tf.SymbolicTensor;
  const extractor = tf.model({ inputs: base.inputs, outputs: pooled, name: 'features' });
  const ex = checkAgainstPredict(extractor, x);
  assert.deepEqual(ex.stats.fallbacks, ['head_pool (GlobalAveragePooling2D)']);
  // Without padding folding (the default on backends other than wasm and cpu) the pads run as tf.pad.
  const unpadded = compileFrozenBase(extractor, { foldPadding: false });
  assert.equal(unpadded.stats.foldedPaddings, 0);
  assert.equal(unpadded.stats.direct, ex.stats.direct + 5);
  const [u, r] = [unpadded.predict(x) as tf.Tensor, extractor.predict(x) as tf.Tensor];
  assert.ok(relativeError(u, r) < 1e-3);
  tf.dispose([u, r]);
  unpadded.dispose();
  // As the fine-tune strategy caches activations: the input of block_13_expand (the output of block_12_add).
  const split = base.getLayer('block_13_expand').input as tf.SymbolicTensor;
  const bottom = tf.model({ inputs: base.inputs, outputs: split, name: 'bottom' });
  const b = checkAgainstPredict(bottom, x);
  assert.ok(b.stats.convolutions < 52 && b.stats.convolutions > 30);
  x.dispose();
  tf.dispose(base.getWeights());
});

test("whole classifiers as evaluate and predict run them: the book's convnet with dropout; MobileNetV2 inline with a pooled dense head", async () => {
  // evaluate, predict and the trainer's test pass run saved models through this compiler (frozenForward).
  const convnet = buildConvnet({ inputShape: [150, 150, 3], dropout: 0.5, seed: 3 });
  const x150 = await photos(150, 'convnet');
  const c = checkAgainstPredict(convnet, x150, 1e-4);
  assert.equal(c.stats.convolutions, 4);
  assert.deepEqual(c.stats.fallbacks, [
    'flatten_1 (Flatten)',
    'dropout_1 (Dropout)',
    'dense_1 (Dense)',
    'dense_2 (Dense)',
  ]);
  const base = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35') });
  const pooled = tf.layers.globalAveragePooling2d({ name: 'head_pool' }).apply(base.outputs[0]) as tf.SymbolicTensor;
  const hidden = tf.layers
    .dense({
      name: 'head_dense',
      units: 16,
      activation: 'relu',
      kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
    })
    .apply(pooled) as tf.SymbolicTensor;
  const output = tf.layers
    .dense({
      name: 'head_output',
      units: 1,
      activation: 'sigmoid',
      kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
    })
    .apply(hidden) as tf.SymbolicTensor;
  const inline = tf.model({ inputs: base.inputs, outputs: output, name: 'mobilenetv2_finetune' });
  const m = checkAgainstPredict(inline, await photos(150, 'mobilenet_v2_0.35'), 1e-4);
  assert.equal(m.stats.foldedBatchNorms, 52);
  tf.dispose([x150, ...convnet.getWeights(), ...inline.getWeights()]);
});

test('VGG16 conv base (random weights, 48×48) and VGG16 stacked with the book head (nested model + Flatten/Dense fallbacks)', async () => {
  const base = await buildVgg16Base({ inputShape: [48, 48, 3], weights: null });
  const x = await photos(48, 'vgg16');
  const { stats } = checkAgainstPredict(base, x);
  assert.deepEqual(stats, {
    convolutions: 13,
    foldedBatchNorms: 0,
    fusedActivations: 0,
    foldedPaddings: 0,
    direct: 5,
    fallbacks: [],
  });
  const full = stackBaseAndHead(base, { units: 16, dropout: 0.5 });
  const s = checkAgainstPredict(full, x).stats;
  assert.equal(s.convolutions, 13);
  assert.deepEqual(
    s.fallbacks.map((f) => f.replace(/^\S+ /, '')),
    ['(Flatten)', '(Dense)', '(Dropout)', '(Dense)'],
  );
  x.dispose();
  tf.dispose(full.getWeights());
});

/** A graph exercising every branch of the compiler, with non-trivial BatchNorm statistics and biases. */
async function checkSyntheticGraph() {
  const input = tf.input({ shape: [23, 23, 3] });
  const L = tf.layers;
  // Asymmetric pads: one ZeroPadding2D feeding a single 'valid' conv (folded), one feeding two convs (kept).
  const p1 = L.zeroPadding2d({
    padding: [
      [1, 2],
      [0, 1],
    ],
  }).apply(input) as tf.SymbolicTensor;
  const a = L.conv2d({ filters: 8, kernelSize: 3, strides: 2, useBias: true }).apply(p1) as tf.SymbolicTensor;
  const p2 = L.zeroPadding2d({
    padding: [
      [1, 2],
      [0, 1],
    ],
  }).apply(input) as tf.SymbolicTensor;
  const b = L.conv2d({ filters: 8, kernelSize: 3, strides: 2, useBias: false }).apply(p2) as tf.SymbolicTensor;
  const c = L.conv2d({ filters: 8, kernelSize: 3, strides: 2, dilationRate: 1 }).apply(p2) as tf.SymbolicTensor;
  let x = L.add().apply([a, b, c]) as tf.SymbolicTensor;
  x = L.batchNormalization({ epsilon: 1e-3 }).apply(x) as tf.SymbolicTensor; // after an Add: runs as the layer
  x = L.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same', useBias: true }).apply(
    x,
  ) as tf.SymbolicTensor;
  x = L.batchNormalization({ epsilon: 1e-5 }).apply(x) as tf.SymbolicTensor;
  x = L.reLU({ maxValue: 6 }).apply(x) as tf.SymbolicTensor;
  const shared = L.conv2d({ filters: 12, kernelSize: 1 }).apply(x) as tf.SymbolicTensor;
  const bn = L.batchNormalization({ scale: false }).apply(shared) as tf.SymbolicTensor; // conv output used twice: not folded
  x = L.add().apply([bn, shared]) as tf.SymbolicTensor;
  x = L.conv2d({ filters: 6, kernelSize: 3, activation: 'tanh' }).apply(x) as tf.SymbolicTensor; // unfusable activation
  x = L.batchNormalization().apply(x) as tf.SymbolicTensor;
  x = L.reLU({ maxValue: 3 }).apply(x) as tf.SymbolicTensor;
  x = L.separableConv2d({ filters: 4, kernelSize: 2 }).apply(x) as tf.SymbolicTensor;
  x = L.conv2d({ filters: 4, kernelSize: 1, useBias: false }).apply(x) as tf.SymbolicTensor;
  x = L.batchNormalization({ center: false }).apply(x) as tf.SymbolicTensor;
  x = L.activation({ activation: 'relu' }).apply(x) as tf.SymbolicTensor;
  x = L.conv2d({ filters: 5, kernelSize: 1, activation: 'relu' }).apply(x) as tf.SymbolicTensor;
  x = L.maxPooling2d({ poolSize: 2, padding: 'same' }).apply(x) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: [x, bn], name: 'graph' });
  // Non-trivial statistics (fresh layers have mean 0, variance 1, gamma 1, beta 0: folding would be identity).
  for (const layer of model.layers) {
    if (layer.getClassName() !== 'BatchNormalization') continue;
    layer.setWeights(
      layer
        .getWeights()
        .map((w, i, all) =>
          i === all.length - 1
            ? tf.randomUniform(w.shape, 0.2, 3, 'float32', 7)
            : tf.randomUniform(w.shape, -1.5, 1.5, 'float32', 11 + i),
        ),
    );
  }
  for (const layer of model.layers) {
    if (layer.getClassName().includes('Conv') && layer.getWeights().length === 2)
      layer.setWeights([layer.getWeights()[0], tf.randomUniform(layer.getWeights()[1].shape, -0.5, 0.5, 'float32', 3)]);
  }
  const photo = await photos(23, 'vgg16');
  const before = tf.memory().numTensors;
  const compiled = compileFrozenBase(model);
  const outs = compiled.predict(photo) as tf.Tensor[];
  const refs = model.predict(photo) as tf.Tensor[];
  assert.equal(outs.length, 2);
  for (let i = 0; i < 2; i++)
    assert.ok(relativeError(outs[i], refs[i]) < 1e-4, `output ${i}: ${relativeError(outs[i], refs[i])}`);
  assert.deepEqual(
    { ...compiled.stats, fallbacks: compiled.stats.fallbacks.map((f) => f.replace(/^\S+ /, '')) },
    {
      // a (+ its padding), b, c, the depthwise (+ BN + ReLU6), the shared 1×1, the 1×1 (+ BN + relu), the relu 1×1
      convolutions: 7,
      foldedBatchNorms: 2,
      fusedActivations: 2,
      foldedPaddings: 1,
      // the shared ZeroPadding2D, 2 × Add, MaxPooling2D
      direct: 4,
      fallbacks: [
        '(BatchNormalization)',
        '(BatchNormalization)',
        '(Conv2D)',
        '(BatchNormalization)',
        '(ReLU)',
        '(SeparableConv2D)',
      ],
    },
  );
  tf.dispose([...outs, ...refs]);
  compiled.dispose();
  assert.equal(tf.memory().numTensors, before);
  photo.dispose();
  tf.dispose(model.getWeights());
}

test(
  'folding with real BatchNorm statistics: conv bias, depthwise multiplier 2, shared tensors, ZeroPadding feeding two convs, unknown layers',
  checkSyntheticGraph,
);

test('a wrong input shape is refused with the expected shape; a disposed FrozenBase refuses to run', async () => {
  const base = await buildVgg16Base({ inputShape: [32, 32, 3], weights: null });
  const compiled = compileFrozenBase(base);
  const before = tf.memory().numTensors;
  const x = tf.zeros([2, 40, 40, 3]);
  assert.throws(() => compiled.predict(x), /expected input of shape \[batch,32,32,3\], got \[2,40,40,3\]/);
  x.dispose();
  assert.equal(tf.memory().numTensors, before);
  compiled.dispose();
  const y = tf.zeros([1, 32, 32, 3]);
  assert.throws(() => compiled.predict(y), /disposed/);
  y.dispose();
  tf.dispose(base.getWeights());
});

test('the same graph on the pure-JS cpu backend (explicit padding in fused depthwise convs, relu6)', async () => {
  await initBackend({ backend: 'cpu', log: () => {} });
  assert.equal(tf.getBackend(), 'cpu');
  try {
    await checkSyntheticGraph();
  } finally {
    await initBackend({ backend: 'wasm', log: () => {} });
  }
});

/** The folded graph of `model` on wasm (our kernels) vs model.predict on the cpu backend (tfjs' own kernels). */
async function checkAgainstCpu(model: tf.LayersModel, size: number, scaling: string): Promise<number> {
  const xWasm = await photos(size, scaling);
  const pixels = xWasm.dataSync().slice();
  const compiled = compileFrozenBase(model);
  const outWasm = compiled.predict(xWasm) as tf.Tensor;
  const ours = { shape: outWasm.shape, values: outWasm.dataSync().slice() };
  tf.dispose([outWasm, xWasm]);
  compiled.dispose();
  await initBackend({ backend: 'cpu', log: () => {} });
  assert.equal(tf.getBackend(), 'cpu');
  try {
    const x = tf.tensor4d(pixels, [PHOTOS.length, size, size, 3]);
    const ref = model.predict(x) as tf.Tensor;
    const err = relativeError(tf.tensor(ours.values, ours.shape), ref);
    if (process.env.CATDOG_TEST_VERBOSE)
      console.log(`${model.name}: wasm folded vs cpu predict: relative error ${err}`);
    assert.ok(ours.values.filter((v) => v > 0).length > ours.values.length * 0.05, 'non-trivial features');
    tf.dispose([x, ref]);
    return err;
  } finally {
    await initBackend({ backend: 'wasm', log: () => {} });
  }
}

test('the folded graph on wasm (our kernels) equals model.predict on the cpu backend (tfjs own kernels)', async () => {
  // The reference runs on another backend: a fault in the wasm kernels that the folded graph and model.predict
  // share on wasm (Winograd, direct and XNNPACK convolutions, depthwise) shows here and not in the tests above.
  const base = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35'), inputShape: [96, 96, 3] });
  const e1 = await checkAgainstCpu(base, 96, 'mobilenet_v2_0.35');
  assert.ok(e1 < 1e-4, `MobileNetV2 0.35: relative error ${e1}`);
  tf.dispose(base.getWeights());
  // MobileNetV2 has no 3×3 stride-1 full convolutions; a VGG-like block has (the Winograd kernels' shapes).
  const input = tf.input({ shape: [40, 40, 3] });
  let y = input;
  for (const [i, filters] of [16, 32, 32].entries()) {
    y = tf.layers
      .conv2d({
        filters,
        kernelSize: 3,
        padding: 'same',
        activation: 'relu',
        kernelInitializer: tf.initializers.heNormal({ seed: 5 + i }),
        biasInitializer: tf.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: 9 + i }),
      })
      .apply(y) as tf.SymbolicTensor;
    if (i === 1) y = tf.layers.maxPooling2d({ poolSize: 2 }).apply(y) as tf.SymbolicTensor;
  }
  const vggLike = tf.model({ inputs: input, outputs: y, name: 'vgg_like' });
  // Winograd for both the folded (fused) and the layers' (unfused) convolutions, whatever autotuning would pick:
  // the kernels both paths then share are only checked by another backend.
  const saved = process.env.CATDOG_KERNEL_PLAN;
  process.env.CATDOG_KERNEL_PLAN = 'conv2d=winograd4';
  try {
    const wasmOnly = compileFrozenBase(vggLike);
    const x = await photos(40, 'vgg16');
    const [a, b] = [wasmOnly.predict(x) as tf.Tensor, vggLike.predict(x) as tf.Tensor];
    assert.ok(relativeError(a, b) < 1e-4);
    tf.dispose([a, b, x]);
    wasmOnly.dispose();
    const e2 = await checkAgainstCpu(vggLike, 40, 'vgg16');
    assert.ok(e2 < 1e-4, `VGG-like block (Winograd F(4×4, 3×3)): relative error ${e2}`);
  } finally {
    if (saved === undefined) delete process.env.CATDOG_KERNEL_PLAN;
    else process.env.CATDOG_KERNEL_PLAN = saved;
  }
  tf.dispose(vggLike.getWeights());
});
