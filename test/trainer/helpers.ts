// Shared by the trainer CLI tests: a tiny prepped dataset (made with the prep CLI) and a CLI runner.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before } from 'node:test';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset } from '@catdog/dataset';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { flatSource } from '../dataset/helpers.js';

export const TRAINER = CLI.trainer;
const PREP = CLI.prep;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runTrainer(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, [TRAINER, ...args], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, INIT_CWD: projectRoot, ...env },
    timeout: 180_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function spawnTrainer(args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [TRAINER, ...args], {
    cwd: projectRoot,
    env: { ...process.env, INIT_CWD: projectRoot, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A prepped dataset of 20/10/10 images per class at 64×64 from the shared Kaggle images. */
export async function tinyDataset(): Promise<{ root: string; data: string }> {
  const root = await mkdtemp(join(tmpdir(), 'catdog-trainer-'));
  const data = join(root, 'data');
  const r = spawnSync(
    process.execPath,
    [
      PREP,
      'split',
      '--source',
      kaggleTrainDir,
      '--out',
      data,
      '--train',
      '20',
      '--validation',
      '10',
      '--test',
      '10',
      '--resize',
      '64x64',
    ],
    { cwd: projectRoot, encoding: 'utf8', timeout: 120_000 },
  );
  if (r.status !== 0) throw new Error(`prep split failed (${r.status}): ${r.stderr}`);
  return { root, data };
}

/** A tiny dataset for the tests of one file: made before them, removed after (read `root`/`data` inside tests). */
export function tinyDatasetForFile(): { root: string; data: string } {
  const d = { root: '', data: '' };
  before(async () => {
    Object.assign(d, await tinyDataset());
  });
  after(async () => {
    if (d.root) await rm(d.root, { recursive: true, force: true });
  });
  return d;
}

/** The last non-empty line of a CLI's stdout. */
export function lastLine(s: string): string {
  const lines = s.split('\n').filter((l) => l.trim() !== '');
  return lines[lines.length - 1] ?? '';
}

export const CONTRACT = /^accuracy=(\d\.\d+) loss=(\d+\.\d+) n=(\d+)$/;

/** Like runTrainer, without blocking this process's event loop (needed when this process serves S3). */
export function runTrainerAsync(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TRAINER, ...args], {
      cwd: projectRoot,
      env: { ...process.env, INIT_CWD: projectRoot, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A real S3-protocol server on loopback holding a prepped dataset, and a local folder for the test's own files. */
export interface S3Dataset {
  s3: LoopbackS3;
  /** The dataset's URL: s3://<bucket>/<prefix>. */
  url: string;
  /** A local temporary folder (removed by stop()). */
  root: string;
  /** Stops the server and removes its objects and `root`. */
  stop(): Promise<void>;
}

/**
 * Starts s3rver with `bucket` (its credentials and endpoint also in process.env, and in `s3.env` for subprocesses)
 * and preps 16 shared photos per class into s3://<bucket>/<prefix>: 10/3/3 per class at 64×64, `samplesPerShard`
 * per shard (the default one shard per split).
 */
export async function startS3Dataset(o: {
  bucket: string;
  prefix?: string;
  samplesPerShard?: number;
}): Promise<S3Dataset> {
  const s3 = await startLoopbackS3([o.bucket]);
  const root = await mkdtemp(join(tmpdir(), `catdog-${o.bucket}-`));
  const stop = async () => {
    await s3.stop();
    await rm(root, { recursive: true, force: true });
  };
  try {
    const url = `s3://${o.bucket}/${o.prefix ?? 'data'}`;
    await prepareDataset({
      source: await flatSource(16, join(root, 'src')),
      out: url,
      train: 10,
      validation: 3,
      test: 3,
      resize: { width: 64, height: 64 },
      ...(o.samplesPerShard ? { samplesPerShard: o.samplesPerShard } : {}),
    });
    return { s3, url, root, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
