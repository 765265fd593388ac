// Sum over leading axes (bias gradients).
import * as tf from '@tensorflow/tfjs';
import { simdKernels } from '../simd-kernels.js';
import { type KernelFn, type TensorInfo, f32, fallback, helpers, runChunks } from './base.js';

// Sum over leading axes (bias gradients: dy summed over batch, rows and columns). The backend
// transposes the reduced axes innermost first, a full copy of dy; this accumulates in place.

/** Floats per float32 block of a Sum (about 32k: float32 rounding stays far below the tests' tolerance). */
const SUM_BLOCK_FLOATS = 1 << 15;

export function sum({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
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
    // Blocks of rows summed in float32 by SIMD (shared between threads: the convnet's first bias gradient reads
    // 56 MB), the blocks' sums accumulated in float64 in block order: the same value at any thread count.
    const rows = Math.max(1, Math.floor(SUM_BLOCK_FLOATS / inner));
    const blocks = Math.ceil(outer / rows);
    const parts = backend.makeOutput([blocks, inner], 'float32');
    const xOffset = backend.dataIdMap.get(x.dataId).memoryOffset;
    const partsOffset = backend.dataIdMap.get(parts.dataId).memoryOffset;
    try {
      runChunks(backend, simd, 'sum_rows', blocks, helpers(backend, blocks), (c, call) =>
        call(
          xOffset + c * rows * inner * 4,
          partsOffset + c * inner * 4,
          Math.min(rows, outer - c * rows),
          inner,
          0,
          0,
          0,
        ),
      );
      const part = f32(backend, parts);
      for (let c = 0; c < blocks; c++) {
        for (let j = 0; j < inner; j++) acc[j] += part[c * inner + j]!;
      }
    } finally {
      backend.disposeData(parts.dataId);
    }
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
