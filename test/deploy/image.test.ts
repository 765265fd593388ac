// deploy/Dockerfile without a container runtime (none runs here): its instructions are checked as written, then its
// build stage is replayed in a clean folder (COPY the same files, RUN the same commands), and every native module
// is loaded from the result as uid 1000 on a tree it cannot write to, as in the image under Kubernetes
// (runAsUser 1000, readOnlyRootFilesystem, /tmp an emptyDir).
//
// Offline: `npm ci` runs as `npm ci --offline`, from this machine's npm cache, which holds every package the
// lockfile resolves for linux-x64 (the optional @tensorflow/tfjs-node(-gpu) are not cached, so npm skips them, as it
// skips any optional dependency it cannot install; the Dockerfile then removes them anyway). What cannot be run
// here: the base image itself (Node 24 on Debian bookworm; this machine runs the Node it has) and the runtime
// stage's apt-get (tini).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import jpegTurbo from '@julusian/jpeg-turbo';
import { decodeResized } from '@catdog/augment';
import { kaggleTrainDir, kerasH5Dir, projectRoot } from '../helpers/fixtures.js';

const run = promisify(execFile);
const dockerfilePath = join(projectRoot, 'deploy', 'Dockerfile');

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}
interface Stage {
  from: string;
  name?: string;
  instructions: Instruction[];
}

/** Dockerfile instructions by stage: comments dropped, continuation lines joined, global ARG defaults substituted. */
function parseDockerfile(text: string): { stages: Stage[]; args: Record<string, string> } {
  const instructions: Instruction[] = [];
  let pending = '';
  let startLine = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!pending && (line === '' || line.startsWith('#'))) return;
    if (pending && line.startsWith('#')) return; // comment lines inside a continued instruction
    if (!pending) startLine = i + 1;
    pending += (pending ? ' ' : '') + line.replace(/\\$/, '').trim();
    if (line.endsWith('\\')) return;
    const [, keyword, args] = /^(\S+)\s+([\s\S]*)$/.exec(pending)!;
    instructions.push({ keyword: keyword.toUpperCase(), args, line: startLine });
    pending = '';
  });
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'ARG' && stages.length === 0) {
      const [name, value = ''] = ins.args.split('=');
      args[name] = value;
    } else if (ins.keyword === 'FROM') {
      const [image, as, name] = ins.args.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args[a ?? b] ?? '').split(/\s+/);
      stages.push({ from: image, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else {
      assert.ok(stages.length > 0, `Dockerfile line ${ins.line}: ${ins.keyword} before FROM`);
      stages[stages.length - 1].instructions.push(ins);
    }
  }
  return { stages, args };
}

const dockerfile = parseDockerfile(readFileSync(dockerfilePath, 'utf8'));
const buildStage = dockerfile.stages.find((s) => s.name === 'build')!;
const runtimeStage = dockerfile.stages[dockerfile.stages.length - 1];
const runs = (stage: Stage) => stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
const exec = (stage: Stage, keyword: string) => {
  const found = stage.instructions.filter((i) => i.keyword === keyword);
  return found.length ? (JSON.parse(found[found.length - 1].args) as string[]) : undefined;
};
/** ENV of a stage, both `ENV A=1 B=2` and `ENV A 1` forms. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    const pairs = [...ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)];
    if (pairs.length) for (const [, k, v] of pairs) env[k] = v.replace(/^"|"$/g, '');
    else {
      const [k, ...v] = ins.args.split(/\s+/);
      env[k] = v.join(' ');
    }
  }
  return env;
}

test('Dockerfile: one Debian-based Node >= 22 base for every stage, npm ci --omit=dev keeping optional deps, uid 1000, tini, node', () => {
  assert.ok(buildStage, 'a stage named build installs node_modules');
  assert.ok(dockerfile.stages.length >= 2);
  const bases = new Set(dockerfile.stages.map((s) => s.from));
  assert.equal(bases.size, 1, `every stage uses the same base, hence the same libc: ${[...bases].join(', ')}`);
  const [base] = bases;
  const m = /^node:(\d+)[.\d]*-(bookworm|trixie|bullseye)(-slim)?(@sha256:[0-9a-f]{64})?$/.exec(base);
  assert.ok(
    m,
    `base ${base}: a Debian (glibc) node image; sharp's and TurboJPEG's linux-x64 prebuilds are glibc builds`,
  );
  assert.ok(Number(m[1]) >= 22, `base ${base}: Node ${m[1]} (Node 20 is end-of-life; TurboJPEG 3 needs >= 22.18)`);

  const text = readFileSync(dockerfilePath, 'utf8');
  assert.doesNotMatch(text, /--omit[= ]optional|--no-optional/, "sharp's platform binaries are optional dependencies");
  const install = runs(buildStage).filter((r) => /\bnpm ci\b/.test(r));
  assert.equal(install.length, 1, 'one npm ci in the build stage');
  assert.match(install[0], /--omit[= ]dev\b/);

  const final = runtimeStage.instructions;
  assert.ok(
    final.some((i) => i.keyword === 'COPY' && /^--from=build\s+\/app\s+\/app$/.test(i.args)),
    'the runtime stage copies /app from build',
  );
  assert.equal(
    final.filter((i) => i.keyword === 'USER').at(-1)?.args,
    '1000',
    'numeric USER: runAsNonRoot refuses named users',
  );
  assert.deepEqual(exec(runtimeStage, 'ENTRYPOINT'), ['/usr/bin/tini', '--'], 'tini as PID 1 forwards signals');
  const cmd = exec(runtimeStage, 'CMD')!;
  assert.equal(cmd[0], 'node', 'CMD runs node itself, not npm');
  // A CLI compiled by tools/build.mjs (dist/node mirrors the sources): its TypeScript source exists.
  assert.match(cmd[1]!, /^dist\/node\/apps\/\w+\/src\/\w+\.js$/);
  const source = cmd[1]!.replace(/^dist\/node\//, '').replace(/\.js$/, '.ts');
  assert.ok(existsSync(join(projectRoot, source)), `CMD runs ${cmd[1]}, compiled from ${source}, which exists`);
  assert.ok(
    runs(buildStage).some((r) => r === 'node tools/build.mjs'),
    'the build stage compiles the CLIs (node tools/build.mjs)',
  );
  // The runtime stage's RUN steps are system packages only (not run here: apt as root in a Debian image).
  for (const r of runs(runtimeStage))
    assert.match(
      r,
      /^apt-get update && apt-get install -y --no-install-recommends [\w ]+&& rm -rf \/var\/lib\/apt\/lists\/\*$/,
    );
  assert.ok(runs(runtimeStage).some((r) => /\btini\b/.test(r)));
  // esbuild compiles the CLIs in the image's build stage, so npm ci --omit=dev must install it; the image runs
  // JavaScript, so tsx (the tests' TypeScript loader) and nx are development tools.
  const pkg = JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8'));
  assert.ok(pkg.dependencies.esbuild, 'esbuild is a runtime dependency');
  assert.ok(!pkg.dependencies.tsx, 'tsx is a devDependency');
  assert.ok(!pkg.dependencies.nx, 'nx is a devDependency');
});

/** Skips paths that deploy/Dockerfile.dockerignore keeps out of the build context. */
function ignoreFilter(): (path: string) => boolean {
  const patterns = readFileSync(join(projectRoot, 'deploy', 'Dockerfile.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  return (path) => {
    const rel = relative(projectRoot, path).split(sep);
    return !patterns.some((p) => {
      if (p.startsWith('**/')) {
        const name = p.slice(3);
        return name.startsWith('*.') ? rel.at(-1)!.endsWith(name.slice(1)) : rel.includes(name);
      }
      return rel[0] === p;
    });
  };
}

const rootOwnsTree = process.getuid?.() === 0 && existsSync('/usr/bin/setpriv');
/** Runs a command as uid/gid 1000 without privileges when this test runs as root; as the current user otherwise. */
function asUser1000(file: string, args: string[]): [string, string[]] {
  return rootOwnsTree
    ? ['/usr/bin/setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', '--', file, ...args]]
    : [file, args];
}

// Runs in the clean tree as uid 1000 from dist/node (where the compiled CLIs run, so @catdog/* are the compiled
// packages): every native module, through our own packages.
const PROBE = `
import { accessSync, constants, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
const out = { uid: process.getuid(), cwd: process.cwd() };
try { accessSync(process.cwd(), constants.W_OK); out.treeWritable = true; } catch { out.treeWritable = false; }
out.resolved = Object.fromEntries(['sharp', '@img/sharp-linux-x64/sharp.node', '@julusian/jpeg-turbo', 'h5wasm/node', '@tensorflow/tfjs-backend-wasm', '@catdog/augment']
  .map((p) => [p, fileURLToPath(import.meta.resolve(p))]));
const jpeg = readFileSync(process.env.PROBE_JPEG);
const { default: sharp } = await import('sharp');
const meta = await sharp(jpeg).metadata();
const thumb = await sharp(jpeg).resize(150, 150, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
out.sharp = { width: meta.width, height: meta.height, format: meta.format, thumb: (await sharp(thumb).metadata()).width };
const { default: turbo } = await import('@julusian/jpeg-turbo');
const raw = turbo.decompressSync(jpeg, { format: turbo.FORMAT_RGB });
out.turbo = { width: raw.width, height: raw.height, sha256: createHash('sha256').update(raw.data).digest('hex') };
const { decodeResized } = await import('@catdog/augment');
const digest = (a) => createHash('sha256').update(a).digest('hex');
out.decode = { fast: digest(await decodeResized(jpeg, { height: 150, width: 150, interpolation: 'nearest', jpegDecoder: 'fast' })), exact: digest(await decodeResized(jpeg, { height: 150, width: 150, interpolation: 'nearest', jpegDecoder: 'exact' })) };
const { readKerasH5Weights } = await import('@catdog/models');
const h5 = await readKerasH5Weights(process.env.PROBE_H5);
out.h5 = { kind: h5.kind, layers: h5.layers.size, first: h5.layerNames[0] };
const { initBackend } = await import('@catdog/backend');
const choice = await initBackend({ backend: 'wasm', threads: 2, log: () => {} });
const tf = await import('@tensorflow/tfjs');
out.tf = { backend: tf.getBackend(), threads: choice.threads, y: Array.from(tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])).dataSync()) };
process.stdout.write(JSON.stringify(out));
`;

test("the build stage's COPY and RUN steps, replayed in a clean folder, give a tree where every native module loads as uid 1000", {
  timeout: 240_000,
}, async (t) => {
  // About 30 s on an idle 2-core machine (npm ci from the cache ~11 s, tools/build.mjs under a second, prep on
  // 10 JPEGs); the timeout leaves room for a machine shared with other test runs.
  const work = mkdtempSync(join(tmpdir(), 'catdog-image-'));
  chmodSync(work, 0o755);
  // ~17,000 files: removed in the background, so the suite does not wait on the disk.
  t.after(() => spawn('rm', ['-rf', work], { detached: true, stdio: 'ignore' }).unref());
  const tree = join(work, 'app'); // WORKDIR /app
  mkdirSync(tree);

  // COPY <context paths> <dest>, relative to the build context (the repository root) and WORKDIR.
  const keep = ignoreFilter();
  let workdir: string | undefined;
  const steps: string[] = [];
  const phase = performance.now();
  const lap = () => ((performance.now() - phase) / 1000).toFixed(1);
  for (const ins of buildStage.instructions) {
    if (ins.keyword === 'WORKDIR') workdir = ins.args;
    if (ins.keyword === 'COPY') {
      assert.equal(workdir, '/app', 'the build stage works in /app, the folder the runtime stage copies');
      assert.doesNotMatch(ins.args, /^--/, `line ${ins.line}: COPY flags are not replayed here`);
      const parts = ins.args.split(/\s+/);
      const dest = parts.pop()!;
      const target = dest.startsWith('/') ? join(work, dest) : join(tree, dest);
      for (const src of parts) {
        const from = join(projectRoot, src);
        assert.ok(existsSync(from), `line ${ins.line}: COPY ${src}: not in the repository`);
        const to = dest.endsWith('/') || parts.length > 1 ? join(target, src.split('/').at(-1)!) : target;
        mkdirSync(dirname(to), { recursive: true });
        cpSync(from, to, { recursive: true, filter: keep });
      }
    }
    if (ins.keyword === 'RUN') {
      // The one change: npm reads packages from this machine's cache instead of the registry.
      const command = ins.args.replace(/\bnpm ci\b/, 'npm ci --offline');
      const env = Object.fromEntries(
        Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'NODE_OPTIONS' && k !== 'NODE_PATH'),
      );
      if (!steps.length) steps.push(`COPY (${lap()} s)`);
      const started = performance.now();
      try {
        await run('sh', ['-c', command], { cwd: tree, env, timeout: 100_000, maxBuffer: 1 << 24 });
      } catch (err) {
        const e = err as { stdout?: string; stderr?: string; message: string };
        assert.fail(`RUN ${command} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
      }
      steps.push(`RUN ${command} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    }
  }
  t.diagnostic(steps.join('\n'));
  assert.ok(existsSync(join(tree, 'node_modules', '@img', 'sharp-linux-x64')), "sharp's platform binary is installed");
  assert.ok(existsSync(join(tree, 'node_modules', 'esbuild')), 'esbuild is installed by npm ci --omit=dev');
  assert.ok(existsSync(join(tree, 'dist', 'node', 'apps', 'prep', 'src', 'main.js')), 'the CLIs are compiled');
  for (const dev of [
    'nx',
    'tsx',
    'typescript',
    's3rver',
    'kubernetes-models',
    '@tensorflow/tfjs-node',
    '@tensorflow/tfjs-node-gpu',
  ]) {
    assert.ok(!existsSync(join(tree, 'node_modules', dev)), `${dev} is not in the image`);
  }
  assert.ok(
    !readdirSync(join(tree, 'packages', 'backend')).includes('node_modules'),
    'dockerignore keeps local installs out',
  );

  // What the container can write: /tmp and $HOME/.cache (emptyDirs under Kubernetes); nothing else.
  const writable = join(work, 'writable');
  mkdirSync(join(writable, 'tmp'), { recursive: true });
  mkdirSync(join(writable, 'home', '.cache'), { recursive: true });
  if (rootOwnsTree)
    for (const d of [writable, join(writable, 'tmp'), join(writable, 'home'), join(writable, 'home', '.cache')])
      chownSync(d, 1000, 1000);
  const imageEnv = envOf(runtimeStage);
  const env: Record<string, string> = {
    ...imageEnv,
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: join(writable, 'home'),
    TMPDIR: join(writable, 'tmp'),
    INIT_CWD: join(writable, 'tmp'),
  };
  assert.equal(imageEnv.NODE_ENV, 'production');

  writeFileSync(join(tree, 'dist', 'node', 'image-test-probe.mjs'), PROBE);
  const jpegPath = join(kaggleTrainDir, 'cat.0.jpg');
  const h5Path = join(kerasH5Dir, 'mobilenet_2_5_224_tf_no_top.h5');
  const [file, args] = asUser1000(process.execPath, ['dist/node/image-test-probe.mjs']);
  if (!rootOwnsTree) t.diagnostic('not root (or no setpriv): the probe runs as the current user instead of uid 1000');
  const probeStarted = performance.now();
  const probe = await run(file, args, {
    cwd: tree,
    env: { ...env, PROBE_JPEG: jpegPath, PROBE_H5: h5Path },
    timeout: 90_000,
  });
  const probeSeconds = ((performance.now() - probeStarted) / 1000).toFixed(1);
  const got = JSON.parse(probe.stdout);
  if (rootOwnsTree) {
    assert.equal(got.uid, 1000);
    assert.equal(got.treeWritable, false, 'uid 1000 cannot write the application tree (root-owned, as in the image)');
  }
  for (const [name, path] of Object.entries(got.resolved as Record<string, string>)) {
    assert.ok(path.startsWith(tree + sep), `${name} resolved outside the clean tree: ${path}`);
  }

  // The same pixels as from this repository's own install.
  const jpeg = readFileSync(jpegPath);
  const meta = await sharp(jpeg).metadata();
  assert.deepEqual(got.sharp, { width: meta.width, height: meta.height, format: 'jpeg', thumb: 150 });
  const raw = jpegTurbo.decompressSync(jpeg, { format: jpegTurbo.FORMAT_RGB });
  const { createHash } = await import('node:crypto');
  const digest = (a: Uint8Array) => createHash('sha256').update(a).digest('hex');
  assert.deepEqual(got.turbo, { width: raw.width, height: raw.height, sha256: digest(raw.data) });
  assert.deepEqual(got.decode, {
    fast: digest(await decodeResized(jpeg, { height: 150, width: 150, interpolation: 'nearest', jpegDecoder: 'fast' })),
    exact: digest(
      await decodeResized(jpeg, { height: 150, width: 150, interpolation: 'nearest', jpegDecoder: 'exact' }),
    ),
  });
  assert.equal(got.h5.kind, 'weights');
  assert.ok(got.h5.layers > 50, `MobileNetV2 weights read through h5wasm: ${JSON.stringify(got.h5)}`);
  assert.deepEqual(got.tf.y, [17, 39]);
  assert.equal(got.tf.backend, 'wasm');

  // A CLI as a pod runs it: prep split on real JPEGs, as uid 1000, writing only to its output folder.
  const source = join(work, 'source');
  mkdirSync(source);
  for (const cls of ['cat', 'dog'])
    for (let i = 0; i < 5; i++) cpSync(join(kaggleTrainDir, `${cls}.${i}.jpg`), join(source, `${cls}.${i}.jpg`));
  const out = join(writable, 'tmp', 'book');
  const [pfile, pargs] = asUser1000(process.execPath, [
    'dist/node/apps/prep/src/main.js',
    'split',
    `--source=${source}`,
    `--out=${out}`,
    '--train=2',
    '--validation=1',
    '--test=1',
    '--resize=150',
  ]);
  const splitStarted = performance.now();
  const split = await run(pfile, pargs, { cwd: tree, env, timeout: 90_000 });
  assert.match(split.stdout, /manifest written/);
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  assert.deepEqual(Object.keys(manifest.splits).sort(), ['test', 'train', 'validation']);
  assert.equal(manifest.splits.train.count, 4);
  if (rootOwnsTree) assert.equal(statSync(join(out, 'manifest.json')).uid, 1000);
  t.diagnostic(
    `probe ${probeSeconds} s, prep split ${((performance.now() - splitStarted) / 1000).toFixed(1)} s, total ${lap()} s`,
  );
});
