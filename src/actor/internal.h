/*
 * internal.h — what the actor layer's files share: the runtime object
 * (backend, LLM worker pool, registered models, host modules).
 */
#ifndef DW_ACTOR_INTERNAL_H
#define DW_ACTOR_INTERNAL_H

#include "abi/abi.h"
#include "base/pool.h"
#include "llm/model.h"

struct dw_runtime {
  dw_backend *backend;      /* owned */
  dw_pool *pool;            /* owned: LLM forward passes */
  dw_wasm_config wcfg;
  char *cache_dir;          /* owned, may be NULL */
  dw_host_set hosts;
  dw_registry models;       /* models guests may open */
  uint64_t time_limit_ms;   /* per guest call; 0 = none */
};

struct dw_module {
  dw_runtime *rt;           /* borrowed */
  dw_wasm_module *wasm;     /* owned */
  char *path;               /* owned: where it was loaded from */
};

/* What every instance of a runtime gets: memory hooks to its backend. */
DW_HIDDEN dw_mem_hooks dw_rt_hooks(dw_runtime *rt);

#endif
