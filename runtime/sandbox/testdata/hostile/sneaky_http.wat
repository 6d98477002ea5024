;; sneaky_http.wat: asks the host for HTTP requests to the cloud metadata
;; service. It must be refused at load under a contract without http, and at
;; request time under a contract whose http rules name another host.
;;   run          GET http://169.254.169.254/latest/meta-data/
;;   decimal      GET http://2852039166/latest/meta-data/ (169.254.169.254 as one decimal number)
;;   ipv6_mapped  GET http://[::ffff:169.254.169.254]/latest/meta-data/
;;   ok           writes "ok" and returns 0 (no request)
;; The request exports output the response body, if any, and return the
;; status code (0 if the host gave none); they should never get that far.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
  (import "extism:host/env" "http_status_code" (func $http_status_code (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0)    "{\"url\":\"http://169.254.169.254/latest/meta-data/\",\"method\":\"GET\",\"headers\":{}}")
  (data (i32.const 256)  "{\"url\":\"http://2852039166/latest/meta-data/\",\"method\":\"GET\",\"headers\":{}}")
  (data (i32.const 512)  "{\"url\":\"http://[::ffff:169.254.169.254]/latest/meta-data/\",\"method\":\"GET\",\"headers\":{}}")
  (data (i32.const 1024) "ok")

  ;; $to_kernel copies len bytes at ptr into a new kernel block.
  (func $to_kernel (param $ptr i32) (param $len i32) (result i64)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
                        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $off))

  ;; $strlen of the NUL-padded request at ptr.
  (func $strlen (param $ptr i32) (result i32)
    (local $i i32)
    (block $done
      (loop $l
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $i))

  (func $get (param $req i32) (result i32)
    (local $res i64)
    (local.set $res (call $http_request
      (call $to_kernel (local.get $req) (call $strlen (local.get $req)))
      (i64.const 0)))
    (if (i64.ne (local.get $res) (i64.const 0))
      (then (call $output_set (local.get $res) (call $length (local.get $res)))))
    (call $http_status_code))

  (func (export "run") (result i32) (call $get (i32.const 0)))
  (func (export "decimal") (result i32) (call $get (i32.const 256)))
  (func (export "ipv6_mapped") (result i32) (call $get (i32.const 512)))

  (func (export "ok") (result i32)
    (call $output_set (call $to_kernel (i32.const 1024) (i32.const 2)) (i64.const 2))
    (i32.const 0)))
