// Our shards as the WebDataset ecosystem reads them (its key rule, tar -tf, Python's tarfile), and datasets written
// before member keys lost their dots (formatVersion 1) still read with the same logical keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tar from 'tar-stream';
import {
  keyOfMember,
  memberKeyOf,
  openImageFolder,
  openSplit,
  openStream,
  prepareDataset,
  readManifest,
  sha256,
  splitMemberName,
  verifyDataset,
  FORMAT_VERSION,
  type EncodedSample,
} from '@catdog/dataset';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { flatSource, tempDir } from './helpers.js';

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const s of it) out.push(s);
  return out;
}

// webdataset/tariterators.py base_plus_ext: the key is the directory plus the basename up to its first dot.
const BASE_RE = /^((?:.*\/|)[^.]+)[.]([^/]*)$/;

/** WebDataset's group_by_keys over member names: a new sample whenever the key changes; duplicate extensions raise. */
function groupByKeys(names: string[]): { key: string; exts: string[] }[] {
  const samples: { key: string; exts: string[] }[] = [];
  for (const name of names) {
    const m = BASE_RE.exec(name);
    if (!m) continue;
    const [, key, ext] = m;
    let current = samples.at(-1);
    if (!current || current.key !== key) samples.push((current = { key, exts: [] }));
    assert.ok(!current.exts.includes(ext.toLowerCase()), `duplicate ${ext} in sample ${key}`);
    current.exts.push(ext.toLowerCase());
  }
  return samples;
}

const PY_WDS = `
import json, re, sys, tarfile
BASE_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
out = []
with tarfile.open(sys.argv[1]) as tf:
    for m in tf:
        g = BASE_RE.match(m.name)
        if not m.isfile() or not g:
            continue
        key, ext = g.group(1), g.group(2).lower()
        if not out or out[-1]["key"] != key:
            out.append({"key": key})
        data = tf.extractfile(m).read()
        out[-1][ext] = int(data) if ext == "cls" else len(data)
print(json.dumps(out))
`;

test('member keys: dots escaped reversibly; WebDataset key rule, tar -tf and Python tarfile see one sample per key', async () => {
  for (const key of ['cat.123', 'IMG_0001.v2', '100%_done', 'plain', 'a._b', 'a_.b']) {
    const member = memberKeyOf(key);
    assert.ok(!member.includes('.'), member);
    assert.equal(keyOfMember(member), key);
    assert.deepEqual(splitMemberName(`${member}.jpg`, 'webdataset'), [key, 'jpg']);
  }
  assert.equal(memberKeyOf('cat.123'), 'cat_123');
  assert.notEqual(memberKeyOf('a._b'), memberKeyOf('a_.b'));

  const src = await flatSource(6);
  const out = await tempDir('wds');
  await prepareDataset({ source: src, out, train: 4, validation: 1, test: 1, samplesPerShard: 3 });
  const manifest = await readManifest(out);
  assert.equal(manifest.formatVersion, FORMAT_VERSION);
  const split = await openSplit(out, 'train');
  // The logical keys (what the augmentation seeds its transforms from) are the source stems, as before.
  const samples: EncodedSample[] = await all(split.samples());
  assert.deepEqual(
    samples.map((s) => s.key),
    ['cat.0', 'dog.0', 'cat.1', 'dog.1', 'cat.2', 'dog.2', 'cat.3', 'dog.3'],
  );

  let at = 0;
  for (const shard of manifest.splits.train.shards) {
    const file = join(out, shard.path);
    const listed = spawnSync('tar', ['-tf', file], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    const names = listed.stdout.trim().split('\n');
    for (const name of names) assert.match(name, /^[^./]+\.(jpg|cls)$/, `member ${name} has a dotted key`);
    const grouped = groupByKeys(names);
    assert.equal(grouped.length, shard.count);
    const expected = samples.slice(at, at + shard.count);
    assert.deepEqual(
      grouped,
      expected.map((s) => ({ key: memberKeyOf(s.key), exts: ['jpg', 'cls'] })),
    );
    assert.deepEqual(
      grouped.map((g) => keyOfMember(g.key)),
      expected.map((s) => s.key),
    );

    const py = spawnSync('python3', ['-c', PY_WDS, file], { encoding: 'utf8' });
    if (py.error && (py.error as NodeJS.ErrnoException).code === 'ENOENT') {
      console.log('python3 not installed: tarfile check skipped');
    } else {
      assert.equal(py.status, 0, py.stderr);
      assert.deepEqual(
        JSON.parse(py.stdout),
        expected.map((s) => ({ key: memberKeyOf(s.key), jpg: s.bytes.length, cls: s.label })),
      );
    }
    at += shard.count;
  }
  await rm(src, { recursive: true });
  await rm(out, { recursive: true });
});

/** Rewrites a dataset the way formatVersion 1 wrote it: members named with the source's dots ('cat.0.jpg'). */
async function downgradeToV1(out: string): Promise<void> {
  const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'));
  for (const split of ['train', 'validation', 'test']) {
    const source = await openSplit(out, split as 'train');
    const byShard = new Map<string, EncodedSample[]>();
    let i = 0;
    for await (const s of source.samples()) {
      let shardIndex = 0;
      let n = i;
      while (n >= source.shards[shardIndex].count) n -= source.shards[shardIndex++].count;
      const path = source.shards[shardIndex].path;
      byShard.set(path, [...(byShard.get(path) ?? []), s]);
      i++;
    }
    for (const info of manifest.splits[split].shards) {
      const pack = tar.pack();
      const header = (name: string, size: number): tar.Header => ({
        name,
        size,
        mode: 0o644,
        mtime: new Date(0),
        uid: 0,
        gid: 0,
        uname: '',
        gname: '',
        type: 'file',
        linkname: '',
        devmajor: 0,
        devminor: 0,
      });
      for (const s of byShard.get(info.path)!) {
        pack.entry(header(`${s.key}.${s.ext}`, s.bytes.length), Buffer.from(s.bytes));
        pack.entry(header(`${s.key}.cls`, String(s.label).length), Buffer.from(String(s.label)));
      }
      pack.finalize();
      const chunks: Buffer[] = [];
      for await (const c of pack) chunks.push(c as Buffer);
      const data = Buffer.concat(chunks);
      await writeFile(join(out, info.path), data);
      info.bytes = data.length;
      info.sha256 = sha256(data);
    }
  }
  manifest.formatVersion = 1;
  await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2));
}

/** A class-folder source whose file stems hold dots, underscores and a percent sign. */
async function classFolderSource(): Promise<string> {
  const root = await tempDir('src-folders');
  for (const [cls, prefix] of [
    ['cats', 'cat'],
    ['dogs', 'dog'],
  ]) {
    await mkdir(join(root, cls));
    for (let i = 0; i < 6; i++) {
      const stem = [
        `${prefix}.${i}`,
        `my_${prefix}.${i}`,
        `IMG_${prefix}${i}`,
        `${i}%_${prefix}`,
        `${prefix}_${i}`,
        `${prefix}.v2.${i}`,
      ][i];
      await copyFile(join(kaggleTrainDir, `${prefix}.${i}.jpg`), join(root, cls, `${stem}.jpg`));
    }
  }
  return root;
}

test('keys with dots, underscores and percent signs round-trip through WebDataset member names', async () => {
  const src = await classFolderSource();
  const out = await tempDir('wds-keys');
  await prepareDataset({ source: src, out, train: 4, validation: 1, test: 1, samplesPerShard: 4 });
  const samples = await all((await openSplit(out, 'train')).samples());
  const source = await all((await openImageFolder(src)).samples());
  const expected = new Set(source.map((s) => s.key));
  for (const s of samples) assert.ok(expected.has(s.key), s.key);
  assert.ok(samples.some((s) => s.key.includes('_')) && samples.some((s) => s.key.includes('.')));
  const names = spawnSync('tar', ['-tf', join(out, 'train/train-000000.tar')], { encoding: 'utf8' })
    .stdout.trim()
    .split('\n');
  for (const name of names) assert.match(name, /^[^./]+\.(jpg|cls)$/);
  assert.deepEqual(
    groupByKeys(names).map((g) => keyOfMember(g.key)),
    samples.slice(0, 4).map((s) => s.key),
  );
  assert.ok((await verifyDataset(out)).ok);
  await rm(src, { recursive: true });
  await rm(out, { recursive: true });
});

test('a dataset written with dotted member keys (formatVersion 1) reads with the same keys, streamed or not', async () => {
  const src = await classFolderSource();
  const out = await tempDir('v1');
  await prepareDataset({ source: src, out, train: 4, validation: 1, test: 1, samplesPerShard: 3 });
  const before = await all((await openSplit(out, 'train')).samples());
  const streamedBefore = await all(
    (await openStream(out, 'train', { seed: 5, windowShards: 2 })).samples({ epoch: 1 }),
  );
  await downgradeToV1(out);
  const names = spawnSync('tar', ['-tf', join(out, 'train/train-000000.tar')], { encoding: 'utf8' })
    .stdout.trim()
    .split('\n');
  assert.deepEqual(names.slice(0, 2), [`${before[0].key}.jpg`, `${before[0].key}.cls`]);
  assert.ok(
    before.some((s) => s.key.includes('_') && !s.key.includes('.')),
    'a key with an underscore and no dot',
  );
  assert.equal((await readManifest(out)).formatVersion, 1);
  const after = await all((await openSplit(out, 'train')).samples());
  assert.deepEqual(
    after.map((s) => [s.key, s.label, sha256(s.bytes)]),
    before.map((s) => [s.key, s.label, sha256(s.bytes)]),
  );
  const streamedAfter = await all((await openStream(out, 'train', { seed: 5, windowShards: 2 })).samples({ epoch: 1 }));
  assert.deepEqual(
    streamedAfter.map((s) => s.key),
    streamedBefore.map((s) => s.key),
  );
  assert.ok((await verifyDataset(out)).ok);
  await rm(src, { recursive: true });
  await rm(out, { recursive: true });
});
