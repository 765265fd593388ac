#!/usr/bin/env node
// trainer: the book's five strategies (one by one or all), evaluate, predict, export and explain: a thin CLI over @catdog/training (the report: report.ts).
// Usage: node dist/node/apps/trainer/src/main.js <strategy> --data <prepped dataset> --out <run dir> [options]
//        (compiled by tools/build.mjs; `npx nx run trainer:<strategy>` builds first)
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { once } from 'node:events';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { openStorage, resolveLocation } from '@catdog/storage';
import { formatError, reportError } from '@catdog/errors';
import { writeCurves, writeModelViews } from '@catdog/report';
import {
  PREDICTION_FORMATS,
  STRATEGIES,
  STRATEGY_NAMES,
  contractLine,
  evaluate,
  explain,
  exportRun,
  formatOfFile,
  predict,
  predictionWriter,
  readExperimentFile,
  resolveConfig,
  train,
  type History,
  type PredictionFormat,
  type Strategy,
} from '@catdog/training';
import { UsageError, UserError } from '@catdog/errors';
import { parseSkip, summaryTable, trainAll } from './all.js';
import { reportRuns } from './report-runs.js';
import { addConfigOptions, applyS3Flags, fieldOption, flagsOf, resolvePaths, S3_FIELDS, userPath } from './options.js';

/** Curves and the model diagram beside the run (the report's job); a failure to draw them is a note, not a failed run. */
async function writeRunViews(runDir: string, history: History): Promise<void> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(runDir)) {
    process.stderr.write(
      `note: curves and model diagram are drawn for local runs; for ${runDir} run the report on a local copy\n`,
    );
    return;
  }
  try {
    await writeCurves(history, runDir);
    await writeModelViews(join(runDir, 'model', 'model.json'), runDir);
  } catch (err) {
    process.stderr.write(`note: curves or model diagram not written: ${formatError(err)}\n`);
  }
}

const program = new Command('trainer')
  .description("Train and evaluate the book's cats-vs-dogs models (Deep Learning with Python, ch. 5)")
  .exitOverride()
  .showSuggestionAfterError()
  .configureOutput({ outputError: (str, write) => write(str.startsWith('error:') ? str : `error: ${str}`) });

for (const strategy of STRATEGY_NAMES) {
  const cmd = program
    .command(strategy)
    .description(STRATEGIES[strategy].help)
    .option('--config <file>', 'experiment file (JSON or YAML) with option values; flags override it');
  addConfigOptions(cmd).action(async (_opts, cmd: Command) => {
    const configFile = (cmd.opts() as { config?: string }).config;
    const file = configFile ? resolvePaths(await readExperimentFile(userPath(configFile))) : {};
    const config = resolveConfig({ strategy, flags: flagsOf(cmd), file });
    applyS3Flags(config);
    const result = await train(config);
    await writeRunViews(result.runDir, result.history);
    process.stdout.write(`${contractLine(result.metrics)}\n`);
  });
}

/** Settings `all` passes to every strategy's run; the strategies' own settings come from their defaults and --preset. */
const ALL_FIELDS = [
  'data',
  'preset',
  'seed',
  'weightsDir',
  'featureCacheDir',
  'workers',
  'augmentService',
  'tokenFile',
  'checkpointEvery',
  'backend',
  'threads',
  ...S3_FIELDS,
] as const;
const allCmd = program
  .command('all')
  .description(
    "the book's five strategies one after another into <out>/<strategy>, then <out>/report.html comparing them with the book's accuracies; completed runs are skipped, interrupted ones resumed",
  )
  .requiredOption(
    '--out <dir>',
    'folder of runs (local or s3://): <out>/scratch, <out>/augmented, …, <out>/report.html',
  )
  .option('--skip <names>', 'strategies not to run, comma-separated (e.g. augmented,extract-augmented)', parseSkip);
for (const key of ALL_FIELDS) {
  const help =
    key === 'featureCacheDir'
      ? 'where extracted features are cached (default <out>/.feature-cache; with an s3:// --out, features/ in $CATDOG_CACHE_DIR, else ~/.cache/catdog)'
      : undefined;
  for (const o of fieldOption(key, help)) allCmd.addOption(o);
}
allCmd.action(async (opts: { out: string; skip?: Strategy[] }, cmd: Command) => {
  const skip = opts.skip ?? [];
  const flags = flagsOf(cmd);
  applyS3Flags(flags);
  if (new Set(skip).size === STRATEGY_NAMES.length) throw new UsageError('--skip leaves no strategy to run');
  const out = userPath(opts.out);
  const runs = await trainAll({
    out,
    flags,
    skip,
    log: (line) => process.stderr.write(`${line}\n`),
    afterTrain: (result) => writeRunViews(result.runDir, result.history),
  });
  const report = await reportRuns({ runs: out, cwd: process.cwd() });
  for (const w of report.warnings) process.stderr.write(`warning: ${w}\n`);
  process.stdout.write(`${await summaryTable(runs)}\nwrote ${report.out} (${report.runs} runs)\n`);
});

/** The options of every command that runs a saved model: its input scaling (when no run config says it), backend. */
function modelOptions(): Option[] {
  return [
    ...fieldOption('inputScaling', 'override the input scaling when the model has no run config beside it'),
    ...fieldOption('backend'),
    ...fieldOption('threads'),
  ];
}

/** The options of the commands that stream photos through a saved model: batch size and decode workers. */
function batchOptions(): Option[] {
  return [
    ...fieldOption('batchSize', 'batch size (default 32)'),
    ...fieldOption('workers', 'decode worker threads (default 2)'),
  ];
}

const evaluateCmd = program
  .command('evaluate')
  .description(
    'test accuracy and loss, confusion matrix and misclassified images of a saved model; ends with accuracy=… loss=… n=…',
  )
  .requiredOption('--model <path>', 'run directory, model folder or model.json')
  .requiredOption(
    '--data <url>',
    'prepped dataset (its test split) or a plain folder: Kaggle flat layout (cat.N.jpg, dog.N.jpg) or class folders',
  );
for (const o of [...batchOptions(), ...modelOptions(), ...S3_FIELDS.flatMap((k) => fieldOption(k))]) {
  evaluateCmd.addOption(o);
}
evaluateCmd.action(
  async (opts: {
    model: string;
    data: string;
    batchSize?: number;
    workers?: number;
    inputScaling?: 'unit' | 'symmetric';
    backend?: 'auto';
    threads?: number;
    s3Endpoint?: string;
    s3Region?: string;
    s3Profile?: string;
    s3PathStyle?: boolean;
  }) => {
    applyS3Flags(opts);
    const result = await evaluate({
      model: userPath(opts.model),
      data: userPath(opts.data),
      batchSize: opts.batchSize,
      workers: opts.workers,
      inputScaling: opts.inputScaling,
      backend: opts.backend,
      threads: opts.threads,
    });
    process.stdout.write(`${contractLine(result.metrics)}\n`);
  },
);

const positiveInt = (what: string) => (text: string) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer.`);
  return n;
};
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
/** Writes a whole file (local or s3://) atomically. */
/** Where predict's text goes as it comes: a file written atomically through storage (local or s3://). */
interface TextSink {
  write(text: string): Promise<void>;
  close(): Promise<void>;
  abort(err: unknown): Promise<void>;
}

function outputSink(file: string): TextSink {
  const at = file.lastIndexOf('/');
  const stream = new PassThrough();
  const done = openStorage(resolveLocation(file.slice(0, at) || '/')).writeStream(file.slice(at + 1), stream);
  // Until close or abort, a failure of the writer surfaces at the next write.
  let failed: unknown = null;
  done.catch((err) => {
    failed ??= err;
  });
  return {
    async write(text) {
      if (failed) throw failed;
      if (text && !stream.write(text)) await once(stream, 'drain');
    },
    async close() {
      stream.end();
      await done;
    },
    async abort(err) {
      stream.destroy(err instanceof Error ? err : new Error(String(err)));
      await done.catch(() => {});
    },
  };
}

function stdoutSink(): TextSink {
  return {
    async write(text) {
      if (text && !process.stdout.write(text)) await once(process.stdout, 'drain');
    },
    async close() {},
    async abort() {},
  };
}

const predictCmd = program
  .command('predict')
  .description(
    'classify photos with a saved model: key,class,probability per photo (stdout or --out); bad photos are reported and skipped',
  )
  .requiredOption('--model <path>', 'run directory, model folder or model.json (local or s3://)')
  .requiredOption(
    '--input <photos>',
    "a photo, a folder (recursively), an s3:// prefix or a glob ('photos/*.jpg', quoted)",
  )
  .option('--out <file>', 'write predictions.csv, .json or .jsonl (local or s3://) instead of printing CSV')
  .option('--top <k>', 'the k most probable classes per photo (k rows each in CSV)', positiveInt('--top'), 1)
  .addOption(
    new Option(
      '--format <f>',
      "output format (default: from --out's extension, else csv); kaggle: Kaggle's submission id,label with label = P(dog)",
    ).choices(PREDICTION_FORMATS),
  );
for (const o of [...batchOptions(), ...modelOptions()]) {
  predictCmd.addOption(o);
}
predictCmd.action(
  async (opts: {
    model: string;
    input: string;
    out?: string;
    top: number;
    format?: PredictionFormat;
    batchSize?: number;
    workers?: number;
    inputScaling?: 'unit' | 'symmetric';
    backend?: 'auto';
    threads?: number;
  }) => {
    const out = opts.out ? userPath(opts.out) : undefined;
    const format: PredictionFormat = opts.format ?? (out ? (formatOfFile(out) ?? 'csv') : 'csv');
    if (out && !opts.format && !formatOfFile(out))
      throw new UsageError(
        `--out ${opts.out}: cannot tell the format from the extension (use .csv, .json or .jsonl, or --format)`,
      );
    // Rows are written as their batches come (to --out or stdout), never collected: a folder of any size fits.
    // --out is written atomically: a failed or empty run leaves no file.
    const writer = predictionWriter(format, opts.top);
    const sink = out ? outputSink(out) : stdoutSink();
    let result: Awaited<ReturnType<typeof predict>>;
    try {
      result = await predict({
        model: userPath(opts.model),
        input: userPath(opts.input),
        batchSize: opts.batchSize,
        workers: opts.workers,
        inputScaling: opts.inputScaling,
        backend: opts.backend,
        threads: opts.threads,
        collect: false,
        onPredictions: (rows, classes) => sink.write(writer.rows(rows, classes)),
      });
      if (result.classified === 0) {
        throw new UserError(
          `--input ${opts.input}: none of the ${result.skipped.length} photo${result.skipped.length === 1 ? '' : 's'} could be decoded; nothing classified`,
          { code: 'no-images' },
        );
      }
      await sink.write(writer.end());
    } catch (err) {
      await sink.abort(err);
      throw err;
    }
    await sink.close();
    const rate = result.classified / Math.max(result.seconds, 1e-9);
    process.stderr.write(
      `predict: ${result.classified} classified, ${result.skipped.length} skipped${result.skipped.length ? ` (${result.skipped.map((s) => s.key).join(', ')})` : ''}, ${rate.toFixed(1)} images/s${out ? `; wrote ${out}` : ''}\n`,
    );
  },
);

const exportCmd = program
  .command('export')
  .description(
    "a run's model for browsers and servers: a tfjs model on raw RGB pixels of any size (resize and scaling inside) with labels.json",
  )
  .requiredOption('--model <path>', 'run directory, model folder or model.json (local or s3://)')
  .requiredOption('--out <dir>', 'folder to write model.json, weights-<hash>.bin and labels.json into (local or s3://)')
  .addOption(
    new Option('--quantize <dtype>', 'weights as float16 (about half the size) or uint8 (about a quarter)').choices([
      'float16',
      'uint8',
    ]),
  )
  .option(
    '--compare',
    "also export float32, float16 and uint8 and print each one's size and accuracy on the run's test split",
  );
for (const o of modelOptions()) exportCmd.addOption(o);
exportCmd.action(
  async (opts: {
    model: string;
    out: string;
    quantize?: 'float16' | 'uint8';
    compare?: boolean;
    inputScaling?: 'unit' | 'symmetric';
    backend?: 'auto';
    threads?: number;
  }) => {
    const result = await exportRun({
      model: userPath(opts.model),
      out: userPath(opts.out),
      quantize: opts.quantize,
      compare: opts.compare,
      inputScaling: opts.inputScaling,
      backend: opts.backend,
      threads: opts.threads,
    });
    const total = Object.values(result.files).reduce((a, b) => a + b, 0);
    for (const [file, bytes] of Object.entries(result.files))
      process.stdout.write(`wrote ${result.out.replace(/\/?$/, '/')}${file} (${bytes.toLocaleString('en')} bytes)\n`);
    if (result.variants) {
      process.stdout.write(
        `variant   weights      accuracy (${result.compareCount} test images)  max |Δp| vs float32\n`,
      );
      for (const v of result.variants) {
        process.stdout.write(
          `${(v.quantization ?? 'float32').padEnd(9)} ${mib(v.weightBytes).padStart(10)}   ${(v.accuracy * 100).toFixed(2).padStart(6)} %                  ${v.maxProbabilityDiff.toExponential(2)}\n`,
        );
      }
    }
    process.stdout.write(
      `export size=${total} weights=${result.weightBytes} quantization=${result.labels.quantization ?? 'float32'} classes=${result.labels.classes.join(',')}\n`,
    );
  },
);

const explainCmd = program
  .command('explain')
  .description(
    'Grad-CAM heatmaps over photos (Deep Learning with Python 5.4): <out>/<photo>.gradcam.jpg, why the model chose its class',
  )
  .requiredOption('--model <path>', 'run directory, model folder or model.json (local or s3://)')
  .requiredOption('--input <photos>', "a local photo, folder or glob ('photos/*.jpg', quoted)")
  .requiredOption('--out <dir>', 'folder to write the overlays into (local or s3://)')
  .option('--class <index>', 'explain this class (index into the classes) instead of the predicted one', (t) => {
    const n = Number(t);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('--class must be a class index (0, 1, …).');
    return n;
  });
for (const o of modelOptions()) explainCmd.addOption(o);
explainCmd.action(
  async (opts: {
    model: string;
    input: string;
    out: string;
    class?: number;
    inputScaling?: 'unit' | 'symmetric';
    backend?: 'auto';
    threads?: number;
  }) => {
    const result = await explain({
      model: userPath(opts.model),
      input: userPath(opts.input),
      out: userPath(opts.out),
      classIndex: opts.class,
      inputScaling: opts.inputScaling,
      backend: opts.backend,
      threads: opts.threads,
    });
    for (const s of result.skipped) process.stderr.write(`skipped ${s.photo}: ${s.reason}\n`);
    for (const w of result.written) process.stdout.write(`${w.file} ${w.className} ${w.probability.toFixed(4)}\n`);
    process.stderr.write(
      `explain: ${result.written.length} heatmaps written to ${userPath(opts.out)}, ${result.skipped.length} skipped\n`,
    );
    if (result.written.length === 0)
      throw new UserError(`--input ${opts.input}: no photo could be decoded; no heatmap written`, {
        code: 'no-images',
      });
  },
);

program.on('command:*', (operands: string[]) => {
  process.stderr.write(
    `error: unknown strategy "${operands[0]}" (valid: ${[...STRATEGY_NAMES, 'all', 'evaluate', 'predict', 'export', 'explain'].join(', ')})\n`,
  );
  process.exit(2);
});

try {
  if (process.argv.length <= 2) {
    program.outputHelp();
    process.exit(2);
  }
  await program.parseAsync(process.argv);
  process.exit(0);
} catch (err) {
  // Commander has printed its own message: help and version exit 0, usage errors 2.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  process.exit(reportError(err));
}
