// Keras ImageDataGenerator's geometry: get_random_transform, apply_affine_transform (scipy.ndimage.affine_transform,
// order 1) and the flips of apply_transform. See README.md for the math.
import type { AugmentOptions, FillMode } from './options.js';
import { zoomBounds } from './options.js';
import type { Rng } from './random.js';
import { threadSampler, wasmAffine, type AffineJob, type Sampler } from './affine-wasm.js';

/** One sample's draw, in Keras' units: degrees, pixels (tx along rows, ty along columns), degrees, factors. */
export interface TransformParams {
  theta: number;
  tx: number;
  ty: number;
  shear: number;
  zx: number;
  zy: number;
  flipHorizontal: boolean;
  flipVertical: boolean;
}

export const IDENTITY_PARAMS: Readonly<TransformParams> = Object.freeze({
  theta: 0,
  tx: 0,
  ty: 0,
  shear: 0,
  zx: 1,
  zy: 1,
  flipHorizontal: false,
  flipVertical: false,
});

/** Keras' shift draw: an integer range >= 1 picks whole pixels from 0..r-1 with a random sign; else uniform(-r, r). */
function drawShift(range: number, size: number, rng: Rng): number {
  if (!range) return 0;
  let shift: number;
  if (Number.isInteger(range)) {
    shift = rng.int(range) * (rng.random() < 0.5 ? -1 : 1);
  } else {
    shift = rng.uniform(-range, range);
  }
  return range < 1 ? shift * size : shift;
}

/**
 * Draws one sample's parameters in get_random_transform's order: theta, tx (height shift × rows),
 * ty (width shift × columns), shear, (zx, zy), horizontal flip, vertical flip. Flip coins are always
 * drawn, as in Keras, so toggling a flip does not change the other draws.
 */
export function sampleTransform(options: AugmentOptions, rng: Rng, height: number, width: number): TransformParams {
  const theta = options.rotationRange ? rng.uniform(-options.rotationRange, options.rotationRange) : 0;
  const tx = drawShift(options.heightShiftRange, height, rng);
  const ty = drawShift(options.widthShiftRange, width, rng);
  const shear = options.shearRange ? rng.uniform(-options.shearRange, options.shearRange) : 0;
  const [zlo, zhi] = zoomBounds(options.zoomRange);
  let zx = 1;
  let zy = 1;
  if (!(zlo === 1 && zhi === 1)) {
    zx = rng.uniform(zlo, zhi);
    zy = rng.uniform(zlo, zhi);
  }
  const flipHorizontal = rng.random() < 0.5 && options.horizontalFlip;
  const flipVertical = rng.random() < 0.5 && options.verticalFlip;
  return { theta, tx, ty, shear, zx, zy, flipHorizontal, flipVertical };
}

type M3 = [number, number, number, number, number, number, number, number, number];

/** np.dot of two 3×3 matrices, summed in numpy's order. */
function dot(a: M3, b: M3): M3 {
  const r = new Array(9) as M3;
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      r[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
    }
  }
  return r;
}

const deg2rad = (d: number) => (d * Math.PI) / 180;

/**
 * The 2×3 affine map from output (row, col) to input (row, col), as Keras builds it:
 * rotation · shift · shear · zoom, conjugated by a translation to the centre (h/2 + 0.5, w/2 + 0.5).
 * Returns [m00, m01, m02, m10, m11, m12]: inRow = m00·r + m01·c + m02, inCol = m10·r + m11·c + m12.
 * Flips are not part of it (they are applied to the output, after the affine, like apply_transform).
 */
export function transformMatrix(params: TransformParams, height: number, width: number): Float64Array {
  let m: M3 | null = null;
  if (params.theta !== 0) {
    const t = deg2rad(params.theta);
    m = [Math.cos(t), -Math.sin(t), 0, Math.sin(t), Math.cos(t), 0, 0, 0, 1];
  }
  if (params.tx !== 0 || params.ty !== 0) {
    const s: M3 = [1, 0, params.tx, 0, 1, params.ty, 0, 0, 1];
    m = m ? dot(m, s) : s;
  }
  if (params.shear !== 0) {
    const sh = deg2rad(params.shear);
    const s: M3 = [1, -Math.sin(sh), 0, 0, Math.cos(sh), 0, 0, 0, 1];
    m = m ? dot(m, s) : s;
  }
  if (params.zx !== 1 || params.zy !== 1) {
    const z: M3 = [params.zx, 0, 0, 0, params.zy, 0, 0, 0, 1];
    m = m ? dot(m, z) : z;
  }
  if (!m) return Float64Array.of(1, 0, 0, 0, 1, 0);
  // transform_matrix_offset_center(m, h, w): Keras' centre is (h/2 + 0.5, w/2 + 0.5), not ((h-1)/2, (w-1)/2).
  const ox = height / 2 + 0.5;
  const oy = width / 2 + 0.5;
  const offset: M3 = [1, 0, ox, 0, 1, oy, 0, 0, 1];
  const reset: M3 = [1, 0, -ox, 0, 1, -oy, 0, 0, 1];
  const c = dot(dot(offset, m), reset);
  return Float64Array.of(c[0], c[1], c[2], c[3], c[4], c[5]);
}

/**
 * Where row i and column j of the (conceptual) height × width source start in `src`: element offsets. The default is
 * a packed h × w × 3 image; a nearest-neighbour resize is the same image seen through index tables, so the affine can
 * sample a full-size decode directly (exactly what resizing first would give, without building the resized copy).
 */
export interface SourceLayout {
  rows: Int32Array;
  cols: Int32Array;
}

/** The layout of a packed height × width × 3 image. */
export function packedLayout(height: number, width: number): SourceLayout {
  const rows = new Int32Array(height);
  const cols = new Int32Array(width);
  for (let i = 0; i < height; i++) rows[i] = i * width * 3;
  for (let j = 0; j < width; j++) cols[j] = j * 3;
  return { rows, cols };
}

/** Where the pixels go and how they are scaled. */
export interface AffineOutput {
  /** destination; Float32Array gets v·rescale (float32 arithmetic, like Keras' standardize), Uint8Array gets round(v) */
  data: Float32Array | Uint8Array;
  /** element offset of this image in data (e.g. index·h·w·3 inside a batch) */
  offset?: number;
  /** multiplies float outputs (1/255 in the book); ignored for uint8 */
  rescale?: number;
  flipHorizontal?: boolean;
  flipVertical?: boolean;
}

// Index extension of scipy's half-sample symmetric 'reflect': d c b a | a b c d | d c b a
function reflectIndex(i: number, n: number): number {
  if (n <= 1) return 0;
  const p = 2 * n;
  let m = i % p;
  if (m < 0) m += p;
  return m < n ? m : p - 1 - m;
}

// scipy's 'wrap' maps the coordinate with period n - 1 (first and last samples overlap): d b c d | a b c d | b c a b
function wrapCoordinate(c: number, n: number): number {
  if (n <= 1) return 0;
  const sz = n - 1;
  if (c < 0) return c + sz * (Math.trunc(-c / sz) + 1);
  if (c > sz) return c - sz * Math.trunc(c / sz);
  return c;
}

function storeValue(data: Float32Array | Uint8Array, dst: number, v: number, rescale: number): void {
  // Uint8Array stores truncate; +0.5 rounds half up (values are within [0, 255] by construction of the weights).
  if (data instanceof Float32Array) data[dst] = Math.fround(v) * rescale;
  else data[dst] = v <= 0 ? 0 : v >= 255 ? 255 : v + 0.5;
}

/** Pixels whose sample point is outside the interior: scipy's boundary modes. */
function sampleBorder(
  src: Uint8Array,
  layout: SourceLayout,
  h: number,
  w: number,
  y: number,
  x: number,
  fillMode: FillMode,
  cval: number,
  data: Float32Array | Uint8Array,
  dst: number,
  rescale: number,
): void {
  const hMax = h - 1;
  const wMax = w - 1;
  const { rows, cols } = layout;
  let y0: number, y1: number, x0: number, x1: number, ty: number, tx: number;
  if (fillMode === 'reflect') {
    const fy = Math.floor(y);
    const fx = Math.floor(x);
    ty = y - fy;
    tx = x - fx;
    y0 = reflectIndex(fy, h);
    y1 = reflectIndex(fy + 1, h);
    x0 = reflectIndex(fx, w);
    x1 = reflectIndex(fx + 1, w);
  } else {
    if (fillMode === 'constant') {
      if (y < 0 || y > hMax || x < 0 || x > wMax) {
        storeValue(data, dst, cval, rescale);
        storeValue(data, dst + 1, cval, rescale);
        storeValue(data, dst + 2, cval, rescale);
        return;
      }
    } else if (fillMode === 'nearest') {
      y = y < 0 ? 0 : Math.min(y, hMax);
      x = x < 0 ? 0 : Math.min(x, wMax);
    } else {
      y = wrapCoordinate(y, h);
      x = wrapCoordinate(x, w);
    }
    y0 = Math.floor(y);
    x0 = Math.floor(x);
    y1 = y0 < hMax ? y0 + 1 : hMax;
    x1 = x0 < wMax ? x0 + 1 : wMax;
    ty = y - y0;
    tx = x - x0;
  }
  const p00 = rows[y0] + cols[x0],
    p01 = rows[y0] + cols[x1];
  const p10 = rows[y1] + cols[x0],
    p11 = rows[y1] + cols[x1];
  const w00 = (1 - ty) * (1 - tx),
    w01 = (1 - ty) * tx,
    w10 = ty * (1 - tx),
    w11 = ty * tx;
  for (let k = 0; k < 3; k++) {
    storeValue(
      data,
      dst + k,
      src[p00 + k] * w00 + src[p01 + k] * w01 + src[p10 + k] * w10 + src[p11 + k] * w11,
      rescale,
    );
  }
}

/** An image to sample: height × width pixels of `pixels`, packed h × w × 3 or seen through `layout`. */
export interface AffineImage {
  pixels: Uint8Array;
  height: number;
  width: number;
  /** where row i and column j start in pixels (default: packed height × width × 3) */
  layout?: SourceLayout;
}

export interface AffineOptions {
  /** Default 'nearest' (Keras' default). */
  fillMode?: FillMode;
  /** Value for fillMode 'constant'. Default 0. */
  cval?: number;
  /** Where the pixels go. Default: a new Float32Array of height × width × 3, unscaled. */
  output?: AffineOutput;
  /**
   * The WASM sampler to run 'nearest' and 'constant' on: default threadSampler(); a batchSampler() to write a batch
   * in its shared memory; null for the JS reference loop.
   */
  sampler?: Sampler | null;
}

function affineJob(image: AffineImage, matrix: ArrayLike<number>, options: AffineOptions): AffineJob {
  const { pixels: src, height, width, layout } = image;
  const fillMode = options.fillMode ?? 'nearest';
  const cval = options.cval ?? 0;
  const out = options.output;
  if (layout) {
    if (layout.rows.length !== height || layout.cols.length !== width) {
      throw new RangeError(
        `applyAffine: layout is ${layout.rows.length}×${layout.cols.length}, image ${height}×${width}`,
      );
    }
  } else if (src.length < height * width * 3) {
    throw new RangeError(`applyAffine: source has ${src.length} bytes, need ${height * width * 3}`);
  }
  const { rows, cols } = layout ?? packedLayout(height, width);
  const data = out?.data ?? new Float32Array(height * width * 3);
  return {
    src,
    rows,
    cols,
    height,
    width,
    matrix,
    fillMode,
    cval,
    data,
    offset: out?.offset ?? 0,
    rescale: data instanceof Float32Array && out?.rescale !== undefined ? Math.fround(out.rescale) : 1,
    flipHorizontal: out?.flipHorizontal ?? false,
    flipVertical: out?.flipVertical ?? false,
  };
}

/**
 * scipy.ndimage.affine_transform(channel, matrix[:2,:2], matrix[:2,2], order=1, mode=fillMode, cval) on each
 * channel of an HWC RGB image, then Keras' flips. Writes into options.output.data (a batch buffer) or a new
 * Float32Array. 'nearest' and 'constant' run on the WASM SIMD sampler (float32 blending: within float32 rounding of
 * applyAffineReference, about 3× faster); 'reflect', 'wrap', a null sampler and runtimes without WASM SIMD run the
 * reference.
 */
export function applyAffine(
  image: AffineImage,
  matrix: ArrayLike<number>,
  options: AffineOptions = {},
): Float32Array | Uint8Array {
  const job = affineJob(image, matrix, options);
  const sampler = options.sampler === undefined ? threadSampler() : options.sampler;
  if (sampler && (job.fillMode === 'nearest' || job.fillMode === 'constant')) {
    wasmAffine(sampler, job);
    return job.data;
  }
  return sampleReference(job);
}

/** applyAffine in float64 JS, scipy's arithmetic operation for operation (outputs equal scipy's in our tests). */
export function applyAffineReference(
  image: AffineImage,
  matrix: ArrayLike<number>,
  options: Omit<AffineOptions, 'sampler'> = {},
): Float32Array | Uint8Array {
  return sampleReference(affineJob(image, matrix, options));
}

function sampleReference(job: AffineJob): Float32Array | Uint8Array {
  const { src, rows, cols, height: h, width: w, matrix, fillMode, cval, data, rescale } = job;
  const base = job.offset;
  const flipH = job.flipHorizontal;
  const flipV = job.flipVertical;
  const isFloat = data instanceof Float32Array;
  const f32 = isFloat ? (data as Float32Array) : null;
  const u8 = isFloat ? null : (data as Uint8Array);
  const store = (dst: number, v: number) => storeValue(data, dst, v, rescale);
  const cv = cval;
  const [m00, m01, m02, m10, m11, m12] = [matrix[0], matrix[1], matrix[2], matrix[3], matrix[4], matrix[5]];
  const hMax = h - 1;
  const wMax = w - 1;
  const rowStride = w * 3;

  // Integer translation (including the identity): whole-pixel copies, no interpolation needed.
  if (m00 === 1 && m01 === 0 && m10 === 0 && m11 === 1 && Number.isInteger(m02) && Number.isInteger(m12)) {
    for (let r = 0; r < h; r++) {
      const dRow = base + (flipV ? hMax - r : r) * rowStride;
      const y = r + m02;
      for (let c = 0; c < w; c++) {
        const dst = dRow + (flipH ? wMax - c : c) * 3;
        const x = c + m12;
        let yi = y;
        let xi = x;
        if (y < 0 || y > hMax || x < 0 || x > wMax) {
          if (fillMode === 'constant') {
            store(dst, cv);
            store(dst + 1, cv);
            store(dst + 2, cv);
            continue;
          } else if (fillMode === 'nearest') {
            yi = y < 0 ? 0 : Math.min(y, hMax);
            xi = x < 0 ? 0 : Math.min(x, wMax);
          } else if (fillMode === 'reflect') {
            yi = reflectIndex(y, h);
            xi = reflectIndex(x, w);
          } else {
            yi = wrapCoordinate(y, h);
            xi = wrapCoordinate(x, w);
          }
        }
        const p = rows[yi] + cols[xi];
        store(dst, src[p]);
        store(dst + 1, src[p + 1]);
        store(dst + 2, src[p + 2]);
      }
    }
    return data;
  }

  const rs = rescale;
  const clampNearest = fillMode === 'nearest';
  for (let r = 0; r < h; r++) {
    const dRow = base + (flipV ? hMax - r : r) * rowStride;
    const ar = m00 * r;
    const br = m10 * r;
    for (let c = 0; c < w; c++) {
      // Same operation order as scipy: (m·r + m·c) + offset, in doubles.
      let y = ar + m01 * c + m02;
      let x = br + m11 * c + m12;
      const dst = dRow + (flipH ? wMax - c : c) * 3;
      let y0: number, x0: number, y1: number, x1: number;
      if (y >= 0 && y < hMax && x >= 0 && x < wMax) {
        // Interior (the common case): both neighbours exist on each axis.
        y0 = y | 0;
        x0 = x | 0;
        y1 = y0 + 1;
        x1 = x0 + 1;
      } else if (clampNearest) {
        // 'nearest' (the book's mode) inline: clamp the point, the neighbour past the last sample has weight 0.
        y = y < 0 ? 0 : Math.min(y, hMax);
        x = x < 0 ? 0 : Math.min(x, wMax);
        y0 = y | 0;
        x0 = x | 0;
        y1 = y0 < hMax ? y0 + 1 : y0;
        x1 = x0 < wMax ? x0 + 1 : x0;
      } else {
        sampleBorder(src, { rows, cols }, h, w, y, x, fillMode, cval, data, dst, rs);
        continue;
      }
      const ty = y - y0;
      const tx = x - x0;
      const r0 = rows[y0];
      const r1 = rows[y1];
      const c0 = cols[x0];
      const c1 = cols[x1];
      const p00 = r0 + c0;
      const p01 = r0 + c1;
      const p10 = r1 + c0;
      const p11 = r1 + c1;
      const w00 = (1 - ty) * (1 - tx),
        w01 = (1 - ty) * tx,
        w10 = ty * (1 - tx),
        w11 = ty * tx;
      const v0 = src[p00] * w00 + src[p01] * w01 + src[p10] * w10 + src[p11] * w11;
      const v1 = src[p00 + 1] * w00 + src[p01 + 1] * w01 + src[p10 + 1] * w10 + src[p11 + 1] * w11;
      const v2 = src[p00 + 2] * w00 + src[p01 + 2] * w01 + src[p10 + 2] * w10 + src[p11 + 2] * w11;
      if (f32) {
        // float32(v) × float32(rescale) is exact in doubles; the store rounds once, like numpy's float32 multiply.
        f32[dst] = Math.fround(v0) * rs;
        f32[dst + 1] = Math.fround(v1) * rs;
        f32[dst + 2] = Math.fround(v2) * rs;
      } else {
        u8![dst] = v0 + 0.5;
        u8![dst + 1] = v1 + 0.5;
        u8![dst + 2] = v2 + 0.5;
      }
    }
  }
  return data;
}
