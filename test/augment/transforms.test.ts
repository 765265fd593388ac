// The transforms against hand-computed expectations (and, where python3 + scipy exist, against scipy itself).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BOOK_AUGMENTATION,
  IDENTITY_PARAMS,
  NO_AUGMENTATION,
  applyAffine,
  applyAffineReference,
  decodeResized,
  epochOrder,
  resolveAugmentOptions,
  sampleRng,
  sampleTransform,
  transformMatrix,
  type FillMode,
  type TransformParams,
} from '@catdog/augment';
import { kaggleTrainDir } from '../helpers/fixtures.js';

/** h×w RGB image whose three channels all hold value(r, c). */
function pattern(h: number, w: number, value: (r: number, c: number) => number): Uint8Array {
  const img = new Uint8Array(h * w * 3);
  for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) img.fill(value(r, c), (r * w + c) * 3, (r * w + c) * 3 + 3);
  return img;
}

/** Channel 0 of an HWC image as rows, after checking all channels agree. */
function rows(img: ArrayLike<number>, h: number, w: number, digits = 4): number[][] {
  const out: number[][] = [];
  for (let r = 0; r < h; r++) {
    const row: number[] = [];
    for (let c = 0; c < w; c++) {
      const p = (r * w + c) * 3;
      assert.equal(img[p], img[p + 1]);
      assert.equal(img[p], img[p + 2]);
      row.push(Number(img[p].toFixed(digits)));
    }
    out.push(row);
  }
  return out;
}

const params = (p: Partial<TransformParams>): TransformParams => ({ ...IDENTITY_PARAMS, ...p });

test('90° rotation of a 4×4 pattern about Keras’ centre (h/2 + 0.5, w/2 + 0.5)', () => {
  const src = pattern(4, 4, (r, c) => r * 4 + c);
  const m = transformMatrix(params({ theta: 90 }), 4, 4);
  // Output (r, c) samples input (5 - c, r): rotation about (2.5, 2.5), rows beyond 3 clamped by 'nearest'.
  assert.deepEqual(rows(applyAffine({ pixels: src, height: 4, width: 4 }, m, { fillMode: 'nearest' }), 4, 4), [
    [12, 12, 12, 8],
    [13, 13, 13, 9],
    [14, 14, 14, 10],
    [15, 15, 15, 11],
  ]);
});

test('a shift of k pixels: tx moves along rows, ty along columns, constant fill outside', () => {
  const src = pattern(4, 4, (r, c) => 10 * r + c + 1);
  const m = transformMatrix(params({ tx: 1, ty: 2 }), 4, 4);
  assert.deepEqual(Array.from(m), [1, 0, 1, 0, 1, 2]);
  // Output (r, c) = input (r + 1, c + 2): content moves up one row and left two columns.
  assert.deepEqual(
    rows(applyAffine({ pixels: src, height: 4, width: 4 }, m, { fillMode: 'constant', cval: 99 }), 4, 4),
    [
      [13, 14, 99, 99],
      [23, 24, 99, 99],
      [33, 34, 99, 99],
      [99, 99, 99, 99],
    ],
  );
});

test('each fill mode at the borders, with scipy’s conventions', () => {
  const src = pattern(3, 4, (_r, c) => 10 * (c + 1)); // every row: 10 20 30 40
  const row0 = (ty: number, mode: FillMode) =>
    rows(
      applyAffine({ pixels: src, height: 3, width: 4 }, transformMatrix(params({ ty }), 3, 4), {
        fillMode: mode,
        cval: 7,
      }),
      3,
      4,
    )[0];
  // whole-pixel shift right by 2: output column c reads input column c - 2
  assert.deepEqual(row0(-2, 'constant'), [7, 7, 10, 20]);
  assert.deepEqual(row0(-2, 'nearest'), [10, 10, 10, 20]);
  assert.deepEqual(row0(-2, 'reflect'), [20, 10, 10, 20]); // half-sample symmetric: b a | a b c d
  assert.deepEqual(row0(-2, 'wrap'), [20, 30, 10, 20]); // scipy 'wrap' has period n - 1: b c | a b c d
  // half-pixel shifts: interpolation next to the edges
  assert.deepEqual(row0(-0.5, 'constant'), [7, 15, 25, 35]); // no interpolation with cval beyond the edge
  assert.deepEqual(row0(-0.5, 'nearest'), [10, 15, 25, 35]);
  assert.deepEqual(row0(-0.5, 'reflect'), [10, 15, 25, 35]);
  assert.deepEqual(row0(-0.5, 'wrap'), [35, 15, 25, 35]);
  assert.deepEqual(row0(1.5, 'constant'), [25, 35, 7, 7]);
  assert.deepEqual(row0(1.5, 'nearest'), [25, 35, 40, 40]);
  assert.deepEqual(row0(1.5, 'reflect'), [25, 35, 40, 35]);
  assert.deepEqual(row0(1.5, 'wrap'), [25, 35, 15, 25]);
});

test('flips are applied after the affine, into the output', () => {
  const src = pattern(2, 3, (r, c) => 10 * r + c);
  const id = transformMatrix(IDENTITY_PARAMS, 2, 3);
  assert.deepEqual(
    rows(
      applyAffine({ pixels: src, height: 2, width: 3 }, id, {
        fillMode: 'nearest',
        output: { data: new Float32Array(18), flipHorizontal: true },
      }),
      2,
      3,
    ),
    [
      [2, 1, 0],
      [12, 11, 10],
    ],
  );
  assert.deepEqual(
    rows(
      applyAffine({ pixels: src, height: 2, width: 3 }, id, {
        fillMode: 'nearest',
        output: { data: new Float32Array(18), flipVertical: true },
      }),
      2,
      3,
    ),
    [
      [10, 11, 12],
      [0, 1, 2],
    ],
  );
  // flip of a shifted image: shift first (content left by one, nearest fill), then mirror
  const shifted = applyAffine({ pixels: src, height: 2, width: 3 }, transformMatrix(params({ ty: 1 }), 2, 3), {
    fillMode: 'nearest',
    output: { data: new Float32Array(18), flipHorizontal: true },
  });
  assert.deepEqual(rows(shifted, 2, 3), [
    [2, 2, 1],
    [12, 12, 11],
  ]);
});

test('zoom and shear matrices follow Keras’ composition about the centre', () => {
  const z = transformMatrix(params({ zx: 2, zy: 0.5 }), 4, 6);
  // in_r = 2 (r - 2.5) + 2.5, in_c = 0.5 (c - 3.5) + 3.5
  assert.deepEqual(Array.from(z), [2, 0, -2.5, 0, 0.5, 1.75]);
  const s = transformMatrix(params({ shear: 30 }), 4, 4);
  // shear matrix [[1, -sin s], [0, cos s]]
  assert.ok(
    Math.abs(s[0] - 1) < 1e-12 &&
      Math.abs(s[1] + 0.5) < 1e-12 &&
      s[3] === 0 &&
      Math.abs(s[4] - Math.cos(Math.PI / 6)) < 1e-12,
  );
  assert.ok(Math.abs(s[2] - 0.5 * 2.5) < 1e-12); // -(-0.5 · 2.5) from recentring
  // rotation · shift · shear · zoom
  const all = transformMatrix(params({ theta: 30, tx: 3, ty: -2, shear: 10, zx: 1.1, zy: 0.9 }), 10, 10);
  const t = Math.PI / 6,
    sh = Math.PI / 18;
  const R = [
    [Math.cos(t), -Math.sin(t)],
    [Math.sin(t), Math.cos(t)],
  ];
  const A = [
    [1.1, -Math.sin(sh) * 0.9],
    [0, Math.cos(sh) * 0.9],
  ];
  const lin = [0, 1].map((i) => [0, 1].map((j) => R[i][0] * A[0][j] + R[i][1] * A[1][j]));
  assert.ok(Math.abs(all[0] - lin[0][0]) < 1e-12 && Math.abs(all[1] - lin[0][1]) < 1e-12);
  assert.ok(Math.abs(all[3] - lin[1][0]) < 1e-12 && Math.abs(all[4] - lin[1][1]) < 1e-12);
  // offset = R·[3, -2] + (I - L)·centre
  const o = 5.5;
  assert.ok(Math.abs(all[2] - (R[0][0] * 3 - R[0][1] * 2 + o - (lin[0][0] + lin[0][1]) * o)) < 1e-9);
});

test('rescale uses float32 arithmetic and uint8 output rounds', () => {
  const src = pattern(2, 2, (r, c) => (r === 0 && c === 0 ? 255 : 3));
  const f = applyAffine({ pixels: src, height: 2, width: 2 }, transformMatrix(IDENTITY_PARAMS, 2, 2), {
    fillMode: 'nearest',
    output: { data: new Float32Array(12), rescale: 1 / 255 },
  });
  assert.equal(f[0], 1);
  assert.equal(f[3], Math.fround(Math.fround(3) * Math.fround(1 / 255)));
  const u = applyAffine({ pixels: src, height: 2, width: 2 }, transformMatrix(params({ ty: 0.5 }), 2, 2), {
    fillMode: 'nearest',
    output: { data: new Uint8Array(12) },
  });
  assert.deepEqual(Array.from(u.filter((_, i) => i % 3 === 0)), [129, 3, 3, 3]); // (255 + 3) / 2 = 129
});

test('sampleTransform: Keras’ ranges, units and independence', () => {
  const n = 3000;
  const draws = Array.from({ length: n }, (_, i) =>
    sampleTransform(BOOK_AUGMENTATION, sampleRng(7, 0, `k${i}`), 100, 50),
  );
  const span = (f: (p: TransformParams) => number) => [Math.min(...draws.map(f)), Math.max(...draws.map(f))];
  const [tmin, tmax] = span((p) => p.theta);
  assert.ok(tmin >= -40 && tmax <= 40 && tmin < -39 && tmax > 39, `theta in ±40°: ${tmin}..${tmax}`);
  const [xmin, xmax] = span((p) => p.tx);
  assert.ok(xmin >= -20 && xmax <= 20 && xmax > 19, `tx = height fraction × 100 rows: ${xmin}..${xmax}`);
  const [ymin, ymax] = span((p) => p.ty);
  assert.ok(ymin >= -10 && ymax <= 10 && ymax > 9.5, `ty = width fraction × 50 columns: ${ymin}..${ymax}`);
  const [smin, smax] = span((p) => p.shear);
  assert.ok(smin >= -0.2 && smax <= 0.2 && smax > 0.19, 'shear in ±0.2 degrees');
  const [zmin, zmax] = span((p) => p.zx);
  assert.ok(zmin >= 0.8 && zmax <= 1.2 && zmin < 0.81 && zmax > 1.19);
  assert.ok(draws.filter((p) => p.zx === p.zy).length === 0, 'zx and zy drawn independently');
  const flips = draws.filter((p) => p.flipHorizontal).length / n;
  assert.ok(flips > 0.45 && flips < 0.55, `horizontal flip p≈0.5: ${flips}`);
  assert.ok(draws.every((p) => !p.flipVertical));
  // integer shift ranges draw whole pixels, both signs, |shift| < range
  const ints = Array.from(
    { length: 500 },
    (_, i) => sampleTransform(resolveAugmentOptions({ widthShiftRange: 3 }), sampleRng(1, 0, `${i}`), 100, 100).ty,
  );
  assert.deepEqual(
    [...new Set(ints)].sort((a, b) => a - b),
    [-2, -1, 0, 1, 2],
  );
  // nothing enabled: identity parameters; zoom [1, 1] draws nothing
  assert.deepEqual(sampleTransform(NO_AUGMENTATION, sampleRng(1, 0, 'x'), 10, 10), IDENTITY_PARAMS);
  // determinism keyed by (seed, epoch, key)
  const a = sampleTransform(BOOK_AUGMENTATION, sampleRng(7, 3, 'cat.1'), 150, 150);
  assert.deepEqual(sampleTransform(BOOK_AUGMENTATION, sampleRng(7, 3, 'cat.1'), 150, 150), a);
  assert.notDeepEqual(sampleTransform(BOOK_AUGMENTATION, sampleRng(7, 4, 'cat.1'), 150, 150), a);
  assert.notDeepEqual(sampleTransform(BOOK_AUGMENTATION, sampleRng(8, 3, 'cat.1'), 150, 150), a);
  assert.throws(() => resolveAugmentOptions({ fillMode: 'mirror' as FillMode }), /fillMode/);
  assert.throws(() => resolveAugmentOptions({ zoomRange: -1 }), /zoomRange/);
});

test('epochOrder: a permutation from (seed, epoch) only, independent of listing order', () => {
  const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
  const o = epochOrder(keys, 5, 0);
  assert.deepEqual(
    [...o].sort((a, b) => a - b),
    keys.map((_, i) => i),
  );
  assert.deepEqual(epochOrder(keys, 5, 0), o);
  assert.notDeepEqual(epochOrder(keys, 5, 1), o);
  const reversed = [...keys].reverse();
  assert.deepEqual(
    epochOrder(reversed, 5, 0).map((i) => reversed[i]),
    o.map((i) => keys[i]),
  );
});

const scipy = spawnSync('python3', ['-c', 'import scipy.ndimage, numpy'], { encoding: 'utf8' }).status === 0;

test('matches scipy.ndimage.affine_transform (order 1) for every fill mode', {
  skip: !scipy && 'python3 with scipy not available',
}, () => {
  const h = 13,
    w = 17;
  const src = new Uint8Array(h * w * 3).map((_, i) => (i * 37 + (i >> 3) * 11) % 256);
  const options = resolveAugmentOptions({
    ...BOOK_AUGMENTATION,
    rotationRange: 180,
    zoomRange: [0.5, 2.5],
    widthShiftRange: 0.5,
  });
  const cases = [];
  for (let k = 0; k < 12; k++) {
    const m = transformMatrix(sampleTransform(options, sampleRng(1, 0, `k${k}`), h, w), h, w);
    for (const mode of ['nearest', 'constant', 'reflect', 'wrap'] as const) {
      cases.push({
        m: Array.from(m),
        mode,
        out: Array.from(applyAffine({ pixels: src, height: h, width: w }, m, { fillMode: mode, cval: 7 })),
      });
    }
  }
  const py = `
import json, sys, numpy as np
from scipy import ndimage
d = json.load(sys.stdin); h, w = d['h'], d['w']
x = np.array(d['src'], dtype=np.float32).reshape(h, w, 3)
worst = 0.0
for c in d['cases']:
    m = np.array(c['m']).reshape(2, 3)
    ref = np.stack([ndimage.affine_transform(x[:, :, k], m[:, :2], m[:, 2], order=1, mode=c['mode'], cval=7) for k in range(3)], axis=2)
    worst = max(worst, float(np.abs(ref - np.array(c['out'], dtype=np.float32).reshape(h, w, 3)).max()))
print(worst)`;
  const r = spawnSync('python3', ['-c', py], {
    input: JSON.stringify({ h, w, src: Array.from(src), cases }),
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Number(r.stdout.trim()) < 1e-3, `max |ours - scipy| = ${r.stdout.trim()}`);
});

test('the WASM sampler agrees with the float64 reference on real photos (float32 and uint8, flips, nearest and constant)', async () => {
  const h = 150,
    w = 150,
    n = h * w * 3;
  const options = resolveAugmentOptions({ ...BOOK_AUGMENTATION, verticalFlip: true });
  let worstFloat = 0;
  let worstByte = 0;
  let compared = 0;
  for (const name of ['cat.3.jpg', 'dog.7.jpg', 'cat.11.jpg']) {
    const src = await decodeResized(readFileSync(join(kaggleTrainDir, name)), { height: h, width: w });
    for (let k = 0; k < 8; k++) {
      const p = sampleTransform(options, sampleRng(3, k, name), h, w);
      const m = transformMatrix(k === 0 ? IDENTITY_PARAMS : p, h, w);
      for (const mode of ['nearest', 'constant'] as const) {
        const flips = { flipHorizontal: p.flipHorizontal, flipVertical: p.flipVertical };
        const fast = applyAffine({ pixels: src, height: h, width: w }, m, {
          fillMode: mode,
          cval: 9,
          output: { data: new Float32Array(n), rescale: 1 / 255, ...flips },
        });
        const ref = applyAffineReference({ pixels: src, height: h, width: w }, m, {
          fillMode: mode,
          cval: 9,
          output: { data: new Float32Array(n), rescale: 1 / 255, ...flips },
        });
        const fastBytes = applyAffine({ pixels: src, height: h, width: w }, m, {
          fillMode: mode,
          cval: 9,
          output: { data: new Uint8Array(n), ...flips },
        });
        const refBytes = applyAffineReference({ pixels: src, height: h, width: w }, m, {
          fillMode: mode,
          cval: 9,
          output: { data: new Uint8Array(n), ...flips },
        });
        for (let i = 0; i < n; i++) {
          worstFloat = Math.max(worstFloat, Math.abs(fast[i] - ref[i]) * 255);
          worstByte = Math.max(worstByte, Math.abs(fastBytes[i] - refBytes[i]));
        }
        if (k === 0) assert.deepEqual(fast, ref, 'the identity is exact');
        compared++;
      }
    }
  }
  assert.equal(compared, 48);
  // Float32 blending of float64-derived weights: ~1e-5 of a level; bytes may round the other way at exact halves.
  assert.ok(worstFloat < 2e-4, `max |wasm - reference| = ${worstFloat} levels`);
  assert.ok(worstByte <= 1, `max byte difference ${worstByte}`);
});
