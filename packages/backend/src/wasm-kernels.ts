// Training kernels for @tensorflow/tfjs-backend-wasm.
//
// The wasm backend (4.22) lacks Conv2DBackpropFilter and both depthwise backprop kernels, and its
// Conv2DBackpropInput is a naive loop ~10× slower than the forward conv. Here the convolution
// gradients are rewritten as forward convolutions so that they run on the backend's own XNNPACK
// conv (the fastest code in the binary):
//   dx = conv(dy with zeros inserted between rows/cols for stride > 1, filter flipped in space and
//        with in/out channels swapped), padded so the output has the input's size;
//   dW = conv(x transposed to [Cin, H, W, B], dy transposed to [Ho, Wo, B, Cout]) with the forward
//        stride as dilation, giving [Cin, kh, kw, Cout], transposed back to [kh, kw, Cin, Cout].
// Where channel counts allow, hand-written SIMD loops (../wasm/training-kernels.wat) replace these
// rewrites and the forward conv itself: per filter tap and output row, with a block of the result
// in registers, shared with worker threads in the threaded build (faster than XNNPACK for all
// three on the book's convnet, 2–4× for dW, whose XNNPACK "filter" is all of dy). MaxPoolGrad
// (2×2, stride 2), the ReLU gradient and bias gradients (Sum over leading axes) have SIMD loops too.
// The forward Conv2D / FusedConv2D with 3×3 filters at stride 1 run as Winograd convolutions (fewer
// multiplies than any direct loop; see the section below).
// Depthwise gradients are cheap (one MAC per output element and tap) and run as tight loops over
// channels-last data directly on the wasm heap.
// Anything outside what these rewrites cover (NCHW data, unusual explicit padding) falls back to
// the backend's original kernel, so registering never makes a case fail that worked before.
import * as tf from '@tensorflow/tfjs';
import { JOB_ARGS, JOB_KERNELS, joinJob, simdKernels, simdWorkers, startJob, type PoolWorker, type SimdKernels } from './simd-kernels.js';

type Shape = number[];
interface TensorInfo {
  dataId: object;
  shape: Shape;
  dtype: tf.DataType;
}
interface WasmBackend {
  wasm: object;
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number } };
  makeOutput(shape: Shape, dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object, force?: boolean): boolean;
}
type Attrs = Record<string, unknown>;
type KernelFn = (args: { inputs: Record<string, TensorInfo>; backend: WasmBackend; attrs: Attrs }) => TensorInfo;

const BACKEND = 'wasm';

function kernel(name: string): KernelFn {
  const k = tf.getKernel(name, BACKEND);
  if (!k) throw new Error(`wasm kernel ${name} is not registered (is @tensorflow/tfjs-backend-wasm imported?)`);
  return k.kernelFunc as unknown as KernelFn;
}

function f32(backend: WasmBackend, t: TensorInfo): Float32Array {
  // A fresh view every time: any allocation may grow (and detach) the heap's ArrayBuffer.
  return backend.typedArrayFromHeap(t) as Float32Array;
}

function transpose(backend: WasmBackend, x: TensorInfo, perm: number[]): TensorInfo {
  return kernel('Transpose')({ inputs: { x }, backend, attrs: { perm } });
}

function conv2dForward(
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

function isChannelsLast(dataFormat: unknown): boolean {
  return dataFormat == null || dataFormat === 'NHWC' || dataFormat === 'channelsLast';
}

/** Saved original kernels, for the cases the rewrites do not cover. */
const originals = new Map<string, KernelFn>();

function fallback(name: string): KernelFn {
  const k = originals.get(name);
  if (!k) throw new Error(`wasm kernel ${name}: no fallback for this configuration`);
  return k;
}

// ---------------------------------------------------------------------------------------------
// Conv2DBackpropInput

function conv2DBackpropInput({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as {
    strides: number | [number, number];
    pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
    dataFormat?: string;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    inputShape: [number, number, number, number];
  };
  if (!isChannelsLast(dataFormat)) return fallback('Conv2DBackpropInput')({ inputs, backend, attrs });
  const info = tf.backend_util.computeConv2DInfo(
    inputShape,
    filter.shape as [number, number, number, number],
    strides,
    1,
    pad,
    dimRoundingMode,
  );
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const floats = dy.dtype === 'float32' && filter.dtype === 'float32';
  if (floats && Ci % 16 === 0 && isPointwise(info)) {
    const simd = simdKernels(backend.wasm);
    if (simd) return pointwiseInputGrad(simd, backend, dy, filter, info);
  }
  const direct = floats && Ci % 16 === 0 && Ci * Co <= DIRECT_MAX_TAP_FLOATS && Wo >= 8;
  const simd = direct ? simdKernels(backend.wasm) : null;
  if (simd) return inputGradDirect(simd, backend, dy, filter, info);
  const padTop = kh - 1 - info.padInfo.top;
  const padLeft = kw - 1 - info.padInfo.left;
  const hd = (Ho - 1) * sh + 1; // height of dy with zeros inserted
  const wd = (Wo - 1) * sw + 1;
  const padBottom = H + kh - 1 - padTop - hd;
  const padRight = W + kw - 1 - padLeft - wd;
  if (padTop < 0 || padLeft < 0 || padBottom < 0 || padRight < 0) {
    return fallback('Conv2DBackpropInput')({ inputs, backend, attrs });
  }

  // Filter flipped in space, channels swapped: [kh, kw, Ci, Co] -> [kh, kw, Co, Ci].
  const flipped = backend.makeOutput([kh, kw, Co, Ci], 'float32');
  {
    const src = f32(backend, filter);
    const dst = f32(backend, flipped);
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const s0 = ((kh - 1 - i) * kw + (kw - 1 - j)) * Ci * Co;
        const d0 = (i * kw + j) * Co * Ci;
        for (let c = 0; c < Ci; c++) {
          const sRow = s0 + c * Co;
          for (let o = 0; o < Co; o++) dst[d0 + o * Ci + c] = src[sRow + o];
        }
      }
    }
  }

  let source = dy;
  let dilated: TensorInfo | null = null;
  if (sh > 1 || sw > 1) {
    dilated = backend.makeOutput([B, hd, wd, Co], 'float32');
    const src = f32(backend, dy);
    const dst = f32(backend, dilated);
    dst.fill(0);
    for (let b = 0; b < B; b++) {
      for (let r = 0; r < Ho; r++) {
        for (let c = 0; c < Wo; c++) {
          const s = ((b * Ho + r) * Wo + c) * Co;
          const d = ((b * hd + r * sh) * wd + c * sw) * Co;
          dst.set(src.subarray(s, s + Co), d);
        }
      }
    }
    source = dilated;
  }
  const out = conv2dForward(backend, source, flipped, [1, 1], [1, 1], [
    [0, 0],
    [padTop, padBottom],
    [padLeft, padRight],
    [0, 0],
  ]);
  backend.disposeData(flipped.dataId);
  if (dilated) backend.disposeData(dilated.dataId);
  return out;
}

type KernelCall = (a0: number, a1: number, a2: number, a3: number, a4: number, a5: number, a6: number) => void;

/**
 * A 1×1 convolution at stride 1 without padding (MobileNet's expand and project layers): every pixel of the batch
 * is one row of a matrix product, so the SIMD loops can run over all of them at once instead of row by row.
 */
function isPointwise(info: tf.backend_util.Conv2DInfo): boolean {
  return (
    info.filterHeight === 1 && info.filterWidth === 1 && info.strideHeight === 1 && info.strideWidth === 1 &&
    info.dilationHeight === 1 && info.dilationWidth === 1 && info.padInfo.top === 0 && info.padInfo.left === 0 &&
    info.outHeight === info.inHeight && info.outWidth === info.inWidth
  );
}

/** Pixels per chunk of a pointwise gradient shared between threads. */
const POINTWISE_PIXELS = 32;

/** dx = dy · wᵀ for a pointwise convolution (Ci % 16 == 0): conv_input_grad_run over runs of pixels. */
function pointwiseInputGrad(simd: SimdKernels, backend: WasmBackend, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outChannels: Co } = info;
  const P = B * H * W;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const out = backend.makeOutput([B, H, W, Ci], 'float32');
  const wt = transpose(backend, { ...filter, shape: [Ci, Co] }, [1, 0]); // [Co, Ci]
  f32(backend, out).fill(0);
  const dy0 = offset(dy);
  const wt0 = offset(wt);
  const dx0 = offset(out);
  const chunks = Math.ceil(P / POINTWISE_PIXELS);
  try {
    runChunks(backend, simd, 'conv_input_grad_run', chunks, helpers(backend, chunks), (c, call) => {
      const p0 = c * POINTWISE_PIXELS;
      call(dy0 + p0 * Co * 4, Math.min(POINTWISE_PIXELS, P - p0), Co, wt0, Ci, dx0 + p0 * Ci * 4, Ci * 4);
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(wt.dataId);
  }
  return out;
}

/** Worker threads to use next to this one for `chunks` chunks of work (none without the threaded build). */
function helpers(backend: WasmBackend, chunks: number): PoolWorker[] {
  const threads = threadCount(backend);
  return threads > 1 && chunks > 1 ? simdWorkers(backend.wasm, Math.min(threads, chunks) - 1) : [];
}

/**
 * Runs `kernel` for every call `emit(c, call)` lists for chunks c in [0, chunks) (an image each),
 * on this thread and `workers`, which take chunks as they become free (see startJob). `bases[t]`
 * (thread t, 0 = this one) is added to each call's last argument.
 */
function runChunks(
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
        run(words[a]!, words[a + 1]!, words[a + 2]!, words[a + 3]!, words[a + 4]!, words[a + 5]!, words[a + 6]! + base0);
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

/** Output columns [lo, hi) whose tap kj reads inside the input: oj·sw + kj - pl in [0, W). */
function tapColumns(kj: number, pl: number, sw: number, W: number, Wo: number): [number, number] {
  return [Math.max(0, Math.ceil((pl - kj) / sw)), Math.min(Wo, Math.floor((W - 1 - kj + pl) / sw) + 1)];
}

/**
 * The input gradient as a direct SIMD loop (conv_input_grad_run): per filter tap and run of output
 * pixels, dx[pixel, ci] += dy[pixel, :] · w[tap]ᵀ with two pixels × 16 channels of dx in registers.
 */
function inputGradDirect(simd: SimdKernels, backend: WasmBackend, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const out = backend.makeOutput([B, H, W, Ci], 'float32');
  const wt = backend.makeOutput([kh * kw, Co, Ci], 'float32'); // each tap's [Ci, Co] transposed
  {
    const src = f32(backend, filter);
    const dst = f32(backend, wt);
    for (let t = 0; t < kh * kw; t++) {
      const base = t * Ci * Co;
      for (let ci = 0; ci < Ci; ci++) for (let co = 0; co < Co; co++) dst[base + co * Ci + ci] = src[base + ci * Co + co]!;
    }
  }
  f32(backend, out).fill(0);
  const dy0 = offset(dy);
  const wt0 = offset(wt);
  const dx0 = offset(out);
  const dxs = sw * Ci * 4;
  try {
    runChunks(backend, simd, 'conv_input_grad_run', B, helpers(backend, B), (b, call) => {
      for (let kj = 0; kj < kw; kj++) {
        const [ojLo, ojHi] = tapColumns(kj, pl, sw, W, Wo);
        if (ojHi <= ojLo) continue;
        for (let ki = 0; ki < kh; ki++) {
          const wtp = wt0 + (ki * kw + kj) * Co * Ci * 4;
          for (let oi = 0; oi < Ho; oi++) {
            const i = oi * sh + ki - pt;
            if (i < 0 || i >= H) continue;
            call(dy0 + ((b * Ho + oi) * Wo + ojLo) * Co * 4, ojHi - ojLo, Co, wtp, Ci, dx0 + ((b * H + i) * W + ojLo * sw + kj - pl) * Ci * 4, dxs);
          }
        }
      }
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(wt.dataId);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conv2D (forward), stride 1: the same loop as the input gradient, with x for dy and the filter
// taps ([Ci, Co], already the layout the loop wants) for the transposed ones. Measured faster
// than XNNPACK's convolution on the convnet's layers with ≥ 16 input channels.

function conv2D({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, filter } = inputs as { x: TensorInfo; filter: TensorInfo };
  const { strides, pad, dataFormat, dilations, dimRoundingMode } = attrs as {
    strides: number | [number, number];
    pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
    dataFormat?: string;
    dilations?: number | [number, number];
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  const original = fallback('Conv2D');
  if (!isChannelsLast(dataFormat) || x.dtype !== 'float32' || filter.dtype !== 'float32' || x.shape.length !== 4) {
    return original({ inputs, backend, attrs });
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    strides,
    dilations ?? 1,
    pad,
    dimRoundingMode,
  );
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw } = info;
  const winograd = winogradTileSize(backend, info);
  const simdW = winograd ? simdKernels(backend.wasm) : null;
  if (simdW && winograd) return winogradConv(simdW, backend, x, filter, null, 0, info, winograd);
  const direct =
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1 &&
    Ci >= 16 &&
    Co % 16 === 0 &&
    Ci * Co <= DIRECT_MAX_TAP_FLOATS &&
    Wo >= 8;
  const simd = direct ? simdKernels(backend.wasm) : null;
  if (!simd) return original({ inputs, backend, attrs });
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const out = backend.makeOutput([B, Ho, Wo, Co], 'float32');
  f32(backend, out).fill(0);
  const x0 = offset(x);
  const w0 = offset(filter);
  const y0 = offset(out);
  try {
    runChunks(backend, simd, 'conv_input_grad_run', B, helpers(backend, B), (b, call) => {
      for (let kj = 0; kj < kw; kj++) {
        const [ojLo, ojHi] = tapColumns(kj, pl, 1, W, Wo);
        if (ojHi <= ojLo) continue;
        for (let ki = 0; ki < kh; ki++) {
          const wp = w0 + (ki * kw + kj) * Ci * Co * 4;
          for (let oi = 0; oi < Ho; oi++) {
            const i = oi + ki - pt;
            if (i < 0 || i >= H) continue;
            call(x0 + ((b * H + i) * W + ojLo + kj - pl) * Ci * 4, ojHi - ojLo, Ci, wp, Co, y0 + ((b * Ho + oi) * Wo + ojLo) * Co * 4, Co * 4);
          }
        }
      }
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conv2D and FusedConv2D (forward) with 3×3 filters, stride 1: Winograd F(m×m, 3×3), m = 3, 4 or 6
// (wasm/training-kernels.wat, generated by scripts/winograd-wat.mjs, which has the matrices). Per
// tile of m×m outputs the 3×3 convolution becomes (m+2)² elementwise products in a transformed
// space, summed over input channels as (m+2)² matrix products: 25 multiplies per 9 outputs (F3),
// 36 per 16 (F4) or 64 per 36 (F6) instead of 9 per output. The products run on the same SIMD
// micro-kernel as the direct loop (at the 128-bit SIMD peak), so a layer takes 2–3× less time; the
// transforms cost the rest. The tile is chosen per layer by a cost model (maps that fit whole
// tiles: 9×9 → F3, 18×18 → F6). Float32 error grows with the tile: measured ~3e-6 (F3, F4) and
// ~2e-5 (F6) of the output's scale on VGG-sized sums.

/**
 * CATDOG_WASM_WINOGRAD: unset (or 1) chooses per layer; 0 keeps the direct loop / XNNPACK for every
 * convolution, 3, 4 or 6 force that tile wherever Winograd applies (A/B timing, tests). Read per call.
 */
function winogradMode(): 'auto' | 0 | WinogradTile {
  const v = process.env.CATDOG_WASM_WINOGRAD;
  return v === '0' ? 0 : v === '3' ? 3 : v === '4' ? 4 : v === '6' ? 6 : 'auto';
}

/** Output tile sizes m of the Winograd F(m×m, 3×3) kernels. */
type WinogradTile = 3 | 4 | 6;

/** Threads the backend runs (1 without the threaded build). */
function threadCount(backend: WasmBackend): number {
  return (backend.wasm as { tfjs?: { getThreadsCount?(): number } }).tfjs?.getThreadsCount?.() ?? 1;
}

/**
 * Cost of a stride-1 3×3 convolution in multiply-adds of the SIMD micro-kernel: direct (9 per
 * output and channel pair) or Winograd with tile m (the products, transforms ≈ κ multiply-adds per
 * transformed value, the filter transform ≈ 8 per value written, memory-bound, shared by the
 * threads). Constants measured on the VGG16 and convnet layers (tools/bench/src/wasm-kernels.ts).
 */
function convCost(info: tf.backend_util.Conv2DInfo, m: 0 | WinogradTile, threads: number): number {
  const { batchSize: B, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  if (m === 0) return B * Ho * Wo * Ci * Co * 9;
  const n = (m + 2) * (m + 2);
  const tiles = B * Math.ceil(Ho / m) * Math.ceil(Wo / m);
  const kappa = m === 3 ? 22 : m === 4 ? 26 : 40;
  return tiles * n * (Ci * Co + kappa * (Ci + Co)) + (8 * n * Ci * Co) / threads;
}

/** The Winograd tile size for this convolution (3, 4 or 6), or 0 when the direct loop / XNNPACK is better or it does not apply. */
function winogradTileSize(backend: WasmBackend, info: tf.backend_util.Conv2DInfo): 0 | WinogradTile {
  const { inChannels: Ci, outChannels: Co } = info;
  const mode = winogradMode();
  if (
    mode === 0 ||
    info.filterHeight !== 3 ||
    info.filterWidth !== 3 ||
    info.strideHeight !== 1 ||
    info.strideWidth !== 1 ||
    info.dilationHeight !== 1 ||
    info.dilationWidth !== 1 ||
    info.padInfo.top < 0 ||
    info.padInfo.left < 0 ||
    Ci < 16 ||
    Ci % 4 !== 0 ||
    Co % 16 !== 0
  ) {
    return 0;
  }
  if (mode !== 'auto') return mode;
  const threads = threadCount(backend);
  const direct = convCost(info, 0, threads);
  const f3 = convCost(info, 3, threads);
  const f4 = convCost(info, 4, threads);
  const f6 = convCost(info, 6, threads);
  // F3 where its tiles fit the map better (9×9), F6 only where it clearly wins: it is the least accurate.
  let best: WinogradTile = f3 < f4 ? 3 : 4;
  let cost = Math.min(f3, f4);
  if (f6 < 0.85 * cost) {
    best = 6;
    cost = f6;
  }
  return cost < 0.8 * direct ? best : 0;
}

/** Bytes of one position's slice of transformed inputs (or products) in a tile block. */
const WINOGRAD_SLICE_BYTES = 192 << 10;

/**
 * Conv2D / FusedConv2D (bias, then activation flags: 0 linear, 1 relu, 2 relu6) by Winograd with
 * tile m: the filter transform, then blocks of tiles shared by the threads (winograd_tiles).
 */
function winogradConv(
  simd: SimdKernels,
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  bias: TensorInfo | null,
  activation: number,
  info: tf.backend_util.Conv2DInfo,
  m: WinogradTile,
): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const n = (m + 2) * (m + 2);
  const tw = Math.ceil(Wo / m);
  const th = Math.ceil(Ho / m);
  const tiles = B * tw * th;
  const threads = threadCount(backend);
  // Tiles per block: every block streams all of the transformed filter U (36 or 64 × Ci × Co
  // floats, tens of MB for VGG's last blocks: more than the L3 cache), so blocks are as large as
  // lets one position's slices V[ξ] (count × Ci) and M[ξ] (count × Co) stay in L2 while its
  // product runs; then evened out so every thread gets the same number of blocks.
  let count = Math.max(16, Math.min(128, Math.floor(WINOGRAD_SLICE_BYTES / (Math.max(Ci, Co) * 4))));
  const blocks = threads * Math.max(1, Math.ceil(tiles / (threads * count)));
  count = Math.ceil(tiles / blocks);
  const chunks = Math.ceil(tiles / count);
  const scratchFloats = n * (count * (Ci + Co) + 32) + n * Ci;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;

  const out = backend.makeOutput([B, Ho, Wo, Co], 'float32');
  const u = backend.makeOutput([n, Ci * Co + 16], 'float32'); // U[ξ] padded (see the .wat)
  const prm = backend.makeOutput([16], 'int32');
  let scratch: TensorInfo | null = null;
  try {
    // Filter transform, split between the threads by ranges of float vectors.
    const vectors = (Ci * Co) / 4;
    const parts = Math.min(vectors, Math.max(1, threads * 4));
    const w0 = offset(filter);
    const u0 = offset(u);
    runChunks(backend, simd, 'winograd_filter_job', parts, helpers(backend, parts), (c, call) =>
      call(w0, Ci, Co, u0, Math.floor((c * vectors) / parts), Math.floor(((c + 1) * vectors) / parts), m),
    );
    const flags = activation | (bias ? 4 : 0);
    (backend.typedArrayFromHeap(prm) as Int32Array).set([
      offset(x), H, W, Ci, Co, u0, bias ? offset(bias) : 0, offset(out), Ho, Wo, tw, th, info.padInfo.top, info.padInfo.left, flags, m,
    ]);
    const workers = helpers(backend, chunks);
    scratch = backend.makeOutput([(workers.length + 1) * scratchFloats], 'float32');
    const s0 = offset(scratch);
    const p0 = offset(prm);
    runChunks(
      backend,
      simd,
      'winograd_tiles',
      chunks,
      workers,
      (c, call) => call(p0, c * count, Math.min(count, tiles - c * count), 0, 0, 0, s0),
      Array.from({ length: workers.length + 1 }, (_, t) => t * scratchFloats * 4),
    );
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(u.dataId);
    backend.disposeData(prm.dataId);
    if (scratch) backend.disposeData(scratch.dataId);
  }
  return out;
}

const FUSED_ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, relu6: 2 };

/** FusedConv2D (conv, bias, activation: tf.fused.conv2d, e.g. inference through conv layers): Winograd where it wins. */
function fusedConv2D({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, filter, bias, preluActivationWeights } = inputs as {
    x: TensorInfo;
    filter: TensorInfo;
    bias?: TensorInfo;
    preluActivationWeights?: TensorInfo;
  };
  const { strides, pad, dataFormat, dilations, dimRoundingMode, activation } = attrs as {
    strides: number | [number, number];
    pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
    dataFormat?: string;
    dilations?: number | [number, number];
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    activation?: string;
  };
  const original = fallback('FusedConv2D');
  const act = FUSED_ACTIVATIONS[activation ?? 'linear'];
  if (
    act === undefined ||
    preluActivationWeights != null ||
    !isChannelsLast(dataFormat) ||
    x.dtype !== 'float32' ||
    filter.dtype !== 'float32' ||
    x.shape.length !== 4 ||
    (bias != null && (bias.dtype !== 'float32' || bias.shape.length !== 1 || bias.shape[0] !== filter.shape[3]))
  ) {
    return original({ inputs, backend, attrs });
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    strides,
    dilations ?? 1,
    pad,
    dimRoundingMode,
  );
  const m = winogradTileSize(backend, info);
  const simd = m ? simdKernels(backend.wasm) : null;
  if (!simd || !m) return original({ inputs, backend, attrs });
  return winogradConv(simd, backend, x, filter, bias ?? null, act, info, m);
}

// ---------------------------------------------------------------------------------------------
// Conv2DBackpropFilter

function conv2DBackpropFilter({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as {
    strides: number | [number, number];
    pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
    dataFormat?: string;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  if (!isChannelsLast(dataFormat)) {
    throw new Error('Conv2DBackpropFilter on wasm supports channels-last (NHWC) data only');
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape,
    strides,
    1,
    pad,
    dimRoundingMode,
  );
  const { inHeight: H, inWidth: W, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  if (x.dtype === 'float32' && dy.dtype === 'float32' && Co % 16 === 0 && isPointwise(info)) {
    // dW = xᵀ·dy over all the batch's pixels at once
    const simd = simdKernels(backend.wasm);
    const P = info.batchSize * H * W;
    if (simd) {
      const product = filterGradProduct(simd, backend, { ...x, shape: [P, info.inChannels] }, { ...dy, shape: [P, Co] });
      return { ...product, shape: [1, 1, info.inChannels, Co] };
    }
  }
  // The direct loop keeps a tap's [Ci, Co] block of dW hot while each output row streams by: it
  // wins when that block fits in L2 and rows are not too short (else XNNPACK's blocked GEMM does).
  const direct =
    Co % 16 === 0 && info.inChannels * Co <= DIRECT_MAX_TAP_FLOATS && Wo >= 8 && x.dtype === 'float32' && dy.dtype === 'float32';
  const simd = direct ? simdKernels(backend.wasm) : null;
  if (simd) return filterGradDirect(simd, backend, x, dy, info);
  // Rows the correlation of x (padded) with dy (dilated by the stride) needs: (kh-1) + (Ho-1)*sh + 1.
  const needH = kh + (Ho - 1) * sh;
  const needW = kw + (Wo - 1) * sw;
  let padBottom = needH - H - padTop;
  let padRight = needW - W - padLeft;
  // Rows of x beyond needH are never read by the forward conv (valid padding with leftovers):
  // with zero bottom padding the result has extra rows, which are cut below.
  const extraH = padBottom < 0 ? -padBottom : 0;
  const extraW = padRight < 0 ? -padRight : 0;
  padBottom = Math.max(0, padBottom);
  padRight = Math.max(0, padRight);

  const xT = transpose(backend, x, [3, 1, 2, 0]); // [Ci, H, W, B]
  const dyT = transpose(backend, dy, [1, 2, 0, 3]); // [Ho, Wo, B, Co]
  let g = conv2dForward(backend, xT, dyT, [1, 1], [sh, sw], [
    [0, 0],
    [padTop, padBottom],
    [padLeft, padRight],
    [0, 0],
  ]); // [Ci, kh(+extraH), kw(+extraW), Co]
  backend.disposeData(xT.dataId);
  backend.disposeData(dyT.dataId);
  if (extraH > 0 || extraW > 0) {
    const cut = kernel('Slice')({
      inputs: { x: g },
      backend,
      attrs: { begin: [0, 0, 0, 0], size: [g.shape[0], kh, kw, g.shape[3]] },
    });
    backend.disposeData(g.dataId);
    g = cut;
  }
  const out = transpose(backend, g, [1, 2, 0, 3]);
  backend.disposeData(g.dataId);
  return out;
}

/**
 * The filter gradient as a direct SIMD loop (../wasm/training-kernels.wat, conv_filter_grad_run):
 * for each filter tap and each run of output pixels in a row, a 2×16 block of dW stays in
 * registers while x and dy stream by. Nothing is transposed, packed or copied, and the reduction
 * over batch × pixels runs from L1; measured 2× faster than the XNNPACK convolution above on
 * each layer of the book's convnet (single thread). Needs Co % 16 == 0.
 */
/** Largest Ci·Co (one filter tap's block of dW: 256 KB) the direct filter gradient takes. */
const DIRECT_MAX_TAP_FLOATS = 1 << 16;

function filterGradDirect(simd: SimdKernels, backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const filterSize = kh * kw * Ci * Co;
  // Each thread accumulates into its own dW (this one into the output), summed at the end.
  const workers = helpers(backend, B);
  const out = backend.makeOutput([kh, kw, Ci, Co], 'float32');
  const partials = workers.map(() => backend.makeOutput([filterSize], 'float32'));
  for (const t of [out, ...partials]) f32(backend, t).fill(0);
  const x0 = offset(x);
  const dy0 = offset(dy);
  const xs = sw * Ci * 4;
  try {
    runChunks(
      backend,
      simd,
      'conv_filter_grad_run',
      B,
      workers,
      (b, call) => {
        for (let kj = 0; kj < kw; kj++) {
          const [ojLo, ojHi] = tapColumns(kj, pl, sw, W, Wo);
          if (ojHi <= ojLo) continue;
          for (let ki = 0; ki < kh; ki++) {
            const dw = (ki * kw + kj) * Ci * Co * 4; // relative to each thread's dW
            for (let oi = 0; oi < Ho; oi++) {
              const i = oi * sh + ki - pt;
              if (i < 0 || i >= H) continue;
              call(x0 + ((b * H + i) * W + ojLo * sw + kj - pl) * Ci * 4, xs, dy0 + ((b * Ho + oi) * Wo + ojLo) * Co * 4, ojHi - ojLo, Ci, Co, dw);
            }
          }
        }
      },
      [offset(out), ...partials.map(offset)],
    );
    if (partials.length > 0) {
      const o = f32(backend, out);
      for (const partial of partials) {
        const p = f32(backend, partial);
        for (let i = 0; i < filterSize; i++) o[i] += p[i]!;
      }
    }
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    for (const t of partials) backend.disposeData(t.dataId);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Depthwise conv gradients: loops over (batch, output position, tap), channels innermost.

interface DepthwiseGeometry {
  B: number;
  H: number;
  W: number;
  C: number;
  m: number;
  Ho: number;
  Wo: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  padTop: number;
  padLeft: number;
}

function depthwiseGeometry(
  xShape: [number, number, number, number],
  filterShape: [number, number, number, number],
  attrs: Attrs,
): DepthwiseGeometry {
  const { strides, pad, dilations, dimRoundingMode } = attrs as {
    strides: number | [number, number];
    pad: tf.backend_util.ExplicitPadding | 'valid' | 'same' | number;
    dilations?: number | [number, number];
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  const info = tf.backend_util.computeConv2DInfo(
    xShape,
    filterShape,
    strides,
    dilations ?? 1,
    pad,
    dimRoundingMode,
    true,
  );
  return {
    B: info.batchSize,
    H: info.inHeight,
    W: info.inWidth,
    C: info.inChannels,
    m: filterShape[3],
    Ho: info.outHeight,
    Wo: info.outWidth,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    dh: info.dilationHeight,
    dw: info.dilationWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
}

/**
 * Visits every (input position, tap, output position) triple of a depthwise conv and calls
 * `body(xBase, fBase, yBase)` with the flat offsets of channel 0 at the input, the filter tap and
 * the output; the body loops over channels.
 */
function forEachTap(g: DepthwiseGeometry, body: (xBase: number, fBase: number, yBase: number) => void): void {
  const { B, H, W, C, m, Ho, Wo, kh, kw, sh, sw, dh, dw, padTop, padLeft } = g;
  const Cm = C * m;
  for (let b = 0; b < B; b++) {
    for (let oi = 0; oi < Ho; oi++) {
      for (let ki = 0; ki < kh; ki++) {
        const i = oi * sh + ki * dh - padTop;
        if (i < 0 || i >= H) continue;
        for (let oj = 0; oj < Wo; oj++) {
          const yBase = ((b * Ho + oi) * Wo + oj) * Cm;
          for (let kj = 0; kj < kw; kj++) {
            const j = oj * sw + kj * dw - padLeft;
            if (j < 0 || j >= W) continue;
            body(((b * H + i) * W + j) * C, (ki * kw + kj) * Cm, yBase);
          }
        }
      }
    }
  }
}

/** Output columns [lo, hi) whose tap column kj reads inside the input: oj·sw + kj·dw - padLeft in [0, W). */
function depthwiseTapColumns(g: DepthwiseGeometry, kj: number): [number, number] {
  const off = kj * g.dw - g.padLeft;
  return [Math.max(0, Math.ceil(-off / g.sw)), Math.min(g.Wo, Math.floor((g.W - 1 - off) / g.sw) + 1)];
}

/**
 * Lists the runs of a depthwise conv with depth multiplier 1 for `runChunks`: for each image b, output row, tap
 * (ki, kj), the output columns whose input is inside the image, as (input pixel, output pixel, tap, count) element
 * offsets; `chunkOf` says which chunk (thread job) a run belongs to.
 */
function forEachDepthwiseRun(
  g: DepthwiseGeometry,
  chunkOf: { b?: number; tap?: number },
  run: (x: number, y: number, tap: number, n: number) => void,
): void {
  const { B, H, W, C, Ho, Wo, kh, kw, sh, sw, dh, dw, padTop, padLeft } = g;
  for (let b = 0; b < B; b++) {
    if (chunkOf.b !== undefined && b !== chunkOf.b) continue;
    for (let ki = 0; ki < kh; ki++) {
      for (let kj = 0; kj < kw; kj++) {
        const tap = ki * kw + kj;
        if (chunkOf.tap !== undefined && tap !== chunkOf.tap) continue;
        const [lo, hi] = depthwiseTapColumns(g, kj);
        if (hi <= lo) continue;
        for (let oi = 0; oi < Ho; oi++) {
          const i = oi * sh + ki * dh - padTop;
          if (i < 0 || i >= H) continue;
          run(((b * H + i) * W + lo * sw + kj * dw - padLeft) * C, ((b * Ho + oi) * Wo + lo) * C, tap * C, hi - lo);
        }
      }
    }
  }
}

function depthwiseBackpropInput({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const inputShape = attrs.inputShape as [number, number, number, number];
  const g = depthwiseGeometry(inputShape, filter.shape as [number, number, number, number], attrs);
  const simd = g.m === 1 && g.C % 4 === 0 ? simdKernels(backend.wasm) : null;
  if (simd) {
    // SIMD runs along output rows, images shared between threads (each writes its own dx rows).
    const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    const out = backend.makeOutput(inputShape, 'float32');
    f32(backend, out).fill(0);
    const [dy0, w0, dx0] = [offset(dy), offset(filter), offset(out)];
    try {
      runChunks(backend, simd, 'dw_input_grad_run', g.B, helpers(backend, g.B), (b, call) =>
        forEachDepthwiseRun(g, { b }, (x, y, tap, n) => call(dy0 + y * 4, g.C * 4, w0 + tap * 4, n, g.C, g.sw * g.C * 4, dx0 + x * 4)),
      );
    } catch (e) {
      backend.disposeData(out.dataId);
      throw e;
    }
    return out;
  }
  const out = backend.makeOutput(inputShape, 'float32');
  const dx = f32(backend, out);
  const dyv = f32(backend, dy);
  const w = f32(backend, filter);
  dx.fill(0);
  const { C, m } = g;
  if (m === 1) {
    forEachTap(g, (xb, fb, yb) => {
      for (let c = 0; c < C; c++) dx[xb + c] += dyv[yb + c] * w[fb + c];
    });
  } else {
    forEachTap(g, (xb, fb, yb) => {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let q = 0; q < m; q++) s += dyv[yb + c * m + q] * w[fb + c * m + q];
        dx[xb + c] += s;
      }
    });
  }
  return out;
}

function depthwiseBackpropFilter({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const filterShape = attrs.filterShape as [number, number, number, number];
  const g = depthwiseGeometry(x.shape as [number, number, number, number], filterShape, attrs);
  const simd = g.m === 1 && g.C % 4 === 0 ? simdKernels(backend.wasm) : null;
  if (simd) {
    // SIMD runs along output rows, taps shared between threads (each sums into its own tap of dW: no reduction,
    // and the same sums whatever thread takes which tap).
    const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    const out = backend.makeOutput(filterShape, 'float32');
    f32(backend, out).fill(0);
    const [x0, dy0, acc0] = [offset(x), offset(dy), offset(out)];
    const taps = g.kh * g.kw;
    try {
      runChunks(backend, simd, 'dw_filter_grad_run', taps, helpers(backend, taps), (tap, call) =>
        forEachDepthwiseRun(g, { tap }, (xo, y, t, n) => call(x0 + xo * 4, g.sw * g.C * 4, dy0 + y * 4, g.C * 4, n, g.C, acc0 + t * 4)),
      );
    } catch (e) {
      backend.disposeData(out.dataId);
      throw e;
    }
    return out;
  }
  const acc = new Float32Array(filterShape[0] * filterShape[1] * filterShape[2] * filterShape[3]);
  const xv = f32(backend, x);
  const dyv = f32(backend, dy);
  const { C, m } = g;
  if (m === 1) {
    forEachTap(g, (xb, fb, yb) => {
      for (let c = 0; c < C; c++) acc[fb + c] += xv[xb + c] * dyv[yb + c];
    });
  } else {
    forEachTap(g, (xb, fb, yb) => {
      for (let c = 0; c < C; c++) {
        const xc = xv[xb + c];
        for (let q = 0; q < m; q++) acc[fb + c * m + q] += xc * dyv[yb + c * m + q];
      }
    });
  }
  const out = backend.makeOutput(filterShape, 'float32');
  f32(backend, out).set(acc);
  return out;
}

// ---------------------------------------------------------------------------------------------
// MaxPoolGrad: the backend's C loop walks channels outermost (strided access); this walks
// channels innermost, finding each window's first maximum as the cpu backend does.

/** Zeroes the last row/column that 2×2 stride-2 windows leave out when H or W is odd. */
function zeroOutsideWindows(dx: Float32Array, B: number, H: number, W: number, C: number, Ho: number, Wo: number): void {
  const rowStride = W * C;
  for (let b = 0; b < B; b++) {
    if (2 * Wo < W) {
      for (let i = 0; i < 2 * Ho; i++) {
        const r = (b * H + i) * rowStride;
        dx.fill(0, r + 2 * Wo * C, r + rowStride);
      }
    }
    if (2 * Ho < H) dx.fill(0, (b * H + 2 * Ho) * rowStride, (b + 1) * H * rowStride);
  }
}

/**
 * MaxPooling2D(2) (2×2 windows, stride 2, valid): the windows tile the input, so every input
 * element is written once (the gradient at each window's first maximum, 0 elsewhere) instead of
 * zero-filling dx and adding into it.
 */
function maxPoolGrad2x2(
  x: Float32Array,
  g: Float32Array,
  dx: Float32Array,
  B: number,
  H: number,
  W: number,
  C: number,
  Ho: number,
  Wo: number,
): void {
  const rowStride = W * C;
  for (let b = 0; b < B; b++) {
    for (let oi = 0; oi < Ho; oi++) {
      const r0 = (b * H + 2 * oi) * rowStride;
      const r1 = r0 + rowStride;
      let y = ((b * Ho + oi) * Wo) * C;
      for (let oj = 0; oj < Wo; oj++) {
        const p00 = r0 + 2 * oj * C;
        const p01 = p00 + C;
        const p10 = r1 + 2 * oj * C;
        const p11 = p10 + C;
        for (let c = 0; c < C; c++) {
          const a = x[p00 + c]!;
          const bq = x[p01 + c]!;
          const cq = x[p10 + c]!;
          const d = x[p11 + c]!;
          const gv = g[y + c]!;
          // First maximum in window order (as the cpu backend): strict comparisons.
          let m = a;
          let k = 0;
          if (bq > m) {
            m = bq;
            k = 1;
          }
          if (cq > m) {
            m = cq;
            k = 2;
          }
          if (d > m) k = 3;
          dx[p00 + c] = k === 0 ? gv : 0;
          dx[p01 + c] = k === 1 ? gv : 0;
          dx[p10 + c] = k === 2 ? gv : 0;
          dx[p11 + c] = k === 3 ? gv : 0;
        }
        y += C;
      }
      // An odd width leaves a last column outside every window.
      if (2 * Wo < W) {
        dx.fill(0, r0 + 2 * Wo * C, r0 + rowStride);
        dx.fill(0, r1 + 2 * Wo * C, r1 + rowStride);
      }
    }
    // Likewise a last row for an odd height.
    if (2 * Ho < H) dx.fill(0, (b * H + 2 * Ho) * rowStride, (b + 1) * H * rowStride);
  }
}

function maxPoolGrad({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, input } = inputs as { dy: TensorInfo; input: TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = attrs as {
    filterSize: number | [number, number];
    strides: number | [number, number];
    pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  if (input.dtype !== 'float32') return fallback('MaxPoolGrad')({ inputs, backend, attrs });
  const info = tf.backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    filterSize,
    strides,
    1,
    pad,
    dimRoundingMode,
  );
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: C, outHeight: Ho, outWidth: Wo } = info;
  const { strideHeight: sh, strideWidth: sw, effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const { dilationHeight: dh, dilationWidth: dw } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const out = backend.makeOutput(input.shape, 'float32');
  const dx = f32(backend, out);
  const x = f32(backend, input);
  const g = f32(backend, dy);
  if (fh === 2 && fw === 2 && sh === 2 && sw === 2 && dh === 1 && dw === 1 && padTop === 0 && padLeft === 0 && 2 * Ho <= H && 2 * Wo <= W) {
    const simd = C % 4 === 0 ? simdKernels(backend.wasm) : null;
    if (simd) {
      const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
      simd.maxpool_grad_2x2(offset(input), offset(dy), offset(out), B, H, W, C, Ho, Wo);
      zeroOutsideWindows(dx, B, H, W, C, Ho, Wo);
    } else {
      maxPoolGrad2x2(x, g, dx, B, H, W, C, Ho, Wo);
    }
    return out;
  }
  dx.fill(0);
  if (fh === 2 && fw === 2 && dh === 1 && dw === 1 && padTop === 0 && padLeft === 0 && (Ho - 1) * sh + 2 <= H && (Wo - 1) * sw + 2 <= W) {
    // The book's MaxPooling2D(2): every window inside the input, four taps compared in registers.
    const rowStride = W * C;
    for (let b = 0; b < B; b++) {
      for (let oi = 0; oi < Ho; oi++) {
        for (let oj = 0; oj < Wo; oj++) {
          const p00 = ((b * H + oi * sh) * W + oj * sw) * C;
          const p01 = p00 + C;
          const p10 = p00 + rowStride;
          const p11 = p10 + C;
          const yBase = ((b * Ho + oi) * Wo + oj) * C;
          for (let c = 0; c < C; c++) {
            let at = p00 + c;
            let best = x[at]!;
            let v = x[p01 + c]!;
            if (v > best) {
              best = v;
              at = p01 + c;
            }
            v = x[p10 + c]!;
            if (v > best) {
              best = v;
              at = p10 + c;
            }
            v = x[p11 + c]!;
            if (v > best) at = p11 + c;
            dx[at] += g[yBase + c]!;
          }
        }
      }
    }
    return out;
  }
  const best = new Float32Array(C);
  const where = new Int32Array(C);
  for (let b = 0; b < B; b++) {
    for (let oi = 0; oi < Ho; oi++) {
      for (let oj = 0; oj < Wo; oj++) {
        best.fill(-Infinity);
        where.fill(-1);
        for (let fi = 0; fi < fh; fi += dh) {
          const i = oi * sh - padTop + fi;
          if (i < 0 || i >= H) continue;
          for (let fj = 0; fj < fw; fj += dw) {
            const j = oj * sw - padLeft + fj;
            if (j < 0 || j >= W) continue;
            const base = ((b * H + i) * W + j) * C;
            for (let c = 0; c < C; c++) {
              const v = x[base + c]!;
              if (v > best[c]!) {
                best[c] = v;
                where[c] = base + c;
              }
            }
          }
        }
        const yBase = ((b * Ho + oi) * Wo + oj) * C;
        for (let c = 0; c < C; c++) {
          const at = where[c]!;
          if (at >= 0) dx[at] += g[yBase + c]!;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sum over leading axes (bias gradients: dy summed over batch, rows and columns). The backend
// transposes the reduced axes innermost first, a full copy of dy; this accumulates in place.

/** Floats per float32 block of a Sum (about 32k: float32 rounding stays far below the tests' tolerance). */
const SUM_BLOCK_FLOATS = 1 << 15;

function sum({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x } = inputs as { x: TensorInfo };
  const { axis, keepDims } = attrs as { axis: number | number[]; keepDims: boolean };
  const rank = x.shape.length;
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
  if (x.dtype !== 'float32' || !leading) return fallback('Sum')({ inputs, backend, attrs });
  const outer = x.shape.slice(0, axes.length).reduce((a, b) => a * b, 1);
  const keptShape = x.shape.slice(axes.length);
  const inner = keptShape.reduce((a, b) => a * b, 1);
  const acc = new Float64Array(inner);
  const simd = inner % 4 === 0 ? simdKernels(backend.wasm) : null;
  if (simd) {
    // Blocks of rows summed in float32 by SIMD, the blocks' sums accumulated in float64.
    const block = backend.makeOutput([inner], 'float32');
    const xOffset = backend.dataIdMap.get(x.dataId).memoryOffset;
    const blockOffset = backend.dataIdMap.get(block.dataId).memoryOffset;
    const rows = Math.max(1, Math.floor(SUM_BLOCK_FLOATS / inner));
    for (let o = 0; o < outer; o += rows) {
      const n = Math.min(rows, outer - o);
      simd.sum_rows(xOffset + o * inner * 4, blockOffset, n, inner);
      const part = f32(backend, block);
      for (let j = 0; j < inner; j++) acc[j] += part[j]!;
    }
    backend.disposeData(block.dataId);
  } else {
    const v = f32(backend, x);
    for (let o = 0; o < outer; o++) {
      const base = o * inner;
      for (let j = 0; j < inner; j++) acc[j] += v[base + j]!;
    }
  }
  const outShape = keepDims ? [...axes.map(() => 1), ...keptShape] : keptShape;
  const out = backend.makeOutput(outShape, 'float32');
  f32(backend, out).set(acc);
  return out;
}

// ---------------------------------------------------------------------------------------------
// BatchMatMul with transposed operands (every Dense layer's gradients). The backend's XNNPACK
// path covers A·B only; transposed operands take a slow loop. Rewrites, for unbatched products:
//   Aᵀ·B   = (transpose A)·B
//   A·Bᵀ   = (B·Aᵀ)ᵀ when B is the larger operand (the weights: only the small side is packed),
//            else A·(transpose B)
//   Aᵀ·Bᵀ  = (B·A)ᵀ

function batchMatMul({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { a, b } = inputs as { a: TensorInfo; b: TensorInfo };
  const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
  const original = fallback('BatchMatMul');
  const batchA = a.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchB = b.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  if (batchA !== 1 || batchB !== 1 || a.dtype !== 'float32' || b.dtype !== 'float32') return original({ inputs, backend, attrs });
  const mat = (t: TensorInfo): TensorInfo => ({ ...t, shape: t.shape.slice(-2) });
  const A = mat(a);
  const B = mat(b);
  const rank = Math.max(a.shape.length, b.shape.length);
  const shaped = (out: TensorInfo) => ({ ...out, shape: [...new Array(rank - 2).fill(1), ...out.shape.slice(-2)] });
  if (!transposeA && !transposeB) {
    const [M, K] = A.shape as [number, number];
    const N = B.shape[1]!;
    const simd = M <= SMALL_PRODUCT_ROWS && N % 16 === 0 && K * N >= SMALL_PRODUCT_MIN_WEIGHTS ? simdKernels(backend.wasm) : null;
    return simd ? shaped(smallRowsProduct(simd, backend, A, B)) : original({ inputs, backend, attrs });
  }
  const plain = { transposeA: false, transposeB: false };
  const T = (t: TensorInfo) => transpose(backend, t, [1, 0]);
  let out: TensorInfo;
  const N = B.shape[1]!;
  const simd = transposeA && !transposeB && N % 16 === 0 ? simdKernels(backend.wasm) : null;
  if (simd) {
    out = filterGradProduct(simd, backend, A, B);
  } else if (transposeA && !transposeB) {
    const at = T(A);
    out = original({ inputs: { a: at, b: B }, backend, attrs: plain });
    backend.disposeData(at.dataId);
  } else if (!transposeA && transposeB) {
    if (B.shape[0]! > A.shape[0]!) {
      const at = T(A);
      const ct = original({ inputs: { a: B, b: at }, backend, attrs: plain });
      out = T(ct);
      backend.disposeData(at.dataId);
      backend.disposeData(ct.dataId);
    } else {
      const bt = T(B);
      out = original({ inputs: { a: A, b: bt }, backend, attrs: plain });
      backend.disposeData(bt.dataId);
    }
  } else {
    const ct = original({ inputs: { a: B, b: A }, backend, attrs: plain });
    out = T(ct);
    backend.disposeData(ct.dataId);
  }
  return shaped(out);
}

/** A·B with at most this many rows of A (a Dense layer's forward pass at training batch sizes) … */
const SMALL_PRODUCT_ROWS = 64;
/** … and a B at least this large goes through smallRowsProduct. */
const SMALL_PRODUCT_MIN_WEIGHTS = 1 << 16;
/** Rows of B per chunk of smallRowsProduct (a 256 × 256 block of floats: 256 KB, an L2's worth). */
const SMALL_PRODUCT_DEPTH = 256;

/**
 * A·B for a small A [M, K] and a large B [K, N], N % 16 == 0: a Dense layer's forward pass while its weights change
 * every step. XNNPACK packs B into its own layout on every call (27 ms for 20×32000 · 32000×256, most of it the
 * packing); here B is read once, in place: each chunk of SMALL_PRODUCT_DEPTH rows of B is one conv_input_grad_run
 * call (A's matching columns, copied contiguous, as "dy"; B's rows as the transposed filter) into a partial [M, N]
 * of its own, and the partials are summed in chunk order (the same sums whatever thread took which chunk).
 */
function smallRowsProduct(simd: SimdKernels, backend: WasmBackend, A: TensorInfo, B: TensorInfo): TensorInfo {
  const [M, K] = A.shape as [number, number];
  const N = B.shape[1]!;
  const chunks = Math.ceil(K / SMALL_PRODUCT_DEPTH);
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const blocks = backend.makeOutput([M * K], 'float32'); // A's columns chunk by chunk: [chunk][M][depth]
  const partials = backend.makeOutput([chunks, M * N], 'float32');
  const out = backend.makeOutput([M, N], 'float32');
  try {
    {
      const src = f32(backend, A);
      const dst = f32(backend, blocks);
      for (let c = 0, d = 0; c < chunks; c++) {
        const k0 = c * SMALL_PRODUCT_DEPTH;
        const depth = Math.min(SMALL_PRODUCT_DEPTH, K - k0);
        for (let m = 0; m < M; m++, d += depth) dst.set(src.subarray(m * K + k0, m * K + k0 + depth), d);
      }
      f32(backend, partials).fill(0);
    }
    const blocks0 = offset(blocks);
    const b0 = offset(B);
    const p0 = offset(partials);
    runChunks(backend, simd, 'conv_input_grad_run', chunks, helpers(backend, chunks), (c, call) => {
      const k0 = c * SMALL_PRODUCT_DEPTH;
      const depth = Math.min(SMALL_PRODUCT_DEPTH, K - k0);
      call(blocks0 + k0 * M * 4, M, depth, b0 + k0 * N * 4, N, p0 + c * M * N * 4, N * 4);
    });
    simd.sum_rows(p0, offset(out), chunks, M * N);
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(blocks.dataId);
    backend.disposeData(partials.dataId);
  }
  return out;
}

/** Rows of Aᵀ·B per chunk of work shared between threads. */
const PRODUCT_ROWS = 64;

/**
 * Aᵀ·B for A [K, M], B [K, N], N % 16 == 0 (a Dense layer's kernel gradient, xᵀ·dy) with the filter gradient's
 * SIMD loop: out[m, n] = Σ_k A[k, m]·B[k, n] is conv_filter_grad_run with K "pixels", M input and N output
 * channels, threads taking blocks of rows. No transposed copy of A, and a 2×16 block of the result stays in
 * registers while K streams by (XNNPACK on the transposed copy: 22 ms for 32000×20 · 20×256, this: ~4).
 */
function filterGradProduct(simd: SimdKernels, backend: WasmBackend, A: TensorInfo, B: TensorInfo): TensorInfo {
  const [K, M] = A.shape as [number, number];
  const N = B.shape[1]!;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const out = backend.makeOutput([M, N], 'float32');
  const a0 = offset(A);
  const b0 = offset(B);
  const o0 = offset(out);
  const chunks = Math.ceil(M / PRODUCT_ROWS);
  try {
    runChunks(backend, simd, 'conv_filter_grad_run', chunks, helpers(backend, chunks), (c, call) => {
      const m0 = c * PRODUCT_ROWS;
      // K with the sign bit set: the rows are assigned, so out needs no zeroing first.
      call(a0 + m0 * 4, M * 4, b0, K | 0x80000000, Math.min(PRODUCT_ROWS, M - m0), N, o0 + m0 * N * 4);
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Identity shares the input's buffer (tensors are immutable; the cpu backend does the same)
// instead of copying it. tfjs-layers reads every weight through Identity on every step.

function identity({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x } = inputs as { x: TensorInfo };
  if (x.dtype === 'string') return fallback('Identity')({ inputs, backend, attrs });
  (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

// ---------------------------------------------------------------------------------------------
// FusedBatchNorm (batchNormalization) with per-channel statistics: one multiply-add per element
// with the scale and shift folded per channel, channels innermost.

function fusedBatchNorm({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, mean, variance, offset, scale } = inputs as Record<string, TensorInfo | undefined> & { x: TensorInfo };
  const eps = (attrs.varianceEpsilon as number | undefined) ?? 0.001;
  const C = x.shape[x.shape.length - 1] ?? 1;
  const perChannel = (t: TensorInfo | undefined) =>
    t == null || (t.dtype === 'float32' && t.shape.reduce((a, b) => a * b, 1) === C && t.shape.slice(0, -1).every((d) => d === 1));
  if (x.dtype !== 'float32' || x.shape.length < 1 || ![mean, variance, offset, scale].every(perChannel) || !mean || !variance) {
    return fallback('FusedBatchNorm')({ inputs: inputs as Record<string, TensorInfo>, backend, attrs });
  }
  const mul = new Float32Array(C);
  const add = new Float32Array(C);
  {
    const m = f32(backend, mean);
    const v = f32(backend, variance);
    const g = scale ? f32(backend, scale) : null;
    const b = offset ? f32(backend, offset) : null;
    for (let c = 0; c < C; c++) {
      const k = (g ? g[c]! : 1) / Math.sqrt(v[c]! + eps);
      mul[c] = k;
      add[c] = (b ? b[c]! : 0) - m[c]! * k;
    }
  }
  if (x.shape.length === 4) {
    // As a 1×1 depthwise convolution with bias: XNNPACK's SIMD kernel does the multiply-add.
    const filter = backend.makeOutput([1, 1, C, 1], 'float32');
    f32(backend, filter).set(mul);
    const bias = backend.makeOutput([C], 'float32');
    f32(backend, bias).set(add);
    const out = kernel('FusedDepthwiseConv2D')({
      inputs: { x, filter, bias },
      backend,
      attrs: { strides: [1, 1], pad: 'valid', dataFormat: 'NHWC', dilations: [1, 1], activation: 'linear' },
    });
    backend.disposeData(filter.dataId);
    backend.disposeData(bias.dataId);
    return out;
  }
  const out = backend.makeOutput(x.shape, 'float32');
  const o = f32(backend, out);
  const xv = f32(backend, x);
  const n = xv.length;
  for (let base = 0; base < n; base += C) {
    for (let c = 0; c < C; c++) o[base + c] = xv[base + c]! * mul[c]! + add[c]!;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The FusedBatchNorm gradient of tfjs-core tiles the per-channel factor to the full input shape
// and computes x - mean and dy·scale eagerly even when only dx is needed (BatchNorm frozen, as
// when fine-tuning). This one broadcasts and computes each part only when asked for. Same
// mathematics, every backend.

const fusedBatchNormGrad: tf.GradConfig = {
  kernelName: 'FusedBatchNorm',
  inputsToSave: ['x', 'mean', 'variance', 'scale'],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    const g = dy as tf.Tensor;
    const { varianceEpsilon } = attrs as unknown as { varianceEpsilon: number };
    const [x, mean, variance, scale] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | undefined];
    const reductionAxes = tf.backend_util.getReductionAxes(mean.shape, x.shape);
    const reduce = (t: tf.Tensor) => tf.reshape(mean.rank === 1 ? tf.sum(t, reductionAxes) : t, mean.shape);
    const rstd = () => tf.rsqrt(tf.add(variance, tf.scalar(varianceEpsilon)));
    const scaled = () => (scale == null ? g : tf.mul(g, scale));
    return {
      x: () => tf.reshape(tf.mul(g, scale == null ? rstd() : tf.mul(rstd(), scale)), x.shape),
      mean: () => reduce(tf.mul(tf.neg(rstd()), scaled())),
      variance: () => {
        const r = rstd();
        const minusHalfRCube = tf.mul(tf.mul(tf.mul(r, r), r), tf.scalar(-0.5));
        return reduce(tf.mul(tf.mul(minusHalfRCube, tf.sub(x, mean)), scaled()));
      },
      scale: () => reduce(tf.mul(g, tf.mul(tf.sub(x, mean), rstd()))),
      offset: () => reduce(g),
    };
  },
};

// ---------------------------------------------------------------------------------------------
// ReLU gradient. tfjs-core computes dy · cast(step(x)): three passes over the activation and two
// temporaries of its size. On wasm this is one SIMD pass (x > 0 ? dy : 0); elsewhere the
// formula of tfjs-core, unchanged.

const RELU_GRAD_KERNEL = 'CatdogReluGrad';

function reluGrad({ inputs, backend }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const out = backend.makeOutput(x.shape, 'float32');
  const size = x.shape.reduce((a, b) => a * b, 1);
  const simd = simdKernels(backend.wasm);
  const vectors = simd ? size >> 2 : 0;
  if (simd && vectors > 0) {
    const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    simd.relu_grad(offset(x), offset(dy), offset(out), vectors);
  }
  const o = f32(backend, out);
  const xv = f32(backend, x);
  const g = f32(backend, dy);
  for (let i = vectors * 4; i < size; i++) o[i] = xv[i]! > 0 ? g[i]! : 0;
  return out;
}

const reluGradConfig: tf.GradConfig = {
  kernelName: 'Relu',
  inputsToSave: ['x'],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
    const g = dy as tf.Tensor;
    const [x] = saved as [tf.Tensor];
    return {
      x: () =>
        tf.getBackend() === BACKEND && g.dtype === 'float32' && x.dtype === 'float32'
          ? (tf.engine().runKernel(RELU_GRAD_KERNEL, { dy: g, x }) as tf.Tensor)
          : tf.mul(g, tf.cast(tf.step(x), 'float32')),
    };
  },
};

// ---------------------------------------------------------------------------------------------
// ClipByValue gradient (tfjs-layers' ReLU(max_value), MobileNetV2's ReLU6): tfjs-core computes
// where(logicalAnd(x >= lo, x <= hi), dy, zerosLike(dy)), five passes and four temporaries; on wasm
// one SIMD pass, elsewhere tfjs-core's formula.

const CLIP_GRAD_KERNEL = 'CatdogClipGrad';

function clipGrad({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const { lo, hi } = attrs as { lo: number; hi: number };
  const out = backend.makeOutput(x.shape, 'float32');
  const size = x.shape.reduce((a, b) => a * b, 1);
  const simd = simdKernels(backend.wasm);
  const vectors = simd ? size >> 2 : 0;
  if (simd && vectors > 0) {
    const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    simd.clip_grad(offset(x), offset(dy), offset(out), vectors, lo, hi);
  }
  const o = f32(backend, out);
  const xv = f32(backend, x);
  const g = f32(backend, dy);
  const l = Math.fround(lo);
  const h = Math.fround(hi);
  for (let i = vectors * 4; i < size; i++) o[i] = xv[i]! >= l && xv[i]! <= h ? g[i]! : 0;
  return out;
}

const clipGradConfig: tf.GradConfig = {
  kernelName: 'ClipByValue',
  inputsToSave: ['x'],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    const g = dy as tf.Tensor;
    const [x] = saved as [tf.Tensor];
    const { clipValueMin: lo, clipValueMax: hi } = attrs as { clipValueMin: number; clipValueMax: number };
    return {
      x: () =>
        tf.getBackend() === BACKEND && g.dtype === 'float32' && x.dtype === 'float32'
          ? (tf.engine().runKernel(CLIP_GRAD_KERNEL, { dy: g, x }, { lo, hi }) as tf.Tensor)
          : tf.where(tf.logicalAnd(tf.greaterEqual(x, lo), tf.lessEqual(x, hi)), g, tf.zerosLike(g)),
    };
  },
};

// ---------------------------------------------------------------------------------------------
// RMSprop update in one pass (see rmsprop.ts): tfjs-core's RMSPropOptimizer runs 15 elementwise
// ops per variable (it computes the new mean square twice), each a pass over the whole variable:
// 53 ms per step for the 8.2M-weight Dense layer of a fine-tuned MobileNetV2's head. Same float32
// operations in the same order, so the same values bit for bit (tested).

export const RMSPROP_KERNEL = 'CatdogRMSProp';
/** Floats per chunk of work shared between threads. */
const RMSPROP_CHUNK = 1 << 16;

function rmspropUpdate({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo[] {
  const { gradient, meanSquare, moments, value } = inputs as Record<'gradient' | 'meanSquare' | 'moments' | 'value', TensorInfo>;
  const { decay, learningRate, epsilon, momentum } = attrs as { decay: number; learningRate: number; epsilon: number; momentum: number };
  const shape = value.shape;
  const size = shape.reduce((a, b) => a * b, 1);
  const outs = [backend.makeOutput(shape, 'float32'), backend.makeOutput(shape, 'float32'), backend.makeOutput(shape, 'float32')];
  const [newMs, newMom, newVar] = outs as [TensorInfo, TensorInfo, TensorInfo];
  const rho = Math.fround(decay);
  const omr = Math.fround(1 - decay);
  const lr = Math.fround(learningRate);
  const eps = Math.fround(epsilon);
  const mu = Math.fround(momentum);
  const simd = simdKernels(backend.wasm);
  const vectors = simd ? size >> 2 : 0;
  if (simd && vectors > 0) {
    const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    const prm = backend.makeOutput([12], 'int32');
    const words = backend.typedArrayFromHeap(prm) as Int32Array;
    words.set([gradient, meanSquare, moments, value, newMs, newMom, newVar].map(offset));
    new Float32Array(words.buffer, words.byteOffset + 28, 5).set([rho, omr, lr, eps, mu]);
    const p = offset(prm);
    const per = RMSPROP_CHUNK / 4;
    const chunks = Math.ceil(vectors / per);
    try {
      runChunks(backend, simd, 'rmsprop_run', chunks, helpers(backend, chunks), (c, call) =>
        call(p, c * per, Math.min(vectors, (c + 1) * per), 0, 0, 0, 0),
      );
    } finally {
      backend.disposeData(prm.dataId);
    }
  }
  const [g, ms, mom, v] = [gradient, meanSquare, moments, value].map((t) => f32(backend, t)) as Float32Array[];
  const [oMs, oMom, oV] = outs.map((t) => f32(backend, t)) as Float32Array[];
  const f = Math.fround;
  for (let i = vectors * 4; i < size; i++) {
    const gi = g![i]!;
    oMs![i] = f(f(ms![i]! * rho) + f(f(gi * gi) * omr));
    oMom![i] = f(f(mom![i]! * mu) + f(f(gi * lr) / f(Math.sqrt(f(oMs![i]! + eps)))));
    oV![i] = f(v![i]! - oMom![i]!);
  }
  return outs;
}

// ---------------------------------------------------------------------------------------------

const TRAINING_KERNELS: Array<{ kernelName: string; kernelFunc: KernelFn }> = [
  { kernelName: 'Conv2D', kernelFunc: conv2D },
  { kernelName: 'FusedConv2D', kernelFunc: fusedConv2D },
  { kernelName: 'Conv2DBackpropInput', kernelFunc: conv2DBackpropInput },
  { kernelName: 'Conv2DBackpropFilter', kernelFunc: conv2DBackpropFilter },
  { kernelName: 'DepthwiseConv2dNativeBackpropInput', kernelFunc: depthwiseBackpropInput },
  { kernelName: 'DepthwiseConv2dNativeBackpropFilter', kernelFunc: depthwiseBackpropFilter },
  { kernelName: 'MaxPoolGrad', kernelFunc: maxPoolGrad },
  { kernelName: 'Sum', kernelFunc: sum },
  { kernelName: 'BatchMatMul', kernelFunc: batchMatMul },
  { kernelName: 'Identity', kernelFunc: identity },
  { kernelName: 'FusedBatchNorm', kernelFunc: fusedBatchNorm },
  { kernelName: RELU_GRAD_KERNEL, kernelFunc: reluGrad },
  { kernelName: CLIP_GRAD_KERNEL, kernelFunc: clipGrad },
  { kernelName: RMSPROP_KERNEL, kernelFunc: rmspropUpdate as unknown as KernelFn },
];

let registered = false;

/**
 * Whether the hand-written SIMD kernels (MaxPoolGrad 2×2, bias-gradient Sum) run on the current
 * wasm backend's memory; when false those kernels use JS loops. Call after the backend is ready.
 */
export function wasmSimdKernelsLoaded(): boolean {
  const backend = tf.findBackend(BACKEND) as unknown as { wasm?: object } | null;
  return backend?.wasm != null && simdKernels(backend.wasm) != null;
}

/**
 * Worker threads ready to share the SIMD filter gradient with the main thread (threaded wasm
 * build only: one less than the backend's thread count). Starts them on first call; they become
 * ready asynchronously, and until then the main thread does all the work.
 */
export function wasmSimdWorkers(): number {
  const backend = tf.findBackend(BACKEND) as unknown as { wasm?: { tfjs?: { getThreadsCount?(): number } } } | null;
  if (!backend?.wasm) return 0;
  const threads = backend.wasm.tfjs?.getThreadsCount?.() ?? 1;
  return simdWorkers(backend.wasm, threads - 1).length;
}

/**
 * The Winograd tile size (3, 4 or 6) the wasm Conv2D / FusedConv2D kernels use for this convolution
 * (NHWC, float32), or 0 when they run it otherwise (direct SIMD loop or XNNPACK). Call after the
 * wasm backend is ready: the choice depends on its thread count and on CATDOG_WASM_WINOGRAD.
 */
export function wasmWinogradTileSize(
  xShape: [number, number, number, number],
  filterShape: [number, number, number, number],
  strides: number | [number, number],
  pad: 'valid' | 'same' | number,
  dilations: number | [number, number] = 1,
): 0 | 3 | 4 | 6 {
  const backend = tf.findBackend(BACKEND) as unknown as WasmBackend | null;
  if (!backend?.wasm || !simdKernels(backend.wasm)) return 0;
  return winogradTileSize(backend, tf.backend_util.computeConv2DInfo(xShape, filterShape, strides, dilations, pad));
}

/** Names of the kernels this package registers (or replaces) for the wasm backend. */
export const wasmTrainingKernelNames: readonly string[] = TRAINING_KERNELS.map((k) => k.kernelName);

/**
 * Registers the training kernels for 'wasm' (idempotent). Call after importing
 * @tensorflow/tfjs-backend-wasm, whose own registrations are replaced where they exist.
 */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  for (const { kernelName, kernelFunc } of TRAINING_KERNELS) {
    const existing = tf.getKernel(kernelName, BACKEND);
    if (existing) {
      originals.set(kernelName, existing.kernelFunc as unknown as KernelFn);
      tf.unregisterKernel(kernelName, BACKEND);
    }
    // The original's setupFunc (binding its C function) must still run at backend init for the fallback.
    tf.registerKernel({
      kernelName,
      backendName: BACKEND,
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
      setupFunc: existing?.setupFunc,
    });
  }
  tf.registerGradient(fusedBatchNormGrad);
  tf.registerGradient(reluGradConfig);
  tf.registerGradient(clipGradConfig);
  registered = true;
}
