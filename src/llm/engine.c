/*
 * engine.c — the engine registry (which engines are compiled in, "auto")
 * and the per-engine cache of prepared weights (engine.h invariant 1).
 */
#define _GNU_SOURCE
#include "llm/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

dw_status dw_engine_create(const char *name, int threads, const dw_settings *settings, dw_engine **out) {
  *out = NULL;
  if (!name) name = "auto";
  dw_engine *e = dw_calloc(1, sizeof *e);
  if (!e) return dw_error_set(DW_ERR_NOMEM, "engine");
  dw_status st = DW_ERR_UNSUPPORTED;
  bool is_auto = !strcmp(name, "auto");
  if (!strcmp(name, "cuda") || is_auto) {
#ifdef DW_HAVE_CUDA_ENGINE
    st = dw_engine_cuda_reg(settings, e);
#else
    st = dw_error_set(DW_ERR_UNSUPPORTED, "llm: this build has no CUDA engine");
#endif
    if (st && !is_auto) goto fail;
  }
  const char *idot = dw_setting(settings, "DRIFTWOOD_INT_DOT");
  if (st && (is_auto || !strcmp(name, "cpu"))) st = dw_engine_cpu_reg(threads, !idot || strcmp(idot, "0"), e);
  else if (st && !is_auto && strcmp(name, "cuda"))
    st = dw_error_set(DW_ERR_INVALID_ARG, "llm: unknown engine '%s' (cpu, cuda, auto)", name);
  if (st) goto fail;
  if (e->ops->version != DW_ENGINE_OPS_VERSION) {
    e->ops->destroy(e->ctx);
    st = dw_error_set(DW_ERR_BACKEND, "llm: engine '%s' has interface version %u, not %u", e->ops->name,
                      e->ops->version, DW_ENGINE_OPS_VERSION);
    goto fail;
  }
  pthread_mutex_init(&e->lock, NULL);
  pthread_mutex_init(&e->load_lock, NULL);
  const char *bm = dw_setting(settings, "DRIFTWOOD_BATCH_MAX");
  e->max_batch = bm && atoi(bm) >= 1 ? (atoi(bm) < 4096 ? atoi(bm) : 4096) : 64;
  *out = e;
  return DW_OK;
fail:
  dw_free(e);
  return st;
}

void dw_engine_destroy(dw_engine *e) {
  if (!e) return;
  for (dw_engine_weights *w = e->cache, *next; w; w = next) {
    next = w->next;
    pthread_mutex_destroy(&w->batch.lock);
    pthread_cond_destroy(&w->batch.cond);
    pthread_cond_destroy(&w->batch.arrived);
    dw_free(w->batch.seqs);
    dw_free(w->batch.reqs);
    e->ops->weights_free(e->ctx, w->w);
    dw_model_release(w->model);
    dw_free(w);
  }
  e->ops->destroy(e->ctx);
  pthread_mutex_destroy(&e->lock);
  pthread_mutex_destroy(&e->load_lock);
  dw_free(e);
}

const char *dw_engine_name(const dw_engine *e) { return e->ops->name; }

void dw_engine_describe(const dw_engine *e, char *buf, size_t cap) {
  if (e->ops->describe) e->ops->describe(e->ctx, buf, cap);
  else snprintf(buf, cap, "%s engine", e->ops->name);
}

static const dw_engine_weights *cached(dw_engine *e, const dw_model *m) {
  const dw_engine_weights *w = NULL;
  pthread_mutex_lock(&e->lock);
  for (w = e->cache; w && w->model != m; w = w->next) {}
  pthread_mutex_unlock(&e->lock);
  return w;
}

dw_status dw_engine_weights_for(dw_engine *e, dw_model *m, const dw_engine_weights **out) {
  if ((*out = cached(e, m))) return DW_OK;
  /* Loads take seconds for large models: they queue on load_lock, and
   * lookups of models already loaded never wait for them. */
  pthread_mutex_lock(&e->load_lock);
  dw_status st = DW_OK;
  if (!(*out = cached(e, m))) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dw_engine_weights nw = {.model = m};
    st = e->ops->weights_load(e->ctx, m, &nw.w, &nw.device_bytes);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    nw.load_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
    dw_engine_weights *node = st ? NULL : dw_malloc(sizeof *node);
    if (!st && !node) st = dw_error_set(DW_ERR_NOMEM, "engine: weights cache");
    if (node) { /* nodes never move: sessions hold pointers to them */
      dw_model_retain(m);
      *node = nw;
      pthread_mutex_init(&node->batch.lock, NULL);
      pthread_cond_init(&node->batch.cond, NULL);
      pthread_condattr_t ca;
      pthread_condattr_init(&ca);
      pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
      pthread_cond_init(&node->batch.arrived, &ca);
      pthread_condattr_destroy(&ca);
      pthread_mutex_lock(&e->lock);
      node->next = e->cache;
      e->cache = node;
      pthread_mutex_unlock(&e->lock);
      *out = node;
    } else if (nw.w) {
      e->ops->weights_free(e->ctx, nw.w);
    }
  }
  pthread_mutex_unlock(&e->load_lock);
  return st;
}
