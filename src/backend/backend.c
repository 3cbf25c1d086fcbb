/*
 * backend.c — backend registry and the wrappers that check the vtable
 * version and optional slots and keep the registration statistics.
 */
#include "backend/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dw_backend_list(void) {
#ifdef DW_HAVE_CUDA
  return "cpu cuda";
#else
  return "cpu";
#endif
}

dw_status dw_backend_create(const char *name, int threads, const dw_settings *settings, dw_backend **out) {
  *out = NULL;
  (void)settings; /* only the CUDA backend reads it */
  if (!name) name = "auto";
  dw_backend *b = dw_calloc(1, sizeof *b);
  if (!b) return dw_error_set(DW_ERR_NOMEM, "backend");
  dw_status st;
  if (!strcmp(name, "cpu")) {
    st = dw_backend_cpu_reg(threads, b);
  } else if (!strcmp(name, "cuda") || !strcmp(name, "auto")) {
#ifdef DW_HAVE_CUDA
    st = dw_backend_cuda_reg(settings, b);
    if (st == DW_ERR_UNSUPPORTED && !strcmp(name, "auto")) st = dw_backend_cpu_reg(threads, b);
#else
    st = !strcmp(name, "auto") ? dw_backend_cpu_reg(threads, b)
                               : dw_error_set(DW_ERR_UNSUPPORTED, "this build has no CUDA backend (built without the CUDA toolkit)");
#endif
  } else {
    st = dw_error_set(DW_ERR_INVALID_ARG, "unknown backend '%s' (choose cpu, cuda or auto)", name);
  }
  if (st == DW_OK && b->ops->version != DW_BACKEND_OPS_VERSION)
    st = dw_error_set(DW_ERR_BACKEND, "backend %s has ops version %u, expected %u", b->ops->name,
                      b->ops->version, DW_BACKEND_OPS_VERSION);
  if (st != DW_OK) {
    if (b->ops && b->ops->destroy) b->ops->destroy(b->ctx);
    dw_free(b);
    return st;
  }
  *out = b;
  return DW_OK;
}

void dw_backend_destroy(dw_backend *b) {
  if (!b) return;
  if (b->ops->destroy) b->ops->destroy(b->ctx);
  dw_free(b);
}

const char *dw_backend_name(const dw_backend *b) { return b->ops->name; }

void dw_backend_describe(const dw_backend *b, char *buf, size_t cap) {
  if (b->ops->describe) b->ops->describe(b->ctx, buf, cap);
  else snprintf(buf, cap, "%s", b->ops->name);
}

dw_status dw_backend_register_memory(dw_backend *b, void *ptr, size_t n_bytes) {
  if (b->ops->register_memory) {
    dw_status st = b->ops->register_memory(b->ctx, ptr, n_bytes);
    if (st != DW_OK) return st;
  }
  atomic_fetch_add(&b->stats.n_register, 1);
  atomic_fetch_add(&b->stats.registered_bytes, (int64_t)n_bytes);
  return DW_OK;
}

bool dw_backend_pins_memory(const dw_backend *b) { return b->ops->register_memory != NULL; }

void dw_backend_unregister_memory(dw_backend *b, void *ptr, size_t n_bytes) {
  if (b->ops->unregister_memory) b->ops->unregister_memory(b->ctx, ptr, n_bytes);
  atomic_fetch_add(&b->stats.n_unregister, 1);
  atomic_fetch_sub(&b->stats.registered_bytes, (int64_t)n_bytes);
}

dw_status dw_backend_matmul_f32(dw_backend *b, const float *a, const float *bm, float *c, uint32_t m,
                                uint32_t n, uint32_t k, uint64_t *staged) {
  uint64_t none;
  if (!staged) staged = &none;
  *staged = 0;
  atomic_fetch_add(&b->stats.n_matmul, 1);
  if (m == 0 || n == 0) return DW_OK;
  return b->ops->matmul_f32(b->ctx, a, bm, c, m, n, k, staged);
}
