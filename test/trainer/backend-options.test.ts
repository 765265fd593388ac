// The trainer's --backend / --threads options (fields of the config schema, flags through commander).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLI } from '../helpers/fixtures.js';

test('the trainer exits 2 (usage) on a bad --threads, --backend or --batch-digests, naming the option', async () => {
  const { spawnSync } = await import('node:child_process');
  const root = new URL('../..', import.meta.url);
  for (const [flag, value] of [
    ['--threads', '0'],
    ['--backend', 'gpu'],
    ['--batch-digests', 's3://bucket/digests.jsonl'], // appended to batch by batch: local files only
  ]) {
    const r = spawnSync(process.execPath, [CLI.trainer, 'scratch', '--data', 'x', '--out', 'y', flag!, value!], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^error: option '${flag}`, 'm'));
  }
});
