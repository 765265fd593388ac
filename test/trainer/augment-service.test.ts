// The trainer on the augmentation service: `trainer augmented --augment-service a,b --token-file f` trains on
// batches made by two `augment serve` subprocesses on 127.0.0.1 and reaches the in-process run's history (same
// seed, same threads), even when one server is killed mid-run; its log shows each server's load.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { killAugmentServes, startAugmentServe, type AugmentServeProcess } from '../helpers/augment-servers.js';
import { runTrainerAsync, spawnTrainer, tinyDataset } from './helpers.js';

const TOKEN = 'trainer-test-token-9d2e';
let root = '';
let data = '';
let tokenFile = '';
const servers: AugmentServeProcess[] = [];

before(async () => {
  ({ root, data } = await tinyDataset());
  tokenFile = join(root, 'token');
  await writeFile(tokenFile, `${TOKEN}\n`);
});
after(async () => {
  killAugmentServes(servers);
  if (root) await rm(root, { recursive: true, force: true });
});

/** `augment serve --workers 1` on 127.0.0.1 with the test's token, once it is listening. */
async function startServer(): Promise<AugmentServeProcess> {
  const server = await startAugmentServe({ tokenFile });
  servers.push(server);
  return server;
}

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

const historyOf = (dir: string) => readJson(join(dir, 'history.json'));
function assertSameHistory(h0: Record<string, number[]>, h1: Record<string, number[]>, epochs = h0.epoch.length): void {
  assert.equal(h1.epoch.length, h0.epoch.length);
  for (const k of ['loss', 'acc', 'val_loss', 'val_acc'] as const) {
    for (let i = 0; i < epochs; i++)
      assert.ok(
        Math.abs(h0[k][i] - h1[k][i]) <= 1e-5 * Math.max(1, Math.abs(h0[k][i])),
        `${k}[${i}]: in process ${h0[k][i]}, remote ${h1[k][i]}`,
      );
  }
}
// Kernel plans are chosen by timing (autotune), and two processes timing at once on a loaded machine can pick
// plans that sum in different orders: histories then differ by ~1e-5. The comparisons take the default plans.
const DETERMINISTIC = { CATDOG_AUTOTUNE: '0' };
// --dropout 0: tfjs' Dropout draws unseeded masks, so two in-process runs with dropout already differ; the batches
// (what the service makes) are then the only randomness.
const common = () => [
  'augmented',
  '--data',
  data,
  '--preset',
  'ci-smoke',
  '--seed',
  '7',
  '--threads',
  '1',
  '--backend',
  'wasm',
  '--dropout',
  '0',
];

test('augmented on two augmentation servers: the in-process batches (digest for digest) and history; the log shows each server', async () => {
  const [a, b] = await Promise.all([startServer(), startServer()]);
  const digests = { local: join(root, 'local-batches.jsonl'), remote: join(root, 'remote-batches.jsonl') };
  const [local, remote] = await Promise.all([
    runTrainerAsync([...common(), '--out', join(root, 'local'), '--batch-digests', digests.local], DETERMINISTIC),
    runTrainerAsync(
      [
        ...common(),
        '--out',
        join(root, 'remote'),
        '--batch-digests',
        digests.remote,
        '--augment-service',
        `${a.address},${b.address}`,
        '--token-file',
        tokenFile,
      ],
      DETERMINISTIC,
    ),
  ]);
  assert.equal(local.code, 0, local.stderr);
  assert.equal(remote.code, 0, remote.stderr);
  // Every training batch, in order: the same pixels and labels from the servers as from the in-process pool.
  const localDigests = await readFile(digests.local, 'utf8');
  const lines = localDigests
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const h = await historyOf(join(root, 'local'));
  assert.ok(lines.length >= h.epoch.length, `${lines.length} batches for ${h.epoch.length} epochs`);
  assert.ok(lines.every((l) => l.split === 'train' && /^[0-9a-f]{64}$/.test(l.sha256) && l.images > 0));
  assert.equal(new Set(lines.map((l) => l.sha256)).size, lines.length, 'augmented batches all differ');
  assert.equal(await readFile(digests.remote, 'utf8'), localDigests);
  assertSameHistory(h, await historyOf(join(root, 'remote')));
  const cfg = await readJson(join(root, 'remote', 'config.json'));
  assert.equal(cfg.augmentService, `${a.address},${b.address}`);
  // Each server's load as the stream last saw it: images/s, queue depth, workers.
  for (const s of [a, b])
    assert.match(
      remote.stderr,
      new RegExp(`augment service: .*${s.address.replace(/\./g, '\\.')} \\d+ img/s queue \\d+ workers 1`),
    );
  assert.ok(!remote.stderr.includes(TOKEN), 'the token is never logged');
  for (const s of [a, b]) s.process.kill('SIGTERM');
});

test('one of two servers killed mid-run: the run completes on the other', async () => {
  const [a, b] = await Promise.all([startServer(), startServer()]);
  const out = join(root, 'killed');
  const remote = spawnTrainer(
    [...common(), '--out', out, '--augment-service', `${a.address},${b.address}`, '--token-file', tokenFile],
    DETERMINISTIC,
  );
  let stderr = '';
  let killed = false;
  remote.stderr!.on('data', (d: Buffer) => {
    stderr += d;
    if (!killed && /epoch 2\/\d+ -/.test(stderr)) {
      killed = true;
      a.process.kill('SIGKILL');
    }
  });
  const code = await new Promise<number | null>((resolve) => remote.on('exit', resolve));
  assert.equal(code, 0, stderr);
  assert.ok(killed, 'a server was killed mid-run');
  assert.match(stderr, new RegExp(`augment service: ${a.address.replace(/\./g, '\\.')} down; `));
  const h = await historyOf(out);
  assert.equal(h.epoch.length, 4);
  // The server's batches are reassigned to the other one: the same batches, so the in-process history throughout.
  assertSameHistory(await historyOf(join(root, 'local')), h);
  b.process.kill('SIGTERM');
});

test('--augment-service: a bad address list is a usage error; a wrong token fails the run naming the cause', async () => {
  const bad = await runTrainerAsync([
    'augmented',
    '--data',
    data,
    '--out',
    join(root, 'bad'),
    '--preset',
    'ci-smoke',
    '--augment-service',
    'no-port',
  ]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--augment-service/);
  const server = await startServer();
  const wrong = join(root, 'wrong-token');
  await writeFile(wrong, 'not-the-token\n');
  const denied = await runTrainerAsync([
    'augmented',
    '--data',
    data,
    '--out',
    join(root, 'denied'),
    '--preset',
    'ci-smoke',
    '--backend',
    'wasm',
    '--augment-service',
    server.address,
    '--token-file',
    wrong,
  ]);
  assert.equal(denied.code, 1, denied.stderr);
  assert.match(denied.stderr, /error: .*token/);
  assert.ok(!denied.stderr.includes('not-the-token'));
});
