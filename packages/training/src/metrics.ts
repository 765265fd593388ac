// Test metrics: accuracy, loss, confusion matrix and the misclassified images (with thumbnails).
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { openSplit, type SampleSource } from '@catdog/dataset';
import { formatError, UserError } from '@catdog/errors';
import { EXPLAIN_BATCH, explainPhotos, withPreprocessing, type PixelScaling } from '@catdog/models';
import { frozenForward } from './features.js';
import type { Batch } from './fit.js';
import type { ProgressSink } from './progress.js';
import type { ClassMetrics, Misclassified, RunDir, TestMetrics } from './run-dir.js';

export type { ClassMetrics, Misclassified, TestMetrics };

export interface Predictions {
  /**
   * The model's outputs, row-major [n, outputs]: one column for a sigmoid model (P(class 1)), one per class for a
   * softmax one.
   */
  probs: Float32Array;
  /** Columns of `probs`: 1 (default: two classes, sigmoid) or the number of classes (softmax). */
  outputs?: number;
  labels: Float32Array;
  keys: string[];
}

interface KeyedFeed {
  next(): Promise<(Batch & { keys: string[]; labels: Float32Array }) | null>;
}

/**
 * Runs `model` over every batch of `feed` (one pass), through the compiled inference program (frozenForward:
 * BatchNorm folded into the convolutions, activations fused), which computes model.predict's outputs faster.
 */
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
  const shape = model.outputs[0].shape;
  const outputs = (shape[shape.length - 1] as number | null) ?? 1;
  const forward = frozenForward(model, (line) => progress.log(line));
  const t0 = performance.now();
  progress.start(label, total);
  try {
    for (;;) {
      const b = await feed.next();
      if (!b) break;
      const out = forward.predict(b.xs);
      const p = await out.data();
      tf.dispose([out, b.xs, b.ys]);
      for (const v of p) probs.push(v);
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
    forward.dispose();
  }
  return { probs: Float32Array.from(probs), outputs, labels: Float32Array.from(labels), keys };
}

/**
 * Test metrics of predictions. Two classes (one sigmoid output): Keras' binary crossentropy (probabilities clipped
 * to [1e-7, 1 − 1e-7]) and accuracy at threshold 0.5, as the book. More (softmax): categorical crossentropy of the
 * true class (clipped the same way) and accuracy of the argmax. Both: the N×N confusion matrix and per-class
 * precision and recall.
 */
export function computeMetrics(pred: Predictions, classes: string[]): TestMetrics {
  const eps = 1e-7;
  const k = classes.length;
  const outputs = pred.outputs ?? 1;
  const sigmoid = outputs === 1;
  if (sigmoid ? k !== 2 : outputs !== k)
    throw new UserError(
      `the model has ${outputs} output${outputs === 1 ? ' (two classes)' : 's'}, the dataset ${k} classes (${classes.join(', ')})`,
      { code: 'bad-dataset' },
    );
  let loss = 0;
  let correct = 0;
  const confusion = classes.map(() => classes.map(() => 0));
  const misclassified: Misclassified[] = [];
  const n = pred.labels.length;
  // Mistakes are sorted by confidence: |p − 0.5| for sigmoid outputs, the predicted class's probability otherwise.
  const confidence: number[] = [];
  for (let i = 0; i < n; i++) {
    const y = pred.labels[i];
    let yhat: number;
    if (sigmoid) {
      const p = Math.min(1 - eps, Math.max(eps, pred.probs[i]));
      loss += -(y * Math.log(p) + (1 - y) * Math.log(1 - p));
      yhat = pred.probs[i] > 0.5 ? 1 : 0;
    } else {
      const row = pred.probs.subarray(i * k, (i + 1) * k);
      loss += -Math.log(Math.min(1 - eps, Math.max(eps, row[y])));
      yhat = 0;
      for (let c = 1; c < k; c++) if (row[c] > row[yhat]) yhat = c;
    }
    confusion[y][yhat]++;
    if (yhat === y) correct++;
    else if (sigmoid) {
      misclassified.push({ key: pred.keys[i], label: y, probability: Math.round(pred.probs[i] * 1e6) / 1e6 });
      confidence.push(Math.abs(pred.probs[i] - 0.5));
    } else {
      const p = pred.probs[i * k + yhat];
      misclassified.push({ key: pred.keys[i], label: y, predicted: yhat, probability: Math.round(p * 1e6) / 1e6 });
      confidence.push(p);
    }
  }
  // Most confident mistakes first (a stable sort keeps the input order among ties).
  const order = misclassified.map((_, i) => i).sort((a, b) => confidence[b] - confidence[a]);
  return {
    accuracy: n ? correct / n : NaN,
    loss: n ? loss / n : NaN,
    n,
    confusion,
    classes,
    perClass: perClassMetrics(confusion, classes),
    misclassified: order.map((i) => misclassified[i]),
  };
}

/** One-vs-rest precision and recall of each class from a confusion matrix (rows true, columns predicted). */
export function perClassMetrics(confusion: number[][], classes: string[]): ClassMetrics[] {
  return classes.map((c, i) => {
    const support = confusion[i].reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[i], 0);
    const tp = confusion[i][i];
    return {
      class: c,
      precision: predicted ? tp / predicted : null,
      recall: support ? tp / support : null,
      support,
    };
  });
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
  // Thumbnails as the split streams by; heatmaps EXPLAIN_BATCH photos at a time (one batched Grad-CAM pass each).
  let pending: { stem: string; bytes: Uint8Array; m: Misclassified }[] = [];
  const explainPending = async () => {
    const batch = pending;
    pending = [];
    if (!onPixels || heatmapError !== null || batch.length === 0) return;
    try {
      const explained = await explainPhotos(
        onPixels,
        batch.map((p) => p.bytes),
        { maxSize: 150 },
      );
      for (const [i, e] of explained.entries()) {
        if (e instanceof UserError) throw e;
        batch[i]!.m.heatmap = await runDir.writeFile(`${batch[i]!.stem}.gradcam.jpg`, e.image);
      }
    } catch (err) {
      heatmapError = formatError(err);
    }
  };
  for await (const s of samples.samples()) {
    const m = wanted.get(s.key);
    if (!m) continue;
    const stem = `${folder}/${s.key.replace(/[^\w.-]/g, '_')}`;
    m.image = await runDir.writeFile(
      `${stem}.jpg`,
      await sharp(s.bytes).resize(150, 150, { fit: 'inside' }).jpeg({ quality: 85 }).toBuffer(),
    );
    pending.push({ stem, bytes: Uint8Array.from(s.bytes), m }); // a copy: the reader may reuse its buffers
    if (pending.length === EXPLAIN_BATCH) await explainPending();
    if (--left === 0) break;
  }
  await explainPending();
  if (heatmapError !== null)
    heatmaps?.log?.(`note: Grad-CAM heatmaps of the misclassified images not drawn: ${heatmapError}`);
}

export function confusionText(m: TestMetrics): string {
  const w = Math.max(...m.classes.map((c) => c.length), 6);
  const pad = (s: string | number) => String(s).padStart(w);
  const lines = [
    `confusion matrix (rows: true class, columns: predicted)`,
    `${' '.repeat(w)} ${m.classes.map(pad).join(' ')}`,
    ...m.classes.map((c, i) => `${pad(c)} ${m.confusion[i].map(pad).join(' ')}`),
  ];
  const pct = (v: number | null) => (v === null ? '—' : `${(v * 100).toFixed(1)}%`);
  for (const c of m.perClass ?? [])
    lines.push(`${pad(c.class)} precision ${pct(c.precision)} recall ${pct(c.recall)} (${c.support} images)`);
  return lines.join('\n');
}

export function contractLine(m: TestMetrics): string {
  return `accuracy=${m.accuracy.toFixed(4)} loss=${m.loss.toFixed(4)} n=${m.n}`;
}
