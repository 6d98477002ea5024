;; stdout_flood.wat: writes 10 MiB of 'A' to stdout (run) or stderr (stderr)
;; with fd_write in 160 writes of 64 KiB; stops at the first error. Outputs
;; the number of bytes the host said it wrote, in decimal, and returns 0, or
;; the errno of the failed write. The host must cap or discard this.
;;   ok writes "ok" and returns 0.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0: iovec {65536, 65536}; 8: nwritten; 65536..131071: the chunk
  (data (i32.const 16) "ok")

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

  (func $flood (param $fd i32) (result i32)
    (local $i i32) (local $errno i32) (local $total i64)
    ;; fill the chunk with 'A'
    (local.set $i (i32.const 65536))
    (loop $fill
      (i64.store (local.get $i) (i64.const 0x4141414141414141))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 131072))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $l
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 65536))
        (local.set $errno (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.ne (local.get $errno) (i32.const 0)))
        (local.set $total (i64.add (local.get $total) (i64.load32_u (i32.const 8))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 160)))))
    (call $emit_u64 (local.get $total))
    (local.get $errno))

  (func (export "run") (result i32) (call $flood (i32.const 1)))
  (func (export "stderr") (result i32) (call $flood (i32.const 2)))

  (func (export "ok") (result i32)
    (call $emit (i32.const 16) (i32.const 2))
    (i32.const 0)))
