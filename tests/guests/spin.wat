;; spin.wat — a WASI command that never returns (the --timeout tests).
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))
