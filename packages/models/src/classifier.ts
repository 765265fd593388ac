// The one rule for a classifier's output: two classes keep the book's Dense(1, sigmoid) and binary crossentropy
// (P(classes[1])); three or more take Dense(N, softmax) and sparse categorical crossentropy on the integer labels
// the datasets carry (label = index into the sorted classes, as Keras' flow_from_directory). Heads, the convnet,
// compile and everything reading a trained model's outputs ask here.
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { outputActivation } from './image-input.js';

export interface ClassifierOutput {
  /** Units of the last Dense: 1 for two classes (sigmoid), N otherwise. */
  units: number;
  activation: 'sigmoid' | 'softmax';
  /** tfjs loss name for integer labels [n, 1]. */
  loss: 'binaryCrossentropy' | 'sparseCategoricalCrossentropy';
}

/** The output layer and loss of a classifier of `classCount` classes (≥ 2). */
export function classifierOutput(classCount = 2): ClassifierOutput {
  if (!Number.isInteger(classCount) || classCount < 2)
    throw new UserError(`a classifier needs at least two classes, got ${classCount}`, { code: 'bad-config' });
  return classCount === 2
    ? { units: 1, activation: 'sigmoid', loss: 'binaryCrossentropy' }
    : { units: classCount, activation: 'softmax', loss: 'sparseCategoricalCrossentropy' };
}

/** How many classes a trained classifier tells apart: 2 for a sigmoid output, its units for a softmax one. */
export function modelClassCount(model: tf.LayersModel): number {
  const activation = outputActivation(model);
  const shape = model.outputs[0]!.shape;
  const units = shape[shape.length - 1] as number;
  if (activation === 'sigmoid') {
    if (units !== 1)
      throw new UserError(`${model.name}: a sigmoid output has one unit (two classes), this one has ${units}`, {
        code: 'bad-weights',
      });
    return 2;
  }
  return units;
}

/** The loss `model` trains with (classifierOutput of its class count). */
export function classifierLoss(model: tf.LayersModel): ClassifierOutput['loss'] {
  return classifierOutput(modelClassCount(model)).loss;
}
