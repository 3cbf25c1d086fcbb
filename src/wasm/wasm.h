/*
 * wasm.h — the WebAssembly layer: ahead-of-time compiled modules (wasm2c +
 * the system C compiler, cached by content hash), instances on linear
 * memories from src/mem, and calls that turn traps into statuses.
 *
 * Invariants:
 *  1. Every import of a module is resolved, by module name, field name and
 *     signature, against the host-function tables given at load; anything
 *     unresolved refuses the module before it runs.
 *  2. Guest code runs only inside dw_instance_call / dw_instance_create,
 *     which arm a thread-local unwind target: a trap ends that call with
 *     DW_ERR_TRAP and leaves the process and other instances untouched.
 *  3. Host functions receive the calling dw_instance as their first argument.
 *
 * Threads: a module may be instantiated from many threads at once; one
 * instance runs on at most one thread at a time.
 */
#ifndef DW_WASM_H
#define DW_WASM_H

#include "base/base.h"
#include "mem/mem.h"

#include <stdbool.h>
#include <stdint.h>

/* Signatures are written "R:PP…" with i = i32, I = i64, f = f32, F = f64 and
 * v = no result, e.g. "i:ii" for (i32, i32) -> i32. */
typedef void (*dw_fnptr)(void);

typedef struct dw_hostfn {
  const char *module, *field, *sig;
  dw_fnptr fn; /* called as R fn(dw_instance *, P...) with u32/u64/float/double */
} dw_hostfn;

/* A set of host modules: an array of tables, each ending with {0}. */
typedef struct dw_host_set {
  const dw_hostfn *const *tables;
  int n_tables;
} dw_host_set;

typedef struct dw_wasm_config {
  const char *cache_dir; /* NULL: the settings' DRIFTWOOD_CACHE, XDG_CACHE_HOME/driftwood,
                            HOME/.cache/driftwood */
  bool progress;         /* progress lines on stderr when it is a terminal */
  const dw_settings *settings; /* borrowed, may be NULL: DRIFTWOOD_CC (the C compiler,
                                  default cc), PATH (where it is found) and the above */
} dw_wasm_config;

typedef struct dw_wasm_module dw_wasm_module;
typedef struct dw_instance dw_instance;

DW_HIDDEN dw_status dw_wasm_module_load(const char *path, const dw_wasm_config *cfg,
                                        const dw_host_set *hosts, dw_wasm_module **out,
                                        bool *cache_hit);
DW_HIDDEN void dw_wasm_module_destroy(dw_wasm_module *m);
/* The module's hex SHA-256 (64 chars). */
DW_HIDDEN const char *dw_wasm_module_hash(const dw_wasm_module *m);
/* The module's bytes as loaded (valid while m lives). */
DW_HIDDEN const uint8_t *dw_wasm_module_bytes(const dw_wasm_module *m, size_t *n);
/* The signature of an exported function, or NULL. */
DW_HIDDEN const char *dw_wasm_export_sig(const dw_wasm_module *m, const char *name);
/* The cache directory a config resolves to. */
DW_HIDDEN dw_status dw_wasm_cache_dir(const dw_wasm_config *cfg, char *out, size_t cap);

/* ---- instances --------------------------------------------------------- */

enum { DW_SLOT_WASI, DW_SLOT_DRIFTWOOD, DW_SLOT_NN, DW_SLOT_USER, DW_N_SLOTS };

typedef struct dw_instance_config {
  uint64_t max_memory_bytes;  /* 0: only the module's maximum */
  dw_mem_hooks hooks;         /* commit/release of memory ranges */
  void *ctx[DW_N_SLOTS];      /* borrowed: per-host-module state */
  uint64_t time_limit_ms;     /* each call (and instantiation) traps after
                                 this long in guest code; 0 = no limit */
} dw_instance_config;

typedef enum dw_outcome {
  DW_RAN = 0,   /* returned normally */
  DW_TRAPPED,   /* trap: kind in trap */
  DW_EXITED,    /* proc_exit: code in exit_code */
} dw_outcome;

typedef struct dw_call_result {
  dw_outcome outcome;
  int trap;        /* wasm_rt_trap_t when outcome == DW_TRAPPED */
  int exit_code;   /* when outcome == DW_EXITED */
  uint64_t value;  /* the result, zero-extended / bit pattern */
} dw_call_result;

/* Instantiates (runs data/element init and the start function, under the
 * trap guard). A trap during instantiation fails with DW_ERR_TRAP. */
DW_HIDDEN dw_status dw_instance_create(dw_wasm_module *m, const dw_instance_config *cfg,
                                       dw_instance **out);
DW_HIDDEN void dw_instance_destroy(dw_instance *inst);
/* The instance's linear memory (NULL if the module defines none). */
DW_HIDDEN dw_mem *dw_instance_memory(const dw_instance *inst);
DW_HIDDEN void *dw_instance_ctx(const dw_instance *inst, int slot);
/* Calls export `name` whose signature must equal `sig`. Returns DW_OK when
 * the call returned, exited or trapped (see *res); DW_ERR_TRAP is also
 * returned for traps so callers may simply test the status. */
DW_HIDDEN dw_status dw_instance_call(dw_instance *inst, const char *name, const char *sig,
                                     const uint64_t *args, dw_call_result *res);
/* From inside a host function: end the current guest call as proc_exit. */
_Noreturn DW_HIDDEN void dw_instance_exit(dw_instance *inst, int code);
/* A fixed description of a trap code, e.g. "out of bounds memory access". */
DW_HIDDEN const char *dw_trap_str(int trap);
/* The public trap kind of a trap code (dw_call_result.trap). */
DW_HIDDEN dw_trap_kind dw_trap_kind_of(int trap);

/* For snapshots: grow the instance's memory to at least `pages` (through
 * the runtime, so memory.size sees it); every global of the module,
 * exported or not, as a pointer to its storage in the instance. */
DW_HIDDEN dw_status dw_instance_grow_to(dw_instance *inst, uint32_t pages);
DW_HIDDEN unsigned dw_instance_n_globals(const dw_instance *inst);
DW_HIDDEN void *dw_instance_global(const dw_instance *inst, unsigned i, const char **name, char *type,
                                   unsigned *n_bytes);
/* The module's funcref tables (wasm_rt_funcref_table_t) in the instance. */
DW_HIDDEN unsigned dw_instance_n_tables(const dw_instance *inst);
DW_HIDDEN void *dw_instance_table(const dw_instance *inst, unsigned i);
/* The functions the module's element segments declare (all segments, in
 * order: what ref.func and table.init can put into a table): their count,
 * and the idx-th as a wasm_rt_funcref_t closed over inst (false past the
 * end). Indices are the same in every instance and process. */
DW_HIDDEN unsigned dw_instance_n_refs(const dw_instance *inst);
DW_HIDDEN bool dw_instance_ref(dw_instance *inst, unsigned idx, void *funcref_out);

#endif
