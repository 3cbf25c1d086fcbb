/*
 * freeze.c — an actor's snapshot, written (dw_actor_freeze): one scan of
 * its memory, then the sections actor.h lists.
 */
#define _GNU_SOURCE
#include "actor/actor.h"

#include <stdlib.h>
#include <string.h>

/* Runs of 4 KiB chunks of linear memory: [i][0] the first chunk, [i][1]
 * how many. */
typedef struct runs {
  uint32_t (*v)[2];
  uint32_t n;
} runs;

/* The maximal runs of non-zero chunks: the one scan of memory a freeze
 * makes. */
static dw_status scan_runs(const dw_mem *mem, runs *r) {
  uint64_t n_chunks = mem ? mem->size / DW_ACTOR_CHUNK : 0;
  uint32_t cap = 0;
  r->v = NULL, r->n = 0;
  for (uint64_t c = 0; c < n_chunks; c++) {
    if (dw_mem_page_is_zero(mem->base + c * DW_ACTOR_CHUNK)) continue;
    if (r->n && r->v[r->n - 1][0] + r->v[r->n - 1][1] == c) {
      r->v[r->n - 1][1]++;
      continue;
    }
    if (r->n == cap) {
      uint32_t (*v)[2] = dw_realloc(r->v, (cap = cap ? cap * 2 : 64) * sizeof *v);
      if (!v) {
        dw_free(r->v);
        r->v = NULL, r->n = 0;
        return dw_error_set(DW_ERR_NOMEM, "freeze: memory runs");
      }
      r->v = v;
    }
    r->v[r->n][0] = (uint32_t)c, r->v[r->n][1] = 1, r->n++;
  }
  return DW_OK;
}

/* MEMORY: u64 size | u32 chunk | u32 present | present x u32 chunk index |
 * the chunks (the section is compressed when it pays). */
static void put_memory(dw_bytes *sec, const dw_mem *mem, const runs *r) {
  uint32_t present = 0;
  for (uint32_t i = 0; i < r->n; i++) present += r->v[i][1];
  dw_put_u64(sec, mem ? mem->size : 0);
  dw_put_u32(sec, DW_ACTOR_CHUNK);
  dw_put_u32(sec, present);
  for (uint32_t i = 0; i < r->n; i++)
    for (uint32_t c = r->v[i][0]; c < r->v[i][0] + r->v[i][1]; c++) dw_put_u32(sec, c);
  for (uint32_t i = 0; i < r->n; i++) dw_put(sec, mem->base + (uint64_t)r->v[i][0] * DW_ACTOR_CHUNK, (size_t)r->v[i][1] * DW_ACTOR_CHUNK);
}

/* PAGES: u64 size | u32 chunk | u32 n_runs | n_runs x (u32 first, u32 count)
 * | u32 pad | pad zero bytes | the runs' chunks, starting 4 KiB-aligned in
 * the file. Runs hold only non-zero chunks unless there would be more than
 * DW_ACTOR_MAX_RUNS of them: then runs bridge gaps of up to `gap` zero
 * chunks, the gap doubling until they fit. */
static void merge_runs(runs *r) {
  for (uint64_t gap = 1; r->n > DW_ACTOR_MAX_RUNS; gap *= 2) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n; i++) {
      if (n && r->v[i][0] - (r->v[n - 1][0] + r->v[n - 1][1]) <= gap) {
        r->v[n - 1][1] = r->v[i][0] + r->v[i][1] - r->v[n - 1][0];
      } else {
        r->v[n][0] = r->v[i][0], r->v[n][1] = r->v[i][1];
        n++;
      }
    }
    r->n = n;
  }
}

/* PAGES, its header built in sec and its runs written straight from
 * linear memory (w checksums and writes them where they lie). */
static void put_pages(dw_snap_out *w, dw_bytes *sec, const dw_mem *mem, const runs *r) {
  dw_put_u64(sec, mem ? mem->size : 0);
  dw_put_u32(sec, DW_ACTOR_CHUNK);
  dw_put_u32(sec, r->n);
  for (uint32_t i = 0; i < r->n; i++) dw_put_u32(sec, r->v[i][0]), dw_put_u32(sec, r->v[i][1]);
  size_t payload_off = dw_snap_out_next_payload(w);
  uint32_t pad = (uint32_t)((DW_ACTOR_CHUNK - (payload_off + sec->n + 4) % DW_ACTOR_CHUNK) % DW_ACTOR_CHUNK);
  static const uint8_t zero[DW_ACTOR_CHUNK];
  dw_put_u32(sec, pad);
  dw_put(sec, zero, pad);
  dw_part parts[DW_ACTOR_MAX_RUNS + 1] = {{sec->p, sec->n}};
  for (uint32_t i = 0; i < r->n; i++)
    parts[i + 1] = (dw_part){mem->base + (uint64_t)r->v[i][0] * DW_ACTOR_CHUNK, (uint64_t)r->v[i][1] * DW_ACTOR_CHUNK};
  if (sec->oom && !w->st) w->st = dw_error_set(DW_ERR_NOMEM, "freeze: pages");
  dw_snap_out_add_parts(w, DW_SEC_PAGES, parts, r->n + 1);
}

/* Section type from sec, unless building it ran out of memory. */
static void put_sec(dw_snap_out *w, const dw_bytes *sec, uint32_t type, bool compress) {
  if (sec->oom && !w->st) w->st = dw_error_set(DW_ERR_NOMEM, "freeze: section %u", type);
  dw_snap_out_add(w, type, sec->p, sec->n, compress);
}

/* Writes a's snapshot to w, section by section as each is built (the
 * largest one, memory or a KV session, is the most held at once). */
static dw_status freeze_to(dw_actor *a, unsigned flags, dw_snap_out *w) {
  bool embed_module = flags & DW_FREEZE_EMBED_MODULE;
  dw_bytes sec = {0};
  dw_status st = DW_OK;
  dw_mem *mem = dw_instance_memory(a->g.inst);
  const char *hash = dw_wasm_module_hash(a->module->wasm);
  int n_sessions = 0;
  for (uint32_t h = 1; h <= dw_abi_session_slots(&a->g.abi); h++) n_sessions += dw_abi_session(&a->g.abi, h) != NULL;
  /* MODELS: the runtime's models (each entry stays at its index while the
   * runtime lives), so a later thaw offers the actor the same ones; HANDLES:
   * the guest's own model handles, as indices into MODELS */
  dw_bytes msec = {0}, hsec = {0};
  dw_registry *reg = &a->rt->models;
  int n_models = dw_registry_count(reg);
  uint32_t n_handles = dw_abi_n_models(&a->g.abi);
  const dw_model **mods = dw_calloc((size_t)n_models + 1, sizeof *mods);
  dw_put_u32(&msec, (uint32_t)n_models);
  for (int i = 0; mods && i < n_models; i++) {
    uint8_t fp[32] = {0}, fam[32] = {0};
    const char *name = "", *path = "";
    dw_model *m = NULL;
    dw_registry_entry(reg, i, &name, &path, &m);
    if (m) dw_model_fingerprint(m, fp), dw_model_family(m, fam);
    mods[i] = m;
    dw_put_str(&msec, name);
    dw_put_str(&msec, path);
    dw_put_u32(&msec, m != NULL);
    dw_put(&msec, fp, 32);
    dw_put(&msec, fam, 32);
  }
  dw_put_u32(&hsec, n_handles);
  for (uint32_t h = 1; h <= n_handles; h++) {
    int idx = dw_abi_model_index(&a->g.abi, h);
    if (idx < 0 || idx >= n_models) {
      dw_free(mods), dw_free(msec.p), dw_free(hsec.p);
      return dw_error_set(DW_ERR_INVALID_ARG, "freeze: model handle %u is not a model of this runtime", h);
    }
    dw_put_u32(&hsec, (uint32_t)idx);
  }
  if (hsec.oom) msec.oom = true;
  if (!mods || msec.oom) {
    dw_free(mods), dw_free(msec.p), dw_free(hsec.p);
    return dw_error_set(DW_ERR_NOMEM, "freeze");
  }
  dw_snap_out_begin(w);
  /* META */
  dw_put(&sec, hash, 64);
  dw_put_u32(&sec, mem ? mem->pages : 0);
  dw_put_u32(&sec, (uint32_t)n_models);
  dw_put_u32(&sec, (uint32_t)n_sessions);
  dw_put_str(&sec, a->module->path);
  put_sec(w, &sec, DW_SEC_META, false);
  if (embed_module && a->mod_bytes) {
    dw_snap_out_add(w, DW_SEC_MODULE, a->mod_bytes, a->mod_len, true);
  } else if (embed_module) { /* the bytes loaded, whatever the file holds by now */
    size_t mn;
    const uint8_t *mod = dw_wasm_module_bytes(a->module->wasm, &mn);
    dw_snap_out_add(w, DW_SEC_MODULE, mod, mn, true);
  }
  /* PAGES, or MEMORY when asked to compress */
  sec.n = 0;
  runs r;
  if ((st = scan_runs(mem, &r))) goto fail;
  if (flags & DW_FREEZE_COMPRESS_MEMORY) {
    put_memory(&sec, mem, &r);
    put_sec(w, &sec, DW_SEC_MEMORY, true);
  } else {
    merge_runs(&r);
    put_pages(w, &sec, mem, &r);
  }
  dw_free(r.v);
  /* GLOBALS */
  sec.n = 0;
  unsigned ng = dw_instance_n_globals(a->g.inst);
  dw_put_u32(&sec, ng);
  for (unsigned i = 0; i < ng; i++) {
    const char *name;
    char type;
    unsigned nb;
    const void *p = dw_instance_global(a->g.inst, i, &name, &type, &nb);
    dw_put_str(&sec, name);
    dw_put_u32(&sec, (uint32_t)(uint8_t)type);
    dw_put_u32(&sec, nb);
    dw_put(&sec, p, nb);
  }
  put_sec(w, &sec, DW_SEC_GLOBALS, false);
  /* TABLES: each element as an index into the table as instantiated */
  sec.n = 0;
  dw_put_u32(&sec, a->n_tables);
  for (unsigned i = 0; i < a->n_tables && !st; i++) {
    const wasm_rt_funcref_table_t *t = dw_instance_table(a->g.inst, i);
    dw_put_u32(&sec, t->size);
    for (uint32_t e = 0; e < t->size; e++) {
      const wasm_rt_funcref_t *f = &t->data[e];
      uint32_t idx = UINT32_MAX; /* null */
      if (f->func) {
        idx = dw_actor_ref_name(a, i, e, f);
        if (idx == UINT32_MAX) {
          st = dw_error_set(DW_ERR_UNSUPPORTED, "freeze: table %u element %u is a function the module does not "
                                                "declare; it cannot be saved", i, e);
          break;
        }
      }
      dw_put_u32(&sec, idx);
    }
  }
  if (st) goto fail;
  put_sec(w, &sec, DW_SEC_TABLES, true);
  /* MODELS and HANDLES, as taken above */
  put_sec(w, &msec, DW_SEC_MODELS, false);
  put_sec(w, &hsec, DW_SEC_HANDLES, false);
  /* SESSIONS */
  for (int i = 0; i < (int)dw_abi_session_slots(&a->g.abi); i++) {
    const dw_session *s = dw_abi_session(&a->g.abi, (uint32_t)i + 1);
    if (!s) continue;
    if (w->st) break; /* a write failed: the rest would be lost */
    uint32_t mh = 0; /* the guest's handle of the session's model */
    for (uint32_t h = 1; h <= n_handles && !mh; h++)
      if (mods[dw_abi_model_index(&a->g.abi, h)] == s->model) mh = h;
    if (!mh) {
      st = dw_error_set(DW_ERR_INVALID_ARG, "freeze: session %d's model is not one the guest opened", i + 1);
      goto fail;
    }
    const dw_hparams *hp = &s->model->hp;
    size_t row = (size_t)hp->n_head_kv * hp->head_dim * sizeof(float);
    sec.n = 0;
    dw_put_u32(&sec, (uint32_t)i + 1);
    dw_put_u32(&sec, mh);
    dw_put_u32(&sec, (uint32_t)s->n_ctx);
    dw_put_u32(&sec, (uint32_t)s->n_past);
    dw_put_u32(&sec, (uint32_t)hp->n_layer);
    dw_put_u32(&sec, (uint32_t)(row / sizeof(float)));
    for (int t = 0; t < s->n_past; t++) dw_put_u32(&sec, (uint32_t)s->tokens[t]);
    size_t half = (size_t)hp->n_layer * s->n_past * row; /* K, then V: [layer][pos][kv_dim] */
    uint8_t *kv = dw_reserve(&sec, 2 * half); /* exported straight into the section */
    if (!kv) {
      st = dw_error_set(DW_ERR_NOMEM, "freeze: %zu bytes of KV", 2 * half);
      goto fail;
    }
    if ((st = dw_sess_export(s, kv, kv + half))) goto fail;
    put_sec(w, &sec, DW_SEC_SESSION, false);
  }
  dw_free(sec.p), dw_free(msec.p), dw_free(hsec.p), dw_free(mods);
  return dw_snap_out_end(w);
fail:
  dw_free(sec.p), dw_free(msec.p), dw_free(hsec.p), dw_free(mods);
  return st;
}

dw_status dw_actor_freeze(dw_actor *a, unsigned flags, uint8_t **buf, size_t *len) {
  *buf = NULL, *len = 0;
  dw_bytes out = {0};
  dw_snap_out w = {.buf = &out};
  dw_status st = freeze_to(a, flags, &w);
  if (st) {
    dw_free(out.p);
    return st;
  }
  *buf = out.p, *len = out.n;
  return DW_OK;
}

/* Streamed into the file as it is built: a snapshot never sits whole in
 * memory on its way to disk. */
dw_status dw_actor_freeze_file(dw_actor *a, unsigned flags, const char *path) {
  dw_afile f;
  dw_status st = dw_afile_open(&f, path);
  dw_snap_out w = {.file = &f};
  if (!st) st = freeze_to(a, flags, &w);
  if (st) {
    dw_afile_abort(&f);
    return st;
  }
  return dw_afile_commit(&f);
}

