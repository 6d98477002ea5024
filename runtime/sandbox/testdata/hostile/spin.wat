;; spin.wat: the tightest loop that ends. `run` counts an i32 down from
;; 10,000,000 to 0 (`loop ... br_if`) and returns 0; `ok` writes "ok" and
;; returns 0. For the cost of metering a loop.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)

  (func (export "run") (result i32)
    (local $i i32)
    (local.set $i (i32.const 10000000))
    (loop $spin
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $spin (local.get $i)))
    (local.get $i))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
