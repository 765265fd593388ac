// Grad-CAM: exact on a model built so the answer is known (red evidence for one class, blue for the other), the
// book's layers chosen on the convnet / VGG16 / MobileNetV2, and on real photos through a trained cat-vs-dog model
// behind its own preprocessing: shapes, normalisation, complementary class maps, overlays written by sharp.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { UserError } from '@catdog/errors';
import {
  buildConvnet,
  buildHead,
  buildVgg16Base,
  decodePhoto,
  explainPhoto,
  explainPhotos,
  gradCam,
  gradCamBatch,
  heatmapRgba,
  jet,
  lastConvLayer,
  loadLayersModelFrom,
  overlayHeatmap,
  stackBaseAndHead,
  withPreprocessing,
  writeHeatmaps,
} from '@catdog/models';
import { CLASSES, photo, trainSmallModel } from './trained-mobilenet.js';

await initBackend({ backend: 'wasm', log: () => {} });

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gradcam-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * A model whose Grad-CAM is known: a nested base whose 1×1 conv maps pixels to [red, blue] (ReLU), global average
 * pooling, and one sigmoid unit with score = red − blue. For class 1 the map is relu(red − blue) (normalised), for
 * class 0 relu(blue − red).
 */
function redVersusBlue(): tf.LayersModel {
  const input = tf.input({ shape: [16, 16, 3] });
  const conv = tf.layers.conv2d({ name: 'colours', filters: 2, kernelSize: 1, activation: 'relu', useBias: false });
  const base = tf.model({ inputs: input, outputs: conv.apply(input) as tf.SymbolicTensor, name: 'base' });
  conv.setWeights([tf.tensor4d([1, 0, 0, 0, 0, 1], [1, 1, 3, 2])]); // filter 0 = red, filter 1 = blue
  const model = tf.sequential({ name: 'red_vs_blue' });
  model.add(base);
  model.add(tf.layers.globalAveragePooling2d({ name: 'gap' }));
  const dense = tf.layers.dense({ name: 'score', units: 1, activation: 'sigmoid' });
  model.add(dense);
  dense.setWeights([tf.tensor2d([[4], [-4]]), tf.tensor1d([0])]);
  return model;
}

test('Grad-CAM on a model built so the answer is known: red evidence for class 1, blue for class 0, exactly', () => {
  const model = redVersusBlue();
  // A dark image with a red square (rows 2–5, cols 3–7, red 0.9) and a fainter blue one (rows 10–13, cols 9–14, blue 0.5).
  const pixels = new Float32Array(16 * 16 * 3);
  for (let i = 2; i < 6; i++) for (let j = 3; j < 8; j++) pixels[(i * 16 + j) * 3] = 0.9;
  for (let i = 10; i < 14; i++) for (let j = 9; j < 15; j++) pixels[(i * 16 + j) * 3 + 2] = 0.5;
  const x = tf.tensor3d(pixels, [16, 16, 3]);
  const before = tf.memory().numTensors;
  const dog = gradCam(model, x);
  const cat = gradCam(model, x, { classIndex: 0 });
  const probabilityScore = gradCam(model, x, { score: 'probability' });
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  assert.equal(lastConvLayer(model).name, 'colours');
  assert.equal(dog.layer, 'colours');
  const mean = (c: number) => {
    let s = 0;
    for (let p = 0; p < 256; p++) s += pixels[p * 3 + c]!;
    return s / 256;
  };
  const p = 1 / (1 + Math.exp(-4 * (mean(0) - mean(2))));
  assert.ok(Math.abs(dog.probabilities[1]! - p) < 1e-6 && Math.abs(dog.probabilities[0]! - (1 - p)) < 1e-6);
  assert.equal(dog.classIndex, 1, 'more red than blue: class 1 predicted and explained by default');
  assert.equal(cat.classIndex, 0);
  assert.deepEqual([dog.height, dog.width], [16, 16]);
  for (let i = 0; i < 256; i++) {
    const red = pixels[i * 3]!;
    const blue = pixels[i * 3 + 2]!;
    assert.ok(Math.abs(dog.heatmap[i]! - Math.max(0, red - blue) / 0.9) < 1e-5, `class 1 at ${i}: ${dog.heatmap[i]}`);
    assert.ok(Math.abs(cat.heatmap[i]! - Math.max(0, blue - red) / 0.5) < 1e-5, `class 0 at ${i}: ${cat.heatmap[i]}`);
    assert.ok(
      Math.abs(probabilityScore.heatmap[i]! - dog.heatmap[i]!) < 1e-5,
      'sigmoid: the probability gives the same normalised map',
    );
  }
  // A class with no evidence at all gives an all-zero map, not NaNs.
  const blank = gradCam(model, tf.zeros([16, 16, 3]), { classIndex: 1 });
  assert.ok(blank.heatmap.every((v) => v === 0));
  x.dispose();
});

test("the book's layers: conv2d_4 (convnet), block5_conv3 (VGG16), out_relu (MobileNetV2); softmax heads work too", async () => {
  const convnet = buildConvnet({ seed: 1 });
  assert.equal(lastConvLayer(convnet).name, 'conv2d_4');
  const cam = gradCam(convnet, tf.randomUniform([150, 150, 3], 0, 1, 'float32', 3));
  assert.deepEqual([cam.height, cam.width], [15, 15]);
  assert.ok(cam.heatmap.every((v) => v >= 0 && v <= 1));
  const vgg = stackBaseAndHead(await buildVgg16Base({ inputShape: [48, 48, 3] }), { units: 8, seed: 2 });
  assert.equal(lastConvLayer(vgg).name, 'block5_conv3');
  // Softmax over three classes: each class gets its own map; the default is the predicted class.
  const input = tf.input({ shape: [12, 12, 3] });
  const c = tf.layers
    .conv2d({
      name: 'features',
      filters: 4,
      kernelSize: 3,
      activation: 'relu',
      kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }),
    })
    .apply(input) as tf.SymbolicTensor;
  const f = tf.layers.flatten().apply(c) as tf.SymbolicTensor;
  const out = tf.layers
    .dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 6 }) })
    .apply(f) as tf.SymbolicTensor;
  const three = tf.model({ inputs: input, outputs: out });
  const img = tf.randomUniform([1, 12, 12, 3], 0, 1, 'float32', 9);
  const probs = (three.predict(img) as tf.Tensor).dataSync();
  const byDefault = gradCam(three, img);
  assert.equal(byDefault.classIndex, probs.indexOf(Math.max(...probs)));
  for (const [i, q] of byDefault.probabilities.entries()) assert.ok(Math.abs(q - probs[i]!) < 1e-6);
  const maps = [0, 1, 2].map((k) => gradCam(three, img, { classIndex: k }).heatmap.join());
  assert.equal(new Set(maps).size, 3, 'each class has its own map');
  // Bad requests name the cause.
  assert.throws(
    () => gradCam(three, img, { layer: 'nope' }),
    (e: Error) => e instanceof UserError && /no layer named 'nope'/.test(e.message),
  );
  assert.throws(
    () => gradCam(three, img, { classIndex: 3 }),
    (e: Error) => e instanceof UserError && /class index must be an integer in \[0, 2\], got 3/.test(e.message),
  );
  assert.throws(
    () => gradCam(redVersusBlue(), tf.zeros([16, 16, 3]), { classIndex: 2 }),
    (e: Error) => e instanceof UserError && /\[0, 1\]/.test(e.message),
  );
  assert.throws(
    () => gradCam(three, tf.zeros([2, 12, 12, 3])),
    (e: Error) => e instanceof UserError && /one image/.test(e.message),
  );
  assert.throws(
    () => gradCam(buildHead({ inputShape: [4, 4, 8] }), tf.zeros([4, 4, 8])),
    (e: Error) => e instanceof UserError && /no 4-D feature map|no flattening/.test(e.message),
  );
  const linear = tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 2, kernelSize: 3 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 1 }),
    ],
  });
  assert.throws(
    () => gradCam(linear, tf.zeros([8, 8, 3])),
    (e: Error) => e instanceof UserError && /sigmoid or softmax/.test(e.message),
  );
  tf.dispose([img]);
});

test('real photos through a trained cat-vs-dog model on raw pixels: normalised maps, complementary classes, overlays', async () => {
  const trained = await loadLayersModelFrom(await trainSmallModel(dir, 20));
  const model = withPreprocessing(trained, { inputScaling: 'symmetric' });
  for (const name of ['cat.1010.jpg', 'dog.1010.jpg', 'dog.1500.jpg']) {
    const pixels = await decodePhoto(photo(name));
    const predicted = (await (model.predict(pixels.expandDims(0)) as tf.Tensor).data())[0]!;
    const dog = gradCam(model, pixels, { classIndex: 1 });
    const cat = gradCam(model, pixels, { classIndex: 0 });
    pixels.dispose();
    assert.equal(dog.layer, 'out_relu');
    assert.deepEqual([dog.height, dog.width], [4, 4], '128×128 input → 4×4 MobileNetV2 feature map');
    assert.ok(
      Math.abs(dog.probabilities[1]! - predicted) < 1e-5,
      `${name}: ${dog.probabilities[1]} vs predict ${predicted}`,
    );
    for (const m of [dog, cat]) {
      assert.ok(m.heatmap.every((v) => v >= 0 && v <= 1 && Number.isFinite(v)));
      const peak = Math.max(...m.heatmap);
      assert.ok(peak === 1 || peak === 0, `${name}: peak ${peak}`);
    }
    // relu(Σ α A) and relu(−Σ α A): where one class has evidence the other has none, and some class has some.
    for (let i = 0; i < 16; i++)
      assert.ok(dog.heatmap[i] === 0 || cat.heatmap[i] === 0, `${name}: both classes hot at ${i}`);
    assert.ok(Math.max(...dog.heatmap) + Math.max(...cat.heatmap) > 0);
    // The overlay: a JPEG of the photo's size whose hottest cell is the reddest region.
    const { image, classIndex } = await explainPhoto(model, photo(name));
    assert.equal(classIndex, predicted >= 0.5 ? 1 : 0);
    const meta = await sharp(photo(name)).metadata();
    const out = await sharp(image).metadata();
    assert.deepEqual([out.format, out.width, out.height], ['jpeg', meta.width, meta.height]);
  }
  // Many photos into a folder (trainer:explain): a broken file is reported and skipped, same names do not collide.
  const broken = join(dir, 'broken.jpg');
  await writeFile(broken, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 1, 2, 3]));
  const photos = [photo('cat.1010.jpg'), broken, photo('dog.1010.jpg'), photo('dog.1010.jpg')];
  const { written, skipped } = await writeHeatmaps(model, photos, {
    out: join(dir, 'heatmaps'),
    classes: CLASSES,
    maxSize: 200,
  });
  assert.deepEqual(
    written.map((w) => w.file),
    ['cat.1010.gradcam.jpg', 'dog.1010.gradcam.jpg', 'dog.1010-2.gradcam.jpg'],
  );
  assert.deepEqual(
    skipped.map((s) => s.photo),
    [broken],
  );
  assert.match(skipped[0]!.reason, /broken\.jpg: cannot decode/);
  assert.deepEqual((await readdir(join(dir, 'heatmaps'))).sort(), [
    'cat.1010.gradcam.jpg',
    'dog.1010-2.gradcam.jpg',
    'dog.1010.gradcam.jpg',
  ]);
  for (const w of written) {
    assert.ok(CLASSES.includes(w.className) && w.probability >= 0.5 && w.probability <= 1, JSON.stringify(w));
    const m = await sharp(join(dir, 'heatmaps', w.file)).metadata();
    assert.equal(Math.max(m.width!, m.height!), 200);
  }

  // Overlay colours: jet's ends, blended at the requested opacity, PNG on request and downscaled to maxSize.
  assert.deepEqual(jet(0), [0, 0, 128]);
  assert.deepEqual(jet(1), [128, 0, 0]);
  const hot = { heatmap: Float32Array.from([1, 0, 0, 0]), height: 2, width: 2 };
  const rgba = heatmapRgba(hot, 2, 2, 1);
  assert.deepEqual(
    Array.from(rgba.slice(0, 4)),
    [...jet(1), 255].map((v, i) => (i < 3 ? rgba[i] : v)),
  );
  const png = await overlayHeatmap(photo('cat.1010.jpg'), hot, { format: 'png', maxSize: 100, opacity: 1 });
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  assert.equal(Math.max(info.width, info.height), 100);
  const topLeft = [data[0]!, data[1]!, data[2]!];
  const bottomRight = [...data.subarray(data.length - info.channels, data.length - info.channels + 3)];
  assert.ok(
    topLeft[0]! > topLeft[2]! && bottomRight[2]! > bottomRight[0]!,
    `hot corner red ${topLeft}, cold corner blue ${bottomRight}`,
  );
  trained.dispose();
});

test('batched Grad-CAM (gradCamBatch, explainPhotos) gives each photo the heatmap and class of the one-by-one pass', async () => {
  const trained = await loadLayersModelFrom(await trainSmallModel(dir, 20));
  const model = withPreprocessing(trained, { inputScaling: 'symmetric' });
  const names = ['cat.1010.jpg', 'dog.1010.jpg', 'dog.1500.jpg', 'cat.1501.jpg'];
  const broken = join(dir, 'broken-batch.jpg');
  await writeFile(broken, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 1, 2, 3]));
  // Photos of different sizes, one undecodable, in one batch: each result as explainPhoto's, the broken one an error.
  const batched = await explainPhotos(model, [photo(names[0]!), broken, ...names.slice(1).map(photo)], {
    maxSize: 150,
  });
  assert.equal(batched.length, names.length + 1);
  assert.ok(batched[1] instanceof UserError && batched[1].code === 'bad-source', String(batched[1]));
  const good = batched.filter((b) => !(b instanceof UserError));
  for (const [i, name] of names.entries()) {
    const one = await explainPhoto(model, photo(name), { maxSize: 150 });
    const many = good[i]!;
    assert.ok(!(many instanceof UserError));
    assert.equal(many.classIndex, one.classIndex, name);
    assert.ok(Math.abs(many.probabilities[1]! - one.probabilities[1]!) < 1e-5, name);
    const diff = Math.max(...many.heatmap.map((v, k) => Math.abs(v - one.heatmap[k]!)));
    assert.ok(diff < 1e-4, `${name}: heatmaps differ by ${diff}`);
  }
  // A softmax head, an explicit class for every image.
  const convnet = buildConvnet({ inputShape: [64, 64, 3], classes: 3, seed: 5 });
  const x = tf.randomUniform([3, 64, 64, 3], 0, 1, 'float32', 7) as tf.Tensor4D;
  for (const classIndex of [undefined, 2]) {
    const cams = gradCamBatch(convnet, x, { classIndex });
    for (let i = 0; i < 3; i++) {
      const xi = x.slice([i, 0, 0, 0], [1, 64, 64, 3]);
      const single = gradCam(convnet, xi, { classIndex });
      xi.dispose();
      assert.equal(cams[i]!.classIndex, single.classIndex);
      const diff = Math.max(...cams[i]!.heatmap.map((v, k) => Math.abs(v - single.heatmap[k]!)));
      assert.ok(diff < 1e-4, `softmax image ${i}: heatmaps differ by ${diff}`);
    }
  }
  x.dispose();
  trained.dispose();
});
