;; random.wat: random_get 32 bytes, outputs them as 64 lowercase hex digits,
;; returns 0 (or the errno). Two calls, or two fresh instances, must differ:
;; the sandbox must use crypto/rand (wazero's default source is fixed).
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..31: random bytes; 64..127: hex; 256: digits
  (data (i32.const 256) "0123456789abcdef")

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

  (func (export "run") (result i32)
    (local $errno i32) (local $i i32) (local $b i32)
    (local.set $errno (call $random_get (i32.const 0) (i32.const 32)))
    (if (i32.ne (local.get $errno) (i32.const 0)) (then (return (local.get $errno))))
    (loop $l
      (local.set $b (i32.load8_u (local.get $i)))
      (i32.store8 (i32.add (i32.const 64) (i32.shl (local.get $i) (i32.const 1)))
                  (i32.load8_u (i32.add (i32.const 256) (i32.shr_u (local.get $b) (i32.const 4)))))
      (i32.store8 (i32.add (i32.const 65) (i32.shl (local.get $i) (i32.const 1)))
                  (i32.load8_u (i32.add (i32.const 256) (i32.and (local.get $b) (i32.const 15)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 32))))
    (call $emit (i32.const 64) (i32.const 64))
    (i32.const 0)))
