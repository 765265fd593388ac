// A damaged manifest.json fails early with a message naming what is wrong (not deep inside training), and the
// in-memory augmentation source refuses a split larger than maxSourceBytes (real prepped dataset, real photos).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '@catdog/errors';
import { prepareDataset, readManifest } from '@catdog/dataset';
import { loadSamples, openDatasetSource } from '@catdog/augment';
import { kaggleTrainDir } from '../helpers/fixtures.js';

let root = '';
let data = '';
let manifest: Record<string, unknown> & {
  splits: Record<string, { count: number; shards: Record<string, unknown>[] }>;
};

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'catdog-manifest-'));
  const src = join(root, 'src');
  await mkdir(src);
  for (let i = 0; i < 6; i++)
    for (const c of ['cat', 'dog']) await copyFile(join(kaggleTrainDir, `${c}.${i}.jpg`), join(src, `${c}.${i}.jpg`));
  data = join(root, 'data');
  await prepareDataset({ source: src, out: data, train: 2, validation: 2, test: 2, resize: { width: 32, height: 32 } });
  manifest = JSON.parse(await readFile(join(data, 'manifest.json'), 'utf8'));
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

test('readManifest refuses damaged manifests, naming the problem (code bad-manifest)', async () => {
  assert.equal((await readManifest(data)).splits.train.count, 4, 'the control: the real manifest reads');
  const shard0 = manifest.splits.train.shards[0]!;
  const cases: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"formatVersion": 2,', /invalid JSON/],
    ['not an object', '42', /not a JSON object/],
    ['future format', { ...manifest, formatVersion: 99 }, /formatVersion 99, this tool reads 1 to 2/],
    ['no classes', { ...manifest, classes: [] }, /classes missing/],
    ['no splits', { ...manifest, splits: undefined }, /splits missing/],
    [
      'a split missing',
      { ...manifest, splits: { train: manifest.splits.train, test: manifest.splits.test } },
      /split validation missing/,
    ],
    [
      'a bad shard entry',
      { ...manifest, splits: { ...manifest.splits, train: { ...manifest.splits.train, shards: [{ path: 3 }] } } },
      /bad shard entry in train/,
    ],
    [
      'a shard path escaping the dataset',
      {
        ...manifest,
        splits: {
          ...manifest.splits,
          train: { ...manifest.splits.train, shards: [{ ...shard0, path: '../elsewhere/shard.tar' }] },
        },
      },
      /shard path "?\.\.\/elsewhere\/shard\.tar"? escapes the dataset/,
    ],
    [
      'counts that disagree',
      { ...manifest, splits: { ...manifest.splits, train: { ...manifest.splits.train, count: 5 } } },
      /split train count 5 but its shards hold 4/,
    ],
  ];
  for (const [what, value, message] of cases) {
    const dir = join(root, what.replace(/\W+/g, '-'));
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'manifest.json'), typeof value === 'string' ? value : JSON.stringify(value));
    await assert.rejects(readManifest(dir), (err: unknown) => {
      assert.ok(err instanceof UserError, `${what}: ${String(err)}`);
      assert.equal(err.code, 'bad-manifest', what);
      assert.match(err.message, /manifest\.json: not a valid dataset manifest/, what);
      assert.match(err.message, message, what);
      return true;
    });
  }
  await assert.rejects(readManifest(join(root, 'src')), (err: unknown) => {
    assert.ok(err instanceof UserError && err.code === 'no-manifest');
    assert.match(err.message, /no manifest\.json \(not a prepared dataset/);
    return true;
  });
});

test('the in-memory source refuses a split over maxSourceBytes, saying how to fix it', async () => {
  const loaded = await loadSamples(await openDatasetSource(data, 'train'));
  assert.equal(loaded.keys.length, 4, 'the control: under the default bound the split loads');
  await assert.rejects(loadSamples(await openDatasetSource(data, 'train'), 1000), (err: unknown) => {
    assert.ok(err instanceof UserError, String(err));
    assert.match(err.message, /the split's encoded images exceed 0 MiB \(maxSourceBytes\): prep it with --resize/);
    return true;
  });
});
