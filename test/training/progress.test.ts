// The trainer's progress display: a cli-progress bar redrawn in place on a terminal (a real pseudo-terminal: a child
// process under util-linux script(1)), plain periodic lines otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createProgress } from '@catdog/training';
import { projectRoot } from '../helpers/fixtures.js';

const SCRIPT = '/usr/bin/script';
const ESC = String.fromCharCode(27);
// Ten steps of an epoch, then a log line, through createProgress() as the trainer calls it (tty from process.stderr).
const CHILD = `
import { createProgress } from '@catdog/training';
const p = createProgress({ intervalMs: 0 });
p.start('epoch 1/1', 10);
for (let s = 1; s <= 10; s++) { p.update(s, { loss: 0.5, acc: 0.75, imagesPerSecond: 12.5 }); await new Promise((r) => setTimeout(r, 5)); }
p.stop();
p.log('epoch 1/1 - done');
`;

test('on a terminal: a bar redrawn in place, with loss, acc and img/s', (t) => {
  if (!existsSync(SCRIPT)) {
    t.skip(`${SCRIPT} not found (util-linux)`);
    return;
  }
  const command = `${process.execPath} --import tsx --input-type=module -e "${CHILD.replace(/"/g, '\\"')}"`;
  const r = spawnSync(SCRIPT, ['-qec', command, '/dev/null'], { cwd: projectRoot, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /epoch 1\/1 \[[█░]+\] 10\/10 loss 0\.5000 acc 0\.7500 12\.5 img\/s ETA/);
  assert.ok(r.stdout.includes('\r') || r.stdout.includes(`${ESC}[`), 'redrawn in place');
  assert.match(r.stdout, /epoch 1\/1 - done/);
});

test('without a terminal: plain lines at most every interval, none at the last step', () => {
  const lines: string[] = [];
  const p = createProgress({ tty: false, write: (l) => lines.push(l), intervalMs: 0 });
  p.start('epoch 2/3', 4);
  for (let s = 1; s <= 4; s++) p.update(s, { loss: 0.25, acc: 0.5, imagesPerSecond: 8 });
  p.stop();
  p.log('epoch 2/3 - 1.0s - loss 0.2500');
  assert.equal(lines.length, 4, lines.join('\n'));
  assert.match(lines[0]!, /^epoch 2\/3 1\/4 loss 0\.2500 acc 0\.5000 8\.0 img\/s ETA \d+s$/);
  assert.equal(lines[3], 'epoch 2/3 - 1.0s - loss 0.2500');
  assert.ok(!lines.join('').includes(ESC) && !/[█░]/.test(lines.join('')));
});
