// Batches for training and evaluation: prepped datasets (local or s3) and plain folders through the
// augmentation pool (createBatchStream), scaled for the model on the tfjs side.
import * as tf from '@tensorflow/tfjs';
import {
  createBatchStream,
  readServiceToken,
  BOOK_AUGMENTATION,
  type AugmentOptions,
  type BatchStream,
  type ServerStats,
  type SkippedSample,
} from '@catdog/augment';
import { readManifest, openImageFolder, type Manifest, type SampleSource, type SplitName } from '@catdog/dataset';
import { isUserError, UserError } from '@catdog/errors';
import { INPUT_SCALINGS } from '@catdog/models';
import type { Batch, BatchFeed } from './fit.js';
import type { InputScaling } from './config.js';

export interface FeedOptions {
  /** Prepped dataset URL or an opened sample source (plain folder). */
  source: string | SampleSource;
  split: SplitName;
  batchSize: number;
  inputSize: number;
  scaling: InputScaling;
  /** false for validation and test (never augmented). */
  augment: false | Partial<AugmentOptions> | true;
  shuffle: boolean;
  seed: number;
  workers: number;
  /** Endless (training, validation like Keras generators) or one pass (test, feature extraction). */
  repeat: boolean;
  /** Resuming: batches already consumed (of a repeating feed); the feed starts with the next one. */
  start?: number;
  /** Images in the split (the manifest's count): fixes the stream's pass length before it is opened. Needed with `start`. */
  splitSize?: number;
  cacheDir?: string;
  /** Make the batches on augmentation servers (`augment serve`): 'host:port,host:port' and a token file. */
  augmentService?: { addresses: string; tokenFile?: string };
  /** With augmentService: where each server's load (images/s, queue depth, workers) is reported, every `serverReportMs`. */
  log?: (line: string) => void;
  /** Default 10 000. */
  serverReportMs?: number;
}

/** One line of the augmentation servers' load, as the stream last saw it (stats().servers). */
export function serversLine(servers: ServerStats[]): string {
  return `augment service: ${servers
    .map((s) =>
      s.state === 'up'
        ? `${s.address} ${s.imagesPerSecond.toFixed(0)} img/s queue ${s.queueDepth} workers ${s.workers}`
        : `${s.address} down`,
    )
    .join('; ')}`;
}

export interface KeyedBatch extends Batch {
  keys: string[];
  labels: Float32Array;
  /** Samples of this batch that could not be decoded (the batch is that much shorter). */
  skipped: SkippedSample[];
}

export interface Feed extends BatchFeed {
  next(): Promise<KeyedBatch | null>;
  /** Images in one pass. */
  size: number;
  close(): Promise<void>;
  /** The stream's throughput and, with an augmentation service, each server's load. */
  stats(): ReturnType<BatchStream['stats']>;
}

/** Scales pixel values 0..255 as the model expects (INPUT_SCALINGS in @catdog/models). */
export function scaleInput(x: tf.Tensor, scaling: InputScaling): tf.Tensor {
  return INPUT_SCALINGS[scaling].apply(x);
}

function augmentOptions(augment: FeedOptions['augment']): AugmentOptions | false {
  if (augment === false) return false;
  if (augment === true) return { ...BOOK_AUGMENTATION };
  return { ...BOOK_AUGMENTATION, ...augment } as AugmentOptions;
}

/**
 * Where batch `start` of an endless stream is: the stream counts epochs as passes over the split (ceil(size /
 * batch) batches, the last one short), which a training epoch of --steps-per-epoch steps need not be (the book's
 * augmented: 100 steps of 32 over 2000 images). So: the pass that holds it, and how many batches of that pass
 * precede it. When @catdog/augment's `start` option lands, this and the skip in openFeed become `start`.
 */
export function streamPosition(start: number, size: number, batchSize: number): { pass: number; skip: number } {
  const perPass = Math.ceil(size / batchSize);
  return { pass: Math.floor(start / perPass), skip: start % perPass };
}

export async function openFeed(o: FeedOptions): Promise<Feed> {
  const stream = await openStreamAt(o);
  const reportEvery = o.serverReportMs ?? 10_000;
  let lastReport = Date.now();
  let lastEpoch = -1;
  return {
    size: stream.size,
    async next() {
      const r = await stream.next();
      // Reported at each new epoch of a training feed, and every reportEvery ms.
      const newEpoch = !r.done && o.augment !== false && r.value.epoch !== lastEpoch;
      if (!r.done) lastEpoch = r.value.epoch;
      if (o.augmentService && o.log && (newEpoch || Date.now() - lastReport >= reportEvery)) {
        lastReport = Date.now();
        const servers = stream.stats().servers;
        if (servers?.length) o.log(serversLine(servers));
      }
      if (r.done) return null;
      const b = r.value;
      const [n, h, w, c] = b.shape;
      const xs = tf.tidy(() => scaleInput(tf.tensor4d(b.xs as Float32Array, [n, h, w, c]), o.scaling));
      const labels = Float32Array.from(b.ys as ArrayLike<number>);
      // Both arrays are copied by now (scaleInput makes a new tensor), so the pool may reuse the batch's buffers.
      b.release();
      const ys = tf.tensor2d(labels, [n, 1]);
      return { xs, ys, n, keys: b.keys, labels, skipped: b.skipped };
    },
    stats: () => stream.stats(),
    async close() {
      await stream.close();
    },
  };
}

/** The batch stream positioned at batch `o.start`: restarted at its pass, the batches of that pass before it skipped. */
async function openStreamAt(o: FeedOptions) {
  const start = o.start ?? 0;
  const open = (initialEpoch: number) =>
    createBatchStream({
      source: o.source,
      split: o.split,
      batchSize: o.batchSize,
      targetSize: [o.inputSize, o.inputSize],
      augment: augmentOptions(o.augment),
      shuffle: o.shuffle,
      seed: o.seed,
      workers: o.workers,
      dtype: 'float32',
      rescale: 1,
      epochs: o.repeat ? Infinity : 1,
      initialEpoch,
      cacheDir: o.cacheDir,
      ...(o.augmentService
        ? {
            augmentService: {
              addresses: o.augmentService.addresses,
              token: readServiceToken(o.augmentService.tokenFile),
            },
          }
        : {}),
    });
  if (start === 0) return open(0);
  if (!o.repeat || o.splitSize === undefined)
    throw new RangeError('openFeed: start needs a repeating feed and splitSize');
  const { pass, skip } = streamPosition(start, o.splitSize, o.batchSize);
  const stream = await open(pass);
  if (stream.size !== o.splitSize || stream.stepsPerEpoch !== Math.ceil(o.splitSize / o.batchSize)) {
    await stream.close();
    throw new UserError(
      `${typeof o.source === 'string' ? o.source : 'the dataset'}: the ${o.split} split streams ${stream.size} images, its manifest says ${o.splitSize}: the run cannot be resumed at the same batch; run prep verify`,
      { code: 'bad-dataset' },
    );
  }
  for (let k = 0; k < skip; k++) {
    const r = await stream.next();
    if (r.done) break;
    r.value.release();
  }
  return stream;
}

/** Reads and checks a prepped dataset's manifest: two classes or more, the three splits present and non-empty. */
export async function checkDataset(
  url: string,
  needed: SplitName[] = ['train', 'validation', 'test'],
): Promise<Manifest> {
  const manifest = await readManifest(url);
  if (manifest.classes.length < 2) {
    throw new UserError(
      `${url}: the dataset has ${manifest.classes.length} class${manifest.classes.length === 1 ? '' : 'es'} (${manifest.classes.join(', ')}); a classifier needs at least two, e.g. cats and dogs`,
    );
  }
  for (const split of needed) {
    const info = manifest.splits[split];
    if (!info || info.count === 0)
      throw new UserError(`${url}: split "${split}" is missing or empty in manifest.json; re-run prep split`);
  }
  return manifest;
}

/** The evaluation source: a prepped dataset's test split when `data` has a manifest.json, otherwise a plain image folder. */
export async function openEvaluationSource(url: string): Promise<{
  source: string | SampleSource;
  classes: string[];
  count: number;
  kind: 'prepped' | 'folder';
  planId?: string;
}> {
  let manifest: Manifest | null = null;
  try {
    manifest = await readManifest(url);
  } catch (err) {
    if (!isUserError(err, 'no-manifest')) throw err;
  }
  if (manifest) {
    if (!manifest.splits.test?.count) throw new UserError(`${url}: the dataset has no test split to evaluate on`);
    return {
      source: url,
      classes: manifest.classes,
      count: manifest.splits.test.count,
      kind: 'prepped',
      planId: manifest.planId,
    };
  }
  const folder = await openImageFolder(url);
  if (folder.count === 0)
    throw new UserError(`${url}: no images found (expected cat.N.jpg / dog.N.jpg or one folder per class)`);
  if (folder.classes.length < 2)
    throw new UserError(
      `${url}: found ${folder.classes.length} class${folder.classes.length === 1 ? '' : 'es'} (${folder.classes.join(', ')}); evaluating a classifier needs at least two`,
    );
  return { source: folder, classes: folder.classes, count: folder.count, kind: 'folder' };
}
