// Using a trained run: export it for browsers and servers (@catdog/models' exportModel with the run's classes and
// input scaling), and explain its predictions with Grad-CAM overlays. The run's config.json says how the model
// was fed; a bare model folder needs the scaling given.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, type BackendRequest } from '@catdog/backend';
import { openSplit } from '@catdog/dataset';
import { UserError } from '@catdog/errors';
import {
  compareExportVariants,
  exportModel,
  inputScaling as guessScaling,
  loadLayersModelFrom,
  modelClassCount,
  withPreprocessing,
  writeHeatmaps,
  type ExportResult,
  type ExportVariantReport,
  type LabelledPhoto,
  type Quantization,
  type WrittenHeatmap,
} from '@catdog/models';
import type * as tf from '@tensorflow/tfjs';
import type { InputScaling } from './config.js';
import { locateModel } from './evaluate.js';
import { listPhotos } from './predict.js';

interface RunModel {
  modelUrl: string;
  model: tf.LayersModel;
  classes: string[];
  inputScaling: InputScaling;
  /** The prepped dataset the run was trained on, when known. */
  dataset: string | null;
  notes: string[];
}

/** Loads the model of a run (or a model folder) with its classes and input scaling. */
async function openRunModel(path: string, override?: InputScaling): Promise<RunModel> {
  const { modelUrl, config } = await locateModel(path);
  const model = await loadLayersModelFrom(modelUrl);
  const notes: string[] = [];
  const count = modelClassCount(model);
  let classes = config?.dataset?.classes;
  if (!classes || classes.length !== count) {
    classes = Array.from({ length: count }, (_, i) => `class${i}`);
    notes.push(`no run config with class names beside ${modelUrl}; classes are named ${classes.join(', ')}`);
  }
  let scaling = override ?? config?.inputScaling;
  if (!scaling) {
    scaling = guessScaling(model).name;
    notes.push(
      `no run config beside ${modelUrl}; assuming input scaling ${scaling} (pass --input-scaling to override)`,
    );
  }
  const dataset = config?.dataset?.url ?? null;
  return { modelUrl, model, classes, inputScaling: scaling, dataset, notes };
}

export interface ExportRunOptions {
  /** A run directory, model folder or model.json (local or s3://). */
  model: string;
  /** Output folder (local or s3://): model.json, weights-<hash>.bin, labels.json. */
  out: string;
  quantize?: Quantization | null;
  inputScaling?: InputScaling;
  /** Also export float32, float16 and uint8 (into a temporary folder) and measure each on the run's test split. */
  compare?: boolean;
  backend?: BackendRequest;
  threads?: number;
  log?: (line: string) => void;
}

export interface ExportRunResult extends ExportResult {
  /** Per variant (compare): size and accuracy on the run's test split. */
  variants: ExportVariantReport[] | null;
  /** Images the variants were measured on. */
  compareCount: number;
}

/** trainer:export: the run's model as a tfjs model on raw pixels plus labels.json (exportModel). */
export async function exportRun(o: ExportRunOptions): Promise<ExportRunResult> {
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  await initBackend({ backend: o.backend ?? 'auto', threads: o.threads, log });
  const run = await openRunModel(o.model, o.inputScaling);
  for (const n of run.notes) log(`note: ${n}`);
  try {
    if (o.compare && !run.dataset)
      throw new UserError(
        `--compare measures the variants on the run's test split, but ${o.model} has no run config naming its dataset`,
        { code: 'usage' },
      );
    const options = { model: run.model, classes: run.classes, inputScaling: run.inputScaling, source: run.modelUrl };
    const result = await exportModel({ ...options, out: o.out, quantize: o.quantize ?? null });
    let variants: ExportVariantReport[] | null = null;
    let compareCount = 0;
    if (o.compare && run.dataset) {
      const split = await openSplit(run.dataset, 'test');
      const photos: LabelledPhoto[] = [];
      for await (const s of split.samples()) photos.push({ image: s.bytes, classIndex: s.label });
      compareCount = photos.length;
      const scratch = await mkdtemp(join(tmpdir(), 'catdog-export-compare-'));
      try {
        log(`export: measuring float32, float16 and uint8 on ${photos.length} test images of ${run.dataset}`);
        variants = await compareExportVariants({ ...options, out: scratch, photos });
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    }
    return { ...result, variants, compareCount };
  } finally {
    run.model.dispose();
  }
}

export interface ExplainOptions {
  /** A run directory, model folder or model.json. */
  model: string;
  /** A local photo, folder or glob. */
  input: string;
  /** Folder for `<photo>.gradcam.jpg` overlays (local or s3://). */
  out: string;
  inputScaling?: InputScaling;
  /** The class to explain (default: the predicted one). */
  classIndex?: number;
  backend?: BackendRequest;
  threads?: number;
  log?: (line: string) => void;
}

/** trainer:explain: a Grad-CAM overlay per photo (writeHeatmaps), over the model behind its own preprocessing. */
export async function explain(
  o: ExplainOptions,
): Promise<{ written: WrittenHeatmap[]; skipped: { photo: string; reason: string }[]; classes: string[] }> {
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const photos = await listPhotos(o.input);
  if (photos.storage.remote)
    throw new UserError(`--input ${o.input}: explain reads local photos; copy them from object storage first`, {
      code: 'usage',
    });
  await initBackend({ backend: o.backend ?? 'auto', threads: o.threads, log });
  const run = await openRunModel(o.model, o.inputScaling);
  for (const n of run.notes) log(`note: ${n}`);
  try {
    const onPixels = withPreprocessing(run.model, { inputScaling: run.inputScaling });
    const files = photos.files.map((f) => join(photos.storage.url, f.path));
    const result = await writeHeatmaps(onPixels, files, { out: o.out, classes: run.classes, classIndex: o.classIndex });
    return { ...result, classes: run.classes };
  } finally {
    run.model.dispose();
  }
}
