// Worker of the SIMD kernels' thread pool (see simd-kernels.ts): instantiates the kernels on the
// tfjs wasm backend's shared memory and runs the calls the main thread lists for it.
// Control words (Int32Array on a SharedArrayBuffer): 0 job sequence (main → worker), 1 job done
// (worker → main), 2 byte offset of the job's argument tuples in wasm memory, 3 tuple count,
// 4 0 ok / 1 failed, 5 ready (set once the kernels are instantiated), 6 kernel (0 filter
// gradient, 1 input gradient).
import { workerData } from 'node:worker_threads';

const { memory, module, control } = workerData;
const ctrl = new Int32Array(control);
const kernels = new WebAssembly.Instance(module, { env: { memory } }).exports;
const ARGS = 7; // int32 arguments per kernel call
Atomics.store(ctrl, 5, 1);

let seen = 0;
for (;;) {
  while (Atomics.load(ctrl, 0) === seen) Atomics.wait(ctrl, 0, seen); // a new job, never a spurious wake-up
  seen = Atomics.load(ctrl, 0);
  try {
    const count = ctrl[3];
    const args = new Int32Array(memory.buffer, ctrl[2], count * ARGS);
    const run = ctrl[6] === 1 ? kernels.conv_input_grad_run : kernels.conv_filter_grad_run;
    for (let k = 0; k < count * ARGS; k += ARGS) run(args[k], args[k + 1], args[k + 2], args[k + 3], args[k + 4], args[k + 5], args[k + 6]);
    ctrl[4] = 0;
  } catch {
    ctrl[4] = 1;
  }
  Atomics.store(ctrl, 1, seen);
  Atomics.notify(ctrl, 1);
}
