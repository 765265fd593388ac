// S3 (and S3-compatible) storage on @aws-sdk/client-s3, multipart uploads through @aws-sdk/lib-storage.
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '@catdog/errors';
import { StorageError, describeS3Error } from './errors.js';
import type { ByteRange, Storage, StorageEntry, StorageOptions } from './types.js';

export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing '/' ('' for the bucket root). */
  prefix: string;
}

export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m || !m[1])
    throw new UserError(`${url}: not an S3 URL (expected s3://bucket/prefix)`, { code: 'unsupported-scheme' });
  return { bucket: m[1], prefix: m[2].replace(/^\/+|\/+$/g, '') };
}

export interface ResolvedS3Options {
  endpoint?: string;
  region?: string;
  profile?: string;
  forcePathStyle: boolean;
  checksumMode: 'when_required' | 'when_supported';
  maxAttempts: number;
  partSize: number;
  queueSize: number;
  connectTimeoutMs: number;
  socketTimeoutMs: number;
}

/** Applies the documented defaults (AWS env/config, endpoint variables, compatible settings for custom endpoints). */
export function resolveS3Options(
  options: StorageOptions = {},
  env: NodeJS.ProcessEnv = process.env,
): ResolvedS3Options {
  const endpoint = options.endpoint || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined;
  const custom = Boolean(endpoint);
  const envMode = env.CATDOG_S3_CHECKSUM_MODE?.toLowerCase();
  const checksumMode =
    options.checksumMode ??
    (envMode === 'when_required' || envMode === 'when_supported'
      ? envMode
      : custom
        ? 'when_required'
        : 'when_supported');
  return {
    endpoint,
    region: options.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || (custom ? 'us-east-1' : undefined),
    profile: options.profile || env.AWS_PROFILE || undefined,
    forcePathStyle:
      options.forcePathStyle ??
      (env.CATDOG_S3_PATH_STYLE === 'true' ? true : env.CATDOG_S3_PATH_STYLE === 'false' ? false : custom),
    checksumMode,
    maxAttempts: options.maxAttempts ?? (Number(env.AWS_MAX_ATTEMPTS) || 5),
    partSize: Math.max(5 * 1024 * 1024, options.partSize ?? 8 * 1024 * 1024),
    queueSize: Math.max(1, options.queueSize ?? 4),
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    socketTimeoutMs: options.socketTimeoutMs ?? (Number(env.CATDOG_S3_SOCKET_TIMEOUT_MS) || 60_000),
  };
}

type S3Sdk = typeof import('@aws-sdk/client-s3') & typeof import('@aws-sdk/lib-storage');
let sdkLoading: Promise<S3Sdk> | undefined;

/**
 * The AWS SDK, imported on first use: it takes about half a second to load, which every command paid before,
 * even on local paths only.
 */
function loadSdk(): Promise<S3Sdk> {
  sdkLoading ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]).then(([s3, lib]) => ({
    ...s3,
    ...lib,
  }));
  return sdkLoading;
}

const clients = new Map<string, S3Client>();

function clientFor(sdk: S3Sdk, o: ResolvedS3Options): S3Client {
  const key = JSON.stringify(o);
  let client = clients.get(key);
  if (!client) {
    const mode = o.checksumMode === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
    const config: S3ClientConfig = {
      endpoint: o.endpoint,
      region: o.region,
      profile: o.profile,
      forcePathStyle: o.forcePathStyle,
      requestChecksumCalculation: mode,
      responseChecksumValidation: mode,
      // The SDK's standard strategy retries throttling, 5xx and transient network errors with jittered backoff.
      maxAttempts: o.maxAttempts,
      retryMode: 'standard',
      // Without these a stalled connection hangs forever; a timed-out request is retried like a reset one.
      requestHandler: { connectionTimeout: o.connectTimeoutMs, socketTimeout: o.socketTimeoutMs },
    };
    client = new sdk.S3Client(config);
    clients.set(key, client);
  }
  return client;
}

function isTransientStreamError(err: unknown): boolean {
  const e = err as { code?: string; name?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode ?? 0;
  return (
    ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED', 'ERR_STREAM_PREMATURE_CLOSE'].includes(e?.code ?? '') ||
    ['TimeoutError', 'AbortError', 'SlowDown', 'RequestTimeout', 'InternalError'].includes(e?.name ?? '') ||
    status >= 500 ||
    status === 429
  );
}

function backoff(attempt: number): Promise<void> {
  const base = Math.min(20_000, 100 * 2 ** attempt);
  return sleep(base / 2 + Math.random() * (base / 2));
}

export class S3Storage implements Storage {
  readonly url: string;
  readonly remote = true;
  readonly bucket: string;
  readonly prefix: string;
  readonly options: ResolvedS3Options;

  /** `resolved` is for child(): the parent's already-resolved settings. */
  constructor(url: string, options: StorageOptions = {}, resolved?: ResolvedS3Options) {
    const loc = parseS3Url(url);
    this.bucket = loc.bucket;
    this.prefix = loc.prefix;
    this.url = `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}`;
    this.options = resolved ?? resolveS3Options(options);
  }

  /** The SDK and this storage's client (one per set of options, shared). */
  private async sdk(): Promise<{ sdk: S3Sdk; client: S3Client }> {
    const sdk = await loadSdk();
    return { sdk, client: clientFor(sdk, this.options) };
  }

  private key(path: string): string {
    const rel = path
      .split('/')
      .filter((p) => p !== '' && p !== '.')
      .join('/');
    if (rel.split('/').includes('..')) throw new StorageError(path, 'invalid-path', 'path may not contain ..');
    return this.prefix ? (rel ? `${this.prefix}/${rel}` : this.prefix) : rel;
  }

  urlOf(path: string): string {
    return `s3://${this.bucket}/${this.key(path)}`;
  }

  private fail(url: string, err: unknown): never {
    if (err instanceof StorageError) throw err;
    const { code, cause } = describeS3Error(err, this.options.endpoint);
    throw new StorageError(url, code, cause, { cause: err });
  }

  async read(path: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of await this.readStream(path)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  private async getBody(key: string, start: number, end: number | undefined): Promise<Readable> {
    const range = start > 0 || end !== undefined ? `bytes=${start}-${end ?? ''}` : undefined;
    const { sdk, client } = await this.sdk();
    const out = await client.send(new sdk.GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range }));
    return out.Body as Readable;
  }

  async readStream(path: string, range?: ByteRange): Promise<Readable> {
    const key = this.key(path);
    const url = this.urlOf(path);
    const start = range?.start ?? 0;
    const end = range?.end;
    let first: Readable;
    try {
      first = await this.getBody(key, start, end);
    } catch (err) {
      this.fail(url, err);
    }
    // A connection reset mid-body resumes with a ranged GET from the last byte received.
    const self = this;
    async function* resumable(): AsyncGenerator<Buffer> {
      let position = start;
      let body: Readable | undefined = first;
      for (let attempt = 0; ; attempt++) {
        try {
          if (!body) body = await self.getBody(key, position, end);
          for await (const chunk of body) {
            position += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
          return;
        } catch (err) {
          body?.destroy();
          body = undefined;
          if (attempt + 1 >= self.options.maxAttempts || !isTransientStreamError(err)) self.fail(url, err);
          await backoff(attempt);
        }
      }
    }
    return Readable.from(resumable(), { objectMode: false });
  }

  async write(path: string, data: Buffer | Uint8Array | string): Promise<void> {
    const url = this.urlOf(path);
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    if (body.length > this.options.partSize) return this.writeStream(path, Readable.from([Buffer.from(body)]));
    try {
      const { sdk, client } = await this.sdk();
      await client.send(
        new sdk.PutObjectCommand({ Bucket: this.bucket, Key: this.key(path), Body: body, ContentLength: body.length }),
      );
    } catch (err) {
      this.fail(url, err);
    }
  }

  async writeStream(path: string, source: Readable | AsyncIterable<Uint8Array>): Promise<void> {
    const url = this.urlOf(path);
    const body = source instanceof Readable ? source : Readable.from(source);
    let sourceError: unknown;
    body.once('error', (err) => {
      sourceError = err;
    });
    const { sdk, client } = await this.sdk();
    const upload = new sdk.Upload({
      client,
      params: { Bucket: this.bucket, Key: this.key(path), Body: body },
      partSize: this.options.partSize,
      queueSize: this.options.queueSize,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      if (sourceError) throw sourceError;
      this.fail(url, err);
    }
    if (sourceError) throw sourceError;
  }

  async stat(path: string): Promise<{ size: number } | undefined> {
    const url = this.urlOf(path);
    try {
      const { sdk, client } = await this.sdk();
      const out = await client.send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.key(path) }));
      return { size: out.ContentLength ?? 0 };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404) return undefined;
      this.fail(url, err);
    }
  }

  async *list(prefix = ''): AsyncIterable<StorageEntry> {
    const rel = prefix.replace(/^\/+/, '');
    const keyPrefix = this.prefix ? `${this.prefix}/${rel}` : rel;
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    try {
      const { sdk, client } = await this.sdk();
      for await (const page of sdk.paginateListObjectsV2({ client }, { Bucket: this.bucket, Prefix: keyPrefix })) {
        for (const obj of page.Contents ?? []) {
          if (!obj.Key || obj.Key.endsWith('/')) continue;
          yield { path: obj.Key.slice(strip), size: obj.Size ?? 0 };
        }
      }
    } catch (err) {
      this.fail(`s3://${this.bucket}/${keyPrefix}`, err);
    }
  }

  async delete(path: string): Promise<void> {
    try {
      const { sdk, client } = await this.sdk();
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(path) }));
    } catch (err) {
      const e = err as { name?: string };
      if (e?.name === 'NoSuchKey' || e?.name === 'NotFound') return;
      this.fail(this.urlOf(path), err);
    }
  }

  /**
   * Aborts multipart uploads under this prefix started more than `staleAfterMs` ago (their writer was killed
   * before completing or aborting them; S3 keeps and bills their parts until aborted). S3 cannot tell whether
   * the writer is alive, so only age decides. `supported` is false when the server does not implement
   * ListMultipartUploads (e.g. s3rver); nothing is aborted then.
   */
  async abortStaleUploads(
    staleAfterMs: number,
    now = Date.now(),
  ): Promise<{ aborted: string[]; kept: string[]; supported: boolean }> {
    const aborted: string[] = [];
    const kept: string[] = [];
    const prefix = this.prefix ? `${this.prefix}/` : '';
    const strip = prefix.length;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    const { sdk, client } = await this.sdk();
    for (;;) {
      let page;
      try {
        page = await client.send(
          new sdk.ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
      } catch (err) {
        const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
        const status = e?.$metadata?.httpStatusCode;
        if (e?.name === 'NotImplemented' || status === 501 || status === 405)
          return { aborted, kept, supported: false };
        this.fail(`s3://${this.bucket}/${prefix}`, err);
      }
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId) continue;
        const rel = u.Key.slice(strip);
        if (u.Initiated && now - u.Initiated.getTime() < staleAfterMs) {
          kept.push(rel);
          continue;
        }
        try {
          await client.send(
            new sdk.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }),
          );
        } catch (err) {
          if ((err as { name?: string })?.name !== 'NoSuchUpload') this.fail(`s3://${this.bucket}/${u.Key}`, err);
        }
        aborted.push(rel);
      }
      if (!page.IsTruncated) break;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
    return { aborted, kept, supported: true };
  }

  child(prefix: string): Storage {
    return new S3Storage(`s3://${this.bucket}/${this.key(prefix)}`, {}, this.options);
  }
}
