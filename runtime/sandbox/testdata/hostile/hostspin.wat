;; hostspin.wat: a busy guest that enters the host every few microseconds, as a
;; metered guest does; it stands for the loops that the scheduler must
;; time-slice.
;;   run  forever: 500 rounds of integer arithmetic, then config_get on a
;;        1-byte key "z" (grant any config without it: the answer is 0 and
;;        nothing is allocated). Never returns; only a timeout, a
;;        cancellation or the host-call limit ends it.
;;   ok   writes "ok" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (memory (export "memory") 1)
  (global $sink (mut i32) (i32.const 0))

  (func (export "run") (result i32)
    (local $key i64) (local $i i32) (local $x i32)
    (local.set $key (call $alloc (i64.const 1)))
    (call $store_u8 (local.get $key) (i32.const 0x7a)) ;; 'z'
    (loop $forever
      (local.set $i (i32.const 0))
      (loop $work
        (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1103515245)) (i32.const 12345)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $work (i32.lt_u (local.get $i) (i32.const 500))))
      (global.set $sink (local.get $x))
      (drop (call $config_get (local.get $key)))
      (br $forever))
    (i32.const 0))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
