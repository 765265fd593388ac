// prep: builds the book's cats-vs-dogs split as WebDataset shards on local disk or S3, and checks it.
import { Command, CommanderError, InvalidArgumentError, Option, type OptionValues } from 'commander';
import cliProgress from 'cli-progress';
import { reportError, UserError } from '@catdog/errors';
import { resolveLocation, type StorageOptions } from '@catdog/storage';
import {
  AbortedError,
  BOOK_SPLIT,
  DEFAULT_QUALITY,
  DEFAULT_SAMPLES_PER_SHARD,
  REPORT_FILE,
  SPLITS,
  finalizeDataset,
  inspectDataset,
  parseResize,
  prepareDataset,
  verifyDataset,
  workerDefaults,
  type FinalizeReport,
  type IgnoredFile,
  type PrepProgress,
  type PrepReport,
  type SkippedFile,
} from '@catdog/dataset';

// The project targets Node 20; the SDK's notice about future versions is not actionable for prep's users.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const err = (line: string) => process.stderr.write(`${line}\n`);
const out = (line: string) => process.stdout.write(`${line}\n`);

function count(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (n >= 1 && !Number.isInteger(n))) {
    throw new InvalidArgumentError('expected a whole count per class (e.g. 1000) or a fraction below 1 (e.g. 0.5)');
  }
  return n;
}

function integer(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    return n;
  };
}

function bytes(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m|gb|g|kib|mib|gib)?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a size such as 64MB or 500KB');
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = {
    b: 1,
    k: 1e3,
    kb: 1e3,
    m: 1e6,
    mb: 1e6,
    g: 1e9,
    gb: 1e9,
    kib: 1024,
    mib: 1024 ** 2,
    gib: 1024 ** 3,
  };
  return Math.round(Number(m[1]) * mult[unit]);
}

function resize(value: string) {
  try {
    return parseResize(value);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message.replace(/^--resize [^:]*: /, ''));
  }
}

/** A location option: the storage package decides which schemes exist; a refused one is a usage error. */
function location(value: string): string {
  try {
    return resolveLocation(value);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function humanBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function addS3Options(cmd: Command): Command {
  return cmd
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)')
    .option('--s3-region <region>', 'region (default: AWS_REGION / shared config; us-east-1 with a custom endpoint)')
    .option('--s3-profile <name>', 'shared config profile (default: AWS_PROFILE)')
    .addOption(
      new Option('--s3-path-style <bool>', 'path-style addressing (default: on with a custom endpoint)').choices([
        'true',
        'false',
      ]),
    )
    .addOption(
      new Option('--s3-checksum <mode>', 'request checksums (default: when_required with a custom endpoint)').choices([
        'when_required',
        'when_supported',
      ]),
    );
}

function storageOptions(o: Record<string, unknown>): StorageOptions {
  return {
    endpoint: o.s3Endpoint as string | undefined,
    region: o.s3Region as string | undefined,
    profile: o.s3Profile as string | undefined,
    forcePathStyle: o.s3PathStyle === undefined ? undefined : o.s3PathStyle === 'true',
    checksumMode: o.s3Checksum as StorageOptions['checksumMode'],
  };
}

/** A progress bar on a terminal, a plain line every few seconds otherwise (logs, CI, Kubernetes). */
function progressReporter(label: string) {
  const tty = Boolean(process.stderr.isTTY);
  let bar: cliProgress.SingleBar | undefined;
  let lastLine = 0;
  const started = performance.now();
  return {
    update(p: PrepProgress) {
      const rate = p.done / Math.max((performance.now() - started) / 1000, 1e-3);
      if (tty) {
        if (!bar) {
          bar = new cliProgress.SingleBar(
            {
              format: `${label} [{bar}] {value}/{total} images | {rate} img/s | shards {shards} | skipped {skipped} | eta {eta_formatted}`,
              stream: process.stderr,
              hideCursor: true,
            },
            cliProgress.Presets.shades_classic,
          );
          bar.start(p.total, 0, { rate: '0', shards: `0/${p.shardsTotal}`, skipped: 0 });
        }
        bar.update(p.done, { rate: rate.toFixed(0), shards: `${p.shardsDone}/${p.shardsTotal}`, skipped: p.skipped });
      } else {
        const now = performance.now();
        if (
          now - lastLine > 5000 ||
          (p.phase !== 'encode' && p.phase !== 'reuse') ||
          (p.done === p.total && p.shardsDone === p.shardsTotal)
        ) {
          if (p.phase === 'plan') err(`${label}: ${p.total} images in ${p.shardsTotal} shards for this worker`);
          else if (p.phase === 'finalize') err(`${label}: finalizing`);
          else
            err(
              `${label}: ${p.done}/${p.total} images, shards ${p.shardsDone}/${p.shardsTotal}, ${rate.toFixed(0)} img/s, skipped ${p.skipped}`,
            );
          lastLine = now;
        }
      }
    },
    stop() {
      bar?.stop();
    },
  };
}

function printSkipped(skipped: SkippedFile[]) {
  if (!skipped.length) return;
  out(`skipped ${skipped.length} file${skipped.length > 1 ? 's' : ''}:`);
  for (const s of skipped.slice(0, 50))
    out(
      `  ${s.source} (${s.split}): ${s.reason}${s.replacedBy ? ` → replaced by ${s.replacedBy}` : s.split !== 'reserve' ? ' → NOT replaced (split short)' : ''}`,
    );
  if (skipped.length > 50) out(`  … and ${skipped.length - 50} more (see ${REPORT_FILE})`);
}

function printIgnored(ignored: IgnoredFile[]) {
  if (!ignored.length) return;
  out(`ignored ${ignored.length} file${ignored.length > 1 ? 's' : ''} (not samples):`);
  for (const f of ignored.slice(0, 50)) out(`  ${f.name}: ${f.reason}`);
  if (ignored.length > 50) out(`  … and ${ignored.length - 50} more (see ${REPORT_FILE})`);
}

/** One line accounting for every source file, then the per-reason conversions. */
function printAccounting(f: FinalizeReport) {
  const a = f.accounting;
  if (!a) return;
  out(
    `source: ${a.files} file${a.files === 1 ? '' : 's'}: ${a.used} used (${a.converted} converted), ${a.skipped} skipped, ${a.ignored} ignored, ${a.spare} spare (beyond the split)`,
  );
  for (const [why, n] of Object.entries(f.convertedBy).sort((x, y) => y[1] - x[1])) out(`  converted ${n}: ${why}`);
}

function printFinalize(f: FinalizeReport) {
  for (const split of SPLITS) {
    const s = f.splits[split];
    const classes = Object.entries(s.classCounts)
      .map(([c, n]) => `${n} ${c}`)
      .join(', ');
    out(
      `  ${split.padEnd(10)} ${String(s.count).padStart(6)} images (${classes}) in ${s.shards} shard${s.shards === 1 ? '' : 's'}, ${humanBytes(s.bytes)}`,
    );
  }
}

/** Aborts cleanly on the first Ctrl-C / SIGTERM (no manifest, temp files removed); exits at once on the second. */
function interruptible(): AbortSignal {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130);
    err(`\n${sig}: stopping after the current image…`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return controller.signal;
}

/** prep split's command line. */
function splitCommand(program: Command): Command {
  return addS3Options(
    program
      .command('split')
      .description(
        'split a source (Kaggle flat folder, class folders or train.zip; local or s3://) into train/validation/test shards',
      )
      .requiredOption('--source <path|url>', 'source folder or .zip: local path or s3://bucket/prefix', location)
      .requiredOption('--out <path|url>', 'dataset root: local directory or s3://bucket/prefix', location)
      .option('--train <n>', `per class: count, or fraction below 1 (default ${BOOK_SPLIT.train})`, count)
      .option('--validation <n>', `per class: count or fraction (default ${BOOK_SPLIT.validation})`, count)
      .option('--test <n>', `per class: count or fraction (default ${BOOK_SPLIT.test})`, count)
      .option(
        '--shuffle',
        'shuffle each class before splitting and each split (seeded); default: numeric order as the book',
      )
      .option('--seed <n>', 'shuffle seed (default 1337)', integer(0))
      .option('--classes <names>', 'comma-separated classes that must be present (default: all found)', (v: string) =>
        v
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
      )
      .option(
        '--resize <WxH|N>',
        'resize at prep time: 150x150 squashes (Keras target_size), 150 sets the shortest side',
        resize,
      )
      .option('--quality <q>', `JPEG quality when re-encoding (default ${DEFAULT_QUALITY})`, integer(1))
      .option('--shard-samples <n>', `samples per shard (default ${DEFAULT_SAMPLES_PER_SHARD})`, integer(1))
      .option('--shard-size <bytes>', 'target shard size instead, e.g. 64MB (estimated from source file sizes)', bytes)
      .option('--folders', "also write the book's plain folder layout (<split>/<class>/<key>.jpg)")
      .option('--worker-index <i>', 'this worker (0-based; default JOB_COMPLETION_INDEX or 0)', integer(0))
      .option(
        '--worker-count <n>',
        'number of workers (default CATDOG_WORKER_COUNT / JOB_COMPLETION_COUNT or 1)',
        integer(1),
      )
      .option('--finalize', 'write the manifest when done if all parts are present (default: only with one worker)')
      .option('--no-finalize', 'never write the manifest (run prep finalize later)')
      .option('--force', 'replace a different dataset already at --out')
      .option('--allow-short', 'publish even if broken images with no spare left a split short')
      .option('--concurrency <n>', 'images encoded at once (default 8)', integer(1))
      .option('--json', 'print the run report as JSON on stdout'),
  );
}

/** prep split: plans and writes this worker's shards, its part and (by default with one worker) the manifest. */
async function runSplit(o: OptionValues): Promise<void> {
  const defaults = workerDefaults();
  const workerCount = o.workerCount ?? defaults.workerCount;
  const workerIndex = o.workerIndex ?? defaults.workerIndex;
  const label = workerCount > 1 ? `prep split [worker ${workerIndex}/${workerCount}]` : 'prep split';
  const progress = progressReporter(label);
  let report: Awaited<ReturnType<typeof prepareDataset>>;
  try {
    report = await prepareDataset({
      source: o.source,
      out: o.out,
      storage: storageOptions(o),
      train: o.train,
      validation: o.validation,
      test: o.test,
      shuffle: Boolean(o.shuffle) || o.seed !== undefined,
      seed: o.seed,
      classes: o.classes,
      resize: o.resize,
      quality: o.quality,
      samplesPerShard: o.shardSamples,
      shardBytes: o.shardSize,
      folders: o.folders,
      workerIndex,
      workerCount,
      finalize: o.finalize,
      force: o.force,
      allowShort: o.allowShort,
      concurrency: o.concurrency,
      signal: interruptible(),
      onProgress: (p) => progress.update(p),
    });
  } finally {
    progress.stop();
  }
  printSplitReport(report, { label, workerIndex, workerCount, json: Boolean(o.json) });
}

function addSplitCommand(program: Command): void {
  splitCommand(program).action(runSplit);
}

/** What prep split prints: the run report as JSON, or a summary with skipped/ignored files and what comes next. */
function printSplitReport(
  report: PrepReport,
  { label, workerIndex, workerCount, json }: { label: string; workerIndex: number; workerCount: number; json: boolean },
): void {
  if (json) {
    out(
      JSON.stringify(
        { ...report, finalize: report.finalize ? { ...report.finalize, manifest: undefined } : undefined },
        null,
        2,
      ),
    );
    return;
  }
  if (report.staleRemoved.length) {
    err(
      `${label}: removed ${report.staleRemoved.length} temp file${report.staleRemoved.length > 1 ? 's' : ''} left by killed earlier runs`,
    );
  }
  if (report.staleCleanupFailed)
    err(`${label}: warning: could not clean up after killed earlier runs: ${report.staleCleanupFailed}`);
  if (report.alreadyComplete) {
    out(`${report.out}: already holds this dataset (plan ${report.planId}); nothing to do (use --force to rebuild)`);
    return;
  }
  out(
    `${label}: wrote ${report.shardsWritten.length} shard${report.shardsWritten.length === 1 ? '' : 's'}` +
      (report.shardsReused.length ? `, reused ${report.shardsReused.length} verified` : '') +
      ` — ${report.images} images in ${report.seconds.toFixed(1)} s (${report.imagesPerSecond.toFixed(0)} images/s) → ${report.out}`,
  );
  printSkipped(report.skipped);
  printIgnored(report.ignored);
  if (report.finalize) {
    printAccounting(report.finalize);
    out(`manifest written: ${report.out.replace(/\/$/, '')}/manifest.json`);
    printFinalize(report.finalize);
  } else if (report.waitingFor) {
    out(
      `part ${workerIndex} of ${workerCount} written; workers ${report.waitingFor.join(', ')} still running: the last worker to finish writes the manifest`,
    );
  } else {
    out(
      `part ${workerIndex} of ${workerCount} written; the manifest is written by prep finalize once every worker is done`,
    );
  }
}

/** prep finalize: writes the manifest once every worker's part is present. */
function addFinalizeCommand(program: Command): void {
  addS3Options(
    program
      .command('finalize')
      .description("write manifest.json once every worker's part is present (names the missing ones otherwise)")
      .requiredOption('--out <path|url>', 'dataset root the workers wrote to', location)
      .option('--worker-count <n>', 'expected workers (default: from the part files)', integer(1))
      .option('--allow-short', 'publish even if broken images with no spare left a split short')
      .option('--json', 'print the report as JSON'),
  ).action(async (o) => {
    const f = await finalizeDataset(o.out, {
      storage: storageOptions(o),
      workerCount: o.workerCount,
      allowShort: o.allowShort,
    });
    if (o.json) {
      out(JSON.stringify({ ...f, manifest: undefined }, null, 2));
      return;
    }
    printAccounting(f);
    out(`manifest written: ${f.out.replace(/\/$/, '')}/manifest.json`);
    printFinalize(f);
    printSkipped(f.skipped);
    printIgnored(f.ignored);
  });
}

/** prep verify: re-hashes every shard against the manifest (and with --decode decodes every image). */
function addVerifyCommand(program: Command): void {
  addS3Options(
    program
      .command('verify')
      .description(
        're-hash every shard against the manifest; check members, keys and labels; report each mismatch; non-zero exit on any',
      )
      .requiredOption('--data <path|url>', 'dataset root (local or s3://)', location)
      .option('--decode', 'also decode every image completely and report each undecodable one by shard and key')
      .option('--json', 'print the report as JSON'),
  ).action(async (o) => {
    const tty = Boolean(process.stderr.isTTY);
    const r = await verifyDataset(o.data, {
      storage: storageOptions(o),
      decode: Boolean(o.decode),
      onShard: (done, total, problems) => {
        if (tty && problems.length) process.stderr.write('\n');
        for (const p of problems) err(`FAIL ${p.url}${p.key !== undefined ? ` [${p.key}]` : ''}: ${p.problem}`);
        if (tty && !problems.length) process.stderr.write(`\rverified ${done}/${total} shards`);
        if (tty && done === total) process.stderr.write('\n');
      },
    });
    const decoded = r.decoded !== undefined ? `, ${r.decoded} images decoded` : '';
    if (o.json) out(JSON.stringify(r, null, 2));
    else if (r.ok)
      out(`OK ${r.url}: ${r.shards} shards, ${r.samples} samples, ${humanBytes(r.bytes)} match the manifest${decoded}`);
    if (!r.ok) {
      const bad = [...new Set(r.problems.map((p) => p.shard))];
      const images = r.undecodable ? ` (${r.undecodable} undecodable image${r.undecodable === 1 ? '' : 's'})` : '';
      throw new UserError(
        `${r.url}: ${bad.length} of ${r.shards} shard${r.shards === 1 ? '' : 's'} failed verification${images}: ${bad.join(', ')}`,
        { code: 'bad-dataset' },
      );
    }
  });
}

/** prep inspect: counts, bytes and image sizes per split. */
function addInspectCommand(program: Command): void {
  addS3Options(
    program
      .command('inspect')
      .description('counts per split and class, bytes, image size statistics')
      .requiredOption('--data <path|url>', 'dataset root (local or s3://)', location)
      .option('--no-images', 'skip decoding image headers (counts and bytes only)')
      .option('--json', 'print the report as JSON'),
  ).action(async (o) => {
    const r = await inspectDataset(o.data, { storage: storageOptions(o), images: o.images });
    if (o.json) {
      out(JSON.stringify({ ...r, manifest: undefined }, null, 2));
      return;
    }
    const m = r.manifest;
    out(`${r.url}`);
    out(`  plan ${m.planId}, created ${m.createdAt} by ${m.createdBy?.tool} with ${m.createdBy?.workers} worker(s)`);
    out(`  source ${m.source.url} (${m.source.layout}); classes ${m.classes.map((c, i) => `${c}=${i}`).join(', ')}`);
    const resize = m.image.resize
      ? 'shortestSide' in m.image.resize
        ? `shortest side ${m.image.resize.shortestSide}`
        : `${m.image.resize.width}x${m.image.resize.height}`
      : 'none';
    out(
      `  images: JPEG, resize ${resize}, quality ${m.image.quality}; order ${m.split.order}${m.split.seed !== undefined ? ` (seed ${m.split.seed})` : ''}`,
    );
    for (const split of SPLITS) {
      const s = r.splits[split];
      const classes = Object.entries(s.classCounts)
        .map(([c, n]) => `${n} ${c}`)
        .join(', ');
      const dims =
        s.width && s.height
          ? `; width ${s.width.min}–${s.width.max} (mean ${s.width.mean.toFixed(0)}), height ${s.height.min}–${s.height.max} (mean ${s.height.mean.toFixed(0)})`
          : '';
      out(
        `  ${split.padEnd(10)} ${String(s.count).padStart(6)} images (${classes}), ${s.shards} shard${s.shards === 1 ? '' : 's'}, ${humanBytes(s.bytes)}${dims}`,
      );
    }
    out(`  total ${humanBytes(r.totalBytes)}; ${r.skipped} source file(s) skipped at prep`);
  });
}

export function buildProgram(): Command {
  const program = new Command('prep')
    .description(
      'Builds the cats-vs-dogs split of Deep Learning with Python, ch. 5, as WebDataset tar shards (local or S3), and checks it.',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  addSplitCommand(program);
  addFinalizeCommand(program);
  addVerifyCommand(program);
  addInspectCommand(program);
  return program;
}

/** Exit codes: 0 ok, 1 failure, 2 usage (commander prints its own message), 130 interrupted by a signal. */
export async function main(argv: string[] = process.argv): Promise<number> {
  const program = buildProgram();
  if (argv.length <= 2) {
    // `prep` alone names no work to do: usage on stderr, exit 2 (as any other incomplete command line).
    program.outputHelp({ error: true });
    err('error: missing subcommand (split, finalize, verify or inspect)');
    return 2;
  }
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help / --version exit 0; everything else commander raises is a usage error.
      return e.exitCode === 0 ? 0 : 2;
    }
    const code = reportError(e);
    return e instanceof AbortedError ? 130 : code;
  }
}

process.exitCode = await main();
