// Exact resume at any step (issue 12): runs killed with SIGKILL at seeded random steps (one of them inside a
// checkpoint write, after its files and before the pointer switch), resumed with --resume, end with the history of
// the uninterrupted run, locally and with the run directory on S3 (real s3rver, real CLI subprocesses). The
// schedule is one where epochs are not passes: 3 steps of 10 over 40 training images, 3 validation steps of 10
// over 20. As a user runs it: the default thread count (every core: 2 on the CI machine) and autotuned kernel
// plans. The wasm kernels split work between threads by the thread count and add per-thread partial sums in a
// fixed order, and a layer's plan, once tuned and cached, is the one every later process runs
// (packages/backend/README.md), so a multi-threaded run is bit-reproducible and the resumed history equals the
// uninterrupted one. (Before that, the filter gradient's threads took images as they became free, and two
// uninterrupted runs with 2 threads differed even with fixed plans: loss by 4e-8 in epoch 1, 2e-4 by epoch 4.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset } from '@catdog/dataset';
import { openStorage } from '@catdog/storage';
import { RunDir, type History } from '@catdog/training';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { lastLine, runTrainerAsync, TRAINER, CONTRACT } from './helpers.js';

// The trainers here run at the default thread count, all cores (tools/run-tests.mjs asks other tests for one):
// exact resume must hold where the wasm kernels split their work between threads.
delete process.env.CATDOG_THREADS;

const DATA = 's3://resume-bucket/data';
const STEPS = 12; // 4 epochs × 3 steps
/** Global steps with a checkpoint (every 2 steps and at epoch ends), the last one excluded. */
const CHECKPOINT_STEPS = [2, 3, 4, 6, 8, 9, 10];
const MID_EPOCH = [2, 4, 8, 10];

let s3: LoopbackS3;
let root = '';
let reference: History;
let referenceLine = '';

const args = (out: string) => [
  'augmented',
  '--data',
  DATA,
  '--out',
  out,
  '--preset',
  'ci-smoke',
  '--steps-per-epoch',
  '3',
  '--validation-steps',
  '3',
  '--checkpoint-every',
  '2',
];
const resumeArgs = (out: string) => ['augmented', '--out', out, '--resume'];

/** A seeded generator (mulberry32): the kill steps are random, and the same on every run of the test. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pick = <T>(r: () => number, xs: T[]): T => xs[Math.floor(r() * xs.length)];

/** Runs the trainer until its own progress says `until` (then SIGKILL), or until it dies by itself; never by a timer. */
function runUntil(
  cliArgs: string[],
  env: Record<string, string | undefined>,
  until?: RegExp,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TRAINER, ...cliArgs], {
      cwd: projectRoot,
      env: { ...process.env, INIT_CWD: projectRoot, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (until && until.test(stderr) && child.exitCode === null && !child.killed) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
}

function assertSameHistory(h: History, label: string): void {
  assert.deepEqual(h.epoch, [1, 2, 3, 4], `${label}: every epoch exactly once`);
  assert.deepEqual(h.phase, reference.phase);
  for (const k of ['loss', 'acc', 'val_loss', 'val_acc'] as const) {
    h[k].forEach((v, i) =>
      assert.ok(
        Math.abs((v as number) - (reference[k][i] as number)) <= 1e-6,
        `${label}: ${k}[${i}] ${v} vs uninterrupted ${reference[k][i]}`,
      ),
    );
  }
}

before(async () => {
  s3 = await startLoopbackS3(['resume-bucket']);
  root = await mkdtemp(join(tmpdir(), 'catdog-exact-resume-'));
  const src = join(root, 'src');
  await mkdir(src);
  await Promise.all(
    Array.from({ length: 35 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`])
      .flat()
      .map((f) => copyFile(join(kaggleTrainDir, f), join(src, f))),
  );
  await prepareDataset({
    source: src,
    out: DATA,
    train: 20,
    validation: 10,
    test: 5,
    resize: { width: 64, height: 64 },
  });
  const out = join(root, 'uninterrupted');
  const r = await runUntil(args(out), {});
  assert.equal(r.code, 0, r.stderr);
  const threads = availableParallelism();
  assert.match(r.stderr, new RegExp(`backend: wasm \\(${threads} threads?\\)`), 'the default thread count');
  reference = JSON.parse(await readFile(join(out, 'history.json'), 'utf8'));
  referenceLine = (await runTrainerAsync(['evaluate', '--model', out, '--data', DATA])).stdout;
});

after(async () => {
  await s3?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

test('killed at seeded random steps, once inside a checkpoint write, --resume ends with the uninterrupted history', async () => {
  const r = rng(12);
  const out = join(root, 'local');
  const k1 = pick(r, MID_EPOCH.slice(0, 2));
  const first = await runUntil(args(out), {}, new RegExp(`checkpoint: step ${k1} `));
  assert.equal(first.signal, 'SIGKILL', first.stderr);
  const g1 = (await RunDir.open(out).readCheckpointState())!.globalStep;
  assert.ok(g1 >= k1 && g1 < STEPS, `checkpoint at step ${g1}`);

  // Killed while writing the checkpoint of step k2: its files are written, the pointer still names the previous one.
  const k2 = pick(
    r,
    CHECKPOINT_STEPS.filter((s) => s > g1),
  );
  const second = await runUntil(resumeArgs(out), { CATDOG_TEST_CHECKPOINT_KILL_AT_STEP: String(k2) });
  assert.equal(second.signal, 'SIGKILL', second.stderr);
  assert.match(second.stderr, new RegExp(`resuming .* \\(global step ${g1}\\)`));
  const run = RunDir.open(out);
  const g2 = (await run.readCheckpointState())!.globalStep;
  assert.ok(g2 < k2 && g2 >= g1, `the pointer still names the checkpoint before step ${k2} (step ${g2})`);
  const orphans: string[] = [];
  for await (const e of run.storage.list('checkpoints/'))
    if (e.path.includes(`-s${String(k2).padStart(7, '0')}-`)) orphans.push(e.path);
  assert.ok(
    orphans.some((p) => p.endsWith('state.json')),
    `the half-switched checkpoint of step ${k2} was written (${orphans.join(', ')})`,
  );

  const third = await runUntil(resumeArgs(out), {});
  assert.equal(third.code, 0, third.stderr);
  assertSameHistory(JSON.parse(await readFile(join(out, 'history.json'), 'utf8')), 'local');
  for await (const e of run.storage.list('checkpoints/'))
    assert.ok(!e.path.includes(`-s${String(k2).padStart(7, '0')}-`) || k2 === STEPS, `orphan ${e.path} removed`);
});

test('on S3: --data and --out s3://, killed twice, --resume each time; history, evaluate and report read the run from S3', async () => {
  const r = rng(34);
  const out = 's3://resume-bucket/runs/augmented';
  const run = RunDir.open(out);
  const k1 = pick(r, MID_EPOCH.slice(0, 2));
  const first = await runUntil(args(out), {}, new RegExp(`checkpoint: step ${k1} `));
  assert.equal(first.signal, 'SIGKILL', first.stderr);
  const g1 = (await run.readCheckpointState())!.globalStep;

  // The run directory refuses a different dataset.
  const manifest = JSON.parse((await openStorage(DATA).read('manifest.json')).toString('utf8'));
  await openStorage('s3://resume-bucket/other').write(
    'manifest.json',
    JSON.stringify({ ...manifest, planId: 'another-plan' }),
  );
  const wrong = await runUntil([...resumeArgs(out), '--data', 's3://resume-bucket/other'], {});
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /error: s3:\/\/resume-bucket\/other is not the dataset this run was trained on/);

  // The endpoint from --s3-endpoint instead of the environment.
  const noEndpoint = { AWS_ENDPOINT_URL_S3: undefined, AWS_ENDPOINT_URL: undefined };
  const k2 = pick(
    r,
    MID_EPOCH.filter((s) => s > g1),
  );
  const second = await runUntil(
    [...resumeArgs(out), '--s3-endpoint', s3.endpoint],
    noEndpoint,
    new RegExp(`checkpoint: step ${k2} `),
  );
  assert.equal(second.signal, 'SIGKILL', second.stderr);
  assert.ok((await run.readCheckpointState())!.globalStep >= k2);

  const third = await runUntil(resumeArgs(out), {});
  assert.equal(third.code, 0, third.stderr);
  const history = JSON.parse((await openStorage(out).read('history.json')).toString('utf8')) as History;
  assertSameHistory(history, 's3');
  assert.ok(await openStorage(out).stat('metrics.json'), 'metrics.json, the final marker, written');

  const ev = await runTrainerAsync(['evaluate', '--model', out, '--data', DATA]);
  assert.equal(ev.code, 0, ev.stderr);
  assert.match(lastLine(ev.stdout), CONTRACT);
  assert.equal(lastLine(ev.stdout), lastLine(referenceLine), 'the resumed model scores as the uninterrupted one');

  const report = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI.report, '--runs', 's3://resume-bucket/runs'], {
      cwd: projectRoot,
      env: { ...process.env, INIT_CWD: projectRoot },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
  assert.equal(report.code, 0, report.stderr);
  assert.match(report.stdout, /wrote s3:\/\/resume-bucket\/runs\/report\.html \(1 run\)/);
  const html = (await openStorage('s3://resume-bucket/runs').read('report.html')).toString('utf8');
  assert.match(html, /augmented/);
});
