// Export: a trained model (as a run saves it) becomes a tfjs model on raw pixels of any size with labels.json;
// reloaded natively (tf.loadLayersModel over HTTP, as a browser does) it predicts what the trainer's pipeline predicts,
// and float16 / uint8 weights (tfjs weights-manifest quantization) shrink the files and stay close.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { UserError } from '@catdog/errors';
import {
  buildConvnet,
  buildVgg16Base,
  classifyPhoto,
  gradCam,
  loadMobileNetV2Base,
  saveLayersModelTo,
  compareExportVariants,
  decodePhoto,
  exportModel,
  float16Bits,
  loadExportedModel,
  loadLayersModelFrom,
  quantizeWeights,
  uint8Range,
  type ExportedLabels,
  type ExportVariantReport,
} from '@catdog/models';
import { decodeResized } from '@catdog/augment';
import { mobilenetV2Dir } from '../helpers/fixtures.js';
import { CLASSES, photo, trainerInput, trainSmallModel } from './trained-mobilenet.js';

await initBackend({ backend: 'wasm', log: () => {} });

let dir: string;
let modelDir: string;
let server: Server;
let origin: string;
// Kaggle photos of several sizes (none trained on), plus a PNG at an odd size made from one of them.
const PHOTOS = ['cat.1000.jpg', 'cat.1001.jpg', 'cat.2002.jpg', 'dog.1000.jpg', 'dog.1001.jpg', 'dog.2003.jpg'];
let files: string[];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'export-'));
  modelDir = await trainSmallModel(dir);
  const odd = join(dir, 'odd-size.png');
  await sharp(photo('dog.1002.jpg')).resize(301, 157, { fit: 'fill' }).png().toFile(odd);
  files = [...PHOTOS.map(photo), odd];
  // A static file server, so the exported model loads as a browser loads it: tf.loadLayersModel(url).
  server = createServer(async (req, res) => {
    try {
      const body = await readFile(join(dir, decodeURIComponent(new URL(req.url!, 'http://x').pathname)));
      res.writeHead(200, {
        'content-type': extname(req.url!) === '.json' ? 'application/json' : 'application/octet-stream',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(async () => {
  server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** The original model's P(dog) on the trainer's own preprocessing of each file. */
async function reference(): Promise<number[]> {
  const model = await loadLayersModelFrom(modelDir);
  const out: number[] = [];
  for (const f of files) {
    const x = await trainerInput(f);
    const y = tf.tidy(() => model.predict(x.expandDims(0)) as tf.Tensor);
    out.push((await y.data())[0]!);
    tf.dispose([x, y]);
  }
  model.dispose();
  return out;
}

async function exportedPDog(name: string): Promise<{ pDog: number[]; labels: ExportedLabels }> {
  const model = await tf.loadLayersModel(`${origin}/${name}/model.json`);
  const labels = JSON.parse(await (await fetch(`${origin}/${name}/labels.json`)).text()) as ExportedLabels;
  const pDog: number[] = [];
  for (const f of files) {
    const pixels = await decodePhoto(f); // full size, int32 0..255: the model resizes and scales itself
    const y = tf.tidy(() => model.predict(pixels.expandDims(0)) as tf.Tensor);
    pDog.push((await y.data())[0]!);
    tf.dispose([pixels, y]);
  }
  model.dispose();
  return { pDog, labels };
}

test('float32 export: raw pixels of any size in, the trainer-preprocessed predictions out (1e-5), with labels.json', async () => {
  const result = await exportModel({
    model: modelDir,
    out: join(dir, 'f32'),
    classes: CLASSES,
    inputScaling: 'symmetric',
    source: modelDir,
  });
  const written = (await readdir(join(dir, 'f32'))).sort();
  assert.equal(written.length, 3);
  assert.deepEqual(written.slice(0, 2), ['labels.json', 'model.json']);
  assert.match(written[2]!, /^weights-[0-9a-f]{16}\.bin$/);
  assert.deepEqual(Object.keys(result.files).sort(), written);
  const ref = await reference();
  const { pDog, labels } = await exportedPDog('f32');
  assert.deepEqual(labels, result.labels);
  assert.equal(labels.activation, 'sigmoid');
  assert.deepEqual(labels.classes, ['cat', 'dog']);
  assert.deepEqual(labels.inputSize, [128, 128]);
  assert.equal(labels.interpolation, 'nearest');
  assert.deepEqual(labels.inputScaling, { scale: 1 / 127.5, offset: -1 });
  assert.equal(labels.lastConvLayer, 'out_relu');
  for (let i = 0; i < files.length; i++)
    assert.ok(Math.abs(pDog[i]! - ref[i]!) < 1e-5, `${files[i]}: exported ${pDog[i]} vs trainer ${ref[i]}`);
  // A trained model, not a constant: it tells the photos apart.
  assert.ok(Math.max(...pDog) - Math.min(...pDog) > 0.5, pDog.map((p) => p.toFixed(2)).join(' '));
  // The photos really have different sizes (the point of the exported model).
  const sizes = new Set(
    await Promise.all(
      files.map(async (f) => {
        const m = await sharp(f).metadata();
        return `${m.width}x${m.height}`;
      }),
    ),
  );
  assert.ok(sizes.size >= 4, [...sizes].join(' '));
  // loadExportedModel + classifyPhoto (what trainer:predict on an export would use) agree.
  const { model, labels: l2 } = await loadExportedModel(join(dir, 'f32'));
  const c = await classifyPhoto(model, l2, files[0]!);
  assert.ok(Math.abs(c.probabilities[1]! - pDog[0]!) < 1e-6);
  assert.equal(c.className, pDog[0]! >= 0.5 ? 'dog' : 'cat');
  model.dispose();
  // Exporting again into the folder (here as float16) replaces the model and drops the old weights file.
  await exportModel({
    model: modelDir,
    out: join(dir, 'f32'),
    classes: CLASSES,
    inputScaling: 'symmetric',
    quantize: 'float16',
  });
  const again = (await readdir(join(dir, 'f32'))).sort();
  assert.equal(again.length, 3);
  assert.notEqual(again[2], written[2]);
  const { labels: l3 } = await exportedPDog('f32');
  assert.equal(l3.quantization, 'float16');
});

test('float16 and uint8 exports (compareExportVariants): tfjs manifest quantization, ~2× and ~4× smaller, predictions close', async () => {
  const photos = files.slice(0, PHOTOS.length).map((f) => ({ image: f, classIndex: /dog/.test(f) ? 1 : 0 }));
  const rows = await compareExportVariants({
    model: modelDir,
    out: join(dir, 'variants'),
    classes: CLASSES,
    inputScaling: 'symmetric',
    photos,
  });
  assert.deepEqual(
    rows.map((r) => r.quantization),
    [null, 'float16', 'uint8'],
  );
  const [f32, f16, u8] = rows as [ExportVariantReport, ExportVariantReport, ExportVariantReport];
  const size = async (d: string) => {
    const weights = (await readdir(join(dir, 'variants', d))).filter((f) => f.endsWith('.bin'));
    assert.equal(weights.length, 1, `${d}: ${weights}`);
    return (await stat(join(dir, 'variants', d, weights[0]!))).size;
  };
  assert.deepEqual(
    [await size('float32'), await size('float16'), await size('uint8')],
    [f32.weightBytes, f16.weightBytes, u8.weightBytes],
  );
  assert.ok(f16.weightBytes / f32.weightBytes < 0.52, `float16 ${f16.weightBytes} vs ${f32.weightBytes}`);
  assert.ok(u8.weightBytes / f32.weightBytes < 0.3, `uint8 ${u8.weightBytes} vs ${f32.weightBytes}`);
  // The manifests: kernels quantized the way tfjs-core's decodeWeights reads them, everything else float32.
  const manifest = async (d: string) =>
    JSON.parse(await readFile(join(dir, 'variants', d, 'model.json'), 'utf8')).weightsManifest[0]
      .weights as tf.io.WeightsManifestEntry[];
  const m16 = await manifest('float16');
  assert.ok(m16.some((w) => /kernel$/.test(w.name)) && m16.some((w) => !/kernel$/.test(w.name)));
  for (const w of m16)
    assert.deepEqual(
      [w.dtype, w.quantization],
      ['float32', /kernel$/.test(w.name) ? { dtype: 'float16' } : undefined],
      w.name,
    );
  for (const w of await manifest('uint8')) {
    if (!/kernel$/.test(w.name)) assert.equal(w.quantization, undefined, w.name);
    else if (/depthwise_kernel$/.test(w.name)) assert.deepEqual(w.quantization, { dtype: 'float16' }, w.name);
    else
      assert.ok(
        w.quantization?.dtype === 'uint8' &&
          typeof w.quantization.scale === 'number' &&
          typeof w.quantization.min === 'number',
        w.name,
      );
  }
  // Loaded natively (tf.loadLayersModel over HTTP), on every photo including the odd-sized PNG.
  const { pDog: p32 } = await exportedPDog('variants/float32');
  const { pDog: p16, labels: l16 } = await exportedPDog('variants/float16');
  const { pDog: p8, labels: l8 } = await exportedPDog('variants/uint8');
  assert.deepEqual([l16.quantization, l8.quantization], ['float16', 'uint8']);
  const show = (p: number[]) => p.map((v) => v.toFixed(4)).join(' ');
  const table = `P(dog) float32 ${show(p32)}\n       float16 ${show(p16)}\n       uint8   ${show(p8)}`;
  for (let i = 0; i < files.length; i++) {
    assert.ok(Math.abs(p16[i]! - p32[i]!) < 0.05, `float16 ${files[i]}\n${table}`);
    assert.ok(Math.abs(p8[i]! - p32[i]!) < 0.2, `uint8 ${files[i]}\n${table}`);
  }
  assert.ok(
    p8.some((p, i) => p !== p32[i]),
    'the quantized weights really were used',
  );
  // The report: the float32 row is the float32 export's own accuracy; quantized rows differ by at most one photo here.
  assert.equal(f32.maxProbabilityDiff, 0);
  const right = photos.filter((p, i) => (p32[i]! >= 0.5 ? 1 : 0) === p.classIndex).length;
  assert.equal(f32.accuracy, right / photos.length);
  for (const r of [f16, u8])
    assert.ok(
      Math.abs(r.accuracy - f32.accuracy) <= 1 / photos.length + 1e-9,
      `${r.quantization}: ${r.accuracy} vs ${f32.accuracy}`,
    );
  assert.ok(Math.abs(f16.maxProbabilityDiff - Math.max(...photos.map((_, i) => Math.abs(p16[i]! - p32[i]!)))) < 1e-6);
});

test("models shaped like the trainer's runs (base inline, pooled head; the book's convnet; VGG16) export and explain", async () => {
  const dense = (name: string, units: number, activation: 'relu' | 'sigmoid', seed: number) =>
    tf.layers.dense({ name, units, activation, kernelInitializer: tf.initializers.glorotUniform({ seed }) });
  const mobilenet = await loadMobileNetV2Base({ alpha: 0.35, from: mobilenetV2Dir('0.35'), inputShape: [96, 96, 3] });
  const pooled = tf.layers
    .globalAveragePooling2d({ name: 'head_pool' })
    .apply(mobilenet.outputs[0]!) as tf.SymbolicTensor;
  const hidden = dense('head_dense', 16, 'relu', 1).apply(pooled) as tf.SymbolicTensor;
  const runLike = tf.model({
    inputs: mobilenet.inputs,
    outputs: dense('head_output', 1, 'sigmoid', 2).apply(hidden) as tf.SymbolicTensor,
    name: 'mobilenetv2_extract',
  });
  const vggBase = await buildVgg16Base({ inputShape: [100, 100, 3] });
  const vggFlat = tf.layers.flatten({ name: 'head_flatten' }).apply(vggBase.outputs[0]!) as tf.SymbolicTensor;
  const vgg = tf.model({
    inputs: vggBase.inputs,
    outputs: dense('head_output', 1, 'sigmoid', 3).apply(vggFlat) as tf.SymbolicTensor,
    name: 'vgg16_extract',
  });
  const cases = [
    {
      model: runLike,
      scaling: 'symmetric' as const,
      size: 96,
      layer: 'out_relu',
      scale: (x: tf.Tensor) => x.div(127.5).sub(1),
    },
    {
      model: buildConvnet({ inputShape: [128, 128, 3], seed: 4 }),
      scaling: 'unit' as const,
      size: 128,
      layer: 'conv2d_4',
      scale: (x: tf.Tensor) => x.div(255),
    },
    { model: vgg, scaling: 'unit' as const, size: 100, layer: 'block5_conv3', scale: (x: tf.Tensor) => x.div(255) },
  ];
  for (const [k, c] of cases.entries()) {
    const saved = join(dir, `shape-${k}`, 'model');
    await saveLayersModelTo(c.model, saved);
    const out = join(dir, `shape-${k}-export`);
    const { labels } = await exportModel({ model: saved, out, classes: CLASSES, inputScaling: c.scaling });
    assert.equal(labels.lastConvLayer, c.layer, c.model.name);
    const { model } = await loadExportedModel(out);
    for (const name of ['cat.1003.jpg', 'dog.1003.jpg']) {
      // The trainer decodes JPEGs ≥ 4× the input size at 1/2–1/8 scale first (libjpeg shrink-on-load); the exported
      // model resizes the full photo. Below that ratio both take the very same pixels.
      const m = await sharp(photo(name)).metadata();
      assert.ok(
        Math.min(m.width! / c.size, m.height! / c.size) < 4,
        `${name} is small enough to compare with the trainer's decode`,
      );
      const raw = await decodeResized(await readFile(photo(name)), {
        height: c.size,
        width: c.size,
        interpolation: 'nearest',
        jpegDecoder: 'exact',
      });
      const want = tf.tidy(
        () =>
          (
            c.model.predict(c.scale(tf.tensor4d(Float32Array.from(raw), [1, c.size, c.size, 3]))) as tf.Tensor
          ).dataSync()[0]!,
      );
      const got = (await classifyPhoto(model, labels, photo(name))).probabilities[1]!;
      assert.ok(Math.abs(got - want) < 1e-5, `${c.model.name} ${name}: exported ${got} vs trainer ${want}`);
    }
    const pixels = await decodePhoto(photo('dog.1003.jpg'));
    const cam = gradCam(model, pixels, { layer: labels.lastConvLayer! });
    pixels.dispose();
    assert.equal(cam.layer, c.layer);
    assert.ok(cam.heatmap.every((v) => v >= 0 && v <= 1) && cam.heatmap.length > 1);
    model.dispose();
  }
});

test('quantization encodings match what tfjs decodes', () => {
  // float16: exact for representable values, round-to-nearest-even otherwise, subnormals and overflow.
  const values = new Float32Array([
    0,
    -0,
    1,
    -2.5,
    65504,
    1e5,
    -1e5,
    6.1e-5,
    5.96e-8,
    1e-9,
    0.1,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    Math.PI,
  ]);
  const { specs, data } = quantizeWeights(
    [{ name: 'w/kernel', shape: [values.length], dtype: 'float32' }],
    values.buffer.slice(0),
    'float16',
  );
  const decoded = tf.io.decodeWeights(data, specs)['w/kernel']!.dataSync();
  assert.deepEqual(Array.from(decoded.slice(0, 5)), [0, -0, 1, -2.5, 65504]);
  assert.equal(decoded[5], Infinity);
  assert.equal(decoded[6], -Infinity);
  assert.ok(Math.abs(decoded[7]! - 6.1e-5) / 6.1e-5 < 1e-3);
  assert.ok(Math.abs(decoded[8]! - 5.96e-8) < 3e-8);
  assert.equal(decoded[9], 0);
  assert.ok(Math.abs(decoded[10]! - 0.1) < 1e-4);
  assert.equal(decoded[11], 1, 'halfway rounds to even');
  assert.equal(decoded[12], 1 + 2 * 2 ** -10, 'halfway rounds to even (up)');
  assert.equal(float16Bits(1), 0x3c00);
  // uint8: zero stays exactly zero, the range is covered, errors ≤ scale / 2; non-kernels untouched.
  const w = new Float32Array(1000).map((_, i) => Math.sin(i) * 0.3 + (i % 7 === 0 ? 0 : 0.05));
  const bias = new Float32Array([0.123456, -7.654321]);
  const joined = new Uint8Array(w.byteLength + bias.byteLength);
  joined.set(new Uint8Array(w.buffer), 0);
  joined.set(new Uint8Array(bias.buffer), w.byteLength);
  const q = quantizeWeights(
    [
      { name: 'c/kernel', shape: [1000], dtype: 'float32' },
      { name: 'c/bias', shape: [2], dtype: 'float32' },
    ],
    joined.buffer,
    'uint8',
  );
  assert.equal(q.data.byteLength, 1000 + 8);
  const d = tf.io.decodeWeights(q.data, q.specs);
  const k = d['c/kernel']!.dataSync();
  const { scale } = q.specs[0]!.quantization as { scale: number };
  for (let i = 0; i < w.length; i++) {
    assert.ok(Math.abs(k[i]! - w[i]!) <= scale / 2 + 1e-7, `${i}: ${k[i]} vs ${w[i]}`);
    if (w[i] === 0) assert.ok(Math.abs(k[i]!) < 1e-9, 'zero stays zero');
  }
  assert.deepEqual(Array.from(d['c/bias']!.dataSync()), Array.from(bias));
  assert.deepEqual(uint8Range(2, 2), { min: 2, scale: 1 });
});

test('bad input: wrong class count, bad scaling, missing model or labels give UserErrors and write nothing', async () => {
  const out = join(dir, 'bad');
  await assert.rejects(
    exportModel({ model: modelDir, out, classes: ['cat', 'dog', 'bird'], inputScaling: 'symmetric' }),
    (e: Error) => e instanceof UserError && /1 sigmoid output \(two classes\) but 3 classes/.test(e.message),
  );
  await assert.rejects(exportModel({ model: modelDir, out, classes: ['cat'], inputScaling: 'symmetric' }), UserError);
  await assert.rejects(
    exportModel({ model: modelDir, out, classes: CLASSES, inputScaling: 'sideways' as 'unit' }),
    (e: Error) => e instanceof UserError && /input scaling/.test(e.message),
  );
  await assert.rejects(
    exportModel({ model: modelDir, out, classes: CLASSES, inputScaling: 'unit', quantize: 'int4' as 'uint8' }),
    (e: Error) => e instanceof UserError && /float16 or uint8/.test(e.message),
  );
  await assert.rejects(
    exportModel({ model: join(dir, 'nope'), out, classes: CLASSES, inputScaling: 'unit' }),
    (e: Error) => e instanceof UserError && /no tfjs model/.test(e.message),
  );
  assert.ok(!existsSync(out), 'nothing written');
  await assert.rejects(
    loadExportedModel(modelDir),
    (e: Error) => e instanceof UserError && /labels\.json/.test(e.message),
  );
  await assert.rejects(
    decodePhoto(Buffer.from('not an image')),
    (e: Error) => e instanceof UserError && /cannot decode/.test(e.message),
  );
});
