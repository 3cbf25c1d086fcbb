/*
 * harness.h — helpers shared by the cross-module suites: load a test guest
 * with the real host modules, make an instance on a CPU backend, call it.
 */
#ifndef DW_TEST_HARNESS_H
#define DW_TEST_HARNESS_H

#include "abi/abi.h"
#include "api/internal.h" /* dw_env_settings */
#include "wasi/wasi.h"

#include <criterion/criterion.h>
#include <string.h>

#define GUEST(name) DW_TEST_GUESTS "/" name ".wasm"

static const dw_hostfn *const th_tables[] = {dw_wasi_functions, dw_abi_functions, dw_abi_llm_functions};
static const dw_host_set th_hosts = {th_tables, 3};

typedef struct th {
  dw_backend *be;
  dw_wasm_module *mod;
  dw_instance *inst;
  dw_abi abi;
  dw_mem *mem;
} th;

static dw_status th_commit(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void th_release(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

static inline void th_instance(th *t, uint64_t max_memory) {
  dw_instance_config ic = {.max_memory_bytes = max_memory,
                           .hooks = {.ud = t->be, .commit = th_commit, .release = th_release}};
  ic.ctx[DW_SLOT_DRIFTWOOD] = &t->abi;
  cr_assert_eq(dw_instance_create(t->mod, &ic, &t->inst), DW_OK, "%s", dw_last_error());
  t->mem = dw_instance_memory(t->inst);
}

/* Opens `path` on `backend`; returns false (nothing opened) when that
 * backend is unavailable here, e.g. CUDA without a device. */
static inline bool th_open_on(th *t, const char *path, int emit_fd, const char *backend) {
  memset(t, 0, sizeof *t);
  dw_status st = dw_backend_create(backend, 2, NULL, &t->be);
  if (st == DW_ERR_UNSUPPORTED) return false;
  cr_assert_eq(st, DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_wasm_module_load(path, &(dw_wasm_config){.settings = &dw_env_settings}, &th_hosts, &t->mod, NULL), DW_OK, "%s", dw_last_error());
  dw_abi_init(&t->abi, t->be, emit_fd);
  th_instance(t, 0);
  return true;
}

static inline void th_open(th *t, const char *path, int emit_fd) {
  cr_assert(th_open_on(t, path, emit_fd, "cpu"), "cpu backend unavailable: %s", dw_last_error());
}

static inline void th_close(th *t) {
  dw_instance_destroy(t->inst);
  dw_abi_fini(&t->abi);
  dw_wasm_module_destroy(t->mod);
  dw_backend_destroy(t->be);
}

/* Calls an export with up to 8 integer arguments; returns the status. */
#define CALL(t, name, sig, res, ...) \
  dw_instance_call((t)->inst, (name), (sig), (const uint64_t[8]){__VA_ARGS__}, (res))
#define CALL0(t, name, sig, res) dw_instance_call((t)->inst, (name), (sig), NULL, (res))

#endif
