// VGG16's convolutional base (keras.applications.VGG16(include_top=False)) built in code, with Keras'
// layer names so Keras' published weight file loads by name.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { checkInputShape } from './convnet.js';
import { getFile, type DownloadProgress } from './download.js';
import { loadKerasH5Weights } from './h5.js';
import { loadLayersModelFrom } from './io.js';
import { copyWeightsByName } from './weights.js';

/** Keras' published no-top weights (keras.applications.vgg16.WEIGHTS_PATH_NO_TOP) and their file_hash (MD5). */
export const VGG16_NOTOP_WEIGHTS = {
  url: 'https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
  fileName: 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
  md5: '6d6bbae143d832006294945121d1f1fc',
} as const;

export interface EnsureVgg16Options {
  /** Default models/ in the user cache ($CATDOG_CACHE_DIR, else ~/.cache/catdog). */
  cacheDir?: string;
  /** Default $CATDOG_VGG16_WEIGHTS_URL or Keras' published URL (override for mirrors and tests). */
  url?: string;
  /** MD5 or SHA-256 of the file. Default Keras' MD5 for the published file. */
  hash?: string;
  onProgress?: (p: DownloadProgress) => void;
  connectTimeoutMs?: number;
}

/**
 * The path of Keras' VGG16 no-top ImageNet weights in the cache, downloading them once (58.9 MB,
 * checksum verified) like keras.utils.get_file. Offline it fails with a message saying where to put
 * the file by hand or to pass --weights <file.h5>.
 */
export function ensureVgg16ImagenetWeights(options: EnsureVgg16Options = {}): Promise<string> {
  return getFile({
    url: options.url ?? (process.env.CATDOG_VGG16_WEIGHTS_URL || VGG16_NOTOP_WEIGHTS.url),
    fileName: VGG16_NOTOP_WEIGHTS.fileName,
    hash: options.hash ?? VGG16_NOTOP_WEIGHTS.md5,
    cacheDir: options.cacheDir,
    onProgress: options.onProgress,
    connectTimeoutMs: options.connectTimeoutMs,
    offlineHint: 'pass --weights <file.h5> with a copy of the file',
  });
}

export interface Vgg16Options {
  /** Default [150, 150, 3] (book); any size ≥ 32×32. */
  inputShape?: [number, number, number];
  /**
   * null (default): random initialisation (Keras' glorot_uniform). 'imagenet': Keras' published weights
   * (downloaded once into the cache). A path/URL ending in .h5/.hdf5: a Keras HDF5 weight file. Anything
   * else: a tfjs layers folder or model.json (local, file:// or s3://) whose layers are copied by name.
   */
  weights?: null | 'imagenet' | string;
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
}

/** 13 conv layers in 5 blocks; 150×150×3 → 4×4×512, 14,714,688 parameters. Model name 'vgg16'. */
export async function buildVgg16Base(options: Vgg16Options = {}): Promise<tf.LayersModel> {
  const inputShape = checkInputShape(options.inputShape ?? [150, 150, 3], 32, 'VGG16');
  const input = tf.input({ shape: inputShape, name: 'input_1' });
  let x: tf.SymbolicTensor = input;
  const blocks = [
    [64, 2],
    [128, 2],
    [256, 3],
    [512, 3],
    [512, 3],
  ] as const;
  blocks.forEach(([filters, convs], b) => {
    for (let c = 1; c <= convs; c++) {
      x = tf.layers
        .conv2d({ name: `block${b + 1}_conv${c}`, filters, kernelSize: 3, padding: 'same', activation: 'relu' })
        .apply(x) as tf.SymbolicTensor;
    }
    x = tf.layers.maxPooling2d({ name: `block${b + 1}_pool`, poolSize: 2, strides: 2 }).apply(x) as tf.SymbolicTensor;
  });
  const model = tf.model({ inputs: input, outputs: x, name: 'vgg16' });
  const weights = options.weights ?? null;
  if (weights === null) return model;
  try {
    if (weights === 'imagenet') {
      if (inputShape[2] !== 3)
        throw new UserError(`VGG16: ImageNet weights need 3 input channels, got ${inputShape[2]}`);
      const path = await ensureVgg16ImagenetWeights({ cacheDir: options.cacheDir, onProgress: options.onProgress });
      await loadKerasH5Weights(model, path);
    } else if (/\.(h5|hdf5|keras)$/i.test(weights)) {
      await loadKerasH5Weights(model, weights);
    } else {
      const source = await loadLayersModelFrom(weights);
      try {
        copyWeightsByName(source, model);
      } finally {
        source.dispose();
      }
    }
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}
