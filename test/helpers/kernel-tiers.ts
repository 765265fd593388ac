// Run with node --allow-natives-syntax (test/backend/compile-tier.test.ts): prints, as JSON, whether the SIMD
// kernels' functions are V8's optimized code before their first call, and whether a module compiled afterwards
// still starts in the baseline compiler (the flags the loader turns off for its own compile are back).
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { simdKernels } from '../../packages/backend/src/simd-kernels.js';

const isTurboFan = new Function('f', 'return %IsTurboFanFunction(f)') as (f: unknown) => boolean;
const isLiftoff = new Function('f', 'return %IsLiftoffFunction(f)') as (f: unknown) => boolean;

await initBackend({ backend: 'wasm', log: () => {} });
const backend = tf.backend() as unknown as { wasm: object };
const kernels = simdKernels(backend.wasm);
if (!kernels) throw new Error('the SIMD kernels did not load');
const names = [
  'pointwise_run',
  'conv_filter_grad_run',
  'conv_input_grad_run',
  'winograd_tiles',
  'rmsprop_run',
] as const;
// (module (func (export "f") (result i32) (i32.const 1)))
const probe = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 127, 3, 2, 1, 0, 7, 5, 1, 1, 102, 0, 0, 10, 6, 1, 4, 0, 65, 1, 11,
]);
const f = new WebAssembly.Instance(new WebAssembly.Module(probe), {}).exports.f as () => number;
f();
process.stdout.write(
  JSON.stringify({
    kernels: Object.fromEntries(
      names.map((n) => [n, { turbofan: isTurboFan(kernels[n]), liftoff: isLiftoff(kernels[n]) }]),
    ),
    later: { turbofan: isTurboFan(f), liftoff: isLiftoff(f) },
  }) + '\n',
);
