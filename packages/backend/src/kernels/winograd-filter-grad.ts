// Conv2DBackpropFilter by Winograd F(m×m, 3×3) (3×3, stride 1, dilation 1, channels-last): the exact transpose of
// the forward Winograd convolution (winograd.ts). The forward tile is Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, so
//   dW = Gᵀ [ Σ_(images, tiles) (Bᵀ d B) ⊙ (A dY Aᵀ) ] G
// with the forward's tiling (tiles of m×m outputs, dY zero beyond the output, d zero outside the input): per block
// of tiles, the forward's input transforms V[ξ][tile][Ci] and the output-gradient transforms U'[ξ][tile][Co], then
// (m+2)² products M[ξ][Ci][Co] += V[ξ]ᵀ·U'[ξ], a reduction over tiles on the direct filter gradient's SIMD loop
// (conv_filter_grad_run); last, dW = Gᵀ M G. 36 multiplies per 16 output pixels (F4) instead of 144.
// The functions are generated (scripts/winograd-wat.mjs: A and G read off the forward transforms).
import type * as tf from '@tensorflow/tfjs';
import type { SimdKernels } from '../simd-kernels.js';
import { type TensorInfo, type WasmBackend, helpers, runChunks, threadCount } from './base.js';
import {
  type WinogradTile,
  cheapestWinogradTile,
  winogradApplies,
  winogradOverride,
  winogradTiles,
} from './winograd.js';

/**
 * Cost of the filter gradient of a stride-1 3×3 convolution in multiply-adds of the SIMD micro-kernel: direct (9 per
 * output and channel pair) or Winograd with tile m: the products (on the same loop as the direct one), the transforms
 * (≈ κ per transformed value: fewer than the forward's κ, measured on the convnet's layers, as its products do not
 * write M per tile), the partial products M read and written by every block of tiles after a slice's first (≈ 1 per
 * value), and the output transform over every thread's partial (≈ 8 per value, shared by the threads).
 */
export function filterGradCost(info: tf.backend_util.Conv2DInfo, m: 0 | WinogradTile, threads: number): number {
  const { batchSize: B, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  if (m === 0) return B * Ho * Wo * Ci * Co * 9;
  const n = (m + 2) * (m + 2);
  const tiles = winogradTiles(info, m);
  const slices = Math.min(threads, tiles);
  const kappa = m === 6 ? 12 : 8;
  const blocks = Math.max(slices, Math.ceil(tiles / defaultFilterGradBlock(info, m)));
  return (
    tiles * n * (Ci * Co + kappa * (Ci + Co)) +
    ((blocks - slices) * n * Ci * Co) / slices +
    (8 * n * Ci * Co * slices) / threads
  );
}

/**
 * The cost model's tile for this filter gradient (3, 4 or 6), or 0 when the direct loop / XNNPACK is better or
 * Winograd does not apply: the default plan without autotuning. F6 only where it clearly wins (it rounds the most,
 * and a gradient sums every tile of the batch). CATDOG_WASM_WINOGRAD=0 turns it off, 3/4/6 force the tile.
 */
export function winogradFilterGradTileSize(backend: WasmBackend, info: tf.backend_util.Conv2DInfo): 0 | WinogradTile {
  const mode = winogradOverride();
  if (mode === 0 || !winogradApplies(info)) return 0;
  if (mode !== 'auto') return mode;
  const threads = threadCount(backend);
  return cheapestWinogradTile((m) => filterGradCost(info, m, threads), filterGradCost(info, 0, threads));
}

/** Bytes of a block's transformed inputs and output gradients (all (m+2)² positions), by default. */
const BLOCK_BYTES = 512 << 10;

/**
 * The default block of tiles per call: as many as keep the block's V (block × Ci) and U' (block × Co) at all (m+2)²
 * positions within 512 KB, 16 to 256: the products then read them from L2 right after the transforms wrote them
 * (measured on the convnet's layers: blocks of 2–4 MB ran 1.3–1.8× slower), while every block after a slice's
 * first reads and writes all of M, so blocks should not be much smaller.
 */
export function defaultFilterGradBlock(info: tf.backend_util.Conv2DInfo, m: WinogradTile): number {
  const n = (m + 2) * (m + 2);
  return Math.max(16, Math.min(256, Math.floor(BLOCK_BYTES / (n * (info.inChannels + info.outChannels) * 4))));
}

/**
 * The filter gradient [3, 3, Ci, Co] by Winograd with tile m and blocks of `block` tiles. Threads: the tiles split
 * into one contiguous slice per thread (by the thread count, never by which workers are up), each summed block by
 * block, in order, into a partial M of its own; the output transform adds the partials in slice order. So the
 * result is bit-identical run to run at a given thread count and plan.
 */
export function winogradFilterGrad(
  simd: SimdKernels,
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
  m: WinogradTile,
  block = defaultFilterGradBlock(info, m),
): TensorInfo {
  const { inHeight: H, inWidth: W, inChannels: Ci, outHeight: Ho, outWidth: Wo, outChannels: Co } = info;
  const n = (m + 2) * (m + 2);
  const tw = Math.ceil(Wo / m);
  const th = Math.ceil(Ho / m);
  const tiles = winogradTiles(info, m);
  const threads = threadCount(backend);
  const slices = Math.min(threads, tiles);
  // Slice s: tiles ⌊s·tiles/slices⌋ … ⌊(s+1)·tiles/slices⌋ - 1, in blocks of at most `block` evened out.
  const sliceBlocks = Array.from({ length: slices }, (_, s) => {
    const lo = Math.floor((s * tiles) / slices);
    const hi = Math.floor(((s + 1) * tiles) / slices);
    const count = Math.ceil((hi - lo) / Math.ceil((hi - lo) / block));
    const blocks: Array<[number, number]> = [];
    for (let first = lo; first < hi; first += count) blocks.push([first, Math.min(count, hi - first)]);
    return blocks;
  });
  const maxCount = Math.max(...sliceBlocks.map((b) => b[0]![1]));
  const scratchFloats = n * (maxCount * (Ci + Co) + 32) + n * Ci + m * m * Co;
  const partialFloats = n * (Ci * Co + 16); // M[ξ] padded by a cache line (see the .wat)
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;

  const out = backend.makeOutput([3, 3, Ci, Co], 'float32');
  const partials = backend.makeOutput([slices * partialFloats], 'float32');
  const prm = backend.makeOutput([16], 'int32');
  let scratch: TensorInfo | null = null;
  try {
    const workers = helpers(backend, slices);
    scratch = backend.makeOutput([(workers.length + 1) * scratchFloats], 'float32');
    const m0 = offset(partials);
    (backend.typedArrayFromHeap(prm) as Int32Array).set([
      offset(x),
      H,
      W,
      Ci,
      Co,
      offset(dy),
      Ho,
      Wo,
      tw,
      th,
      info.padInfo.top,
      info.padInfo.left,
      m,
      m0,
      slices,
      offset(out),
    ]);
    const p0 = offset(prm);
    const s0 = offset(scratch);
    runChunks(
      backend,
      simd,
      'winograd_filter_grad_tiles',
      slices,
      workers,
      (s, call) =>
        sliceBlocks[s]!.forEach(([first, count], i) =>
          call(p0, first, count, m0 + s * partialFloats * 4, i === 0 ? 1 : 0, 0, s0),
        ),
      Array.from({ length: workers.length + 1 }, (_, t) => t * scratchFloats * 4),
    );
    // dW = Gᵀ (Σ_s M_s) G, split between the threads by ranges of float vectors (each written by one call).
    const vectors = (Ci * Co) / 4;
    const parts = Math.min(vectors, Math.max(1, threads * 4));
    runChunks(backend, simd, 'winograd_filter_grad_out', parts, helpers(backend, parts), (c, call) =>
      call(p0, Math.floor((c * vectors) / parts), Math.floor(((c + 1) * vectors) / parts), 0, 0, 0, 0),
    );
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(partials.dataId);
    backend.disposeData(prm.dataId);
    if (scratch) backend.disposeData(scratch.dataId);
  }
  return out;
}
