// Generates ../wasm/winograd.generated.wat, the Winograd F(m×m, 3×3) functions (m = 3, 4, 6) of the
// training kernels: the transforms are straight-line code over (m+2)² v128 values per group of 4
// channels, tedious and error-prone to write by hand. build-wasm.mjs writes the file (committed,
// so it can be read and reviewed) and splices it into training-kernels.wat at its @include line.
//
// Math (Lavin & Gray 2016, points 0, ±1, ±2, ∞): a 4×4 output tile Y of a 3×3 convolution is
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d Bᵀᵀ) ] A
// for the 6×6 input tile d and the 3×3 filter g, with
//   Bᵀ = [ 4  0 -5  0  1  0 ]   G = [  1/4     0     0  ]   Aᵀ = [ 1  1  1  1  1  0 ]
//        [ 0 -4 -4  1  1  0 ]       [ -1/6  -1/6  -1/6 ]        [ 0  1 -1  2 -2  0 ]
//        [ 0  4 -4 -1  1  0 ]       [ -1/6   1/6  -1/6 ]        [ 0  1  1  4  4  0 ]
//        [ 0 -2 -1  2  1  0 ]       [ 1/24  1/12   1/6 ]        [ 0  1 -1  8 -8  1 ]
//        [ 0  2 -1 -2  1  0 ]       [ 1/24 -1/12   1/6 ]
//        [ 0  4  0 -5  0  1 ]       [  0      0     1  ]
// Summed over input channels, the elementwise product becomes 36 matrix products (one per
// position ξ of the 6×6 transformed tile): M[ξ] (tiles × Co) = V[ξ] (tiles × Ci) · U[ξ] (Ci × Co),
// 36 multiplies per 16 outputs instead of 144 (direct 3×3): 4× fewer.

/** Emits `(local.set $dst expr)` lines for a 1-D transform given input and output local names. */
const k = (c) => `(v128.const f32x4 ${c} ${c} ${c} ${c})`;
const g = (n) => `(local.get $${n})`;
const add = (a, b) => `(f32x4.add ${a} ${b})`;
const sub = (a, b) => `(f32x4.sub ${a} ${b})`;
const mul = (c, a) => `(f32x4.mul ${k(c)} ${a})`;
const set = (n, e) => `(local.set $${n} ${e})`;

/** Bᵀ applied to d[0..5] (names), results into v[0..5]; uses temporaries $ta $tb $tc $te. */
function inputT(d, v) {
  return [
    set(v[0], add(sub(g(d[4]), mul(5, g(d[2]))), mul(4, g(d[0])))),
    set('ta', sub(g(d[4]), mul(4, g(d[2])))),
    set('tb', sub(g(d[3]), mul(4, g(d[1])))),
    set(v[1], add(g('ta'), g('tb'))),
    set(v[2], sub(g('ta'), g('tb'))),
    set('tc', sub(g(d[4]), g(d[2]))),
    set('te', mul(2, sub(g(d[3]), g(d[1])))),
    set(v[3], add(g('tc'), g('te'))),
    set(v[4], sub(g('tc'), g('te'))),
    set(v[5], add(sub(mul(4, g(d[1])), mul(5, g(d[3]))), g(d[5]))),
  ];
}

/** Aᵀ applied to m[0..5], results into y[0..3]; temporaries $ta $tb $tc $te. */
function outputT(m, y) {
  return [
    set('ta', add(g(m[1]), g(m[2]))),
    set('tb', sub(g(m[1]), g(m[2]))),
    set('tc', add(g(m[3]), g(m[4]))),
    set('te', sub(g(m[3]), g(m[4]))),
    set(y[0], add(add(g(m[0]), g('ta')), g('tc'))),
    set(y[1], add(g('tb'), mul(2, g('te')))),
    set(y[2], add(g('ta'), mul(4, g('tc')))),
    set(y[3], add(add(g('tb'), mul(8, g('te'))), g(m[5]))),
  ];
}

/** G applied to f[0..2], results into u[0..5]; temporaries $ta $tb. */
function filterT(f, u) {
  return [
    set(u[0], mul(0.25, g(f[0]))),
    set('ta', add(g(f[0]), g(f[2]))),
    set(u[1], mul(-1 / 6, add(g('ta'), g(f[1])))),
    set(u[2], mul(-1 / 6, sub(g('ta'), g(f[1])))),
    set('ta', add(mul(1 / 24, g(f[0])), mul(1 / 6, g(f[2])))),
    set('tb', mul(1 / 12, g(f[1]))),
    set(u[3], add(g('ta'), g('tb'))),
    set(u[4], sub(g('ta'), g('tb'))),
    set(u[5], g(f[2])),
  ];
}

/**
 * F(3×3, 3×3), points 0, 1, -1, 2, ∞ (the 9×9 maps of VGG's last block are exactly 3×3 tiles):
 *   Bᵀ = [ 2 -1 -2  1  0 ]   G = [  1/2    0     0  ]   Aᵀ = [ 1  1  1  1  0 ]
 *        [ 0 -2 -1  1  0 ]       [ -1/2  -1/2  -1/2 ]        [ 0  1 -1  2  0 ]
 *        [ 0  2 -3  1  0 ]       [ -1/6   1/6  -1/6 ]        [ 0  1  1  4  1 ]
 *        [ 0 -1  0  1  0 ]       [  1/6   1/3   2/3 ]
 *        [ 0  2 -1 -2  1 ]       [   0     0     1  ]
 * Bᵀ applied to d[0..4] into v[0..4].
 */
function inputT3(d, v) {
  return [
    set('ta', sub(g(d[3]), g(d[1]))),
    set(v[0], add(mul(2, sub(g(d[0]), g(d[2]))), g('ta'))),
    set(v[1], sub(g('ta'), add(g(d[1]), g(d[2])))),
    set(v[2], add(sub(g(d[3]), g(d[2])), mul(2, sub(g(d[1]), g(d[2]))))),
    set(v[4], sub(sub(g(d[4]), g(d[2])), mul(2, g('ta')))),
    set(v[3], g('ta')),
  ];
}

/** F(3×3, 3×3): Aᵀ applied to m[0..4] into y[0..2]. */
function outputT3(m, y) {
  return [
    set('ta', add(g(m[1]), g(m[2]))),
    set(y[0], add(add(g(m[0]), g('ta')), g(m[3]))),
    set(y[1], add(sub(g(m[1]), g(m[2])), mul(2, g(m[3])))),
    set(y[2], add(add(g('ta'), mul(4, g(m[3]))), g(m[4]))),
  ];
}

/** F(3×3, 3×3): G applied to f[0..2] into u[0..4]. */
function filterT3(f, u) {
  return [
    set(u[0], mul(0.5, g(f[0]))),
    set('ta', add(g(f[0]), g(f[2]))),
    set(u[1], mul(-0.5, add(g('ta'), g(f[1])))),
    set(u[2], mul(-1 / 6, sub(g('ta'), g(f[1])))),
    set(u[3], add(add(mul(1 / 6, g(f[0])), mul(1 / 3, g(f[1]))), mul(2 / 3, g(f[2])))),
    set(u[4], g(f[2])),
  ];
}

/** F(6×6, 3×3), points 0, 1, -1, 2, -2, 1/2, -1/2, ∞: Bᵀ applied to d[0..7] into v[0..7]. */
function inputT6(d, v) {
  return [
    set(v[0], add(sub(g(d[0]), g(d[6])), mul(5.25, sub(g(d[4]), g(d[2]))))),
    set(v[7], add(sub(g(d[7]), g(d[1])), mul(5.25, sub(g(d[3]), g(d[5]))))),
    set('ta', sub(add(g(d[2]), g(d[6])), mul(4.25, g(d[4])))),
    set('tb', sub(add(g(d[1]), g(d[5])), mul(4.25, g(d[3])))),
    set(v[1], add(g('ta'), g('tb'))),
    set(v[2], sub(g('ta'), g('tb'))),
    set('ta', sub(add(g(d[6]), mul(0.25, g(d[2]))), mul(1.25, g(d[4])))),
    set('tb', add(sub(mul(0.5, g(d[1])), mul(2.5, g(d[3]))), mul(2, g(d[5])))),
    set(v[3], add(g('ta'), g('tb'))),
    set(v[4], sub(g('ta'), g('tb'))),
    set('ta', sub(add(g(d[6]), mul(4, g(d[2]))), mul(5, g(d[4])))),
    set('tb', add(sub(mul(2, g(d[1])), mul(2.5, g(d[3]))), mul(0.5, g(d[5])))),
    set(v[5], add(g('ta'), g('tb'))),
    set(v[6], sub(g('ta'), g('tb'))),
  ];
}

/** F(6×6, 3×3): Aᵀ applied to m[0..7] into y[0..5]. */
function outputT6(m, y) {
  return [
    set('ta', add(g(m[1]), g(m[2]))),
    set('tb', sub(g(m[1]), g(m[2]))),
    set('tc', add(g(m[3]), g(m[4]))),
    set('te', sub(g(m[3]), g(m[4]))),
    set('tf', add(g(m[5]), g(m[6]))),
    set('tg', sub(g(m[5]), g(m[6]))),
    set(y[0], add(add(g(m[0]), g('ta')), add(g('tc'), g('tf')))),
    set(y[1], add(add(g('tb'), mul(2, g('te'))), mul(0.5, g('tg')))),
    set(y[2], add(add(g('ta'), mul(4, g('tc'))), mul(0.25, g('tf')))),
    set(y[3], add(add(g('tb'), mul(8, g('te'))), mul(0.125, g('tg')))),
    set(y[4], add(add(g('ta'), mul(16, g('tc'))), mul(0.0625, g('tf')))),
    set(y[5], add(add(add(g('tb'), mul(32, g('te'))), mul(0.03125, g('tg'))), g(m[7]))),
  ];
}

/** F(6×6, 3×3): G applied to f[0..2] into u[0..7]. */
function filterT6(f, u) {
  return [
    set(u[0], g(f[0])),
    set('ta', add(g(f[0]), g(f[2]))),
    set(u[1], mul(-2 / 9, add(g('ta'), g(f[1])))),
    set(u[2], mul(-2 / 9, sub(g('ta'), g(f[1])))),
    set('ta', add(mul(1 / 90, g(f[0])), mul(2 / 45, g(f[2])))),
    set('tb', mul(1 / 45, g(f[1]))),
    set(u[3], add(g('ta'), g('tb'))),
    set(u[4], sub(g('ta'), g('tb'))),
    set('ta', add(mul(32 / 45, g(f[0])), mul(8 / 45, g(f[2])))),
    set('tb', mul(16 / 45, g(f[1]))),
    set(u[5], add(g('ta'), g('tb'))),
    set(u[6], sub(g('ta'), g('tb'))),
    set(u[7], g(f[2])),
  ];
}

const VARIANTS = {
  3: { a: 5, inputT: inputT3, outputT: outputT3, filterT: filterT3 },
  4: { a: 6, inputT, outputT, filterT },
  6: { a: 8, inputT: inputT6, outputT: outputT6, filterT: filterT6 },
};

const range = (n) => [...Array(n).keys()];
const TEMPS = ['ta', 'tb', 'tc', 'te', 'tf', 'tg'];
const locals = (names) => names.map((n) => `(local $${n} v128)`).join(' ');
const indent = (lines, n) => lines.map((l) => ' '.repeat(n) + l).join('\n');

function inputTile(m) {
  const { a: A, inputT: T } = VARIANTS[m];
  const body = [];
  // columns: t[i][j] = (Bᵀ d)[i][j]
  for (const j of range(A)) {
    body.push(`(local.set $a (i32.add (local.get $s) (i32.mul (i32.const ${j}) (local.get $pix))))`);
    for (const i of range(A)) {
      body.push(`(local.set $d${i} (v128.load (local.get $a)))`);
      if (i < A - 1) body.push(`(local.set $a (i32.add (local.get $a) (local.get $row)))`);
    }
    body.push(
      ...T(
        range(A).map((i) => `d${i}`),
        range(A).map((i) => `t${i}_${j}`),
      ),
    );
  }
  // rows: V[i][j] = (t B)[i][j], stored at ξ = A·i + j
  body.push(`(local.set $a (local.get $o))`);
  for (const i of range(A)) {
    body.push(
      ...T(
        range(A).map((j) => `t${i}_${j}`),
        range(A).map((j) => `d${j}`),
      ),
    );
    for (const j of range(A)) {
      body.push(`(v128.store (local.get $a) (local.get $d${j}))`);
      body.push(`(local.set $a (i32.add (local.get $a) (local.get $xs)))`);
    }
  }
  const ts = range(A).flatMap((i) => range(A).map((j) => `t${i}_${j}`));
  return `
  ;; F(${m}×${m}, 3×3) input transform of one tile: V[ξ][c] = (Bᵀ d B)[ξ] for the ${A}×${A} input
  ;; pixels d at src (row: bytes between input rows, pix: between pixels), C channels (C % 4 == 0),
  ;; V[ξ] at dst + ξ·xs (bytes).
  (func $winograd${m}_input_tile (export "winograd${m}_input_tile")
    (param $src i32) (param $row i32) (param $pix i32) (param $C i32) (param $dst i32) (param $xs i32)
    (local $c i32) (local $cend i32) (local $s i32) (local $o i32) (local $a i32)
    ${locals(range(A).map((i) => `d${i}`))} ${locals(TEMPS)}
    ${locals(ts)}
    (local.set $cend (i32.shl (local.get $C) (i32.const 2)))
    (local.set $c (i32.const 0))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $c) (local.get $cend)))
      (local.set $s (i32.add (local.get $src) (local.get $c)))
      (local.set $o (i32.add (local.get $dst) (local.get $c)))
${indent(body, 6)}
      (local.set $c (i32.add (local.get $c) (i32.const 16)))
      (br $loop)))
  )`;
}

function outputTile(m) {
  const { a: A, outputT: T } = VARIANTS[m];
  const body = [];
  // columns: t[i][j] = (Aᵀ M)[i][j], column j of M (ξ = A·i + j) loaded just before its transform
  // (loading all (m+2)² first would keep them all live: spills)
  for (const j of range(A)) {
    body.push(`(local.set $a (i32.add (local.get $s) (i32.mul (i32.const ${j}) (local.get $xs))))`);
    for (const i of range(A)) {
      body.push(`(local.set $m${i} (v128.load (local.get $a)))`);
      if (i < A - 1) body.push(`(local.set $a (i32.add (local.get $a) (local.get $xsa)))`);
    }
    body.push(
      ...T(
        range(A).map((i) => `m${i}`),
        range(m).map((i) => `t${i}_${j}`),
      ),
    );
  }
  // rows: Y[i][j] = (t A)[i][j] + bias, clamped to [lo, hi], stored where inside the output
  for (const i of range(m)) {
    body.push(
      ...T(
        range(A).map((j) => `t${i}_${j}`),
        range(m).map((j) => `y${j}`),
      ),
    );
    const stores = range(m).map(
      (j) =>
        `(if (i32.gt_u (local.get $cols) (i32.const ${j})) (then (v128.store (i32.add (local.get $d) (i32.mul (i32.const ${j}) (local.get $pix))) ` +
        `(f32x4.min (f32x4.max (f32x4.add (local.get $y${j}) (local.get $b)) (local.get $lo)) (local.get $hi)))))`,
    );
    body.push(
      `(if (i32.gt_u (local.get $rows) (i32.const ${i})) (then`,
      ...stores.map((s) => `  ${s}`),
      `  (local.set $d (i32.add (local.get $d) (local.get $row)))))`,
    );
  }
  const ts = range(m).flatMap((i) => range(A).map((j) => `t${i}_${j}`));
  return `
  ;; F(${m}×${m}, 3×3) output transform of one tile: Y = Aᵀ M A for M[ξ][c] at src + ξ·xs (bytes),
  ;; C channels (C % 4 == 0), plus bias, then the activation; writes the first rows × cols pixels
  ;; of the ${m}×${m} tile at dst (row: bytes between output rows, pix: between pixels). flags: bits
  ;; 0–1 activation (0 linear, 1 relu, 2 relu6), bit 2 bias present (C floats at bias).
  (func $winograd${m}_output_tile (export "winograd${m}_output_tile")
    (param $src i32) (param $xs i32) (param $C i32) (param $bias i32) (param $dst i32) (param $row i32) (param $pix i32)
    (param $rows i32) (param $cols i32) (param $flags i32)
    (local $c i32) (local $cend i32) (local $s i32) (local $d i32) (local $a i32) (local $xsa i32)
    (local $b v128) (local $lo v128) (local $hi v128)
    ${locals(range(A).map((i) => `m${i}`))}
    ${locals([...TEMPS, ...range(m).map((j) => `y${j}`)])}
    ${locals(ts)}
    (local.set $lo (v128.const f32x4 -inf -inf -inf -inf))
    (local.set $hi (v128.const f32x4 inf inf inf inf))
    (if (i32.ne (i32.and (local.get $flags) (i32.const 3)) (i32.const 0)) (then (local.set $lo (v128.const f32x4 0 0 0 0))))
    (if (i32.eq (i32.and (local.get $flags) (i32.const 3)) (i32.const 2)) (then (local.set $hi (v128.const f32x4 6 6 6 6))))
    (local.set $b (v128.const f32x4 0 0 0 0))
    (local.set $xsa (i32.mul (local.get $xs) (i32.const ${A})))
    (local.set $cend (i32.shl (local.get $C) (i32.const 2)))
    (local.set $c (i32.const 0))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $c) (local.get $cend)))
      (local.set $s (i32.add (local.get $src) (local.get $c)))
      (local.set $d (i32.add (local.get $dst) (local.get $c)))
      (if (i32.and (local.get $flags) (i32.const 4)) (then (local.set $b (v128.load (i32.add (local.get $bias) (local.get $c))))))
${indent(body, 6)}
      (local.set $c (i32.add (local.get $c) (i32.const 16)))
      (br $loop)))
  )`;
}

function filterTransform(m) {
  const { a: A, filterT: T } = VARIANTS[m];
  const body = [];
  // g[ki][kj] at s + (3ki + kj)·tap; columns first: t[i][kj] = (G g)[i][kj]
  for (const j of range(3)) {
    for (const i of range(3)) {
      body.push(
        `(local.set $f${i} (v128.load (i32.add (local.get $s) (i32.mul (i32.const ${3 * i + j}) (local.get $tap)))))`,
      );
    }
    body.push(
      ...T(
        ['f0', 'f1', 'f2'],
        range(A).map((i) => `t${i}_${j}`),
      ),
    );
  }
  // rows: U[i][j] = (t Gᵀ)[i][j] at o + ξ·us, ξ = A·i + j
  body.push(`(local.set $a (local.get $o))`);
  for (const i of range(A)) {
    body.push(
      ...T(
        [`t${i}_0`, `t${i}_1`, `t${i}_2`],
        range(A).map((j) => `u${j}`),
      ),
    );
    for (const j of range(A)) {
      body.push(`(v128.store (local.get $a) (local.get $u${j}))`);
      body.push(`(local.set $a (i32.add (local.get $a) (local.get $us)))`);
    }
  }
  const ts = range(A).flatMap((i) => range(3).map((j) => `t${i}_${j}`));
  return `
  ;; F(${m}×${m}, 3×3) filter transform: U[ξ][ci][co] = (G g Gᵀ)[ξ] for the [3, 3, Ci, Co] filter g
  ;; at w (Co % 4 == 0), into the [${A * A}, Ci, Co] array at u (the layout the products read; each
  ;; U[ξ] padded by 16 floats: at power-of-two strides the ${A * A} streams written together would all
  ;; map to the same cache sets), for the Ci·Co/4 vectors from vector v0 to v1 (so threads can
  ;; share it).
  (func $winograd${m}_filter_transform (export "winograd${m}_filter_transform")
    (param $w i32) (param $Ci i32) (param $Co i32) (param $u i32) (param $v0 i32) (param $v1 i32)
    (local $tap i32) (local $us i32) (local $p i32) (local $end i32) (local $s i32) (local $o i32) (local $a i32)
    ${locals(['f0', 'f1', 'f2', ...TEMPS])} ${locals(range(A).map((j) => `u${j}`))}
    ${locals(ts)}
    ;; one Ci·Co tap after the other: the same byte offset p in every tap of g and every ξ of U
    (local.set $tap (i32.shl (i32.mul (local.get $Ci) (local.get $Co)) (i32.const 2)))
    (local.set $us (i32.add (local.get $tap) (i32.const 64)))
${vectorRangeLoop('$w', '$u', body)}
  )`;
}

/**
 * The loop of the per-vector transforms over the float vectors v0 .. v1 - 1 (so threads can share them): `body` runs
 * with $s = src + p and $o = dst + p for byte offsets p = 16·v (uses the caller's locals p, end, s, o, v0, v1).
 */
function vectorRangeLoop(src, dst, body) {
  return `    (local.set $p (i32.shl (local.get $v0) (i32.const 4)))
    (local.set $end (i32.shl (local.get $v1) (i32.const 4)))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $s (i32.add (local.get ${src}) (local.get $p)))
      (local.set $o (i32.add (local.get ${dst}) (local.get $p)))
${indent(body, 6)}
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br $loop)))`;
}

/**
 * The input transforms of a block of tiles, shared by the forward convolution and the filter gradient:
 * V[ξ][k][Ci] = Bᵀ d B for tiles first + k, k < count (edge tiles through a zero-padded copy at E).
 * Uses the caller's locals (x, H, W, Ci, cib, pt, pl, tw, per, V, vxs, E, and k, t, b, ty, tx, iy, ix,
 * src, rowb, i, j).
 */
function inputTransforms(m) {
  const A = m + 2;
  const N = A * A;
  return `    ;; input transforms
    (local.set $k (i32.const 0))
    (block $kdone (loop $kloop
      (br_if $kdone (i32.ge_u (local.get $k) (local.get $count)))
      (local.set $t (i32.add (local.get $first) (local.get $k)))
      (local.set $b (i32.div_u (local.get $t) (local.get $per)))
      (local.set $t (i32.rem_u (local.get $t) (local.get $per)))
      (local.set $ty (i32.div_u (local.get $t) (local.get $tw)))
      (local.set $tx (i32.rem_u (local.get $t) (local.get $tw)))
      (local.set $iy (i32.sub (i32.mul (local.get $ty) (i32.const ${m})) (local.get $pt)))
      (local.set $ix (i32.sub (i32.mul (local.get $tx) (i32.const ${m})) (local.get $pl)))
      (if (i32.and
            (i32.and (i32.ge_s (local.get $iy) (i32.const 0)) (i32.ge_s (local.get $ix) (i32.const 0)))
            (i32.and (i32.le_s (i32.add (local.get $iy) (i32.const ${A})) (local.get $H)) (i32.le_s (i32.add (local.get $ix) (i32.const ${A})) (local.get $W))))
        (then
          (local.set $src (i32.add (local.get $x)
            (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $H)) (local.get $iy)) (local.get $W)) (local.get $ix)) (local.get $cib))))
          (local.set $rowb (i32.mul (local.get $W) (local.get $cib))))
        (else
          ;; edge tile: the pixels inside the input copied into a zeroed ${A}×${A} tile (iy + i and
          ;; ix + j compared unsigned: negative ones are outside too)
          (memory.fill (local.get $E) (i32.const 0) (i32.mul (i32.const ${N}) (local.get $cib)))
          (local.set $i (i32.const 0))
          (block $idone (loop $iloop
            (br_if $idone (i32.ge_u (local.get $i) (i32.const ${A})))
            (if (i32.lt_u (i32.add (local.get $iy) (local.get $i)) (local.get $H)) (then
              (local.set $j (i32.const 0))
              (block $jdone (loop $jloop
                (br_if $jdone (i32.ge_u (local.get $j) (i32.const ${A})))
                (if (i32.lt_u (i32.add (local.get $ix) (local.get $j)) (local.get $W)) (then
                  (memory.copy
                    (i32.add (local.get $E) (i32.mul (i32.add (i32.mul (local.get $i) (i32.const ${A})) (local.get $j)) (local.get $cib)))
                    (i32.add (local.get $x) (i32.mul
                      (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $H)) (i32.add (local.get $iy) (local.get $i))) (local.get $W))
                        (i32.add (local.get $ix) (local.get $j)))
                      (local.get $cib)))
                    (local.get $cib))))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $jloop)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $iloop)))
          (local.set $src (local.get $E))
          (local.set $rowb (i32.mul (i32.const ${A}) (local.get $cib)))))
      (call $winograd${m}_input_tile (local.get $src) (local.get $rowb) (local.get $cib) (local.get $Ci)
        (i32.add (local.get $V) (i32.mul (local.get $k) (local.get $cib))) (local.get $vxs))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $kloop)))`;
}

function tiles(m) {
  const A = m + 2;
  const N = A * A;
  return `
  ;; One block of F(${m}×${m}, 3×3) tiles (see winograd_tiles), with scratch for
  ;; ${N}·(count·(Ci + Co) + 32) + ${N}·Ci floats.
  (func $winograd${m}_tiles
    (param $prm i32) (param $first i32) (param $count i32) (param $scratch i32)
    (local $x i32) (local $H i32) (local $W i32) (local $Ci i32) (local $Co i32) (local $U i32) (local $bias i32)
    (local $y i32) (local $Ho i32) (local $Wo i32) (local $tw i32) (local $th i32) (local $pt i32) (local $pl i32) (local $flags i32)
    (local $cib i32) (local $cob i32) (local $V i32) (local $M i32) (local $E i32) (local $vxs i32) (local $mxs i32)
    (local $k i32) (local $t i32) (local $b i32) (local $ty i32) (local $tx i32) (local $iy i32) (local $ix i32)
    (local $src i32) (local $rowb i32) (local $i i32) (local $j i32) (local $xi i32) (local $per i32)
    (local.set $x (i32.load offset=0 (local.get $prm)))
    (local.set $H (i32.load offset=4 (local.get $prm)))
    (local.set $W (i32.load offset=8 (local.get $prm)))
    (local.set $Ci (i32.load offset=12 (local.get $prm)))
    (local.set $Co (i32.load offset=16 (local.get $prm)))
    (local.set $U (i32.load offset=20 (local.get $prm)))
    (local.set $bias (i32.load offset=24 (local.get $prm)))
    (local.set $y (i32.load offset=28 (local.get $prm)))
    (local.set $Ho (i32.load offset=32 (local.get $prm)))
    (local.set $Wo (i32.load offset=36 (local.get $prm)))
    (local.set $tw (i32.load offset=40 (local.get $prm)))
    (local.set $th (i32.load offset=44 (local.get $prm)))
    (local.set $pt (i32.load offset=48 (local.get $prm)))
    (local.set $pl (i32.load offset=52 (local.get $prm)))
    (local.set $flags (i32.load offset=56 (local.get $prm)))
    (local.set $cib (i32.shl (local.get $Ci) (i32.const 2)))
    (local.set $cob (i32.shl (local.get $Co) (i32.const 2)))
    (local.set $per (i32.mul (local.get $tw) (local.get $th)))
    ;; position strides padded by a cache line: at power-of-two strides the ${N} positions of a tile
    ;; would all map to the same cache sets
    (local.set $vxs (i32.add (i32.mul (local.get $count) (local.get $cib)) (i32.const 64)))
    (local.set $mxs (i32.add (i32.mul (local.get $count) (local.get $cob)) (i32.const 64)))
    (local.set $V (local.get $scratch))
    (local.set $M (i32.add (local.get $V) (i32.mul (i32.const ${N}) (local.get $vxs))))
    (local.set $E (i32.add (local.get $M) (i32.mul (i32.const ${N}) (local.get $mxs))))
${inputTransforms(m)}
    ;; the ${N} products
    (local.set $xi (i32.const 0))
    (block $xdone (loop $xloop
      (br_if $xdone (i32.ge_u (local.get $xi) (i32.const ${N})))
      (call $winograd_gemm
        (i32.add (local.get $V) (i32.mul (local.get $xi) (local.get $vxs))) (local.get $count) (local.get $Ci)
        (i32.add (local.get $U) (i32.mul (local.get $xi) (i32.add (i32.mul (local.get $Ci) (local.get $cob)) (i32.const 64)))) (local.get $Co)
        (i32.add (local.get $M) (i32.mul (local.get $xi) (local.get $mxs))) (local.get $cob))
      (local.set $xi (i32.add (local.get $xi) (i32.const 1)))
      (br $xloop)))
    ;; output transforms
    (local.set $k (i32.const 0))
    (block $odone (loop $oloop
      (br_if $odone (i32.ge_u (local.get $k) (local.get $count)))
      (local.set $t (i32.add (local.get $first) (local.get $k)))
      (local.set $b (i32.div_u (local.get $t) (local.get $per)))
      (local.set $t (i32.rem_u (local.get $t) (local.get $per)))
      (local.set $ty (i32.mul (i32.div_u (local.get $t) (local.get $tw)) (i32.const ${m})))
      (local.set $tx (i32.mul (i32.rem_u (local.get $t) (local.get $tw)) (i32.const ${m})))
      (call $winograd${m}_output_tile
        (i32.add (local.get $M) (i32.mul (local.get $k) (local.get $cob))) (local.get $mxs) (local.get $Co) (local.get $bias)
        (i32.add (local.get $y) (i32.mul
          (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $Ho)) (local.get $ty)) (local.get $Wo)) (local.get $tx))
          (local.get $cob)))
        (i32.mul (local.get $Wo) (local.get $cob)) (local.get $cob)
        (select (i32.const ${m}) (i32.sub (local.get $Ho) (local.get $ty)) (i32.ge_s (i32.sub (local.get $Ho) (local.get $ty)) (i32.const ${m})))
        (select (i32.const ${m}) (i32.sub (local.get $Wo) (local.get $tx)) (i32.ge_s (i32.sub (local.get $Wo) (local.get $tx)) (i32.const ${m})))
        (local.get $flags))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $oloop)))
  )`;
}

/**
 * The products: c[p·cs + j] = Σ_k a[p·K + k] · b[k·N + j] for p < n, j < N (N % 16 == 0), overwriting
 * c (conv_input_grad_run's loop, which accumulates into c, minus the zeroing of c it would need).
 * Two rows × 16 columns of c in registers: 8 accumulators + 2 splats + 4 loads of b, 14 of the 16
 * SIMD registers of x86-64.
 */
// Steps of the reduction per loop iteration: unrolling by 2 or 4 measured ~40% slower (V8 then
// spills accumulators), so 1; the code takes any divisor of K (a multiple of 4 here).
const UNROLL = 1;
function gemm() {
  const acc = range(8).map((i) => `c${i}`);
  const step = (u) => {
    const lines = [
      `(local.set $s0 (v128.load32_splat offset=${4 * u} (local.get $a0)))`,
      `(local.set $s1 (v128.load32_splat offset=${4 * u} (local.get $a1)))`,
      ...range(4).map((q) => `(local.set $w${q} (v128.load offset=${16 * q} (local.get $wp)))`),
      ...range(8).map((i) => set(acc[i], add(g(acc[i]), `(f32x4.mul (local.get $s${i >> 2}) (local.get $w${i & 3}))`))),
    ];
    if (u < UNROLL - 1) lines.push(`(local.set $wp (i32.add (local.get $wp) (local.get $nb)))`);
    return lines;
  };
  const body = (pairs) => {
    const rows = pairs ? 2 : 1;
    const lines = [];
    lines.push(...range(4 * rows).map((i) => `(local.set $c${i} (v128.const f32x4 0 0 0 0))`));
    lines.push(`(local.set $wp (i32.add (local.get $b) (local.get $j)))`);
    lines.push(`(local.set $k (local.get $K))`);
    lines.push(`(block $kdone (loop $kloop`);
    lines.push(`  (br_if $kdone (i32.eqz (local.get $k)))`);
    for (const u of range(UNROLL)) {
      let st = step(u);
      if (!pairs) st = st.filter((l) => !l.includes('$s1') && !/\$c[4-7] /.test(l));
      lines.push(...st.map((l) => `  ${l}`));
    }
    lines.push(`  (local.set $wp (i32.add (local.get $wp) (local.get $nb)))`);
    lines.push(`  (local.set $a0 (i32.add (local.get $a0) (i32.const ${4 * UNROLL})))`);
    if (pairs) lines.push(`  (local.set $a1 (i32.add (local.get $a1) (i32.const ${4 * UNROLL})))`);
    lines.push(`  (local.set $k (i32.sub (local.get $k) (i32.const ${UNROLL})))`);
    lines.push(`  (br $kloop)))`);
    lines.push(
      `(local.set $o (i32.add (i32.add (local.get $c) (i32.mul (local.get $p) (local.get $cs))) (local.get $j)))`,
    );
    for (const r of range(rows)) {
      for (const q of range(4)) lines.push(`(v128.store offset=${16 * q} (local.get $o) (local.get $c${4 * r + q}))`);
      if (r === 0 && rows === 2) lines.push(`(local.set $o (i32.add (local.get $o) (local.get $cs)))`);
    }
    return lines;
  };
  return `
  ;; Winograd products (see the generator, gemm()): c = a · b, a: n × K rows, b: K × N, c rows cs bytes apart.
  (func $winograd_gemm (export "winograd_gemm")
    (param $a i32) (param $n i32) (param $K i32) (param $b i32) (param $N i32) (param $c i32) (param $cs i32)
    (local $nb i32) (local $kb i32) (local $j i32) (local $p i32) (local $k i32) (local $a0 i32) (local $a1 i32) (local $wp i32) (local $o i32)
    ${locals([...acc, 's0', 's1', 'w0', 'w1', 'w2', 'w3'])}
    (local.set $nb (i32.shl (local.get $N) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $K) (i32.const 2)))
    (local.set $j (i32.const 0))
    (block $jdone (loop $jloop
      (br_if $jdone (i32.ge_u (local.get $j) (local.get $nb)))
      (local.set $p (i32.const 0))
      (block $pdone (loop $ploop
        (br_if $pdone (i32.ge_u (i32.add (local.get $p) (i32.const 1)) (local.get $n)))
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $p) (local.get $kb))))
        (local.set $a1 (i32.add (local.get $a0) (local.get $kb)))
${indent(body(true), 8)}
        (local.set $p (i32.add (local.get $p) (i32.const 2)))
        (br $ploop)))
      (if (i32.lt_u (local.get $p) (local.get $n)) (then
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $p) (local.get $kb))))
${indent(body(false), 8)}))
      (local.set $j (i32.add (local.get $j) (i32.const 64)))
      (br $jloop)))
  )`;
}

function dispatch() {
  return `
  ;; One block of Winograd tiles of a 3×3, stride-1 convolution (channels-last, float32): a job for
  ;; one thread (7 int32 arguments, as the thread pool's calls). prm: int32 words [x, H, W, Ci, Co,
  ;; U, bias, y, Ho, Wo, tilesW, tilesH, padTop, padLeft, flags, m] (pointers as byte offsets;
  ;; flags as the output transforms; m = 3, 4 or 6, the tile size); tiles first .. first + count - 1
  ;; in (image, tile row, tile column) order; scratch: this thread's (m+2)²·(count·(Ci + Co) + 32)
  ;; + (m+2)²·Ci floats. Steps: input transforms into V[ξ][tile][Ci] (edge tiles through a
  ;; zero-padded copy), the (m+2)² products M[ξ] = V[ξ] · U[ξ] (winograd_gemm: 2 tiles × 16
  ;; output channels in registers), output transforms into y.
  (func (export "winograd_tiles")
    (param $prm i32) (param $first i32) (param $count i32) (param $unused3 i32) (param $unused4 i32) (param $unused5 i32) (param $scratch i32)
    (block $f3 (block $f4 (block $f6
      (br_table $f3 $f3 $f3 $f3 $f4 $f4 $f6 (i32.load offset=60 (local.get $prm))))
      (call $winograd6_tiles (local.get $prm) (local.get $first) (local.get $count) (local.get $scratch))
      (return))
      (call $winograd4_tiles (local.get $prm) (local.get $first) (local.get $count) (local.get $scratch))
      (return))
    (call $winograd3_tiles (local.get $prm) (local.get $first) (local.get $count) (local.get $scratch))
  )

  ;; The filter transform of tile size m (3, 4 or 6) for vectors v0 .. v1 - 1 of the Ci·Co/4, as a
  ;; 7-argument thread-pool call.
  (func (export "winograd_filter_job")
    (param $w i32) (param $Ci i32) (param $Co i32) (param $u i32) (param $v0 i32) (param $v1 i32) (param $m i32)
    (block $f3 (block $f4 (block $f6
      (br_table $f3 $f3 $f3 $f3 $f4 $f4 $f6 (local.get $m)))
      (call $winograd6_filter_transform (local.get $w) (local.get $Ci) (local.get $Co) (local.get $u) (local.get $v0) (local.get $v1))
      (return))
      (call $winograd4_filter_transform (local.get $w) (local.get $Ci) (local.get $Co) (local.get $u) (local.get $v0) (local.get $v1))
      (return))
    (call $winograd3_filter_transform (local.get $w) (local.get $Ci) (local.get $Co) (local.get $u) (local.get $v0) (local.get $v1))
  )`;
}

// ---------------------------------------------------------------------------------------------
// Filter gradient (Conv2DBackpropFilter) by Winograd: the exact transpose of the forward tile
//   Y = Aᵀ [ U ⊙ V ] A,  U = G g Gᵀ,  V = Bᵀ d B
// gives, for the 3×3 filter,
//   dW = Gᵀ [ Σ_(images, tiles) V ⊙ (A dY Aᵀ) ] G
// with the forward's own tiling: V is the forward's input transform, dY the m×m block of the output
// gradient (zero beyond the output), and the sum over tiles, per input/output channel pair, (m+2)²
// matrix products of the same shape as the direct filter gradient's (conv_filter_grad_run, the
// reduction over tiles instead of pixels). A and G are not written again here: they are read off
// the forward transforms above (linearMap), so the transposes cannot drift from them.

/** Parses one S-expression (the generated WAT of a transform line) into nested arrays of atoms. */
function parseSexpr(text) {
  const tokens = text.match(/\(|\)|[^\s()]+/g);
  let i = 0;
  const read = () => {
    const t = tokens[i++];
    if (t !== '(') return t;
    const list = [];
    while (tokens[i] !== ')') list.push(read());
    i++;
    return list;
  };
  return read();
}

/**
 * The matrix of a generated 1-D transform T(inputs, outputs) (inputT, outputT, filterT): entry [o][i]
 * is the coefficient of input i in output o, found by evaluating its straight-line code on
 * coefficient vectors (add, sub, constant times value, as the transforms are written).
 */
function linearMap(T, nIn, nOut) {
  const ins = range(nIn).map((i) => `in${i}`);
  const outs = range(nOut).map((o) => `out${o}`);
  const env = new Map(ins.map((n, i) => [n, range(nIn).map((j) => (j === i ? 1 : 0))]));
  const evaluate = (e) => {
    const [op, a, b] = e;
    if (op === 'local.get') return env.get(a.slice(1));
    if (op === 'f32x4.add') return evaluate(a).map((v, j) => v + evaluate(b)[j]);
    if (op === 'f32x4.sub') return evaluate(a).map((v, j) => v - evaluate(b)[j]);
    if (op === 'f32x4.mul' && a[0] === 'v128.const') return evaluate(b).map((v) => Number(a[2]) * v);
    throw new Error(`linearMap: unexpected ${JSON.stringify(e)}`);
  };
  for (const line of T(ins, outs)) {
    const [op, name, e] = parseSexpr(line);
    if (op !== 'local.set') throw new Error(`linearMap: unexpected ${line}`);
    env.set(name.slice(1), evaluate(e));
  }
  return outs.map((o) => env.get(o));
}

const transpose = (rows) => rows[0].map((_, j) => rows.map((r) => r[j]));

/** Σ coefficient·value over [coefficient, expression] terms (none zero), grouping equal |coefficients|. */
function linearCombination(terms) {
  const groups = new Map();
  for (const [c, e] of terms) {
    const grp = groups.get(Math.abs(c)) ?? { pos: [], neg: [] };
    (c > 0 ? grp.pos : grp.neg).push(e);
    groups.set(Math.abs(c), grp);
  }
  const sum = (es) => es.reduce((acc, e) => add(acc, e));
  // each group as [sign, |c|, value]: (Σ pos - Σ neg), or -(Σ neg) when there is no positive term
  const parts = [...groups].map(([c, { pos, neg }]) =>
    pos.length > 0 ? [1, c, neg.length > 0 ? sub(sum(pos), sum(neg)) : sum(pos)] : [-1, c, sum(neg)],
  );
  parts.sort((p, q) => q[0] - p[0]); // a positive group first, so the rest are added or subtracted
  const scaled = ([, c, e]) => (c === 1 ? e : mul(c, e));
  const [first, ...rest] = parts;
  let out = first[0] > 0 ? scaled(first) : mul(-first[1], first[2]);
  for (const p of rest) out = p[0] > 0 ? add(out, scaled(p)) : sub(out, scaled(p));
  return out;
}

/**
 * Straight-line code for out = Mat · in (Mat: nOut × nIn), into out names from in names. Rows that
 * are each other's mirror (evaluation at ±p: equal coefficients on some inputs, opposite on the
 * others) share their two half sums, E ± O; temporaries $ta $tb.
 */
function applyMatrix(mat, ins, outs) {
  const lines = [];
  const done = new Set();
  const terms = (row) => row.flatMap((c, i) => (c === 0 ? [] : [[c, g(ins[i])]]));
  for (const r of range(mat.length)) {
    if (done.has(r)) continue;
    const s = range(mat.length).find(
      (s) =>
        s > r &&
        !done.has(s) &&
        mat[r].every((c, i) => c === mat[s][i] || c === -mat[s][i]) &&
        mat[r].some((c, i) => c !== 0 && c === mat[s][i]) &&
        mat[r].some((c, i) => c !== 0 && c === -mat[s][i]),
    );
    if (s === undefined) {
      const t = terms(mat[r]);
      lines.push(set(outs[r], t.length > 0 ? linearCombination(t) : k(0)));
      continue;
    }
    const even = mat[r].map((c, i) => (c === mat[s][i] ? c : 0));
    const odd = mat[r].map((c, i) => (c === -mat[s][i] ? c : 0));
    lines.push(set('ta', linearCombination(terms(even))), set('tb', linearCombination(terms(odd))));
    lines.push(set(outs[r], add(g('ta'), g('tb'))), set(outs[s], sub(g('ta'), g('tb'))));
    done.add(r).add(s);
  }
  return lines;
}

/** A (the transpose of the forward's Aᵀ: (m+2) × m) and Gᵀ (3 × (m+2)) of tile m, from the forward transforms. */
function gradientMatrices(m) {
  const { a: A, outputT, filterT } = VARIANTS[m];
  return { A: transpose(linearMap(outputT, A, m)), GT: transpose(linearMap(filterT, 3, A)) };
}

function outputGradTile(m) {
  const A = m + 2;
  const { A: mat } = gradientMatrices(m);
  const body = [];
  // columns: t[i][j] = (A dY)[i][j] for the m×m dY at s (row i: + i·row, column j: + j·pix)
  for (const j of range(m)) {
    body.push(`(local.set $a (i32.add (local.get $s) (i32.mul (i32.const ${j}) (local.get $pix))))`);
    for (const i of range(m)) {
      body.push(`(local.set $y${i} (v128.load (local.get $a)))`);
      if (i < m - 1) body.push(`(local.set $a (i32.add (local.get $a) (local.get $row)))`);
    }
    body.push(
      ...applyMatrix(
        mat,
        range(m).map((i) => `y${i}`),
        range(A).map((i) => `t${i}_${j}`),
      ),
    );
  }
  // rows: U'[i][j] = (t Aᵀ)[i][j], stored at ξ = A·i + j
  body.push(`(local.set $a (local.get $o))`);
  for (const i of range(A)) {
    body.push(
      ...applyMatrix(
        mat,
        range(m).map((j) => `t${i}_${j}`),
        range(A).map((j) => `z${j}`),
      ),
    );
    for (const j of range(A)) {
      body.push(`(v128.store (local.get $a) (local.get $z${j}))`);
      body.push(`(local.set $a (i32.add (local.get $a) (local.get $xs)))`);
    }
  }
  const ts = range(A).flatMap((i) => range(m).map((j) => `t${i}_${j}`));
  return `
  ;; F(${m}×${m}, 3×3) output-gradient transform of one tile (the forward output transform's
  ;; transpose): U'[ξ][c] = (A dY Aᵀ)[ξ] for the ${m}×${m} output gradient dY at src (row: bytes
  ;; between rows, pix: between pixels), C channels (C % 4 == 0), U'[ξ] at dst + ξ·xs (bytes).
  (func $winograd${m}_output_grad_tile
    (param $src i32) (param $row i32) (param $pix i32) (param $C i32) (param $dst i32) (param $xs i32)
    (local $c i32) (local $cend i32) (local $s i32) (local $o i32) (local $a i32)
    ${locals(range(m).map((i) => `y${i}`))} ${locals(range(A).map((j) => `z${j}`))} ${locals(['ta', 'tb'])}
    ${locals(ts)}
    (local.set $cend (i32.shl (local.get $C) (i32.const 2)))
    (local.set $c (i32.const 0))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $c) (local.get $cend)))
      (local.set $s (i32.add (local.get $src) (local.get $c)))
      (local.set $o (i32.add (local.get $dst) (local.get $c)))
${indent(body, 6)}
      (local.set $c (i32.add (local.get $c) (i32.const 16)))
      (br $loop)))
  )`;
}

function filterGradTransform(m) {
  const A = m + 2;
  const { GT } = gradientMatrices(m);
  const body = [];
  // columns: t[ki][j] = (Gᵀ M)[ki][j], M[ξ] (ξ = A·i + j) summed over the partials as it is loaded
  for (const j of range(A)) {
    for (const i of range(A)) {
      body.push(
        `(local.set $m${i} (call $winograd_sum_parts (i32.add (local.get $s) (i32.mul (i32.const ${A * i + j}) (local.get $xs))) (local.get $parts) (local.get $ps)))`,
      );
    }
    body.push(
      ...applyMatrix(
        GT,
        range(A).map((i) => `m${i}`),
        range(3).map((ki) => `t${ki}_${j}`),
      ),
    );
  }
  // rows: dW[ki][kj] = (t G)[ki][kj] at dw + (3·ki + kj)·tap
  for (const ki of range(3)) {
    body.push(
      ...applyMatrix(
        GT,
        range(A).map((j) => `t${ki}_${j}`),
        range(3).map((kj) => `w${kj}`),
      ),
    );
    for (const kj of range(3)) {
      body.push(
        `(v128.store (i32.add (local.get $o) (i32.mul (i32.const ${3 * ki + kj}) (local.get $tap))) (local.get $w${kj}))`,
      );
    }
  }
  const ts = range(3).flatMap((ki) => range(A).map((j) => `t${ki}_${j}`));
  return `
  ;; F(${m}×${m}, 3×3) filter-gradient output transform: dW[ki][kj][ci][co] = (Gᵀ M G)[ki][kj] for the
  ;; products M [${A * A}][Ci·Co + 16] summed over \`parts\` partials (ps bytes apart, in order), into the
  ;; [3, 3, Ci, Co] dW at dw, for the Ci·Co/4 vectors v0 .. v1 - 1 (so threads can share it).
  (func $winograd${m}_filter_grad_out
    (param $M i32) (param $parts i32) (param $Ci i32) (param $Co i32) (param $dw i32) (param $v0 i32) (param $v1 i32)
    (local $tap i32) (local $xs i32) (local $ps i32) (local $p i32) (local $end i32) (local $s i32) (local $o i32)
    ${locals(range(A).map((i) => `m${i}`))} ${locals(['w0', 'w1', 'w2', 'ta', 'tb'])}
    ${locals(ts)}
    (local.set $tap (i32.shl (i32.mul (local.get $Ci) (local.get $Co)) (i32.const 2)))
    (local.set $xs (i32.add (local.get $tap) (i32.const 64)))
    (local.set $ps (i32.mul (local.get $xs) (i32.const ${A * A})))
${vectorRangeLoop('$M', '$dw', body)}
  )`;
}

function filterGradTiles(m) {
  const A = m + 2;
  const N = A * A;
  return `
  ;; One block of F(${m}×${m}, 3×3) filter-gradient tiles (see winograd_filter_grad_tiles), with scratch
  ;; for ${N}·(count·(Ci + Co) + 32) + ${N}·Ci + ${m * m}·Co floats.
  (func $winograd${m}_filter_grad_tiles
    (param $prm i32) (param $first i32) (param $count i32) (param $Mp i32) (param $assign i32) (param $scratch i32)
    (local $x i32) (local $H i32) (local $W i32) (local $Ci i32) (local $Co i32) (local $dy i32) (local $Ho i32) (local $Wo i32)
    (local $tw i32) (local $th i32) (local $pt i32) (local $pl i32)
    (local $cib i32) (local $cob i32) (local $V i32) (local $U i32) (local $E i32) (local $F i32)
    (local $vxs i32) (local $uxs i32) (local $mxs i32)
    (local $k i32) (local $t i32) (local $b i32) (local $ty i32) (local $tx i32) (local $iy i32) (local $ix i32)
    (local $src i32) (local $rowb i32) (local $i i32) (local $j i32) (local $xi i32) (local $per i32)
    (local $rows i32) (local $cols i32)
    (local.set $x (i32.load offset=0 (local.get $prm)))
    (local.set $H (i32.load offset=4 (local.get $prm)))
    (local.set $W (i32.load offset=8 (local.get $prm)))
    (local.set $Ci (i32.load offset=12 (local.get $prm)))
    (local.set $Co (i32.load offset=16 (local.get $prm)))
    (local.set $dy (i32.load offset=20 (local.get $prm)))
    (local.set $Ho (i32.load offset=24 (local.get $prm)))
    (local.set $Wo (i32.load offset=28 (local.get $prm)))
    (local.set $tw (i32.load offset=32 (local.get $prm)))
    (local.set $th (i32.load offset=36 (local.get $prm)))
    (local.set $pt (i32.load offset=40 (local.get $prm)))
    (local.set $pl (i32.load offset=44 (local.get $prm)))
    (local.set $cib (i32.shl (local.get $Ci) (i32.const 2)))
    (local.set $cob (i32.shl (local.get $Co) (i32.const 2)))
    (local.set $per (i32.mul (local.get $tw) (local.get $th)))
    ;; position strides padded by a cache line, as the forward's
    (local.set $vxs (i32.add (i32.mul (local.get $count) (local.get $cib)) (i32.const 64)))
    (local.set $uxs (i32.add (i32.mul (local.get $count) (local.get $cob)) (i32.const 64)))
    (local.set $mxs (i32.add (i32.mul (local.get $Ci) (local.get $cob)) (i32.const 64)))
    (local.set $V (local.get $scratch))
    (local.set $U (i32.add (local.get $V) (i32.mul (i32.const ${N}) (local.get $vxs))))
    (local.set $E (i32.add (local.get $U) (i32.mul (i32.const ${N}) (local.get $uxs))))
    (local.set $F (i32.add (local.get $E) (i32.mul (i32.const ${N}) (local.get $cib))))
${inputTransforms(m)}
    ;; output-gradient transforms U'[ξ][k][Co] (edge tiles: the part inside the output copied into a
    ;; zeroed ${m}×${m} tile at F)
    (local.set $k (i32.const 0))
    (block $gdone (loop $gloop
      (br_if $gdone (i32.ge_u (local.get $k) (local.get $count)))
      (local.set $t (i32.add (local.get $first) (local.get $k)))
      (local.set $b (i32.div_u (local.get $t) (local.get $per)))
      (local.set $t (i32.rem_u (local.get $t) (local.get $per)))
      (local.set $ty (i32.mul (i32.div_u (local.get $t) (local.get $tw)) (i32.const ${m})))
      (local.set $tx (i32.mul (i32.rem_u (local.get $t) (local.get $tw)) (i32.const ${m})))
      (local.set $src (i32.add (local.get $dy)
        (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $Ho)) (local.get $ty)) (local.get $Wo)) (local.get $tx)) (local.get $cob))))
      (local.set $rowb (i32.mul (local.get $Wo) (local.get $cob)))
      (local.set $rows (i32.sub (local.get $Ho) (local.get $ty)))
      (local.set $cols (i32.sub (local.get $Wo) (local.get $tx)))
      (if (i32.or (i32.lt_s (local.get $rows) (i32.const ${m})) (i32.lt_s (local.get $cols) (i32.const ${m}))) (then
        (if (i32.gt_s (local.get $rows) (i32.const ${m})) (then (local.set $rows (i32.const ${m}))))
        (if (i32.gt_s (local.get $cols) (i32.const ${m})) (then (local.set $cols (i32.const ${m}))))
        (memory.fill (local.get $F) (i32.const 0) (i32.mul (i32.const ${m * m}) (local.get $cob)))
        (local.set $i (i32.const 0))
        (block $rdone (loop $rloop
          (br_if $rdone (i32.ge_u (local.get $i) (local.get $rows)))
          (memory.copy
            (i32.add (local.get $F) (i32.mul (i32.mul (local.get $i) (i32.const ${m})) (local.get $cob)))
            (i32.add (local.get $src) (i32.mul (local.get $i) (local.get $rowb)))
            (i32.mul (local.get $cols) (local.get $cob)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $rloop)))
        (local.set $src (local.get $F))
        (local.set $rowb (i32.mul (i32.const ${m}) (local.get $cob)))))
      (call $winograd${m}_output_grad_tile (local.get $src) (local.get $rowb) (local.get $cob) (local.get $Co)
        (i32.add (local.get $U) (i32.mul (local.get $k) (local.get $cob))) (local.get $uxs))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $gloop)))
    ;; the ${N} products M[ξ][Ci][Co] += V[ξ]ᵀ U'[ξ] (the direct filter gradient's loop, the reduction
    ;; over the block's tiles; the first block of a slice assigns M instead: no zeroing pass)
    (local.set $xi (i32.const 0))
    (block $xdone (loop $xloop
      (br_if $xdone (i32.ge_u (local.get $xi) (i32.const ${N})))
      (call $conv_filter_grad_run
        (i32.add (local.get $V) (i32.mul (local.get $xi) (local.get $vxs))) (local.get $cib)
        (i32.add (local.get $U) (i32.mul (local.get $xi) (local.get $uxs)))
        (i32.or (local.get $count) (i32.shl (local.get $assign) (i32.const 31))) (local.get $Ci) (local.get $Co)
        (i32.add (local.get $Mp) (i32.mul (local.get $xi) (local.get $mxs))))
      (local.set $xi (i32.add (local.get $xi) (i32.const 1)))
      (br $xloop)))
  )`;
}

function filterGradDispatch() {
  return `
  ;; One element of the products M summed over parts partials ps bytes apart, in partial order.
  (func $winograd_sum_parts (param $a i32) (param $parts i32) (param $ps i32) (result v128)
    (local $v v128)
    (local.set $v (v128.load (local.get $a)))
    (block $done (loop $loop
      (local.set $parts (i32.sub (local.get $parts) (i32.const 1)))
      (br_if $done (i32.le_s (local.get $parts) (i32.const 0)))
      (local.set $a (i32.add (local.get $a) (local.get $ps)))
      (local.set $v (f32x4.add (local.get $v) (v128.load (local.get $a))))
      (br $loop)))
    (local.get $v)
  )

  ;; One block of Winograd filter-gradient tiles of a 3×3, stride-1 convolution (channels-last,
  ;; float32): a job for one thread (7 int32 arguments, as the thread pool's calls). prm: int32 words
  ;; [x, H, W, Ci, Co, dy, Ho, Wo, tilesW, tilesH, padTop, padLeft, m, M, parts, dw] (pointers as
  ;; byte offsets; m = 3, 4 or 6); tiles first .. first + count - 1 in (image, tile row, tile column)
  ;; order, their products added into the partial at Mp ([(m+2)², Ci·Co + 16] floats), or assigned
  ;; to it when assign is 1; scratch: this thread's (m+2)²·(count·(Ci + Co) + 32) + (m+2)²·Ci + m²·Co
  ;; floats. Steps: input transforms V[ξ][tile][Ci] (the forward's), output-gradient transforms
  ;; U'[ξ][tile][Co] = A dY Aᵀ, the (m+2)² products M[ξ] += V[ξ]ᵀ · U'[ξ] (conv_filter_grad_run).
  (func (export "winograd_filter_grad_tiles")
    (param $prm i32) (param $first i32) (param $count i32) (param $Mp i32) (param $assign i32) (param $unused5 i32) (param $scratch i32)
    (block $f3 (block $f4 (block $f6
      (br_table $f3 $f3 $f3 $f3 $f4 $f4 $f6 (i32.load offset=48 (local.get $prm))))
      (call $winograd6_filter_grad_tiles (local.get $prm) (local.get $first) (local.get $count) (local.get $Mp) (local.get $assign) (local.get $scratch))
      (return))
      (call $winograd4_filter_grad_tiles (local.get $prm) (local.get $first) (local.get $count) (local.get $Mp) (local.get $assign) (local.get $scratch))
      (return))
    (call $winograd3_filter_grad_tiles (local.get $prm) (local.get $first) (local.get $count) (local.get $Mp) (local.get $assign) (local.get $scratch))
  )

  ;; dW = Gᵀ (Σ partials M) G for the Ci·Co/4 float vectors v0 .. v1 - 1 (prm as above: M, parts, dw),
  ;; as a 7-argument thread-pool call.
  (func (export "winograd_filter_grad_out")
    (param $prm i32) (param $v0 i32) (param $v1 i32) (param $unused3 i32) (param $unused4 i32) (param $unused5 i32) (param $unused6 i32)
    (local $M i32) (local $parts i32) (local $Ci i32) (local $Co i32) (local $dw i32)
    (local.set $Ci (i32.load offset=12 (local.get $prm)))
    (local.set $Co (i32.load offset=16 (local.get $prm)))
    (local.set $M (i32.load offset=52 (local.get $prm)))
    (local.set $parts (i32.load offset=56 (local.get $prm)))
    (local.set $dw (i32.load offset=60 (local.get $prm)))
    (block $f3 (block $f4 (block $f6
      (br_table $f3 $f3 $f3 $f3 $f4 $f4 $f6 (i32.load offset=48 (local.get $prm))))
      (call $winograd6_filter_grad_out (local.get $M) (local.get $parts) (local.get $Ci) (local.get $Co) (local.get $dw) (local.get $v0) (local.get $v1))
      (return))
      (call $winograd4_filter_grad_out (local.get $M) (local.get $parts) (local.get $Ci) (local.get $Co) (local.get $dw) (local.get $v0) (local.get $v1))
      (return))
    (call $winograd3_filter_grad_out (local.get $M) (local.get $parts) (local.get $Ci) (local.get $Co) (local.get $dw) (local.get $v0) (local.get $v1))
  )`;
}

/** The text of ../wasm/winograd.generated.wat: module fields, spliced into training-kernels.wat. */
export function winogradWat() {
  return [
    ';; GENERATED by packages/backend/scripts/winograd-wat.mjs: do not edit. Edit the generator and run',
    ';; `npm run build:wasm -w @catdog/backend`, which rewrites this file and the .wasm binaries.',
    ';; Module fields of wasm/training-kernels.wat, spliced in at its "@include winograd.generated.wat" line.',
    gemm(),
    ...[3, 4, 6].flatMap((m) => [filterTransform(m), inputTile(m), outputTile(m), tiles(m)]),
    dispatch(),
    ...[3, 4, 6].flatMap((m) => [outputGradTile(m), filterGradTransform(m), filterGradTiles(m)]),
    filterGradDispatch(),
    '',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(winogradWat());
