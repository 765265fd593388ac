// One entry point for the transfer-learning bases, and the input scaling each expects.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import type { DownloadProgress } from './download.js';
import { mobilenetV2Folder, loadMobileNetV2Base } from './mobilenet.js';
import { buildVgg16Base } from './vgg16.js';

export const BASE_NAMES = ['vgg16', 'mobilenet_v2', 'mobilenet_v2_0.35'] as const;
export type BaseName = (typeof BASE_NAMES)[number];

export function isBaseName(name: string): name is BaseName {
  return (BASE_NAMES as readonly string[]).includes(name);
}

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
  /** Download cache for VGG16's weights. Default $CATDOG_CACHE_DIR or ~/.cache/catdog/models. */
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
  /** MobileNetV2 only, see MobileNetV2Options.padding. */
  padding?: 'keras' | 'saved';
}

/** Builds or loads a conv base by name: 'vgg16' | 'mobilenet_v2' | 'mobilenet_v2_0.35'. */
export async function loadBase(name: string, options: LoadBaseOptions = {}): Promise<tf.LayersModel> {
  if (!isBaseName(name)) throw new UserError(`unknown base '${name}'; valid bases: ${BASE_NAMES.join(', ')}`);
  const weights = options.weights === undefined ? 'imagenet' : options.weights;
  if (name === 'vgg16') {
    return buildVgg16Base({ inputShape: options.inputShape, weights, cacheDir: options.cacheDir, onProgress: options.onProgress });
  }
  const alpha = name === 'mobilenet_v2' ? 1.0 : 0.35;
  if (weights === null) throw new UserError(`${name}: random initialisation is not supported; MobileNetV2 bases load from a tfjs folder (weights 'imagenet' or a folder)`);
  let from: string | undefined;
  if (weights !== 'imagenet') from = weights;
  else if (options.weightsDir) from = mobilenetV2Folder(alpha, options.weightsDir);
  return loadMobileNetV2Base({ alpha, from, inputShape: options.inputShape, padding: options.padding });
}

/** x' = x · scale + offset, applied to RGB pixels in [0, 255]. */
export interface InputScaling {
  scale: number;
  offset: number;
  description: string;
}

/**
 * The input scaling a model expects, by base name or model. VGG16 gets the book's rescale=1/255 (what the
 * book feeds it through ImageDataGenerator, although Keras' vgg16.preprocess_input would subtract the
 * caffe BGR means); MobileNetV2 the [-1, 1] range its ImageNet weights were trained with; the book's
 * convnet 1/255.
 */
export function inputScaling(base: string | tf.LayersModel): InputScaling {
  const name = typeof base === 'string' ? base : base.name;
  if (name.startsWith('mobilenet')) return { scale: 1 / 127.5, offset: -1, description: 'x / 127.5 - 1 (MobileNetV2: inputs in [-1, 1])' };
  if (name === 'vgg16' || name.startsWith('vgg16') || name.startsWith('convnet') || isBaseName(name)) {
    return { scale: 1 / 255, offset: 0, description: 'x / 255 (the book: ImageDataGenerator(rescale=1./255))' };
  }
  // A model stacked on a base: look at its first layer.
  if (typeof base !== 'string' && base.layers[0] instanceof tf.LayersModel) return inputScaling(base.layers[0] as tf.LayersModel);
  return { scale: 1 / 255, offset: 0, description: 'x / 255 (the book: ImageDataGenerator(rescale=1./255))' };
}
