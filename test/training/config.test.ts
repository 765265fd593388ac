// Config resolution: the book's defaults, presets, experiment files (JSON and YAML) and their precedence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exitCodeOf } from '@catdog/errors';
import {
  resolveConfig,
  readExperimentFile,
  STRATEGY_DEFAULTS,
  historyCsv,
  emptyHistory,
  computeMetrics,
  contractLine,
  FIELDS,
  FIELD_NAMES,
  flagName,
  experimentFileKeys,
} from '@catdog/training';

const base = { data: '/d', out: '/o' };

test("strategy defaults are the book's", () => {
  const s = resolveConfig({ strategy: 'scratch', flags: base });
  assert.deepEqual(
    [
      s.optimizer,
      s.learningRate,
      s.batchSize,
      s.epochs,
      s.stepsPerEpoch,
      s.validationSteps,
      s.loss,
      s.inputSize,
      s.augment,
      s.inputScaling,
    ],
    ['rmsprop', 1e-4, 20, 30, 100, 50, 'binary_crossentropy', 150, false, 'unit'],
  );
  const a = resolveConfig({ strategy: 'augmented', flags: base });
  assert.deepEqual(
    [a.batchSize, a.epochs, a.stepsPerEpoch, a.validationSteps, a.dropout, a.augment],
    [32, 100, 100, 50, 0.5, true],
  );
  const e = resolveConfig({ strategy: 'extract', flags: base });
  assert.deepEqual(
    [e.learningRate, e.batchSize, e.epochs, e.headUnits, e.dropout, e.base, e.inputScaling],
    [2e-5, 20, 30, 256, 0.5, 'mobilenet_v2', 'symmetric'],
  );
  const f = resolveConfig({ strategy: 'finetune', flags: { ...base, base: 'vgg16' } });
  assert.deepEqual(
    [f.learningRate, f.epochs, f.headLearningRate, f.headEpochs, f.inputScaling],
    [1e-5, 100, 2e-5, 30, 'unit'],
  );
  assert.equal(
    resolveConfig({ strategy: 'scratch', flags: { ...base, base: 'vgg16' } }).base,
    undefined,
    'scratch has no base',
  );
});

test('precedence: flags > experiment file > preset > strategy defaults', () => {
  const preset = resolveConfig({ strategy: 'finetune', flags: { ...base, preset: 'cpu-quick' } });
  assert.equal(preset.inputSize, 224);
  assert.equal(preset.headTraining, 'features');
  assert.equal(
    preset.learningRate,
    STRATEGY_DEFAULTS.finetune.learningRate,
    'a value the preset leaves alone keeps the default',
  );
  const file = resolveConfig({
    strategy: 'finetune',
    flags: { ...base, preset: 'cpu-quick' },
    file: { inputSize: 128, epochs: 3 },
  });
  assert.deepEqual([file.inputSize, file.epochs, file.headTraining], [128, 3, 'features']);
  const flags = resolveConfig({
    strategy: 'finetune',
    flags: { ...base, preset: 'cpu-quick', inputSize: 96 },
    file: { inputSize: 128, epochs: 3 },
  });
  assert.deepEqual([flags.inputSize, flags.epochs], [96, 3]);
  // The preset may also come from the experiment file; a flag still wins over it.
  const viaFile = resolveConfig({ strategy: 'scratch', flags: base, file: { preset: 'ci-smoke' } });
  assert.equal(viaFile.inputSize, 64);
  assert.equal(
    resolveConfig({ strategy: 'scratch', flags: { ...base, preset: 'cpu-quick' }, file: { preset: 'ci-smoke' } })
      .preset,
    'cpu-quick',
  );
});

test('experiment files: JSON and YAML, kebab-case keys, unknown keys rejected', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'catdog-config-'));
  try {
    await writeFile(join(dir, 'e.json'), JSON.stringify({ 'batch-size': 16, learningRate: 3e-4, 'early-stopping': 5 }));
    await writeFile(
      join(dir, 'e.yaml'),
      'batch_size: 12\nlearning-rate: 0.0003\nbase: mobilenet_v2_0.35\nkeep-best: true\n',
    );
    assert.deepEqual(await readExperimentFile(join(dir, 'e.json')), {
      batchSize: 16,
      learningRate: 3e-4,
      earlyStopping: 5,
    });
    const y = await readExperimentFile(join(dir, 'e.yaml'));
    assert.deepEqual(y, { batchSize: 12, learningRate: 3e-4, base: 'mobilenet_v2_0.35', keepBest: true });
    const c = resolveConfig({ strategy: 'extract', flags: base, file: y });
    assert.deepEqual([c.batchSize, c.base, c.keepBest], [12, 'mobilenet_v2_0.35', true]);
    await writeFile(join(dir, 'bad.yaml'), 'bach-size: 3\n');
    await assert.rejects(readExperimentFile(join(dir, 'bad.yaml')), /unknown option "bach-size"/);
    await writeFile(join(dir, 'broken.json'), '{ "epochs": ');
    await assert.rejects(readExperimentFile(join(dir, 'broken.json')), /not valid JSON/);
    await assert.rejects(readExperimentFile(join(dir, 'missing.yaml')), /not found/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bad values name the cause and list the valid choices', () => {
  assert.throws(
    () => resolveConfig({ strategy: 'transfer', flags: base }),
    /unknown strategy "transfer" \(valid: scratch, augmented, extract, extract-augmented, finetune, evaluate\)/,
  );
  assert.throws(
    () => resolveConfig({ strategy: 'extract', flags: { ...base, base: 'resnet50' as never } }),
    /unknown base "resnet50" \(valid: vgg16, mobilenet_v2, mobilenet_v2_0.35\)/,
  );
  assert.throws(
    () => resolveConfig({ strategy: 'scratch', flags: { ...base, preset: 'gpu' as never } }),
    /unknown preset "gpu"/,
  );
  assert.throws(
    () => resolveConfig({ strategy: 'scratch', flags: { ...base, batchSize: 0 } }),
    /batchSize must be a positive integer/,
  );
  assert.throws(() => resolveConfig({ strategy: 'scratch', flags: { out: '/o' } }), /missing --data/);
  assert.throws(
    () => resolveConfig({ strategy: 'scratch', flags: { ...base, dropout: 1.5 } }),
    /dropout must be in \[0, 1\)/,
  );
});

test('history CSV and test metrics', () => {
  const h = emptyHistory();
  h.epoch.push(1, 2);
  h.loss.push(0.7, 0.5);
  h.acc.push(0.5, 0.75);
  h.val_loss.push(0.69, null);
  h.val_acc.push(0.55, null);
  h.seconds.push(1.5, 1.2);
  h.images_per_s.push(100, 120);
  h.phase.push('head', 'finetune');
  assert.equal(
    historyCsv(h),
    'epoch,phase,loss,acc,val_loss,val_acc,seconds,images_per_s\n1,head,0.7,0.5,0.69,0.55,1.5,100\n2,finetune,0.5,0.75,,,1.2,120\n',
  );
  const m = computeMetrics(
    {
      probs: Float32Array.from([0.1, 0.8, 0.3, 0.9]),
      labels: Float32Array.from([0, 0, 1, 1]),
      keys: ['cat.1', 'cat.2', 'dog.1', 'dog.2'],
    },
    ['cats', 'dogs'],
  );
  assert.deepEqual(m.confusion, [
    [1, 1],
    [1, 1],
  ]);
  assert.equal(m.accuracy, 0.5);
  assert.deepEqual(
    m.misclassified.map((x) => x.key),
    ['cat.2', 'dog.1'],
  );
  const expectedLoss = -(Math.log(0.9) + Math.log(0.2) + Math.log(0.3) + Math.log(0.9)) / 4;
  assert.ok(Math.abs(m.loss - expectedLoss) < 1e-6);
  assert.equal(contractLine(m), `accuracy=0.5000 loss=${expectedLoss.toFixed(4)} n=4`);
});

test('one schema: bad values in experiment files name the field; sizes the convnet cannot take are usage errors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'catdog-config-'));
  try {
    await writeFile(join(dir, 'neg.yaml'), 'epochs: -1\n');
    await assert.rejects(
      readExperimentFile(join(dir, 'neg.yaml')),
      /neg\.yaml: epochs must be a positive integer, got -1/,
    );
    await writeFile(join(dir, 'pool.yaml'), 'head-pooling: max\n');
    await assert.rejects(
      readExperimentFile(join(dir, 'pool.yaml')),
      /unknown headPooling "max" \(valid: flatten, avg\)/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  // The convnet's four conv/pool stages need 46 px; MobileNetV2 takes 32.
  assert.throws(
    () => resolveConfig({ strategy: 'scratch', flags: { ...base, inputSize: 40 } }),
    (err: Error) => {
      assert.match(err.message, /inputSize 40 is too small for the book's convnet: it needs at least 46/);
      assert.equal(exitCodeOf(err), 2);
      return true;
    },
  );
  assert.equal(resolveConfig({ strategy: 'extract', flags: { ...base, inputSize: 40 } }).inputSize, 40);
  // Every field has a declared expectation and help; every flag maps back to its field.
  for (const k of FIELD_NAMES) {
    assert.ok(FIELDS[k].help && FIELDS[k].expected, `${k} lacks help or expected`);
    if (FIELDS[k].flag) assert.match(flagName(k), /^--[a-z][a-z0-9-]*$/);
  }
  assert.deepEqual(
    experimentFileKeys().map((k) => k.key),
    FIELD_NAMES.filter((k) => k !== 'strategy'),
  );
});
