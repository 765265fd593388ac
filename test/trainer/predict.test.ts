// Using a trained model through the real CLI: predict (CSV, Kaggle, JSON; a corrupt photo reported and skipped),
// export (files written; the reloaded export agrees with predict), explain (one Grad-CAM overlay per photo) and
// the run report's heatmaps of the misclassified test images. One ci-smoke run, trained once, serves every test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { initBackend } from '@catdog/backend';
import { classifyPhoto, loadExportedModel } from '@catdog/models';
import { spawnSync } from 'node:child_process';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';
import { runTrainer, tinyDataset } from './helpers.js';

let root = '';
let run = '';
let photos = '';
const PHOTOS = ['cat.2500.jpg', 'cat.2501.jpg', 'dog.2500.jpg', 'dog.2501.jpg', 'dog.2502.jpg'];

before(async () => {
  const { root: r, data } = await tinyDataset();
  root = r;
  run = join(root, 'run');
  const t = runTrainer(['scratch', '--data', data, '--out', run, '--preset', 'ci-smoke', '--backend', 'wasm']);
  assert.equal(t.code, 0, t.stderr);
  // Real photos (none in the tiny dataset), a truncated JPEG and a file that is not a photo at all.
  photos = join(root, 'photos');
  await mkdir(photos);
  for (const p of PHOTOS) await copyFile(join(kaggleTrainDir, p), join(photos, p));
  const whole = await readFile(join(kaggleTrainDir, 'cat.2502.jpg'));
  await writeFile(join(photos, 'broken.jpg'), whole.subarray(0, 3000));
  await writeFile(join(photos, 'notes.txt'), 'not a photo');
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** CSV text → rows of cells (no quoting in these files). */
const csv = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((l) => l.split(','));
/** P(dogs) of each key from predict's CSV (key,class,probability of class). */
function pDog(rows: string[][]): Map<string, number> {
  return new Map(rows.slice(1).map(([key, cls, p]) => [key, cls === 'dogs' ? Number(p) : 1 - Number(p)]));
}

test('predict --out x.csv: a header and one row per readable photo; the corrupt one reported by name and skipped', async () => {
  const out = join(root, 'predictions.csv');
  const r = runTrainer(['predict', '--model', run, '--input', photos, '--out', out, '--backend', 'wasm']);
  assert.equal(r.code, 0, r.stderr);
  const rows = csv(await readFile(out, 'utf8'));
  assert.deepEqual(rows[0], ['key', 'class', 'probability']);
  assert.deepEqual(
    rows.slice(1).map((x) => x[0]),
    PHOTOS,
  );
  for (const [, cls, p] of rows.slice(1)) {
    assert.ok(cls === 'cats' || cls === 'dogs', cls);
    assert.ok(Number(p) >= 0.5 && Number(p) <= 1, `probability of the predicted class ${p}`);
  }
  assert.match(r.stderr, /skipped broken\.jpg: /);
  assert.match(r.stderr, /5 classified, 1 skipped \(broken\.jpg\)/);
  assert.doesNotMatch(r.stderr, /notes\.txt/);

  // Printed to stdout the same rows; a glob selects; --top 2 gives both classes, best first, summing to 1.
  const printed = runTrainer([
    'predict',
    '--model',
    run,
    '--input',
    join(photos, 'dog.*.jpg'),
    '--top',
    '2',
    '--backend',
    'wasm',
  ]);
  assert.equal(printed.code, 0, printed.stderr);
  const top = csv(printed.stdout);
  assert.deepEqual(top[0], ['key', 'class', 'probability']);
  assert.deepEqual(
    top.slice(1).map((x) => x[0]),
    ['dog.2500.jpg', 'dog.2500.jpg', 'dog.2501.jpg', 'dog.2501.jpg', 'dog.2502.jpg', 'dog.2502.jpg'],
  );
  const all = pDog(rows);
  for (let i = 1; i < top.length; i += 2) {
    assert.ok(Number(top[i][2]) >= Number(top[i + 1][2]));
    assert.ok(Math.abs(Number(top[i][2]) + Number(top[i + 1][2]) - 1) < 1e-5);
    const dog = top[i][1] === 'dogs' ? Number(top[i][2]) : Number(top[i + 1][2]);
    assert.ok(Math.abs(dog - all.get(top[i][0])!) < 1e-6, 'same probability whatever the batch');
  }

  // JSON Lines: one object per photo with every class's probability.
  const jsonl = join(root, 'predictions.jsonl');
  const j = runTrainer([
    'predict',
    '--model',
    run,
    '--input',
    photos,
    '--out',
    jsonl,
    '--batch-size',
    '2',
    '--backend',
    'wasm',
  ]);
  assert.equal(j.code, 0, j.stderr);
  const records = (await readFile(jsonl, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(records.length, 5);
  for (const rec of records) assert.ok(Math.abs(rec.probabilities.dogs - all.get(rec.key)!) < 1e-6);
});

test('predict: nothing readable exits 1 naming the cause; a missing input is a clear error', async () => {
  const bad = join(root, 'only-bad');
  await mkdir(bad);
  await writeFile(join(bad, 'a.jpg'), 'garbage');
  const r = runTrainer(['predict', '--model', run, '--input', bad, '--backend', 'wasm']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /skipped a\.jpg/);
  assert.match(r.stderr, /error: .*could be decoded; nothing classified/);
  const missing = runTrainer(['predict', '--model', run, '--input', join(root, 'nope'), '--backend', 'wasm']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /error: --input .*nope: no such file or folder/);
  const usage = runTrainer(['predict', '--model', run, '--input', photos, '--out', join(root, 'p.txt')]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /cannot tell the format/);
});

test('predict --format kaggle: id,label with label = P(dog), ids sorted numerically', async () => {
  const test1 = join(root, 'test1');
  await mkdir(test1);
  // Kaggle's test1 names: N.jpg; 10 must sort after 2.
  const names = { '10.jpg': 'dog.2500.jpg', '2.jpg': 'cat.2500.jpg', '1.jpg': 'dog.2501.jpg' } as const;
  for (const [n, p] of Object.entries(names)) await copyFile(join(kaggleTrainDir, p), join(test1, n));
  const out = join(root, 'submission.csv');
  const r = runTrainer([
    'predict',
    '--model',
    run,
    '--input',
    test1,
    '--format',
    'kaggle',
    '--out',
    out,
    '--backend',
    'wasm',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const rows = csv(await readFile(out, 'utf8'));
  assert.deepEqual(rows[0], ['id', 'label']);
  assert.deepEqual(
    rows.slice(1).map((x) => x[0]),
    ['1', '2', '10'],
  );
  const reference = pDog(csv(await readFile(join(root, 'predictions.csv'), 'utf8')));
  for (const [id, label] of rows.slice(1)) {
    const expected = reference.get(names[`${id}.jpg` as keyof typeof names]);
    assert.ok(Math.abs(Number(label) - expected!) < 1e-6, `id ${id}: ${label} vs P(dog) ${expected}`);
  }
});

test("predict gives evaluate's per-image probabilities (confusion matrix and misclassified probabilities)", async () => {
  const folder = join(root, 'labelled');
  const keys: string[] = [];
  for (const [cls, prefix] of [
    ['cats', 'cat'],
    ['dogs', 'dog'],
  ] as const) {
    await mkdir(join(folder, cls), { recursive: true });
    for (let i = 2600; i < 2606; i++) {
      await copyFile(join(kaggleTrainDir, `${prefix}.${i}.jpg`), join(folder, cls, `${prefix}.${i}.jpg`));
      keys.push(`${prefix}.${i}`);
    }
  }
  const e = runTrainer(['evaluate', '--model', run, '--data', folder, '--backend', 'wasm']);
  assert.equal(e.code, 0, e.stderr);
  const evaluations = join(run, 'evaluations');
  const file = (await readdir(evaluations)).find((f) => f.endsWith('.json'))!;
  const evaluation = JSON.parse(await readFile(join(evaluations, file), 'utf8'));
  const out = join(root, 'labelled.csv');
  const p = runTrainer(['predict', '--model', run, '--input', folder, '--out', out, '--backend', 'wasm']);
  assert.equal(p.code, 0, p.stderr);
  const dog = pDog(csv(await readFile(out, 'utf8')));
  assert.equal(dog.size, 12);
  const byStem = new Map([...dog].map(([k, v]) => [k.replace(/^.*\//, '').replace(/\.jpg$/, ''), v]));
  const confusion = [
    [0, 0],
    [0, 0],
  ];
  for (const k of keys) confusion[k.startsWith('dog') ? 1 : 0][byStem.get(k)! > 0.5 ? 1 : 0]++;
  assert.deepEqual(confusion, evaluation.confusion);
  for (const m of evaluation.misclassified)
    assert.ok(
      Math.abs(byStem.get(m.key)! - m.probability) < 1e-5,
      `${m.key}: ${byStem.get(m.key)} vs ${m.probability}`,
    );
  // evaluate drew the misclassified images' heatmaps too.
  for (const m of evaluation.misclassified) assert.ok(existsSync(join(run, m.heatmap)), `${m.heatmap} missing`);
});

test("export writes model.json, weights and labels.json; the reloaded export gives predict's probability within 1e-3", async () => {
  // A real photo as a PNG below 4× the input size: the pool and the exported model then decode the same pixels.
  const png = join(root, 'png');
  await mkdir(png);
  await sharp(join(kaggleTrainDir, 'dog.2700.jpg'))
    .resize(200, 150, { fit: 'fill' })
    .png()
    .toFile(join(png, 'dog.2700.png'));
  const out = join(root, 'export');
  const r = runTrainer(['export', '--model', run, '--out', out, '--backend', 'wasm']);
  assert.equal(r.code, 0, r.stderr);
  const files = await readdir(out);
  assert.ok(files.includes('model.json') && files.includes('labels.json'), files.join(', '));
  const weights = files.filter((f) => /^weights-[0-9a-f]{16}\.bin$/.test(f));
  assert.equal(weights.length, 1);
  assert.match(r.stdout, /^export size=\d+ weights=\d+ quantization=float32 classes=cats,dogs$/m);
  const labels = JSON.parse(await readFile(join(out, 'labels.json'), 'utf8'));
  assert.deepEqual(labels.classes, ['cats', 'dogs']);

  const p = runTrainer(['predict', '--model', run, '--input', join(png, 'dog.2700.png'), '--backend', 'wasm']);
  assert.equal(p.code, 0, p.stderr);
  const predicted = pDog(csv(p.stdout)).get('dog.2700.png')!;
  await initBackend({ backend: 'wasm', log: () => {} });
  const exported = await loadExportedModel(out);
  try {
    const c = await classifyPhoto(exported.model, exported.labels, join(png, 'dog.2700.png'));
    assert.ok(Math.abs(c.probabilities[1] - predicted) < 1e-3, `export ${c.probabilities[1]} vs predict ${predicted}`);
  } finally {
    exported.model.dispose();
  }

  // uint8 quantization with --compare: a smaller file, and a size/accuracy line per variant on the test split.
  const q = runTrainer([
    'export',
    '--model',
    run,
    '--out',
    join(root, 'export-uint8'),
    '--quantize',
    'uint8',
    '--compare',
    '--backend',
    'wasm',
  ]);
  assert.equal(q.code, 0, q.stderr);
  assert.match(q.stdout, /quantization=uint8/);
  for (const v of ['float32', 'float16', 'uint8'])
    assert.match(q.stdout, new RegExp(`^${v} +\\d+\\.\\d+ MiB +\\d+\\.\\d+ %`, 'm'));
  const weightBytes = (stdout: string) => Number(/ weights=(\d+)/.exec(stdout)![1]);
  assert.ok(weightBytes(q.stdout) < weightBytes(r.stdout) / 3, 'uint8 weights are about a quarter of float32');
});

test('explain writes one Grad-CAM overlay per readable photo', async () => {
  const out = join(root, 'explained');
  const r = runTrainer(['explain', '--model', run, '--input', photos, '--out', out, '--backend', 'wasm']);
  assert.equal(r.code, 0, r.stderr);
  const written = (await readdir(out)).sort();
  assert.deepEqual(written, PHOTOS.map((p) => p.replace(/\.jpg$/, '.gradcam.jpg')).sort());
  for (const f of written) {
    const meta = await sharp(join(out, f)).metadata();
    const original = await sharp(join(photos, f.replace('.gradcam', ''))).metadata();
    assert.deepEqual([meta.width, meta.height], [original.width, original.height], 'overlay at the photo size');
  }
  assert.match(r.stderr, /skipped .*broken\.jpg/);
});

test("the run's misclassified test images have Grad-CAM heatmaps, shown on the report page", async () => {
  const metrics = JSON.parse(await readFile(join(run, 'metrics.json'), 'utf8'));
  const missed = metrics.test.misclassified as { key: string; heatmap?: string }[];
  assert.ok(missed.length > 0, 'a ci-smoke run misclassifies some test images');
  for (const m of missed) {
    assert.equal(m.heatmap, `misclassified/${m.key}.gradcam.jpg`);
    assert.ok(existsSync(join(run, m.heatmap!)));
  }
  const html = join(root, 'report.html');
  const rep = spawnSync(process.execPath, [CLI.report, '--run', run, '--out', html], {
    cwd: projectRoot,
    encoding: 'utf8',
  });
  assert.equal(rep.status, 0, rep.stderr);
  const page = await readFile(html, 'utf8');
  assert.equal(
    page.match(
      /<img src="data:image\/jpeg;base64,[^"]+" alt="[^"]+: Grad-CAM heatmap of the predicted class" class="heatmap">/g,
    )?.length,
    Math.min(missed.length, 200),
  );
});
