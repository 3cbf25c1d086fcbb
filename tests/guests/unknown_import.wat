;; unknown_import.wat — imports a function Driftwood does not provide.
(module
  (import "env" "mystery" (func $m (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $m))))
