// FusedBatchNorm and its gradient.
import * as tf from '@tensorflow/tfjs';
import { type KernelFn, type TensorInfo, f32, fallback, kernel } from './base.js';

// FusedBatchNorm (batchNormalization) with per-channel statistics: one multiply-add per element
// with the scale and shift folded per channel, channels innermost.

export function fusedBatchNorm({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { x, mean, variance, offset, scale } = inputs as Record<string, TensorInfo | undefined> & { x: TensorInfo };
  const eps = (attrs.varianceEpsilon as number | undefined) ?? 0.001;
  const C = x.shape[x.shape.length - 1] ?? 1;
  const perChannel = (t: TensorInfo | undefined) =>
    t == null ||
    (t.dtype === 'float32' && t.shape.reduce((a, b) => a * b, 1) === C && t.shape.slice(0, -1).every((d) => d === 1));
  if (
    x.dtype !== 'float32' ||
    x.shape.length < 1 ||
    ![mean, variance, offset, scale].every(perChannel) ||
    !mean ||
    !variance
  ) {
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

export const fusedBatchNormGrad: tf.GradConfig = {
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
