// Smoke versions of the strategies through the real CLI on a tiny prepped dataset (20/10/10 per class, 64×64):
// they run end to end, write the run directory, learn, and evaluate reproduces the saved model's test metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, rm, mkdir, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { buildConvnet } from '@catdog/models';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { CONTRACT, lastLine, runTrainer, tinyDataset } from './helpers.js';

let root = '';
let data = '';

before(async () => {
  ({ root, data } = await tinyDataset());
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

/** ‖saved − initial‖ / ‖initial‖ for each kernel of the run's saved model (float32 weights, one weights.bin). */
async function relativeChanges(run: string, initial: tf.LayersModel): Promise<Record<string, number>> {
  const manifest = (await readJson(join(run, 'model', 'model.json'))).weightsManifest[0].weights as {
    name: string;
    shape: number[];
  }[];
  const bin = await readFile(join(run, 'model', 'weights.bin'));
  const saved = new Float32Array(bin.buffer, bin.byteOffset, bin.byteLength / 4);
  const start = new Map(initial.weights.map((w) => [w.originalName, w.read().dataSync()]));
  const changes: Record<string, number> = {};
  let offset = 0;
  for (const { name, shape } of manifest) {
    const size = shape.reduce((a, b) => a * b, 1);
    const w0 = start.get(name);
    assert.ok(w0, `${name} is in the seeded convnet`);
    if (name.endsWith('/kernel')) {
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < size; i++) {
        diff += (saved[offset + i]! - w0[i]!) ** 2;
        norm += w0[i]! ** 2;
      }
      changes[name] = Math.sqrt(diff / norm);
    }
    offset += size;
  }
  initial.dispose();
  return changes;
}

test('scratch (ci-smoke): the convnet learns the training images; run directory complete', async () => {
  const out = join(root, 'scratch');
  const r = runTrainer(['scratch', '--data', data, '--out', out, '--preset', 'ci-smoke', '--backend', 'wasm']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(lastLine(r.stdout), CONTRACT);
  const h = await readJson(join(out, 'history.json'));
  assert.equal(h.epoch.length, 24);
  assert.deepEqual(
    h.epoch,
    Array.from({ length: 24 }, (_, i) => i + 1),
  );
  // Learning: the training loss falls well below chance (ln 2 ≈ 0.693) and training accuracy rises above it.
  assert.ok(Math.min(...h.loss) < 0.5, `train loss stayed at ${Math.min(...h.loss)}`);
  assert.ok(Math.max(...h.acc) >= 0.8, `train acc stayed at ${Math.max(...h.acc)}`);
  const cfg = await readJson(join(out, 'config.json'));
  // Every layer learnt, not only the dense ones (which alone can memorise 40 images): each kernel of the saved model
  // moved from the same seeded convnet before training, by a fraction of its size (a different starting point
  // would be as far away as the kernel itself).
  const moved = await relativeChanges(
    out,
    buildConvnet({ inputShape: [cfg.inputSize, cfg.inputSize, 3], seed: cfg.seed }),
  );
  if (process.env.CATDOG_TEST_VERBOSE) console.log(moved);
  for (const [name, change] of Object.entries(moved))
    assert.ok(change > 1e-3 && change < 0.5, `${name} moved by ${change} of its initial norm`);
  assert.equal(cfg.strategy, 'scratch');
  assert.equal(cfg.backend.name, 'wasm');
  assert.equal(cfg.inputScaling, 'unit');
  const m = await readJson(join(out, 'metrics.json'));
  assert.equal(m.test.n, 20);
  assert.equal(
    m.test.confusion.flat().reduce((a: number, b: number) => a + b, 0),
    20,
  );
  assert.equal(m.epochs, 24);
  for (const f of ['model/model.json', 'model/weights.bin', 'history.csv', 'summary.txt', 'checkpoints/last.json']) {
    assert.ok(existsSync(join(out, f)), `${f} missing`);
  }
  assert.match(await readFile(join(out, 'summary.txt'), 'utf8'), /conv2d_1/);
  assert.equal((await readFile(join(out, 'history.csv'), 'utf8')).trim().split('\n').length, 25);
  // Misclassified thumbnails are listed in metrics.json and exist.
  for (const x of m.test.misclassified) assert.ok(existsSync(join(out, x.image)), `${x.image} missing`);
});

test('extract (ci-smoke): features cached and reused, head reaches well above chance, evaluate reproduces it', async () => {
  const out = join(root, 'extract');
  const cache = join(root, 'features');
  const r = runTrainer(['extract', '--data', data, '--out', out, '--preset', 'ci-smoke', '--feature-cache-dir', cache]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /features: extracted train \(40 images/);
  const m = await readJson(join(out, 'metrics.json'));
  assert.ok(m.test.accuracy >= 0.7, `test accuracy ${m.test.accuracy}`);
  const cfg = await readJson(join(out, 'config.json'));
  assert.equal(cfg.base, 'mobilenet_v2');
  assert.equal(cfg.inputScaling, 'symmetric');

  // A second run on the same base, weights, size and dataset reuses the cached features and says so.
  const again = runTrainer([
    'extract',
    '--data',
    data,
    '--out',
    join(root, 'extract2'),
    '--preset',
    'ci-smoke',
    '--feature-cache-dir',
    cache,
    '--epochs',
    '1',
  ]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /reusing cached train features/);
  assert.doesNotMatch(again.stderr, /features: extracted train/);

  // evaluate on the run directory: the prepped dataset's test split, same numbers as the run's metrics.
  const metricsBefore = await readFile(join(out, 'metrics.json'), 'utf8');
  const e = runTrainer(['evaluate', '--model', out, '--data', data]);
  assert.equal(e.code, 0, e.stderr);
  const [, acc, loss, n] = lastLine(e.stdout).match(CONTRACT)!;
  assert.equal(Number(n), 20);
  assert.ok(Math.abs(Number(acc) - m.test.accuracy) < 1e-4, `evaluate ${acc} vs run ${m.test.accuracy}`);
  assert.ok(Math.abs(Number(loss) - m.test.loss) < 1e-3, `evaluate loss ${loss} vs run ${m.test.loss}`);
  assert.match(e.stderr, /scaled x \/ 127\.5 - 1/, 'evaluate uses the scaling the run was trained with');

  // evaluate on a plain folder in Kaggle's flat layout, and in class folders.
  const flat = join(root, 'flat');
  const classes = join(root, 'classes');
  await mkdir(flat);
  for (const c of ['cat', 'dog']) {
    await mkdir(join(classes, `${c}s`), { recursive: true });
    for (const i of [2500, 2501, 2502, 2503]) {
      await copyFile(join(kaggleTrainDir, `${c}.${i}.jpg`), join(flat, `${c}.${i}.jpg`));
      await copyFile(join(kaggleTrainDir, `${c}.${i}.jpg`), join(classes, `${c}s`, `${c}.${i}.jpg`));
    }
  }
  const ef = runTrainer(['evaluate', '--model', join(out, 'model', 'model.json'), '--data', flat]);
  assert.equal(ef.code, 0, ef.stderr);
  assert.match(lastLine(ef.stdout), /^accuracy=\d\.\d{4} loss=\d+\.\d{4} n=8$/);
  const ec = runTrainer(['evaluate', '--model', out, '--data', classes]);
  assert.equal(ec.code, 0, ec.stderr);
  assert.equal(lastLine(ec.stdout), lastLine(ef.stdout), 'flat layout and class folders hold the same images');

  // Evaluations are filed beside the run's own results, which stay as the run wrote them.
  assert.equal(await readFile(join(out, 'metrics.json'), 'utf8'), metricsBefore, 'evaluate rewrote metrics.json');
  for (const x of m.test.misclassified) assert.ok(existsSync(join(out, x.image)), `evaluate removed ${x.image}`);
  const planId = (await readJson(join(data, 'manifest.json'))).planId;
  const files = readdirSync(join(out, 'evaluations'))
    .filter((f) => f.endsWith('.json'))
    .sort();
  assert.equal(files.length, 3, files.join(', '));
  assert.ok(files.includes(`${planId}.json`), 'the prepped dataset is filed under its planId');
  const own = await readJson(join(out, 'evaluations', `${planId}.json`));
  assert.equal(own.n, 20);
  assert.ok(Math.abs(own.accuracy - m.test.accuracy) < 1e-4);
  const folders = await Promise.all(
    files.filter((f) => f.startsWith('folder-')).map((f) => readJson(join(out, 'evaluations', f))),
  );
  assert.deepEqual(
    folders.map((f) => f.n),
    [8, 8],
  );
  for (const f of folders)
    for (const x of f.misclassified) assert.ok(existsSync(join(out, x.image)), `${x.image} missing`);
});

test('finetune (ci-smoke): head on cached features, then the top of the base; extract-augmented freezes the base; augmented runs', async () => {
  const out = join(root, 'finetune');
  const r = runTrainer([
    'finetune',
    '--data',
    data,
    '--out',
    out,
    '--preset',
    'ci-smoke',
    '--feature-cache-dir',
    join(root, 'features'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /fine-tuning from block_13_expand on cached activations/);
  const h = await readJson(join(out, 'history.json'));
  assert.deepEqual(h.phase, ['head', 'head', 'head', 'finetune']);
  assert.deepEqual(h.epoch, [1, 2, 3, 4]);
  // Learning, not chance (0.5): the head's loss falls and a later epoch fits the 40 training images. Any single
  // epoch's accuracy swings with the dropout masks (0.75–1 for the fine-tune epoch over runs).
  assert.ok(h.loss[2] < h.loss[0] && Math.max(...h.acc.slice(1)) >= 0.8, `no learning: loss ${h.loss}, acc ${h.acc}`);
  const m = await readJson(join(out, 'metrics.json'));
  assert.ok(m.test.accuracy >= 0.6, `test accuracy ${m.test.accuracy}`);
  // The model trained on cached activations is the whole network: evaluate on images gives the run's numbers.
  const e = runTrainer(['evaluate', '--model', out, '--data', data]);
  assert.equal(lastLine(e.stdout), `accuracy=${m.test.accuracy.toFixed(4)} loss=${m.test.loss.toFixed(4)} n=20`);
  assert.match(lastLine(r.stdout), CONTRACT);

  // The book's way: head end to end, then the top on (augmented) images; the frozen bottom runs compiled.
  const fi = runTrainer([
    'finetune',
    '--data',
    data,
    '--out',
    join(root, 'finetune-images'),
    '--preset',
    'ci-smoke',
    '--base',
    'mobilenet_v2_0.35',
    '--head-training',
    'end-to-end',
    '--fine-tune-input',
    'images',
    '--head-epochs',
    '2',
    '--epochs',
    '1',
  ]);
  assert.equal(fi.code, 0, fi.stderr);
  assert.match(fi.stderr, /head: the frozen mobilenetv2_0\.35_\S+ runs compiled/i);
  assert.match(fi.stderr, /finetune: the frozen \S+_bottom runs compiled/);
  const fih = await readJson(join(root, 'finetune-images', 'history.json'));
  assert.deepEqual(fih.phase, ['head', 'head', 'finetune']);
  const fim = await readJson(join(root, 'finetune-images', 'metrics.json'));
  const fie = runTrainer(['evaluate', '--model', join(root, 'finetune-images'), '--data', data]);
  assert.equal(lastLine(fie.stdout), `accuracy=${fim.test.accuracy.toFixed(4)} loss=${fim.test.loss.toFixed(4)} n=20`);

  const ea = runTrainer([
    'extract-augmented',
    '--data',
    data,
    '--out',
    join(root, 'ea'),
    '--preset',
    'ci-smoke',
    '--epochs',
    '1',
    '--base',
    'mobilenet_v2_0.35',
  ]);
  assert.equal(ea.code, 0, ea.stderr);
  assert.match(ea.stderr, /trainable weight tensors: \d+ before freezing the base, 4 after/);
  assert.ok(readdirSync(join(root, 'ea', 'model')).includes('model.json'));

  // augmented: the dropout convnet on augmented batches (one short epoch: it runs end to end, config recorded).
  const au = runTrainer([
    'augmented',
    '--data',
    data,
    '--out',
    join(root, 'aug'),
    '--preset',
    'ci-smoke',
    '--epochs',
    '1',
  ]);
  assert.equal(au.code, 0, au.stderr);
  const auCfg = await readJson(join(root, 'aug', 'config.json'));
  assert.deepEqual([auCfg.augment, auCfg.dropout, auCfg.batchSize], [true, 0.5, 10]);
  assert.match(await readFile(join(root, 'aug', 'summary.txt'), 'utf8'), /dropout_1/);
});
