// Benchmark: the machine's 128-bit SIMD multiply-add peak, per core and on every core at once, and what the
// training kernels' product loop reaches on data in cache, as a share of that peak (packages/backend/README.md,
// "Where the time goes").
//
//   node --import tsx tools/bench/src/simd-peak.ts [--threads n] [--reps n]
//
// Ends with one line per measurement:
//   simd-peak fma gmacs_per_core=<x> threads=<n> gmacs_all=<y>
//   simd-peak pointwise <Ci>><Co> pixels=<n> gmacs=<x> of_peak=<share>
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Command } from 'commander';
import initWabt from 'wabt';
import { cpuModel, wasmFusedMultiplyAdd } from '@catdog/backend';
import { pointwisePixels } from '../../../packages/backend/src/kernels/conv.js';
import { positiveInt } from './args.js';

const here = dirname(fileURLToPath(import.meta.url));
const KERNELS = join(here, '..', '..', '..', 'packages', 'backend', 'wasm');
/** Independent accumulators of the peak loop: more than FMA latency × issue width (4 × 2) on current x86 cores. */
const CHAINS = 12;
const UNROLL = 4;

/** A loop of CHAINS independent f32x4 multiply-adds (relaxed_madd where the engine has it), UNROLL times per iteration. */
async function peakModule(fma: boolean): Promise<Uint8Array> {
  const madd = (a: string) =>
    fma
      ? `(f32x4.relaxed_madd (local.get ${a}) (local.get $x) (local.get $y))`
      : `(f32x4.add (f32x4.mul (local.get ${a}) (local.get $x)) (local.get $y))`;
  const accs = Array.from({ length: CHAINS }, (_, i) => `$a${i}`);
  const body = Array.from({ length: UNROLL }, () => accs.map((a) => `(local.set ${a} ${madd(a)})`).join(' ')).join(' ');
  const sum = accs.slice(1).reduce((e, a) => `(f32x4.add ${e} (local.get ${a}))`, `(local.get ${accs[0]})`);
  const wat = `(module (func (export "run") (param $n i32) (result f32) (local $i i32) (local $x v128) (local $y v128)
    ${accs.map((a) => `(local ${a} v128)`).join(' ')}
    (local.set $x (f32x4.splat (f32.const 0.999))) (local.set $y (f32x4.splat (f32.const 0.001)))
    (block $done (loop $next (br_if $done (i32.ge_u (local.get $i) (local.get $n))) ${body}
      (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $next)))
    (f32x4.extract_lane 0 ${sum})))`;
  const wabt = await initWabt();
  return wabt.parseWat('peak.wat', wat, { simd: true, relaxed_simd: fma }).toBinary({}).buffer;
}

/** Multiply-adds per second (G) of the peak loop on this thread, the best of `reps` runs of about `ms` each. */
const PEAK_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const run = new WebAssembly.Instance(new WebAssembly.Module(workerData.bytes), {}).exports.run;
const macsPerIter = ${CHAINS * UNROLL * 4};
let n = 1 << 16;
for (;;) { const t0 = performance.now(); run(n); if (performance.now() - t0 > 20) break; n *= 2; }
let best = 0;
for (let r = 0; r < workerData.reps; r++) {
  const t0 = performance.now(); run(n); const s = (performance.now() - t0) / 1000;
  best = Math.max(best, (n * macsPerIter) / s / 1e9);
}
parentPort.postMessage(best);`;

function peakOnThreads(bytes: Uint8Array, threads: number, reps: number): Promise<number[]> {
  return Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise<number>((resolve, reject) => {
          const w = new Worker(PEAK_SOURCE, { eval: true, workerData: { bytes, reps } });
          w.once('message', (g: number) => resolve(g));
          w.once('error', reject);
        }),
    ),
  );
}

/** The training kernels' pointwise loop (pointwise_run) on one chunk of pixels in cache, best of `reps` passes. */
function pointwiseInCache(fma: boolean, Ci: number, Co: number, pixels: number, reps: number): number {
  const bytes = readFileSync(join(KERNELS, `training-kernels${fma ? '-fma' : ''}.wasm`));
  const memory = new WebAssembly.Memory({ initial: 256, maximum: 65536 });
  const k = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports as {
    pointwise_run(x: number, n: number, Ci: number, w: number, Co: number, y: number, bias: number): void;
  };
  const f = new Float32Array(memory.buffer);
  for (let i = 0; i < f.length; i++) f[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  const x = 64;
  const w = x + pixels * Ci * 4 + 64;
  const y = w + Ci * Co * 4 + 64;
  const bias = y + pixels * Co * 4 + 64;
  const passes = Math.max(1, Math.round(2e8 / (pixels * Ci * Co)));
  let best = 0;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let p = 0; p < passes; p++) k.pointwise_run(x, pixels, Ci, w, Co, y, bias);
    const s = (performance.now() - t0) / 1000;
    best = Math.max(best, (passes * pixels * Ci * Co) / s / 1e9);
  }
  return best;
}

async function main(): Promise<void> {
  const program = new Command('simd-peak')
    .option('--threads <n>', 'threads for the all-cores peak', positiveInt, availableParallelism())
    .option('--reps <n>', 'runs per measurement (the best is kept)', positiveInt, 7)
    .parse();
  const { threads, reps } = program.opts<{ threads: number; reps: number }>();
  const fma = wasmFusedMultiplyAdd(); // (turns on relaxed SIMD on Node 20)
  console.log(
    `cpu: ${cpuModel()} (${availableParallelism()} logical CPUs); multiply-adds: ${fma ? 'fused (relaxed_madd)' : 'mul + add'}`,
  );
  const bytes = await peakModule(fma);
  const [one] = await peakOnThreads(bytes, 1, reps);
  const all = await peakOnThreads(bytes, threads, reps);
  const perCore = one!;
  console.log(
    `simd-peak fma gmacs_per_core=${perCore.toFixed(1)} threads=${threads} gmacs_all=${all.reduce((a, b) => a + b, 0).toFixed(1)}`,
  );
  // MobileNetV2's fine-tuned pointwise layers (224 px: 14×14 and 7×7 maps), one chunk as the forward runs them.
  for (const [Ci, Co] of [
    [96, 576],
    [576, 160],
    [160, 960],
    [960, 160],
    [960, 320],
    [320, 1280],
  ] as const) {
    const pixels = pointwisePixels(Ci);
    const g = pointwiseInCache(fma, Ci, Co, pixels, reps);
    console.log(
      `simd-peak pointwise ${Ci}>${Co} pixels=${pixels} gmacs=${g.toFixed(1)} of_peak=${(g / perCore).toFixed(2)}`,
    );
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
