// docs/errors.md is the catalogue of user-facing errors: every section names the tests that pin its entries, and
// every test file it names exists (a renamed or deleted test leaves the catalogue unverified, so it fails here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../helpers/fixtures.js';

const doc = readFileSync(join(projectRoot, 'docs', 'errors.md'), 'utf8');

test('every section of docs/errors.md names its tests, and each named test file exists', () => {
  const sections = doc.split(/^## /m).slice(1);
  assert.ok(sections.length >= 5, 'sections: storage, prep, augment, readers, trainer');
  for (const s of sections) {
    const title = s.split('\n')[0];
    // "Test:" / "Tests:" in this section or its subsections.
    const named = [...s.matchAll(/`(test\/[\w/.-]+\.test\.ts)`/g)].map((m) => m[1]);
    assert.ok(named.length > 0, `section "${title}" names no test`);
    for (const file of named) assert.ok(existsSync(join(projectRoot, file)), `${title}: ${file} does not exist`);
  }
  assert.match(doc, /^## augment /m, 'the augment CLI and service have their section');
});

test('exit codes: the table lists 0, 1, 2 and the same meaning is used throughout', () => {
  for (const [code, meaning] of [
    ['0', 'done'],
    ['1', 'failure'],
    ['2', 'usage'],
  ])
    assert.match(doc, new RegExp(`^\\| ${code} \\| ${meaning}`, 'm'));
  // Every table row's exit column holds 0, 1, 2, 130, a signal or a dash.
  const rows = doc.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| ---'));
  for (const row of rows) {
    const cells = row.split(' | ');
    const exitCell = cells.find((c) =>
      /^(0|1|2|130|137)( \(|$)|^\(signal\)$|^0 \(1 if none\)$|^1 \(client\)$|^0 \(skipped\)/.test(c.trim()),
    );
    if (/\| (cause|exit|command) \|/.test(row) || /^\| (0|1|2|130) \|/.test(row)) continue;
    assert.ok(exitCell, `no exit code in: ${row.slice(0, 120)}`);
  }
});
