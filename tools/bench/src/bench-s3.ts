// Shared by the S3 benchmarks: an s3rver on 127.0.0.1 whose objects live in a folder (kept between runs), and the
// CLIs run as subprocesses with that endpoint in their environment, their output streamed and kept.
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';

export const root = fileURLToPath(new URL('../../..', import.meta.url));

export interface BenchS3 {
  endpoint: string;
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Starts s3rver on a free loopback port with `buckets`, objects kept in `dir`; sets this process's environment too. */
export async function startS3(dir: string, buckets: string[]): Promise<BenchS3> {
  await mkdir(dir, { recursive: true });
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: dir,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const address = (await server.run()) as AddressInfo;
  const endpoint = `http://127.0.0.1:${address.port}`;
  const env = {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_S3: endpoint,
  };
  Object.assign(process.env, env);
  return { endpoint, env, stop: () => server.close() };
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/**
 * Runs `node <script> …args` (a compiled CLI from ./cli.js) from the workspace root; its stderr is echoed with a
 * prefix (progress), both streams kept. s3rver answers from this process's event loop, so the child is never waited on synchronously.
 */
export function runCli(script: string, args: string[], env: Record<string, string>, label: string): Promise<CliRun> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: root,
      env: { ...process.env, INIT_CWD: root, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      for (const line of d.toString().split('\n')) if (line.trim()) process.stderr.write(`  [${label}] ${line}\n`);
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 }));
  });
}

/** Throws with the CLI's last error line unless it exited 0. */
export function check(run: CliRun, what: string): CliRun {
  if (run.code !== 0) {
    const last =
      run.stderr
        .trim()
        .split('\n')
        .filter((l) => /error/i.test(l))
        .pop() ?? run.stderr.trim().split('\n').pop();
    throw new Error(`${what} exited ${run.code}: ${last}`);
  }
  return run;
}

export const SHARED_TRAIN = fileURLToPath(new URL('../../../../shared/datasets/dogs-vs-cats/train', import.meta.url));
