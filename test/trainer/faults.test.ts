// issue #16 for the trainer: faults under the training stream (--data s3://) and the run uploads (--out s3://)
// through the fault-injecting proxy in front of s3rver, credentials never printed, undecodable images named.
// A run through faults ends as the fault-free run (same history, test metrics and weights; CATDOG_AUTOTUNE=0 in
// both so both processes take the same kernel plans), or fails naming the object with no final marker published.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { openStorage } from '@catdog/storage';
import { kaggleTrainDir } from '../helpers/fixtures.js';
import type { LoopbackS3 } from '../helpers/s3-server.js';
import { startFaultProxy, type FaultProxy } from '../helpers/s3-fault-proxy.js';
import { CONTRACT, lastLine, runTrainerAsync, startS3Dataset, type S3Dataset } from './helpers.js';

const BUCKET = 'tfaults';
const DATA = `s3://${BUCKET}/data`;
let ds: S3Dataset;
let s3: LoopbackS3;
let root: string;
const proxies: FaultProxy[] = [];

/** scratch, ci-smoke: every epoch streams the train and validation shards from S3. */
function trainArgs(out: string, epochs = 2): string[] {
  return ['scratch', '--data', DATA, '--out', out, '--preset', 'ci-smoke', '--epochs', String(epochs)];
}

/** The environment of a run through `endpoint`: the default kernel plans, short idle timeout, a few attempts. */
function via(endpoint: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...s3.env,
    AWS_ENDPOINT_URL_S3: endpoint,
    CATDOG_AUTOTUNE: '0',
    CATDOG_S3_SOCKET_TIMEOUT_MS: '1000',
    AWS_MAX_ATTEMPTS: '5',
    ...extra,
  };
}

async function keys(url: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of openStorage(url, { endpoint: s3.endpoint }).list()) out.push(e.path);
  return out.sort();
}

async function json(url: string, file: string): Promise<Record<string, unknown>> {
  return JSON.parse((await openStorage(url, { endpoint: s3.endpoint }).read(file)).toString('utf8'));
}

before(async () => {
  ds = await startS3Dataset({ bucket: BUCKET, prefix: 'data', samplesPerShard: 4 });
  ({ s3, root } = ds);
});
after(async () => {
  for (const p of proxies) await p.stop();
  await ds?.stop();
});

test('training from s3:// into s3:// under injected faults: the same history, test metrics and weights as the fault-free run', async () => {
  const proxy = await startFaultProxy({ upstream: s3.endpoint, seed: 11, rate: 0.3, stallMs: 3000 });
  proxies.push(proxy);
  const clean = `s3://${BUCKET}/runs/clean`;
  const faulty = `s3://${BUCKET}/runs/faulty`;
  // One WASM thread each: threaded kernels may sum in another order from run to run, and RMSprop's first steps
  // (tiny squared-gradient averages) amplify such 1e-7 differences to 1e-4 by the second epoch.
  const [a, b] = await Promise.all([
    runTrainerAsync([...trainArgs(clean), '--threads', '1'], via(s3.endpoint)),
    runTrainerAsync([...trainArgs(faulty), '--threads', '1'], via(proxy.endpoint)),
  ]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  // The printed figures may differ in the last digit (float tolerance below); n may not.
  const [, , , na] = lastLine(a.stdout).match(CONTRACT)!;
  const [, , , nb] = lastLine(b.stdout).match(CONTRACT)!;
  assert.equal(nb, na);
  // The faults hit both sides: shard reads of the stream and uploads of the run.
  const kinds = new Set(proxy.injected.map((f) => f.kind));
  assert.ok(kinds.size >= 4, `fault kinds injected: ${[...kinds].join(', ')}`);
  assert.ok(
    proxy.injected.some((f) => f.method === 'GET' && /\/data\/(train|validation)\//.test(f.path)),
    'no fault on a shard read',
  );
  assert.ok(
    proxy.injected.some((f) => f.method !== 'GET' && f.path.includes('/runs/faulty/')),
    'no fault on a run upload',
  );

  // Equal to float tolerance: the WASM kernels' threads may sum in another order in another process.
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(a));
  const [ha, hb] = [await json(clean, 'history.json'), await json(faulty, 'history.json')];
  for (const series of ['epoch', 'phase']) assert.deepEqual(hb[series], ha[series], `history ${series}`);
  for (const series of ['loss', 'acc', 'val_loss', 'val_acc']) {
    const [xa, xb] = [ha[series] as number[], hb[series] as number[]];
    assert.equal(xb.length, xa.length, series);
    assert.ok(
      xa.every((x, i) => close(x, xb[i])),
      `history ${series}: ${xb} vs ${xa}`,
    );
  }
  const [ma, mb] = [await json(clean, 'metrics.json'), await json(faulty, 'metrics.json')];
  const [ta, tb] = [ma.test as Record<string, unknown>, mb.test as Record<string, unknown>];
  assert.equal(tb.n, ta.n);
  assert.deepEqual(tb.confusion, ta.confusion, 'confusion matrix');
  assert.ok(close(tb.loss as number, ta.loss as number) && close(tb.accuracy as number, ta.accuracy as number));
  const weights = async (run: string) => {
    const b = await openStorage(run, { endpoint: s3.endpoint }).read('model/weights.bin');
    return new Float32Array(new Uint8Array(b).buffer); // copied: the Buffer's offset need not be aligned
  };
  const [wa, wb] = [await weights(clean), await weights(faulty)];
  assert.equal(wb.length, wa.length);
  assert.ok(
    wa.every((x, i) => Math.abs(x - wb[i]) <= 1e-4),
    'the same weights',
  );
  assert.deepEqual(
    (await keys(faulty)).filter((k) => !k.startsWith('checkpoints/')),
    (await keys(clean)).filter((k) => !k.startsWith('checkpoints/')),
  );
});

test('a shard read or a run upload that always fails: exit 1 naming the object and the cause, no metrics.json published', async () => {
  const readFails = await startFaultProxy({
    upstream: s3.endpoint,
    seed: 1,
    rate: 0,
    alwaysFail: { method: 'GET', path: /\/data\/validation\/validation-000000\.tar$/ },
  });
  const uploadFails = await startFaultProxy({
    upstream: s3.endpoint,
    seed: 1,
    rate: 0,
    alwaysFail: { method: 'PUT', path: /\/runs\/upload-fails\/metrics\.json$/ },
  });
  proxies.push(readFails, uploadFails);
  const readRun = `s3://${BUCKET}/runs/read-fails`;
  const uploadRun = `s3://${BUCKET}/runs/upload-fails`;
  const [r, u] = await Promise.all([
    runTrainerAsync(trainArgs(readRun, 1), via(readFails.endpoint, { AWS_MAX_ATTEMPTS: '2' })),
    runTrainerAsync(trainArgs(uploadRun, 1), via(uploadFails.endpoint, { AWS_MAX_ATTEMPTS: '2' })),
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^error: s3:\/\/tfaults\/data\/validation\/validation-000000\.tar: InternalError: .*\(HTTP 500\)/m,
  );
  assert.equal(u.code, 1, u.stderr);
  assert.match(u.stderr, /^error: s3:\/\/tfaults\/runs\/upload-fails\/metrics\.json: InternalError: .*\(HTTP 500\)/m);
  for (const run of [readRun, uploadRun]) {
    const written = await keys(run);
    assert.ok(!written.includes('metrics.json'), `${run}: ${written.join(', ')}`);
    assert.ok(!written.some((k) => k.includes('.catdog-tmp-')), `${run}: temp objects left: ${written.join(', ')}`);
  }
  // The upload run kept its last checkpoint: --resume (fault-free now) finishes it.
  const resumed = await runTrainerAsync(['scratch', '--out', uploadRun, '--resume'], via(s3.endpoint));
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.ok((await keys(uploadRun)).includes('metrics.json'));
});

test('a distinctive fake secret never appears in the trainer’s output or written files (rejected keys, CATDOG_DEBUG on)', async () => {
  const secret = 'CATDOG-FAKE-TRAINER-SECRET-9c3b7e1f';
  const creds = {
    ...s3.env,
    AWS_ACCESS_KEY_ID: 'AKIACATDOGFAKE000002',
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_MAX_ATTEMPTS: '2',
    CATDOG_DEBUG: '1',
    CATDOG_AUTOTUNE: '0',
  };
  const user = join(root, 'user');
  await mkdir(user);
  const runs = await Promise.all([
    runTrainerAsync(trainArgs(join(user, 'local-run')), creds),
    runTrainerAsync(['evaluate', '--model', `s3://${BUCKET}/runs/clean`, '--data', DATA], creds),
  ]);
  for (const r of runs) {
    assert.equal(r.code, 1, r.stderr);
    // A GET's answer names the rejected key; a HEAD's (evaluate's first request) has no body to say why.
    assert.match(
      r.stderr,
      /^error: s3:\/\/tfaults\/.*(credentials rejected \((InvalidAccessKeyId|SignatureDoesNotMatch)\)|access denied or credentials rejected \(HTTP 403 without a reason\))$/m,
    );
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), r.stderr);
  }
  const files = (await readdir(user, { recursive: true, withFileTypes: true }))
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath ?? d.path, d.name));
  for (const f of files) assert.ok(!(await readFile(f)).includes(secret), f);
});

test('evaluate on a folder with an undecodable photo and a decompression bomb names both and says n counts without them', async () => {
  const folder = join(root, 'eval-folder');
  await mkdir(folder);
  for (const f of ['cat.2000.jpg', 'cat.2001.jpg', 'dog.2000.jpg', 'dog.2001.jpg'])
    await copyFile(join(kaggleTrainDir, f), join(folder, f));
  await writeFile(
    join(folder, 'cat.2002.jpg'),
    (await readFile(join(kaggleTrainDir, 'cat.2002.jpg'))).subarray(0, 2000),
  );
  const bomb = Buffer.from(
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
      .jpeg()
      .toBuffer(),
  );
  for (let i = 2; i < bomb.length; i += 2 + bomb.readUInt16BE(i + 2)) {
    if (bomb[i + 1] === 0xc0) {
      bomb.writeUInt16BE(60000, i + 5);
      bomb.writeUInt16BE(60000, i + 7);
      break;
    }
  }
  await writeFile(join(folder, 'dog.2002.jpg'), bomb);
  const e = await runTrainerAsync(
    ['evaluate', '--model', `s3://${BUCKET}/runs/clean`, '--data', folder],
    via(s3.endpoint),
  );
  assert.equal(e.code, 0, e.stderr);
  assert.match(lastLine(e.stdout), /^accuracy=\d\.\d{4} loss=\d+\.\d{4} n=4$/);
  assert.match(e.stderr, /^skipped cat\.2002: VipsJpeg: premature end of JPEG image$/m);
  assert.match(e.stderr, /^skipped dog\.2002: image too large: declares 60000×60000 pixels/m);
  assert.match(
    e.stderr,
    /evaluate: 2 of 6 images could not be decoded and are not counted in n: cat\.2002, dog\.2002$/m,
  );
});
