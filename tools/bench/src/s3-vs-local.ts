// Benchmark: training images/s with the dataset on S3 (s3rver on 127.0.0.1) vs on local disk, same data, same
// settings (issue 12: within 5% for the book's `augmented` strategy). Not a test: run it alone on an idle machine.
//
// The book's split (1000/500/500 per class from the shared Kaggle images, prepped once into <folder>/data) is
// uploaded to s3://bench/data on an s3rver whose objects live in <folder>/s3rver; then the trainer runs, as a
// subprocess, once on the local directory and once on s3://bench/data (run directories local, so only the data
// path differs), `--rounds` times alternating; images/s is the trainer's own (history.json images_per_s,
// the first epoch left out unless there is only one), and the ratio S3 / local is printed.
//
//   npx nx run bench:s3-vs-local -- --folder /tmp/s3-vs-local
//   npx nx run bench:s3-vs-local -- --folder /tmp/svl-small --train 20 --validation 10 --test 10 --resize 64 \
//     --trainer-args="--preset ci-smoke --epochs 1 --steps-per-epoch 2"          # quick check that it works
//   options: --strategy (default augmented), --trainer-args="…" (default "--preset cpu-quick --epochs 2"; with =),
//            --rounds N (default 1), --cache-dir (passed to the S3 run: then later epochs read the cache), --json
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { openStorage } from '@catdog/storage';
import { check, runCli, SHARED_TRAIN, startS3 } from './bench-s3.js';
import { CLI } from './cli.js';

const { values } = parseArgs({
  options: {
    folder: { type: 'string' },
    source: { type: 'string', default: SHARED_TRAIN },
    train: { type: 'string', default: '1000' },
    validation: { type: 'string', default: '500' },
    test: { type: 'string', default: '500' },
    resize: { type: 'string' },
    strategy: { type: 'string', default: 'augmented' },
    'trainer-args': { type: 'string', default: '--preset cpu-quick --epochs 2' },
    rounds: { type: 'string', default: '1' },
    'cache-dir': { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});

/** Mean images/s over the run's epochs, the first (warm-up: compiling, first window) left out when there are more. */
async function imagesPerSecond(run: string): Promise<{ mean: number; epochs: number[] }> {
  const history = JSON.parse(await readFile(join(run, 'history.json'), 'utf8')) as { images_per_s: number[] };
  const epochs = history.images_per_s;
  const counted = epochs.length > 1 ? epochs.slice(1) : epochs;
  return { mean: counted.reduce((a, b) => a + b, 0) / counted.length, epochs };
}

async function main(): Promise<void> {
  if (!values.folder) throw new Error('--folder <dir> is required (the dataset is prepped there once and reused)');
  const folder = resolve(values.folder);
  const tag = `${values.train}-${values.validation}-${values.test}${values.resize ? `-r${values.resize}` : ''}`;
  const local = join(folder, `data-${tag}`);
  const remote = `s3://bench/data-${tag}`;
  const s3 = await startS3(join(folder, 's3rver'), ['bench']);
  try {
    if (!existsSync(join(local, 'manifest.json'))) {
      process.stderr.write(`prep: the split into ${local} (once)\n`);
      const prepArgs = ['split', '--source', values.source!, '--out', local];
      for (const k of ['train', 'validation', 'test'] as const) prepArgs.push(`--${k}`, values[k]!);
      if (values.resize) prepArgs.push('--resize', values.resize);
      check(await runCli(CLI.prep, prepArgs, s3.env, 'prep'), 'prep split');
    }
    const target = openStorage(remote);
    if (!(await target.stat('manifest.json'))) {
      process.stderr.write(`upload: ${local} → ${remote} (once)\n`);
      const from = openStorage(local);
      const files: string[] = [];
      for await (const e of from.list()) files.push(e.path);
      // The manifest last, as prep writes it: the dataset exists on S3 only once it is whole.
      files.sort((a, b) => (a === 'manifest.json' ? 1 : b === 'manifest.json' ? -1 : a.localeCompare(b)));
      for (const f of files) await target.write(f, await from.read(f));
    }
    const extra = values['trainer-args']!.split(/\s+/).filter(Boolean);
    const rounds = Number(values.rounds);
    const results: { where: 'local' | 's3'; round: number; mean: number; epochs: number[]; seconds: number }[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const where of ['local', 's3'] as const) {
        const out = join(folder, 'runs', `${where}-${round}`);
        await rm(out, { recursive: true, force: true });
        const args = [values.strategy!, '--data', where === 'local' ? local : remote, '--out', out, ...extra];
        if (where === 's3' && values['cache-dir']) args.push('--cache-dir', resolve(values['cache-dir']));
        const run = check(await runCli(CLI.trainer, args, s3.env, `${where} ${round + 1}`), `trainer (${where})`);
        results.push({ where, round, ...(await imagesPerSecond(out)), seconds: run.seconds });
      }
    }
    const mean = (where: 'local' | 's3') => {
      const r = results.filter((x) => x.where === where);
      return r.reduce((a, b) => a + b.mean, 0) / r.length;
    };
    const summary = {
      strategy: values.strategy,
      trainerArgs: extra,
      local,
      remote,
      endpoint: s3.endpoint,
      runs: results,
      localImagesPerSecond: mean('local'),
      s3ImagesPerSecond: mean('s3'),
      ratio: mean('s3') / mean('local'),
    };
    if (values.json) console.log(JSON.stringify(summary, null, 2));
    else {
      for (const r of results)
        console.log(
          `${r.where.padEnd(5)} round ${r.round + 1}: ${r.mean.toFixed(1)} images/s (epochs: ${r.epochs.map((e) => e.toFixed(1)).join(', ')}), ${r.seconds.toFixed(0)} s wall`,
        );
      console.log(
        `${values.strategy} ${extra.join(' ')}: local ${summary.localImagesPerSecond.toFixed(1)} images/s, S3 ${summary.s3ImagesPerSecond.toFixed(1)} images/s, ratio S3/local ${summary.ratio.toFixed(3)}`,
      );
    }
  } finally {
    await s3.stop();
  }
}

main().catch((err) => {
  console.error(`error: ${(err as Error).message}`);
  process.exit(1);
});
