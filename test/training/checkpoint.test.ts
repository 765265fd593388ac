// Checkpoints are switched atomically: a process killed at any moment while it writes checkpoints leaves one
// that --resume can read (the previous or the new), never "nothing to resume".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { RunDir } from '@catdog/training';
import { projectRoot } from '../helpers/fixtures.js';

const WRITER = join(projectRoot, 'test', 'training', 'checkpoint-writer.ts');

test('a writer killed at random moments always leaves a readable last checkpoint', async () => {
  await tf.setBackend('cpu');
  const dir = await mkdtemp(join(tmpdir(), 'catdog-ckpt-'));
  try {
    const run = join(dir, 'run');
    let lastEpoch = 0;
    for (let i = 0; i < 6; i++) {
      const child = spawn(process.execPath, ['--import', 'tsx', WRITER, run], {
        cwd: projectRoot,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 400));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const state = await RunDir.open(run).readCheckpointState();
      assert.ok(state, `kill ${i + 1}: nothing to resume`);
      assert.ok(state.epoch >= 1);
      const ck = await RunDir.open(run).readCheckpoint('last');
      assert.ok(ck, `kill ${i + 1}: checkpoint weights unreadable`);
      assert.deepEqual(ck.weights['dense/kernel'].shape, [256, 256]);
      tf.dispose([...Object.values(ck.weights), ...Object.values(ck.optimizer ?? {})]);
      lastEpoch = state.epoch;
    }
    assert.ok(lastEpoch >= 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
