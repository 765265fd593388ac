import { simdKernels } from '../simd-kernels.js';
import { type Attrs, type KernelFn, type TensorInfo, convInfo, f32, helpers, runChunks } from './base.js';

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
  const info = convInfo(xShape, filterShape, attrs, true);
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

export function depthwiseBackpropInput({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
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
        forEachDepthwiseRun(g, { b }, (x, y, tap, n) =>
          call(dy0 + y * 4, g.C * 4, w0 + tap * 4, n, g.C, g.sw * g.C * 4, dx0 + x * 4),
        ),
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

export function depthwiseBackpropFilter({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
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
        forEachDepthwiseRun(g, { tap }, (xo, y, t, n) =>
          call(x0 + xo * 4, g.sw * g.C * 4, dy0 + y * 4, g.C * 4, n, g.C, acc0 + t * 4),
        ),
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
