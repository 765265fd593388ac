// A job that needs 1.5 s of running time on a worker thread, joined with joinJob: test/backend/suspend.test.ts
// suspends this process (SIGSTOP) while it waits, for longer than the job timeout, and expects the join to succeed.
import { Worker } from 'node:worker_threads';
import { joinJob } from '../../packages/backend/src/simd-kernels.js';

const ctrl = new Int32Array(new SharedArrayBuffer(8 * 4));
// The worker counts only time it was running (slices under 100 ms), as a real kernel's progress would.
const worker = new Worker(
  `const c = new Int32Array(require('node:worker_threads').workerData);
   let ran = 0, last = performance.now();
   while (ran < 1500) { const now = performance.now(); if (now - last < 100) ran += now - last; last = now; }
   Atomics.store(c, 1, 1); Atomics.notify(c, 1);`,
  { eval: true, workerData: ctrl.buffer },
);
worker.unref();
process.stdout.write('joining\n');
joinJob({ ctrl, seq: 1 });
process.stdout.write('joined\n');
