// The training configuration, declared once: every field's type, default, command-line flag, help text and
// experiment-file key come from FIELDS below. Strategy defaults and preset values live in each strategy's module
// (strategies/<name>.ts); precedence is flags > experiment file > preset > strategy defaults > FIELDS defaults.
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { UsageError, UserError } from '@catdog/errors';
import { BACKEND_REQUESTS } from '@catdog/backend';
import {
  BASE_NAMES,
  BASES,
  CONVNET_MIN_INPUT_SIZE,
  INPUT_SCALINGS as SCALINGS,
  type BaseName,
  type InputScalingName,
} from '@catdog/models';
import { STRATEGIES, STRATEGY_NAMES, type Strategy } from './strategies/index.js';
import { usesBase } from './strategy.js';

export { STRATEGY_NAMES, BASE_NAMES, type Strategy, type BaseName };
export const PRESETS = ['cpu-quick', 'ci-smoke'] as const;
export type PresetName = (typeof PRESETS)[number];

/** How a field appears on the command line. */
export interface FlagSpec {
  /** Commander's argument placeholder, e.g. '<n>'; absent for on/off switches. */
  arg?: string;
  /** A switch that also has a --no-<name> form (true/false/unset). */
  negatable?: boolean;
  /** Not shown in --help (test aids). */
  hidden?: boolean;
  /** Parses the flag's text (default: as is; numbers for number fields). */
  parse?: (text: string) => unknown;
}

export interface FieldSpec<S extends z.ZodType = z.ZodType> {
  schema: S;
  help: string;
  /** What a valid value is, for messages ("a positive integer"). */
  expected: string;
  /** The value when nothing sets it (strategy defaults and presets may). */
  default?: z.infer<S>;
  /** Command-line flag; absent: experiment files only. */
  flag?: FlagSpec;
  /** A local path or URL: relative paths are the user's (the CLI resolves them). */
  path?: boolean;
}

const field = <S extends z.ZodType>(schema: S, spec: Omit<FieldSpec<S>, 'schema'>): FieldSpec<S> => ({
  schema,
  ...spec,
});
const num = (text: string) => (text.trim() === '' ? NaN : Number(text));
const numOrAuto = (text: string) => (text === 'auto' ? null : num(text));
const positiveInt = z.number().int().positive();
const enumOf = <T extends string>(values: readonly T[]) => z.enum(values as [T, ...T[]]);
const oneOf = (values: readonly string[]) => `one of ${values.join(', ')}`;
const INPUT_SCALINGS = Object.keys(SCALINGS) as InputScalingName[];
/** A size: a byte count, or a number with a unit (k, M, G, T; KB/KiB alike: powers of 1024). */
const SIZE_PATTERN = /^\s*\d+(\.\d+)?\s*([kmgt]i?b?|b)?\s*$/i;

/** Bytes of a size given as a number or as text such as '2GiB' (SIZE_PATTERN); NaN when it is neither. */
export function parseSize(size: number | string): number {
  if (typeof size === 'number') return size;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|b)?\s*$/i.exec(size);
  if (!m) return Number.NaN;
  return Math.floor(Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] ?? ' ').toLowerCase()));
}

export const FIELDS = {
  strategy: field(enumOf(STRATEGY_NAMES), {
    help: 'the strategy (the trainer subcommand)',
    expected: oneOf(STRATEGY_NAMES),
  }),
  data: field(z.string(), {
    help: 'prepped dataset (directory or s3://bucket/prefix) written by prep split',
    expected: 'a directory or s3:// URL',
    flag: { arg: '<url>' },
    path: true,
    default: '',
  }),
  out: field(z.string(), {
    help: 'run directory to write, local or s3://bucket/prefix (model/, config.json, history.json, metrics.json, curves/, …)',
    expected: 'a directory or s3:// URL',
    flag: { arg: '<dir>' },
    path: true,
    default: '',
  }),
  preset: field(enumOf(PRESETS).optional(), {
    help: 'cpu-quick: shortened recipes for a 2-core CPU; ci-smoke: tiny images, few steps',
    expected: oneOf(PRESETS),
    flag: { arg: '<name>' },
  }),
  base: field(enumOf(BASE_NAMES).optional(), {
    help: `conv base for transfer strategies: ${BASE_NAMES.join(' | ')} (default mobilenet_v2)`,
    expected: oneOf(BASE_NAMES),
    flag: { arg: '<name>' },
  }),
  weights: field(z.string().optional(), {
    help: "base weights: imagenet | <file.h5> | <tfjs folder or s3 URL> (default: the shared MobileNetV2 weights, Keras' file for VGG16)",
    expected: 'imagenet, a file or a folder',
    flag: { arg: '<w>' },
    path: true,
  }),
  weightsDir: field(z.string().optional(), {
    help: 'folder holding mobilenet_v2_1.0_224/ and mobilenet_v2_0.35_224/ (default $CATDOG_WEIGHTS_DIR, else ../shared/weights beside the workspace)',
    expected: 'a folder',
    flag: { arg: '<dir>' },
    path: true,
  }),
  inputSize: field(positiveInt.min(32), {
    help: 'image side in pixels (default 150)',
    expected: 'an integer >= 32',
    flag: { arg: '<n>', parse: num },
  }),
  inputScaling: field(enumOf(INPUT_SCALINGS).optional(), {
    help: `${INPUT_SCALINGS.map((k) => `${k} = ${SCALINGS[k].formula}`).join(', ')} (default: by base)`,
    expected: oneOf(INPUT_SCALINGS),
    flag: { arg: '<s>' },
  }),
  batchSize: field(positiveInt, {
    help: 'batch size',
    expected: 'a positive integer',
    flag: { arg: '<n>', parse: num },
  }),
  epochs: field(positiveInt, {
    help: 'epochs (finetune: of the fine-tuning phase)',
    expected: 'a positive integer',
    flag: { arg: '<n>', parse: num },
  }),
  stepsPerEpoch: field(positiveInt.nullable(), {
    help: "training steps per epoch, or 'auto' for one pass over the train split",
    expected: "a positive integer or null ('auto')",
    flag: { arg: '<n>', parse: numOrAuto },
  }),
  validationSteps: field(positiveInt.nullable(), {
    help: "validation steps per epoch, or 'auto' for one pass",
    expected: "a positive integer or null ('auto')",
    flag: { arg: '<n>', parse: numOrAuto },
  }),
  optimizer: field(z.literal('rmsprop'), {
    help: 'the optimizer (the book: RMSprop)',
    expected: 'rmsprop',
    default: 'rmsprop',
  }),
  learningRate: field(z.number().positive(), {
    help: 'RMSprop learning rate',
    expected: 'a positive number',
    flag: { arg: '<x>', parse: num },
  }),
  // Not chosen: the class count decides (classifierOutput); config.json records the one the run trained with.
  loss: field(z.enum(['binary_crossentropy', 'sparse_categorical_crossentropy']), {
    help: 'the loss: binary crossentropy for two classes (the book), sparse categorical crossentropy for more',
    expected: 'binary_crossentropy or sparse_categorical_crossentropy',
    default: 'binary_crossentropy',
  }),
  dropout: field(z.number().min(0).lt(1), {
    help: 'dropout rate of the convnet (augmented) or of the head',
    expected: 'in [0, 1)',
    flag: { arg: '<x>', parse: num },
  }),
  augment: field(z.union([z.boolean(), z.record(z.string(), z.unknown())]), {
    help: "augment training batches with the book's ImageDataGenerator settings (an object in an experiment file overrides single settings)",
    expected: 'true, false or an object of augmentation settings',
    flag: { negatable: true },
  }),
  headUnits: field(positiveInt, {
    help: "units of the head's hidden Dense layer",
    expected: 'a positive integer',
    default: 256,
    flag: { arg: '<n>', parse: num },
  }),
  headPooling: field(enumOf(['flatten', 'avg'] as const), {
    help: 'flatten (the book) or avg (GlobalAveragePooling2D) before the head',
    expected: 'one of flatten, avg',
    default: 'flatten',
    flag: { arg: '<p>' },
  }),
  headTraining: field(enumOf(['end-to-end', 'features'] as const), {
    help: 'finetune: train the head end to end (the book) or on cached features (fast); extract-augmented: features adds a head phase on cached features before the augmented epochs',
    expected: 'one of end-to-end, features',
    default: 'end-to-end',
    flag: { arg: '<how>' },
  }),
  headEpochs: field(z.number().int().min(0), {
    help: 'finetune, extract-augmented: epochs of the head phase (0 skips it)',
    expected: 'an integer >= 0',
    default: 30,
    flag: { arg: '<n>', parse: num },
  }),
  headLearningRate: field(z.number().positive(), {
    help: 'finetune, extract-augmented: learning rate of the head phase',
    expected: 'a positive number',
    default: 2e-5,
    flag: { arg: '<x>', parse: num },
  }),
  headBatchSize: field(positiveInt, {
    help: 'finetune, extract-augmented: batch size of the head phase on cached features',
    expected: 'a positive integer',
    default: 20,
    flag: { arg: '<n>', parse: num },
  }),
  fineTuneFrom: field(z.string().optional(), {
    help: 'finetune: first layer of the base to unfreeze (default: block5_conv1 for VGG16, block_13_expand for MobileNetV2)',
    expected: 'a layer name',
    flag: { arg: '<layer>' },
  }),
  fineTuneInput: field(enumOf(['images', 'cached-activations'] as const), {
    help: 'finetune: train the unfrozen top on images (the book) or on cached activations of the frozen part (fast, no augmentation)',
    expected: 'one of images, cached-activations',
    default: 'images',
    flag: { arg: '<what>' },
  }),
  featureCacheDir: field(z.string().optional(), {
    help: 'where extracted features are cached (default <out>/../.feature-cache; with an s3:// --out, features/ in $CATDOG_CACHE_DIR, else ~/.cache/catdog)',
    expected: 'a directory',
    flag: { arg: '<dir>' },
    path: true,
  }),
  cacheDir: field(z.string().optional(), {
    help: 'shard cache: verified shards of the dataset are kept here, so later epochs, feeds and runs read them from disk instead of S3 (default: no cache)',
    expected: 'a directory',
    flag: { arg: '<dir>' },
    path: true,
  }),
  cacheLimit: field(z.union([positiveInt, z.string().regex(SIZE_PATTERN)]).optional(), {
    help: 'most bytes the shard cache may hold, e.g. 2GiB or 500MB (least recently used shards evicted; default: no limit)',
    expected: 'a size such as 2GiB, 500MB or a byte count',
    flag: { arg: '<size>' },
  }),
  memoryBudget: field(z.union([positiveInt, z.string().regex(SIZE_PATTERN)]).optional(), {
    help: 'a split whose shards hold more than this, e.g. 160MiB, is streamed a window of shards at a time instead of read into memory (default 512MiB)',
    expected: 'a size such as 160MiB, 1GB or a byte count',
    flag: { arg: '<size>' },
  }),
  skipCorrupt: field(z.boolean().default(false), {
    help: "skip a missing or corrupt shard met mid-epoch instead of failing (each skip warned and listed in the run's skipped-shards.json)",
    expected: 'true or false',
    default: false,
    flag: {},
  }),
  workers: field(positiveInt, {
    help: 'decode/augment worker threads',
    expected: 'a positive integer',
    default: 2,
    flag: { arg: '<n>', parse: num },
  }),
  augmentService: field(
    z
      .string()
      .regex(/^[^\s,]+:\d+(,[^\s,]+:\d+)*$/)
      .optional(),
    {
      help: 'make the image batches on augmentation servers (augment serve): host:port[,host:port…], or a DNS name resolving to several (default: in process)',
      expected: 'host:port[,host:port…]',
      flag: { arg: '<host:port,…>' },
    },
  ),
  tokenFile: field(z.string().optional(), {
    help: "file holding the augmentation service's token (default $CATDOG_AUGMENT_TOKEN)",
    expected: 'a file',
    flag: { arg: '<file>' },
    path: true,
  }),
  // Appended to batch by batch: a local file only (an s3:// value would become a local folder named "s3:").
  batchDigests: field(
    z
      .string()
      .regex(/^(?![a-z][a-z0-9+.-]*:\/\/)/i)
      .optional(),
    {
      help: 'append one JSON line per training batch to this local file: its pass, index and the sha256 of its images and labels (to compare runs batch for batch)',
      expected: 'a local file (not a URL)',
      flag: { arg: '<file.jsonl>' },
      path: true,
    },
  ),
  seed: field(z.number().int().min(0), {
    help: 'seed of shuffles, augmentation and initial weights',
    expected: 'an integer >= 0',
    default: 1337,
    flag: { arg: '<n>', parse: num },
  }),
  earlyStopping: field(positiveInt.nullable(), {
    help: 'stop when val_loss has not improved for <patience> epochs',
    expected: 'a positive integer (patience in epochs) or null',
    default: null,
    flag: { arg: '<patience>', parse: num },
  }),
  keepBest: field(z.boolean(), {
    help: 'save the best val_acc weights and restore them at the end',
    expected: 'true or false',
    default: false,
    flag: {},
  }),
  resume: field(z.boolean(), {
    help: 'continue the run in --out from its last checkpoint (same settings, same total epochs)',
    expected: 'true or false',
    default: false,
    flag: {},
  }),
  checkpointEvery: field(positiveInt.nullable().default(null), {
    help: 'also checkpoint every <steps> training steps (weights, optimizer state, step, stream positions), so --resume loses at most that many; checkpoints are always written at epoch ends',
    expected: 'a positive integer (steps) or null',
    default: null,
    flag: { arg: '<steps>', parse: num },
  }),
  s3Endpoint: field(z.string().optional(), {
    help: 'S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)',
    expected: 'a URL',
    flag: { arg: '<url>' },
  }),
  s3Region: field(z.string().optional(), {
    help: 'S3 region (default: AWS_REGION / shared config; us-east-1 with a custom endpoint)',
    expected: 'a region name',
    flag: { arg: '<region>' },
  }),
  s3Profile: field(z.string().optional(), {
    help: 'S3 shared config profile (default: AWS_PROFILE)',
    expected: 'a profile name',
    flag: { arg: '<name>' },
  }),
  s3PathStyle: field(z.boolean().optional(), {
    help: 'S3 path-style addressing: true or false (default: on with a custom endpoint)',
    expected: 'true or false',
    flag: { arg: '<bool>', parse: (t) => (t === 'true' ? true : t === 'false' ? false : t) },
  }),
  backend: field(enumOf(BACKEND_REQUESTS), {
    help: 'tfjs backend: auto picks tfjs-node-gpu, then tfjs-node, then wasm, then cpu',
    expected: oneOf(BACKEND_REQUESTS),
    default: 'auto',
    flag: { arg: '<name>' },
  }),
  threads: field(positiveInt.optional(), {
    help: 'threads for the backend (default: $CATDOG_THREADS, else all available cores)',
    expected: 'a positive integer',
    flag: { arg: '<n>', parse: num },
  }),
  debugNanAtStep: field(positiveInt.optional(), {
    help: 'test aid: make the loss NaN at this global step (1-based) to exercise the NaN stop',
    expected: 'a positive integer',
    flag: { arg: '<n>', parse: num, hidden: true },
  }),
  debugEpochDelayMs: field(z.number().int().min(0).optional(), {
    help: "test aid: pause this many ms after each epoch's checkpoint",
    expected: 'an integer >= 0',
    flag: { arg: '<ms>', parse: num, hidden: true },
  }),
};

type Fields = typeof FIELDS;
export type FieldName = keyof Fields;
export const FIELD_NAMES = Object.keys(FIELDS) as FieldName[];

/** The resolved configuration of a run (config.json holds it, plus what the run found). */
export const TrainConfigSchema = z.strictObject(
  Object.fromEntries(FIELD_NAMES.map((k) => [k, FIELDS[k].schema])) as { [K in FieldName]: Fields[K]['schema'] },
);
export type TrainConfig = z.infer<typeof TrainConfigSchema>;
export type InputScaling = InputScalingName;

/** The command-line flag of a field: inputSize → --input-size. */
export const flagName = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
const camel = (key: string): string => key.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The schema's defaults (fields that have one). */
const FIELD_DEFAULTS = Object.fromEntries(
  FIELD_NAMES.filter((k) => 'default' in FIELDS[k]).map((k) => [k, FIELDS[k].default]),
) as Partial<TrainConfig>;

/** The book's settings per strategy (Deep Learning with Python, 5.2–5.3), from each strategy's module. */
export const STRATEGY_DEFAULTS = Object.fromEntries(
  STRATEGY_NAMES.map((name) => {
    const { strategy: _s, data: _d, out: _o, ...rest } = FIELD_DEFAULTS;
    return [name, { ...rest, ...STRATEGIES[name].defaults }];
  }),
) as Record<Strategy, Omit<TrainConfig, 'data' | 'out' | 'strategy'>>;

/** Preset values for every strategy; each strategy's module adds its own (`presets`). */
const PRESET_COMMON: Record<PresetName, Partial<TrainConfig>> = {
  // cpu-quick: shortened recipes for a 2-core CPU that keep the book's ranking (the strategies say how).
  'cpu-quick': {},
  // ci-smoke: tiny images, a few steps.
  'ci-smoke': {
    inputSize: 64,
    epochs: 4,
    stepsPerEpoch: null,
    validationSteps: null,
    batchSize: 10,
    workers: 1,
    headEpochs: 3,
    headBatchSize: 10,
  },
};

/** A preset's values for one strategy. */
export function presetValues(preset: PresetName, strategy: Strategy): Partial<TrainConfig> {
  return { ...PRESET_COMMON[preset], ...STRATEGIES[strategy].presets?.[preset] };
}

/** Why `value` is not a valid `key`, in the words the user wrote it (`where` names the source). */
function badValue(key: FieldName, value: unknown, where: string): string {
  const spec: FieldSpec = FIELDS[key];
  const shown = JSON.stringify(value);
  if (
    spec.schema instanceof z.ZodEnum ||
    (spec.schema instanceof z.ZodOptional && spec.schema.unwrap() instanceof z.ZodEnum)
  ) {
    return `${where}unknown ${key} ${shown} (valid: ${spec.expected.replace(/^one of /, '')})`;
  }
  return `${where}${key} must be ${spec.expected}, got ${shown}`;
}

/** Maps keys of an experiment file (camelCase, kebab-case or snake_case) to field names; unknown keys are errors. */
export function normalizeKeys(obj: Record<string, unknown>, where: string): Partial<TrainConfig> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = k in FIELDS ? k : camel(k);
    if (!(key in FIELDS) || key === 'strategy') {
      throw new UserError(
        `${where}: unknown option "${k}" (valid: ${FIELD_NAMES.filter((f) => f !== 'strategy').join(', ')})`,
        { code: 'bad-config' },
      );
    }
    if (v !== undefined) out[key] = v;
  }
  return out as Partial<TrainConfig>;
}

/** Reads an experiment file (JSON or YAML); keys are field names (kebab-case and snake_case accepted), values are checked. */
export async function readExperimentFile(file: string): Promise<Partial<TrainConfig>> {
  const where = `experiment file ${file}`;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`${where}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : String(err)}`, {
      code: 'bad-config',
    });
  }
  const json = extname(file).toLowerCase() === '.json';
  let value: unknown;
  try {
    value = json ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new UserError(`${where}: not valid ${json ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`, {
      code: 'bad-config',
    });
  }
  if (value == null) return {};
  if (typeof value !== 'object' || Array.isArray(value))
    throw new UserError(`${where}: expected a mapping of option names to values`, { code: 'bad-config' });
  const values = normalizeKeys(value as Record<string, unknown>, where);
  checkValues(values, `${where}: `, UserError);
  return values;
}

/** Checks each given value against its field's schema; the first bad one is reported naming the field. */
function checkValues(values: Partial<TrainConfig>, where: string, As: typeof UserError | typeof UsageError): void {
  for (const [key, value] of Object.entries(values) as [FieldName, unknown][]) {
    if (value === undefined) continue;
    if (!FIELDS[key].schema.safeParse(value).success) throw new As(badValue(key, value, where), { code: 'bad-config' });
  }
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
  if (!(STRATEGY_NAMES as readonly string[]).includes(strategy)) {
    throw new UsageError(`unknown strategy "${strategy}" (valid: ${STRATEGY_NAMES.join(', ')}, evaluate)`);
  }
  const s = strategy as Strategy;
  checkValues(file, '', UserError);
  checkValues(flags, '', UsageError);
  const presetName = flags.preset ?? file.preset;
  const preset = presetName ? presetValues(presetName, s) : {};
  const defined = (o: Partial<TrainConfig>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  const merged = {
    ...FIELD_DEFAULTS,
    ...STRATEGY_DEFAULTS[s],
    ...defined(preset),
    ...defined(file),
    ...defined(flags),
    strategy: s,
  } as TrainConfig;
  if (presetName !== undefined) merged.preset = presetName;
  return validate(merged);
}

/** The rules that span fields; the schema checks each field. */
function validate(c: TrainConfig): TrainConfig {
  // A resumed run takes its dataset from its own config.json unless --data moves it.
  if (!c.data && !c.resume) throw new UsageError('missing --data <prepped dataset directory or s3:// URL>');
  if (!c.out) throw new UsageError('missing --out <run directory>');
  const strategy = STRATEGIES[c.strategy];
  if (usesBase(strategy)) {
    if (!c.base)
      throw new UserError(`unknown base "${c.base}" (valid: ${BASE_NAMES.join(', ')})`, { code: 'bad-config' });
  } else {
    delete c.base;
  }
  const parsed = TrainConfigSchema.safeParse(c);
  if (!parsed.success) {
    const key = parsed.error.issues[0].path[0] as FieldName | undefined;
    if (key && key in FIELDS)
      throw new UserError(badValue(key, (c as Record<string, unknown>)[key], ''), { code: 'bad-config' });
    throw new UserError(`invalid configuration: ${parsed.error.issues[0].message}`, { code: 'bad-config' });
  }
  const minSize = c.base ? BASES[c.base].minInputSize : CONVNET_MIN_INPUT_SIZE;
  if (c.inputSize < minSize) {
    throw new UsageError(
      `inputSize ${c.inputSize} is too small for ${c.base ?? "the book's convnet"}: it needs at least ${minSize} (--input-size)`,
    );
  }
  if (c.strategy === 'finetune' && c.fineTuneInput === 'cached-activations' && c.augment) {
    throw new UserError(
      'fineTuneInput cached-activations caches each image once, so it cannot augment: pass --no-augment or --fine-tune-input images',
      { code: 'bad-config' },
    );
  }
  if (!c.inputScaling) c.inputScaling = c.base ? BASES[c.base].scaling : 'unit';
  return c;
}

/** The experiment-file keys with their types and help, as documented in docs/ARCHITECTURE.md ("Experiment files"). */
export function experimentFileKeys(): {
  key: FieldName;
  flag: string | null;
  expected: string;
  default: unknown;
  help: string;
}[] {
  return FIELD_NAMES.filter((k) => k !== 'strategy').map((k) => {
    const spec: FieldSpec = FIELDS[k];
    return {
      key: k,
      flag: spec.flag ? flagName(k) : null,
      expected: spec.expected,
      default: spec.default,
      help: spec.help,
    };
  });
}

/** The experiment-file keys as the Markdown table docs/ARCHITECTURE.md carries (a test keeps the two equal). */
export function experimentFileTable(): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  const rows = experimentFileKeys().map(
    (k) =>
      `| \`${k.key}\` | ${k.flag ? `\`${k.flag}\`` : '—'} | ${cell(k.expected)} | ${k.default === undefined ? 'by strategy' : `\`${JSON.stringify(k.default)}\``} | ${cell(k.help)} |`,
  );
  return ['| key | flag | value | default | what |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
}
