// Slice as runs of contiguous elements copied within one view of the heap.
import * as tf from '@tensorflow/tfjs';
import { type KernelFn, type TensorInfo, type WasmBackend, fallback } from './base.js';

// The backend's own Slice copies a 4-D slice one innermost row at a time, each through a new subarray
// (`outVals.set(xVals.subarray(…))`): the gradient of MobileNetV2's ZeroPadding2D before a stride-2 depthwise
// layer (32×15×15×576 → 32×14×14×576 when fine-tuning from block_13) took 7.4 ms for 14 MB. Here the trailing axes
// the slice takes whole are merged into one run, and each run is one copyWithin on a single view of the heap.

/** The dtypes copied here, 4 bytes an element (strings, and bool's single bytes, go to the backend's kernel). */
const WORD_DTYPES: ReadonlySet<tf.DataType> = new Set(['float32', 'int32']);

export function slice({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x } = inputs as { x: TensorInfo };
  if (!WORD_DTYPES.has(x.dtype) || x.shape.length === 0) return fallback('Slice')({ inputs, backend, attrs });
  const [begin, size] = tf.slice_util.parseSliceParams(
    x as unknown as tf.TensorInfo,
    attrs.begin as number | number[],
    attrs.size as number | number[] | undefined,
  );
  const out = backend.makeOutput(size, x.dtype);
  if (size.some((s) => s === 0)) return out;
  copySlice(backend, x, out, begin, size);
  return out;
}

function copySlice(backend: WasmBackend, x: TensorInfo, out: TensorInfo, begin: number[], size: number[]): void {
  const shape = x.shape;
  const strides = tf.util.computeStrides(shape);
  strides.push(1);
  // The run: the innermost axis the slice cuts, with every axis after it taken whole.
  let axis = shape.length - 1;
  while (axis > 0 && size[axis] === shape[axis]) axis--;
  const run = size.slice(axis).reduce((a, b) => a * b, 1);
  // One view after makeOutput (an allocation may have grown the heap and detached earlier views).
  const heap = new Int32Array(backend.typedArrayFromHeap(x).buffer);
  const src0 = backend.dataIdMap.get(x.dataId).memoryOffset / 4 + begin[axis]! * strides[axis]!;
  let dst = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
  // Odometer over the outer axes (0 … axis−1) of the slice.
  const index = new Array<number>(axis).fill(0);
  for (;;) {
    let src = src0;
    for (let a = 0; a < axis; a++) src += (begin[a]! + index[a]!) * strides[a]!;
    heap.copyWithin(dst, src, src + run);
    dst += run;
    let a = axis - 1;
    while (a >= 0 && ++index[a]! === size[a]) index[a--] = 0;
    if (a < 0) return;
  }
}
