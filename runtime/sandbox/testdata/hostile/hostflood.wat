;; hostflood.wat: host-call floods.
;;   run       allocates a 1-byte config key "k" once, then calls
;;             config_get on it 10,000,000 times (results dropped).
;;   logflood  1,000,000 times: alloc(1024), fill the block with 'A' (128
;;             store_u64 calls), log_info it (1 KiB per line, 1 GiB in all).
;;             A fresh block each time, as the PDKs do: the host frees it.
;;   ok        writes "ok" and returns 0.
;; All return 0 if they run to the end.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "config_get" (func $config_get (param i64) (result i64)))
  (import "extism:host/env" "log_info" (func $log_info (param i64)))
  (memory (export "memory") 1)

  (func (export "run") (result i32)
    (local $key i64) (local $i i32)
    (local.set $key (call $alloc (i64.const 1)))
    (call $store_u8 (local.get $key) (i32.const 0x6b)) ;; 'k'
    (loop $l
      (drop (call $config_get (local.get $key)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 10000000))))
    (i32.const 0))

  (func (export "logflood") (result i32)
    (local $msg i64) (local $i i32) (local $j i64)
    (loop $l
      (local.set $msg (call $alloc (i64.const 1024)))
      (local.set $j (i64.const 0))
      (loop $fill
        (call $store_u64 (i64.add (local.get $msg) (local.get $j))
                         (i64.const 0x4141414141414141))
        (local.set $j (i64.add (local.get $j) (i64.const 8)))
        (br_if $fill (i64.lt_u (local.get $j) (i64.const 1024))))
      (call $log_info (local.get $msg))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))
    (i32.const 0))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
