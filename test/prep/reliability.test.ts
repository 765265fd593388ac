// issue #16 in prep: typos of locations, odd and duplicate source names, litter of killed runs, malformed shard
// members, undecodable images, exit codes. Real subprocesses on real Kaggle images.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar-stream';
import sharp from 'sharp';
import { TEMP_MARKER } from '@catdog/storage';
import { openSource, sha256, type Manifest } from '@catdog/dataset';
import { UserError } from '@catdog/errors';
import { CLI, kaggleTrainDir, projectRoot } from '../helpers/fixtures.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = CLI.prep;
const SMALL = ['--train', '6', '--validation', '3', '--test', '3', '--shard-samples', '6'];
let src: string;
let work: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function prep(args: string[], env: Record<string, string> = {}, userDir = projectRoot): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], {
      cwd: projectRoot,
      env: { ...process.env, ...env, INIT_CWD: userDir },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Rewrites one shard of a published dataset through `edit` and updates the manifest to match (a "valid" shard). */
async function rewriteShard(
  out: string,
  edit: (name: string, data: Buffer) => { name: string; data: Buffer; type?: 'file' | 'symlink' }[],
) {
  const manifestPath = join(out, 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Manifest;
  const info = manifest.splits.train.shards[0];
  const extract = tar.extract();
  const members: { name: string; data: Buffer }[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      members.push({ name: entry.header.name, data: Buffer.concat(chunks) });
    }
  })();
  extract.end(await readFile(join(out, info.path)));
  await done;
  const pack = tar.pack();
  const parts: Buffer[] = [];
  pack.on('data', (c) => parts.push(c as Buffer));
  const ended = new Promise<void>((r) => pack.on('end', () => r()));
  for (const m of members) {
    for (const e of edit(m.name, m.data)) {
      if (e.type === 'symlink')
        pack.entry({ name: e.name, type: 'symlink', linkname: '/etc/passwd', mtime: new Date(0) });
      else pack.entry({ name: e.name, size: e.data.length, mtime: new Date(0) }, e.data);
    }
  }
  pack.finalize();
  await ended;
  const bytes = Buffer.concat(parts);
  await writeFile(join(out, info.path), bytes);
  info.bytes = bytes.length;
  info.sha256 = sha256(bytes);
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
}

let base: Promise<string> | undefined;
/** One dataset published by prep split from `src`, copied by the tests that damage it. */
function published(): Promise<string> {
  base ??= (async () => {
    const out = join(work, 'published');
    const r = await prep(['split', '--source', src, '--out', out, ...SMALL]);
    assert.equal(r.code, 0, r.stderr);
    return out;
  })();
  return base;
}

before(async () => {
  src = await flatSource(14);
  work = await tempDir('prep-reliability');
});
after(async () => {
  await rm(src, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

test('a typo of s3:// or a foreign scheme in any location is a usage error (exit 2) and creates nothing', async () => {
  const user = join(work, 'typos');
  await mkdir(user);
  const cases: [string[], RegExp][] = [
    [['split', '--source', src, '--out', 'gs://bucket/x'], /gs:\/\/bucket\/x: unsupported URL scheme "gs:"/],
    [['split', '--source', src, '--out', 'S3://bucket/x'], /S3:\/\/bucket\/x: .*did you mean s3:\/\/bucket\/x\?/],
    [
      ['split', '--source', src, '--out', 's3:/bucket/x'],
      /s3:\/bucket\/x: malformed S3 URL; did you mean s3:\/\/bucket\/x\?/,
    ],
    [['verify', '--data', 'S3://bucket/x'], /did you mean s3:\/\//],
    [['finalize', '--out', 'file:relative'], /unsupported file URL/],
  ];
  const runs = await Promise.all(cases.map(([args]) => prep(args, {}, user)));
  cases.forEach(([args, message], i) => {
    assert.equal(runs[i].code, 2, `${args.join(' ')}: ${runs[i].stderr}`);
    assert.match(runs[i].stderr, message);
  });
  assert.deepEqual(await readdir(user), []);
  assert.ok(
    !existsSync(join(projectRoot, 'gs:')) &&
      !existsSync(join(projectRoot, 'S3:')) &&
      !existsSync(join(projectRoot, 's3:')),
  );
});

test('exit codes: prep alone and an unknown subcommand exit 2 with usage; a bad --resize exits 2; --help exits 0', async () => {
  const [bare, unknown, resize, help] = await Promise.all([
    prep([]),
    prep(['splitt']),
    prep(['split', '--source', src, '--out', join(work, 'never'), '--resize', 'big']),
    prep(['--help']),
  ]);
  assert.equal(bare.code, 2);
  assert.match(bare.stderr, /Usage: prep/);
  assert.match(bare.stderr, /error: missing subcommand/);
  assert.equal(bare.stdout, '');
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command 'splitt'/);
  assert.equal(resize.code, 2);
  assert.match(resize.stderr, /--resize.*expected WxH/);
  assert.ok(!existsSync(join(work, 'never')));
  assert.equal(help.code, 0);
  assert.match(help.stdout, /split/);
});

test('every source file is accounted for: ignored names, hidden files, broken and converted images named in the summary, report and manifest', async () => {
  const source = await flatSource(14, join(work, 'mixed'));
  await copyFile(join(kaggleTrainDir, 'cat.100.jpg'), join(source, 'cat_12.jpg'));
  await copyFile(join(kaggleTrainDir, 'cat.101.jpg'), join(source, 'dog.jpg'));
  await copyFile(join(kaggleTrainDir, 'cat.102.jpg'), join(source, 'IMG_0001.JPG'));
  await writeFile(join(source, '.DS_Store'), 'junk');
  await mkdir(join(source, 'extra'));
  await copyFile(join(kaggleTrainDir, 'cat.103.jpg'), join(source, 'extra', 'cat.99.jpg'));
  // cat.3 cut short (skipped, replaced by a spare); dog.2 as a PNG under its own name (converted).
  const cat3 = await readFile(join(source, 'cat.3.jpg'));
  await writeFile(join(source, 'cat.3.jpg'), cat3.subarray(0, Math.floor(cat3.length / 3)));
  await rm(join(source, 'dog.2.jpg'));
  await sharp(join(kaggleTrainDir, 'dog.2.jpg')).png().toFile(join(source, 'dog.2.png'));

  const out = join(work, 'mixed-out');
  const r = await prep(['split', '--source', source, '--out', out, ...SMALL]);
  assert.equal(r.code, 0, r.stderr);
  // 28 images + 5 other files; 24 used (1 converted), 1 skipped, 5 ignored, 3 spare.
  assert.match(
    r.stdout,
    /^source: 33 files: 24 used \(1 converted\), 1 skipped, 5 ignored, 3 spare \(beyond the split\)$/m,
  );
  assert.match(r.stdout, /^ {2}converted 1: png → jpeg$/m);
  assert.match(r.stdout, /cat\.3\.jpg \(train\): truncated or corrupt image data.*→ replaced by cat\.1[23]$/m);
  assert.match(r.stdout, /^ignored 5 files \(not samples\):$/m);
  for (const name of ['cat_12.jpg', 'dog.jpg', 'IMG_0001.JPG'])
    assert.match(r.stdout, new RegExp(`^  ${name.replace('.', '\\.')}: name is not <class>\\.<number>\\.<ext>`, 'm'));
  assert.match(r.stdout, /^ {2}\.DS_Store: hidden file/m);
  assert.match(r.stdout, /^ {2}extra\/cat\.99\.jpg: in a subfolder/m);

  const report = JSON.parse(await readFile(join(out, 'prep-report.json'), 'utf8'));
  assert.deepEqual(report.accounting, { files: 33, used: 24, converted: 1, skipped: 1, ignored: 5, spare: 3 });
  assert.deepEqual(report.convertedBy, { 'png → jpeg': 1 });
  assert.deepEqual(report.ignored.map((f: { name: string }) => f.name).sort(), [
    '.DS_Store',
    'IMG_0001.JPG',
    'cat_12.jpg',
    'dog.jpg',
    'extra/cat.99.jpg',
  ]);
  assert.ok(report.ignored.every((f: { reason: string }) => f.reason.length > 10));
  const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Manifest;
  assert.deepEqual(manifest.accounting, report.accounting);
  const a = report.accounting;
  assert.equal(a.used + a.skipped + a.ignored + a.spare, a.files);

  const verify = await prep(['verify', '--data', out, '--decode']);
  assert.equal(verify.code, 0, verify.stderr);
  assert.match(verify.stdout, /24 images decoded/);
});

test('class folders: stray files are ignored with reasons; one key in two classes is refused (code bad-source)', async () => {
  const root = join(work, 'classes');
  await mkdir(join(root, 'cats'), { recursive: true });
  await mkdir(join(root, 'dogs'), { recursive: true });
  await copyFile(join(kaggleTrainDir, 'cat.0.jpg'), join(root, 'cats', 'a.jpg'));
  await copyFile(join(kaggleTrainDir, 'dog.0.jpg'), join(root, 'dogs', 'b.jpg'));
  await writeFile(join(root, 'README.txt'), 'notes');
  await writeFile(join(root, 'cats', '.thumbs'), 'junk');
  const source = await openSource(root);
  assert.deepEqual(source.ignored.map((f) => [f.name, f.reason.split(' (')[0]]).sort(), [
    ['README.txt', 'not inside a class folder'],
    ['cats/.thumbs', 'hidden file or folder'],
  ]);
  await copyFile(join(kaggleTrainDir, 'dog.1.jpg'), join(root, 'dogs', 'a.jpg'));
  await assert.rejects(openSource(root), (err: unknown) => {
    assert.ok(err instanceof UserError && err.code === 'bad-source');
    assert.match(err.message, /cats\/a\.jpg and dogs\/a\.jpg \(key a\)/);
    return true;
  });
});

test('two files with one key (cat.20.jpg and cat.20.png) are refused before anything is written', async () => {
  const source = await flatSource(24, join(work, 'dupes'));
  await sharp(join(kaggleTrainDir, 'cat.20.jpg')).png().toFile(join(source, 'cat.20.png'));
  const out = join(work, 'dupes-out');
  const r = await prep(['split', '--source', source, '--out', out, ...SMALL]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: .*dupes: 1 pair of files share a sample key .*: cat\.20\.jpg and cat\.20\.png \(key cat\.20\); remove or rename one of each pair$/m,
  );
  assert.ok(!existsSync(out));
  // Once resolved, what split publishes its own verify accepts.
  await rm(join(source, 'cat.20.png'));
  const ok = await prep(['split', '--source', source, '--out', out, ...SMALL]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((await prep(['verify', '--data', out, '--decode'])).code, 0);
});

test('temp files of a killed run are removed by the next run; a live writer’s and another host’s recent ones are kept', async () => {
  const out = join(work, 'killed');
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
  // A real kill -9 in the middle of writing a shard leaves its temp file.
  let litter: string[] = [];
  for (let attempt = 0; attempt < 5 && litter.length === 0; attempt++) {
    await rm(out, { recursive: true, force: true });
    const child = spawn(
      process.execPath,
      [main, 'split', '--source', src, '--out', out, ...SMALL, '--shard-samples', '4', '--concurrency', '1'],
      {
        cwd: projectRoot,
        stdio: 'ignore',
      },
    );
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && child.exitCode === null) {
      const names = existsSync(out) ? ((await readdir(out, { recursive: true })) as string[]) : [];
      litter = names.filter(
        (n) => n.includes(TEMP_MARKER) && n.endsWith('.tar' + TEMP_MARKER + n.split(TEMP_MARKER)[1]),
      );
      if (litter.length) {
        child.kill('SIGKILL');
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    litter = ((await readdir(out, { recursive: true }).catch(() => [])) as string[]).filter((n) =>
      n.includes(TEMP_MARKER),
    );
  }
  assert.ok(litter.length > 0, 'could not catch a shard write in progress');
  assert.ok(!existsSync(join(out, 'manifest.json')));
  // Plus a live writer's (this test process) and a recent one from another machine: both must survive.
  const live = `validation/validation-000009.tar${TEMP_MARKER}00aa11bb-${process.pid}@${host}`;
  const elsewhere = `test/test-000009.tar${TEMP_MARKER}00aa11bb-1@some-other-pod`;
  await mkdir(join(out, 'validation'), { recursive: true });
  await mkdir(join(out, 'test'), { recursive: true });
  await writeFile(join(out, live), 'x');
  await writeFile(join(out, elsewhere), 'x');

  const rerun = await prep(['split', '--source', src, '--out', out, ...SMALL, '--shard-samples', '4']);
  assert.equal(rerun.code, 0, rerun.stderr);
  assert.match(rerun.stderr, new RegExp(`removed ${litter.length} temp files? left by killed earlier runs`));
  const left = ((await readdir(out, { recursive: true })) as string[]).filter((n) => n.includes(TEMP_MARKER)).sort();
  assert.deepEqual(left, [elsewhere, live].sort());
  assert.equal((await prep(['verify', '--data', out])).code, 0);
});

test('verify rejects shard members with absolute names, .. or links, even when hashes match the manifest', async () => {
  const cases = [
    [
      'absolute',
      (n: string, d: Buffer) => [{ name: n.startsWith('cat_0.') ? `/tmp/${n}` : n, data: d }],
      /member "\/tmp\/cat_0\.jpg" has an absolute name/,
    ],
    [
      'parent',
      (n: string, d: Buffer) => [{ name: n.startsWith('dog_0.') ? `../${n}` : n, data: d }],
      /member "\.\.\/dog_0\.jpg" names a parent folder/,
    ],
    [
      'symlink',
      (n: string, d: Buffer) =>
        n === 'cat_0.cls'
          ? [
              { name: n, data: d },
              { name: 'evil.jpg', data: d, type: 'symlink' as const },
            ]
          : [{ name: n, data: d }],
      /member "evil\.jpg" is a symlink/,
    ],
  ] as const;
  const outs = [];
  for (const [label, edit] of cases) {
    const out = join(work, `members-${label}`);
    await cp(await published(), out, { recursive: true });
    await rewriteShard(out, edit as never);
    outs.push(out);
  }
  const runs = await Promise.all(outs.map((out) => prep(['verify', '--data', out])));
  cases.forEach(([label, , problem], i) => {
    const v = runs[i];
    assert.equal(v.code, 1, `${label}: ${v.stdout}`);
    assert.match(v.stderr, new RegExp(`FAIL .*train-000000\\.tar: ${problem.source}`));
    assert.match(v.stderr, /^error: .*1 of 4 shards failed verification: train\/train-000000\.tar$/m);
  });
});

test('verify --decode names every undecodable image by shard and key; without --decode the hashes alone pass', async () => {
  const out = join(work, 'undecodable');
  await cp(await published(), out, { recursive: true });
  await rewriteShard(out, (n, d) => [
    {
      name: n,
      data: n === 'dog_1.jpg' ? d.subarray(0, 2000) : n === 'cat_2.jpg' ? Buffer.from('not a jpeg at all') : d,
    },
  ]);
  const plain = await prep(['verify', '--data', out]);
  assert.equal(plain.code, 0, plain.stderr);
  const decode = await prep(['verify', '--data', out, '--decode', '--json']);
  assert.equal(decode.code, 1);
  const lines = decode.stderr.split('\n').filter((l) => l.startsWith('FAIL'));
  assert.equal(lines.length, 2, decode.stderr);
  assert.match(lines[0], /^FAIL .*train\/train-000000\.tar \[dog\.1\]: image dog\.1: undecodable/);
  assert.match(lines[1], /^FAIL .*train\/train-000000\.tar \[cat\.2\]: image cat\.2: undecodable/);
  assert.match(
    decode.stderr,
    /^error: .*1 of 4 shards failed verification \(2 undecodable images\): train\/train-000000\.tar$/m,
  );
  const report = JSON.parse(decode.stdout);
  assert.deepEqual(
    report.problems.map((p: { key: string }) => p.key),
    ['dog.1', 'cat.2'],
  );
  assert.equal(report.decoded, 24);
  assert.equal(report.undecodable, 2);
});
