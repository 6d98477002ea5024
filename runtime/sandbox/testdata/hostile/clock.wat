;; clock.wat: clock_time_get, outputs the time in nanoseconds in decimal and
;; returns 0 (or the errno).
;;   run        realtime clock (id 0): should be close to the host's time
;;              (wazero's default is a fake clock starting at 2022-01-01).
;;   monotonic  monotonic clock (id 1).
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)

  ;; $emit copies len bytes at ptr into a new kernel block and sets it as output.
  (func $emit (param $ptr i32) (param $len i32)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
                        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $output_set (local.get $off) (i64.extend_i32_u (local.get $len))))

  ;; $emit_u64 outputs v in decimal (formatted in the scratch bytes 480..511).
  (func $emit_u64 (param $v i64)
    (local $p i32)
    (local.set $p (i32.const 512))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $l (i64.ne (local.get $v) (i64.const 0))))
    (call $emit (local.get $p) (i32.sub (i32.const 512) (local.get $p))))

  (func $now (param $id i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $clock_time_get (local.get $id) (i64.const 1) (i32.const 0)))
    (if (i32.ne (local.get $errno) (i32.const 0)) (then (return (local.get $errno))))
    (call $emit_u64 (i64.load (i32.const 0)))
    (i32.const 0))

  (func (export "run") (result i32) (call $now (i32.const 0)))
  (func (export "monotonic") (result i32) (call $now (i32.const 1))))
