#!/usr/bin/env node
// Compiles the Node side of the workspace (packages/*/src and the CLIs in apps/{prep,augment,trainer}/src) to
// JavaScript under dist/node/, file for file, in the source tree's layout. The CLIs then start without a TypeScript
// loader: tsx's hooks cost about 1.2 s and 2 s of CPU per process (`trainer --help`: 2.2 s through tsx, 1.4 s from
// here), which the test suite paid ~300 times and every worker thread and Kubernetes pod paid once more.
//
// Usage: node tools/build.mjs   (about half a second; `nx run <app>:<target>` runs it first, as does `npm test`)
//
// Same layout, so every `new URL('../wasm/…', import.meta.url)` finds its file; dist/node/node_modules/@catdog/*
// link to the compiled packages, whose package.json exports point at .js, and every other import walks up to the
// repository's node_modules. esbuild transpiles without type checking (that is `npm run typecheck`'s job).
// The new tree is built beside the old one and swapped in by two renames, so a CLI running from dist/node/ never
// reads a half-written file.
import { createHash } from 'node:crypto';
import { build } from 'esbuild';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist', 'node');
/** apps that run in Node (apps/web is a browser app, built by Vite). */
const NODE_APPS = ['prep', 'augment', 'trainer'];

function filesUnder(dir, test) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && test(e.name))
    .map((e) => join(e.parentPath, e.name));
}

const packages = readdirSync(join(root, 'packages')).filter((p) =>
  existsSync(join(root, 'packages', p, 'package.json')),
);
const sourceDirs = [...packages.map((p) => join('packages', p)), ...NODE_APPS.map((a) => join('apps', a))];
const entryPoints = sourceDirs.flatMap((d) =>
  filesUnder(join(root, d, 'src'), (n) => n.endsWith('.ts') && !n.endsWith('.d.ts')),
);
// What the compiled code reads beside itself, copied as is: worker scripts already in JavaScript, the wasm kernels.
const assets = sourceDirs.flatMap((d) => [
  ...filesUnder(join(root, d, 'src'), (n) => n.endsWith('.mjs')),
  ...filesUnder(join(root, d, 'wasm'), (n) => n.endsWith('.wasm')),
]);

// Up to date (the same files, sizes and times as the last build, and this script unchanged): nothing to do. Nx runs
// this before every CLI target, and a test that runs one must not swap the tree under CLIs already running.
const inputs = [
  fileURLToPath(import.meta.url),
  ...entryPoints,
  ...assets,
  ...sourceDirs.map((d) => join(root, d, 'package.json')),
].sort();
const stamp = createHash('sha256')
  .update(
    inputs
      .map((f) => {
        const { size, mtimeMs } = statSync(f);
        return `${relative(root, f)} ${size} ${mtimeMs}`;
      })
      .join('\n'),
  )
  .digest('hex');
const builtStamp = () => {
  const file = join(out, '.build-stamp');
  return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
};
if (builtStamp() === stamp) process.exit(0);

const staging = `${out}.tmp-${process.pid}`;
rmSync(staging, { recursive: true, force: true });
try {
  await build({
    entryPoints,
    outdir: staging,
    outbase: root,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    bundle: false,
    logLevel: 'warning',
  });
  for (const file of assets) copyTo(file);
  for (const dir of sourceDirs) {
    const pkg = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
    if (pkg.exports) pkg.exports = JSON.parse(JSON.stringify(pkg.exports).replace(/\.ts"/g, '.js"'));
    writeFileSync(join(staging, dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  }
  for (const p of packages) {
    const name = JSON.parse(readFileSync(join(root, 'packages', p, 'package.json'), 'utf8')).name;
    const link = join(staging, 'node_modules', name);
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(relative(dirname(link), join(staging, 'packages', p)), link, 'dir');
  }
  writeFileSync(join(staging, 'package.json'), '{ "private": true, "type": "module" }\n');
  writeFileSync(join(staging, '.build-stamp'), stamp);
  await swapIn();
} catch (err) {
  rmSync(staging, { recursive: true, force: true });
  console.error(`build failed: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}

/**
 * dist/node ← staging. Builds of the same sources may swap at the same moment (`nx run-many` runs each app's build
 * target in parallel): a rename that loses that race is retried, and a tree another build put there from the same
 * inputs is as good as ours.
 */
async function swapIn() {
  const old = `${out}.old-${process.pid}`;
  // Test aid, not an option: holds the swap open between its two renames, so tests can make builds overlap.
  const pauseMs = Number(process.env.CATDOG_TEST_BUILD_SWAP_PAUSE_MS ?? 0);
  const deadline = Date.now() + 10_000 + pauseMs;
  try {
    for (;;) {
      try {
        if (existsSync(out)) renameSync(out, old);
        if (pauseMs) await new Promise((resolve) => setTimeout(resolve, pauseMs));
        renameSync(staging, out);
        return;
      } catch (err) {
        if (builtStamp() === stamp) return;
        if (Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  } finally {
    rmSync(old, { recursive: true, force: true });
    rmSync(staging, { recursive: true, force: true });
  }
}

function copyTo(file) {
  const target = join(staging, relative(root, file));
  mkdirSync(dirname(target), { recursive: true });
  cpSync(file, target);
}
