/*
 * actor.c — actors: reactor instances driven by messages (public API in
 * include/driftwood.h): spawn, send, stats, fork, destroy. An actor's
 * snapshot is in freeze.c, thaw.c and describe.c (actor.h says what it
 * holds).
 */
#define _GNU_SOURCE
#include "actor/actor.h"

#include <stdlib.h>
#include <string.h>

static bool same_ref(const wasm_rt_funcref_t *x, const wasm_rt_funcref_t *y) {
  return x->func == y->func && x->func_type == y->func_type && x->module_instance == y->module_instance;
}

uint32_t dw_actor_ref_name(const dw_actor *a, unsigned i, uint32_t e, const wasm_rt_funcref_t *f) {
  /* element e itself first: a table mostly keeps its elements in place */
  if (e < a->init_size[i] && same_ref(&a->init_tab[i][e], f)) return e;
  for (uint32_t k = 0; k < a->init_size[i]; k++)
    if (same_ref(&a->init_tab[i][k], f)) return k;
  wasm_rt_funcref_t r;
  for (unsigned k = 0, n = dw_instance_n_refs(a->g.inst); k < n && k < DW_ACTOR_REF_TAG; k++)
    if (dw_instance_ref(a->g.inst, k, &r) && same_ref(&r, f)) return k | DW_ACTOR_REF_TAG;
  return UINT32_MAX;
}

bool dw_actor_ref_resolve(const dw_actor *a, unsigned i, uint32_t name, wasm_rt_funcref_t *out) {
  if (name & DW_ACTOR_REF_TAG) return dw_instance_ref(a->g.inst, name & ~DW_ACTOR_REF_TAG, out);
  if (name >= a->init_size[i]) return false;
  *out = a->init_tab[i][name];
  return true;
}

dw_status dw_actor_new(dw_module *m, dw_actor **out) {
  *out = NULL;
  dw_actor *a = dw_calloc(1, sizeof *a);
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
  a->init_tab = dw_calloc(a->n_tables + 1, sizeof *a->init_tab);
  a->init_size = dw_calloc(a->n_tables + 1, sizeof *a->init_size);
  if (!a->init_tab || !a->init_size) {
    dw_actor_destroy(a);
    return dw_error_set(DW_ERR_NOMEM, "actor");
  }
  for (unsigned i = 0; i < a->n_tables; i++) {
    const wasm_rt_funcref_table_t *t = dw_instance_table(a->g.inst, i);
    a->init_size[i] = t->size;
    if (!(a->init_tab[i] = dw_malloc((t->size ? t->size : 1) * sizeof **a->init_tab))) {
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
  dw_free(a->mod_bytes);
  for (unsigned i = 0; a->init_tab && i < a->n_tables; i++) dw_free(a->init_tab[i]);
  dw_free(a->init_tab);
  dw_free(a->init_size);
  dw_free(a);
}

dw_trap_kind dw_actor_last_trap(const dw_actor *a) { return a->last_trap; }

dw_status dw_actor_call(dw_actor *a, const char *name, const char *sig, const uint64_t *args, uint64_t *value) {
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
  dw_status st = dw_actor_new(m, out);
  if (st) return st;
  if (dw_wasm_export_sig(m->wasm, "_initialize") && (st = dw_actor_call(*out, "_initialize", "v:", NULL, NULL))) {
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
  for (uint32_t h = 1; h <= dw_abi_session_slots(&a->g.abi); h++) {
    const dw_session *s = dw_abi_session(&a->g.abi, h);
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
  dw_status st = dw_actor_call(a, "dw_alloc", "i:i", args, &ptr);
  if (st) return st;
  void *p;
  dw_mem *mem = dw_instance_memory(a->g.inst);
  if (!mem || dw_mem_view(mem, (uint32_t)ptr, len, &p) != DW_OK)
    return dw_error_set(DW_ERR_OUT_OF_BOUNDS, "actor: dw_alloc(%zu) returned %llu, outside memory", len,
                        (unsigned long long)ptr);
  memcpy(p, msg, len);
  args[0] = ptr, args[1] = len;
  st = dw_actor_call(a, "dw_on_message", "i:ii", args, &rv);
  if (!st && result) *result = (int32_t)rv;
  return st;
}

dw_status dw_actor_fork(dw_actor *a, dw_actor **out) {
  *out = NULL;
  dw_actor *f;
  dw_status st = dw_actor_new(a->module, &f);
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
      if (!bound) bound = dw_actor_ref_resolve(f, i, dw_actor_ref_name(a, i, e, fe), &dst->data[e]);
      if (!bound)
        st = dw_error_set(DW_ERR_UNSUPPORTED, "fork: table %u element %u is a function the module does not declare", i,
                          e);
    }
  }
  if (!st) st = dw_abi_fork(&f->g.abi, &a->g.abi); /* model handles; sessions share KV copy-on-write */
  if (st) {
    dw_actor_destroy(f);
    return st;
  }
  *out = f;
  return DW_OK;
}
