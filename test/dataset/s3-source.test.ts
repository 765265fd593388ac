import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openStorage } from '@catdog/storage';
import { openImageFolder, openSplit, prepareDataset, readManifest, verifyDataset } from '@catdog/dataset';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { tempDir, writeZip } from './helpers.js';

let s3: LoopbackS3;
before(async () => {
  s3 = await startLoopbackS3(['src-bucket', 'out-bucket']);
});
after(async () => {
  await s3?.stop();
});

test('S3 sources: a flat folder and a train.zip on S3 give the same dataset as the local folder, written to S3', async () => {
  const options = { endpoint: s3.endpoint };
  const bucket = openStorage('s3://src-bucket/kaggle', options);
  const entries: { name: string; data: Buffer }[] = [];
  const local = await tempDir('flat');
  const localStorage = openStorage(local);
  for (let i = 0; i < 8; i++) {
    for (const p of ['cat', 'dog']) {
      const data = await readFile(join(kaggleTrainDir, `${p}.${i}.jpg`));
      await bucket.write(`train/${p}.${i}.jpg`, data);
      await localStorage.write(`${p}.${i}.jpg`, data);
      entries.push({ name: `train/${p}.${i}.jpg`, data });
    }
  }
  const zipPath = join(local, '..', `train-${process.pid}.zip`);
  await writeZip(zipPath, entries);
  await bucket.write('train.zip', await readFile(zipPath));
  await rm(zipPath);

  const counts = { train: 4, validation: 2, test: 2, samplesPerShard: 5 };
  await prepareDataset({ source: local, out: join(local, '..', `out-${process.pid}`), ...counts });
  const reference = await readManifest(join(local, '..', `out-${process.pid}`));
  for (const [name, source] of [
    ['folder', 's3://src-bucket/kaggle/train'],
    ['zip', 's3://src-bucket/kaggle/train.zip'],
  ]) {
    const out = `s3://out-bucket/${name}`;
    const report = await prepareDataset({ source, out, storage: options, ...counts, folders: true });
    assert.equal(report.complete, true);
    const m = await readManifest(out, options);
    assert.equal(m.source.layout, name === 'zip' ? 'zip' : 'flat');
    assert.deepEqual(m.splits, reference.splits);
    assert.ok((await verifyDataset(out, { storage: options })).ok);
  }
  // Readers over S3: a split, and the --folders output as a plain image folder.
  const split = await openSplit('s3://out-bucket/zip', 'train', options);
  const keys: string[] = [];
  for await (const s of split.samples()) keys.push(s.key);
  assert.deepEqual(keys, ['cat.0', 'dog.0', 'cat.1', 'dog.1', 'cat.2', 'dog.2', 'cat.3', 'dog.3']);
  const folder = await openImageFolder('s3://out-bucket/zip/test', options);
  assert.deepEqual(folder.classes, ['cats', 'dogs']);
  const folderKeys: string[] = [];
  for await (const s of folder.samples()) folderKeys.push(`${s.key}:${s.label}`);
  assert.deepEqual(folderKeys, ['cat.6:0', 'cat.7:0', 'dog.6:1', 'dog.7:1']);
  await rm(local, { recursive: true });
  await rm(join(local, '..', `out-${process.pid}`), { recursive: true });
});
