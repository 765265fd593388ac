#!/usr/bin/env node
// Runs every test file under test/ with Node's own test runner, TypeScript through tsx.
// Usage: node tools/run-tests.mjs [substring ...]   (only files whose path contains a substring)
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const filters = process.argv.slice(2);

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...walk(full));
    else if (name.endsWith('.test.ts')) out.push(relative(root, full));
  }
  return out;
}

const files = walk(join(root, 'test')).filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ') || 'test/**/*.test.ts'}`);
  process.exit(1);
}
// The CLIs run compiled, as `nx run` runs them (tools/build.mjs): build them from the sources under test first.
const built = spawnSync(process.execPath, [join(root, 'tools', 'build.mjs')], { cwd: root, stdio: 'inherit' });
if (built.status !== 0) process.exit(built.status ?? 1);
// One cache folder per run (kernel plans, downloads): tests never write the user's ~/.cache, and each shape is
// autotuned once per run rather than once per test process.
const cacheDir = process.env.CATDOG_CACHE_DIR ?? mkdtempSync(join(tmpdir(), 'catdog-test-cache-'));
const tap = process.env.CATDOG_TEST_TAP
  ? [
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${process.env.CATDOG_TEST_TAP}`,
    ]
  : [];
const result = spawnSync(
  process.execPath,
  // Three files at a time: most wait on subprocesses and servers as much as they compute, and each test process
  // has one backend thread (below): on 2 cores one at a time took 20 min, two 9.5–10 min, three 8 min 20 s.
  // A test that hangs fails after 5 minutes instead of holding CI to its limit (the slowest passes in ~60 s).
  // CATDOG_TEST_TAP=<file> also writes a TAP log there, with every test's duration (to find the slow ones).
  [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=3',
    '--test-timeout=300000',
    '--test-reporter=spec',
    ...tap,
    ...files,
  ],
  {
    cwd: root,
    stdio: 'inherit',
    // One backend thread per process unless asked otherwise: with several files at a time, 2-thread trainers on
    // 2 cores spin-wait on each other (measured: 2 min 7 s → 1 min 41 s for two trainer files). Tests of threading
    // ask for their threads explicitly (test/backend, trainer/exact-resume).
    env: {
      CATDOG_THREADS: '1',
      ...process.env,
      NX_DAEMON: 'false',
      NX_NO_CLOUD: 'true',
      CATDOG_CACHE_DIR: cacheDir,
    },
  },
);
if (!process.env.CATDOG_CACHE_DIR) rmSync(cacheDir, { recursive: true, force: true });
process.exit(result.status ?? 1);
