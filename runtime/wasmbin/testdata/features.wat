;; features.wat: one module that uses what Meter must renumber or step over,
;; for wasmbin's tests. Every export takes nothing and returns an i64 that
;; the test knows; metered and unmetered runs must agree.
(module
  (type $i2i (func (param i32) (result i32)))
  (import "env" "add1" (func $add1 (param i32) (result i32)))
  (import "env" "g0" (global $g0 i32))
  (memory 1)
  (table $t 8 funcref)
  (table $t2 4 funcref)
  (global $started (mut i32) (i32.const 0))
  (global $depth (export "depth") (mut i32) (i32.const 0))
  (global $fref funcref (ref.func $triple))
  (data $d "\01\02\03\04\05\06\07\08")

  ;; element segments in several encodings
  (elem (i32.const 0) $double $triple)
  (elem (table $t2) (i32.const 1) func $triple $double)
  (elem $passive func $double $triple $add1)
  (elem (i32.const 4) funcref (ref.func $fact) (ref.null func))
  (elem declare func $square)
  (elem $passive2 funcref (ref.func $square) (ref.null func))
  (elem (table $t2) (i32.const 3) funcref (ref.func $fact))
  (elem declare funcref (ref.func $double))

  (func $start (global.set $started (i32.const 42)))
  (start $start)

  (func $double (type $i2i) (i32.mul (local.get 0) (i32.const 2)))
  (func $triple (type $i2i) (i32.mul (local.get 0) (i32.const 3)))
  (func $square (type $i2i) (i32.mul (local.get 0) (local.get 0)))
  (func $fact (type $i2i)
    (if (result i32) (i32.le_s (local.get 0) (i32.const 1))
      (then (i32.const 1))
      (else (i32.mul (local.get 0) (call $fact (i32.sub (local.get 0) (i32.const 1)))))))

  ;; a loop with parameters and results (multi-value), br_table, typed select
  (func (export "loops") (result i64)
    (local $i i32) (local $acc i64)
    (i32.const 0) (i64.const 0)
    (loop $l (param i32 i64) (result i32 i64)
      (local.set $acc)
      (local.set $i)
      (block $b2 (block $b1 (block $b0
        (br_table $b0 $b1 $b2 (i32.rem_u (local.get $i) (i32.const 3))))
        (local.set $acc (i64.add (local.get $acc) (i64.const 1))) (br $b2))
        (local.set $acc (i64.add (local.get $acc) (i64.const 100))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.get $i) (local.get $acc)
      (br_if $l (i32.lt_u (local.get $i) (i32.const 30))))
    (local.set $acc) (drop)
    (select (result i64) (local.get $acc) (i64.const -1) (i32.const 1)))

  (func (export "indirect") (result i64)
    (i64.extend_i32_s (i32.add (i32.add (i32.add (i32.add
      (call_indirect $t (type $i2i) (i32.const 7) (i32.const 0))   ;; double
      (call_indirect $t (type $i2i) (i32.const 7) (i32.const 1)))  ;; triple
      (call_indirect $t2 (type $i2i) (i32.const 5) (i32.const 2))) ;; double
      (call_indirect $t2 (type $i2i) (i32.const 5) (i32.const 3))) ;; fact
      (call_indirect $t (type $i2i) (i32.const 6) (i32.const 4))))) ;; fact

  (func (export "tables") (result i64)
    (table.init $t $passive (i32.const 5) (i32.const 0) (i32.const 3))
    (table.init $t2 $passive2 (i32.const 0) (i32.const 0) (i32.const 1))
    (elem.drop $passive2)
    (table.set $t (i32.const 3) (ref.func $square))
    (table.set $t (i32.const 2) (global.get $fref))
    (i64.extend_i32_s (i32.add (i32.add (i32.add (i32.add (i32.add
      (call_indirect $t (type $i2i) (i32.const 10) (i32.const 5))  ;; double
      (call_indirect $t (type $i2i) (i32.const 10) (i32.const 7))) ;; add1 (import)
      (call_indirect $t (type $i2i) (i32.const 9) (i32.const 3)))  ;; square
      (call_indirect $t (type $i2i) (i32.const 9) (i32.const 2)))  ;; triple
      (i32.add (table.size $t) (ref.is_null (table.get $t (i32.const 6)))))
      (call_indirect $t2 (type $i2i) (i32.const 4) (i32.const 0)))))  ;; square

  (func (export "globals") (result i64)
    (i64.extend_i32_s (i32.add (global.get $started) (global.get $g0))))

  (func (export "bulk") (result i64)
    (memory.init $d (i32.const 100) (i32.const 0) (i32.const 8))
    (memory.copy (i32.const 200) (i32.const 100) (i32.const 8))
    (memory.fill (i32.const 204) (i32.const 9) (i32.const 2))
    (data.drop $d)
    (i64.add (i64.load (i32.const 200))
      (i64.extend_i32_u (i32.add (memory.size) (i32.trunc_sat_f32_u (f32.const 1e10))))))

  (func (export "simd") (result i64)
    (v128.store (i32.const 300) (v128.const i32x4 1 2 3 4))
    (i64x2.extract_lane 1
      (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
        (i32x4.add (v128.load (i32.const 300)) (i32x4.splat (i32.const 10)))
        (v128.load32_zero (i32.const 300)))))

  (func (export "signext") (result i64)
    (i64.add (i64.extend8_s (i64.const 0xff)) (i64.extend_i32_s (i32.extend16_s (i32.const 0x8000)))))

  (func (export "calls") (result i64)
    (i64.extend_i32_s (i32.add (call $fact (i32.const 10)) (call $add1 (i32.const 1)))))

  ;; recurses until stopped, counting its depth in $depth
  (func $rec (param i32) (result i32)
    (global.set $depth (i32.add (global.get $depth) (i32.const 1)))
    (i32.add (call $rec (local.get 0)) (i32.const 1)))
  (func (export "deep") (result i64) (i64.extend_i32_s (call $rec (i32.const 0)))))
