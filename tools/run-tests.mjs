#!/usr/bin/env node
// Runs every test file under test/ with Node's own test runner, TypeScript through tsx.
// Usage: node tools/run-tests.mjs [--record] [substring ...]   (only files whose path contains a substring)
//   --record  also writes each file's duration to test/durations.json (commit it after a full run on CI's machine)
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const record = args.includes('--record');
const filters = args.filter((a) => a !== '--record');
const durationsFile = join(root, 'test', 'durations.json');

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...walk(full));
    else if (name.endsWith('.test.ts')) out.push(relative(root, full));
  }
  return out;
}

// Slowest files first (their last measured durations; files not measured yet before all): with three files at a time,
// a 3-minute file that starts last holds the whole run 3 minutes past the others (alphabetical order: 11.6 min).
const known = existsSync(durationsFile) ? JSON.parse(readFileSync(durationsFile, 'utf8')) : {};
const files = walk(join(root, 'test'))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort((a, b) => (known[b] ?? Infinity) - (known[a] ?? Infinity) || a.localeCompare(b));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ') || 'test/**/*.test.ts'}`);
  process.exit(1);
}
const recorded = join(mkdtempSync(join(tmpdir(), 'catdog-test-durations-')), 'durations.json');
const reporters = record
  ? [
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${join(root, 'tools', 'test-durations-reporter.mjs')}`,
      `--test-reporter-destination=${recorded}`,
    ]
  : ['--test-reporter=spec'];
// One cache folder per run (kernel plans, downloads): tests never write the user's ~/.cache, and each shape is
// autotuned once per run rather than once per test process.
const cacheDir = process.env.CATDOG_CACHE_DIR ?? mkdtempSync(join(tmpdir(), 'catdog-test-cache-'));
const result = spawnSync(
  process.execPath,
  // Three files at a time: most wait on subprocesses and servers as much as they compute, and each test process
  // has one backend thread (below): on 2 cores one at a time took 20 min, two 9.5–10 min, three 8 min 20 s.
  // A test that hangs fails after 5 minutes instead of holding CI to its limit (the slowest passes in ~60 s).
  ['--import', 'tsx', '--test', '--test-concurrency=3', '--test-timeout=300000', ...reporters, ...files],
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
if (record && existsSync(recorded)) {
  const measured = JSON.parse(readFileSync(recorded, 'utf8'));
  const merged = { ...known };
  for (const [file, seconds] of Object.entries(measured)) merged[relative(root, file)] = Math.round(seconds * 10) / 10;
  for (const file of Object.keys(merged)) if (!existsSync(join(root, file))) delete merged[file]; // removed since
  const sorted = Object.fromEntries(
    Object.keys(merged)
      .sort()
      .map((k) => [k, merged[k]]),
  );
  writeFileSync(durationsFile, `${JSON.stringify(sorted, null, 2)}\n`);
  console.log(`wrote ${relative(root, durationsFile)}`);
}
rmSync(dirname(recorded), { recursive: true, force: true });
process.exit(result.status ?? 1);
