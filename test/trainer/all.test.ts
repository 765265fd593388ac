// trainer all (issue 14): the strategies one after another into <out>/<strategy>, then the comparison report with
// the book's accuracies; a run killed midway is resumed by the next invocation, completed runs are not run again
// (real CLI subprocesses on the tiny prepped dataset; the slower strategies are skipped to keep it short).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RunDir } from '@catdog/training';
import { runTrainer, runTrainerAsync, tinyDataset } from './helpers.js';

let root = '';
let data = '';

before(async () => {
  ({ root, data } = await tinyDataset());
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const SKIP = ['--skip', 'augmented,extract-augmented,finetune'];

test('all: a killed run resumes on the next invocation, every run lands in <out>/<strategy>, the report has a row per run and the book beside it; a rerun trains nothing', async () => {
  const out = join(root, 'runs');
  const args = ['all', '--data', data, '--out', out, '--preset', 'ci-smoke', '--backend', 'wasm', ...SKIP];

  // scratch's ci-smoke runs 5 steps an epoch: killed while writing the checkpoint of epoch 2.
  const killed = await runTrainerAsync(args, { CATDOG_TEST_CHECKPOINT_KILL_AT_STEP: '10' });
  assert.equal(killed.code, null, `expected the kill, got exit ${killed.code}: ${killed.stderr}`);
  assert.equal((await RunDir.open(join(out, 'scratch')).readCheckpointState())?.epoch, 1);
  assert.ok(!existsSync(join(out, 'scratch', 'metrics.json')));
  assert.ok(!existsSync(join(out, 'extract')), 'extract started before scratch finished');

  const r = runTrainer(args);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /all: scratch: resuming the interrupted run in .*scratch/);
  assert.match(r.stderr, /resuming .*scratch after epoch 1/);
  assert.match(r.stderr, /all: extract: training into .*extract/);
  for (const s of ['scratch', 'extract']) {
    const m = JSON.parse(await readFile(join(out, s, 'metrics.json'), 'utf8'));
    assert.equal(m.test.n, 20, s);
    assert.equal(JSON.parse(await readFile(join(out, s, 'config.json'), 'utf8')).strategy, s);
  }
  assert.deepEqual(JSON.parse(await readFile(join(out, 'scratch', 'history.json'), 'utf8')).epoch.length, 24);
  for (const s of ['augmented', 'extract-augmented', 'finetune']) assert.ok(!existsSync(join(out, s)), `${s} ran`);

  const html = await readFile(join(out, 'report.html'), 'utf8');
  const rows = [...html.matchAll(/<tr[^>]* data-run="([^"]+)">(.*?)<\/tr>/g)].map((m) => [m[1], m[2]] as const);
  assert.deepEqual(rows.map(([name]) => name).sort(), ['extract', 'scratch']);
  const cells = (row: string) => [...row.matchAll(/<td[^>]*>(.*?)<\/td>/g)].map((m) => m[1]);
  assert.ok(cells(rows.find(([n]) => n === 'scratch')![1]).includes('~70%'), "scratch's row shows the book's ~70%");
  assert.ok(cells(rows.find(([n]) => n === 'extract')![1]).includes('~90%'), "extract's row shows the book's ~90%");
  // stdout: one line per strategy, then where the report is.
  assert.match(r.stdout, /^scratch +resumed +\d+\.\d% +~70% /m);
  assert.match(r.stdout, /^extract +trained +\d+\.\d% +~90% /m);
  assert.match(r.stdout, /^finetune +skipped +— +~97%/m);
  assert.match(r.stdout, /wrote .*report\.html \(2 runs\)/);

  // Again: both runs are complete, nothing trains, the runs' files stay as they were; the report is rewritten.
  const modelTimes = await Promise.all(['scratch', 'extract'].map((s) => stat(join(out, s, 'metrics.json'))));
  const again = runTrainer(args);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /all: scratch: .* already complete/);
  assert.match(again.stderr, /all: extract: .* already complete/);
  assert.doesNotMatch(again.stderr, /training into|resuming|epoch 1\//);
  assert.match(again.stdout, /^scratch +already complete +\d+\.\d%/m);
  const after = await Promise.all(['scratch', 'extract'].map((s) => stat(join(out, s, 'metrics.json'))));
  assert.deepEqual(
    after.map((s) => s.mtimeMs),
    modelTimes.map((s) => s.mtimeMs),
  );
});

test('all: an unknown --skip name is a usage error, before anything trains', async () => {
  const bad = runTrainer(['all', '--data', data, '--out', join(root, 'bad'), '--skip', 'scratch,transfer']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--skip: unknown strategy "transfer"/);
  assert.ok(!existsSync(join(root, 'bad')));
});
