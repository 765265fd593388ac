#!/usr/bin/env node
// augment: preview the book's augmentation on one image, benchmark the batch pipeline, serve batches to trainers.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, dirname, extname, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import sharp from 'sharp';
import {
  BOOK_AUGMENTATION,
  applyAffine,
  createBatchStream,
  decodeResized,
  type JpegDecoder,
  openDatasetSource,
  isPreparedDataset,
  readServiceToken,
  resolveAugmentOptions,
  startAugmentServer,
  sampleRng,
  sampleTransform,
  transformMatrix,
  type AugmentOptions,
  type FillMode,
  type SampleSource,
  type AugmentServiceOptions,
  type BatchStream,
} from '@catdog/augment';
import type { EncodedSample } from '@catdog/dataset';
import { reportError, UsageError, UserError } from '@catdog/errors';

// sharp runs on libuv's thread pool, shared by every worker thread of the process (4 threads unless set before its
// first use): give it one thread per core so more than 4 workers are not throttled.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() + 1));

const base = process.env.INIT_CWD ?? process.cwd();
const resolvePath = (p: string) => resolve(base, p);

/** A byte count: 1048576, 512M, 20G (binary units: K, M, G, T; an optional i/iB/B suffix). */
const bytesOf = (name: string) => (v: string) => {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`${name} must be a byte count such as 512M or 20G`);
  return Math.floor(Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
};

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return n;
};
const port = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError('--port must be an integer in [0, 65535]');
  return n;
};
const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number >= 0`);
  return n;
};

/** The ImageDataGenerator flags, defaulting to the book's generator. */
function addAugmentFlags(cmd: Command): Command {
  const b = BOOK_AUGMENTATION;
  return cmd
    .option('--rotation <deg>', 'rotation_range, degrees', num('--rotation'), b.rotationRange)
    .option(
      '--width-shift <f>',
      'width_shift_range (fraction, or pixels when >= 1)',
      num('--width-shift'),
      b.widthShiftRange,
    )
    .option('--height-shift <f>', 'height_shift_range', num('--height-shift'), b.heightShiftRange)
    .option('--shear <deg>', 'shear_range, degrees', num('--shear'), b.shearRange)
    .option('--zoom <z>', 'zoom_range: factors in [1-z, 1+z]', num('--zoom'), b.zoomRange as number)
    .option('--no-horizontal-flip', 'disable horizontal flips')
    .option('--vertical-flip', 'enable vertical flips', false)
    .addOption(
      new Option('--fill-mode <mode>', 'fill_mode')
        .choices(['nearest', 'constant', 'reflect', 'wrap'])
        .default(b.fillMode),
    )
    .option('--cval <v>', 'value for --fill-mode constant', Number, 0);
}

interface AugmentFlags {
  rotation: number;
  widthShift: number;
  heightShift: number;
  shear: number;
  zoom: number;
  horizontalFlip: boolean;
  verticalFlip: boolean;
  fillMode: FillMode;
  cval: number;
}

function augmentFromFlags(f: AugmentFlags): AugmentOptions {
  return resolveAugmentOptions({
    rotationRange: f.rotation,
    widthShiftRange: f.widthShift,
    heightShiftRange: f.heightShift,
    shearRange: f.shear,
    zoomRange: f.zoom,
    horizontalFlip: f.horizontalFlip,
    verticalFlip: f.verticalFlip,
    fillMode: f.fillMode,
    cval: f.cval,
  });
}

/** Each image that could not be decoded, once by name (a stream meets it every pass): never dropped silently. */
function reportSkipped(skipped: { key: string; reason: string }[]): void {
  const seen = new Set<string>();
  for (const s of skipped) {
    if (seen.has(s.key)) continue;
    seen.add(s.key);
    process.stderr.write(`skipped ${s.key}: ${s.reason}\n`);
  }
}

async function preview(
  opts: AugmentFlags & {
    image: string;
    count: number;
    cols: number;
    out: string;
    seed: number;
    size: number;
    interpolation: 'nearest' | 'bilinear';
    jpegDecoder: JpegDecoder;
  },
) {
  const file = resolvePath(opts.image);
  if (!existsSync(file) || !statSync(file).isFile()) throw new UserError(`image not found: ${file}`);
  const augment = augmentFromFlags(opts);
  const h = opts.size;
  const w = opts.size;
  let decoded: Uint8Array;
  try {
    decoded = await decodeResized(await readFile(file), {
      height: h,
      width: w,
      interpolation: opts.interpolation,
      jpegDecoder: opts.jpegDecoder,
    });
  } catch (err) {
    throw new UserError(`cannot decode ${file}: ${(err as Error).message}`);
  }
  const key = basename(file, extname(file));
  const cols = Math.min(opts.cols, opts.count);
  const rows = Math.ceil(opts.count / cols);
  const gap = 4;
  const gridW = cols * w + (cols + 1) * gap;
  const gridH = rows * h + (rows + 1) * gap;
  const grid = Buffer.alloc(gridW * gridH * 3, 255);
  const tile = new Uint8Array(h * w * 3);
  for (let i = 0; i < opts.count; i++) {
    // Tile i is what epoch i of a stream with this seed would feed the model for this image.
    const params = sampleTransform(augment, sampleRng(opts.seed, i, key), h, w);
    applyAffine({ pixels: decoded, height: h, width: w }, transformMatrix(params, h, w), {
      fillMode: augment.fillMode,
      cval: augment.cval,
      output: { data: tile, flipHorizontal: params.flipHorizontal, flipVertical: params.flipVertical },
    });
    const x0 = gap + (i % cols) * (w + gap);
    const y0 = gap + Math.floor(i / cols) * (h + gap);
    for (let r = 0; r < h; r++) {
      grid.set(tile.subarray(r * w * 3, (r + 1) * w * 3), ((y0 + r) * gridW + x0) * 3);
    }
  }
  const out = resolvePath(opts.out);
  await mkdir(dirname(out), { recursive: true });
  await sharp(grid, { raw: { width: gridW, height: gridH, channels: 3 } })
    .png()
    .toFile(out);
  console.log(`wrote ${out} (${opts.count} augmented versions of ${key}, ${cols}×${rows} grid, seed ${opts.seed})`);
}

const st0 = (n: number) => Math.max(1, n);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The flags of `augment bench`. */
type BenchFlags = AugmentFlags & {
  source: string;
  limit: number;
  workers: number;
  batch: number;
  size: number;
  passes: number;
  split: 'train' | 'validation' | 'test';
  seed: number;
  interpolation: 'nearest' | 'bilinear';
  jpegDecoder: JpegDecoder;
  augment: boolean;
  minWorkers: number;
  json?: string;
  read: 'limit' | 'auto' | 'memory' | 'stream';
  cacheDir?: string;
  cacheLimit?: number;
  windowShards?: number;
} & ServiceFlags;

async function bench(opts: BenchFlags) {
  const url = /^s3:\/\//.test(opts.source) ? opts.source : resolvePath(opts.source);
  if (!url.startsWith('s3://') && !existsSync(url)) throw new UserError(`source not found: ${url}`);
  const augment = opts.augment ? augmentFromFlags(opts) : false;
  const service = serviceOf(opts);
  if (service) return benchRemote(opts, url, augment, service);
  if (opts.read !== 'limit') return benchSplit(opts, url, augment);
  // Read the encoded files once, before any timing: the benchmark measures decode → resize → augment → batch.
  const opened = await openDatasetSource(url, opts.split);
  // Balanced like the book's 2000 (1000 cats + 1000 dogs): an equal share of --limit per class, in source order.
  const k = opened.classes.length || 1;
  const quota = opened.classes.map((_, i) => Math.floor(opts.limit / k) + (i < opts.limit % k ? 1 : 0));
  const samples: EncodedSample[] = [];
  for await (const s of opened.samples()) {
    if (quota[s.label] > 0) {
      quota[s.label]--;
      samples.push(s);
    }
    if (samples.length >= opts.limit) break;
  }
  const source: SampleSource = {
    classes: opened.classes,
    count: samples.length,
    samples: async function* () {
      yield* samples;
    },
  };
  const bytes = samples.reduce((n, s) => n + s.bytes.byteLength, 0);
  console.log(
    `source ${url}: ${samples.length} images (${opened.classes.map((c, i) => `${samples.filter((x) => x.label === i).length} ${c}`).join(', ')}; ${(bytes / 1024 ** 2).toFixed(1)} MiB encoded), ` +
      `${opts.size}×${opts.size}, batch ${opts.batch}, ${opts.passes} passes, augment ${augment ? 'book' : 'off'}, ` +
      `${availableParallelism()} cores available`,
  );
  const results: {
    workers: number;
    rate: number;
    passes: number[];
    mainMs: number;
    workerMs: number;
    cpuMsPerImage: number;
    skipped: number;
  }[] = [];
  for (let workers = Math.min(opts.minWorkers, opts.workers); workers <= opts.workers; workers++) {
    const stream = await createBatchStream({
      source,
      batchSize: opts.batch,
      targetSize: [opts.size, opts.size],
      augment,
      shuffle: true,
      seed: opts.seed,
      workers,
      epochs: opts.passes,
      interpolation: opts.interpolation,
      jpegDecoder: opts.jpegDecoder,
    });
    await stream.ready();
    const rates: number[] = [];
    // CPU time of the whole process (main + worker threads + libvips threads): a load-independent cost per image.
    const cpu0 = process.cpuUsage();
    let t = performance.now();
    let images = 0;
    for await (const batch of stream) {
      images += batch.shape[0];
      batch.release(); // a consumer done with the pixels (as toTfDataset after the copy into the wasm heap)
      if (batch.index === stream.stepsPerEpoch - 1) {
        const now = performance.now();
        rates.push(images / ((now - t) / 1000));
        t = now;
        images = 0;
      }
    }
    const cpu = process.cpuUsage(cpu0);
    const cpuMsPerImage = (cpu.user + cpu.system) / 1000 / st0(stream.stats().images);
    const st = stream.stats();
    results.push({
      workers,
      rate: median(rates),
      passes: rates,
      mainMs: st.mainThreadMsPerBatch,
      workerMs: st.workerMsPerBatch,
      cpuMsPerImage,
      skipped: st.skipped.length,
    });
    console.log(
      `workers=${workers} images_per_s=${median(rates).toFixed(0)} passes=[${rates.map((r) => r.toFixed(0)).join(', ')}] ` +
        `main_thread_ms_per_batch=${st.mainThreadMsPerBatch.toFixed(3)} worker_ms_per_batch=${st.workerMsPerBatch.toFixed(1)} ` +
        `cpu_ms_per_image=${cpuMsPerImage.toFixed(3)}` +
        (st.skipped.length ? ` skipped=${st.skipped.length}` : ''),
    );
    reportSkipped(st.skipped);
  }
  const one = results.find((r) => r.workers === 1);
  const last = results[results.length - 1];
  if (one && last.workers > 1) {
    console.log(
      `scaling 1→${last.workers} workers: ${((last.rate / one.rate / last.workers) * 100).toFixed(0)}% efficiency`,
    );
  }
  if (opts.json) {
    const file = resolvePath(opts.json);
    await mkdir(dirname(file), { recursive: true });
    const record = {
      source: url,
      images: samples.length,
      size: opts.size,
      batch: opts.batch,
      passes: opts.passes,
      augment: augment !== false,
      interpolation: opts.interpolation,
      cores: availableParallelism(),
      results,
      scaling: one && last.workers > 1 ? last.rate / one.rate / last.workers : null,
    };
    await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
  }
  console.log(`augment images_per_s=${last.rate.toFixed(0)} workers=${last.workers}`);
}

/** bench --read auto|memory|stream: the whole prepared split through the URL path (the trainer's), timed per pass. */
async function benchSplit(opts: BenchFlags, url: string, augment: AugmentOptions | false) {
  if (!(await isPreparedDataset(url)))
    throw new UsageError(`--read ${opts.read} needs a prepared dataset (manifest.json) at ${url}`);
  const memoryBudget = opts.read === 'memory' ? Infinity : opts.read === 'stream' ? 0 : undefined;
  const results: { workers: number; rate: number; passes: number[]; firstBatchMs: number; peakBytesHeld: number }[] =
    [];
  for (let workers = Math.min(opts.minWorkers, opts.workers); workers <= opts.workers; workers++) {
    const t0 = performance.now();
    const stream = await createBatchStream({
      source: url,
      split: opts.split,
      batchSize: opts.batch,
      targetSize: [opts.size, opts.size],
      augment,
      shuffle: true,
      seed: opts.seed,
      workers,
      epochs: opts.passes,
      interpolation: opts.interpolation,
      jpegDecoder: opts.jpegDecoder,
      memoryBudget,
      cacheDir: opts.cacheDir && resolvePath(opts.cacheDir),
      cacheLimit: opts.cacheLimit,
      windowShards: opts.windowShards,
      log: (line) => console.log(line),
    });
    await stream.ready();
    const rates: number[] = [];
    let firstBatchMs = 0;
    let t = performance.now();
    let images = 0;
    for await (const batch of stream) {
      if (!firstBatchMs) firstBatchMs = performance.now() - t0;
      images += batch.shape[0];
      batch.release();
      if (batch.index === stream.stepsPerEpoch - 1) {
        const now = performance.now();
        rates.push(images / ((now - t) / 1000));
        t = now;
        images = 0;
      }
    }
    const st = stream.stats();
    results.push({
      workers,
      rate: median(rates),
      passes: rates,
      firstBatchMs,
      peakBytesHeld: st.shards?.peakBytesHeld ?? 0,
    });
    console.log(
      `workers=${workers} images_per_s=${median(rates).toFixed(0)} passes=[${rates.map((r) => r.toFixed(0)).join(', ')}] ` +
        `first_batch_ms=${firstBatchMs.toFixed(0)} (pool start and warm-up included) read=${st.shards?.mode} ` +
        `peak_mib_held=${((st.shards?.peakBytesHeld ?? 0) / 1024 ** 2).toFixed(1)} shards_read=${st.shards?.shardsRead} cache_hits=${st.shards?.cacheHits} ` +
        `main_thread_ms_per_batch=${st.mainThreadMsPerBatch.toFixed(3)} worker_ms_per_batch=${st.workerMsPerBatch.toFixed(1)}`,
    );
  }
  if (opts.json) {
    const file = resolvePath(opts.json);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(
      file,
      `${JSON.stringify({ source: url, read: opts.read, size: opts.size, batch: opts.batch, passes: opts.passes, results }, null, 2)}\n`,
    );
  }
  const last = results[results.length - 1];
  console.log(`augment images_per_s=${last.rate.toFixed(0)} workers=${last.workers}`);
}

interface ServiceFlags {
  augmentService?: string;
  tokenFile?: string;
  tlsCa?: string;
}

/** The client side of --augment-service, or undefined to run in process. */
function serviceOf(opts: ServiceFlags): AugmentServiceOptions | undefined {
  if (!opts.augmentService) return undefined;
  return {
    addresses: opts.augmentService,
    token: readServiceToken(opts.tokenFile && resolvePath(opts.tokenFile)),
    tls: opts.tlsCa ? { ca: readFileSync(resolvePath(opts.tlsCa)) } : undefined,
  };
}

/**
 * bench against augmentation servers: the servers read the whole source; each pass is the next ceil(limit / batch)
 * batches of the stream (a prefix of a shuffled epoch), timed as in process.
 */
async function benchRemote(
  opts: BenchFlags,
  url: string,
  augment: AugmentOptions | false,
  service: AugmentServiceOptions,
) {
  const stream: BatchStream = await createBatchStream({
    source: url,
    split: opts.split,
    batchSize: opts.batch,
    targetSize: [opts.size, opts.size],
    augment,
    shuffle: true,
    seed: opts.seed,
    interpolation: opts.interpolation,
    jpegDecoder: opts.jpegDecoder,
    augmentService: service,
    prefetch: 2 * opts.workers,
  });
  try {
    const perPass = Math.ceil(Math.min(opts.limit, stream.size) / opts.batch);
    console.log(
      `source ${url} on ${stream.stats().servers!.length} servers (${stream.workers} workers): ${stream.size} images, ` +
        `${perPass} batches of ${opts.batch} per pass, ${opts.size}×${opts.size}, ${opts.passes} passes, augment ${augment ? 'book' : 'off'}`,
    );
    await stream.ready();
    const rates: number[] = [];
    const cpu0 = process.cpuUsage();
    let bytes = 0;
    for (let pass = 0; pass < opts.passes; pass++) {
      const t = performance.now();
      let images = 0;
      for (let b = 0; b < perPass; b++) {
        const r = await stream.next();
        if (r.done) break;
        images += r.value.shape[0];
      }
      rates.push(images / ((performance.now() - t) / 1000));
    }
    const cpu = process.cpuUsage(cpu0);
    const st = stream.stats();
    for (const s of st.servers!) bytes += s.bytes;
    for (const s of st.servers!) {
      console.log(
        `server ${s.address} ${s.state} workers=${s.workers} batches=${s.batches} images_per_s=${s.imagesPerSecond.toFixed(0)} queue_depth=${s.queueDepth}`,
      );
    }
    console.log(
      `remote images_per_s=${median(rates).toFixed(0)} passes=[${rates.map((r) => r.toFixed(0)).join(', ')}] ` +
        `wire_bytes_per_batch=${(bytes / st0(st.batches)).toFixed(0)} client_cpu_ms_per_batch=${((cpu.user + cpu.system) / 1000 / st0(st.batches)).toFixed(2)}` +
        (st.retries ? ` reassigned=${st.retries}` : '') +
        (st.skipped.length ? ` skipped=${st.skipped.length}` : ''),
    );
    reportSkipped(st.skipped);
    console.log(`augment images_per_s=${median(rates).toFixed(0)} workers=${opts.workers}`);
  } finally {
    await stream.close();
  }
}

async function serve(opts: {
  port: number;
  host: string;
  workers: number;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  cacheDir?: string;
  cacheLimit?: number;
  memoryBudget?: number;
  skipCorrupt?: boolean;
  statusEvery: number;
  shutdownGrace: number;
}) {
  const token = readServiceToken(opts.tokenFile && resolvePath(opts.tokenFile));
  const loopback = ['127.0.0.1', '::1', 'localhost'].includes(opts.host);
  if (!token && !loopback) {
    throw new UsageError(
      `serving on ${opts.host} needs a token: give --token-file or set CATDOG_AUGMENT_TOKEN (only a loopback --host may go without)`,
    );
  }
  if (!opts.tlsCert !== !opts.tlsKey) throw new UsageError('--tls-cert and --tls-key go together');
  const tls =
    opts.tlsCert && opts.tlsKey
      ? { cert: readFileSync(resolvePath(opts.tlsCert)), key: readFileSync(resolvePath(opts.tlsKey)) }
      : undefined;
  const server = await startAugmentServer({
    port: opts.port,
    host: opts.host,
    workers: opts.workers,
    token,
    tls,
    cacheDir: opts.cacheDir && resolvePath(opts.cacheDir),
    cacheLimit: opts.cacheLimit,
    memoryBudget: opts.memoryBudget,
    skipCorrupt: opts.skipCorrupt,
  });
  if (!token) console.error('augment serve: no token: accepting unauthenticated calls on loopback');
  console.log(`augment serve listening ${server.host}:${server.port}`);
  // A load line whenever batches went out in the last interval: the server's side of the trainer's progress line.
  let lastBatches = 0;
  const status = setInterval(() => {
    const l = server.load();
    if (l.batches === lastBatches && l.queueDepth === 0) return;
    lastBatches = l.batches;
    console.log(
      `augment serve status images_per_s=${l.imagesPerSecond.toFixed(0)} queue_depth=${l.queueDepth} workers=${l.workers} ` +
        `batches=${l.batches} rss_mib=${(l.rss / 1024 ** 2).toFixed(0)}`,
    );
  }, opts.statusEvery * 1000);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  clearInterval(status);
  // Graceful: the health check answers NOT_SERVING and no call is accepted; running calls get the grace period to
  // end, then are cancelled (their clients hand the batches to other servers); the batches being made finish; then
  // the pools' threads stop (never while sharp is inside a native call) and the process exits 0. A second signal
  // stops it at once.
  const force = () => process.exit(signal === 'SIGINT' ? 130 : 143);
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  console.error(`augment serve: ${signal}: stopping (running calls get ${opts.shutdownGrace} s)`);
  await server.close(opts.shutdownGrace * 1000);
  console.error('augment serve: stopped');
}

const program = new Command('augment')
  .description('Keras ImageDataGenerator augmentation on a worker pool: preview, benchmark and serve')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

addAugmentFlags(
  program
    .command('preview')
    .description("N augmented versions of one image in a grid PNG (the book's figure 5.11)")
    .requiredOption('--image <file>', 'image to augment')
    .option('--count <n>', 'augmented versions', int('--count'), 8)
    .option('--cols <n>', 'grid columns', int('--cols'), 4)
    .option('--out <file>', 'grid PNG to write', 'augment-preview.png')
    .option('--seed <n>', 'seed (tile i is epoch i of a stream with this seed)', int('--seed'), 1)
    .option('--size <px>', 'target size (square)', int('--size'), 150)
    .addOption(
      new Option('--interpolation <kind>', 'resize kernel').choices(['nearest', 'bilinear']).default('nearest'),
    )
    .addOption(
      new Option('--jpeg-decoder <kind>', "fast (TurboJPEG's fast IDCT) or exact (PIL's pixels, via sharp)")
        .choices(['fast', 'exact'])
        .default('fast'),
    ),
).action(preview);

addAugmentFlags(
  program
    .command('bench')
    .description(
      'images/s of decode → resize → augment → batch at 1..N workers; ends with "augment images_per_s=<median> workers=<n>"',
    )
    .requiredOption(
      '--source <url>',
      'folder of Kaggle-named JPEGs, class folders, or a prepared dataset (dir or s3://)',
    )
    .addOption(
      new Option('--split <name>', 'split of a prepared dataset')
        .choices(['train', 'validation', 'test'])
        .default('train'),
    )
    .option('--limit <n>', 'images (with --read limit)', int('--limit'), 2000)
    .addOption(
      new Option(
        '--read <mode>',
        'limit: the first --limit images read into memory before timing; auto/memory/stream: the whole prepared split through the stream (auto: memory under 512 MiB)',
      )
        .choices(['limit', 'auto', 'memory', 'stream'])
        .default('limit'),
    )
    .option('--cache-dir <dir>', 'shard cache for a remote dataset (with --read auto/memory/stream)')
    .option(
      '--cache-limit <bytes>',
      'shard cache size limit, e.g. 20G (least recently used shards evicted)',
      bytesOf('--cache-limit'),
    )
    .option('--window-shards <n>', 'shards per shuffle window when streaming', int('--window-shards'))
    .option('--workers <n>', 'largest worker count measured', int('--workers'), availableParallelism())
    .option('--min-workers <n>', 'smallest worker count measured', int('--min-workers'), 1)
    .option('--batch <n>', 'batch size', int('--batch'), 32)
    .option('--size <px>', 'target size (square)', int('--size'), 150)
    .option('--passes <n>', 'passes (epochs) per worker count; the median is reported', int('--passes'), 3)
    .option('--seed <n>', 'seed', int('--seed'), 1)
    .option('--no-augment', 'decode and resize only')
    .option('--json <file>', 'also write the results as JSON')
    .addOption(
      new Option('--interpolation <kind>', 'resize kernel').choices(['nearest', 'bilinear']).default('nearest'),
    )
    .addOption(
      new Option('--jpeg-decoder <kind>', "fast (TurboJPEG's fast IDCT) or exact (PIL's pixels, via sharp)")
        .choices(['fast', 'exact'])
        .default('fast'),
    )
    .option(
      '--augment-service <host:port,…>',
      'make the batches on these augmentation servers (a DNS name may resolve to several)',
    )
    .option('--token-file <file>', "the servers' shared token (default: $CATDOG_AUGMENT_TOKEN)")
    .option('--tls-ca <file>', 'connect with TLS, trusting this CA certificate (PEM)'),
).action(bench);

program
  .command('serve')
  .description(
    'serve augmented batches to trainers over gRPC until SIGTERM; prints "augment serve listening <host>:<port>" once ready',
  )
  .requiredOption('--port <n>', 'port (0: any free one)', port)
  .option('--host <addr>', 'address to listen on', '0.0.0.0')
  .option('--workers <n>', 'worker threads', int('--workers'), availableParallelism())
  .option(
    '--token-file <file>',
    'shared token every call must carry (default: $CATDOG_AUGMENT_TOKEN; required unless --host is loopback)',
  )
  .option('--tls-cert <file>', 'serve TLS with this certificate chain (PEM)')
  .option('--tls-key <file>', 'and this private key (PEM)')
  .option('--cache-dir <dir>', "local cache for remote datasets' shards")
  .option(
    '--cache-limit <bytes>',
    'shard cache size limit, e.g. 20G (least recently used shards evicted)',
    bytesOf('--cache-limit'),
  )
  .option(
    '--memory-budget <bytes>',
    'a prepared split up to this size is read into memory; a larger one is served from a window of shards, e.g. 512M (0: always a window; default 512M)',
    bytesOf('--memory-budget'),
  )
  .option(
    '--skip-corrupt',
    'skip (and warn about) a missing or corrupt shard instead of failing the batches that need it',
  )
  .option('--status-every <s>', 'seconds between load lines (printed only while busy)', int('--status-every'), 30)
  .option(
    '--shutdown-grace <s>',
    'on SIGTERM/SIGINT, seconds running calls may take to end before they are cancelled',
    int('--shutdown-grace'),
    5,
  )
  .action(serve);

/** 0 ok, 1 failure, 2 usage (commander has already printed its own usage errors). */
async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    // RangeErrors come from the library's option checks, i.e. from flag values.
    return reportError(err instanceof RangeError ? new UsageError(err.message) : err);
  }
}

process.exitCode = await main(process.argv);
