// Shared by bench:strategies and bench:inference: the machine, the book's split prepped for our CLIs, and timed
// subprocesses (the PyTorch interpreter: peer-python.ts).
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
