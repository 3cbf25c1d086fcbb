/*
 * rt.h — internals shared by the wasm layer: the guarded-call primitive and
 * the per-thread state behind Driftwood's implementation of wasm-rt.h.
 */
#ifndef DW_WASM_RT_H
#define DW_WASM_RT_H

#include "wasm/wasm.h"

/* Unwind codes beyond wasm_rt_trap_t values. */
enum { DW_UNWIND_EXIT = 1000, DW_UNWIND_HOSTERR = 1001, DW_UNWIND_DEADLINE = 1002 };

/* Memories allocated by wasm_rt_allocate_memory on this thread use these
 * settings; set around instantiation, cleared after. */
typedef struct dw_rt_alloc_ctx {
  uint64_t limit_bytes;
  dw_mem_hooks hooks;
} dw_rt_alloc_ctx;

DW_HIDDEN void dw_rt_set_alloc_ctx(const dw_rt_alloc_ctx *ctx);
/* Installs the fault handler (once per process). */
DW_HIDDEN void dw_rt_init(void);
/* Runs body(arg) with traps, exits and uncaught exceptions caught.
 * Returns DW_OK (res->outcome says how it ended), DW_ERR_TRAP for a trap, or
 * the host error raised through dw_rt_host_error. limit_ms > 0 ends the
 * call with a trap (DW_UNWIND_DEADLINE) once it has run that long
 * (rt.c invariant 5); it applies to outermost calls only. */
DW_HIDDEN dw_status dw_rt_guard(void (*body)(void *), void *arg, uint64_t limit_ms, dw_call_result *res);
/* Registers, under key, the executable segments of the loaded object that
 * contains any_symbol as guest code (where a time limit may trap); and
 * forgets what was registered under key. */
DW_HIDDEN void dw_rt_code_add(const void *any_symbol, const void *key);
DW_HIDDEN void dw_rt_code_remove(const void *key);
/* From inside guarded code: end it with proc_exit semantics. */
_Noreturn DW_HIDDEN void dw_rt_exit(int code);
/* From inside guarded code: end it with a host error (message already set). */
_Noreturn DW_HIDDEN void dw_rt_host_error(dw_status st);
/* Whether the current call's time limit has passed while the thread was in
 * host code; then host code that loops for the guest calls
 * dw_rt_deadline_trap at a point where it holds no lock or unowned
 * allocation, and the call ends with the time-limit trap. */
DW_HIDDEN bool dw_rt_deadline_passed(void);
_Noreturn DW_HIDDEN void dw_rt_deadline_trap(void);

#endif
