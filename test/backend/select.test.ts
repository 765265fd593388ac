// Backend selection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { initBackend, BackendUnavailableError } from '@catdog/backend';

const require = createRequire(import.meta.url);
function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

test("'tensorflow' without tfjs-node installed fails with a message naming the cause and the fix", async (t) => {
  if (installed('@tensorflow/tfjs-node') || installed('@tensorflow/tfjs-node-gpu')) {
    t.skip('tfjs-node is installed here');
    return;
  }
  await assert.rejects(initBackend({ backend: 'tensorflow', log: () => {} }), (err: unknown) => {
    assert.ok(err instanceof BackendUnavailableError);
    assert.match(err.message, /tfjs-node is not installed/);
    assert.match(err.message, /--backend wasm/);
    return true;
  });
});

test('auto picks wasm here, says why once, and is idempotent', async () => {
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const a = await initBackend({ log });
  const b = await initBackend({ log });
  assert.equal(a, b);
  assert.equal(lines.length, 1, lines.join('\n'));
  if (!installed('@tensorflow/tfjs-node')) {
    assert.equal(a.name, 'wasm');
    assert.equal(tf.getBackend(), 'wasm');
    assert.match(a.reason, /tfjs-node is not installed/);
    assert.match(lines[0]!, /^backend: wasm \(\d+ threads?\)/);
  }
  assert.ok(a.threads >= 1);
});

test('cpu can be requested, and wasm again afterwards', async () => {
  const cpu = await initBackend({ backend: 'cpu', log: () => {} });
  assert.deepEqual([cpu.name, tf.getBackend()], ['cpu', 'cpu']);
  const wasm = await initBackend({ backend: 'wasm', log: () => {} });
  assert.deepEqual([wasm.name, tf.getBackend()], ['wasm', 'wasm']);
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'), 'training kernels registered');
});

test('bad requests are rejected with clear errors', async () => {
  await assert.rejects(initBackend({ backend: 'gpu' as never, log: () => {} }), /unknown backend 'gpu'/);
  await assert.rejects(
    initBackend({ backend: 'wasm', threads: 0, log: () => {} }),
    /threads must be a positive integer/,
  );
  // The default thread count from the environment is checked the same way, and named.
  const saved = process.env.CATDOG_THREADS;
  process.env.CATDOG_THREADS = 'many';
  try {
    await assert.rejects(
      initBackend({ backend: 'wasm', log: () => {} }),
      /threads must be a positive integer, got CATDOG_THREADS=many/,
    );
  } finally {
    if (saved === undefined) delete process.env.CATDOG_THREADS;
    else process.env.CATDOG_THREADS = saved;
  }
});
