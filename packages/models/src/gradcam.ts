// Grad-CAM (Selvaraju et al. 2017; Deep Learning with Python, 5.4.3): which parts of the photo made the model
// choose a class. The last convolutional feature map A (h × w × K) is weighted by the gradient of the class score
// averaged over its positions, α_k = mean_ij ∂y/∂A_ij,k; the heatmap is relu(Σ_k α_k A_k) / max.
// Pure @tensorflow/tfjs (no Node modules): apps/web runs this very file in the browser.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { classProbabilities } from './image-input.js';

type Layer = tf.layers.Layer;
type Call = (inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>) => tf.Tensor | tf.Tensor[];

/** Every non-container layer of a model, nested models expanded, in order (as layers.ts' leafLayers, no Node deps). */
function leaves(model: tf.LayersModel): Layer[] {
  return model.layers.flatMap((l) => (l instanceof tf.LayersModel ? leaves(l) : [l]));
}

/** Layers that keep the spatial feature map's meaning (looked through when picking the last conv layer). */
const SPATIAL_PASS_THROUGH = new Set([
  'MaxPooling2D',
  'AveragePooling2D',
  'Dropout',
  'SpatialDropout2D',
  'ZeroPadding2D',
  'Cropping2D',
]);
/** Layers that turn the feature map into a vector: the last conv layer is just before the first of them. */
const FLATTENING = new Set([
  'Flatten',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'GlobalAveragePooling1D',
  'Reshape',
]);

/**
 * Grad-CAM's default layer: the last layer with a 4-D output before the classifier flattens it, looking through
 * pooling and dropout. The book's convnet: conv2d_4; VGG16: block5_conv3; MobileNetV2: out_relu.
 */
export function lastConvLayer(model: tf.LayersModel): Layer {
  const layers = leaves(model);
  const flatten = layers.findIndex((l) => FLATTENING.has(l.getClassName()));
  if (flatten <= 0)
    throw new UserError(
      `${model.name}: no flattening layer (Flatten, GlobalAveragePooling2D) found, so no last convolutional feature map for Grad-CAM`,
    );
  for (let i = flatten - 1; i >= 0; i--) {
    const l = layers[i]!;
    if (SPATIAL_PASS_THROUGH.has(l.getClassName())) continue;
    if ((l.outputShape as tf.Shape).length === 4) return l;
    break;
  }
  throw new UserError(`${model.name}: no 4-D feature map before '${layers[flatten]!.name}' for Grad-CAM`);
}

function findLayer(model: tf.LayersModel, name: string): Layer {
  const layer = leaves(model).find((l) => l.name === name);
  if (!layer) throw new UserError(`${model.name}: no layer named '${name}' (Grad-CAM layer)`);
  return layer;
}

export interface GradCamOptions {
  /** The feature map to weigh. Default: lastConvLayer(model). */
  layer?: string;
  /** The class to explain. Default: the predicted class. */
  classIndex?: number;
  /**
   * 'logit' (default, as the paper: the score before sigmoid/softmax, so a confident prediction still has
   * gradients) or 'probability' (as the book's code, which differentiates the softmax output).
   */
  score?: 'logit' | 'probability';
}

export interface GradCamResult {
  /** heatmap[i * width + j] in [0, 1], at the feature map's resolution. All zeros when nothing supports the class. */
  heatmap: Float32Array;
  height: number;
  width: number;
  /** The class explained, and the model's probabilities (classes in output order; sigmoid models: [1 − p, p]). */
  classIndex: number;
  probabilities: number[];
  layer: string;
}

interface DenseLike extends Layer {
  activation: { getClassName(): string; apply(x: tf.Tensor): tf.Tensor } | null;
}

/** Identity activation standing in for the output layer's sigmoid/softmax while the logit is differentiated. */
const LINEAR = { getClassName: () => 'linear', apply: (x: tf.Tensor) => x };

/**
 * Grad-CAM of one image. `input` is what the model takes, with or without the batch axis of 1 (for an exported
 * model: raw pixels of any size). Works through nested models (a base inside a Sequential) and residual graphs:
 * the chosen layer's output A is observed during one forward pass, and ∂score/∂A is the gradient with respect to
 * a zero tensor added to it.
 */
export function gradCam(model: tf.LayersModel, input: tf.Tensor, options: GradCamOptions = {}): GradCamResult {
  const x = input.rank === 3 ? input.expandDims(0) : input;
  try {
    if (x.rank !== 4 || x.shape[0] !== 1)
      throw new UserError(`Grad-CAM takes one image [h, w, c] or [1, h, w, c], got shape [${input.shape.join(', ')}]`);
    return gradCamBatch(model, x as tf.Tensor4D, options)[0]!;
  } finally {
    if (x !== input) x.dispose();
  }
}

/**
 * Grad-CAM of each image of a batch [n, h, w, c], in one forward and one backward pass: in inference mode the
 * images do not interact, so the gradient of the summed scores with respect to A is, image by image, the gradient
 * of that image's own score. Many photos go far faster this way than one by one (per-layer overheads dominate a
 * batch of 1). `classIndex`, when given, is explained for every image; otherwise each image's predicted class.
 */
export function gradCamBatch(
  model: tf.LayersModel,
  images: tf.Tensor4D,
  options: GradCamOptions = {},
): GradCamResult[] {
  const target = options.layer ? findLayer(model, options.layer) : lastConvLayer(model);
  const all = leaves(model);
  const output = all[all.length - 1] as DenseLike;
  const activation = output.activation?.getClassName();
  if (activation !== 'sigmoid' && activation !== 'softmax') {
    throw new UserError(
      `${model.name}: the output layer '${output.name}' has activation ${activation ?? 'none'}; Grad-CAM needs a sigmoid or softmax classifier`,
    );
  }
  const units = activation === 'sigmoid' ? 2 : (model.outputs[0]!.shape[model.outputs[0]!.shape.length - 1] as number);
  if (
    options.classIndex !== undefined &&
    !(Number.isInteger(options.classIndex) && options.classIndex >= 0 && options.classIndex < units)
  ) {
    throw new UserError(`Grad-CAM: class index must be an integer in [0, ${units - 1}], got ${options.classIndex}`);
  }
  if (images.rank !== 4 || images.shape[0] < 1)
    throw new UserError(`Grad-CAM takes a batch of images [n, h, w, c], got shape [${images.shape.join(', ')}]`);
  const n = images.shape[0];
  const shape = target.outputShape as tf.Shape;
  let featureShape = shape.slice(1).every((d) => typeof d === 'number') ? [n, ...(shape.slice(1) as number[])] : null;

  const originalCall = target.call;
  const originalActivation = output.activation;
  let seen: tf.Tensor | null = null;
  let delta: tf.Tensor | null = null;
  (target as { call: Call }).call = (inputs, kwargs) => {
    const a = originalCall.call(target, inputs, kwargs) as tf.Tensor;
    if (!delta) {
      featureShape = a.shape; // the shape-finding pass
      return a;
    }
    seen = tf.keep(a);
    return tf.add(a, delta);
  };
  try {
    // When the layer's output size depends on the input size, one forward pass learns it.
    if (!featureShape) tf.tidy(() => void model.apply(images, { training: false }));
    const logitScore = (options.score ?? 'logit') === 'logit';
    if (logitScore) output.activation = LINEAR;
    const zero = tf.zeros(featureShape!);
    let logits: tf.Tensor | null = null;
    let classes: number[] = [];
    const scoreOf = (d: tf.Tensor): tf.Scalar => {
      delta = d;
      const y = model.apply(images, { training: false }) as tf.Tensor;
      logits = tf.keep(y.clone());
      if (activation === 'sigmoid') {
        // One unit: classes [0, 1] = [1 − p, p]. Class 0's score is −logit (or 1 − p): the same gradient with the
        // opposite sign, applied per image below once the predictions are known.
        return y.sum() as tf.Scalar;
      }
      const rows = y.reshape([n, units]);
      classes =
        options.classIndex !== undefined
          ? new Array<number>(n).fill(options.classIndex)
          : Array.from(rows.argMax(1).dataSync());
      // A one-hot product rather than gather: gather's gradient needs UnsortedSegmentSum, which tfjs' WASM backend lacks.
      return tf.sum(tf.mul(rows, tf.oneHot(tf.tensor1d(classes, 'int32'), units))) as tf.Scalar;
    };
    const { value, grad } = tf.valueAndGrad(scoreOf)(zero);
    value.dispose();
    const probs = tf.tidy(() => {
      const l = logits!.reshape([n, -1]);
      const y = logitScore ? (activation === 'sigmoid' ? tf.sigmoid(l) : tf.softmax(l)) : l;
      return classProbabilities(y, activation);
    });
    const probabilities = probs.arraySync() as number[][];
    probs.dispose();
    if (activation === 'sigmoid') classes = probabilities.map((p) => options.classIndex ?? (p[1]! >= 0.5 ? 1 : 0));
    const signs = tf.tensor(
      classes.map((c) => (activation === 'sigmoid' && c === 0 ? -1 : 1)),
      [n, 1, 1, 1],
    );
    const a = seen as unknown as tf.Tensor4D;
    const maps = tf.tidy(() => {
      const weights = tf.mul(tf.mean(grad as tf.Tensor4D, [1, 2], true), signs); // α_k per image, [n, 1, 1, K]
      const cams = tf.relu(tf.sum(tf.mul(a, weights), -1)) as tf.Tensor3D; // [n, h, w]
      const max = tf.max(cams, [1, 2], true);
      return tf.where(tf.greater(max, 0), tf.div(cams, tf.maximum(max, 1e-30)), tf.zerosLike(cams)) as tf.Tensor3D;
    });
    const [, height, width] = maps.shape;
    const heatmaps = maps.dataSync() as Float32Array;
    tf.dispose([maps, grad, zero, a, logits!, signs]);
    const size = height * width;
    return classes.map((classIndex, i) => ({
      heatmap: heatmaps.slice(i * size, (i + 1) * size),
      height,
      width,
      classIndex,
      probabilities: probabilities[i]!,
      layer: target.name,
    }));
  } finally {
    (target as { call: Call }).call = originalCall;
    output.activation = originalActivation;
  }
}

/**
 * The 'jet' colour map (blue → cyan → yellow → red), as the book's cv2.applyColorMap(…, COLORMAP_JET):
 * RGB bytes for v in [0, 1].
 */
export function jet(v: number): [number, number, number] {
  const t = Math.min(1, Math.max(0, v));
  const channel = (c: number) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - c))));
  return [channel(3), channel(2), channel(1)];
}

/**
 * The heatmap upsampled (bilinear, half-pixel centres) to height × width and coloured with `jet`, as RGBA bytes
 * whose alpha is `opacity` (the book superimposes the heatmap at 0.4). Ready for a canvas ImageData or sharp.
 */
export function heatmapRgba(
  cam: Pick<GradCamResult, 'heatmap' | 'height' | 'width'>,
  height: number,
  width: number,
  opacity = 0.4,
): Uint8ClampedArray {
  const resized = tf.tidy(() => {
    const m = tf.tensor4d(cam.heatmap, [1, cam.height, cam.width, 1]);
    return tf.image.resizeBilinear(m, [height, width], false, true);
  });
  // Read outside tidy, which walks every element of a typed array it is handed back (a Set entry per pixel).
  const values = resized.dataSync();
  resized.dispose();
  const out = new Uint8ClampedArray(height * width * 4);
  const alpha = Math.round(255 * Math.min(1, Math.max(0, opacity)));
  for (let i = 0; i < values.length; i++) {
    const [r, g, b] = jet(values[i]!);
    out[4 * i] = r;
    out[4 * i + 1] = g;
    out[4 * i + 2] = b;
    out[4 * i + 3] = alpha;
  }
  return out;
}
