// Copying weights between tfjs models by layer name (e.g. a saved base into one built at another input size).
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { leafLayers } from './layers.js';

/**
 * Sets every weighted layer of `target` from the layer of the same name in `source` (nested models
 * included). Fails naming the layers when one is missing or a shape differs; nothing is assigned then.
 */
export function copyWeightsByName(source: tf.LayersModel, target: tf.LayersModel): string[] {
  const from = new Map(leafLayers(source).map((l) => [l.name, l]));
  const problems: string[] = [];
  const plan: [tf.layers.Layer, tf.Tensor[]][] = [];
  for (const layer of leafLayers(target)) {
    if (layer.weights.length === 0) continue;
    const src = from.get(layer.name);
    if (!src) {
      problems.push(`layer '${layer.name}' not found in model '${source.name}'`);
      continue;
    }
    const values = src.getWeights();
    const mismatch =
      values.length !== layer.weights.length ||
      values.some(
        (v, i) =>
          v.shape.length !== layer.weights[i].shape.length || v.shape.some((d, j) => d !== layer.weights[i].shape[j]),
      );
    if (mismatch) {
      problems.push(
        `layer '${layer.name}': expected shapes ${layer.weights.map((w) => `[${w.shape.join(', ')}]`).join(' ')}, found ${values.map((v) => `[${v.shape.join(', ')}]`).join(' ')}`,
      );
      continue;
    }
    plan.push([layer, values]);
  }
  if (problems.length > 0)
    throw new UserError(`cannot copy weights from '${source.name}' into '${target.name}': ${problems.join('; ')}`);
  for (const [layer, values] of plan) layer.setWeights(values);
  return plan.map(([l]) => l.name);
}
