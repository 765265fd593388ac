// Child process of test/backend/autotune.test.ts: one forward convolution on wasm with $THREADS
// threads (after its SIMD workers are up, unless WAIT_FOR_WORKERS=0), then the kernel plans it ran, as JSON on stdout.
import * as tf from '@tensorflow/tfjs';
import { initBackend, kernelPlans, wasmSimdWorkers } from '@catdog/backend';

const threads = Number(process.env.THREADS ?? 1);
await initBackend({ backend: 'wasm', threads, log: () => {} });
const wait = process.env.WAIT_FOR_WORKERS !== '0'; // 0: the first convolution right away, as a trainer's
for (let i = 0; i < 200 && wait && threads > 1 && wasmSimdWorkers() < threads - 1; i++)
  await new Promise((r) => setTimeout(r, 50));
const x = tf.randomNormal([4, 20, 20, 32]);
const w = tf.randomNormal([3, 3, 32, 32]);
tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same').dataSync();
process.stdout.write(
  `${JSON.stringify(kernelPlans().map((p) => ({ family: p.family, plan: p.plan, source: p.source })))}\n`,
);
