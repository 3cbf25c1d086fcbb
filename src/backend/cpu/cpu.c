/*
 * cpu.c — the CPU backend: multithreaded, cache-blocked f32 kernels that
 * compute directly on the caller's memory (no packing or staging copies).
 *
 * Invariants:
 *  1. Kernels never allocate: extra memory is O(1) whatever the sizes.
 *  2. One job runs on the pool at a time (jobs from several threads queue on
 *     `submit`); the submitting thread works as worker 0.
 *  3. Each output element is written by exactly one worker.
 *
 * Threads: any thread may submit; workers live until destroy.
 */
#define _GNU_SOURCE
#include "backend/backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*job_fn)(void *arg, int worker, int n_workers);

typedef struct cpu_ctx {
  int n_threads;             /* workers including the submitter */
  pthread_t *threads;        /* owned: n_threads - 1 */
  pthread_mutex_t submit;    /* one job at a time */
  pthread_mutex_t lock;      /* guards the fields below */
  pthread_cond_t go, done;
  job_fn fn;
  void *arg;
  uint64_t generation;       /* bumped per job */
  int pending;               /* workers still running the job */
  bool stop;
} cpu_ctx;

typedef struct worker_arg {
  cpu_ctx *ctx;
  int idx;
} worker_arg;

static void *worker_main(void *p) {
  worker_arg *wa = p;
  cpu_ctx *c = wa->ctx;
  int idx = wa->idx;
  free(wa);
  uint64_t seen = 0;
  pthread_mutex_lock(&c->lock);
  for (;;) {
    while (!c->stop && c->generation == seen) pthread_cond_wait(&c->go, &c->lock);
    if (c->stop) break;
    seen = c->generation;
    job_fn fn = c->fn;
    void *arg = c->arg;
    pthread_mutex_unlock(&c->lock);
    fn(arg, idx, c->n_threads);
    pthread_mutex_lock(&c->lock);
    if (--c->pending == 0) pthread_cond_signal(&c->done);
  }
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

static void run_job(cpu_ctx *c, job_fn fn, void *arg, bool parallel) {
  if (!parallel || c->n_threads == 1) {
    fn(arg, 0, 1);
    return;
  }
  pthread_mutex_lock(&c->submit);
  pthread_mutex_lock(&c->lock);
  c->fn = fn;
  c->arg = arg;
  c->pending = c->n_threads - 1;
  c->generation++;
  pthread_cond_broadcast(&c->go);
  pthread_mutex_unlock(&c->lock);
  fn(arg, 0, c->n_threads);
  pthread_mutex_lock(&c->lock);
  while (c->pending) pthread_cond_wait(&c->done, &c->lock);
  pthread_mutex_unlock(&c->lock);
  pthread_mutex_unlock(&c->submit);
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
                            uint32_t k) {
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
  snprintf(buf, cap, "cpu: %d threads", c->n_threads);
}

static void cpu_destroy(void *ctx) {
  cpu_ctx *c = ctx;
  if (!c) return;
  pthread_mutex_lock(&c->lock);
  c->stop = true;
  pthread_cond_broadcast(&c->go);
  pthread_mutex_unlock(&c->lock);
  for (int i = 0; i < c->n_threads - 1; i++) pthread_join(c->threads[i], NULL);
  free(c->threads);
  pthread_mutex_destroy(&c->submit);
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->go);
  pthread_cond_destroy(&c->done);
  free(c);
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
  cpu_ctx *c = calloc(1, sizeof *c);
  if (!c) return dw_error_set(DW_ERR_NOMEM, "cpu backend");
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  c->n_threads = threads > 0 ? threads : (cores > 0 ? (int)cores : 1);
  if (c->n_threads > 256) c->n_threads = 256;
  pthread_mutex_init(&c->submit, NULL);
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->go, NULL);
  pthread_cond_init(&c->done, NULL);
  c->threads = calloc((size_t)c->n_threads, sizeof *c->threads);
  if (!c->threads) {
    free(c);
    return dw_error_set(DW_ERR_NOMEM, "cpu backend threads");
  }
  for (int i = 1; i < c->n_threads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa || pthread_create(&c->threads[i - 1], NULL, worker_main, wa ? (wa->ctx = c, wa->idx = i, wa) : NULL)) {
      free(wa);
      c->n_threads = i; /* destroy joins the ones that started */
      cpu_destroy(c);
      return dw_error_set(DW_ERR_NOMEM, "cannot start backend worker threads");
    }
  }
  out->ops = &cpu_ops;
  out->ctx = c;
  return DW_OK;
}
