// Builds packages/augment/wasm/affine.wasm from affine.wat with wat2wasm (Debian: apt-get install -y wabt). The
// binary is committed, so users need no toolchain; rerun this after editing the .wat:
//   npm run build:wasm -w @catdog/augment
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'wasm');
execFileSync('wat2wasm', [join(dir, 'affine.wat'), '-o', join(dir, 'affine.wasm')], { stdio: 'inherit' });
console.log(`wrote ${join(dir, 'affine.wasm')}`);
