// The trainer's --backend / --threads options (apps/trainer/src/backend-options.ts), parsed by commander.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { addBackendOptions, type BackendCliOptions } from '../../apps/trainer/src/backend-options.js';

test('addBackendOptions adds --backend (default auto) and --threads to a command', () => {
  const parse = (args: string[]) => {
    const cmd = addBackendOptions(new Command('x').exitOverride().configureOutput({ writeErr: () => {} }));
    cmd.parse(args, { from: 'user' });
    return cmd.opts<BackendCliOptions>();
  };
  assert.deepEqual(parse([]), { backend: 'auto' });
  assert.deepEqual(parse(['--backend', 'wasm', '--threads', '4']), { backend: 'wasm', threads: 4 });
  assert.throws(() => parse(['--backend', 'gpu']), /Allowed choices are auto, tensorflow, wasm, cpu/);
  assert.throws(() => parse(['--threads', '0']), /positive integer/);
  assert.throws(() => parse(['--threads', 'many']), /positive integer/);
});

test('the trainer exits 2 (usage) on a bad --threads or --backend, naming the option', async () => {
  const { spawnSync } = await import('node:child_process');
  const root = new URL('../..', import.meta.url);
  for (const [flag, value] of [['--threads', '0'], ['--backend', 'gpu']]) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'apps/trainer/src/main.ts', 'scratch', '--data', 'x', '--out', 'y', flag!, value!], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^error: option '${flag}`, 'm'));
  }
});
