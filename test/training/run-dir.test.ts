// The run directory's format has one owner (training's run-dir.ts) and docs/ARCHITECTURE.md lists exactly its fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runDirFieldsDoc } from '@catdog/training';
import { projectRoot } from '../helpers/fixtures.js';

test("docs/ARCHITECTURE.md lists exactly the run directory schemas' fields", async () => {
  const doc = await readFile(join(projectRoot, 'docs', 'ARCHITECTURE.md'), 'utf8');
  const block = doc.match(/<!-- run-dir-fields:start -->\n([\s\S]*?)\n<!-- run-dir-fields:end -->/);
  assert.ok(block, 'the run-dir field list markers are missing');
  assert.equal(block[1], runDirFieldsDoc(), 'regenerate the list with runDirFieldsDoc() from @catdog/training');
});
