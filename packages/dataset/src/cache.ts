// On-disk shard cache: verified shards named by their sha256, a size limit, least-recently-used eviction.
// Files are only ever renamed into place after the manifest's sha256 matched, so any process (and any later run)
// can share the directory. A failing cache disk (full, read-only) never fails a read: caching stops with a warning.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, rename, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { UserError } from '@catdog/errors';

export interface ShardCacheOptions {
  /** Directory holding `<sha256>.tar` files (created when missing). */
  dir: string;
  /** Bytes the cache may hold; the least recently used shards are evicted to make room. Default: no limit. */
  limit?: number;
  /** Where warnings go (a full disk, a shard larger than the limit). Default: stderr. */
  onWarning?: (message: string) => void;
}

export interface CacheStats {
  hits: number;
  misses: number;
  /** Shards written into the cache. */
  stored: number;
  evicted: number;
}

const SUFFIX = '.tar';

/** Writes one shard into the cache as it streams; errors disable it and warn, they never throw. */
export interface CacheWriter {
  write(chunk: Buffer): Promise<void>;
  /** Call once the shard's sha256 matched: moves the file into place. */
  commit(): Promise<void>;
  /** The shard failed verification (or the read failed): removes the partial file. */
  abort(): Promise<void>;
}

export class ShardCache {
  readonly dir: string;
  readonly limit: number;
  readonly stats: CacheStats = { hits: 0, misses: 0, stored: 0, evicted: 0 };
  private readonly warn: (message: string) => void;
  /** Bytes promised to writes in flight, so concurrent downloads evict for each other. */
  private reserved = 0;
  private disabled = false;
  private warnedTooLarge = false;
  private evicting: Promise<void> = Promise.resolve();

  constructor(options: ShardCacheOptions) {
    this.dir = options.dir;
    this.limit = options.limit ?? Number.POSITIVE_INFINITY;
    this.warn = options.onWarning ?? ((m) => process.stderr.write(`warning: ${m}\n`));
    if (!(this.limit > 0))
      throw new UserError(`cache limit must be a positive number of bytes, got ${this.limit}`, { code: 'bad-config' });
  }

  private pathOf(sha256: string): string {
    return join(this.dir, `${sha256}${SUFFIX}`);
  }

  /** A read stream of the cached shard, or undefined on a miss. A hit counts as a use for LRU. */
  async open(sha256: string, bytes: number): Promise<Readable | undefined> {
    const file = this.pathOf(sha256);
    const s = await stat(file).catch(() => undefined);
    if (!s || s.size !== bytes) {
      this.stats.misses++;
      return undefined;
    }
    const now = new Date();
    await utimes(file, now, now).catch(() => {});
    // Opened before returning: a file evicted meanwhile (by another process sharing the directory) is a miss.
    const stream = createReadStream(file);
    const opened = await new Promise<boolean>((res) => {
      stream.once('open', () => res(true));
      stream.once('error', () => res(false));
    });
    if (!opened) {
      stream.destroy();
      this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    return stream;
  }

  /** Drops a cached shard that failed verification. */
  async remove(sha256: string): Promise<void> {
    await unlink(this.pathOf(sha256)).catch(() => {});
  }

  /** Starts caching a shard about to be downloaded; undefined when it will not be cached. */
  async writer(sha256: string, bytes: number): Promise<CacheWriter | undefined> {
    if (this.disabled) return undefined;
    if (bytes > this.limit) {
      if (this.warnedTooLarge) return undefined;
      this.warnedTooLarge = true;
      this.warn(
        `shard ${sha256.slice(0, 12)} (${bytes} bytes) is larger than the cache limit (${this.limit} bytes): shards that large are not cached`,
      );
      return undefined;
    }
    this.reserved += bytes;
    let released = false;
    const release = () => {
      if (!released) this.reserved -= bytes;
      released = true;
    };
    const temp = `${this.pathOf(sha256)}.${process.pid}.tmp`;
    let out: WriteStream | undefined;
    let failed = false;
    const fail = async (err: unknown) => {
      if (failed) return;
      failed = true;
      release();
      out?.destroy();
      await unlink(temp).catch(() => {});
      this.disable(err);
    };
    try {
      await mkdir(this.dir, { recursive: true });
      await this.makeRoom();
      out = createWriteStream(temp);
      await new Promise<void>((res, rej) => {
        out!.once('open', () => res());
        out!.once('error', rej);
      });
    } catch (err) {
      await fail(err);
      return undefined;
    }
    const file = out;
    let writeError: unknown;
    file.on('error', (err) => {
      writeError = err;
    });
    return {
      write: async (chunk) => {
        if (failed) return;
        if (writeError) return fail(writeError);
        if (!file.write(chunk)) {
          await new Promise<void>((res) => {
            const done = () => {
              file.off('drain', done);
              file.off('error', done);
              res();
            };
            file.once('drain', done);
            file.once('error', done);
          });
          if (writeError) await fail(writeError);
        }
      },
      commit: async () => {
        if (failed) return;
        try {
          await new Promise<void>((res, rej) => {
            if (writeError) return rej(writeError);
            file.once('error', rej);
            file.end(() => res());
          });
          await rename(temp, this.pathOf(sha256));
          this.stats.stored++;
        } catch (err) {
          await fail(err);
          return;
        }
        release();
      },
      abort: async () => {
        if (failed) return;
        failed = true;
        release();
        file.destroy();
        await unlink(temp).catch(() => {});
      },
    };
  }

  private disable(err: unknown): void {
    if (this.disabled) return;
    this.disabled = true;
    const e = err as NodeJS.ErrnoException;
    const why = e?.code === 'ENOSPC' ? 'the disk is full' : `${e?.code ?? ''} ${e?.message ?? String(err)}`.trim();
    this.warn(`shard cache ${this.dir}: ${why}; reading on without caching`);
  }

  /** Evicts least recently used shards until the writes in flight (`reserved`) fit the limit. */
  private makeRoom(): Promise<void> {
    if (!Number.isFinite(this.limit)) return Promise.resolve();
    // One eviction pass at a time: concurrent passes would count the same files twice.
    const run = this.evicting.then(async () => {
      const files = await this.entries();
      let total = files.reduce((a, f) => a + f.size, 0);
      for (const f of files) {
        if (total + this.reserved <= this.limit) break;
        await unlink(f.path).catch(() => {});
        total -= f.size;
        this.stats.evicted++;
      }
    });
    this.evicting = run.catch(() => {});
    return run;
  }

  /** Cached shards, least recently used first. */
  async entries(): Promise<{ path: string; size: number; used: number }[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: { path: string; size: number; used: number }[] = [];
    for (const name of names) {
      if (!name.endsWith(SUFFIX)) continue;
      const path = join(this.dir, name);
      const s = await stat(path).catch(() => undefined);
      if (s?.isFile()) out.push({ path, size: s.size, used: s.mtimeMs });
    }
    return out.sort((a, b) => a.used - b.used || a.path.localeCompare(b.path));
  }

  /** Bytes held by cached shards. */
  async usage(): Promise<number> {
    return (await this.entries()).reduce((a, f) => a + f.size, 0);
  }
}
