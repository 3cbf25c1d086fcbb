;; bad_sig_import.wat — imports fd_write with the wrong signature.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $w (i32.const 1)))))
