// Decoding, then a squash resize to the target size as flow_from_directory's load_img(target_size) does
// (aspect ratio not kept). sharp decodes everything; complete baseline RGB JPEGs of ordinary size take a faster
// path through @napi-rs/image, because libvips' per-image pipeline setup costs more than the decode itself
// (measured on the Kaggle photos: 1.55 ms per image with sharp vs 0.69 ms; 0.56 vs 0.16 ms at 150×150).
import { Transformer } from '@napi-rs/image';
import sharp from 'sharp';

export type Interpolation = 'nearest' | 'bilinear';

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
    if (marker === 0xff) { i++; continue; } // fill byte
    if ((marker >= 0xd0 && marker <= 0xd9) || marker === 0x01) { i += 2; continue; } // no length
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
export function resizeNearest(src: Uint8Array, srcHeight: number, srcWidth: number, height: number, width: number): Uint8Array {
  const out = new Uint8Array(height * width * 3);
  const cols = new Int32Array(width);
  for (let j = 0; j < width; j++) cols[j] = Math.min(srcWidth - 1, Math.floor(((j + 0.5) * srcWidth) / width)) * 3;
  for (let i = 0; i < height; i++) {
    const row = Math.min(srcHeight - 1, Math.floor(((i + 0.5) * srcHeight) / height)) * srcWidth * 3;
    let d = i * width * 3;
    for (let j = 0; j < width; j++, d += 3) {
      const p = row + cols[j];
      out[d] = src[p];
      out[d + 1] = src[p + 1];
      out[d + 2] = src[p + 2];
    }
  }
  return out;
}

/**
 * True when the JPEG's last marker is its end-of-image (trailing zero padding allowed). The fast decoder fills a
 * truncated file with grey instead of failing, so anything else goes to sharp, which rejects truncated input.
 */
export function endsWithEoi(bytes: Uint8Array): boolean {
  let end = bytes.length;
  while (end > 2 && bytes[end - 1] === 0) end--;
  return end >= 4 && bytes[end - 2] === 0xff && bytes[end - 1] === 0xd9;
}

/** Full-size RGB pixels of a well-formed JPEG through the fast decoder, or null to let sharp decide. */
function decodeJpegFast(bytes: Uint8Array, size: { width: number; height: number }): Uint8Array | null {
  if (!endsWithEoi(bytes)) return null;
  let pixels: Uint8Array;
  try {
    pixels = new Transformer(bytes).rawPixelsSync();
  } catch {
    return null; // sharp gives the error its proper message, or decodes what this decoder does not support
  }
  // Grey, CMYK and other layouts go through sharp's colour management instead.
  return pixels.length === size.width * size.height * 3 ? pixels : null;
}

/** JPEGs at least this many times larger than the target take sharp's shrink-on-load path. */
const SHRINK_ON_LOAD_FACTOR = 4;

/**
 * Decodes an encoded image (JPEG, PNG, WebP, …) to height × width × 3 sRGB bytes. Throws on corrupt input.
 *
 * 'nearest': a full-size decode (the fast JPEG path when it applies) then PIL's nearest mapping (exactly Keras' resize), except for JPEGs ≥ 4× the target,
 * which libjpeg decodes at 1/4 or 1/8 scale first (shrink-on-load, like PIL's draft mode) before sharp's nearest resize.
 * For the Kaggle photos (~500×375 → 150×150) the full decode is cheaper than sharp's 1/2-scale decode + resize.
 * 'bilinear': sharp's linear kernel (shrink-on-load for JPEG).
 */
export async function decodeResized(
  bytes: Uint8Array,
  height: number,
  width: number,
  interpolation: Interpolation = 'nearest',
): Promise<Uint8Array> {
  if (interpolation === 'nearest') {
    const size = jpegSize(bytes);
    if (!size || Math.min(size.width / width, size.height / height) < SHRINK_ON_LOAD_FACTOR) {
      const fast = size && decodeJpegFast(bytes, size);
      if (fast) return size.width === width && size.height === height ? fast : resizeNearest(fast, size.height, size.width, height, width);
      const { data, info } = await sharp(bytes).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
      if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
      const pixels = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      return info.width === width && info.height === height ? pixels : resizeNearest(pixels, info.height, info.width, height, width);
    }
  }
  const { data, info } = await sharp(bytes)
    .resize(width, height, { fit: 'fill', kernel: interpolation === 'nearest' ? 'nearest' : 'linear' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== width || info.height !== height) {
    throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${width}×${height}×3`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** One worker thread should use one core: no libvips thread pool per image, no operation cache. */
export function configureSharpForWorkers(): void {
  sharp.concurrency(1);
  sharp.cache(false);
}
