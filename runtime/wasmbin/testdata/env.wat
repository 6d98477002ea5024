;; env.wat: the "env" module features.wasm imports.
(module
  (func (export "add1") (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
  (global (export "g0") i32 (i32.const 5)))
