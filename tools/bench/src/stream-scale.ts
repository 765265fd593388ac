// Benchmark: stream a dataset much larger than the reader's memory from S3 (s3rver on 127.0.0.1) and report the
// peak RSS, the time to the first batch (or sample) and images/s. Not a test.
//
// --mode batches (default): the trainer's path, createBatchStream (decode + resize + the book's augmentation on a
// worker pool) with a memory budget of a tenth of the dataset's bytes (--budget-fraction), so the split is streamed
// window by window; --mode reader: @catdog/dataset's streaming reader alone (no decoding); --mode train: the trainer
// itself (`train()` of @catdog/training, what `trainer:augmented` runs) for --steps steps of one epoch on a copy of the
// dataset with validation and test splits (the trainer needs them: --holdout per class each, taken from the same
// source folder, prepped once to s3://bench/stream-scale-<N>-trainable), the run written to <folder>/runs, with the
// trainer's --memory-budget at the same fraction of the dataset as the other modes. Reported: peak RSS of the training process (model, tfjs' WASM heap and workers included), the
// time to the first training step (from process start, and from the train() call) and the trainer's images/s.
//
// The dataset is built once and kept in <folder>: the shared Kaggle images re-encoded under distinct keys
// (copy c of cat.i is cat.{c·3000+i}, JPEG quality 90−c mod 10, so every sample's bytes differ) as a flat source
// folder, then `prep` (prepareDataset) to s3://bench/stream-scale-<N> on an s3rver whose objects live in
// <folder>/s3rver. A later run with the same folder and --samples reuses both.
//
//   node --import tsx tools/bench/src/stream-scale.ts --folder /tmp/stream-scale                  # 60,000 samples
//   node --import tsx tools/bench/src/stream-scale.ts --folder /tmp/ss-small --samples 2000 --resize 96   # quick check
//   node --import tsx tools/bench/src/stream-scale.ts --folder /tmp/stream-scale --mode train              # training
//   options: --samples N (default 60000, even), --shard-samples N (default 500), --window N (shards, default 4),
//            --prefetch N (shards, default = window), --concurrency N (downloads in flight, default 3),
//            --limit N (stop after N samples), --resize S (shortest side at build time; default: original size), --json,
//            --mode batches|reader, --budget-fraction F (memory budget = F × dataset bytes, default 0.1),
//            --workers N (default 2), --batch N (default 32), --size S (target side, default 150);
//            train mode: --steps N (default 100), --validation-steps N (default 10), --holdout N (validation and test
//            images per class, default 250), --preset P (default cpu-quick; the strategy is augmented)
//
// The reader runs in a child process of its own, so its RSS is the reader's alone (s3rver runs in this one).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';
import { BOOK_AUGMENTATION, createBatchStream } from '@catdog/augment';
import { openStream, prepareDataset, readManifest } from '@catdog/dataset';
import { openStorage } from '@catdog/storage';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const { values } = parseArgs({
  options: {
    folder: { type: 'string' },
    samples: { type: 'string', default: '60000' },
    'shard-samples': { type: 'string', default: '500' },
    window: { type: 'string', default: '4' },
    prefetch: { type: 'string' },
    concurrency: { type: 'string', default: '3' },
    limit: { type: 'string' },
    resize: { type: 'string' },
    source: { type: 'string', default: join(root, '..', 'shared', 'datasets', 'dogs-vs-cats', 'train') },
    json: { type: 'boolean', default: false },
    mode: { type: 'string', default: 'batches' },
    'budget-fraction': { type: 'string', default: '0.1' },
    workers: { type: 'string', default: '2' },
    batch: { type: 'string', default: '32' },
    size: { type: 'string', default: '150' },
    budget: { type: 'string' },
    steps: { type: 'string', default: '100' },
    'validation-steps': { type: 'string', default: '10' },
    holdout: { type: 'string', default: '250' },
    preset: { type: 'string', default: 'cpu-quick' },
    'run-out': { type: 'string' },
    // Internal: run as the measured reader.
    measure: { type: 'string' },
  },
});

interface Measurement {
  samples: number;
  encodedBytes: number;
  firstSampleSeconds: number;
  seconds: number;
  samplesPerSecond: number;
  peakRssBytes: number;
  peakHeldBytes: number;
  shardsRead: number;
  bytesFetched: number;
  /** batches mode: the memory budget given and the read mode the stream chose */
  memoryBudget?: number;
  readMode?: string;
  batches?: number;
  /** train mode */
  training?: TrainingMeasurement;
}

interface TrainingMeasurement {
  steps: number;
  /** From process start (what a user waits, tsx and tfjs loading included) and from the train() call. */
  firstStepSeconds: number;
  firstStepAfterTrainCallSeconds: number;
  /** When the trainer's stream said how it reads the split (the read-mode line), from the train() call. */
  readModeAfterTrainCallSeconds: number | null;
  /** The trainer's own figure for the epoch (history.images_per_s), and images/s from the first step to the last. */
  trainerImagesPerSecond: number;
  /** RSS at the first step, and the peak up to the last training step (before validation and the test pass). */
  rssAtFirstStepBytes: number;
  peakRssDuringStepsBytes: number;
  /**
   * tfjs' WASM memory at the end (it only grows, so its peak): the model's weights, gradients, optimizer state and
   * activations live there. An upper bound of its share of the RSS (pages never touched are not resident).
   */
  wasmHeapBytes: number;
  imagesPerSecondAfterFirstStep: number;
  modelParams: number;
  valAcc: number | null;
  testAcc: number;
  runDir: string;
  backend: string;
}

/**
 * The trainer on the streamed dataset: train() as `trainer:augmented --preset <preset> --epochs 1 --steps-per-epoch
 * <steps> --validation-steps <n>` runs it, its progress sink wrapped to note the first step. @catdog/training is
 * imported here only, so the other modes' RSS does not include tfjs.
 */
async function measureTraining(url: string): Promise<void> {
  const { createProgress, resolveConfig, train } = await import('@catdog/training');
  const tf = await import('@tensorflow/tfjs');
  let peakRss = process.memoryUsage().rss;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const steps = Number(values.steps);
  const cfg = resolveConfig({
    strategy: 'augmented',
    flags: {
      data: url,
      out: values['run-out']!,
      preset: values.preset as 'cpu-quick',
      epochs: 1,
      stepsPerEpoch: steps,
      validationSteps: Number(values['validation-steps']),
      workers: Number(values.workers),
      memoryBudget: Number(values.budget),
    },
  });
  const inner = createProgress({ tty: false });
  const called = performance.now();
  let firstStep = 0;
  let lastStep = 0;
  let readModeAt: number | null = null;
  let readMode = '';
  let modelParams = 0;
  let backend = '';
  let rssAtFirstStep = 0;
  let peakRssDuringSteps = 0;
  const progress: typeof inner = {
    ...inner,
    update(step, v) {
      const now = performance.now();
      peakRssDuringSteps = Math.max(peakRss, process.memoryUsage().rss);
      if (firstStep === 0) {
        rssAtFirstStep = process.memoryUsage().rss;
        firstStep = now;
        process.stderr.write(`first training step after ${(now / 1000).toFixed(2)} s (from process start)\n`);
      }
      lastStep = now;
      inner.update(step, v);
    },
    log(line) {
      // "augmented: <model>, 1,234 parameters (…), input …, backend wasm"
      const built = /: \S+, ([\d,]+) parameters .* backend (\S+)$/.exec(line);
      if (built) {
        modelParams = Number(built[1].replaceAll(',', ''));
        backend = built[2];
      }
      inner.log(line);
    },
  };
  // The augmentation stream writes its read-mode line to stderr, not to the progress sink: noted on its way there.
  // Only the train split exceeds the budget, so "streaming shards" is the train feed's line.
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (readModeAt === null && /streaming shards/.test(text)) {
      readModeAt = performance.now();
      readMode = text.trim();
    }
    return write(chunk, ...rest);
  }) as typeof process.stderr.write;
  const result = await train(cfg, { progress });
  process.stderr.write = write;
  clearInterval(timer);
  peakRss = Math.max(peakRss, process.resourceUsage().maxRSS * 1024);
  const h = result.history;
  const batch = cfg.batchSize;
  // The backend is initialised by now (asking earlier would initialise a default one).
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm;
  const m: Measurement = {
    samples: steps * batch,
    encodedBytes: 0,
    firstSampleSeconds: firstStep / 1000,
    seconds: performance.now() / 1000,
    samplesPerSecond: h.images_per_s[0] ?? 0,
    peakRssBytes: peakRss,
    peakHeldBytes: 0,
    shardsRead: 0,
    bytesFetched: 0,
    readMode,
    training: {
      steps,
      firstStepSeconds: firstStep / 1000,
      firstStepAfterTrainCallSeconds: (firstStep - called) / 1000,
      readModeAfterTrainCallSeconds: readModeAt === null ? null : (readModeAt - called) / 1000,
      trainerImagesPerSecond: h.images_per_s[0] ?? 0,
      rssAtFirstStepBytes: rssAtFirstStep,
      peakRssDuringStepsBytes: peakRssDuringSteps,
      wasmHeapBytes: wasm?.HEAPU8?.byteLength ?? 0,
      imagesPerSecondAfterFirstStep: steps > 1 ? ((steps - 1) * batch) / ((lastStep - firstStep) / 1000) : 0,
      modelParams,
      valAcc: h.val_acc[0] ?? null,
      testAcc: result.metrics.accuracy,
      runDir: result.runDir,
      backend,
    },
  };
  process.stdout.write(`${JSON.stringify(m)}\n`);
}

/** The trainer's path: augmented batches from createBatchStream under a memory budget. */
async function measureBatches(url: string): Promise<void> {
  const started = performance.now();
  let peakRss = process.memoryUsage().rss;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const window = Number(values.window);
  const budget = Number(values.budget);
  let readMode = '';
  const size = Number(values.size);
  const stream = await createBatchStream({
    source: url,
    split: 'train',
    batchSize: Number(values.batch),
    targetSize: [size, size],
    augment: BOOK_AUGMENTATION,
    seed: 1,
    workers: Number(values.workers),
    epochs: 1,
    memoryBudget: budget,
    windowShards: window,
    prefetchShards: values.prefetch === undefined ? window : Number(values.prefetch),
    fetchConcurrency: Number(values.concurrency),
    log: (line) => (readMode = line),
  });
  const limit = values.limit ? Number(values.limit) : Number.POSITIVE_INFINITY;
  let first = 0;
  let n = 0;
  let batches = 0;
  for await (const b of stream) {
    if (batches === 0) first = (performance.now() - started) / 1000;
    batches++;
    n += b.shape[0];
    b.release();
    if (n >= limit) break;
  }
  const seconds = (performance.now() - started) / 1000;
  clearInterval(timer);
  peakRss = Math.max(peakRss, process.resourceUsage().maxRSS * 1024);
  const shards = stream.stats().shards;
  await stream.close();
  const m: Measurement = {
    samples: n,
    encodedBytes: 0,
    firstSampleSeconds: first,
    seconds,
    samplesPerSecond: n / (seconds - first || seconds),
    peakRssBytes: peakRss,
    peakHeldBytes: shards?.peakBytesHeld ?? 0,
    shardsRead: shards?.shardsRead ?? 0,
    bytesFetched: shards?.bytesFetched ?? 0,
    memoryBudget: budget,
    readMode,
    batches,
  };
  process.stdout.write(`${JSON.stringify(m)}\n`);
}

async function measure(url: string): Promise<void> {
  const started = performance.now();
  let peakRss = process.memoryUsage().rss;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const window = Number(values.window);
  const stream = await openStream(url, 'train', {
    seed: 1,
    windowShards: window,
    prefetchShards: values.prefetch === undefined ? window : Number(values.prefetch),
    fetchConcurrency: Number(values.concurrency),
  });
  const limit = values.limit ? Number(values.limit) : Number.POSITIVE_INFINITY;
  let first = 0;
  let n = 0;
  let bytes = 0;
  for await (const s of stream.samples({ epoch: 0 })) {
    if (n === 0) first = (performance.now() - started) / 1000;
    n++;
    bytes += s.bytes.byteLength;
    if (n >= limit) break;
  }
  const seconds = (performance.now() - started) / 1000;
  clearInterval(timer);
  // maxRSS is the kernel's peak (KiB), catching spikes between samples.
  peakRss = Math.max(peakRss, process.resourceUsage().maxRSS * 1024);
  const m: Measurement = {
    samples: n,
    encodedBytes: bytes,
    firstSampleSeconds: first,
    seconds,
    samplesPerSecond: n / (seconds - first || seconds),
    peakRssBytes: peakRss,
    peakHeldBytes: stream.stats.peakBytesHeld,
    shardsRead: stream.stats.shardsRead,
    bytesFetched: stream.stats.bytesFetched,
  };
  process.stdout.write(`${JSON.stringify(m)}\n`);
}

/** Re-encodes the shared images into a flat folder of `samples` distinct JPEGs (half cats, half dogs). */
async function buildSource(dir: string, samples: number): Promise<void> {
  const done = join(dir, '.complete');
  if (existsSync(done)) return;
  await mkdir(dir, { recursive: true });
  const have = new Set(await readdir(dir));
  const perClass = samples / 2;
  const jobs: { from: string; to: string; quality: number }[] = [];
  for (const prefix of ['cat', 'dog']) {
    for (let j = 0; j < perClass; j++) {
      const name = `${prefix}.${j}.jpg`;
      if (have.has(name)) continue;
      const copy = Math.floor(j / 3000);
      jobs.push({
        from: join(values.source!, `${prefix}.${j % 3000}.jpg`),
        to: join(dir, name),
        quality: 90 - (copy % 10),
      });
    }
  }
  let next = 0;
  let written = 0;
  const resize = values.resize ? Number(values.resize) : undefined;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      let image = sharp(job.from);
      if (resize) image = image.resize({ width: resize, height: resize, fit: 'outside' });
      const data = await image.jpeg({ quality: job.quality }).toBuffer();
      // Written under a temporary name first: an interrupted build never leaves a truncated JPEG under a final name.
      await writeFile(`${job.to}.tmp`, data);
      await rename(`${job.to}.tmp`, job.to);
      if (++written % 5000 === 0) process.stderr.write(`  re-encoded ${written}/${jobs.length}\n`);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  await writeFile(done, '');
}

function runReader(url: string, env: Record<string, string>, budget: number, runOut?: string): Promise<Measurement> {
  const args = [
    '--import',
    'tsx',
    fileURLToPath(import.meta.url),
    '--measure',
    url,
    '--window',
    values.window!,
    '--concurrency',
    values.concurrency!,
    '--mode',
    values.mode!,
    '--budget',
    String(budget),
    '--workers',
    values.workers!,
    '--batch',
    values.batch!,
    '--size',
    values.size!,
  ];
  if (values.prefetch !== undefined) args.push('--prefetch', values.prefetch);
  if (values.limit) args.push('--limit', values.limit);
  if (values.mode === 'train') {
    args.push('--steps', values.steps!, '--validation-steps', values['validation-steps']!, '--preset', values.preset!);
    args.push('--run-out', runOut!);
  }
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      // A training run takes minutes: its log is shown as it comes.
      if (values.mode === 'train') process.stderr.write(`  [trainer] ${d}`);
    });
    child.on('error', rej);
    child.on('close', (code) => {
      if (code !== 0) return rej(new Error(`reader exited ${code}: ${stderr.trim().split('\n').pop()}`));
      res(JSON.parse(stdout.trim().split('\n').pop()!));
    });
  });
}

async function main(): Promise<void> {
  if (!['batches', 'reader', 'train'].includes(values.mode!))
    throw new Error(`--mode must be batches, reader or train, got ${values.mode}`);
  if (values.measure)
    return values.mode === 'batches'
      ? measureBatches(values.measure)
      : values.mode === 'train'
        ? measureTraining(values.measure)
        : measure(values.measure);
  if (!values.folder) throw new Error('--folder <dir> is required (the dataset is built there once and reused)');
  const samples = Number(values.samples);
  if (!Number.isInteger(samples) || samples < 2 || samples % 2)
    throw new Error(`--samples must be an even count, got ${values.samples}`);
  const folder = resolve(values.folder);
  const sourceDir = join(folder, `source-${samples}${values.resize ? `-r${values.resize}` : ''}`);
  const s3dir = join(folder, 's3rver');
  await mkdir(s3dir, { recursive: true });
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: s3dir,
    configureBuckets: [{ name: 'bench' }],
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
  const training = values.mode === 'train';
  // The trainer needs validation and test splits: a second dataset from the same source, holdout images per class
  // in each (the reader and batches modes read the one without, all samples in train).
  const holdout = training ? Number(values.holdout) : 0;
  if (training && !(Number.isInteger(holdout) && holdout >= 1 && 2 * holdout < samples / 2))
    throw new Error(
      `--holdout must be a positive integer below a quarter of the samples per class, got ${values.holdout}`,
    );
  const url = `s3://bench/stream-scale-${samples}${values.resize ? `-r${values.resize}` : ''}${training ? '-trainable' : ''}`;
  try {
    if (!(await openStorage(url).stat('manifest.json'))) {
      process.stderr.write(`building ${samples} samples in ${sourceDir}, then prep to ${url} (once)\n`);
      await buildSource(sourceDir, samples);
      await prepareDataset({
        source: sourceDir,
        out: url,
        train: samples / 2 - 2 * holdout,
        validation: holdout,
        test: holdout,
        samplesPerShard: Number(values['shard-samples']),
        force: true,
      });
    }
    const manifest = await readManifest(url);
    const train = manifest.splits.train;
    const datasetBytes = train.shards.reduce((a, s) => a + s.bytes, 0);
    const budget = Math.floor(datasetBytes * Number(values['budget-fraction']));
    const runOut = training
      ? join(folder, 'runs', `train-${new Date().toISOString().replace(/[:.]/g, '-')}`)
      : undefined;
    const m = await runReader(url, env, budget, runOut);
    const result = {
      url,
      datasetSamples: train.count,
      shards: train.shards.length,
      datasetBytes,
      window: Number(values.window),
      ...m,
    };
    if (values.json) console.log(JSON.stringify(result, null, 2));
    else {
      const mb = (b: number) => `${(b / 1024 ** 2).toFixed(0)} MiB`;
      const t = m.training;
      if (t) {
        const split = (k: 'validation' | 'test') => manifest.splits[k]?.count ?? 0;
        console.log(
          `${url}: train ${train.count} samples, ${train.shards.length} shards, ${mb(datasetBytes)} of shards ` +
            `(validation ${split('validation')}, test ${split('test')}); the trainer's memory budget ${mb(budget)} ` +
            `(dataset ${(datasetBytes / budget).toFixed(1)}× that)\n` +
            `${m.readMode || 'no "streaming shards" line: the train split was read into memory'}\n` +
            `augmented --preset ${values.preset} --epochs 1 --steps-per-epoch ${t.steps} --validation-steps ${values['validation-steps']} ` +
            `(${t.modelParams.toLocaleString('en')} parameters, backend ${t.backend}, ${values.workers} workers), run in ${t.runDir}\n` +
            `first training step after ${t.firstStepSeconds.toFixed(2)} s from process start ` +
            `(${t.firstStepAfterTrainCallSeconds.toFixed(2)} s after train() was called` +
            `${t.readModeAfterTrainCallSeconds === null ? '' : `, the stream opened after ${t.readModeAfterTrainCallSeconds.toFixed(2)} s`}); ` +
            `${t.trainerImagesPerSecond.toFixed(1)} images/s (the trainer's), ${t.imagesPerSecondAfterFirstStep.toFixed(1)} images/s after the first step; ` +
            `${m.seconds.toFixed(1)} s in all (validation, test and writing the run included)\n` +
            `peak RSS of the training process ${mb(m.peakRssBytes)} (train split is ${(datasetBytes / m.peakRssBytes).toFixed(1)}× that); ` +
            `${mb(t.rssAtFirstStepBytes)} at the first step, peak ${mb(t.peakRssDuringStepsBytes)} up to the last step; ` +
            `tfjs WASM memory (model, gradients, optimizer state, activations) ${mb(t.wasmHeapBytes)}\n` +
            `val_acc ${t.valAcc === null ? '-' : t.valAcc.toFixed(4)}, test accuracy ${t.testAcc.toFixed(4)} after ${t.steps} steps`,
        );
      } else if (m.batches !== undefined)
        console.log(
          `${url}: ${train.count} samples, ${train.shards.length} shards, ${mb(datasetBytes)} of shards; memory budget ${mb(budget)}\n` +
            `${m.readMode}\n` +
            `${m.batches} augmented batches of ${values.batch} at ${values.size} px (${m.samples} images, ${values.workers} workers) from s3rver: ` +
            `first batch after ${m.firstSampleSeconds.toFixed(2)} s, ${m.samplesPerSecond.toFixed(0)} images/s after it, ${m.seconds.toFixed(1)} s in all\n` +
            `peak RSS ${mb(m.peakRssBytes)} (dataset is ${(datasetBytes / m.peakRssBytes).toFixed(1)}× that); ` +
            `peak encoded samples held by the reader ${mb(m.peakHeldBytes)}; ${m.shardsRead} shards read`,
        );
      else
        console.log(
          `${url}: ${train.count} samples, ${train.shards.length} shards, ${mb(datasetBytes)} of shards\n` +
            `read ${m.samples} samples (${mb(m.encodedBytes)}) from s3rver: first sample after ${m.firstSampleSeconds.toFixed(2)} s, ` +
            `${m.samplesPerSecond.toFixed(0)} samples/s after it, ${m.seconds.toFixed(1)} s in all\n` +
            `reader peak RSS ${mb(m.peakRssBytes)} (dataset is ${(datasetBytes / m.peakRssBytes).toFixed(1)}× that); ` +
            `peak decoded samples held ${mb(m.peakHeldBytes)} (window ${values.window} shards + prefetch)`,
        );
    }
  } finally {
    await server.close();
  }
}

main().catch((err) => {
  console.error(`error: ${(err as Error).message}`);
  process.exit(1);
});
