/*
 * cpu.c — the CPU backend: multithreaded, cache-blocked f32 kernels that
 * compute directly on the caller's memory (no packing or staging copies).
 *
 * Invariants:
 *  1. Kernels never allocate: extra memory is O(1) whatever the sizes.
 *  2. Jobs run on a dw_pool (base/pool.h): one at a time, the submitting
 *     thread working as worker 0.
 *  3. Each output element is written by exactly one worker.
 *
 * Threads: any thread may submit; workers live until destroy.
 */
#define _GNU_SOURCE
#include "backend/backend.h"
#include "base/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cpu_ctx {
  dw_pool *pool; /* owned: workers including the submitter */
} cpu_ctx;

static void run_job(cpu_ctx *c, dw_pool_fn fn, void *arg, bool parallel) {
  if (parallel) dw_pool_run(c->pool, fn, arg);
  else fn(arg, 0, 1);
}

/* ---- matmul ---------------------------------------------------------- */

typedef struct mm_job {
  const float *a, *b; /* A (m, k), B (k, n) */
  float *c;           /* C (m, n) */
  uint32_t m, n, k;
} mm_job;

enum { MR = 4, NB = 256, KB = 128 };

/* C[i0:i1, j0:j1] = A[i0:i1, :] · B[:, j0:j1], blocked over k so that a
 * KB×NB panel of B (128 KiB) stays in L2 while rows stream through. */
static void mm_block(const mm_job *J, uint32_t i0, uint32_t i1, uint32_t j0, uint32_t j1) {
  const size_t n = J->n, k = J->k;
  for (uint32_t jb = j0; jb < j1; jb += NB) {
    uint32_t je = jb + NB < j1 ? jb + NB : j1, w = je - jb;
    for (uint32_t i = i0; i < i1; i++) memset(J->c + i * n + jb, 0, w * sizeof(float));
    for (uint32_t kb = 0; kb < k; kb += KB) {
      uint32_t ke = kb + KB < k ? kb + KB : (uint32_t)k;
      uint32_t i = i0;
      for (; i + MR <= i1; i += MR) {
        float *restrict c0 = J->c + (i + 0) * n + jb, *restrict c1 = J->c + (i + 1) * n + jb;
        float *restrict c2 = J->c + (i + 2) * n + jb, *restrict c3 = J->c + (i + 3) * n + jb;
        for (uint32_t p = kb; p < ke; p++) {
          const float *restrict br = J->b + p * n + jb;
          float a0 = J->a[(i + 0) * k + p], a1 = J->a[(i + 1) * k + p];
          float a2 = J->a[(i + 2) * k + p], a3 = J->a[(i + 3) * k + p];
          for (uint32_t j = 0; j < w; j++) {
            float bv = br[j];
            c0[j] += a0 * bv;
            c1[j] += a1 * bv;
            c2[j] += a2 * bv;
            c3[j] += a3 * bv;
          }
        }
      }
      for (; i < i1; i++) {
        float *restrict c0 = J->c + i * n + jb;
        for (uint32_t p = kb; p < ke; p++) {
          const float *restrict br = J->b + p * n + jb;
          float a0 = J->a[i * k + p];
          for (uint32_t j = 0; j < w; j++) c0[j] += a0 * br[j];
        }
      }
    }
  }
}

static void mm_worker(void *arg, int w, int nw) {
  const mm_job *J = arg;
  /* Split rows in multiples of MR when there are enough; else split columns. */
  if (J->m >= (uint32_t)(nw * MR)) {
    uint32_t blocks = (J->m + MR - 1) / MR;
    uint32_t b0 = (uint32_t)((uint64_t)blocks * w / nw), b1 = (uint32_t)((uint64_t)blocks * (w + 1) / nw);
    uint32_t i0 = b0 * MR, i1 = b1 * MR < J->m ? b1 * MR : J->m;
    if (i0 < i1) mm_block(J, i0, i1, 0, J->n);
  } else {
    uint32_t j0 = (uint32_t)((uint64_t)J->n * w / nw), j1 = (uint32_t)((uint64_t)J->n * (w + 1) / nw);
    if (j0 < j1) mm_block(J, 0, J->m, j0, j1);
  }
}

static dw_status cpu_matmul(void *ctx, const float *a, const float *b, float *c, uint32_t m, uint32_t n,
                            uint32_t k, uint64_t *staged) {
  (void)staged; /* computes in place: stays 0 */
  if (k == 0) {
    for (uint32_t i = 0; i < m; i++) memset(c + (size_t)i * n, 0, (size_t)n * sizeof(float));
    return DW_OK;
  }
  mm_job J = {a, b, c, m, n, k};
  bool parallel = (uint64_t)m * n * k >= 64ull * 64 * 64;
  run_job(ctx, mm_worker, &J, parallel);
  return DW_OK;
}

static void cpu_describe(void *ctx, char *buf, size_t cap) {
  cpu_ctx *c = ctx;
  snprintf(buf, cap, "cpu: %d threads", dw_pool_size(c->pool));
}

static void cpu_destroy(void *ctx) {
  cpu_ctx *c = ctx;
  if (!c) return;
  dw_pool_destroy(c->pool);
  dw_free(c);
}

static const dw_backend_ops cpu_ops = {
    .version = DW_BACKEND_OPS_VERSION,
    .name = "cpu",
    .register_memory = NULL,   /* host memory is usable as it is */
    .unregister_memory = NULL,
    .matmul_f32 = cpu_matmul,
    .describe = cpu_describe,
    .destroy = cpu_destroy,
};

dw_status dw_backend_cpu_reg(int threads, dw_backend *out) {
  cpu_ctx *c = dw_calloc(1, sizeof *c);
  if (!c) return dw_error_set(DW_ERR_NOMEM, "cpu backend");
  dw_status st = dw_pool_create(threads, &c->pool);
  if (st) {
    dw_free(c);
    return st;
  }
  out->ops = &cpu_ops;
  out->ctx = c;
  return DW_OK;
}
