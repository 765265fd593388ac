// Fine-tuning on images trains only the model above the frozen bottom, fed by the bottom's compiled forward
// (compileFrozenBase): it must update exactly the weights that training the whole model would, by the same amounts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { compileFrozenBase, loadMobileNetV2Base, setTrainableFrom } from '@catdog/models';
import { splitAtLayer } from '@catdog/training';
import { kaggleTrainDir, mobilenetV2Dir } from '../helpers/fixtures.js';

const SIZE = 64;
const FROM = 'block_16_expand';

async function images(names: string[]): Promise<tf.Tensor4D> {
  const pixels = await Promise.all(
    names.map((n) =>
      sharp(readFileSync(join(kaggleTrainDir, n)))
        .resize(SIZE, SIZE, { fit: 'fill' })
        .removeAlpha()
        .raw()
        .toBuffer(),
    ),
  );
  return tf.tidy(
    () =>
      tf.sub(
        tf.div(tf.tensor4d(Buffer.concat(pixels), [names.length, SIZE, SIZE, 3], 'int32').toFloat(), 127.5),
        1,
      ) as tf.Tensor4D,
  );
}

async function fineTuneModel(): Promise<tf.LayersModel> {
  const base = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35'), inputShape: [SIZE, SIZE, 3] });
  setTrainableFrom(base, FROM);
  const pooled = tf.layers.globalAveragePooling2d({}).apply(base.outputs[0]!) as tf.SymbolicTensor;
  const y = tf.layers
    .dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: 7 }) })
    .apply(pooled) as tf.SymbolicTensor;
  return tf.model({ inputs: base.inputs, outputs: y });
}

test('training above the compiled frozen bottom changes the same weights, by the same amounts, as training the whole model', async () => {
  await initBackend({ backend: 'wasm', threads: 1, log: () => {} });
  const x = await images(['cat.10.jpg', 'dog.10.jpg', 'cat.11.jpg', 'dog.11.jpg']);
  const y = tf.tensor2d([0, 1, 0, 1], [4, 1]);

  const whole = await fineTuneModel();
  const split = await fineTuneModel();
  split.setWeights(whole.getWeights());
  const before = whole.getWeights().map((w) => w.dataSync().slice());
  const names = whole.weights.map((w) => w.originalName);

  whole.compile({ optimizer: tf.train.sgd(0.5), loss: 'binaryCrossentropy' });
  for (let i = 0; i < 2; i++) await whole.trainOnBatch(x, y);

  const parts = splitAtLayer(split, FROM, 'finetune');
  const bottom = compileFrozenBase(parts.bottom);
  const top = parts.top.model;
  assert.equal(top.trainableWeights.length, whole.trainableWeights.length, 'the top holds every trainable weight');
  top.compile({ optimizer: tf.train.sgd(0.5), loss: 'binaryCrossentropy' });
  for (let i = 0; i < 2; i++) {
    const a = bottom.predict(x) as tf.Tensor;
    await top.trainOnBatch(a, y);
    a.dispose();
  }
  bottom.dispose();

  const afterWhole = whole.getWeights().map((w) => w.dataSync());
  const afterSplit = split.getWeights().map((w) => w.dataSync());
  let moved = 0;
  for (let i = 0; i < names.length; i++) {
    let maxDelta = 0;
    let maxDiff = 0;
    for (let k = 0; k < before[i].length; k++) {
      maxDelta = Math.max(maxDelta, Math.abs(afterWhole[i][k] - before[i][k]));
      maxDiff = Math.max(maxDiff, Math.abs(afterWhole[i][k] - afterSplit[i][k]));
    }
    if (maxDelta > 0) moved++;
    // Equal up to the float rounding of the folded BatchNorm (measured: ≤ 2e-6 of the change).
    assert.ok(
      maxDiff <= 1e-4 * Math.max(maxDelta, 1e-2),
      `${names[i]}: moved ${maxDelta}, whole vs split differ by ${maxDiff}`,
    );
  }
  // block_16's three convolutions, Conv_1 and the dense layer's kernel and bias; nothing frozen moved (checked above)
  assert.equal(moved, whole.trainableWeights.length, `training changed ${moved} weight tensors`);
  assert.equal(moved, 6);
  tf.dispose([x, y]);
  whole.dispose();
  split.dispose();
});
