// BatchMatMul: Dense layers' forward products and gradients.
import { simdKernels, type SimdKernels } from '../simd-kernels.js';
import {
  type KernelFn,
  type TensorInfo,
  type WasmBackend,
  f32,
  fallback,
  helpers,
  runChunks,
  threadCount,
  transpose,
} from './base.js';

// Unbatched float32 products. A·B with few rows and a large B (a Dense forward pass while training)
// runs on the SIMD loop (smallRowsProduct); other plain products stay on XNNPACK. The backend's
// transposed-operand path is a slow loop, so those are rewritten:
//   Aᵀ·B   = the filter-gradient SIMD loop when N % 16 == 0 (filterGradProduct), else (transpose A)·B
//   A·Bᵀ   = the row-dot-product SIMD loop for a small A and a large B (abtProduct: a Dense layer's input
//            gradient dy·Wᵀ); else (B·Aᵀ)ᵀ when B is the larger operand (the weights: only the small side is
//            packed), else A·(transpose B)
//   Aᵀ·Bᵀ  = (B·A)ᵀ

export function batchMatMul({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const { a, b } = inputs as { a: TensorInfo; b: TensorInfo };
  const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
  const original = fallback('BatchMatMul');
  const batchA = a.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchB = b.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  if (batchA !== 1 || batchB !== 1 || a.dtype !== 'float32' || b.dtype !== 'float32')
    return original({ inputs, backend, attrs });
  const mat = (t: TensorInfo): TensorInfo => ({ ...t, shape: t.shape.slice(-2) });
  const A = mat(a);
  const B = mat(b);
  const rank = Math.max(a.shape.length, b.shape.length);
  const shaped = (out: TensorInfo) => ({ ...out, shape: [...new Array(rank - 2).fill(1), ...out.shape.slice(-2)] });
  if (!transposeA && !transposeB) {
    const [M, K] = A.shape as [number, number];
    const N = B.shape[1]!;
    const simd =
      M <= SMALL_PRODUCT_ROWS && N % 16 === 0 && K * N >= SMALL_PRODUCT_MIN_WEIGHTS ? simdKernels(backend.wasm) : null;
    return simd ? shaped(smallRowsProduct(simd, backend, A, B)) : original({ inputs, backend, attrs });
  }
  const plain = { transposeA: false, transposeB: false };
  const T = (t: TensorInfo) => transpose(backend, t, [1, 0]);
  let out: TensorInfo;
  const N = B.shape[1]!;
  const simd = transposeA && !transposeB && N % 16 === 0 ? simdKernels(backend.wasm) : null;
  if (simd) {
    out = filterGradProduct(simd, backend, A, B);
  } else if (transposeA && !transposeB) {
    const at = T(A);
    out = original({ inputs: { a: at, b: B }, backend, attrs: plain });
    backend.disposeData(at.dataId);
  } else if (!transposeA && transposeB) {
    const [M, K] = A.shape as [number, number];
    const rowsB = B.shape[0]!;
    const abt =
      M <= SMALL_PRODUCT_ROWS && K % 4 === 0 && rowsB % 4 === 0 && K * rowsB >= SMALL_PRODUCT_MIN_WEIGHTS
        ? simdKernels(backend.wasm)
        : null;
    if (abt) {
      out = abtProduct(abt, backend, A, B);
    } else if (rowsB > M) {
      const at = T(A);
      const ct = original({ inputs: { a: B, b: at }, backend, attrs: plain });
      out = T(ct);
      backend.disposeData(at.dataId);
      backend.disposeData(ct.dataId);
    } else {
      const bt = T(B);
      out = original({ inputs: { a: A, b: bt }, backend, attrs: plain });
      backend.disposeData(bt.dataId);
    }
  } else {
    const ct = original({ inputs: { a: B, b: A }, backend, attrs: plain });
    out = T(ct);
    backend.disposeData(ct.dataId);
  }
  return shaped(out);
}

/** Activations fusedMatMul applies in place to its result (conv.ts' FUSED_ACTIVATIONS are the loops' codes); others go to tfjs' kernel. */
const IN_PLACE_ACTIVATIONS: Record<string, (v: Float32Array, alpha: number) => void> = {
  linear: () => {},
  relu: (v) => {
    for (let i = 0; i < v.length; i++) if (v[i]! < 0) v[i] = 0;
  },
  relu6: (v) => {
    for (let i = 0; i < v.length; i++) v[i] = Math.min(6, Math.max(0, v[i]!));
  },
  sigmoid: (v) => {
    for (let i = 0; i < v.length; i++) v[i] = 1 / (1 + Math.exp(-v[i]!));
  },
  elu: (v) => {
    for (let i = 0; i < v.length; i++) if (v[i]! < 0) v[i] = Math.expm1(v[i]!);
  },
  leakyrelu: (v, alpha) => {
    for (let i = 0; i < v.length; i++) if (v[i]! < 0) v[i] = alpha * v[i]!;
  },
};

/**
 * _FusedMatMul (a Dense layer's forward pass outside training: validation, test, predict). With few rows, as
 * BatchMatMul's smallRowsProduct: XNNPACK repacks the weights whenever they changed since its last call, i.e. at
 * every validation pass, and then runs its product at about half this loop's rate (a validation batch of the
 * extract head, 20 × 32000 · 32000×256: 24 ms against ~10). With a transposed operand, as BatchMatMul: tfjs'
 * own kernel gives wrong products for transposeA (e.g. 0.7 off for 7×5ᵀ · 7×16). Bias and activation are then
 * applied to the result here; every other case is tfjs' kernel.
 */
export function fusedMatMul({ inputs, backend, attrs }: Parameters<KernelFn>[0]): TensorInfo {
  const {
    a,
    b,
    bias,
    preluActivationWeights: prelu,
  } = inputs as {
    a: TensorInfo;
    b: TensorInfo;
    bias?: TensorInfo;
    preluActivationWeights?: TensorInfo;
  };
  const {
    transposeA,
    transposeB,
    activation = 'linear',
    leakyreluAlpha,
  } = attrs as {
    transposeA: boolean;
    transposeB: boolean;
    activation?: string;
    leakyreluAlpha?: number;
  };
  const original = fallback('_FusedMatMul');
  const apply = IN_PLACE_ACTIVATIONS[activation];
  const M = a.shape[a.shape.length - (transposeA ? 1 : 2)]!;
  const K = a.shape[a.shape.length - (transposeA ? 2 : 1)]!;
  const N = b.shape[b.shape.length - (transposeB ? 2 : 1)]!;
  const batch = a.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const outShape = [...(a.shape.length >= b.shape.length ? a.shape : b.shape).slice(0, -2), M, N];
  const epilogue = apply !== undefined && !prelu && (!bias || trailingBroadcast(bias, outShape));
  if (!epilogue || a.dtype !== 'float32' || b.dtype !== 'float32') return original({ inputs, backend, attrs });
  const unbatched = batch === 1 && b.shape.slice(0, -2).every((d) => d === 1);
  const small = unbatched && !transposeA && !transposeB && M <= SMALL_PRODUCT_ROWS && N % 16 === 0;
  const simd = small && K * N >= SMALL_PRODUCT_MIN_WEIGHTS ? simdKernels(backend.wasm) : null;
  let out: TensorInfo;
  if (simd) out = smallRowsProduct(simd, backend, { ...a, shape: [M, K] }, { ...b, shape: [K, N] });
  else if (transposeA || transposeB)
    out = batchMatMul({ inputs: { a, b }, backend, attrs: { transposeA, transposeB } });
  else return original({ inputs, backend, attrs });
  const v = f32(backend, out);
  if (bias) {
    const bv = f32(backend, bias);
    const n = bv.length;
    for (let i = 0; i < v.length; i++) v[i] = v[i]! + bv[i % n]!;
  }
  apply(v, leakyreluAlpha ?? 0.2);
  return { ...out, shape: outShape };
}

/** Whether `t` broadcasts over `shape` by repeating its values (its shape, leading 1s aside, is a suffix of `shape`). */
function trailingBroadcast(t: TensorInfo, shape: number[]): boolean {
  const s = [...t.shape];
  while (s.length > 0 && s[0] === 1) s.shift();
  return (
    t.dtype === 'float32' && s.length <= shape.length && s.every((d, i) => d === shape[shape.length - s.length + i])
  );
}

/** A·B with at most this many rows of A (a Dense layer's forward pass at training batch sizes) … */
const SMALL_PRODUCT_ROWS = 64;
/** … and a B at least this large goes through smallRowsProduct. */
const SMALL_PRODUCT_MIN_WEIGHTS = 1 << 16;
/** Rows of B per chunk of smallRowsProduct (a 256 × 256 block of floats: 256 KB, an L2's worth). */
const SMALL_PRODUCT_DEPTH = 256;

/**
 * A·B for a small A [M, K] and a large B [K, N], N % 16 == 0: a Dense layer's forward pass while its weights change
 * every step. XNNPACK packs B into its own layout on every call (27 ms for 20×32000 · 32000×256, most of it the
 * packing); here B is read once, in place: each chunk of SMALL_PRODUCT_DEPTH rows of B is one conv_input_grad_run
 * call (A's matching columns, copied contiguous, as "dy"; B's rows as the transposed filter) into a partial [M, N]
 * of its own, and the partials are summed in chunk order (the same sums whatever thread took which chunk).
 */
function smallRowsProduct(simd: SimdKernels, backend: WasmBackend, A: TensorInfo, B: TensorInfo): TensorInfo {
  const [M, K] = A.shape as [number, number];
  const N = B.shape[1]!;
  const chunks = Math.ceil(K / SMALL_PRODUCT_DEPTH);
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const blocks = backend.makeOutput([M * K], 'float32'); // A's columns chunk by chunk: [chunk][M][depth]
  const partials = backend.makeOutput([chunks, M * N], 'float32');
  const out = backend.makeOutput([M, N], 'float32');
  try {
    {
      // copyWithin on one view of the heap: no typed-array object per row of each chunk (M × chunks of them).
      const heap = new Float32Array(f32(backend, A).buffer);
      const src = offset(A) / 4;
      const dst = offset(blocks) / 4;
      for (let c = 0, d = dst; c < chunks; c++) {
        const k0 = c * SMALL_PRODUCT_DEPTH;
        const depth = Math.min(SMALL_PRODUCT_DEPTH, K - k0);
        for (let m = 0, s = src + k0; m < M; m++, d += depth, s += K) heap.copyWithin(d, s, s + depth);
      }
      f32(backend, partials).fill(0);
    }
    const blocks0 = offset(blocks);
    const b0 = offset(B);
    const p0 = offset(partials);
    runChunks(backend, simd, 'conv_input_grad_run', chunks, helpers(backend, chunks), (c, call) => {
      const k0 = c * SMALL_PRODUCT_DEPTH;
      const depth = Math.min(SMALL_PRODUCT_DEPTH, K - k0);
      call(blocks0 + k0 * M * 4, M, depth, b0 + k0 * N * 4, N, p0 + c * M * N * 4, N * 4);
    });
    simd.sum_rows(p0, offset(out), chunks, M * N);
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(blocks.dataId);
    backend.disposeData(partials.dataId);
  }
  return out;
}

/** Rows of B per chunk of abtProduct shared between threads (256 × K floats: 256 KB at K = 256). */
const ABT_ROWS = 256;

/**
 * A·Bᵀ for a small A [M, K] and a large B [N, K], K % 4 == 0, N % 4 == 0: a Dense layer's input gradient dy·Wᵀ
 * (W [in, units]: 32000 × 256 for the fine-tuned MobileNetV2's head). abt_run takes four rows of B and two of A at
 * a time and writes four neighbouring outputs at once; B is read once, in place, in chunks of rows that threads
 * take, each writing its own columns of the result. XNNPACK needed a transposed copy of one side and its result
 * (16–20 ms for that head at batch 20, of which the product ~10). Each output's sum runs on one thread in a fixed
 * order: the same bits at any thread count.
 */
function abtProduct(simd: SimdKernels, backend: WasmBackend, A: TensorInfo, B: TensorInfo): TensorInfo {
  const [M, K] = A.shape as [number, number];
  const N = B.shape[0]!;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  // abt_run reads A two rows at a time: an odd M gets a zero row after it.
  const padded = M % 2 === 1 ? backend.makeOutput([M + 1, K], 'float32') : null;
  const out = backend.makeOutput([M, N], 'float32');
  try {
    if (padded) {
      const a = f32(backend, padded);
      a.set(f32(backend, A));
      a.fill(0, M * K);
    }
    const a0 = offset(padded ?? A);
    const b0 = offset(B);
    const o0 = offset(out);
    const chunks = Math.ceil(N / ABT_ROWS);
    runChunks(backend, simd, 'abt_run', chunks, helpers(backend, chunks), (c, call) => {
      const n0 = c * ABT_ROWS;
      call(a0, M, b0 + n0 * K * 4, Math.min(ABT_ROWS, N - n0), K, o0 + n0 * 4, N * 4);
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    if (padded) backend.disposeData(padded.dataId);
  }
  return out;
}

/** Rows of Aᵀ·B per chunk of work shared between threads (at most; fewer when there are few rows). */
const PRODUCT_ROWS = 64;
/** Floats of B per slice of K (256 KB: stays in L2 while every row pair of a chunk reads it). */
const PRODUCT_SLICE_FLOATS = 1 << 16;

/**
 * Aᵀ·B for A [K, M], B [K, N], N % 16 == 0 (a Dense layer's kernel gradient, xᵀ·dy, or a pointwise layer's filter
 * gradient) with the filter gradient's SIMD loop: out[m, n] = Σ_k A[k, m]·B[k, n] is conv_filter_grad_run with K
 * "pixels", M input and N output channels. No transposed copy of A, and a 2×16 block of the result stays in
 * registers while K streams by (XNNPACK on the transposed copy: 22 ms for 32000×20 · 20×256, this: ~4).
 * Threads take blocks of rows; each block runs K in slices of B that fit in L2 (the first assigns, the rest add):
 * the loop streams all of B once per pair of rows, from L3 when B is larger than L2 (a pointwise layer's dy at
 * 5×5×1280 × 20 images is 2.5 MB). Each output's sum still runs over k in order on one thread, so the bits do not
 * depend on the slicing or the thread count.
 */
export function filterGradProduct(simd: SimdKernels, backend: WasmBackend, A: TensorInfo, B: TensorInfo): TensorInfo {
  const [K, M] = A.shape as [number, number];
  const N = B.shape[1]!;
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const out = backend.makeOutput([M, N], 'float32');
  const a0 = offset(A);
  const b0 = offset(B);
  const o0 = offset(out);
  // As few blocks of rows as give every thread the same number (each block streams all of B again): MobileNet's
  // 96-row layer in 2 blocks of 48 on 2 threads, not 2 of 64 and 1 of 32.
  const threads = threadCount(backend);
  const even = threads * Math.ceil(M / (PRODUCT_ROWS * threads));
  const rows = 2 * Math.ceil(M / (2 * even));
  const chunks = Math.ceil(M / rows);
  const slice = Math.max(16, Math.floor(PRODUCT_SLICE_FLOATS / N));
  try {
    runChunks(backend, simd, 'conv_filter_grad_run', chunks, helpers(backend, chunks), (c, call) => {
      const m0 = c * rows;
      for (let k0 = 0; k0 < K; k0 += slice) {
        const n = Math.min(slice, K - k0);
        // The first slice with the sign bit set: assigned, so out needs no zeroing first.
        call(
          a0 + (k0 * M + m0) * 4,
          M * 4,
          b0 + k0 * N * 4,
          k0 === 0 ? n | 0x80000000 : n,
          Math.min(rows, M - m0),
          N,
          o0 + m0 * N * 4,
        );
      }
    });
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  }
  return out;
}
