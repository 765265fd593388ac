// prep split to S3 and prep verify from S3 through a fault-injecting proxy (503 SlowDown, 500, resets before and
// mid-body, stalls, truncated bodies): byte-identical to a fault-free run, or a clear failure with nothing published.
// And a distinctive fake secret never shows in any output or written file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openStorage } from '@catdog/storage';
import { readManifest } from '@catdog/dataset';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { startLoopbackS3, type LoopbackS3 } from '../helpers/s3-server.js';
import { startFaultProxy, type FaultProxy } from '../helpers/s3-fault-proxy.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const main = CLI.prep;
const SMALL = ['--train', '12', '--validation', '6', '--test', '6', '--shard-samples', '8'];
let s3: LoopbackS3;
let src: string;
let work: string;
const proxies: FaultProxy[] = [];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs prep from the project root (as Nx does) with INIT_CWD set to the user's directory. */
function prep(args: string[], env: Record<string, string>, userDir = projectRoot): Promise<Run> {
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

/** The environment of a run through `endpoint`: short idle timeout so stalls cost ~1 s, a few attempts. */
function via(endpoint: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...s3.env,
    AWS_ENDPOINT_URL_S3: endpoint,
    CATDOG_S3_SOCKET_TIMEOUT_MS: '1000',
    AWS_MAX_ATTEMPTS: '5',
    ...extra,
  };
}

async function objects(prefix: string): Promise<Map<string, Buffer>> {
  const storage = openStorage(`s3://faults/${prefix}`, { endpoint: s3.endpoint });
  const out = new Map<string, Buffer>();
  for await (const e of storage.list()) if (e.path.endsWith('.tar')) out.set(e.path, await storage.read(e.path));
  return out;
}

before(async () => {
  s3 = await startLoopbackS3(['faults']);
  src = await flatSource(24);
  work = await tempDir('faults');
});
after(async () => {
  for (const p of proxies) await p.stop();
  await s3?.stop();
  await rm(src, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

test('split to S3 and verify from S3 under injected faults (two seeds): shards and manifest identical to a fault-free run', async (t) => {
  const clean = await prep(['split', '--source', src, '--out', 's3://faults/clean', ...SMALL], via(s3.endpoint));
  assert.equal(clean.code, 0, clean.stderr);
  const reference = await objects('clean');
  const refManifest = await readManifest('s3://faults/clean', { endpoint: s3.endpoint });
  assert.equal(reference.size, 7);

  for (const seed of [1, 2]) {
    // A stall outlasts the whole test's budget: only the client's idle timeout (1 s here) gets a run past it.
    const proxy = await startFaultProxy({ upstream: s3.endpoint, seed, rate: 0.25, stallMs: 120_000 });
    proxies.push(proxy);
    const started = Date.now();
    const run = await prep(
      ['split', '--source', src, '--out', `s3://faults/seed-${seed}`, ...SMALL],
      via(proxy.endpoint),
    );
    assert.equal(run.code, 0, `seed ${seed}: ${run.stderr}`);
    assert.ok(Date.now() - started < 60_000, `seed ${seed}: a stall held the run for ${Date.now() - started} ms`);
    const kinds = new Set(proxy.injected.map((f) => f.kind));
    assert.ok(
      proxy.injected.length >= 5,
      `seed ${seed}: only ${proxy.injected.length} faults in ${proxy.requests} requests`,
    );
    const got = await objects(`seed-${seed}`);
    assert.deepEqual([...got.keys()], [...reference.keys()]);
    for (const [path, bytes] of reference) assert.ok(got.get(path)!.equals(bytes), `seed ${seed}: ${path} differs`);
    const manifest = await readManifest(`s3://faults/seed-${seed}`, { endpoint: s3.endpoint });
    assert.deepEqual(manifest.splits, refManifest.splits);

    const before = proxy.injected.length;
    const verify = await prep(['verify', '--data', `s3://faults/seed-${seed}`, '--decode'], via(proxy.endpoint));
    assert.equal(verify.code, 0, `seed ${seed}: ${verify.stderr}`);
    assert.match(verify.stdout, /^OK .*: 7 shards, 48 samples, .* match the manifest, 48 images decoded/);
    assert.ok(proxy.injected.length > before, `seed ${seed}: verify saw no faults`);
    // Every kind shows up across the runs of a seed (the schedule is deterministic, so this cannot flake).
    for (const f of proxy.injected) kinds.add(f.kind);
    assert.ok(kinds.size >= 4, `seed ${seed}: kinds ${[...kinds].join(', ')}`);
    const tally: Record<string, number> = {};
    for (const f of proxy.injected) tally[f.kind] = (tally[f.kind] ?? 0) + 1;
    t.diagnostic(
      `seed ${seed}: ${proxy.injected.length} faults in ${proxy.requests} requests: ${JSON.stringify(tally)}`,
    );
  }
});

test('bodies cut short (clean close) or reset mid-way on every other GET: verify resumes with ranged GETs and passes', async () => {
  const proxy = await startFaultProxy({
    upstream: s3.endpoint,
    seed: 7,
    rate: 0.5,
    kinds: ['truncate', 'reset-mid-body'],
  });
  proxies.push(proxy);
  const verify = await prep(['verify', '--data', 's3://faults/clean'], via(proxy.endpoint));
  assert.equal(verify.code, 0, verify.stderr);
  assert.match(verify.stdout, /^OK .*: 7 shards, 48 samples/);
  const kinds = new Set(proxy.injected.filter((f) => f.method === 'GET').map((f) => f.kind));
  assert.deepEqual([...kinds].sort(), ['reset-mid-body', 'truncate']);
});

test('a request that always fails: exit 1 naming the object and the cause, no manifest.json published', async () => {
  const proxy = await startFaultProxy({
    upstream: s3.endpoint,
    seed: 3,
    rate: 0,
    alwaysFail: { method: 'PUT', path: /test-000001\.tar$/ },
  });
  proxies.push(proxy);
  const run = await prep(
    ['split', '--source', src, '--out', 's3://faults/broken', ...SMALL],
    via(proxy.endpoint, { AWS_MAX_ATTEMPTS: '2' }),
  );
  assert.equal(run.code, 1, run.stderr);
  assert.match(run.stderr, /^error: s3:\/\/faults\/broken\/test\/test-000001\.tar: .*InternalError/m);
  const storage = openStorage('s3://faults/broken', { endpoint: s3.endpoint });
  assert.equal(await storage.stat('manifest.json'), undefined);
  assert.equal(await storage.stat('test/test-000001.tar'), undefined);
  // The rerun without the fault completes and matches the fault-free run (finished shards were kept and reused).
  const rerun = await prep(['split', '--source', src, '--out', 's3://faults/broken', ...SMALL], via(s3.endpoint));
  assert.equal(rerun.code, 0, rerun.stderr);
  assert.match(rerun.stdout, /reused \d+ verified/);
  const got = await objects('broken');
  for (const [path, bytes] of await objects('clean')) assert.ok(got.get(path)?.equals(bytes), path);
});

test('a distinctive fake secret appears in no output or written file (denied and unreachable endpoints, CATDOG_DEBUG on)', async () => {
  const secret = 'CATDOG-FAKE-SECRET-5f1e0c7a9b2d4e68';
  const creds = {
    AWS_ACCESS_KEY_ID: 'AKIACATDOGFAKE000001',
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_REGION: 'us-east-1',
    AWS_MAX_ATTEMPTS: '2',
    CATDOG_DEBUG: '1',
  };
  const denied = { ...creds, AWS_ENDPOINT_URL_S3: s3.endpoint };
  const unreachable = { ...creds, AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9' };
  const runs = [
    await prep(['split', '--source', src, '--out', 's3://faults/denied', ...SMALL], denied, work),
    await prep(['split', '--source', 's3://faults/clean', '--out', 'local-out', ...SMALL], denied, work),
    await prep(['verify', '--data', 's3://faults/clean', '--decode'], denied, work),
    await prep(['split', '--source', src, '--out', 's3://faults/down', ...SMALL], unreachable, work),
    await prep(['inspect', '--data', 's3://faults/clean'], unreachable, work),
  ];
  for (const r of runs) {
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: s3:\/\/faults\/.*(credentials rejected|access denied|unreachable)/m);
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), r.stderr);
  }
  // Nothing written anywhere under the user's directory holds it either.
  const files = (await readdir(work, { recursive: true, withFileTypes: true }))
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath ?? d.path, d.name));
  for (const f of files) assert.ok(!(await readFile(f)).includes(secret), f);
  const written = [];
  for await (const e of openStorage('s3://faults', { endpoint: s3.endpoint }).list()) written.push(e.path);
  assert.ok(!written.some((p) => p.startsWith('denied/') || p.startsWith('down/')), written.join(', '));
});
