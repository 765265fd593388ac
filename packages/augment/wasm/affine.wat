;; WASM SIMD sampler for @catdog/augment's applyAffine (scipy.ndimage.affine_transform, order 1, with Keras' flips),
;; for the 'nearest' and 'constant' fill modes. One pixel per iteration, its three channels in one vector:
;;   coordinates in f64 lanes [y, x], in scipy's operation order (m·r + m·c) + offset, clamped to the image
;;   ('nearest'; a no-op inside it), floor → (y0, x0), (y1, x1) = min((y0, x0) + 1, (h-1, w-1)), fractions (ty, tx);
;;   the four bilinear weights (1-ty)(1-tx), (1-ty)tx, ty(1-tx), ty·tx computed in f64 as the JS reference does, then
;;   rounded to f32; the four texels (bytes R G B at rows[y] + cols[x] of src) widened to f32 lanes and blended in f32.
;; Results agree with the float64 reference within float32 rounding (tested). Built by
;; packages/augment/scripts/build-wasm.mjs (wat2wasm, Debian's wabt); the binary is committed.
(module
  (memory (export "memory") 1)

  ;; src: packed bytes the tables index (readable 4 bytes past every texel: the caller pads);
  ;; rows/cols: int32 byte offsets of source row i / column j in src (h and w entries);
  ;; out: h·w pixels, float32 ×3 (u8 = 0; each store writes 16 bytes) or uint8 ×3 (u8 = 1; each store writes 4
  ;; bytes): the caller leaves 16 bytes after the last pixel.
  ;; constant = 1: points outside [0, h-1] × [0, w-1] get cval (scipy's 'constant'); 0: 'nearest'.
  ;; Float outputs are multiplied by rescale (float32); uint8 outputs are rounded half up and saturated.
  (func (export "affine_rgb")
    (param $src i32) (param $rows i32) (param $cols i32) (param $h i32) (param $w i32) (param $out i32)
    (param $m00 f64) (param $m01 f64) (param $m02 f64) (param $m10 f64) (param $m11 f64) (param $m12 f64)
    (param $constant i32) (param $cval f32) (param $rescale f32) (param $flipH i32) (param $flipV i32) (param $u8 i32)
    (local $dr i32) (local $dc i32) (local $r f64) (local $c f64) (local $cstart f64) (local $cstep f64)
    (local $pix i32) (local $dst i32) (local $i0 i32) (local $i1 i32)
    (local $p00 i32) (local $p01 i32) (local $p10 i32) (local $p11 i32) (local $rowa i32) (local $rowb i32)
    (local $ab v128) (local $mc v128) (local $off v128) (local $maxv v128) (local $maxi v128)
    (local $v v128) (local $fl v128) (local $ce v128) (local $fr v128) (local $omf v128) (local $wx v128)
    (local $wt v128) (local $acc v128) (local $cv v128) (local $rs v128)
    (local.set $pix (select (i32.const 3) (i32.const 12) (local.get $u8)))
    (local.set $mc (f64x2.replace_lane 1 (f64x2.splat (local.get $m01)) (local.get $m11)))
    (local.set $off (f64x2.replace_lane 1 (f64x2.splat (local.get $m02)) (local.get $m12)))
    (local.set $maxv (f64x2.replace_lane 1
      (f64x2.splat (f64.convert_i32_s (i32.sub (local.get $h) (i32.const 1))))
      (f64.convert_i32_s (i32.sub (local.get $w) (i32.const 1)))))
    ;; (h-1, w-1) in the int32 lanes that hold the low halves of the f64 lanes
    (local.set $maxi (i32x4.replace_lane 2
      (i32x4.replace_lane 0 (v128.const i32x4 0 0x7fffffff 0 0x7fffffff) (i32.sub (local.get $h) (i32.const 1)))
      (i32.sub (local.get $w) (i32.const 1))))
    (local.set $cv (f32x4.splat (local.get $cval)))
    (local.set $rs (f32x4.splat (local.get $rescale)))
    (if (local.get $flipH)
      (then (local.set $cstart (f64.convert_i32_s (i32.sub (local.get $w) (i32.const 1)))) (local.set $cstep (f64.const -1)))
      (else (local.set $cstart (f64.const 0)) (local.set $cstep (f64.const 1))))
    (local.set $dst (local.get $out))
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
      (local.set $c (local.get $cstart))
      (local.set $dc (i32.const 0))
      (block $cdone (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $dc) (local.get $w)))
        (local.set $v (f64x2.add
          (f64x2.add (local.get $ab) (f64x2.mul (local.get $mc) (f64x2.splat (local.get $c))))
          (local.get $off)))
        (block $blend
          (if (local.get $constant) (then
            (if (v128.any_true (v128.or
                  (f64x2.lt (local.get $v) (v128.const f64x2 0 0))
                  (f64x2.gt (local.get $v) (local.get $maxv))))
              (then (local.set $acc (local.get $cv)) (br $blend)))))
          ;; pmin/pmax (one instruction each; v is never NaN) clamp; floor, and its integer from the low mantissa bits
          ;; of floor + 2^52 (lanes 0 and 2 as int32), cheaper than the saturating conversion
          (local.set $v (f64x2.pmax (v128.const f64x2 0 0) (f64x2.pmin (local.get $v) (local.get $maxv))))
          (local.set $fr (f64x2.floor (local.get $v)))
          (local.set $fl (f64x2.add (local.get $fr) (v128.const f64x2 0x1p52 0x1p52)))
          (local.set $fr (f64x2.sub (local.get $v) (local.get $fr)))
          (local.set $ce (i32x4.min_s (i32x4.add (local.get $fl) (v128.const i32x4 1 0 1 0)) (local.get $maxi)))
          (local.set $rowa (i32.load (i32.add (local.get $rows) (i32.shl (i32x4.extract_lane 0 (local.get $fl)) (i32.const 2)))))
          (local.set $rowb (i32.load (i32.add (local.get $rows) (i32.shl (i32x4.extract_lane 0 (local.get $ce)) (i32.const 2)))))
          (local.set $i0 (i32.load (i32.add (local.get $cols) (i32.shl (i32x4.extract_lane 2 (local.get $fl)) (i32.const 2)))))
          (local.set $i1 (i32.load (i32.add (local.get $cols) (i32.shl (i32x4.extract_lane 2 (local.get $ce)) (i32.const 2)))))
          (local.set $p00 (i32.add (i32.add (local.get $src) (local.get $rowa)) (local.get $i0)))
          (local.set $p01 (i32.add (i32.add (local.get $src) (local.get $rowa)) (local.get $i1)))
          (local.set $p10 (i32.add (i32.add (local.get $src) (local.get $rowb)) (local.get $i0)))
          (local.set $p11 (i32.add (i32.add (local.get $src) (local.get $rowb)) (local.get $i1)))
          ;; weights: [1-ty, 1-tx]; wx = [1-tx, tx]; [w00, w01] = (1-ty)·wx, [w10, w11] = ty·wx, then as f32
          (local.set $omf (f64x2.sub (v128.const f64x2 1 1) (local.get $fr)))
          (local.set $wx (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $omf) (local.get $fr)))
          (local.set $wt (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.mul
              (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $omf) (local.get $omf)) (local.get $wx)))
            (f32x4.demote_f64x2_zero (f64x2.mul
              (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $fr) (local.get $fr)) (local.get $wx)))))
          ;; clamped to the bytes' range: float32 weights may sum to 1 + ε
          (local.set $acc (f32x4.pmin (v128.const f32x4 255 255 255 255) (f32x4.pmax (v128.const f32x4 0 0 0 0)
            (f32x4.add
              (f32x4.add
                (f32x4.add
                  (f32x4.mul
                    (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $p00)))))
                    (i8x16.shuffle 0 1 2 3 0 1 2 3 0 1 2 3 0 1 2 3 (local.get $wt) (local.get $wt)))
                  (f32x4.mul
                    (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $p01)))))
                    (i8x16.shuffle 4 5 6 7 4 5 6 7 4 5 6 7 4 5 6 7 (local.get $wt) (local.get $wt))))
                (f32x4.mul
                  (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $p10)))))
                  (i8x16.shuffle 8 9 10 11 8 9 10 11 8 9 10 11 8 9 10 11 (local.get $wt) (local.get $wt))))
              (f32x4.mul
                (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $p11)))))
                (i8x16.shuffle 12 13 14 15 12 13 14 15 12 13 14 15 12 13 14 15 (local.get $wt) (local.get $wt))))))))
        (if (local.get $u8)
          (then
            ;; round half up and saturate to [0, 255]; + 2^23 leaves the integer in each lane's low byte
            (local.set $fl (f32x4.add
              (f32x4.pmin (v128.const f32x4 255 255 255 255) (f32x4.pmax (v128.const f32x4 0 0 0 0)
                (f32x4.floor (f32x4.add (local.get $acc) (v128.const f32x4 0.5 0.5 0.5 0.5)))))
              (v128.const f32x4 0x1p23 0x1p23 0x1p23 0x1p23)))
            (i32.store (local.get $dst) (i32x4.extract_lane 0
              (i8x16.shuffle 0 4 8 12 0 0 0 0 0 0 0 0 0 0 0 0 (local.get $fl) (local.get $fl)))))
          (else (v128.store (local.get $dst) (f32x4.mul (local.get $acc) (local.get $rs)))))
        (local.set $dst (i32.add (local.get $dst) (local.get $pix)))
        (local.set $c (f64.add (local.get $c) (local.get $cstep)))
        (local.set $dc (i32.add (local.get $dc) (i32.const 1)))
        (br $cloop)))
      (local.set $dr (i32.add (local.get $dr) (i32.const 1)))
      (br $rloop)))
  )
)
