// Training kernels for @tensorflow/tfjs-backend-wasm.
//
// The wasm backend (4.22) lacks Conv2DBackpropFilter and both depthwise backprop kernels, and its
// Conv2DBackpropInput is a naive loop ~10× slower than the forward conv. Here the convolution
// gradients are rewritten as forward convolutions so that they run on the backend's own XNNPACK
// conv (the fastest code in the binary):
//   dx = conv(dy with zeros inserted between rows/cols for stride > 1, filter flipped in space and
//        with in/out channels swapped), padded so the output has the input's size;
//   dW = conv(x transposed to [Cin, H, W, B], dy transposed to [Ho, Wo, B, Cout]) with the forward
//        stride as dilation, giving [Cin, kh, kw, Cout], transposed back to [kh, kw, Cin, Cout].
// Where channel counts allow, hand-written SIMD loops (../wasm/training-kernels.wat) replace these
// rewrites and the forward conv itself: per filter tap and output row, with a block of the result
// in registers, shared with worker threads in the threaded build (faster than XNNPACK for all
// three on the book's convnet, 2–4× for dW, whose XNNPACK "filter" is all of dy). MaxPoolGrad
// (2×2, stride 2), the ReLU gradient and bias gradients (Sum over leading axes) have SIMD loops too,
// shared between threads as well.
// The forward Conv2D / FusedConv2D with 3×3 filters at stride 1 run as Winograd convolutions (fewer
// multiplies than any direct loop; see the section below), and so do their filter gradients where the
// layer's plan says.
// Depthwise gradients are cheap (one MAC per output element and tap) and run as tight loops over
// channels-last data directly on the wasm heap.
// Anything outside what these rewrites cover (NCHW data, unusual explicit padding) falls back to
// the backend's original kernel, so registering never makes a case fail that worked before.
// The kernels live in kernels/, one family per module (conv, winograd, winograd-filter-grad, depthwise, pooling, sum,
// matmul, activations, batchnorm, identity, slice, rmsprop; base holds the shared plumbing); this module
// registers them and answers what runs where. Registering also routes Conv2D layers in training through
// FusedConv2D and a gradient of its own (fused-conv-training.ts).
import * as tf from '@tensorflow/tfjs';
import { routeConv2DTrainingThroughFusedKernel } from './fused-conv-training.js';
import { simdKernels, simdWorkers } from './simd-kernels.js';
import {
  CLIP_GRAD_KERNEL,
  RELU_GRAD_KERNEL,
  clipGrad,
  clipGradConfig,
  reluGrad,
  reluGradConfig,
} from './kernels/activations.js';
import { BACKEND, type KernelFn, type WasmBackend, originals } from './kernels/base.js';
import { fusedBatchNorm, fusedBatchNormGrad } from './kernels/batchnorm.js';
import { conv2D, conv2DBackpropFilter, conv2DBackpropInput, fusedConv2D } from './kernels/conv.js';
import { depthwiseBackpropFilter, depthwiseBackpropInput } from './kernels/depthwise.js';
import { identity } from './kernels/identity.js';
import { batchMatMul, fusedMatMul } from './kernels/matmul.js';
import { maxPoolGrad } from './kernels/pooling.js';
import { RMSPROP_KERNEL, rmspropUpdate } from './kernels/rmsprop.js';
import { slice } from './kernels/slice.js';
import { sum } from './kernels/sum.js';
import { winogradTileSize } from './kernels/winograd.js';

// ---------------------------------------------------------------------------------------------

const TRAINING_KERNELS: Array<{ kernelName: string; kernelFunc: KernelFn }> = [
  { kernelName: 'Conv2D', kernelFunc: conv2D },
  { kernelName: 'FusedConv2D', kernelFunc: fusedConv2D },
  { kernelName: 'Conv2DBackpropInput', kernelFunc: conv2DBackpropInput },
  { kernelName: 'Conv2DBackpropFilter', kernelFunc: conv2DBackpropFilter },
  { kernelName: 'DepthwiseConv2dNativeBackpropInput', kernelFunc: depthwiseBackpropInput },
  { kernelName: 'DepthwiseConv2dNativeBackpropFilter', kernelFunc: depthwiseBackpropFilter },
  { kernelName: 'MaxPoolGrad', kernelFunc: maxPoolGrad },
  { kernelName: 'Sum', kernelFunc: sum },
  { kernelName: 'BatchMatMul', kernelFunc: batchMatMul },
  { kernelName: '_FusedMatMul', kernelFunc: fusedMatMul },
  { kernelName: 'Identity', kernelFunc: identity },
  { kernelName: 'Slice', kernelFunc: slice },
  { kernelName: 'FusedBatchNorm', kernelFunc: fusedBatchNorm },
  { kernelName: RELU_GRAD_KERNEL, kernelFunc: reluGrad },
  { kernelName: CLIP_GRAD_KERNEL, kernelFunc: clipGrad },
  { kernelName: RMSPROP_KERNEL, kernelFunc: rmspropUpdate as unknown as KernelFn },
];

let registered = false;

/**
 * Whether the hand-written SIMD kernels (MaxPoolGrad 2×2, bias-gradient Sum) run on the current
 * wasm backend's memory; when false those kernels use JS loops. Call after the backend is ready.
 */
export function wasmSimdKernelsLoaded(): boolean {
  const backend = tf.findBackend(BACKEND) as unknown as { wasm?: object } | null;
  return backend?.wasm != null && simdKernels(backend.wasm) != null;
}

/**
 * Worker threads ready to share the SIMD filter gradient with the main thread (threaded wasm
 * build only: one less than the backend's thread count). Starts them on first call; they become
 * ready asynchronously, and until then the main thread does all the work.
 */
export function wasmSimdWorkers(): number {
  const backend = tf.findBackend(BACKEND) as unknown as { wasm?: { tfjs?: { getThreadsCount?(): number } } } | null;
  if (!backend?.wasm) return 0;
  const threads = backend.wasm.tfjs?.getThreadsCount?.() ?? 1;
  return simdWorkers(backend.wasm, threads - 1).length;
}

/**
 * The Winograd tile size (3, 4 or 6) the wasm Conv2D / FusedConv2D kernels use for this convolution
 * (NHWC, float32), or 0 when they run it otherwise (direct SIMD loop or XNNPACK). Call after the
 * wasm backend is ready: the choice depends on its thread count and on CATDOG_WASM_WINOGRAD.
 */
export function wasmWinogradTileSize(
  xShape: [number, number, number, number],
  filterShape: [number, number, number, number],
  strides: number | [number, number],
  pad: 'valid' | 'same' | number,
  dilations: number | [number, number] = 1,
): 0 | 3 | 4 | 6 {
  const backend = tf.findBackend(BACKEND) as unknown as WasmBackend | null;
  if (!backend?.wasm || !simdKernels(backend.wasm)) return 0;
  return winogradTileSize(backend, tf.backend_util.computeConv2DInfo(xShape, filterShape, strides, dilations, pad));
}

/** Names of the kernels this package registers (or replaces) for the wasm backend. */
export const wasmTrainingKernelNames: readonly string[] = TRAINING_KERNELS.map((k) => k.kernelName);

/**
 * Registers the training kernels for 'wasm' (idempotent). Call after importing
 * @tensorflow/tfjs-backend-wasm, whose own registrations are replaced where they exist.
 */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  for (const { kernelName, kernelFunc } of TRAINING_KERNELS) {
    const existing = tf.getKernel(kernelName, BACKEND);
    if (existing) {
      originals.set(kernelName, existing.kernelFunc as unknown as KernelFn);
      tf.unregisterKernel(kernelName, BACKEND);
    }
    // The original's setupFunc (binding its C function) must still run at backend init for the fallback.
    tf.registerKernel({
      kernelName,
      backendName: BACKEND,
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
      setupFunc: existing?.setupFunc,
    });
  }
  tf.registerGradient(fusedBatchNormGrad);
  tf.registerGradient(reluGradConfig);
  tf.registerGradient(clipGradConfig);
  routeConv2DTrainingThroughFusedKernel();
  registered = true;
}
