// Soak benchmark (issue #16, "memory held flat"): the augmented strategy for many epochs on small images, recording
// every epoch the process's RSS and JS heap, tfjs' live tensor count and bytes, and the WASM backend's linear
// memory (which never shrinks, so a leak inside kernels shows as steps). With --augment-service, the batches come
// from `augment serve` subprocesses started here, and their RSS is recorded too.
//
//   node --import tsx tools/bench/src/soak.ts [--epochs 100] [--images 150] [--size 64] [--batch 32]
//        [--augment-service <n servers>] [--workers 1] [--data <prepped dataset>] [--out bench-out/soak]
//
// Writes <out>/soak.csv (one row per epoch) and <out>/soak.svg + soak.png (one panel per measure), and prints the
// first, last and peak value of each measure and its growth per epoch over the second half of the run (a flat
// run has ~0). Not a test: the figures go to BENCHMARKS.md.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command, InvalidArgumentError } from 'commander';
import { prepareDataset } from '@catdog/dataset';
import { renderVegaLite } from '@catdog/report';
import { createProgress, resolveConfig, train, type ProgressSink } from '@catdog/training';
import { startAugmentServe, type AugmentServeProcess } from '../../../test/helpers/augment-servers.js';
import { KAGGLE_TRAIN } from './torch-peer.js';

interface Sample {
  epoch: number;
  seconds: number;
  rss_mb: number;
  js_heap_mb: number;
  tensors: number;
  tensor_mb: number;
  wasm_heap_mb: number;
  servers_rss_mb: number;
}
const MEASURES = ['rss_mb', 'js_heap_mb', 'tensors', 'tensor_mb', 'wasm_heap_mb', 'servers_rss_mb'] as const;

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return n;
};
const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

/** The WASM backend's linear memory in bytes (0 on another backend). */
function wasmHeapBytes(): number {
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm;
  return wasm?.HEAPU8?.byteLength ?? 0;
}

/** Resident set of another process, from /proc (0 once it is gone). */
function rssOf(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** One vega-lite panel per measure against the epoch. */
function chartSpec(samples: Sample[], title: string) {
  const labels: Record<(typeof MEASURES)[number], string> = {
    rss_mb: 'RSS (MB)',
    js_heap_mb: 'JS heap used (MB)',
    tensors: 'tfjs tensors',
    tensor_mb: 'tfjs tensor bytes (MB)',
    wasm_heap_mb: 'WASM memory (MB)',
    servers_rss_mb: 'augment servers RSS (MB)',
  };
  const shown = MEASURES.filter((m) => m !== 'servers_rss_mb' || samples.some((s) => s.servers_rss_mb > 0));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values: samples },
    columns: 2,
    concat: shown.map((m) => ({
      width: 320,
      height: 140,
      mark: { type: 'line', point: samples.length <= 30 },
      encoding: {
        x: { field: 'epoch', type: 'quantitative', title: 'epoch', axis: { format: 'd', tickMinStep: 1 } },
        y: {
          field: m,
          type: 'quantitative',
          title: labels[m],
          scale: { zero: m === 'tensors' },
          axis: { format: m === 'tensors' ? 'd' : ',.1~f' },
        },
      },
    })),
    config: { font: 'sans-serif' },
  };
}

/** Least-squares slope of `ys` against their index. */
function slope(ys: number[]): number {
  const n = ys.length;
  if (n < 2) return 0;
  const mx = (n - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, i) => {
    num += (i - mx) * (y - my);
    den += (i - mx) ** 2;
  });
  return num / den;
}

async function main() {
  const opts = new Command()
    .name('bench:soak')
    .description('the augmented strategy for many epochs, recording memory every epoch')
    .option('--epochs <n>', 'epochs', int('--epochs'), 100)
    .option('--images <n>', 'train images per class (validation: a fifth of it)', int('--images'), 150)
    .option('--size <px>', 'image size (prepped and trained)', int('--size'), 64)
    .option('--batch <n>', 'batch size', int('--batch'), 32)
    .option('--workers <n>', 'augmentation workers (in process, or per server)', int('--workers'), 1)
    .option(
      '--augment-service <servers>',
      'start this many augment servers and train on their batches',
      int('--augment-service'),
      0,
    )
    .option('--data <dataset>', 'a prepped dataset to use (default: prepped here from the shared Kaggle images)')
    .option('--out <dir>', 'where the CSV and the plot go', 'bench-out/soak')
    .parse()
    .opts<{
      epochs: number;
      images: number;
      size: number;
      batch: number;
      workers: number;
      augmentService: number;
      data?: string;
      out: string;
    }>();
  const userDir = process.env.INIT_CWD ?? process.cwd();
  const outDir = resolve(userDir, opts.out);
  await mkdir(outDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'catdog-soak-'));
  const servers: AugmentServeProcess[] = [];
  try {
    let data = opts.data ? resolve(userDir, opts.data) : join(work, 'data');
    if (!opts.data) {
      if (!existsSync(KAGGLE_TRAIN)) throw new Error(`no dataset given and no Kaggle images at ${KAGGLE_TRAIN}`);
      const v = Math.max(1, Math.round(opts.images / 5));
      process.stderr.write(`soak: prepping ${opts.images}/${v}/${v} images per class at ${opts.size} px\n`);
      await prepareDataset({
        source: KAGGLE_TRAIN,
        out: data,
        train: opts.images,
        validation: v,
        test: v,
        resize: { width: opts.size, height: opts.size },
      });
    } else data = resolve(userDir, opts.data);

    let augmentService: string | undefined;
    let tokenFile: string | undefined;
    if (opts.augmentService > 0) {
      tokenFile = join(work, 'token');
      await writeFile(tokenFile, `soak-${process.pid}-${Date.now()}\n`);
      const started = await Promise.all(
        Array.from({ length: opts.augmentService }, () =>
          startAugmentServe({ tokenFile, workers: opts.workers, stderr: 'inherit' }),
        ),
      );
      servers.push(...started);
      augmentService = started.map((s) => s.address).join(',');
      process.stderr.write(`soak: ${started.length} augment servers at ${augmentService}\n`);
    }

    const cfg = resolveConfig({
      strategy: 'augmented',
      flags: {
        data,
        out: join(work, 'run'),
        epochs: opts.epochs,
        inputSize: opts.size,
        batchSize: opts.batch,
        // One pass of the split per epoch (the book's 100 steps of 32 would be many passes of a small split).
        stepsPerEpoch: null,
        validationSteps: null,
        workers: opts.workers,
        ...(augmentService ? { augmentService, tokenFile } : {}),
      },
    });

    const samples: Sample[] = [];
    const t0 = performance.now();
    const inner = createProgress({ tty: false });
    const record = () => {
      const mem = process.memoryUsage();
      const t = tf.memory();
      const s: Sample = {
        epoch: samples.length + 1,
        seconds: Math.round((performance.now() - t0) / 100) / 10,
        rss_mb: mb(mem.rss),
        js_heap_mb: mb(mem.heapUsed),
        tensors: t.numTensors,
        tensor_mb: mb(t.numBytes),
        wasm_heap_mb: mb(wasmHeapBytes()),
        servers_rss_mb: mb(servers.reduce((a, c) => a + rssOf(c.process.pid), 0)),
      };
      samples.push(s);
      process.stderr.write(`soak: ${MEASURES.map((m) => `${m}=${s[m]}`).join(' ')} (epoch ${s.epoch})\n`);
    };
    // Each epoch ends with one log line "<label> - <s>s - loss …": sampled there, the same point every epoch.
    const progress: ProgressSink = {
      ...inner,
      log(line) {
        inner.log(line);
        if (/ - [\d.]+s - loss /.test(line)) record();
      },
    };
    await train(cfg, { progress });

    const header = ['epoch', 'seconds', ...MEASURES];
    const csv = [header.join(','), ...samples.map((s) => header.map((h) => s[h as keyof Sample]).join(','))].join('\n');
    await writeFile(join(outDir, 'soak.csv'), `${csv}\n`);
    const title = `augmented, ${opts.size} px, ${opts.images} images per class, ${opts.epochs} epochs${augmentService ? `, ${opts.augmentService} augment server${opts.augmentService > 1 ? 's' : ''}` : ''}`;
    const { svg, png } = await renderVegaLite(chartSpec(samples, title) as never, 2);
    await writeFile(join(outDir, 'soak.svg'), svg);
    await writeFile(join(outDir, 'soak.png'), png);

    const half = samples.slice(Math.floor(samples.length / 2));
    for (const m of MEASURES) {
      const ys = samples.map((s) => s[m]);
      console.log(
        `soak ${m} first=${ys[0]} last=${ys[ys.length - 1]} peak=${Math.max(...ys)} per_epoch_second_half=${slope(half.map((s) => s[m])).toFixed(3)}`,
      );
    }
    console.log(`soak wrote ${join(outDir, 'soak.csv')}, soak.svg and soak.png`);
  } finally {
    await Promise.all(servers.map((s) => s.stop('SIGTERM')));
    await rm(work, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`error: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
