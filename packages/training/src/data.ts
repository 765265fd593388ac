// Batches for training and evaluation: prepped datasets (local or s3) and plain folders through the
// augmentation pool (createBatchStream), scaled for the model on the tfjs side.
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  createBatchStream,
  readServiceToken,
  BOOK_AUGMENTATION,
  type AugmentOptions,
  type Batch as StreamBatch,
  type BatchStream,
  type ServerStats,
  type SkippedSample,
} from '@catdog/augment';
import {
  readManifest,
  openImageFolder,
  openStream,
  type Manifest,
  type SampleSource,
  type SplitName,
} from '@catdog/dataset';
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
  /** Local directory keeping verified shards of a remote dataset (LRU beyond cacheLimit) for later epochs and runs. */
  cacheDir?: string;
  /** Bytes the shard cache may hold. Default: no limit. */
  cacheLimit?: number;
  /** A missing or corrupt shard is skipped (warned through onWarning, counted in stats().shards) instead of failing. */
  skipCorrupt?: boolean;
  /** Where the shard reader's warnings go (skipped shards, cache trouble). Default: stderr. */
  onWarning?: (message: string) => void;
  /** A prepared split above this many encoded bytes is streamed window by window (createBatchStream's memoryBudget). */
  memoryBudget?: number;
  /** With skipCorrupt: called with the shards newly skipped (their URLs), as the feed meets them. */
  onSkippedShards?: (shards: string[], split: SplitName) => void;
  /** Where the read-mode line ("reading the split into memory: …" / "streaming shards: …") goes. Default: stderr. */
  readLog?: (line: string) => void;
  /** Make the batches on augmentation servers (`augment serve`): 'host:port,host:port' and a token file. */
  augmentService?: { addresses: string; tokenFile?: string };
  /** With augmentService: where each server's load (images/s, queue depth, workers) is reported, every `serverReportMs`. */
  log?: (line: string) => void;
  /** Default 10 000. */
  serverReportMs?: number;
  /**
   * Append `{"split","epoch","index","images","sha256"}` for each batch to this file, the sha256 of its float32
   * images then its float32 labels: two runs made the same batches when their files are equal. Default: none.
   */
  batchDigests?: string;
  /** Each image that cannot be decoded, once per key (it is left out of its batch): `skipped <key>: <reason>` goes to `log`. */
  onSkipped?: (sample: SkippedSample) => void;
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
 * augmented: 100 steps of 32 over 2000 images). So: the pass that holds it, and the batch of that pass it is.
 * createBatchStream's `startBatch` reaches it by the same arithmetic (no batch before it is read or made).
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
  let skippedSeen = 0;
  /** Hands shards the reader skipped since the last call to onSkippedShards (they are counted by the stream). */
  const reportSkipped = () => {
    if (!o.skipCorrupt || !o.onSkippedShards) return;
    const shards = stream.stats().shards?.skippedShards ?? [];
    if (shards.length > skippedSeen) o.onSkippedShards(shards.slice(skippedSeen), o.split);
    skippedSeen = shards.length;
  };
  // An undecodable image is named once (a training feed meets it every epoch), never dropped silently.
  const reported = new Set<string>();
  if (o.batchDigests) mkdirSync(dirname(o.batchDigests), { recursive: true });
  return {
    size: stream.size,
    async next() {
      const r = await stream.next();
      reportSkipped();
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
      for (const s of b.skipped) {
        if (reported.has(s.key)) continue;
        reported.add(s.key);
        o.log?.(`skipped ${s.key}: ${s.reason}`);
        o.onSkipped?.(s);
      }
      const [n, h, w, c] = b.shape;
      const xs = tf.tidy(() => scaleInput(tf.tensor4d(b.xs as Float32Array, [n, h, w, c]), o.scaling));
      const labels = Float32Array.from(b.ys as ArrayLike<number>);
      if (o.batchDigests) appendBatchDigest(o.batchDigests, o.split, b, labels);
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

/** One line of a batchDigests file (before the batch is released: its pixels are hashed). */
function appendBatchDigest(file: string, split: SplitName, b: StreamBatch, labels: Float32Array): void {
  const sha256 = createHash('sha256')
    .update(new Uint8Array(b.xs.buffer, b.xs.byteOffset, b.xs.byteLength))
    .update(new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength))
    .digest('hex');
  const line = { split, epoch: b.epoch, index: b.index, images: b.shape[0], sha256 };
  appendFileSync(file, `${JSON.stringify(line)}\n`);
}

/** A feed for inference (evaluate, predict): every image once, in order, no augmentation. */
export function openInferenceFeed(
  source: FeedOptions['source'],
  o: Pick<FeedOptions, 'batchSize' | 'inputSize' | 'scaling' | 'workers' | 'log' | 'onSkipped'>,
): Promise<Feed> {
  return openFeed({ ...o, source, split: 'test', augment: false, shuffle: false, seed: 0, repeat: false });
}

/**
 * The batch stream positioned at batch `o.start` (counted across passes from the first): createBatchStream's
 * `startBatch` computes where that batch is in the stream's order, so nothing before it is fetched, decoded or
 * augmented, and every batch from there is the one an uninterrupted stream delivers.
 */
async function openStreamAt(o: FeedOptions) {
  const start = o.start ?? 0;
  if (start !== 0 && (!o.repeat || o.splitSize === undefined))
    throw new RangeError('openFeed: start needs a repeating feed and splitSize');
  const stream = await createBatchStream({
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
    ...(start === 0 ? { initialEpoch: 0 } : { startBatch: start }),
    cacheDir: o.cacheDir,
    cacheLimit: o.cacheLimit,
    skipCorrupt: o.skipCorrupt,
    onWarning: o.onWarning,
    memoryBudget: o.memoryBudget,
    log: o.readLog,
    ...(o.augmentService
      ? {
          augmentService: {
            addresses: o.augmentService.addresses,
            token: readServiceToken(o.augmentService.tokenFile),
          },
        }
      : {}),
  });
  // startBatch counts passes of ceil(size / batch) batches: the split must still be the size the run was saved at.
  if (start !== 0 && (stream.size !== o.splitSize || stream.stepsPerEpoch !== Math.ceil(o.splitSize! / o.batchSize))) {
    await stream.close();
    throw new UserError(
      `${typeof o.source === 'string' ? o.source : 'the dataset'}: the ${o.split} split streams ${stream.size} images, its manifest says ${o.splitSize}: the run cannot be resumed at the same batch; run prep verify`,
      { code: 'bad-dataset' },
    );
  }
  return stream;
}

/**
 * A prepared split read once in manifest order (thumbnails of misclassified images) through the streaming reader,
 * so it takes the run's shard cache and --skip-corrupt like the feeds; without a cache, the URL as it is.
 */
export async function splitSource(
  url: string,
  split: SplitName,
  o: Pick<FeedOptions, 'cacheDir' | 'cacheLimit' | 'skipCorrupt' | 'onWarning'>,
): Promise<string | SampleSource> {
  if (!o.cacheDir) return url;
  const reader = await openStream(url, split, {
    shuffle: false,
    cacheDir: o.cacheDir,
    cacheLimit: o.cacheLimit,
    skipCorrupt: o.skipCorrupt,
    onWarning: o.onWarning,
  });
  return { classes: reader.classes, count: reader.count, samples: () => reader.samples() };
}

/** A shard skipped under --skip-corrupt, as skipped-shards.json in the run directory records it. */
export interface SkippedShard {
  shard: string;
  split: SplitName;
  /** When the trainer met it (ISO 8601). */
  at: string;
}

export const SKIPPED_SHARDS_FILE = 'skipped-shards.json';

/**
 * The run's record of shards skipped under --skip-corrupt: each skip (a shard is met again in every epoch that
 * streams it, or once per feed read into memory) is logged and appended to skipped-shards.json in the run
 * directory, which a resumed run continues. The console line and the file are the count the user reads.
 */
export class SkippedShardLog {
  private entries: SkippedShard[] | null = null;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly storage: { read(path: string): Promise<Buffer>; write(path: string, data: string): Promise<void> },
    private readonly log: (line: string) => void,
  ) {}

  /** Records shards skipped by a feed of `split`; the file is rewritten in the background (flush() waits). */
  add(shards: string[], split: SplitName): void {
    this.writing = this.writing.then(async () => {
      if (!this.entries) this.entries = await this.load();
      const at = new Date().toISOString();
      for (const shard of shards) this.entries.push({ shard, split, at });
      this.log(
        `skip-corrupt: skipped ${shards.join(', ')} (${split}); ${this.entries.length} shard skip${this.entries.length === 1 ? '' : 's'} in this run, listed in ${SKIPPED_SHARDS_FILE}`,
      );
      await this.storage.write(
        SKIPPED_SHARDS_FILE,
        JSON.stringify({ count: this.entries.length, skipped: this.entries }, null, 2),
      );
    });
    this.writing = this.writing.catch((err: unknown) =>
      this.log(`warning: cannot write ${SKIPPED_SHARDS_FILE}: ${String(err)}`),
    );
  }

  async flush(): Promise<void> {
    await this.writing;
  }

  private async load(): Promise<SkippedShard[]> {
    try {
      const saved = JSON.parse((await this.storage.read(SKIPPED_SHARDS_FILE)).toString('utf8')) as {
        skipped?: SkippedShard[];
      };
      return Array.isArray(saved.skipped) ? saved.skipped : [];
    } catch {
      return [];
    }
  }
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
