// Training and evaluating from a prepped dataset on S3 (real s3rver on loopback).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openStorage } from '@catdog/storage';
import { existsSync } from 'node:fs';
import { projectRoot } from '../helpers/fixtures.js';
import { lastLine, runTrainerAsync, startS3Dataset } from './helpers.js';

test('extract trains from s3:// shards into an s3:// run directory; evaluate reads the model and the test split from s3://', async () => {
  const { s3, url, root, stop } = await startS3Dataset({ bucket: 'trainer-bucket', prefix: 'ds' });
  try {
    // The run on S3 too: --out s3://…, then evaluate --model s3://… files its result under evaluations/.
    const runUrl = 's3://trainer-bucket/runs/extract';
    const rs = await runTrainerAsync(
      [
        'extract',
        '--data',
        url,
        '--out',
        runUrl,
        '--preset',
        'ci-smoke',
        '--epochs',
        '2',
        '--feature-cache-dir',
        join(root, 'features'),
      ],
      s3.env,
    );
    assert.equal(rs.code, 0, rs.stderr);
    assert.match(lastLine(rs.stdout), /^accuracy=\d\.\d{4} loss=\d+\.\d{4} n=6$/);
    const cfg = JSON.parse((await openStorage(runUrl).read('config.json')).toString('utf8'));
    assert.equal(cfg.data, url);
    assert.equal(cfg.out, runUrl);
    assert.deepEqual(cfg.dataset.counts, { train: 20, validation: 6, test: 6 });
    assert.ok(!existsSync(join(projectRoot, 's3:')), 'no local folder named s3:');
    const es = await runTrainerAsync(['evaluate', '--model', runUrl, '--data', url], s3.env);
    assert.equal(es.code, 0, es.stderr);
    assert.equal(lastLine(es.stdout), lastLine(rs.stdout), "the model saved on S3 reproduces the run's test metrics");
    const keys: string[] = [];
    for await (const e of openStorage(runUrl).list()) keys.push(`runs/extract/${e.path}`);
    for (const k of [
      'config.json',
      'history.json',
      'history.csv',
      'metrics.json',
      'summary.txt',
      'model/model.json',
      'model/weights.bin',
      'checkpoints/last.json',
    ]) {
      assert.ok(keys.includes(`runs/extract/${k}`), `${k} missing on S3 (${keys.join(', ')})`);
    }
    assert.ok(
      keys.some((k) => /^runs\/extract\/evaluations\/[0-9a-f]{16,}\.json$/.test(k)),
      `no evaluation on S3 (${keys.join(', ')})`,
    );
    const bad = await runTrainerAsync(['extract', '--data', url, '--out', 'ftp://host/run'], s3.env);
    assert.equal(bad.code, 2, 'an unsupported location is a usage error, as in prep');
    assert.match(bad.stderr, /ftp:\/\/host\/run: unsupported URL scheme/);
    assert.ok(!existsSync(join(projectRoot, 'ftp:')), 'no local folder named ftp:');
  } finally {
    await stop();
  }
});
