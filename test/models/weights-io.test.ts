// VGG16's cached ImageNet download (against a loopback HTTP server, and offline), tfjs folders on disk and S3.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import * as tf from '@tensorflow/tfjs';
import { openStorage } from '@catdog/storage';
import { kerasH5Dir, mobilenetV2Dir } from '../helpers/fixtures.js';
import { startLoopbackS3 } from '../helpers/s3-server.js';
import {
  ensureVgg16ImagenetWeights,
  buildVgg16Base,
  buildConvnet,
  loadLayersModelFrom,
  saveLayersModelTo,
  loadMobileNetV2Base,
  VGG16_NOTOP_WEIGHTS,
  readKerasH5Weights,
} from '@catdog/models';

await tf.setBackend('cpu');
const fixture = join(kerasH5Dir, 'mobilenet_2_5_224_tf_no_top.h5');

async function serve(body: Buffer): Promise<{ url: string; server: Server; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/${VGG16_NOTOP_WEIGHTS.fileName}`, server, hits: () => hits };
}

/** A port nothing listens on: fetch fails at once with ECONNREFUSED. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

test('ensureVgg16ImagenetWeights downloads once with progress, verifies the checksum, then reuses the cache', async () => {
  const body = await readFile(fixture);
  const md5 = createHash('md5').update(body).digest('hex');
  const sha256 = createHash('sha256').update(body).digest('hex');
  const { url, server, hits } = await serve(body);
  const cacheDir = await mkdtemp(join(tmpdir(), 'catdog-cache-'));
  try {
    const progress: number[] = [];
    const path = await ensureVgg16ImagenetWeights({
      cacheDir,
      url,
      hash: md5,
      onProgress: (p) => {
        progress.push(p.receivedBytes);
        assert.equal(p.totalBytes, body.length);
      },
    });
    assert.equal(path, join(cacheDir, VGG16_NOTOP_WEIGHTS.fileName));
    assert.deepEqual(await readFile(path), body);
    assert.equal(progress.at(-1), body.length);
    assert.deepEqual(await readdir(cacheDir), [VGG16_NOTOP_WEIGHTS.fileName]);
    // Cached: no second request (SHA-256 accepted too, as Keras' get_file).
    assert.equal(await ensureVgg16ImagenetWeights({ cacheDir, url, hash: sha256 }), path);
    assert.equal(hits(), 1);
    // Keras files straight from http(s):// too.
    const remote = await readKerasH5Weights(url);
    assert.equal(remote.layers.size, 54);
    assert.equal(hits(), 2);
  } finally {
    server.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('a download with the wrong checksum is rejected and nothing is left in the cache', async () => {
  const { url, server } = await serve(await readFile(fixture));
  const cacheDir = await mkdtemp(join(tmpdir(), 'catdog-cache-'));
  try {
    await assert.rejects(ensureVgg16ImagenetWeights({ cacheDir, url }), (err: Error) => {
      assert.equal(err.name, 'UserError');
      assert.match(err.message, /MD5 is [0-9a-f]{32}, expected 6d6bbae143d832006294945121d1f1fc/);
      assert.match(err.message, /nothing was cached/);
      return true;
    });
    assert.deepEqual(await readdir(cacheDir), []);
  } finally {
    server.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('offline: a clear message saying where to put the file or to pass --weights, fast', async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'catdog-cache-'));
  const url = `http://127.0.0.1:${await deadPort()}/vgg16.h5`;
  const saved = process.env.CATDOG_VGG16_WEIGHTS_URL;
  process.env.CATDOG_VGG16_WEIGHTS_URL = url; // what a CLI test would set
  const started = Date.now();
  try {
    await assert.rejects(buildVgg16Base({ weights: 'imagenet', cacheDir, inputShape: [32, 32, 3] }), (err: Error) => {
      assert.equal(err.name, 'UserError');
      assert.ok(
        err.message.includes(`cannot download ${VGG16_NOTOP_WEIGHTS.fileName} from ${url} (ECONNREFUSED)`),
        err.message,
      );
      assert.ok(err.message.includes(`copy it to ${join(cacheDir, VGG16_NOTOP_WEIGHTS.fileName)}`), err.message);
      assert.match(err.message, /pass --weights <file\.h5>/);
      return true;
    });
    // No retries with backoff on a refused connection: a generous bound (VGG16 is built first, on a busy machine).
    assert.ok(Date.now() - started < 60_000, `took ${Date.now() - started} ms`);
    assert.deepEqual(await readdir(cacheDir), []);
    // A wrong file already in the cache is named as such.
    await writeFile(join(cacheDir, VGG16_NOTOP_WEIGHTS.fileName), 'not the weights');
    await assert.rejects(
      ensureVgg16ImagenetWeights({ cacheDir }),
      /the file already at .* has MD5 [0-9a-f]{32}, expected 6d6bbae143d832006294945121d1f1fc/,
    );
  } finally {
    if (saved === undefined) delete process.env.CATDOG_VGG16_WEIGHTS_URL;
    else process.env.CATDOG_VGG16_WEIGHTS_URL = saved;
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('VGG16 weights from a Keras .h5 that is not VGG16 fail naming the missing layers', async () => {
  await assert.rejects(
    buildVgg16Base({ weights: fixture, inputShape: [32, 32, 3] }),
    /13 model layer\(s\) have no weights in the file: block1_conv1, block1_conv2/,
  );
});

test('tfjs folders: save and load back, locally and on S3; VGG16 from a saved folder at another size', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'catdog-models-'));
  const s3 = await startLoopbackS3(['models']);
  try {
    const model = buildConvnet({ inputShape: [64, 64, 3], dropout: 0.5 });
    const x = tf.randomUniform([2, 64, 64, 3], 0, 1, 'float32', 3);
    const expected = Array.from((model.predict(x) as tf.Tensor).dataSync());
    await saveLayersModelTo(model, join(dir, 'convnet'));
    assert.deepEqual((await readdir(join(dir, 'convnet'))).sort(), ['model.json', 'weights.bin']);
    const json = JSON.parse(await readFile(join(dir, 'convnet', 'model.json'), 'utf8'));
    assert.equal(json.format, 'layers-model');
    assert.equal((await stat(join(dir, 'convnet', 'weights.bin'))).size, model.countParams() * 4);
    const local = await loadLayersModelFrom(join(dir, 'convnet'));
    assert.deepEqual(Array.from((local.predict(x) as tf.Tensor).dataSync()), expected);
    assert.deepEqual(
      local.layers.map((l) => l.name),
      model.layers.map((l) => l.name),
    );
    await saveLayersModelTo(model, 's3://models/runs/r1/model');
    const remote = await loadLayersModelFrom('s3://models/runs/r1/model/model.json');
    assert.deepEqual(Array.from((remote.predict(x) as tf.Tensor).dataSync()), expected);
    // The shared MobileNetV2 folder copied to S3 loads the same as from disk.
    const store = openStorage('s3://models/mobilenet_v2_0.35_224');
    for (const f of ['model.json', 'weights.bin'])
      await store.write(f, await readFile(join(mobilenetV2Dir('0.35'), f)));
    const fromS3 = await loadMobileNetV2Base({
      alpha: 0.35,
      from: 's3://models/mobilenet_v2_0.35_224',
      inputShape: [64, 64, 3],
    });
    assert.equal(fromS3.countParams(), 410208);
    assert.deepEqual(fromS3.outputs[0].shape, [null, 2, 2, 1280]);
    // A VGG16 base saved at 32×32 seeds one built at 48×48, layer by layer.
    const small = await buildVgg16Base({ inputShape: [32, 32, 3] });
    await saveLayersModelTo(small, join(dir, 'vgg16'));
    const bigger = await buildVgg16Base({ inputShape: [48, 48, 3], weights: join(dir, 'vgg16') });
    assert.deepEqual(
      Array.from(bigger.getLayer('block5_conv3').getWeights()[1].dataSync()),
      Array.from(small.getLayer('block5_conv3').getWeights()[1].dataSync()),
    );
    assert.deepEqual(
      Array.from(bigger.getLayer('block1_conv1').getWeights()[0].dataSync().slice(0, 8)),
      Array.from(small.getLayer('block1_conv1').getWeights()[0].dataSync().slice(0, 8)),
    );
    await assert.rejects(loadLayersModelFrom(join(dir, 'nothing')), /nothing\/model\.json: no tfjs model here/);
  } finally {
    await s3.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
