;; leak.wat: looks for what an earlier call left behind.
;;   run   outputs the 16 bytes at address 4096 of its own memory, then writes
;;         "SECRET-FROM-CALL" there. Every call must output 16 zero bytes:
;;         instances are fresh and pooled memory is zeroed between calls.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory 1)
  (data (i32.const 0) "SECRET-FROM-CALL")

  (func (export "run") (result i32)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.const 16)))
    (loop $l
      (call $store_u8 (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
                      (i32.load8_u (i32.add (i32.const 4096) (local.get $i))))
      (i32.store8 (i32.add (i32.const 4096) (local.get $i))
                  (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 16))))
    (call $output_set (local.get $off) (i64.const 16))
    (i32.const 0)))
