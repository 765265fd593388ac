// What the trainer keeps: with --keep-best the saved model holds the best epoch's weights (bit for bit, and
// keptEpoch names that epoch by the history); the feature cache is reused only for the same dataset, base, input
// size and weights (keep-best through the real CLI on a tiny prepped dataset; the cache keys in process).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  buildTransferModel,
  emptyHistory,
  featureCacheKey,
  initialState,
  namedVariables,
  RunDir,
  type TrainConfig,
} from '@catdog/training';
import { writeComparisonReport, writeRunReport } from '@catdog/report';
import { mobilenetV2Dir, sharedRoot } from '../helpers/fixtures.js';
import { runTrainer, tinyDataset } from './helpers.js';

// This process only reads the runs' weights: tfjs' cpu backend (the package imports register wasm first).
await tf.setBackend('cpu');

let root = '';
let data = '';

before(async () => {
  ({ root, data } = await tinyDataset());
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));
const bits = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).slice().buffer);

test('keep-best: the saved model holds the best val_acc epoch’s checkpoint weights, and keptEpoch names it', async () => {
  const out = join(root, 'keep-best');
  // Seeded, one thread, default kernel plans: the same run every time, in which the best epoch is not the last.
  const r = runTrainer(
    [
      'scratch',
      '--data',
      data,
      '--out',
      out,
      '--preset',
      'ci-smoke',
      '--epochs',
      '8',
      '--keep-best',
      '--seed',
      '3',
      '--threads',
      '1',
    ],
    { CATDOG_AUTOTUNE: '0' },
  );
  assert.equal(r.code, 0, r.stderr);
  const h = await readJson(join(out, 'history.json'));
  const m = await readJson(join(out, 'metrics.json'));
  // The epoch with the highest val_acc (the first of equals: Keras' ModelCheckpoint keeps a strictly better one).
  const best = h.val_acc.indexOf(Math.max(...h.val_acc)) + 1;
  assert.equal(m.keptEpoch, best, `keptEpoch ${m.keptEpoch}, best by history.json epoch ${best} (${h.val_acc})`);
  assert.equal(m.bestEpoch, best);
  assert.equal(m.bestValAcc, h.val_acc[best - 1]);
  assert.ok(best < h.epoch.length, `precondition: the best epoch (${best}) is not the last (${h.val_acc})`);
  assert.match(r.stderr, new RegExp(`keep-best: restored the weights of epoch ${best} `));

  const run = RunDir.open(out);
  const bestCk = (await run.readCheckpoint('best'))!;
  const lastCk = (await run.readCheckpoint('last'))!;
  const model = await run.loadModel();
  const saved = namedVariables(model);
  assert.deepEqual([...saved.keys()].sort(), Object.keys(bestCk.weights).sort());
  let differsFromLast = 0;
  for (const [name, v] of saved) {
    assert.ok(bits(v.read()).equals(bits(bestCk.weights[name]!)), `${name}: saved model ≠ best checkpoint`);
    if (!bits(v.read()).equals(bits(lastCk.weights[name]!))) differsFromLast++;
  }
  assert.ok(differsFromLast > 0, 'the saved model is not simply the last epoch’s');
  tf.dispose([...Object.values(bestCk.weights), ...Object.values(lastCk.weights), ...model.getWeights()]);
});

test('report: the run page and comparison over the run directory the trainer wrote (keep-best run above)', async () => {
  // The report's own tests use run directories a helper writes; this one reads what the trainer wrote.
  const out = join(root, 'keep-best');
  const m = await readJson(join(out, 'metrics.json'));
  const cfg = await readJson(join(out, 'config.json'));
  const page = await writeRunReport(out);
  const html = await readFile(page, 'utf8');
  assert.ok(html.includes(`${(m.test.accuracy * 100).toFixed(1)}%`), 'test accuracy shown');
  assert.ok(html.includes('Training and validation accuracy') && html.includes('Training and validation loss'));
  assert.ok(m.test.misclassified.length > 0, 'precondition: the run misclassified some test images');
  for (const x of m.test.misclassified) {
    assert.ok(html.includes(`p(dog) = ${x.probability.toFixed(3)}`), `misclassified ${x.key} shown`);
    assert.ok(existsSync(join(out, x.image)), `${x.image}`);
  }
  assert.doesNotMatch(html, /<script|src="(?!data:)/i, 'self-contained');
  const comparison = await writeComparisonReport(root, join(root, 'comparison.html'));
  assert.deepEqual(comparison.names, ['keep-best']);
  const table = await readFile(join(root, 'comparison.html'), 'utf8');
  assert.ok(
    table.includes(`<td>${m.backend.name} (${m.backend.threads} thread${m.backend.threads === 1 ? '' : 's'})</td>`),
    `the backend that ran (${JSON.stringify(m.backend)}, config ${JSON.stringify(cfg.backend)})`,
  );
  assert.match(table, /scratch reached \d+\.\d% test accuracy \(the only run\)/);
});

/** The feature cache folder (its key) buildTransferModel gives for `cfg` over a dataset whose manifest hash is `manifest`. */
async function cacheKeyOf(cfg: Partial<TrainConfig>, manifest = 'a'.repeat(64)): Promise<string> {
  const full = {
    strategy: 'extract',
    base: 'mobilenet_v2_0.35',
    weightsDir: join(sharedRoot, 'weights'),
    inputSize: 64,
    inputScaling: 'symmetric',
    headPooling: 'avg',
    headUnits: 8,
    dropout: 0.5,
    seed: 1,
    batchSize: 8,
    ...cfg,
  } as TrainConfig;
  const t = await buildTransferModel({
    cfg: full,
    counts: { train: 0, validation: 0, test: 0 },
    classes: ['cat', 'dog'],
    state: initialState(emptyHistory()),
    progress: { start() {}, update() {}, stop() {}, log() {} },
    log() {},
    imageFeed: () => Promise.reject(new Error('no images needed for the key')),
    featureCacheRoot: root,
    manifestSha256: manifest,
  });
  tf.dispose(t.model.getWeights());
  return featureCacheKey(t.keyParts);
}

// The end-to-end reuse (same inputs, second run says "reusing cached … features") is in strategies.test.ts; here
// every input that determines the features must change the cache folder.
test('feature cache: another dataset, base, input size or weights folder is another cache folder', async () => {
  const reference = await cacheKeyOf({});
  assert.equal(await cacheKeyOf({}), reference, 'the control: the same inputs give the same folder');
  const weights = join(root, 'weights-0.35');
  await cp(mobilenetV2Dir('0.35'), weights, { recursive: true });
  const variants: Array<[string, Promise<string>]> = [
    ['another dataset (manifest)', cacheKeyOf({}, 'b'.repeat(64))],
    ['another base', cacheKeyOf({ base: 'mobilenet_v2' })],
    ['another input size', cacheKeyOf({ inputSize: 96 })],
    ['another pooling', cacheKeyOf({ headPooling: 'flatten' })],
    ['other weights (--weights folder)', cacheKeyOf({ weights })],
  ];
  for (const [what, key] of variants) assert.notEqual(await key, reference, `${what}: same cache folder`);
});

test('feature cache: weights changed in place (weights.bin rewritten, model.json untouched) miss the cache', async () => {
  const weights = join(root, 'weights-in-place');
  await cp(mobilenetV2Dir('0.35'), weights, { recursive: true });
  const before = await cacheKeyOf({ weights });
  const bin = await readFile(join(weights, 'weights.bin'));
  bin.writeFloatLE(bin.readFloatLE(0) + 0.5, 0);
  await writeFile(join(weights, 'weights.bin'), bin);
  assert.notEqual(await cacheKeyOf({ weights }), before);
});
