;; fib.wat: naive recursive Fibonacci, with no loop anywhere: a guest that
;; only a check at function entry can interrupt. `run` computes fib(60)
;; (about 2^42 calls: hours); `check` computes fib(25) and returns 0 if it is
;; 75025 (about 250,000 calls); `ok` writes "ok" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)

  (func $fib (param $n i64) (result i64)
    (if (result i64) (i64.lt_u (local.get $n) (i64.const 2))
      (then (local.get $n))
      (else (i64.add
        (call $fib (i64.sub (local.get $n) (i64.const 1)))
        (call $fib (i64.sub (local.get $n) (i64.const 2)))))))

  (func (export "run") (result i32)
    (i32.wrap_i64 (call $fib (i64.const 60))))

  (func (export "check") (result i32)
    (i64.ne (call $fib (i64.const 25)) (i64.const 75025)))

  (func (export "ok") (result i32)
    (local $off i64)
    (local.set $off (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $off) (i32.const 0x6f))
    (call $store_u8 (i64.add (local.get $off) (i64.const 1)) (i32.const 0x6b))
    (call $output_set (local.get $off) (i64.const 2))
    (i32.const 0)))
