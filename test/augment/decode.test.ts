// Decoding and the squash resize on real Kaggle JPEGs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import jpegTurbo from '@julusian/jpeg-turbo';
import {
  applyAffine,
  decodeForSampling,
  decodeResized,
  endsWithEoi,
  IDENTITY_PARAMS,
  jpegSize,
  resizeNearest,
  transformMatrix,
} from '@catdog/augment';
import { kaggleTrainDir } from '../helpers/fixtures.js';

test('resizeNearest uses PIL’s mapping ⌊(i + ½)·H/h⌋', () => {
  const src = new Uint8Array(4 * 6 * 3);
  for (let r = 0; r < 4; r++) for (let c = 0; c < 6; c++) src.fill(10 * r + c, (r * 6 + c) * 3, (r * 6 + c) * 3 + 3);
  const out = resizeNearest(src, 4, 6, 2, 3);
  assert.deepEqual(Array.from(out.filter((_, i) => i % 3 === 0)), [11, 13, 15, 31, 33, 35]);
  const up = resizeNearest(src, 4, 6, 8, 6); // 2× taller: each row twice
  assert.deepEqual(Array.from(up.filter((_, i) => i % 18 === 0)), [0, 0, 10, 10, 20, 20, 30, 30]);
});

test('jpegSize reads the SOF header like libvips; non-JPEG bytes give null', async () => {
  for (const name of ['cat.0.jpg', 'cat.3.jpg', 'dog.11.jpg', 'dog.2999.jpg']) {
    const bytes = readFileSync(join(kaggleTrainDir, name));
    const meta = await sharp(bytes).metadata();
    assert.deepEqual(jpegSize(bytes), { width: meta.width, height: meta.height }, name);
  }
  assert.equal(jpegSize(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0, 0, 0, 0])), null);
  assert.equal(jpegSize(new Uint8Array([0xff, 0xd8, 0x12, 0x34])), null);
});

test('decodeResized: real photo squashed to 150×150, equal to the nearest resize of the full decode', async () => {
  const bytes = readFileSync(join(kaggleTrainDir, 'cat.3.jpg'));
  const out = await decodeResized(bytes, { height: 150, width: 150 });
  assert.equal(out.length, 150 * 150 * 3);
  // The fast JPEG decoder's (TurboJPEG's) full decode, nearest-resized, exactly
  const full = jpegTurbo.decompressSync(bytes, { format: jpegTurbo.FORMAT_RGB }).data;
  const size = jpegSize(bytes)!;
  assert.deepEqual(Buffer.from(out), Buffer.from(resizeNearest(full, size.height, size.width, 150, 150)));
  // 'exact' is sharp's decode (libjpeg's accurate IDCT: PIL's pixels), nearest-resized, exactly
  const { data, info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
  const viaSharp = resizeNearest(data, info.height, info.width, 150, 150);
  assert.deepEqual(
    Buffer.from(
      await decodeResized(bytes, { height: 150, width: 150, interpolation: 'nearest', jpegDecoder: 'exact' }),
    ),
    Buffer.from(viaSharp),
  );
  // and 'fast' (the fast integer IDCT) stays within a few levels of it
  let max = 0;
  let sum = 0;
  for (let i = 0; i < out.length; i++) {
    const d = Math.abs(out[i] - viaSharp[i]);
    max = Math.max(max, d);
    sum += d;
  }
  assert.ok(max >= 1 && max <= 8 && sum / out.length < 2, `max ${max}, mean ${sum / out.length}`);
  // non-square target: squashed, not cropped
  assert.equal((await decodeResized(bytes, { height: 40, width: 90 })).length, 40 * 90 * 3);
  // bilinear and the shrink-on-load path (a JPEG ≥ 4× the target) give the right size and a similar picture
  const big = await sharp(bytes).resize(1200, 1000, { fit: 'fill' }).jpeg().toBuffer();
  const fromBig = await decodeResized(big, { height: 150, width: 150 });
  const bilinear = await decodeResized(bytes, { height: 150, width: 150, interpolation: 'bilinear' });
  const meanDiff = (a: Uint8Array) => a.reduce((s, v, i) => s + Math.abs(v - out[i]), 0) / a.length;
  assert.ok(meanDiff(fromBig) < 20 && meanDiff(bilinear) < 20, `${meanDiff(fromBig)} ${meanDiff(bilinear)}`);
  // greyscale and RGBA inputs come out as 3 channels
  const grey = await sharp(Buffer.alloc(30 * 20, 77), { raw: { width: 30, height: 20, channels: 1 } })
    .jpeg()
    .toBuffer();
  assert.deepEqual(Array.from((await decodeResized(grey, { height: 10, width: 10 })).subarray(0, 3)), [77, 77, 77]);
  const rgba = await sharp(Buffer.alloc(30 * 20 * 4, 200), { raw: { width: 30, height: 20, channels: 4 } })
    .png()
    .toBuffer();
  assert.equal((await decodeResized(rgba, { height: 10, width: 10 })).length, 300);
  await assert.rejects(decodeResized(bytes.subarray(0, 2000), { height: 150, width: 150 }), /premature end/i);
  // Truncated just before the end-of-image marker: still an error, never a grey-filled picture
  await assert.rejects(decodeResized(bytes.subarray(0, bytes.length - 2), { height: 150, width: 150 }));
  // Bytes after the end-of-image marker (zero padding, or an appended trailer) still decode, to the same picture
  const padded = Buffer.concat([bytes, Buffer.alloc(64)]);
  assert.deepEqual(Buffer.from(await decodeResized(padded, { height: 150, width: 150 })), Buffer.from(out));
  const trailer = Buffer.concat([bytes, Buffer.from('TRAILER-DATA')]);
  assert.equal((await decodeResized(trailer, { height: 150, width: 150 })).length, 150 * 150 * 3);
});

test('decodeResized at the image’s own size returns its own pixels, not the decoder’s reused buffer', async () => {
  const a = await sharp(readFileSync(join(kaggleTrainDir, 'cat.5.jpg')))
    .resize(150, 150, { fit: 'fill' })
    .jpeg()
    .toBuffer();
  const b = await sharp(readFileSync(join(kaggleTrainDir, 'dog.5.jpg')))
    .resize(150, 150, { fit: 'fill' })
    .jpeg()
    .toBuffer();
  const first = await decodeResized(a, { height: 150, width: 150 });
  const copy = Buffer.from(first);
  const second = await decodeResized(b, { height: 150, width: 150 });
  assert.notDeepEqual(Buffer.from(second), copy);
  assert.deepEqual(Buffer.from(first), copy, 'decoding the next image changed the first result');
});

test('endsWithEoi: the fast path takes only JPEGs whose last marker is end-of-image', () => {
  const bytes = readFileSync(join(kaggleTrainDir, 'dog.7.jpg'));
  assert.equal(endsWithEoi(bytes), true);
  assert.equal(endsWithEoi(Buffer.concat([bytes, Buffer.alloc(10)])), true);
  assert.equal(endsWithEoi(bytes.subarray(0, bytes.length - 1)), false);
  assert.equal(endsWithEoi(bytes.subarray(0, 5000)), false);
  assert.equal(endsWithEoi(Buffer.alloc(0)), false);
});

test('the affine sampling a full-size decode through nearestLayout equals resizing first, bit for bit, for every fill mode', async () => {
  const bytes = readFileSync(join(kaggleTrainDir, 'dog.12.jpg'));
  const { pixels, layout } = await decodeForSampling(bytes, { height: 150, width: 120 });
  assert.ok(layout, 'a Kaggle JPEG takes the fast path');
  const resized = await decodeResized(bytes, { height: 150, width: 120 });
  for (const fillMode of ['nearest', 'constant', 'reflect', 'wrap'] as const) {
    for (const params of [
      { ...IDENTITY_PARAMS },
      { ...IDENTITY_PARAMS, theta: 33, tx: 17.3, ty: -40.2, shear: 12, zx: 0.85, zy: 1.17, flipHorizontal: true },
      { ...IDENTITY_PARAMS, tx: 7, ty: -3 }, // whole-pixel shift: the copy path
    ]) {
      const m = transformMatrix(params, 150, 120);
      const out = { rescale: 1 / 255, flipHorizontal: params.flipHorizontal };
      const viaTables = applyAffine({ pixels, height: 150, width: 120, layout }, m, {
        fillMode,
        cval: 9,
        output: { data: new Float32Array(150 * 120 * 3), ...out },
      });
      const viaResize = applyAffine({ pixels: resized, height: 150, width: 120 }, m, {
        fillMode,
        cval: 9,
        output: { data: new Float32Array(150 * 120 * 3), ...out },
      });
      assert.deepEqual(
        Buffer.from(viaTables.buffer),
        Buffer.from(viaResize.buffer),
        `${fillMode} ${JSON.stringify(params)}`,
      );
    }
  }
  // Non-JPEG input: resized pixels, no tables
  const png = await sharp(bytes).png().toBuffer();
  assert.equal((await decodeForSampling(png, { height: 150, width: 120 })).layout, undefined);
});
