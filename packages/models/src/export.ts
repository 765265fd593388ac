// Export: a trained model as a tfjs layers model that takes raw RGB pixels of any size (resizing and input scaling
// inside it), plus labels.json, optionally with float16 or uint8 weights in tfjs' own weights-manifest quantization
// (what tf.loadLayersModel and tf.loadGraphModel decode natively, see tfjs-core io/io_utils decodeWeights).
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { openStorage, resolveLocation } from '@catdog/storage';
import { loadLayersModelFrom } from './io.js';
import {
  checkLabels,
  classifyPixels,
  outputActivation,
  resolvePixelScaling,
  withPreprocessing,
  type Classification,
  type ExportedLabels,
  type PixelScaling,
  type ResizeInterpolation,
} from './image-input.js';
import { lastConvLayer } from './gradcam.js';

export type Quantization = 'float16' | 'uint8';
export const QUANTIZATIONS: readonly Quantization[] = ['float16', 'uint8'];

export interface ExportOptions {
  /** The trained model, or where to load it from (a model folder / model.json: local, file:// or s3://). */
  model: tf.LayersModel | string;
  /** Output folder (local, file:// or s3://): model.json, weights-<content hash>.bin, labels.json. */
  out: string;
  /** Class names in output order (the run's dataset classes; sigmoid models: [negative, positive], e.g. ['cat', 'dog']). */
  classes: string[];
  /** The trained model's input scaling: 'unit' (x/255) or 'symmetric' (x/127.5 − 1), as in the run's config. */
  inputScaling: PixelScaling;
  /** Weights as float32 (default), 'float16' (about half the size) or 'uint8' (about a quarter): kernels only, see isKernel. */
  quantize?: Quantization | null;
  /** Default 'nearest': the trainer's resize (Keras' load_img), so the exported model sees what training saw. */
  interpolation?: ResizeInterpolation;
  /** Recorded in labels.json. */
  source?: string;
}

export interface ExportResult {
  out: string;
  labels: ExportedLabels;
  /** Bytes per written file (model.json, weights-<hash>.bin, labels.json). */
  files: Record<string, number>;
  weightBytes: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Quantization, in the layout tfjs-core's decodeWeights reads: each entry keeps dtype 'float32' and gains
// quantization { dtype: 'float16' } (IEEE half bits, 2 bytes a value) or { dtype: 'uint8', scale, min }
// (value = q · scale + min, 1 byte a value), as tensorflowjs_converter --quantize_float16 / --quantize_uint8 write.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 half-precision bits of v, rounded to nearest even (overflow → ±Infinity). */
export function float16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++; // a carry into the exponent is still correct
  return sign | half;
}

/**
 * tensorflowjs' affine uint8 range: scale = (max − min)/255 with min nudged so that 0 is exactly representable
 * (zero padding and ReLU zeros stay zeros).
 */
export function uint8Range(min: number, max: number): { min: number; scale: number } {
  if (!(max > min)) return { min, scale: 1 };
  const scale = (max - min) / 255;
  if (min <= 0 && max >= 0) return { min: -Math.round(-min / scale) * scale, scale };
  return { min, scale };
}

/**
 * Which weights are quantized: convolution and dense kernels, 97–99 % of the bytes. Biases and BatchNorm
 * statistics stay float32: they are tiny, and BatchNorm variances below float16's normal range (6e-5) or a
 * per-tensor uint8 step would lose the precision the normalisation divides by.
 */
export function isKernel(name: string): boolean {
  return /kernel$/.test(name);
}

/**
 * Kernels a uint8 export keeps as float16: depthwise kernels. Their channels' ranges differ by orders of magnitude
 * (MobileNetV2), so one (scale, min) per tensor flattens the small ones to a few steps: on a MobileNetV2 head the
 * uint8 export moved probabilities by up to 0.55 and lost 10 points of accuracy, with them at float16 0.2 and none,
 * for 2 % more bytes (they hold about 3 % of MobileNetV2's weights).
 */
export function keepsFloat16InUint8(name: string): boolean {
  return /depthwise_kernel$/.test(name);
}

/**
 * Re-encodes float32 weights (specs + concatenated data, as a tfjs save handler receives them) with tfjs
 * weights-manifest quantization: the kernels (isKernel) as float16, or as uint8 with one (scale, min) per tensor
 * (depthwise kernels as float16, keepsFloat16InUint8). The manifest quantizes entry by entry, so tfjs reads both.
 */
export function quantizeWeights(
  specs: tf.io.WeightsManifestEntry[],
  data: ArrayBuffer,
  dtype: Quantization,
): { specs: tf.io.WeightsManifestEntry[]; data: ArrayBuffer } {
  const parts: Uint8Array[] = [];
  const out: tf.io.WeightsManifestEntry[] = [];
  let offset = 0;
  for (const spec of specs) {
    if ('quantization' in spec && spec.quantization)
      throw new UserError(`weight ${spec.name} is already quantized`, { code: 'bad-weights' });
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const bytes = n * 4; // float32 and int32 alike
    const raw = new Uint8Array(data, offset, bytes);
    offset += bytes;
    const quantize = spec.dtype === 'float32' && isKernel(spec.name);
    if (!quantize) {
      parts.push(raw.slice());
      out.push({ ...spec });
      continue;
    }
    const values = new Float32Array(data.slice(offset - bytes, offset));
    if (dtype === 'float16' || keepsFloat16InUint8(spec.name)) {
      const halves = new Uint16Array(n);
      for (let i = 0; i < n; i++) halves[i] = float16Bits(values[i]!);
      parts.push(new Uint8Array(halves.buffer));
      out.push({ ...spec, quantization: { dtype: 'float16' } });
    } else {
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        if (!Number.isFinite(v))
          throw new UserError(`weight ${spec.name} holds ${v}; cannot quantize a model with non-finite weights`, {
            code: 'bad-weights',
          });
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      if (n === 0) lo = hi = 0;
      const { min, scale } = uint8Range(lo, hi);
      const q = new Uint8Array(n);
      for (let i = 0; i < n; i++) q[i] = Math.min(255, Math.max(0, Math.round((values[i]! - min) / scale)));
      parts.push(q);
      out.push({ ...spec, quantization: { dtype: 'uint8', scale, min } });
    }
  }
  if (offset !== data.byteLength)
    throw new UserError(`weight data holds ${data.byteLength} bytes, the specs describe ${offset}`, {
      code: 'bad-weights',
    });
  const total = parts.reduce((s, p) => s + p.byteLength, 0);
  const joined = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.byteLength;
  }
  return { specs: out, data: joined.buffer };
}

// ---------------------------------------------------------------------------------------------------------------

/**
 * Writes `<out>/model.json`, `<out>/weights-<content hash>.bin` and `<out>/labels.json`: the model behind its own preprocessing
 * (ImageResizing to the trained size, then Rescaling), loadable with tf.loadLayersModel once image-input.ts is
 * imported (it registers ImageResizing). model.json is written last, so a reader never sees it without its weights.
 */
export async function exportModel(options: ExportOptions): Promise<ExportResult> {
  const { classes } = options;
  if (!Array.isArray(classes) || classes.length < 2 || new Set(classes).size !== classes.length) {
    throw new UserError(`export: classes must be two or more distinct names, got ${JSON.stringify(classes)}`, {
      code: 'bad-config',
    });
  }
  if (options.quantize != null && !QUANTIZATIONS.includes(options.quantize)) {
    throw new UserError(`export: quantize must be float16 or uint8, got ${JSON.stringify(options.quantize)}`, {
      code: 'usage',
    });
  }
  const scaling = resolvePixelScaling(options.inputScaling);
  const trained = typeof options.model === 'string' ? await loadLayersModelFrom(options.model) : options.model;
  try {
    const activation = outputActivation(trained);
    const units = trained.outputs[0]!.shape[trained.outputs[0]!.shape.length - 1];
    if (activation === 'sigmoid' && (units !== 1 || classes.length !== 2)) {
      throw new UserError(
        `export: the model has ${units} sigmoid output${units === 1 ? '' : 's'} (two classes) but ${classes.length} classes were given (${classes.join(', ')})`,
        { code: 'bad-config' },
      );
    }
    if (activation === 'softmax' && units !== classes.length) {
      throw new UserError(
        `export: the model has ${units} ${activation} output${units === 1 ? '' : 's'} but ${classes.length} classes were given (${classes.join(', ')})`,
        { code: 'bad-config' },
      );
    }
    const exported = withPreprocessing(trained, { inputScaling: scaling, interpolation: options.interpolation });
    const shape = trained.inputs[0]!.shape as number[];
    let lastConv: string | null = null;
    try {
      lastConv = lastConvLayer(exported).name;
    } catch {
      lastConv = null; // a dense-only model: still exportable, no Grad-CAM default
    }
    const labels: ExportedLabels = {
      format: 'catdog-export/1',
      classes: [...classes],
      activation,
      inputSize: [shape[1]!, shape[2]!],
      interpolation: options.interpolation ?? 'nearest',
      inputScaling: scaling,
      input: 'rgb-pixels-0-255',
      quantization: options.quantize ?? null,
      lastConvLayer: lastConv,
      ...(options.source ? { source: options.source } : {}),
    };
    checkLabels(labels);
    const storage = openStorage(resolveLocation(options.out));
    const files: Record<string, number> = {};
    let weightBytes = 0;
    await exported.save(
      tf.io.withSaveHandler(async (artifacts) => {
        const raw = artifacts.weightData;
        let data = raw == null ? new ArrayBuffer(0) : Array.isArray(raw) ? tf.io.concatenateArrayBuffers(raw) : raw;
        let specs = artifacts.weightSpecs ?? [];
        if (options.quantize) ({ specs, data } = quantizeWeights(specs, data, options.quantize));
        const weights = new Uint8Array(data);
        // Named by content: a model.json being replaced keeps pointing at its own weights until the new one lands
        // (and browsers may cache weight files forever).
        const weightsFile = `weights-${createHash('sha256').update(weights).digest('hex').slice(0, 16)}.bin`;
        const labelsJson = JSON.stringify(labels, null, 2);
        const modelJson = JSON.stringify({
          format: 'layers-model',
          generatedBy: artifacts.generatedBy,
          convertedBy: 'catdog export',
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: [weightsFile], weights: specs }],
        });
        await storage.write(weightsFile, weights);
        await storage.write('labels.json', labelsJson);
        await storage.write('model.json', modelJson);
        // Weights of an earlier export into this folder are no longer referenced.
        for await (const entry of storage.list('weights-')) {
          if (entry.path !== weightsFile && /^weights-[0-9a-f]{16}\.bin$/.test(entry.path))
            await storage.delete(entry.path);
        }
        weightBytes = weights.byteLength;
        files[weightsFile] = weights.byteLength;
        files['labels.json'] = Buffer.byteLength(labelsJson);
        files['model.json'] = Buffer.byteLength(modelJson);
        return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
      }),
    );
    return { out: storage.urlOf(''), labels, files, weightBytes };
  } finally {
    if (typeof options.model === 'string') trained.dispose();
  }
}

/** An exported model and its labels, from a folder written by exportModel (local, file:// or s3://). */
export async function loadExportedModel(dir: string): Promise<{ model: tf.LayersModel; labels: ExportedLabels }> {
  const storage = openStorage(resolveLocation(dir));
  let labelsText: string;
  try {
    labelsText = (await storage.read('labels.json')).toString('utf8');
  } catch (err) {
    throw new UserError(
      `${storage.urlOf('labels.json')}: not an exported model folder (labels.json missing or unreadable)`,
      { code: 'bad-weights', cause: err },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(labelsText);
  } catch (err) {
    throw new UserError(`${storage.urlOf('labels.json')}: not valid JSON (${(err as Error).message})`, {
      code: 'bad-weights',
      cause: err,
    });
  }
  const labels = checkLabels(parsed, storage.urlOf('labels.json'));
  const model = await loadLayersModelFrom(dir);
  return { model, labels };
}

/** A photo's RGB pixels (0..255, int32 [h, w, 3], full size, no resize) decoded by sharp: what an exported model takes. */
export async function decodePhoto(image: string | Uint8Array): Promise<tf.Tensor3D> {
  let decoded: { data: Buffer; info: sharp.OutputInfo };
  try {
    decoded = await sharp(image).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    const what = typeof image === 'string' ? image : 'image';
    throw new UserError(`${what}: cannot decode (${(err as Error).message})`, { code: 'bad-source', cause: err });
  }
  const { data, info } = decoded;
  return tf.tensor3d(new Int32Array(Uint8Array.from(data)), [info.height, info.width, 3], 'int32');
}

/** Classifies a photo file or encoded bytes with an exported model. */
export async function classifyPhoto(
  model: tf.LayersModel,
  labels: ExportedLabels,
  image: string | Uint8Array,
): Promise<Classification> {
  const pixels = await decodePhoto(image);
  try {
    return await classifyPixels(model, labels, pixels);
  } finally {
    pixels.dispose();
  }
}

export interface LabelledPhoto {
  /** A file path or encoded bytes. */
  image: string | Uint8Array;
  /** Index into the classes. */
  classIndex: number;
}

export interface ExportVariantReport {
  quantization: Quantization | null;
  out: string;
  weightBytes: number;
  /** Fraction of `photos` classified correctly by the exported model reloaded from `out`. */
  accuracy: number;
  /** Largest difference of a class probability from the first variant's (float32 by default), over all photos. */
  maxProbabilityDiff: number;
}

/**
 * Exports the model once per variant into `<out>/<float32|float16|uint8>/`, reloads each and classifies `photos`:
 * size and accuracy of every variant side by side (for BENCHMARKS.md and trainer:export's summary).
 */
export async function compareExportVariants(
  options: Omit<ExportOptions, 'quantize' | 'out'> & {
    out: string;
    photos: LabelledPhoto[];
    variants?: (Quantization | null)[];
  },
): Promise<ExportVariantReport[]> {
  const variants = options.variants ?? [null, 'float16', 'uint8'];
  if (options.photos.length === 0)
    throw new UserError('compareExportVariants: no photos to measure accuracy on', { code: 'usage' });
  // Every variant is loaded at once and each photo decoded once (a test split of full-size photos would not fit
  // in memory as tensors).
  const loaded: {
    quantize: Quantization | null;
    result: ExportResult;
    model: tf.LayersModel;
    labels: ExportedLabels;
    correct: number;
    maxDiff: number;
  }[] = [];
  try {
    for (const quantize of variants) {
      const out = `${options.out.replace(/\/+$/, '')}/${quantize ?? 'float32'}`;
      const result = await exportModel({ ...options, out, quantize });
      loaded.push({ quantize, result, ...(await loadExportedModel(out)), correct: 0, maxDiff: 0 });
    }
    for (const photo of options.photos) {
      const pixels = await decodePhoto(photo.image);
      try {
        let reference: number[] | null = null;
        for (const v of loaded) {
          const c = await classifyPixels(v.model, v.labels, pixels);
          if (c.classIndex === photo.classIndex) v.correct++;
          reference ??= c.probabilities;
          for (const [j, p] of c.probabilities.entries()) v.maxDiff = Math.max(v.maxDiff, Math.abs(p - reference[j]!));
        }
      } finally {
        pixels.dispose();
      }
    }
    return loaded.map((v) => ({
      quantization: v.quantize,
      out: v.result.out,
      weightBytes: v.result.weightBytes,
      accuracy: v.correct / options.photos.length,
      maxProbabilityDiff: v.maxDiff,
    }));
  } finally {
    for (const v of loaded) v.model.dispose();
  }
}
