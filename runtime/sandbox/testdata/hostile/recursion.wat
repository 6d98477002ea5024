;; recursion.wat: `run` calls $down, which calls itself without end, keeping a
;; few locals live across the call (no tail call), so the call stack
;; overflows. `ok` writes "ok" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)

  (func $down (param $n i64) (result i64)
    (local $a i64) (local $b i64) (local $c i64) (local $d f64)
    (local.set $a (i64.add (local.get $n) (i64.const 1)))
    (local.set $b (i64.mul (local.get $a) (i64.const 3)))
    (local.set $c (i64.xor (local.get $a) (local.get $b)))
    (local.set $d (f64.convert_i64_s (local.get $c)))
    (i64.add
      (i64.add (call $down (local.get $a)) (local.get $b))
      (i64.add (local.get $c) (i64.trunc_f64_s (local.get $d)))))

  (func (export "run") (result i32)
    (i32.wrap_i64 (call $down (i64.const 0))))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
