// Model assembly for the strategies: the conv bases, the book's dense head, and base + head stacks whose
// head layers are shared with a head-only model (trained on cached features).
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { stat } from 'node:fs/promises';
import { buildVgg16Base, kernelInitializer, loadMobileNetV2Base, mobilenetV2Folder, applyKerasBatchNormSemantics } from '@catdog/models';
import { rmsprop } from '@catdog/backend';
import { UserError } from '@catdog/errors';
import type { BaseName, TrainConfig } from './config.js';

/** Where the shared weights live: --weights-dir, else $CATDOG_WEIGHTS_DIR, else ../shared/weights beside the workspace root. */
export function defaultWeightsDir(workspaceRoot = process.cwd()): string | undefined {
  if (process.env.CATDOG_WEIGHTS_DIR) return process.env.CATDOG_WEIGHTS_DIR;
  const shared = resolve(workspaceRoot, '..', 'shared', 'weights');
  return existsSync(shared) ? shared : undefined;
}

export function defaultFeatureCacheDir(out: string): string {
  return out ? join(resolve(out), '..', '.feature-cache') : join(homedir(), '.cache', 'catdog', 'features');
}

/** The weights a base is loaded with, as a string that identifies them (for the feature cache key). */
export function resolveWeights(cfg: TrainConfig): string {
  const base = cfg.base as BaseName;
  if (cfg.weights && cfg.weights !== 'imagenet') return cfg.weights;
  if (base === 'vgg16') return 'imagenet';
  const dir = cfg.weightsDir ?? defaultWeightsDir();
  if (!dir) {
    throw new UserError(
      `${base}: no weights folder found: pass --weights <tfjs folder>, --weights-dir <folder holding mobilenet_v2_1.0_224/ and mobilenet_v2_0.35_224/> or set CATDOG_WEIGHTS_DIR`,
    );
  }
  return mobilenetV2Folder(base === 'mobilenet_v2' ? 1.0 : 0.35, dir);
}

/** A string identifying the weights' content cheaply (path + size + mtime of the file or model.json). */
export async function weightsIdentity(weights: string): Promise<string> {
  if (weights === 'imagenet' || /^s3:\/\//.test(weights)) return weights;
  for (const p of [weights, join(weights, 'model.json')]) {
    try {
      const s = await stat(p);
      if (s.isFile()) return `${resolve(p)}:${s.size}:${s.mtimeMs}`;
    } catch {
      /* try the next */
    }
  }
  return weights;
}

export async function loadConvBase(cfg: TrainConfig, weights: string): Promise<tf.LayersModel> {
  const inputShape: [number, number, number] = [cfg.inputSize, cfg.inputSize, 3];
  const base = cfg.base as BaseName;
  let model: tf.LayersModel;
  if (base === 'vgg16') {
    model = await buildVgg16Base({ inputShape, weights });
  } else {
    model = await loadMobileNetV2Base({ alpha: base === 'mobilenet_v2' ? 1.0 : 0.35, from: weights, inputShape });
  }
  applyKerasBatchNormSemantics(model);
  return model;
}

export interface Head {
  /** Head-only model from the feature shape to the sigmoid output (trained on cached features). */
  model: tf.LayersModel;
  /** Applies the same (shared) head layers to a symbolic tensor. */
  apply(x: tf.SymbolicTensor): tf.SymbolicTensor;
}

/** The book's head: Flatten → Dense(units, relu) → Dropout → Dense(1, sigmoid). Features of rank 1 skip the Flatten. */
export function buildDenseHead(featureShape: number[], opts: { units: number; dropout: number; seed?: number }): Head {
  const layers: tf.layers.Layer[] = [];
  if (featureShape.length > 1) layers.push(tf.layers.flatten({ name: 'head_flatten' }));
  layers.push(tf.layers.dense({ name: 'head_dense', units: opts.units, activation: 'relu', kernelInitializer: kernelInitializer(opts.seed, 0) }));
  if (opts.dropout > 0) layers.push(tf.layers.dropout({ name: 'head_dropout', rate: opts.dropout }));
  layers.push(tf.layers.dense({ name: 'head_output', units: 1, activation: 'sigmoid', kernelInitializer: kernelInitializer(opts.seed, 1) }));
  const apply = (x: tf.SymbolicTensor) => layers.reduce((t, l) => l.apply(t) as tf.SymbolicTensor, x);
  const input = tf.input({ shape: featureShape, name: 'features' });
  const model = tf.model({ inputs: input, outputs: apply(input), name: 'head' });
  return { model, apply };
}

/** The base's output as the head sees it: globally average-pooled ('avg') or the raw maps ('flatten'). */
export function featureTensor(base: tf.LayersModel, pooling: 'flatten' | 'avg'): tf.SymbolicTensor {
  const out = base.outputs[0];
  return pooling === 'avg' ? (tf.layers.globalAveragePooling2d({ name: 'head_pool' }).apply(out) as tf.SymbolicTensor) : out;
}

export function compileBinary(model: tf.LayersModel, learningRate: number): void {
  // rmsprop: tf.train.rmsprop's arithmetic, one fused pass per variable on wasm.
  model.compile({ optimizer: rmsprop(learningRate), loss: 'binaryCrossentropy', metrics: ['acc'] });
}

export function countTrainableTensors(model: tf.LayersModel): number {
  return model.trainableWeights.length;
}

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
export function modelFrom(model: tf.LayersModel, start: tf.SymbolicTensor, name: string): { model: tf.LayersModel; map(t: tf.SymbolicTensor): tf.SymbolicTensor } {
  const input = tf.input({ shape: start.shape.slice(1) as number[], name: `${name}_input` });
  const mapped = new Map<number, tf.SymbolicTensor>([[start.id, input]]);
  for (const layer of model.layers) {
    const nodes = (layer.inboundNodes as unknown as NodeLike[]).slice();
    for (const node of nodes) {
      const ins = node.inputTensors;
      if (ins.length === 0 || !ins.every((t) => mapped.has(t.id)) || node.outputTensors.every((t) => mapped.has(t.id))) continue;
      const args = ins.map((t) => mapped.get(t.id)!);
      const out = layer.apply(args.length === 1 ? args[0] : args, node.callArgs ?? {});
      const outs = Array.isArray(out) ? out : [out];
      node.outputTensors.forEach((t, i) => mapped.set(t.id, outs[i] as tf.SymbolicTensor));
    }
  }
  const map = (t: tf.SymbolicTensor) => {
    const m = mapped.get(t.id);
    if (!m) throw new UserError(`cannot split ${model.name} at ${start.name}: part of the graph after it also depends on layers before it`);
    return m;
  };
  return { model: tf.model({ inputs: input, outputs: map(model.outputs[0]), name }), map };
}

/**
 * `model` cut just below its layer `layerName`: `bottom` computes that layer's input, `top` (modelFrom) the rest,
 * sharing every layer with `model`.
 */
export function splitAtLayer(model: tf.LayersModel, layerName: string, name: string): { bottom: tf.LayersModel; top: ReturnType<typeof modelFrom> } {
  const layer = model.layers.find((l) => l.name === layerName);
  if (!layer) throw new UserError(`no such layer in ${model.name}`);
  const start = layer.input;
  if (Array.isArray(start)) throw new UserError('the layer has several inputs; choose a layer with one');
  return {
    bottom: tf.model({ inputs: model.inputs, outputs: start, name: `${name}_bottom` }),
    top: modelFrom(model, start, `${name}_top`),
  };
}
