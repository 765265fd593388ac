// Benchmark: wall time and images/s per phase of whole trainer runs (our CLI, a subprocess) beside PyTorch running
// the same recipe (strategies_torch.py) in the same run, on the book's split, with the same thread count.
//
//   node --import tsx tools/bench/src/strategies.ts [--quick] [--strategies extract,finetune,scratch,augmented]
//        [--threads 2] [--workers 2] [--keep] [--python /usr/bin/python3]
//
// Runs: `extract` (the book's recipe), `finetune --preset cpu-quick`, and 3 epochs of `scratch` and `augmented`.
// --quick: 20/10/10 images per class and 1 epoch (head: 1 epoch) everywhere, to check that it all runs in a minute or two.
// Per strategy ours runs first; the PyTorch peer then reads the run's config.json, so both follow one recipe.
// Ends with one line per row:
//   strategies <strategy> <phase> ours_s=<s> torch_s=<s|none> ratio=<ours/torch|none> ours_ips=… torch_ips=…
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { positiveInt } from './args.js';
import {
  BOOK_COUNTS,
  QUICK_COUNTS,
  KAGGLE_TRAIN,
  WEIGHTS_DIR,
  cpuDescription,
  fixed,
  here,
  prepBookSplit,
  runTimed,
  table,
  tail,
  type SplitCounts,
} from './torch-peer.js';
import { findTorchPython, torchDescription, torchMissing } from './peer-python.js';
import { CLI } from './cli.js';

export const BENCH_STRATEGIES = ['extract', 'finetune', 'scratch', 'augmented'] as const;
type BenchStrategy = (typeof BENCH_STRATEGIES)[number];

/** The trainer flags of each benchmarked recipe (the issue: extract as the book, finetune cpu-quick, 3 epochs of the convnets). */
function recipeFlags(strategy: BenchStrategy, quick: boolean): string[] {
  const full: Record<BenchStrategy, string[]> = {
    extract: [],
    finetune: ['--preset', 'cpu-quick'],
    scratch: ['--epochs', '3'],
    augmented: ['--epochs', '3'],
  };
  if (!quick) return full[strategy];
  // Quick: 1 epoch, one pass over the tiny split (the book's fixed 100 steps would be 2000+ images).
  const quickFlags = ['--epochs', '1', '--batch-size', '10', '--steps-per-epoch', 'auto', '--validation-steps', 'auto'];
  return strategy === 'finetune'
    ? ['--preset', 'cpu-quick', '--head-epochs', '1', '--head-batch-size', '10', ...quickFlags]
    : quickFlags;
}

/** One phase's measurements on one side. */
export interface PhaseTime {
  phase: string;
  seconds: number;
  imagesPerSecond: number | null;
}

export interface SideResult {
  phases: PhaseTime[];
  wallSeconds: number;
  testAccuracy: number | null;
}

interface History {
  phase: string[];
  seconds: number[];
  images_per_s: number[];
}

/** Our phases: feature extraction from the trainer's log lines, fitted epochs from history.json, rest = wall − phases. */
export function ourPhases(stderr: string, history: History, counts: Record<string, number>): PhaseTime[] {
  const features = { seconds: 0, images: 0 };
  const top = { seconds: 0, images: 0 };
  for (const m of stderr.matchAll(/features: extracted (\w+) \((\d+) images[^)]*\) in ([\d.]+)s/g)) {
    features.seconds += Number(m[3]);
    features.images += Number(m[2]);
  }
  for (const m of stderr.matchAll(/features: (\w+) head features from cached activations in ([\d.]+)s/g)) {
    top.seconds += Number(m[2]);
    top.images += counts[m[1]] ?? 0;
  }
  const out: PhaseTime[] = [];
  if (features.seconds > 0)
    out.push({ phase: 'features', seconds: features.seconds, imagesPerSecond: features.images / features.seconds });
  if (top.seconds > 0)
    out.push({ phase: 'top-features', seconds: top.seconds, imagesPerSecond: top.images / top.seconds });
  const names = [...new Set(history.phase)];
  for (const name of names) {
    const idx = history.phase.map((p, i) => (p === name ? i : -1)).filter((i) => i >= 0);
    const seconds = idx.reduce((a, i) => a + history.seconds[i], 0);
    const ips = idx.reduce((a, i) => a + history.images_per_s[i], 0) / idx.length;
    out.push({ phase: name, seconds, imagesPerSecond: ips });
  }
  return out;
}

async function runOurs(
  strategy: BenchStrategy,
  o: Options,
  data: string,
  work: string,
): Promise<SideResult & { runDir: string }> {
  const runDir = join(work, `ours-${strategy}`);
  const args = [
    CLI.trainer,
    strategy,
    '--data',
    data,
    '--out',
    runDir,
    '--threads',
    String(o.threads),
    '--workers',
    String(o.workers),
    ...(strategy === 'extract' || strategy === 'finetune'
      ? ['--weights-dir', o.weightsDir, '--feature-cache-dir', join(work, `cache-${strategy}`)]
      : []),
    ...recipeFlags(strategy, o.quick),
  ];
  process.stderr.write(`\n== ours: trainer ${args.slice(3).join(' ')}\n`);
  const r = await runTimed(process.execPath, args, { prefix: `  [ours ${strategy}] `, env: { CATDOG_NO_COLOR: '1' } });
  if (r.code !== 0) throw new Error(`trainer ${strategy} exited ${r.code}:\n${tail(r.stderr)}`);
  const history = JSON.parse(await readFile(join(runDir, 'history.json'), 'utf8')) as History;
  const metrics = JSON.parse(await readFile(join(runDir, 'metrics.json'), 'utf8')) as { test: { accuracy: number } };
  const config = JSON.parse(await readFile(join(runDir, 'config.json'), 'utf8')) as {
    dataset: { counts: Record<string, number> };
  };
  return {
    runDir,
    phases: ourPhases(r.stderr, history, config.dataset.counts),
    wallSeconds: r.seconds,
    testAccuracy: metrics.test.accuracy,
  };
}

interface TorchJson {
  phases: { phase: string; seconds: number; images: number; images_per_s: number }[];
  test: { accuracy: number; n: number };
}

async function runTorch(strategy: BenchStrategy, o: Options, python: string, runDir: string): Promise<SideResult> {
  const recipe = await readFile(join(runDir, 'config.json'), 'utf8');
  const args = [
    join(here, 'strategies_torch.py'),
    '--recipe',
    recipe,
    '--source',
    o.source,
    '--train',
    String(o.counts.train),
    '--validation',
    String(o.counts.validation),
    '--test',
    String(o.counts.test),
    '--weights-dir',
    o.weightsDir,
    '--threads',
    String(o.threads),
    '--workers',
    String(o.workers),
  ];
  process.stderr.write(`== torch: strategies_torch.py ${strategy} (recipe: ${join(runDir, 'config.json')})\n`);
  const r = await runTimed(python, args, { prefix: `  [torch ${strategy}] `, cwd: here });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !last.startsWith('{'))
    throw new Error(`strategies_torch.py ${strategy} exited ${r.code}:\n${tail(r.stderr)}`);
  const j = JSON.parse(last) as TorchJson;
  return {
    phases: j.phases.map((p) => ({ phase: p.phase, seconds: p.seconds, imagesPerSecond: p.images_per_s })),
    wallSeconds: r.seconds,
    testAccuracy: j.test.accuracy,
  };
}

interface Row {
  strategy: string;
  phase: string;
  ours: number;
  torch: number | null;
  oursIps: number | null;
  torchIps: number | null;
  oursAcc: number | null;
  torchAcc: number | null;
}

/** Rows per phase, then 'rest' (start-up, model loading, saving, test evaluation: wall − phases) and 'total'. */
function rowsOf(strategy: string, ours: SideResult, torch: SideResult | null): Row[] {
  const names = [...new Set([...ours.phases.map((p) => p.phase), ...(torch?.phases.map((p) => p.phase) ?? [])])];
  const rows: Row[] = names.map((phase) => {
    const a = ours.phases.find((p) => p.phase === phase);
    const b = torch?.phases.find((p) => p.phase === phase);
    return {
      strategy,
      phase,
      ours: a?.seconds ?? 0,
      torch: torch ? (b?.seconds ?? 0) : null,
      oursIps: a?.imagesPerSecond ?? null,
      torchIps: b?.imagesPerSecond ?? null,
      oursAcc: null,
      torchAcc: null,
    };
  });
  const sum = (s: SideResult) => s.phases.reduce((acc, p) => acc + p.seconds, 0);
  rows.push({
    strategy,
    phase: 'rest',
    ours: ours.wallSeconds - sum(ours),
    torch: torch ? torch.wallSeconds - sum(torch) : null,
    oursIps: null,
    torchIps: null,
    oursAcc: null,
    torchAcc: null,
  });
  rows.push({
    strategy,
    phase: 'total',
    ours: ours.wallSeconds,
    torch: torch?.wallSeconds ?? null,
    oursIps: null,
    torchIps: null,
    oursAcc: ours.testAccuracy,
    torchAcc: torch?.testAccuracy ?? null,
  });
  return rows;
}

const ratioOf = (r: Row) => (r.torch !== null && r.torch > 0 ? r.ours / r.torch : null);

/** Where a strategy slower than PyTorch loses its time: the extra seconds per phase, largest first. */
function explain(rows: Row[]): string[] {
  const out: string[] = [];
  for (const strategy of [...new Set(rows.map((r) => r.strategy))]) {
    const total = rows.find((r) => r.strategy === strategy && r.phase === 'total')!;
    const ratio = ratioOf(total);
    if (ratio === null || ratio <= 1) continue;
    const extra = total.ours - total.torch!;
    const parts = rows
      .filter((r) => r.strategy === strategy && r.phase !== 'total' && r.torch !== null)
      .map((r) => ({ phase: r.phase, delta: r.ours - r.torch!, ours: r.ours, torch: r.torch! }))
      .sort((a, b) => b.delta - a.delta)
      .map(
        (d) =>
          `${d.phase} ${d.delta >= 0 ? '+' : ''}${d.delta.toFixed(1)} s (${d.ours.toFixed(1)} vs ${d.torch.toFixed(1)})`,
      );
    out.push(`${strategy}: ${ratio.toFixed(2)}× PyTorch's wall time, ${extra.toFixed(1)} s more: ${parts.join(', ')}`);
  }
  return out;
}

interface Options {
  quick: boolean;
  strategies: BenchStrategy[];
  threads: number;
  workers: number;
  source: string;
  weightsDir: string;
  counts: SplitCounts;
  keep: boolean;
  torch: boolean;
  python?: string;
}

function strategyList(v: string): BenchStrategy[] {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of list)
    if (!(BENCH_STRATEGIES as readonly string[]).includes(s))
      throw new InvalidArgumentError(`unknown strategy "${s}" (valid: ${BENCH_STRATEGIES.join(', ')}).`);
  return list as BenchStrategy[];
}

async function main(): Promise<number> {
  const cmd = new Command('bench:strategies')
    .description('whole trainer runs, phase by phase, beside the same recipe in PyTorch')
    .option(
      '--quick',
      `tiny split (${QUICK_COUNTS.train}/${QUICK_COUNTS.validation}/${QUICK_COUNTS.test} per class), 1 epoch: checks that it runs`,
      false,
    )
    .option('--strategies <list>', `comma-separated subset of ${BENCH_STRATEGIES.join(',')}`, strategyList, [
      ...BENCH_STRATEGIES,
    ])
    .option('--threads <n>', 'compute threads on both sides (our --threads, torch.set_num_threads)', positiveInt, 2)
    .option(
      '--workers <n>',
      'decode/augment workers on both sides (our --workers, DataLoader num_workers)',
      positiveInt,
      2,
    )
    .option('--source <dir>', "Kaggle's train/ folder", KAGGLE_TRAIN)
    .option('--weights-dir <dir>', 'folder holding mobilenet_v2_1.0_224/', WEIGHTS_DIR)
    .option('--keep', 'keep the work directory (prepped data, run directories)', false)
    .option('--no-torch', 'only our side')
    .option(
      '--python <exe>',
      'python3 with torch and torchvision (default: $CATDOG_BENCH_PYTHON, /usr/bin/python3, python3)',
    )
    .parse();
  const raw = cmd.opts() as Omit<Options, 'counts'>;
  const o: Options = { ...raw, counts: raw.quick ? QUICK_COUNTS : BOOK_COUNTS };
  const python = o.torch ? findTorchPython(o.python) : null;
  if (o.torch && !python) {
    process.stderr.write(`error: ${torchMissing()} (or pass --no-torch)\n`);
    return 1;
  }
  console.log(`cpu: ${cpuDescription()}`);
  if (python) console.log(torchDescription(python));
  console.log(
    `threads ${o.threads}, workers ${o.workers}, split per class ${o.counts.train}/${o.counts.validation}/${o.counts.test}${o.quick ? ' (quick: 1 epoch)' : ''}, torch ${python ?? 'off'}`,
  );
  const work = await mkdtemp(join(tmpdir(), 'catdog-bench-strategies-'));
  const rows: Row[] = [];
  try {
    const data = join(work, 'data');
    process.stderr.write(`prep split → ${data}\n`);
    await prepBookSplit(data, o.counts, o.source);
    for (const strategy of o.strategies) {
      const ours = await runOurs(strategy, o, data, work);
      const torch = python ? await runTorch(strategy, o, python, ours.runDir) : null;
      rows.push(...rowsOf(strategy, ours, torch));
    }
  } finally {
    if (o.keep) process.stderr.write(`kept ${work}\n`);
    else await rm(work, { recursive: true, force: true });
  }
  console.log('');
  console.log(
    table(
      [
        'strategy',
        'phase',
        'ours s',
        'torch s',
        'ratio',
        'ours img/s',
        'torch img/s',
        'ours test acc',
        'torch test acc',
      ],
      rows.map((r) => [
        r.strategy,
        r.phase,
        fixed(r.ours),
        fixed(r.torch),
        fixed(ratioOf(r), 2),
        fixed(r.oursIps),
        fixed(r.torchIps),
        fixed(r.oursAcc, 4),
        fixed(r.torchAcc, 4),
      ]),
    ),
  );
  const lines = explain(rows);
  if (lines.length) {
    console.log(
      '\nwhere the extra time goes (ours − torch per phase; rest = start-up, model loading, saving, test evaluation):',
    );
    for (const l of lines) console.log(`  ${l}`);
  }
  console.log('');
  for (const r of rows) {
    const ratio = ratioOf(r);
    console.log(
      `strategies ${r.strategy} ${r.phase} ours_s=${fixed(r.ours, 2)} torch_s=${r.torch === null ? 'none' : fixed(r.torch, 2)} ratio=${ratio === null ? 'none' : ratio.toFixed(3)}` +
        (r.oursIps !== null || r.torchIps !== null
          ? ` ours_ips=${fixed(r.oursIps)} torch_ips=${fixed(r.torchIps)}`
          : '') +
        (r.phase === 'total' ? ` ours_acc=${fixed(r.oursAcc, 4)} torch_acc=${fixed(r.torchAcc, 4)}` : ''),
    );
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
