// docs/errors.md, augment section: an empty token file is refused; a wrong token is refused with a clear error,
// and neither the server's token nor the client's appears in any output of either process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { flatSource, tempDir } from '../dataset/helpers.js';

const MAIN = CLI.augment;
const children: ChildProcess[] = [];
const dirs: string[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function augment(args: string[]): {
  child: ChildProcess;
  out: { stdout: string; stderr: string };
  done: Promise<number | null>;
} {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: projectRoot });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => (out.stdout += d));
  child.stderr!.on('data', (d) => (out.stderr += d));
  const done = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  return { child, out, done };
}

test('serve with an empty token file exits 1 naming it; a wrong token is refused and no token is ever printed', async () => {
  const dir = await tempDir('augment-errors');
  dirs.push(dir);
  const empty = join(dir, 'empty-token');
  await writeFile(empty, '\n');
  const e = augment(['serve', '--port', '0', '--host', '127.0.0.1', '--token-file', empty]);
  assert.equal(await e.done, 1, e.out.stderr);
  assert.match(e.out.stderr, new RegExp(`^error: the token file ${empty} is empty$`, 'm'));

  const serverToken = 'CATDOG-SERVER-TOKEN-7e2a91c4';
  const clientToken = 'CATDOG-CLIENT-TOKEN-3b5f08d6';
  await writeFile(join(dir, 'server-token'), `${serverToken}\n`);
  await writeFile(join(dir, 'client-token'), `${clientToken}\n`);
  const server = augment([
    'serve',
    '--port',
    '0',
    '--host',
    '127.0.0.1',
    '--workers',
    '1',
    '--token-file',
    join(dir, 'server-token'),
  ]);
  const address = await new Promise<string>((resolve, reject) => {
    server.child.stdout!.on('data', () => {
      const m = /augment serve listening (127\.0\.0\.1:\d+)/.exec(server.out.stdout);
      if (m) resolve(m[1]);
    });
    server.child.on('close', (code) => reject(new Error(`serve exited ${code}: ${server.out.stderr}`)));
  });
  const folder = await flatSource(4, join(dir, 'photos'));
  const client = augment([
    'bench',
    '--source',
    folder,
    '--augment-service',
    address,
    '--token-file',
    join(dir, 'client-token'),
    '--batch',
    '4',
    '--size',
    '32',
    '--passes',
    '1',
  ]);
  assert.equal(await client.done, 1, client.out.stderr);
  assert.match(client.out.stderr, new RegExp(`^error: augment service ${address}: missing or wrong token$`, 'm'));
  // The server says it refused a call, and keeps serving.
  await new Promise<void>((resolve) => {
    const check = () => /refused a call from .*: wrong token/.test(server.out.stdout + server.out.stderr) && resolve();
    check();
    server.child.stdout!.on('data', check);
    server.child.stderr!.on('data', check);
  });
  assert.equal(server.child.exitCode, null, 'the server goes on');
  server.child.kill('SIGTERM');
  await server.done;
  for (const text of [client.out.stdout, client.out.stderr, server.out.stdout, server.out.stderr])
    for (const token of [serverToken, clientToken]) assert.ok(!text.includes(token), `${token} printed: ${text}`);
});
