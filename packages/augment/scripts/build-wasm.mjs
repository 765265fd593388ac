// Builds packages/augment/wasm/affine{,-shared}.wasm from affine.wat with wat2wasm (Debian: apt-get install -y
// wabt): two binaries that differ only in the memory import, a thread's own memory or a shared batch memory. They
// are committed, so users need no toolchain; rerun this after editing the .wat:  npm run build:wasm -w @catdog/augment
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'wasm');
const source = readFileSync(join(dir, 'affine.wat'), 'utf8');
const tmp = mkdtempSync(join(tmpdir(), 'catdog-wat-'));
try {
  for (const [suffix, shared, flags] of [
    ['', '', []],
    ['-shared', 'shared', ['--enable-threads']],
  ]) {
    const wat = join(tmp, `affine${suffix}.wat`);
    writeFileSync(wat, source.replace('@SHARED@', shared));
    const out = join(dir, `affine${suffix}.wasm`);
    execFileSync('wat2wasm', [...flags, wat, '-o', out], { stdio: 'inherit' });
    console.log(`wrote ${out}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
