// Saving and loading tfjs layers models and named weight sets on the local file system, atomically.
import * as tf from '@tensorflow/tfjs';
import { mkdir, readFile, rename, rm, writeFile, stat } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import { UserError } from '@catdog/errors';

/** Writes `data` to `file` through a temporary sibling and a rename, so readers never see half a file. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${Date.now()}.tmp`);
  await writeFile(tmp, data);
  await rename(tmp, file);
}

/** Replaces directory `dir` by a freshly written one (write into a temporary sibling, then swap). */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await fill(tmp);
  const old = `${dir}.old-${process.pid}-${Date.now()}`;
  let hadOld = false;
  try {
    await rename(dir, old);
    hadOld = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await rename(tmp, dir);
  if (hadOld) await rm(old, { recursive: true, force: true });
}

function toUint8(data: tf.io.WeightData): Uint8Array {
  const buf = Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data;
  return new Uint8Array(buf);
}

/** Saves `model` as `<dir>/model.json` + `<dir>/weights.bin` (tfjs layers format), atomically. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  await writeDirAtomic(dir, async (tmp) => {
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        const weights = toUint8(artifacts.weightData ?? new ArrayBuffer(0));
        await writeFile(join(tmp, 'weights.bin'), weights);
        const modelJson = {
          modelTopology: artifacts.modelTopology,
          format: artifacts.format ?? 'layers-model',
          generatedBy: artifacts.generatedBy,
          convertedBy: artifacts.convertedBy ?? null,
          trainingConfig: artifacts.trainingConfig,
          weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }],
        };
        await writeFile(join(tmp, 'model.json'), JSON.stringify(modelJson));
        return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
      }),
    );
  });
}

/** Loads a tfjs layers model from a local model.json (or a folder holding one). */
export async function loadModel(pathOrDir: string): Promise<tf.LayersModel> {
  let file = pathOrDir;
  try {
    if ((await stat(pathOrDir)).isDirectory()) file = join(pathOrDir, 'model.json');
  } catch {
    throw new UserError(`model not found: ${pathOrDir}`);
  }
  let json: tf.io.ModelJSON;
  try {
    json = JSON.parse(await readFile(file, 'utf8')) as tf.io.ModelJSON;
  } catch (err) {
    throw new UserError(`cannot read model ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (err as Error).message}`);
  }
  const dir = dirname(file);
  const specs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest ?? []) {
    specs.push(...group.weights);
    for (const p of group.paths) {
      const b = await readFile(join(dir, p));
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
    }
  }
  return tf.loadLayersModel(
    tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: specs, weightData: tf.io.concatenateArrayBuffers(buffers), format: json.format }),
  );
}

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
      for (const l of layer.layers) walk(l, `${prefix}${layer === (model as unknown as LayerLike) ? '' : `${layer.name}/`}`);
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

/** Writes every variable of `model` to `<dir>/<name>.bin` + `<name>.json`. */
export async function saveNamedWeights(model: tf.LayersModel, dir: string, name = 'weights'): Promise<void> {
  const map: tf.NamedTensorMap = {};
  for (const [k, v] of namedVariables(model)) map[k] = v.read();
  await saveTensorMap(map, dir, name);
}

export async function saveTensorMap(map: tf.NamedTensorMap | { name: string; tensor: tf.Tensor }[], dir: string, name: string): Promise<void> {
  const { data, specs } = await tf.io.encodeWeights(map);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${name}.bin`), new Uint8Array(data));
  await writeFile(join(dir, `${name}.json`), JSON.stringify(specs));
}

export async function readTensorMap(dir: string, name: string): Promise<tf.NamedTensorMap> {
  const specs = JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as tf.io.WeightsManifestEntry[];
  const b = await readFile(join(dir, `${name}.bin`));
  return tf.io.decodeWeights(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer, specs);
}

/** Loads weights written by saveNamedWeights into `model`; every variable of the model must be present. */
export async function loadNamedWeights(model: tf.LayersModel, dir: string, name = 'weights'): Promise<void> {
  const map = await readTensorMap(dir, name);
  try {
    assignNamedWeights(model, map);
  } finally {
    tf.dispose(Object.values(map));
  }
}

export function assignNamedWeights(model: tf.LayersModel, map: tf.NamedTensorMap): void {
  const vars = namedVariables(model);
  const missing = [...vars.keys()].filter((k) => !(k in map));
  if (missing.length) throw new UserError(`checkpoint does not match the model: missing ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ` and ${missing.length - 3} more` : ''}`);
  for (const [k, v] of vars) {
    const t = map[k];
    if (t.shape.join('x') !== v.shape.join('x')) throw new UserError(`checkpoint does not match the model: ${k} has shape [${t.shape}] in the checkpoint, [${v.shape}] in the model`);
  }
  for (const [k, v] of vars) v.write(map[k]);
}

/** A copy of every variable's value (for keep-best), to be released with tf.dispose. */
export function snapshotWeights(model: tf.LayersModel): tf.NamedTensorMap {
  const out: tf.NamedTensorMap = {};
  for (const [k, v] of namedVariables(model)) out[k] = tf.clone(v.read());
  return out;
}
