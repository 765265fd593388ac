#!/usr/bin/env node
// trainer: the book's five strategies and evaluate, a thin CLI over @catdog/training (the report: report.ts).
// Usage: node --import tsx apps/trainer/src/main.ts <strategy> --data <prepped dataset> --out <run dir> [options]
import { Command, CommanderError } from 'commander';
import { join } from 'node:path';
import { formatError, reportError } from '@catdog/errors';
import { writeCurves, writeModelViews } from '@catdog/report';
import { STRATEGIES, STRATEGY_NAMES, contractLine, evaluate, readExperimentFile, resolveConfig, train, type History } from '@catdog/training';
import { addConfigOptions, applyS3Flags, fieldOption, flagsOf, resolvePaths, S3_FIELDS, userPath } from './options.js';

/** Curves and the model diagram beside the run (the report's job); a failure to draw them is a note, not a failed run. */
async function writeRunViews(runDir: string, history: History): Promise<void> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(runDir)) {
    process.stderr.write(`note: curves and model diagram are drawn for local runs; for ${runDir} run the report on a local copy\n`);
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
  const cmd = program.command(strategy).description(STRATEGIES[strategy].help).option('--config <file>', 'experiment file (JSON or YAML) with option values; flags override it');
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

const evaluateCmd = program
  .command('evaluate')
  .description('test accuracy and loss, confusion matrix and misclassified images of a saved model; ends with accuracy=… loss=… n=…')
  .requiredOption('--model <path>', 'run directory, model folder or model.json')
  .requiredOption('--data <url>', 'prepped dataset (its test split) or a plain folder: Kaggle flat layout (cat.N.jpg, dog.N.jpg) or class folders');
for (const o of [
  ...fieldOption('batchSize', 'batch size (default 32)'),
  ...fieldOption('workers', 'decode worker threads (default 2)'),
  ...fieldOption('inputScaling', 'override the input scaling when the model has no run config beside it'),
  ...fieldOption('backend'),
  ...fieldOption('threads'),
  ...S3_FIELDS.flatMap((k) => fieldOption(k)),
]) {
  evaluateCmd.addOption(o);
}
evaluateCmd.action(async (opts: { model: string; data: string; batchSize?: number; workers?: number; inputScaling?: 'unit' | 'symmetric'; backend?: 'auto'; threads?: number; s3Endpoint?: string; s3Region?: string; s3Profile?: string; s3PathStyle?: boolean }) => {
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
});

program.on('command:*', (operands: string[]) => {
  process.stderr.write(`error: unknown strategy "${operands[0]}" (valid: ${[...STRATEGY_NAMES, 'evaluate'].join(', ')})\n`);
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
