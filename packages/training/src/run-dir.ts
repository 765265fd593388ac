// The run directory: what the trainer writes, evaluate adds and the report reads (docs/ARCHITECTURE.md, "Run
// directory"). One owner for the format: the schemas (types + validation), the file names, read and write, over
// @catdog/storage (a local folder or s3://bucket/prefix). Files are written whole (Storage.write is atomic), and
// checkpoints are switched by rewriting one pointer file, so there is never a moment without a checkpoint.
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { UserError } from '@catdog/errors';
import { isNotFound, openStorage, resolveLocation, type Storage } from '@catdog/storage';
import { loadLayersModelFrom, saveLayersModelTo } from '@catdog/models';
import { TrainConfigSchema } from './config.js';

const num = z.number();
const count = z.number().int().min(0);

/** history.json: one entry per epoch in every series (Keras' History.history plus epoch, timing and phase). */
export const HistorySchema = z.strictObject({
  epoch: z.array(count),
  loss: z.array(num),
  acc: z.array(num),
  val_loss: z.array(num.nullable()),
  val_acc: z.array(num.nullable()),
  seconds: z.array(num),
  images_per_s: z.array(num),
  /** The strategy's phase of each epoch ('train', or 'head' / 'finetune' for finetune). */
  phase: z.array(z.string()),
});
export type History = z.infer<typeof HistorySchema>;

export const MisclassifiedSchema = z.strictObject({
  key: z.string(),
  /** True label: index into `classes` (two classes: 0 = cats, 1 = dogs). */
  label: count,
  /** Two classes: the model's probability of class 1 (the sigmoid output). More: the probability of `predicted`. */
  probability: num,
  /** The predicted class (index into `classes`); written for three or more classes (two: 1 − label). */
  predicted: count.optional(),
  /** Thumbnail, relative to the run directory. */
  image: z.string().optional(),
  /** Grad-CAM overlay of the predicted class (why the model erred), relative to the run directory. */
  heatmap: z.string().optional(),
});
export type Misclassified = z.infer<typeof MisclassifiedSchema>;

/** Precision and recall of one class (one-vs-rest); null when undefined (nothing predicted / no such images). */
export const ClassMetricsSchema = z.strictObject({
  class: z.string(),
  precision: num.nullable(),
  recall: num.nullable(),
  /** Test images of this class. */
  support: count,
});
export type ClassMetrics = z.infer<typeof ClassMetricsSchema>;

const squareConfusion = (m: { confusion: number[][]; classes: string[] }) =>
  m.confusion.length === m.classes.length && m.confusion.every((r) => r.length === m.classes.length);
const CONFUSION_SHAPE = { message: 'confusion must be classes × classes', path: ['confusion'] };

/** Test metrics of a model on one dataset. */
export const TestMetricsSchema = z
  .strictObject({
    accuracy: num,
    loss: num,
    n: count,
    /**
     * N×N counts, rows: true class, columns: predicted (classes order). Two classes: [[tn, fp], [fn, tp]] with
     * class 1 (dogs) as positive.
     */
    confusion: z.array(z.array(count)),
    classes: z.array(z.string()),
    /** Per class (classes order): precision and recall. Absent in runs written before it was recorded. */
    perClass: z.array(ClassMetricsSchema).optional(),
    /** Most confident mistakes first. */
    misclassified: z.array(MisclassifiedSchema),
  })
  .refine(squareConfusion, CONFUSION_SHAPE);
export type TestMetrics = z.infer<typeof TestMetricsSchema>;

const BackendSchema = z.strictObject({ name: z.string(), threads: count });

/** metrics.json: the run's own test split, written once when the run finishes. */
export const RunMetricsSchema = z.strictObject({
  test: TestMetricsSchema,
  bestValAcc: num.nullable(),
  bestEpoch: count.nullable(),
  /** The epoch whose weights the saved model holds (keep-best restores the best one). */
  keptEpoch: count,
  wallSeconds: num,
  imagesPerSecond: num.nullable(),
  epochs: count,
  stoppedEarly: z.boolean(),
  backend: BackendSchema,
});
export type RunMetrics = z.infer<typeof RunMetricsSchema>;

/** evaluations/<dataset id>.json: the saved model on another dataset (trainer evaluate). */
export const EvaluationSchema = z
  .strictObject({
    ...TestMetricsSchema.shape,
    /** The dataset as given (prepped dataset URL or a plain folder). */
    data: z.string(),
    /** planId of a prepped dataset's manifest, or `folder-<hash of its location>`. */
    datasetId: z.string(),
    evaluatedAt: z.string(),
  })
  .refine(squareConfusion, CONFUSION_SHAPE);
export type Evaluation = z.infer<typeof EvaluationSchema>;

/** config.json: the resolved config plus what the run found. */
export const RunConfigSchema = z.strictObject({
  ...TrainConfigSchema.omit({ backend: true }).shape,
  /** The weights the base was loaded with (transfer strategies). */
  weights: z.string().optional(),
  /** Epochs of every phase together. */
  totalEpochs: count,
  backend: z.strictObject({ ...BackendSchema.shape, reason: z.string() }),
  backendRequest: TrainConfigSchema.shape.backend,
  dataset: z.strictObject({
    url: z.string(),
    planId: z.string(),
    classes: z.array(z.string()),
    counts: z.record(z.string(), count),
    manifestSha256: z.string(),
  }),
  inputScalingFormula: z.string(),
  writtenAt: z.string(),
});
export type RunConfig = z.infer<typeof RunConfigSchema>;

/** What a checkpoint holds beyond the weights (checkpoints/<name>/state.json). */
export const CheckpointStateSchema = z.strictObject({
  phase: z.string(),
  /** Epochs finished in `phase`. */
  phaseEpoch: count,
  /** Epochs finished in the whole run. */
  epoch: count,
  globalStep: count,
  history: HistorySchema,
  bestValAcc: num.nullable(),
  bestEpoch: count.nullable(),
  /** Early stopping: best monitored val_loss and epochs without improvement, in this phase. */
  esBest: num.nullable(),
  esWait: count,
  stoppedEarly: z.boolean(),
  /**
   * Training batches consumed in `phase` (the train feed's position: with the seed, it fixes the feature feeds'
   * shuffles and the image stream's pass and batch). Validation has consumed `phaseEpoch` × its steps.
   */
  phaseStep: count.default(0),
  /** A checkpoint inside an epoch (--checkpoint-every): the epoch's running sums so far; null at an epoch end. */
  epochPartial: z.strictObject({ lossSum: num, accSum: num, seen: count, seconds: num }).nullable().default(null),
});
export type CheckpointState = z.infer<typeof CheckpointStateSchema>;

/** checkpoints/last.json and checkpoints/best.json: which checkpoint folder is current. */
export const CheckpointPointerSchema = z.strictObject({ dir: z.string(), epoch: count, writtenAt: z.string() });

/** The files of a run directory, by what they hold. */
export const RUN_FILES = {
  config: 'config.json',
  history: 'history.json',
  historyCsv: 'history.csv',
  metrics: 'metrics.json',
  summary: 'summary.txt',
  model: 'model',
  misclassified: 'misclassified',
  evaluations: 'evaluations',
  checkpoints: 'checkpoints',
} as const;

/** The schema of each JSON file (docs/ARCHITECTURE.md lists their fields; a test keeps the two equal). */
export const RUN_FILE_SCHEMAS = {
  'config.json': RunConfigSchema,
  'history.json': HistorySchema,
  'metrics.json': RunMetricsSchema,
  'evaluations/<dataset id>.json': EvaluationSchema,
  'checkpoints/last.json': CheckpointPointerSchema,
  'checkpoints/<name>/state.json': CheckpointStateSchema,
} as const;

export function emptyHistory(): History {
  return { epoch: [], loss: [], acc: [], val_loss: [], val_acc: [], seconds: [], images_per_s: [], phase: [] };
}

export function historyCsv(h: History): string {
  const cols = ['epoch', 'phase', 'loss', 'acc', 'val_loss', 'val_acc', 'seconds', 'images_per_s'] as const;
  const rows = h.epoch.map((_, i) =>
    cols
      .map((c) => {
        const v = (h[c] as unknown[])[i];
        return v === null || v === undefined ? '' : String(v);
      })
      .join(','),
  );
  return `${cols.join(',')}\n${rows.join('\n')}${rows.length ? '\n' : ''}`;
}

/** The id evaluations are filed under: a prepped dataset's planId, or a hash of a plain folder's location. */
export function datasetId(data: string, planId?: string): string {
  return planId ?? `folder-${createHash('sha256').update(resolveLocation(data)).digest('hex').slice(0, 16)}`;
}

/** A named set of tensors as <name>.bin + <name>.json (tfjs weight specs). */
type TensorList = tf.NamedTensorMap | { name: string; tensor: tf.Tensor }[];

/** One run directory, local or on object storage. */
export class RunDir {
  readonly storage: Storage;
  constructor(storage: Storage) {
    this.storage = storage;
  }

  /** Opens `location` (a local path or s3://bucket/prefix); other URL schemes are refused. */
  static open(location: string): RunDir {
    // URLs go to openStorage as they are (it refuses schemes it does not know); only plain paths are resolved.
    return new RunDir(openStorage(/^[a-z][a-z0-9+.-]*:\/\//i.test(location) ? location : resolveLocation(location)));
  }

  get url(): string {
    return this.storage.url;
  }

  urlOf(path: string): string {
    return this.storage.urlOf(path);
  }

  /** Whether the directory already holds (the start of) a run. */
  async holdsRun(): Promise<boolean> {
    for (const f of [RUN_FILES.history, `${RUN_FILES.checkpoints}/last.json`, RUN_FILES.metrics])
      if (await this.storage.stat(f)) return true;
    return false;
  }

  /** Reads and validates a JSON file of the run; null when it does not exist. */
  async readJson<S extends z.ZodType>(path: string, schema: S): Promise<z.infer<S> | null> {
    let text: string;
    try {
      text = (await this.storage.read(path)).toString('utf8');
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new UserError(`${this.urlOf(path)}: invalid JSON (${(err as Error).message})`, { code: 'bad-run' });
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new UserError(`${this.urlOf(path)}: ${issue.path.join('.') || 'file'}: ${issue.message}`, {
        code: 'bad-run',
      });
    }
    return parsed.data;
  }

  private async writeJson<S extends z.ZodType>(path: string, schema: S, value: z.infer<S>, indent = 2): Promise<void> {
    // Validating what we write keeps the schema (and the docs generated from it) honest. The file is written even
    // when it does not match, so a finished run never loses its results to a bug here; the bug is still reported.
    const parsed = schema.safeParse(value);
    await this.storage.write(path, JSON.stringify(value, null, indent));
    if (!parsed.success)
      throw new Error(
        `run directory: ${this.urlOf(path)} does not match its schema: ${JSON.stringify(parsed.error.issues[0])}`,
      );
  }

  readConfig = () => this.readJson(RUN_FILES.config, RunConfigSchema);
  writeConfig = (c: RunConfig) => this.writeJson(RUN_FILES.config, RunConfigSchema, c);
  readHistory = () => this.readJson(RUN_FILES.history, HistorySchema);
  readMetrics = () => this.readJson(RUN_FILES.metrics, RunMetricsSchema);
  writeMetrics = (m: RunMetrics) => this.writeJson(RUN_FILES.metrics, RunMetricsSchema, m);
  writeEvaluation = (e: Evaluation) =>
    this.writeJson(`${RUN_FILES.evaluations}/${e.datasetId}.json`, EvaluationSchema, e);
  readEvaluation = (id: string) => this.readJson(`${RUN_FILES.evaluations}/${id}.json`, EvaluationSchema);

  async writeHistory(h: History): Promise<void> {
    await this.writeJson(RUN_FILES.history, HistorySchema, h);
    await this.storage.write(RUN_FILES.historyCsv, historyCsv(h));
  }

  async writeSummary(text: string): Promise<void> {
    await this.storage.write(RUN_FILES.summary, text);
  }

  /** Saves the final model as a tfjs layers folder (model/model.json written last). */
  async saveModel(model: tf.LayersModel): Promise<void> {
    await saveLayersModelTo(model, this.urlOf(RUN_FILES.model));
  }

  loadModel(): Promise<tf.LayersModel> {
    return loadLayersModelFrom(this.urlOf(RUN_FILES.model));
  }

  async hasModel(): Promise<boolean> {
    return Boolean(await this.storage.stat(`${RUN_FILES.model}/model.json`));
  }

  /** Writes a file under the run (e.g. a thumbnail); returns its path relative to the run. */
  async writeFile(path: string, data: Buffer | Uint8Array | string): Promise<string> {
    await this.storage.write(path, data);
    return path;
  }

  /** Deletes every file under `prefix` (a folder of the run). */
  async deleteFolder(prefix: string): Promise<void> {
    for await (const e of this.storage.list(`${prefix.replace(/\/$/, '')}/`)) await this.storage.delete(e.path);
  }

  private async writeTensors(path: string, list: TensorList): Promise<void> {
    const { data, specs } = await tf.io.encodeWeights(list);
    await this.storage.write(`${path}.bin`, new Uint8Array(data));
    await this.storage.write(`${path}.json`, JSON.stringify(specs));
  }

  /** A tensor set written by writeCheckpoint; null when absent. Release with tf.dispose. */
  private async readTensors(path: string): Promise<tf.NamedTensorMap | null> {
    let specs: tf.io.WeightsManifestEntry[];
    let bytes: Buffer;
    try {
      specs = JSON.parse((await this.storage.read(`${path}.json`)).toString('utf8')) as tf.io.WeightsManifestEntry[];
      bytes = await this.storage.read(`${path}.bin`);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    return tf.io.decodeWeights(
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
      specs,
    );
  }

  /**
   * Writes a checkpoint (`slot` 'last' or 'best') into a new folder, then points checkpoints/<slot>.json at it and
   * deletes the previous folder: a kill at any moment leaves the previous or the new checkpoint, never none.
   */
  async writeCheckpoint(
    slot: 'last' | 'best',
    epoch: number,
    parts: { weights: TensorList; optimizer?: TensorList; state?: CheckpointState },
    hooks: { beforeSwitch?: () => void | Promise<void> } = {},
  ): Promise<void> {
    const previous = await this.checkpointDir(slot);
    const step = parts.state ? `-s${String(parts.state.globalStep).padStart(7, '0')}` : '';
    const dir = `${RUN_FILES.checkpoints}/${slot}-e${String(epoch).padStart(4, '0')}${step}-${Date.now().toString(36)}`;
    await this.writeTensors(`${dir}/weights`, parts.weights);
    if (parts.optimizer) await this.writeTensors(`${dir}/optimizer`, parts.optimizer);
    if (parts.state) await this.writeJson(`${dir}/state.json`, CheckpointStateSchema, parts.state, 0);
    await hooks.beforeSwitch?.();
    await this.writeJson(`${RUN_FILES.checkpoints}/${slot}.json`, CheckpointPointerSchema, {
      dir: dir.slice(RUN_FILES.checkpoints.length + 1),
      epoch,
      writtenAt: new Date().toISOString(),
    });
    if (previous && previous !== dir) await this.deleteFolder(previous);
    // Folders of this slot the pointer never reached (a writer killed before its switch) go too.
    for await (const e of this.storage.list(`${RUN_FILES.checkpoints}/${slot}-`)) {
      if (!e.path.startsWith(`${dir}/`)) await this.storage.delete(e.path);
    }
  }

  /** The current folder of a checkpoint slot (relative to the run), or null. */
  async checkpointDir(slot: 'last' | 'best'): Promise<string | null> {
    const pointer = await this.readJson(`${RUN_FILES.checkpoints}/${slot}.json`, CheckpointPointerSchema);
    return pointer ? `${RUN_FILES.checkpoints}/${pointer.dir}` : null;
  }

  async readCheckpointState(): Promise<CheckpointState | null> {
    const dir = await this.checkpointDir('last');
    return dir ? this.readJson(`${dir}/state.json`, CheckpointStateSchema) : null;
  }

  /** The weights (and optimizer state) of a checkpoint slot; null when there is none. */
  async readCheckpoint(
    slot: 'last' | 'best',
  ): Promise<{ weights: tf.NamedTensorMap; optimizer: tf.NamedTensorMap | null } | null> {
    const dir = await this.checkpointDir(slot);
    if (!dir) return null;
    const weights = await this.readTensors(`${dir}/weights`);
    if (!weights) throw new UserError(`${this.urlOf(dir)}: checkpoint weights are missing`, { code: 'bad-run' });
    return { weights, optimizer: await this.readTensors(`${dir}/optimizer`) };
  }
}

/** The field names of a zod object schema, nested objects (and arrays of objects) in braces. */
function fieldList(schema: z.ZodType): string {
  let inner: z.ZodType = schema;
  for (;;) {
    if (inner instanceof z.ZodOptional || inner instanceof z.ZodNullable) inner = inner.unwrap() as z.ZodType;
    else if (inner instanceof z.ZodArray) inner = inner.element as z.ZodType;
    else break;
  }
  if (!(inner instanceof z.ZodObject)) return '';
  const fields = Object.entries(inner.shape as Record<string, z.ZodType>).map(([k, v]) => {
    const nested = fieldList(v);
    return nested ? `\`${k}\` { ${nested} }` : `\`${k}\``;
  });
  return fields.join(', ');
}

/** The JSON files of a run directory with their fields, as docs/ARCHITECTURE.md lists them (a test keeps them equal). */
export function runDirFieldsDoc(): string {
  return Object.entries(RUN_FILE_SCHEMAS)
    .map(([file, schema]) => `- \`${file}\`: ${fieldList(schema)}`)
    .join('\n');
}
