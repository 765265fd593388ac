// Cutting a functional model in two at a layer, both parts sharing the original's layers (and weights).
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';

interface NodeLike {
  inputTensors: tf.SymbolicTensor[];
  outputTensors: tf.SymbolicTensor[];
  callArgs?: Record<string, unknown>;
}

/**
 * The part of `model` downstream of the symbolic tensor `start`, as a model taking that tensor as its input and
 * sharing every layer (and so every weight) with `model`. `map` gives the new graph's tensor for any tensor of
 * `model` downstream of `start`. Fails when a connection bypasses `start` (e.g. a residual skip across it).
 */
export function modelFrom(
  model: tf.LayersModel,
  start: tf.SymbolicTensor,
  name: string,
): { model: tf.LayersModel; map(t: tf.SymbolicTensor): tf.SymbolicTensor } {
  const input = tf.input({ shape: start.shape.slice(1) as number[], name: `${name}_input` });
  const mapped = new Map<number, tf.SymbolicTensor>([[start.id, input]]);
  for (const layer of model.layers) {
    const nodes = (layer.inboundNodes as unknown as NodeLike[]).slice();
    for (const node of nodes) {
      const ins = node.inputTensors;
      if (ins.length === 0 || !ins.every((t) => mapped.has(t.id)) || node.outputTensors.every((t) => mapped.has(t.id)))
        continue;
      const args = ins.map((t) => mapped.get(t.id)!);
      const out = layer.apply(args.length === 1 ? args[0] : args, node.callArgs ?? {});
      const outs = Array.isArray(out) ? out : [out];
      node.outputTensors.forEach((t, i) => mapped.set(t.id, outs[i] as tf.SymbolicTensor));
    }
  }
  const map = (t: tf.SymbolicTensor) => {
    const m = mapped.get(t.id);
    if (!m)
      throw new UserError(
        `cannot split ${model.name} at ${start.name}: part of the graph after it also depends on layers before it`,
      );
    return m;
  };
  return { model: tf.model({ inputs: input, outputs: map(model.outputs[0]), name }), map };
}

/**
 * `model` cut just below its layer `layerName`: `bottom` computes that layer's input, `top` (modelFrom) the rest,
 * sharing every layer with `model`.
 */
export function splitAtLayer(
  model: tf.LayersModel,
  layerName: string,
  name: string,
): { bottom: tf.LayersModel; top: ReturnType<typeof modelFrom> } {
  const layer = model.layers.find((l) => l.name === layerName);
  if (!layer) throw new UserError(`no such layer in ${model.name}`);
  const start = layer.input;
  if (Array.isArray(start)) throw new UserError('the layer has several inputs; choose a layer with one');
  return {
    bottom: tf.model({ inputs: model.inputs, outputs: start, name: `${name}_bottom` }),
    top: modelFrom(model, start, `${name}_top`),
  };
}
