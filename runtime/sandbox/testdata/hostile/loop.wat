;; loop.wat: `run` spins forever; only the host's timeout (or context
;; cancellation) can end it. `ok` writes "ok" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "ok")

  (func (export "run") (result i32)
    (loop $forever (br $forever))
    (i32.const 0))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))                     ;; 'o'
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b)) ;; 'k'
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
