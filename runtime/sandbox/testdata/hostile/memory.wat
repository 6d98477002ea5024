;; memory.wat: `run` grows its memory one page at a time, touching each new
;; page, until memory.grow returns -1 (the host's limit, or wasm32's 4 GiB),
;; then traps with `unreachable`. NEVER call `run` without a memory limit: it
;; would commit up to 4 GiB. `ok` writes "ok" and returns 0.
;; The memory is deliberately not exported.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory 1)

  (func (export "run") (result i32)
    (local $old i32)
    (loop $grow
      (local.set $old (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $old) (i32.const -1))
        (then unreachable))
      ;; touch the first and the last word of the new page
      (i32.store (i32.shl (local.get $old) (i32.const 16)) (local.get $old))
      (i32.store (i32.add (i32.shl (local.get $old) (i32.const 16)) (i32.const 65532))
                 (local.get $old))
      (br $grow))
    (i32.const 0))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
