;; output.wat: oversized output.
;;   run          alloc(64 MiB) in the Extism kernel memory and
;;                output_set(ptr, 64 MiB): output past any reasonable cap.
;;   output_lie   alloc(8) but output_set(ptr, 64 MiB): a length that runs past
;;                the allocated block (and past the kernel memory).
;;   output_small writes the 8 bytes "12345678" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)

  (func (export "run") (result i32)
    (call $output_set (call $alloc (i64.const 67108864)) (i64.const 67108864))
    (i32.const 0))

  (func (export "output_lie") (result i32)
    (call $output_set (call $alloc (i64.const 8)) (i64.const 67108864))
    (i32.const 0))

  (func (export "output_small") (result i32)
    (local $off i64) (local $i i64)
    (local.set $off (call $alloc (i64.const 8)))
    (loop $l
      (call $store_u8 (i64.add (local.get $off) (local.get $i))
                      (i32.add (i32.const 0x31) (i32.wrap_i64 (local.get $i))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const 8))))
    (call $output_set (local.get $off) (i64.const 8))
    (i32.const 0)))
