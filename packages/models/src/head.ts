// The book's densely connected classifiers on top of a conv base.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { kernelInitializer } from './convnet.js';

export interface HeadOptions {
  /** Shape of one input sample: a base's output [h, w, c] or flattened features [n]. */
  inputShape: number[];
  /** Dropout before the last Dense: 0 (default) or the book's 0.5 for the feature-extraction head. */
  dropout?: number;
  /** Hidden units. Default 256 as in the book. */
  units?: number;
  /** Seeds the initial weights (see ConvnetOptions.seed). Default: unseeded. */
  seed?: number;
}

function headLayers(options: { inputShape?: number[]; dropout?: number; units?: number; seed?: number }): tf.layers.Layer[] {
  const dropout = options.dropout ?? 0;
  const units = options.units ?? 256;
  if (!(dropout >= 0 && dropout < 1)) throw new UserError(`head: dropout must be in [0, 1), got ${dropout}`);
  if (!Number.isInteger(units) || units < 1) throw new UserError(`head: units must be a positive integer, got ${units}`);
  // Already-flat features ([n], the book's Dense(256, input_dim=4*4*512)) need no Flatten.
  const flat = options.inputShape?.length === 1;
  const layers: tf.layers.Layer[] = [];
  if (!flat) layers.push(tf.layers.flatten({ name: 'flatten_1', ...(options.inputShape ? { inputShape: options.inputShape } : {}) }));
  layers.push(tf.layers.dense({
    name: 'dense_1', units, activation: 'relu', kernelInitializer: kernelInitializer(options.seed, 0),
    ...(flat ? { inputShape: options.inputShape } : {}),
  }));
  if (dropout > 0) layers.push(tf.layers.dropout({ name: 'dropout_1', rate: dropout }));
  layers.push(tf.layers.dense({ name: 'dense_2', units: 1, activation: 'sigmoid', kernelInitializer: kernelInitializer(options.seed, 1) }));
  return layers;
}

/**
 * Flatten → Dense(units, relu) → (Dropout) → Dense(1, sigmoid), the classifier trained on extracted
 * features. With a 1-D inputShape (features already flattened) the Flatten is left out.
 */
export function buildHead(options: HeadOptions): tf.LayersModel {
  if (!options?.inputShape?.length || options.inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new UserError(`head: inputShape must be positive integers, got ${JSON.stringify(options?.inputShape)}`);
  }
  return tf.sequential({ name: 'head', layers: headLayers(options) });
}

/**
 * The book's `model.add(conv_base)` + head: a Sequential whose first layer is the base itself, so
 * `base.trainable = false` freezes it (VGG16: 30 → 4 trainable weight tensors). The head's layers are
 * added directly, not as a nested model: tfjs runs nested models in inference mode, which would switch
 * the head's Dropout off during training.
 */
export function stackBaseAndHead(base: tf.LayersModel, head: Omit<HeadOptions, 'inputShape'> = {}): tf.LayersModel {
  const model = tf.sequential({ name: `${base.name}_classifier` });
  model.add(base);
  for (const layer of headLayers(head)) model.add(layer);
  return model;
}
