import type { Readable } from 'node:stream';

export interface StorageOptions {
  /** S3 endpoint for S3-compatible stores (MinIO, Ceph, R2, s3rver). Default: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL. */
  endpoint?: string;
  /** Default: AWS_REGION / AWS_DEFAULT_REGION / shared config; 'us-east-1' when a custom endpoint is set and nothing else is. */
  region?: string;
  /** Shared config/credentials profile. Default: AWS_PROFILE. */
  profile?: string;
  /** Path-style addressing (http://host/bucket/key). Default: true with a custom endpoint, false for AWS. */
  forcePathStyle?: boolean;
  /**
   * When the SDK computes request checksums (and validates response ones). 'when_supported' makes the SDK
   * send streaming bodies aws-chunked with checksum trailers, which many S3-compatible stores reject or,
   * worse, store verbatim. Default: 'when_required' with a custom endpoint, the SDK's default for AWS.
   * Env override: CATDOG_S3_CHECKSUM_MODE.
   */
  checksumMode?: 'when_required' | 'when_supported';
  /** Attempts per request including the first (SDK standard retry with backoff; also used for resumed streamed reads). Default 5. */
  maxAttempts?: number;
  /** Multipart part size for streamed uploads, bytes. Default 8 MiB. */
  partSize?: number;
  /** Parts uploaded concurrently per streamed upload (memory ≈ partSize × queueSize). Default 4. */
  queueSize?: number;
  /** Milliseconds to wait for a TCP connection to the endpoint. Default 10 000. */
  connectTimeoutMs?: number;
  /**
   * Milliseconds a connection may sit idle (no byte sent or received) before the request is abandoned and retried,
   * so a stalled server never hangs a run. Default 60 000; env override CATDOG_S3_SOCKET_TIMEOUT_MS.
   */
  socketTimeoutMs?: number;
}

export interface ByteRange {
  start: number;
  /** Inclusive, as in HTTP Range and fs.createReadStream. Omitted: to the end. */
  end?: number;
}

export interface StorageEntry {
  /** Relative to the storage root, '/' separators. */
  path: string;
  size: number;
}

/** A root (local directory or s3://bucket/prefix); all paths are relative to it with '/' separators. */
export interface Storage {
  /** The root URL: an absolute local path or s3://bucket/prefix. */
  readonly url: string;
  /** Whether this is object storage (S3) rather than a local directory. */
  readonly remote: boolean;
  /** URL of a path under this root (for messages). */
  urlOf(path: string): string;
  read(path: string): Promise<Buffer>;
  readStream(path: string, range?: ByteRange): Promise<Readable>;
  /** Atomic: readers never see a half-written object under `path`. */
  write(path: string, data: Buffer | Uint8Array | string): Promise<void>;
  /** Atomic and memory-bounded (multipart upload on S3). */
  writeStream(path: string, source: Readable | AsyncIterable<Uint8Array>): Promise<void>;
  stat(path: string): Promise<{ size: number } | undefined>;
  /** Every object whose path starts with `prefix` (string prefix, as S3), in lexicographic path order. */
  list(prefix?: string): AsyncIterable<StorageEntry>;
  /** Deleting a missing path is not an error. */
  delete(path: string): Promise<void>;
  child(prefix: string): Storage;
}
