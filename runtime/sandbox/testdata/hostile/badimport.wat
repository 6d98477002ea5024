;; badimport.wat: imports env.system (i32 -> i32), a function no contract can
;; grant; `run` calls it. Must be refused when the module is loaded.
(module
  (import "env" "system" (func $system (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "cat /etc/passwd\00")
  (func (export "run") (result i32)
    (call $system (i32.const 0))))
