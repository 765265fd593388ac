// Conv2DBackpropInput of 3×3 stride-1 convolutions on the forward Winograd kernels (winograd.ts). At stride 1 the
// input gradient is itself a 3×3 correlation: dx[i][j] = Σ dy[i + t - a][j + l - b] · w[a][b]ᵀ, i.e. dy zero-padded
// by 2 - pad on each side, correlated with the filter flipped in space and its channels swapped. So it runs on
// F(m×m, 3×3) like a forward layer: 3.2–5× fewer multiplies than the direct loop's 9 per output and channel pair.
import type * as tf from '@tensorflow/tfjs';
import type { SimdKernels } from '../simd-kernels.js';
import { type TensorInfo, type WasmBackend, f32, transpose } from './base.js';
import { type WinogradTile, defaultWinogradBlock, winogradApplies, winogradConv } from './winograd.js';

/**
 * The forward correlation equal to this convolution's input gradient (dy [B, Ho, Wo, Co] in, dx [B, H, W, Ci] out,
 * padding 2 - pad: the kernel zero-fills outside dy, and its bottom and right edges follow from H and W), or null
 * when the Winograd kernels cannot run it: not 3×3 stride 1 dilation 1, a padding outside 0..2, or channels the
 * micro-kernel does not take (Co ≥ 16 and % 4, Ci % 16 in the swapped roles).
 */
export function inputGradWinogradInfo(info: tf.backend_util.Conv2DInfo): tf.backend_util.Conv2DInfo | null {
  const { top, left, bottom, right } = info.padInfo;
  if (![top, left, bottom, right].every((p) => p >= 0 && p <= 2)) return null;
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const flipped: tf.backend_util.Conv2DInfo = {
    ...info,
    inHeight: Ho,
    inWidth: Wo,
    inChannels: Co,
    outHeight: H,
    outWidth: W,
    outChannels: Ci,
    inShape: [B, Ho, Wo, Co],
    outShape: [B, H, W, Ci],
    filterShape: [3, 3, Co, Ci],
    padInfo: { top: 2 - top, left: 2 - left, bottom: 2 - bottom, right: 2 - right, type: 'EXPLICIT' },
  };
  return winogradApplies(flipped) ? flipped : null;
}

/**
 * Conv2DBackpropInput by Winograd with tile m: the filter flipped and transposed per tap ([3, 3, Co, Ci], made on the
 * wasm heap per call: a transpose and a reversal of the taps, 9·Ci·Co floats moved against the gradient's
 * B·H·W·Ci·Co multiply-adds), then winogradConv over dy.
 */
export function winogradInputGrad(
  simd: SimdKernels,
  backend: WasmBackend,
  dy: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
  m: WinogradTile,
  block?: number,
): TensorInfo {
  const flippedInfo = inputGradWinogradInfo(info);
  if (!flippedInfo) throw new Error('Conv2DBackpropInput: the Winograd plan does not apply to this layer');
  const { inChannels: Ci, outChannels: Co } = info;
  // Each tap's [Ci, Co] block transposed to [Co, Ci], then the taps reversed: tap (a, b) becomes (2 - a, 2 - b).
  const flipped = transpose(backend, { ...filter, shape: [9, Ci, Co] }, [0, 2, 1]);
  try {
    const w = f32(backend, flipped);
    const tap = Ci * Co;
    for (let t = 0; t < 4; t++) {
      const saved = w.slice(t * tap, (t + 1) * tap);
      w.copyWithin(t * tap, (8 - t) * tap, (9 - t) * tap);
      w.set(saved, (8 - t) * tap);
    }
    return winogradConv(
      simd,
      backend,
      dy,
      { ...flipped, shape: [3, 3, Co, Ci] },
      null,
      0,
      flippedInfo,
      m,
      block ?? defaultWinogradBlock(flippedInfo),
    );
  } finally {
    backend.disposeData(flipped.dataId);
  }
}
