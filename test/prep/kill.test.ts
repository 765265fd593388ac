// kill -9 at seeded random points of prep split (during encoding, shard uploads, records and finalization):
// every rerun ends byte-identical to an uninterrupted run, with no temp files left and verify passing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TEMP_MARKER } from '@catdog/storage';
import { seededRandom, type Manifest } from '@catdog/dataset';
import { projectRoot } from '../helpers/fixtures.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = join(projectRoot, 'apps', 'prep', 'src', 'main.ts');
// Resizing makes every image real work, so the kill lands inside the run rather than after it.
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
  '2',
  '--resize',
  '96x96',
];
let src: string;
let work: string;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Milliseconds from the plan line to exit. */
  workMs: number;
}

function run(args: string[], killAfterStartMs?: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], { cwd: projectRoot });
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    let planned = 0;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!planned && /images in \d+ shards/.test(stderr)) planned = Date.now();
      // Count from the first progress line (the plan is made), not from process start (tsx startup varies).
      if (killAfterStartMs !== undefined && !timer && /images in \d+ shards/.test(stderr)) {
        timer = setTimeout(() => child.kill('SIGKILL'), killAfterStartMs);
      }
    });
    child.stdout.resume();
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr, workMs: planned ? Date.now() - planned : 0 });
    });
  });
}

async function shardHashes(out: string): Promise<string> {
  const m = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Manifest;
  return JSON.stringify(m.splits);
}

before(async () => {
  src = await flatSource(22);
  work = await tempDir('prep-kill');
});
after(async () => {
  await rm(src, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

test('kill -9 at random points (3 seeds), then rerun: same shards and manifest as an uninterrupted run, no litter', async (t) => {
  t.diagnostic("kill points are seeded fractions of the uninterrupted run's duration");
  const reference = join(work, 'reference');
  const clean = await run(['split', '--source', src, '--out', reference, ...ARGS]);
  assert.equal(clean.code, 0, clean.stderr);
  const expected = await shardHashes(reference);
  assert.ok(clean.workMs > 0);
  let interrupted = 0;
  for (const seed of [11, 12, 13]) {
    const out = join(work, `killed-${seed}`);
    // A point inside the work an uninterrupted run does (encoding, uploads, records, part file, manifest).
    const delay = Math.floor(seededRandom(seed)() * clean.workMs);
    const killed = await run(['split', '--source', src, '--out', out, ...ARGS], delay);
    t.diagnostic(
      `seed ${seed}: killed ${delay} ms after planning: ${killed.signal ?? `exited ${killed.code}`}, manifest ${existsSync(join(out, 'manifest.json')) ? 'present' : 'absent'}`,
    );
    if (killed.signal === 'SIGKILL') interrupted++;
    if (killed.signal === 'SIGKILL')
      assert.ok(!existsSync(join(out, 'manifest.json')) || (await shardHashes(out)) === expected);
    const rerun = await run(['split', '--source', src, '--out', out, ...ARGS]);
    assert.equal(rerun.code, 0, `seed ${seed}: ${rerun.stderr}`);
    assert.equal(await shardHashes(out), expected, `seed ${seed}`);
    const litter = ((await readdir(out, { recursive: true })) as string[]).filter((n) => n.includes(TEMP_MARKER));
    assert.deepEqual(litter, [], `seed ${seed}`);
    const verify = await run(['verify', '--data', out]);
    assert.equal(verify.code, 0, `seed ${seed}: ${verify.stderr}`);
  }
  assert.ok(interrupted >= 1, `none of the 3 runs was killed before it finished`);
});
