/*
 * backend.h — the compute-backend vtable, the registry of backends compiled
 * in, and the checked wrappers every caller goes through.
 *
 * Invariants:
 *  1. Backends compute on the pointers they are given: guest operands are
 *     views into linear memory (base + offset), never staging copies.
 *  2. Every committed linear-memory range is offered to register_memory
 *     before a kernel may touch it, and to unregister_memory before unmap.
 *     The wrappers count both (stats), whatever the backend does with them.
 *  3. Callers validate shapes and bounds before a backend sees them; a
 *     backend may assume its arguments are in range.
 *
 * Threads: a backend may be called from many threads at once.
 */
#ifndef DW_BACKEND_H
#define DW_BACKEND_H

#include "base/base.h"

#include <stdatomic.h>
#include <stdint.h>

#define DW_BACKEND_OPS_VERSION 2

typedef struct dw_backend_ops {
  uint32_t version; /* DW_BACKEND_OPS_VERSION */
  const char *name; /* "cpu", "cuda" */
  /* Make [ptr, ptr + n) usable by kernels (pin/map). Optional: NULL means
   * the backend reads host memory as it is. */
  dw_status (*register_memory)(void *ctx, void *ptr, size_t n_bytes);
  /* Undo register_memory. Optional: NULL when register_memory is NULL. */
  void (*unregister_memory)(void *ctx, void *ptr, size_t n_bytes);
  /* C[m×n] = A[m×k] · B[k×n], row-major f32, all in registered memory.
   * *staged gets the bytes the backend moved into its own buffers (device
   * scratch) and back; 0 when it computed on the given bytes in place. */
  dw_status (*matmul_f32)(void *ctx, const float *a, const float *b, float *c, uint32_t m,
                          uint32_t n, uint32_t k, uint64_t *staged);
  /* One line (or a few) about the device. Optional. */
  void (*describe)(void *ctx, char *buf, size_t cap);
  void (*destroy)(void *ctx);
} dw_backend_ops;

typedef struct dw_backend_stats {
  _Atomic uint64_t n_register;       /* register_memory calls */
  _Atomic uint64_t n_unregister;
  _Atomic int64_t registered_bytes;  /* currently registered */
  _Atomic uint64_t n_matmul;
} dw_backend_stats;

typedef struct dw_backend {
  const dw_backend_ops *ops; /* static */
  void *ctx;                 /* owned */
  dw_backend_stats stats;
} dw_backend;

/* Creates "cpu", "cuda" or "auto" (CUDA when a device is present).
 * settings (may be NULL): the CUDA backend's DRIFTWOOD_CUDA_STAGING,
 * DRIFTWOOD_CUDA_STAGE_MIN_BYTES and DRIFTWOOD_CUDA_FORCE_REGISTER. */
DW_HIDDEN dw_status dw_backend_create(const char *name, int threads, const dw_settings *settings,
                                      dw_backend **out);
DW_HIDDEN void dw_backend_destroy(dw_backend *b);
DW_HIDDEN const char *dw_backend_name(const dw_backend *b);
/* The backends compiled into this build, e.g. "cpu cuda". */
DW_HIDDEN const char *dw_backend_list(void);
DW_HIDDEN void dw_backend_describe(const dw_backend *b, char *buf, size_t cap);

DW_HIDDEN dw_status dw_backend_register_memory(dw_backend *b, void *ptr, size_t n_bytes);
DW_HIDDEN void dw_backend_unregister_memory(dw_backend *b, void *ptr, size_t n_bytes);
/* Whether register_memory pins pages (they must then never be remapped). */
DW_HIDDEN bool dw_backend_pins_memory(const dw_backend *b);
/* staged may be NULL. */
DW_HIDDEN dw_status dw_backend_matmul_f32(dw_backend *b, const float *a, const float *bm, float *c,
                                          uint32_t m, uint32_t n, uint32_t k, uint64_t *staged);

/* Plug-ins: each backend exposes a constructor. */
DW_HIDDEN dw_status dw_backend_cpu_reg(int threads, dw_backend *out);
#ifdef DW_HAVE_CUDA
/* DW_ERR_UNSUPPORTED when no device is present. */
DW_HIDDEN dw_status dw_backend_cuda_reg(const dw_settings *settings, dw_backend *out);
/* Bytes currently pinned by the CUDA backend (0 for other backends). */
DW_HIDDEN int64_t dw_backend_cuda_pinned_bytes(const dw_backend *b);
/* matmul_f32's staging policy: "auto" (GEMMs whose A, B and C together
 * reach min_bytes are computed on device copies DMA'd from guest memory),
 * "never" (always in place) or "always". The default is "auto" with
 * DW_CUDA_STAGE_MIN_BYTES, overridden by DRIFTWOOD_CUDA_STAGING and
 * DRIFTWOOD_CUDA_STAGE_MIN_BYTES; min_bytes 0 means the default. */
DW_HIDDEN dw_status dw_backend_cuda_set_staging(dw_backend *b, const char *mode, uint64_t min_bytes);
/* Device bytes held for staging (kept for reuse; freed with the backend). */
DW_HIDDEN int64_t dw_backend_cuda_scratch_bytes(const dw_backend *b);
#define DW_CUDA_STAGE_MIN_BYTES (256u * 1024u)
#endif

#endif
