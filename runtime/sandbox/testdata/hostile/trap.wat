;; trap.wat: guest traps.
;;   run     executes `unreachable`.
;;   divzero divides 1 by 0 (i32.div_s), an integer-divide-by-zero trap.
;;   ok      writes "ok" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (global $zero (mut i32) (i32.const 0))

  (func (export "run") (result i32)
    unreachable)

  (func (export "divzero") (result i32)
    (i32.div_s (i32.const 1) (global.get $zero)))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
