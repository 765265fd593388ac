// What an exported model needs at load and predict time, in Node and in the browser alike: the ImageResizing layer
// (raw pixels of any size in, the trained input size out), the labels.json format, and turning model outputs into
// class probabilities. Pure @tensorflow/tfjs: no Node modules, so apps/web bundles this very file.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';

export type ResizeInterpolation = 'nearest' | 'bilinear';

export interface ImageResizingArgs {
  height: number;
  width: number;
  /**
   * 'nearest' (default): what the trainer feeds (Keras' load_img / PIL NEAREST), the very pixels for photos under 4×
   * the input size (larger JPEGs the trainer decodes at reduced scale first, libjpeg's shrink-on-load, so it sees a
   * smoother image there). 'bilinear': smoother for big photos.
   */
  interpolation?: ResizeInterpolation;
  name?: string;
}

/**
 * Resizes a batch of images [n, h, w, c] of any size (any numeric dtype, cast to float32) to height × width with
 * half-pixel centres, the convention of PIL, Keras' Resizing and OpenCV: output pixel i samples source
 * (i + ½)·H/h − ½. For 'nearest' that is exactly the trainer's resize (source row ⌊(i + ½)·H/h⌋).
 *
 * Why not tf.layers.resizing: in tfjs-layers 4.22 it reports a rank-3 output shape (batch dropped, channels taken
 * from the width), so nothing can follow it in a model, and it passes `!cropToAspectRatio` as alignCorners.
 * Models using this layer load with tf.loadLayersModel once this module has been imported (it registers the class).
 */
export class ImageResizing extends tf.layers.Layer {
  static className = 'ImageResizing';
  readonly height: number;
  readonly width: number;
  readonly interpolation: ResizeInterpolation;

  constructor(args: ImageResizingArgs) {
    super({ name: args.name });
    if (!Number.isInteger(args.height) || !Number.isInteger(args.width) || args.height < 1 || args.width < 1) {
      throw new UserError(
        `ImageResizing: height and width must be positive integers, got ${args.height}×${args.width}`,
      );
    }
    const interpolation = args.interpolation ?? 'nearest';
    if (interpolation !== 'nearest' && interpolation !== 'bilinear') {
      throw new UserError(`ImageResizing: interpolation must be nearest or bilinear, got ${String(interpolation)}`);
    }
    this.height = args.height;
    this.width = args.width;
    this.interpolation = interpolation;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    if (shape.length !== 4)
      throw new Error(`ImageResizing: expected images [batch, height, width, channels], got rank ${shape.length}`);
    return [shape[0], this.height, this.width, shape[3]];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const images = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
      const x = images.dtype === 'float32' ? images : tf.cast(images, 'float32');
      if (x.shape[1] === this.height && x.shape[2] === this.width) return x.clone();
      const size: [number, number] = [this.height, this.width];
      return this.interpolation === 'nearest'
        ? tf.image.resizeNearestNeighbor(x, size, false, true)
        : tf.image.resizeBilinear(x, size, false, true);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), height: this.height, width: this.width, interpolation: this.interpolation };
  }
}
tf.serialization.registerClass(ImageResizing);

/** labels.json beside an exported model.json. */
export interface ExportedLabels {
  format: 'catdog-export/1';
  /** Class names in output order (sorted, as Keras' flow_from_directory). */
  classes: string[];
  /** 'sigmoid': one output, P(classes[1]). 'softmax': one probability per class. */
  activation: 'sigmoid' | 'softmax';
  /** The size the trained model sees: [height, width]. The exported model resizes to it itself. */
  inputSize: [number, number];
  interpolation: ResizeInterpolation;
  /** x' = x · scale + offset on pixel values 0..255, inside the exported model. */
  inputScaling: { scale: number; offset: number };
  /** The exported model's input: raw RGB pixel values 0..255 [batch, any height, any width, 3]. */
  input: 'rgb-pixels-0-255';
  /** Weight quantization (tfjs weights-manifest quantization), or null for float32. */
  quantization: null | 'float16' | 'uint8';
  /** Grad-CAM's default layer: the last convolutional feature map. */
  lastConvLayer: string | null;
  /** Where the model came from (a run directory or model folder), for people reading the file. */
  source?: string;
}

/** Checks a parsed labels.json; throws naming the first problem. */
export function checkLabels(json: unknown, where = 'labels.json'): ExportedLabels {
  const l = json as Partial<ExportedLabels> | null;
  const fail = (why: string): never => {
    throw new UserError(`${where}: ${why}`, { code: 'bad-weights' });
  };
  if (!l || typeof l !== 'object') return fail('not a JSON object');
  if (!Array.isArray(l.classes) || l.classes.length < 2 || l.classes.some((c) => typeof c !== 'string'))
    fail('classes must list at least two class names');
  if (l.activation !== 'sigmoid' && l.activation !== 'softmax')
    fail(`activation must be sigmoid or softmax, got ${JSON.stringify(l.activation)}`);
  if (l.activation === 'sigmoid' && l.classes!.length !== 2)
    fail(`a sigmoid model has two classes, labels.json lists ${l.classes!.length}`);
  if (!Array.isArray(l.inputSize) || l.inputSize.length !== 2) fail('inputSize must be [height, width]');
  return l as ExportedLabels;
}

/**
 * Class probabilities [n, classes] from model outputs [n, 1] (sigmoid: P(classes[1])) or [n, classes] (softmax).
 */
export function classProbabilities(output: tf.Tensor, activation: ExportedLabels['activation']): tf.Tensor2D {
  return tf.tidy(() => {
    const y = output.reshape([output.shape[0], -1]) as tf.Tensor2D;
    if (activation === 'softmax') return y;
    return tf.concat([tf.sub(1, y), y], 1) as tf.Tensor2D;
  });
}

export interface Classification {
  /** The most probable class. */
  className: string;
  classIndex: number;
  /** Probability of className. */
  probability: number;
  /** One probability per class, in labels.classes order. */
  probabilities: number[];
}

/** Reads a probabilities row into a Classification. */
export function toClassification(probabilities: ArrayLike<number>, classes: string[]): Classification {
  const p = Array.from(probabilities);
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
  return { className: classes[best]!, classIndex: best, probability: p[best]!, probabilities: p };
}

/**
 * Classifies one image with an exported model: `pixels` are raw RGB values 0..255 [h, w, 3] (e.g.
 * tf.browser.fromPixels, or a decoded photo in Node), any size and numeric dtype.
 */
export async function classifyPixels(
  model: tf.LayersModel,
  labels: ExportedLabels,
  pixels: tf.Tensor3D,
): Promise<Classification> {
  const probs = tf.tidy(() => classProbabilities(model.predict(pixels.expandDims(0)) as tf.Tensor, labels.activation));
  try {
    return toClassification(await probs.data(), labels.classes);
  } finally {
    probs.dispose();
  }
}

/** How a trained model's inputs were prepared: 'unit' = x/255 (the book, VGG16, convnet), 'symmetric' = x/127.5 − 1 (MobileNetV2). */
export type PixelScaling = 'unit' | 'symmetric' | { scale: number; offset: number };

export function resolvePixelScaling(scaling: PixelScaling): { scale: number; offset: number } {
  if (scaling === 'unit') return { scale: 1 / 255, offset: 0 };
  if (scaling === 'symmetric') return { scale: 1 / 127.5, offset: -1 };
  if (scaling && typeof scaling === 'object' && Number.isFinite(scaling.scale) && Number.isFinite(scaling.offset))
    return { scale: scaling.scale, offset: scaling.offset };
  throw new UserError(`input scaling must be unit, symmetric or { scale, offset }, got ${JSON.stringify(scaling)}`, {
    code: 'bad-config',
  });
}

export interface PreprocessingOptions {
  /** The trained model's input scaling. */
  inputScaling: PixelScaling;
  /** Default 'nearest', the trainer's resize. */
  interpolation?: ResizeInterpolation;
}

/**
 * `model` behind its own preprocessing: a model taking raw RGB pixel values 0..255 [batch, any h, any w, 3] that
 * resizes them to the trained input size and scales them as in training. Shares `model`'s layers and weights.
 */
export function withPreprocessing(model: tf.LayersModel, options: PreprocessingOptions): tf.LayersModel {
  const shape = model.inputs[0]!.shape;
  const [height, width, channels] = [shape[1], shape[2], shape[3]];
  if (
    model.inputs.length !== 1 ||
    shape.length !== 4 ||
    typeof height !== 'number' ||
    typeof width !== 'number' ||
    channels !== 3
  ) {
    throw new UserError(
      `${model.name}: expected one image input [batch, height, width, 3] of fixed size, got [${shape.join(', ')}]`,
      { code: 'bad-weights' },
    );
  }
  const { scale, offset } = resolvePixelScaling(options.inputScaling);
  const pixels = tf.input({ shape: [null, null, 3], name: 'pixels' });
  const resized = new ImageResizing({ height, width, interpolation: options.interpolation, name: 'resize' }).apply(
    pixels,
  ) as tf.SymbolicTensor;
  const scaled = tf.layers.rescaling({ scale, offset, name: 'rescale' }).apply(resized) as tf.SymbolicTensor;
  const output = model.apply(scaled) as tf.SymbolicTensor;
  return tf.model({ inputs: pixels, outputs: output, name: `${model.name}_on_pixels` });
}

/** 'sigmoid' or 'softmax': the activation of the model's output layer (nested models looked into). */
export function outputActivation(model: tf.LayersModel): 'sigmoid' | 'softmax' {
  let last: tf.layers.Layer = model;
  while (last instanceof tf.LayersModel) last = last.layers[last.layers.length - 1]!;
  const name = (last as unknown as { activation?: { getClassName(): string } | null }).activation?.getClassName();
  if (name !== 'sigmoid' && name !== 'softmax') {
    throw new UserError(
      `${model.name}: the output layer '${last.name}' has activation ${name ?? 'none'}, expected a sigmoid or softmax classifier`,
      { code: 'bad-weights' },
    );
  }
  return name;
}
