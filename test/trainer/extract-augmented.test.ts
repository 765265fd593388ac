// extract-augmented in cpu-quick's shape (issue 14): the head first on cached features (extract's recipe), then
// augmented epochs through the frozen, compiled base, validated on the cached validation features.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTRACT, lastLine, runTrainer, tinyDatasetForFile } from './helpers.js';

const tiny = tinyDatasetForFile();

test('extract-augmented with --head-training features: a head phase on cached features, then augmented epochs validated on the cache', async () => {
  const out = join(tiny.root, 'ea');
  const r = runTrainer([
    'extract-augmented',
    '--data',
    tiny.data,
    '--out',
    out,
    '--preset',
    'ci-smoke',
    '--base',
    'mobilenet_v2_0.35',
    '--head-training',
    'features',
    '--head-epochs',
    '3',
    '--head-learning-rate',
    '1e-3',
    '--epochs',
    '2',
    '--learning-rate',
    '1e-4',
    '--keep-best',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(lastLine(r.stdout), CONTRACT);
  // Features are extracted for train and validation once (the head phase); the augmented phase reads validation's.
  assert.match(r.stderr, /features: extracted train \(40 images/);
  assert.match(r.stderr, /features: extracted validation \(20 images/);
  assert.match(r.stderr, /train: the frozen \S+ runs compiled .*, validated on its cached output/);
  const h = JSON.parse(await readFile(join(out, 'history.json'), 'utf8'));
  assert.deepEqual(h.phase, ['head', 'head', 'head', 'train', 'train']);
  // The head learns on the features (loss falls well below chance, ln 2), and the augmented epochs start from it.
  assert.ok(h.loss[2] < h.loss[0] && h.loss[2] < 0.6, `head did not learn: ${h.loss}`);
  assert.ok(h.val_acc[3] >= 0.7, `the augmented phase did not start from the trained head: ${h.val_acc}`);
  const m = JSON.parse(await readFile(join(out, 'metrics.json'), 'utf8'));
  assert.ok(m.keptEpoch === 4 || m.keptEpoch === 5, `keep-best keeps an epoch of the last phase, got ${m.keptEpoch}`);
  // The saved model is the whole network on images: evaluate reproduces the run's test metrics.
  const e = runTrainer(['evaluate', '--model', out, '--data', tiny.data]);
  assert.equal(lastLine(e.stdout), `accuracy=${m.test.accuracy.toFixed(4)} loss=${m.test.loss.toFixed(4)} n=20`);
});
