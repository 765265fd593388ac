// predict: a saved model on unlabelled photos (one file, a folder, an s3:// prefix or a glob), streamed in batches
// through the augmentation pool (decode and resize on its workers, no augmentation) with the model's own input size
// and scaling (from the run's config.json). Photos that cannot be decoded are reported and skipped.
import { basename, dirname } from 'node:path';
import { stat } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import picomatch from 'picomatch';
import { initBackend } from '@catdog/backend';
import { naturalCompare, type SampleSource } from '@catdog/dataset';
import { UserError } from '@catdog/errors';
import {
  classProbabilities,
  INPUT_SCALINGS,
  inputScaling,
  loadLayersModelFrom,
  modelClassCount,
  outputActivation,
} from '@catdog/models';
import { isS3Url, openStorage, resolveLocation, type Storage } from '@catdog/storage';
import type { InputScaling } from './config.js';
import { openInferenceFeed } from './data.js';
import { locateModel, type SavedModelOptions } from './evaluate.js';
import { explainOutOfMemory } from './errors.js';
import { frozenForward } from './features.js';
import { createProgress } from './progress.js';

/** File extensions read as photos when a folder or prefix is listed (anything else there is ignored). */
export const PHOTO_EXTENSIONS = ['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'avif'] as const;
const PHOTO = new RegExp(`\\.(${PHOTO_EXTENSIONS.join('|')})$`, 'i');
const GLOB_CHARS = /[*?[\]{}]/;
const isUrl = (s: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(s);

/** Photos to classify: where they are read from and their keys (paths relative to the input, '/' separators). */
export interface PhotoList {
  storage: Storage;
  /** Paths under `storage`, naturally sorted; the key of each is its path relative to the input. */
  files: { key: string; path: string }[];
}

/**
 * The photos of `input`: one image file, a folder or s3:// prefix (every photo under it, recursively), or a glob
 * (`photos/*.jpg`, `s3://bucket/test/**\/*.jpg`; matched below its last wildcard-free folder).
 */
export async function listPhotos(input: string): Promise<PhotoList> {
  const location = isUrl(input) ? input.replace(/\/+$/, '') : resolveLocation(input);
  const notFound = (why: string) => new UserError(`--input ${input}: ${why}`, { code: 'not-found' });
  const under = async (storage: Storage, keep: (path: string) => boolean): Promise<PhotoList> => {
    const files: PhotoList['files'] = [];
    for await (const e of storage.list(''))
      if (PHOTO.test(e.path) && keep(e.path)) files.push({ key: e.path, path: e.path });
    files.sort((a, b) => naturalCompare(a.key, b.key));
    return { storage, files };
  };
  if (GLOB_CHARS.test(location)) {
    const parts = location.split('/');
    const first = parts.findIndex((p) => GLOB_CHARS.test(p));
    const root = parts.slice(0, first).join('/') || '/';
    const match = picomatch(parts.slice(first).join('/'), { dot: false });
    const list = await under(openStorage(root), (p) => match(p));
    if (list.files.length === 0) throw notFound(`no photo matches the pattern (${PHOTO_EXTENSIONS.join(', ')})`);
    return list;
  }
  if (!isS3Url(location)) {
    const info = await stat(location).catch(() => null);
    if (!info) throw notFound('no such file or folder');
    if (info.isFile())
      return {
        storage: openStorage(dirname(location)),
        files: [{ key: basename(location), path: basename(location) }],
      };
  } else {
    const parent = openStorage(location.slice(0, location.lastIndexOf('/')));
    const name = location.slice(location.lastIndexOf('/') + 1);
    if (PHOTO.test(name) && (await parent.stat(name))) return { storage: parent, files: [{ key: name, path: name }] };
  }
  const list = await under(openStorage(location), () => true);
  if (list.files.length === 0)
    throw notFound(`no photos found (looked for ${PHOTO_EXTENSIONS.map((e) => `*.${e}`).join(', ')}, recursively)`);
  return list;
}

/**
 * Some of the photos as a sample source for the augmentation pool (one class-less label; keys are the relative
 * paths). The pool reads a SampleSource's encoded bytes into memory before decoding, so predict hands it one chunk
 * of the list at a time: memory stays bounded however large the folder.
 */
function photoSource(list: PhotoList, files: PhotoList['files']): SampleSource {
  return {
    classes: ['unlabelled'],
    count: files.length,
    async *samples() {
      for (const f of files) {
        const bytes = await list.storage.read(f.path);
        yield {
          key: f.key,
          label: 0,
          className: 'unlabelled',
          bytes,
          ext: f.path.slice(f.path.lastIndexOf('.') + 1).toLowerCase(),
        };
      }
    },
  };
}

export interface PredictOptions extends SavedModelOptions {
  /** An image, a folder, an s3:// prefix or a glob. */
  input: string;
  /** Called with each batch's predictions as they come (in input order). */
  onPredictions?: (rows: PhotoPrediction[], classes: string[]) => void | Promise<void>;
  /** Keep every prediction in the result (default true); false when onPredictions consumes them (large folders). */
  collect?: boolean;
  /** Photos read and decoded per pass of the worker pool (default 512): bounds the encoded bytes held at once. */
  chunkSize?: number;
}

export interface PhotoPrediction {
  key: string;
  /** One probability per class, in `classes` order. */
  probabilities: number[];
}

export interface PredictResult {
  classes: string[];
  /** Every prediction in input order (empty with collect: false). */
  predictions: PhotoPrediction[];
  /** Photos classified. */
  classified: number;
  /** Photos that could not be decoded, with why. */
  skipped: { key: string; reason: string }[];
  modelFile: string;
  inputSize: number;
  inputScaling: InputScaling;
  seconds: number;
}

export async function predict(o: PredictOptions): Promise<PredictResult> {
  const progress = o.progress ?? createProgress();
  const log = (line: string) => progress.log(line);
  const { modelUrl, config } = await locateModel(o.model);
  const photos = await listPhotos(o.input);
  const backend = await initBackend({ backend: o.backend ?? 'auto', threads: o.threads, log });
  const model = await loadLayersModelFrom(modelUrl);
  const t0 = performance.now();
  try {
    const shape = model.inputs[0].shape;
    const inputSize = shape[1];
    if (typeof inputSize !== 'number' || shape[2] !== inputSize)
      throw new UserError(`${modelUrl}: expected a square image input, got [${shape.join(', ')}]`);
    const activation = outputActivation(model);
    const classCount = modelClassCount(model);
    let classes = config?.dataset?.classes;
    if (!classes || classes.length !== classCount) {
      classes = Array.from({ length: classCount }, (_, i) => String(i));
      log(`note: no run config with class names beside ${modelUrl}; classes are shown as ${classes.join(', ')}`);
    }
    let scaling = o.inputScaling ?? config?.inputScaling;
    if (!scaling) {
      scaling = inputScaling(model).name;
      log(
        `note: no run config beside ${modelUrl}; assuming input scaling ${scaling} (pass --input-scaling to override)`,
      );
    }
    const batchSize = o.batchSize ?? 32;
    const workers = o.workers ?? 2;
    log(
      `predict: ${modelUrl} on ${o.input} — ${photos.files.length} photos, input ${inputSize}×${inputSize} scaled ${INPUT_SCALINGS[scaling].formula}, backend ${backend.name}`,
    );
    const predictions: PhotoPrediction[] = [];
    const skipped: PredictResult['skipped'] = [];
    const collect = o.collect ?? true;
    const chunkSize = Math.max(batchSize, o.chunkSize ?? 512);
    let classified = 0;
    // The compiled inference program (BatchNorm folded, activations fused): model.predict's outputs, faster.
    const forward = frozenForward(model, log);
    try {
      progress.start('predict', photos.files.length);
      try {
        for (let from = 0; from < photos.files.length; from += chunkSize) {
          const feed = await openInferenceFeed(photoSource(photos, photos.files.slice(from, from + chunkSize)), {
            batchSize,
            inputSize,
            scaling,
            workers,
          });
          try {
            for (;;) {
              const b = await feed.next();
              if (!b) break;
              for (const s of b.skipped) {
                skipped.push({ key: s.key, reason: s.reason });
                log(`skipped ${s.key}: ${s.reason}`);
              }
              let rows: PhotoPrediction[] = [];
              if (b.n > 0) {
                const probs = tf.tidy(() => classProbabilities(forward.predict(b.xs), activation));
                const values = (await probs.array()) as number[][];
                probs.dispose();
                rows = b.keys.map((key, i) => ({ key, probabilities: values[i] }));
              }
              tf.dispose([b.xs, b.ys]);
              classified += rows.length;
              if (collect) predictions.push(...rows);
              if (rows.length) await o.onPredictions?.(rows, classes);
              progress.update(classified + skipped.length, {
                loss: NaN,
                acc: NaN,
                imagesPerSecond: classified / ((performance.now() - t0) / 1000),
              });
            }
          } finally {
            await feed.close();
          }
        }
      } finally {
        progress.stop();
      }
    } catch (err) {
      throw explainOutOfMemory(err, { batchSize, inputSize, workers });
    } finally {
      forward.dispose();
    }
    return {
      classes,
      predictions,
      classified,
      skipped,
      modelFile: modelUrl,
      inputSize,
      inputScaling: scaling,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    model.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Output formats.

export const PREDICTION_FORMATS = ['csv', 'json', 'jsonl', 'kaggle'] as const;
export type PredictionFormat = (typeof PREDICTION_FORMATS)[number];

/** The format of an output file from its extension (csv, json, jsonl); null for others. */
export function formatOfFile(file: string): Exclude<PredictionFormat, 'kaggle'> | null {
  const m = /\.(csv|jsonl|json)$/i.exec(file);
  return m ? (m[1].toLowerCase() as 'csv' | 'json' | 'jsonl') : null;
}

/** The k most probable classes of a prediction, most probable first: { class, probability }. */
export function topClasses(p: PhotoPrediction, classes: string[], k = 1): { class: string; probability: number }[] {
  return p.probabilities
    .map((probability, i) => ({ class: classes[i], probability }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, Math.max(1, k));
}

const csvCell = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
const prob = (p: number) => String(Number(p.toPrecision(7)));

/** CSV rows `key,class,probability` (k rows per photo with top k), without the header. */
export function csvRows(rows: PhotoPrediction[], classes: string[], top = 1): string[] {
  return rows.flatMap((r) =>
    topClasses(r, classes, top).map((t) => `${csvCell(r.key)},${csvCell(t.class)},${prob(t.probability)}`),
  );
}
export const CSV_HEADER = 'key,class,probability';

/** One JSON object per photo: key, its best class and probability, the top k and every class's probability. */
export function jsonRecord(r: PhotoPrediction, classes: string[], top = 1): Record<string, unknown> {
  const best = topClasses(r, classes, top);
  return {
    key: r.key,
    class: best[0].class,
    probability: best[0].probability,
    ...(top > 1 ? { top: best } : {}),
    probabilities: Object.fromEntries(classes.map((c, i) => [c, r.probabilities[i]])),
  };
}

/** Kaggle's Dogs vs Cats submission id of a key: N from `N.jpg` (any folder). */
export function kaggleId(key: string): number | null {
  const m = /(?:^|\/)(\d+)\.[a-z]+$/i.exec(key);
  return m ? Number(m[1]) : null;
}

/**
 * Kaggle's Dogs vs Cats submission: `id,label` with label = P(dog), ids sorted numerically. The model must be a
 * cats-vs-dogs one (two classes, the second named dog/dogs, or unnamed).
 */
export function kaggleSubmission(rows: PhotoPrediction[], classes: string[]): string {
  if (classes.length !== 2)
    throw new UserError(
      `--format kaggle needs a two-class cats-vs-dogs model; this one has ${classes.length} classes (${classes.join(', ')})`,
      { code: 'usage' },
    );
  if (!/^(dogs?|1)$/i.test(classes[1]))
    throw new UserError(
      `--format kaggle writes P(dog), but the model's second class is "${classes[1]}" (classes: ${classes.join(', ')})`,
      { code: 'usage' },
    );
  const bad = rows.filter((r) => kaggleId(r.key) === null).map((r) => r.key);
  if (bad.length) {
    throw new UserError(
      `--format kaggle needs photos named N.jpg (Kaggle's test1 folder); ${bad.length} are not, e.g. ${bad.slice(0, 3).join(', ')}`,
      { code: 'usage' },
    );
  }
  const byId = rows.map((r) => ({ id: kaggleId(r.key)!, label: r.probabilities[1] })).sort((a, b) => a.id - b.id);
  for (let i = 1; i < byId.length; i++) {
    if (byId[i].id === byId[i - 1].id)
      throw new UserError(`--format kaggle: id ${byId[i].id} appears twice (two folders hold ${byId[i].id}.jpg)`, {
        code: 'usage',
      });
  }
  return `id,label\n${byId.map((r) => `${r.id},${prob(r.label)}`).join('\n')}\n`;
}

/**
 * An output file written as predictions come: `rows` gives the text for each batch's rows (the header or opening
 * bracket with the first), `end` the rest. CSV, JSON Lines and JSON never hold more than a batch; Kaggle's
 * submission is sorted by id, so it keeps each photo's (id, P(dog)) until `end`.
 */
export interface PredictionWriter {
  rows(rows: PhotoPrediction[], classes: string[]): string;
  end(): string;
}

export function predictionWriter(format: PredictionFormat, top = 1): PredictionWriter {
  let started = false;
  if (format === 'kaggle') {
    const kept: PhotoPrediction[] = [];
    let classes: string[] = [];
    return {
      rows(rows, c) {
        // The model and the names are checked on the first rows, so a wrong --format fails before the whole folder.
        if (!started) kaggleSubmission([], c);
        started = true;
        classes = c;
        const bad = rows.find((r) => kaggleId(r.key) === null);
        if (bad) kaggleSubmission([bad], c);
        for (const r of rows) kept.push({ key: r.key, probabilities: [r.probabilities[0]!, r.probabilities[1]!] });
        return '';
      },
      end: () => (started ? kaggleSubmission(kept, classes) : 'id,label\n'),
    };
  }
  if (format === 'csv')
    return {
      rows(rows, classes) {
        const head = started ? '' : `${CSV_HEADER}\n`;
        started = true;
        return rows.length ? `${head}${csvRows(rows, classes, top).join('\n')}\n` : head;
      },
      end: () => (started ? '' : `${CSV_HEADER}\n`),
    };
  if (format === 'jsonl')
    return {
      rows: (rows, classes) => rows.map((r) => `${JSON.stringify(jsonRecord(r, classes, top))}\n`).join(''),
      end: () => '',
    };
  // JSON: the array JSON.stringify(records, null, 2) would print, element by element.
  return {
    rows(rows, classes) {
      if (!rows.length) return '';
      const items = rows.map((r) => `  ${JSON.stringify(jsonRecord(r, classes, top), null, 2).replace(/\n/g, '\n  ')}`);
      const text = `${started ? ',\n' : '[\n'}${items.join(',\n')}`;
      started = true;
      return text;
    },
    end: () => (started ? '\n]\n' : '[]\n'),
  };
}

/** The whole output file in `format` (what predictionWriter writes piece by piece). */
export function formatPredictions(
  result: Pick<PredictResult, 'predictions' | 'classes'>,
  format: PredictionFormat,
  top = 1,
): string {
  const writer = predictionWriter(format, top);
  return writer.rows(result.predictions, result.classes) + writer.end();
}
