// Model weights by stable names, for checkpoints: every variable keyed by its layer path, whatever the trainable flags.
import type * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';

interface LayerLike {
  name: string;
  layers?: LayerLike[];
  weights: tf.LayerVariable[];
}

/**
 * Every variable of `model`, keyed by the path of its leaf layer and its short name (`conv2d_1/kernel`,
 * `mobilenetv2_1.00_160/Conv1/kernel`): stable across processes that build the same model, whatever the
 * trainable flags (which change the order of `model.weights`).
 */
export function namedVariables(model: tf.LayersModel): Map<string, tf.LayerVariable> {
  const out = new Map<string, tf.LayerVariable>();
  const walk = (layer: LayerLike, prefix: string) => {
    if (Array.isArray(layer.layers)) {
      for (const l of layer.layers)
        walk(l, `${prefix}${layer === (model as unknown as LayerLike) ? '' : `${layer.name}/`}`);
      return;
    }
    for (const v of layer.weights) {
      const short = v.originalName.split('/').pop()!;
      let key = `${prefix}${layer.name}/${short}`;
      for (let i = 1; out.has(key); i++) key = `${prefix}${layer.name}/${short}_${i}`;
      out.set(key, v);
    }
  };
  walk(model as unknown as LayerLike, '');
  return out;
}

/** Every variable's current value by name (the tensors belong to the variables: do not dispose them). */
export function namedWeights(model: tf.LayersModel): tf.NamedTensorMap {
  const map: tf.NamedTensorMap = {};
  for (const [k, v] of namedVariables(model)) map[k] = v.read();
  return map;
}

/** Sets every variable of `model` from `map` (as written by namedWeights); every variable must be present. */
export function assignNamedWeights(model: tf.LayersModel, map: tf.NamedTensorMap): void {
  const vars = namedVariables(model);
  const missing = [...vars.keys()].filter((k) => !(k in map));
  if (missing.length)
    throw new UserError(
      `checkpoint does not match the model: missing ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ` and ${missing.length - 3} more` : ''}`,
    );
  for (const [k, v] of vars) {
    const t = map[k];
    if (t.shape.join('x') !== v.shape.join('x'))
      throw new UserError(
        `checkpoint does not match the model: ${k} has shape [${t.shape}] in the checkpoint, [${v.shape}] in the model`,
      );
  }
  for (const [k, v] of vars) v.write(map[k]);
}
