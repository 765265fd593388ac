// Builds packages/backend/wasm/training-kernels{,-shared}.wasm from training-kernels.wat with
// wat2wasm (Debian: apt-get install -y wabt). The binaries are committed, so users need no
// toolchain; rerun this after editing the .wat:  node packages/backend/scripts/build-wasm.mjs
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { winogradWat } from './winograd-wat.mjs';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'wasm');
// The Winograd functions are generated (winograd-wat.mjs) and written into the .wat first.
const watPath = join(dir, 'training-kernels.wat');
const marked = /  ;; BEGIN winograd[\s\S]*;; END winograd/;
const original = readFileSync(watPath, 'utf8');
if (!marked.test(original)) throw new Error(`${watPath}: no BEGIN/END winograd markers`);
const source = original.replace(marked, () => winogradWat());
if (source !== original) writeFileSync(watPath, source);
const tmp = mkdtempSync(join(tmpdir(), 'catdog-wat-'));
try {
  for (const [suffix, shared, flags] of [
    ['', '', []],
    ['-shared', 'shared', ['--enable-threads']],
  ]) {
    const wat = join(tmp, `k${suffix}.wat`);
    writeFileSync(wat, source.replace('@SHARED@', shared));
    const out = join(dir, `training-kernels${suffix}.wasm`);
    execFileSync('wat2wasm', [...flags, wat, '-o', out], { stdio: 'inherit' });
    console.log(`wrote ${out}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
