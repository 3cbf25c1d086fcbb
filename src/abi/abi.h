/*
 * abi.h — the `driftwood` import module (version 1) that guests call, on top
 * of the compute backend.
 *
 * Invariants:
 *  1. Every guest (offset, length) is checked with dw_mem_view* in 64-bit
 *     arithmetic against the memory's current size before any backend work.
 *  2. Operands are handed to the backend as base + offset: no staging copies.
 *  3. A bad argument returns a dw_status code to the guest; it never traps
 *     the guest or disturbs the backend for other actors.
 *
 * Threads: a context belongs to one instance.
 */
#ifndef DW_ABI_H
#define DW_ABI_H

#include "backend/backend.h"
#include "llm/session.h"
#include "wasm/wasm.h"

#include <driftwood_abi.h> /* the wire format guests see (sdk/include) */
#include <pthread.h>

#define DW_ABI_MAX_SESSIONS 256 /* sessions a guest may hold at once, unless max_sessions says */

/* A model the host registered under a name: --model NAME=PATH (loaded at
 * once) or --nn-preload (loaded when a guest first asks for it). */
typedef struct dw_abi_model {
  char *name, *path;
  dw_model *model;        /* counted reference; NULL until loaded */
} dw_abi_model;

/* The runtime's models, shared by its instances. */
typedef struct dw_registry {
  pthread_mutex_t lock;      /* the table; never held while a file is mapped */
  pthread_mutex_t load_lock; /* one model load at a time */
  dw_abi_model *v;
  int n;
} dw_registry;

DW_HIDDEN void dw_registry_init(dw_registry *r);
DW_HIDDEN void dw_registry_fini(dw_registry *r);
/* Adds name → path; load_now maps the file at once (errors reported now). */
DW_HIDDEN dw_status dw_registry_add(dw_registry *r, const char *name, const char *path, bool load_now);
/* Index of name[0..len), or -1. */
DW_HIDDEN int dw_registry_find(dw_registry *r, const char *name, size_t len);
/* The model at idx, loading it on first use; borrowed while r lives. */
DW_HIDDEN dw_status dw_registry_model(dw_registry *r, int idx, dw_model **out);
/* The model at idx if already loaded, else NULL. */
DW_HIDDEN dw_model *dw_registry_loaded(dw_registry *r, int idx);
/* Entry idx's name and path (valid while r lives) and its model (NULL if
 * not loaded); false if there is no entry idx. */
DW_HIDDEN bool dw_registry_entry(dw_registry *r, int idx, const char **name, const char **path, dw_model **model);
/* How many entries r holds (indices 0..n-1; entries never move or go away). */
DW_HIDDEN int dw_registry_count(dw_registry *r);
/* Index of a loaded model with this fingerprint, or -1. */
DW_HIDDEN int dw_registry_find_fingerprint(dw_registry *r, const uint8_t fp[32]);

typedef struct dw_abi {
  dw_backend *backend;    /* borrowed */
  int emit_fd;            /* where emit() writes; borrowed */
  int (*emit_fn)(void *ctx, const void *data, size_t len); /* when set: emit() calls it instead;
                                                              non-zero cancels the guest's call */
  void *emit_ctx;
  dwg_op_info last;       /* last compute op, as last_op_info writes it */
  dw_registry *reg;       /* borrowed: the models the guest may open */
  int *models;            /* owned: model handle h is registry index models[h - 1] */
  uint32_t n_models, cap_models;
  dw_engine *engine;      /* borrowed: where decode runs */
  dw_session **sessions;  /* owned: session handle h is sessions[h - 1] (NULL: free) */
  uint32_t n_sessions;    /* slots allocated, grown on demand up to max_sessions */
  uint32_t max_sessions;  /* 0 = DW_ABI_MAX_SESSIONS */
  const dw_settings *settings; /* borrowed, may be NULL: where messages go */
} dw_abi;

DW_HIDDEN void dw_abi_init(dw_abi *a, dw_backend *backend, int emit_fd);
/* Frees every session the guest left open, and the model handles. */
DW_HIDDEN void dw_abi_fini(dw_abi *a);

/* The guest's handles, for snapshots and forks (src/actor). Model handles
 * are the instance's own (1, 2, … in the order the guest opened them), so
 * they mean the same after a thaw into a host that registered its models in
 * another order. */
/* How many model handles the guest holds (handles 1..n). */
DW_HIDDEN uint32_t dw_abi_n_models(const dw_abi *a);
/* The registry index of model handle h, or -1. */
DW_HIDDEN int dw_abi_model_index(const dw_abi *a, uint32_t h);
/* Gives the guest handle n + 1 for registry index idx (thaw: in the order
 * the snapshot lists them). */
DW_HIDDEN dw_status dw_abi_model_add(dw_abi *a, int idx);
/* Session handles run 1..dw_abi_session_slots(a) (some of them free). */
DW_HIDDEN uint32_t dw_abi_session_slots(const dw_abi *a);
/* Session handle h, or NULL. */
DW_HIDDEN dw_session *dw_abi_session(const dw_abi *a, uint32_t h);
/* Puts s at session handle h (1..max_sessions), which must be free; a owns
 * s then. */
DW_HIDDEN dw_status dw_abi_session_set(dw_abi *a, uint32_t h, dw_session *s);
/* dst (freshly initialised) gets src's model handles and a fork of each of
 * its sessions (copy-on-write KV). */
DW_HIDDEN dw_status dw_abi_fork(dw_abi *dst, const dw_abi *src);

/* Host-side operations behind the imports, callable without a guest. */
DW_HIDDEN dw_status dw_abi_matmul_f32(dw_abi *a, dw_mem *mem, uint32_t a_off, uint32_t b_off, uint32_t c_off,
                                      uint32_t m, uint32_t n, uint32_t k);

/* The `driftwood` host module (ends with {0}): core and LLM functions. */
DW_HIDDEN extern const dw_hostfn dw_abi_functions[];
DW_HIDDEN extern const dw_hostfn dw_abi_llm_functions[];

#endif
