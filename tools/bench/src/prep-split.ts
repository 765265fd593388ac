// Benchmark: `prep split` of the book's 4000-image split, local→local and local→S3 (s3rver on 127.0.0.1),
// with and without --resize 150, reported as images per second. Not a test.
//
//   node --import tsx tools/bench/src/prep-split.ts                 # the book's split (1000/500/500 per class)
//   node --import tsx tools/bench/src/prep-split.ts --train 20 --validation 10 --test 10   # quick sanity check
//   options: --source <dir> (default ../shared/datasets/dogs-vs-cats/train), --runs <n> (default 3, median reported), --json
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';
import { CLI } from './cli.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const { values } = parseArgs({
  options: {
    source: { type: 'string', default: join(root, '..', 'shared', 'datasets', 'dogs-vs-cats', 'train') },
    train: { type: 'string', default: '1000' },
    validation: { type: 'string', default: '500' },
    test: { type: 'string', default: '500' },
    runs: { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
  },
});

interface Result {
  target: 'local' | 's3';
  resize: boolean;
  images: number;
  seconds: number;
  imagesPerSecond: number;
  wallSeconds: number;
}

function runPrep(
  args: string[],
  env: Record<string, string>,
): Promise<{ report: { images: number; seconds: number; imagesPerSecond: number }; wall: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI.prep, 'split', ...args, '--json'], {
      cwd: root,
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`prep split exited ${code}: ${stderr.trim().split('\n').pop()}`));
      resolve({ report: JSON.parse(stdout), wall: (performance.now() - started) / 1000 });
    });
  });
}

const work = await mkdtemp(join(tmpdir(), 'catdog-bench-prep-'));
const s3dir = join(work, 's3rver');
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory: s3dir,
  configureBuckets: [{ name: 'bench' }],
});
const address = (await server.run()) as AddressInfo;
const env = {
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  AWS_REGION: 'us-east-1',
  AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${address.port}`,
};
const counts = ['--train', values.train!, '--validation', values.validation!, '--test', values.test!];
const results: Result[] = [];
try {
  for (let run = 0; run < Number(values.runs); run++) {
    for (const resize of [false, true]) {
      for (const target of ['local', 's3'] as const) {
        const out = target === 'local' ? join(work, `out-${run}-${resize}`) : `s3://bench/out-${run}-${resize}`;
        const args = ['--source', values.source!, '--out', out, ...counts, ...(resize ? ['--resize', '150'] : [])];
        const { report, wall } = await runPrep(args, env);
        const r: Result = {
          target,
          resize,
          images: report.images,
          seconds: report.seconds,
          imagesPerSecond: report.imagesPerSecond,
          wallSeconds: wall,
        };
        results.push(r);
        if (!values.json) {
          console.log(
            `local→${target.padEnd(5)} resize ${resize ? '150 ' : 'none'}: ${r.images} images in ${r.seconds.toFixed(2)} s = ${r.imagesPerSecond.toFixed(0)} images/s (wall ${wall.toFixed(2)} s incl. node startup)`,
          );
        }
      }
    }
  }
} finally {
  await server.close();
  await rm(work, { recursive: true, force: true });
}
if (values.json)
  console.log(
    JSON.stringify(
      {
        source: values.source,
        counts: { train: values.train, validation: values.validation, test: values.test },
        results,
      },
      null,
      2,
    ),
  );
else {
  // Single runs vary by ±20% on a 2-vCPU VM: report the median of --runs.
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  for (const resize of [false, true]) {
    const local = median(
      results.filter((r) => r.target === 'local' && r.resize === resize).map((r) => r.imagesPerSecond),
    );
    const s3 = median(results.filter((r) => r.target === 's3' && r.resize === resize).map((r) => r.imagesPerSecond));
    console.log(
      `median of ${values.runs} runs, resize ${resize ? '150' : 'none'}: local ${local.toFixed(0)} images/s, S3 ${s3.toFixed(0)} images/s (${((100 * s3) / local).toFixed(0)}% of local)`,
    );
  }
}
