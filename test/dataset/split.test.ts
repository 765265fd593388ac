import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, rm, stat, symlink, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { openStorage } from '@catdog/storage';
import {
  buildPlan,
  openImageFolder,
  openSource,
  openSplit,
  parseResize,
  prepareDataset,
  readManifest,
  readShard,
  finalizeDataset,
  verifyDataset,
  type EncodedSample,
} from '@catdog/dataset';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import { flatSource, tempDir, writeZip } from './helpers.js';

async function all(it: AsyncIterable<EncodedSample>): Promise<EncodedSample[]> {
  const out: EncodedSample[] = [];
  for await (const s of it) out.push(s);
  return out;
}

test("default plan on Kaggle's folder is exactly the book's split, in numeric order", async () => {
  const source = await openSource(kaggleTrainDir);
  assert.equal(source.layout, 'flat');
  assert.deepEqual(source.classes, ['cats', 'dogs']);
  const plan = buildPlan(source);
  const members = (split: string, cls: string) =>
    plan.shards
      .filter((s) => s.split === split)
      .flatMap((s) => s.items)
      .filter((i) => i.className === cls)
      .map((i) => i.key);
  const range = (p: string, a: number, b: number) => Array.from({ length: b - a }, (_, i) => `${p}.${a + i}`);
  assert.deepEqual(members('train', 'cats'), range('cat', 0, 1000));
  assert.deepEqual(members('train', 'dogs'), range('dog', 0, 1000));
  assert.deepEqual(members('validation', 'cats'), range('cat', 1000, 1500));
  assert.deepEqual(members('test', 'dogs'), range('dog', 1500, 2000));
  // Balanced shards: classes interleaved.
  assert.deepEqual(
    plan.shards[0].items.slice(0, 4).map((i) => i.key),
    ['cat.0', 'dog.0', 'cat.1', 'dog.1'],
  );
  assert.equal(plan.shards.length, 8);
  // Seeded shuffle is reproducible and different from numeric order.
  const a = buildPlan(source, { shuffle: true, seed: 7 });
  const b = buildPlan(source, { shuffle: true, seed: 7 });
  const c = buildPlan(source, { shuffle: true, seed: 8 });
  assert.equal(a.id, b.id);
  assert.notEqual(a.id, c.id);
  assert.notEqual(a.id, plan.id);
  // Fractions of each class.
  const f = buildPlan(source, { train: 0.5, validation: 0.25, test: 0.25 });
  assert.equal(
    f.shards.filter((s) => s.split === 'train').reduce((n, s) => n + s.items.length, 0),
    3000,
  );
  assert.deepEqual(parseResize('150x150'), { width: 150, height: 150 });
  assert.deepEqual(parseResize('150'), { shortestSide: 150 });
  assert.throws(() => parseResize('big'), UserError);
});

test('prepare → manifest → openSplit round trip; clean JPEGs kept byte-exact; labels cats=0 dogs=1', async () => {
  const src = await flatSource(12);
  const out = await tempDir('out');
  const report = await prepareDataset({ source: src, out, train: 6, validation: 3, test: 3, samplesPerShard: 5 });
  assert.equal(report.complete, true);
  const manifest = await readManifest(out);
  assert.equal(manifest.splits.train.count, 12);
  assert.deepEqual(manifest.splits.validation.classCounts, { cats: 3, dogs: 3 });
  assert.equal(manifest.splits.train.shards.length, 3);
  const split = await openSplit(out, 'validation');
  const samples = await all(split.samples());
  assert.deepEqual(
    samples.map((s) => s.key),
    ['cat.6', 'dog.6', 'cat.7', 'dog.7', 'cat.8', 'dog.8'],
  );
  assert.deepEqual(
    samples.map((s) => s.label),
    [0, 1, 0, 1, 0, 1],
  );
  assert.deepEqual(Buffer.from(samples[0].bytes), await readFile(join(src, 'cat.6.jpg')));
  // A local cache of verified shards serves the second pass.
  const cacheDir = await tempDir('cache');
  const cached = await openSplit(out, 'test', { cacheDir });
  assert.equal((await all(cached.samples())).length, 6);
  assert.equal((await readdir(cacheDir)).filter((n) => n.endsWith('.tar')).length, 2);
  assert.equal((await all(cached.samples())).length, 6);
  // Flip one byte: readShard with verify names the shard, verifyDataset reports it.
  const shard = manifest.splits.train.shards[1];
  const file = join(out, shard.path);
  const bytes = await readFile(file);
  bytes[700] ^= 0xff;
  await writeFile(file, bytes);
  await assert.rejects(
    all(readShard(openStorage(out), shard, { verify: true })),
    new RegExp(`${shard.path}: sha256 mismatch`),
  );
  const v = await verifyDataset(out);
  assert.equal(v.ok, false);
  assert.deepEqual(
    v.problems.map((p) => p.shard),
    [shard.path],
  );
  await rm(src, { recursive: true });
  await rm(out, { recursive: true });
});

test('with --resize the shards hold small RGB JPEGs (squash WxH, or shortest side)', async () => {
  const src = await flatSource(4);
  const out = await tempDir('out');
  await prepareDataset({
    source: src,
    out,
    train: 2,
    validation: 1,
    test: 1,
    resize: { width: 150, height: 150 },
    folders: true,
  });
  for (const s of await all((await openSplit(out, 'train')).samples())) {
    const m = await sharp(s.bytes).metadata();
    assert.deepEqual([m.format, m.width, m.height, m.channels], ['jpeg', 150, 150, 3]);
  }
  // The book's plain folder layout alongside the shards.
  assert.ok(existsSync(join(out, 'train', 'cats', 'cat.0.jpg')));
  assert.ok(existsSync(join(out, 'test', 'dogs', 'dog.3.jpg')));
  const out2 = await tempDir('out');
  await prepareDataset({ source: src, out: out2, train: 2, validation: 1, test: 1, resize: { shortestSide: 100 } });
  for (const s of await all((await openSplit(out2, 'test')).samples())) {
    const m = await sharp(s.bytes).metadata();
    assert.equal(Math.min(m.width!, m.height!), 100);
  }
  await Promise.all([src, out, out2].map((d) => rm(d, { recursive: true })));
});

test('bad input: broken files skipped with reasons and replaced by spares; other colour spaces converted to RGB', async () => {
  // 3 train + 2 validation + 2 test per class leaves 9 spares per class, dealt 3 to each shard.
  const src = await flatSource(16);
  const cat = (i: number) => join(src, `cat.${i}.jpg`);
  const original = await readFile(cat(2));
  await writeFile(cat(1), Buffer.alloc(0)); // zero-byte (train)
  await writeFile(cat(2), original.subarray(0, Math.floor(original.length / 2))); // truncated (train)
  await writeFile(cat(3), 'this is not an image\n'); // non-image (validation)
  await rm(cat(5));
  await symlink(join(src, 'gone.jpg'), cat(5)); // unreadable: dangling link (test)
  await rm(cat(4));
  await sharp(original).png().toFile(cat(4)); // misnamed: PNG content named .jpg
  await sharp(original).grayscale().jpeg().toFile(join(src, 'cat.6.tmp'));
  await rm(cat(6));
  await copyFile(join(src, 'cat.6.tmp'), cat(6));
  await rm(join(src, 'cat.6.tmp'));
  await rm(join(src, 'dog.1.jpg'));
  await sharp(original).toColourspace('cmyk').jpeg().toFile(join(src, 'dog.1.jpg')); // CMYK JPEG
  await rm(join(src, 'dog.2.jpg'));
  await sharp(original).ensureAlpha(0.5).png().toFile(join(src, 'dog.2.png')); // alpha PNG
  await rm(join(src, 'dog.3.jpg'));
  await sharp(original).toColourspace('rgb16').png().toFile(join(src, 'dog.3.png')); // 16-bit PNG
  assert.equal((await sharp(join(src, 'dog.3.png')).metadata()).depth, 'ushort');
  assert.equal((await sharp(join(src, 'dog.1.jpg')).metadata()).space, 'cmyk');
  await writeFile(join(src, 'notes.txt'), 'not part of the layout');

  const out = await tempDir('out');
  const report = await prepareDataset({ source: src, out, train: 3, validation: 2, test: 2 });
  assert.equal(report.complete, true);
  const reasons = Object.fromEntries(report.skipped.map((s) => [s.source, s.reason]));
  assert.match(reasons['cat.1.jpg'], /empty file/);
  assert.match(reasons['cat.2.jpg'], /truncated or corrupt/);
  assert.match(reasons['cat.3.jpg'], /not an image/);
  assert.match(reasons['cat.5.jpg'], /unreadable/);
  assert.equal(report.skipped.length, 4);
  assert.ok(report.skipped.every((s) => s.replacedBy?.startsWith('cat.')));
  const manifest = await readManifest(out);
  assert.deepEqual(manifest.splits.train.classCounts, { cats: 3, dogs: 3 });
  assert.deepEqual(manifest.splits.validation.classCounts, { cats: 2, dogs: 2 });
  assert.equal(manifest.skipped.length, 4);
  const saved = JSON.parse(await readFile(join(out, 'prep-report.json'), 'utf8'));
  assert.equal(saved.skipped.length, 4);
  const keys: string[] = [];
  for (const split of ['train', 'validation', 'test'] as const) {
    for (const s of await all((await openSplit(out, split)).samples())) {
      keys.push(s.key);
      const m = await sharp(s.bytes).metadata();
      assert.deepEqual([m.format, m.space, m.channels, m.depth], ['jpeg', 'srgb', 3, 'uchar'], s.key);
    }
  }
  for (const k of ['cat.4', 'cat.6', 'dog.1', 'dog.2', 'dog.3']) assert.ok(keys.includes(k), k);
  for (const k of ['cat.1', 'cat.2', 'cat.3', 'cat.5']) assert.ok(!keys.includes(k), k);
  // Replacements come from the spares (index ≥ 7), in order.
  assert.deepEqual(
    report.skipped.map((s) => s.replacedBy),
    ['cat.7', 'cat.10', 'cat.8', 'cat.9'],
  );
  assert.equal(new Set(keys).size, 14);

  // No spares left (16 per class all used): the splits would be short → no manifest unless --allow-short.
  const out2 = await tempDir('out');
  await assert.rejects(
    prepareDataset({ source: src, out: out2, train: 8, validation: 4, test: 4 }),
    /not finalized: broken images with no spare left to replace them \(train 4 short\)/,
  );
  assert.ok(!existsSync(join(out2, 'manifest.json')));
  assert.ok(existsSync(join(out2, 'prep-report.json')));
  const f = await finalizeDataset(out2, { allowShort: true });
  assert.equal(f.manifest!.splits.train.count, 12);
  assert.equal(f.manifest!.splits.validation.count, 8);
  await Promise.all([src, out, out2].map((d) => rm(d, { recursive: true })));
});

test('too few images, a missing class, or a different dataset at --out: clear error before anything is written', async () => {
  const src = await flatSource(5);
  const out = join(await tempDir('out'), 'ds');
  await assert.rejects(prepareDataset({ source: src, out, train: 3, validation: 2, test: 1 }), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /too few images: class cats has 5 images, the split needs 6/);
    return true;
  });
  assert.ok(!existsSync(out));
  for (const f of await readdir(src)) if (f.startsWith('dog.')) await rm(join(src, f));
  await assert.rejects(
    prepareDataset({ source: src, out, train: 1, validation: 1, test: 1 }),
    /found only class cats; need at least two/,
  );
  await assert.rejects(
    prepareDataset({ source: src, out, train: 1, validation: 1, test: 1, classes: ['cats', 'dogs'] }),
    /missing class dogs/,
  );
  assert.ok(!existsSync(out));
  await flatSource(5, src);
  await prepareDataset({ source: src, out, train: 2, validation: 1, test: 1 });
  const before = (await readManifest(out)).planId;
  await assert.rejects(
    prepareDataset({ source: src, out, train: 3, validation: 1, test: 1 }),
    /already holds a different dataset.*--force/,
  );
  assert.equal((await readManifest(out)).planId, before);
  // Same plan again: nothing to do.
  assert.equal((await prepareDataset({ source: src, out, train: 2, validation: 1, test: 1 })).alreadyComplete, true);
  const replaced = await prepareDataset({ source: src, out, train: 3, validation: 1, test: 1, force: true });
  assert.equal(replaced.complete, true);
  assert.equal((await readManifest(out)).splits.train.count, 6);
  assert.ok((await verifyDataset(out)).ok);
  await rm(src, { recursive: true });
});

test('interrupted: no manifest; rerun reuses verified shards and completes', async () => {
  const src = await flatSource(12);
  const out = await tempDir('out');
  const controller = new AbortController();
  let images = 0;
  await assert.rejects(
    prepareDataset({
      source: src,
      out,
      train: 6,
      validation: 3,
      test: 3,
      samplesPerShard: 4,
      concurrency: 1,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.phase === 'encode' && ++images === 10) controller.abort();
      },
    }),
    /interrupted: no manifest written/,
  );
  assert.ok(!existsSync(join(out, 'manifest.json')));
  // No half-written shard under a final name; the interrupted shard's temp file is gone.
  const train = await readdir(join(out, 'train'));
  assert.deepEqual(train.sort(), ['train-000000.tar', 'train-000001.tar']);
  const report = await prepareDataset({ source: src, out, train: 6, validation: 3, test: 3, samplesPerShard: 4 });
  assert.deepEqual(report.shardsReused, ['train/train-000000.tar', 'train/train-000001.tar']);
  assert.equal(report.shardsWritten.length, 5);
  assert.ok((await verifyDataset(out)).ok);
  // A corrupted finished shard is not reused: it is rewritten (even once the manifest is published).
  const file = join(out, 'test', 'test-000000.tar');
  const bytes = await readFile(file);
  bytes[600] ^= 1;
  await writeFile(file, bytes);
  assert.equal((await verifyDataset(out)).ok, false);
  const again = await prepareDataset({ source: src, out, train: 6, validation: 3, test: 3, samplesPerShard: 4 });
  assert.deepEqual(again.shardsWritten, ['test/test-000000.tar']);
  assert.equal(again.shardsReused.length, 6);
  assert.equal(again.complete, true);
  assert.ok((await verifyDataset(out)).ok);
  await Promise.all([src, out].map((d) => rm(d, { recursive: true })));
});

test('finalize names the missing workers; parts from every worker give the same manifest', async () => {
  const src = await flatSource(8);
  const out = await tempDir('out');
  const opts = { source: src, out, train: 4, validation: 2, test: 2, samplesPerShard: 3, workerCount: 3 };
  await prepareDataset({ ...opts, workerIndex: 1 });
  await assert.rejects(finalizeDataset(out), /missing parts from workers 0, 2 of 3/);
  // A worker asked to finalize while others are still running leaves it to the last one.
  const early = await prepareDataset({ ...opts, workerIndex: 0, finalize: true });
  assert.deepEqual(early.waitingFor, [2]);
  assert.equal(early.complete, false);
  await assert.rejects(finalizeDataset(out), /missing part from worker 2 of 3/);
  assert.ok(!existsSync(join(out, 'manifest.json')));
  const last = await prepareDataset({ ...opts, workerIndex: 2, finalize: true });
  assert.equal(last.complete, true);
  const one = await tempDir('out');
  await prepareDataset({ ...opts, out: one, workerCount: 1, workerIndex: 0 });
  const [m3, m1] = [await readManifest(out), await readManifest(one)];
  assert.equal(m3.planId, m1.planId);
  assert.deepEqual(m3.splits, m1.splits);
  await Promise.all([src, out, one].map((d) => rm(d, { recursive: true })));
});

test('sources: class folders and train.zip give the same samples as the flat folder; openImageFolder orders numerically', async () => {
  const root = await tempDir('cls');
  const entries: { name: string; data: Buffer }[] = [];
  for (const i of [0, 1, 2, 10, 11]) {
    for (const [prefix, cls] of [
      ['cat', 'cats'],
      ['dog', 'dogs'],
    ]) {
      const data = await readFile(join(kaggleTrainDir, `${prefix}.${i}.jpg`));
      await mkdir(join(root, 'folders', cls), { recursive: true });
      await writeFile(join(root, 'folders', cls, `${prefix}.${i}.jpg`), data);
      await mkdir(join(root, 'flat'), { recursive: true });
      await writeFile(join(root, 'flat', `${prefix}.${i}.jpg`), data);
      entries.push({ name: `train/${prefix}.${i}.jpg`, data });
    }
  }
  await writeZip(join(root, 'train.zip'), entries);
  const flat = await openImageFolder(join(root, 'flat'));
  assert.deepEqual(flat.classes, ['cats', 'dogs']);
  const keys = (await all(flat.samples())).map((s) => `${s.key}:${s.label}`);
  assert.deepEqual(keys, [
    'cat.0:0',
    'cat.1:0',
    'cat.2:0',
    'cat.10:0',
    'cat.11:0',
    'dog.0:1',
    'dog.1:1',
    'dog.2:1',
    'dog.10:1',
    'dog.11:1',
  ]);
  const folders = await openImageFolder(join(root, 'folders'));
  assert.deepEqual(
    (await all(folders.samples())).map((s) => `${s.key}:${s.label}`),
    keys,
  );
  const zip = await openSource(join(root, 'train.zip'));
  assert.equal(zip.layout, 'zip');
  const zipKeys = zip.classes.flatMap((c) => zip.byClass.get(c)!.map((i) => `${i.key}:${zip.classes.indexOf(c)}`));
  assert.deepEqual(zipKeys, keys);
  await zip.close();
  // Same plan → byte-identical shards, whatever the source layout.
  const ids = [];
  for (const s of ['flat', 'folders', 'train.zip']) {
    const out = join(root, `out-${s}`);
    const r = await prepareDataset({ source: join(root, s), out, train: 3, validation: 1, test: 1 });
    ids.push((await readManifest(out)).splits.train.shards[0].sha256);
    assert.equal(r.complete, true);
  }
  assert.equal(new Set(ids).size, 1);
  assert.equal(await stat(join(root, 'out-train.zip', 'manifest.json')).then(() => true), true);
  await rm(root, { recursive: true });
});
