/*
 * internal.h — what the public API's implementation shares (src/api and
 * the layers above it, actor and server): the runtime object (backend, LLM
 * engine, registered models, host modules) and the host-side set-up of one
 * guest (commands and actors alike).
 */
#ifndef DW_API_INTERNAL_H
#define DW_API_INTERNAL_H

#include "abi/abi.h"
#include "abi/wasi_nn.h"
#include "wasi/wasi.h"
#include "llm/session.h"

struct dw_runtime {
  dw_backend *backend;      /* owned */
  dw_engine *engine;        /* owned: LLM forward passes */
  dw_wasm_config wcfg;
  char *cache_dir;          /* owned, may be NULL */
  dw_host_set hosts;
  dw_registry models;       /* models guests may open */
  uint64_t time_limit_ms;   /* per guest call; 0 = none */
  uint64_t actor_mem_limit; /* bytes of an actor's linear memory; 0 = the module's maximum */
  bool fixed_models;        /* thaws never register a snapshot's model paths */
  dw_settings settings;     /* the embedder's, or the environment (dw_env_settings) */
  uint32_t max_sessions, max_open_files; /* per guest; 0 = the defaults */
};

/* The process environment as a settings source: what the layers below read
 * instead of getenv, unless the embedder gives its own. */
DW_HIDDEN extern const dw_settings dw_env_settings;

struct dw_module {
  dw_runtime *rt;           /* borrowed */
  dw_wasm_module *wasm;     /* owned */
  char *path;               /* owned: where it was loaded from */
};

/* What every instance of a runtime gets: memory hooks to its backend. */
DW_HIDDEN dw_mem_hooks dw_rt_hooks(dw_runtime *rt);

/* One guest's host side: its WASI and WASI-NN state, its `driftwood` ABI
 * state (emit goes to the WASI stdout) and its instance. */
typedef struct dw_guest {
  dw_wasi *wasi;            /* owned */
  dw_nn *nn;                /* owned */
  dw_abi abi;
  dw_instance *inst;        /* owned */
} dw_guest;

/* Creates g's host state and instantiates m with it (the runtime's models,
 * engine, memory hooks and time limit). On failure g holds nothing. */
DW_HIDDEN dw_status dw_guest_create(dw_module *m, const dw_wasi_config *wc, uint64_t max_memory_bytes, dw_guest *g);
DW_HIDDEN void dw_guest_destroy(dw_guest *g);

#endif
