// evaluate: a saved model on a prepped dataset's test split or a plain image folder, with the input scaling the
// model was trained with (from the run's config.json). Inside a run, the result is filed under
// evaluations/<dataset id>.json; the run's own metrics.json and misclassified/ are never touched.
import { z } from 'zod';
import { initBackend, type BackendRequest } from '@catdog/backend';
import { INPUT_SCALINGS, inputScaling, loadLayersModelFrom, modelClassCount } from '@catdog/models';
import { UserError } from '@catdog/errors';
import { resolveLocation } from '@catdog/storage';
import type { InputScaling } from './config.js';
import { openEvaluationSource, openInferenceFeed } from './data.js';
import {
  computeMetrics,
  confusionText,
  predictFeed,
  writeMisclassifiedThumbnails,
  type TestMetrics,
} from './metrics.js';
import { createProgress, type ProgressSink } from './progress.js';
import { explainOutOfMemory } from './errors.js';
import { datasetId, RUN_FILES, RunDir } from './run-dir.js';

/** What every command that runs a saved model takes (evaluate, predict). */
export interface SavedModelOptions {
  /** A run directory, a model folder or a model.json (local or s3://). */
  model: string;
  batchSize?: number;
  workers?: number;
  /** Override when the model has no run config beside it. */
  inputScaling?: InputScaling;
  backend?: BackendRequest;
  threads?: number;
  progress?: ProgressSink;
}

export interface EvaluateOptions extends SavedModelOptions {
  /** A prepped dataset (its test split is used) or a plain folder (Kaggle flat layout or class folders). */
  data: string;
}

export interface EvaluateResult {
  metrics: TestMetrics;
  /** The run directory the model belongs to (the evaluation was filed there), or null. */
  runDir: string | null;
  /** Where the evaluation was written inside the run (evaluations/<dataset id>.json), or null. */
  evaluationFile: string | null;
  modelFile: string;
  inputSize: number;
  inputScaling: InputScaling;
}

/** The part of a run's config.json evaluate needs; runs written by older versions still have these. */
const EvaluationConfigSchema = z.object({
  inputSize: z.number().optional(),
  inputScaling: z.enum(['unit', 'symmetric']).optional(),
  dataset: z.object({ url: z.string().optional(), classes: z.array(z.string()).optional() }).optional(),
});
export type EvaluationConfig = z.infer<typeof EvaluationConfigSchema>;

const parentOf = (url: string) => url.slice(0, url.replace(/\/+$/, '').lastIndexOf('/'));

/** The model's location and the run it belongs to: <run>/model/model.json with config.json beside model/. */
export async function locateModel(
  path: string,
): Promise<{ modelUrl: string; run: RunDir | null; config: EvaluationConfig | null }> {
  const url = (/^[a-z][a-z0-9+.-]*:\/\//i.test(path) ? path : resolveLocation(path)).replace(/\/+$/, '');
  let modelUrl: string;
  let run: RunDir | null = null;
  if (/\.json$/i.test(url)) {
    const dir = RunDir.open(parentOf(url));
    if (!(await dir.storage.stat(url.slice(url.lastIndexOf('/') + 1))))
      throw new UserError(`--model ${path}: not found (expected a run directory, a model folder or a model.json)`, {
        code: 'not-found',
      });
    modelUrl = url;
    if (/\/model\/model\.json$/i.test(url)) run = RunDir.open(parentOf(parentOf(url)));
  } else {
    const dir = RunDir.open(url);
    if (await dir.hasModel()) {
      modelUrl = dir.urlOf(RUN_FILES.model);
      run = dir;
    } else if (await dir.storage.stat('model.json')) {
      modelUrl = url;
    } else {
      const empty = (await dir.storage.list('')[Symbol.asyncIterator]().next()).done;
      throw new UserError(
        empty
          ? `--model ${path}: not found (expected a run directory, a model folder or a model.json)`
          : `--model ${path}: no model/model.json or model.json in this directory (did the run finish?)`,
        { code: 'not-found' },
      );
    }
  }
  const config = run ? await run.readJson(RUN_FILES.config, EvaluationConfigSchema) : null;
  return { modelUrl, run: config ? run : null, config };
}

export async function evaluate(o: EvaluateOptions): Promise<EvaluateResult> {
  const progress = o.progress ?? createProgress();
  const log = (line: string) => progress.log(line);
  const { modelUrl, run, config } = await locateModel(o.model);
  const backend = await initBackend({ backend: o.backend ?? 'auto', threads: o.threads, log });
  const model = await loadLayersModelFrom(modelUrl);
  const shape = model.inputs[0].shape;
  const inputSize = shape[1];
  if (typeof inputSize !== 'number' || shape[2] !== inputSize)
    throw new UserError(`${modelUrl}: expected a square image input, got [${shape.join(', ')}]`);
  if (config?.inputSize && config.inputSize !== inputSize)
    throw new UserError(
      `${modelUrl}: input ${inputSize} does not match the run config's inputSize ${config.inputSize}`,
    );
  let scaling = o.inputScaling ?? config?.inputScaling;
  if (!scaling) {
    scaling = inputScaling(model).name;
    log(`note: no run config beside ${modelUrl}; assuming input scaling ${scaling} (pass --input-scaling to override)`);
  }
  const source = await openEvaluationSource(o.data);
  const trainedOn = config?.dataset?.classes;
  if (trainedOn && trainedOn.join(',') !== source.classes.join(',')) {
    throw new UserError(
      `${o.data}: classes ${source.classes.join(', ')} differ from the model's (${trainedOn.join(', ')})`,
    );
  }
  const modelClasses = modelClassCount(model);
  if (modelClasses !== source.classes.length) {
    model.dispose();
    throw new UserError(
      `${o.data}: ${source.classes.length} classes (${source.classes.join(', ')}), but the model tells ${modelClasses} apart`,
      { code: 'bad-dataset' },
    );
  }
  const batchSize = o.batchSize ?? 32;
  const workers = o.workers ?? 2;
  log(
    `evaluate: ${modelUrl} on ${source.kind === 'prepped' ? `${o.data} (test split)` : o.data} — ${source.count} images, input ${inputSize}×${inputSize} scaled ${INPUT_SCALINGS[scaling].formula}, backend ${backend.name}`,
  );
  let metrics: TestMetrics;
  const skipped: string[] = [];
  try {
    const feed = await openInferenceFeed(source.source, {
      batchSize,
      inputSize,
      scaling,
      workers,
      log,
      onSkipped: (s) => skipped.push(s.key),
    });
    try {
      metrics = computeMetrics(
        await predictFeed(model, feed, progress, 'evaluate', Math.ceil(source.count / batchSize)),
        source.classes,
      );
    } finally {
      await feed.close();
    }
  } catch (err) {
    model.dispose();
    throw explainOutOfMemory(err, { batchSize, inputSize, workers });
  }
  let evaluationFile: string | null = null;
  try {
    if (run) {
      const id = datasetId(o.data, source.planId);
      const folder = `${RUN_FILES.evaluations}/${id}`;
      await run.deleteFolder(folder);
      await writeMisclassifiedThumbnails(run, metrics, source.source, `${folder}/misclassified`, undefined, {
        model,
        inputScaling: scaling,
        log,
      });
      await run.writeEvaluation({ ...metrics, data: o.data, datasetId: id, evaluatedAt: new Date().toISOString() });
      evaluationFile = run.urlOf(`${folder}.json`);
      log(`evaluation written to ${evaluationFile}`);
    }
  } finally {
    model.dispose();
  }
  log(confusionText(metrics));
  if (skipped.length)
    log(
      `evaluate: ${skipped.length} of ${source.count} images could not be decoded and are not counted in n: ${skipped.slice(0, 10).join(', ')}${skipped.length > 10 ? ', …' : ''}`,
    );
  const shown = metrics.misclassified
    .slice(0, 10)
    .map((m) =>
      m.predicted === undefined
        ? `${m.key} (p=${m.probability.toFixed(3)})`
        : `${m.key} (${metrics.classes[m.predicted]} p=${m.probability.toFixed(3)})`,
    );
  if (shown.length)
    log(
      `misclassified: ${metrics.misclassified.length}${metrics.misclassified.length > 10 ? ', the 10 most confident' : ''}: ${shown.join(', ')}`,
    );
  return { metrics, runDir: run?.url ?? null, evaluationFile, modelFile: modelUrl, inputSize, inputScaling: scaling };
}
