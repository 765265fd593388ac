// Benchmark: ms per training step (and per forward batch) of the book's networks on the tfjs
// backends, next to PyTorch running the same networks with the same thread count in the same run.
//
//   node --import tsx tools/bench/src/train-step.ts [--quick] [--steps n] [--threads n]
//        [--cpu-bound-s s] [--no-cpu] [--no-torch] [--profile] [--networks a,b]
//
// Prints the CPU model and, per network, the kernel plan chosen for each convolution shape
// (autotuned at first use and cached per CPU model and thread count; see packages/backend/README.md),
// then ends with one line per network:
//   train-step <network> backend=wasm ms=<median> torch_ms=<median|none> ratio=<ms/torch_ms|none>
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { UsageError, reportError } from '@catdog/errors';
import * as tf from '@tensorflow/tfjs';
import {
  PLAN_CACHE_FILE,
  autotuneEnabled,
  cpuModel,
  initBackend,
  kernelPlans,
  planCacheDir,
  rmsprop,
  wasmSimdWorkers,
  type BackendRequest,
  type PlanRecord,
} from '@catdog/backend';
import { compileFrozenBase, loadMobileNetV2Base, setTrainableFrom, type FrozenBase } from '@catdog/models';
import { splitAtLayer } from '@catdog/training';
import { findTorchPython, torchMissing } from './peer-python.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
const MOBILENET_DIR =
  process.env.CATDOG_MOBILENET_V2_DIR ?? join(root, '..', 'shared', 'weights', 'mobilenet_v2_1.0_224');

export const NETWORKS = ['convnet', 'mobilenet_v2_finetune', 'mobilenet_v2_forward', 'vgg16_forward'] as const;
type Network = (typeof NETWORKS)[number];
const TRAINING: ReadonlySet<Network> = new Set(['convnet', 'mobilenet_v2_finetune']);
const FORWARD_PATHS = ['compiled', 'predict'] as const;
type ForwardPath = (typeof FORWARD_PATHS)[number];

interface Options {
  quick: boolean;
  steps?: number;
  batch: number;
  size: number;
  threads: number;
  cpu: boolean;
  cpuBoundS: number;
  torch: boolean;
  profile: boolean;
  /** Forward-only networks: the compiled frozen path feature extraction runs (default) or layers' model.predict. */
  forwardPath: ForwardPath;
  networks: Network[];
  backend: BackendRequest;
  /** Internal: measure one network on this process's backend and print JSON (used for cpu runs). */
  child?: Network;
}

// ---------------------------------------------------------------------------------------------
// Networks (tfjs layers, as the book builds them)

/** The book's small convnet (Deep Learning with Python, listing 5.5). */
function buildConvnet(size: number): tf.LayersModel {
  const m = tf.sequential();
  m.add(tf.layers.conv2d({ inputShape: [size, size, 3], filters: 32, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.conv2d({ filters: 64, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.conv2d({ filters: 128, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.conv2d({ filters: 128, kernelSize: 3, activation: 'relu' }));
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.flatten());
  m.add(tf.layers.dense({ units: 512, activation: 'relu' }));
  m.add(tf.layers.dense({ units: 1, activation: 'sigmoid' }));
  return m;
}

/** VGG16's conv base (random weights; timing only). */
function buildVgg16Base(size: number): tf.LayersModel {
  const m = tf.sequential();
  const blocks: Array<[number, number]> = [
    [64, 2],
    [128, 2],
    [256, 3],
    [512, 3],
    [512, 3],
  ];
  let first = true;
  for (const [filters, convs] of blocks) {
    for (let i = 0; i < convs; i++) {
      m.add(
        tf.layers.conv2d({
          ...(first ? { inputShape: [size, size, 3] } : {}),
          filters,
          kernelSize: 3,
          padding: 'same',
          activation: 'relu',
        }),
      );
      first = false;
    }
    m.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
  }
  return m;
}

/** Where the bench's fine-tuning starts: block_16 and Conv_1 train, as in the PyTorch peer. */
const FINETUNE_FROM = 'block_16_expand';

/**
 * MobileNetV2 1.0 base (loaded as the project loads it) with block_16 and Conv_1 trainable (BatchNorm in inference
 * mode, setTrainableFrom) + the book's head.
 */
async function buildMobilenetFinetune(size: number): Promise<tf.LayersModel> {
  const base = await loadMobileNetV2Base({ alpha: 1.0, from: MOBILENET_DIR, inputShape: [size, size, 3] });
  setTrainableFrom(base, FINETUNE_FROM);
  const x = tf.layers.flatten().apply(base.outputs[0]!) as tf.SymbolicTensor;
  const h = tf.layers.dense({ units: 256, activation: 'relu' }).apply(x) as tf.SymbolicTensor;
  const y = tf.layers.dense({ units: 1, activation: 'sigmoid' }).apply(h) as tf.SymbolicTensor;
  return tf.model({ inputs: base.inputs, outputs: y });
}

/**
 * As the finetune strategy trains on image batches: the frozen bottom (below FINETUNE_FROM) through
 * compileFrozenBase, and only the model above it (sharing the full model's layers) trained on its output.
 */
function splitFrozenBottom(model: tf.LayersModel): { bottom: FrozenBase; top: tf.LayersModel } {
  const { bottom, top } = splitAtLayer(model, FINETUNE_FROM, 'finetune');
  return { bottom: compileFrozenBase(bottom), top: top.model };
}

async function buildNetwork(network: Network, size: number): Promise<tf.LayersModel> {
  switch (network) {
    case 'convnet':
      return buildConvnet(size);
    case 'mobilenet_v2_finetune':
      return buildMobilenetFinetune(size);
    case 'mobilenet_v2_forward':
      // As the extract strategy loads it (@catdog/models: Keras' correct_pad at this size, 150 → 5×5×1280).
      return loadMobileNetV2Base({ alpha: 1.0, from: MOBILENET_DIR, inputShape: [size, size, 3] });
    case 'vgg16_forward':
      return buildVgg16Base(size);
  }
}

// ---------------------------------------------------------------------------------------------
// Measurement

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

interface Measurement {
  network: Network;
  backend: string;
  ms: number | null;
  samples: number[];
  note?: string;
}

async function measure(
  network: Network,
  opts: { batch: number; size: number; steps: number; profile: boolean; forwardPath: ForwardPath },
): Promise<Measurement> {
  const model = await buildNetwork(network, opts.size);
  const x = tf.randomUniform([opts.batch, opts.size, opts.size, 3], -1, 1);
  const y = tf.cast(tf.greater(tf.randomUniform([opts.batch, 1]), 0.5), 'float32');
  const training = TRAINING.has(network);
  // Feature extraction runs frozen bases through compileFrozenBase (BatchNorm folded, ReLU6 fused): time that.
  const frozen = !training && opts.forwardPath === 'compiled' ? compileFrozenBase(model) : null;
  // Fine-tuning on images trains only what is above the frozen bottom, which runs compiled (--forward-path predict:
  // the whole model through tfjs-layers, frozen layers included).
  const split =
    network === 'mobilenet_v2_finetune' && opts.forwardPath === 'compiled' ? splitFrozenBottom(model) : null;
  const trained = split?.top ?? model;
  if (training) {
    // RMSprop as the book compiles (lr 1e-4 for the convnet, 2e-5 when fine-tuning).
    const lr = network === 'convnet' ? 1e-4 : 2e-5;
    trained.compile({ optimizer: rmsprop(lr), loss: 'binaryCrossentropy', metrics: ['accuracy'] });
  }
  const step = async () => {
    if (split) {
      const a = split.bottom.predict(x) as tf.Tensor;
      await trained.trainOnBatch(a, y);
      a.dispose();
    } else if (training) {
      await model.trainOnBatch(x, y);
    } else {
      const out = (frozen ? frozen.predict(x) : model.predict(x)) as tf.Tensor;
      await out.data();
      out.dispose();
    }
  };
  await step(); // warm-up: allocations, XNNPACK operator creation, kernel plans (tuned here at first use)
  if (opts.profile) {
    const info = await tf.profile(step);
    const byKernel = new Map<string, { ms: number; n: number }>();
    for (const k of info.kernels) {
      const e = byKernel.get(k.name) ?? { ms: 0, n: 0 };
      e.ms += Number(k.kernelTimeMs);
      e.n++;
      byKernel.set(k.name, e);
    }
    const rows = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 15);
    console.error(`profile ${network} (${tf.getBackend()}):`);
    for (const [name, e] of rows) console.error(`  ${name.padEnd(40)} ${e.ms.toFixed(1).padStart(8)} ms  ×${e.n}`);
  }
  const samples: number[] = [];
  for (let i = 0; i < opts.steps; i++) {
    const t0 = performance.now();
    await step();
    samples.push(performance.now() - t0);
  }
  x.dispose();
  y.dispose();
  frozen?.dispose();
  split?.bottom.dispose();
  model.dispose();
  return { network, backend: tf.getBackend(), ms: median(samples), samples };
}

/** One measurement on the cpu backend in a child process, killed after `boundS` seconds. */
function measureCpuChild(network: Network, opts: Options): Promise<Measurement> {
  return new Promise((resolve) => {
    const args = [
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      '--child',
      network,
      '--backend',
      'cpu',
      '--steps',
      '1',
      '--batch',
      String(opts.batch),
      '--size',
      String(opts.size),
      '--forward-path',
      opts.forwardPath,
    ];
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.cpuBoundS * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as Measurement);
      else
        resolve({
          network,
          backend: 'cpu',
          ms: null,
          samples: [],
          note: `did not finish within ${opts.cpuBoundS} s (warm-up + 1 step)`,
        });
    });
  });
}

function measureTorch(opts: Options, steps: number): Record<string, number> | string {
  const py = findTorchPython(undefined, ['torch']);
  if (!py) return torchMissing(['torch']);
  const networks = opts.networks.join(',');
  const r = spawnSync(
    py,
    [
      join(here, 'train_step_torch.py'),
      '--threads',
      String(opts.threads),
      '--batch',
      String(opts.batch),
      '--size',
      String(opts.size),
      '--steps',
      String(steps),
      '--networks',
      networks,
      '--mobilenet-dir',
      MOBILENET_DIR,
    ],
    { encoding: 'utf8', maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) return `PyTorch run failed: ${(r.stderr || '').trim().split('\n').pop()}`;
  // its per-network samples, for the record
  for (const l of (r.stderr || '').split('\n')) if (/^torch \S+: /.test(l)) console.log(`  ${l}`);
  const line = r.stdout.trim().split('\n').pop() ?? '{}';
  return JSON.parse(line) as Record<string, number>;
}

// ---------------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench:train-step')
    .exitOverride()
    .option('--quick', 'fewer steps, no cpu backend runs', false)
    .option('--steps <n>', 'timed steps per network (default 5, 2 with --quick)', (v) => parseInt(v, 10))
    .option('--batch <n>', 'batch size', (v) => parseInt(v, 10), 20)
    .option('--size <n>', 'image size', (v) => parseInt(v, 10), 150)
    .option('--threads <n>', 'threads for wasm and PyTorch', (v) => parseInt(v, 10), availableParallelism())
    .option('--no-cpu', 'skip the pure-JS cpu backend runs')
    .option('--cpu-bound-s <s>', 'give up on a cpu backend run after this many seconds', (v) => parseFloat(v), 60)
    .option('--no-torch', 'skip the PyTorch peer')
    .option('--profile', 'print the slowest kernels of one step per network', false)
    .addOption(
      new Option(
        '--forward-path <path>',
        'frozen layers: compiled (BatchNorm folded, as the strategies run them) or predict (tfjs-layers)',
      )
        .choices(FORWARD_PATHS)
        .default('compiled'),
    )
    .addOption(new Option('--networks <list>', 'comma-separated networks').default(NETWORKS.join(',')))
    .addOption(new Option('--backend <name>').default('wasm').hideHelp())
    .addOption(new Option('--child <network>').hideHelp());
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.help'))
      return;
    throw new UsageError(err instanceof Error ? err.message.replace(/^error: /, '') : String(err));
  }
  const raw = program.opts();
  const networks = String(raw.networks)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean) as Network[];
  for (const n of networks)
    if (!NETWORKS.includes(n)) throw new UsageError(`unknown network '${n}' (expected ${NETWORKS.join(', ')})`);
  const opts: Options = {
    quick: raw.quick as boolean,
    steps: raw.steps as number | undefined,
    batch: raw.batch as number,
    size: raw.size as number,
    threads: raw.threads as number,
    cpu: (raw.cpu as boolean) && !(raw.quick as boolean),
    cpuBoundS: raw.cpuBoundS as number,
    torch: raw.torch as boolean,
    profile: raw.profile as boolean,
    forwardPath: raw.forwardPath as ForwardPath,
    networks,
    backend: raw.backend as BackendRequest,
    child: raw.child as Network | undefined,
  };
  const steps = opts.steps ?? (opts.quick ? 2 : 10);
  // PyTorch's step times here are bimodal (e.g. 104–254 ms for the same step), so it gets at least 10 steps:
  // a few seconds, and a median that does not flatter the ratio.
  const torchSteps = Math.max(steps, 10);

  if (opts.child) {
    await initBackend({ backend: opts.backend, threads: opts.threads, log: () => {} });
    const m = await measure(opts.child, {
      batch: opts.batch,
      size: opts.size,
      steps,
      profile: false,
      forwardPath: opts.forwardPath,
    });
    console.log(JSON.stringify(m));
    return;
  }

  const choice = await initBackend({ backend: 'wasm', threads: opts.threads, log: (l) => console.log(l) });
  console.log(`cpu: ${cpuModel()}`);
  console.log(
    `kernel plans: ${process.env.CATDOG_KERNEL_PLAN ? `CATDOG_KERNEL_PLAN=${process.env.CATDOG_KERNEL_PLAN}; ` : ''}` +
      (autotuneEnabled()
        ? `autotuned at first use, cached in ${join(planCacheDir(), PLAN_CACHE_FILE)}`
        : 'defaults (CATDOG_AUTOTUNE=0)'),
  );
  // Plans are tuned with all threads: wait for the SIMD worker threads before the first network.
  for (let i = 0; i < 100 && choice.threads > 1 && wasmSimdWorkers() < choice.threads - 1; i++)
    await new Promise((r) => setTimeout(r, 50));
  console.log(
    `batch ${opts.batch}, ${opts.size}×${opts.size}×3, ${steps} timed steps after 1 warm-up, median reported; frozen layers: ${opts.forwardPath === 'compiled' ? 'compileFrozenBase (as the strategies run them)' : 'model.predict / tfjs-layers'}`,
  );

  const wasm = new Map<Network, Measurement>();
  const shown = new Set<string>();
  for (const n of networks) {
    const m = await measure(n, {
      batch: opts.batch,
      size: opts.size,
      steps,
      profile: opts.profile,
      forwardPath: opts.forwardPath,
    });
    wasm.set(n, m);
    console.log(
      `  wasm  ${n.padEnd(24)} ${m.ms!.toFixed(0).padStart(7)} ms   samples ${m.samples.map((s) => s.toFixed(0)).join(' ')}`,
    );
    printPlans(n, kernelPlans(), shown);
  }

  let torch: Record<string, number> = {};
  if (opts.torch) {
    const t = measureTorch(opts, torchSteps);
    if (typeof t === 'string') console.log(`  torch: ${t}`);
    else {
      torch = t;
      for (const n of networks)
        if (torch[n] != null) console.log(`  torch ${n.padEnd(24)} ${torch[n]!.toFixed(0).padStart(7)} ms`);
    }
  } else console.log('  torch: skipped (--no-torch)');

  if (opts.cpu) {
    for (const n of networks) {
      const m = await measureCpuChild(n, opts);
      console.log(`  cpu   ${n.padEnd(24)} ${m.ms == null ? m.note : `${m.ms.toFixed(0).padStart(7)} ms (1 step)`}`);
    }
  } else console.log(`  cpu backend: skipped (${opts.quick ? '--quick' : '--no-cpu'})`);

  console.log(`wasm threads: ${choice.threads}; torch threads: ${opts.threads}`);
  for (const n of networks) {
    const ms = wasm.get(n)!.ms!;
    const t = torch[n];
    console.log(
      `train-step ${n} backend=wasm ms=${ms.toFixed(1)} torch_ms=${t == null ? 'none' : t.toFixed(1)} ratio=${t == null ? 'none' : (ms / t).toFixed(2)}`,
    );
  }
}

/** The plans of the convolutions a network ran (per-image shape; ones already printed for an earlier network are not repeated). */
function printPlans(network: Network, plans: PlanRecord[], shown: Set<string>): void {
  const fresh = plans.filter((p) => !shown.has(`${p.family} ${p.shape}`));
  if (fresh.length === 0) return;
  console.log(`    plans (${network}):`);
  for (const p of fresh) {
    shown.add(`${p.family} ${p.shape}`);
    const tuneMs =
      p.source === 'tuned' && p.us?.total != null ? `, tuning took ${(p.us.total / 1000).toFixed(0)} ms` : '';
    console.log(`      ${p.family.padEnd(15)} ${p.shape.padEnd(40)} ${p.plan.padEnd(20)} (${p.source}${tuneMs})`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.exit(reportError(err));
});
