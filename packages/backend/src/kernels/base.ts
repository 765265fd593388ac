// Shared plumbing of the wasm training kernels (registered by ../wasm-kernels.ts): the backend's tensor interface,
// the backend's own kernels kept as fallbacks, and runChunks, which spreads SIMD kernel calls over worker threads.
import * as tf from '@tensorflow/tfjs';
import {
  type SimdKernels,
  simdWorkers,
  type PoolWorker,
  JOB_ARGS,
  type JOB_KERNELS,
  startJob,
  joinJob,
} from '../simd-kernels.js';

type Shape = number[];
export interface TensorInfo {
  dataId: object;
  shape: Shape;
  dtype: tf.DataType;
}
export interface WasmBackend {
  wasm: object;
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number } };
  makeOutput(shape: Shape, dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object, force?: boolean): boolean;
}
export type Attrs = Record<string, unknown>;
export type KernelFn = (args: { inputs: Record<string, TensorInfo>; backend: WasmBackend; attrs: Attrs }) => TensorInfo;

export const BACKEND = 'wasm';

export function kernel(name: string): KernelFn {
  const k = tf.getKernel(name, BACKEND);
  if (!k) throw new Error(`wasm kernel ${name} is not registered (is @tensorflow/tfjs-backend-wasm imported?)`);
  return k.kernelFunc as unknown as KernelFn;
}

export function f32(backend: WasmBackend, t: TensorInfo): Float32Array {
  // A fresh view every time: any allocation may grow (and detach) the heap's ArrayBuffer.
  return backend.typedArrayFromHeap(t) as Float32Array;
}

export function transpose(backend: WasmBackend, x: TensorInfo, perm: number[]): TensorInfo {
  return kernel('Transpose')({ inputs: { x }, backend, attrs: { perm } });
}

export function conv2dForward(
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  strides: [number, number],
  dilations: [number, number],
  pad: [[number, number], [number, number], [number, number], [number, number]],
): TensorInfo {
  return (originals.get('Conv2D') ?? kernel('Conv2D'))({
    inputs: { x, filter },
    backend,
    attrs: { strides, dilations, pad, dataFormat: 'NHWC', dimRoundingMode: undefined },
  });
}

export function isChannelsLast(dataFormat: unknown): boolean {
  return dataFormat == null || dataFormat === 'NHWC' || dataFormat === 'channelsLast';
}

/** Saved original kernels, for the cases the rewrites do not cover. */
export const originals = new Map<string, KernelFn>();

export function fallback(name: string): KernelFn {
  const k = originals.get(name);
  if (!k) throw new Error(`wasm kernel ${name}: no fallback for this configuration`);
  return k;
}

type KernelCall = (a0: number, a1: number, a2: number, a3: number, a4: number, a5: number, a6: number) => void;

/** Worker threads to use next to this one for `chunks` chunks of work (none without the threaded build). */
export function helpers(backend: WasmBackend, chunks: number): PoolWorker[] {
  const threads = threadCount(backend);
  return threads > 1 && chunks > 1 ? simdWorkers(backend.wasm, Math.min(threads, chunks) - 1) : [];
}

/**
 * Runs `kernel` for every call `emit(c, call)` lists for chunks c in [0, chunks) (an image each),
 * on this thread and `workers`, which take chunks as they become free (see startJob). `bases[t]`
 * (thread t, 0 = this one) is added to each call's last argument (per-thread scratch only).
 * Which thread runs which chunk varies run to run, so a chunk's result must not depend on it: chunks
 * write disjoint outputs, or partial sums of their own that the caller adds in chunk order (results
 * are then bit-identical run to run at a given thread count).
 */
export function runChunks(
  backend: WasmBackend,
  simd: SimdKernels,
  kernel: keyof typeof JOB_KERNELS,
  chunks: number,
  workers: PoolWorker[],
  emit: (chunk: number, call: KernelCall) => void,
  bases: readonly number[] = [],
): void {
  const run: KernelCall = simd[kernel];
  const base0 = bases[0] ?? 0;
  if (workers.length === 0) {
    const call: KernelCall = (a0, a1, a2, a3, a4, a5, a6) => run(a0, a1, a2, a3, a4, a5, a6 + base0);
    for (let c = 0; c < chunks; c++) emit(c, call);
    return;
  }
  const calls: number[] = [];
  const starts: number[] = [0];
  for (let c = 0; c < chunks; c++) {
    emit(c, (...args) => calls.push(...args));
    starts.push(calls.length / JOB_ARGS);
  }
  const job = backend.makeOutput([3 + chunks + calls.length], 'int32');
  const words = backend.typedArrayFromHeap(job) as Int32Array;
  words[0] = 0;
  words[1] = chunks;
  words.set(starts, 2);
  words.set(calls, 3 + chunks);
  const jobOffset = backend.dataIdMap.get(job.dataId).memoryOffset;
  workers.forEach((worker, w) => startJob(worker, kernel, jobOffset, bases[w + 1] ?? 0));
  let failure: unknown = null;
  try {
    const first = 3 + chunks;
    for (;;) {
      const c = Atomics.add(words, 0, 1);
      if (c >= chunks) break;
      for (let k = words[2 + c]!, end = words[3 + c]!; k < end; k++) {
        const a = first + k * JOB_ARGS;
        run(
          words[a]!,
          words[a + 1]!,
          words[a + 2]!,
          words[a + 3]!,
          words[a + 4]!,
          words[a + 5]!,
          words[a + 6]! + base0,
        );
      }
    }
  } catch (e) {
    failure = e;
  }
  for (const worker of workers) {
    try {
      joinJob(worker);
    } catch (e) {
      failure ??= e;
    }
  }
  backend.disposeData(job.dataId);
  if (failure) throw failure;
}

/** Threads the backend runs (1 without the threaded build). */
export function threadCount(backend: WasmBackend): number {
  return (backend.wasm as { tfjs?: { getThreadsCount?(): number } }).tfjs?.getThreadsCount?.() ?? 1;
}

/** The attributes tfjs passes to its Conv2D-family kernels (the backprop ones have no dilations). */
export interface ConvAttrs {
  strides: number | [number, number];
  pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
  dataFormat?: string;
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** computeConv2DInfo for an NHWC convolution of xShape by filterShape with a kernel's attributes. */
export function convInfo(
  xShape: readonly number[],
  filterShape: readonly number[],
  attrs: Attrs,
  depthwise = false,
): tf.backend_util.Conv2DInfo {
  const { strides, pad, dilations, dimRoundingMode } = attrs as unknown as ConvAttrs;
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    dilations ?? 1,
    pad,
    dimRoundingMode,
    depthwise,
  );
}

/**
 * A 1×1 convolution at stride 1 without padding (MobileNet's expand and project layers): every pixel of the batch
 * is one row of a matrix product, so the SIMD loops can run over all of them at once instead of row by row.
 */
export function isPointwise(info: tf.backend_util.Conv2DInfo): boolean {
  return (
    info.filterHeight === 1 &&
    info.filterWidth === 1 &&
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1 &&
    info.padInfo.top === 0 &&
    info.padInfo.left === 0 &&
    info.outHeight === info.inHeight &&
    info.outWidth === info.inWidth
  );
}
