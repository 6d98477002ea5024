;; count.wat: a tiny, well-behaved, non-Go Extism tool for benchmarks (no
;; WASI). count_vowels reads its input with input_length/input_load_u8,
;; counts the ASCII vowels (aeiouAEIOU) and outputs {"count": N}.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"count\": ")

  (func (export "count_vowels") (result i32)
    (local $len i64) (local $i i64) (local $n i64) (local $c i32)
    (local $p i32) (local $off i64)
    (local.set $len (call $input_length))
    (block $done
      (loop $l
        (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
        ;; lowercase letters: c|0x20 - 'a' < 26; vowels are bits 0,4,8,14,20
        (local.set $c (i32.sub (i32.or (call $input_load_u8 (local.get $i)) (i32.const 0x20))
                               (i32.const 0x61)))
        (if (i32.lt_u (local.get $c) (i32.const 26))
          (then (local.set $n (i64.add (local.get $n)
                  (i64.extend_i32_u (i32.and (i32.shr_u (i32.const 0x104111) (local.get $c))
                                             (i32.const 1)))))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $l)))
    ;; digits backwards from 40, then "}" at 40; the prefix is at 0..9
    (i32.store8 (i32.const 40) (i32.const 0x7d))
    (local.set $p (i32.const 40))
    (loop $d
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $n) (i64.const 10))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $d (i64.ne (local.get $n) (i64.const 0))))
    ;; copy the 10-byte prefix right in front of the digits
    (local.set $c (i32.const 10))
    (loop $m
      (local.set $c (i32.sub (local.get $c) (i32.const 1)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.load8_u (local.get $c)))
      (br_if $m (local.get $c)))
    ;; copy [p, 41) to the kernel and set it as output
    (local.set $len (i64.extend_i32_u (i32.sub (i32.const 41) (local.get $p))))
    (local.set $off (call $alloc (local.get $len)))
    (local.set $i (i64.const 0))
    (loop $o
      (call $store_u8 (i64.add (local.get $off) (local.get $i))
                      (i32.load8_u (i32.add (local.get $p) (i32.wrap_i64 (local.get $i)))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $o (i64.lt_u (local.get $i) (local.get $len))))
    (call $output_set (local.get $off) (local.get $len))
    (i32.const 0)))
