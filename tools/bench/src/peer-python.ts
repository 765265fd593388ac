// The benchmarks' PyTorch peers: which python3 runs them (installing Debian's packages when missing and run as
// root), and what that torch is (version, BLAS). No import of the CLIs here: train-step uses it without building them.
import { spawnSync } from 'node:child_process';

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
    `python3): apt-get install -y ${packages} (the benchmark runs it itself when run as root)`
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
