;; sleep.wat: poll_oneoff on one relative clock subscription (the way WASI
;; programs sleep), then outputs "ok" and returns 0 (or the errno).
;;   run   sleeps 10 minutes.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  (func (export "run") (result i32)
    (local $errno i32) (local $off i64)
    ;; The subscription at 0 (48 bytes): userdata 0, tag 0 (clock),
    ;; clock id 1 (monotonic) at 16, timeout at 24 (ns), precision 0,
    ;; flags 0 (relative). The event goes to 64, the count to 128.
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 600000000000))
    (local.set $errno (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (if (local.get $errno) (then (return (local.get $errno))))
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
