// The book's densely connected classifiers on top of a conv base, with Keras' default layer names
// (flatten_1, dense_1, dropout_1, dense_2), as `model.add(layers.Flatten()) …` names them in the book.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { classifierOutput } from './classifier.js';
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
  /** Classes told apart: 2 (default, the book's Dense(1, sigmoid)) or more (Dense(N, softmax)); classifierOutput. */
  classes?: number;
}

/** The head's layers; `flat` features skip the Flatten; `inputShape` is set on the first layer (Sequential models). */
function headLayers(options: Omit<HeadOptions, 'inputShape'>, flat: boolean, inputShape?: number[]): tf.layers.Layer[] {
  const dropout = options.dropout ?? 0;
  const units = options.units ?? 256;
  if (!(dropout >= 0 && dropout < 1)) throw new UserError(`head: dropout must be in [0, 1), got ${dropout}`);
  if (!Number.isInteger(units) || units < 1)
    throw new UserError(`head: units must be a positive integer, got ${units}`);
  // Already-flat features ([n], the book's Dense(256, input_dim=4*4*512)) need no Flatten.
  const shape = inputShape ? { inputShape } : {};
  const layers: tf.layers.Layer[] = [];
  if (!flat) layers.push(tf.layers.flatten({ name: 'flatten_1', ...shape }));
  layers.push(
    tf.layers.dense({
      name: 'dense_1',
      units,
      activation: 'relu',
      kernelInitializer: kernelInitializer(options.seed, 0),
      ...(flat ? shape : {}),
    }),
  );
  if (dropout > 0) layers.push(tf.layers.dropout({ name: 'dropout_1', rate: dropout }));
  const out = classifierOutput(options.classes ?? 2);
  layers.push(
    tf.layers.dense({
      name: 'dense_2',
      units: out.units,
      activation: out.activation,
      kernelInitializer: kernelInitializer(options.seed, 1),
    }),
  );
  return layers;
}

function checkHeadShape(inputShape: number[] | undefined): void {
  if (!inputShape?.length || inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new UserError(`head: inputShape must be positive integers, got ${JSON.stringify(inputShape)}`);
  }
}

/**
 * Flatten → Dense(units, relu) → (Dropout) → Dense(1, sigmoid) (or Dense(N, softmax) for N > 2 classes), the classifier trained on extracted
 * features. With a 1-D inputShape (features already flattened) the Flatten is left out.
 */
export function buildHead(options: HeadOptions): tf.LayersModel {
  checkHeadShape(options?.inputShape);
  return tf.sequential({
    name: 'head',
    layers: headLayers(options, options.inputShape.length === 1, options.inputShape),
  });
}

/** A head whose layers serve two models: its own (trained on cached features) and a base + head stack. */
export interface SharedHead {
  /** Head-only functional model from the feature shape to the sigmoid output. */
  model: tf.LayersModel;
  /** Applies the same layers (the same weights) to a symbolic tensor, e.g. a base's output. */
  apply(x: tf.SymbolicTensor): tf.SymbolicTensor;
}

/** The head of buildHead as shared layers: `model` and `apply` train the same weights. */
export function buildSharedHead(options: HeadOptions): SharedHead {
  checkHeadShape(options?.inputShape);
  const layers = headLayers(options, options.inputShape.length === 1);
  const apply = (x: tf.SymbolicTensor) => layers.reduce((t, l) => l.apply(t) as tf.SymbolicTensor, x);
  const input = tf.input({ shape: options.inputShape, name: 'features' });
  return { model: tf.model({ inputs: input, outputs: apply(input), name: 'head' }), apply };
}

/**
 * The base's output as a head sees it: globally average-pooled ('avg', Keras' GlobalAveragePooling2D) or the
 * raw feature maps ('flatten', the book: the head flattens them).
 */
export function baseFeatures(base: tf.LayersModel, pooling: 'flatten' | 'avg'): tf.SymbolicTensor {
  const out = base.outputs[0];
  return pooling === 'avg'
    ? (tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d_1' }).apply(out) as tf.SymbolicTensor)
    : out;
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
  for (const layer of headLayers(head, false)) model.add(layer);
  return model;
}
