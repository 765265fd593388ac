#!/usr/bin/env node
// trainer: the book's five strategies and evaluate, a thin CLI over @catdog/training.
// Usage: node --import tsx apps/trainer/src/main.ts <strategy> --data <prepped dataset> --out <run dir> [options]
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isAbsolute, resolve } from 'node:path';
import { addBackendOptions } from './backend-options.js';
import { formatError, UserError } from '@catdog/errors';
import {
  BASES,
  PRESETS,
  STRATEGIES,
  contractLine,
  evaluate,
  readExperimentFile,
  resolveConfig,
  train,
  type TrainConfig,
} from '@catdog/training';

const userDir = process.env.INIT_CWD ?? process.cwd();
/** Relative local paths are the user's (npx/nx run targets at the workspace root); URLs pass through. */
const userPath = (p: string) => (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) || isAbsolute(p) ? p : resolve(userDir, p));

function int(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer.');
  return n;
}
function intOrZero(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be an integer >= 0.');
  return n;
}
function intOrAuto(value: string): number | null {
  return value === 'auto' ? null : int(value);
}
function positive(value: string): number {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError('must be a positive number.');
  return n;
}
function fraction(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n < 1)) throw new InvalidArgumentError('must be in [0, 1).');
  return n;
}

const STRATEGY_HELP: Record<(typeof STRATEGIES)[number], string> = {
  scratch: 'the book\'s convnet from scratch, no augmentation (RMSprop 1e-4, batch 20, 30 epochs × 100 steps, input 150)',
  augmented: 'the dropout convnet on augmented batches (batch 32, 100 epochs × 100 steps)',
  extract: 'frozen base run once (features cached on disk), then the dense head (RMSprop 2e-5, batch 20, 30 epochs)',
  'extract-augmented': 'base frozen inside the model, trained end to end on augmented batches (RMSprop 2e-5, 30 epochs)',
  finetune: 'head with the base frozen, then the top of the base unfrozen (RMSprop 1e-5, 100 epochs)',
};

function addTrainOptions(cmd: Command): Command {
  cmd
    .option('--data <url>', 'prepped dataset (directory or s3://bucket/prefix) written by prep split')
    .option('--out <dir>', 'run directory to write (model/, config.json, history.json, metrics.json, curves/, …)')
    .option('--config <file>', 'experiment file (JSON or YAML) with option values; flags override it')
    .addOption(new Option('--preset <name>', 'cpu-quick: minutes on 2 cores; ci-smoke: tiny images, few steps').choices([...PRESETS]))
    .option('--base <name>', `conv base for transfer strategies: ${BASES.join(' | ')} (default mobilenet_v2)`)
    .option('--weights <w>', "base weights: imagenet | <file.h5> | <tfjs folder or s3 URL> (default: the shared MobileNetV2 weights, Keras' file for VGG16)")
    .option('--weights-dir <dir>', 'folder holding mobilenet_v2_1.0_224/ and mobilenet_v2_0.35_224/ (default $CATDOG_WEIGHTS_DIR, else ../shared/weights beside the workspace)')
    .option('--input-size <n>', 'image side in pixels (default 150)', int)
    .addOption(new Option('--input-scaling <s>', 'unit = x/255, symmetric = x/127.5-1 (default: by base)').choices(['unit', 'symmetric']))
    .option('--batch-size <n>', 'batch size', int)
    .option('--epochs <n>', 'epochs (finetune: of the fine-tuning phase)', int)
    .option('--steps-per-epoch <n>', "training steps per epoch, or 'auto' for one pass over the train split", intOrAuto)
    .option('--validation-steps <n>', "validation steps per epoch, or 'auto' for one pass", intOrAuto)
    .option('--learning-rate <x>', 'RMSprop learning rate', positive)
    .option('--dropout <x>', 'dropout rate of the convnet (augmented) or of the head', fraction)
    .option('--augment', "augment training batches with the book's ImageDataGenerator settings")
    .option('--no-augment', 'do not augment')
    .option('--head-units <n>', 'units of the head\'s hidden Dense layer (default 256)', int)
    .addOption(new Option('--head-pooling <p>', "flatten (the book) or avg (GlobalAveragePooling2D) before the head").choices(['flatten', 'avg']))
    .addOption(new Option('--head-training <how>', 'finetune: train the head end to end (the book) or on cached features (fast)').choices(['end-to-end', 'features']))
    .option('--head-epochs <n>', 'finetune: epochs of the head phase (0 skips it)', intOrZero)
    .option('--head-learning-rate <x>', 'finetune: learning rate of the head phase', positive)
    .option('--head-batch-size <n>', 'finetune: batch size of the head phase on cached features', int)
    .option('--fine-tune-from <layer>', 'finetune: first layer of the base to unfreeze (default: block5_conv1 for VGG16, block_13_expand for MobileNetV2)')
    .addOption(new Option('--fine-tune-input <what>', 'finetune: train the unfrozen top on images (the book) or on cached activations of the frozen part (fast, no augmentation)').choices(['images', 'cached-activations']))
    .option('--feature-cache-dir <dir>', 'where extracted features are cached (default <out>/../.feature-cache)')
    .option('--workers <n>', 'decode/augment worker threads', int)
    .option('--seed <n>', 'seed of shuffles, augmentation and initial weights', intOrZero)
    .option('--early-stopping <patience>', 'stop when val_loss has not improved for <patience> epochs', int)
    .option('--keep-best', 'save the best val_acc weights and restore them at the end')
    .option('--resume', "continue the run in --out from its last checkpoint (same settings, same total epochs)")
    .option('--debug-nan-at-step <n>', 'testing aid: make the loss NaN at this global step to exercise the NaN stop', int)
    .addOption(new Option('--debug-epoch-delay-ms <ms>', 'testing aid: pause after each epoch').argParser(intOrZero).hideHelp());
  return addBackendOptions(cmd);
}

/** Flags given on the command line (commander defaults excluded), as TrainConfig fields. */
function flagsOf(cmd: Command): Partial<TrainConfig> {
  const o = cmd.opts() as Record<string, unknown>;
  const given = (k: string) => o[k] !== undefined && cmd.getOptionValueSource(k) !== 'default';
  const out: Record<string, unknown> = {};
  const keys = [
    'data', 'out', 'preset', 'base', 'weights', 'weightsDir', 'inputSize', 'inputScaling', 'batchSize', 'epochs', 'stepsPerEpoch',
    'validationSteps', 'learningRate', 'dropout', 'augment', 'headUnits', 'headPooling', 'headTraining', 'headEpochs',
    'headLearningRate', 'headBatchSize', 'fineTuneFrom', 'fineTuneInput', 'featureCacheDir', 'workers', 'seed', 'earlyStopping', 'keepBest',
    'resume', 'backend', 'threads', 'debugNanAtStep', 'debugEpochDelayMs',
  ];
  for (const k of keys) if (given(k)) out[k] = o[k];
  for (const k of ['data', 'out', 'weightsDir', 'featureCacheDir']) if (typeof out[k] === 'string') out[k] = userPath(out[k] as string);
  if (typeof out.weights === 'string' && out.weights !== 'imagenet') out.weights = userPath(out.weights);
  return out as Partial<TrainConfig>;
}

function finish(code: number): never {
  process.exit(code);
}

const program = new Command('trainer')
  .description("Train and evaluate the book's cats-vs-dogs models (Deep Learning with Python, ch. 5)")
  .exitOverride()
  .showSuggestionAfterError()
  .configureOutput({ outputError: (str, write) => write(str.startsWith('error:') ? str : `error: ${str}`) });

for (const strategy of STRATEGIES) {
  addTrainOptions(program.command(strategy).description(STRATEGY_HELP[strategy])).action(async (_opts, cmd: Command) => {
    const flags = flagsOf(cmd);
    const configFile = (cmd.opts() as { config?: string }).config;
    const file = configFile ? await readExperimentFile(userPath(configFile)) : {};
    for (const k of ['data', 'out', 'weightsDir', 'featureCacheDir'] as const) if (typeof file[k] === 'string') file[k] = userPath(file[k] as string) as never;
    const config = resolveConfig({ strategy, flags, file });
    const result = await train(config);
    process.stdout.write(`${contractLine(result.metrics)}\n`);
  });
}

addBackendOptions(
  program
    .command('evaluate')
    .description('test accuracy and loss, confusion matrix and misclassified images of a saved model; ends with accuracy=… loss=… n=…')
    .requiredOption('--model <path>', 'run directory, model folder or model.json')
    .requiredOption('--data <url>', 'prepped dataset (its test split) or a plain folder: Kaggle flat layout (cat.N.jpg, dog.N.jpg) or class folders')
    .option('--batch-size <n>', 'batch size (default 32)', int)
    .option('--workers <n>', 'decode worker threads (default 2)', int)
    .addOption(new Option('--input-scaling <s>', "override the input scaling when the model has no run config beside it").choices(['unit', 'symmetric'])),
).action(async (opts: { model: string; data: string; batchSize?: number; workers?: number; inputScaling?: 'unit' | 'symmetric'; backend: 'auto'; threads?: number }) => {
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
  process.stderr.write(`error: unknown strategy "${operands[0]}" (valid: ${[...STRATEGIES, 'evaluate'].join(', ')})\n`);
  finish(2);
});

try {
  if (process.argv.length <= 2) {
    program.outputHelp();
    finish(2);
  }
  await program.parseAsync(process.argv);
  finish(0);
} catch (err) {
  if (err instanceof CommanderError) {
    finish(err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version' ? 0 : 2);
  }
  process.stderr.write(`error: ${formatError(err)}\n`);
  if (!(err instanceof UserError) && process.env.CATDOG_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
  finish(1);
}
