// The path guard: a relative path with ".." never reaches outside a storage's root, on disk or on S3 (real s3rver).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStorage, StorageError, type Storage } from '@catdog/storage';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';

let s3: LoopbackS3;
let dir = '';

before(async () => {
  s3 = await startLoopbackS3(['guard-bucket']);
  dir = await mkdtemp(join(tmpdir(), 'catdog-path-guard-'));
});
after(async () => {
  await s3?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const ESCAPES = ['../secret.txt', 'a/../../secret.txt', './../secret.txt', 'a/b/../../../secret.txt'];

async function assertGuarded(storage: Storage, label: string) {
  const refused = (err: unknown) => {
    assert.ok(err instanceof StorageError, `${label}: ${String(err)}`);
    assert.equal(err.code, 'invalid-path', label);
    assert.match(err.message, /path may not contain \.\./);
    return true;
  };
  for (const p of ESCAPES) {
    await assert.rejects(storage.write(p, 'leaked'), refused, `${label} write ${p}`);
    await assert.rejects(storage.read(p), refused, `${label} read ${p}`);
    await assert.rejects(storage.stat(p), refused, `${label} stat ${p}`);
    await assert.rejects(storage.delete(p), refused, `${label} delete ${p}`);
    // list: refused on disk; on S3 a ".." prefix is only a literal key prefix, which must list nothing.
    const listed: string[] = [];
    try {
      for await (const e of storage.list(p)) listed.push(e.path);
    } catch (err) {
      refused(err);
    }
    assert.deepEqual(listed, [], `${label} list ${p}`);
    assert.throws(() => storage.child(p), refused, `${label} child ${p}`);
  }
  // Inside the root, "." and empty segments are fine.
  await storage.write('./a//b.txt', 'inside');
  assert.equal((await storage.read('a/b.txt')).toString(), 'inside');
}

test('local storage: ".." paths are refused for every operation; nothing is written beside the root', async () => {
  const root = join(dir, 'root');
  await mkdir(root);
  await writeFile(join(dir, 'secret.txt'), 'keep');
  await assertGuarded(openStorage(root), 'local');
  assert.deepEqual((await readdir(dir)).sort(), ['root', 'secret.txt']);
  assert.ok(existsSync(join(root, 'a', 'b.txt')));
});

test('S3 storage: ".." keys are refused for every operation; nothing is written beside the prefix', async () => {
  const storage = openStorage('s3://guard-bucket/runs/one', { endpoint: s3.endpoint });
  await openStorage('s3://guard-bucket/runs', { endpoint: s3.endpoint }).write('secret.txt', 'keep');
  await assertGuarded(storage, 's3');
  const keys: string[] = [];
  for await (const e of openStorage('s3://guard-bucket', { endpoint: s3.endpoint }).list()) keys.push(e.path);
  assert.deepEqual(keys.sort(), ['runs/one/a/b.txt', 'runs/secret.txt']);
});
