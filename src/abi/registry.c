/*
 * registry.c — the models a runtime offers its guests, by name: mapped at
 * registration (--model) or on first use (--nn-preload), then shared by
 * every instance until the runtime ends.
 *
 * Threads: all functions lock; a loaded model pointer stays valid until
 * dw_registry_fini. Mapping and checking a model file (seconds for a large
 * one) happens outside the table's lock, so lookups of other models, and
 * freezes, never wait for it; loads queue on load_lock.
 */
#define _GNU_SOURCE
#include "abi/abi.h"

#include <stdlib.h>
#include <string.h>

void dw_registry_init(dw_registry *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->lock, NULL);
  pthread_mutex_init(&r->load_lock, NULL);
}

void dw_registry_fini(dw_registry *r) {
  for (int i = 0; i < r->n; i++) {
    dw_free(r->v[i].name);
    dw_free(r->v[i].path);
    dw_model_release(r->v[i].model);
  }
  dw_free(r->v);
  pthread_mutex_destroy(&r->lock);
  pthread_mutex_destroy(&r->load_lock);
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
  if (!st && !m && load_now) { /* map outside the table's lock, then look again */
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_lock(&r->load_lock);
    st = dw_model_load(path, false, &m);
    pthread_mutex_unlock(&r->load_lock);
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->n && !st; i++)
      if (!strcmp(r->v[i].name, name)) st = dw_error_set(DW_ERR_INVALID_ARG, "model name '%s' is given twice", name);
  }
  dw_abi_model *nv = st ? NULL : dw_realloc(r->v, (size_t)(r->n + 1) * sizeof *nv);
  char *dn = nv ? dw_strdup(name) : NULL, *dp = dn ? dw_strdup(path) : NULL;
  if (!st && (!nv || !dn || !dp)) st = dw_error_set(DW_ERR_NOMEM, "model registry");
  if (nv) r->v = nv;
  if (st) {
    dw_free(dn), dw_free(dp);
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

/* The loaded model at idx, or one of the same file under another name
 * (then shared into idx); NULL if neither. Called with r->lock held. */
static dw_model *loaded_at(dw_registry *r, int idx) {
  for (int i = 0; i < r->n && !r->v[idx].model; i++)
    if (r->v[i].model && !strcmp(r->v[i].path, r->v[idx].path)) dw_model_retain(r->v[idx].model = r->v[i].model);
  return r->v[idx].model;
}

dw_status dw_registry_model(dw_registry *r, int idx, dw_model **out) {
  dw_status st = DW_OK;
  *out = NULL;
  pthread_mutex_lock(&r->lock);
  if (idx < 0 || idx >= r->n) st = dw_error_set(DW_ERR_NOT_FOUND, "no model %d", idx);
  else *out = loaded_at(r, idx);
  char *path = st || *out ? NULL : dw_strdup(r->v[idx].path);
  pthread_mutex_unlock(&r->lock);
  if (st || *out) return st;
  if (!path) return dw_error_set(DW_ERR_NOMEM, "model registry");
  pthread_mutex_lock(&r->load_lock);
  pthread_mutex_lock(&r->lock);
  *out = loaded_at(r, idx); /* another thread may have loaded it meanwhile */
  pthread_mutex_unlock(&r->lock);
  dw_model *m = NULL;
  if (!*out) st = dw_model_load(path, false, &m);
  if (m) {
    pthread_mutex_lock(&r->lock);
    if (!(*out = loaded_at(r, idx))) *out = r->v[idx].model = m; /* entries never move out of their index */
    else dw_model_release(m);
    pthread_mutex_unlock(&r->lock);
  }
  pthread_mutex_unlock(&r->load_lock);
  dw_free(path);
  return st;
}

dw_model *dw_registry_loaded(dw_registry *r, int idx) {
  pthread_mutex_lock(&r->lock);
  dw_model *m = idx >= 0 && idx < r->n ? r->v[idx].model : NULL;
  pthread_mutex_unlock(&r->lock);
  return m;
}

bool dw_registry_entry(dw_registry *r, int idx, const char **name, const char **path, dw_model **model) {
  pthread_mutex_lock(&r->lock);
  bool ok = idx >= 0 && idx < r->n;
  if (ok) { /* the strings are never freed before dw_registry_fini, though r->v may move */
    if (name) *name = r->v[idx].name;
    if (path) *path = r->v[idx].path;
    if (model) *model = r->v[idx].model;
  }
  pthread_mutex_unlock(&r->lock);
  return ok;
}

int dw_registry_count(dw_registry *r) {
  pthread_mutex_lock(&r->lock);
  int n = r->n;
  pthread_mutex_unlock(&r->lock);
  return n;
}

int dw_registry_find_fingerprint(dw_registry *r, const uint8_t fp[32]) {
  int found = -1;
  uint8_t have[32];
  pthread_mutex_lock(&r->lock);
  for (int i = 0; i < r->n && found < 0; i++)
    if (r->v[i].model && (dw_model_fingerprint(r->v[i].model, have), !memcmp(have, fp, 32))) found = i;
  pthread_mutex_unlock(&r->lock);
  return found;
}
