// Readers for training and evaluation: a prepared split (shards listed by a manifest) or a plain image folder.
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation, type Storage, type StorageOptions } from '@catdog/storage';
import { readManifestFrom, SPLITS, type Manifest, type ShardInfo, type SplitName } from './manifest.js';
import { checkShardBytes, memberNamingOf, parseShard, sha256, type EncodedSample } from './shards.js';
import { openSource } from './sources.js';

export interface SampleSource {
  /** Present for prepared datasets. */
  manifest?: Manifest;
  /** Class names indexed by label. */
  classes: string[];
  count: number;
  /** Streams every sample in order (manifest order for splits, classes then numeric key order for folders). Callable repeatedly (one pass per epoch). */
  samples(): AsyncIterable<EncodedSample>;
}

export interface SplitSource extends SampleSource {
  manifest: Manifest;
  split: SplitName;
  shards: ShardInfo[];
}

export interface OpenSplitOptions extends StorageOptions {
  /** Local directory keeping verified shards by sha256, so later epochs and runs skip the download. */
  cacheDir?: string;
  /** Verify each shard's sha256 before yielding its samples. Default true. */
  verify?: boolean;
}

async function loadShard(storage: Storage, shard: ShardInfo, options: OpenSplitOptions): Promise<Buffer> {
  const where = storage.urlOf(shard.path);
  if (options.cacheDir) {
    const cached = join(options.cacheDir, `${shard.sha256}.tar`);
    const s = await stat(cached).catch(() => undefined);
    if (s?.size === shard.bytes) {
      const data = await readFile(cached);
      // Named by content hash and written only after verification; re-hash only when asked to verify.
      if (options.verify === false || sha256(data) === shard.sha256) return data;
    }
    const data = await storage.read(shard.path);
    checkShardBytes(data, shard, where);
    await mkdir(options.cacheDir, { recursive: true });
    const temp = `${cached}.${process.pid}.tmp`;
    await writeFile(temp, data);
    await rename(temp, cached);
    return data;
  }
  const data = await storage.read(shard.path);
  if (options.verify !== false) checkShardBytes(data, shard, where);
  return data;
}

/** Opens one split of a prepared dataset (local directory or s3://bucket/prefix). */
export async function openSplit(url: string, split: SplitName, options: OpenSplitOptions = {}): Promise<SplitSource> {
  if (!SPLITS.includes(split)) throw new UserError(`unknown split ${String(split)} (expected ${SPLITS.join(', ')})`);
  const storage = openStorage(resolveLocation(url), options);
  const manifest = await readManifestFrom(storage);
  const info = manifest.splits[split];
  const classes = manifest.classes;
  return {
    manifest,
    split,
    classes,
    count: info.count,
    shards: info.shards,
    async *samples() {
      // Fetch the next shard while the current one is consumed.
      let next: Promise<Buffer> | undefined = info.shards.length
        ? loadShard(storage, info.shards[0], options)
        : undefined;
      for (let i = 0; i < info.shards.length; i++) {
        const data = await next!;
        next = i + 1 < info.shards.length ? loadShard(storage, info.shards[i + 1], options) : undefined;
        next?.catch(() => {});
        yield* parseShard(
          Readable.from([data]),
          storage.urlOf(info.shards[i].path),
          classes,
          memberNamingOf(manifest.formatVersion),
        );
      }
    },
  };
}

/**
 * Opens a plain folder of images (local or S3): Kaggle's flat layout (cat.N.jpg, dog.N.jpg → classes cats, dogs)
 * or one folder per class. Samples come class by class (alphabetical), numeric key order within a class.
 * Also accepts a prepared dataset's plain folder output split (e.g. `<out>/folders/test`).
 */
export async function openImageFolder(url: string, options: StorageOptions = {}): Promise<SampleSource> {
  const source = await openSource(url, options);
  const classes = source.classes;
  const items = classes.flatMap((c) => source.byClass.get(c) ?? []);
  return {
    classes,
    count: items.length,
    async *samples() {
      for (const item of items) {
        const bytes = await item.read();
        yield {
          key: item.key,
          label: classes.indexOf(item.className),
          className: item.className,
          bytes,
          ext: item.ext || 'jpg',
        };
      }
    },
  };
}
