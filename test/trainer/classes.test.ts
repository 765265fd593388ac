// Three classes end to end through the real CLIs: a class-folder source (cats, dogs and colour-inverted photos of
// other cats and dogs: a third class a frozen ImageNet base tells apart by what the photos show, not by their
// shape) → prep split → extract (ci-smoke, MobileNetV2, softmax head) → evaluate (3×3 confusion matrix, per-class
// precision and recall) → predict (every class's probability) → export (labels.json) → the run's report page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';
import { predict, type PhotoPrediction, type ProgressSink } from '@catdog/training';
import { CONTRACT, lastLine, runTrainer } from './helpers.js';

const quiet: ProgressSink = { log() {}, start() {}, update() {}, stop() {} };

const CLASSES = ['cats', 'dogs', 'negatives'];
const PER_CLASS = { train: 20, validation: 6, test: 14 };
let root = '';
let data = '';
let run = '';

/** <root>/<class>/*.jpg: cat.N and dog.N as they are, and negatives of cat/dog photos not used elsewhere. */
async function threeClassSource(dir: string, n: number): Promise<void> {
  for (const c of CLASSES) await mkdir(join(dir, c), { recursive: true });
  for (let i = 0; i < n; i++) {
    await copyFile(join(kaggleTrainDir, `cat.${i}.jpg`), join(dir, 'cats', `cat.${i}.jpg`));
    await copyFile(join(kaggleTrainDir, `dog.${i}.jpg`), join(dir, 'dogs', `dog.${i}.jpg`));
    const photo = join(kaggleTrainDir, `${i % 2 ? 'dog' : 'cat'}.${2000 + i}.jpg`);
    await sharp(photo)
      .negate({ alpha: false })
      .jpeg()
      .toFile(join(dir, 'negatives', `negative.${i}.jpg`));
  }
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'catdog-classes-'));
  const source = join(root, 'source');
  await threeClassSource(source, PER_CLASS.train + PER_CLASS.validation + PER_CLASS.test);
  data = join(root, 'data');
  const prep = spawnSync(
    process.execPath,
    [
      CLI.prep,
      'split',
      '--source',
      source,
      '--out',
      data,
      '--train',
      String(PER_CLASS.train),
      '--validation',
      String(PER_CLASS.validation),
      '--test',
      String(PER_CLASS.test),
      '--resize',
      '96x96',
    ],
    { cwd: projectRoot, encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(prep.status, 0, prep.stderr);
  run = join(root, 'extract');
  const t = runTrainer([
    'extract',
    '--data',
    data,
    '--out',
    run,
    '--preset',
    'ci-smoke',
    '--feature-cache-dir',
    join(root, 'features'),
  ]);
  assert.equal(t.code, 0, t.stderr);
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

interface Metrics {
  accuracy: number;
  n: number;
  confusion: number[][];
  classes: string[];
  perClass: { class: string; precision: number | null; recall: number | null; support: number }[];
  misclassified: { key: string; label: number; predicted?: number; probability: number }[];
}

/** The metrics' own consistency: a square matrix over the classes, accuracy its trace, P/R from its columns/rows. */
function checkMetrics(m: Metrics): void {
  const n = PER_CLASS.test * CLASSES.length;
  assert.deepEqual(m.classes, CLASSES);
  assert.equal(m.n, n);
  assert.equal(m.confusion.length, 3);
  for (const row of m.confusion) assert.equal(row.length, 3);
  m.confusion.forEach((row, i) =>
    assert.equal(
      row.reduce((a, b) => a + b, 0),
      PER_CLASS.test,
      `row ${i}`,
    ),
  );
  const trace = m.confusion.reduce((a, row, i) => a + row[i]!, 0);
  assert.equal(m.accuracy, trace / n);
  assert.equal(m.misclassified.length, n - trace);
  for (const e of m.misclassified) {
    assert.notEqual(e.predicted, undefined, 'three classes: the predicted class is recorded');
    assert.notEqual(e.predicted, e.label);
  }
  assert.deepEqual(
    m.perClass.map((c) => c.class),
    CLASSES,
  );
  m.perClass.forEach((c, i) => {
    const predicted = m.confusion.reduce((a, row) => a + row[i]!, 0);
    assert.equal(c.support, PER_CLASS.test);
    assert.equal(c.recall, m.confusion[i]![i]! / PER_CLASS.test);
    assert.equal(c.precision, predicted ? m.confusion[i]![i]! / predicted : null);
  });
}

test('extract learns three classes: softmax head, sparse categorical loss, 3×3 confusion matrix well above chance', async () => {
  const model = JSON.parse(await readFile(join(run, 'model', 'model.json'), 'utf8'));
  const text = JSON.stringify(model.modelTopology);
  assert.match(text, /"name":"dense_2"[^}]*"units":3[^}]*"activation":"softmax"|"units":3,"activation":"softmax"/);
  const metrics = JSON.parse(await readFile(join(run, 'metrics.json'), 'utf8')).test as Metrics;
  checkMetrics(metrics);
  // Chance is 1/3; a head on frozen ImageNet features learns far more from 20 photos per class.
  assert.ok(metrics.accuracy >= 0.6, `test accuracy ${metrics.accuracy}`);
  // The third class is learnt, not just cats against dogs.
  assert.ok(metrics.perClass[2]!.recall! >= 0.6, `negatives recall ${metrics.perClass[2]!.recall}`);
  const history = JSON.parse(await readFile(join(run, 'history.json'), 'utf8'));
  assert.ok(history.loss.at(-1) < history.loss[0], `training loss falls: ${history.loss.join(', ')}`);
  // config.json records the loss the run trained with, not the two-class default.
  const config = JSON.parse(await readFile(join(run, 'config.json'), 'utf8'));
  assert.equal(config.loss, 'sparse_categorical_crossentropy');
});

test('evaluate: the same 3×3 matrix and per-class precision/recall as the run, printed and filed', async () => {
  const r = runTrainer(['evaluate', '--model', run, '--data', data]);
  assert.equal(r.code, 0, r.stderr);
  const m = CONTRACT.exec(lastLine(r.stdout));
  assert.ok(m, r.stdout);
  const own = JSON.parse(await readFile(join(run, 'metrics.json'), 'utf8')).test as Metrics;
  // The run predicted its test split from cached features, evaluate through the whole model: the same numbers.
  assert.equal(Number(m[1]), Number(own.accuracy.toFixed(4)));
  assert.match(r.stderr, /^\s+cats\s+dogs\s+negatives$/m);
  assert.match(r.stderr, /^negatives precision \d+\.\d% recall \d+\.\d% \(14 images\)$/m);
  const manifest = JSON.parse(await readFile(join(data, 'manifest.json'), 'utf8'));
  const evaluation = JSON.parse(await readFile(join(run, 'evaluations', `${manifest.planId}.json`), 'utf8'));
  checkMetrics(evaluation);
  assert.deepEqual(evaluation.confusion, own.confusion);
});

test('predict gives every class a probability; export writes the three classes in labels.json; the report shows 3×3', async () => {
  const photos = join(root, 'photos');
  await mkdir(photos);
  await copyFile(join(kaggleTrainDir, 'cat.2900.jpg'), join(photos, 'cat.2900.jpg'));
  await copyFile(join(kaggleTrainDir, 'dog.2900.jpg'), join(photos, 'dog.2900.jpg'));
  await sharp(join(kaggleTrainDir, 'cat.2901.jpg')).negate({ alpha: false }).jpeg().toFile(join(photos, 'neg.jpg'));
  const out = join(root, 'predictions.csv');
  const r = runTrainer(['predict', '--model', run, '--input', photos, '--out', out, '--top', '3']);
  assert.equal(r.code, 0, r.stderr);
  const rows = (await readFile(out, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => l.split(','));
  assert.deepEqual(rows[0], ['key', 'class', 'probability']);
  assert.equal(rows.length, 1 + 3 * 3);
  for (const key of ['cat.2900.jpg', 'dog.2900.jpg', 'neg.jpg']) {
    const mine = rows.filter((x) => x[0] === key);
    assert.deepEqual(mine.map((x) => x[1]).sort(), CLASSES);
    const p = mine.map((x) => Number(x[2]));
    assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-4, `${key}: probabilities sum to 1`);
    assert.deepEqual(
      p,
      [...p].sort((a, b) => b - a),
    );
  }

  // A large folder is decoded chunk by chunk and its rows handed on as they come: the same rows, none kept.
  const whole = await predict({ model: run, input: photos, backend: 'wasm', progress: quiet });
  const streamed: PhotoPrediction[] = [];
  const chunked = await predict({
    model: run,
    input: photos,
    backend: 'wasm',
    progress: quiet,
    batchSize: 1,
    chunkSize: 2,
    collect: false,
    onPredictions: (rows) => void streamed.push(...rows),
  });
  assert.deepEqual([chunked.classified, chunked.predictions.length], [3, 0]);
  assert.deepEqual(streamed, whole.predictions);

  const exported = join(root, 'export');
  const e = runTrainer(['export', '--model', run, '--out', exported]);
  assert.equal(e.code, 0, e.stderr);
  const labels = JSON.parse(await readFile(join(exported, 'labels.json'), 'utf8'));
  assert.deepEqual(labels.classes, CLASSES);
  assert.equal(labels.activation, 'softmax');

  const html = join(root, 'report.html');
  const rep = spawnSync(process.execPath, [CLI.report, '--run', run, '--out', html], {
    cwd: projectRoot,
    encoding: 'utf8',
  });
  assert.equal(rep.status, 0, rep.stderr);
  const page = await readFile(html, 'utf8');
  for (const c of ['cat', 'dog', 'negative']) assert.match(page, new RegExp(`predicted ${c}</th>`));
  assert.match(page, /<th class="num">precision<\/th><th class="num">recall<\/th>/);
  assert.equal(page.match(/<table class="per-class">[\s\S]*?<\/table>/)?.[0].match(/<tr><th>[^<]/g)?.length, 3);
});
