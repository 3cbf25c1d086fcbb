;; table_actor.wat — an actor whose state includes its function table:
;; "swap" makes slot 0 call the function of slot 1 (table.set); "ref" puts
;; $fc, which was in no table at instantiation, into slot 0 (ref.func); any
;; other message except "n" emits the letter slot 0's function returns
;; ("A", "B" after a swap, "C" after a ref: $fc also counts its calls in
;; memory); "n" emits that count as a digit; "grow" appends a slot
;; (table.grow).
(module
  (import "driftwood" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ABC")
  (type $t (func (result i32)))
  (table $tab 2 funcref)
  (elem (i32.const 0) $fa $fb)
  (elem declare func $fc)
  (func $fa (result i32) (i32.const 16))
  (func $fb (result i32) (i32.const 17))
  (func $fc (result i32)
    (i32.store8 (i32.const 32) (i32.add (i32.load8_u (i32.const 32)) (i32.const 1)))
    (i32.const 18))
  (func (export "dw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dw_on_message") (param $p i32) (param $n i32) (result i32)
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 115)) ;; 's': swap
      (then (table.set $tab (i32.const 0) (table.get $tab (i32.const 1))) (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 114)) ;; 'r': ref.func $fc into slot 0
      (then (table.set $tab (i32.const 0) (ref.func $fc)) (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 103)) ;; 'g': grow by one, a copy of slot 0
      (then (drop (table.grow $tab (table.get $tab (i32.const 0)) (i32.const 1))) (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 110)) ;; 'n': the count, as a digit
      (then (i32.store8 (i32.const 40) (i32.add (i32.load8_u (i32.const 32)) (i32.const 48)))
            (drop (call $emit (i32.const 40) (i32.const 1))) (return (i32.const 0))))
    (drop (call $emit (call_indirect (type $t) (i32.const 0)) (i32.const 1)))
    (drop (call $emit (i32.const 16) (i32.const 0)))
    (i32.const 0))
)
