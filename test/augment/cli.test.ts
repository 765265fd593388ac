// The augment CLI as a user runs it: real subprocesses on real images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { prepareDataset } from '@catdog/dataset';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';

// Run at the workspace root as Nx does, with the user's directory in INIT_CWD as npm/npx set it.
const cli = (args: string[], userDir = projectRoot) =>
  spawnSync(process.execPath, [CLI.augment, ...args], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, INIT_CWD: userDir },
  });

test('preview writes a grid of augmented versions of cat.3.jpg (relative --out resolves against INIT_CWD)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'catdog-augment-cli-'));
  const r = cli(
    [
      'preview',
      '--image',
      join(kaggleTrainDir, 'cat.3.jpg'),
      '--count',
      '6',
      '--cols',
      '3',
      '--out',
      'grid.png',
      '--seed',
      '4',
    ],
    dir,
  );
  assert.equal(r.status, 0, r.stderr);
  const meta = await sharp(join(dir, 'grid.png')).metadata();
  // 3 × 2 tiles of 150 px with 4 px gaps
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 3 * 150 + 4 * 4, 2 * 150 + 3 * 4]);
  // tiles differ from one another (random transforms), and the same seed gives the same grid
  const { data } = await sharp(join(dir, 'grid.png')).raw().toBuffer({ resolveWithObject: true });
  const tile = (i: number) => {
    const x0 = 4 + i * 154;
    return Buffer.concat(
      Array.from({ length: 150 }, (_, r) =>
        data.subarray(((4 + r) * meta.width! + x0) * 3, ((4 + r) * meta.width! + x0 + 150) * 3),
      ),
    );
  };
  assert.notDeepEqual(tile(0), tile(1));
  assert.equal(
    cli(
      [
        'preview',
        '--image',
        join(kaggleTrainDir, 'cat.3.jpg'),
        '--count',
        '6',
        '--cols',
        '3',
        '--out',
        'again.png',
        '--seed',
        '4',
      ],
      dir,
    ).status,
    0,
  );
  const again = await sharp(join(dir, 'again.png')).raw().toBuffer();
  assert.ok(again.equals(data));
  await rm(dir, { recursive: true });
});

test('bench ends with the verification line', () => {
  const r = cli([
    'bench',
    '--source',
    kaggleTrainDir,
    '--limit',
    '24',
    '--workers',
    '2',
    '--batch',
    '8',
    '--size',
    '48',
    '--passes',
    '1',
  ]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines.at(-1)!, /^augment images_per_s=\d+ workers=2$/);
  assert.match(r.stdout, /workers=1 images_per_s=\d+/);
  assert.match(r.stdout, /main_thread_ms_per_batch=[\d.]+/);
});

test('bench --read stream: the whole prepared split streamed through a size-limited shard cache, with the reason logged', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'catdog-augment-cli-read-'));
  try {
    const src = join(dir, 'src');
    await mkdir(src);
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => [`cat.${i}.jpg`, `dog.${i}.jpg`])
        .flat()
        .map((f) => copyFile(join(kaggleTrainDir, f), join(src, f))),
    );
    await prepareDataset({
      source: src,
      out: join(dir, 'ds'),
      train: 4,
      validation: 1,
      test: 1,
      resize: { width: 48, height: 48 },
      samplesPerShard: 2,
    });
    const r = cli([
      'bench',
      '--source',
      join(dir, 'ds'),
      '--read',
      'stream',
      '--cache-dir',
      join(dir, 'cache'),
      '--cache-limit',
      '1M',
      '--window-shards',
      '2',
      '--workers',
      '1',
      '--batch',
      '3',
      '--size',
      '48',
      '--passes',
      '2',
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^streaming shards: [\d.]+ MB > budget 0\.0 MB \(4 shards, 2 per window\)$/m);
    assert.match(r.stdout, /read=stream peak_mib_held=[\d.]+ shards_read=\d+ cache_hits=[1-9]/);
    assert.match(r.stdout.trim().split('\n').at(-1)!, /^augment images_per_s=\d+ workers=1$/);
    const bad = cli(['bench', '--source', join(dir, 'ds'), '--read', 'stream', '--cache-limit', 'lots']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--cache-limit must be a byte count/);
    const folder = cli(['bench', '--source', src, '--read', 'memory']);
    assert.equal(folder.status, 2);
    assert.match(folder.stderr, /--read memory needs a prepared dataset/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('clear errors: exit 1 for missing inputs, 2 for usage errors', () => {
  const a = cli(['preview', '--image', 'no-such-image.jpg']);
  assert.equal(a.status, 1);
  assert.match(a.stderr, /^error: image not found: .*no-such-image\.jpg/m);
  const b = cli(['bench', '--source', '/no/such/folder', '--limit', '4']);
  assert.equal(b.status, 1);
  assert.match(b.stderr, /^error: source not found: \/no\/such\/folder/m);
  const c = cli(['preview', '--image', join(kaggleTrainDir, 'cat.3.jpg'), '--fill-mode', 'mirror']);
  assert.equal(c.status, 2);
  assert.match(c.stderr, /fill-mode/);
  const d = cli(['bench', '--source', kaggleTrainDir, '--no-such-flag']);
  assert.equal(d.status, 2);
  assert.match(d.stderr, /unknown option '--no-such-flag'/);
  const e = cli(['preview', '--image', join(kaggleTrainDir, 'cat.3.jpg'), '--count', '0']);
  assert.equal(e.status, 2);
  assert.match(e.stderr, /--count must be a positive integer/);
  assert.equal(cli(['--help']).status, 0);
});

test('serve refuses to listen beyond loopback without a token, and names bad flags (exit 2)', () => {
  const { CATDOG_AUGMENT_TOKEN: _, ...env } = process.env;
  const run = (args: string[]) =>
    spawnSync(process.execPath, [CLI.augment, ...args], {
      cwd: projectRoot,
      encoding: 'utf8',
      env,
    });
  const a = run(['serve', '--port', '0']);
  assert.equal(a.status, 2);
  assert.match(a.stderr, /^error: serving on 0\.0\.0\.0 needs a token: give --token-file or set CATDOG_AUGMENT_TOKEN/m);
  const b = run(['serve', '--port', '70000']);
  assert.equal(b.status, 2);
  assert.match(b.stderr, /--port must be an integer in \[0, 65535\]/);
  const c = run(['serve', '--port', '0', '--token-file', '/no/such/token']);
  assert.equal(c.status, 1);
  assert.match(c.stderr, /^error: cannot read the token file \/no\/such\/token: ENOENT/m);
  const d = run(['bench', '--source', kaggleTrainDir, '--augment-service', 'nohostport']);
  assert.equal(d.status, 2);
  assert.match(d.stderr, /bad address "nohostport" \(expected host:port\)/);
});
