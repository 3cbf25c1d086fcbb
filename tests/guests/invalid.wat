;; invalid.wat — well-formed binary that fails validation (type mismatch);
;; assembled with wat2wasm --no-check.
(module
  (func (export "_start") (result i32) (f32.const 1)))
