// Walking, freezing and unfreezing layers; Keras' frozen-BatchNormalization behaviour for tfjs.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';

type Layer = tf.layers.Layer;
type Kwargs = Record<string, unknown>;

function isContainer(layer: Layer): layer is tf.LayersModel {
  return layer instanceof tf.LayersModel;
}

/** Every non-container layer of a model, nested models expanded, in order. */
export function leafLayers(model: tf.LayersModel): Layer[] {
  const out: Layer[] = [];
  for (const layer of model.layers) {
    if (isContainer(layer)) out.push(...leafLayers(layer));
    else out.push(layer);
  }
  return out;
}

/** Number of trainable weight tensors, as `len(model.trainable_weights)` in the book (VGG16 + head: 30, frozen base: 4). */
export function countTrainableWeights(model: tf.LayersModel): number {
  return model.trainableWeights.length;
}

/** Number of trainable and non-trainable parameters (scalars). */
export function countParams(model: tf.LayersModel): { total: number; trainable: number; nonTrainable: number } {
  const sum = (ws: tf.LayerVariable[]) => ws.reduce((n, w) => n + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
  const trainable = sum(model.trainableWeights);
  const nonTrainable = sum(model.nonTrainableWeights);
  return { total: trainable + nonTrainable, trainable, nonTrainable };
}

const PATCHED = Symbol.for('catdog.models.kerasBatchNorm');

function isBatchNorm(layer: Layer): boolean {
  return layer.getClassName() === 'BatchNormalization';
}

/**
 * Gives every BatchNormalization layer of `model` Keras' (≥ 2.1.3 / TF2) semantics: a frozen BN layer
 * (trainable = false, or all its weights frozen through a frozen parent) runs in inference mode — it
 * normalises with its moving mean/variance and does not update them — even when the model is
 * trained. tfjs-layers 4.x instead always uses batch statistics and updates the moving averages when
 * called with training = true, which wrecks a pretrained base during fine-tuning.
 * Idempotent; returns the number of BN layers covered.
 */
export function applyKerasBatchNormSemantics(model: tf.LayersModel): number {
  let n = 0;
  for (const layer of leafLayers(model)) {
    if (!isBatchNorm(layer)) continue;
    n++;
    const target = layer as Layer & {
      [PATCHED]?: boolean;
      call: (inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs) => tf.Tensor | tf.Tensor[];
    };
    if (target[PATCHED]) continue;
    const original = target.call.bind(target);
    target.call = (inputs, kwargs) => {
      const frozen = !target.trainable || target.trainableWeights.length === 0;
      return original(inputs, frozen && kwargs?.['training'] ? { ...kwargs, training: false } : kwargs);
    };
    target[PATCHED] = true;
  }
  return n;
}

export interface SetTrainableResult {
  /** Layers whose weights now train. */
  trainable: string[];
  /** Layers frozen (before the first trainable layer, and every BatchNormalization layer). */
  frozen: string[];
}

/**
 * Fine-tuning: unfreezes `base` from `firstTrainableLayer` (inclusive) to the end and freezes every
 * layer before it, as the book's `set_trainable` loop. BatchNormalization layers stay frozen and in
 * inference mode. Like Keras, recompile the outer model afterwards (tfjs collects trainable weights at
 * compile time).
 */
export function setTrainableFrom(base: tf.LayersModel, firstTrainableLayer: string): SetTrainableResult {
  const layers = leafLayers(base);
  const start = layers.findIndex((l) => l.name === firstTrainableLayer);
  if (start < 0) {
    const weighted = layers.filter((l) => l.weights.length > 0).map((l) => l.name);
    throw new UserError(
      `model '${base.name}' has no layer '${firstTrainableLayer}' to fine-tune from; layers with weights: ${weighted.slice(-24).join(', ')}${weighted.length > 24 ? ` (last 24 of ${weighted.length})` : ''}`,
    );
  }
  base.trainable = true;
  const result: SetTrainableResult = { trainable: [], frozen: [] };
  layers.forEach((layer, i) => {
    const on = i >= start && !isBatchNorm(layer);
    layer.trainable = on;
    if (layer.weights.length > 0) (on ? result.trainable : result.frozen).push(layer.name);
  });
  applyKerasBatchNormSemantics(base);
  return result;
}
