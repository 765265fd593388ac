// Activation gradients in one pass: ReLU and ClipByValue (ReLU6).
import * as tf from '@tensorflow/tfjs';
import { simdKernels, type SimdKernels } from '../simd-kernels.js';
import { BACKEND, type KernelFn, type TensorInfo, f32, helpers, runChunks } from './base.js';

// ReLU gradient. tfjs-core computes dy · cast(step(x)): three passes over the activation and two
// temporaries of its size. On wasm this is one SIMD pass (x > 0 ? dy : 0); elsewhere the
// formula of tfjs-core, unchanged.

export const RELU_GRAD_KERNEL = 'CatdogReluGrad';

/**
 * out = x passes ? dy : 0, elementwise: `simdPass` on the whole float vectors (null without the SIMD kernels), then
 * `passes` on the rest.
 */
function maskedGradient(
  backend: Parameters<KernelFn>[0]['backend'],
  x: TensorInfo,
  dy: TensorInfo,
  simdPass: ((simd: SimdKernels, x: number, dy: number, out: number, vectors: number) => void) | null,
  passes: (v: number) => boolean,
): TensorInfo {
  const out = backend.makeOutput(x.shape, 'float32');
  const size = x.shape.reduce((a, b) => a * b, 1);
  const simd = simdPass ? simdKernels(backend.wasm) : null;
  const vectors = simd ? size >> 2 : 0;
  if (simd && vectors > 0) {
    const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    simdPass!(simd, offset(x), offset(dy), offset(out), vectors);
  }
  const o = f32(backend, out);
  const xv = f32(backend, x);
  const g = f32(backend, dy);
  for (let i = vectors * 4; i < size; i++) o[i] = passes(xv[i]!) ? g[i]! : 0;
  return out;
}

/** Vectors (4 floats) per chunk of the ReLU gradient shared between threads: 256 KB of each array. */
const RELU_GRAD_CHUNK = 1 << 14;

export function reluGrad({ inputs, backend }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  return maskedGradient(
    backend,
    x,
    dy,
    // A pass bound by memory: the convnet's first layer is 3 × 56 MB at batch 20. Both threads' loads and stores
    // in flight at once take it in less time than one thread's.
    (simd, xo, dyo, out, n) => {
      const chunks = Math.ceil(n / RELU_GRAD_CHUNK);
      runChunks(backend, simd, 'relu_grad', chunks, helpers(backend, chunks), (c, call) => {
        const at = c * RELU_GRAD_CHUNK * 16;
        call(xo + at, dyo + at, out + at, Math.min(RELU_GRAD_CHUNK, n - c * RELU_GRAD_CHUNK), 0, 0, 0);
      });
    },
    (v) => v > 0,
  );
}

export const reluGradConfig: tf.GradConfig = {
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

export const CLIP_GRAD_KERNEL = 'CatdogClipGrad';

export function clipGrad({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const { lo, hi } = attrs as { lo: number; hi: number };
  const l = Math.fround(lo);
  const h = Math.fround(hi);
  return maskedGradient(
    backend,
    x,
    dy,
    (simd, xo, dyo, out, n) => simd.clip_grad(xo, dyo, out, n, lo, hi),
    (v) => v >= l && v <= h,
  );
}

export const clipGradConfig: tf.GradConfig = {
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
