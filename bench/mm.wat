;; mm.wat — benchmark guest: growable memory and a thin wrapper around
;; driftwood.matmul_f32.
(module
  (import "driftwood" "matmul_f32" (func $mm (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "mm") (param i32 i32 i32 i32 i32 i32) (result i32)
    (call $mm (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4) (local.get 5))))
