// One decision about what a location is: typos of s3:// and foreign schemes are refused before anything is created.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '@catdog/errors';
import { openStorage, parseLocation, resolveLocation } from '@catdog/storage';

const refused: [string, RegExp][] = [
  ['gs://bucket/x', /unsupported URL scheme "gs:"/],
  ['S3://bucket/x', /did you mean s3:\/\/bucket\/x\?/],
  ['s3:/bucket/x', /malformed S3 URL; did you mean s3:\/\/bucket\/x\?/],
  ['s3:bucket/x', /did you mean s3:\/\/bucket\/x\?/],
  ['s3:///x', /without a bucket/],
  ['http://example.com/data', /unsupported URL scheme "http:"/],
  ['file:relative/x', /unsupported file URL/],
  ['file://otherhost/x', /unsupported file URL/],
  ['', /empty location/],
];

test('parseLocation, resolveLocation and openStorage refuse the same typos and foreign schemes, creating nothing', async () => {
  const base = await mkdtemp(join(tmpdir(), 'catdog-location-'));
  try {
    for (const [location, message] of refused) {
      for (const call of [
        () => parseLocation(location),
        () => resolveLocation(location, base),
        () => openStorage(location),
      ]) {
        assert.throws(call, (err: unknown) => {
          assert.ok(err instanceof UserError, `${location}: ${String(err)}`);
          assert.equal(err.code, 'unsupported-scheme', location);
          assert.match(err.message, message, location);
          return true;
        });
      }
    }
    assert.deepEqual(await readdir(base), []);
    assert.ok(!existsSync('gs:') && !existsSync('S3:') && !existsSync('s3:'));
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});

test('accepted: s3://bucket/prefix, local paths (a name with ":" given as ./), file:///absolute', () => {
  assert.deepEqual(parseLocation('s3://bucket/some/prefix'), { kind: 's3', url: 's3://bucket/some/prefix' });
  assert.equal(resolveLocation('s3://bucket'), 's3://bucket');
  assert.equal(resolveLocation('data/book', '/home/u'), '/home/u/data/book');
  assert.equal(resolveLocation('./gs:odd', '/home/u'), '/home/u/gs:odd');
  assert.equal(resolveLocation('/abs/path', '/home/u'), '/abs/path');
  assert.equal(resolveLocation('file:///abs/path'), '/abs/path');
  assert.equal(resolveLocation('file://localhost/abs/path'), '/abs/path');
  assert.equal(openStorage('file:///abs/path').url, '/abs/path');
  assert.equal(openStorage('s3://bucket/p', { endpoint: 'http://127.0.0.1:9' }).url, 's3://bucket/p');
});
