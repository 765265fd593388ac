// Test metrics: accuracy, loss, confusion matrix and the misclassified images (with thumbnails).
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { openSplit, type SampleSource } from '@catdog/dataset';
import { formatError } from '@catdog/errors';
import { explainPhoto, withPreprocessing, type PixelScaling } from '@catdog/models';
import type { Batch } from './fit.js';
import type { ProgressSink } from './progress.js';
import type { Misclassified, RunDir, TestMetrics } from './run-dir.js';

export type { Misclassified, TestMetrics };

export interface Predictions {
  /** Sigmoid outputs: probability of class 1. */
  probs: Float32Array;
  labels: Float32Array;
  keys: string[];
}

interface KeyedFeed {
  next(): Promise<(Batch & { keys: string[]; labels: Float32Array }) | null>;
}

/** Runs `model` over every batch of `feed` (one pass). */
export async function predictFeed(
  model: tf.LayersModel,
  feed: KeyedFeed,
  progress: ProgressSink,
  label: string,
  total: number,
): Promise<Predictions> {
  const probs: number[] = [];
  const labels: number[] = [];
  const keys: string[] = [];
  const t0 = performance.now();
  progress.start(label, total);
  try {
    for (;;) {
      const b = await feed.next();
      if (!b) break;
      const out = model.predict(b.xs) as tf.Tensor;
      const p = await out.data();
      tf.dispose([out, b.xs, b.ys]);
      probs.push(...p);
      labels.push(...b.labels);
      keys.push(...b.keys);
      progress.update(Math.min(total, Math.ceil(keys.length)), {
        loss: NaN,
        acc: NaN,
        imagesPerSecond: keys.length / ((performance.now() - t0) / 1000),
      });
    }
  } finally {
    progress.stop();
  }
  return { probs: Float32Array.from(probs), labels: Float32Array.from(labels), keys };
}

/** Keras' binary crossentropy (probabilities clipped to [1e-7, 1 − 1e-7]) and accuracy at threshold 0.5. */
export function computeMetrics(pred: Predictions, classes: string[]): TestMetrics {
  const eps = 1e-7;
  let loss = 0;
  let correct = 0;
  const confusion: [[number, number], [number, number]] = [
    [0, 0],
    [0, 0],
  ];
  const misclassified: Misclassified[] = [];
  for (let i = 0; i < pred.probs.length; i++) {
    const p = Math.min(1 - eps, Math.max(eps, pred.probs[i]));
    const y = pred.labels[i];
    loss += -(y * Math.log(p) + (1 - y) * Math.log(1 - p));
    const yhat = pred.probs[i] > 0.5 ? 1 : 0;
    confusion[y][yhat]++;
    if (yhat === y) correct++;
    else misclassified.push({ key: pred.keys[i], label: y, probability: Math.round(pred.probs[i] * 1e6) / 1e6 });
  }
  const n = pred.probs.length;
  // Most confident mistakes first.
  misclassified.sort((a, b) => Math.abs(b.probability - 0.5) - Math.abs(a.probability - 0.5));
  return { accuracy: n ? correct / n : NaN, loss: n ? loss / n : NaN, n, confusion, classes, misclassified };
}

/** Grad-CAM for the misclassified images: the saved model and how it was fed. */
export interface MisclassifiedHeatmaps {
  model: tf.LayersModel;
  inputScaling: PixelScaling;
  /** Where a heatmap that cannot be drawn is reported (never fatal: the run's results are written anyway). */
  log?: (line: string) => void;
}

/**
 * Writes thumbnails of the misclassified images into `<run>/<folder>/<key>.jpg` (at most `limit`) and records each
 * one's path (relative to the run) in `metrics.misclassified[].image`; with `heatmaps`, also the Grad-CAM overlay
 * of the predicted class, `<folder>/<key>.gradcam.jpg`, recorded in `metrics.misclassified[].heatmap`: why the
 * model erred.
 */
export async function writeMisclassifiedThumbnails(
  runDir: RunDir,
  metrics: TestMetrics,
  source: string | SampleSource,
  folder = 'misclassified',
  limit = 100,
  heatmaps?: MisclassifiedHeatmaps,
): Promise<void> {
  const wanted = new Map(metrics.misclassified.slice(0, limit).map((m) => [m.key, m]));
  if (wanted.size === 0) return;
  const samples = typeof source === 'string' ? await openSplit(source, 'test') : source;
  const onPixels = heatmaps ? withPreprocessing(heatmaps.model, { inputScaling: heatmaps.inputScaling }) : null;
  let heatmapError: string | null = null;
  let left = wanted.size;
  for await (const s of samples.samples()) {
    const m = wanted.get(s.key);
    if (!m) continue;
    const stem = `${folder}/${s.key.replace(/[^\w.-]/g, '_')}`;
    m.image = await runDir.writeFile(
      `${stem}.jpg`,
      await sharp(s.bytes).resize(150, 150, { fit: 'inside' }).jpeg({ quality: 85 }).toBuffer(),
    );
    if (onPixels && heatmapError === null) {
      try {
        const explained = await explainPhoto(onPixels, s.bytes, { maxSize: 150 });
        m.heatmap = await runDir.writeFile(`${stem}.gradcam.jpg`, explained.image);
      } catch (err) {
        heatmapError = formatError(err);
      }
    }
    if (--left === 0) break;
  }
  if (heatmapError !== null)
    heatmaps?.log?.(`note: Grad-CAM heatmaps of the misclassified images not drawn: ${heatmapError}`);
}

export function confusionText(m: TestMetrics): string {
  const [c0, c1] = m.classes;
  const w = Math.max(c0.length, c1.length, 6);
  const pad = (s: string | number) => String(s).padStart(w);
  return [
    `confusion matrix (rows: true class, columns: predicted)`,
    `${' '.repeat(w)} ${pad(c0)} ${pad(c1)}`,
    `${pad(c0)} ${pad(m.confusion[0][0])} ${pad(m.confusion[0][1])}`,
    `${pad(c1)} ${pad(m.confusion[1][0])} ${pad(m.confusion[1][1])}`,
  ].join('\n');
}

export function contractLine(m: TestMetrics): string {
  return `accuracy=${m.accuracy.toFixed(4)} loss=${m.loss.toFixed(4)} n=${m.n}`;
}
