// evaluate: a saved model on a prepped dataset's test split or a plain image folder, with the input scaling
// the model was trained with (from the run's config.json).
import { existsSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { initBackend, type BackendRequest } from '@catdog/backend';
import { INPUT_SCALINGS, inputScaling, loadLayersModelFrom } from '@catdog/models';
import { UserError } from '@catdog/errors';
import type { InputScaling } from './config.js';
import { openEvaluationSource, openFeed } from './data.js';
import { computeMetrics, confusionText, contractLine, predictFeed, writeMisclassifiedThumbnails, type TestMetrics } from './metrics.js';
import { writeFileAtomic } from './model-io.js';
import { createProgress, type ProgressSink } from './progress.js';
import { explainOutOfMemory } from './errors.js';

export interface EvaluateOptions {
  /** A run directory, a model folder or a model.json. */
  model: string;
  /** A prepped dataset (its test split is used) or a plain folder (Kaggle flat layout or class folders). */
  data: string;
  batchSize?: number;
  workers?: number;
  /** Override when the model has no run config beside it. */
  inputScaling?: InputScaling;
  backend?: BackendRequest;
  threads?: number;
  progress?: ProgressSink;
}

export interface EvaluateResult {
  metrics: TestMetrics;
  /** The run directory the model belongs to (metrics.json and misclassified/ were written there), or null. */
  runDir: string | null;
  modelFile: string;
  inputSize: number;
  inputScaling: InputScaling;
}

interface RunConfigLike {
  inputSize?: number;
  inputScaling?: InputScaling;
  dataset?: { classes?: string[] };
}

async function locateModel(path: string): Promise<{ modelFile: string; runDir: string | null; config: RunConfigLike | null }> {
  const p = resolve(path);
  let s;
  try {
    s = await stat(p);
  } catch {
    throw new UserError(`--model ${path}: not found (expected a run directory, a model folder or a model.json)`);
  }
  let modelFile: string;
  let runDir: string | null = null;
  if (s.isDirectory()) {
    if (existsSync(join(p, 'model', 'model.json'))) {
      modelFile = join(p, 'model', 'model.json');
      runDir = p;
    } else if (existsSync(join(p, 'model.json'))) {
      modelFile = join(p, 'model.json');
    } else {
      throw new UserError(`--model ${path}: no model/model.json or model.json in this directory (did the run finish?)`);
    }
  } else {
    modelFile = p;
  }
  // A model saved inside a run directory (<run>/model/model.json) takes the run's config.
  if (!runDir && basename(dirname(modelFile)) === 'model' && existsSync(join(dirname(dirname(modelFile)), 'config.json'))) {
    runDir = dirname(dirname(modelFile));
  }
  let config: RunConfigLike | null = null;
  if (runDir && existsSync(join(runDir, 'config.json'))) {
    config = JSON.parse(await readFile(join(runDir, 'config.json'), 'utf8')) as RunConfigLike;
  }
  return { modelFile, runDir, config };
}

export async function evaluate(o: EvaluateOptions): Promise<EvaluateResult> {
  const progress = o.progress ?? createProgress();
  const log = (line: string) => progress.log(line);
  const { modelFile, runDir, config } = await locateModel(o.model);
  const backend = await initBackend({ backend: o.backend ?? 'auto', threads: o.threads, log });
  const model = await loadLayersModelFrom(modelFile);
  const shape = model.inputs[0].shape;
  const inputSize = shape[1];
  if (typeof inputSize !== 'number' || shape[2] !== inputSize) throw new UserError(`${modelFile}: expected a square image input, got [${shape.join(', ')}]`);
  if (config?.inputSize && config.inputSize !== inputSize) throw new UserError(`${modelFile}: input ${inputSize} does not match the run config's inputSize ${config.inputSize}`);
  let scaling = o.inputScaling ?? config?.inputScaling;
  if (!scaling) {
    scaling = inputScaling(model).name;
    log(`note: no run config beside ${modelFile}; assuming input scaling ${scaling} (pass --input-scaling to override)`);
  }
  const source = await openEvaluationSource(o.data);
  const trainedOn = config?.dataset?.classes;
  if (trainedOn && trainedOn.join(',') !== source.classes.join(',')) {
    throw new UserError(`${o.data}: classes ${source.classes.join(', ')} differ from the model's (${trainedOn.join(', ')})`);
  }
  const batchSize = o.batchSize ?? 32;
  log(`evaluate: ${modelFile} on ${source.kind === 'prepped' ? `${o.data} (test split)` : o.data} — ${source.count} images, input ${inputSize}×${inputSize} scaled ${INPUT_SCALINGS[scaling].formula}, backend ${backend.name}`);
  let metrics: TestMetrics;
  try {
    const feed = await openFeed({ source: source.source, split: 'test', batchSize, inputSize, scaling, augment: false, shuffle: false, seed: 0, workers: o.workers ?? 2, repeat: false });
    try {
      const pred = await predictFeed(model, feed, progress, 'evaluate', Math.ceil(source.count / batchSize));
      metrics = computeMetrics(pred, source.classes);
    } finally {
      await feed.close();
    }
  } catch (err) {
    throw explainOutOfMemory(err, { batchSize, inputSize, workers: o.workers ?? 2 });
  } finally {
    model.dispose();
  }
  if (runDir) {
    await rm(join(runDir, 'misclassified'), { recursive: true, force: true });
    await writeMisclassifiedThumbnails(runDir, metrics, source.source);
    let previous: Record<string, unknown> = {};
    try {
      previous = JSON.parse(await readFile(join(runDir, 'metrics.json'), 'utf8')) as Record<string, unknown>;
    } catch {
      /* first metrics of this run */
    }
    const test = { accuracy: metrics.accuracy, loss: metrics.loss, n: metrics.n, confusion: metrics.confusion, classes: metrics.classes, misclassified: metrics.misclassified, data: o.data, evaluatedAt: new Date().toISOString() };
    await writeFileAtomic(join(runDir, 'metrics.json'), JSON.stringify({ ...previous, test }, null, 2));
  }
  log(confusionText(metrics));
  const shown = metrics.misclassified.slice(0, 10).map((m) => `${m.key} (p=${m.probability.toFixed(3)})`);
  if (shown.length) log(`misclassified: ${metrics.misclassified.length}${metrics.misclassified.length > 10 ? ', the 10 most confident' : ''}: ${shown.join(', ')}`);
  return { metrics, runDir, modelFile, inputSize, inputScaling: scaling };
}
