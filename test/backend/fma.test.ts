// The fused multiply-add kernels (training-kernels-fma*.wasm, relaxed SIMD's relaxed_madd in the product loops) and
// the unfused ones compute the same convolutions: run in two processes, CATDOG_WASM_FMA unset and =0, each
// convolution plan with fused loops agrees to float32 rounding, and differs in the last bits somewhere (so the switch
// really chose another binary). Correctness of the default (fused) variant against the cpu backend is kernels.test.ts'.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { wasmFusedMultiplyAdd, machineKey } from '@catdog/backend';
import { isolatePlanCache } from '../helpers/kernels.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
isolatePlanCache();

function outputs(env: NodeJS.ProcessEnv): { fused: boolean; outputs: Record<string, number[]> } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/helpers/fused-kernel-outputs.ts'], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 ** 2,
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('Node 20 (behind its V8 flag) and later run the fused kernels; the plan cache keeps their plans apart', () => {
  assert.equal(wasmFusedMultiplyAdd(), true, 'relaxed SIMD is available on every Node this project supports');
  assert.match(machineKey(2), / \| 2 threads \| fma$/);
});

test('fused and unfused kernels agree to float32 rounding on every plan with fused loops', () => {
  const fused = outputs({});
  const plain = outputs({ CATDOG_WASM_FMA: '0' });
  assert.equal(fused.fused, true);
  assert.equal(plain.fused, false);
  let differing = 0;
  for (const [plan, a] of Object.entries(fused.outputs)) {
    const b = plain.outputs[plan]!;
    assert.equal(a.length, b.length, plan);
    const scale = Math.max(...b.map(Math.abs));
    let worst = 0;
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      if (a[i] !== b[i]) differing++;
    }
    assert.ok(worst <= 1e-5 * scale, `${plan}: fused and unfused differ by ${worst} (scale ${scale})`);
  }
  assert.ok(differing > 0, 'CATDOG_WASM_FMA=0 loaded the same kernels: no output differs in any bit');
});
