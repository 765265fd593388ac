// Training configuration: the book's defaults per strategy, presets, experiment files and their precedence
// (flags > experiment file > preset > strategy defaults).
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { UserError } from '@catdog/errors';

export const STRATEGIES = ['scratch', 'augmented', 'extract', 'extract-augmented', 'finetune'] as const;
export type Strategy = (typeof STRATEGIES)[number];
export const BASES = ['vgg16', 'mobilenet_v2', 'mobilenet_v2_0.35'] as const;
export type BaseName = (typeof BASES)[number];
export const PRESETS = ['cpu-quick', 'ci-smoke'] as const;
export type PresetName = (typeof PRESETS)[number];

/** How pixels (0..255) are scaled before entering the model. */
export type InputScaling = 'unit' | 'symmetric';

export interface TrainConfig {
  strategy: Strategy;
  /** Prepped dataset (directory or s3:// URL). */
  data: string;
  /** Run directory. */
  out: string;
  preset?: PresetName;
  /** Transfer strategies only. */
  base?: BaseName;
  /** 'imagenet' | path to a Keras .h5 file | tfjs layers-model folder; default: the shared weights for MobileNetV2, imagenet for VGG16. */
  weights?: string;
  weightsDir?: string;
  inputSize: number;
  /** 'unit' = x/255 (the book, VGG16, convnet), 'symmetric' = x/127.5-1 (MobileNetV2). Derived from the base when unset. */
  inputScaling?: InputScaling;
  batchSize: number;
  epochs: number;
  /** Steps per epoch; null = one pass over the training split. */
  stepsPerEpoch: number | null;
  /** Validation steps per epoch; null = one pass over the validation split. */
  validationSteps: number | null;
  optimizer: 'rmsprop';
  learningRate: number;
  loss: 'binary_crossentropy';
  /** Dropout of the convnet (augmented) or of the dense head. */
  dropout: number;
  /** true = the book's ImageDataGenerator settings (BOOK_AUGMENTATION); an object overrides single fields. */
  augment: boolean | Record<string, unknown>;
  headUnits: number;
  /** 'flatten' = the book's Flatten head, 'avg' = GlobalAveragePooling2D before the dense layers. */
  headPooling: 'flatten' | 'avg';
  /** finetune: how the head is trained before unfreezing: 'end-to-end' (the book, augmented batches through the frozen base) or 'features' (on cached base features, fast). */
  headTraining: 'end-to-end' | 'features';
  headEpochs: number;
  headLearningRate: number;
  headBatchSize: number;
  /** finetune: layer from which the base is unfrozen; default FINE_TUNE_FROM[base]. */
  fineTuneFrom?: string;
  /**
   * finetune: what the fine-tuning phase trains on: 'images' (the book: every step runs the whole base) or
   * 'cached-activations' (the frozen lower part runs once per image and its output, the input of fineTuneFrom,
   * is cached; each step then runs only the unfrozen top). Exact for frozen layers; needs augment off.
   */
  fineTuneInput: 'images' | 'cached-activations';
  featureCacheDir?: string;
  workers: number;
  seed: number;
  earlyStopping: number | null;
  keepBest: boolean;
  resume: boolean;
  backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  threads?: number;
  /** Test-only: replace the loss with NaN at this global training step (1-based) to exercise the NaN stop. */
  debugNanAtStep?: number;
  /** Test-only: pause this many ms after each epoch's checkpoint (lets a test kill the process between epochs). */
  debugEpochDelayMs?: number;
}

const COMMON = {
  optimizer: 'rmsprop' as const,
  loss: 'binary_crossentropy' as const,
  workers: 2,
  seed: 1337,
  earlyStopping: null,
  keepBest: false,
  resume: false,
  backend: 'auto' as const,
  headUnits: 256,
  headPooling: 'flatten' as const,
  headTraining: 'end-to-end' as const,
  headEpochs: 30,
  headLearningRate: 2e-5,
  headBatchSize: 20,
  fineTuneInput: 'images' as const,
};

/** The book's settings (Deep Learning with Python, 5.2–5.3). */
export const STRATEGY_DEFAULTS: Record<Strategy, Omit<TrainConfig, 'data' | 'out' | 'strategy'>> = {
  scratch: { ...COMMON, inputSize: 150, batchSize: 20, epochs: 30, stepsPerEpoch: 100, validationSteps: 50, learningRate: 1e-4, dropout: 0, augment: false },
  augmented: { ...COMMON, inputSize: 150, batchSize: 32, epochs: 100, stepsPerEpoch: 100, validationSteps: 50, learningRate: 1e-4, dropout: 0.5, augment: true },
  extract: { ...COMMON, base: 'mobilenet_v2', inputSize: 150, batchSize: 20, epochs: 30, stepsPerEpoch: 100, validationSteps: 50, learningRate: 2e-5, dropout: 0.5, augment: false },
  'extract-augmented': { ...COMMON, base: 'mobilenet_v2', inputSize: 150, batchSize: 20, epochs: 30, stepsPerEpoch: 100, validationSteps: 50, learningRate: 2e-5, dropout: 0.5, augment: true },
  finetune: { ...COMMON, base: 'mobilenet_v2', inputSize: 150, batchSize: 20, epochs: 100, stepsPerEpoch: 100, validationSteps: 50, learningRate: 1e-5, dropout: 0.5, augment: true },
};

/**
 * Presets. cpu-quick: minutes on 2 cores. For the transfer strategies the head is trained on cached,
 * globally pooled MobileNetV2 features (a linear-probe-like head reaches ~97% on its own), then a few
 * fine-tune epochs at a low learning rate polish the top block. ci-smoke: tiny images, a few steps.
 */
export const PRESET_VALUES: Record<PresetName, Partial<Record<Strategy | '*', Partial<TrainConfig>>>> = {
  'cpu-quick': {
    scratch: { inputSize: 96, epochs: 12, stepsPerEpoch: null, validationSteps: null, learningRate: 5e-4 },
    augmented: { inputSize: 96, epochs: 20, stepsPerEpoch: null, validationSteps: null, learningRate: 5e-4, batchSize: 32 },
    // Transfer strategies see MobileNetV2 at its ImageNet resolution: on the book's split, finetune measured
    // 97.3% test accuracy at 160 px and 98.1% at 224 px (BENCHMARKS.md), for about 1 more minute on 2 cores.
    extract: { inputSize: 224, epochs: 20, stepsPerEpoch: null, validationSteps: null, headPooling: 'avg', learningRate: 1e-3, batchSize: 32 },
    'extract-augmented': { inputSize: 128, epochs: 3, stepsPerEpoch: null, validationSteps: null, headPooling: 'avg', learningRate: 1e-3, batchSize: 32 },
    finetune: {
      inputSize: 224, headPooling: 'avg', headTraining: 'features', headEpochs: 20, headLearningRate: 1e-3, headBatchSize: 32,
      fineTuneInput: 'cached-activations', epochs: 2, stepsPerEpoch: null, validationSteps: null, learningRate: 1e-5, batchSize: 32, augment: false,
      keepBest: true,
    },
  },
  'ci-smoke': {
    '*': { inputSize: 64, epochs: 4, stepsPerEpoch: null, validationSteps: null, batchSize: 10, workers: 1, headEpochs: 3, headBatchSize: 10 },
    // Enough steps for the convnet to (over)fit 40 tiny images: the smoke test asserts that it learns.
    scratch: { learningRate: 1e-3, batchSize: 8, epochs: 24 },
    augmented: { learningRate: 1e-3 },
    extract: { inputSize: 96, learningRate: 1e-3, headPooling: 'avg' },
    'extract-augmented': { inputSize: 96, epochs: 2, learningRate: 1e-3, headPooling: 'avg' },
    finetune: { inputSize: 96, epochs: 1, headTraining: 'features', headLearningRate: 1e-3, headPooling: 'avg', augment: false, fineTuneInput: 'cached-activations' },
  },
};

/** Reads an experiment file (JSON or YAML); keys are TrainConfig field names (kebab-case accepted). */
export async function readExperimentFile(file: string): Promise<Partial<TrainConfig>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`experiment file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : String(err)}`);
  }
  let value: unknown;
  try {
    value = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new UserError(`experiment file ${file}: not valid ${extname(file).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (value == null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new UserError(`experiment file ${file}: expected a mapping of option names to values`);
  return normalizeKeys(value as Record<string, unknown>, `experiment file ${file}`);
}

const KNOWN_KEYS = new Set<string>([
  'strategy', 'data', 'out', 'preset', 'base', 'weights', 'weightsDir', 'inputSize', 'inputScaling', 'batchSize', 'epochs',
  'stepsPerEpoch', 'validationSteps', 'optimizer', 'learningRate', 'loss', 'dropout', 'augment', 'headUnits', 'headPooling',
  'headTraining', 'headEpochs', 'headLearningRate', 'headBatchSize', 'fineTuneFrom', 'fineTuneInput', 'featureCacheDir', 'workers', 'seed',
  'earlyStopping', 'keepBest', 'resume', 'backend', 'threads', 'debugNanAtStep', 'debugEpochDelayMs',
]);

function camel(key: string): string {
  return key.replace(/[-_]([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function normalizeKeys(obj: Record<string, unknown>, where: string): Partial<TrainConfig> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = KNOWN_KEYS.has(k) ? k : camel(k);
    if (!KNOWN_KEYS.has(key)) throw new UserError(`${where}: unknown option "${k}" (valid: ${[...KNOWN_KEYS].join(', ')})`);
    if (v !== undefined) out[key] = v;
  }
  return out as Partial<TrainConfig>;
}

export interface ResolveInputs {
  strategy: string;
  /** Values given on the command line (undefined = not given). */
  flags?: Partial<TrainConfig>;
  /** Values from the experiment file. */
  file?: Partial<TrainConfig>;
}

/** Merges strategy defaults < preset < experiment file < flags, validates, and returns the resolved config. */
export function resolveConfig({ strategy, flags = {}, file = {} }: ResolveInputs): TrainConfig {
  if (!(STRATEGIES as readonly string[]).includes(strategy)) {
    throw new UserError(`unknown strategy "${strategy}" (valid: ${STRATEGIES.join(', ')}, evaluate)`);
  }
  const s = strategy as Strategy;
  const presetName = flags.preset ?? file.preset;
  let preset: Partial<TrainConfig> = {};
  if (presetName !== undefined) {
    const p = PRESET_VALUES[presetName as PresetName];
    if (!p) throw new UserError(`unknown preset "${presetName}" (valid: ${PRESETS.join(', ')})`);
    preset = { ...p['*'], ...p[s] };
  }
  const defined = (o: Partial<TrainConfig>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  const merged = { ...STRATEGY_DEFAULTS[s], ...defined(preset), ...defined(file), ...defined(flags), strategy: s } as TrainConfig;
  if (presetName !== undefined) merged.preset = presetName as PresetName;
  // A base given explicitly overrides the preset's base choice only; other preset values stay.
  validate(merged);
  return merged;
}

function validate(c: TrainConfig): void {
  // A resumed run takes its dataset from its own config.json unless --data moves it.
  if (!c.data && !c.resume) throw new UserError('missing --data <prepped dataset directory or s3:// URL>');
  if (!c.out) throw new UserError('missing --out <run directory>');
  const transfer = c.strategy !== 'scratch' && c.strategy !== 'augmented';
  if (transfer) {
    if (!c.base || !(BASES as readonly string[]).includes(c.base)) {
      throw new UserError(`unknown base "${c.base}" (valid: ${BASES.join(', ')})`);
    }
  } else {
    delete c.base;
  }
  const positiveInt = (name: keyof TrainConfig, nullable = false) => {
    const v = c[name] as unknown;
    if (nullable && v === null) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new UserError(`${String(name)} must be a positive integer${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
  };
  positiveInt('inputSize');
  positiveInt('batchSize');
  positiveInt('epochs');
  positiveInt('stepsPerEpoch', true);
  positiveInt('validationSteps', true);
  positiveInt('workers');
  positiveInt('headBatchSize');
  if (!(typeof c.headEpochs === 'number' && Number.isInteger(c.headEpochs) && c.headEpochs >= 0)) throw new UserError(`headEpochs must be an integer >= 0, got ${JSON.stringify(c.headEpochs)}`);
  if (c.inputSize < 32) throw new UserError(`inputSize must be at least 32, got ${c.inputSize}`);
  for (const k of ['learningRate', 'headLearningRate'] as const) {
    if (typeof c[k] !== 'number' || !(c[k] > 0)) throw new UserError(`${k} must be a positive number, got ${JSON.stringify(c[k])}`);
  }
  if (typeof c.dropout !== 'number' || c.dropout < 0 || c.dropout >= 1) throw new UserError(`dropout must be in [0, 1), got ${JSON.stringify(c.dropout)}`);
  if (c.optimizer !== 'rmsprop') throw new UserError(`optimizer "${c.optimizer}" is not supported (valid: rmsprop)`);
  if (c.loss !== 'binary_crossentropy') throw new UserError(`loss "${c.loss}" is not supported (valid: binary_crossentropy)`);
  if (c.headPooling !== 'flatten' && c.headPooling !== 'avg') throw new UserError(`headPooling must be flatten or avg, got ${JSON.stringify(c.headPooling)}`);
  if (c.headTraining !== 'end-to-end' && c.headTraining !== 'features') throw new UserError(`headTraining must be end-to-end or features, got ${JSON.stringify(c.headTraining)}`);
  if (c.fineTuneInput !== 'images' && c.fineTuneInput !== 'cached-activations') throw new UserError(`fineTuneInput must be images or cached-activations, got ${JSON.stringify(c.fineTuneInput)}`);
  if (c.strategy === 'finetune' && c.fineTuneInput === 'cached-activations' && c.augment) {
    throw new UserError('fineTuneInput cached-activations caches each image once, so it cannot augment: pass --no-augment or --fine-tune-input images');
  }
  if (c.inputScaling !== undefined && c.inputScaling !== 'unit' && c.inputScaling !== 'symmetric') throw new UserError(`inputScaling must be unit or symmetric, got ${JSON.stringify(c.inputScaling)}`);
  if (c.earlyStopping !== null && !(Number.isInteger(c.earlyStopping) && c.earlyStopping > 0)) throw new UserError(`earlyStopping must be a positive integer (patience in epochs), got ${JSON.stringify(c.earlyStopping)}`);
  if (!['auto', 'tensorflow', 'wasm', 'cpu'].includes(c.backend)) throw new UserError(`unknown backend "${c.backend}" (valid: auto, tensorflow, wasm, cpu)`);
  if (!c.inputScaling) c.inputScaling = c.base?.startsWith('mobilenet') ? 'symmetric' : 'unit';
}
