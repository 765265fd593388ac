;; WASM SIMD sampler for @catdog/augment's applyAffine (scipy.ndimage.affine_transform, order 1, with Keras' flips),
;; for the 'nearest' and 'constant' fill modes. Two passes:
;;  1. gather_rgbx: the source, seen through its row and column tables (a packed image, or a nearest resize of a
;;     full-size decode), becomes a packed float32 RGBx image with one extra row and column repeating the last ones,
;;     so that both bilinear neighbours of any clamped point exist (the extra one has weight 0).
;;  2. affine_rgb: per output pixel, its point in f64 lanes [y, x] (the row's first point in scipy's operation order
;;     (m·r + m·c) + offset, then one step of (m01, m11) per pixel), clamped to the image ('nearest'; a no-op inside
;;     it), floor → (y0, x0), fractions (ty, tx) rounded to f32; the four texels' RGB blended in f32 lanes:
;;     top = t00 + (t01 - t00)·tx, bottom = t10 + (t11 - t10)·tx, value = top + (bottom - top)·ty.
;; Results agree with the float64 reference within float32 rounding (tested); each lerp stays within its two
;; inputs, so values stay within [0, 255]. Built by packages/augment/scripts/build-wasm.mjs (wat2wasm, Debian's
;; wabt) into two binaries that differ only in the memory import (a thread's own, or a shared batch memory); they
;; are committed.
(module
  (import "env" "memory" (memory 1 65536 @SHARED@))

  ;; rows/cols: int32 tables of h and w entries: the address of source row i (rows[i]) plus the byte offset of column
  ;; j (cols[j]) is the pixel's R G B (readable 4 bytes past: the caller pads). Writes (h + 1) × (w + 1) float32
  ;; RGBx pixels (16 bytes each) at dst.
  (func (export "gather_rgbx")
    (param $rows i32) (param $cols i32) (param $h i32) (param $w i32) (param $dst i32)
    (local $i i32) (local $j i32) (local $row i32) (local $colEnd i32) (local $c i32)
    (local.set $colEnd (i32.add (local.get $cols) (i32.shl (local.get $w) (i32.const 2))))
    (local.set $i (i32.const 0))
    (block $idone (loop $iloop
      (br_if $idone (i32.gt_u (local.get $i) (local.get $h)))
      (local.set $row (i32.load (i32.add (local.get $rows)
        (i32.shl (select (i32.sub (local.get $h) (i32.const 1)) (local.get $i) (i32.eq (local.get $i) (local.get $h))) (i32.const 2)))))
      (local.set $c (local.get $cols))
      (block $jdone (loop $jloop
        (br_if $jdone (i32.ge_u (local.get $c) (local.get $colEnd)))
        (v128.store (local.get $dst) (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u
          (v128.load32_zero (i32.add (local.get $row) (i32.load (local.get $c))))))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $jloop)))
      ;; the extra column repeats the last one
      (v128.store (local.get $dst) (v128.load (i32.sub (local.get $dst) (i32.const 16))))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $iloop)))
  )

  ;; img: gather_rgbx's (h + 1) × (w + 1) float32 RGBx image; out: h·w pixels, float32 ×3 (u8 = 0; each store writes
  ;; 16 bytes) or uint8 ×3 (u8 = 1; each store writes 4 bytes): the caller leaves 16 bytes after the last pixel.
  ;; constant = 1: points outside [0, h-1] × [0, w-1] get cval (scipy's 'constant'); 0: 'nearest'.
  ;; Float outputs are multiplied by rescale (float32); uint8 outputs are rounded half up and saturated.
  (func (export "affine_rgb")
    (param $img i32) (param $h i32) (param $w i32) (param $out i32)
    (param $m00 f64) (param $m01 f64) (param $m02 f64) (param $m10 f64) (param $m11 f64) (param $m12 f64)
    (param $constant i32) (param $cval f32) (param $rescale f32) (param $flipH i32) (param $flipV i32) (param $u8 i32)
    (local $dr i32) (local $dc i32) (local $r f64) (local $cstart f64) (local $cstep f64)
    (local $pix i32) (local $dst i32) (local $stride i32) (local $p i32) (local $q i32)
    (local $ab v128) (local $mc v128) (local $off v128) (local $maxv v128) (local $scale v128)
    (local $v v128) (local $fl v128) (local $fr v128) (local $tx v128) (local $ty v128) (local $top v128) (local $bot v128)
    (local $acc v128) (local $cv v128) (local $rs v128) (local $pt v128) (local $step v128)
    (local.set $pix (select (i32.const 3) (i32.const 12) (local.get $u8)))
    (local.set $stride (i32.shl (i32.add (local.get $w) (i32.const 1)) (i32.const 4)))
    ;; byte offset of (y0, x0) = y0·stride + x0·16, from the int32 lanes 0 and 2 (see below)
    (local.set $scale (i32x4.replace_lane 0 (v128.const i32x4 0 0 16 0) (local.get $stride)))
    (local.set $mc (f64x2.replace_lane 1 (f64x2.splat (local.get $m01)) (local.get $m11)))
    (local.set $off (f64x2.replace_lane 1 (f64x2.splat (local.get $m02)) (local.get $m12)))
    (local.set $maxv (f64x2.replace_lane 1
      (f64x2.splat (f64.convert_i32_s (i32.sub (local.get $h) (i32.const 1))))
      (f64.convert_i32_s (i32.sub (local.get $w) (i32.const 1)))))
    (local.set $cv (f32x4.splat (local.get $cval)))
    (local.set $rs (f32x4.splat (local.get $rescale)))
    (if (local.get $flipH)
      (then (local.set $cstart (f64.convert_i32_s (i32.sub (local.get $w) (i32.const 1)))) (local.set $cstep (f64.const -1)))
      (else (local.set $cstart (f64.const 0)) (local.set $cstep (f64.const 1))))
    (local.set $step (f64x2.mul (local.get $mc) (f64x2.splat (local.get $cstep))))
    (local.set $dr (i32.const 0))
    (block $rdone (loop $rloop
      (br_if $rdone (i32.ge_u (local.get $dr) (local.get $h)))
      ;; the affine's output row r lands on row dr of the (vertically flipped) result
      (local.set $r (f64.convert_i32_s
        (select (i32.sub (i32.sub (local.get $h) (i32.const 1)) (local.get $dr)) (local.get $dr) (local.get $flipV))))
      (local.set $ab (f64x2.replace_lane 1
        (f64x2.splat (f64.mul (local.get $m00) (local.get $r)))
        (f64.mul (local.get $m10) (local.get $r))))
      (local.set $dst (i32.add (local.get $out) (i32.mul (i32.mul (local.get $dr) (local.get $w)) (local.get $pix))))
      ;; the row's first point in scipy's order; then a step of ±(m01, m11) per pixel (drift ~1e-14 px over a row)
      (local.set $pt (f64x2.add
        (f64x2.add (local.get $ab) (f64x2.mul (local.get $mc) (f64x2.splat (local.get $cstart))))
        (local.get $off)))
      (local.set $dc (i32.const 0))
      ;; The book's case ('nearest' fill, float output), two pixels per iteration: the same arithmetic as the loop
      ;; below without its per-pixel mode tests (about 15% less time). The loop below finishes odd rows and does the rest.
      (if (i32.eqz (i32.or (local.get $constant) (local.get $u8))) (then
        (block $pdone (loop $ploop
          (br_if $pdone (i32.ge_u (i32.add (local.get $dc) (i32.const 1)) (local.get $w)))
          (local.set $v (f64x2.pmax (v128.const f64x2 0 0) (f64x2.pmin (local.get $pt) (local.get $maxv))))
          (local.set $pt (f64x2.add (local.get $pt) (local.get $step)))
          (local.set $fr (f64x2.floor (local.get $v)))
          (local.set $fl (i32x4.mul (f64x2.add (local.get $fr) (v128.const f64x2 0x1p52 0x1p52)) (local.get $scale)))
          (local.set $fr (f32x4.demote_f64x2_zero (f64x2.sub (local.get $v) (local.get $fr))))
          (local.set $ty (i8x16.shuffle 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 (local.get $fr) (local.get $fr)))
          (local.set $tx (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $fr) (local.get $fr)))
          (local.set $p (i32.add (local.get $img)
            (i32.add (i32x4.extract_lane 0 (local.get $fl)) (i32x4.extract_lane 2 (local.get $fl)))))
          (local.set $q (i32.add (local.get $p) (local.get $stride)))
          (local.set $top (v128.load (local.get $p)))
          (local.set $top (f32x4.add (local.get $top)
            (f32x4.mul (f32x4.sub (v128.load offset=16 (local.get $p)) (local.get $top)) (local.get $tx))))
          (local.set $bot (v128.load (local.get $q)))
          (local.set $bot (f32x4.add (local.get $bot)
            (f32x4.mul (f32x4.sub (v128.load offset=16 (local.get $q)) (local.get $bot)) (local.get $tx))))
          (v128.store offset=0 (local.get $dst) (f32x4.mul (f32x4.add (local.get $top)
            (f32x4.mul (f32x4.sub (local.get $bot) (local.get $top)) (local.get $ty))) (local.get $rs)))
          (local.set $v (f64x2.pmax (v128.const f64x2 0 0) (f64x2.pmin (local.get $pt) (local.get $maxv))))
          (local.set $pt (f64x2.add (local.get $pt) (local.get $step)))
          (local.set $fr (f64x2.floor (local.get $v)))
          (local.set $fl (i32x4.mul (f64x2.add (local.get $fr) (v128.const f64x2 0x1p52 0x1p52)) (local.get $scale)))
          (local.set $fr (f32x4.demote_f64x2_zero (f64x2.sub (local.get $v) (local.get $fr))))
          (local.set $ty (i8x16.shuffle 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 (local.get $fr) (local.get $fr)))
          (local.set $tx (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $fr) (local.get $fr)))
          (local.set $p (i32.add (local.get $img)
            (i32.add (i32x4.extract_lane 0 (local.get $fl)) (i32x4.extract_lane 2 (local.get $fl)))))
          (local.set $q (i32.add (local.get $p) (local.get $stride)))
          (local.set $top (v128.load (local.get $p)))
          (local.set $top (f32x4.add (local.get $top)
            (f32x4.mul (f32x4.sub (v128.load offset=16 (local.get $p)) (local.get $top)) (local.get $tx))))
          (local.set $bot (v128.load (local.get $q)))
          (local.set $bot (f32x4.add (local.get $bot)
            (f32x4.mul (f32x4.sub (v128.load offset=16 (local.get $q)) (local.get $bot)) (local.get $tx))))
          (v128.store offset=12 (local.get $dst) (f32x4.mul (f32x4.add (local.get $top)
            (f32x4.mul (f32x4.sub (local.get $bot) (local.get $top)) (local.get $ty))) (local.get $rs)))
          (local.set $dst (i32.add (local.get $dst) (i32.const 24)))
          (local.set $dc (i32.add (local.get $dc) (i32.const 2)))
          (br $ploop)))))
      (block $cdone (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $dc) (local.get $w)))
        (local.set $v (local.get $pt))
        (local.set $pt (f64x2.add (local.get $pt) (local.get $step)))
        (block $blend
          (if (local.get $constant) (then
            (if (v128.any_true (v128.or
                  (f64x2.lt (local.get $v) (v128.const f64x2 0 0))
                  (f64x2.gt (local.get $v) (local.get $maxv))))
              (then (local.set $acc (local.get $cv)) (br $blend)))))
          ;; pmin/pmax (one instruction each; v is never NaN) clamp; floor, and its integer from the low mantissa bits
          ;; of floor + 2^52 (the int32 lanes 0 and 2), cheaper than a saturating conversion
          (local.set $v (f64x2.pmax (v128.const f64x2 0 0) (f64x2.pmin (local.get $v) (local.get $maxv))))
          (local.set $fr (f64x2.floor (local.get $v)))
          (local.set $fl (i32x4.mul (f64x2.add (local.get $fr) (v128.const f64x2 0x1p52 0x1p52)) (local.get $scale)))
          (local.set $fr (f32x4.demote_f64x2_zero (f64x2.sub (local.get $v) (local.get $fr))))
          (local.set $ty (i8x16.shuffle 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 (local.get $fr) (local.get $fr)))
          (local.set $tx (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $fr) (local.get $fr)))
          (local.set $p (i32.add (local.get $img)
            (i32.add (i32x4.extract_lane 0 (local.get $fl)) (i32x4.extract_lane 2 (local.get $fl)))))
          (local.set $q (i32.add (local.get $p) (local.get $stride)))
          (local.set $top (v128.load (local.get $p)))
          (local.set $top (f32x4.add (local.get $top)
            (f32x4.mul (f32x4.sub (v128.load offset=16 (local.get $p)) (local.get $top)) (local.get $tx))))
          (local.set $bot (v128.load (local.get $q)))
          (local.set $bot (f32x4.add (local.get $bot)
            (f32x4.mul (f32x4.sub (v128.load offset=16 (local.get $q)) (local.get $bot)) (local.get $tx))))
          (local.set $acc (f32x4.add (local.get $top)
            (f32x4.mul (f32x4.sub (local.get $bot) (local.get $top)) (local.get $ty)))))
        (if (local.get $u8)
          (then
            ;; round half up and saturate to [0, 255] (cval may be anything); + 2^23 leaves the integer in each lane's
            ;; low byte
            (local.set $fl (f32x4.add
              (f32x4.pmin (v128.const f32x4 255 255 255 255) (f32x4.pmax (v128.const f32x4 0 0 0 0)
                (f32x4.floor (f32x4.add (local.get $acc) (v128.const f32x4 0.5 0.5 0.5 0.5)))))
              (v128.const f32x4 0x1p23 0x1p23 0x1p23 0x1p23)))
            (i32.store (local.get $dst) (i32x4.extract_lane 0
              (i8x16.shuffle 0 4 8 12 0 0 0 0 0 0 0 0 0 0 0 0 (local.get $fl) (local.get $fl)))))
          (else (v128.store (local.get $dst) (f32x4.mul (local.get $acc) (local.get $rs)))))
        (local.set $dst (i32.add (local.get $dst) (local.get $pix)))
        (local.set $dc (i32.add (local.get $dc) (i32.const 1)))
        (br $cloop)))
      (local.set $dr (i32.add (local.get $dr) (i32.const 1)))
      (br $rloop)))
  )
)
