// Turning a source file into the JPEG stored in a shard: pass-through for clean RGB JPEGs, else decode, convert
// to 8-bit sRGB (grayscale, CMYK, alpha, 16-bit), optionally resize, and re-encode. Broken files become reasons.
import sharp from 'sharp';
import type { ResizeSpec } from './manifest.js';

export interface EncodeOptions {
  resize?: ResizeSpec;
  quality: number;
}

export type EncodeResult =
  | {
      ok: true;
      bytes: Buffer;
      width: number;
      height: number;
      /** Why the image was re-encoded (e.g. 'png → jpeg', 'cmyk → srgb', 'resized'); absent when kept byte-for-byte. */
      converted?: string;
    }
  | { ok: false; reason: string };

// Many images are decoded at once; one libvips thread each gives the best throughput.
sharp.concurrency(1);

function sniff(buf: Buffer): string | undefined {
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) return 'jpeg';
  if (buf.length >= 8 && buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])))
    return 'png';
  return undefined;
}

function firstLine(err: unknown): string {
  return ((err as Error)?.message ?? String(err))
    .split('\n')[0]
    .replace(/^Input (buffer|file) /, '')
    .trim();
}

/** Why an image is not kept byte-for-byte: every difference from a clean 8-bit sRGB JPEG, in a fixed order. */
function conversionReason(meta: sharp.Metadata, buf: Buffer, options: EncodeOptions): string {
  const why: string[] = [];
  if (meta.format !== 'jpeg') why.push(`${meta.format ?? 'unknown'} → jpeg`);
  else if (sniff(buf) !== 'jpeg') why.push('jpeg with a non-standard header');
  if (meta.space && meta.space !== 'srgb') why.push(`${meta.space} → srgb`);
  if (meta.hasAlpha) why.push('alpha flattened');
  if (meta.depth && meta.depth !== 'uchar') why.push(`${meta.depth} → 8-bit`);
  if (options.resize) why.push('resized');
  if (why.length === 0) why.push(`${meta.channels ?? '?'} channels → 3`);
  return why.join(', ');
}

/**
 * The most pixels an image may declare (2^27 ≈ 134 megapixels, 400 MB as RGB: beyond any camera's photo). Every
 * decoder checks the header against it before allocating pixel memory, so a small file declaring 60000×60000
 * pixels (a decompression bomb) is refused with bounded memory instead of exhausting it.
 */
export const MAX_IMAGE_PIXELS = 2 ** 27;

/** Why an image of this declared size is refused, or undefined when it is within MAX_IMAGE_PIXELS. */
export function tooManyPixels(width: number, height: number): string | undefined {
  if (width * height <= MAX_IMAGE_PIXELS) return undefined;
  const mp = (n: number) => Math.round(n / 1e6).toLocaleString('en');
  return `image too large: declares ${width}×${height} pixels (${mp(width * height)} megapixels; the limit is ${mp(MAX_IMAGE_PIXELS)})`;
}

/**
 * Decodes an image completely, as training will; returns why it cannot be (undefined when it decodes).
 * Decompression bombs are refused from the header, before any pixel memory is allocated.
 */
export async function checkDecodes(bytes: Uint8Array): Promise<string | undefined> {
  if (bytes.length === 0) return 'empty image (0 bytes)';
  try {
    // metadata() reads the header only; without a limit it reports a bomb's size instead of refusing it blindly.
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata();
    const tooLarge = meta.width && meta.height ? tooManyPixels(meta.width, meta.height) : undefined;
    if (tooLarge) return tooLarge;
    const { info } = await sharp(bytes, { failOn: 'truncated', limitInputPixels: MAX_IMAGE_PIXELS })
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (!info.width || !info.height) return 'decoded to no pixels';
    return undefined;
  } catch (err) {
    return `undecodable (${firstLine(err) || 'decode failed'})`;
  }
}

/** Encodes one source image for a shard; never throws for bad input. */
export async function encodeImage(buf: Buffer, options: EncodeOptions): Promise<EncodeResult> {
  if (buf.length === 0) return { ok: false, reason: 'empty file (0 bytes)' };
  let meta: sharp.Metadata;
  try {
    meta = await sharp(buf, { limitInputPixels: false }).metadata(); // the header only: size checked below
  } catch (err) {
    const head = buf.subarray(0, 64).toString('latin1');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: tab, LF and CR are exactly the control characters text may hold
    const printable = /^[\x09\x0a\x0d\x20-\x7e]*$/.test(head);
    return { ok: false, reason: `not an image (${printable ? 'text content' : firstLine(err)})` };
  }
  if (!meta.width || !meta.height)
    return { ok: false, reason: `not an image (no dimensions, format ${meta.format ?? 'unknown'})` };
  const tooLarge = tooManyPixels(meta.width, meta.height);
  if (tooLarge) return { ok: false, reason: tooLarge };
  const passThrough =
    !options.resize &&
    meta.format === 'jpeg' &&
    sniff(buf) === 'jpeg' &&
    meta.space === 'srgb' &&
    meta.channels === 3 &&
    meta.depth === 'uchar';
  try {
    if (passThrough) {
      // Decode fully (at 1/8 scale, cheap) so truncated or corrupt JPEGs are caught, then keep the original bytes.
      await sharp(buf, { failOn: 'truncated', limitInputPixels: MAX_IMAGE_PIXELS })
        .resize(Math.max(1, Math.ceil(meta.width / 8)), Math.max(1, Math.ceil(meta.height / 8)), { fit: 'fill' })
        .raw()
        .toBuffer();
      return { ok: true, bytes: buf, width: meta.width, height: meta.height };
    }
    let pipeline = sharp(buf, { failOn: 'truncated', limitInputPixels: MAX_IMAGE_PIXELS });
    if (meta.hasAlpha) pipeline = pipeline.flatten({ background: '#ffffff' });
    const r = options.resize;
    if (r) {
      pipeline =
        'shortestSide' in r
          ? pipeline.resize({ width: r.shortestSide, height: r.shortestSide, fit: 'outside' })
          : pipeline.resize({ width: r.width, height: r.height, fit: 'fill' });
    }
    const { data, info } = await pipeline
      .toColourspace('srgb')
      .jpeg({ quality: options.quality, chromaSubsampling: '4:2:0' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) return { ok: false, reason: `could not convert to RGB (${info.channels} channels)` };
    return {
      ok: true,
      bytes: data,
      width: info.width,
      height: info.height,
      converted: conversionReason(meta, buf, options),
    };
  } catch (err) {
    // The header parsed but the pixel data did not decode: cut short or damaged. (libvips' message is
    // sometimes lost under concurrency, so the reason does not depend on it.)
    const msg = firstLine(err) || 'decode failed';
    const noEnd = meta.format === 'jpeg' && !(buf[buf.length - 2] === 0xff && buf[buf.length - 1] === 0xd9);
    const reason = `truncated or corrupt image data (${noEnd ? 'no JPEG end marker; ' : ''}${msg})`;
    return { ok: false, reason };
  }
}
