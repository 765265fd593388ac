// apps/web in Debian's headless Chromium: the site as `nx run web:build` writes it, an exported model beside it,
// served from 127.0.0.1; a real photo picked with the file input is classified in the browser with the same class
// and probability (1e-3) as the exported model in Node, with a Grad-CAM heatmap equal to Node's, on WebGL and on the
// WebAssembly fallback; nothing is fetched from another origin, nothing is logged as an error, and once loaded the
// app works with the server gone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import {
  classifyPhoto,
  decodePhoto,
  exportModel,
  gradCam,
  loadExportedModel,
  loadLayersModelFrom,
} from '@catdog/models';
import { projectRoot } from '../helpers/fixtures.js';
import { CLASSES, photo, trainSmallModel } from '../models/trained-mobilenet.js';

const CHROMIUM = '/usr/bin/chromium';
const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.bin': 'application/octet-stream',
};

await initBackend({ backend: 'wasm', log: () => {} });

let dir: string;
let site: string;
let server: Server;
let origin: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'web-'));
  // The verification contract: `npx nx run web:build` writes the static site to dist/apps/web.
  const build = spawnSync('npx', ['nx', 'run', 'web:build'], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  assert.equal(build.status, 0, build.stdout + build.stderr);
  assert.ok(existsSync(join(projectRoot, 'dist/apps/web/index.html')), 'dist/apps/web/index.html');
  // Any static server will do: copy the site and put an exported model beside it (./model/).
  site = join(dir, 'site');
  await cp(join(projectRoot, 'dist/apps/web'), site, { recursive: true });
  const modelDir = await trainSmallModel(dir, 10);
  await exportModel({ model: modelDir, out: join(site, 'model'), classes: CLASSES, inputScaling: 'symmetric' });
  // A three-class model beside it (./three/): the same network with a seeded Dense(3, softmax) on its hidden layer.
  const trained = await loadLayersModelFrom(modelDir);
  const softmax = tf.layers
    .dense({
      units: 3,
      activation: 'softmax',
      name: 'dense_3',
      kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }),
    })
    .apply(trained.getLayer('dense_1').output) as tf.SymbolicTensor;
  const three = tf.model({ inputs: trained.inputs, outputs: softmax, name: 'three_classes' });
  await exportModel({ model: three, out: join(site, 'three'), classes: THREE, inputScaling: 'symmetric' });
  trained.dispose();
  server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url!, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    try {
      const body = await readFile(join(site, path.endsWith('/') ? `${path}index.html` : path));
      res.writeHead(200, { 'content-type': TYPES[extname(path) || '.html'] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(async () => {
  server?.closeAllConnections();
  server?.close();
  await rm(dir, { recursive: true, force: true });
});

const THREE = ['cat', 'dog', 'fox'];

const launch = () =>
  chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });

// Before the test below, which stops the server to show the app works offline.
test('a three-class model: every class with its probability as in Node, the heatmap of the predicted class', async (t) => {
  if (!existsSync(CHROMIUM)) {
    const message = `${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run this test`;
    if (process.env.CATDOG_REQUIRE_BROWSER === '1') assert.fail(message);
    t.skip(message);
    return;
  }
  const file = photo('cat.1004.jpg');
  const { model, labels } = await loadExportedModel(join(site, 'three'));
  assert.deepEqual([labels.classes, labels.activation], [THREE, 'softmax']);
  const expected = await classifyPhoto(model, labels, file);
  const pixels = await decodePhoto(file);
  const cam = gradCam(model, pixels, { layer: labels.lastConvLayer!, classIndex: expected.classIndex });
  tf.dispose(pixels);
  model.dispose();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    await page.goto(`${origin}/?model=./three/`);
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', (await page.textContent('#status')) ?? '');
    await page.setInputFiles('#file', file);
    await page.waitForSelector('body[data-state="classified"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('#result', 'data-class'), expected.className);
    const rows = await page.$$eval('#probabilities tr', (trs) =>
      trs.map((tr) => [(tr as HTMLElement).dataset.class, Number((tr as HTMLElement).dataset.probability)]),
    );
    assert.deepEqual(
      rows.map((r) => r[0]),
      THREE,
    );
    rows.forEach(([name, p], i) =>
      assert.ok(
        Math.abs((p as number) - expected.probabilities[i]!) < 1e-3,
        `${name}: browser ${p} vs Node ${expected.probabilities[i]}`,
      ),
    );
    const heatmap = JSON.parse((await page.getAttribute('#heatmap', 'data-values')) ?? '[]') as number[];
    assert.equal(heatmap.length, cam.heatmap.length);
    for (const [i, v] of heatmap.entries())
      assert.ok(Math.abs(v - cam.heatmap[i]!) < 0.02, `heatmap[${i}]: browser ${v} vs Node ${cam.heatmap[i]}`);
    assert.match((await page.textContent('#cam-layer')) ?? '', new RegExp(`for “${expected.className}”`));
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('a picked photo is classified in Chromium as in Node, with a Grad-CAM heatmap, offline once loaded', async (t) => {
  if (!existsSync(CHROMIUM)) {
    const message = `${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run this test`;
    if (process.env.CATDOG_REQUIRE_BROWSER === '1') assert.fail(message);
    t.skip(message);
    return;
  }
  const file = photo('dog.1004.jpg');
  // Node: the exported model on the same file (decoded by sharp, resized and scaled inside the model).
  const { model, labels } = await loadExportedModel(join(site, 'model'));
  const expected = await classifyPhoto(model, labels, file);
  const pixels = await decodePhoto(file);
  const expectedCam = gradCam(model, pixels, { layer: labels.lastConvLayer!, classIndex: expected.classIndex });
  tf.dispose(pixels);
  model.dispose();

  const browser: Browser = await chromium.launch({
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
    const foreign: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    page.on('request', (r) => {
      if (!r.url().startsWith(`${origin}/`) && !r.url().startsWith('data:') && !r.url().startsWith('blob:'))
        foreign.push(r.url());
    });
    await page.goto(`${origin}/`);
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', (await page.textContent('#status')) ?? '');
    const backend = await page.getAttribute('body', 'data-backend');
    assert.ok(backend === 'webgl' || backend === 'wasm', `backend ${backend}`);
    t.diagnostic(`backend: ${backend}`);

    /** Picks the photo with the file input, or drops it on the drop zone as a user dragging a file would. */
    const classifyInPage = async (how: 'pick' | 'drop' = 'pick') => {
      await page.evaluate(() => delete document.body.dataset.state);
      if (how === 'pick') await page.setInputFiles('#file', file);
      else {
        const bytes = (await readFile(file)).toString('base64');
        const dataTransfer = await page.evaluateHandle((b64) => {
          const dt = new DataTransfer();
          const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          dt.items.add(new File([data], 'dropped.jpg', { type: 'image/jpeg' }));
          return dt;
        }, bytes);
        await page.dispatchEvent('#drop', 'drop', { dataTransfer });
      }
      await page.waitForSelector('body[data-state="classified"]', { timeout: 30_000 });
      return {
        className: await page.getAttribute('#result', 'data-class'),
        probability: Number(await page.getAttribute('#result', 'data-probability')),
        heatmap: JSON.parse((await page.getAttribute('#heatmap', 'data-values')) ?? '[]') as number[],
        text: (await page.textContent('#result')) ?? '',
      };
    };
    const shown = await classifyInPage();
    assert.equal(shown.className, expected.className);
    assert.ok(
      Math.abs(shown.probability - expected.probability) < 1e-3,
      `browser ${shown.probability} vs Node ${expected.probability} (${backend})`,
    );
    assert.match(shown.text, new RegExp(`^${expected.className} \\d+\\.\\d%$`));
    // The heatmap: the same Grad-CAM as Node's, drawn over the photo.
    assert.equal(shown.heatmap.length, expectedCam.heatmap.length);
    for (const [i, v] of shown.heatmap.entries()) {
      assert.ok(
        Math.abs(v - expectedCam.heatmap[i]!) < 0.02,
        `heatmap[${i}]: browser ${v} vs Node ${expectedCam.heatmap[i]}`,
      );
    }
    assert.equal(Math.max(...shown.heatmap), 1);
    const drawn = await page.$eval('#heatmap', (c) => {
      const canvas = c as HTMLCanvasElement;
      const d = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      let red = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i]! > 200 && d[i + 2]! < 80) red++;
      return { width: canvas.width, height: canvas.height, red, hidden: canvas.hidden };
    });
    const size = await sharp(file).metadata();
    assert.deepEqual(
      [drawn.width, drawn.height, drawn.hidden],
      [size.width, size.height, false],
      'the heatmap covers the photo',
    );
    assert.ok(drawn.red > 0, 'the hottest region is drawn red');
    const rows = await page.$$eval('#probabilities tr', (trs) =>
      trs.map((tr) => [(tr as HTMLElement).dataset.class, Number((tr as HTMLElement).dataset.probability)]),
    );
    assert.deepEqual(
      rows.map((r) => r[0]),
      CLASSES,
    );
    assert.ok(Math.abs((rows[1]![1] as number) - expected.probabilities[1]!) < 1e-3);

    // Not an image: a clear message in the page, the previous result kept, nothing thrown.
    const notImage = join(dir, 'notes.txt');
    await writeFile(notImage, 'not a photo');
    await page.setInputFiles('#file', notImage);
    await page.waitForSelector('#status.error');
    assert.match((await page.textContent('#status')) ?? '', /notes\.txt: not an image this browser can decode/);
    assert.equal(await page.getAttribute('#result', 'data-class'), expected.className);

    // The WebAssembly fallback (for browsers without WebGL): the same answers, with the .wasm binaries from this origin.
    await page.goto(`${origin}/?backend=wasm`);
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', (await page.textContent('#status')) ?? '');
    assert.equal(await page.getAttribute('body', 'data-backend'), 'wasm');
    const viaWasm = await classifyInPage('drop');
    assert.equal(viaWasm.className, expected.className);
    assert.ok(
      Math.abs(viaWasm.probability - expected.probability) < 1e-3,
      `wasm ${viaWasm.probability} vs Node ${expected.probability}`,
    );
    for (const [i, v] of viaWasm.heatmap.entries())
      assert.ok(Math.abs(v - expectedCam.heatmap[i]!) < 0.02, `wasm heatmap[${i}]: ${v} vs ${expectedCam.heatmap[i]}`);

    // Offline: once the service worker kept the site and the model, the app works with the server gone.
    await page.waitForSelector('body[data-offline="ready"]', { timeout: 15_000 });
    server.closeAllConnections();
    await new Promise<void>((ok) => server.close(() => ok()));
    await page.reload();
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', (await page.textContent('#status')) ?? '');
    const offline = await classifyInPage();
    assert.equal(await page.getAttribute('body', 'data-backend'), 'wasm', 'the .wasm binaries came from the cache too');
    assert.equal(offline.className, viaWasm.className);
    assert.equal(offline.probability, viaWasm.probability);

    assert.deepEqual(foreign, [], 'no request leaves the page origin');
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});
