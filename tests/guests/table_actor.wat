;; table_actor.wat — an actor whose state includes its function table:
;; "swap" makes slot 0 call the function of slot 1 (table.set); any other
;; message emits the letter slot 0's function returns ("A", or "B" after a
;; swap); "grow" appends a slot (table.grow).
(module
  (import "driftwood" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "AB")
  (type $t (func (result i32)))
  (table $tab 2 funcref)
  (elem (i32.const 0) $fa $fb)
  (func $fa (result i32) (i32.const 16))
  (func $fb (result i32) (i32.const 17))
  (func (export "dw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dw_on_message") (param $p i32) (param $n i32) (result i32)
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 115)) ;; 's': swap
      (then (table.set $tab (i32.const 0) (table.get $tab (i32.const 1))) (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 103)) ;; 'g': grow by one, a copy of slot 0
      (then (drop (table.grow $tab (table.get $tab (i32.const 0)) (i32.const 1))) (return (i32.const 0))))
    (drop (call $emit (call_indirect (type $t) (i32.const 0)) (i32.const 1)))
    (drop (call $emit (i32.const 16) (i32.const 0)))
    (i32.const 0))
)
