// Worker of the SIMD kernels' thread pool (see simd-kernels.ts): instantiates the kernels on the
// tfjs wasm backend's shared memory and runs the calls the main thread lists for it.
// Control words (Int32Array on a SharedArrayBuffer): 0 job sequence (main → worker), 1 job done
// (worker → main), 2 byte offset of the job in wasm memory (layout in simd-kernels.ts, startJob),
// 4 0 ok / 1 failed, 5 ready (set once the kernels are instantiated), 6 kernel (index in RUNS,
// as JOB_KERNELS), 7 base added to each call's last argument.
import { workerData } from 'node:worker_threads';

const { memory, module, control } = workerData;
const ctrl = new Int32Array(control);
const kernels = new WebAssembly.Instance(module, { env: { memory } }).exports;
const ARGS = 7; // int32 arguments per kernel call
// Indexed by the kernel word (JOB_KERNELS in simd-kernels.ts).
const RUNS = [
  kernels.conv_filter_grad_run,
  kernels.conv_input_grad_run,
  kernels.winograd_tiles,
  kernels.winograd_filter_job,
  kernels.rmsprop_run,
  kernels.dw_input_grad_run,
  kernels.dw_filter_grad_run,
  kernels.winograd_filter_grad_tiles,
  kernels.winograd_filter_grad_out,
  kernels.pointwise_run,
  kernels.relu_grad,
  kernels.sum_rows,
  kernels.maxpool_grad_2x2_rows,
  kernels.abt_run,
];
Atomics.store(ctrl, 5, 1);
Atomics.notify(ctrl, 5);

let seen = 0;
for (;;) {
  while (Atomics.load(ctrl, 0) === seen) Atomics.wait(ctrl, 0, seen); // a new job, never a spurious wake-up
  seen = Atomics.load(ctrl, 0);
  try {
    const heap = new Int32Array(memory.buffer); // after any growth of the memory
    const job = ctrl[2] >> 2;
    const base = ctrl[7];
    const run = RUNS[ctrl[6]];
    const chunks = heap[job + 1];
    const starts = job + 2;
    const calls = starts + chunks + 1;
    for (;;) {
      const c = Atomics.add(heap, job, 1);
      if (c >= chunks) break;
      for (let k = heap[starts + c], end = heap[starts + c + 1]; k < end; k++) {
        const a = calls + k * ARGS;
        run(heap[a], heap[a + 1], heap[a + 2], heap[a + 3], heap[a + 4], heap[a + 5], heap[a + 6] + base);
      }
    }
    ctrl[4] = 0;
  } catch {
    ctrl[4] = 1;
  }
  Atomics.store(ctrl, 1, seen);
  Atomics.notify(ctrl, 1);
}
