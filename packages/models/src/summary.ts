// Keras-style model.summary() text (the Keras 2 layout printed throughout the book).
import * as tf from '@tensorflow/tfjs';
import { countParams } from './layers.js';

type Node = { inboundLayers: tf.layers.Layer[]; nodeIndices: number[]; tensorIndices: number[] };
type LayerInternals = tf.layers.Layer & { inboundNodes: Node[] };
type ModelInternals = tf.LayersModel & { nodesByDepth?: Record<string, Node[]> };

function printRow(fields: string[], positions: number[]): string {
  let line = '';
  fields.forEach((field, i) => {
    if (i > 0) line = line.slice(0, -1) + ' ';
    line += field;
    line = line.slice(0, positions[i]);
    line += ' '.repeat(positions[i] - line.length);
  });
  return line.trimEnd();
}

function shapeText(layer: tf.layers.Layer): string {
  try {
    const s = layer.outputShape;
    const one = (shape: (number | null)[]) =>
      `(${shape.map((d) => (d == null ? 'None' : String(d))).join(', ')}${shape.length === 1 ? ',' : ''})`;
    if (Array.isArray(s[0]) || s[0] === undefined)
      return (s as (number | null)[][]).length === 1 ? one((s as (number | null)[][])[0]) : 'multiple';
    return one(s as (number | null)[]);
  } catch {
    return 'multiple';
  }
}

function relevantNodes(model: ModelInternals): Set<Node> {
  const nodes = new Set<Node>();
  for (const depth of Object.values(model.nodesByDepth ?? {})) for (const n of depth) nodes.add(n);
  return nodes;
}

function isSequentialLike(model: ModelInternals): boolean {
  if (model instanceof tf.Sequential) return true;
  for (const depth of Object.values(model.nodesByDepth ?? {})) {
    if (depth.length > 1 || (depth.length === 1 && depth[0].inboundLayers.length > 1)) return false;
  }
  return true;
}

const commas = (n: number) => n.toLocaleString('en-US');

/**
 * The model's summary as Keras 2 prints it: one row per layer (a nested model is one row, as the book's
 * `vgg16 (Model)`), output shapes with None for the batch, parameter counts, and Total / Trainable /
 * Non-trainable totals (from the current trainable flags). Functional models with branches get Keras'
 * "Connected to" column.
 */
export function modelSummary(model: tf.LayersModel): string {
  const m = model as ModelInternals;
  const sequential = isSequentialLike(m);
  const lineLength = sequential ? 65 : 98;
  const positions = (sequential ? [0.45, 0.85, 1] : [0.33, 0.55, 0.67, 1]).map((p) => Math.floor(lineLength * p));
  const header = ['Layer (type)', 'Output Shape', 'Param #', ...(sequential ? [] : ['Connected to'])];
  const lines: string[] = [
    `Model: "${model.name}"`,
    '_'.repeat(lineLength),
    printRow(header, positions),
    '='.repeat(lineLength),
  ];
  const nodes = relevantNodes(m);
  model.layers.forEach((layer, i) => {
    const fields = [`${layer.name} (${layer.getClassName()})`, shapeText(layer), String(layer.countParams())];
    if (sequential) {
      lines.push(printRow(fields, positions));
    } else {
      const connections: string[] = [];
      for (const node of (layer as LayerInternals).inboundNodes) {
        if (nodes.size > 0 && !nodes.has(node)) continue;
        node.inboundLayers.forEach((inbound, j) =>
          connections.push(`${inbound.name}[${node.nodeIndices[j]}][${node.tensorIndices[j]}]`),
        );
      }
      lines.push(printRow([...fields, connections[0] ?? ''], positions));
      for (const more of connections.slice(1)) lines.push(printRow(['', '', '', more], positions));
    }
    lines.push((i === model.layers.length - 1 ? '=' : '_').repeat(lineLength));
  });
  const { total, trainable, nonTrainable } = countParams(model);
  lines.push(
    `Total params: ${commas(total)}`,
    `Trainable params: ${commas(trainable)}`,
    `Non-trainable params: ${commas(nonTrainable)}`,
    '_'.repeat(lineLength),
  );
  return lines.join('\n') + '\n';
}
