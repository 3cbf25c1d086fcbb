/*
 * registry.c — the models a runtime offers its guests, by name: mapped at
 * registration (--model) or on first use (--nn-preload), then shared by
 * every instance until the runtime ends.
 *
 * Threads: all functions lock; a loaded model pointer stays valid until
 * dw_registry_fini.
 */
#define _GNU_SOURCE
#include "abi/abi.h"

#include <stdlib.h>
#include <string.h>

void dw_registry_init(dw_registry *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->lock, NULL);
}

void dw_registry_fini(dw_registry *r) {
  for (int i = 0; i < r->n; i++) {
    free(r->v[i].name);
    free(r->v[i].path);
    dw_model_release(r->v[i].model);
  }
  free(r->v);
  pthread_mutex_destroy(&r->lock);
  memset(r, 0, sizeof *r);
}

dw_status dw_registry_add(dw_registry *r, const char *name, const char *path, bool load_now) {
  if (!name || !*name) return dw_error_set(DW_ERR_INVALID_ARG, "a model needs a name");
  dw_status st = DW_OK;
  pthread_mutex_lock(&r->lock);
  dw_model *m = NULL;
  for (int i = 0; i < r->n && !st; i++) {
    if (!strcmp(r->v[i].name, name)) st = dw_error_set(DW_ERR_INVALID_ARG, "model name '%s' is given twice", name);
    else if (!m && r->v[i].model && !strcmp(r->v[i].path, path)) dw_model_retain(m = r->v[i].model);
  }
  if (!st && !m && load_now) st = dw_model_load(path, false, &m);
  dw_abi_model *nv = st ? NULL : realloc(r->v, (size_t)(r->n + 1) * sizeof *nv);
  char *dn = nv ? strdup(name) : NULL, *dp = dn ? strdup(path) : NULL;
  if (!st && (!nv || !dn || !dp)) st = dw_error_set(DW_ERR_NOMEM, "model registry");
  if (nv) r->v = nv;
  if (st) {
    free(dn), free(dp);
    dw_model_release(m);
  } else {
    r->v[r->n++] = (dw_abi_model){dn, dp, m};
  }
  pthread_mutex_unlock(&r->lock);
  return st;
}

int dw_registry_find(dw_registry *r, const char *name, size_t len) {
  int found = -1;
  pthread_mutex_lock(&r->lock);
  for (int i = 0; i < r->n && found < 0; i++)
    if (strlen(r->v[i].name) == len && !memcmp(r->v[i].name, name, len)) found = i;
  pthread_mutex_unlock(&r->lock);
  return found;
}

dw_status dw_registry_model(dw_registry *r, int idx, dw_model **out) {
  dw_status st = DW_OK;
  *out = NULL;
  pthread_mutex_lock(&r->lock);
  if (idx < 0 || idx >= r->n) st = dw_error_set(DW_ERR_NOT_FOUND, "no model %d", idx);
  else if (!r->v[idx].model) {
    for (int i = 0; i < r->n && !r->v[idx].model; i++) /* the same file under another name */
      if (r->v[i].model && !strcmp(r->v[i].path, r->v[idx].path)) dw_model_retain(r->v[idx].model = r->v[i].model);
    if (!r->v[idx].model) st = dw_model_load(r->v[idx].path, false, &r->v[idx].model);
  }
  if (!st) *out = r->v[idx].model;
  pthread_mutex_unlock(&r->lock);
  return st;
}

dw_model *dw_registry_loaded(dw_registry *r, int idx) {
  pthread_mutex_lock(&r->lock);
  dw_model *m = idx >= 0 && idx < r->n ? r->v[idx].model : NULL;
  pthread_mutex_unlock(&r->lock);
  return m;
}
