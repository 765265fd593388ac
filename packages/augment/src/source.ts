// Samples for the stream: a prepared split (local or s3:// shards, via @catdog/dataset), a plain folder of
// images, or any SampleSource. The encoded bytes of a split are read once into one SharedArrayBuffer that
// every worker reads without copies; epochs then only permute indices.
import { openImageFolder, openSplit, type EncodedSample, type SplitName } from '@catdog/dataset';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation } from '@catdog/storage';
import type { SharedSamples } from './worker.js';

/** Anything that lists encoded samples: @catdog/dataset's openSplit / openImageFolder results fit. */
export interface SampleSource {
  classes: string[];
  count?: number;
  samples(): AsyncIterable<EncodedSample>;
}

export interface LoadedSamples {
  classes: string[];
  keys: string[];
  labels: Float32Array;
  shared: SharedSamples;
  /** encoded bytes held in memory */
  bytes: number;
}

/** Default bound on the encoded bytes held in memory (the book's 2000 JPEGs are ~45 MB; prepped at 150, ~10 MB). */
export const DEFAULT_MAX_SOURCE_BYTES = 2 * 1024 ** 3;

/**
 * Opens a dataset URL: a directory or s3://bucket/prefix with manifest.json is a prepared dataset (its `split`
 * is read, shards cached in cacheDir when given); anything else is read as a folder of images
 * (Kaggle's flat cat.N.jpg / dog.N.jpg, or one folder per class).
 */
export async function openDatasetSource(url: string, split: SplitName, cacheDir?: string): Promise<SampleSource> {
  const location = resolveLocation(url);
  const storage = openStorage(location);
  if (await storage.stat('manifest.json')) return openSplit(location, split, cacheDir ? { cacheDir } : {});
  return openImageFolder(location);
}

export async function loadSamples(source: SampleSource, maxBytes = DEFAULT_MAX_SOURCE_BYTES): Promise<LoadedSamples> {
  const chunks: Uint8Array[] = [];
  const keys: string[] = [];
  const labels: number[] = [];
  const seen = new Set<string>();
  let total = 0;
  for await (const sample of source.samples()) {
    if (seen.has(sample.key)) {
      throw new UserError(`sample key ${sample.key} appears twice: keys must be unique (they seed each sample's transforms)`);
    }
    seen.add(sample.key);
    total += sample.bytes.byteLength;
    if (total > maxBytes) {
      throw new UserError(
        `the split's encoded images exceed ${(maxBytes / 1024 ** 2).toFixed(0)} MiB (maxSourceBytes): ` +
          'prep it with --resize, or raise the bound if the memory is there',
      );
    }
    chunks.push(sample.bytes);
    keys.push(sample.key);
    labels.push(sample.label);
  }
  if (keys.length === 0) throw new UserError('the source has no samples');
  const bytes = new SharedArrayBuffer(total);
  const spans = new SharedArrayBuffer(keys.length * 2 * 8);
  const view = new Uint8Array(bytes);
  const spanView = new Float64Array(spans);
  let at = 0;
  chunks.forEach((chunk, i) => {
    view.set(chunk, at);
    spanView[2 * i] = at;
    spanView[2 * i + 1] = chunk.byteLength;
    at += chunk.byteLength;
  });
  return { classes: source.classes, keys, labels: Float32Array.from(labels), shared: { bytes, spans }, bytes: total };
}
