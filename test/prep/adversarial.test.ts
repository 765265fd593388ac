// issue #16, adversarial inputs: decompression bombs, hostile tar members (names, links, declared sizes), manifests
// pointing outside the dataset or declaring absurd sizes, names that are not UTF-8. Each is refused or skipped with
// a message naming the file and the cause, with bounded memory, and nothing is written outside the output.
// Real subprocesses (prep, augment) on real Kaggle images; the streaming reader in process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import * as tar from 'tar-stream';
import sharp from 'sharp';
import { openStream, readManifest, sha256, type Manifest } from '@catdog/dataset';
import { decodeResized } from '@catdog/augment';
import { UserError } from '@catdog/errors';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const prepMain = CLI.prep;
const augmentMain = CLI.augment;
const SMALL = ['--train', '6', '--validation', '3', '--test', '3', '--shard-samples', '6'];
let work: string;
let s3: LoopbackS3;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Peak resident set of the child, kB (GNU time's %M). */
  peakKb: number;
}

/** Runs a CLI under GNU time for its peak RSS. */
function run(main: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const timeFile = join(work, `time-${Math.random().toString(36).slice(2)}`);
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, process.execPath, main, ...args], {
      cwd: projectRoot,
      env: { ...process.env, ...env, INIT_CWD: projectRoot },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', async (code) => {
      const peakKb = Number((await readFile(timeFile, 'utf8')).trim().split('\n').pop());
      resolve({ code, stdout, stderr, peakKb });
    });
  });
}

/** A real 8×8 image re-labelled as width × height: a few hundred bytes declaring billions of pixels. */
async function jpegBomb(width: number, height: number): Promise<Buffer> {
  const b = Buffer.from(
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
      .jpeg()
      .toBuffer(),
  );
  for (let i = 2; i < b.length; i += 2 + b.readUInt16BE(i + 2)) {
    if (b[i + 1] >= 0xc0 && b[i + 1] <= 0xc2) {
      b.writeUInt16BE(height, i + 5);
      b.writeUInt16BE(width, i + 7);
      return b;
    }
  }
  throw new Error('no SOF marker');
}

async function pngBomb(width: number, height: number): Promise<Buffer> {
  const b = Buffer.from(
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
      .png()
      .toBuffer(),
  );
  b.writeUInt32BE(width, 16);
  b.writeUInt32BE(height, 20);
  b.writeUInt32BE(crc32(b.subarray(12, 29)) >>> 0, 29); // IHDR's CRC, so the header is valid
  return b;
}

type Member = { name: string; data?: Buffer; type?: 'file' | 'symlink' | 'link' | 'directory'; size?: number };

/** A tar of `members` (links point at /etc/passwd); `size` overrides a file's declared size (base-256 field). */
async function tarOf(members: Member[]): Promise<Buffer> {
  const pack = tar.pack();
  const parts: Buffer[] = [];
  pack.on('data', (c) => parts.push(c as Buffer));
  const ended = new Promise<void>((r) => pack.on('end', () => r()));
  const headerAt: { index: number; size: number }[] = [];
  for (const m of members) {
    const type = m.type ?? 'file';
    if (type === 'file') {
      if (m.size !== undefined) headerAt.push({ index: parts.length, size: m.size });
      pack.entry({ name: m.name, size: m.data!.length, mtime: new Date(0) }, m.data!);
    } else pack.entry({ name: m.name, type, linkname: '/etc/passwd', mtime: new Date(0), size: 0 });
  }
  pack.finalize();
  await ended;
  let bytes: Buffer = Buffer.concat(parts);
  for (const { size } of headerAt) bytes = declareSize(bytes, size);
  return bytes;
}

/** Rewrites the size field of the first file header whose data is not already huge: a base-256 number, new checksum. */
function declareSize(tarBytes: Buffer, size: number): Buffer {
  const b = Buffer.from(tarBytes);
  const h = 0; // the first header
  const field = Buffer.alloc(12);
  field[0] = 0x80;
  field.writeBigUInt64BE(BigInt(size), 4);
  field.copy(b, h + 124);
  b.fill(0x20, h + 148, h + 156);
  let sum = 0;
  for (let i = h; i < h + 512; i++) sum += b[i];
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, h + 148, 'latin1');
  return b;
}

let published: Promise<string> | undefined;
/** One dataset published by prep split, copied by the tests that damage it. */
function dataset(): Promise<string> {
  published ??= (async () => {
    const src = await flatSource(14, join(work, 'src-clean'));
    const out = join(work, 'published');
    const r = await run(prepMain, ['split', '--source', src, '--out', out, ...SMALL]);
    assert.equal(r.code, 0, r.stderr);
    return out;
  })();
  return published;
}

/** A copy of the dataset whose first train shard is replaced by `members` (the manifest updated to match). */
async function withShard(label: string, members: (orig: Member[]) => Member[]): Promise<string> {
  const out = join(work, label);
  await cp(await dataset(), out, { recursive: true });
  const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Manifest;
  const info = manifest.splits.train.shards[0];
  const extract = tar.extract();
  const orig: Member[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      orig.push({ name: entry.header.name, data: Buffer.concat(chunks) });
    }
  })();
  extract.end(await readFile(join(out, info.path)));
  await done;
  const bytes = await tarOf(members(orig));
  await writeFile(join(out, info.path), bytes);
  info.bytes = bytes.length;
  info.sha256 = sha256(bytes);
  await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2));
  return out;
}

/** Every sample of a split through the streaming reader (with a shard cache), or the error it stops with. */
async function streamAll(url: string, cacheDir: string): Promise<unknown> {
  try {
    const stream = await openStream(url, 'train', { cacheDir, onWarning: () => {} });
    for await (const _ of stream.samples()) {
      // read through
    }
    return undefined;
  } catch (err) {
    return err;
  }
}

before(async () => {
  work = await tempDir('adversarial');
  s3 = await startLoopbackS3(['adv-bucket']);
});
after(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

test('decompression bombs (JPEG and PNG declaring 60000×60000, a JPEG of 144 MP) are skipped by prep split with their size named, memory bounded', async () => {
  const src = await flatSource(20, join(work, 'src-bombs'));
  await writeFile(join(src, 'cat.3.jpg'), await jpegBomb(60000, 60000));
  await writeFile(join(src, 'dog.4.png'), await pngBomb(60000, 60000));
  await writeFile(join(src, 'dog.5.jpg'), await jpegBomb(12000, 12000)); // under sharp's own 268 MP limit
  await rm(join(src, 'dog.4.jpg'));
  const out = join(work, 'bombs-out');
  const r = await run(prepMain, ['split', '--source', src, '--out', out, ...SMALL]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /skipped 3 files:/);
  assert.match(
    r.stdout,
    /cat\.3\.jpg \(\w+\): image too large: declares 60000×60000 pixels \(3,600 megapixels; the limit is 134\)/,
  );
  assert.match(r.stdout, /dog\.4\.png \(\w+\): image too large: declares 60000×60000 pixels/);
  assert.match(r.stdout, /dog\.5\.jpg \(\w+\): image too large: declares 12000×12000 pixels \(144 megapixels/);
  // 3.6 G pixels would be 10.8 GB as RGB: the whole process stays far below one such image.
  assert.ok(r.peakKb < 1_000_000, `prep split peaked at ${r.peakKb} kB`);
  const manifest = await readManifest(out);
  assert.deepEqual(manifest.skipped?.map((s) => s.source).sort(), ['cat.3.jpg', 'dog.4.png', 'dog.5.jpg']);
  assert.equal(manifest.splits.train.count + manifest.splits.validation.count + manifest.splits.test.count, 24);
  assert.equal((await run(prepMain, ['verify', '--data', out, '--decode'])).code, 0);
});

test('a bomb inside a shard: verify --decode names it by key; augment preview refuses it (exit 1); the decoder throws before allocating', async () => {
  const bomb = await pngBomb(60000, 60000);
  const out = await withShard('bomb-shard', (orig) =>
    orig.map((m) => (m.name === 'cat_0.jpg' ? { name: 'cat_0.png', data: bomb } : m)),
  );
  const file = join(work, 'bomb.jpg');
  await writeFile(file, await jpegBomb(60000, 60000));
  const [v, inspect, p] = await Promise.all([
    run(prepMain, ['verify', '--data', out, '--decode']),
    run(prepMain, ['inspect', '--data', out]),
    run(augmentMain, ['preview', '--image', file, '--out', join(work, 'preview.png')]),
  ]);
  assert.equal(v.code, 1, v.stdout);
  assert.match(
    v.stderr,
    /FAIL .*train-000000\.tar \[cat\.0\]: image cat\.0: image too large: declares 60000×60000 pixels/,
  );
  assert.ok(v.peakKb < 1_000_000, `verify peaked at ${v.peakKb} kB`);
  assert.equal(inspect.code, 0, `inspect reads the header only: ${inspect.stderr}`);

  assert.equal(p.code, 1, p.stderr);
  assert.match(p.stderr, /^error: cannot decode .*bomb\.jpg: image too large: declares 60000×60000 pixels/m);
  assert.ok(!existsSync(join(work, 'preview.png')), 'no preview written');

  for (const interpolation of ['nearest', 'bilinear'] as const) {
    for (const [name, bytes] of [
      ['jpeg', await jpegBomb(60000, 60000)],
      ['png', bomb],
      ['jpeg 144 MP', await jpegBomb(12000, 12000)],
    ] as const) {
      await assert.rejects(decodeResized(bytes, { height: 150, width: 150, interpolation }), /image too large/, name);
    }
  }
});

test('augment bench over a folder holding a bomb skips it and names it', async () => {
  const folder = join(work, 'bench-folder');
  await flatSource(4, folder);
  await writeFile(join(folder, 'cat.9.jpg'), await jpegBomb(60000, 60000));
  const b = await run(augmentMain, [
    'bench',
    '--source',
    folder,
    '--workers',
    '1',
    '--batch',
    '4',
    '--size',
    '32',
    '--passes',
    '1',
  ]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /skipped cat\.9: image too large: declares 60000×60000 pixels/);
});

test('hostile tar members (../x, /etc/x, symlink, hard link, a header declaring 1 TB) are refused by verify and by the streaming reader, which writes nothing', async () => {
  const cases: [string, (orig: Member[]) => Member[], RegExp][] = [
    [
      'parent',
      (o) => o.map((m) => (m.name === 'dog_0.jpg' ? { ...m, name: '../../dog_0.jpg' } : m)),
      /member "\.\.\/\.\.\/dog_0\.jpg" names a parent folder \(\.\.\)/,
    ],
    [
      'absolute',
      (o) => o.map((m) => (m.name === 'cat_0.jpg' ? { ...m, name: '/etc/cat_0.jpg' } : m)),
      /member "\/etc\/cat_0\.jpg" has an absolute name/,
    ],
    [
      'symlink',
      (o) => [...o, { name: 'cat_9.jpg', type: 'symlink' }],
      /member "cat_9\.jpg" is a symlink, not a regular file/,
    ],
    [
      'hardlink',
      (o) => [...o, { name: 'cat_9.jpg', type: 'link' }],
      /member "cat_9\.jpg" is a link, not a regular file/,
    ],
    [
      'huge',
      (o) => [{ ...o[0], size: 2 ** 40 }, ...o.slice(1)],
      /member "cat_0\.jpg" declares 1099511627776 bytes \(more than the 1073741824 a member may hold\)/,
    ],
  ];
  const outs = await Promise.all(cases.map(([label, edit]) => withShard(`member-${label}`, edit)));
  const verifies = await Promise.all(outs.map((out) => run(prepMain, ['verify', '--data', out])));
  for (const [i, [label, , problem]] of cases.entries()) {
    const v = verifies[i];
    assert.equal(v.code, 1, `${label}: ${v.stdout}`);
    assert.match(v.stderr, new RegExp(`FAIL .*train-000000\\.tar: ${problem.source}`), label);
    assert.match(v.stderr, /^error: .*1 of 4 shards failed verification: train\/train-000000\.tar$/m, label);
    assert.ok(v.peakKb < 1_000_000, `${label}: verify peaked at ${v.peakKb} kB`);

    const cacheDir = join(work, `cache-${label}`);
    const err = await streamAll(outs[i], cacheDir);
    assert.ok(err instanceof UserError, `${label}: the reader must refuse the shard, got ${String(err)}`);
    assert.equal(err.code, 'corrupt-shard', label);
    assert.match(err.message, new RegExp(`train-000000\\.tar: ${problem.source}`), label);
    // The refused shard never reaches the cache (the valid shards read ahead beside it may); nothing escapes it.
    const refused = (JSON.parse(await readFile(join(outs[i], 'manifest.json'), 'utf8')) as Manifest).splits.train
      .shards[0].sha256;
    const cached = existsSync(cacheDir) ? await readdir(cacheDir, { recursive: true }) : [];
    assert.ok(!cached.some((f) => f.startsWith(refused)), `${label}: the refused shard was cached`);
  }
  assert.ok(!existsSync(join(work, 'dog_0.jpg')) && !existsSync('/etc/cat_0.jpg'), 'nothing written outside');
});

test('manifests pointing outside the dataset or declaring absurd sizes are refused before any shard is read (local and S3)', async () => {
  const base = JSON.parse(await readFile(join(await dataset(), 'manifest.json'), 'utf8')) as Manifest;
  const shard0 = base.splits.train.shards[0];
  const edits: [string, (s: typeof shard0) => void, RegExp][] = [
    [
      'parent',
      (s) => (s.path = '../../outside/train-000000.tar'),
      /shard path "\.\.\/\.\.\/outside\/train-000000\.tar" escapes the dataset/,
    ],
    ['absolute', (s) => (s.path = '/etc/passwd'), /shard path "\/etc\/passwd" escapes the dataset/],
    [
      'dot segment',
      (s) => (s.path = 'train/./../../x.tar'),
      /shard path "train\/\.\/\.\.\/\.\.\/x\.tar" escapes the dataset/,
    ],
    [
      'sha256 as a path',
      (s) => (s.sha256 = '../../../escaped'),
      /shard train\/train-000000\.tar: sha256 is not a hex SHA-256 digest/,
    ],
    [
      'terabytes',
      (s) => (s.bytes = 5e12),
      /shard train\/train-000000\.tar declares 5000000000000 bytes \(a shard holds at most 68719476736\)/,
    ],
    [
      'a trillion samples',
      (s) => {
        s.count = 1e12;
        base.splits.train.count += 1e12 - shard0.count;
      },
      /shard train\/train-000000\.tar declares 1000000000000 samples in \d+ bytes/,
    ],
  ];
  const { openStorage } = await import('@catdog/storage');
  for (const [label, edit, problem] of edits) {
    const m = structuredClone(base);
    const saved = base.splits.train.count;
    edit(m.splits.train.shards[0]);
    if (label === 'a trillion samples') m.splits.train.count = base.splits.train.count;
    base.splits.train.count = saved;
    const local = join(work, `manifest-${label.replace(/ /g, '-')}`);
    await cp(await dataset(), local, { recursive: true });
    await writeFile(join(local, 'manifest.json'), JSON.stringify(m, null, 2));
    const url = `s3://adv-bucket/${label.replace(/ /g, '-')}`;
    await openStorage(url).write('manifest.json', Buffer.from(JSON.stringify(m)));

    for (const where of [local, url]) {
      const cacheDir = join(work, `cache-manifest-${label.replace(/ /g, '-')}`);
      const err = await streamAll(where, cacheDir);
      assert.ok(err instanceof UserError && err.code === 'bad-manifest', `${label} ${where}: ${String(err)}`);
      assert.match(err.message, new RegExp(`manifest\\.json: not a valid dataset manifest \\(${problem.source}\\)$`));
      assert.ok(!existsSync(cacheDir) || (await readdir(cacheDir)).length === 0, `${label}: the cache was written`);
    }
  }
  // The CLIs say the same, exit 1 (two of the cases, local and S3, in parallel: each start costs seconds).
  const [local, remote] = await Promise.all([
    run(prepMain, ['verify', '--data', join(work, 'manifest-parent')], s3.env),
    run(prepMain, ['inspect', '--data', 's3://adv-bucket/terabytes'], s3.env),
  ]);
  assert.equal(local.code, 1, local.stdout);
  assert.match(
    local.stderr,
    /^error: .*manifest-parent\/manifest\.json: not a valid dataset manifest \(shard path "\.\.\/\.\.\/outside\/train-000000\.tar" escapes the dataset\)$/m,
  );
  assert.equal(remote.code, 1, remote.stdout);
  assert.match(
    remote.stderr,
    /^error: s3:\/\/adv-bucket\/terabytes\/manifest\.json: not a valid dataset manifest \(shard train\/train-000000\.tar declares 5000000000000 bytes/m,
  );
  assert.ok(!existsSync(join(work, 'escaped.tar')) && !existsSync(join(work, 'outside')), 'nothing written outside');
});

test('names that are not UTF-8 in a source are ignored with that reason (flat and class folders), never read as ENOENT', async () => {
  const flat = await flatSource(14, join(work, 'src-bytes'));
  const classes = join(work, 'src-bytes-classes');
  for (const c of ['cat', 'dog']) {
    await mkdir(join(classes, `${c}s`), { recursive: true });
    for (let i = 0; i < 14; i++)
      await copyFile(join(kaggleTrainDir, `${c}.${i}.jpg`), join(classes, `${c}s`, `${c}.${i}.jpg`));
  }
  // Raw bytes 0xff 0xfe: no UTF-8 decoding gives them back (Buffer paths, as fs allows).
  const latin = (dir: string, prefix: string) =>
    Buffer.concat([Buffer.from(`${dir}/${prefix}`), Buffer.from([0xff, 0xfe]), Buffer.from('.jpg')]);
  await copyFile(join(kaggleTrainDir, 'cat.100.jpg'), latin(flat, 'cat.'));
  await copyFile(join(kaggleTrainDir, 'cat.101.jpg'), latin(join(classes, 'cats'), 'photo'));
  for (const [label, src] of [
    ['flat', flat],
    ['class folders', classes],
  ] as const) {
    const out = join(work, `bytes-out-${label.replace(' ', '-')}`);
    const r = await run(prepMain, ['split', '--source', src, '--out', out, ...SMALL]);
    assert.equal(r.code, 0, `${label}: ${r.stderr}`);
    assert.match(
      r.stdout,
      /ignored 1 file \(not samples\):\n {2}\S*\uFFFD\uFFFD\.jpg: name is not valid UTF-8 \(rename the file to read it\)/,
      label,
    );
    assert.match(r.stdout, /, 0 skipped, 1 ignored,/, label);
    const manifest = await readManifest(out);
    assert.equal(manifest.accounting?.ignored, 1, label);
  }
});
