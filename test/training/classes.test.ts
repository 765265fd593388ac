// Two classes or more: the one rule (classifierOutput) as the heads, the convnet and compile apply it, and the
// test metrics of softmax outputs (argmax accuracy, N×N confusion matrix, per-class precision/recall, loss).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { buildConvnet, buildHead, classifierOutput, modelClassCount } from '@catdog/models';
import { compileClassifier, computeMetrics, evaluateFeed } from '@catdog/training';

before(async () => {
  await tf.setBackend('cpu');
});

const lastLayer = (m: tf.LayersModel) =>
  m.layers[m.layers.length - 1]!.getConfig() as { units: number; activation: string };

test('two classes keep Dense(1, sigmoid) and binary crossentropy; three or more take Dense(N, softmax)', () => {
  assert.deepEqual(classifierOutput(2), { units: 1, activation: 'sigmoid', loss: 'binaryCrossentropy' });
  assert.deepEqual(classifierOutput(5), { units: 5, activation: 'softmax', loss: 'sparseCategoricalCrossentropy' });
  assert.throws(() => classifierOutput(1), /at least two classes/);
  const book = buildConvnet({ inputShape: [64, 64, 3] });
  assert.deepEqual([lastLayer(book).units, lastLayer(book).activation], [1, 'sigmoid']);
  assert.equal(book.countParams(), buildConvnet({ inputShape: [64, 64, 3], classes: 2 }).countParams());
  const three = buildConvnet({ inputShape: [64, 64, 3], classes: 3 });
  assert.deepEqual([lastLayer(three).units, lastLayer(three).activation], [3, 'softmax']);
  assert.equal(three.countParams() - book.countParams(), 2 * (512 + 1));
  const head = buildHead({ inputShape: [8], classes: 4 });
  assert.deepEqual([lastLayer(head).units, lastLayer(head).activation], [4, 'softmax']);
  assert.equal(modelClassCount(head), 4);
  assert.equal(modelClassCount(buildHead({ inputShape: [8] })), 2);
  compileClassifier(head, 1e-3);
  assert.equal(head.loss, 'sparseCategoricalCrossentropy');
  for (const m of [book, three, head]) m.dispose();
});

test('softmax metrics: argmax accuracy, 3×3 confusion, per-class precision/recall, categorical crossentropy', () => {
  // Rows: [cats, dogs, birds] probabilities.
  const probs = [
    [0.7, 0.2, 0.1], // cat → cats ✓
    [0.2, 0.5, 0.3], // cat → dogs ✗
    [0.1, 0.8, 0.1], // dog → dogs ✓
    [0.1, 0.1, 0.8], // bird → birds ✓
    [0.6, 0.3, 0.1], // bird → cats ✗ (the more confident mistake)
  ];
  const labels = [0, 0, 1, 2, 2];
  const m = computeMetrics(
    {
      probs: Float32Array.from(probs.flat()),
      outputs: 3,
      labels: Float32Array.from(labels),
      keys: ['c1', 'c2', 'd1', 'b1', 'b2'],
    },
    ['cats', 'dogs', 'birds'],
  );
  assert.deepEqual(m.confusion, [
    [1, 1, 0],
    [0, 1, 0],
    [1, 0, 1],
  ]);
  assert.equal(m.accuracy, 3 / 5);
  const expectedLoss = -labels.reduce((a, y, i) => a + Math.log(Math.fround(probs[i]![y]!)), 0) / 5;
  assert.ok(Math.abs(m.loss - expectedLoss) < 1e-9, `${m.loss} vs ${expectedLoss}`);
  assert.deepEqual(m.perClass, [
    { class: 'cats', precision: 1 / 2, recall: 1 / 2, support: 2 },
    { class: 'dogs', precision: 1 / 2, recall: 1, support: 1 },
    { class: 'birds', precision: 1, recall: 1 / 2, support: 2 },
  ]);
  assert.deepEqual(
    m.misclassified.map((x) => [x.key, x.label, x.predicted, x.probability]),
    [
      ['b2', 2, 0, 0.6],
      ['c2', 0, 1, 0.5],
    ],
  );
  assert.throws(
    () =>
      computeMetrics({ probs: Float32Array.from([0.5]), labels: Float32Array.from([0]), keys: ['x'] }, ['a', 'b', 'c']),
    /1 output \(two classes\), the dataset 3 classes/,
  );
});

test("validation of a softmax model: evaluateFeed's loss and accuracy are tfjs' own", async () => {
  const model = buildHead({ inputShape: [6], classes: 3, seed: 3 });
  compileClassifier(model, 1e-3);
  const xs = tf.randomNormal([12, 6], 0, 1, 'float32', 7);
  const ys = tf.tensor2d([0, 1, 2, 0, 1, 2, 2, 2, 1, 0, 0, 1], [12, 1]);
  const [loss, acc] = model.evaluate(xs, ys, { batchSize: 12 }) as tf.Scalar[];
  let given = false;
  const feed = {
    next: async () => {
      if (given) return null;
      given = true;
      return { xs: xs.clone(), ys: ys.clone(), n: 12 };
    },
  };
  const ours = await evaluateFeed(model, feed, Infinity);
  assert.ok(Math.abs(ours.loss - loss!.dataSync()[0]!) < 1e-5, `${ours.loss} vs ${loss!.dataSync()[0]}`);
  assert.equal(Math.fround(ours.acc), acc!.dataSync()[0]);
  tf.dispose([xs, ys, loss!, acc!]);
  model.dispose();
});
