// tools/build.mjs: the CLIs and packages compiled to dist/node, as Nx targets, the tests and the image run them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { projectRoot } from '../helpers/fixtures.js';

const dist = join(projectRoot, 'dist', 'node');

function filesUnder(dir: string, suffix: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(suffix))
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

const sourceDirs = [
  ...readdirSync(join(projectRoot, 'packages')).map((p) => join('packages', p, 'src')),
  ...['prep', 'augment', 'trainer'].map((a) => join('apps', a, 'src')),
];

test('dist/node mirrors the sources: a .js for every .ts and nothing else, the wasm kernels, compiled packages', () => {
  for (const dir of sourceDirs) {
    const sources = filesUnder(join(projectRoot, dir), '.ts').map((f) => f.replace(/\.ts$/, '.js'));
    assert.ok(sources.length > 0, dir);
    assert.deepEqual(filesUnder(join(dist, dir), '.js').sort(), sources.sort(), `${dir}: compiled files`);
  }
  for (const p of ['augment', 'backend'])
    assert.deepEqual(
      filesUnder(join(dist, 'packages', p, 'wasm'), '.wasm').sort(),
      filesUnder(join(projectRoot, 'packages', p, 'wasm'), '.wasm').sort(),
      `${p}'s wasm kernels beside the compiled code (new URL('../wasm/…', import.meta.url))`,
    );
  // @catdog/* from dist/node resolve to the compiled packages, whose exports are JavaScript files that exist.
  for (const p of readdirSync(join(dist, 'node_modules', '@catdog'))) {
    const pkg = JSON.parse(readFileSync(join(dist, 'node_modules', '@catdog', p, 'package.json'), 'utf8'));
    for (const target of Object.values(pkg.exports as Record<string, string>)) {
      assert.match(target, /\.js$/, `@catdog/${p} exports ${target}`);
      assert.ok(existsSync(join(dist, 'packages', p, target)), `@catdog/${p}: ${target} is built`);
    }
  }
});

test('a build with nothing changed leaves the tree as it is (Nx runs it before every CLI target)', () => {
  const before = statSync(dist).ino;
  const r = spawnSync(process.execPath, [join(projectRoot, 'tools', 'build.mjs')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(statSync(dist).ino, before, 'dist/node was rebuilt although no source changed');
});

/** A copy of the workspace's sources (the build compiles the tree it sits in), node_modules linked, built once. */
function workspaceCopy(): { root: string; build: () => ReturnType<typeof spawnSync>; remove: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'catdog-build-'));
  for (const dir of ['packages', 'apps', 'tools'])
    cpSync(join(projectRoot, dir), join(root, dir), {
      recursive: true,
      filter: (src) => !src.includes('node_modules') && !src.includes(join('apps', 'web')),
    });
  symlinkSync(join(projectRoot, 'node_modules'), join(root, 'node_modules'), 'dir');
  const build = () => spawnSync(process.execPath, [join(root, 'tools', 'build.mjs')], { cwd: root, encoding: 'utf8' });
  const first = build();
  assert.equal(first.status, 0, String(first.stderr));
  return { root, build, remove: () => rmSync(root, { recursive: true, force: true }) };
}

test('a source that does not compile: exit 1 naming the file, the previous tree kept, no staging folder left', () => {
  const { root, build, remove } = workspaceCopy();
  try {
    const main = join(root, 'dist', 'node', 'apps', 'trainer', 'src', 'main.js');
    const good = readFileSync(main, 'utf8');
    const broken = join(root, 'apps', 'trainer', 'src', 'main.ts');
    writeFileSync(broken, `${readFileSync(broken, 'utf8')}\nconst = ;\n`);
    const r = build();
    assert.equal(r.status, 1);
    assert.match(String(r.stderr), /build failed/);
    assert.match(String(r.stderr), /apps\/trainer\/src\/main\.ts/);
    assert.equal(readFileSync(main, 'utf8'), good, 'the last good build is still there');
    assert.deepEqual(readdirSync(join(root, 'dist')), ['node'], 'no staging or old tree left beside dist/node');
  } finally {
    remove();
  }
});

test('builds started together after a change (nx run-many: one per app) all succeed and leave one complete tree', async () => {
  const { root, remove } = workspaceCopy();
  try {
    const source = join(root, 'packages', 'errors', 'src', 'index.ts');
    writeFileSync(source, `${readFileSync(source, 'utf8')}\nexport const BUILD_TEST_MARK = 1;\n`);
    const codes = await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          new Promise<number | null>((resolve) => {
            // Each build holds its swap open for 1.5 s between its two renames, so the builds' swaps overlap.
            const child = spawn(process.execPath, [join(root, 'tools', 'build.mjs')], {
              cwd: root,
              stdio: 'inherit',
              env: { ...process.env, CATDOG_TEST_BUILD_SWAP_PAUSE_MS: '1500' },
            });
            child.on('exit', resolve);
          }),
      ),
    );
    assert.deepEqual(codes, [0, 0, 0, 0]);
    assert.deepEqual(readdirSync(join(root, 'dist')), ['node'], 'no staging or old tree left beside dist/node');
    const compiled = join(root, 'dist', 'node', 'packages', 'errors', 'src', 'index.js');
    assert.match(readFileSync(compiled, 'utf8'), /BUILD_TEST_MARK = 1/);
    for (const dir of sourceDirs)
      assert.equal(
        filesUnder(join(root, 'dist', 'node', dir), '.js').length,
        filesUnder(join(root, dir), '.ts').length,
        dir,
      );
  } finally {
    remove();
  }
});
