// Microbenchmark: ms per call of the wasm training kernels at the book's convnet layer shapes
// (batch 20, 150×150×3 input), median of several calls, so kernel changes can be compared
// back to back without running a whole training step.
//
//   node --import tsx tools/bench/src/wasm-kernels.ts [--threads n] [--reps n] [--batch n] [--kernels a,b]
//   node --import tsx tools/bench/src/wasm-kernels.ts --vgg16 [--threads n] [--reps n] [--batch n]
// CATDOG_WASM_SIMD_KERNELS=0 measures the same kernels without the package's SIMD loops;
// CATDOG_WASM_WINOGRAD=0 (or 4, 6) without (or forcing the tile of) the Winograd convolutions;
// CATDOG_KERNEL_PLAN=… (see packages/backend/README.md) times one plan of a family, e.g.
// CATDOG_KERNEL_PLAN=backprop-filter=direct-taps; the plan each convolution ran is printed.
// --vgg16: the FusedConv2D (conv + bias + relu, as feature extraction runs it) of each distinct
// convolution of VGG16's conv base at 150×150, and the total over its 13 layers.
import * as tf from '@tensorflow/tfjs';
import { cpuModel, initBackend, kernelPlans, wasmSimdWorkers } from '@catdog/backend';

/** The plans the convolutions of one per-image shape ran (`family=plan`), as the autotuner decided or was told. */
function plansOf(size: number, ci: number, co: number): string {
  const prefix = `${size}x${size}x${ci}>${co} `;
  const found = kernelPlans().filter((p) => p.shape.startsWith(prefix));
  return found.length
    ? found.map((p) => `${p.family}=${p.plan} (${p.source})`).join(', ')
    : 'no plan (one variant applies)';
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}
const threads = Number(arg('threads', '1'));
const reps = Number(arg('reps', '5'));
const B = Number(arg('batch', '20'));
const only = arg('kernels', 'Conv2D,Conv2DBackpropFilter,Conv2DBackpropInput,MaxPoolGrad,ReluGrad,BiasGrad').split(',');

// [input size, in channels, out channels] of the convnet's four 3×3 valid convolutions.
const LAYERS: Array<[number, number, number]> = [
  [150, 3, 32],
  [74, 32, 64],
  [36, 64, 128],
  [17, 128, 128],
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

function time(fn: () => tf.Tensor): number {
  tf.dispose(fn()); // warm-up (operator creation)
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const out = fn(); // wasm kernels are synchronous: no read-back (it would copy the output)
    ms.push(performance.now() - t0);
    out.dispose();
  }
  return median(ms);
}

await initBackend({ backend: 'wasm', threads, log: () => {} });
// The SIMD worker threads start asynchronously (and plans are tuned only once they are up).
for (let i = 0; i < 100 && threads > 1 && wasmSimdWorkers() < threads - 1; i++)
  await new Promise((r) => setTimeout(r, 50));
console.log(`cpu: ${cpuModel()}`);

if (process.argv.includes('--vgg16')) {
  // [input size, in channels, out channels, how many such layers] of VGG16's conv base ('same').
  const VGG16: Array<[number, number, number, number]> = [
    [150, 3, 64, 1],
    [150, 64, 64, 1],
    [75, 64, 128, 1],
    [75, 128, 128, 1],
    [37, 128, 256, 1],
    [37, 256, 256, 2],
    [18, 256, 512, 1],
    [18, 512, 512, 2],
    [9, 512, 512, 3],
  ];
  let total = 0;
  for (const [size, ci, co, layers] of VGG16) {
    const x = tf.randomUniform([B, size, size, ci], 0, 1) as tf.Tensor4D;
    const w = tf.randomUniform([3, 3, ci, co], -0.05, 0.05) as tf.Tensor4D;
    const bias = tf.randomUniform([co], -0.1, 0.1) as tf.Tensor1D;
    const ms = time(() => tf.fused.conv2d({ x, filter: w, bias, strides: 1, pad: 'same', activation: 'relu' }));
    const gflop = (2 * B * size * size * ci * co * 9) / 1e9;
    console.log(
      `vgg16 ${size}x${size}x${ci}->${co}${layers > 1 ? ` (×${layers})` : ''}: ${ms.toFixed(1)} ms, ` +
        `${((gflop / ms) * 1000).toFixed(0)} GFLOP/s direct-equivalent, ${plansOf(size, ci, co)}`,
    );
    total += ms * layers;
    tf.dispose([x, w, bias]);
  }
  console.log(`vgg16 conv layers total (threads=${threads}, batch ${B}): ${total.toFixed(0)} ms`);
  process.exit(0);
}
const totals = new Map<string, number>();
for (const [size, ci, co] of LAYERS) {
  const o = size - 2;
  const x = tf.randomUniform([B, size, size, ci], -1, 1) as tf.Tensor4D;
  const w = tf.randomUniform([3, 3, ci, co], -0.1, 0.1) as tf.Tensor4D;
  const dy = tf.randomUniform([B, o, o, co], -1, 1) as tf.Tensor4D;
  const y = tf.relu(tf.conv2d(x, w, 1, 'valid'));
  const p = tf.maxPool(y, 2, 2, 'valid');
  const dp = tf.randomUniform(p.shape, -1, 1);
  const row: string[] = [];
  const run = (name: string, fn: () => tf.Tensor) => {
    if (!only.includes(name)) return;
    const ms = time(fn);
    totals.set(name, (totals.get(name) ?? 0) + ms);
    row.push(`${name}=${ms.toFixed(1)}`);
  };
  const attrs = { strides: [1, 1], pad: 'valid', dataFormat: 'NHWC' };
  run('Conv2D', () => tf.conv2d(x, w, 1, 'valid'));
  run(
    'Conv2DBackpropFilter',
    () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape }) as tf.Tensor,
  );
  if (ci > 3)
    run(
      'Conv2DBackpropInput',
      () =>
        tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape }) as tf.Tensor,
    );
  run(
    'MaxPoolGrad',
    () =>
      tf
        .engine()
        .runKernel(
          'MaxPoolGrad',
          { dy: dp, input: y, output: p },
          { filterSize: [2, 2], strides: [2, 2], pad: 'valid' },
        ) as tf.Tensor,
  );
  // The gradients of the ReLU and of the bias that follow each conv, as tfjs computes them.
  run('ReluGrad', () => tf.grad((t: tf.Tensor) => tf.relu(t))(y, dy));
  run('BiasGrad', () => tf.sum(dy, [0, 1, 2]));
  console.log(`layer ${size}x${size}x${ci}->${co}: ${row.join(' ')}`);
  console.log(`  plans: ${plansOf(size, ci, co)}`);
  tf.dispose([x, w, dy, y, p, dp]);
}
console.log(`total (threads=${threads}, batch ${B}): ${[...totals].map(([k, v]) => `${k}=${v.toFixed(1)}`).join(' ')}`);
