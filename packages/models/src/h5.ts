// Keras HDF5 weight files (save_weights files and full-model model.save files), read with h5wasm and
// mapped onto a tfjs model by layer name, as Keras' load_weights(by_name=True) does.
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';
import { openStorage, isS3Url } from '@catdog/storage';
import { leafLayers } from './layers.js';

type H5Module = typeof import('h5wasm/node');
type H5Group = import('h5wasm/node').Group;
type H5Dataset = import('h5wasm/node').Dataset;

let h5Promise: Promise<H5Module> | undefined;
async function h5(): Promise<H5Module> {
  h5Promise ??= (async () => {
    const mod = await import('h5wasm/node');
    await mod.ready;
    return mod;
  })();
  return h5Promise;
}

/** One weight array as stored in the file. */
export interface KerasH5Weight {
  /** Name as stored in the layer's weight_names attribute, e.g. 'block1_conv1/kernel:0'. */
  name: string;
  shape: number[];
  values: Float32Array;
}

/** The weights of a Keras HDF5 file, by layer name, in the file's layer order. */
export interface KerasH5Weights {
  /** 'weights' for save_weights files (layer_names at the root), 'model' for model.save files (group model_weights). */
  kind: 'weights' | 'model';
  kerasVersion?: string;
  backend?: string;
  /** Every layer listed in layer_names, including those without weights. */
  layerNames: string[];
  /** Layers with at least one weight, in file order. */
  layers: Map<string, KerasH5Weight[]>;
}

function decodeStrings(value: unknown): string[] {
  const one = (v: unknown): string => {
    if (typeof v === 'string') return v.replace(/\0+$/, '');
    if (v instanceof Uint8Array) return new TextDecoder().decode(v).replace(/\0+$/, '');
    throw new Error(`unexpected attribute element ${String(v)}`);
  };
  if (value == null) return [];
  if (typeof value === 'string' || value instanceof Uint8Array) return [one(value)];
  // Keras writes an empty float64 attribute for layers without weights.
  if (ArrayBuffer.isView(value)) return [];
  if (Array.isArray(value)) return value.map(one);
  throw new Error(`unexpected attribute value ${String(value)}`);
}

function stringAttr(group: H5Group, name: string): string[] | undefined {
  const attr = group.attrs[name];
  return attr ? decodeStrings(attr.value) : undefined;
}

function toFloat32(dataset: H5Dataset, where: string): Float32Array {
  const value = dataset.value;
  if (value instanceof Float32Array) return value;
  if (
    value instanceof Float64Array ||
    value instanceof Uint8Array ||
    value instanceof Int32Array ||
    value instanceof Uint16Array ||
    value instanceof Int16Array ||
    value instanceof Int8Array ||
    value instanceof Uint32Array
  ) {
    return Float32Array.from(value);
  }
  throw new UserError(`${where}: weight dataset has unsupported type ${JSON.stringify(dataset.dtype)}`);
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** HDF5's superblock signature sits at offset 0, 512, 1024, 2048, … (checked here to fail cleanly, without HDF5's diagnostics). */
async function hasHdf5Signature(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    for (const offset of [0, 512, 1024, 2048, 4096]) {
      const buf = Buffer.alloc(8);
      const { bytesRead } = await fh.read(buf, 0, 8, offset);
      if (bytesRead < 8) return false;
      if (buf.equals(HDF5_SIGNATURE)) return true;
    }
    return false;
  } finally {
    await fh.close();
  }
}

/** Fetches http(s):// and s3:// files into a temporary local file (h5wasm reads from the host filesystem). */
async function localCopy(fileOrUrl: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  if (/^https?:\/\//.test(fileOrUrl) || isS3Url(fileOrUrl)) {
    let bytes: Uint8Array;
    if (isS3Url(fileOrUrl)) {
      const slash = fileOrUrl.lastIndexOf('/');
      bytes = await openStorage(fileOrUrl.slice(0, slash)).read(fileOrUrl.slice(slash + 1));
    } else {
      let res: Response;
      try {
        res = await fetch(fileOrUrl);
      } catch (err) {
        throw new UserError(
          `${fileOrUrl}: download failed (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message})`,
          { cause: err },
        );
      }
      if (!res.ok) throw new UserError(`${fileOrUrl}: download failed (HTTP ${res.status})`);
      bytes = new Uint8Array(await res.arrayBuffer());
    }
    const dir = await mkdtemp(join(tmpdir(), 'catdog-h5-'));
    const path = join(dir, `${randomBytes(4).toString('hex')}.h5`);
    await writeFile(path, bytes);
    return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
  }
  const path = resolve(fileOrUrl.startsWith('file://') ? new URL(fileOrUrl).pathname : fileOrUrl);
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new UserError(`${path}: not a file (expected a Keras .h5 weight file)`);
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`${path}: Keras weight file not found`, { cause: err });
  }
  return { path, cleanup: async () => {} };
}

/**
 * Reads every weight of a Keras HDF5 file (local path, file://, http(s):// or s3:// URL).
 * Understands Keras 2 / tf.keras save_weights files (root attribute layer_names) and full-model
 * files (group model_weights). Keras 3 '.weights.h5' files use another layout and are rejected.
 */
export async function readKerasH5Weights(fileOrUrl: string): Promise<KerasH5Weights> {
  const h5wasm = await h5();
  const { path, cleanup } = await localCopy(fileOrUrl);
  let file: InstanceType<H5Module['File']> | undefined;
  try {
    if (!(await hasHdf5Signature(path)))
      throw new UserError(`${fileOrUrl}: not an HDF5 file (no HDF5 signature; expected a Keras .h5 weight file)`);
    try {
      file = new h5wasm.File(path, 'r');
    } catch (err) {
      throw new UserError(`${fileOrUrl}: not an HDF5 file (${(err as Error).message})`, { cause: err });
    }
    if (file.file_id < 0n) throw new UserError(`${fileOrUrl}: not an HDF5 file`);
    let root: H5Group = file;
    let kind: KerasH5Weights['kind'] = 'weights';
    if (!root.attrs['layer_names']) {
      const mw = file.keys().includes('model_weights') ? file.get('model_weights') : null;
      if (mw instanceof h5wasm.Group && mw.attrs['layer_names']) {
        root = mw;
        kind = 'model';
      } else if (file.keys().includes('layers') || file.keys().includes('_layer_checkpoint_dependencies')) {
        throw new UserError(
          `${fileOrUrl}: this looks like a Keras 3 '.weights.h5' file, which is not supported; save it from Keras 2 / tf.keras (model.save_weights('x.h5')) or convert it to a tfjs layers folder`,
        );
      } else {
        throw new UserError(
          `${fileOrUrl}: not a Keras weight file (no layer_names attribute at the root or in model_weights)`,
        );
      }
    }
    const layerNames = stringAttr(root, 'layer_names') ?? [];
    const layers = new Map<string, KerasH5Weight[]>();
    for (const layerName of layerNames) {
      const group = root.get(layerName);
      if (!(group instanceof h5wasm.Group)) {
        throw new UserError(`${fileOrUrl}: layer '${layerName}' is listed in layer_names but has no group in the file`);
      }
      const weightNames = stringAttr(group, 'weight_names') ?? [];
      const weights: KerasH5Weight[] = [];
      for (const weightName of weightNames) {
        const ds = group.get(weightName);
        if (!(ds instanceof h5wasm.Dataset)) {
          throw new UserError(`${fileOrUrl}: weight '${layerName}/${weightName}' is listed but missing from the file`);
        }
        weights.push({
          name: weightName,
          shape: ds.shape ?? [],
          values: toFloat32(ds, `${fileOrUrl}: ${layerName}/${weightName}`),
        });
      }
      if (weights.length > 0) layers.set(layerName, weights);
    }
    const attr = (name: string) => {
      const v = stringAttr(root, name) ?? stringAttr(file!, name);
      return v?.[0];
    };
    return { kind, kerasVersion: attr('keras_version'), backend: attr('backend'), layerNames, layers };
  } finally {
    file?.close();
    await cleanup();
  }
}

export interface LoadKerasH5Options {
  /** Skip layers whose weight count or shapes differ from the model's (Keras' skip_mismatch) instead of failing. */
  skipMismatch?: boolean;
  /** Leave model layers that have no weights in the file at their current values instead of failing. */
  allowMissing?: boolean;
}

export interface LoadKerasH5Result {
  /** Model layers whose weights were set from the file. */
  loaded: string[];
  /** Layers skipped because of a mismatch (only with skipMismatch), with the reason. */
  skipped: { layer: string; reason: string }[];
  /** Model layers with weights that the file does not have (only with allowMissing). */
  missing: string[];
  /** File layers with weights that the model has no layer for. */
  unused: string[];
}

/**
 * Groups the file's weights by the layer they belong to. A nested model saved as one layer
 * (e.g. group 'vgg16' with weight names 'block1_conv1/kernel:0') is split into its inner layers
 * by the weight name's layer component.
 */
function weightsByLayer(file: KerasH5Weights, modelLayerNames: Set<string>): Map<string, KerasH5Weight[]> {
  const out = new Map<string, KerasH5Weight[]>();
  for (const [name, weights] of file.layers) {
    if (modelLayerNames.has(name)) {
      out.set(name, weights);
      continue;
    }
    const inner = new Map<string, KerasH5Weight[]>();
    for (const w of weights) {
      const parts = w.name.split('/');
      const key = parts.length >= 2 ? parts[parts.length - 2] : name;
      inner.set(key, [...(inner.get(key) ?? []), w]);
    }
    if (inner.size > 1 || !inner.has(name)) {
      for (const [k, v] of inner) if (!out.has(k)) out.set(k, v);
    } else {
      out.set(name, weights);
    }
  }
  return out;
}

/**
 * Loads a Keras HDF5 weight file into `model` by layer name (nested models included). Fails, naming
 * the layers, when a model layer is missing from the file or a shape differs (expected vs found),
 * unless allowMissing / skipMismatch say otherwise. Nothing is assigned when it fails.
 */
export async function loadKerasH5Weights(
  model: tf.LayersModel,
  fileOrUrl: string | KerasH5Weights,
  options: LoadKerasH5Options = {},
): Promise<LoadKerasH5Result> {
  const file = typeof fileOrUrl === 'string' ? await readKerasH5Weights(fileOrUrl) : fileOrUrl;
  const source = typeof fileOrUrl === 'string' ? fileOrUrl : 'Keras weight file';
  const targets = leafLayers(model).filter((l) => l.weights.length > 0);
  const byLayer = weightsByLayer(file, new Set(targets.map((l) => l.name)));
  const result: LoadKerasH5Result = { loaded: [], skipped: [], missing: [], unused: [] };
  const assignments: { layer: tf.layers.Layer; values: KerasH5Weight[] }[] = [];
  const errors: string[] = [];
  for (const layer of targets) {
    const found = byLayer.get(layer.name);
    if (!found) {
      result.missing.push(layer.name);
      continue;
    }
    let problem: string | undefined;
    if (found.length !== layer.weights.length) {
      problem = `layer '${layer.name}' (${layer.getClassName()}) expects ${layer.weights.length} weights (${layer.weights.map((w) => w.originalName.split('/').pop()).join(', ')}), the file has ${found.length} (${found.map((w) => w.name).join(', ')})`;
    } else {
      for (let i = 0; i < found.length; i++) {
        const want = layer.weights[i].shape;
        const got = found[i].shape;
        if (want.length !== got.length || want.some((d, j) => d !== got[j])) {
          problem = `layer '${layer.name}' weight ${i} '${found[i].name}': expected shape [${want.join(', ')}], found [${got.join(', ')}]`;
          break;
        }
      }
    }
    if (problem) {
      if (options.skipMismatch) result.skipped.push({ layer: layer.name, reason: problem });
      else errors.push(problem);
      continue;
    }
    assignments.push({ layer, values: found });
  }
  if (result.missing.length > 0 && !options.allowMissing) {
    const have = [...byLayer.keys()];
    errors.unshift(
      `${result.missing.length} model layer(s) have no weights in the file: ${result.missing.slice(0, 20).join(', ')}${result.missing.length > 20 ? ', …' : ''} (the file has: ${have.slice(0, 20).join(', ')}${have.length > 20 ? `, … ${have.length} layers` : ''})`,
    );
  }
  if (errors.length > 0) {
    throw new UserError(`${source}: cannot load weights into model '${model.name}': ${errors.join('; ')}`);
  }
  for (const { layer, values } of assignments) {
    const tensors = values.map((w, i) => tf.tensor(w.values, w.shape, 'float32'));
    layer.setWeights(tensors);
    tf.dispose(tensors);
    result.loaded.push(layer.name);
  }
  const used = new Set(targets.map((l) => l.name));
  result.unused = [...byLayer.keys()].filter((k) => !used.has(k));
  return result;
}
