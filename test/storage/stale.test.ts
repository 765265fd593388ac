// Litter of killed writers is cleaned; a live writer's temp file (here or on another machine) never is.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStorage, parseTempName, removeStaleWrites, TEMP_MARKER } from '@catdog/storage';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';

let s3: LoopbackS3;
let dir: string;
before(async () => {
  s3 = await startLoopbackS3(['stale-test']);
  dir = await mkdtemp(join(tmpdir(), 'catdog-stale-'));
});
after(async () => {
  await s3?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('local: temp files of dead writers on this host and of long-idle writers elsewhere are removed; live ones kept', async () => {
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
  const dead = spawnSync(process.execPath, ['-e', '']).pid!; // a process that has exited
  const root = join(dir, 'out');
  await mkdir(join(root, 'train'), { recursive: true });
  const files = {
    deadHere: `train/train-000000.tar${TEMP_MARKER}0a1b2c3d-${dead}@${host}`,
    liveHere: `train/train-000001.tar${TEMP_MARKER}0a1b2c3d-${process.pid}@${host}`,
    freshElsewhere: `train/train-000002.tar${TEMP_MARKER}0a1b2c3d-1@other-machine`,
    oldElsewhere: `manifest.json${TEMP_MARKER}0a1b2c3d-1@other-machine`,
    oldFormatFresh: `train/train-000003.tar${TEMP_MARKER}${dead}-0a1b2c3d`,
    oldFormatOld: `train/train-000004.tar${TEMP_MARKER}${dead}-0a1b2c3d`,
    notOurs: 'train/notes.txt',
  };
  for (const f of Object.values(files)) await writeFile(join(root, f), 'x');
  const weekAgo = new Date(Date.now() - 7 * 24 * 3600 * 1000);
  await utimes(join(root, files.oldElsewhere), weekAgo, weekAgo);
  await utimes(join(root, files.oldFormatOld), weekAgo, weekAgo);
  assert.deepEqual(parseTempName(files.deadHere.split('/')[1]), { pid: dead, host });
  assert.deepEqual(parseTempName(files.oldFormatOld.split('/')[1]), { pid: dead });

  const r = await removeStaleWrites(openStorage(root));
  assert.deepEqual(r.removed, [files.oldElsewhere, files.deadHere, files.oldFormatOld].sort());
  assert.deepEqual(r.kept, [files.liveHere, files.freshElsewhere, files.oldFormatFresh].sort());
  const left = (await readdir(join(root, 'train'))).sort();
  assert.deepEqual(
    left,
    ['notes.txt', ...[files.liveHere, files.freshElsewhere, files.oldFormatFresh].map((f) => f.split('/')[1])].sort(),
  );
});

test('local: a real write names its temp file after its writer (pid and host)', async () => {
  const storage = openStorage(join(dir, 'named'));
  async function* slow() {
    yield Buffer.from('a');
    const names = await readdir(join(dir, 'named'));
    const owner = parseTempName(names.find((n) => n.includes(TEMP_MARKER))!);
    assert.deepEqual(owner, { pid: process.pid, host: hostname().replace(/[^A-Za-z0-9.-]/g, '_') });
    yield Buffer.from('b');
  }
  await storage.writeStream('f.bin', slow());
  assert.deepEqual(await readdir(join(dir, 'named')), ['f.bin']);
});

test('s3: unfinished multipart uploads are listed and aborted by age where the store supports it (s3rver does not)', async () => {
  const r = await removeStaleWrites(openStorage('s3://stale-test/x', { endpoint: s3.endpoint }), { staleAfterMs: 0 });
  // s3rver answers ListMultipartUploads with NotImplemented: reported, not an error.
  assert.deepEqual(r, { removed: [], kept: [], supported: false });
});
