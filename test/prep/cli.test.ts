// The prep CLI as users run it: real subprocesses, real images, a real S3-protocol server on 127.0.0.1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openStorage } from '@catdog/storage';
import { readManifest, type Manifest } from '@catdog/dataset';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = CLI.prep;
let s3: LoopbackS3;
let src: string;
let work: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs prep from the project root (as Nx does) with INIT_CWD set to the user's directory. */
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

const SMALL = ['--train', '30', '--validation', '10', '--test', '10', '--shard-samples', '16'];

before(async () => {
  s3 = await startLoopbackS3(['prep-test']);
  src = await flatSource(50);
  work = await tempDir('prep-cli');
});
after(async () => {
  await s3?.stop();
  await rm(src, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

test('split to a local folder (relative paths), verify passes, tar -tf lists <key>.jpg; a flipped byte fails verify naming the shard', async () => {
  const run = await prep(['split', '--source', src, '--out', 'local', ...SMALL], {}, work);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /manifest written/);
  assert.match(run.stdout, /train\s+60 images \(30 cats, 30 dogs\) in 4 shards/);
  assert.match(run.stderr, /prep split: \d+\/100 images/); // plain progress lines when not on a terminal
  const out = join(work, 'local');
  const list = spawnSync('tar', ['-tf', join(out, 'train', 'train-000000.tar')], { encoding: 'utf8' })
    .stdout.trim()
    .split('\n');
  assert.deepEqual(list.slice(0, 4), ['cat_0.jpg', 'cat_0.cls', 'dog_0.jpg', 'dog_0.cls']);
  const verify = await prep(['verify', '--data', out]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.match(verify.stdout, /^OK .*: 8 shards, 100 samples/);
  const inspect = await prep(['inspect', '--data', out]);
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.match(inspect.stdout, /validation\s+20 images \(10 cats, 10 dogs\), 2 shards, .*width \d+–\d+/);

  const shard = join(out, 'validation', 'validation-000001.tar');
  const bytes = await readFile(shard);
  bytes[1234] ^= 0x01;
  await writeFile(shard, bytes);
  const bad = await prep(['verify', '--data', out]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /FAIL .*validation\/validation-000001\.tar: sha256 mismatch/);
  assert.match(bad.stderr, /error: .*1 of 8 shards failed verification: validation\/validation-000001\.tar/);
});

test('split to S3 (--s3-endpoint) and with 3 concurrent workers + finalize: byte-identical shards to one worker', async () => {
  const creds = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  const noEndpoint = { ...creds, AWS_ENDPOINT_URL_S3: '', AWS_ENDPOINT_URL: '' };
  const one = await prep(
    ['split', '--source', src, '--out', 's3://prep-test/one', '--s3-endpoint', s3.endpoint, ...SMALL],
    noEndpoint,
  );
  assert.equal(one.code, 0, one.stderr);
  const v1 = await prep(['verify', '--data', 's3://prep-test/one'], s3.env);
  assert.equal(v1.code, 0, v1.stderr);

  // Three workers at once (as an Indexed Job: JOB_COMPLETION_INDEX + CATDOG_WORKER_COUNT), endpoint from the environment.
  const workers = await Promise.all(
    [0, 1, 2].map((i) =>
      prep(['split', '--source', src, '--out', 's3://prep-test/many', ...SMALL], {
        ...s3.env,
        JOB_COMPLETION_INDEX: String(i),
        CATDOG_WORKER_COUNT: '3',
      }),
    ),
  );
  for (const w of workers) {
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout, /part \d of 3 written/);
  }
  const storage = openStorage('s3://prep-test/many', { endpoint: s3.endpoint });
  assert.equal(await storage.stat('manifest.json'), undefined);
  const fin = await prep(['finalize', '--out', 's3://prep-test/many'], s3.env);
  assert.equal(fin.code, 0, fin.stderr);
  const v3 = await prep(['verify', '--data', 's3://prep-test/many'], s3.env);
  assert.equal(v3.code, 0, v3.stderr);

  const m1: Manifest = await readManifest('s3://prep-test/one', { endpoint: s3.endpoint });
  const m3: Manifest = await readManifest('s3://prep-test/many', { endpoint: s3.endpoint });
  assert.equal(m3.createdBy.workers, 3);
  assert.equal(m1.planId, m3.planId);
  assert.deepEqual(m3.splits, m1.splits);
  // And identical to the shards written to local disk by the first test's command.
  const local = await readManifest(join(work, 'local')).catch(() => undefined);
  if (local)
    assert.deepEqual(
      local.splits.train.shards.map((s) => s.sha256),
      m3.splits.train.shards.map((s) => s.sha256),
    );
  const a = await openStorage('s3://prep-test/one', { endpoint: s3.endpoint }).read('test/test-000000.tar');
  const b = await storage.read('test/test-000000.tar');
  assert.ok(a.equals(b));
});

test('finalize with a worker missing names it and writes no manifest', async () => {
  const out = join(work, 'partial');
  const env = { CATDOG_WORKER_COUNT: '3' };
  for (const i of [0, 2]) {
    const r = await prep(['split', '--source', src, '--out', out, '--worker-index', String(i), ...SMALL], env);
    assert.equal(r.code, 0, r.stderr);
  }
  const fin = await prep(['finalize', '--out', out]);
  assert.equal(fin.code, 1);
  assert.match(fin.stderr, /^error: .*not finalized: missing part from worker 1 of 3/m);
  assert.ok(!existsSync(join(out, 'manifest.json')));
  const verify = await prep(['verify', '--data', out]);
  assert.equal(verify.code, 1);
  assert.match(verify.stderr, /no manifest\.json/);
});

test('S3 errors and usage errors: one line naming the URL and cause, non-zero exit', async () => {
  const creds = {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_REGION: 'us-east-1',
    AWS_MAX_ATTEMPTS: '2',
  };
  const missing = await prep(
    ['split', '--source', src, '--out', 's3://no-such-bucket/x', '--s3-endpoint', s3.endpoint, ...SMALL],
    creds,
  );
  assert.equal(missing.code, 1);
  assert.deepEqual(missing.stderr.trim().split('\n'), [
    `error: s3://no-such-bucket/x/manifest.json: bucket does not exist (NoSuchBucket)`,
  ]);
  const down = await prep(['verify', '--data', 's3://prep-test/one', '--s3-endpoint', 'http://127.0.0.1:9'], creds);
  assert.equal(down.code, 1);
  assert.match(
    down.stderr.trim(),
    /^error: s3:\/\/prep-test\/one\/manifest\.json: endpoint http:\/\/127\.0\.0\.1:9 unreachable \(ECONNREFUSED\)$/,
  );
  const usage = await prep(['split', '--source', src]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /required option '--out <path\|url>' not specified/);
  const help = await prep(['verify', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--data <path\|url>/);
  const tooMany = await prep([
    'split',
    '--source',
    src,
    '--out',
    join(work, 'x'),
    '--train',
    '40',
    '--validation',
    '10',
    '--test',
    '10',
  ]);
  assert.equal(tooMany.code, 1);
  assert.match(tooMany.stderr, /too few images: class cats has 50 images, the split needs 60/);
  assert.ok(!existsSync(join(work, 'x')));
  await mkdir(join(work, 'unused'), { recursive: true });
});
