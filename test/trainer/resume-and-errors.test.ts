// Checkpoints and --resume after a SIGKILL, the NaN stop, and clear errors for bad input (real CLI subprocesses).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RunDir } from '@catdog/training';
import { lastLine, runTrainer, spawnTrainer, tinyDataset, CONTRACT } from './helpers.js';

let root = '';
let data = '';

before(async () => {
  ({ root, data } = await tinyDataset());
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

test('a run killed with SIGKILL after epoch k resumes to the same number of epochs with its history intact', async () => {
  const out = join(root, 'killed');
  const child = spawnTrainer([
    'scratch',
    '--data',
    data,
    '--out',
    out,
    '--preset',
    'ci-smoke',
    '--epochs',
    '6',
    '--keep-best',
    '--debug-epoch-delay-ms',
    '1500',
  ]);
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    // Killed by the run's own progress, not a timer: once the checkpoint of epoch 3 and its history.json are on
    // disk (written after the epoch's log line, before the run's pause), polled every 20 ms from that line on.
    let watching = false;
    const watch = async () => {
      while (child.exitCode === null && !child.killed) {
        const state = await RunDir.open(out)
          .readCheckpointState()
          .catch(() => null);
        const history = await readJson(join(out, 'history.json')).catch(() => null);
        if (state?.epoch === 3 && history?.epoch.length === 3) {
          child.kill('SIGKILL');
          return;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/epoch 3\/6 - /.test(stderr) && !watching) {
        watching = true;
        watch().catch(reject);
      }
    });
    child.on('exit', (code, signal) =>
      signal === 'SIGKILL' ? resolve() : reject(new Error(`exited ${code} before the kill: ${stderr}`)),
    );
  });
  const state = (await RunDir.open(out).readCheckpointState())!;
  assert.equal(state.epoch, 3);
  const before = await readJson(join(out, 'history.json'));
  assert.deepEqual(before.epoch, [1, 2, 3]);
  assert.ok(!existsSync(join(out, 'model')), 'no final model before the run finished');

  // Without --resume the run directory is protected.
  const clash = runTrainer(['scratch', '--data', data, '--out', out, '--preset', 'ci-smoke']);
  assert.equal(clash.code, 1);
  assert.match(clash.stderr, /already holds a run; pass --resume/);

  // A different dataset cannot continue this run; without --data the run's own dataset is used.
  const other = join(root, 'other');
  await cp(data, other, { recursive: true });
  const m0 = await readJson(join(data, 'manifest.json'));
  await writeFile(join(other, 'manifest.json'), JSON.stringify({ ...m0, planId: 'another-plan' }));
  const wrong = runTrainer(['scratch', '--out', out, '--resume', '--data', other]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /is not the dataset this run was trained on/);

  const r = runTrainer(['scratch', '--out', out, '--resume']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /resuming .* after epoch 3/);
  assert.doesNotMatch(r.stderr, /epoch [123]\/6 - /, 'finished epochs are not trained again');
  const h = await readJson(join(out, 'history.json'));
  assert.deepEqual(h.epoch, [1, 2, 3, 4, 5, 6], 'same total epochs as asked for at the start');
  for (const k of ['loss', 'acc', 'val_loss', 'val_acc'] as const)
    assert.deepEqual(h[k].slice(0, 3), before[k], `${k} of epochs 1-3 kept`);
  const cfg = await readJson(join(out, 'config.json'));
  assert.equal(cfg.epochs, 6);
  assert.equal(cfg.keepBest, true);
  const m = await readJson(join(out, 'metrics.json'));
  assert.equal(m.epochs, 6);
  assert.match(lastLine(r.stdout), CONTRACT);
  const best = await RunDir.open(out).checkpointDir('best');
  assert.ok(best && existsSync(join(out, best, 'weights.bin')), 'keep-best weights saved');

  const nothing = runTrainer(['scratch', '--data', data, '--out', join(root, 'never-ran'), '--resume']);
  assert.equal(nothing.code, 1);
  assert.match(nothing.stderr, /nothing to resume/);
});

test('NaN loss: training stops, says so, keeps the last good checkpoint, exits 1', async () => {
  const out = join(root, 'nan');
  // ci-smoke scratch: 40 images, batch 8 → 5 steps per epoch; step 12 is in epoch 3.
  // Settings from an experiment file (YAML), the preset from a flag, and a flag overriding the file.
  const experiment = join(root, 'nan.yaml');
  await writeFile(experiment, 'epochs: 5\ndebug-nan-at-step: 12\nlearning_rate: 0.002\n');
  const r = runTrainer([
    'scratch',
    '--data',
    data,
    '--out',
    out,
    '--preset',
    'ci-smoke',
    '--config',
    experiment,
    '--learning-rate',
    '0.001',
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /error: loss became NaN at epoch 3, step 2: training stopped; the last good checkpoint \(epoch 2\) is kept/,
  );
  assert.match(r.stderr, /Lower --learning-rate/);
  assert.equal((await RunDir.open(out).readCheckpointState())?.epoch, 2);
  assert.deepEqual((await readJson(join(out, 'history.json'))).epoch, [1, 2]);
  assert.ok(!existsSync(join(out, 'model')), 'no model saved from NaN weights');
  assert.ok(!existsSync(join(out, 'metrics.json')));
  const cfg = await readJson(join(out, 'config.json'));
  assert.deepEqual(
    [cfg.epochs, cfg.learningRate, cfg.batchSize, cfg.inputSize, cfg.preset],
    [5, 0.001, 8, 64, 'ci-smoke'],
  );
});

test('bad input: clear messages and exit codes', async () => {
  const empty = join(root, 'empty');
  await mkdir(empty, { recursive: true });
  let r = runTrainer(['scratch', '--data', empty, '--out', join(root, 'x1')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: .*no manifest\.json/m);

  // Any number of classes trains (trainer/classes.test.ts), but one is not a classification.
  const oneClass = join(root, 'one-class');
  await cp(data, oneClass, { recursive: true });
  const manifest = await readJson(join(data, 'manifest.json'));
  await writeFile(join(oneClass, 'manifest.json'), JSON.stringify({ ...manifest, classes: ['cat'] }));
  r = runTrainer(['scratch', '--data', oneClass, '--out', join(root, 'x2')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /has 1 class \(cat\); a classifier needs at least two/);

  const noTest = join(root, 'notest');
  await cp(data, noTest, { recursive: true });
  await writeFile(
    join(noTest, 'manifest.json'),
    JSON.stringify({ ...manifest, splits: { ...manifest.splits, test: { count: 0, classCounts: {}, shards: [] } } }),
  );
  r = runTrainer(['scratch', '--data', noTest, '--out', join(root, 'x3')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /split "test" is missing or empty/);

  // A bad flag value is a usage error (exit 2); the same value in an experiment file is a bad config (exit 1).
  r = runTrainer(['finetune', '--data', data, '--out', join(root, 'x4'), '--base', 'resnet50']);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /--base <name>' argument 'resnet50' is invalid\. Allowed choices are vgg16, mobilenet_v2, mobilenet_v2_0\.35/,
  );
  await writeFile(join(root, 'resnet.yaml'), 'base: resnet50\n');
  r = runTrainer(['finetune', '--data', data, '--out', join(root, 'x4'), '--config', join(root, 'resnet.yaml')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /resnet\.yaml: unknown base "resnet50" \(valid: vgg16, mobilenet_v2, mobilenet_v2_0\.35\)/);

  r = runTrainer(['transfer', '--data', data]);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /unknown strategy "transfer" \(valid: scratch, augmented, extract, extract-augmented, finetune, all, evaluate, predict, export, explain\)/,
  );

  r = runTrainer(['evaluate', '--model', join(root, 'no-such-run'), '--data', data]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--model .*no-such-run: not found/);

  r = runTrainer(['scratch', '--data', data, '--out', join(root, 'x5'), '--config', join(root, 'missing.yaml')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /experiment file .*missing\.yaml: not found/);

  // Fails after the backend is up, while building the model: still nothing written.
  r = runTrainer(['extract', '--data', data, '--out', join(root, 'x6'), '--weights', join(root, 'no-such-weights')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: .*no-such-weights/m);
  for (const x of ['x1', 'x2', 'x3', 'x4', 'x5', 'x6'])
    assert.ok(!existsSync(join(root, x)), `a run that failed to start left ${x}/ behind`);
});
