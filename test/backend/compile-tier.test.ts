// The SIMD kernels are compiled with V8's optimizing compiler before their first call (the autotuner times them at a
// layer's first use: baseline code ran their loops 4–7× slower and made XNNPACK win where it loses), and only
// they: a module compiled afterwards starts in the baseline compiler as usual.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

test('SIMD kernels are optimized code from the start; modules compiled later are not affected', () => {
  const r = spawnSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', 'test/helpers/kernel-tiers.ts'], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    kernels: Record<string, { turbofan: boolean; liftoff: boolean }>;
    later: { turbofan: boolean; liftoff: boolean };
  };
  for (const [name, tier] of Object.entries(out.kernels)) {
    assert.deepEqual(tier, { turbofan: true, liftoff: false }, `${name} before its first call`);
  }
  assert.deepEqual(out.later, { turbofan: false, liftoff: true }, 'a module compiled after the kernels');
});
