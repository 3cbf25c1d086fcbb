/*
 * pool.c — the spin-then-sleep fork-join pool (see pool.h).
 *
 * A job is published by bumping `gen` (seq_cst); a worker that has spun out
 * sleeps only after registering in `sleepers` and re-checking `gen` under
 * the lock, and the publisher broadcasts under the same lock whenever a
 * sleeper is registered, so no wake-up is lost.
 */
#define _GNU_SOURCE
#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

enum { SPIN_LIMIT = 1 << 17 };

struct dw_pool {
  int n;                        /* workers including the caller */
  pthread_t *threads;           /* n - 1 */
  pthread_mutex_t submit;       /* one job at a time */
  pthread_mutex_t lock;
  pthread_cond_t wake;
  _Atomic uint64_t gen;
  _Atomic int sleepers;
  _Atomic int remaining;
  _Atomic bool stop;
  dw_pool_fn fn;
  void *arg;
};

typedef struct wstart {
  dw_pool *p;
  int idx;
} wstart;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static void *worker(void *a) {
  wstart w = *(wstart *)a;
  dw_free(a);
  dw_pool *p = w.p;
  uint64_t seen = 0;
  for (;;) {
    uint64_t g;
    int spins = 0;
    while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop)) {
      if (++spins < SPIN_LIMIT) {
        cpu_relax();
        continue;
      }
      pthread_mutex_lock(&p->lock);
      atomic_fetch_add(&p->sleepers, 1);
      while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->wake, &p->lock);
      atomic_fetch_sub(&p->sleepers, 1);
      pthread_mutex_unlock(&p->lock);
      spins = 0;
    }
    if (atomic_load(&p->stop)) return NULL;
    seen = g;
    p->fn(p->arg, w.idx, p->n);
    atomic_fetch_sub(&p->remaining, 1);
  }
}

static void publish(dw_pool *p) {
  atomic_fetch_add(&p->gen, 1);
  if (atomic_load(&p->sleepers) > 0) {
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
  }
}

dw_status dw_pool_create(int n_threads, dw_pool **out) {
  *out = NULL;
  if (n_threads <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n_threads = c > 0 ? (int)c : 1;
  }
  if (n_threads > 256) n_threads = 256;
  dw_pool *p = dw_calloc(1, sizeof *p);
  if (!p) return dw_error_set(DW_ERR_NOMEM, "thread pool");
  p->n = n_threads;
  pthread_mutex_init(&p->submit, NULL);
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  p->threads = dw_calloc((size_t)n_threads, sizeof *p->threads);
  if (!p->threads) {
    dw_pool_destroy(p);
    return dw_error_set(DW_ERR_NOMEM, "thread pool");
  }
  for (int i = 1; i < n_threads; i++) {
    wstart *w = dw_malloc(sizeof *w);
    if (w) *w = (wstart){p, i};
    if (!w || pthread_create(&p->threads[i - 1], NULL, worker, w) != 0) {
      dw_free(w);
      p->n = i; /* join only what started */
      dw_pool_destroy(p);
      return dw_error_set(DW_ERR_NOMEM, "thread pool: cannot start thread %d", i);
    }
  }
  *out = p;
  return DW_OK;
}

void dw_pool_destroy(dw_pool *p) {
  if (!p) return;
  atomic_store(&p->stop, true);
  pthread_mutex_lock(&p->lock);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (int i = 1; i < p->n; i++) pthread_join(p->threads[i - 1], NULL);
  dw_free(p->threads);
  pthread_mutex_destroy(&p->submit);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->wake);
  dw_free(p);
}

int dw_pool_size(const dw_pool *p) { return p->n; }

void dw_pool_run(dw_pool *p, dw_pool_fn fn, void *arg) {
  if (p->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  pthread_mutex_lock(&p->submit);
  p->fn = fn;
  p->arg = arg;
  atomic_store(&p->remaining, p->n - 1);
  publish(p);
  fn(arg, 0, p->n);
  for (int spins = 0; atomic_load(&p->remaining) > 0; spins++) {
    if (spins < SPIN_LIMIT) cpu_relax();
    else sched_yield();
  }
  pthread_mutex_unlock(&p->submit);
}
