// Architecture diagrams like keras.utils.plot_model(show_shapes=True): one box per layer ("name: ClassName" over
// its input and output shapes), laid out by Graphviz (the @hpcc-js/wasm-graphviz WebAssembly build, offline).
import { join } from 'node:path';
import { Graphviz } from '@hpcc-js/wasm-graphviz';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { readJsonFile, writeFileAtomic } from './run-dir.js';

/** A tensor shape as tfjs reports it (null for the batch dimension), or a list of them for multi-output layers. */
export type Shape = (number | null)[] | (number | null)[][];

/** A Keras/tfjs layers topology: model.json's `modelTopology` (or its `model_config`). */
export interface ModelTopology {
  class_name: string;
  config: unknown;
  [key: string]: unknown;
}

/**
 * Output shapes by layer name. Pass `model.layers.map((l) => [l.name, l.outputShape])` from a built tfjs model,
 * or leave it out and the shapes are computed by deserialising the topology with tfjs (no weights needed).
 */
export type ShapeMap = Record<string, Shape> | Map<string, Shape> | Iterable<readonly [string, Shape]>;

export interface ModelDiagramOptions {
  /** Show each layer's input and output shapes, like plot_model(show_shapes=True). Default true. */
  showShapes?: boolean;
  /** Output shapes by layer name; computed from the topology when omitted. */
  shapes?: ShapeMap;
  /** 'TB' (default, as Keras) or 'LR'. */
  rankdir?: 'TB' | 'LR';
  /** PNG resolution in dots per inch (default 96, Keras' default). */
  dpi?: number;
}

export interface ModelDiagram {
  dot: string;
  svg: string;
  png: Buffer;
  /** Layer names in drawing order (an input node `<first>_input` is added for Sequential models, as Keras does). */
  layers: string[];
  /** Why shapes could not be computed, when they could not (the diagram is then drawn without them). */
  shapeError?: string;
}

interface DiagramNode {
  name: string;
  className: string;
  inputs: string[];
  /** Known without inference (InputLayer / batch_input_shape). */
  declaredShape?: Shape;
}

const MODEL_CLASSES = new Set(['Sequential', 'Model', 'Functional']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Accepts a whole model.json, its `modelTopology`, or a Keras `model_config`, and returns the model's config. */
export function normalizeTopology(input: unknown, where = 'model topology'): ModelTopology {
  let t = input;
  if (typeof t === 'string') {
    // tfjs' model.toJSON() returns the topology as a JSON string by default.
    try {
      t = JSON.parse(t);
    } catch (err) {
      throw new UserError(`${where}: a string topology must be JSON (${(err as Error).message})`);
    }
  }
  if (isObject(t) && isObject(t.modelTopology)) t = t.modelTopology;
  if (isObject(t) && isObject(t.model_config)) t = t.model_config;
  if (!isObject(t) || typeof t.class_name !== 'string' || t.config === undefined) {
    throw new UserError(
      `${where}: not a Keras/tfjs layers topology (expected { class_name, config } or a model.json with "modelTopology")`,
    );
  }
  if (!MODEL_CLASSES.has(t.class_name)) {
    throw new UserError(`${where}: top-level class "${t.class_name}" is not a model (Sequential, Model or Functional)`);
  }
  return t as ModelTopology;
}

function layerName(layer: Record<string, unknown>, where: string): string {
  const cfg = isObject(layer.config) ? layer.config : {};
  const name = typeof layer.name === 'string' ? layer.name : cfg.name;
  if (typeof name !== 'string' || !name)
    throw new UserError(`${where}: a layer of class ${String(layer.class_name)} has no name`);
  return name;
}

function declaredInputShape(cfg: Record<string, unknown>): Shape | undefined {
  const batch = cfg.batch_input_shape ?? cfg.batchInputShape ?? cfg.batch_shape;
  if (Array.isArray(batch)) return batch as Shape;
  const input = cfg.input_shape ?? cfg.inputShape;
  if (Array.isArray(input)) return [null, ...(input as (number | null)[])];
  return undefined;
}

/** Names of the layers feeding one functional layer, from Keras 2/tfjs (`[[name, node, tensor, kwargs]]`) or Keras 3 inbound nodes. */
function inboundNames(inbound: unknown): string[] {
  const names: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      if (typeof v[0] === 'string' && typeof v[1] === 'number') {
        names.push(v[0]);
        return;
      }
      v.forEach(walk);
    } else if (isObject(v)) {
      if (Array.isArray(v.keras_history) && typeof v.keras_history[0] === 'string') {
        names.push(v.keras_history[0]);
        return;
      }
      Object.values(v).forEach(walk);
    }
  };
  walk(inbound);
  return [...new Set(names)];
}

function graphNodes(topology: ModelTopology): DiagramNode[] {
  const where = `model "${isObject(topology.config) ? String(topology.config.name ?? '') : ''}"`;
  const cfg = topology.config;
  const layers = (Array.isArray(cfg) ? cfg : isObject(cfg) ? cfg.layers : undefined) as unknown;
  if (!Array.isArray(layers)) throw new UserError(`${where}: config has no "layers" list`);
  const nodes: DiagramNode[] = [];
  if (topology.class_name === 'Sequential') {
    let previous: string | undefined;
    layers.forEach((layer, i) => {
      if (!isObject(layer) || typeof layer.class_name !== 'string')
        throw new UserError(`${where}: layer ${i} has no class_name`);
      const name = layerName(layer, where);
      const lcfg = isObject(layer.config) ? layer.config : {};
      if (i === 0 && layer.class_name !== 'InputLayer') {
        // Keras draws the implicit input of a Sequential model as its own InputLayer box.
        const shape =
          declaredInputShape(lcfg) ?? (MODEL_CLASSES.has(layer.class_name) ? nestedInputShape(layer) : undefined);
        if (shape) {
          previous = `${name}_input`;
          nodes.push({ name: previous, className: 'InputLayer', inputs: [], declaredShape: shape });
        }
      }
      nodes.push({
        name,
        className: layer.class_name,
        inputs: previous ? [previous] : [],
        declaredShape: layer.class_name === 'InputLayer' ? declaredInputShape(lcfg) : undefined,
      });
      previous = name;
    });
  } else {
    layers.forEach((layer, i) => {
      if (!isObject(layer) || typeof layer.class_name !== 'string')
        throw new UserError(`${where}: layer ${i} has no class_name`);
      const lcfg = isObject(layer.config) ? layer.config : {};
      nodes.push({
        name: layerName(layer, where),
        className: layer.class_name,
        inputs: inboundNames(layer.inbound_nodes),
        declaredShape: layer.class_name === 'InputLayer' ? declaredInputShape(lcfg) : undefined,
      });
    });
  }
  return nodes;
}

/** The input shape of a nested model used as a layer (its first InputLayer or first layer's batch_input_shape). */
function nestedInputShape(layer: Record<string, unknown>): Shape | undefined {
  try {
    const inner = graphNodes(layer as ModelTopology);
    return inner.find((n) => n.declaredShape)?.declaredShape;
  } catch {
    return undefined;
  }
}

function toShapeRecord(shapes: ShapeMap): Map<string, Shape> {
  if (shapes instanceof Map) return new Map(shapes);
  if (typeof (shapes as Partial<Iterable<unknown>>)[Symbol.iterator] === 'function') {
    return new Map(shapes as Iterable<readonly [string, Shape]>);
  }
  return new Map(Object.entries(shapes as Record<string, Shape>));
}

/**
 * Output shapes of every layer, by deserialising the topology with tfjs (layers are built with freshly
 * initialised weights, then disposed; nested models report their own output shape).
 */
export async function inferOutputShapes(topology: ModelTopology): Promise<Map<string, Shape>> {
  const tf = await import('@tensorflow/tfjs');
  // Building the layers allocates their weights; on the cpu backend tfjs then advises installing tfjs-node,
  // which is noise for a report. Only that one message is held back, only during this call.
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (!String(args[0]).includes('looks like you are running TensorFlow.js in Node.js')) warn(...args);
  };
  let model: Awaited<ReturnType<typeof tf.models.modelFromJSON>>;
  try {
    model = await tf.models.modelFromJSON(structuredClone(topology) as never);
  } finally {
    console.warn = warn;
  }
  try {
    const shapes = new Map<string, Shape>();
    for (const layer of model.layers) shapes.set(layer.name, layer.outputShape as Shape);
    return shapes;
  } finally {
    model.dispose();
  }
}

/** Keras' notation: (None, 148, 148, 32); several tensors as a list. */
export function formatShape(shape: Shape | undefined): string {
  if (!shape) return '?';
  const one = (s: (number | null)[]) =>
    `(${s.map((d) => (d === null ? 'None' : String(d))).join(', ')}${s.length === 1 ? ',' : ''})`;
  if (shape.length > 0 && Array.isArray(shape[0])) return `[${(shape as (number | null)[][]).map(one).join(', ')}]`;
  return one(shape as (number | null)[]);
}

/** Escapes text for a Graphviz record label. */
function recordText(s: string): string {
  return s.replace(/[\\{}|<>"]/g, (c) => `\\${c}`);
}

let graphvizPromise: Promise<Graphviz> | undefined;
function graphviz(): Promise<Graphviz> {
  graphvizPromise ??= Graphviz.load();
  return graphvizPromise;
}

/** Graphviz DOT source for a topology (shapes by layer name, omitted when `shapes` is undefined). */
export function modelDot(topology: ModelTopology, shapes?: Map<string, Shape>, rankdir: 'TB' | 'LR' = 'TB'): string {
  const nodes = graphNodes(topology);
  const ids = new Map(nodes.map((n, i) => [n.name, `layer${i}`]));
  const outputShape = (n: DiagramNode): Shape | undefined => shapes?.get(n.name) ?? n.declaredShape;
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const lines = [
    `digraph "${recordText(String((isObject(topology.config) && topology.config.name) || 'model'))}" {`,
    `  graph [rankdir=${rankdir}, nodesep=0.3, ranksep=0.35, bgcolor=white];`,
    // Courier's metrics are what Graphviz estimates text with; any monospace font renders it at the same width.
    '  node [shape=record, fontname="Courier", fontsize=11, style=filled, fillcolor=white, penwidth=1];',
    '  edge [arrowsize=0.7];',
  ];
  for (const node of nodes) {
    const title = recordText(`${node.name}: ${node.className}`);
    let label = title;
    if (shapes !== undefined) {
      const inputs = node.inputs.map((i) => byName.get(i)).filter((n): n is DiagramNode => !!n);
      const inShapes = inputs.map((n) => outputShape(n)).filter((s): s is Shape => !!s);
      const inText =
        node.className === 'InputLayer'
          ? formatShape(outputShape(node))
          : inShapes.length === 0
            ? '?'
            : inShapes.length === 1
              ? formatShape(inShapes[0])
              : `[${inShapes.map((s) => formatShape(s)).join(', ')}]`;
      label = `{${title}|{input:|output:}|{${recordText(inText)}|${recordText(formatShape(outputShape(node)))}}}`;
    }
    const nested = MODEL_CLASSES.has(node.className) ? ', fillcolor="#eef3fb"' : '';
    lines.push(`  ${ids.get(node.name)} [label="${label}"${nested}];`);
  }
  for (const node of nodes) {
    for (const input of node.inputs) {
      const from = ids.get(input);
      if (from) lines.push(`  ${from} -> ${ids.get(node.name)};`);
    }
  }
  lines.push('}');
  return lines.join('\n');
}

/** librsvg (through sharp) renders at most 32767 pixels a side. */
const MAX_PNG_SIDE = 32000;

/**
 * Graphviz sizes the SVG in points; at `dpi` the PNG matches what Keras' pydot would produce. A very deep model
 * (MobileNetV2 has 155 layers in a column) is rendered at a lower resolution so the PNG stays within limits.
 */
async function rasterize(svg: string, dpi: number): Promise<Buffer> {
  const size = /<svg[^>]*\swidth="([\d.]+)pt"[^>]*\sheight="([\d.]+)pt"/.exec(svg);
  const longest = size ? Math.max(Number(size[1]), Number(size[2])) : 0;
  // sharp scales by density/72 and librsvg converts points at the same density, so pixels = pt * (density/72)^2.
  const pixelsPerPoint = longest > 0 ? Math.min(dpi / 72, MAX_PNG_SIDE / longest) : dpi / 72;
  return sharp(Buffer.from(svg), { density: 72 * Math.sqrt(pixelsPerPoint), limitInputPixels: false })
    .png()
    .toBuffer();
}

/**
 * An architecture diagram like `keras.utils.plot_model(model, show_shapes=True)`: Sequential and functional
 * models, a nested model (such as a convolutional base inside a Sequential) drawn as one box.
 * Shapes come from `options.shapes` or, when omitted, from deserialising the topology with tfjs; if that
 * fails (an unknown custom layer), the diagram is drawn without shapes and `shapeError` says why.
 */
export async function modelDiagram(
  topologyOrModelJson: unknown,
  options: ModelDiagramOptions = {},
): Promise<ModelDiagram> {
  const topology = normalizeTopology(topologyOrModelJson);
  const showShapes = options.showShapes ?? true;
  let shapes: Map<string, Shape> | undefined;
  let shapeError: string | undefined;
  if (showShapes) {
    if (options.shapes) shapes = toShapeRecord(options.shapes);
    else {
      try {
        shapes = await inferOutputShapes(topology);
      } catch (err) {
        shapeError = `shapes not computed: ${(err as Error).message.split('\n')[0]}`;
        shapes = new Map();
      }
    }
  }
  const dpi = options.dpi ?? 96;
  const dot = modelDot(topology, shapes, options.rankdir ?? 'TB');
  const svg = (await graphviz()).dot(dot, 'svg');
  const png = await rasterize(svg, dpi);
  return { dot, svg, png, layers: graphNodes(topology).map((n) => n.name), ...(shapeError ? { shapeError } : {}) };
}

export interface ModelViewsOptions extends ModelDiagramOptions {
  /** Keras-style summary text to write beside the diagram as summary.txt. */
  summary?: string;
}

/**
 * Writes `<outDir>/model.svg`, `<outDir>/model.png` and `<outDir>/model.dot` (and `summary.txt` when a summary is
 * given) from a model.json path, a parsed model.json or a topology; returns the written paths.
 */
export async function writeModelViews(
  model: string | unknown,
  outDir: string,
  options: ModelViewsOptions = {},
): Promise<string[]> {
  let source: unknown = model;
  let where = 'model topology';
  if (typeof model === 'string') {
    source = await readJsonFile(model);
    where = model;
  }
  const diagram = await modelDiagram(normalizeTopology(source, where), options);
  const files: [string, string | Buffer][] = [
    ['model.svg', diagram.svg],
    ['model.png', diagram.png],
    ['model.dot', diagram.dot],
  ];
  if (options.summary !== undefined) files.push(['summary.txt', options.summary]);
  const written: string[] = [];
  for (const [name, data] of files) {
    const path = join(outDir, name);
    await writeFileAtomic(path, data);
    written.push(path);
  }
  return written;
}
