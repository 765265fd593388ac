// The registry of conv bases: how each is built or loaded, the input scaling it expects and where fine-tuning
// unfreezes it. Everything that names a base (the trainer, evaluate, the feature cache) reads it from here.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import type { DownloadProgress } from './download.js';
import { applyKerasBatchNormSemantics } from './layers.js';
import { mobilenetV2Folder, loadMobileNetV2Base, type MobileNetV2Alpha } from './mobilenet.js';
import { buildVgg16Base } from './vgg16.js';

/** How pixels (0..255) are scaled before entering a model. */
export type InputScalingName = 'unit' | 'symmetric';

/** x' = x · scale + offset, applied to RGB pixels in [0, 255]. */
export interface InputScaling {
  scale: number;
  offset: number;
  description: string;
}

export interface InputScalingSpec extends InputScaling {
  name: InputScalingName;
  /** The formula as written in run configs and logs. */
  formula: string;
  /** Scales a float tensor of pixels in [0, 255]. */
  apply(x: tf.Tensor): tf.Tensor;
}

/**
 * The two input scalings. 'unit' is the book's ImageDataGenerator(rescale=1./255), used for the convnet and for
 * VGG16 (the book feeds it that way, although Keras' vgg16.preprocess_input would subtract the caffe BGR means).
 * 'symmetric' is the [-1, 1] range MobileNetV2's ImageNet weights were trained with.
 */
export const INPUT_SCALINGS: Record<InputScalingName, InputScalingSpec> = {
  unit: {
    name: 'unit',
    scale: 1 / 255,
    offset: 0,
    formula: 'x / 255',
    description: 'x / 255 (the book: ImageDataGenerator(rescale=1./255))',
    apply: (x) => tf.mul(x, 1 / 255),
  },
  symmetric: {
    name: 'symmetric',
    scale: 1 / 127.5,
    offset: -1,
    formula: 'x / 127.5 - 1',
    description: 'x / 127.5 - 1 (MobileNetV2: inputs in [-1, 1])',
    apply: (x) => tf.sub(tf.div(x, 127.5), 1),
  },
};

export interface LoadBaseOptions {
  /** Default [150, 150, 3]. */
  inputShape?: [number, number, number];
  /**
   * 'imagenet' (default): VGG16 from Keras' published file (downloaded once into cacheDir), MobileNetV2
   * from weightsDir / $CATDOG_WEIGHTS_DIR. null: random initialisation (VGG16 only). Otherwise a path or
   * URL: a Keras .h5 file (VGG16) or a tfjs layers folder / model.json (both).
   */
  weights?: null | 'imagenet' | string;
  /** Folder holding mobilenet_v2_1.0_224/ and mobilenet_v2_0.35_224/. Default $CATDOG_WEIGHTS_DIR. */
  weightsDir?: string;
  /** Download cache for VGG16's weights. Default models/ in the user cache ($CATDOG_CACHE_DIR, else ~/.cache/catdog). */
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
  /** MobileNetV2 only, see MobileNetV2Options.padding. */
  padding?: 'keras' | 'saved';
}

export interface BaseSpec {
  name: string;
  /** The input scaling the base's weights expect. */
  scaling: InputScalingName;
  /** The first layer fine-tuning unfreezes (the book's set_trainable loop). */
  fineTuneFrom: string;
  /** Smallest input side the base accepts. */
  minInputSize: number;
  /**
   * The weights used for 'imagenet' as a string identifying them: the tfjs folder under `weightsDir` for
   * MobileNetV2, 'imagenet' for VGG16 (Keras' published file). Throws when MobileNetV2 has no folder to load from.
   */
  imagenetWeights(weightsDir: string | undefined): string;
  load(options: LoadBaseOptions): Promise<tf.LayersModel>;
}

function mobilenetV2(name: string, alpha: MobileNetV2Alpha): BaseSpec {
  return {
    name,
    scaling: 'symmetric',
    // The last resolution stage (blocks 13–16 and Conv_1, the analogue of VGG16's block5: the most ImageNet-specific
    // features, 1.6 M of 2.26 M parameters, all at ≤ 10×10 spatial size for 150×150 inputs so cheap to train).
    fineTuneFrom: 'block_13_expand',
    minInputSize: 32,
    imagenetWeights(weightsDir) {
      if (!weightsDir) {
        throw new UserError(
          `${name}: no weights folder found: pass --weights <tfjs folder>, --weights-dir <folder holding mobilenet_v2_1.0_224/ and mobilenet_v2_0.35_224/> or set CATDOG_WEIGHTS_DIR`,
          { code: 'bad-weights' },
        );
      }
      return mobilenetV2Folder(alpha, weightsDir);
    },
    load(options) {
      const weights = options.weights === undefined ? 'imagenet' : options.weights;
      if (weights === null)
        throw new UserError(
          `${name}: random initialisation is not supported; MobileNetV2 bases load from a tfjs folder (weights 'imagenet' or a folder)`,
        );
      let from: string | undefined;
      if (weights !== 'imagenet') from = weights;
      else if (options.weightsDir) from = mobilenetV2Folder(alpha, options.weightsDir);
      return loadMobileNetV2Base({ alpha, from, inputShape: options.inputShape, padding: options.padding });
    },
  };
}

/** Every base by name. A new base is one entry here. */
export const BASES = {
  vgg16: {
    name: 'vgg16',
    scaling: 'unit',
    // The book: the last convolutional block (block5, 3 conv layers, 7.1 M of 14.7 M parameters).
    fineTuneFrom: 'block5_conv1',
    minInputSize: 32,
    imagenetWeights: () => 'imagenet',
    load: (options) =>
      buildVgg16Base({
        inputShape: options.inputShape,
        weights: options.weights === undefined ? 'imagenet' : options.weights,
        cacheDir: options.cacheDir,
        onProgress: options.onProgress,
      }),
  },
  mobilenet_v2: mobilenetV2('mobilenet_v2', 1.0),
  'mobilenet_v2_0.35': mobilenetV2('mobilenet_v2_0.35', 0.35),
} satisfies Record<string, BaseSpec>;

export type BaseName = keyof typeof BASES;
export const BASE_NAMES = Object.keys(BASES) as BaseName[];

export function isBaseName(name: string): name is BaseName {
  return Object.hasOwn(BASES, name);
}

/** The registry entry of `name`; unknown names list the valid ones. */
export function baseSpec(name: string): BaseSpec {
  if (!isBaseName(name))
    throw new UserError(`unknown base '${name}'; valid bases: ${BASE_NAMES.join(', ')}`, { code: 'bad-config' });
  return BASES[name];
}

/** Builds or loads a conv base by name ('vgg16' | 'mobilenet_v2' | 'mobilenet_v2_0.35'), frozen BatchNorm as Keras. */
export async function loadBase(name: string, options: LoadBaseOptions = {}): Promise<tf.LayersModel> {
  const model = await baseSpec(name).load(options);
  applyKerasBatchNormSemantics(model);
  return model;
}

/**
 * The input scaling a model expects, by base name or model: MobileNetV2 bases 'symmetric', VGG16 and the
 * book's convnet 'unit'. A model stacked on a base is looked up by its first layer.
 */
export function inputScaling(base: string | tf.LayersModel): InputScalingSpec {
  const name = typeof base === 'string' ? base : base.name;
  if (isBaseName(name)) return INPUT_SCALINGS[BASES[name].scaling];
  // Loaded MobileNetV2 models are named mobilenetv2_<alpha>_<size>, and models built on them start with that name.
  if (/mobilenet/i.test(name)) return INPUT_SCALINGS.symmetric;
  if (typeof base !== 'string' && base.layers[0] instanceof tf.LayersModel)
    return inputScaling(base.layers[0] as tf.LayersModel);
  return INPUT_SCALINGS.unit;
}

/** Where fine-tuning unfreezes each base (BASES[name].fineTuneFrom). */
export const FINE_TUNE_FROM = Object.fromEntries(BASE_NAMES.map((b) => [b, BASES[b].fineTuneFrom])) as Record<
  BaseName,
  string
>;
