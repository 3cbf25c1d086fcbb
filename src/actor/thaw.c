/*
 * thaw.c — an actor rebuilt from its snapshot (dw_actor_thaw[_file]):
 * every section is checked before anything is built; memory pages of a
 * file are mapped copy-on-write where they are aligned.
 */
#define _GNU_SOURCE
#include "abi/wasi_nn.h"
#include "actor/actor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BAD DW_SNAP_BAD

static dw_status load_embedded(dw_runtime *rt, const dw_snap_sec *sec, dw_module **out, uint8_t **bytes) {
  const uint8_t *raw;
  bool owned;
  dw_status st = dw_snap_payload(sec, &raw, &owned);
  if (st) return st;
  char tmp[] = "/tmp/dw-actor-module-XXXXXX";
  int fd = mkstemp(tmp);
  if (fd < 0) st = dw_error_set(DW_ERR_IO, "temporary module file: %s", strerror(errno));
  else {
    FILE *f = fdopen(fd, "wb");
    if (!f || fwrite(raw, 1, sec->raw_len, f) != sec->raw_len) st = dw_error_set(DW_ERR_IO, "temporary module file");
    if (f ? fclose(f) != 0 : close(fd) != 0) st = st ? st : dw_error_set(DW_ERR_IO, "temporary module file");
    if (!st) st = dw_module_load(rt, tmp, out, NULL);
    unlink(tmp);
  }
  if (!st && !(*bytes = dw_malloc(sec->raw_len ? sec->raw_len : 1))) st = dw_error_set(DW_ERR_NOMEM, "thaw");
  if (!st) memcpy(*bytes, raw, sec->raw_len);
  if (owned) dw_free((void *)raw);
  if (st) {
    dw_module_destroy(*out);
    *out = NULL;
  }
  return st;
}

/* Grows the fresh instance to the snapshot's size and drops its pages (the
 * data segments go; dropped pages read back as zeros, so an idle thawed
 * actor's resident memory is what the snapshot holds). */
static dw_status clear_memory(dw_actor *a, uint64_t size, uint32_t pages, dw_mem **out) {
  *out = NULL;
  dw_status st = dw_instance_grow_to(a->g.inst, pages);
  dw_mem *mem = dw_instance_memory(a->g.inst);
  if (st == DW_ERR_LIMIT && mem)
    return dw_error_set(DW_ERR_LIMIT, "snapshot: its memory of %u pages is more than this actor may have: memory cannot "
                        "grow past %u pages (the module's maximum or the actor memory limit, --max-memory)", pages,
                        mem->max_pages);
  if (st) return st;
  if ((mem ? mem->size : 0) != size)
    return BAD("the snapshot's memory (%llu bytes) does not fit the module's (%llu)", (unsigned long long)size,
               (unsigned long long)(mem ? mem->size : 0));
  if (mem) dw_mem_zero(mem, 0, mem->size);
  *out = mem;
  return DW_OK;
}

static dw_status restore_memory(dw_actor *a, const dw_snap_sec *sec, uint32_t pages, dw_thaw_report *rep) {
  const uint8_t *raw;
  bool owned;
  dw_status st = dw_snap_payload(sec, &raw, &owned);
  if (st) return st;
  dw_reader r = {raw, raw + sec->raw_len, false};
  uint64_t size = dw_get_u64(&r);
  uint32_t chunk = dw_get_u32(&r), present = dw_get_u32(&r);
  dw_mem *mem = NULL;
  if (r.bad || chunk != DW_ACTOR_CHUNK || size != (uint64_t)pages * 65536 || present > size / DW_ACTOR_CHUNK ||
      (uint64_t)present * (4 + DW_ACTOR_CHUNK) != (uint64_t)(r.end - r.p)) {
    st = BAD("the memory section is inconsistent");
    goto out;
  }
  if ((st = clear_memory(a, size, pages, &mem))) goto out;
  const uint8_t *idx = dw_get(&r, (size_t)present * 4), *data = r.p;
  dw_reader ir = {idx, idx + (size_t)present * 4, false};
  for (uint32_t i = 0; i < present; i++) {
    uint32_t c = dw_get_u32(&ir);
    if ((uint64_t)c >= size / DW_ACTOR_CHUNK) {
      st = BAD("a memory chunk index is out of range");
      goto out;
    }
    memcpy(mem->base + (uint64_t)c * DW_ACTOR_CHUNK, data + (size_t)i * DW_ACTOR_CHUNK, DW_ACTOR_CHUNK);
  }
  if (rep) rep->memory_bytes = size, rep->memory_compressed = true;
out:
  if (owned) dw_free((void *)raw);
  return st;
}

/* PAGES (see put_pages). With fd >= 0, file is a mapping of fd from offset
 * 0 and each run is mapped copy-on-write from it; otherwise, or where a
 * mapping is refused, the run is copied. */
static dw_status restore_pages(dw_actor *a, const dw_snap_sec *sec, uint32_t pages, const uint8_t *file, int fd,
                               dw_thaw_report *rep) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  uint64_t size = dw_get_u64(&r);
  uint32_t chunk = dw_get_u32(&r), n = dw_get_u32(&r), runs[DW_ACTOR_MAX_RUNS][2];
  if (r.bad || n > DW_ACTOR_MAX_RUNS) return BAD("the pages section is inconsistent");
  uint64_t next = 0, total = 0;
  for (uint32_t i = 0; i < n; i++) {
    runs[i][0] = dw_get_u32(&r), runs[i][1] = dw_get_u32(&r);
    if (!runs[i][1] || runs[i][0] < next || (uint64_t)runs[i][0] + runs[i][1] > size / DW_ACTOR_CHUNK)
      return BAD("a run of memory pages is out of order or range");
    next = (uint64_t)runs[i][0] + runs[i][1];
    total += runs[i][1];
  }
  uint32_t pad = dw_get_u32(&r);
  dw_get(&r, pad);
  if (sec->flags || r.bad || chunk != DW_ACTOR_CHUNK || size != (uint64_t)pages * 65536 || pad >= DW_ACTOR_CHUNK)
    return BAD("the pages section is inconsistent");
  if (total * DW_ACTOR_CHUNK != (uint64_t)(r.end - r.p)) return BAD("the pages section's data has the wrong length");
  dw_mem *mem = NULL; /* NULL only for a module without memory: then n == 0 */
  dw_status st = clear_memory(a, size, pages, &mem);
  if (st) return st;
  const uint8_t *data = r.p;
  uint64_t mapped = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t off = (uint64_t)runs[i][0] * DW_ACTOR_CHUNK, len = (uint64_t)runs[i][1] * DW_ACTOR_CHUNK;
    uint64_t file_off = (uint64_t)(data - file);
    if (fd >= 0 && file_off % DW_ACTOR_CHUNK == 0 && dw_mem_map_file(mem, off, len, fd, file_off) == DW_OK)
      mapped += len;
    else
      memcpy(mem->base + off, data, len);
    data += len;
  }
  if (rep) rep->memory_bytes = size, rep->memory_mapped = mapped;
  return DW_OK;
}

static dw_status restore_globals(dw_actor *a, const dw_snap_sec *sec) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  if (sec->flags) return BAD("the globals section must not be compressed");
  unsigned ng = dw_get_u32(&r);
  if (r.bad || ng != dw_instance_n_globals(a->g.inst)) return BAD("the module has %u globals, the snapshot %u",
                                                                dw_instance_n_globals(a->g.inst), ng);
  for (unsigned i = 0; i < ng; i++) {
    char name[256];
    const char *want;
    char type;
    unsigned nb;
    void *p = dw_instance_global(a->g.inst, i, &want, &type, &nb);
    dw_get_str(&r, name, sizeof name);
    uint32_t t = dw_get_u32(&r), n = dw_get_u32(&r);
    const uint8_t *v = n == nb ? dw_get(&r, n) : NULL;
    if (r.bad || !v || strcmp(name, want) || t != (uint32_t)(uint8_t)type) return BAD("global %u does not match the module", i);
    memcpy(p, v, n);
  }
  return DW_OK;
}

static dw_status restore_tables(dw_actor *a, const dw_snap_sec *sec) {
  const uint8_t *raw;
  bool owned;
  dw_status st = dw_snap_payload(sec, &raw, &owned);
  if (st) return st;
  dw_reader r = {raw, raw + sec->raw_len, false};
  uint32_t n = dw_get_u32(&r);
  if (r.bad || n != a->n_tables) st = BAD("the module has %u tables, the snapshot %u", a->n_tables, n);
  for (uint32_t i = 0; !st && i < n; i++) {
    wasm_rt_funcref_table_t *t = dw_instance_table(a->g.inst, i);
    uint32_t size = dw_get_u32(&r);
    if (r.bad || size < a->init_size[i] || (uint64_t)size * 4 > (uint64_t)(r.end - r.p)) {
      st = BAD("table %u's size is inconsistent", i);
      break;
    }
    if (size > t->size && wasm_rt_grow_funcref_table(t, size - t->size, wasm_rt_funcref_null_value) == UINT32_MAX) {
      st = dw_error_set(DW_ERR_LIMIT, "thaw: table %u cannot grow to %u elements", i, size);
      break;
    }
    for (uint32_t e = 0; e < size; e++) {
      uint32_t idx = dw_get_u32(&r);
      if (idx == UINT32_MAX) {
        t->data[e] = wasm_rt_funcref_null_value;
      } else if (!dw_actor_ref_resolve(a, i, idx, &t->data[e])) {
        if (idx & DW_ACTOR_REF_TAG)
          st = BAD("table %u element %u refers to declared function %u of %u", i, e, idx & ~DW_ACTOR_REF_TAG,
                   dw_instance_n_refs(a->g.inst));
        else
          st = BAD("table %u element %u refers to %u of %u", i, e, idx, a->init_size[i]);
        break;
      }
    }
  }
  if (owned) dw_free((void *)raw);
  return st;
}

/* The guest's model handles: for handle h, hs->idx[h - 1] is the registry
 * entry and hs->fp[h - 1] the 64 bytes (fingerprint, family) its MODELS
 * entry recorded, pointing into the section. */
typedef struct handles {
  int *idx;
  const uint8_t **fp;
  uint32_t n;
} handles;

/* Finds each model of the snapshot's MODELS in rt: the model of that name;
 * else one loaded with the same fingerprint (the host serves the file
 * under another name); else, unless the host's models are fixed, the
 * snapshot's name and path registered (mapped when first used). A fixed
 * host refuses only a model a handle refers to. The handles come from
 * HANDLES (version 4), or are the MODELS entries in order (before, when a
 * handle was a registry index + 1); the host's order of --model does not
 * matter. */
static dw_status restore_models(dw_runtime *rt, const dw_snap_sec *sec, const dw_snap_sec *hsec, handles *hs) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  memset(hs, 0, sizeof *hs);
  if (sec->flags || (hsec && hsec->flags)) return BAD("the models and handles sections must not be compressed");
  uint32_t n = dw_get_u32(&r);
  if (r.bad || n > 4096) return BAD("model count");
  dw_reader hr = {hsec ? hsec->stored : NULL, hsec ? hsec->stored + hsec->stored_len : NULL, false};
  uint32_t nh = hsec ? dw_get_u32(&hr) : n;
  if (hr.bad || nh > 4096 || (hsec && (uint64_t)nh * 4 != (uint64_t)(hr.end - hr.p))) return BAD("model handles");
  int *found = dw_calloc((size_t)n + 1, sizeof *found);
  const uint8_t **fps = dw_calloc((size_t)n + 1, sizeof *fps);
  uint32_t *ent = dw_calloc((size_t)nh + 1, sizeof *ent);
  char (*names)[256] = dw_calloc((size_t)n + 1, sizeof *names);
  hs->idx = dw_calloc((size_t)nh + 1, sizeof *hs->idx);
  hs->fp = dw_calloc((size_t)nh + 1, sizeof *hs->fp);
  dw_status st = !found || !fps || !ent || !names || !hs->idx || !hs->fp ? dw_error_set(DW_ERR_NOMEM, "thaw") : DW_OK;
  for (uint32_t h = 0; h < nh && !st; h++) {
    ent[h] = hsec ? dw_get_u32(&hr) : h;
    if (ent[h] >= n) st = BAD("model handle %u refers to model %u of %u", h + 1, ent[h] + 1, n);
  }
  for (uint32_t i = 0; i < n && !st; i++) {
    char path[4096];
    dw_get_str(&r, names[i], sizeof names[i]);
    dw_get_str(&r, path, sizeof path);
    uint32_t loaded = dw_get_u32(&r);
    if (!(fps[i] = dw_get(&r, 64)) || r.bad) {
      st = BAD("a model entry is truncated");
      break;
    }
    const char *name = names[i];
    int k = dw_registry_find(&rt->models, name, strlen(name));
    if (k < 0 && loaded) k = dw_registry_find_fingerprint(&rt->models, fps[i]);
    if (k < 0 && !rt->fixed_models) {
      dw_status added = dw_registry_add(&rt->models, name, path, false);
      if ((k = dw_registry_find(&rt->models, name, strlen(name))) < 0) st = added; /* else: ours, or another thread's */
    }
    found[i] = k;
  }
  for (uint32_t h = 0; h < nh && !st; h++) {
    hs->fp[h] = fps[ent[h]];
    if ((hs->idx[h] = found[ent[h]]) < 0)
      st = dw_error_set(DW_ERR_NOT_FOUND, "snapshot: it needs model '%s', which this host does not serve",
                        names[ent[h]]);
  }
  dw_free(found), dw_free(fps), dw_free(ent), dw_free(names);
  if (st) {
    dw_free(hs->idx), dw_free(hs->fp);
    memset(hs, 0, sizeof *hs);
    return st;
  }
  hs->n = nh;
  return DW_OK;
}

static dw_status restore_session(dw_actor *a, const dw_snap_sec *sec, const handles *hs, dw_thaw_report *rep) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  if (sec->flags) return BAD("a session section must not be compressed");
  uint32_t slot = dw_get_u32(&r), mh = dw_get_u32(&r), n_ctx = dw_get_u32(&r), n_past = dw_get_u32(&r);
  uint32_t n_layer = dw_get_u32(&r), kvd = dw_get_u32(&r);
  int idx = dw_abi_model_index(&a->g.abi, mh);
  if (r.bad || slot < 1 || dw_abi_session(&a->g.abi, slot) || idx < 0 || n_past > n_ctx)
    return BAD("a session header is invalid");
  const uint8_t *fp = hs->fp[mh - 1]; /* the fingerprint and family it was computed with (idx >= 0: a handle) */
  dw_model *m;
  const char *name = "", *path = "";
  dw_status st = dw_registry_model(&a->rt->models, idx, &m);
  if (st) return st;
  dw_registry_entry(&a->rt->models, idx, &name, &path, NULL);
  const dw_hparams *hp = &m->hp;
  size_t row = (size_t)kvd * sizeof(float);
  uint8_t have[32], fam[32];
  dw_model_fingerprint(m, have);
  dw_model_family(m, fam);
  bool same = !memcmp(have, fp, 32);
  if (!same && memcmp(fam, fp + 32, 32))
    return dw_error_set(DW_ERR_INVALID_ARG,
                        "snapshot: model '%s' (%s) is not the model the snapshot was made with (another architecture, "
                        "shape or vocabulary)", name, path);
  if (n_layer != (uint32_t)hp->n_layer || kvd != (uint32_t)(hp->n_head_kv * hp->head_dim) ||
      n_ctx > (uint32_t)hp->n_ctx_train)
    return dw_error_set(DW_ERR_INVALID_ARG, "snapshot: a session's shape does not match model '%s'", name);
  const uint8_t *tok = dw_get(&r, (size_t)n_past * 4);
  const uint8_t *k = dw_get(&r, (size_t)n_layer * n_past * row), *v = dw_get(&r, (size_t)n_layer * n_past * row);
  if (r.bad || r.p != r.end) return BAD("a session's size does not match its header");
  int32_t *ids = dw_malloc((size_t)(n_past ? n_past : 1) * sizeof *ids);
  if (!ids) return dw_error_set(DW_ERR_NOMEM, "thaw");
  memcpy(ids, tok, (size_t)n_past * 4);
  dw_session *s;
  if ((st = dw_sess_new(m, a->rt->engine, (int)n_ctx, &s))) {
    dw_free(ids);
    return st;
  }
  if (same) {
    st = dw_sess_restore(s, ids, (int)n_past, k, v);
  } else { /* the same model in another quantisation: re-prefill from the tokens */
    if (n_past) st = dw_decode(s, ids, (int)n_past, NULL, NULL);
    if (!st && rep) rep->reprefilled++;
    if (!st)
      dw_log(&a->rt->settings, DW_LOG_WARN,
             "driftwood: model '%s' differs from the one the snapshot was made with: session %u re-prefilled from "
             "its %u tokens", name, slot, n_past);
  }
  dw_free(ids);
  if (st) {
    dw_sess_free(s);
    return st;
  }
  if ((st = dw_abi_session_set(&a->g.abi, slot, s))) { /* beyond this host's max_sessions, or no memory */
    dw_sess_free(s);
    return st;
  }
  if (rep) rep->sessions++;
  return DW_OK;
}

static dw_status thaw(dw_runtime *rt, dw_module *m, const uint8_t *buf, size_t len, int fd, dw_actor **out,
                      dw_thaw_report *rep) {
  *out = NULL;
  if (rep) memset(rep, 0, sizeof *rep);
  /* a KV session's checksum is computed by other threads while the thaw
   * goes on (its bytes are read bounds-checked meanwhile, and an actor
   * whose snapshot fails it is not handed out) */
  dw_snap s;
  dw_snap_check *chk;
  dw_status st = dw_snap_parse_deferred(buf, len, 1u << DW_SEC_SESSION, &s, &chk);
  if (st) return st;
  const dw_snap_sec *meta = dw_snap_find(&s, DW_SEC_META), *mem = dw_snap_find(&s, DW_SEC_MEMORY),
                    *pgs = dw_snap_find(&s, DW_SEC_PAGES), *glob = dw_snap_find(&s, DW_SEC_GLOBALS),
                    *models = dw_snap_find(&s, DW_SEC_MODELS), *modsec = dw_snap_find(&s, DW_SEC_MODULE);
  dw_module *own = NULL;
  uint8_t *own_bytes = NULL;
  dw_actor *a = NULL;
  handles hs = {0};
  if (!meta || !mem == !pgs || !glob || !models || meta->flags || meta->stored_len < 76) {
    st = BAD("a required section is missing");
    goto out;
  }
  char hash[65];
  memcpy(hash, meta->stored, 64);
  hash[64] = 0;
  dw_reader mr = {meta->stored + 64, meta->stored + meta->stored_len, false};
  uint32_t pages = dw_get_u32(&mr);
  dw_get_u32(&mr), dw_get_u32(&mr); /* counts, informational */
  if (mr.bad || pages > 65535) {
    st = BAD("memory pages");
    goto out;
  }
  if (rep) rep->module_embedded = modsec != NULL;
  if (!m) {
    if (!modsec) {
      st = dw_error_set(DW_ERR_INVALID_ARG, "snapshot: the module is not embedded; give the module it was made with");
      goto out;
    }
    if ((st = load_embedded(rt, modsec, &own, &own_bytes))) goto out;
    char orig[4096];
    dw_get_str(&mr, orig, sizeof orig); /* after pages: n_models, n_sessions, then the path */
    dw_free(own->path);
    own->path = dw_strdup(mr.bad ? "(embedded)" : orig);
    if (!own->path) {
      st = dw_error_set(DW_ERR_NOMEM, "thaw");
      goto out;
    }
    m = own;
  }
  if (strcmp(dw_wasm_module_hash(m->wasm), hash) != 0) {
    st = dw_error_set(DW_ERR_INVALID_ARG, "snapshot: it was made by module %.12s…, not %.12s… (%s)", hash,
                      dw_wasm_module_hash(m->wasm), m->path);
    goto out;
  }
  if (m->rt != rt) {
    st = dw_error_set(DW_ERR_INVALID_ARG, "snapshot: the module belongs to another runtime");
    goto out;
  }
  if ((st = restore_models(rt, models, dw_snap_find(&s, DW_SEC_HANDLES), &hs)) || (st = dw_actor_new(m, &a))) goto out;
  for (uint32_t i = 0; i < hs.n && !st; i++) st = dw_abi_model_add(&a->g.abi, hs.idx[i]);
  if (st) goto out;
  a->own_module = own;
  own = NULL;
  if (own_bytes) {
    a->mod_bytes = own_bytes;
    a->mod_len = modsec->raw_len;
    own_bytes = NULL;
  }
  if ((st = mem ? restore_memory(a, mem, pages, rep) : restore_pages(a, pgs, pages, buf, fd, rep)) ||
      (st = restore_globals(a, glob)))
    goto out;
  const dw_snap_sec *tabs = dw_snap_find(&s, DW_SEC_TABLES);
  if (tabs && (st = restore_tables(a, tabs))) goto out;
  for (uint32_t i = 0; i < s.n && !st; i++)
    if (s.sec[i].type == DW_SEC_SESSION) st = restore_session(a, &s.sec[i], &hs, rep);
out:;
  dw_status checked = dw_snap_check_end(chk);
  if (checked) st = checked; /* a failed checksum explains whatever else went wrong */
  dw_snap_free(&s);
  dw_free(hs.idx), dw_free(hs.fp);
  if (st) {
    dw_actor_destroy(a);
    dw_module_destroy(own);
    dw_free(own_bytes);
    return st;
  }
  *out = a;
  return DW_OK;
}

dw_status dw_actor_thaw(dw_runtime *rt, dw_module *m, const uint8_t *buf, size_t len, dw_actor **out,
                        dw_thaw_report *rep) {
  return thaw(rt, m, buf, len, -1, out, rep);
}

dw_status dw_actor_thaw_file(dw_runtime *rt, dw_module *m, const char *path, dw_actor **out, dw_thaw_report *rep) {
  *out = NULL;
  /* mapped, not read: the page cache is used in place; memory pages are
   * mapped from fd too, and those mappings outlive it. Not populated: the
   * threads that check a large section fault its pages in as they go,
   * beside the rest of the thaw (checking a 134 MB file measured the same
   * either way). */
  const uint8_t *buf;
  size_t n;
  int fd;
  dw_status st = dw_file_map(path, false, &buf, &n, &fd);
  if (st) return st;
  st = thaw(rt, m, buf ? buf : (const uint8_t *)"", n, fd, out, rep);
  close(fd);
  if (buf) munmap((void *)buf, n);
  if (st) dw_error_wrap(st, "%s", path);
  return st;
}
