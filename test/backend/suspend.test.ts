// A training process suspended for longer than the SIMD job timeout (SIGSTOP, a paused VM, a laptop asleep) goes on
// when resumed: joinJob counts only the time the process was running. (It once failed a 100-epoch run paused for
// 5 minutes: "a SIMD kernel worker thread did not finish within 120 s".)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

test('a job joined across a suspension longer than the job timeout finishes', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/join-suspended.ts'], {
    cwd: root,
    env: { ...process.env, CATDOG_SIMD_JOB_TIMEOUT_MS: '3000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  child.stderr.on('data', (d: Buffer) => (err += d));
  const exited = once(child, 'exit');
  while (!out.includes('joining')) await sleep(20);
  await sleep(300);
  child.kill('SIGSTOP');
  await sleep(9000); // three times the timeout, with the process stopped in joinJob
  child.kill('SIGCONT');
  const [code] = await exited;
  assert.equal(code, 0, err);
  assert.match(out, /joined/);
});
