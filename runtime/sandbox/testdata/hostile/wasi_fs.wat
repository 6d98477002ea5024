;; wasi_fs.wat: tries to reach the host filesystem through WASI.
;;   run       path_open(fd 3, "/etc/passwd")
;;   relative  path_open(fd 3, "etc/passwd")
;;   dotdot    path_open(fd 3, "../../../../../etc/passwd")
;;     Each outputs the errno it got, in decimal, and returns 0; if the open
;;     succeeds it reads up to 256 bytes, outputs "opened: <bytes>" and
;;     returns 1.
;;   prestat   fd_prestat_get(3): outputs the errno in decimal; returns 0 if
;;     it failed (no preopened directory), 1 if fd 3 is a preopened directory.
;; Expected in the sandbox: return 0 everywhere; under wazero with no
;; preopened directory, run and dotdot get 63 (EPERM: wazero refuses absolute
;; and escaping paths before it looks at the fd), relative and prestat get
;; 8 (EBADF).
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/etc/passwd")
  (data (i32.const 32) "etc/passwd")
  (data (i32.const 64) "../../../../../etc/passwd")
  (data (i32.const 1016) "opened: ")
  ;; 128: opened fd; 136: iovec {1024, 256}; 144: nread; 160: prestat

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

  (func $try_open (param $path i32) (param $len i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $path_open
      (i32.const 3)       ;; dirfd
      (i32.const 1)       ;; lookupflags: symlink_follow
      (local.get $path) (local.get $len)
      (i32.const 0)       ;; oflags
      (i64.const 2)       ;; rights: fd_read
      (i64.const 0)
      (i32.const 0)       ;; fdflags
      (i32.const 128)))   ;; opened fd
    (if (i32.ne (local.get $errno) (i32.const 0))
      (then
        (call $emit_u64 (i64.extend_i32_u (local.get $errno)))
        (return (i32.const 0))))
    (i32.store (i32.const 136) (i32.const 1024))
    (i32.store (i32.const 140) (i32.const 256))
    (drop (call $fd_read (i32.load (i32.const 128)) (i32.const 136) (i32.const 1) (i32.const 144)))
    (call $emit (i32.const 1016) (i32.add (i32.const 8) (i32.load (i32.const 144))))
    (i32.const 1))

  (func (export "run") (result i32) (call $try_open (i32.const 0) (i32.const 11)))
  (func (export "relative") (result i32) (call $try_open (i32.const 32) (i32.const 10)))
  (func (export "dotdot") (result i32) (call $try_open (i32.const 64) (i32.const 25)))

  (func (export "prestat") (result i32)
    (local $errno i32)
    (local.set $errno (call $fd_prestat_get (i32.const 3) (i32.const 160)))
    (call $emit_u64 (i64.extend_i32_u (local.get $errno)))
    (i32.eqz (local.get $errno))))
