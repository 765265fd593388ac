// Conv2D layers in training as one FusedConv2D kernel with a gradient of its own.
//
// tfjs-layers runs a Conv2D layer as tf.fused.conv2d(x, kernel, bias, activation). While gradients are recorded
// tfjs-core runs that unfused whenever the activation is not linear: Conv2D, then Add for the bias, then Relu, three
// passes and three activation-sized tensors kept for the backward pass (the book's convnet: 56 MB each for its
// first layer at batch 20). With a linear activation it does run FusedConv2D, but under a custom gradient that
// computes every input's gradient, including the input gradient of a network's first trained layer, which nobody
// reads (the model's input, or a frozen base's output).
//
// On wasm, Conv2D layers with a linear or ReLU activation run instead as one FusedConv2D kernel (ours: bias and
// ReLU applied in the stores of the Winograd or pointwise loops) recorded with the gradient below. Its input,
// filter and bias gradients are separate functions, so tfjs computes only those on the path to the trained
// weights. The gradient is tfjs-core's own formula: dy masked where the output is 0 (y > 0 exactly where the
// pre-activation is), then Conv2DBackpropInput, Conv2DBackpropFilter and the bias sum.
// CATDOG_WASM_FUSED_CONV_TRAINING=0 turns it off (tfjs-layers' own path), for comparisons.
import * as tf from '@tensorflow/tfjs';
import { RELU_GRAD_KERNEL } from './kernels/activations.js';
import { BACKEND } from './kernels/base.js';

type Activation = 'linear' | 'relu';

interface FusedConvAttrs {
  strides: [number, number];
  pad: 'valid' | 'same';
  dataFormat: 'NHWC';
  dilations: [number, number];
  dimRoundingMode?: string;
  activation: Activation;
}

/** The gradient of FusedConv2D as this module records it (tfjs-core never records FusedConv2D itself). */
export const fusedConv2DGradConfig: tf.GradConfig = {
  kernelName: 'FusedConv2D',
  inputsToSave: ['x', 'filter'],
  outputsToSave: [true],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    const [x, filter, y] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    const { strides, pad, dataFormat, dimRoundingMode, activation } = attrs as unknown as FusedConvAttrs;
    const engine = tf.engine();
    // Made here, not inside the functions below: tfjs runs each of those in its own tidy, which would dispose it
    // before the next one reads it. It lives until the end of the backward pass, as tfjs' own intermediate
    // gradients do.
    const g = dy as tf.Tensor4D;
    const dyAct = activation === 'relu' ? (engine.runKernel(RELU_GRAD_KERNEL, { dy: g, x: y }) as tf.Tensor4D) : g;
    const conv = (shape: Record<string, number[]>) =>
      ({ strides, pad, dataFormat, dimRoundingMode, ...shape }) as unknown as tf.NamedAttrMap;
    return {
      x: () =>
        engine.runKernel('Conv2DBackpropInput', { dy: dyAct, filter }, conv({ inputShape: x.shape })) as tf.Tensor,
      filter: () =>
        engine.runKernel('Conv2DBackpropFilter', { x, dy: dyAct }, conv({ filterShape: filter.shape })) as tf.Tensor,
      bias: () => tf.sum(dyAct, [0, 1, 2]),
    };
  },
};

interface ConvLayer {
  rank: number;
  dataFormat: string;
  padding: string;
  strides: number[];
  dilationRate: number[];
  activation: { getClassName(): string };
  kernel: { read(): tf.Tensor };
  bias: { read(): tf.Tensor } | null;
}

const ACTIVATIONS: Record<string, Activation> = { linear: 'linear', relu: 'relu' };

/** FusedConv2D's attributes for this layer and input, or null where tfjs-layers' own path must run it. */
function fusedAttrs(layer: ConvLayer, x: tf.Tensor): FusedConvAttrs | null {
  const activation = ACTIVATIONS[layer.activation.getClassName()];
  if (
    activation === undefined ||
    process.env.CATDOG_WASM_FUSED_CONV_TRAINING === '0' ||
    tf.getBackend() !== BACKEND ||
    // Only while gradients are recorded: otherwise tfjs-layers already runs FusedConv2D.
    (tf.engine().state as unknown as { gradientDepth: number }).gradientDepth === 0 ||
    layer.rank !== 2 ||
    layer.dataFormat !== 'channelsLast' ||
    (layer.padding !== 'valid' && layer.padding !== 'same') ||
    layer.dilationRate.some((d) => d !== 1) || // tfjs has no conv gradient with dilation either
    x.rank !== 4 ||
    x.dtype !== 'float32'
  ) {
    return null;
  }
  return {
    strides: [layer.strides[0]!, layer.strides[1]!],
    pad: layer.padding,
    dataFormat: 'NHWC',
    dilations: [1, 1],
    activation,
  };
}

let patched = false;

/** Routes training Conv2D layers through FusedConv2D and its gradient (idempotent; wasm only, decided per call). */
export function routeConv2DTrainingThroughFusedKernel(): void {
  if (patched) return;
  tf.registerGradient(fusedConv2DGradConfig);
  const conv2dClass = tf.layers.conv2d({ filters: 1, kernelSize: 1 }).constructor as {
    prototype: { call(this: ConvLayer, inputs: tf.Tensor | tf.Tensor[], kwargs: object): tf.Tensor | tf.Tensor[] };
  };
  const original = conv2dClass.prototype.call;
  conv2dClass.prototype.call = function (this: ConvLayer, inputs, kwargs) {
    const x = Array.isArray(inputs) && inputs.length === 1 ? inputs[0]! : inputs;
    const attrs = Array.isArray(x) ? null : fusedAttrs(this, x);
    if (!attrs) return original.call(this, inputs, kwargs);
    return tf.tidy(() => {
      const bias = this.bias?.read();
      const conv = { x: x as tf.Tensor, filter: this.kernel.read(), ...(bias ? { bias } : {}) };
      return tf.engine().runKernel('FusedConv2D', conv, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
    });
  };
  patched = true;
}
