// kill -9 at seeded random points of prep split (during encoding, shard uploads, records and finalization):
// every rerun ends byte-identical to an uninterrupted run, with no temp files left and verify passing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { existsSync, mkdirSync, watch } from 'node:fs';
import { join } from 'node:path';
import { TEMP_MARKER } from '@catdog/storage';
import { seededRandom, type Manifest } from '@catdog/dataset';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = CLI.prep;
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
    const child = spawn(process.execPath, [main, ...args], { cwd: projectRoot });
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

/**
 * Runs split and kills it -9 the moment `trigger` first matches a file (path relative to --out) that the run
 * creates: the kill is placed by the run's own progress, whatever the machine's speed. inotify (fs.watch) sees the
 * file as it is created; the signal lands within a millisecond or so of it.
 */
function runKilledAt(args: string[], out: string, trigger: (path: string) => boolean): Promise<Run & { at?: string }> {
  return new Promise((resolve, reject) => {
    mkdirSync(out, { recursive: true });
    const child = spawn(process.execPath, [main, ...args], { cwd: projectRoot });
    let at: string | undefined;
    const watcher = watch(out, { recursive: true }, (_event, name) => {
      if (at === undefined && name && trigger(name.toString())) {
        at = name.toString();
        child.kill('SIGKILL');
      }
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.resume();
    child.on('error', reject);
    child.on('close', (code, signal) => {
      watcher.close();
      resolve({ code, signal, stderr, workMs: 0, at });
    });
  });
}

test('kill -9 placed by progress: mid shard write, just after a shard is renamed into place, while the part file, report and manifest are written; each rerun gives the identical dataset', async (t) => {
  const reference = join(work, 'reference-progress');
  const clean = await run(['split', '--source', src, '--out', reference, ...ARGS]);
  assert.equal(clean.code, 0, clean.stderr);
  const expected = await shardHashes(reference);
  const isTemp = (p: string) => p.includes(TEMP_MARKER);
  const points: [string, (p: string) => boolean][] = [
    ['a shard half written (its temp file appears)', (p) => /\.tar/.test(p) && isTemp(p)],
    [
      'the third shard renamed into place',
      (p) => /^(train|validation|test)\/\w+-00000[2-9]\.tar$/.test(p) || /^test\/test-000001\.tar$/.test(p),
    ],
    ['finalization: the part file being written', (p) => p.startsWith('_parts/part-')],
    ['finalization: prep-report.json being written, the manifest next', (p) => p.startsWith('prep-report.json')],
    ['finalization: manifest.json being written', (p) => p.startsWith('manifest.json') && isTemp(p)],
  ];
  let duringFinalization = 0;
  let lastOut = '';
  for (const [label, trigger] of points) {
    // The manifest's temp file lives for a write and a rename: a loaded machine's file events can come too late for
    // it, the run finishing first. Up to three tries (each in a fresh folder) for the kill to land.
    let out = '';
    let killed: Awaited<ReturnType<typeof runKilledAt>> | undefined;
    for (let attempt = 0; attempt < 3 && !killed?.at; attempt++) {
      out = join(work, `progress-${points.findIndex(([l]) => l === label)}-${attempt}`);
      killed = await runKilledAt(['split', '--source', src, '--out', out, ...ARGS], out, trigger);
    }
    if (!killed) throw new Error('unreachable');
    lastOut = out;
    const manifest = existsSync(join(out, 'manifest.json'));
    t.diagnostic(
      `${label}: ${killed.signal ?? `exited ${killed.code}`} at ${killed.at ?? '(never)'}, manifest ${manifest ? 'present' : 'absent'}`,
    );
    assert.ok(killed.at, `${label}: the run never reached the point`);
    assert.equal(killed.signal, 'SIGKILL', `${label}: ${killed.stderr}`);
    // Killed at any of these points, a dataset is either not published or published whole.
    if (manifest) assert.equal(await shardHashes(out), expected, label);
    if (label.startsWith('finalization') && !manifest && existsSync(join(out, '_parts'))) duringFinalization++;
    const rerun = await run(['split', '--source', src, '--out', out, ...ARGS]);
    assert.equal(rerun.code, 0, `${label}: ${rerun.stderr}`);
    assert.equal(await shardHashes(out), expected, label);
    const files = (await readdir(out, { recursive: true })) as string[];
    assert.deepEqual(files.filter(isTemp), [], `${label}: litter`);
    assert.deepEqual(
      files.filter((f) => f.endsWith('.tar')).sort(),
      ((await readdir(reference, { recursive: true })) as string[]).filter((f) => f.endsWith('.tar')).sort(),
      label,
    );
    for (const f of files.filter((f) => f.endsWith('.tar')))
      assert.ok((await readFile(join(out, f))).equals(await readFile(join(reference, f))), `${label}: ${f}`);
  }
  // A kill is sent when the watched file appears, and prep may have moved on by the time it lands (on a loaded
  // machine, past the manifest); at least one of the three finalization kills must land before it.
  assert.ok(duringFinalization >= 1, 'no kill landed during finalization before the manifest');
  const verify = await run(['verify', '--data', lastOut]);
  assert.equal(verify.code, 0, verify.stderr);
});
