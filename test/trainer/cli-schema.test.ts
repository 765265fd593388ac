// The trainer's flags, --help and the documented experiment-file keys all come from the one config schema.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FIELD_NAMES, FIELDS, experimentFileTable, flagName } from '@catdog/training';
import { projectRoot } from '../helpers/fixtures.js';
import { runTrainer } from './helpers.js';

test('--help lists exactly the schema flags that are not test aids', () => {
  const r = runTrainer(['finetune', '--help']);
  assert.equal(r.code, 0, r.stderr);
  const shown = new Set([...r.stdout.matchAll(/^\s+(--[a-z0-9-]+)/gm)].map((m) => m[1]));
  const expected = new Set(['--config']); // and -h, --help
  for (const k of FIELD_NAMES) {
    const flag = FIELDS[k].flag;
    if (!flag || flag.hidden) continue;
    expected.add(flagName(k));
    if (flag.negatable) expected.add(`--no-${flagName(k).slice(2)}`);
  }
  assert.deepEqual([...shown].sort(), [...expected].sort());
  assert.doesNotMatch(r.stdout, /debug/);
  // Hidden test aids still parse and are checked against the schema.
  const bad = runTrainer(['scratch', '--data', 'd', '--out', 'o', '--debug-nan-at-step', '0']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--debug-nan-at-step <n>' argument '0' is invalid\. must be a positive integer/);
});

test('usage errors exit 2 before the backend starts: bad values, input sizes the convnet cannot take', () => {
  const small = runTrainer(['scratch', '--data', 'd', '--out', 'o', '--input-size', '40']);
  assert.equal(small.code, 2, small.stderr);
  assert.match(small.stderr, /^error: inputSize 40 is too small for the book's convnet: it needs at least 46/m);
  assert.doesNotMatch(small.stderr, /backend:/);
  const pooling = runTrainer(['extract', '--data', 'd', '--out', 'o', '--head-pooling', 'max']);
  assert.equal(pooling.code, 2);
});

test("docs/ARCHITECTURE.md documents exactly the schema's experiment-file keys", async () => {
  const doc = await readFile(join(projectRoot, 'docs', 'ARCHITECTURE.md'), 'utf8');
  const block = doc.match(/<!-- experiment-file-keys:start -->\n([\s\S]*?)\n<!-- experiment-file-keys:end -->/);
  assert.ok(block, 'the experiment-file table markers are missing');
  assert.equal(
    block[1],
    experimentFileTable(),
    'regenerate the table with experimentFileTable() from @catdog/training',
  );
});

test('--steps-per-epoch auto and --validation-steps auto reach the run as null (one pass), not as a usage error', () => {
  // Commander stores a parser's null as ''; the run must still see null. A missing --data is the next error.
  const r = runTrainer([
    'scratch',
    '--data',
    '/nonexistent/catdog-data',
    '--out',
    '/nonexistent/catdog-out',
    '--steps-per-epoch',
    'auto',
    '--validation-steps',
    'auto',
  ]);
  assert.doesNotMatch(r.stderr, /stepsPerEpoch|validationSteps|steps-per-epoch|validation-steps/);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /catdog-data/);
});
