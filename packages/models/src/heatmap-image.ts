// Grad-CAM heatmaps over photos as image files (sharp), for trainer:explain and the run report.
import { basename } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation } from '@catdog/storage';
import { decodePhoto } from './export.js';
import { gradCam, gradCamBatch, heatmapRgba, type GradCamOptions, type GradCamResult } from './gradcam.js';
import { ImageResizing } from './image-input.js';

/** Photos explained per batched Grad-CAM pass (explainPhotos): per-layer overheads amortised, memory bounded. */
export const EXPLAIN_BATCH = 16;

export interface OverlayOptions {
  /** Default 'jpeg'. */
  format?: 'jpeg' | 'png';
  /** Heatmap opacity over the photo. Default 0.4, the book's factor. */
  opacity?: number;
  /** Longest side of the written image (the photo is scaled down, never up). Default: the photo's size. */
  maxSize?: number;
  /** JPEG quality. Default 85. */
  quality?: number;
}

/** The photo with the Grad-CAM heatmap (jet colours, upsampled bilinearly) blended over it, encoded as JPEG or PNG. */
export async function overlayHeatmap(
  photo: string | Uint8Array,
  cam: Pick<GradCamResult, 'heatmap' | 'height' | 'width'>,
  options: OverlayOptions = {},
): Promise<Buffer> {
  let base = sharp(photo).removeAlpha().toColourspace('srgb');
  let meta: sharp.Metadata;
  try {
    meta = await sharp(photo).metadata();
  } catch (err) {
    throw new UserError(`${typeof photo === 'string' ? photo : 'image'}: cannot decode (${(err as Error).message})`, {
      code: 'bad-source',
      cause: err,
    });
  }
  let width = meta.width!;
  let height = meta.height!;
  if (options.maxSize && Math.max(width, height) > options.maxSize) {
    const f = options.maxSize / Math.max(width, height);
    width = Math.max(1, Math.round(width * f));
    height = Math.max(1, Math.round(height * f));
    base = base.resize(width, height, { fit: 'fill' });
  }
  const rgb = await base.raw().toBuffer();
  const overlay = heatmapRgba(cam, height, width, options.opacity ?? 0.4);
  const out = Buffer.alloc(width * height * 3);
  for (let i = 0, j = 0; i < out.length; i += 3, j += 4) {
    const a = overlay[j + 3]! / 255;
    for (let c = 0; c < 3; c++) out[i + c] = Math.round((1 - a) * rgb[i + c]! + a * overlay[j + c]!);
  }
  const image = sharp(out, { raw: { width, height, channels: 3 } });
  return options.format === 'png' ? image.png().toBuffer() : image.jpeg({ quality: options.quality ?? 85 }).toBuffer();
}

export interface ExplainedPhoto extends GradCamResult {
  /** The overlay, encoded as asked. */
  image: Buffer;
}

/**
 * Grad-CAM of a photo file or bytes through a model that takes raw pixels (an exported model, or
 * withPreprocessing(trainedModel, …)), and the overlay image.
 */
export async function explainPhoto(
  model: tf.LayersModel,
  photo: string | Uint8Array,
  options: GradCamOptions & OverlayOptions = {},
): Promise<ExplainedPhoto> {
  const pixels = await decodePhoto(photo);
  let cam: GradCamResult;
  try {
    cam = gradCam(model, pixels, options);
  } finally {
    pixels.dispose();
  }
  return { ...cam, image: await overlayHeatmap(photo, cam, options) };
}

/**
 * explainPhoto for many photos, EXPLAIN_BATCH at a time in one batched Grad-CAM pass (gradCamBatch): far faster
 * than one by one. Each photo is first resized by the model's own ImageResizing layer (the op the model would
 * run; the batch then passes it unchanged), so every heatmap is the one explainPhoto gives. A photo that cannot
 * be decoded gets its UserError (code 'bad-source') in its place; the others go on. A model without an
 * ImageResizing layer (fixed-size input) explains photo by photo.
 */
export async function explainPhotos(
  model: tf.LayersModel,
  photos: (string | Uint8Array)[],
  options: GradCamOptions & OverlayOptions = {},
): Promise<(ExplainedPhoto | UserError)[]> {
  const resize = model.layers.find((l): l is ImageResizing => l instanceof ImageResizing);
  const out: (ExplainedPhoto | UserError)[] = [];
  const badSource = (err: unknown): UserError => {
    if (err instanceof UserError && err.code === 'bad-source') return err;
    throw err;
  };
  for (let from = 0; from < photos.length; from += EXPLAIN_BATCH) {
    const chunk = photos.slice(from, from + EXPLAIN_BATCH);
    if (!resize) {
      for (const photo of chunk) out.push(await explainPhoto(model, photo, options).catch(badSource));
      continue;
    }
    const decoded = await Promise.all(chunk.map((photo) => decodePhoto(photo).catch(badSource)));
    const good = decoded.flatMap((d, i) => (d instanceof UserError ? [] : [i]));
    let cams: GradCamResult[] = [];
    if (good.length) {
      const batch = tf.tidy(() =>
        tf.concat(good.map((i) => resize.call((decoded[i] as tf.Tensor3D).expandDims(0)))),
      ) as tf.Tensor4D;
      try {
        cams = gradCamBatch(model, batch, options);
      } finally {
        batch.dispose();
        tf.dispose(decoded.filter((d): d is tf.Tensor3D => !(d instanceof UserError)));
      }
    }
    const explained = await Promise.all(
      good.map(async (i, k) => ({ ...cams[k]!, image: await overlayHeatmap(chunk[i]!, cams[k]!, options) })),
    );
    decoded.forEach((d, i) => out.push(d instanceof UserError ? d : explained[good.indexOf(i)]!));
  }
  return out;
}

export interface WriteHeatmapsOptions extends GradCamOptions, OverlayOptions {
  /** Output folder (local, file:// or s3://). Files are named `<photo name>.gradcam.jpg` (or .png). */
  out: string;
  /** Class names in output order, for the returned rows. */
  classes: string[];
}

export interface WrittenHeatmap {
  photo: string;
  /** The file written in `out`. */
  file: string;
  /** The class explained (the predicted one unless classIndex was given) and the model's probability of it. */
  className: string;
  probability: number;
}

/**
 * Grad-CAM overlays for many photos (trainer:explain): one image file per photo in `out`. A photo that cannot be
 * decoded is reported in `skipped` with the reason and the others go on.
 */
export async function writeHeatmaps(
  model: tf.LayersModel,
  photos: string[],
  options: WriteHeatmapsOptions,
): Promise<{ written: WrittenHeatmap[]; skipped: { photo: string; reason: string }[] }> {
  const storage = openStorage(resolveLocation(options.out));
  const written: WrittenHeatmap[] = [];
  const skipped: { photo: string; reason: string }[] = [];
  const used = new Set<string>();
  const extension = options.format === 'png' ? 'png' : 'jpg';
  for (let from = 0; from < photos.length; from += EXPLAIN_BATCH) {
    const chunk = photos.slice(from, from + EXPLAIN_BATCH);
    const results = await explainPhotos(model, chunk, options);
    for (const [i, explained] of results.entries()) {
      const photo = chunk[i]!;
      if (explained instanceof UserError) {
        skipped.push({ photo, reason: explained.message });
        continue;
      }
      const stem = basename(photo).replace(/\.[^.]+$/, '');
      let file = `${stem}.gradcam.${extension}`;
      for (let n = 2; used.has(file); n++) file = `${stem}-${n}.gradcam.${extension}`;
      used.add(file);
      await storage.write(file, explained.image);
      const className = options.classes[explained.classIndex] ?? String(explained.classIndex);
      written.push({ photo, file, className, probability: explained.probabilities[explained.classIndex]! });
    }
  }
  return { written, skipped };
}
