// Architecture diagrams from real tfjs topologies: the book's convnet built with tf.sequential, the real
// MobileNetV2 0.35 base from ../shared as a functional model and nested inside a Sequential, and a model.json
// saved by a real training run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { formatShape, modelDiagram, writeModelViews, type ModelTopology } from '@catdog/report';
import { mobilenetV2Dir } from '../helpers/fixtures.js';
import { makeRealRun } from './real-run.js';

let dir: string;
before(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'report-model-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The book's convnet (listing 5.5 with dropout, 5.13). */
function bookConvnet(): tf.Sequential {
  const m = tf.sequential();
  m.add(
    tf.layers.conv2d({ name: 'conv2d_1', filters: 32, kernelSize: 3, activation: 'relu', inputShape: [150, 150, 3] }),
  );
  m.add(tf.layers.maxPooling2d({ name: 'max_pooling2d_1', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2d_2', filters: 64, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ name: 'max_pooling2d_2', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2d_3', filters: 128, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ name: 'max_pooling2d_3', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2d_4', filters: 128, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ name: 'max_pooling2d_4', poolSize: 2 }));
  m.add(tf.layers.flatten({ name: 'flatten_1' }));
  m.add(tf.layers.dropout({ name: 'dropout_1', rate: 0.5 }));
  m.add(tf.layers.dense({ name: 'dense_1', units: 512, activation: 'relu' }));
  m.add(tf.layers.dense({ name: 'dense_2', units: 1, activation: 'sigmoid' }));
  return m;
}

async function assertValidPng(png: Buffer): Promise<void> {
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, 'png');
  assert.ok(meta.width! > 100 && meta.height! > 100, `${meta.width}x${meta.height}`);
  const stats = await sharp(png).stats();
  assert.ok(stats.channels[0]!.stdev > 5, 'PNG is not blank');
}

test("the book's convnet: one box per layer with Keras-style input and output shapes", async () => {
  const model = bookConvnet();
  const topology = model.toJSON(null, false) as unknown as ModelTopology;
  const diagram = await modelDiagram(topology);
  const names = [
    'conv2d_1',
    'max_pooling2d_1',
    'conv2d_2',
    'max_pooling2d_2',
    'conv2d_3',
    'max_pooling2d_3',
    'conv2d_4',
    'max_pooling2d_4',
    'flatten_1',
    'dropout_1',
    'dense_1',
    'dense_2',
  ];
  assert.deepEqual(diagram.layers, ['conv2d_1_input', ...names]);
  for (const name of names) assert.ok(diagram.svg.includes(`${name}: `), `${name} in the SVG`);
  assert.ok(diagram.svg.includes('conv2d_1: Conv2D'));
  assert.ok(diagram.svg.includes('flatten_1: Flatten'));
  for (const shape of [
    '(None, 150, 150, 3)',
    '(None, 148, 148, 32)',
    '(None, 74, 74, 32)',
    '(None, 7, 7, 128)',
    '(None, 6272)',
    '(None, 512)',
    '(None, 1)',
  ]) {
    assert.ok(diagram.svg.includes(shape), `${shape} in the SVG`);
  }
  assert.equal(diagram.dot.match(/->/g)?.length, names.length, 'a chain: one edge into every layer');
  assert.equal(diagram.shapeError, undefined);
  await assertValidPng(diagram.png);
  // At the default 96 dpi (as Keras' plot_model), one point of the Graphviz layout is 4/3 pixels.
  const widthPt = Number(/<svg width="([\d.]+)pt"/.exec(diagram.svg)![1]);
  assert.ok(Math.abs((await sharp(diagram.png).metadata()).width! - (widthPt * 4) / 3) <= 2);

  // Shapes passed by the caller (as the trainer does) give the same picture; showShapes: false drops them.
  const given = await modelDiagram(topology, {
    shapes: model.layers.map((l) => [l.name, l.outputShape as number[]] as const),
  });
  assert.equal(given.dot, diagram.dot);
  assert.equal(
    (await modelDiagram(model.toJSON() as string)).dot,
    diagram.dot,
    'the JSON string of model.toJSON() works too',
  );
  const bare = await modelDiagram({ modelTopology: topology }, { showShapes: false });
  assert.ok(!bare.svg.includes('(None, 6272)') && bare.svg.includes('dense_2: Dense'));
  model.dispose();
});

test('MobileNetV2 0.35 (real topology): functional graph with branches, and as one box inside a Sequential', async () => {
  const modelJson = JSON.parse(await readFile(join(mobilenetV2Dir('0.35'), 'model.json'), 'utf8'));
  const base = modelJson.modelTopology;
  const layerNames: string[] = base.config.layers.map((l: { name: string }) => l.name);

  const nested = {
    class_name: 'Sequential',
    config: {
      name: 'extract_head',
      layers: [
        base,
        { class_name: 'GlobalAveragePooling2D', config: { name: 'global_average_pooling2d_1' } },
        { class_name: 'Dense', config: { name: 'dense_1', units: 1, activation: 'sigmoid' } },
      ],
    },
  };
  const d = await modelDiagram(nested);
  assert.deepEqual(d.layers, [`${base.config.name}_input`, base.config.name, 'global_average_pooling2d_1', 'dense_1']);
  assert.ok(d.svg.includes(`${base.config.name}: Model`));
  assert.ok(
    d.svg.includes('(None, 224, 224, 3)') && d.svg.includes('(None, 7, 7, 1280)') && d.svg.includes('(None, 1280)'),
  );
  assert.ok(!d.svg.includes('block_1_expand'), 'the base is drawn as one box');
  await assertValidPng(d.png);

  const full = await modelDiagram(modelJson);
  assert.equal(full.layers.length, layerNames.length);
  for (const name of layerNames) assert.ok(full.svg.includes(`>${name}: `), `${name} in the SVG`);
  // Residual connections: block_2_add has two inputs.
  const adds = layerNames.filter((n) => n.endsWith('_add'));
  assert.ok(adds.length > 5);
  assert.equal(full.dot.match(/->/g)?.length, layerNames.length - 1 + adds.length);
  assert.ok(full.svg.includes('[(None, 56, 56, 8), (None, 56, 56, 8)]'), 'an Add layer lists both input shapes');
  // 155 layers in a column: still a PNG, scaled to stay within librsvg's 32767-pixel limit.
  const meta = await sharp(full.png, { limitInputPixels: false }).metadata();
  assert.ok(meta.height! > 10000 && meta.height! <= 32000, `${meta.width}x${meta.height}`);
});

test('writeModelViews from a model.json saved by a real training run; garbage is rejected', async () => {
  const run = join(dir, 'run');
  await makeRealRun(run, { strategy: 'scratch', epochs: 2, withoutMetrics: true });
  const summary = await readFile(join(run, 'summary.txt'), 'utf8');
  const out = join(dir, 'views');
  const files = await writeModelViews(join(run, 'model', 'model.json'), out, { summary });
  assert.deepEqual(
    files.map((f) => f.slice(out.length + 1)),
    ['model.svg', 'model.png', 'model.dot', 'summary.txt'],
  );
  const svg = await readFile(join(out, 'model.svg'), 'utf8');
  for (const name of ['hidden: Dense', 'dropout: Dropout', 'output: Dense', '(None, 192)', '(None, 16)', '(None, 1)'])
    assert.ok(svg.includes(name), name);
  await assertValidPng(await readFile(join(out, 'model.png')));
  assert.equal(await readFile(join(out, 'summary.txt'), 'utf8'), summary);

  assert.equal(formatShape([null, 3]), '(None, 3)');
  assert.equal(formatShape([null]), '(None,)');
  await assert.rejects(
    modelDiagram({ foo: 1 }),
    (e: Error) => e instanceof UserError && /not a Keras\/tfjs layers topology/.test(e.message),
  );
  await assert.rejects(modelDiagram({ class_name: 'Dense', config: {} }), /is not a model/);
  await assert.rejects(writeModelViews(join(run, 'summary.txt'), out), (e: Error) =>
    /summary\.txt: invalid JSON/.test(e.message),
  );
  // An unknown custom layer: drawn without shapes, and says why.
  const custom = await modelDiagram({
    class_name: 'Sequential',
    config: {
      name: 's',
      layers: [{ class_name: 'MyCustomLayer', config: { name: 'mine', batch_input_shape: [null, 4] } }],
    },
  });
  assert.match(custom.shapeError ?? '', /shapes not computed/);
  assert.ok(custom.svg.includes('mine: MyCustomLayer'));
});
