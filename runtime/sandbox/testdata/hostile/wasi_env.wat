;; wasi_env.wat: looks for host environment, arguments and stdin through WASI.
;;   run    environ_sizes_get: outputs the number of environment variables in
;;          decimal; returns 0 (or the errno).
;;   dump   environ_get: outputs the whole environment, one NAME=value per
;;          line (up to ~60 KiB; returns 2 if it is larger); returns 0.
;;   args   args_sizes_get: outputs the number of arguments in decimal.
;;   stdin  reads fd 0 with fd_read in 4 KiB reads until EOF or an error;
;;          outputs the number of bytes read in decimal; returns 0 at EOF,
;;          else the errno.
;; Expected in the sandbox: "0" for run, args and stdin; empty output for dump.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0: count; 4: size; 16: iovec {4096, 4096}; 24: nread
  ;; 512..4095: environ pointers; 4096..65535: read buffer / environ strings

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
    (local $errno i32)
    (local.set $errno (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (local.get $errno) (i32.const 0)) (then (return (local.get $errno))))
    (call $emit_u64 (i64.load32_u (i32.const 0)))
    (i32.const 0))

  (func (export "dump") (result i32)
    (local $errno i32) (local $i i32) (local $size i32)
    (local.set $errno (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (local.get $errno) (i32.const 0)) (then (return (local.get $errno))))
    (local.set $size (i32.load (i32.const 4)))
    (if (i32.or (i32.gt_u (i32.load (i32.const 0)) (i32.const 894))
                (i32.gt_u (local.get $size) (i32.const 61440)))
      (then (return (i32.const 2))))
    (local.set $errno (call $environ_get (i32.const 512) (i32.const 4096)))
    (if (i32.ne (local.get $errno) (i32.const 0)) (then (return (local.get $errno))))
    ;; NUL separators -> newlines
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
        (if (i32.eqz (i32.load8_u (i32.add (i32.const 4096) (local.get $i))))
          (then (i32.store8 (i32.add (i32.const 4096) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $emit (i32.const 4096) (local.get $size))
    (i32.const 0))

  (func (export "args") (result i32)
    (local $errno i32)
    (local.set $errno (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (local.get $errno) (i32.const 0)) (then (return (local.get $errno))))
    (call $emit_u64 (i64.load32_u (i32.const 0)))
    (i32.const 0))

  (func (export "stdin") (result i32)
    (local $errno i32) (local $total i64)
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 4096))
    (block $done
      (loop $l
        (local.set $errno (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (br_if $done (i32.ne (local.get $errno) (i32.const 0)))
        (br_if $done (i32.eqz (i32.load (i32.const 24))))
        (local.set $total (i64.add (local.get $total) (i64.load32_u (i32.const 24))))
        (br $l)))
    (call $emit_u64 (local.get $total))
    (local.get $errno)))
