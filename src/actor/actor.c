/*
 * actor.c — actors (reactor instances driven by messages) and their
 * snapshots: freeze, thaw, fork (public API in include/driftwood.h).
 *
 * A snapshot holds exactly an actor's state (DESIGN.md §5–6):
 *   META     module SHA-256, memory pages, counts
 *   MODULE   the module bytes (optional)
 *   PAGES    linear memory as runs of 4 KiB chunks (the zero ones left out),
 *            stored raw and 4 KiB-aligned in the file, so a thaw from a
 *            file maps them copy-on-write instead of copying them
 *   MEMORY   (instead of PAGES, with DW_FREEZE_COMPRESS_MEMORY, and in
 *            version 1 files) the non-zero chunks, zstd when it pays
 *   GLOBALS  every global by index, name and type (exported or not)
 *   MODELS   the runtime's registry in order (names, paths, fingerprints),
 *            since guests hold model handles = registry index + 1
 *   SESSION  one per live KV session: slot, model handle, n_ctx, tokens,
 *            K and V as f32 in the canonical [layer][pos][kv_dim] layout
 *   TABLES   each funcref table's size and elements, as indices into the
 *            table as instantiated (function pointers are not portable), or
 *            for a function it did not start with (put there by ref.func or
 *            table.init), REF_TAG | its index among the functions the
 *            element segments declare (dw_instance_ref)
 * Open files and the WASI fd table are not saved: a thaw re-instantiates
 * the module, then overwrites memory, globals and tables; stdio is the
 * host's.
 *
 * Thaw checks before it builds anything: the module hash, every length,
 * every model (same fingerprint: KV restored as is; same architecture,
 * shapes and vocabulary but other weights: re-prefilled from the tokens and
 * reported; otherwise refused).
 */
#define _GNU_SOURCE
#include "abi/wasi_nn.h"
#include "api/internal.h"
#include "actor/snapshot.h"
#include "wasi/wasi.h"

#include <errno.h>
#include <wasm-rt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { CHUNK = DW_MEM_SMALL_PAGE };

struct dw_actor {
  dw_runtime *rt;        /* borrowed */
  dw_module *module;     /* borrowed, or own_module */
  dw_module *own_module; /* owned when thawed from embedded bytes */
  uint8_t *mod_bytes;    /* owned: those bytes, for the next freeze */
  size_t mod_len;
  /* Each funcref table as instantiation left it: snapshot elements are
   * stored as indices into it (function pointers are not portable). */
  unsigned n_tables;
  wasm_rt_funcref_t **init_tab;
  uint32_t *init_size;
  dw_guest g;             /* WASI, WASI-NN, the driftwood ABI, the instance */
  dw_trap_kind last_trap; /* of the last call that trapped */
};

/* Table elements that are not in the table as instantiated are stored as
 * REF_TAG | their index among the element segments' functions. */
#define REF_TAG 0x80000000u

static bool same_ref(const wasm_rt_funcref_t *x, const wasm_rt_funcref_t *y) {
  return x->func == y->func && x->func_type == y->func_type && x->module_instance == y->module_instance;
}

/* f's index among inst's element-segment functions, or UINT32_MAX. */
static uint32_t ref_index(dw_instance *inst, const wasm_rt_funcref_t *f) {
  wasm_rt_funcref_t r;
  for (unsigned k = 0, n = dw_instance_n_refs(inst); k < n && k < REF_TAG; k++)
    if (dw_instance_ref(inst, k, &r) && same_ref(&r, f)) return k;
  return UINT32_MAX;
}

/* Where f (element e of table i) was in table i as instantiated, or
 * UINT32_MAX; element e itself is tried first (a table mostly keeps its
 * elements in place). */
static uint32_t init_index(const dw_actor *a, unsigned i, uint32_t e, const wasm_rt_funcref_t *f) {
  if (e < a->init_size[i] && same_ref(&a->init_tab[i][e], f)) return e;
  for (uint32_t k = 0; k < a->init_size[i]; k++)
    if (same_ref(&a->init_tab[i][k], f)) return k;
  return UINT32_MAX;
}

static dw_status actor_new(dw_module *m, dw_actor **out) {
  *out = NULL;
  dw_actor *a = calloc(1, sizeof *a);
  if (!a) return dw_error_set(DW_ERR_NOMEM, "actor");
  a->rt = m->rt;
  a->module = m;
  static const char *const argv[] = {"actor"};
  dw_wasi_config wc = {.argc = 1, .argv = argv, .stdin_fd = 0, .stdout_fd = 1, .stderr_fd = 2};
  dw_status st = dw_guest_create(m, &wc, m->rt->actor_mem_limit, &a->g);
  if (st) {
    dw_actor_destroy(a);
    return st;
  }
  a->n_tables = dw_instance_n_tables(a->g.inst);
  a->init_tab = calloc(a->n_tables + 1, sizeof *a->init_tab);
  a->init_size = calloc(a->n_tables + 1, sizeof *a->init_size);
  if (!a->init_tab || !a->init_size) {
    dw_actor_destroy(a);
    return dw_error_set(DW_ERR_NOMEM, "actor");
  }
  for (unsigned i = 0; i < a->n_tables; i++) {
    const wasm_rt_funcref_table_t *t = dw_instance_table(a->g.inst, i);
    a->init_size[i] = t->size;
    if (!(a->init_tab[i] = malloc((t->size ? t->size : 1) * sizeof **a->init_tab))) {
      dw_actor_destroy(a);
      return dw_error_set(DW_ERR_NOMEM, "actor");
    }
    memcpy(a->init_tab[i], t->data, t->size * sizeof **a->init_tab);
  }
  if (!dw_wasm_export_sig(m->wasm, "dw_alloc") || !dw_wasm_export_sig(m->wasm, "dw_on_message")) {
    dw_actor_destroy(a);
    return dw_error_set(DW_ERR_NOT_FOUND, "not an actor module: it must export dw_alloc and dw_on_message");
  }
  *out = a;
  return DW_OK;
}

void dw_actor_destroy(dw_actor *a) {
  if (!a) return;
  dw_guest_destroy(&a->g);
  dw_module_destroy(a->own_module);
  free(a->mod_bytes);
  for (unsigned i = 0; a->init_tab && i < a->n_tables; i++) free(a->init_tab[i]);
  free(a->init_tab);
  free(a->init_size);
  free(a);
}

dw_trap_kind dw_actor_last_trap(const dw_actor *a) { return a->last_trap; }

static dw_status call(dw_actor *a, const char *name, const char *sig, const uint64_t *args, uint64_t *value) {
  dw_call_result r;
  dw_status st = dw_instance_call(a->g.inst, name, sig, args, &r);
  if (st == DW_ERR_TRAP || (st == DW_OK && r.outcome == DW_TRAPPED)) {
    a->last_trap = dw_trap_kind_of(r.trap);
    return dw_error_set(DW_ERR_TRAP, "actor: %s trapped: %s", name, dw_trap_str(r.trap));
  }
  if (st) return st;
  if (r.outcome == DW_EXITED) return dw_error_set(DW_ERR_TRAP, "actor: %s called proc_exit(%d)", name, r.exit_code);
  if (value) *value = r.value;
  return DW_OK;
}

dw_status dw_actor_spawn(dw_module *m, dw_actor **out) {
  dw_status st = actor_new(m, out);
  if (st) return st;
  if (dw_wasm_export_sig(m->wasm, "_initialize") && (st = call(*out, "_initialize", "v:", NULL, NULL))) {
    dw_actor_destroy(*out);
    *out = NULL;
  }
  return st;
}

static dw_status send_msg(dw_actor *a, const void *msg, size_t len, int32_t *result);

dw_status dw_actor_send(dw_actor *a, const void *msg, size_t len, int out_fd, int32_t *result) {
  a->g.abi.emit_fd = out_fd;
  a->g.abi.emit_fn = NULL;
  return send_msg(a, msg, len, result);
}

dw_status dw_actor_send_cb(dw_actor *a, const void *msg, size_t len, dw_emit_fn fn, void *ctx, int32_t *result) {
  if (!fn) return dw_error_set(DW_ERR_INVALID_ARG, "actor: no emit function");
  a->g.abi.emit_fn = fn;
  a->g.abi.emit_ctx = ctx;
  dw_status st = send_msg(a, msg, len, result);
  a->g.abi.emit_fn = NULL;
  a->g.abi.emit_ctx = NULL;
  return st;
}

void dw_actor_get_stats(const dw_actor *a, dw_actor_stats *out) {
  memset(out, 0, sizeof *out);
  const dw_mem *mem = dw_instance_memory(a->g.inst);
  out->memory_bytes = mem ? mem->size : 0;
  for (int i = 0; i < DW_ABI_MAX_SESSIONS; i++) {
    const dw_session *s = a->g.abi.sessions[i];
    if (!s) continue;
    out->sessions++;
    out->kv_tokens += (uint64_t)s->n_past;
    uint64_t blocks = ((uint64_t)s->n_past + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
    out->kv_bytes += blocks * dw_kv_block_bytes(s->model);
  }
}

const char *dw_module_hash(const dw_module *m) { return dw_wasm_module_hash(m->wasm); }

static dw_status send_msg(dw_actor *a, const void *msg, size_t len, int32_t *result) {
  if (len > UINT32_MAX / 2) return dw_error_set(DW_ERR_LIMIT, "message of %zu bytes", len);
  uint64_t ptr = 0, rv = 0, args[2] = {len, 0};
  dw_status st = call(a, "dw_alloc", "i:i", args, &ptr);
  if (st) return st;
  void *p;
  dw_mem *mem = dw_instance_memory(a->g.inst);
  if (!mem || dw_mem_view(mem, (uint32_t)ptr, len, &p) != DW_OK)
    return dw_error_set(DW_ERR_OUT_OF_BOUNDS, "actor: dw_alloc(%zu) returned %llu, outside memory", len,
                        (unsigned long long)ptr);
  memcpy(p, msg, len);
  args[0] = ptr, args[1] = len;
  st = call(a, "dw_on_message", "i:ii", args, &rv);
  if (!st && result) *result = (int32_t)rv;
  return st;
}

/* ---- freeze ---------------------------------------------------------------------- */

/* Runs of 4 KiB chunks of linear memory: [i][0] the first chunk, [i][1]
 * how many. */
typedef struct runs {
  uint32_t (*v)[2];
  uint32_t n;
} runs;

/* The maximal runs of non-zero chunks: the one scan of memory a freeze
 * makes. */
static dw_status scan_runs(const dw_mem *mem, runs *r) {
  uint64_t n_chunks = mem ? mem->size / CHUNK : 0;
  uint32_t cap = 0;
  r->v = NULL, r->n = 0;
  for (uint64_t c = 0; c < n_chunks; c++) {
    if (dw_mem_page_is_zero(mem->base + c * CHUNK)) continue;
    if (r->n && r->v[r->n - 1][0] + r->v[r->n - 1][1] == c) {
      r->v[r->n - 1][1]++;
      continue;
    }
    if (r->n == cap) {
      uint32_t (*v)[2] = realloc(r->v, (cap = cap ? cap * 2 : 64) * sizeof *v);
      if (!v) {
        free(r->v);
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
  dw_put_u32(sec, CHUNK);
  dw_put_u32(sec, present);
  for (uint32_t i = 0; i < r->n; i++)
    for (uint32_t c = r->v[i][0]; c < r->v[i][0] + r->v[i][1]; c++) dw_put_u32(sec, c);
  for (uint32_t i = 0; i < r->n; i++) dw_put(sec, mem->base + (uint64_t)r->v[i][0] * CHUNK, (size_t)r->v[i][1] * CHUNK);
}

/* PAGES: u64 size | u32 chunk | u32 n_runs | n_runs x (u32 first, u32 count)
 * | u32 pad | pad zero bytes | the runs' chunks, starting 4 KiB-aligned in
 * the file. Runs hold only non-zero chunks unless there would be more than
 * MAX_RUNS of them (each run is one mapping at thaw): then runs bridge gaps
 * of up to `gap` zero chunks, the gap doubling until they fit. */
enum { MAX_RUNS = 256 };

static void merge_runs(runs *r) {
  for (uint64_t gap = 1; r->n > MAX_RUNS; gap *= 2) {
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

static void put_pages(dw_bytes *sec, const dw_mem *mem, const runs *r, size_t payload_off) {
  dw_put_u64(sec, mem ? mem->size : 0);
  dw_put_u32(sec, CHUNK);
  dw_put_u32(sec, r->n);
  for (uint32_t i = 0; i < r->n; i++) dw_put_u32(sec, r->v[i][0]), dw_put_u32(sec, r->v[i][1]);
  uint32_t pad = (uint32_t)((CHUNK - (payload_off + sec->n + 4) % CHUNK) % CHUNK);
  static const uint8_t zero[CHUNK];
  dw_put_u32(sec, pad);
  dw_put(sec, zero, pad);
  for (uint32_t i = 0; i < r->n; i++) dw_put(sec, mem->base + (uint64_t)r->v[i][0] * CHUNK, (size_t)r->v[i][1] * CHUNK);
}

dw_status dw_actor_freeze(dw_actor *a, unsigned flags, uint8_t **buf, size_t *len) {
  bool embed_module = flags & DW_FREEZE_EMBED_MODULE;
  *buf = NULL, *len = 0;
  dw_bytes out, sec = {0};
  dw_status st = DW_OK;
  dw_mem *mem = dw_instance_memory(a->g.inst);
  const char *hash = dw_wasm_module_hash(a->module->wasm);
  int n_sessions = 0;
  for (int i = 0; i < DW_ABI_MAX_SESSIONS; i++) n_sessions += a->g.abi.sessions[i] != NULL;
  /* MODELS, taken under the registry's lock once (other threads may
   * register models meanwhile; handles are indices, so the order is kept) */
  dw_bytes msec = {0};
  dw_registry *reg = &a->rt->models;
  pthread_mutex_lock(&reg->lock);
  int n_models = reg->n;
  const dw_model **mods = calloc((size_t)n_models + 1, sizeof *mods);
  dw_put_u32(&msec, (uint32_t)n_models);
  for (int i = 0; mods && i < n_models; i++) {
    uint8_t fp[32] = {0}, fam[32] = {0};
    if (reg->v[i].model) dw_model_fingerprint(reg->v[i].model, fp), dw_model_family(reg->v[i].model, fam);
    mods[i] = reg->v[i].model;
    dw_put_str(&msec, reg->v[i].name);
    dw_put_str(&msec, reg->v[i].path);
    dw_put_u32(&msec, reg->v[i].model != NULL);
    dw_put(&msec, fp, 32);
    dw_put(&msec, fam, 32);
  }
  pthread_mutex_unlock(&reg->lock);
  if (!mods || msec.oom) {
    free(mods), free(msec.p);
    return dw_error_set(DW_ERR_NOMEM, "freeze");
  }
  dw_snap_begin(&out);
  /* META */
  dw_put(&sec, hash, 64);
  dw_put_u32(&sec, mem ? mem->pages : 0);
  dw_put_u32(&sec, (uint32_t)n_models);
  dw_put_u32(&sec, (uint32_t)n_sessions);
  dw_put_str(&sec, a->module->path);
  dw_snap_add(&out, DW_SEC_META, sec.p, sec.n, false);
  if (embed_module && a->mod_bytes) {
    dw_snap_add(&out, DW_SEC_MODULE, a->mod_bytes, a->mod_len, true);
  } else if (embed_module) { /* the bytes loaded, whatever the file holds by now */
    size_t mn;
    const uint8_t *mod = dw_wasm_module_bytes(a->module->wasm, &mn);
    dw_snap_add(&out, DW_SEC_MODULE, mod, mn, true);
  }
  /* PAGES, or MEMORY when asked to compress */
  sec.n = 0;
  runs r;
  if ((st = scan_runs(mem, &r))) goto fail;
  if (flags & DW_FREEZE_COMPRESS_MEMORY) {
    put_memory(&sec, mem, &r);
    dw_snap_add(&out, DW_SEC_MEMORY, sec.p, sec.n, true);
  } else {
    merge_runs(&r);
    put_pages(&sec, mem, &r, dw_snap_next_payload(&out));
    dw_snap_add(&out, DW_SEC_PAGES, sec.p, sec.n, false);
  }
  free(r.v);
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
  dw_snap_add(&out, DW_SEC_GLOBALS, sec.p, sec.n, false);
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
        idx = init_index(a, i, e, f);
        if (idx == UINT32_MAX && (idx = ref_index(a->g.inst, f)) != UINT32_MAX) idx |= REF_TAG;
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
  dw_snap_add(&out, DW_SEC_TABLES, sec.p, sec.n, true);
  /* MODELS: the registry in order, as taken above */
  dw_snap_add(&out, DW_SEC_MODELS, msec.p, msec.n, false);
  /* SESSIONS */
  for (int i = 0; i < DW_ABI_MAX_SESSIONS; i++) {
    const dw_session *s = a->g.abi.sessions[i];
    if (!s) continue;
    int midx = -1;
    for (int r = 0; r < n_models; r++)
      if (mods[r] == s->model) midx = r;
    const dw_hparams *hp = &s->model->hp;
    size_t row = (size_t)hp->n_head_kv * hp->head_dim * sizeof(float);
    sec.n = 0;
    dw_put_u32(&sec, (uint32_t)i + 1);
    dw_put_u32(&sec, (uint32_t)(midx + 1));
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
    dw_snap_add(&out, DW_SEC_SESSION, sec.p, sec.n, false);
  }
  if (sec.oom) out.oom = true;
  free(sec.p), free(msec.p), free(mods);
  if ((st = dw_snap_end(&out))) return st;
  *buf = out.p, *len = out.n;
  return DW_OK;
fail:
  free(sec.p), free(msec.p), free(mods);
  free(out.p);
  return st;
}

dw_status dw_actor_freeze_file(dw_actor *a, unsigned flags, const char *path) {
  uint8_t *buf;
  size_t n;
  dw_status st = dw_actor_freeze(a, flags, &buf, &n);
  if (st) return st;
  st = dw_file_write_atomic(path, buf, n);
  free(buf);
  return st;
}

/* ---- thaw --------------------------------------------------------------------------- */

#define BAD(...) dw_error_set(DW_ERR_BAD_SNAPSHOT, "invalid snapshot: " __VA_ARGS__)

static const dw_snap_sec *find(const dw_snap *s, uint32_t type) {
  for (uint32_t i = 0; i < s->n; i++)
    if (s->sec[i].type == type) return &s->sec[i];
  return NULL;
}

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
  if (!st && !(*bytes = malloc(sec->raw_len ? sec->raw_len : 1))) st = dw_error_set(DW_ERR_NOMEM, "thaw");
  if (!st) memcpy(*bytes, raw, sec->raw_len);
  if (owned) free((void *)raw);
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
  if (r.bad || chunk != CHUNK || size != (uint64_t)pages * 65536 || present > size / CHUNK ||
      (uint64_t)present * (4 + CHUNK) != (uint64_t)(r.end - r.p)) {
    st = BAD("the memory section is inconsistent");
    goto out;
  }
  if ((st = clear_memory(a, size, pages, &mem))) goto out;
  const uint8_t *idx = dw_get(&r, (size_t)present * 4), *data = r.p;
  dw_reader ir = {idx, idx + (size_t)present * 4, false};
  for (uint32_t i = 0; i < present; i++) {
    uint32_t c = dw_get_u32(&ir);
    if ((uint64_t)c >= size / CHUNK) {
      st = BAD("a memory chunk index is out of range");
      goto out;
    }
    memcpy(mem->base + (uint64_t)c * CHUNK, data + (size_t)i * CHUNK, CHUNK);
  }
  if (rep) rep->memory_bytes = size, rep->memory_compressed = true;
out:
  if (owned) free((void *)raw);
  return st;
}

/* PAGES (see put_pages). With fd >= 0, file is a mapping of fd from offset
 * 0 and each run is mapped copy-on-write from it; otherwise, or where a
 * mapping is refused, the run is copied. */
static dw_status restore_pages(dw_actor *a, const dw_snap_sec *sec, uint32_t pages, const uint8_t *file, int fd,
                               dw_thaw_report *rep) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  uint64_t size = dw_get_u64(&r);
  uint32_t chunk = dw_get_u32(&r), n = dw_get_u32(&r), runs[MAX_RUNS][2];
  if (r.bad || n > MAX_RUNS) return BAD("the pages section is inconsistent");
  uint64_t next = 0, total = 0;
  for (uint32_t i = 0; i < n; i++) {
    runs[i][0] = dw_get_u32(&r), runs[i][1] = dw_get_u32(&r);
    if (!runs[i][1] || runs[i][0] < next || (uint64_t)runs[i][0] + runs[i][1] > size / CHUNK)
      return BAD("a run of memory pages is out of order or range");
    next = (uint64_t)runs[i][0] + runs[i][1];
    total += runs[i][1];
  }
  uint32_t pad = dw_get_u32(&r);
  dw_get(&r, pad);
  if (sec->flags || r.bad || chunk != CHUNK || size != (uint64_t)pages * 65536 || pad >= CHUNK)
    return BAD("the pages section is inconsistent");
  if (total * CHUNK != (uint64_t)(r.end - r.p)) return BAD("the pages section's data has the wrong length");
  dw_mem *mem = NULL; /* NULL only for a module without memory: then n == 0 */
  dw_status st = clear_memory(a, size, pages, &mem);
  if (st) return st;
  const uint8_t *data = r.p;
  uint64_t mapped = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t off = (uint64_t)runs[i][0] * CHUNK, len = (uint64_t)runs[i][1] * CHUNK;
    uint64_t file_off = (uint64_t)(data - file);
    if (fd >= 0 && file_off % CHUNK == 0 && dw_mem_map_file(mem, off, len, fd, file_off) == DW_OK)
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
      } else if (idx & REF_TAG) {
        if (!dw_instance_ref(a->g.inst, idx & ~REF_TAG, &t->data[e])) {
          st = BAD("table %u element %u refers to declared function %u of %u", i, e, idx & ~REF_TAG,
                   dw_instance_n_refs(a->g.inst));
          break;
        }
      } else if (idx < a->init_size[i]) {
        t->data[e] = a->init_tab[i][idx];
      } else {
        st = BAD("table %u element %u refers to %u", i, e, idx);
        break;
      }
    }
  }
  if (owned) free((void *)raw);
  return st;
}

static dw_status restore_models(dw_runtime *rt, const dw_snap_sec *sec) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  if (sec->flags) return BAD("the models section must not be compressed");
  uint32_t n = dw_get_u32(&r);
  if (r.bad || n > 4096) return BAD("model count");
  for (uint32_t i = 0; i < n; i++) {
    char name[256], path[4096];
    dw_get_str(&r, name, sizeof name);
    dw_get_str(&r, path, sizeof path);
    dw_get_u32(&r);
    dw_get(&r, 64);
    if (r.bad) return BAD("a model entry is truncated");
    int idx = dw_registry_find(&rt->models, name, strlen(name));
    if (idx < 0 && rt->fixed_models)
      return dw_error_set(DW_ERR_NOT_FOUND, "snapshot: it needs model '%s', which this host does not serve", name);
    if (idx < 0 && rt->models.n == (int)i) {
      dw_status st = dw_registry_add(&rt->models, name, path, false);
      if (st) return st;
      idx = (int)i;
    }
    if (idx != (int)i)
      return dw_error_set(DW_ERR_INVALID_ARG,
                          "snapshot: model '%s' must be registered as model %u (the snapshot's order of --model)", name,
                          i + 1);
  }
  return DW_OK;
}

static dw_status restore_session(dw_actor *a, const dw_snap_sec *sec, const dw_snap_sec *models, dw_thaw_report *rep) {
  dw_reader r = {sec->stored, sec->stored + sec->stored_len, false};
  if (sec->flags) return BAD("a session section must not be compressed");
  uint32_t slot = dw_get_u32(&r), mh = dw_get_u32(&r), n_ctx = dw_get_u32(&r), n_past = dw_get_u32(&r);
  uint32_t n_layer = dw_get_u32(&r), kvd = dw_get_u32(&r);
  if (r.bad || slot < 1 || slot > DW_ABI_MAX_SESSIONS || a->g.abi.sessions[slot - 1] || mh < 1 || n_past > n_ctx)
    return BAD("a session header is invalid");
  /* the fingerprint the session was computed with */
  dw_reader mr = {models->stored, models->stored + models->stored_len, false};
  uint32_t nm = dw_get_u32(&mr);
  const uint8_t *fp = NULL;
  for (uint32_t i = 0; i < nm && !mr.bad; i++) {
    char tmp[4096];
    dw_get_str(&mr, tmp, sizeof tmp);
    dw_get_str(&mr, tmp, sizeof tmp);
    dw_get_u32(&mr);
    const uint8_t *f = dw_get(&mr, 64); /* fingerprint, family */
    if (i + 1 == mh) fp = f;
  }
  if (!fp || mr.bad) return BAD("a session refers to model %u, which the snapshot does not list", mh);
  dw_model *m;
  dw_status st = dw_registry_model(&a->rt->models, (int)mh - 1, &m);
  if (st) return st;
  const dw_hparams *hp = &m->hp;
  size_t row = (size_t)kvd * sizeof(float);
  uint8_t have[32], fam[32];
  dw_model_fingerprint(m, have);
  dw_model_family(m, fam);
  bool same = !memcmp(have, fp, 32);
  if (!same && memcmp(fam, fp + 32, 32))
    return dw_error_set(DW_ERR_INVALID_ARG,
                        "snapshot: model '%s' (%s) is not the model the snapshot was made with (another architecture, "
                        "shape or vocabulary)", a->rt->models.v[mh - 1].name, a->rt->models.v[mh - 1].path);
  if (n_layer != (uint32_t)hp->n_layer || kvd != (uint32_t)(hp->n_head_kv * hp->head_dim) ||
      n_ctx > (uint32_t)hp->n_ctx_train)
    return dw_error_set(DW_ERR_INVALID_ARG, "snapshot: a session's shape does not match model '%s'",
                        a->rt->models.v[mh - 1].name);
  const uint8_t *tok = dw_get(&r, (size_t)n_past * 4);
  const uint8_t *k = dw_get(&r, (size_t)n_layer * n_past * row), *v = dw_get(&r, (size_t)n_layer * n_past * row);
  if (r.bad || r.p != r.end) return BAD("a session's size does not match its header");
  int32_t *ids = malloc((size_t)(n_past ? n_past : 1) * sizeof *ids);
  if (!ids) return dw_error_set(DW_ERR_NOMEM, "thaw");
  memcpy(ids, tok, (size_t)n_past * 4);
  dw_session *s;
  if ((st = dw_sess_new(m, a->rt->engine, (int)n_ctx, &s))) {
    free(ids);
    return st;
  }
  if (same) {
    st = dw_sess_restore(s, ids, (int)n_past, k, v);
  } else { /* the same model in another quantisation: re-prefill from the tokens */
    if (n_past) st = dw_decode(s, ids, (int)n_past, NULL, NULL);
    if (!st && rep) rep->reprefilled++;
    if (!st)
      fprintf(stderr, "driftwood: model '%s' differs from the one the snapshot was made with: session %u "
                      "re-prefilled from its %u tokens\n", a->rt->models.v[mh - 1].name, slot, n_past);
  }
  free(ids);
  if (st) {
    dw_sess_free(s);
    return st;
  }
  a->g.abi.sessions[slot - 1] = s;
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
  const dw_snap_sec *meta = find(&s, DW_SEC_META), *mem = find(&s, DW_SEC_MEMORY), *pgs = find(&s, DW_SEC_PAGES),
                    *glob = find(&s, DW_SEC_GLOBALS), *models = find(&s, DW_SEC_MODELS),
                    *modsec = find(&s, DW_SEC_MODULE);
  dw_module *own = NULL;
  uint8_t *own_bytes = NULL;
  dw_actor *a = NULL;
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
    free(own->path);
    own->path = strdup(mr.bad ? "(embedded)" : orig);
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
  if ((st = restore_models(rt, models)) || (st = actor_new(m, &a))) goto out;
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
  const dw_snap_sec *tabs = find(&s, DW_SEC_TABLES);
  if (tabs && (st = restore_tables(a, tabs))) goto out;
  for (uint32_t i = 0; i < s.n && !st; i++)
    if (s.sec[i].type == DW_SEC_SESSION) st = restore_session(a, &s.sec[i], models, rep);
out:;
  dw_status checked = dw_snap_check_end(chk);
  if (checked) st = checked; /* a failed checksum explains whatever else went wrong */
  dw_snap_free(&s);
  if (st) {
    dw_actor_destroy(a);
    dw_module_destroy(own);
    free(own_bytes);
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

dw_status dw_actor_fork(dw_actor *a, dw_actor **out) {
  *out = NULL;
  dw_actor *f;
  dw_status st = actor_new(a->module, &f);
  if (st) return st;
  dw_mem *src = dw_instance_memory(a->g.inst), *dst = dw_instance_memory(f->g.inst);
  if (src && ((st = dw_instance_grow_to(f->g.inst, src->pages)) || dst->size != src->size))
    st = st ? st : dw_error_set(DW_ERR_INVALID_ARG, "fork: memory sizes differ");
  if (!st && src && dw_mem_share(src, dst) != DW_OK) memcpy(dst->base, src->base, src->size);
  for (unsigned i = 0; !st && i < dw_instance_n_globals(a->g.inst); i++) {
    unsigned nb;
    void *to = dw_instance_global(f->g.inst, i, NULL, NULL, &nb);
    memcpy(to, dw_instance_global(a->g.inst, i, NULL, NULL, NULL), nb);
  }
  for (unsigned i = 0; !st && i < a->n_tables; i++) { /* same elements, closed over the new instance */
    const wasm_rt_funcref_table_t *src = dw_instance_table(a->g.inst, i);
    wasm_rt_funcref_table_t *dst = dw_instance_table(f->g.inst, i);
    if (src->size > dst->size &&
        wasm_rt_grow_funcref_table(dst, src->size - dst->size, wasm_rt_funcref_null_value) == UINT32_MAX)
      st = dw_error_set(DW_ERR_LIMIT, "fork: table %u cannot grow", i);
    for (uint32_t e = 0; !st && e < src->size; e++) {
      /* the same function, closed over the fork: never the parent's instance */
      const wasm_rt_funcref_t *fe = &src->data[e];
      bool bound = !fe->func;
      dst->data[e] = wasm_rt_funcref_null_value;
      uint32_t k = bound ? UINT32_MAX : init_index(a, i, e, fe);
      if (k != UINT32_MAX) dst->data[e] = f->init_tab[i][k], bound = true;
      k = bound ? UINT32_MAX : ref_index(a->g.inst, fe);
      if (k != UINT32_MAX) bound = dw_instance_ref(f->g.inst, k, &dst->data[e]);
      if (!bound)
        st = dw_error_set(DW_ERR_UNSUPPORTED, "fork: table %u element %u is a function the module does not declare", i,
                          e);
    }
  }
  for (int i = 0; !st && i < DW_ABI_MAX_SESSIONS; i++)
    if (a->g.abi.sessions[i]) st = dw_sess_fork(a->g.abi.sessions[i], &f->g.abi.sessions[i]);
  if (st) {
    dw_actor_destroy(f);
    return st;
  }
  *out = f;
  return DW_OK;
}

/* ---- inspect ------------------------------------------------------------------------ */

dw_status dw_snapshot_describe(const char *path, char *buf, size_t cap) {
  uint8_t *file;
  size_t n;
  dw_status st = dw_file_read(path, &file, &n);
  if (st) return st;
  dw_snap s;
  if ((st = dw_snap_parse(file, n, &s))) {
    free(file);
    return dw_error_wrap(st, "%s", path);
  }
  size_t o = 0;
#define P(...) (o += (size_t)snprintf(buf + (o < cap ? o : cap), o < cap ? cap - o : 0, __VA_ARGS__))
  P("snapshot %s: format version %u, %zu bytes, %u sections\n", path, s.version, n, s.n);
  static const char *const names[] = {"?",      "meta",    "module", "memory",
                                      "globals", "models", "session", "tables", "pages"};
  for (uint32_t i = 0; i < s.n; i++) {
    const dw_snap_sec *c = &s.sec[i];
    P("  section %-8s %10llu bytes%s", c->type < 9 ? names[c->type] : "unknown",
      (unsigned long long)c->stored_len, c->flags ? " (zstd)" : "");
    if (c->flags) P(", %llu raw", (unsigned long long)c->raw_len);
    P("\n");
    dw_reader r = {c->stored, c->stored + c->stored_len, false};
    if (c->type == DW_SEC_META && !c->flags) {
      const uint8_t *h = dw_get(&r, 64);
      uint32_t pages = dw_get_u32(&r), nm = dw_get_u32(&r), ns = dw_get_u32(&r);
      char mpath[4096];
      dw_get_str(&r, mpath, sizeof mpath);
      if (!r.bad)
        P("    module sha256 %.64s (%s)\n    memory %u pages (%u KiB), %u models, %u sessions\n", (const char *)h, mpath,
          pages, pages * 64, nm, ns);
    } else if (c->type == DW_SEC_PAGES && !c->flags) {
      uint64_t size = dw_get_u64(&r);
      dw_get_u32(&r);
      uint32_t runs = dw_get_u32(&r);
      if (!r.bad)
        P("    memory %llu KiB: %u runs of 4 KiB pages, page-aligned (a thaw maps them copy-on-write)\n",
          (unsigned long long)(size / 1024), runs);
    } else if (c->type == DW_SEC_MODELS && !c->flags) {
      uint32_t nm = dw_get_u32(&r);
      for (uint32_t k = 0; k < nm && !r.bad; k++) {
        char name[256], mpath[4096], hex[17];
        dw_get_str(&r, name, sizeof name);
        dw_get_str(&r, mpath, sizeof mpath);
        uint32_t loaded = dw_get_u32(&r);
        const uint8_t *fp = dw_get(&r, 64);
        if (r.bad) break;
        dw_hex(fp, 8, hex);
        P("    model %u '%s' %s%s%s\n", k + 1, name, mpath, loaded ? ", fingerprint " : " (not loaded)",
          loaded ? hex : "");
      }
    } else if (c->type == DW_SEC_SESSION && !c->flags) {
      uint32_t slot = dw_get_u32(&r), mh = dw_get_u32(&r), n_ctx = dw_get_u32(&r), n_past = dw_get_u32(&r);
      uint32_t nl = dw_get_u32(&r), kvd = dw_get_u32(&r);
      if (!r.bad)
        P("    session %u: model %u, %u of %u positions, KV %u layers x %u f32\n", slot, mh, n_past, n_ctx, nl, kvd);
    }
  }
#undef P
  dw_snap_free(&s);
  free(file);
  if (o >= cap) return dw_error_set(DW_ERR_LIMIT, "description of %zu bytes", o);
  return DW_OK;
}

dw_status dw_snapshot_module_hash(const uint8_t *buf, size_t len, char out[65], bool *embedded) {
  dw_snap s;
  out[0] = 0;
  dw_status st = dw_snap_parse(buf, len, &s);
  if (st) return st;
  const dw_snap_sec *meta = find(&s, DW_SEC_META);
  if (!meta || meta->flags || meta->stored_len < 64) {
    dw_snap_free(&s);
    return BAD("the meta section is missing");
  }
  memcpy(out, meta->stored, 64);
  out[64] = 0;
  for (int i = 0; i < 64; i++)
    if (!((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f'))) {
      dw_snap_free(&s);
      out[0] = 0;
      return BAD("the module hash is not hexadecimal");
    }
  if (embedded) *embedded = find(&s, DW_SEC_MODULE) != NULL;
  dw_snap_free(&s);
  return DW_OK;
}
