// MaxPoolGrad.
import * as tf from '@tensorflow/tfjs';
import { simdKernels } from '../simd-kernels.js';
import { type KernelFn, type TensorInfo, f32, fallback, helpers, runChunks } from './base.js';

// MaxPoolGrad: the backend's C loop walks channels outermost (strided access); this walks
// channels innermost, finding each window's first maximum as the cpu backend does.

/** Floats of dy per slab of MaxPoolGrad shared between threads (4 × as many of x and dx). */
const MAXPOOL_GRAD_SLAB_FLOATS = 1 << 15;

/** Zeroes the last row/column that 2×2 stride-2 windows leave out when H or W is odd. */
function zeroOutsideWindows(
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
      let y = (b * Ho + oi) * Wo * C;
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

/** The pooling geometry the loops below need, from tfjs' own Conv2DInfo. */
type PoolGeometry = tf.backend_util.Conv2DInfo;

/** 2×2 windows at any stride, every window inside the input: four taps compared in registers, added into dx. */
function maxPoolGrad2x2Strided(x: Float32Array, g: Float32Array, dx: Float32Array, info: PoolGeometry): void {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: C, outHeight: Ho, outWidth: Wo } = info;
  const { strideHeight: sh, strideWidth: sw } = info;
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
}

/** Any window, stride, dilation and padding: each window's first maximum per channel, added into dx. */
function maxPoolGradGeneral(x: Float32Array, g: Float32Array, dx: Float32Array, info: PoolGeometry): void {
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: C, outHeight: Ho, outWidth: Wo } = info;
  const { strideHeight: sh, strideWidth: sw, effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const { dilationHeight: dh, dilationWidth: dw } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
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
}

export function maxPoolGrad({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
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
  const twoByTwoInside =
    fh === 2 &&
    fw === 2 &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1 &&
    info.padInfo.top === 0 &&
    info.padInfo.left === 0 &&
    (Ho - 1) * sh + 2 <= H &&
    (Wo - 1) * sw + 2 <= W;
  const out = backend.makeOutput(input.shape, 'float32');
  const dx = f32(backend, out);
  const x = f32(backend, input);
  const g = f32(backend, dy);
  if (twoByTwoInside && sh === 2 && sw === 2) {
    // The book's MaxPooling2D(2): windows tile the input, each element written once.
    const simd = C % 4 === 0 ? simdKernels(backend.wasm) : null;
    if (simd) {
      const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
      // Slabs of output rows shared between threads (a pass bound by memory: the convnet's first is 3 × 56 MB at
      // batch 20); each slab writes its own rows of dx.
      const slab = Math.max(1, Math.ceil(MAXPOOL_GRAD_SLAB_FLOATS / (Wo * C)));
      const slabs = Math.ceil(Ho / slab);
      const [xo, dyo, dxo] = [input, dy, out].map(offset) as [number, number, number];
      runChunks(backend, simd, 'maxpool_grad_2x2_rows', B * slabs, helpers(backend, B * slabs), (c, call) => {
        const b = Math.floor(c / slabs);
        const i = (c % slabs) * slab;
        const rowIn = (b * H + 2 * i) * W * C * 4;
        const rowOut = (b * Ho + i) * Wo * C * 4;
        call(xo + rowIn, dyo + rowOut, dxo + rowIn, Math.min(slab, Ho - i), W, C, Wo);
      });
      zeroOutsideWindows(dx, B, H, W, C, Ho, Wo);
    } else {
      maxPoolGrad2x2(x, g, dx, B, H, W, C, Ho, Wo);
    }
    return out;
  }
  dx.fill(0);
  if (twoByTwoInside) maxPoolGrad2x2Strided(x, g, dx, info);
  else maxPoolGradGeneral(x, g, dx, info);
  return out;
}
