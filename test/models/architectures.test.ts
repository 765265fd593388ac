// The book's models built in code: shapes, parameter counts (Keras' numbers), layer names, summaries,
// freezing / unfreezing and Keras' frozen-BatchNormalization behaviour.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import {
  buildConvnet,
  buildVgg16Base,
  buildHead,
  stackBaseAndHead,
  countTrainableWeights,
  countParams,
  modelSummary,
  setTrainableFrom,
  applyKerasBatchNormSemantics,
  loadBase,
  inputScaling,
  FINE_TUNE_FROM,
} from '@catdog/models';

await tf.setBackend('cpu');

test("book's convnet: 3,453,121 parameters, Keras layer names, summary like the book's", () => {
  const model = buildConvnet();
  assert.equal(model.countParams(), 3453121);
  assert.deepEqual(model.outputs[0].shape, [null, 1]);
  assert.deepEqual(
    model.layers.map((l) => l.name),
    [
      'conv2d_1',
      'max_pooling2d_1',
      'conv2d_2',
      'max_pooling2d_2',
      'conv2d_3',
      'max_pooling2d_3',
      'conv2d_4',
      'max_pooling2d_4',
      'flatten_1',
      'dense_1',
      'dense_2',
    ],
  );
  assert.deepEqual(model.getLayer('max_pooling2d_4').outputShape, [null, 7, 7, 128]);
  const summary = modelSummary(model);
  assert.match(summary, /^conv2d_1 \(Conv2D\) {12}\(None, 148, 148, 32\) {6}896$/m);
  assert.match(summary, /^flatten_1 \(Flatten\) {10}\(None, 6272\) {14}0$/m);
  assert.match(summary, /^dense_1 \(Dense\) {14}\(None, 512\) {15}3211776$/m);
  assert.match(summary, /Total params: 3,453,121\nTrainable params: 3,453,121\nNon-trainable params: 0\n/);
  // Twice: names are fixed, not tfjs' global counters.
  assert.deepEqual(
    buildConvnet().layers.map((l) => l.name),
    model.layers.map((l) => l.name),
  );
  const small = buildConvnet({ inputShape: [64, 64, 3] });
  const y = small.predict(tf.randomUniform([2, 64, 64, 3], 0, 1, 'float32', 1)) as tf.Tensor;
  assert.deepEqual(y.shape, [2, 1]);
  assert.ok(Array.from(y.dataSync()).every((p) => p > 0 && p < 1));
});

test('dropout variant: Dropout(0.5) right before Dense 512, same parameter count; bad options rejected', () => {
  const model = buildConvnet({ dropout: 0.5 });
  const names = model.layers.map((l) => l.name);
  assert.equal(names[names.indexOf('dropout_1') + 1], 'dense_1');
  assert.equal(names[names.indexOf('dropout_1') - 1], 'flatten_1');
  assert.equal((model.getLayer('dropout_1').getConfig() as { rate: number }).rate, 0.5);
  assert.equal(model.countParams(), 3453121);
  assert.throws(() => buildConvnet({ dropout: 1.5 }), /dropout must be in \[0, 1\)/);
  assert.throws(() => buildConvnet({ inputShape: [20, 20, 3] }), /too small/);
});

test('VGG16 base: Keras layer names, 14,714,688 parameters, 150×150 → 4×4×512, runs at small sizes', async () => {
  const base = await buildVgg16Base();
  assert.equal(base.name, 'vgg16');
  assert.equal(base.countParams(), 14714688);
  assert.deepEqual(base.outputs[0].shape, [null, 4, 4, 512]);
  const expected = ['input_1'];
  [2, 2, 3, 3, 3].forEach((n, b) => {
    for (let c = 1; c <= n; c++) expected.push(`block${b + 1}_conv${c}`);
    expected.push(`block${b + 1}_pool`);
  });
  assert.deepEqual(
    base.layers.map((l) => l.name),
    expected,
  );
  assert.equal(base.trainableWeights.length, 26);
  const small = await buildVgg16Base({ inputShape: [32, 32, 3] });
  const y = small.predict(tf.randomUniform([1, 32, 32, 3], 0, 1, 'float32', 2)) as tf.Tensor;
  assert.deepEqual(y.shape, [1, 1, 1, 512]);
  await assert.rejects(buildVgg16Base({ inputShape: [16, 16, 3] }), /too small/);
});

test('VGG16 + head: the book’s 30 → 4 trainable weight tensors, then 10 after unfreezing block5', async () => {
  const base = await buildVgg16Base();
  const model = stackBaseAndHead(base);
  assert.equal(model.layers[0], base);
  assert.equal(countTrainableWeights(model), 30);
  base.trainable = false;
  assert.equal(countTrainableWeights(model), 4);
  assert.deepEqual(model.outputs[0].shape, [null, 1]);
  const summary = modelSummary(model);
  assert.match(summary, /^vgg16 \(Model\) {16}\(None, 4, 4, 512\) {9}14714688$/m);
  assert.match(summary, /^dense_1 \(Dense\) {14}\(None, 256\) {15}2097408$/m);
  assert.match(summary, /Total params: 16,812,353\nTrainable params: 2,097,665\nNon-trainable params: 14,714,688/);
  const r = setTrainableFrom(base, FINE_TUNE_FROM.vgg16);
  assert.deepEqual(r.trainable, ['block5_conv1', 'block5_conv2', 'block5_conv3']);
  assert.equal(r.frozen.length, 10);
  assert.equal(countTrainableWeights(model), 10);
  assert.equal(countParams(model).trainable, 7079424 + 2097665);
  assert.throws(() => setTrainableFrom(base, 'block9_conv1'), /no layer 'block9_conv1'.*block5_conv3/);
});

test('heads: Flatten → Dense 256 → (Dropout 0.5) → Dense 1 sigmoid on 4×4×512 features', () => {
  const head = buildHead({ inputShape: [4, 4, 512], dropout: 0.5 });
  assert.deepEqual(
    head.layers.map((l) => l.getClassName()),
    ['Flatten', 'Dense', 'Dropout', 'Dense'],
  );
  assert.equal(head.countParams(), 4 * 4 * 512 * 256 + 256 + 257);
  const plain = buildHead({ inputShape: [8192], units: 64 });
  assert.deepEqual(
    plain.layers.map((l) => l.getClassName()),
    ['Dense', 'Dense'],
  );
  assert.equal(plain.countParams(), 8192 * 64 + 64 + 65);
  assert.throws(() => buildHead({ inputShape: [] }), /inputShape/);
});

test('frozen BatchNormalization runs in inference mode when training (Keras semantics), trainable BN does not', async () => {
  const build = () => {
    const input = tf.input({ shape: [3] });
    const bn = tf.layers.batchNormalization({ name: 'bn' });
    const out = tf.layers
      .dense({ units: 1, name: 'd', kernelInitializer: 'ones' })
      .apply(bn.apply(input)) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    bn.setWeights([tf.tensor1d([2, 2, 2]), tf.tensor1d([1, 1, 1]), tf.tensor1d([10, 20, 30]), tf.tensor1d([4, 4, 4])]);
    return { model, bn };
  };
  const x = tf.tensor2d([
    [10, 20, 30],
    [14, 24, 34],
    [6, 16, 26],
    [10, 20, 30],
  ]);
  const y = tf.ones([4, 1]);
  // Plain tfjs: a frozen BN still normalises with batch statistics and moves its averages while fitting.
  {
    const { model, bn } = build();
    bn.trainable = false;
    model.compile({ optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError' });
    await model.fit(x, y, { epochs: 1, batchSize: 4, verbose: 0 });
    assert.notDeepEqual(Array.from(bn.getWeights()[3].dataSync()), [4, 4, 4]);
  }
  // With Keras semantics: moving statistics and output untouched by training.
  {
    const { model, bn } = build();
    assert.equal(applyKerasBatchNormSemantics(model), 1);
    bn.trainable = false;
    const inference = (bn.apply(x) as tf.Tensor2D).arraySync();
    const training = (bn.apply(x, { training: true }) as tf.Tensor2D).arraySync();
    assert.deepEqual(training, inference);
    assert.deepEqual(inference[0], [1, 1, 1]); // (x - mean) / sqrt(var + eps) * gamma + beta ≈ 0 * 2 + 1
    model.compile({ optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError' });
    await model.fit(x, y, { epochs: 1, batchSize: 4, verbose: 0 });
    assert.deepEqual(Array.from(bn.getWeights()[2].dataSync()), [10, 20, 30]);
    assert.deepEqual(Array.from(bn.getWeights()[3].dataSync()), [4, 4, 4]);
    assert.deepEqual(Array.from(bn.getWeights()[0].dataSync()), [2, 2, 2]); // gamma frozen too
    // Unfrozen again: batch statistics in training, as Keras.
    bn.trainable = true;
    const t2 = (bn.apply(x, { training: true }) as tf.Tensor).arraySync();
    assert.notDeepEqual(t2, inference);
  }
});

test('loadBase: unknown names list the valid ones; input scaling per base', async () => {
  await assert.rejects(loadBase('resnet50'), (err: Error) => {
    assert.equal(err.name, 'UserError');
    assert.equal(err.message, "unknown base 'resnet50'; valid bases: vgg16, mobilenet_v2, mobilenet_v2_0.35");
    return true;
  });
  const vgg = await loadBase('vgg16', { weights: null, inputShape: [32, 32, 3] });
  assert.equal(vgg.name, 'vgg16');
  const unit = inputScaling('vgg16');
  assert.deepEqual([unit.name, unit.scale, unit.offset, unit.formula], ['unit', 1 / 255, 0, 'x / 255']);
  assert.equal(inputScaling(vgg), unit);
  assert.equal(inputScaling('mobilenet_v2').offset, -1);
  assert.equal(inputScaling('mobilenet_v2_0.35').scale, 1 / 127.5);
  assert.equal(inputScaling(stackBaseAndHead(vgg)).scale, 1 / 255);
});

test('a seed fixes the initial weights (convnet and head); without one they differ', () => {
  const weights = (m: tf.LayersModel) => m.getWeights().map((w) => Array.from(w.dataSync().slice(0, 50)));
  const a = weights(buildConvnet({ inputShape: [64, 64, 3], seed: 7 }));
  assert.deepEqual(weights(buildConvnet({ inputShape: [64, 64, 3], seed: 7 })), a);
  assert.notDeepEqual(weights(buildConvnet({ inputShape: [64, 64, 3], seed: 8 })), a);
  assert.notDeepEqual(
    weights(buildConvnet({ inputShape: [64, 64, 3] })),
    weights(buildConvnet({ inputShape: [64, 64, 3] })),
  );
  // every kernel gets its own stream: no two layers start alike
  const kernels = buildConvnet({ inputShape: [64, 64, 3], seed: 7 })
    .getWeights()
    .filter((w) => w.rank > 1);
  assert.equal(new Set(kernels.map((k) => k.dataSync()[0])).size, kernels.length);
  const head = (seed?: number) => weights(buildHead({ inputShape: [4, 4, 8], seed }));
  assert.deepEqual(head(3), head(3));
  assert.notDeepEqual(head(3), head(4));
});
