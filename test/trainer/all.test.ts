// trainer all (issue 14): the strategies one after another into <out>/<strategy>, then the comparison report with
// the book's accuracies; a run killed midway is resumed by the next invocation, completed runs are not run again
// (real CLI subprocesses on the tiny prepped dataset; the slower strategies are skipped to keep it short).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RunDir } from '@catdog/training';
import { runTrainer, runTrainerAsync, tinyDatasetForFile } from './helpers.js';

const tiny = tinyDatasetForFile();

// scratch (24 ci-smoke epochs), augmented and finetune are left out to keep the test short.
const SKIP = ['--skip', 'scratch,augmented,finetune'];
const RAN = ['extract', 'extract-augmented'];

test('all: a killed run resumes on the next invocation, every run lands in <out>/<strategy>, the report has a row per run and the book beside it; a rerun trains nothing', async () => {
  const out = join(tiny.root, 'runs');
  const args = ['all', '--data', tiny.data, '--out', out, '--preset', 'ci-smoke', '--backend', 'wasm', ...SKIP];

  // extract's ci-smoke runs 4 steps an epoch: killed while writing the checkpoint of epoch 2.
  const killed = await runTrainerAsync(args, { CATDOG_TEST_CHECKPOINT_KILL_AT_STEP: '8' });
  assert.equal(killed.code, null, `expected the kill, got exit ${killed.code}: ${killed.stderr}`);
  assert.equal((await RunDir.open(join(out, 'extract')).readCheckpointState())?.epoch, 1);
  assert.ok(!existsSync(join(out, 'extract', 'metrics.json')));
  assert.ok(!existsSync(join(out, 'extract-augmented')), 'extract-augmented started before extract finished');

  const r = await runTrainerAsync(args);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /all: extract: resuming the interrupted run in .*extract/);
  assert.match(r.stderr, /resuming .*extract after epoch 1/);
  assert.match(r.stderr, /all: extract-augmented: training into .*extract-augmented/);
  for (const s of RAN) {
    const m = JSON.parse(await readFile(join(out, s, 'metrics.json'), 'utf8'));
    assert.equal(m.test.n, 20, s);
    assert.equal(JSON.parse(await readFile(join(out, s, 'config.json'), 'utf8')).strategy, s);
  }
  assert.equal(JSON.parse(await readFile(join(out, 'extract', 'history.json'), 'utf8')).epoch.length, 4);
  for (const s of ['scratch', 'augmented', 'finetune']) assert.ok(!existsSync(join(out, s)), `${s} ran`);

  const html = await readFile(join(out, 'report.html'), 'utf8');
  const rows = [...html.matchAll(/<tr[^>]* data-run="([^"]+)">(.*?)<\/tr>/g)].map((m) => [m[1], m[2]] as const);
  assert.deepEqual(rows.map(([name]) => name).sort(), RAN);
  const cells = (row: string) => [...row.matchAll(/<td[^>]*>(.*?)<\/td>/g)].map((m) => m[1]);
  assert.ok(cells(rows.find(([n]) => n === 'extract')![1]).includes('~90%'), "extract's row shows the book's ~90%");
  assert.ok(
    cells(rows.find(([n]) => n === 'extract-augmented')![1]).includes('~96%'),
    "extract-augmented's row shows the book's ~96%",
  );
  // stdout: one line per strategy, then where the report is.
  assert.match(r.stdout, /^scratch +skipped +— +~70%/m);
  assert.match(r.stdout, /^extract +resumed +\d+\.\d% +~90% /m);
  assert.match(r.stdout, /^extract-augmented +trained +\d+\.\d% +~96% /m);
  assert.match(r.stdout, /wrote .*report\.html \(2 runs\)/);

  // Again: both runs are complete, nothing trains, the runs' files stay as they were; the report is rewritten.
  const before = await Promise.all(RAN.map((s) => stat(join(out, s, 'metrics.json'))));
  const again = await runTrainerAsync(args);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /all: extract: .* already complete/);
  assert.match(again.stderr, /all: extract-augmented: .* already complete/);
  assert.doesNotMatch(again.stderr, /training into|resuming|epoch 1\//);
  assert.match(again.stdout, /^extract +already complete +\d+\.\d%/m);
  const after = await Promise.all(RAN.map((s) => stat(join(out, s, 'metrics.json'))));
  assert.deepEqual(
    after.map((s) => s.mtimeMs),
    before.map((s) => s.mtimeMs),
  );
});

test('all: an unknown --skip name is a usage error, before anything trains', async () => {
  const bad = runTrainer(['all', '--data', tiny.data, '--out', join(tiny.root, 'bad'), '--skip', 'scratch,transfer']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--skip: unknown strategy "transfer"/);
  assert.ok(!existsSync(join(tiny.root, 'bad')));
});
