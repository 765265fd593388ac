// Decoding, then a squash resize to the target size as flow_from_directory's load_img(target_size) does
// (aspect ratio not kept). sharp decodes everything; complete JPEGs of ordinary size take a faster path straight
// through libjpeg-turbo's TurboJPEG API (@julusian/jpeg-turbo) into a reused buffer, because libvips' per-image
// pipeline setup costs more than the decode itself (measured on the Kaggle photos: 1.55 ms per image with sharp,
// 0.33 ms this way, PIL 0.36 ms).
import jpegTurbo from '@julusian/jpeg-turbo';
// The subpath alone (sharp only): worker threads load this module and need none of the dataset package's I/O.
import { MAX_IMAGE_PIXELS, tooManyPixels } from '@catdog/dataset/images';
import sharp from 'sharp';
import { sourceBuffer, threadSampler, type Sampler } from './affine-wasm.js';
import type { AffineImage, SourceLayout } from './transform.js';

export type Interpolation = 'nearest' | 'bilinear';

/**
 * 'fast' (default): libjpeg-turbo's fast integer IDCT through TurboJPEG (4.7× sharp's speed on the Kaggle photos;
 * pixels within ±4 levels of PIL's, mean 1). 'exact': libjpeg's accurate IDCT through sharp, the very pixels PIL
 * (and so Keras' load_img) decodes.
 */
export type JpegDecoder = 'fast' | 'exact';

export interface DecodeOptions {
  height: number;
  width: number;
  /** Default 'nearest' (Keras' load_img). */
  interpolation?: Interpolation;
  /** Default 'fast'. */
  jpegDecoder?: JpegDecoder;
  /**
   * The sampler whose memory TurboJPEG decodes into, so that applyAffine with the same sampler reads the pixels in
   * place. Default threadSampler(); null decodes into a buffer of this module's.
   */
  sampler?: Sampler | null;
}

/**
 * Width and height from a JPEG's SOF segment, or null when the bytes are not a (well-formed) JPEG header.
 * Microseconds, so the decoder can pick its path without asking libvips.
 */
export function jpegSize(bytes: Uint8Array): { width: number; height: number } | null {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return null;
    const marker = bytes[i + 1];
    if (marker === 0xff) {
      i++;
      continue;
    } // fill byte
    if ((marker >= 0xd0 && marker <= 0xd9) || marker === 0x01) {
      i += 2;
      continue;
    } // no length
    const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (sof) return { height: (bytes[i + 5] << 8) | bytes[i + 6], width: (bytes[i + 7] << 8) | bytes[i + 8] };
    i += 2 + ((bytes[i + 2] << 8) | bytes[i + 3]);
  }
  return null;
}

/**
 * PIL's NEAREST resize (what Keras' load_img does): output (i, j) takes source pixel
 * (⌊(i + ½)·H/h⌋, ⌊(j + ½)·W/w⌋).
 */
export function resizeNearest(
  src: Uint8Array,
  srcHeight: number,
  srcWidth: number,
  height: number,
  width: number,
): Uint8Array {
  return gather(src, nearestLayout(srcHeight, srcWidth, height, width));
}

/** The packed image a layout describes: row i, column j of the result is rows[i] + cols[j] of src. */
function gather(src: Uint8Array, { rows, cols }: SourceLayout): Uint8Array {
  const out = new Uint8Array(rows.length * cols.length * 3);
  let d = 0;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    for (let j = 0; j < cols.length; j++, d += 3) {
      const p = row + cols[j];
      out[d] = src[p];
      out[d + 1] = src[p + 1];
      out[d + 2] = src[p + 2];
    }
  }
  return out;
}

/**
 * True when the JPEG's last marker is its end-of-image (trailing zero padding allowed). Anything else (a truncated
 * file, data appended after the image) goes to sharp, which rejects truncated input with a clear message.
 */
export function endsWithEoi(bytes: Uint8Array): boolean {
  let end = bytes.length;
  while (end > 2 && bytes[end - 1] === 0) end--;
  return end >= 4 && bytes[end - 2] === 0xff && bytes[end - 1] === 0xd9;
}

/**
 * One decode buffer per thread, grown on demand: no 0.5 MB allocation (and later free) per photo. With the WASM
 * sampler it is the start of the sampler's memory, where applyAffine reads the pixels without a copy.
 */
let scratch = Buffer.alloc(0);
function scratchBuffer(sampler: Sampler | null, bytes: number): Buffer {
  if (sampler) return sourceBuffer(sampler, bytes);
  if (scratch.length < bytes) scratch = Buffer.alloc(bytes);
  return scratch;
}

/**
 * Full-size RGB pixels of a well-formed JPEG through TurboJPEG, or null to let sharp decide. The pixels live in
 * this thread's scratch buffer until the next call.
 */
function decodeJpegFast(
  bytes: Uint8Array,
  size: { width: number; height: number },
  sampler: Sampler | null,
): Uint8Array | null {
  if (!endsWithEoi(bytes)) return null;
  const need = size.width * size.height * 3;
  const scratch = scratchBuffer(sampler, need);
  try {
    const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = jpegTurbo.decompressSync(input, scratch, { format: jpegTurbo.FORMAT_RGB });
    if (out.width !== size.width || out.height !== size.height) return null;
    return new Uint8Array(scratch.buffer, scratch.byteOffset, need);
  } catch {
    return null; // CMYK, arithmetic coding, corrupt data…: sharp decodes it or names the problem
  }
}

/**
 * resizeNearest's mapping as index tables into the full-size image: the affine can sample it directly and get the
 * very pixels of the resized image, without building it.
 */
export function nearestLayout(srcHeight: number, srcWidth: number, height: number, width: number): SourceLayout {
  const rows = new Int32Array(height);
  const cols = new Int32Array(width);
  for (let i = 0; i < height; i++)
    rows[i] = Math.min(srcHeight - 1, Math.floor(((i + 0.5) * srcHeight) / height)) * srcWidth * 3;
  for (let j = 0; j < width; j++) cols[j] = Math.min(srcWidth - 1, Math.floor(((j + 0.5) * srcWidth) / width)) * 3;
  return { rows, cols };
}

/** JPEGs at least this many times larger than the target take sharp's shrink-on-load path. */
const SHRINK_ON_LOAD_FACTOR = 4;

/**
 * Decodes an encoded image (JPEG, PNG, WebP, …) for sampling at height × width, as sRGB bytes: applyAffine's input.
 * Throws on corrupt input. For a JPEG on TurboJPEG's path, `pixels` is the full-size decode (in the sampler's
 * memory, valid until its next decode) and `layout` the nearest resize's index tables into it; otherwise `pixels`
 * is already height × width × 3 and there is no layout.
 *
 * 'nearest': a full-size decode (TurboJPEG for `jpegDecoder` 'fast', else sharp) then PIL's nearest mapping
 * (exactly Keras' resize), except for JPEGs ≥ 4× the target, which libjpeg decodes at 1/4 or 1/8 scale first
 * (shrink-on-load, like PIL's draft mode) before sharp's nearest resize. For the Kaggle photos (~500×375 → 150×150)
 * the full decode is cheaper than sharp's 1/2-scale decode + resize.
 * 'bilinear': sharp's linear kernel (shrink-on-load for JPEG).
 */
export async function decodeForSampling(bytes: Uint8Array, options: DecodeOptions): Promise<AffineImage> {
  try {
    return await decodeWithinLimit(bytes, options);
  } catch (err) {
    // libvips' own words for a bomb in another format ("Input image exceeds pixel limit") do not say how large.
    if (!/pixel limit/i.test(String((err as Error)?.message))) throw err;
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata(); // the header only
    throw new Error(tooManyPixels(meta.width ?? 0, meta.height ?? 0) ?? (err as Error).message);
  }
}

async function decodeWithinLimit(bytes: Uint8Array, options: DecodeOptions): Promise<AffineImage> {
  const { height, width, interpolation = 'nearest', jpegDecoder = 'fast' } = options;
  const size = jpegSize(bytes);
  // A decompression bomb is refused from its header, before TurboJPEG's buffer or libvips' pixels are allocated
  // (sharp checks the same limit for the formats jpegSize does not read).
  const tooLarge = size && tooManyPixels(size.width, size.height);
  if (tooLarge) throw new Error(tooLarge);
  if (interpolation === 'nearest') {
    if (!size || Math.min(size.width / width, size.height / height) < SHRINK_ON_LOAD_FACTOR) {
      const sampler = options.sampler === undefined ? threadSampler() : options.sampler;
      const fast = size && jpegDecoder === 'fast' && decodeJpegFast(bytes, size, sampler);
      if (fast) return { pixels: fast, height, width, layout: nearestLayout(size.height, size.width, height, width) };
      const { data, info } = await sharp(bytes, { limitInputPixels: MAX_IMAGE_PIXELS })
        .removeAlpha()
        .toColourspace('srgb')
        .raw()
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
      const pixels = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      return {
        pixels:
          info.width === width && info.height === height
            ? pixels
            : resizeNearest(pixels, info.height, info.width, height, width),
        height,
        width,
      };
    }
  }
  const { data, info } = await sharp(bytes, { limitInputPixels: MAX_IMAGE_PIXELS })
    .resize(width, height, { fit: 'fill', kernel: interpolation === 'nearest' ? 'nearest' : 'linear' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== width || info.height !== height) {
    throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${width}×${height}×3`);
  }
  return { pixels: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), height, width };
}

/** Decodes an encoded image to height × width × 3 sRGB bytes of its own (decodeForSampling, resized). */
export async function decodeResized(bytes: Uint8Array, options: DecodeOptions): Promise<Uint8Array> {
  const { pixels, layout } = await decodeForSampling(bytes, options);
  return layout ? gather(pixels, layout) : pixels;
}

/** One worker thread should use one core: no libvips thread pool per image, no operation cache. */
export function configureSharpForWorkers(): void {
  sharp.concurrency(1);
  sharp.cache(false);
}
