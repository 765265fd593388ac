// MobileNetV2 bases from the shared tfjs folders, rebuilt at other input sizes, run on real photos.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { kaggleTrainDir, mobilenetV2Dir, sharedRoot } from '../helpers/fixtures.js';
import {
  loadMobileNetV2Base,
  loadBase,
  stackBaseAndHead,
  setTrainableFrom,
  countTrainableWeights,
  modelSummary,
  inputScaling,
  leafLayers,
  FINE_TUNE_FROM,
  saveLayersModelTo,
  loadLayersModelFrom,
} from '@catdog/models';

import { initBackend } from '@catdog/backend';

// Forward passes are several times faster on wasm; the fine-tuning step needs its training kernels too.
await initBackend({ backend: 'wasm' });

/** A photo resized to size×size (as Keras' target_size) and scaled as the base expects. */
async function photo(name: string, size: number, scaling = inputScaling('mobilenet_v2')): Promise<tf.Tensor3D> {
  const { data } = await sharp(join(kaggleTrainDir, name))
    .resize(size, size, { fit: 'fill' })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return tf.tidy(
    () =>
      tf
        .tensor3d(new Uint8Array(data), [size, size, 3], 'int32')
        .toFloat()
        .mul(scaling.scale)
        .add(scaling.offset) as tf.Tensor3D,
  );
}

test('MobileNetV2 1.0 at 150×150: 2,257,984 parameters, 5×5×1280 as keras.applications (4×4 with the saved pads)', async () => {
  const base = await loadMobileNetV2Base({ alpha: 1.0, from: mobilenetV2Dir('1.0') });
  assert.equal(base.countParams(), 2257984);
  assert.deepEqual(base.inputs[0].shape, [null, 150, 150, 3]);
  assert.deepEqual(base.outputs[0].shape, [null, 5, 5, 1280]);
  // Keras' correct_pad: even sizes pad (0, 1), odd sizes (1, 1).
  assert.deepEqual(base.getLayer('Conv1_pad').getConfig().padding, [
    [0, 1],
    [0, 1],
  ]);
  assert.deepEqual(base.getLayer('block_1_pad').getConfig().padding, [
    [1, 1],
    [1, 1],
  ]);
  assert.deepEqual(base.getLayer('block_13_depthwise').outputShape, [null, 5, 5, 576]);
  // One real photo through it.
  const y = base.predict(tf.expandDims(await photo('dog.1500.jpg', 150))) as tf.Tensor;
  assert.deepEqual(y.shape, [1, 5, 5, 1280]);
  const v = y.dataSync();
  assert.ok(v.every((e) => Number.isFinite(e) && e >= 0 && e <= 6) && v.some((e) => e > 0));
  assert.ok(
    leafLayers(base)
      .filter((l) => l.weights.length > 0)
      .every((l) => l.trainable),
  ); // the saved file's stale flags reset
  const saved = await loadMobileNetV2Base({
    alpha: 1.0,
    from: join(mobilenetV2Dir('1.0'), 'model.json'),
    padding: 'saved',
  });
  assert.deepEqual(saved.outputs[0].shape, [null, 4, 4, 1280]);
  // At the trained size both are the saved model.
  const at224 = await loadMobileNetV2Base({ alpha: 1.0, from: mobilenetV2Dir('1.0'), inputShape: [224, 224, 3] });
  assert.deepEqual(at224.outputs[0].shape, [null, 7, 7, 1280]);
  assert.deepEqual(at224.getLayer('block_13_pad').getConfig().padding, [
    [0, 1],
    [0, 1],
  ]);
  // Weights are the shared ones, whatever the size.
  const k = (m: tf.LayersModel) => Array.from(m.getLayer('Conv_1').getWeights()[0].dataSync().slice(0, 5));
  assert.deepEqual(k(base), k(at224));
  tf.dispose([saved, at224].flatMap((m) => m.getWeights()));
});

test('MobileNetV2 0.35 on real photos: a linear probe on its pooled features tells cats from dogs', async () => {
  const base = await loadBase('mobilenet_v2_0.35', {
    weightsDir: join(sharedRoot, 'weights'),
    inputShape: [128, 128, 3],
  });
  assert.equal(base.countParams(), 410208);
  const features = async (names: string[]) => {
    const images = await Promise.all(names.map((n) => photo(n, 128)));
    const batch = tf.stack(images);
    const maps = base.predict(batch) as tf.Tensor;
    assert.deepEqual(maps.shape, [names.length, 4, 4, 1280]);
    assert.ok(maps.dataSync().every((v) => Number.isFinite(v) && v >= 0 && v <= 6)); // out_relu is ReLU6
    const pooled = maps.mean([1, 2]);
    tf.dispose([batch, maps, ...images]);
    return pooled;
  };
  const split = (from: number, n: number) => [
    ...Array.from({ length: n }, (_, i) => `cat.${from + i}.jpg`),
    ...Array.from({ length: n }, (_, i) => `dog.${from + i}.jpg`),
  ];
  const train = split(0, 20);
  const heldOut = split(1500, 10); // the book's test range
  const xTrain = await features(train);
  const xTest = await features(heldOut);
  const probe = tf.sequential({
    layers: [
      tf.layers.dense({
        units: 1,
        activation: 'sigmoid',
        inputShape: [1280],
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
      }),
    ],
  });
  probe.compile({ optimizer: tf.train.adam(0.01), loss: 'binaryCrossentropy' });
  await probe.fit(xTrain, tf.tensor2d(train.map((n) => [n.startsWith('dog') ? 1 : 0])), {
    epochs: 100,
    batchSize: 40,
    verbose: 0,
    shuffle: false,
  });
  const p = (probe.predict(xTest) as tf.Tensor).dataSync();
  const correct = heldOut.filter((n, i) => p[i] > 0.5 === n.startsWith('dog')).length;
  if (process.env.CATDOG_TEST_VERBOSE) console.log(`linear probe: ${correct}/20`);
  assert.ok(correct >= 16, `linear probe on 40 photos: ${correct}/20 held-out photos right`);
  tf.dispose([xTrain, xTest]);
});

test('MobileNetV2 fine-tuning: unfreezes the last stage, BatchNorm stays frozen', async () => {
  const base = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35'), inputShape: [96, 96, 3] });
  const model = stackBaseAndHead(base, { units: 16 });
  base.trainable = false;
  assert.equal(countTrainableWeights(model), 4);
  const r = setTrainableFrom(base, FINE_TUNE_FROM.mobilenet_v2);
  assert.equal(r.trainable[0], 'block_13_expand');
  assert.ok(r.trainable.includes('Conv_1'));
  assert.ok(!r.trainable.some((n) => /_BN$|_bn$/.test(n)));
  assert.ok(r.frozen.includes('block_12_project') && r.frozen.includes('block_16_project_BN'));
  // 4 blocks × (expand, depthwise, project) kernels + Conv_1 kernel, plus the head's 4.
  assert.equal(countTrainableWeights(model), 4 * 3 + 1 + 4);
  const summary = modelSummary(model);
  assert.match(summary, /^mobilenetv2_0\.35_224_notop \( \(None, 3, 3, 1280\) {8}410208$/m);
  // A training step on the stacked model leaves the frozen BN statistics alone.
  const bn = base.getLayer('block_16_project_BN');
  const before = Array.from(bn.getWeights()[2].dataSync());
  const kernel = (name: string) => Array.from(base.getLayer(name).getWeights()[0].dataSync().slice(0, 64));
  const [conv1Before, block12Before, block13Before] = [
    kernel('Conv_1'),
    kernel('block_12_project'),
    kernel('block_13_expand'),
  ];
  model.compile({ optimizer: tf.train.rmsprop(1e-5), loss: 'binaryCrossentropy' });
  const x = tf.stack([await photo('cat.10.jpg', 96), await photo('dog.10.jpg', 96)]);
  await model.fit(x, tf.tensor2d([[0], [1]]), { epochs: 1, batchSize: 2, verbose: 0 });
  assert.deepEqual(Array.from(bn.getWeights()[2].dataSync()), before);
  // Gradients reach the unfrozen layers inside the nested base, and only those.
  assert.notDeepEqual(kernel('Conv_1'), conv1Before);
  assert.notDeepEqual(kernel('block_13_expand'), block13Before);
  assert.deepEqual(kernel('block_12_project'), block12Before);
  // Saved as a tfjs folder and loaded back: same predictions, same trainable flags, BN still frozen.
  const dir = await mkdtemp(join(tmpdir(), 'catdog-finetuned-'));
  try {
    await saveLayersModelTo(model, dir);
    const reloaded = await loadLayersModelFrom(dir);
    assert.deepEqual(
      Array.from((reloaded.predict(x) as tf.Tensor).dataSync()),
      Array.from((model.predict(x) as tf.Tensor).dataSync()),
    );
    assert.equal(countTrainableWeights(reloaded), 4 * 3 + 1 + 4);
    assert.equal(modelSummary(reloaded), summary);
    const rbn = (reloaded.layers[0] as tf.LayersModel).getLayer('block_16_project_BN');
    const rbefore = Array.from(rbn.getWeights()[2].dataSync());
    reloaded.compile({ optimizer: tf.train.rmsprop(1e-5), loss: 'binaryCrossentropy' });
    await reloaded.fit(x, tf.tensor2d([[0], [1]]), { epochs: 1, batchSize: 2, verbose: 0 });
    assert.deepEqual(Array.from(rbn.getWeights()[2].dataSync()), rbefore);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('MobileNetV2: clear errors for a missing folder, a bad alpha and no location', async () => {
  await assert.rejects(
    loadMobileNetV2Base({ alpha: 1.0, from: '/nonexistent/mobilenet' }),
    /\/nonexistent\/mobilenet\/model\.json: no tfjs model here/,
  );
  await assert.rejects(
    loadMobileNetV2Base({ alpha: 0.5 as 1.0, from: mobilenetV2Dir('1.0') }),
    /alpha must be 1\.0 or 0\.35/,
  );
  const saved = process.env.CATDOG_WEIGHTS_DIR;
  delete process.env.CATDOG_WEIGHTS_DIR;
  try {
    await assert.rejects(loadBase('mobilenet_v2'), /CATDOG_WEIGHTS_DIR/);
  } finally {
    if (saved !== undefined) process.env.CATDOG_WEIGHTS_DIR = saved;
  }
});
