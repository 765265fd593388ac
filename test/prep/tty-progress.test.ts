// On a terminal prep split draws a progress bar (cli-progress, redrawn in place); without one it writes plain lines
// for logs. The terminal is a real pseudo-terminal: the CLI runs under util-linux script(1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = CLI.prep;
const SCRIPT = '/usr/bin/script';
const ESC = String.fromCharCode(27);
let src: string;
let work: string;

before(async () => {
  src = await flatSource(12);
  work = await tempDir('prep-tty');
});
after(async () => {
  await rm(src, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const args = (out: string) => [
  'split',
  '--source',
  src,
  '--out',
  out,
  '--train',
  '2',
  '--validation',
  '2',
  '--test',
  '2',
];

test('prep split on a terminal draws a progress bar in place; piped, it writes plain lines', (t) => {
  if (!existsSync(SCRIPT)) {
    t.skip(`${SCRIPT} not found (util-linux)`);
    return;
  }
  const command = [process.execPath, main, ...args(join(work, 'tty'))].map(quote).join(' ');
  const tty = spawnSync(SCRIPT, ['-qec', command, '/dev/null'], {
    cwd: projectRoot,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(tty.status, 0, tty.stdout + tty.stderr);
  // The bar: cli-progress' shades_classic, redrawn with carriage returns / cursor moves, ending at 12/12 images.
  assert.match(tty.stdout, /split \[[█░]+\] 12\/12 images \| \d+ img\/s \| shards \d+\/\d+ \| skipped 0/);
  assert.ok(tty.stdout.includes('\r') || tty.stdout.includes(`${ESC}[`), 'redrawn in place');
  assert.doesNotMatch(tty.stdout, /images in \d+ shards for this worker/, 'no plain progress lines on a terminal');

  const piped = spawnSync(process.execPath, [main, ...args(join(work, 'piped'))], {
    cwd: projectRoot,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(piped.status, 0, piped.stderr);
  assert.match(piped.stderr, /images in \d+ shards for this worker/);
  assert.doesNotMatch(piped.stderr, /[█░]/, 'no bar in logs');
  assert.ok(!piped.stderr.includes(`${ESC}[`), 'no escape sequences in logs');
});
