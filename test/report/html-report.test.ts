// HTML reports over real run directories (trained for real by test/report/real-run.ts): the run page, the
// comparison page opened in a real headless Chromium, and the CLI as users and Nx run it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import sharp from 'sharp';
import { UserError } from '@catdog/errors';
import { findRunDirs, writeComparisonReport, writeRunReport } from '@catdog/report';
import { CLI, projectRoot } from '../helpers/fixtures.js';
import { makeRealRun } from './real-run.js';

const CHROMIUM = '/usr/bin/chromium';
let dir: string;
let runsDir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'report-html-'));
  runsDir = join(dir, 'runs');
  // Two evaluated runs (one grouped one level deeper) and one still without metrics.json.
  await makeRealRun(join(runsDir, 'scratch-1'), { strategy: 'scratch', epochs: 10, hiddenUnits: 8 });
  await makeRealRun(join(runsDir, 'mobilenet', 'extract-1'), {
    strategy: 'extract',
    base: 'mobilenet_v2',
    epochs: 10,
    hiddenUnits: 32,
  });
  await makeRealRun(join(runsDir, 'finetune-1'), {
    strategy: 'finetune',
    base: 'mobilenet_v2',
    epochs: 4,
    withoutMetrics: true,
  });
  await writeFile(
    join(runsDir, 'finetune-1', 'config.json'),
    JSON.stringify({
      ...JSON.parse(await readFile(join(runsDir, 'finetune-1', 'config.json'), 'utf8')),
      // A URL in a config value must not turn into a reference in the page.
      data: { source: 'https://example.invalid/train.zip', endpoint: 'http://127.0.0.1:4569' },
    }),
  );
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function metricsOf(run: string) {
  return JSON.parse(await readFile(join(runsDir, run, 'metrics.json'), 'utf8'));
}

test('the run page is one self-contained file with metrics, curves, diagram and misclassified images', async () => {
  // The augmentation engineer's preview, when present, is shown too.
  const preview = await sharp({ create: { width: 64, height: 32, channels: 3, background: '#808080' } })
    .png()
    .toBuffer();
  await writeFile(join(runsDir, 'scratch-1', 'augmentation-preview.png'), preview);
  const page = await writeRunReport(join(runsDir, 'scratch-1'));
  assert.equal(page, join(runsDir, 'scratch-1', 'report.html'));
  const html = await readFile(page, 'utf8');
  assert.doesNotMatch(html, /http/i);
  assert.doesNotMatch(html, /<script|src="(?!data:)/i, 'no scripts, every image inline');
  const metrics = await metricsOf('scratch-1');
  assert.ok(html.includes(`${(metrics.test.accuracy * 100).toFixed(1)}%`), 'test accuracy shown');
  assert.ok(html.includes('Training and validation accuracy') && html.includes('Training and validation loss'));
  assert.equal(
    html.match(/<figure>/g)?.length ?? 0,
    metrics.test.misclassified.length,
    'one figure per misclassified image',
  );
  assert.equal(html.match(/<img src="data:image\/jpeg;base64,/g)?.length ?? 0, metrics.test.misclassified.length);
  for (const m of metrics.test.misclassified) assert.ok(html.includes(`p(dog) = ${m.probability.toFixed(3)}`), m.key);
  const diagram = /<img class="diagram" src="data:image\/svg\+xml;base64,([^"]+)" alt="model diagram">/.exec(html);
  assert.ok(diagram, 'model diagram inlined');
  const svg = Buffer.from(diagram[1]!.replace(/\s/g, ''), 'base64').toString('utf8');
  for (const box of ['hidden: Dense', 'dropout: Dropout', 'output: Dense']) assert.ok(svg.includes(box), box);
  assert.ok(html.includes('hidden (Dense)'), 'Keras-style summary');
  assert.match(html, /predicted cat<\/th>/, 'confusion matrix');
  assert.ok(html.includes('<h2>Augmentation preview</h2>') && html.includes('alt="augmentation preview"'));
});

/** Sets a run's test accuracy and best validation accuracy in its metrics.json (fixed values for the ranking). */
async function setScores(run: string, accuracy: number, bestValAcc: number) {
  const m = await metricsOf(run);
  await writeFile(
    join(runsDir, run, 'metrics.json'),
    JSON.stringify({ ...m, test: { ...m.test, accuracy }, bestValAcc }, null, 2),
  );
}

test('the comparison page names every run, ranks them by test accuracy and says who won', async () => {
  const out = join(dir, 'comparison.html');
  // Fixed scores, fixed expected order: test accuracy first, ties to the better best validation accuracy, then to
  // the name; the run without metrics last.
  const cases: Array<[[number, number], [number, number], string[], RegExp]> = [
    [
      [0.75, 0.7],
      [0.7, 0.9],
      ['scratch-1', 'mobilenet/extract-1', 'finetune-1'],
      /scratch won with 75\.0% test accuracy, \+5\.0 points over extract \(mobilenet_v2\) at 70\.0%/,
    ],
    [
      [0.75, 0.9],
      [0.75, 0.8],
      ['scratch-1', 'mobilenet/extract-1', 'finetune-1'],
      /scratch won with 75\.0% test accuracy, \+0\.0 points over extract \(mobilenet_v2\) at 75\.0%/,
    ],
    [
      [0.6, 0.8],
      [0.6, 0.8],
      ['mobilenet/extract-1', 'scratch-1', 'finetune-1'],
      /extract \(mobilenet_v2\) won with 60\.0% test accuracy/,
    ],
  ];
  for (const [scratch, extract, order, sentence] of cases) {
    await setScores('scratch-1', ...scratch);
    await setScores(join('mobilenet', 'extract-1'), ...extract);
    const result = await writeComparisonReport(runsDir, out);
    assert.equal(result.runs.length, 3);
    assert.deepEqual(result.names, order, `scratch ${scratch}, extract ${extract}`);
    const html = await readFile(out, 'utf8');
    assert.match(html, sentence);
    const rows = [...html.matchAll(/data-run="([^"]+)"/g)].map((x) => x[1]);
    assert.deepEqual([...new Set(rows)], order, 'the table lists the runs in that order');
  }
  const html = await readFile(out, 'utf8');
  assert.doesNotMatch(html, /http/i);
  assert.equal(html.match(/<td>cpu \(1 thread\)<\/td>/g)?.length, 2, 'the backend that ran, from metrics.json');
  assert.equal(html.match(/<td>auto<\/td>/g)?.length, 1, 'a run without metrics shows the configured backend');
  for (const run of ['scratch-1', 'mobilenet/extract-1', 'finetune-1'])
    assert.ok(existsSync(join(runsDir, run, 'report.html')), `${run}/report.html`);
  assert.deepEqual((await findRunDirs(runsDir)).length, 3);
});

test('the comparison page opens in headless Chromium without console errors or network requests', async (t) => {
  if (!existsSync(CHROMIUM)) {
    const message = `${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run this test`;
    if (process.env.CATDOG_REQUIRE_BROWSER === '1') assert.fail(message);
    t.skip(message);
    return;
  }
  const out = join(dir, 'browser.html');
  const result = await writeComparisonReport(runsDir, out);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('request', (r) => {
      if (!r.url().startsWith('data:')) requests.push(r.url());
    });
    const url = pathToFileURL(out).href;
    await page.goto(url, { waitUntil: 'load' });
    assert.deepEqual(requests, [url], 'the page itself is the only request');
    assert.deepEqual(problems, []);
    const rows = await page.$$eval('table.runs tbody tr', (trs) =>
      trs.map((tr) => (tr.children[1] as HTMLElement).innerText.trim()),
    );
    assert.deepEqual(rows, result.names);
    // Every image decoded (curves, overlay chart, misclassified thumbnails once opened).
    await page.$$eval('details', (ds) => ds.forEach((d) => ((d as HTMLDetailsElement).open = true)));
    const images = await page.$$eval('img', (imgs) =>
      imgs.map((i) => ({
        ok: (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0,
        alt: i.alt,
      })),
    );
    assert.ok(images.length >= 3 * 2 + 1, `${images.length} images`);
    assert.deepEqual(
      images.filter((i) => !i.ok),
      [],
      'all images decode',
    );
    const text = await page.innerText('body');
    assert.match(text, /won with/);

    // A run page whose config holds URLs: shown as text, yet the file holds no "http" and nothing is fetched.
    const runPage = join(runsDir, 'finetune-1', 'report.html');
    assert.doesNotMatch(await readFile(runPage, 'utf8'), /http/i);
    requests.length = 0;
    await page.goto(pathToFileURL(runPage).href, { waitUntil: 'load' });
    assert.deepEqual(requests, [pathToFileURL(runPage).href]);
    assert.deepEqual(problems, []);
    const runText = await page.innerText('body');
    assert.ok(
      runText.includes('https://example.invalid/train.zip') && runText.includes('http://127.0.0.1:4569'),
      'URLs shown as text',
    );
  } finally {
    await browser.close();
  }
});

/** Runs the CLI as npm/npx would from the user's directory `userDir` (INIT_CWD), at the project root. */
function cli(
  args: string[],
  userDir = projectRoot,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI.report, ...args], {
      cwd: projectRoot,
      env: { ...process.env, INIT_CWD: userDir },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => done({ status, stdout, stderr }));
  });
}

test('the CLI writes the comparison, and exits non-zero with a clear message on no runs or garbage', async () => {
  await mkdir(join(dir, 'empty', 'not-a-run'), { recursive: true });
  const broken = join(dir, 'broken', 'run-1');
  await mkdir(broken, { recursive: true });
  await writeFile(join(broken, 'history.json'), '{"loss": [0.69, 0.6], "acc": [0.5');
  const history = join(runsDir, 'scratch-1', 'history.json');
  // Independent invocations, run side by side to keep the test short.
  const [ok, empty, garbage, usage, curves, badSmooth, model] = await Promise.all([
    cli(['--runs', 'runs', '--out', 'cli/all.html'], dir),
    cli(['--runs', join(dir, 'empty'), '--out', join(dir, 'empty.html')]),
    cli(['--runs', join(dir, 'broken'), '--out', join(dir, 'broken.html')]),
    cli(['--bogus']),
    cli(['curves', '--history', history, '--out', join(dir, 'c'), '--smooth', '0.8']),
    cli(['curves', '--history', history, '--out', join(dir, 'c2'), '--smooth', '1.5']),
    cli(['model', '--model', join(runsDir, 'scratch-1', 'model', 'model.json'), '--out', join(dir, 'm')]),
  ]);

  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /wrote .*all\.html \(3 runs\)/);
  const html = await readFile(join(dir, 'cli', 'all.html'), 'utf8');
  assert.doesNotMatch(html, /http/i);
  for (const name of ['scratch-1', 'mobilenet/extract-1', 'finetune-1']) assert.ok(html.includes(`data-run="${name}"`));

  assert.equal(empty.status, 1);
  assert.match(empty.stderr, /^error: no runs found in .*empty/m);
  assert.ok(!existsSync(join(dir, 'empty.html')), 'nothing written');

  assert.equal(garbage.status, 1);
  assert.ok(garbage.stderr.includes(`error: ${join(broken, 'history.json')}: invalid JSON`), garbage.stderr);
  assert.ok(!existsSync(join(dir, 'broken.html')));
  assert.deepEqual(
    (await readdir(dir)).filter((f) => f.endsWith('.tmp')),
    [],
  );

  assert.equal(usage.status, 2);
  assert.equal(curves.status, 0, curves.stderr);
  assert.ok(existsSync(join(dir, 'c', 'curves', 'loss.png')));
  assert.equal(badSmooth.status, 2);
  assert.match(badSmooth.stderr, /expected a factor in \[0, 1\)/);
  assert.ok(!existsSync(join(dir, 'c2')));
  assert.equal(model.status, 0, model.stderr);
  assert.match(await readFile(join(dir, 'm', 'model.svg'), 'utf8'), /output: Dense/);
  await assert.rejects(
    writeComparisonReport(join(dir, 'missing'), join(dir, 'x.html')),
    (e: Error) => e instanceof UserError && /does not exist/.test(e.message),
  );
});

test('verification contract: npx nx run trainer:report --runs <dir> --out <file.html>', async () => {
  const out = join(dir, 'nx', 'report.html');
  const r = spawnSync('npx', ['nx', 'run', 'trainer:report', '--runs', runsDir, '--out', out], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const html = await readFile(out, 'utf8');
  assert.doesNotMatch(html, /https?/i);
  for (const name of ['scratch-1', 'mobilenet/extract-1', 'finetune-1'])
    assert.ok(html.includes(`data-run="${name}"`), name);
});

test('inline data that happens to spell "http" in base64 is split, and still decodes to the same bytes', async () => {
  const { dataUri, esc } = await import('../../packages/report/src/html.js');
  const bytes = Buffer.concat([Buffer.from('xHTTPy'), Buffer.from('AAAAhttpAAAAHtTpAAAA', 'base64')]);
  assert.match(bytes.toString('base64'), /http/i);
  const uri = dataUri('application/octet-stream', bytes);
  assert.doesNotMatch(uri, /http/i);
  // WHATWG URL parsing drops line breaks before the data: URL's base64 is decoded (browsers and Node's fetch alike).
  assert.deepEqual(Buffer.from(await (await fetch(uri)).arrayBuffer()), bytes);
  assert.equal(esc('see https://x and HTTP'), 'see h&#116;tps://x and H&#84;TP');
});
