// Piscina task: one batch. Decodes, resizes and augments its samples straight into a fresh batch buffer that is
// moved (not copied) back to the main thread.
import { existsSync, unlinkSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
import jpegTurbo from '@julusian/jpeg-turbo';
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina';
import { batchSampler, threadSampler, type Sampler } from './affine-wasm.js';
import { configureSharpForWorkers, decodeForSampling, type Interpolation, type JpegDecoder } from './decode.js';
import { BOOK_AUGMENTATION, type AugmentOptions } from './options.js';
import { sampleRng } from './random.js';
import { applyAffine, sampleTransform, transformMatrix } from './transform.js';

configureSharpForWorkers();

/** The encoded samples, shared by every worker without copies. */
export interface SharedSamples {
  bytes: SharedArrayBuffer;
  /** [start, length] pairs into bytes, two entries per sample */
  spans: SharedArrayBuffer;
}

export interface BatchTask {
  epoch: number;
  /** indices into the shared samples */
  indices: number[];
  keys: string[];
  height: number;
  width: number;
  augment: AugmentOptions | null;
  seed: number;
  dtype: 'float32' | 'uint8';
  rescale: number;
  interpolation: Interpolation;
  jpegDecoder: JpegDecoder;
  /** Test hook: if this file exists, the worker that manages to delete it exits mid-task (simulated crash). */
  crashMarker?: string;
  /** A recycled batch buffer (moved here) to write into, instead of allocating one. */
  out?: ArrayBuffer;
  /** A recycled batch memory (shared with the main thread) to write into. */
  memory?: WebAssembly.Memory;
  /**
   * This batch's own encoded samples (the streaming path: no split-wide memory); `indices` then index into it.
   * Shared, not moved, so a batch retried after a worker crash still has them.
   */
  encoded?: SharedSamples;
}

export interface BatchResult {
  /** the pixels: an ArrayBuffer moved here, or the shared buffer of `memory` (the batch at its start) */
  xs: ArrayBuffer | SharedArrayBuffer;
  /** the batch memory the pixels were written into, when there is one: recycle it as BatchTask.memory */
  memory?: WebAssembly.Memory;
  /** positions (within the task) of the samples written, in order */
  kept: number[];
  skipped: { position: number; reason: string }[];
  workerMs: number;
}

// The split in memory, when the pool was started over one (null when streaming: each task brings its samples).
const shared = workerData as SharedSamples | null;
const splitBytes = shared ? new Uint8Array(shared.bytes) : null;
const splitSpans = shared ? new Float64Array(shared.spans) : null;

/**
 * Readiness probe: answers with the thread id after a short hold, so concurrent pings land on distinct workers. With
 * `warmup`, the thread first runs its per-image path (decode, parameter draw, sampling) on a synthetic JPEG of the
 * stream's size, so V8 has compiled it before the first real batch: on a machine whose cores are all busy with
 * workers, the optimizing compilers' background threads otherwise get little CPU and the first few hundred images
 * run interpreted code (measured: the first batches took 3-5× the steady time).
 */
export interface PingTask {
  ping: true;
  holdMs: number;
  warmup?: Omit<BatchTask, 'epoch' | 'indices' | 'keys' | 'crashMarker' | 'out'> & { images: number };
}

export default async function runTask(task: BatchTask | PingTask): Promise<BatchResult | { threadId: number }> {
  if ('ping' in task) {
    if (task.warmup && !warmedUp) {
      warmedUp = true;
      await warmUp(task.warmup);
    }
    await new Promise((resolve) => setTimeout(resolve, task.holdMs));
    return { threadId };
  }
  return runBatch(task);
}

let warmedUp = false;

async function warmUp(o: NonNullable<PingTask['warmup']>): Promise<void> {
  const { height: h, width: w } = o;
  const rgb = Buffer.alloc(h * w * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 7 + (i >> 9)) & 255;
  const jpeg = jpegTurbo.compressSync(rgb, {
    format: jpegTurbo.FORMAT_RGB,
    width: w,
    height: h,
    quality: 90,
    subsampling: jpegTurbo.SAMP_420,
  });
  const out = o.dtype === 'uint8' ? new Uint8Array(h * w * 3) : new Float32Array(h * w * 3);
  const sampler = threadSampler();
  for (let k = 0; k < o.images; k++) {
    const image = await decodeForSampling(jpeg, {
      height: h,
      width: w,
      interpolation: o.interpolation,
      jpegDecoder: o.jpegDecoder,
      sampler,
    });
    const params = sampleTransform(o.augment ?? BOOK_AUGMENTATION, sampleRng(o.seed, k, `warmup.${k}`), h, w);
    applyAffine(image, transformMatrix(params, h, w), {
      fillMode: o.augment?.fillMode,
      cval: o.augment?.cval,
      sampler,
      output: {
        data: out,
        rescale: o.rescale,
        flipHorizontal: params.flipHorizontal,
        flipVertical: params.flipVertical,
      },
    });
  }
}

async function runBatch(task: BatchTask): Promise<BatchResult> {
  const t0 = performance.now();
  if (task.crashMarker && existsSync(task.crashMarker)) {
    try {
      unlinkSync(task.crashMarker);
      process.exit(3); // ends this worker thread only
    } catch {
      // another worker won the race
    }
  }
  const { height: h, width: w, indices } = task;
  const n = indices.length;
  const pixels = h * w * 3;
  const bytesPer = task.dtype === 'uint8' ? 1 : 4;
  // The WASM sampler writes images straight into a shared batch memory; else into an ArrayBuffer (copied out).
  const batch = batchSampler(n * pixels * bytesPer, task.memory);
  return writeBatch(task, t0, batch ?? threadSampler(), batch?.memory ?? null);
}

async function writeBatch(
  task: BatchTask,
  t0: number,
  sampler: Sampler | null,
  memory: WebAssembly.Memory | null,
): Promise<BatchResult> {
  const { height: h, width: w, indices } = task;
  const n = indices.length;
  const pixels = h * w * 3;
  const bytesPer = task.dtype === 'uint8' ? 1 : 4;
  const buffer =
    memory?.buffer ??
    (task.out && task.out.byteLength >= n * pixels * bytesPer ? task.out : new ArrayBuffer(n * pixels * bytesPer));
  // Every element of the first n images is written below, so a recycled buffer needs no clearing.
  const out = task.dtype === 'uint8' ? new Uint8Array(buffer, 0, n * pixels) : new Float32Array(buffer, 0, n * pixels);
  const bytes = task.encoded ? new Uint8Array(task.encoded.bytes) : splitBytes;
  const spans = task.encoded ? new Float64Array(task.encoded.spans) : splitSpans;
  if (!bytes || !spans) throw new Error('augment worker: a task without samples on a pool started without a split');
  const decode = (pos: number): Promise<Awaited<ReturnType<typeof decodeForSampling>> | Error> => {
    const i = indices[pos];
    const view = bytes.subarray(spans[2 * i], spans[2 * i] + spans[2 * i + 1]);
    // The nearest resize is folded into the affine's sampling (index tables into the full-size decode).
    return decodeForSampling(view, {
      height: h,
      width: w,
      interpolation: task.interpolation,
      jpegDecoder: task.jpegDecoder,
      sampler,
    }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  };
  const kept: number[] = [];
  const skipped: BatchResult['skipped'] = [];
  for (let pos = 0; pos < n; pos++) {
    // One image at a time: decode (on this thread, or a libvips thread while this one waits), then transform. A worker thus keeps
    // about one core busy, so N workers use N cores and scale cleanly; overlapping would only oversubscribe them.
    const image = await decode(pos);
    if (image instanceof Error) {
      skipped.push({ position: pos, reason: image.message.split('\n')[0] });
      continue;
    }
    const output = { data: out, offset: kept.length * pixels, rescale: task.rescale };
    if (task.augment) {
      const params = sampleTransform(task.augment, sampleRng(task.seed, task.epoch, task.keys[pos]), h, w);
      applyAffine(image, transformMatrix(params, h, w), {
        fillMode: task.augment.fillMode,
        cval: task.augment.cval,
        sampler,
        output: { ...output, flipHorizontal: params.flipHorizontal, flipVertical: params.flipVertical },
      });
    } else {
      applyAffine(image, IDENTITY, { sampler, output });
    }
    kept.push(pos);
  }
  // Corrupt samples leave the batch shorter: the main thread views only the first kept.length images.
  const workerMs = performance.now() - t0;
  // A shared memory is shared with the main thread as it is; an ArrayBuffer is moved (Piscina's Transferable
  // protocol), not cloned.
  if (memory) return { xs: buffer, memory, kept, skipped, workerMs };
  const result: BatchResult = { xs: buffer, kept, skipped, workerMs };
  return move({ [transferableSymbol]: [result.xs], [valueSymbol]: result } as never) as unknown as BatchResult;
}

const IDENTITY = Float64Array.of(1, 0, 0, 0, 1, 0);
