// Shared by bench:strategies and bench:inference: the machine, the PyTorch interpreter, the book's split
// prepped for our CLIs, and timed subprocesses.
import { spawn, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './cli.js';

export const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..', '..', '..');
export const SHARED = join(root, '..', 'shared');
export const KAGGLE_TRAIN = join(SHARED, 'datasets', 'dogs-vs-cats', 'train');
export const WEIGHTS_DIR = process.env.CATDOG_WEIGHTS_DIR ?? join(SHARED, 'weights');

/** Per class, as the book: train cat.0–999, validation 1000–1499, test 1500–1999 (and the same for dogs). */
export interface SplitCounts {
  train: number;
  validation: number;
  test: number;
}
export const BOOK_COUNTS: SplitCounts = { train: 1000, validation: 500, test: 500 };
export const QUICK_COUNTS: SplitCounts = { train: 20, validation: 10, test: 10 };

/** "AMD EPYC 7B13 (2 logical CPUs)", from lscpu's model name when there is one (os.cpus() can be terse). */
export function cpuDescription(): string {
  const list = cpus();
  let model = list[0]?.model?.trim() ?? 'unknown CPU';
  const lscpu = spawnSync('lscpu', [], { encoding: 'utf8' });
  const line = lscpu.status === 0 ? /^Model name:\s*(.+)$/m.exec(lscpu.stdout) : null;
  if (line && line[1].trim() !== model) model = `${model} [lscpu: ${line[1].trim()}]`;
  const flags = lscpu.status === 0 ? (/^Flags:\s*(.+)$/m.exec(lscpu.stdout)?.[1].split(/\s+/) ?? []) : [];
  const simd = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile'].filter((f) =>
    flags.includes(f),
  );
  return `${model} (${list.length} logical CPUs${simd.length ? `; ${simd.join(' ')}` : ''})`;
}

/** The Python modules each peer script imports, and the Debian package that provides each. */
const DEBIAN_PACKAGE: Record<string, string> = {
  torch: 'python3-torch',
  torchvision: 'python3-torchvision',
  PIL: 'python3-pil',
  scipy: 'python3-scipy',
  numpy: 'python3-numpy',
};
export const TORCH_MODULES = ['torch', 'torchvision', 'PIL'];

export function torchMissing(modules: readonly string[] = TORCH_MODULES): string {
  const packages = modules.map((m) => DEBIAN_PACKAGE[m] ?? m).join(' ');
  return (
    `no python3 on this machine imports ${modules.join(', ')} (tried $CATDOG_BENCH_PYTHON, /usr/bin/python3, ` +
    `python3), and installing them needs root: apt-get install -y ${packages}`
  );
}

const imports = (python: string, modules: readonly string[]) =>
  spawnSync(python, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' }).status === 0;

/**
 * The first python3 that imports `modules` (the peers' PyTorch, torchvision, PIL...), or null. When none does and
 * we are root, Debian's packages for them are installed into /usr/bin/python3 first (apt is the one place this
 * machine gets them from; progress goes to stderr), so each benchmark runs its peer on a fresh machine.
 */
export function findTorchPython(explicit?: string, modules: readonly string[] = TORCH_MODULES): string | null {
  const candidates = [explicit, process.env.CATDOG_BENCH_PYTHON, '/usr/bin/python3', 'python3'].filter(
    (p): p is string => Boolean(p),
  );
  const found = candidates.find((py) => imports(py, modules));
  if (found || explicit || process.getuid?.() !== 0) return found ?? null;
  // Debian's torch links the reference BLAS unless OpenBLAS is installed (its Linear layers then run several times
  // slower than a real PyTorch install's, see torchDescription): a fair peer needs it.
  const packages = [...modules.map((m) => DEBIAN_PACKAGE[m] ?? m), 'libopenblas0-pthread'];
  console.error(`peers: no python3 imports ${modules.join(', ')}; apt-get install -y ${packages.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]) => spawnSync('apt-get', args, { stdio: ['ignore', 2, 2], env }).status === 0;
  // A fresh machine's package lists may be empty or stale: update once when the install alone fails.
  if (!apt(['install', '-y', '-qq', ...packages]) && apt(['update', '-qq'])) apt(['install', '-y', '-qq', ...packages]);
  return imports('/usr/bin/python3', modules) ? '/usr/bin/python3' : null;
}

const TORCH_INFO = `
import os, torch
blas = os.path.realpath('/usr/lib/x86_64-linux-gnu/libblas.so.3') if os.path.exists('/usr/lib/x86_64-linux-gnu/libblas.so.3') else 'n/a'
print(torch.__version__, blas)
`;

/**
 * "torch 1.13.0a0, BLAS /usr/lib/.../libopenblas.so.0" and a warning when Debian's torch runs on the reference
 * (netlib) BLAS: its Linear layers are then several times slower than a real PyTorch install's.
 */
export function torchDescription(python: string): string {
  const r = spawnSync(python, ['-c', TORCH_INFO], { encoding: 'utf8' });
  if (r.status !== 0) return 'torch: version unknown';
  const [version, blas] = r.stdout.trim().split(/\s+/);
  const reference = /\/blas\/libblas\.so/.test(blas ?? '');
  return (
    `torch ${version}, BLAS ${blas}` +
    (reference
      ? " — WARNING: the reference BLAS; PyTorch's dense layers are far slower than usual: apt-get install -y libopenblas0-pthread"
      : '')
  );
}

export interface Timed {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/**
 * Runs a command, timing it from spawn to exit. stderr is echoed with `prefix` (progress of long runs) and kept.
 */
export function runTimed(
  cmd: string,
  args: string[],
  opts: { prefix: string; env?: Record<string, string>; cwd?: string },
): Promise<Timed> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? root,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) process.stderr.write(`${opts.prefix}${l}\n`);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (partial) process.stderr.write(`${opts.prefix}${partial}\n`);
      resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
}

export function tail(text: string, lines = 5): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

/** `prep split` of the book's split (numeric order, no resize) into `out`, for our trainer and evaluate. */
export async function prepBookSplit(out: string, counts: SplitCounts, source = KAGGLE_TRAIN): Promise<void> {
  const r = await runTimed(
    process.execPath,
    [
      CLI.prep,
      'split',
      '--source',
      source,
      '--out',
      out,
      '--train',
      String(counts.train),
      '--validation',
      String(counts.validation),
      '--test',
      String(counts.test),
    ],
    { prefix: '  [prep] ' },
  );
  if (r.code !== 0) throw new Error(`prep split exited ${r.code}:\n${tail(r.stderr)}`);
}

/** A fixed-width table: the first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) =>
    r.map((c, i) => (i === 0 || i === 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)].join('\n');
}

export const fixed = (x: number | null | undefined, digits = 1) =>
  x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);
