// The book's small convnet (Deep Learning with Python, 5.2): four Conv2D/MaxPooling2D stages, Dense 512, sigmoid.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { classifierOutput } from './classifier.js';

export interface ConvnetOptions {
  /** Height, width, channels. Default [150, 150, 3] as in the book. */
  inputShape?: [number, number, number];
  /** Dropout rate before Dense 512: 0 (default) is the plain model, 0.5 the book's augmented variant. */
  dropout?: number;
  /**
   * Seeds the layers' initial weights (Glorot uniform, as Keras): the same seed, the same model. Default: unseeded.
   * (Dropout masks stay unseeded: tfjs would draw the same mask at every step from a fixed seed.)
   */
  seed?: number;
  /** Classes told apart: 2 (default, the book's Dense(1, sigmoid)) or more (Dense(N, softmax)); classifierOutput. */
  classes?: number;
}

/** Keras' default kernel initializer, seeded per layer when a seed is given. */
export function kernelInitializer(
  seed: number | undefined,
  layer: number,
): ReturnType<typeof tf.initializers.glorotUniform> | undefined {
  return seed === undefined ? undefined : tf.initializers.glorotUniform({ seed: seed * 1000 + layer });
}

export function checkInputShape(shape: readonly number[], minSide: number, what: string): [number, number, number] {
  if (shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new UserError(
      `${what}: input shape must be [height, width, channels] of positive integers, got [${shape.join(', ')}]`,
    );
  }
  if (shape[0] < minSide || shape[1] < minSide) {
    throw new UserError(
      `${what}: input ${shape[0]}×${shape[1]} is too small, the model needs at least ${minSide}×${minSide}`,
    );
  }
  return [shape[0], shape[1], shape[2]];
}

/**
 * The book's convnet with Keras' default layer names (conv2d_1 … dense_2), so summaries and
 * saved models read like the book's. 150×150×3 → 3,453,121 parameters.
 */
export const CONVNET_MIN_INPUT_SIZE = 46;

export function buildConvnet(options: ConvnetOptions = {}): tf.LayersModel {
  const inputShape = checkInputShape(options.inputShape ?? [150, 150, 3], CONVNET_MIN_INPUT_SIZE, 'convnet');
  const dropout = options.dropout ?? 0;
  const out = classifierOutput(options.classes ?? 2);
  if (!(dropout >= 0 && dropout < 1)) throw new UserError(`convnet: dropout must be in [0, 1), got ${dropout}`);
  const model = tf.sequential({ name: dropout > 0 ? 'convnet_dropout' : 'convnet' });
  const filters = [32, 64, 128, 128];
  filters.forEach((f, i) => {
    model.add(
      tf.layers.conv2d({
        name: `conv2d_${i + 1}`,
        filters: f,
        kernelSize: 3,
        activation: 'relu',
        kernelInitializer: kernelInitializer(options.seed, i),
        ...(i === 0 ? { inputShape } : {}),
      }),
    );
    model.add(tf.layers.maxPooling2d({ name: `max_pooling2d_${i + 1}`, poolSize: 2 }));
  });
  model.add(tf.layers.flatten({ name: 'flatten_1' }));
  if (dropout > 0) model.add(tf.layers.dropout({ name: 'dropout_1', rate: dropout }));
  model.add(
    tf.layers.dense({
      name: 'dense_1',
      units: 512,
      activation: 'relu',
      kernelInitializer: kernelInitializer(options.seed, 4),
    }),
  );
  model.add(
    tf.layers.dense({
      name: 'dense_2',
      units: out.units,
      activation: out.activation,
      kernelInitializer: kernelInitializer(options.seed, 5),
    }),
  );
  return model;
}
