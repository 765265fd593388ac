// Benchmark: our augmentation pipeline (`augment bench`) against its peers (Keras ImageDataGenerator semantics,
// torchvision DataLoader, PIL decode floors; tools/bench/src/augment_peers.py on Debian's python3), all on the same
// images, on this machine, in the same run, one after the other. Prints a markdown table, ratios (ours / peer),
// 1→2 worker scaling, main-thread ms per batch, and `augment images_per_s=<median> workers=<n>` summary lines.
// Not a test.
//
//   node --import tsx tools/bench/src/augment-compare.ts                      # the book's 2000 images, 3 passes
//   node --import tsx tools/bench/src/augment-compare.ts --prepped <dir>      # also from shards prepped with --resize 150x150
//   node --import tsx tools/bench/src/augment-compare.ts --quick --limit 64   # sanity check (--quick: limit 256, 1 pass)
//   options: --source <dir> (default ../shared/datasets/dogs-vs-cats/train), --limit <n> (2000), --passes <n> (3),
//            --batch <n> (32), --size <px> (150), --workers <n> (2), --json <file> (also write every number as JSON)
// A --prepped dataset made with `prep split --folders` also has its images as plain JPEGs (<dir>/train/<class>/):
// the peers then run on those too, so each of our sources is compared with peers reading the same images.
// Peers need a python3 (AUGMENT_PEERS_PYTHON, else Debian's) with python3-torch, -torchvision, -pil, -scipy, -numpy:
// installed with apt-get when missing and run as root, else reported as "peers: none (<what to install>)".
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CLI } from './cli.js';
import { findTorchPython, torchMissing } from './peer-python.js';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const base = process.env.INIT_CWD ?? process.cwd();
const PEER_MODULES = ['torch', 'torchvision', 'PIL', 'scipy', 'numpy'];

function fail(message: string): never {
  console.error(`error: ${message}`);
  process.exit(1);
}

function parseOptions() {
  try {
    return parseArgs({
      options: {
        source: { type: 'string' },
        limit: { type: 'string' },
        passes: { type: 'string' },
        batch: { type: 'string', default: '32' },
        size: { type: 'string', default: '150' },
        workers: { type: 'string', default: '2' },
        prepped: { type: 'string' },
        quick: { type: 'boolean', default: false },
        json: { type: 'string' },
      },
    });
  } catch (err) {
    fail((err as Error).message);
  }
}
const { values } = parseOptions();
const positive = (name: string, v: string | undefined, dflt: number) => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(`--${name} must be a positive integer (got ${v})`);
  return n;
};
const limit = positive('limit', values.limit, values.quick ? 256 : 2000);
const passes = positive('passes', values.passes, values.quick ? 1 : 3);
const batch = positive('batch', values.batch, 32);
const size = positive('size', values.size, 150);
const maxWorkers = positive('workers', values.workers, 2);
const source = values.source
  ? resolve(base, values.source)
  : join(root, '..', 'shared', 'datasets', 'dogs-vs-cats', 'train');
if (!existsSync(source) || !statSync(source).isDirectory()) fail(`source folder not found: ${source}`);
const prepped = values.prepped ? resolve(base, values.prepped) : undefined;
if (prepped && !existsSync(join(prepped, 'manifest.json'))) {
  fail(
    `${prepped} is not a prepared dataset (no manifest.json): make one with npx nx run prep:split -- --resize 150x150 ...`,
  );
}

interface OurResult {
  workers: number;
  rate: number;
  passes: number[];
  mainMs: number;
  workerMs: number;
  cpuMsPerImage: number;
  skipped: number;
}
interface OurRecord {
  source: string;
  images: number;
  results: OurResult[];
  scaling: number | null;
}
interface PeerRecord {
  images: number;
  versions: Record<string, string>;
  results: Record<string, Record<string, { images_per_s: number; passes: number[] }>>;
}

/** Writes a child's output to stderr line by line, indented: its summary lines are not mistaken for ours. */
function indented(): { write(d: Buffer): void; end(): void } {
  let pending = '';
  return {
    write(d) {
      const parts = (pending + d.toString()).split('\n');
      pending = parts.pop()!;
      for (const line of parts) process.stderr.write(`  ${line}\n`);
    },
    end() {
      if (pending) process.stderr.write(`  ${pending}\n`);
      pending = '';
    },
  };
}

/** Runs a child, its output forwarded to stderr (progress), rejecting with its last stderr line on failure. */
function run(cmd: string, args: string[], forwardStdout = true): Promise<string> {
  return new Promise((ok, ko) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const out = indented();
    const err = indented();
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      if (forwardStdout) out.write(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      err.write(d);
    });
    child.on('error', ko);
    child.on('close', (code) => {
      out.end();
      err.end();
      if (code === 0) return ok(stdout);
      ko(new Error(`${cmd} ${args.slice(0, 3).join(' ')} … exited ${code}: ${stderr.trim().split('\n').pop() ?? ''}`));
    });
  });
}

async function ours(from: string, label: string, work: string): Promise<OurRecord> {
  const file = join(work, `${label}.json`);
  console.error(`\n== ours (${label}): augment bench --source ${from}`);
  await run(process.execPath, [
    CLI.augment,
    'bench',
    '--source',
    from,
    '--limit',
    String(limit),
    '--workers',
    String(maxWorkers),
    '--min-workers',
    '1',
    '--batch',
    String(batch),
    '--size',
    String(size),
    '--passes',
    String(passes),
    '--json',
    file,
  ]);
  return JSON.parse(await readFile(file, 'utf8')) as OurRecord;
}

const work = await mkdtemp(join(tmpdir(), 'catdog-augment-compare-'));
let jpeg: OurRecord;
let shards: OurRecord | undefined;
let peers: PeerRecord | undefined;
let peersPrepped: PeerRecord | undefined;
let peersMissing: string | undefined;
/** The python3 the peers run on: AUGMENT_PEERS_PYTHON, else the first that imports them (installed if root). */
let peerPython: string | null = null;
// `prep split --folders` also writes <out>/train/<class>/<key>.jpg: the same prepped images, readable by the peers.
const preppedFolder = prepped && existsSync(join(prepped, 'train')) ? join(prepped, 'train') : undefined;
const hasPreppedFolders =
  !!preppedFolder && readdirSync(preppedFolder, { withFileTypes: true }).some((e) => e.isDirectory());

async function runPeers(python: string, from: string): Promise<PeerRecord> {
  console.error(`\n== peers: ${python} tools/bench/src/augment_peers.py --source ${from}`);
  const out = await run(
    python,
    [
      join(root, 'tools/bench/src/augment_peers.py'),
      '--source',
      from,
      '--limit',
      String(limit),
      '--passes',
      String(passes),
      '--batch',
      String(batch),
      '--size',
      String(size),
      '--processes',
      [...new Set([1, maxWorkers])].join(','),
    ],
    false,
  );
  return JSON.parse(out.trim().split('\n').pop()!) as PeerRecord;
}
try {
  // Peers first: the apt-get check may install, and its progress belongs before the long measurements.
  peerPython = findTorchPython(process.env.AUGMENT_PEERS_PYTHON, PEER_MODULES);
  jpeg = await ours(source, 'original JPEGs', work);
  if (prepped) shards = await ours(prepped, 'prepped shards', work);
  if (peerPython) {
    try {
      peers = await runPeers(peerPython, source);
      if (hasPreppedFolders) peersPrepped = await runPeers(peerPython, preppedFolder!);
    } catch (err) {
      peersMissing = (err as Error).message;
    }
  } else {
    peersMissing = torchMissing(PEER_MODULES);
  }
} catch (err) {
  await rm(work, { recursive: true, force: true });
  fail((err as Error).message);
}
await rm(work, { recursive: true, force: true });

// ---- report ----
const counts = [...new Set([1, maxWorkers])];
const f0 = (x: number | undefined) => (x === undefined ? '–' : x.toFixed(0));
const rateOf = (r: OurRecord | undefined, w: number) => r?.results.find((x) => x.workers === w)?.rate;
const peerRate = (rec: PeerRecord | undefined, peer: string, p: number) =>
  rec?.results[peer]?.[String(p)]?.images_per_s;
const scaling = (one: number | undefined, n: number | undefined, w: number) =>
  one && n && w > 1 ? `${((n / one / w) * 100).toFixed(0)}%` : '–';
const PEER_NAMES: Record<string, string> = {
  keras: 'Keras ImageDataGenerator semantics (PIL nearest + scipy affine order 1, Pool)',
  torchvision: 'torchvision Resize + RandomAffine + flip, DataLoader',
  'pil-full': 'floor: PIL decode only, full size',
  'pil-draft': 'floor: PIL decode only, draft mode (DCT downscale)',
};
// Each of our sources with the peers run on the same images: [label, ours, peers on the same files].
const sources: [string, OurRecord, PeerRecord | undefined][] = [['original JPEGs', jpeg, peers]];
if (shards) sources.push([`prepped ${size}×${size}`, shards, peersPrepped]);

const cols = counts.map((w) => `${w} ${w === 1 ? 'process' : 'processes'}`);
const lines: string[] = [];
lines.push(
  `\n### Augmentation pipeline, ${jpeg.images} images, ${size}×${size}, batch ${batch}, median of ${passes} pass${passes > 1 ? 'es' : ''} (images/s)\n`,
  `| pipeline | source | ${cols.join(' | ')} | scaling 1→${maxWorkers} |`,
  `| --- | --- | ${cols.map(() => '---:').join(' | ')} | ---: |`,
);
const row = (name: string, from: string, rates: (number | undefined)[]) =>
  lines.push(
    `| ${name} | ${from} | ${rates.map(f0).join(' | ')} | ${scaling(rates[0], rates[rates.length - 1], maxWorkers)} |`,
  );
for (const [label, rec, peerRec] of sources) {
  row(
    '**ours** (`augment bench`)',
    label,
    counts.map((w) => rateOf(rec, w)),
  );
  for (const peer of Object.keys(PEER_NAMES))
    if (peerRec?.results[peer])
      row(
        PEER_NAMES[peer],
        label,
        counts.map((p) => peerRate(peerRec, peer, p)),
      );
}
if (!peers) lines.push(`\npeers: none (${peersMissing})`);
else {
  lines.push(
    `\npeers on ${peerPython}: ${Object.entries(peers.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  if (shards && !peersPrepped)
    lines.push(`peers on the prepped images: none (${prepped} has no train/<class>/ folders: prep it with --folders)`);
}

if (peers) {
  lines.push(
    `\n| ratio ours / peer (same images) | ${cols.join(' | ')} |`,
    `| --- | ${cols.map(() => '---:').join(' | ')} |`,
  );
  for (const [label, rec, peerRec] of sources) {
    for (const peer of Object.keys(PEER_NAMES)) {
      if (!peerRec?.results[peer]) continue;
      const ratios = counts.map((w) => {
        const a = rateOf(rec, w);
        const b = peerRate(peerRec, peer, w);
        return a && b ? `${(a / b).toFixed(2)}×` : '–';
      });
      lines.push(`| ${label}: ours / ${peer} | ${ratios.join(' | ')} |`);
    }
  }
}

lines.push(
  '\n| ours | workers | main-thread ms/batch | worker ms/batch | CPU ms/image | skipped |',
  '| --- | ---: | ---: | ---: | ---: | ---: |',
);
for (const [label, rec] of sources) {
  for (const r of rec.results) {
    lines.push(
      `| ${label} | ${r.workers} | ${r.mainMs.toFixed(3)} | ${r.workerMs.toFixed(1)} | ${r.cpuMsPerImage.toFixed(3)} | ${r.skipped} |`,
    );
  }
}

lines.push('');
for (const [i, [, rec, peerRec]] of sources.entries()) {
  const suffix = i === 0 ? '' : '_prepped';
  for (const w of counts) lines.push(`augment${suffix} images_per_s=${f0(rateOf(rec, w))} workers=${w}`);
  if (maxWorkers > 1)
    lines.push(
      `augment${suffix} scaling_1_to_${maxWorkers}=${scaling(rateOf(rec, 1), rateOf(rec, maxWorkers), maxWorkers)}`,
    );
  for (const peer of Object.keys(PEER_NAMES)) {
    for (const p of counts) {
      if (peerRate(peerRec, peer, p) !== undefined)
        lines.push(
          `peer_${peer.replace('-', '_')}${suffix} images_per_s=${f0(peerRate(peerRec, peer, p))} processes=${p}`,
        );
    }
  }
}
if (!peers) lines.push('peers=none');
console.log(lines.join('\n'));

if (values.json) {
  const file = resolve(base, values.json);
  await mkdir(dirname(file), { recursive: true });
  const record = {
    limit,
    passes,
    batch,
    size,
    workers: maxWorkers,
    ours: { jpeg, prepped: shards ?? null },
    peers: peers ?? null,
    peersPrepped: peersPrepped ?? null,
    peersMissing: peersMissing ?? null,
  };
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
}
