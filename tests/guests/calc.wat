;; calc.wat — exports of every value type, for `driftwood run --invoke`
;; and dw_run_invoke: results computed from the arguments, a function with
;; no result, one that traps, and state a reactor's _initialize sets.
(module
  (memory 1)
  (global $base (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $base (i32.const 1000)))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "based") (param i32) (result i32) (i32.add (global.get $base) (local.get 0)))
  (func (export "mul64") (param i64 i64) (result i64) (i64.mul (local.get 0) (local.get 1)))
  (func (export "half") (param f32) (result f32) (f32.div (local.get 0) (f32.const 2)))
  (func (export "hyp") (param f64 f64) (result f64)
    (f64.sqrt (f64.add (f64.mul (local.get 0) (local.get 0)) (f64.mul (local.get 1) (local.get 1)))))
  (func (export "nothing") (param i32))
  (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1))))
