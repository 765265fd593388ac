// The fused RMSprop update behind ../rmsprop.ts.
import { simdKernels } from '../simd-kernels.js';
import { type KernelFn, type TensorInfo, f32, helpers, runChunks } from './base.js';

// RMSprop update in one pass (see rmsprop.ts): tfjs-core's RMSPropOptimizer runs 15 elementwise
// ops per variable (it computes the new mean square twice), each a pass over the whole variable:
// 53 ms per step for the 8.2M-weight Dense layer of a fine-tuned MobileNetV2's head. Same float32
// operations in the same order, so the same values bit for bit (tested).

export const RMSPROP_KERNEL = 'CatdogRMSProp';
/** Floats per chunk of work shared between threads. */
const RMSPROP_CHUNK = 1 << 16;

export function rmspropUpdate({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo[] {
  const { gradient, meanSquare, moments, value } = inputs as Record<
    'gradient' | 'meanSquare' | 'moments' | 'value',
    TensorInfo
  >;
  const { decay, learningRate, epsilon, momentum } = attrs as {
    decay: number;
    learningRate: number;
    epsilon: number;
    momentum: number;
  };
  const shape = value.shape;
  const size = shape.reduce((a, b) => a * b, 1);
  const outs = [
    backend.makeOutput(shape, 'float32'),
    backend.makeOutput(shape, 'float32'),
    backend.makeOutput(shape, 'float32'),
  ];
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
