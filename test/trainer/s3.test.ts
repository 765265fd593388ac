// Training and evaluating from a prepped dataset on S3 (real s3rver on loopback).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset } from '@catdog/dataset';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { startLoopbackS3 } from '../helpers/s3-server.js';
import { CONTRACT, lastLine, runTrainerAsync } from './helpers.js';

test('extract trains from s3:// shards and evaluate reads the s3:// test split', async () => {
  const s3 = await startLoopbackS3(['trainer-bucket']);
  const root = await mkdtemp(join(tmpdir(), 'catdog-trainer-s3-'));
  try {
    const src = join(root, 'src');
    await mkdir(src);
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`]).flat().map((f) => copyFile(join(kaggleTrainDir, f), join(src, f))),
    );
    const url = 's3://trainer-bucket/ds';
    await prepareDataset({ source: src, out: url, train: 10, validation: 3, test: 3, resize: { width: 64, height: 64 } });
    const out = join(root, 'run');
    const r = await runTrainerAsync(['extract', '--data', url, '--out', out, '--preset', 'ci-smoke', '--epochs', '2'], s3.env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(lastLine(r.stdout), /^accuracy=\d\.\d{4} loss=\d+\.\d{4} n=6$/);
    const cfg = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    assert.equal(cfg.data, url);
    assert.deepEqual(cfg.dataset.counts, { train: 20, validation: 6, test: 6 });
    const e = await runTrainerAsync(['evaluate', '--model', out, '--data', url], s3.env);
    assert.equal(e.code, 0, e.stderr);
    assert.match(lastLine(e.stdout), CONTRACT);
    assert.equal(lastLine(e.stdout), lastLine(r.stdout));
  } finally {
    await s3.stop();
    await rm(root, { recursive: true, force: true });
  }
});
