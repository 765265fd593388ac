// Benchmark: prep + train + evaluate + report with everything on S3 (s3rver on 127.0.0.1), on all 6,000 shared
// images by default (2000/500/500 per class: a larger train split than the book's 1000). Not a test: it reports
// each stage's wall time and the test accuracy, and leaves the dataset and the run on the s3rver in <folder> (and the
// trainer's feature cache in <folder>/feature-cache).
//
//   npx nx run bench:s3-end-to-end -- --folder /tmp/s3-e2e
//   npx nx run bench:s3-end-to-end -- --folder /tmp/e2e-small --train 20 --validation 10 --test 10 --resize 64 \
//     --trainer-args="--preset ci-smoke --epochs 1 --steps-per-epoch 2"          # quick check that it works
//   options: --strategy (default finetune), --trainer-args="…" (default "--preset cpu-quick"; with =), --cache-dir <dir>
//            (the trainer's shard cache), --resize, --json
//
// finetune by default: with cpu-quick it takes minutes on 2 cores (features cached once, head, then two epochs of the
// unfrozen top), where augmented --preset cpu-quick is 100 full passes over the split (hours on these 4,000 images).
//
// The same by hand, with an S3 endpoint in AWS_ENDPOINT_URL_S3 (or --s3-endpoint on each command):
//   npx nx run prep:split -- --source ../shared/datasets/dogs-vs-cats/train --out s3://bench/all-6000 \
//     --train 2000 --validation 500 --test 500
//   npx nx run trainer:finetune -- --data s3://bench/all-6000 --out s3://bench/runs/all-6000 --preset cpu-quick \
//     --cache-dir /tmp/shard-cache --checkpoint-every 50
//   npx nx run trainer:evaluate -- --model s3://bench/runs/all-6000 --data s3://bench/all-6000
//   npx nx run trainer:report -- --runs s3://bench/runs
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { openStorage } from '@catdog/storage';
import { check, runCli, SHARED_TRAIN, startS3 } from './bench-s3.js';
import { CLI } from './cli.js';

const { values } = parseArgs({
  options: {
    folder: { type: 'string' },
    source: { type: 'string', default: SHARED_TRAIN },
    train: { type: 'string', default: '2000' },
    validation: { type: 'string', default: '500' },
    test: { type: 'string', default: '500' },
    resize: { type: 'string' },
    strategy: { type: 'string', default: 'finetune' },
    'trainer-args': { type: 'string', default: '--preset cpu-quick' },
    'cache-dir': { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});

async function main(): Promise<void> {
  if (!values.folder) throw new Error('--folder <dir> is required (s3rver keeps its objects there)');
  const folder = resolve(values.folder);
  const tag = `${values.train}-${values.validation}-${values.test}${values.resize ? `-r${values.resize}` : ''}`;
  const data = `s3://bench/e2e-${tag}`;
  const runs = `s3://bench/e2e-runs-${tag}`;
  const run = `${runs}/${values.strategy}-${Date.now()}`;
  const s3 = await startS3(join(folder, 's3rver'), ['bench']);
  const stages: Record<string, number> = {};
  try {
    if (await openStorage(data).stat('manifest.json')) {
      process.stderr.write(`prep: ${data} already written; reusing it (delete ${folder} to time prep again)\n`);
    } else {
      const prepArgs = ['split', '--source', values.source!, '--out', data];
      for (const k of ['train', 'validation', 'test'] as const) prepArgs.push(`--${k}`, values[k]!);
      if (values.resize) prepArgs.push('--resize', values.resize);
      stages.prep = check(await runCli(CLI.prep, prepArgs, s3.env, 'prep'), 'prep split').seconds;
    }
    const extra = values['trainer-args']!.split(/\s+/).filter(Boolean);
    const trainArgs = [values.strategy!, '--data', data, '--out', run, ...extra];
    if (values['cache-dir']) trainArgs.push('--cache-dir', resolve(values['cache-dir']));
    // A run on S3 caches extracted features in ~/.cache/catdog/features by default, where a rerun would find them and
    // time a warm train stage: kept in <folder> instead, so deleting it starts every stage cold.
    if (!extra.includes('--feature-cache-dir')) trainArgs.push('--feature-cache-dir', join(folder, 'feature-cache'));
    const trained = check(await runCli(CLI.trainer, trainArgs, s3.env, 'train'), 'trainer');
    stages.train = trained.seconds;
    const evaluated = check(
      await runCli(CLI.trainer, ['evaluate', '--model', run, '--data', data], s3.env, 'evaluate'),
      'trainer evaluate',
    );
    stages.evaluate = evaluated.seconds;
    const reported = check(await runCli(CLI.report, ['--runs', runs], s3.env, 'report'), 'trainer report');
    stages.report = reported.seconds;
    const history = JSON.parse((await openStorage(run).read('history.json')).toString('utf8')) as {
      epoch: number[];
      images_per_s: number[];
    };
    const manifest = JSON.parse((await openStorage(data).read('manifest.json')).toString('utf8')) as {
      splits: Record<string, { count: number }>;
    };
    const summary = {
      data,
      run,
      counts: Object.fromEntries(Object.entries(manifest.splits).map(([k, v]) => [k, v.count])),
      stagesSeconds: stages,
      epochs: history.epoch.length,
      imagesPerSecond: history.images_per_s,
      evaluate: evaluated.stdout.trim().split('\n').pop(),
      report: reported.stdout.trim().split('\n').pop(),
    };
    if (values.json) console.log(JSON.stringify(summary, null, 2));
    else {
      console.log(`dataset ${data}: ${JSON.stringify(summary.counts)}; run ${run}`);
      console.log(
        `stages (s): ${Object.entries(stages)
          .map(([k, v]) => `${k} ${v.toFixed(1)}`)
          .join(', ')}`,
      );
      console.log(
        `${summary.epochs} epochs, images/s per epoch: ${history.images_per_s.map((x) => x.toFixed(1)).join(', ')}`,
      );
      console.log(`evaluate: ${summary.evaluate}`);
      console.log(`report: ${summary.report}`);
    }
  } finally {
    await s3.stop();
  }
}

main().catch((err) => {
  console.error(`error: ${(err as Error).message}`);
  process.exit(1);
});
