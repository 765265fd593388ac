// The streaming reader on real shards (local disk): computed order, arithmetic positions, partitions, bounded
// memory, the shard cache and bad shards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, readdir, readFile, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isUserError } from '@catdog/errors';
import {
  streamOrder,
  locate,
  openSplit,
  openStream,
  prepareDataset,
  readManifest,
  sha256,
  type EncodedSample,
  type Manifest,
  type StreamedSample,
} from '@catdog/dataset';
import { flatSource, tempDir } from './helpers.js';

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const s of it) out.push(s);
  return out;
}

let src: string;
let out: string;
let manifest: Manifest;
/** Samples of each train shard in member order (what locate's (shard, index) must name). */
let byShard: EncodedSample[][];

before(async () => {
  src = await flatSource(24);
  out = await tempDir('stream');
  // train: 40 samples in 8 shards of 5.
  await prepareDataset({ source: src, out, train: 20, validation: 2, test: 2, samplesPerShard: 5 });
  manifest = await readManifest(out);
  const flat = await all((await openSplit(out, 'train')).samples());
  byShard = manifest.splits.train.shards.map((_, i) => flat.slice(i * 5, i * 5 + 5));
});
after(async () => {
  await rm(src, { recursive: true, force: true });
  await rm(out, { recursive: true, force: true });
});

const keys = (samples: { key: string }[]) => samples.map((s) => s.key);

test('the order of an epoch is a pure function of (seed, epoch, manifest); every sample once; epochs and seeds differ', async () => {
  const stream = await openStream(out, 'train', { seed: 11, windowShards: 3 });
  const e1 = keys(await all(stream.samples({ epoch: 1 })));
  const again = keys(await all((await openStream(out, 'train', { seed: 11, windowShards: 3 })).samples({ epoch: 1 })));
  assert.deepEqual(again, e1);
  assert.equal(e1.length, 40);
  assert.deepEqual([...e1].sort(), keys(byShard.flat()).sort());
  const e2 = keys(await all(stream.samples({ epoch: 2 })));
  const otherSeed = keys(
    await all((await openStream(out, 'train', { seed: 12, windowShards: 3 })).samples({ epoch: 1 })),
  );
  assert.notDeepEqual(e2, e1);
  assert.notDeepEqual(otherSeed, e1);
  assert.deepEqual([...e2].sort(), [...e1].sort());
  // Not shuffled: manifest order, as openSplit.
  const plain = keys(await all((await openStream(out, 'train', { shuffle: false })).samples()));
  assert.deepEqual(plain, keys(byShard.flat()));
  // The order object itself is plain data computed from counts alone.
  const counts = manifest.splits.train.shards.map((s) => s.count);
  assert.deepEqual(streamOrder(counts, 1, { seed: 11, windowShards: 3 }), stream.order(1));
  // Block shuffle: each run of windowShards shards' samples stays within those shards.
  const order = stream.order(1);
  const shardOf = new Map(byShard.flatMap((samples, i) => samples.map((s) => [s.key, i] as const)));
  let at = 0;
  for (const w of order.windows) {
    assert.deepEqual(new Set(e1.slice(at, at + w.count).map((k) => shardOf.get(k))), new Set(w.shards));
    at += w.count;
  }
});

test('locate(position) equals the streamed order; a start position resumes exactly; partitions are disjoint and cover the epoch', async () => {
  for (const [replicas, workers] of [
    [1, 1],
    [2, 1],
    [2, 2],
    [3, 1],
  ]) {
    const seen: string[] = [];
    const sizes: number[] = [];
    for (let rank = 0; rank < replicas; rank++) {
      for (let worker = 0; worker < workers; worker++) {
        const options = { seed: 3, windowShards: 2, replicas, rank, workers, worker };
        const stream = await openStream(out, 'train', options);
        const samples: StreamedSample[] = await all(stream.samples({ epoch: 4 }));
        assert.equal(samples.length, stream.count);
        const order = stream.order(4);
        samples.forEach((s, p) => {
          assert.equal(s.position, p);
          const ref = locate(order, p);
          assert.equal(s.key, byShard[ref.shard][ref.index].key, `rank ${rank} worker ${worker} position ${p}`);
          assert.equal(s.shard, manifest.splits.train.shards[ref.shard].path);
        });
        for (const start of [1, Math.floor(samples.length / 2), samples.length - 1, samples.length]) {
          assert.deepEqual(keys(await all(stream.samples({ epoch: 4, start }))), keys(samples.slice(start)));
        }
        seen.push(...keys(samples));
        sizes.push(samples.length);
      }
    }
    assert.equal(new Set(seen).size, seen.length, `${replicas}×${workers}: partitions overlap`);
    assert.deepEqual(
      [...seen].sort(),
      keys(byShard.flat()).sort(),
      `${replicas}×${workers}: partitions do not cover the epoch`,
    );
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${replicas}×${workers}: sizes ${sizes}`);
  }
  const stream = await openStream(out, 'train', { seed: 3 });
  await assert.rejects(all(stream.samples({ start: 41 })), (err) => isUserError(err, 'bad-config'));
  await assert.rejects(openStream(out, 'train', { rank: 2, replicas: 2 }), (err) => isUserError(err, 'bad-config'));
});

test('memory is bounded by the window and prefetch, not the split; the first sample comes after one window', async () => {
  const largest = Math.max(...manifest.splits.train.shards.map((s) => s.bytes));
  const total = manifest.splits.train.shards.reduce((a, s) => a + s.bytes, 0);
  const stream = await openStream(out, 'train', { seed: 1, windowShards: 1, prefetchShards: 1, fetchConcurrency: 1 });
  let readAtFirst = -1;
  let n = 0;
  for await (const _ of stream.samples()) {
    if (readAtFirst < 0) readAtFirst = stream.stats.shardsRead;
    n++;
  }
  assert.equal(n, 40);
  assert.ok(readAtFirst <= 2, `first sample after ${readAtFirst} shards`);
  assert.ok(stream.stats.peakBytesHeld > 0);
  assert.ok(
    stream.stats.peakBytesHeld <= 2 * largest,
    `held ${stream.stats.peakBytesHeld} bytes, two shards are ${2 * largest}`,
  );
  assert.ok(stream.stats.peakBytesHeld < total / 3);
  assert.equal(stream.stats.bytesHeld, 0);
  assert.equal(stream.stats.shardsRead, 8);
  // Stopping early releases what was read ahead.
  for await (const _ of stream.samples({ epoch: 1 })) break;
  assert.equal(stream.stats.bytesHeld, 0);
});

test('shard cache: later epochs read from disk; a size limit evicts least recently used; a full disk only warns', async () => {
  const cacheDir = await tempDir('shard-cache');
  const shards = manifest.splits.train.shards;
  const stream = await openStream(out, 'train', { seed: 2, cacheDir });
  const first = keys(await all(stream.samples({ epoch: 0 })));
  assert.equal(
    stream.stats.bytesFetched,
    shards.reduce((a, s) => a + s.bytes, 0),
  );
  assert.deepEqual((await readdir(cacheDir)).sort(), shards.map((s) => `${s.sha256}.tar`).sort());
  const reread = await openStream(out, 'train', { seed: 2, cacheDir });
  assert.deepEqual(keys(await all(reread.samples({ epoch: 0 }))), first);
  assert.equal(reread.stats.bytesFetched, 0);
  assert.equal(reread.stats.cacheHits, 8);
  // A damaged cache file is dropped and fetched again, never yielded.
  const damaged = join(cacheDir, `${shards[0].sha256}.tar`);
  const bytes = await readFile(damaged);
  bytes[600] ^= 0xff;
  await writeFile(damaged, bytes);
  const warnings: string[] = [];
  const healed = await openStream(out, 'train', { seed: 2, cacheDir, onWarning: (m) => warnings.push(m) });
  assert.deepEqual(keys(await all(healed.samples({ epoch: 0 }))), first);
  assert.equal(healed.stats.bytesFetched, shards[0].bytes);
  assert.match(warnings.join('\n'), /failed verification; fetching it again/);
  assert.deepEqual(await readFile(damaged), await readFile(join(out, shards[0].path)));
  await rm(cacheDir, { recursive: true });

  // Limit of three shards: after a pass the cache holds the three read last, and never more than the limit.
  const largest = Math.max(...shards.map((s) => s.bytes));
  const limited = await openStream(out, 'train', {
    seed: 2,
    windowShards: 1,
    prefetchShards: 0,
    fetchConcurrency: 1,
    cacheDir,
    cacheLimit: 3 * largest,
  });
  await all(limited.samples({ epoch: 0 }));
  const order = limited.order(0).windows.map((w) => shards[w.shards[0]].sha256);
  assert.deepEqual(
    (await readdir(cacheDir)).sort(),
    order
      .slice(-3)
      .map((h) => `${h}.tar`)
      .sort(),
  );
  assert.equal(limited.cache!.stats.evicted, 5);
  assert.ok((await limited.cache!.usage()) <= 3 * largest);
  // Reading the oldest again makes it the most recent: the next eviction takes another.
  const [oldest, middle, newest] = order.slice(-3);
  await utimes(join(cacheDir, `${oldest}.tar`), new Date(1000), new Date(1000));
  await utimes(join(cacheDir, `${middle}.tar`), new Date(2000), new Date(2000));
  await utimes(join(cacheDir, `${newest}.tar`), new Date(3000), new Date(3000));
  assert.ok(await limited.cache!.open(oldest, (await readFile(join(cacheDir, `${oldest}.tar`))).length));
  const w = await limited.cache!.writer(shards.find((s) => !order.slice(-3).includes(s.sha256))!.sha256, largest);
  await w!.abort();
  assert.deepEqual((await readdir(cacheDir)).sort(), [`${oldest}.tar`, `${newest}.tar`].sort());
  await rm(cacheDir, { recursive: true });

  // A limit below one shard: nothing is cached, one warning, the read goes on.
  const small: string[] = [];
  const tiny = await openStream(out, 'train', { seed: 2, cacheDir, cacheLimit: 1000, onWarning: (m) => small.push(m) });
  assert.deepEqual(keys(await all(tiny.samples({ epoch: 0 }))), first);
  assert.equal(small.length, 1, small.join('\n'));
  assert.match(small[0], /larger than the cache limit \(1000 bytes\)/);
  assert.deepEqual(
    (await readdir(cacheDir).catch(() => [])).filter((n) => n.endsWith('.tar')),
    [],
  );
  await assert.rejects(openStream(out, 'train', { cacheDir, cacheLimit: 0 }), (err) => isUserError(err, 'bad-config'));
  await rm(cacheDir, { recursive: true, force: true });

  // A full cache disk: the cache file's writes fail with ENOSPC (/dev/full); reading goes on, with one warning.
  await mkdir(cacheDir, { recursive: true });
  const target = shards[3];
  await symlink('/dev/full', join(cacheDir, `${target.sha256}.tar.${process.pid}.tmp`));
  const full: string[] = [];
  const onFull = await openStream(out, 'train', {
    seed: 2,
    cacheDir,
    fetchConcurrency: 1,
    onWarning: (m) => full.push(m),
  });
  assert.deepEqual(keys(await all(onFull.samples({ epoch: 0 }))), first);
  assert.equal(full.length, 1, full.join('\n'));
  assert.match(full[0], /disk is full; reading on without caching/);
  assert.ok(!(await readdir(cacheDir)).some((n) => n.endsWith('.tmp')));
  await rm(cacheDir, { recursive: true });
});

test('a corrupt or missing shard mid-epoch fails naming it; with skipCorrupt it is skipped and counted', async () => {
  const copy = await tempDir('stream-bad');
  await cp(out, copy, { recursive: true });
  const shards = manifest.splits.train.shards;
  const options = { seed: 9, windowShards: 2 };
  const order = (await openStream(copy, 'train', options)).order(0);
  // A shard of the second window, so some samples were already yielded when it fails.
  const bad = shards[order.windows[1].shards[0]];
  const file = join(copy, bad.path);
  const good = await readFile(file);
  const flipped = Buffer.from(good);
  flipped[1000] ^= 0x01;
  await writeFile(file, flipped);
  let yielded = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of (await openStream(copy, 'train', options)).samples()) yielded++;
    })(),
    (err) => isUserError(err, 'corrupt-shard') && err.message.includes(bad.path) && /sha256 mismatch/.test(err.message),
  );
  assert.equal(yielded, order.windows[0].count);
  // Truncated: the size check names it too.
  await writeFile(file, good.subarray(0, good.length - 1024));
  await assert.rejects(
    all((await openStream(copy, 'train', options)).samples()),
    (err) => isUserError(err, 'corrupt-shard') && err.message.includes(bad.path),
  );
  // Skipped and counted.
  const warnings: string[] = [];
  const skipping = await openStream(copy, 'train', {
    ...options,
    skipCorrupt: true,
    onWarning: (m) => warnings.push(m),
  });
  const samples = await all(skipping.samples());
  assert.equal(samples.length, 40 - bad.count);
  assert.deepEqual(skipping.stats.skippedShards, [join(copy, bad.path)]);
  assert.equal(skipping.stats.skippedSamples, bad.count);
  assert.match(warnings[0], new RegExp(`skipping shard .*${bad.path}`));
  // Missing.
  await unlink(file);
  await assert.rejects(
    all((await openStream(copy, 'train', options)).samples()),
    (err) => isUserError(err, 'missing-shard') && err.message.includes(bad.path),
  );
  const missing = await openStream(copy, 'train', { ...options, skipCorrupt: true, onWarning: () => {} });
  assert.equal((await all(missing.samples())).length, 40 - bad.count);
  // The remaining samples are intact.
  for (const s of samples) assert.equal(sha256(s.bytes), sha256(byShard.flat().find((b) => b.key === s.key)!.bytes));
  await rm(copy, { recursive: true });
});

test('a folder without manifest.json, or with a broken one, fails at open with its code', async () => {
  const empty = await tempDir('no-manifest');
  await assert.rejects(
    openStream(empty, 'train'),
    (err) => isUserError(err, 'no-manifest') && err.message.includes('manifest.json'),
  );
  await writeFile(join(empty, 'manifest.json'), JSON.stringify({ ...manifest, formatVersion: 99 }));
  await assert.rejects(
    openStream(empty, 'train'),
    (err) => isUserError(err, 'bad-manifest') && /formatVersion 99/.test(err.message),
  );
  await rm(empty, { recursive: true });
});

test('epochs() chains epochs from a resume point, reading the next epoch ahead of the boundary', async () => {
  const options = { seed: 6, windowShards: 2, replicas: 2, rank: 1 };
  const stream = await openStream(out, 'train', options);
  const expected = [
    ...(await all(stream.samples({ epoch: 1, start: 7 }))),
    ...(await all(stream.samples({ epoch: 2 }))),
    ...(await all(stream.samples({ epoch: 3 }))),
  ].map((s) => `${s.epoch}/${s.position}/${s.key}`);
  const fresh = await openStream(out, 'train', options);
  const epoch1 = fresh.order(1);
  const epoch1Shards = new Set(
    epoch1.windows.filter((w) => w.first + w.count > epoch1.start + 7 && w.first < epoch1.end).flatMap((w) => w.shards),
  );
  const chained: string[] = [];
  let readAhead = false;
  for await (const s of fresh.epochs({ epoch: 1, start: 7, epochs: 3 })) {
    chained.push(`${s.epoch}/${s.position}/${s.key}`);
    if (s.epoch === 1 && s.position === fresh.count - 1) {
      // Holding the last sample of epoch 1: epoch 2's first window is being read meanwhile (never, without read-ahead).
      for (let waited = 0; waited < 5000 && !readAhead; waited += 20) {
        readAhead = fresh.stats.shardsRead > epoch1Shards.size;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
  assert.deepEqual(chained, expected);
  assert.ok(readAhead, `only epoch 1's ${epoch1Shards.size} shards were read before epoch 2 was asked for`);
  // Endless by default; breaking out stops it and releases what was read ahead.
  let n = 0;
  for await (const _ of fresh.epochs()) if (++n === 3 * fresh.count + 1) break;
  assert.equal(fresh.stats.bytesHeld, 0);
});
