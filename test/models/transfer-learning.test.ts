// A learning threshold only working pretrained features meet: a logistic-regression probe on MobileNetV2 0.35's
// pooled features of 100 real photos classifies 200 held-out photos (the book's test range) at ≥ 84% (88.5% as
// seeded; on 100 of them it was 92%, so 100 were too few for a tight floor) with a held-out log loss ≤ 0.4 (0.30),
// while the same probe on the same architecture with seeded random weights stays near chance (50.5%, log loss 1.29):
// the pretrained features must beat them by 25 points. Seeded, fixed order, so the figures repeat run to run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { inputScaling, loadMobileNetV2Base } from '@catdog/models';
import { kaggleTrainDir, mobilenetV2Dir } from '../helpers/fixtures.js';

await initBackend({ backend: 'wasm', log: () => {} });

const SIZE = 128;
const names = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => [`cat.${from + i}.jpg`, `dog.${from + i}.jpg`]).flat();
const TRAIN = names(0, 50);
const HELD_OUT = names(1500, 100);

async function photos(list: string[]): Promise<tf.Tensor4D> {
  const s = inputScaling('mobilenet_v2_0.35');
  const raws = await Promise.all(
    list.map((n) => sharp(join(kaggleTrainDir, n)).resize(SIZE, SIZE, { fit: 'fill' }).removeAlpha().raw().toBuffer()),
  );
  return tf.tidy(
    () =>
      tf
        .tensor4d(Uint8Array.from(Buffer.concat(raws)), [list.length, SIZE, SIZE, 3], 'int32')
        .toFloat()
        .mul(s.scale)
        .add(s.offset) as tf.Tensor4D,
  );
}

const labels = (list: string[]) => tf.tensor2d(list.map((n) => [n.startsWith('dog') ? 1 : 0]));

/** Pooled features of `list` through `base`, in batches of 20. */
function pooled(base: tf.LayersModel, x: tf.Tensor4D): tf.Tensor2D {
  const parts: tf.Tensor2D[] = [];
  for (let i = 0; i < x.shape[0]; i += 20)
    parts.push(tf.tidy(() => (base.predict(x.slice(i, 20)) as tf.Tensor4D).mean([1, 2]) as tf.Tensor2D));
  const out = tf.concat(parts);
  tf.dispose(parts);
  return out;
}

/** Held-out accuracy and mean log loss of a seeded logistic regression fitted on standardized features. */
async function probe(train: tf.Tensor2D, heldOut: tf.Tensor2D): Promise<{ accuracy: number; logLoss: number }> {
  const { mean, variance } = tf.moments(train, 0);
  const std = tf.sqrt(variance).add(1e-6);
  const [a, b] = [train.sub(mean).div(std), heldOut.sub(mean).div(std)];
  const model = tf.sequential({
    layers: [
      tf.layers.dense({
        units: 1,
        activation: 'sigmoid',
        inputShape: [train.shape[1]],
        kernelInitializer: tf.initializers.zeros(),
        kernelRegularizer: tf.regularizers.l2({ l2: 1e-2 }),
      }),
    ],
  });
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'binaryCrossentropy' });
  const y = labels(TRAIN);
  await model.fit(a, y, { epochs: 60, batchSize: 100, shuffle: false, verbose: 0 });
  const p = (model.predict(b) as tf.Tensor).dataSync();
  const correct = HELD_OUT.filter((n, i) => p[i]! > 0.5 === n.startsWith('dog')).length;
  const logLoss =
    HELD_OUT.reduce((sum, n, i) => {
      const q = Math.min(Math.max(p[i]!, 1e-7), 1 - 1e-7);
      return sum - Math.log(n.startsWith('dog') ? q : 1 - q);
    }, 0) / HELD_OUT.length;
  tf.dispose([mean, variance, std, a, b, y, ...model.getWeights()]);
  return { accuracy: correct / HELD_OUT.length, logLoss };
}

test('a probe on MobileNetV2 0.35 ImageNet features: ≥ 84% and log loss ≤ 0.4 on 200 held-out photos; 25 points above random weights', async () => {
  const base = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35'), inputShape: [SIZE, SIZE, 3] });
  const [xTrain, xHeld] = [await photos(TRAIN), await photos(HELD_OUT)];
  const pretrained = await probe(pooled(base, xTrain), pooled(base, xHeld));

  // The same architecture with seeded random weights (He-normal kernels, identity BatchNorm).
  let seed = 1;
  for (const layer of base.layers) {
    const ws = layer.getWeights();
    if (ws.length === 0) continue;
    layer.setWeights(
      ws.map((w, i) => {
        if (layer.getClassName() === 'BatchNormalization') return tf.fill(w.shape, i === 0 || i === 3 ? 1 : 0); // gamma, variance 1; beta, mean 0
        const fanIn =
          w.shape.slice(0, -1).reduce((p, d) => p * d, 1) /
          (layer.getClassName().startsWith('Depthwise') ? w.shape[2]! : 1);
        return tf.randomNormal(w.shape, 0, Math.sqrt(2 / fanIn), 'float32', seed++);
      }),
    );
  }
  const random = await probe(pooled(base, xTrain), pooled(base, xHeld));
  const seen = `pretrained ${JSON.stringify(pretrained)}, random ${JSON.stringify(random)} on 200 held-out photos`;
  if (process.env.CATDOG_TEST_VERBOSE) console.log(seen);
  assert.ok(pretrained.accuracy >= 0.84 && pretrained.logLoss <= 0.4, seen);
  assert.ok(random.accuracy <= 0.7 && pretrained.accuracy >= random.accuracy + 0.25, seen);
  tf.dispose([xTrain, xHeld, ...base.getWeights()]);
});
