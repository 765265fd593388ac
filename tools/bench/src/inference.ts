// Benchmark: images/s of `trainer evaluate` and `trainer predict` (our CLI, a subprocess each: start-up, model
// loading, decode and forward; predict also writes its CSV) on a run's saved model, beside PyTorch running the same network with the same weights (inference_torch.py reads
// the run's model.json) over the same images, decoded with PIL, with the same batch size, workers and threads.
//
//   node --import tsx tools/bench/src/inference.ts [--quick] [--run <run dir> ...] [--batch-size 32] [--threads 2]
//
// Images: the book's test split (cat/dog 1500–1999; --quick: 1500–1509), copied into a Kaggle-layout folder that
// both sides read. Without --run, two runs are trained first on a tiny split (their weights do not change the
// speed): `scratch` (the book's convnet, 150 px) and `finetune --preset cpu-quick` (MobileNetV2 + head, 224 px).
// Ends with one line per model:
//   inference <run> ours_ips=<n / evaluate wall s> torch_ips=<n / wall s> ratio=<ours wall s / torch wall s> ours_acc=… torch_acc=…
//     predict_ips=<n / predict wall s> predict_ratio=<predict wall s / torch wall s>
import { copyFile, cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { Command } from 'commander';
import { positiveInt } from './args.js';
import {
  BOOK_COUNTS,
  QUICK_COUNTS,
  KAGGLE_TRAIN,
  WEIGHTS_DIR,
  cpuDescription,
  fixed,
  here,
  prepBookSplit,
  runTimed,
  table,
  tail,
} from './torch-peer.js';
import { findTorchPython, torchDescription, torchMissing } from './peer-python.js';
import { CLI } from './cli.js';

interface Options {
  quick: boolean;
  run: string[];
  batchSize: number;
  threads: number;
  workers: number;
  source: string;
  weightsDir: string;
  keep: boolean;
  python?: string;
}

const trainer = CLI.trainer;

/** Copies the book's test images (per class indices train+validation … +test) into a Kaggle-layout folder. */
async function testFolder(dir: string, source: string, perClass: number): Promise<number> {
  await mkdir(dir, { recursive: true });
  const first = BOOK_COUNTS.train + BOOK_COUNTS.validation;
  for (const cls of ['cat', 'dog']) {
    for (let i = first; i < first + perClass; i++)
      await copyFile(join(source, `${cls}.${i}.jpg`), join(dir, `${cls}.${i}.jpg`));
  }
  return 2 * perClass;
}

/** Two small runs whose saved models are the networks users evaluate: the convnet and MobileNetV2 + head. */
async function trainRuns(work: string, o: Options): Promise<string[]> {
  const data = join(work, 'train-data');
  process.stderr.write(`prep split (tiny, for the runs to evaluate) → ${data}\n`);
  await prepBookSplit(data, QUICK_COUNTS, o.source);
  const common = [
    '--data',
    data,
    '--threads',
    String(o.threads),
    '--workers',
    String(o.workers),
    '--epochs',
    '1',
    '--batch-size',
    '10',
    '--steps-per-epoch',
    '4',
    '--validation-steps',
    '2',
  ];
  const recipes: [string, string[]][] = [
    ['scratch', []],
    [
      'finetune',
      [
        '--preset',
        'cpu-quick',
        '--head-epochs',
        '1',
        '--head-batch-size',
        '10',
        '--weights-dir',
        o.weightsDir,
        '--feature-cache-dir',
        join(work, 'cache'),
      ],
    ],
  ];
  const runs: string[] = [];
  for (const [strategy, extra] of recipes) {
    const out = join(work, `run-${strategy}`);
    process.stderr.write(`== training a ${strategy} run to evaluate → ${out}\n`);
    const r = await runTimed(process.execPath, [trainer, strategy, ...common, '--out', out, ...extra], {
      prefix: `  [train ${strategy}] `,
    });
    if (r.code !== 0) throw new Error(`trainer ${strategy} exited ${r.code}:\n${tail(r.stderr)}`);
    runs.push(out);
  }
  return runs;
}

/** evaluate rewrites a run's metrics.json and misclassified/: it gets a copy (config.json + model/), never the user's run. */
async function copyRuns(runs: string[], work: string): Promise<string[]> {
  const out: string[] = [];
  for (const [i, run] of runs.entries()) {
    const copy = join(work, `${i}-${basename(run)}`);
    await mkdir(copy, { recursive: true });
    try {
      await copyFile(join(run, 'config.json'), join(copy, 'config.json'));
      await cp(join(run, 'model'), join(copy, 'model'), { recursive: true });
    } catch (err) {
      throw new Error(
        `--run ${run}: not a finished run directory (needs config.json and model/): ${(err as Error).message}`,
      );
    }
    out.push(copy);
  }
  return out;
}

interface Row {
  run: string;
  network: string;
  images: number;
  oursSeconds: number;
  predictSeconds: number;
  torchSeconds: number | null;
  torchLoopSeconds: number | null;
  oursAcc: number | null;
  torchAcc: number | null;
}

async function measure(run: string, images: string, n: number, o: Options, python: string | null): Promise<Row> {
  const config = JSON.parse(await readFile(join(run, 'config.json'), 'utf8')) as {
    strategy: string;
    base?: string;
    inputSize: number;
    inputScaling?: string;
  };
  const network = `${config.base ?? 'convnet'}@${config.inputSize}`;
  process.stderr.write(`== ours: trainer evaluate --model ${run} (${network})\n`);
  const ours = await runTimed(
    process.execPath,
    [
      trainer,
      'evaluate',
      '--model',
      run,
      '--data',
      images,
      '--batch-size',
      String(o.batchSize),
      '--workers',
      String(o.workers),
      '--threads',
      String(o.threads),
    ],
    { prefix: '  [ours] ' },
  );
  if (ours.code !== 0) throw new Error(`trainer evaluate exited ${ours.code}:\n${tail(ours.stderr)}`);
  const acc = /accuracy=([\d.]+)/.exec(ours.stdout);
  process.stderr.write(`== ours: trainer predict --model ${run} --input ${images}\n`);
  const predictions = join(run, '..', `${basename(run)}-predictions.csv`);
  const predicted = await runTimed(
    process.execPath,
    [
      trainer,
      'predict',
      '--model',
      run,
      '--input',
      images,
      '--out',
      predictions,
      ...['--batch-size', String(o.batchSize), '--workers', String(o.workers), '--threads', String(o.threads)],
    ],
    { prefix: '  [ours] ' },
  );
  if (predicted.code !== 0) throw new Error(`trainer predict exited ${predicted.code}:\n${tail(predicted.stderr)}`);
  const row: Row = {
    run,
    network,
    images: n,
    oursSeconds: ours.seconds,
    predictSeconds: predicted.seconds,
    torchSeconds: null,
    torchLoopSeconds: null,
    oursAcc: acc ? Number(acc[1]) : null,
    torchAcc: null,
  };
  if (python) {
    process.stderr.write(`== torch: inference_torch.py --model ${join(run, 'model')}\n`);
    const scaling = config.inputScaling ?? (config.base?.startsWith('mobilenet') ? 'symmetric' : 'unit');
    const t = await runTimed(
      python,
      [
        join(here, 'inference_torch.py'),
        '--model',
        join(run, 'model'),
        '--images',
        images,
        '--scaling',
        scaling,
        '--batch-size',
        String(o.batchSize),
        '--threads',
        String(o.threads),
        '--workers',
        String(o.workers),
      ],
      { prefix: '  [torch] ', cwd: here },
    );
    const last = t.stdout.trim().split('\n').pop() ?? '';
    if (t.code !== 0 || !last.startsWith('{'))
      throw new Error(`inference_torch.py exited ${t.code}:\n${tail(t.stderr)}`);
    const j = JSON.parse(last) as { seconds: number; accuracy: number };
    row.torchSeconds = t.seconds;
    row.torchLoopSeconds = j.seconds;
    row.torchAcc = j.accuracy;
  }
  return row;
}

async function main(): Promise<number> {
  const cmd = new Command('bench:inference')
    .description(
      "trainer evaluate's and predict's images/s on a run's saved model beside PyTorch on the same network, weights and images",
    )
    .option('--quick', `${2 * QUICK_COUNTS.test} test images instead of the book's ${2 * BOOK_COUNTS.test}`, false)
    .option(
      '--run <dir>',
      'run directory to evaluate (repeatable; default: train a scratch and a finetune run on a tiny split first)',
      (v: string, prev: string[]) => [...prev, resolve(v)],
      [] as string[],
    )
    .option('--batch-size <n>', 'batch size on both sides', positiveInt, 32)
    .option('--threads <n>', 'compute threads on both sides', positiveInt, 2)
    .option('--workers <n>', 'decode workers on both sides', positiveInt, 2)
    .option('--source <dir>', "Kaggle's train/ folder", KAGGLE_TRAIN)
    .option('--weights-dir <dir>', 'folder holding mobilenet_v2_1.0_224/', WEIGHTS_DIR)
    .option('--keep', 'keep the work directory', false)
    .option(
      '--python <exe>',
      'python3 with torch and torchvision (default: $CATDOG_BENCH_PYTHON, /usr/bin/python3, python3)',
    )
    .parse();
  const o = cmd.opts() as Options;
  const python = findTorchPython(o.python);
  if (!python) {
    process.stderr.write(`error: ${torchMissing()}\n`);
    return 1;
  }
  console.log(`cpu: ${cpuDescription()}`);
  if (python) console.log(torchDescription(python));
  const work = await mkdtemp(join(tmpdir(), 'catdog-bench-inference-'));
  const rows: Row[] = [];
  try {
    const images = join(work, 'test');
    const n = await testFolder(images, o.source, o.quick ? QUICK_COUNTS.test : BOOK_COUNTS.test);
    console.log(
      `threads ${o.threads}, workers ${o.workers}, batch ${o.batchSize}, ${n} test images (the book's test split${o.quick ? ', quick subset' : ''}), torch ${python}`,
    );
    const runs = o.run.length ? await copyRuns(o.run, work) : await trainRuns(work, o);
    for (const run of runs) rows.push(await measure(run, images, n, o, python));
  } finally {
    if (o.keep) process.stderr.write(`kept ${work}\n`);
    else await rm(work, { recursive: true, force: true });
  }
  const ips = (n: number, s: number | null) => (s ? n / s : null);
  console.log('');
  console.log(
    'img/s = images / wall time of the whole command (start-up, model loading, decode, forward); ratio = ours (evaluate) s / torch s',
  );
  console.log(
    table(
      [
        'run',
        'network',
        'images',
        'ours s',
        'predict s',
        'torch s',
        'ratio',
        'ours img/s',
        'torch img/s',
        'torch loop img/s',
        'ours acc',
        'torch acc',
      ],
      rows.map((r) => [
        basename(r.run),
        r.network,
        String(r.images),
        fixed(r.oursSeconds),
        fixed(r.predictSeconds),
        fixed(r.torchSeconds),
        fixed(r.torchSeconds ? r.oursSeconds / r.torchSeconds : null, 2),
        fixed(ips(r.images, r.oursSeconds)),
        fixed(ips(r.images, r.torchSeconds)),
        fixed(ips(r.images, r.torchLoopSeconds)),
        fixed(r.oursAcc, 4),
        fixed(r.torchAcc, 4),
      ]),
    ),
  );
  console.log('');
  for (const r of rows) {
    console.log(
      `inference ${basename(r.run)} network=${r.network} images=${r.images} ours_ips=${fixed(ips(r.images, r.oursSeconds))} torch_ips=${fixed(ips(r.images, r.torchSeconds))}` +
        ` ratio=${r.torchSeconds ? (r.oursSeconds / r.torchSeconds).toFixed(3) : 'none'} ours_acc=${fixed(r.oursAcc, 4)} torch_acc=${fixed(r.torchAcc, 4)}` +
        ` predict_ips=${fixed(ips(r.images, r.predictSeconds))} predict_ratio=${r.torchSeconds ? (r.predictSeconds / r.torchSeconds).toFixed(3) : 'none'}`,
    );
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
