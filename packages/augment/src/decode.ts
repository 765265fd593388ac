// Decoding with sharp: JPEG shrink-on-load (libjpeg's DCT scaling, like PIL's draft mode) then a squash resize
// to the target size, as flow_from_directory's load_img(target_size) does (aspect ratio not kept).
import sharp from 'sharp';

export type Interpolation = 'nearest' | 'bilinear';

/** Decodes an encoded image (JPEG, PNG, WebP, …) to height × width × 3 sRGB bytes. Throws on corrupt input. */
export async function decodeResized(
  bytes: Uint8Array,
  height: number,
  width: number,
  interpolation: Interpolation = 'nearest',
): Promise<Uint8Array> {
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
