import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes, createHash } from 'node:crypto';
import { formatError, UserError } from '@catdog/errors';
import { openStorage, StorageError, resolveS3Options, describeS3Error, type Storage } from '@catdog/storage';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';

let s3: LoopbackS3;
let dir: string;

before(async () => {
  s3 = await startLoopbackS3(['storage-test']);
  dir = await mkdtemp(join(tmpdir(), 'catdog-storage-'));
});
after(async () => {
  await s3?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function collect(it: AsyncIterable<{ path: string; size: number }>) {
  const out = [];
  for await (const e of it) out.push(e);
  return out;
}

async function exercise(storage: Storage) {
  await storage.write('a/one.txt', 'hello');
  await storage.write('a/b/two.bin', Buffer.from([1, 2, 3]));
  await storage.write('c.txt', new Uint8Array([65]));
  assert.equal((await storage.read('a/one.txt')).toString(), 'hello');
  assert.deepEqual(await storage.stat('a/b/two.bin'), { size: 3 });
  assert.equal(await storage.stat('missing'), undefined);
  await assert.rejects(
    storage.read('missing'),
    (err: unknown) => err instanceof StorageError && err.code === 'not-found',
  );
  assert.deepEqual(
    (await collect(storage.list())).map((e) => e.path),
    ['a/b/two.bin', 'a/one.txt', 'c.txt'],
  );
  assert.deepEqual(
    (await collect(storage.list('a/'))).map((e) => e.path),
    ['a/b/two.bin', 'a/one.txt'],
  );
  assert.deepEqual(
    (await collect(storage.list('a/o'))).map((e) => e.path),
    ['a/one.txt'],
  );
  const child = storage.child('a');
  assert.equal((await child.read('one.txt')).toString(), 'hello');
  assert.deepEqual(
    (await collect(child.list())).map((e) => [e.path, e.size]),
    [
      ['b/two.bin', 3],
      ['one.txt', 5],
    ],
  );

  // A streamed write larger than one multipart part round-trips byte-exact (no aws-chunked framing stored).
  const big = randomBytes(6 * 1024 * 1024 + 123);
  async function* chunks() {
    for (let i = 0; i < big.length; i += 64 * 1024) yield big.subarray(i, i + 64 * 1024);
  }
  await storage.writeStream('big.bin', chunks());
  assert.deepEqual(await storage.stat('big.bin'), { size: big.length });
  const back = await storage.read('big.bin');
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(big).digest('hex'));
  const ranged: Buffer[] = [];
  for await (const c of await storage.readStream('big.bin', { start: 10, end: 19 })) ranged.push(c);
  assert.deepEqual(Buffer.concat(ranged), big.subarray(10, 20));

  // A small streamed write (single PUT path in lib-storage) also round-trips exactly.
  await storage.writeStream('small.bin', Readable.from([Buffer.from('x'.repeat(1000))]));
  assert.equal((await storage.read('small.bin')).length, 1000);

  // A failing source leaves nothing under the final name.
  async function* broken() {
    yield Buffer.from('partial');
    throw new Error('source exploded');
  }
  await assert.rejects(storage.writeStream('broken.bin', broken()), /source exploded/);
  assert.equal(await storage.stat('broken.bin'), undefined);

  await storage.delete('a/one.txt');
  await storage.delete('a/one.txt');
  assert.equal(await storage.stat('a/one.txt'), undefined);
}

test('local storage: read/write/list/stat/delete/child, atomic streamed writes', async () => {
  const storage = openStorage(join(dir, 'local'));
  await exercise(storage);
  // No temp files left behind by the failed write.
  const names = await readdir(join(dir, 'local'));
  assert.ok(!names.some((n) => n.includes('tmp')), names.join(','));
});

test('s3 storage against s3rver: same behaviour, byte-exact streamed uploads', async () => {
  await exercise(openStorage('s3://storage-test/some/prefix', { endpoint: s3.endpoint, partSize: 5 * 1024 * 1024 }));
});

test('custom endpoint defaults: path-style, checksums only when required', () => {
  const o = resolveS3Options({}, { AWS_ENDPOINT_URL: 'http://127.0.0.1:9000' });
  assert.equal(o.endpoint, 'http://127.0.0.1:9000');
  assert.equal(o.forcePathStyle, true);
  assert.equal(o.checksumMode, 'when_required');
  assert.equal(o.region, 'us-east-1');
  const s3first = resolveS3Options({}, { AWS_ENDPOINT_URL: 'http://a', AWS_ENDPOINT_URL_S3: 'http://b' });
  assert.equal(s3first.endpoint, 'http://b');
  const aws = resolveS3Options({}, { AWS_REGION: 'eu-west-1' });
  assert.equal(aws.forcePathStyle, false);
  assert.equal(aws.checksumMode, 'when_supported');
});

test('S3 failures are one line naming the URL and the cause', async () => {
  const missing = openStorage('s3://no-such-bucket-here/x', { endpoint: s3.endpoint });
  await assert.rejects(missing.write('a.txt', 'x'), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(formatError(err), /^s3:\/\/no-such-bucket-here\/x\/a\.txt: bucket does not exist/);
    return true;
  });
  await assert.rejects(collect(missing.list()), /no-such-bucket-here.*bucket does not exist/);
  const unreachable = openStorage('s3://storage-test/x', { endpoint: 'http://127.0.0.1:1', maxAttempts: 1 });
  await assert.rejects(unreachable.read('a.txt'), (err: unknown) => {
    const line = formatError(err);
    assert.match(
      line,
      /^s3:\/\/storage-test\/x\/a\.txt: endpoint http:\/\/127\.0\.0\.1:1 unreachable \(ECONNREFUSED\)$/,
    );
    assert.ok(!line.includes('\n'));
    return true;
  });
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  // s3rver accepts only its own key pair; a wrong key is rejected like on real S3.
  process.env.AWS_ACCESS_KEY_ID = 'WRONGKEY';
  process.env.AWS_SECRET_ACCESS_KEY = 'WRONG';
  try {
    const fresh = openStorage('s3://storage-test/y', { endpoint: s3.endpoint, region: 'us-east-2' });
    await assert.rejects(fresh.write('a.txt', 'x'), (err: unknown) => {
      assert.match(formatError(err), /^s3:\/\/storage-test\/y\/a\.txt: (credentials rejected|access denied)/);
      return true;
    });
  } finally {
    process.env.AWS_ACCESS_KEY_ID = saved.id;
    process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
  }
});

test('describeS3Error maps SDK error shapes to causes', () => {
  const sdk = (name: string, status: number) =>
    Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
  assert.deepEqual(describeS3Error(sdk('AccessDenied', 403)), {
    code: 'access-denied',
    cause: 'access denied (AccessDenied)',
  });
  assert.equal(describeS3Error(sdk('Forbidden', 403)).code, 'access-denied');
  assert.equal(
    describeS3Error(sdk('Unknown', 403)).cause,
    'access denied or credentials rejected (HTTP 403 without a reason)',
    'a HEAD request',
  );
  // S3 (and s3rver) answer rejected keys with 403: still told apart from a policy's denial.
  for (const name of ['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken'])
    assert.deepEqual(describeS3Error(sdk(name, 403)), { code: 'credentials', cause: `credentials rejected (${name})` });
  assert.equal(describeS3Error(sdk('NoSuchBucket', 404)).cause, 'bucket does not exist (NoSuchBucket)');
  assert.equal(describeS3Error(sdk('NotFound', 404)).code, 'not-found');
  assert.equal(describeS3Error(sdk('SlowDown', 503)).code, 'throttled');
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
  assert.equal(
    describeS3Error(refused, 'http://127.0.0.1:9').cause,
    'endpoint http://127.0.0.1:9 unreachable (ECONNREFUSED)',
  );
  const dns = Object.assign(new Error('getaddrinfo ENOTFOUND minio'), { code: 'ENOTFOUND' });
  assert.equal(describeS3Error(dns, 'http://minio:9000').code, 'unreachable');
  const line = formatError(new StorageError('s3://b/k', 'access-denied', 'access denied (AccessDenied)'));
  assert.equal(line, 's3://b/k: access denied (AccessDenied)');
});
