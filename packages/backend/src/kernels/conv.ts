// Convolutions on wasm: Conv2DBackpropInput, Conv2DBackpropFilter and the direct stride-1 forward Conv2D (3×3
// stride-1 forward convolutions go to winograd.ts, their input gradients to winograd-input-grad.ts and their filter
// gradients to winograd-filter-grad.ts, when the layer's plan says so).
import type * as tf from '@tensorflow/tfjs';
import { simdKernels, type SimdKernels } from '../simd-kernels.js';
import {
  type ConvAttrs,
  type KernelFn,
  type TensorInfo,
  type WasmBackend,
  conv2dForward,
  convInfo,
  f32,
  fallback,
  helpers,
  isChannelsLast,
  isPointwise,
  kernel,
  runChunks,
  threadCount,
  transpose,
} from './base.js';
import { filterGradProduct } from './matmul.js';
import { winogradConv } from './winograd.js';
import { winogradInputGrad } from './winograd-input-grad.js';
import { winogradFilterGrad } from './winograd-filter-grad.js';
import { forwardPlan, gradientPlan } from './plans.js';
import type { KernelPlan } from '../autotune.js';

// Conv2DBackpropInput

export function conv2DBackpropInput({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const { dataFormat, inputShape } = attrs as unknown as ConvAttrs & { inputShape: [number, number, number, number] };
  if (!isChannelsLast(dataFormat)) return fallback('Conv2DBackpropInput')({ inputs, backend, attrs });
  const info = convInfo(inputShape, filter.shape, attrs);
  const { inChannels: Ci, outChannels: Co } = info;
  const floats = dy.dtype === 'float32' && filter.dtype === 'float32';
  // The SIMD loop over all pixels at once for a pointwise convolution; else, as the layer's plan says, row by row
  // (rows ≥ 8 pixels; by default where a tap's block ≤ 64 k floats), Winograd (3×3 stride 1: the correlation of dy
  // with the flipped filter, where the cost model says so) or the rewrite onto XNNPACK.
  const simd = floats && Ci % 16 === 0 ? simdKernels(backend.wasm) : null;
  if (simd && isPointwise(info)) return inputGradDirect(simd, backend, dy, filter, info);
  const run = (plan: KernelPlan, dyp: TensorInfo, infop: tf.backend_util.Conv2DInfo, attrsp: typeof attrs) =>
    simd && plan.kind === 'direct'
      ? inputGradDirect(simd, backend, dyp, filter, infop)
      : simd && plan.kind === 'winograd'
        ? winogradInputGrad(simd, backend, dyp, filter, infop, plan.m, plan.block)
        : inputGradRewrite(backend, dyp, filter, infop, attrsp);
  const plan: KernelPlan = simd
    ? gradientPlan(backend, 'backprop-input', info, (p, xShape) => {
        const infop = convInfo(xShape, filter.shape, attrs);
        const dyp = { ...dy, shape: [xShape[0], infop.outHeight, infop.outWidth, Co] };
        backend.disposeData(run(p, dyp, infop, { ...attrs, inputShape: xShape }).dataId);
      })
    : { kind: 'xnnpack' };
  return run(plan, dy, info, attrs);
}

/**
 * The input gradient as a forward XNNPACK convolution of dy (zeros inserted between rows and
 * columns for stride > 1) with the filter flipped in space and its channels swapped.
 */
function inputGradRewrite(
  backend: WasmBackend,
  dy: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
  attrs: Parameters<KernelFn>[0]['attrs'],
): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const padTop = kh - 1 - info.padInfo.top;
  const padLeft = kw - 1 - info.padInfo.left;
  const hd = (Ho - 1) * sh + 1; // height of dy with zeros inserted
  const wd = (Wo - 1) * sw + 1;
  const padBottom = H + kh - 1 - padTop - hd;
  const padRight = W + kw - 1 - padLeft - wd;
  if (padTop < 0 || padLeft < 0 || padBottom < 0 || padRight < 0) {
    return fallback('Conv2DBackpropInput')({ inputs: { dy, filter }, backend, attrs });
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
  const out = conv2dForward(
    backend,
    source,
    flipped,
    [1, 1],
    [1, 1],
    [
      [0, 0],
      [padTop, padBottom],
      [padLeft, padRight],
      [0, 0],
    ],
  );
  backend.disposeData(flipped.dataId);
  if (dilated) backend.disposeData(dilated.dataId);
  return out;
}

/** Pixels per chunk of a pointwise gradient shared between threads. */
const POINTWISE_PIXELS = 32;

/** Output columns [lo, hi) whose tap kj reads inside the input: oj·sw + kj - pl in [0, W). */
function tapColumns(kj: number, pl: number, sw: number, W: number, Wo: number): [number, number] {
  return [Math.max(0, Math.ceil((pl - kj) / sw)), Math.min(Wo, Math.floor((W - 1 - kj + pl) / sw) + 1)];
}

/**
 * The input gradient as a direct SIMD loop (conv_input_grad_run): per filter tap and run of output
 * pixels, dx[pixel, ci] += dy[pixel, :] · w[tap]ᵀ with two pixels × 16 channels of dx in registers.
 * Runs are output rows, threads taking images; for a pointwise convolution they are blocks of
 * POINTWISE_PIXELS of the whole batch.
 */
function inputGradDirect(
  simd: SimdKernels,
  backend: WasmBackend,
  dy: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const out = backend.makeOutput([B, H, W, Ci], 'float32');
  const wt = transpose(backend, { ...filter, shape: [kh * kw, Ci, Co] }, [0, 2, 1]); // each tap's [Ci, Co] transposed
  f32(backend, out).fill(0);
  const dy0 = offset(dy);
  const wt0 = offset(wt);
  const dx0 = offset(out);
  const dxs = sw * Ci * 4;
  const P = B * H * W;
  const pointwise = isPointwise(info);
  const chunks = pointwise ? Math.ceil(P / POINTWISE_PIXELS) : B;
  try {
    runChunks(backend, simd, 'conv_input_grad_run', chunks, helpers(backend, chunks), (b, call) => {
      if (pointwise) {
        const p0 = b * POINTWISE_PIXELS;
        call(dy0 + p0 * Co * 4, Math.min(POINTWISE_PIXELS, P - p0), Co, wt0, Ci, dx0 + p0 * Ci * 4, Ci * 4);
        return;
      }
      for (let kj = 0; kj < kw; kj++) {
        const [ojLo, ojHi] = tapColumns(kj, pl, sw, W, Wo);
        if (ojHi <= ojLo) continue;
        for (let ki = 0; ki < kh; ki++) {
          const wtp = wt0 + (ki * kw + kj) * Co * Ci * 4;
          for (let oi = 0; oi < Ho; oi++) {
            const i = oi * sh + ki - pt;
            if (i < 0 || i >= H) continue;
            call(
              dy0 + ((b * Ho + oi) * Wo + ojLo) * Co * 4,
              ojHi - ojLo,
              Co,
              wtp,
              Ci,
              dx0 + ((b * H + i) * W + ojLo * sw + kj - pl) * Ci * 4,
              dxs,
            );
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

export function conv2D({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, filter } = inputs as { x: TensorInfo; filter: TensorInfo };
  const { dataFormat } = attrs as unknown as ConvAttrs;
  const original = fallback('Conv2D');
  if (!isChannelsLast(dataFormat) || x.dtype !== 'float32' || filter.dtype !== 'float32' || x.shape.length !== 4) {
    return original({ inputs, backend, attrs });
  }
  const simd = simdKernels(backend.wasm);
  if (!simd) return original({ inputs, backend, attrs });
  // Winograd (3×3 stride 1), the direct loop or XNNPACK: as the layer's plan says (autotune.ts).
  const run = (plan: KernelPlan, xp: TensorInfo, infop: tf.backend_util.Conv2DInfo): TensorInfo =>
    plan.kind === 'winograd'
      ? winogradConv(simd, backend, xp, filter, null, 0, infop, plan.m, plan.block)
      : plan.kind === 'direct'
        ? isPointwise(infop)
          ? pointwiseForward(simd, backend, xp, filter, null, 0, infop)
          : directForward(simd, backend, xp, filter, infop)
        : original({ inputs: { x: xp, filter }, backend, attrs });
  const info = convInfo(x.shape, filter.shape, attrs);
  const plan = forwardPlan(backend, info, false, (p, xShape) => {
    backend.disposeData(run(p, { ...x, shape: xShape }, convInfo(xShape, filter.shape, attrs)).dataId);
  });
  return run(plan, x, info);
}

/** Conv2D, stride 1, by the direct SIMD loop, threads taking images. */
function directForward(
  simd: SimdKernels,
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw } = info;
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
            call(
              x0 + ((b * H + i) * W + ojLo + kj - pl) * Ci * 4,
              ojHi - ojLo,
              Ci,
              wp,
              Co,
              y0 + ((b * Ho + oi) * Wo + ojLo) * Co * 4,
              Co * 4,
            );
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

/** Output pixels per chunk of a pointwise forward run: about 128 KB of input rows, re-read per 16 output channels. */
export function pointwisePixels(Ci: number): number {
  return Math.max(16, Math.min(1024, 2 * Math.round(16384 / Ci)));
}

/**
 * A pointwise (1×1, stride 1) convolution as one matrix product over all the batch's pixels (pointwise_run), each
 * output written once: accumulators start from the bias (zeros without one) and are clamped (act: 0 linear,
 * 1 ReLU, 2 ReLU6) as they are stored, so no pass zeroes the output or applies bias and activation afterwards.
 */
function pointwiseForward(
  simd: SimdKernels,
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  bias: TensorInfo | null,
  act: number,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outChannels: Co } = info;
  const P = B * H * W;
  // Chunks of at most pointwisePixels, as many as give every thread the same number (a batch of 2 at 7×7 on 2
  // threads: 2 chunks of 50 pixels, not 34 + 34 + 30, which left one thread idle a third of the time).
  const threads = threadCount(backend);
  const chunks = threads * Math.ceil(P / (pointwisePixels(Ci) * threads));
  const chunk = 2 * Math.ceil(P / (2 * chunks)); // pairs of pixels: the loop's register block
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const zeros = bias ? null : backend.makeOutput([Co], 'float32');
  if (zeros) f32(backend, zeros).fill(0);
  const out = backend.makeOutput([B, H, W, Co], 'float32');
  const x0 = offset(x);
  const w0 = offset(filter);
  const y0 = offset(out);
  const b0 = offset(bias ?? zeros!);
  try {
    runChunks(backend, simd, 'pointwise_run', chunks, helpers(backend, chunks), (c, call) => {
      const p = c * chunk;
      const n = Math.min(chunk, P - p);
      if (n <= 0) return;
      call(x0 + p * Ci * 4, n | (act << 30), Ci, w0, Co, y0 + p * Co * 4, b0);
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    if (zeros) backend.disposeData(zeros.dataId);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conv2DBackpropFilter

export function conv2DBackpropFilter({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { dataFormat, filterShape } = attrs as unknown as ConvAttrs & { filterShape: [number, number, number, number] };
  if (!isChannelsLast(dataFormat)) {
    throw new Error('Conv2DBackpropFilter on wasm supports channels-last (NHWC) data only');
  }
  const info = convInfo(x.shape, filterShape, attrs);
  const { inHeight: H, inWidth: W, outChannels: Co } = info;
  if (x.dtype === 'float32' && dy.dtype === 'float32' && Co % 16 === 0 && isPointwise(info)) {
    // dW = xᵀ·dy over all the batch's pixels at once
    const simd = simdKernels(backend.wasm);
    const P = info.batchSize * H * W;
    if (simd) {
      const product = filterGradProduct(
        simd,
        backend,
        { ...x, shape: [P, info.inChannels] },
        { ...dy, shape: [P, Co] },
      );
      return { ...product, shape: [1, 1, info.inChannels, Co] };
    }
  }
  // The direct loop keeps a tap's [Ci, Co] block of dW hot while each output row streams by: it
  // wins when that block fits in L2 and rows are not too short (else XNNPACK's blocked GEMM does);
  // 3×3 stride-1 layers also have Winograd (winograd-filter-grad.ts); the layer's plan says which (autotune.ts).
  const floats = x.dtype === 'float32' && dy.dtype === 'float32';
  const simd = floats && Co % 16 === 0 ? simdKernels(backend.wasm) : null;
  const run = (plan: KernelPlan, xp: TensorInfo, dyp: TensorInfo, infop: tf.backend_util.Conv2DInfo) =>
    simd && plan.kind === 'direct'
      ? filterGradDirect(simd, backend, xp, dyp, infop)
      : simd && plan.kind === 'direct-taps'
        ? filterGradByTaps(simd, backend, xp, dyp, infop)
        : simd && plan.kind === 'winograd'
          ? winogradFilterGrad(simd, backend, xp, dyp, infop, plan.m, plan.block)
          : filterGradRewrite(backend, xp, dyp, infop);
  const plan: KernelPlan = simd
    ? gradientPlan(backend, 'backprop-filter', info, (p, xShape) => {
        const infop = convInfo(xShape, filterShape, attrs);
        const dyp = { ...dy, shape: [xShape[0], infop.outHeight, infop.outWidth, Co] };
        backend.disposeData(run(p, { ...x, shape: xShape }, dyp, infop).dataId);
      })
    : { kind: 'xnnpack' };
  return run(plan, x, dy, info);
}

/**
 * The filter gradient as a forward XNNPACK convolution of x as [Ci, H, W, B] with dy as
 * [Ho, Wo, B, Co] (the forward stride as dilation), transposed back to [kh, kw, Ci, Co].
 */
function filterGradRewrite(
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { inHeight: H, inWidth: W, outHeight: Ho, outWidth: Wo } = info;
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
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
  let g = conv2dForward(
    backend,
    xT,
    dyT,
    [1, 1],
    [sh, sw],
    [
      [0, 0],
      [padTop, padBottom],
      [padLeft, padRight],
      [0, 0],
    ],
  ); // [Ci, kh(+extraH), kw(+extraW), Co]
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
function filterGradDirect(
  simd: SimdKernels,
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize: B, inChannels: Ci, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw } = info;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const filterSize = kh * kw * Ci * Co;
  // The images split into one contiguous slice per thread (by the thread count, never by which workers are up),
  // each summed in image order into its own dW (slice 0 into the output), the slices then added in slice order:
  // the same sums whichever thread runs which slice, so the result is bit-identical run to run.
  const slices = Math.min(threadCount(backend), B);
  const out = backend.makeOutput([kh, kw, Ci, Co], 'float32');
  const partials = Array.from({ length: slices - 1 }, () => backend.makeOutput([filterSize], 'float32'));
  for (const t of [out, ...partials]) f32(backend, t).fill(0);
  const dws = [out, ...partials].map(offset);
  const x0 = offset(x);
  const dy0 = offset(dy);
  try {
    runChunks(backend, simd, 'conv_filter_grad_run', slices, helpers(backend, slices), (s, call) => {
      const dw0 = dws[s]!;
      for (let b = Math.floor((s * B) / slices), end = Math.floor(((s + 1) * B) / slices); b < end; b++)
        for (let kj = 0; kj < kw; kj++)
          for (let ki = 0; ki < kh; ki++) filterGradTapRows(info, x0, dy0, b, ki, kj, dw0, call);
    });
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

/**
 * The filter gradient's direct loop blocked along the filter taps instead of the images (plan
 * `direct-taps`): threads take taps, and each tap's [Ci, Co] block of dW stays hot while every
 * image's rows stream by. No per-thread partial dW and no final sum; each element's sum runs over
 * the images in order, whatever the thread count. Pays where the tap block fits the L2 but the
 * per-image partial sums cost (few images, wide layers) or where the L2 holds a tap's block with
 * its streams better than an image's worth of them.
 */
function filterGradByTaps(
  simd: SimdKernels,
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize: B, inChannels: Ci, outChannels: Co } = info;
  const { filterHeight: kh, filterWidth: kw } = info;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const taps = kh * kw;
  const workers = helpers(backend, taps);
  const out = backend.makeOutput([kh, kw, Ci, Co], 'float32');
  f32(backend, out).fill(0);
  const x0 = offset(x);
  const dy0 = offset(dy);
  const dw0 = offset(out);
  try {
    runChunks(backend, simd, 'conv_filter_grad_run', taps, workers, (tap, call) => {
      const ki = Math.floor(tap / kw);
      const kj = tap % kw;
      for (let b = 0; b < B; b++) filterGradTapRows(info, x0, dy0, b, ki, kj, dw0, call);
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  }
  return out;
}

/**
 * The conv_filter_grad_run calls of filter tap (ki, kj) over image b's output rows into the dW at dw0 (x0, dy0
 * and dw0 are byte offsets).
 */
function filterGradTapRows(
  info: tf.backend_util.Conv2DInfo,
  x0: number,
  dy0: number,
  b: number,
  ki: number,
  kj: number,
  dw0: number,
  call: (a0: number, a1: number, a2: number, a3: number, a4: number, a5: number, a6: number) => void,
): void {
  const { inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const { filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  const [ojLo, ojHi] = tapColumns(kj, pl, sw, W, Wo);
  if (ojHi <= ojLo) return;
  const dw = dw0 + (ki * kw + kj) * Ci * Co * 4;
  for (let oi = 0; oi < Ho; oi++) {
    const i = oi * sh + ki - pt;
    if (i < 0 || i >= H) continue;
    call(
      x0 + ((b * H + i) * W + ojLo * sw + kj - pl) * Ci * 4,
      sw * Ci * 4,
      dy0 + ((b * Ho + oi) * Wo + ojLo) * Co * 4,
      ojHi - ojLo,
      Ci,
      Co,
      dw,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// FusedConv2D

const FUSED_ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, relu6: 2 };

/**
 * FusedConv2D (conv, bias, activation: tf.fused.conv2d, e.g. inference through conv layers): Winograd or, for
 * pointwise layers, the direct loop with bias and activation in its stores, where they win.
 */
export function fusedConv2D({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, filter, bias, preluActivationWeights } = inputs as {
    x: TensorInfo;
    filter: TensorInfo;
    bias?: TensorInfo;
    preluActivationWeights?: TensorInfo;
  };
  const { dataFormat, activation } = attrs as unknown as ConvAttrs & { activation?: string };
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
  const simd = simdKernels(backend.wasm);
  if (!simd) return original({ inputs, backend, attrs });
  // Winograd with bias and activation in its output transform, or the backend's own: as the layer's plan says.
  const run = (plan: KernelPlan, xp: TensorInfo, infop: tf.backend_util.Conv2DInfo): TensorInfo =>
    plan.kind === 'winograd'
      ? winogradConv(simd, backend, xp, filter, bias ?? null, act, infop, plan.m, plan.block)
      : plan.kind === 'direct'
        ? pointwiseForward(simd, backend, xp, filter, bias ?? null, act, infop)
        : original({ inputs: { ...inputs, x: xp }, backend, attrs });
  const info = convInfo(x.shape, filter.shape, attrs);
  const plan = forwardPlan(backend, info, true, (p, xShape) => {
    backend.disposeData(run(p, { ...x, shape: xShape }, convInfo(xShape, filter.shape, attrs)).dataId);
  });
  return run(plan, x, info);
}
