;; Hand-written WASM SIMD kernels for @catdog/backend's wasm training kernels.
;; They run on the memory of @tensorflow/tfjs-backend-wasm (imported as env.memory), directly on
;; its tensor buffers: every pointer argument is a byte offset into that memory. No stack, no
;; globals, no data segment: nothing of the host's memory is touched except the buffers passed.
;; This file is the hand-written part; the Winograd functions are generated into
;; winograd.generated.wat (scripts/winograd-wat.mjs) and spliced in at the @include line below.
;; Built by packages/backend/scripts/build-wasm.mjs (wabt from npm) into two binaries that differ
;; only in the memory import: shared (threaded tfjs build) or not.
(module
  (import "env" "memory" (memory 1 65536 @SHARED@))

  ;; MaxPoolGrad for 2×2 windows at stride 2 (MaxPooling2D(2)), channels-last, C % 4 == 0.
  ;; For each window writes all four input positions of dx: dy at the window's first maximum
  ;; (window order (0,0), (0,1), (1,0), (1,1), as the cpu backend), 0 at the others.
  ;; Rows/columns outside every window (odd H or W) are left to the caller.
  (func $maxpool_grad_2x2 (export "maxpool_grad_2x2")
    (param $x i32) (param $dy i32) (param $dx i32)
    (param $B i32) (param $H i32) (param $W i32) (param $C i32) (param $Ho i32) (param $Wo i32)
    (local $cb i32) (local $row i32) (local $b i32) (local $oi i32) (local $oj i32)
    (local $o i32) (local $end i32) (local $gy i32) (local $r0 i32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $m v128)
    (local $e0 v128) (local $e1 v128) (local $e2 v128) (local $taken v128) (local $g v128)
    (local.set $cb (i32.shl (local.get $C) (i32.const 2)))
    (local.set $row (i32.mul (local.get $W) (local.get $cb)))
    (local.set $gy (local.get $dy))
    (local.set $b (i32.const 0))
    (block $bdone (loop $bloop
      (br_if $bdone (i32.ge_u (local.get $b) (local.get $B)))
      (local.set $oi (i32.const 0))
      (block $idone (loop $iloop
        (br_if $idone (i32.ge_u (local.get $oi) (local.get $Ho)))
        ;; byte offset of row 2·oi of image b
        (local.set $r0 (i32.mul
          (i32.add (i32.mul (local.get $b) (local.get $H)) (i32.shl (local.get $oi) (i32.const 1)))
          (local.get $row)))
        (local.set $oj (i32.const 0))
        (block $jdone (loop $jloop
          (br_if $jdone (i32.ge_u (local.get $oj) (local.get $Wo)))
          (local.set $o (i32.add (local.get $r0) (i32.mul (i32.shl (local.get $oj) (i32.const 1)) (local.get $cb))))
          (local.set $end (i32.add (local.get $o) (local.get $cb)))
          (block $cdone (loop $cloop
            (br_if $cdone (i32.ge_u (local.get $o) (local.get $end)))
            (local.set $v0 (v128.load (i32.add (local.get $x) (local.get $o))))
            (local.set $v1 (v128.load (i32.add (i32.add (local.get $x) (local.get $o)) (local.get $cb))))
            (local.set $v2 (v128.load (i32.add (i32.add (local.get $x) (local.get $o)) (local.get $row))))
            (local.set $v3 (v128.load (i32.add (i32.add (i32.add (local.get $x) (local.get $o)) (local.get $row)) (local.get $cb))))
            (local.set $g (v128.load (local.get $gy)))
            (local.set $m (f32x4.max (f32x4.max (local.get $v0) (local.get $v1)) (f32x4.max (local.get $v2) (local.get $v3))))
            (local.set $e0 (f32x4.eq (local.get $v0) (local.get $m)))
            (local.set $e1 (v128.andnot (f32x4.eq (local.get $v1) (local.get $m)) (local.get $e0)))
            (local.set $taken (v128.or (local.get $e0) (local.get $e1)))
            (local.set $e2 (v128.andnot (f32x4.eq (local.get $v2) (local.get $m)) (local.get $taken)))
            (local.set $taken (v128.or (local.get $taken) (local.get $e2)))
            (v128.store (i32.add (local.get $dx) (local.get $o)) (v128.and (local.get $g) (local.get $e0)))
            (v128.store (i32.add (i32.add (local.get $dx) (local.get $o)) (local.get $cb)) (v128.and (local.get $g) (local.get $e1)))
            (v128.store (i32.add (i32.add (local.get $dx) (local.get $o)) (local.get $row)) (v128.and (local.get $g) (local.get $e2)))
            (v128.store (i32.add (i32.add (i32.add (local.get $dx) (local.get $o)) (local.get $row)) (local.get $cb))
              (v128.andnot (local.get $g) (local.get $taken)))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))
            (local.set $gy (i32.add (local.get $gy) (i32.const 16)))
            (br $cloop)))
          (local.set $oj (i32.add (local.get $oj) (i32.const 1)))
          (br $jloop)))
        (local.set $oi (i32.add (local.get $oi) (i32.const 1)))
        (br $iloop)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bloop)))
  )

  ;; The same for `rows` output rows of one image (a worker job's call: 7 arguments), x, dy and dx at the
  ;; first of them: maxpool_grad_2x2 with B = 1, H = 2·rows, Ho = rows.
  (func (export "maxpool_grad_2x2_rows")
    (param $x i32) (param $dy i32) (param $dx i32) (param $rows i32) (param $W i32) (param $C i32) (param $Wo i32)
    (call $maxpool_grad_2x2 (local.get $x) (local.get $dy) (local.get $dx) (i32.const 1)
      (i32.shl (local.get $rows) (i32.const 1)) (local.get $W) (local.get $C) (local.get $rows) (local.get $Wo))
  )

  ;; A·Bᵀ for a small A and a chunk of B's rows (a Dense layer's input gradient dy·Wᵀ, W [N, K]):
  ;;   out[m·os + 4·j .. 4·j + 3] = Σ_k a[m·K + k] · b[(j + 0..3)·K + k]   for m < M, j < n (in steps of 4)
  ;; (byte offsets; os: bytes between rows of out). K % 4 == 0, n % 4 == 0; A has an even number of rows (a zero
  ;; row after an odd M: computed, not stored). Four rows of B × two of A stay in eight accumulators while k runs;
  ;; the eight sums then go out as two vectors of four neighbouring outputs (a 4×4 transpose of partial sums), so no
  ;; transposed copy of W is made and each output is written once.
  (func (export "abt_run")
    (param $a i32) (param $M i32) (param $b i32) (param $n i32) (param $K i32) (param $out i32) (param $os i32)
    (local $kb i32) (local $j i32) (local $m i32) (local $k i32) (local $bj i32) (local $b1 i32) (local $b2 i32)
    (local $b3 i32) (local $am i32) (local $o i32)
    (local $w0 v128) (local $w1 v128) (local $x v128)
    (local $c00 v128) (local $c01 v128) (local $c02 v128) (local $c03 v128)
    (local $c10 v128) (local $c11 v128) (local $c12 v128) (local $c13 v128)
    (local.set $kb (i32.shl (local.get $K) (i32.const 2)))
    (local.set $j (i32.const 0))
    (block $jdone (loop $jloop
      (br_if $jdone (i32.ge_u (local.get $j) (local.get $n)))
      (local.set $bj (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $kb))))
      (local.set $b1 (i32.add (local.get $bj) (local.get $kb)))
      (local.set $b2 (i32.add (local.get $b1) (local.get $kb)))
      (local.set $b3 (i32.add (local.get $b2) (local.get $kb)))
      (local.set $m (i32.const 0))
      (block $mdone (loop $mloop
        (br_if $mdone (i32.ge_u (local.get $m) (local.get $M)))
        (local.set $am (i32.add (local.get $a) (i32.mul (local.get $m) (local.get $kb))))
        (local.set $c00 (v128.const i32x4 0 0 0 0))
        (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c02 (v128.const i32x4 0 0 0 0))
        (local.set $c03 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0))
        (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $c12 (v128.const i32x4 0 0 0 0))
        (local.set $c13 (v128.const i32x4 0 0 0 0))
        (local.set $k (i32.const 0))
        (block $kdone (loop $kloop
          (br_if $kdone (i32.ge_u (local.get $k) (local.get $kb)))
          (local.set $w0 (v128.load (i32.add (local.get $am) (local.get $k))))
          (local.set $w1 (v128.load (i32.add (i32.add (local.get $am) (local.get $kb)) (local.get $k))))
          (local.set $x (v128.load (i32.add (local.get $bj) (local.get $k))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $w0) (local.get $x))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $w1) (local.get $x))))
          (local.set $x (v128.load (i32.add (local.get $b1) (local.get $k))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $w0) (local.get $x))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $w1) (local.get $x))))
          (local.set $x (v128.load (i32.add (local.get $b2) (local.get $k))))
          (local.set $c02 (f32x4.add (local.get $c02) (f32x4.mul (local.get $w0) (local.get $x))))
          (local.set $c12 (f32x4.add (local.get $c12) (f32x4.mul (local.get $w1) (local.get $x))))
          (local.set $x (v128.load (i32.add (local.get $b3) (local.get $k))))
          (local.set $c03 (f32x4.add (local.get $c03) (f32x4.mul (local.get $w0) (local.get $x))))
          (local.set $c13 (f32x4.add (local.get $c13) (f32x4.mul (local.get $w1) (local.get $x))))
          (local.set $k (i32.add (local.get $k) (i32.const 16)))
          (br $kloop)))
        (local.set $o (i32.add (i32.add (local.get $out) (i32.mul (local.get $m) (local.get $os)))
          (i32.shl (local.get $j) (i32.const 2))))
        (v128.store (local.get $o)
          (call $sums4 (local.get $c00) (local.get $c01) (local.get $c02) (local.get $c03)))
        (if (i32.lt_u (i32.add (local.get $m) (i32.const 1)) (local.get $M))
          (then (v128.store (i32.add (local.get $o) (local.get $os))
            (call $sums4 (local.get $c10) (local.get $c11) (local.get $c12) (local.get $c13)))))
        (local.set $m (i32.add (local.get $m) (i32.const 2)))
        (br $mloop)))
      (local.set $j (i32.add (local.get $j) (i32.const 4)))
      (br $jloop)))
  )

  ;; [Σ lanes of p, Σ lanes of q, Σ lanes of r, Σ lanes of s]: a 4×4 transpose folded into the adds.
  (func $sums4 (param $p v128) (param $q v128) (param $r v128) (param $s v128) (result v128)
    (local $u v128) (local $v v128)
    ;; u = [p0+p2, q0+q2, p1+p3, q1+q3], v = the same for r and s
    (local.set $u (f32x4.add
      (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $p) (local.get $q))
      (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $p) (local.get $q))))
    (local.set $v (f32x4.add
      (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $r) (local.get $s))
      (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $r) (local.get $s))))
    (f32x4.add
      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $u) (local.get $v))
      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $u) (local.get $v)))
  )

  ;; out[c] = Σ_r x[r, c] for r < rows, channels-last rows of C floats, C % 4 == 0 (the caller
  ;; sums blocks of rows in float32 here and the blocks in float64).
  (func (export "sum_rows")
    (param $x i32) (param $out i32) (param $rows i32) (param $C i32)
    (local $cb i32) (local $o i32) (local $end i32) (local $p i32) (local $pend i32)
    (local.set $cb (i32.shl (local.get $C) (i32.const 2)))
    ;; out = first row (rows ≥ 1), then add the others
    (local.set $o (i32.const 0))
    (block $zdone (loop $zloop
      (br_if $zdone (i32.ge_u (local.get $o) (local.get $cb)))
      (v128.store (i32.add (local.get $out) (local.get $o)) (v128.load (i32.add (local.get $x) (local.get $o))))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (br $zloop)))
    (local.set $p (i32.add (local.get $x) (local.get $cb)))
    (local.set $pend (i32.add (local.get $x) (i32.mul (local.get $rows) (local.get $cb))))
    (block $rdone (loop $rloop
      (br_if $rdone (i32.ge_u (local.get $p) (local.get $pend)))
      (local.set $o (i32.const 0))
      (block $cdone (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $o) (local.get $cb)))
        (v128.store (i32.add (local.get $out) (local.get $o))
          (f32x4.add (v128.load (i32.add (local.get $out) (local.get $o))) (v128.load (i32.add (local.get $p) (local.get $o)))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $cloop)))
      (local.set $p (i32.add (local.get $p) (local.get $cb)))
      (br $rloop)))
  )
  ;; Filter gradient of a convolution, one run of output pixels for one filter tap:
  ;;   dw[ci, co] += Σ_(p<n) x[p·xs + ci] · dy[p·Co + co]
  ;; x: the tap's input pixel for the first output pixel (xs: bytes between the inputs of
  ;; consecutive output pixels, i.e. stride·Ci·4), dy: the run's first output pixel, dw: the tap's
  ;; [Ci, Co] block. Co % 16 == 0. Registers hold a 2×16 block of dw while the run streams by, so
  ;; no operand is packed or copied (the point for first layers: dy is huge, Ci tiny). With n's sign
  ;; bit set, dw is assigned instead (n | 0x80000000).
  (func $conv_filter_grad_run (export "conv_filter_grad_run")
    (param $x i32) (param $xs i32) (param $dy i32) (param $n i32) (param $Ci i32) (param $Co i32) (param $dw i32)
    (local $cob i32) (local $ci i32) (local $co i32) (local $p i32) (local $xp i32) (local $dp i32)
    (local $w0 i32) (local $w1 i32) (local $set i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local $s0 v128) (local $s1 v128) (local $d0 v128) (local $d1 v128) (local $d2 v128) (local $d3 v128)
    ;; n with its sign bit set: dw = Σ … (the block is written, not read: no zeroing pass over dw first)
    (local.set $set (i32.shr_u (local.get $n) (i32.const 31)))
    (local.set $n (i32.and (local.get $n) (i32.const 0x7fffffff)))
    (local.set $cob (i32.shl (local.get $Co) (i32.const 2)))
    (local.set $ci (i32.const 0))
    ;; pairs of input channels
    (block $pdone (loop $ploop
      (br_if $pdone (i32.ge_u (i32.add (local.get $ci) (i32.const 1)) (local.get $Ci)))
      (local.set $co (i32.const 0))
      (block $codone (loop $coloop
        (br_if $codone (i32.ge_u (local.get $co) (local.get $cob)))
        (local.set $w0 (i32.add (i32.add (local.get $dw) (i32.mul (local.get $ci) (local.get $cob))) (local.get $co)))
        (local.set $w1 (i32.add (local.get $w0) (local.get $cob)))
        (if (local.get $set)
          (then
            (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
            (local.set $a2 (v128.const i32x4 0 0 0 0)) (local.set $a3 (v128.const i32x4 0 0 0 0))
            (local.set $a4 (v128.const i32x4 0 0 0 0)) (local.set $a5 (v128.const i32x4 0 0 0 0))
            (local.set $a6 (v128.const i32x4 0 0 0 0)) (local.set $a7 (v128.const i32x4 0 0 0 0)))
          (else
            (local.set $a0 (v128.load offset=0 (local.get $w0)))
            (local.set $a1 (v128.load offset=16 (local.get $w0)))
            (local.set $a2 (v128.load offset=32 (local.get $w0)))
            (local.set $a3 (v128.load offset=48 (local.get $w0)))
            (local.set $a4 (v128.load offset=0 (local.get $w1)))
            (local.set $a5 (v128.load offset=16 (local.get $w1)))
            (local.set $a6 (v128.load offset=32 (local.get $w1)))
            (local.set $a7 (v128.load offset=48 (local.get $w1)))))
        (local.set $xp (i32.add (local.get $x) (i32.shl (local.get $ci) (i32.const 2))))
        (local.set $dp (i32.add (local.get $dy) (local.get $co)))
        (local.set $p (local.get $n))
        (block $rdone (loop $rloop
          (br_if $rdone (i32.eqz (local.get $p)))
          (local.set $s0 (v128.load32_splat (local.get $xp)))
          (local.set $s1 (v128.load32_splat offset=4 (local.get $xp)))
          (local.set $d0 (v128.load offset=0 (local.get $dp)))
          (local.set $d1 (v128.load offset=16 (local.get $dp)))
          (local.set $d2 (v128.load offset=32 (local.get $dp)))
          (local.set $d3 (v128.load offset=48 (local.get $dp)))
          (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s0) (local.get $d0))))
          (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s0) (local.get $d1))))
          (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s0) (local.get $d2))))
          (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s0) (local.get $d3))))
          (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s1) (local.get $d0))))
          (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s1) (local.get $d1))))
          (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $s1) (local.get $d2))))
          (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $s1) (local.get $d3))))
          (local.set $xp (i32.add (local.get $xp) (local.get $xs)))
          (local.set $dp (i32.add (local.get $dp) (local.get $cob)))
          (local.set $p (i32.sub (local.get $p) (i32.const 1)))
          (br $rloop)))
        (v128.store offset=0 (local.get $w0) (local.get $a0))
        (v128.store offset=16 (local.get $w0) (local.get $a1))
        (v128.store offset=32 (local.get $w0) (local.get $a2))
        (v128.store offset=48 (local.get $w0) (local.get $a3))
        (v128.store offset=0 (local.get $w1) (local.get $a4))
        (v128.store offset=16 (local.get $w1) (local.get $a5))
        (v128.store offset=32 (local.get $w1) (local.get $a6))
        (v128.store offset=48 (local.get $w1) (local.get $a7))
        (local.set $co (i32.add (local.get $co) (i32.const 64)))
        (br $coloop)))
      (local.set $ci (i32.add (local.get $ci) (i32.const 2)))
      (br $ploop)))
    ;; the last input channel when Ci is odd
    (if (i32.lt_u (local.get $ci) (local.get $Ci)) (then
      (local.set $co (i32.const 0))
      (block $codone (loop $coloop
        (br_if $codone (i32.ge_u (local.get $co) (local.get $cob)))
        (local.set $w0 (i32.add (i32.add (local.get $dw) (i32.mul (local.get $ci) (local.get $cob))) (local.get $co)))
        (if (local.get $set)
          (then
            (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
            (local.set $a2 (v128.const i32x4 0 0 0 0)) (local.set $a3 (v128.const i32x4 0 0 0 0)))
          (else
            (local.set $a0 (v128.load offset=0 (local.get $w0)))
            (local.set $a1 (v128.load offset=16 (local.get $w0)))
            (local.set $a2 (v128.load offset=32 (local.get $w0)))
            (local.set $a3 (v128.load offset=48 (local.get $w0)))))
        (local.set $xp (i32.add (local.get $x) (i32.shl (local.get $ci) (i32.const 2))))
        (local.set $dp (i32.add (local.get $dy) (local.get $co)))
        (local.set $p (local.get $n))
        (block $rdone (loop $rloop
          (br_if $rdone (i32.eqz (local.get $p)))
          (local.set $s0 (v128.load32_splat (local.get $xp)))
          (local.set $d0 (v128.load offset=0 (local.get $dp)))
          (local.set $d1 (v128.load offset=16 (local.get $dp)))
          (local.set $d2 (v128.load offset=32 (local.get $dp)))
          (local.set $d3 (v128.load offset=48 (local.get $dp)))
          (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s0) (local.get $d0))))
          (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s0) (local.get $d1))))
          (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s0) (local.get $d2))))
          (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s0) (local.get $d3))))
          (local.set $xp (i32.add (local.get $xp) (local.get $xs)))
          (local.set $dp (i32.add (local.get $dp) (local.get $cob)))
          (local.set $p (i32.sub (local.get $p) (i32.const 1)))
          (br $rloop)))
        (v128.store offset=0 (local.get $w0) (local.get $a0))
        (v128.store offset=16 (local.get $w0) (local.get $a1))
        (v128.store offset=32 (local.get $w0) (local.get $a2))
        (v128.store offset=48 (local.get $w0) (local.get $a3))
        (local.set $co (i32.add (local.get $co) (i32.const 64)))
        (br $coloop)))))
  )

  ;; ReLU gradient: out[i] = x[i] > 0 ? dy[i] : 0 for `vectors` groups of 4 floats.
  (func (export "relu_grad")
    (param $x i32) (param $dy i32) (param $out i32) (param $vectors i32)
    (local $o i32) (local $end i32)
    (local.set $end (i32.shl (local.get $vectors) (i32.const 4)))
    (local.set $o (i32.const 0))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
      (v128.store (i32.add (local.get $out) (local.get $o))
        (v128.and
          (v128.load (i32.add (local.get $dy) (local.get $o)))
          (f32x4.gt (v128.load (i32.add (local.get $x) (local.get $o))) (v128.const f32x4 0 0 0 0))))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (br $loop)))
  )

  ;; Input gradient of a convolution, one run of output pixels for one filter tap:
  ;;   dx[p·dxs + ci] += Σ_co dy[p·Co + co] · wt[co·Ci + ci]   for p < n
  ;; dy: the run's first output pixel, wt: the tap's filter transposed to [Co, Ci], dx: the input
  ;; pixel the run's first output reads through this tap (dxs: bytes between the inputs of
  ;; consecutive outputs, stride·Ci·4). Ci % 16 == 0. Two pixels × 16 input channels of dx stay
  ;; in registers while the reduction over Co runs.
  (func (export "conv_input_grad_run")
    (param $dy i32) (param $n i32) (param $Co i32) (param $wt i32) (param $Ci i32) (param $dx i32) (param $dxs i32)
    (call $product_run (local.get $dy) (local.get $n) (local.get $Co) (local.get $wt) (local.get $Ci) (local.get $dx)
      (local.get $dxs) (i32.const 0) (i32.const 0))
  )

  ;; Pointwise (1×1) convolution with bias and activation, one run of pixels (FusedConv2D's direct plan):
  ;;   y[p·Co + co] = act(bias[co] + Σ_ci x[p·Ci + ci] · w[ci·Co + co])   for p < n & 0x3fffffff
  ;; act = n >>> 30: 0 linear, 1 ReLU, 2 ReLU6. Co % 16 == 0. The same loop as the input gradient above
  ;; (x for dy, w for wt), its accumulators starting from the bias instead of y.
  (func (export "pointwise_run")
    (param $x i32) (param $n i32) (param $Ci i32) (param $w i32) (param $Co i32) (param $y i32) (param $bias i32)
    (call $product_run (local.get $x) (i32.and (local.get $n) (i32.const 0x3fffffff)) (local.get $Ci) (local.get $w)
      (local.get $Co) (local.get $y) (i32.shl (local.get $Co) (i32.const 2)) (local.get $bias)
      (i32.shr_u (local.get $n) (i32.const 30)))
  )

  ;; The product loop of both: bias = 0 adds into dx; else the accumulators start from bias[ci]
  ;; (a byte offset: 0 is never a tensor's) and act (1 ReLU, 2 ReLU6) clamps them as they are stored.
  (func $product_run
    (param $dy i32) (param $n i32) (param $Co i32) (param $wt i32) (param $Ci i32) (param $dx i32) (param $dxs i32)
    (param $bias i32) (param $act i32)
    (local $cib i32) (local $cob i32) (local $ci i32) (local $p i32) (local $co i32)
    (local $x0 i32) (local $x1 i32) (local $g0 i32) (local $g1 i32) (local $wp i32) (local $gend i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local $s0 v128) (local $s1 v128) (local $w0 v128) (local $w1 v128) (local $w2 v128) (local $w3 v128)
    (local.set $cib (i32.shl (local.get $Ci) (i32.const 2)))
    (local.set $cob (i32.shl (local.get $Co) (i32.const 2)))
    (local.set $ci (i32.const 0))
    (block $cidone (loop $ciloop
      (br_if $cidone (i32.ge_u (local.get $ci) (local.get $cib)))
      (local.set $p (i32.const 0))
      ;; pairs of pixels
      (block $pdone (loop $ploop
        (br_if $pdone (i32.ge_u (i32.add (local.get $p) (i32.const 1)) (local.get $n)))
        (local.set $x0 (i32.add (i32.add (local.get $dx) (i32.mul (local.get $p) (local.get $dxs))) (local.get $ci)))
        (local.set $x1 (i32.add (local.get $x0) (local.get $dxs)))
        (if (local.get $bias) (then
          (local.set $a0 (v128.load offset=0 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a1 (v128.load offset=16 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a2 (v128.load offset=32 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a3 (v128.load offset=48 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a4 (local.get $a0)) (local.set $a5 (local.get $a1))
          (local.set $a6 (local.get $a2)) (local.set $a7 (local.get $a3)))
        (else
          (local.set $a0 (v128.load offset=0 (local.get $x0)))
          (local.set $a1 (v128.load offset=16 (local.get $x0)))
          (local.set $a2 (v128.load offset=32 (local.get $x0)))
          (local.set $a3 (v128.load offset=48 (local.get $x0)))
          (local.set $a4 (v128.load offset=0 (local.get $x1)))
          (local.set $a5 (v128.load offset=16 (local.get $x1)))
          (local.set $a6 (v128.load offset=32 (local.get $x1)))
          (local.set $a7 (v128.load offset=48 (local.get $x1)))))
        (local.set $g0 (i32.add (local.get $dy) (i32.mul (local.get $p) (local.get $cob))))
        (local.set $g1 (i32.add (local.get $g0) (local.get $cob)))
        (local.set $gend (local.get $g1))
        (local.set $wp (i32.add (local.get $wt) (local.get $ci)))
        (block $codone (loop $coloop
          (br_if $codone (i32.ge_u (local.get $g0) (local.get $gend)))
            (local.set $s0 (v128.load32_splat (local.get $g0)))
            (local.set $s1 (v128.load32_splat (local.get $g1)))
            (local.set $w0 (v128.load offset=0 (local.get $wp)))
            (local.set $w1 (v128.load offset=16 (local.get $wp)))
            (local.set $w2 (v128.load offset=32 (local.get $wp)))
            (local.set $w3 (v128.load offset=48 (local.get $wp)))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s0) (local.get $w0))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s0) (local.get $w1))))
            (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s0) (local.get $w2))))
            (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s0) (local.get $w3))))
            (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s1) (local.get $w0))))
            (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s1) (local.get $w1))))
            (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $s1) (local.get $w2))))
            (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $s1) (local.get $w3))))
          (local.set $g0 (i32.add (local.get $g0) (i32.const 4)))
          (local.set $g1 (i32.add (local.get $g1) (i32.const 4)))
          (local.set $wp (i32.add (local.get $wp) (local.get $cib)))
          (br $coloop)))
        (if (local.get $act) (then
          (local.set $a0 (f32x4.max (local.get $a0) (v128.const f32x4 0 0 0 0)))
          (local.set $a1 (f32x4.max (local.get $a1) (v128.const f32x4 0 0 0 0)))
          (local.set $a2 (f32x4.max (local.get $a2) (v128.const f32x4 0 0 0 0)))
          (local.set $a3 (f32x4.max (local.get $a3) (v128.const f32x4 0 0 0 0)))
          (local.set $a4 (f32x4.max (local.get $a4) (v128.const f32x4 0 0 0 0)))
          (local.set $a5 (f32x4.max (local.get $a5) (v128.const f32x4 0 0 0 0)))
          (local.set $a6 (f32x4.max (local.get $a6) (v128.const f32x4 0 0 0 0)))
          (local.set $a7 (f32x4.max (local.get $a7) (v128.const f32x4 0 0 0 0)))
          (if (i32.eq (local.get $act) (i32.const 2)) (then
            (local.set $a0 (f32x4.min (local.get $a0) (v128.const f32x4 6 6 6 6)))
            (local.set $a1 (f32x4.min (local.get $a1) (v128.const f32x4 6 6 6 6)))
            (local.set $a2 (f32x4.min (local.get $a2) (v128.const f32x4 6 6 6 6)))
            (local.set $a3 (f32x4.min (local.get $a3) (v128.const f32x4 6 6 6 6)))
            (local.set $a4 (f32x4.min (local.get $a4) (v128.const f32x4 6 6 6 6)))
            (local.set $a5 (f32x4.min (local.get $a5) (v128.const f32x4 6 6 6 6)))
            (local.set $a6 (f32x4.min (local.get $a6) (v128.const f32x4 6 6 6 6)))
            (local.set $a7 (f32x4.min (local.get $a7) (v128.const f32x4 6 6 6 6)))))))
        (v128.store offset=0 (local.get $x0) (local.get $a0))
          (v128.store offset=16 (local.get $x0) (local.get $a1))
          (v128.store offset=32 (local.get $x0) (local.get $a2))
          (v128.store offset=48 (local.get $x0) (local.get $a3))
        (v128.store offset=0 (local.get $x1) (local.get $a4))
          (v128.store offset=16 (local.get $x1) (local.get $a5))
          (v128.store offset=32 (local.get $x1) (local.get $a6))
          (v128.store offset=48 (local.get $x1) (local.get $a7))
        (local.set $p (i32.add (local.get $p) (i32.const 2)))
        (br $ploop)))
      ;; the last pixel when n is odd
      (if (i32.lt_u (local.get $p) (local.get $n)) (then
        (local.set $x0 (i32.add (i32.add (local.get $dx) (i32.mul (local.get $p) (local.get $dxs))) (local.get $ci)))
        (if (local.get $bias) (then
          (local.set $a0 (v128.load offset=0 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a1 (v128.load offset=16 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a2 (v128.load offset=32 (i32.add (local.get $bias) (local.get $ci))))
          (local.set $a3 (v128.load offset=48 (i32.add (local.get $bias) (local.get $ci)))))
        (else
          (local.set $a0 (v128.load offset=0 (local.get $x0)))
          (local.set $a1 (v128.load offset=16 (local.get $x0)))
          (local.set $a2 (v128.load offset=32 (local.get $x0)))
          (local.set $a3 (v128.load offset=48 (local.get $x0)))))
        (local.set $g0 (i32.add (local.get $dy) (i32.mul (local.get $p) (local.get $cob))))
        (local.set $gend (i32.add (local.get $g0) (local.get $cob)))
        (local.set $wp (i32.add (local.get $wt) (local.get $ci)))
        (block $codone (loop $coloop
          (br_if $codone (i32.ge_u (local.get $g0) (local.get $gend)))
            (local.set $s0 (v128.load32_splat (local.get $g0)))
            (local.set $w0 (v128.load offset=0 (local.get $wp)))
            (local.set $w1 (v128.load offset=16 (local.get $wp)))
            (local.set $w2 (v128.load offset=32 (local.get $wp)))
            (local.set $w3 (v128.load offset=48 (local.get $wp)))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s0) (local.get $w0))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s0) (local.get $w1))))
            (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s0) (local.get $w2))))
            (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s0) (local.get $w3))))
          (local.set $g0 (i32.add (local.get $g0) (i32.const 4)))
          (local.set $wp (i32.add (local.get $wp) (local.get $cib)))
          (br $coloop)))
        (if (local.get $act) (then
          (local.set $a0 (f32x4.max (local.get $a0) (v128.const f32x4 0 0 0 0)))
          (local.set $a1 (f32x4.max (local.get $a1) (v128.const f32x4 0 0 0 0)))
          (local.set $a2 (f32x4.max (local.get $a2) (v128.const f32x4 0 0 0 0)))
          (local.set $a3 (f32x4.max (local.get $a3) (v128.const f32x4 0 0 0 0)))
          (if (i32.eq (local.get $act) (i32.const 2)) (then
            (local.set $a0 (f32x4.min (local.get $a0) (v128.const f32x4 6 6 6 6)))
            (local.set $a1 (f32x4.min (local.get $a1) (v128.const f32x4 6 6 6 6)))
            (local.set $a2 (f32x4.min (local.get $a2) (v128.const f32x4 6 6 6 6)))
            (local.set $a3 (f32x4.min (local.get $a3) (v128.const f32x4 6 6 6 6)))))))
        (v128.store offset=0 (local.get $x0) (local.get $a0))
          (v128.store offset=16 (local.get $x0) (local.get $a1))
          (v128.store offset=32 (local.get $x0) (local.get $a2))
          (v128.store offset=48 (local.get $x0) (local.get $a3))))
      (local.set $ci (i32.add (local.get $ci) (i32.const 64)))
      (br $ciloop)))
  )
  ;; ClipByValue gradient: out[i] = lo <= x[i] <= hi ? dy[i] : 0 for `vectors` groups of 4 floats
  ;; (NaN x gives 0, as tfjs-core's where(logicalAnd(x >= lo, x <= hi), dy, 0)).
  (func (export "clip_grad")
    (param $x i32) (param $dy i32) (param $out i32) (param $vectors i32) (param $lo f32) (param $hi f32)
    (local $o i32) (local $end i32) (local $l v128) (local $h v128) (local $v v128)
    (local.set $l (f32x4.splat (local.get $lo)))
    (local.set $h (f32x4.splat (local.get $hi)))
    (local.set $end (i32.shl (local.get $vectors) (i32.const 4)))
    (local.set $o (i32.const 0))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
      (local.set $v (v128.load (i32.add (local.get $x) (local.get $o))))
      (v128.store (i32.add (local.get $out) (local.get $o))
        (v128.and
          (v128.load (i32.add (local.get $dy) (local.get $o)))
          (v128.and (f32x4.ge (local.get $v) (local.get $l)) (f32x4.le (local.get $v) (local.get $h)))))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (br $loop)))
  )

  ;; RMSprop update (tfjs-core's RMSPropOptimizer, not centered) of float vectors v0 .. v1 - 1, in its
  ;; float32 operation order:
  ;;   ms' = ms·ρ + (g·g)·(1-ρ);  mom' = mom·μ + (g·lr) / sqrt(ms' + ε);  var' = var - mom'
  ;; prm: byte offset of the parameters: int32 g, ms, mom, var, ms', mom', var' (byte offsets), then
  ;; float32 ρ, 1-ρ, lr, ε, μ. Seven int32 arguments, so thread-pool jobs can run it.
  (func (export "rmsprop_run")
    (param $prm i32) (param $v0 i32) (param $v1 i32) (param $a3 i32) (param $a4 i32) (param $a5 i32) (param $a6 i32)
    (local $o i32) (local $end i32)
    (local $g i32) (local $ms i32) (local $mom i32) (local $var i32) (local $oms i32) (local $omom i32) (local $ovar i32)
    (local $rho v128) (local $omr v128) (local $lr v128) (local $eps v128) (local $mu v128)
    (local $gv v128) (local $msv v128) (local $momv v128)
    (local.set $g (i32.load offset=0 (local.get $prm)))
    (local.set $ms (i32.load offset=4 (local.get $prm)))
    (local.set $mom (i32.load offset=8 (local.get $prm)))
    (local.set $var (i32.load offset=12 (local.get $prm)))
    (local.set $oms (i32.load offset=16 (local.get $prm)))
    (local.set $omom (i32.load offset=20 (local.get $prm)))
    (local.set $ovar (i32.load offset=24 (local.get $prm)))
    (local.set $rho (v128.load32_splat offset=28 (local.get $prm)))
    (local.set $omr (v128.load32_splat offset=32 (local.get $prm)))
    (local.set $lr (v128.load32_splat offset=36 (local.get $prm)))
    (local.set $eps (v128.load32_splat offset=40 (local.get $prm)))
    (local.set $mu (v128.load32_splat offset=44 (local.get $prm)))
    (local.set $o (i32.shl (local.get $v0) (i32.const 4)))
    (local.set $end (i32.shl (local.get $v1) (i32.const 4)))
    (block $done (loop $loop
      (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
      (local.set $gv (v128.load (i32.add (local.get $g) (local.get $o))))
      (local.set $msv (f32x4.add
        (f32x4.mul (v128.load (i32.add (local.get $ms) (local.get $o))) (local.get $rho))
        (f32x4.mul (f32x4.mul (local.get $gv) (local.get $gv)) (local.get $omr))))
      (v128.store (i32.add (local.get $oms) (local.get $o)) (local.get $msv))
      (local.set $momv (f32x4.add
        (f32x4.mul (v128.load (i32.add (local.get $mom) (local.get $o))) (local.get $mu))
        (f32x4.div (f32x4.mul (local.get $gv) (local.get $lr)) (f32x4.sqrt (f32x4.add (local.get $msv) (local.get $eps))))))
      (v128.store (i32.add (local.get $omom) (local.get $o)) (local.get $momv))
      (v128.store (i32.add (local.get $ovar) (local.get $o))
        (f32x4.sub (v128.load (i32.add (local.get $var) (local.get $o))) (local.get $momv)))
      (local.set $o (i32.add (local.get $o) (i32.const 16)))
      (br $loop)))
  )

  ;; Depthwise conv input gradient (depth multiplier 1), one run of output positions for one tap:
  ;;   dx[p·xs + c] += dy[p·ys + c] · w[c]   for p < n, c < C (C % 4 == 0; xs, ys in bytes)
  (func (export "dw_input_grad_run")
    (param $dy i32) (param $ys i32) (param $w i32) (param $n i32) (param $C i32) (param $xs i32) (param $dx i32)
    (local $c i32) (local $cend i32) (local $p i32) (local $wv v128) (local $xp i32) (local $yp i32)
    (local.set $cend (i32.shl (local.get $C) (i32.const 2)))
    (local.set $c (i32.const 0))
    (block $cdone (loop $cloop
      (br_if $cdone (i32.ge_u (local.get $c) (local.get $cend)))
      (local.set $wv (v128.load (i32.add (local.get $w) (local.get $c))))
      (local.set $xp (i32.add (local.get $dx) (local.get $c)))
      (local.set $yp (i32.add (local.get $dy) (local.get $c)))
      (local.set $p (local.get $n))
      (block $pdone (loop $ploop
        (br_if $pdone (i32.eqz (local.get $p)))
        (v128.store (local.get $xp)
          (f32x4.add (v128.load (local.get $xp)) (f32x4.mul (v128.load (local.get $yp)) (local.get $wv))))
        (local.set $xp (i32.add (local.get $xp) (local.get $xs)))
        (local.set $yp (i32.add (local.get $yp) (local.get $ys)))
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (br $ploop)))
      (local.set $c (i32.add (local.get $c) (i32.const 16)))
      (br $cloop)))
  )

  ;; Depthwise conv filter gradient (depth multiplier 1), one run of output positions for one tap:
  ;;   acc[c] += Σ_(p<n) x[p·xs + c] · dy[p·ys + c]   (C % 4 == 0; xs, ys in bytes)
  (func (export "dw_filter_grad_run")
    (param $x i32) (param $xs i32) (param $dy i32) (param $ys i32) (param $n i32) (param $C i32) (param $acc i32)
    (local $c i32) (local $cend i32) (local $p i32) (local $s v128) (local $xp i32) (local $yp i32)
    (local.set $cend (i32.shl (local.get $C) (i32.const 2)))
    (local.set $c (i32.const 0))
    (block $cdone (loop $cloop
      (br_if $cdone (i32.ge_u (local.get $c) (local.get $cend)))
      (local.set $s (v128.load (i32.add (local.get $acc) (local.get $c))))
      (local.set $xp (i32.add (local.get $x) (local.get $c)))
      (local.set $yp (i32.add (local.get $dy) (local.get $c)))
      (local.set $p (local.get $n))
      (block $pdone (loop $ploop
        (br_if $pdone (i32.eqz (local.get $p)))
        (local.set $s (f32x4.add (local.get $s) (f32x4.mul (v128.load (local.get $xp)) (v128.load (local.get $yp)))))
        (local.set $xp (i32.add (local.get $xp) (local.get $xs)))
        (local.set $yp (i32.add (local.get $yp) (local.get $ys)))
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (br $ploop)))
      (v128.store (i32.add (local.get $acc) (local.get $c)) (local.get $s))
      (local.set $c (i32.add (local.get $c) (i32.const 16)))
      (br $cloop)))
  )

  ;; The Winograd convolutions are generated: the build splices winograd.generated.wat in here.
  ;; @include winograd.generated.wat
)
