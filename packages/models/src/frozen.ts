// A fast inference path for frozen conv bases: the layers graph compiled into a flat program of tf ops in
// which every inference-mode BatchNormalization is folded into the preceding convolution's weights and bias,
// a following ReLU / ReLU6 becomes the fused op's activation, and a ZeroPadding2D that only feeds a 'valid'
// convolution becomes that convolution's explicit padding. tfjs-layers runs MobileNetV2's
// Conv → BatchNorm → ReLU6 as three passes over memory (it fuses only relu/linear/elu into a conv, and never
// a following BatchNorm); tf.fused.conv2d / tf.fused.depthwiseConv2d with bias and 'relu6' do it in one.
// Every layer type the compiler does not know runs through the layer itself, so the program always computes
// what model.predict computes.
import * as tf from '@tensorflow/tfjs';
import { UserError } from '@catdog/errors';

type Layer = tf.layers.Layer;
type SymbolicTensor = tf.SymbolicTensor;
type Kwargs = Record<string, unknown>;

/** The parts of a tfjs-layers Node this compiler reads (tfjs-layers does not export the class). */
interface GraphNode {
  outboundLayer: Layer;
  inputTensors: SymbolicTensor[];
  outputTensors: SymbolicTensor[];
  callArgs?: Kwargs;
}

type FusedActivation = 'linear' | 'relu' | 'relu6';

export interface FrozenBaseStats {
  /** Convolutions run as one fused op (Conv2D and DepthwiseConv2D). */
  convolutions: number;
  /** BatchNormalization layers folded into the preceding convolution. */
  foldedBatchNorms: number;
  /** ReLU / ReLU6 layers (or Activation layers) fused into the preceding convolution. */
  fusedActivations: number;
  /** ZeroPadding2D layers turned into the following convolution's explicit padding. */
  foldedPaddings: number;
  /** Layers run with plain tf ops by the compiler (Add, ReLU, ZeroPadding2D, pooling, …). */
  direct: number;
  /** Names of the layers run by calling the layer itself (types this compiler does not know). */
  fallbacks: string[];
}

export interface CompileFrozenBaseOptions {
  /**
   * Turn a ZeroPadding2D that only feeds a 'valid' convolution into the convolution's explicit padding. Default:
   * on the wasm and cpu backends (checked by the tests); elsewhere the padding runs as tf.pad, since explicit
   * padding in depthwise convolutions depends on the backend's kernels (libtensorflow's, for tfjs-node).
   */
  foldPadding?: boolean;
}

/** Backends whose (fused) conv and depthwise conv kernels take explicit padding (computeConv2DInfo), tested. */
const PADDING_BACKENDS = new Set(['wasm', 'cpu']);

export interface FrozenBase {
  /** The model's input shape, batch first (null where any size goes). */
  readonly inputShape: (number | null)[];
  /** The model's output shapes, batch first. */
  readonly outputShapes: (number | null)[][];
  readonly stats: FrozenBaseStats;
  /**
   * model.predict(x) for the whole batch at once (the model in inference mode). Returns one tensor, or one per
   * output for a model with several. The caller owns (and disposes) the result; nothing else stays allocated.
   */
  predict(x: tf.Tensor): tf.Tensor | tf.Tensor[];
  /** Releases the folded weights. The model itself is not touched. */
  dispose(): void;
}

interface Op {
  name: string;
  inputs: number[];
  outputs: number[];
  run(inputs: tf.Tensor[]): tf.Tensor[];
}

const CONV_CLASSES = new Set(['Conv2D', 'DepthwiseConv2D']);
const FUSABLE = new Set<string>(['linear', 'relu', 'relu6']);

function className(layer: Layer): string {
  return layer.getClassName();
}

function nodeOf(t: SymbolicTensor): GraphNode {
  const nodes = (t.sourceLayer as unknown as { inboundNodes: GraphNode[] }).inboundNodes;
  const node = nodes[t.nodeIndex];
  if (!node) throw new Error(`compileFrozenBase: tensor '${t.name}' has no producing node`);
  return node;
}

/** The activation a ReLU or Activation layer computes, when a fused convolution can compute it too. */
function activationOfLayer(layer: Layer): FusedActivation | null {
  const config = layer.getConfig();
  if (className(layer) === 'ReLU') {
    const max = config['maxValue'] as number | null | undefined;
    if (max == null) return 'relu';
    if (max === 6) return 'relu6';
    return null;
  }
  if (className(layer) === 'Activation') {
    const a = config['activation'];
    return a === 'relu' || a === 'relu6' || a === 'linear' ? a : null;
  }
  return null;
}

function isChannelsLast(config: tf.serialization.ConfigDict): boolean {
  const f = config['dataFormat'];
  return f == null || f === 'channelsLast';
}

function pair(v: unknown): [number, number] {
  if (typeof v === 'number') return [v, v];
  const a = v as number[];
  return [a[0], a.length > 1 ? a[1] : a[0]];
}

/** Folded weights of one convolution (+ BatchNorm + activation + explicit padding). */
interface ConvPlan {
  layer: Layer;
  depthwise: boolean;
  strides: [number, number];
  dilations: [number, number];
  pad: 'valid' | 'same' | [[number, number], [number, number], [number, number], [number, number]];
  activation: FusedActivation;
  batchNorm: Layer | null;
}

/** Kernel and bias of the fused op: the layer's own variables, or BatchNorm-folded copies (kept until dispose). */
function foldWeights(plan: ConvPlan, owned: tf.Tensor[]): { filter: tf.Tensor4D; bias?: tf.Tensor1D } {
  const weights = plan.layer.getWeights(); // [kernel, bias?]: the variables themselves, not copies
  const kernel = weights[0] as tf.Tensor4D;
  const useBias = plan.layer.getConfig()['useBias'] !== false;
  const bias = useBias ? (weights[1] as tf.Tensor1D) : undefined;
  const bn = plan.batchNorm;
  if (!bn) return { filter: kernel, bias };
  const config = bn.getConfig();
  const epsilon = (config['epsilon'] as number | undefined) ?? 1e-3;
  const scale = config['scale'] !== false;
  const center = config['center'] !== false;
  // BatchNormalization's weights in tfjs-layers order: gamma (if scale), beta (if center), moving mean, moving variance.
  const w = bn.getWeights();
  let i = 0;
  const gamma = scale ? w[i++] : null;
  const beta = center ? w[i++] : null;
  const mean = w[i++];
  const variance = w[i++];
  const folded = tf.tidy(() => {
    // y = gamma · (conv + b − mean) / sqrt(var + eps) + beta = conv · s + ((b − mean) · s + beta)
    let s = tf.rsqrt(tf.add(variance, epsilon));
    if (gamma) s = tf.mul(s, gamma);
    let b = tf.mul(bias ? tf.sub(bias, mean) : tf.neg(mean), s);
    if (beta) b = tf.add(b, beta);
    // Conv2D kernels are [kh, kw, in, out]; depthwise ones [kh, kw, in, multiplier], output channel k being
    // input channel ⌊k / multiplier⌋: the per-output-channel scale reshapes onto the last one or two axes.
    const [, , cin, last] = kernel.shape;
    const filter = tf.mul(kernel, tf.reshape(s, plan.depthwise ? [1, 1, cin, last] : [1, 1, 1, last]));
    return { filter: filter as tf.Tensor4D, bias: b as tf.Tensor1D };
  });
  owned.push(folded.filter, folded.bias);
  return folded;
}

function convOp(plan: ConvPlan, input: number, output: number, name: string, owned: tf.Tensor[]): Op {
  const { filter, bias } = foldWeights(plan, owned);
  const { strides, dilations, pad, activation } = plan;
  return {
    name,
    inputs: [input],
    outputs: [output],
    run: ([x]) => [
      plan.depthwise
        ? // The typings omit explicit padding, which the op and the wasm/cpu kernels accept (computeConv2DInfo).
          tf.fused.depthwiseConv2d({
            x: x as tf.Tensor4D,
            filter,
            strides,
            pad: pad as 'valid',
            dilations,
            dataFormat: 'NHWC',
            bias,
            activation,
          })
        : tf.fused.conv2d({
            x: x as tf.Tensor4D,
            filter,
            strides,
            pad,
            dilations,
            dataFormat: 'NHWC',
            bias,
            activation,
          }),
    ],
  };
}

interface Graph {
  inputIds: number[];
  outputIds: number[];
  ops: Op[];
  owned: tf.Tensor[];
  stats: FrozenBaseStats;
  /** Uses of each tensor id by the ops (outputs add one each), to free intermediates as soon as possible. */
  uses: Map<number, number>;
  children: Graph[];
}

/** The nodes between inputs and outputs, in topological order, and who consumes each tensor. */
function walkGraph(
  inputSet: Set<number>,
  outputs: SymbolicTensor[],
): { order: GraphNode[]; soleConsumer(t: SymbolicTensor): GraphNode | null } {
  // Depth-first post-order from the outputs.
  const order: GraphNode[] = [];
  const visited = new Set<GraphNode>();
  const consumers = new Map<number, GraphNode[]>();
  const visit = (t: SymbolicTensor) => {
    if (inputSet.has(t.id)) return;
    const node = nodeOf(t);
    if (visited.has(node)) return;
    if (className(node.outboundLayer) === 'InputLayer' || node.inputTensors.length === 0) {
      throw new UserError(`compileFrozenBase: output depends on '${t.name}', which is not one of the model's inputs`);
    }
    visited.add(node);
    // Iterative enough for MobileNetV2 (~150 deep); recursion depth is the graph's longest path.
    for (const i of node.inputTensors) {
      visit(i);
      const list = consumers.get(i.id) ?? [];
      list.push(node);
      consumers.set(i.id, list);
    }
    order.push(node);
  };
  for (const o of outputs) visit(o);
  const outputIdSet = new Set(outputs.map((o) => o.id));
  /** The single node that consumes tensor t, when t feeds nothing else and is not an output. */
  const soleConsumer = (t: SymbolicTensor): GraphNode | null => {
    if (outputIdSet.has(t.id)) return null;
    const list = consumers.get(t.id) ?? [];
    return list.length === 1 && list[0].inputTensors.length === 1 ? list[0] : null;
  };
  return { order, soleConsumer };
}

/** A convolution this compiler fuses: channels-last, 'valid' or 'same' padding, one input, a fusable activation. */
function convFusable(node: GraphNode): boolean {
  const layer = node.outboundLayer;
  if (!CONV_CLASSES.has(className(layer))) return false;
  const c = layer.getConfig();
  return (
    isChannelsLast(c) &&
    (c['padding'] === 'valid' || c['padding'] === 'same') &&
    node.inputTensors.length === 1 &&
    FUSABLE.has(c['activation'] as string)
  );
}

interface Compilation {
  options: Required<CompileFrozenBaseOptions>;
  inputSet: Set<number>;
  soleConsumer(t: SymbolicTensor): GraphNode | null;
  stats: FrozenBaseStats;
  owned: tf.Tensor[];
  /** Nodes folded into an earlier op (BatchNorm, activation). */
  absorbed: Set<GraphNode>;
  children: Graph[];
}

/** A ZeroPadding2D whose only consumer is a 'valid' convolution this compiler fuses: its pads go into the conv. */
function paddingFoldable(node: GraphNode, c: Compilation): boolean {
  if (!c.options.foldPadding) return false;
  if (!isChannelsLast(node.outboundLayer.getConfig())) return false;
  const next = c.soleConsumer(node.outputTensors[0]);
  return next != null && convFusable(next) && next.outboundLayer.getConfig()['padding'] === 'valid';
}

/** A fusable convolution with the ZeroPadding2D before it, and the BatchNorm and activation after it, as one op. */
function fusedConvOp(node: GraphNode, c: Compilation): Op {
  const layer = node.outboundLayer;
  const config = layer.getConfig();
  let input = node.inputTensors[0];
  let pad: ConvPlan['pad'] = config['padding'] as 'valid' | 'same';
  if (pad === 'valid') {
    const prev = nodeOf(input);
    if (!c.inputSet.has(input.id) && className(prev.outboundLayer) === 'ZeroPadding2D' && paddingFoldable(prev, c)) {
      const p = prev.outboundLayer.getConfig()['padding'] as [[number, number], [number, number]];
      pad = [[0, 0], p[0], p[1], [0, 0]];
      input = prev.inputTensors[0];
      c.stats.foldedPaddings++;
    }
  }
  let activation = config['activation'] as FusedActivation;
  let out = node.outputTensors[0];
  let batchNorm: Layer | null = null;
  if (activation === 'linear') {
    const next = c.soleConsumer(out);
    if (next && className(next.outboundLayer) === 'BatchNormalization') {
      const axis = next.outboundLayer.getConfig()['axis'];
      if (
        axis === -1 ||
        axis === 3 ||
        (Array.isArray(axis) && axis.length === 1 && (axis[0] === -1 || axis[0] === 3))
      ) {
        batchNorm = next.outboundLayer;
        c.absorbed.add(next);
        out = next.outputTensors[0];
        c.stats.foldedBatchNorms++;
      }
    }
    const after = c.soleConsumer(out);
    const act = after ? activationOfLayer(after.outboundLayer) : null;
    if (after && act) {
      activation = act;
      c.absorbed.add(after);
      out = after.outputTensors[0];
      if (act !== 'linear') c.stats.fusedActivations++;
    }
  }
  const plan: ConvPlan = {
    layer,
    depthwise: className(layer) === 'DepthwiseConv2D',
    strides: pair(config['strides'] ?? 1),
    dilations: pair(config['dilationRate'] ?? 1),
    pad,
    activation,
    batchNorm,
  };
  c.stats.convolutions++;
  return convOp(plan, input.id, out.id, layer.name, c.owned);
}

/** A nested model (a base inside a bigger model): compiled too, run as one op. */
function nestedModelOp(node: GraphNode, model: tf.LayersModel, c: Compilation): Op {
  const child = compileGraph(model.inputs, model.outputs, c.options);
  c.children.push(child);
  for (const key of Object.keys(c.stats) as (keyof FrozenBaseStats)[]) {
    if (key === 'fallbacks') c.stats.fallbacks.push(...child.stats.fallbacks);
    else c.stats[key] += child.stats[key];
  }
  return {
    name: model.name,
    inputs: node.inputTensors.map((t) => t.id),
    outputs: node.outputTensors.map((t) => t.id),
    run: (xs) => runGraph(child, xs),
  };
}

/** Anything else: the layer itself, in inference mode, exactly as model.predict calls it. */
function fallbackOp(node: GraphNode, layer: Layer): Op {
  const kwargs: Kwargs = { ...(node.callArgs ?? {}), training: false };
  return {
    name: layer.name,
    inputs: node.inputTensors.map((t) => t.id),
    outputs: node.outputTensors.map((t) => t.id),
    run: (xs) =>
      tf.tidy(() => {
        const y = layer.apply(xs.length === 1 ? xs[0] : xs, kwargs) as tf.Tensor | tf.Tensor[];
        return Array.isArray(y) ? y : [y];
      }),
  };
}

function compileGraph(
  inputs: SymbolicTensor[],
  outputs: SymbolicTensor[],
  options: Required<CompileFrozenBaseOptions>,
): Graph {
  const inputIds = inputs.map((t) => t.id);
  const inputSet = new Set(inputIds);
  const { order, soleConsumer } = walkGraph(inputSet, outputs);
  const c: Compilation = {
    options,
    inputSet,
    soleConsumer,
    stats: { convolutions: 0, foldedBatchNorms: 0, fusedActivations: 0, foldedPaddings: 0, direct: 0, fallbacks: [] },
    owned: [],
    absorbed: new Set<GraphNode>(),
    children: [],
  };
  const ops: Op[] = [];
  for (const node of order) {
    if (c.absorbed.has(node)) continue;
    const layer = node.outboundLayer;
    const kind = className(layer);
    // A foldable ZeroPadding2D is emitted with its convolution (the conv reads the padding's input instead).
    if (kind === 'ZeroPadding2D' && paddingFoldable(node, c)) continue;
    if (convFusable(node)) {
      ops.push(fusedConvOp(node, c));
      continue;
    }
    const direct = directOp(node, layer, kind, layer.getConfig());
    if (direct) {
      ops.push(direct);
      c.stats.direct++;
    } else if (layer instanceof tf.LayersModel && node.inputTensors.length === layer.inputs.length) {
      ops.push(nestedModelOp(node, layer, c));
    } else {
      c.stats.fallbacks.push(`${layer.name} (${kind})`);
      ops.push(fallbackOp(node, layer));
    }
  }
  const uses = new Map<number, number>();
  for (const op of ops) for (const id of op.inputs) uses.set(id, (uses.get(id) ?? 0) + 1);
  return {
    inputIds,
    outputIds: outputs.map((o) => o.id),
    ops,
    owned: c.owned,
    stats: c.stats,
    uses,
    children: c.children,
  };
}

/** Layers simple enough to run as the plain tf op they are (same op the layer would call, less overhead). */
function directOp(node: GraphNode, layer: Layer, kind: string, config: tf.serialization.ConfigDict): Op | null {
  const inputs = node.inputTensors.map((t) => t.id);
  const outputs = node.outputTensors.map((t) => t.id);
  const op = (run: (xs: tf.Tensor[]) => tf.Tensor): Op => ({
    name: layer.name,
    inputs,
    outputs,
    run: (xs) => [run(xs)],
  });
  if (outputs.length !== 1) return null;
  switch (kind) {
    case 'Add':
      return op((xs) => (xs.length === 2 ? tf.add(xs[0], xs[1]) : tf.addN(xs)));
    case 'ReLU': {
      const act = activationOfLayer(layer);
      if (act === 'relu') return op(([x]) => tf.relu(x));
      if (act === 'relu6') return op(([x]) => tf.relu6(x));
      return null;
    }
    case 'Activation': {
      const act = activationOfLayer(layer);
      if (act === 'relu') return op(([x]) => tf.relu(x));
      if (act === 'relu6') return op(([x]) => tf.relu6(x));
      return null;
    }
    case 'ZeroPadding2D': {
      if (!isChannelsLast(config)) return null;
      const p = config['padding'] as [[number, number], [number, number]];
      return op(([x]) => tf.pad(x, [[0, 0], p[0], p[1], [0, 0]]));
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      if (!isChannelsLast(config) || (config['padding'] !== 'valid' && config['padding'] !== 'same')) return null;
      const pool = pair(config['poolSize']);
      const strides = pair(config['strides'] ?? config['poolSize']);
      const padding = config['padding'] as 'valid' | 'same';
      return kind === 'MaxPooling2D'
        ? op(([x]) => tf.maxPool(x as tf.Tensor4D, pool, strides, padding))
        : op(([x]) => tf.avgPool(x as tf.Tensor4D, pool, strides, padding));
    }
    default:
      return null;
  }
}

/** Runs a compiled graph, freeing every intermediate tensor after its last use (and everything on error). */
function runGraph(graph: Graph, inputs: tf.Tensor[]): tf.Tensor[] {
  const values = new Map<number, tf.Tensor>();
  const left = new Map(graph.uses);
  const fed = new Set<tf.Tensor>(inputs);
  graph.inputIds.forEach((id, i) => values.set(id, inputs[i]));
  const outputIds = new Set(graph.outputIds);
  try {
    for (const op of graph.ops) {
      const xs = op.inputs.map((id) => {
        const v = values.get(id);
        if (!v) throw new Error(`compileFrozenBase: internal error (no value for the input of '${op.name}')`);
        return v;
      });
      // An op handing back one of its inputs (an identity layer) gets a copy: the input may be freed below.
      const ys = op.run(xs).map((y) => (xs.includes(y) ? tf.clone(y) : y));
      op.outputs.forEach((id, i) => values.set(id, ys[i]));
      for (const id of op.inputs) {
        const n = (left.get(id) ?? 0) - 1;
        left.set(id, n);
        const v = values.get(id)!;
        if (n === 0 && !outputIds.has(id) && !fed.has(v)) {
          v.dispose();
          values.delete(id);
        }
      }
    }
    // An output that is also an input (or repeated) is cloned, so the caller can dispose every result.
    const seen = new Set<tf.Tensor>();
    return graph.outputIds.map((id) => {
      const v = values.get(id)!;
      if (fed.has(v) || seen.has(v)) return tf.clone(v);
      seen.add(v);
      return v;
    });
  } catch (err) {
    for (const [id, v] of values) if (!fed.has(v) && !outputIds.has(id)) v.dispose();
    for (const id of outputIds) {
      const v = values.get(id);
      if (v && !fed.has(v)) v.dispose();
    }
    throw err;
  }
}

function disposeGraph(graph: Graph): void {
  tf.dispose(graph.owned);
  graph.owned.length = 0;
  for (const c of graph.children) disposeGraph(c);
}

/**
 * Compiles a frozen (inference-only) layers model, functional or sequential, into a fast forward pass: each
 * BatchNormalization after a Conv2D / DepthwiseConv2D is folded into the conv's kernel and bias, a following
 * ReLU / ReLU6 becomes the fused op's activation, and a ZeroPadding2D feeding a 'valid' conv becomes its explicit
 * padding; other layers run as plain tf ops, or through the layer itself when the compiler does not know them.
 *
 * The folded weights are a snapshot taken now: compile again after changing the model's weights (unfolded
 * convolutions read the model's variables directly, so dispose the FrozenBase before the model).
 */
export function compileFrozenBase(model: tf.LayersModel, options: CompileFrozenBaseOptions = {}): FrozenBase {
  if (model.inputs.length !== 1)
    throw new UserError(`compileFrozenBase: '${model.name}' has ${model.inputs.length} inputs; one expected`);
  const graph = compileGraph(model.inputs, model.outputs, {
    foldPadding: options.foldPadding ?? PADDING_BACKENDS.has(tf.getBackend()),
  });
  const inputShape = model.inputs[0].shape as (number | null)[];
  let disposed = false;
  return {
    inputShape,
    outputShapes: model.outputs.map((o) => o.shape as (number | null)[]),
    stats: graph.stats,
    predict(x: tf.Tensor): tf.Tensor | tf.Tensor[] {
      if (disposed) throw new Error(`compileFrozenBase: '${model.name}' was disposed`);
      if (x.rank !== inputShape.length || inputShape.some((d, i) => i > 0 && d != null && d !== x.shape[i])) {
        throw new UserError(
          `${model.name}: expected input of shape [${inputShape.map((d) => d ?? 'batch')}], got [${x.shape}]`,
        );
      }
      const xs = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
      try {
        const ys = runGraph(graph, [xs]);
        return ys.length === 1 ? ys[0] : ys;
      } finally {
        if (xs !== x) xs.dispose();
      }
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      disposeGraph(graph);
    },
  };
}
