// Keras-style get_file: download once into a cache directory, verify the checksum, rename into place.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { UserError } from '@catdog/errors';
import { userCacheDir } from '@catdog/storage';

export interface DownloadProgress {
  receivedBytes: number;
  /** From Content-Length; undefined when the server does not say. */
  totalBytes?: number;
}

/** `models/` in the user's cache (~/.cache/catdog/models, or $CATDOG_CACHE_DIR/models): Keras' ~/.keras/models. */
export function defaultCacheDir(): string {
  return userCacheDir('models');
}

/** Hex digest; 32 hex digits mean MD5 and 64 SHA-256, as Keras' get_file(hash_algorithm='auto'). */
export async function fileHash(path: string, expected: string): Promise<string> {
  const algorithm = expected.length === 32 ? 'md5' : 'sha256';
  const hash = createHash(algorithm);
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

function causeOf(err: unknown): string {
  const e = err as Error & { cause?: Error & { code?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'timed out';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

export interface GetFileOptions {
  url: string;
  fileName: string;
  /** MD5 (32 hex digits) or SHA-256 (64) of the file; verified after download and on cached copies. */
  hash: string;
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
  /** Give up when the server has not answered (headers) within this time. Default 30 s. */
  connectTimeoutMs?: number;
  /** Appended to the offline error: how else the user can supply the file. */
  offlineHint?: string;
}

/**
 * Returns the cached file's path, downloading it first when absent or corrupt. The download streams to
 * a temporary file next to the target and is renamed into place only after the checksum matches, so
 * the cache never holds a half-written or wrong file.
 */
export async function getFile(options: GetFileOptions): Promise<string> {
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const target = join(cacheDir, options.fileName);
  const expected = options.hash.toLowerCase();
  const existing = await stat(target).catch(() => undefined);
  let stale = '';
  if (existing?.isFile()) {
    const actual = await fileHash(target, expected);
    if (actual === expected) return target;
    // Keras re-downloads a cached file whose hash is wrong; so do we (it is replaced atomically below).
    stale = ` (the file already at ${target} has ${expected.length === 32 ? 'MD5' : 'SHA-256'} ${actual}, expected ${expected})`;
  }
  const tell = () =>
    `put the file there by hand — download ${options.url} elsewhere and copy it to ${target}${stale}` +
    (options.offlineHint ? `, or ${options.offlineHint}` : '');
  let response: Response;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.connectTimeoutMs ?? 30_000);
  try {
    response = await fetch(options.url, { signal: controller.signal });
  } catch (err) {
    throw new UserError(
      `cannot download ${options.fileName} from ${options.url} (${causeOf(err)}); offline? ${tell()}`,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok || !response.body) {
    throw new UserError(`cannot download ${options.fileName} from ${options.url} (HTTP ${response.status}); ${tell()}`);
  }
  await mkdir(cacheDir, { recursive: true });
  const temp = `${target}.part-${process.pid}-${Date.now()}`;
  const totalHeader = Number(response.headers.get('content-length'));
  const totalBytes = Number.isFinite(totalHeader) && totalHeader > 0 ? totalHeader : undefined;
  const hash = createHash(expected.length === 32 ? 'md5' : 'sha256');
  let receivedBytes = 0;
  try {
    const body = Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => {
      receivedBytes += chunk.length;
      hash.update(chunk);
      options.onProgress?.({ receivedBytes, totalBytes });
    });
    await pipeline(body, createWriteStream(temp, { flags: 'wx' }));
    if (totalBytes !== undefined && receivedBytes !== totalBytes) {
      throw new UserError(
        `download of ${options.url} ended early: ${receivedBytes} of ${totalBytes} bytes; retry, or ${tell()}`,
      );
    }
    const actual = hash.digest('hex');
    if (actual !== expected) {
      throw new UserError(
        `downloaded ${options.fileName} from ${options.url} but its ${expected.length === 32 ? 'MD5' : 'SHA-256'} is ${actual}, expected ${expected}: the file is corrupt or not the published one; nothing was cached`,
      );
    }
    await rename(temp, target);
  } catch (err) {
    await rm(temp, { force: true });
    if (err instanceof UserError) throw err;
    throw new UserError(`download of ${options.url} failed (${causeOf(err)}); retry, or ${tell()}`, { cause: err });
  }
  return target;
}
