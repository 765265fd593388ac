// manifest.json: the only thing readers trust. Written last by prep.
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation, StorageError, type Storage, type StorageOptions } from '@catdog/storage';

export const MANIFEST_FILE = 'manifest.json';
/**
 * 2: shard members are named `<member key>.<ext>` with no dot in the member key (WebDataset's key rule; see
 * memberKeyOf in shards.ts). 1: members kept the source's dots ('cat.123.jpg'). Readers take both.
 */
export const FORMAT_VERSION = 2;
/** Oldest formatVersion readers still accept. */
export const MIN_FORMAT_VERSION = 1;
export type SplitName = 'train' | 'validation' | 'test';
export const SPLITS: readonly SplitName[] = ['train', 'validation', 'test'];
/** Keras flow_from_directory labels: class names sorted alphabetically. */
export const BOOK_CLASSES = ['cats', 'dogs'];

export interface ShardInfo {
  /** Relative to the dataset root, e.g. 'train/train-000000.tar'. */
  path: string;
  count: number;
  bytes: number;
  sha256: string;
  classCounts: Record<string, number>;
}

export interface SplitInfo {
  count: number;
  classCounts: Record<string, number>;
  shards: ShardInfo[];
}

/** Resize applied at prep time: `{ width, height }` squashes to exactly that size (Keras target_size); `{ shortestSide }` keeps the aspect ratio. */
export type ResizeSpec = { width: number; height: number } | { shortestSide: number };

export interface SkippedFile {
  /** Source file (relative to the source root, or zip entry name). */
  source: string;
  className: string;
  split: SplitName | 'reserve';
  reason: string;
  /** The key that took its place, keeping the split's counts exact (absent when no replacement was left). */
  replacedBy?: string;
}

/** What became of every file in the source: files = used + skipped + ignored + spare (prep-report.json lists them). */
export interface SourceAccounting {
  /** Every file the source listed. */
  files: number;
  /** Samples in the dataset; `converted` of them were re-encoded (format, colour space, alpha, depth or resize). */
  used: number;
  converted: number;
  /** Image files that could not be used (broken, unreadable): listed in `skipped`. */
  skipped: number;
  /** Files that are not samples of the layout (odd names, hidden files, outside class folders). */
  ignored: number;
  /** Usable images beyond the requested split counts, not needed. */
  spare: number;
}

export interface Manifest {
  formatVersion: number;
  /** sha256 of the plan (membership, order, image and shard parameters): equal ids mean byte-identical shards. */
  planId: string;
  source: { url: string; layout: 'flat' | 'class-folders' | 'zip' };
  split: {
    /** Requested per class: counts, or fractions (< 1) of each class's images. */
    requested: Record<SplitName, number>;
    /** Resolved per-class counts. */
    perClass: Record<SplitName, number>;
    order: 'interleaved' | 'shuffled';
    seed?: number;
  };
  classes: string[];
  image: { format: 'jpeg'; resize?: ResizeSpec; quality: number; reencode: 'always' | 'when-needed' };
  sharding: { samplesPerShard: number };
  /** The book's plain folder layout (<split>/<class>/<key>.jpg) was written too. */
  folders?: boolean;
  createdBy: { tool: string; version: string; workers: number };
  createdAt: string;
  splits: Record<SplitName, SplitInfo>;
  /** Source files that could not be used, with reasons and their replacements. */
  skipped: SkippedFile[];
  /** What became of every source file (absent in manifests written before it was recorded). */
  accounting?: SourceAccounting;
}

/** The largest shard a manifest may declare (64 GiB; prep writes shards of tens of MB). */
export const MAX_SHARD_BYTES = 64 * 2 ** 30;
/** The fewest bytes a sample takes in a tar: an image and a .cls member, each a 512-byte header and a data block. */
const MIN_SAMPLE_BYTES = 2048;

function fail(url: string, why: string): never {
  throw new UserError(`${url}: not a valid dataset manifest (${why})`, { code: 'bad-manifest' });
}

/** Structural validation so readers fail early with a clear message instead of deep inside training. */
export function validateManifest(value: unknown, url = MANIFEST_FILE): Manifest {
  const m = value as Manifest;
  if (!m || typeof m !== 'object') fail(url, 'not a JSON object');
  if (!Number.isInteger(m.formatVersion) || m.formatVersion < MIN_FORMAT_VERSION || m.formatVersion > FORMAT_VERSION) {
    fail(url, `formatVersion ${String(m.formatVersion)}, this tool reads ${MIN_FORMAT_VERSION} to ${FORMAT_VERSION}`);
  }
  if (!Array.isArray(m.classes) || m.classes.length < 1 || !m.classes.every((c) => typeof c === 'string'))
    fail(url, 'classes missing');
  if (!m.splits || typeof m.splits !== 'object') fail(url, 'splits missing');
  for (const name of SPLITS) {
    const s = m.splits[name];
    if (!s || !Array.isArray(s.shards) || typeof s.count !== 'number') fail(url, `split ${name} missing`);
    let total = 0;
    for (const sh of s.shards) {
      if (
        typeof sh.path !== 'string' ||
        typeof sh.sha256 !== 'string' ||
        typeof sh.bytes !== 'number' ||
        typeof sh.count !== 'number'
      ) {
        fail(url, `bad shard entry in ${name}`);
      }
      // Paths are keys under the dataset (local folder or S3 prefix): relative, no empty, '.' or '..' segment.
      const segments = sh.path.split(/[\\/]/);
      if (
        sh.path.startsWith('/') ||
        /^[A-Za-z]:/.test(sh.path) ||
        segments.some((x) => x === '' || x === '.' || x === '..') ||
        sh.path.includes('\0')
      )
        fail(url, `shard path ${JSON.stringify(sh.path)} escapes the dataset`);
      // The sha256 names the shard's file in the shard cache, so it must be exactly a digest.
      if (!/^[0-9a-f]{64}$/.test(sh.sha256)) fail(url, `shard ${sh.path}: sha256 is not a hex SHA-256 digest`);
      // Sizes are checked before anything is allocated for them: a sample takes at least two tar members of 1 kB.
      if (!Number.isSafeInteger(sh.bytes) || sh.bytes < 0 || sh.bytes > MAX_SHARD_BYTES)
        fail(url, `shard ${sh.path} declares ${sh.bytes} bytes (a shard holds at most ${MAX_SHARD_BYTES})`);
      if (!Number.isSafeInteger(sh.count) || sh.count < 0 || sh.count * MIN_SAMPLE_BYTES > sh.bytes)
        fail(url, `shard ${sh.path} declares ${sh.count} samples in ${sh.bytes} bytes`);
      total += sh.count;
    }
    if (total !== s.count) fail(url, `split ${name} count ${s.count} but its shards hold ${total}`);
  }
  return m;
}

/** Reads and validates `<url>/manifest.json` (url: local directory or s3://bucket/prefix). */
export async function readManifest(url: string, options: StorageOptions = {}): Promise<Manifest> {
  return readManifestFrom(openStorage(resolveLocation(url), options));
}

export async function readManifestFrom(storage: Storage): Promise<Manifest> {
  const where = storage.urlOf(MANIFEST_FILE);
  let text: string;
  try {
    text = (await storage.read(MANIFEST_FILE)).toString('utf8');
  } catch (err) {
    if (err instanceof StorageError && err.code === 'not-found') {
      throw new UserError(
        `${where}: no manifest.json (not a prepared dataset, or prep has not finished: run prep split / prep finalize)`,
        {
          code: 'no-manifest',
          cause: err,
        },
      );
    }
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    fail(where, `invalid JSON: ${(err as Error).message}`);
  }
  return validateManifest(parsed, where);
}
