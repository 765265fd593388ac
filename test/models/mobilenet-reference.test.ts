// MobileNetV2 0.35 against an implementation that is not ours: torchvision's MobileNetV2 with the same shared
// ImageNet weights, Keras' correct_pad (asymmetric stride-2 padding) and BatchNorm epsilon reproduced, run by
// tools/fixtures/mobilenet_v2_torch_reference.py into test/fixtures/mobilenet_v2_0.35_reference.json. The fixture
// holds the input pixels too, so no resize implementation is involved: only our topology rebuild, padding, weight
// loading, input scaling and the wasm kernels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@catdog/backend';
import { inputScaling, loadMobileNetV2Base } from '@catdog/models';
import { mobilenetV2Dir, projectRoot } from '../helpers/fixtures.js';

await initBackend({ backend: 'wasm' });

interface ReferenceImage {
  source: string;
  size: number;
  pixels: string;
  outputShape: [number, number, number];
  pooled: number[];
  sampleIndices: number[];
  samples: number[];
}
const fixture = JSON.parse(
  readFileSync(join(projectRoot, 'test', 'fixtures', 'mobilenet_v2_0.35_reference.json'), 'utf8'),
) as { images: ReferenceImage[] };

/** Largest |ours − reference| relative to the reference's largest magnitude (ReLU6 outputs: many are 0). */
function relativeError(ours: ArrayLike<number>, reference: number[]): number {
  const scale = Math.max(...reference.map(Math.abs));
  let worst = 0;
  reference.forEach((r, i) => {
    worst = Math.max(worst, Math.abs(ours[i] - r) / scale);
  });
  return worst;
}

/** Our base's out_relu for the fixture's pixels (optionally shifted right by one column: the control). */
async function ours(img: ReferenceImage, shift = 0): Promise<{ shape: number[]; flat: Float32Array }> {
  const base = await loadMobileNetV2Base({
    alpha: 0.35,
    from: mobilenetV2Dir('0.35'),
    inputShape: [img.size, img.size, 3],
  });
  const scaling = inputScaling('mobilenet_v2_0.35');
  const pixels = Buffer.from(img.pixels, 'base64');
  assert.equal(pixels.length, img.size * img.size * 3);
  const y = tf.tidy(() => {
    let x = tf.tensor4d(new Uint8Array(pixels), [1, img.size, img.size, 3], 'int32').toFloat();
    if (shift)
      x = tf.concat(
        [x.slice([0, 0, 0, 0], [1, img.size, shift, 3]), x.slice([0, 0, 0, 0], [1, img.size, img.size - shift, 3])],
        2,
      );
    return base.predict(x.mul(scaling.scale).add(scaling.offset)) as tf.Tensor;
  });
  const flat = y.dataSync() as Float32Array;
  const shape = y.shape.slice(1);
  tf.dispose([y, ...base.getWeights()]);
  return { shape, flat };
}

function pooled(flat: Float32Array, shape: number[]): number[] {
  const [h, w, c] = shape;
  const out = new Array<number>(c).fill(0);
  for (let i = 0; i < h * w; i++) for (let k = 0; k < c; k++) out[k] += flat[i * c + k];
  return out.map((v) => v / (h * w));
}

for (const img of fixture.images) {
  test(`MobileNetV2 0.35 at ${img.size}×${img.size} (${img.source}) equals torchvision's with the same weights to 1e-4`, async () => {
    const { shape, flat } = await ours(img);
    assert.deepEqual(shape, img.outputShape);
    const samples = img.sampleIndices.map((i) => flat[i]);
    const eSamples = relativeError(samples, img.samples);
    const ePooled = relativeError(pooled(flat, shape), img.pooled);
    if (process.env.CATDOG_TEST_VERBOSE) console.log(`relative error: samples ${eSamples}, pooled ${ePooled}`);
    assert.ok(eSamples < 1e-4, `out_relu samples: relative error ${eSamples}`);
    assert.ok(ePooled < 1e-4, `pooled features: relative error ${ePooled}`);
  });
}

test('the comparison tells a one-pixel shift apart (the tolerance is not loose)', async () => {
  const img = fixture.images[0];
  const { shape, flat } = await ours(img, 1);
  const e = relativeError(pooled(flat, shape), img.pooled);
  assert.ok(e > 1e-2, `a one-pixel shift moves the pooled features by ${e} only`);
});
