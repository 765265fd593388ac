// Ctrl-C / SIGTERM during prep split (sent once the plan is made, by the run's own progress line): a clean stop
// (exit 130, no manifest, no temp files), and a rerun finishes the dataset; a second signal exits at once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TEMP_MARKER } from '@catdog/storage';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = CLI.prep;
// Resizing makes every image real work, so the signal lands inside the run rather than after it.
const ARGS = [
  '--train',
  '10',
  '--validation',
  '5',
  '--test',
  '5',
  '--shard-samples',
  '4',
  '--concurrency',
  '1',
  '--resize',
  '96x96',
];
let src: string;
let work: string;

before(async () => {
  src = await flatSource(22);
  work = await tempDir('prep-signals');
});
after(async () => {
  await rm(src, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

/** Runs prep; once its plan line appears, sends `signals` (one after the other). */
function run(args: string[], signals: NodeJS.Signals[] = []): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], { cwd: projectRoot });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!sent && signals.length && /images in \d+ shards/.test(stderr)) {
        sent = true;
        for (const s of signals) child.kill(s);
      }
    });
    child.stdout.resume();
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const litter = async (out: string) =>
  existsSync(out) ? ((await readdir(out, { recursive: true })) as string[]).filter((n) => n.includes(TEMP_MARKER)) : [];

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} stops prep split cleanly: exit 130, no manifest, no temp files; a rerun finishes`, async () => {
    const out = join(work, signal);
    const stopped = await run(['split', '--source', src, '--out', out, ...ARGS], [signal]);
    assert.equal(stopped.code, 130, stopped.stderr);
    assert.match(stopped.stderr, new RegExp(`${signal}: stopping after the current image`));
    assert.match(stopped.stderr, /interrupted: no manifest written; rerun the same command to resume/);
    assert.ok(!existsSync(join(out, 'manifest.json')), 'no manifest after an interrupted run');
    assert.deepEqual(await litter(out), []);
    const rerun = await run(['split', '--source', src, '--out', out, ...ARGS]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.ok(existsSync(join(out, 'manifest.json')));
  });
}

test('a second signal exits at once with 130', async () => {
  const out = join(work, 'twice');
  const r = await run(['split', '--source', src, '--out', out, ...ARGS], ['SIGINT', 'SIGINT']);
  assert.equal(r.code, 130, r.stderr);
  assert.ok(!existsSync(join(out, 'manifest.json')));
});
