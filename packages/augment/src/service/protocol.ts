// The augmentation service's wire format, on gRPC (node:http2 does the networking and HTTP/2 flow control;
// grpc-server.ts and batch-channel.ts speak gRPC's framing). Requests are small JSON documents (no pixels, no floats but the augmentation ranges);
// batches are binary frames:
//   'CDB1' | u32 LE header bytes | header JSON, space-padded | pixels (float32 LE or uint8)
// The padding puts the pixels at 3 mod 8 in the frame: behind gRPC's 5-byte message prefix, which grpc-js keeps in
// front of the message in one buffer, they are 8-byte aligned, so a grpc-js client views them as a Float32Array in
// place.
// Methods (all under /catdog.augment.v1.Augment/, bearer token required):
//   Describe (unary): opens (dataset, split) on the server and answers its classes, size, key digest and workers.
//   Batches (server streaming): the batches at `batches` (indices within the epoch), in that order.
//   Status (unary): the server's load.
// plus the standard /grpc.health.v1.Health/Check (no token, no data: Kubernetes' grpc readiness probe).
import type { SplitName } from '@catdog/dataset';
import { UserError } from '@catdog/errors';
import type { Interpolation, JpegDecoder } from '../decode.js';
import { resolveAugmentOptions, type AugmentOptions } from '../options.js';

export const SERVICE_PATH = '/catdog.augment.v1.Augment';
export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/** Bound on a request's bytes (larger ones fail with RESOURCE_EXHAUSTED). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Bound on the pixels of one batch a server will make. */
export const MAX_BATCH_BYTES = 256 * 1024 ** 2;
/** Bound on a frame's header (keys, labels, skip reasons). */
export const MAX_HEADER_BYTES = 4 * 1024 ** 2;
export const MAX_BATCHES_PER_CALL = 1024;
const MAX_SIDE = 4096;
const MAX_BATCH_SIZE = 4096;

const MAGIC = 0x31424443; // 'CDB1' little-endian

export interface DatasetRef {
  /** dataset URL as the server reads it: a directory or s3:// prefix (prepared dataset), or a folder of images */
  dataset: string;
  split: SplitName;
}

/** How a batch is made from its samples: everything but which samples. */
export interface BatchRecipe {
  seed: number;
  shuffle: boolean;
  batchSize: number;
  height: number;
  width: number;
  augment: AugmentOptions | null;
  dtype: 'float32' | 'uint8';
  rescale: number;
  interpolation: Interpolation;
  jpegDecoder: JpegDecoder;
  /** Shards per shuffle window of a prepared split's order (absent: the reader's default). */
  windowShards?: number;
}

export interface DescribeRequest extends DatasetRef {
  /** warm the workers up for this recipe before answering */
  warmup?: BatchRecipe;
}

export interface DescribeReply {
  classes: string[];
  size: number;
  /** sha256 of the keys and labels in the server's order: servers of one job must agree */
  digest: string;
  workers: number;
}

export interface BatchesRequest extends DatasetRef, BatchRecipe {
  epoch: number;
  /** batch indices within the epoch */
  batches: number[];
}

export interface ServerLoad {
  workers: number;
  /** batches accepted and not yet sent */
  queueDepth: number;
  /** batches on the pool now */
  making: number;
  /** calls whose next batch waits for their client to take the ones written (a stalled client's call stays here) */
  waitingOnClients: number;
  /** images made per second over the last few seconds */
  imagesPerSecond: number;
  /** batches sent since start */
  batches: number;
  /** resident set size, bytes */
  rss: number;
}

export interface FrameHeader {
  epoch: number;
  index: number;
  height: number;
  width: number;
  dtype: 'float32' | 'uint8';
  keys: string[];
  labels: number[];
  skipped: { key: string; reason: string }[];
  workerMs: number;
  load: ServerLoad;
}

/** A malformed request: the server answers INVALID_ARGUMENT with this message. */
export class BadRequest extends UserError {
  constructor(message: string) {
    super(`bad request: ${message}`, { code: 'bad-request' });
  }
}

export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function parseObject(bytes: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new BadRequest('not a JSON document');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new BadRequest('not a JSON object');
  return value as Record<string, unknown>;
}

function int(o: Record<string, unknown>, name: string, min: number, max: number): number {
  const v = o[name];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
    throw new BadRequest(`${name} must be an integer in [${min}, ${max}]`);
  return v;
}

function oneOf<T extends string>(o: Record<string, unknown>, name: string, values: readonly T[]): T {
  const v = o[name];
  if (!values.includes(v as T)) throw new BadRequest(`${name} must be one of ${values.join(', ')}`);
  return v as T;
}

function datasetRef(o: Record<string, unknown>): DatasetRef {
  const dataset = o.dataset;
  if (typeof dataset !== 'string' || dataset.length === 0 || dataset.length > 2048)
    throw new BadRequest('dataset must be a URL of at most 2048 characters');
  return { dataset, split: oneOf(o, 'split', ['train', 'validation', 'test'] as const) };
}

function recipe(o: Record<string, unknown>): BatchRecipe {
  const height = int(o, 'height', 1, MAX_SIDE);
  const width = int(o, 'width', 1, MAX_SIDE);
  const batchSize = int(o, 'batchSize', 1, MAX_BATCH_SIZE);
  const dtype = oneOf(o, 'dtype', ['float32', 'uint8'] as const);
  const bytes = batchSize * height * width * 3 * (dtype === 'uint8' ? 1 : 4);
  if (bytes > MAX_BATCH_BYTES)
    throw new BadRequest(
      `a batch of ${(bytes / 1024 ** 2).toFixed(0)} MiB exceeds the server's ${MAX_BATCH_BYTES / 1024 ** 2} MiB`,
    );
  if (typeof o.shuffle !== 'boolean') throw new BadRequest('shuffle must be a boolean');
  if (typeof o.rescale !== 'number' || !Number.isFinite(o.rescale))
    throw new BadRequest('rescale must be a finite number');
  let augment: AugmentOptions | null = null;
  if (o.augment !== null) {
    if (!o.augment || typeof o.augment !== 'object') throw new BadRequest('augment must be an object or null');
    try {
      augment = resolveAugmentOptions(o.augment as Partial<AugmentOptions>);
    } catch (err) {
      throw new BadRequest((err as Error).message);
    }
  }
  return {
    seed: int(o, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
    shuffle: o.shuffle,
    batchSize,
    height,
    width,
    augment,
    dtype,
    rescale: o.rescale,
    interpolation: oneOf(o, 'interpolation', ['nearest', 'bilinear'] as const),
    jpegDecoder: oneOf(o, 'jpegDecoder', ['fast', 'exact'] as const),
    ...(o.windowShards === undefined ? {} : { windowShards: int(o, 'windowShards', 1, 1_000_000) }),
  };
}

export function parseDescribeRequest(bytes: Buffer): DescribeRequest {
  const o = parseObject(bytes);
  const ref = datasetRef(o);
  return o.warmup === undefined ? ref : { ...ref, warmup: recipe((o.warmup ?? {}) as Record<string, unknown>) };
}

export function parseBatchesRequest(bytes: Buffer): BatchesRequest {
  const o = parseObject(bytes);
  const batches = o.batches;
  if (!Array.isArray(batches) || batches.length === 0 || batches.length > MAX_BATCHES_PER_CALL) {
    throw new BadRequest(`batches must be a list of 1 to ${MAX_BATCHES_PER_CALL} batch indices`);
  }
  if (!batches.every((b) => Number.isSafeInteger(b) && b >= 0)) throw new BadRequest('batches must hold integers >= 0');
  return {
    ...datasetRef(o),
    ...recipe(o),
    epoch: int(o, 'epoch', 0, Number.MAX_SAFE_INTEGER),
    batches: batches as number[],
  };
}

/**
 * The front of a frame: 'CDB1', the header's length and the header, padded so that the pixels that follow it (the
 * rest of the message, `pixelBytes`, sent as they are) start at 3 mod 8.
 */
export function encodeFrameHead(header: FrameHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const padded = json.length + ((3 - ((8 + json.length) % 8) + 8) % 8);
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeUInt32LE(MAGIC, 0);
  head.writeUInt32LE(padded, 4);
  json.copy(head, 8);
  return head;
}

export interface Frame {
  header: FrameHeader;
  xs: Float32Array | Uint8Array;
}

/** The fixed part in front of a frame's header: 'CDB1' and the header's byte length. */
export const FRAME_PREFIX_BYTES = 8;

/** Parses a frame, checking its sizes against the header; the pixels are viewed in place when aligned. */
export function decodeFrame(frame: Buffer): Frame {
  if (frame.length < FRAME_PREFIX_BYTES) throw new Error('augment service: not a batch frame');
  const headerBytes = frame.readUInt32LE(4);
  if (headerBytes > MAX_HEADER_BYTES || FRAME_PREFIX_BYTES + headerBytes > frame.length)
    throw new Error('augment service: bad frame header length');
  const at = FRAME_PREFIX_BYTES + headerBytes;
  let pixels = frame.subarray(at);
  if (pixels.byteOffset % 4 !== 0) pixels = Buffer.from(pixels);
  return parseFrameHeader(frame.subarray(0, FRAME_PREFIX_BYTES), frame.subarray(FRAME_PREFIX_BYTES, at), pixels);
}

/**
 * A frame from its parts: the fixed prefix, the header's JSON and the pixels (4-byte aligned), checked against
 * each other; xs views the pixels' memory.
 */
export function parseFrameHeader(fixed: Buffer, headerJson: Buffer, pixels: Uint8Array): Frame {
  if (fixed.readUInt32LE(0) !== MAGIC) throw new Error('augment service: not a batch frame');
  let header: FrameHeader;
  try {
    header = JSON.parse(headerJson.toString('utf8')) as FrameHeader;
  } catch {
    throw new Error('augment service: a frame header that is not JSON');
  }
  const n = header.keys.length;
  const elements = n * header.height * header.width * 3;
  const bytesPer = header.dtype === 'uint8' ? 1 : 4;
  if (pixels.byteLength !== elements * bytesPer || header.labels.length !== n)
    throw new Error('augment service: frame size does not match its header');
  const xs =
    header.dtype === 'uint8'
      ? new Uint8Array(pixels.buffer, pixels.byteOffset, elements)
      : new Float32Array(pixels.buffer, pixels.byteOffset, elements);
  return { header, xs };
}

/** grpc.health.v1.HealthCheckResponse { status: SERVING } in protobuf: field 1, varint 1. */
export const HEALTH_SERVING = Buffer.from([0x08, 0x01]);
export const HEALTH_NOT_SERVING = Buffer.from([0x08, 0x02]);
