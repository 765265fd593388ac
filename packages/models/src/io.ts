// tfjs layers-model folders (model.json + weight shards) on local disk, file:// or s3://, through @catdog/storage.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { isNotFound, openStorage, resolveLocation } from '@catdog/storage';
import { applyKerasBatchNormSemantics } from './layers.js';

/** Keras/tfjs JSON topology: { class_name, config } (possibly wrapped as { model_config }). */
export type Topology = {
  class_name: string;
  config: Record<string, unknown> & { layers?: LayerJson[]; name?: string };
};
export type LayerJson = {
  class_name: string;
  name?: string;
  config: Record<string, unknown>;
  inbound_nodes?: unknown[];
};

function splitLocation(url: string): { dir: string; file: string } {
  const loc = resolveLocation(url);
  if (loc.endsWith('.json')) {
    const slash = loc.lastIndexOf('/');
    return { dir: loc.slice(0, slash) || '/', file: loc.slice(slash + 1) };
  }
  return { dir: loc.replace(/\/+$/, ''), file: 'model.json' };
}

function unwrapTopology(json: unknown): Topology {
  const t = json as Record<string, unknown> | null;
  if (t && typeof t === 'object' && 'model_config' in t) return unwrapTopology(t['model_config']);
  if (!t || typeof t !== 'object' || typeof t['class_name'] !== 'string' || typeof t['config'] !== 'object') {
    throw new UserError('model.json: modelTopology is not a Keras/tfjs layers topology ({ class_name, config })');
  }
  return t as unknown as Topology;
}

/** Sets the model's input size in its JSON topology (the InputLayer's, or a Sequential's first layer's, batch_input_shape). */
export function setTopologyInputShape(topology: Topology, inputShape: readonly number[]): void {
  const layers =
    topology.config.layers ?? (Array.isArray(topology.config) ? (topology.config as LayerJson[]) : undefined);
  if (!layers?.length) throw new UserError('model.json: topology has no layers');
  const inputs = layers.filter((l) => l.class_name === 'InputLayer');
  const targets = inputs.length > 0 ? inputs : [layers[0]];
  if (targets.length !== 1)
    throw new UserError(`model.json: the model has ${targets.length} inputs; only single-input models can be resized`);
  const cfg = targets[0].config;
  const old = (cfg['batch_input_shape'] ?? cfg['batchInputShape'] ?? cfg['batch_shape']) as
    | (number | null)[]
    | undefined;
  if (old && old.length !== inputShape.length + 1) {
    throw new UserError(
      `model.json: the model's input has rank ${old.length - 1}, cannot set input shape [${inputShape.join(', ')}]`,
    );
  }
  delete cfg['batchInputShape'];
  delete cfg['batch_shape'];
  delete cfg['input_shape'];
  cfg['batch_input_shape'] = [null, ...inputShape];
}

export interface LoadLayersModelOptions {
  /** Rebuild the model at this input size [h, w, c] (fully convolutional models). */
  inputShape?: [number, number, number];
  /** Last chance to edit the JSON topology before it is deserialised (after inputShape is applied). */
  transformTopology?: (topology: Topology) => void;
  /** Check that weight names and shapes match the topology. Default true. */
  strict?: boolean;
}

/**
 * Loads a tfjs layers model from a folder or model.json (local path, file:// or s3://bucket/prefix)
 * with its weight shards, optionally rebuilt at another input size. BatchNormalization layers get
 * Keras' frozen-BN semantics (see applyKerasBatchNormSemantics).
 */
export async function loadLayersModelFrom(url: string, options: LoadLayersModelOptions = {}): Promise<tf.LayersModel> {
  const { dir, file } = splitLocation(url);
  const storage = openStorage(dir);
  let raw: Buffer;
  try {
    raw = await storage.read(file);
  } catch (err) {
    if (isNotFound(err)) {
      throw new UserError(
        `${storage.urlOf(file)}: no tfjs model here (expected a folder with model.json and its weight files)`,
        { cause: err },
      );
    }
    throw err;
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new UserError(`${storage.urlOf(file)}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (!json['modelTopology'] || !Array.isArray(json['weightsManifest'])) {
    throw new UserError(
      `${storage.urlOf(file)}: not a tfjs layers model.json (needs modelTopology and weightsManifest)`,
    );
  }
  const topology = unwrapTopology(json['modelTopology']);
  if (topology.class_name === 'Functional') topology.class_name = 'Model';
  if (options.inputShape) setTopologyInputShape(topology, options.inputShape);
  options.transformTopology?.(topology);
  const manifest = json['weightsManifest'] as tf.io.WeightsManifestConfig;
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: Buffer[] = [];
  for (const group of manifest) {
    weightSpecs.push(...group.weights);
    for (const path of group.paths) {
      try {
        buffers.push(await storage.read(path));
      } catch (err) {
        if (isNotFound(err))
          throw new UserError(`${storage.urlOf(path)}: weight file listed in ${file} is missing`, { cause: err });
        throw err;
      }
    }
  }
  const joined = Buffer.concat(buffers);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength) as ArrayBuffer;
  const artifacts: tf.io.ModelArtifacts = {
    modelTopology: topology as unknown as tf.io.ModelArtifacts['modelTopology'],
    weightSpecs,
    weightData,
    format: json['format'] as string | undefined,
    generatedBy: json['generatedBy'] as string | undefined,
    convertedBy: json['convertedBy'] as string | null | undefined,
    trainingConfig: json['trainingConfig'] as tf.io.TrainingConfig | undefined,
    userDefinedMetadata: json['userDefinedMetadata'] as tf.io.ModelArtifacts['userDefinedMetadata'],
  };
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory(artifacts), { strict: options.strict ?? true });
  } catch (err) {
    throw new UserError(`${storage.urlOf(file)}: cannot build the model (${(err as Error).message})`, { cause: err });
  }
  applyKerasBatchNormSemantics(model);
  return model;
}

/**
 * Saves a model as a tfjs layers folder (model.json + weights.bin) to a local directory, file:// or
 * s3:// URL. Each file is written atomically and model.json last, so a reader never sees a model.json
 * whose weights are not there yet. Loadable with loadLayersModelFrom or tf.loadLayersModel.
 */
export async function saveLayersModelTo(model: tf.LayersModel, url: string): Promise<tf.io.SaveResult> {
  const { dir, file } = splitLocation(url);
  const storage = openStorage(dir);
  const weightsFile = file === 'model.json' ? 'weights.bin' : `${file.replace(/\.json$/, '')}.weights.bin`;
  return model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const data = artifacts.weightData;
      const bytes =
        data == null
          ? new Uint8Array(0)
          : new Uint8Array(Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data);
      await storage.write(weightsFile, bytes);
      const json = {
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        modelTopology: artifacts.modelTopology,
        ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
        ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
        weightsManifest: [{ paths: [weightsFile], weights: artifacts.weightSpecs ?? [] }],
      };
      await storage.write(file, JSON.stringify(json));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
}
