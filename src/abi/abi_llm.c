/*
 * abi_llm.c — the LLM functions of the `driftwood` v1 import module:
 * model_open, model_info, model_meta, tokenize, token_piece, session_new,
 * decode, session_len, session_truncate, session_fork, session_free.
 *
 * Handles are small integers local to the instance: model handles are
 * 1, 2, … in the order the guest first opened each model (the instance's
 * own table of registry indices), a session handle the slot index + 1 (0
 * is never valid). Every guest (offset, length) is checked with dw_mem_view* before
 * the engine runs; token ids and logits are read and written in place in
 * the guest's memory (decode writes the logits straight from the output
 * projection into the guest's buffer). Error codes, in checking order:
 * unknown handle → NOT_FOUND; pointer checks → OUT_OF_BOUNDS/MISALIGNED;
 * overlapping in/out arrays → INVALID_ARG; then the engine's own status
 * (LIMIT for a full context or short buffer, INVALID_ARG for a bad token).
 */
#include "abi/abi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ABI(inst) ((dw_abi *)dw_instance_ctx((inst), DW_SLOT_DRIFTWOOD))

void dw_abi_fini(dw_abi *a) {
  for (uint32_t i = 0; i < a->n_sessions; i++) dw_sess_free(a->sessions[i]);
  dw_free(a->sessions);
  a->sessions = NULL, a->n_sessions = 0;
  dw_free(a->models);
  a->models = NULL, a->n_models = a->cap_models = 0;
}

uint32_t dw_abi_n_models(const dw_abi *a) { return a->n_models; }

int dw_abi_model_index(const dw_abi *a, uint32_t h) { return h >= 1 && h <= a->n_models ? a->models[h - 1] : -1; }

dw_status dw_abi_model_add(dw_abi *a, int idx) {
  if (a->n_models == a->cap_models) {
    uint32_t cap = a->cap_models ? 2 * a->cap_models : 4;
    int *v = dw_realloc(a->models, cap * sizeof *v);
    if (!v) return dw_error_set(DW_ERR_NOMEM, "model handles");
    a->models = v, a->cap_models = cap;
  }
  a->models[a->n_models++] = idx;
  return DW_OK;
}

static uint32_t max_sessions(const dw_abi *a) { return a->max_sessions ? a->max_sessions : DW_ABI_MAX_SESSIONS; }

/* Makes slots 1..n exist (n <= max_sessions); false if memory is short. */
static bool session_slots(dw_abi *a, uint32_t n) {
  if (n <= a->n_sessions) return true;
  uint32_t cap = a->n_sessions ? a->n_sessions : 4;
  while (cap < n) cap *= 2;
  if (cap > max_sessions(a)) cap = max_sessions(a);
  dw_session **v = dw_realloc(a->sessions, cap * sizeof *v);
  if (!v) return false;
  memset(v + a->n_sessions, 0, (cap - a->n_sessions) * sizeof *v);
  a->sessions = v, a->n_sessions = cap;
  return true;
}

uint32_t dw_abi_session_slots(const dw_abi *a) { return a->n_sessions; }

dw_session *dw_abi_session(const dw_abi *a, uint32_t h) {
  return h >= 1 && h <= a->n_sessions ? a->sessions[h - 1] : NULL;
}

dw_status dw_abi_session_set(dw_abi *a, uint32_t h, dw_session *s) {
  if (h < 1 || h > max_sessions(a) || dw_abi_session(a, h))
    return dw_error_set(DW_ERR_INVALID_ARG, "session handle %u is taken, or not within 1..%u (max_sessions)", h,
                        max_sessions(a));
  if (!session_slots(a, h)) return dw_error_set(DW_ERR_NOMEM, "session handles");
  a->sessions[h - 1] = s;
  return DW_OK;
}

dw_status dw_abi_fork(dw_abi *dst, const dw_abi *src) {
  dw_status st = DW_OK;
  for (uint32_t h = 1; !st && h <= src->n_models; h++) st = dw_abi_model_add(dst, src->models[h - 1]);
  dst->max_sessions = src->max_sessions;
  if (!st && !session_slots(dst, src->n_sessions)) st = dw_error_set(DW_ERR_NOMEM, "session handles");
  for (uint32_t i = 0; !st && i < src->n_sessions; i++)
    if (src->sessions[i]) st = dw_sess_fork(src->sessions[i], &dst->sessions[i]);
  return st;
}

/* The model behind handle h, loaded on first use (a thawed guest's handles
 * name models that may not be mapped yet); NULL if h is not a handle or the
 * model cannot be loaded. */
static dw_model *model_of(const dw_abi *a, uint32_t h) {
  dw_model *m = NULL;
  int idx = a && a->reg ? dw_abi_model_index(a, h) : -1;
  if (idx >= 0 && dw_registry_model(a->reg, idx, &m) != DW_OK) {
    dw_log(a->settings, DW_LOG_ERROR, "driftwood: model handle %u: %s", h, dw_last_error());
    m = NULL;
  }
  return m;
}

static dw_session *session_of(const dw_abi *a, uint32_t h) { return a ? dw_abi_session(a, h) : NULL; }

static dw_status view(dw_instance *inst, uint32_t off, uint64_t n, uint32_t size, uint32_t align, void **p) {
  dw_mem *mem = dw_instance_memory(inst);
  if (!mem) return DW_ERR_OUT_OF_BOUNDS;
  return dw_mem_view_array(mem, off, n, size, align, p);
}

static dw_status put_u32(dw_instance *inst, uint32_t off, uint32_t v) {
  void *p;
  dw_status st = view(inst, off, 1, 4, 4, &p);
  if (st == DW_OK) memcpy(p, &v, 4);
  return st;
}

static uint32_t h_model_open(dw_instance *inst, uint32_t name, uint32_t name_len, uint32_t out) {
  dw_abi *a = ABI(inst);
  void *pn, *po;
  dw_status st;
  if (!a) return DW_ERR_UNSUPPORTED;
  if ((st = view(inst, name, name_len, 1, 1, &pn)) || (st = view(inst, out, 1, 4, 4, &po))) return st;
  if (!a->reg) return DW_ERR_NOT_FOUND;
  int idx = name_len == 0 ? (a->reg->n > 0 ? 0 : -1) : dw_registry_find(a->reg, pn, name_len); /* "" = the first */
  if (idx < 0) return DW_ERR_NOT_FOUND;
  dw_model *m;
  if ((st = dw_registry_model(a->reg, idx, &m))) return st;
  uint32_t h = 1;
  while (h <= a->n_models && a->models[h - 1] != idx) h++; /* the handle it has, or the next */
  if (h > a->n_models && (st = dw_abi_model_add(a, idx))) return st;
  memcpy(po, &h, 4);
  return DW_OK;
}

static uint32_t h_model_info(dw_instance *inst, uint32_t model, uint32_t out) {
  dw_model *m = model_of(ABI(inst), model);
  void *p;
  if (!m) return DW_ERR_NOT_FOUND;
  dw_status st = view(inst, out, 1, sizeof(dwg_model_info), 4, &p);
  if (st) return st;
  dw_model_info info;
  dw_model_info_get(m, &info);
  dwg_model_info w = {.n_vocab = info.n_vocab, .n_ctx_train = info.n_ctx_train, .bos = info.bos, .eos = info.eos,
                      .eot = info.eot, .n_embd = info.n_embd, .n_layer = info.n_layer,
                      .flags = ((info.flags & DW_MODEL_ADD_BOS) ? DWG_MODEL_ADD_BOS : 0) |
                               ((info.flags & DW_MODEL_ADD_EOS) ? DWG_MODEL_ADD_EOS : 0)};
  memcpy(p, &w, sizeof w);
  return DW_OK;
}

static uint32_t h_model_meta(dw_instance *inst, uint32_t model, uint32_t key, uint32_t key_len, uint32_t out,
                             uint32_t cap, uint32_t out_len) {
  dw_model *m = model_of(ABI(inst), model);
  void *pk, *po, *pl;
  dw_status st;
  char k[256];
  if (!m) return DW_ERR_NOT_FOUND;
  if ((st = view(inst, key, key_len, 1, 1, &pk)) || (st = view(inst, out, cap, 1, 1, &po)) ||
      (st = view(inst, out_len, 1, 4, 4, &pl)))
    return st;
  if (key_len >= sizeof k) return DW_ERR_NOT_FOUND;
  memcpy(k, pk, key_len);
  k[key_len] = 0;
  if (memchr(k, 0, key_len)) return DW_ERR_NOT_FOUND;
  size_t n = 0;
  st = dw_model_meta_str(m, k, po, cap, &n);
  uint32_t n32 = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  if (st == DW_OK || st == DW_ERR_LIMIT) memcpy(pl, &n32, 4);
  return st;
}

static bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) {
  return an && bn && a < b + bn && b < a + an;
}

static uint32_t h_tokenize(dw_instance *inst, uint32_t model, uint32_t text, uint32_t text_len, uint32_t flags,
                           uint32_t out, uint32_t cap, uint32_t out_n) {
  dw_model *m = model_of(ABI(inst), model);
  void *pt, *po, *pn;
  dw_status st;
  if (!m) return DW_ERR_NOT_FOUND;
  if ((st = view(inst, text, text_len, 1, 1, &pt)) || (st = view(inst, out, cap, 4, 4, &po)) ||
      (st = view(inst, out_n, 1, 4, 4, &pn)))
    return st;
  if (flags & ~(DWG_TOKENIZE_ADD_SPECIAL | DWG_TOKENIZE_PARSE_SPECIAL)) return DW_ERR_INVALID_ARG;
  if (overlaps(text, text_len, out, (uint64_t)cap * 4)) return DW_ERR_INVALID_ARG;
  size_t n = 0;
  st = dw_tokenize(m->tok, pt, text_len, flags & DWG_TOKENIZE_ADD_SPECIAL, flags & DWG_TOKENIZE_PARSE_SPECIAL, po, cap,
                   &n);
  uint32_t n32 = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  if (st == DW_OK || st == DW_ERR_LIMIT) memcpy(pn, &n32, 4);
  return st;
}

static uint32_t h_token_piece(dw_instance *inst, uint32_t model, uint32_t token, uint32_t out, uint32_t cap,
                              uint32_t out_len) {
  dw_model *m = model_of(ABI(inst), model);
  void *po, *pl;
  dw_status st;
  if (!m) return DW_ERR_NOT_FOUND;
  if ((st = view(inst, out, cap, 1, 1, &po)) || (st = view(inst, out_len, 1, 4, 4, &pl))) return st;
  size_t n = 0;
  st = dw_token_piece(m->tok, (int32_t)token, po, cap, &n);
  uint32_t n32 = (uint32_t)n;
  if (st == DW_OK || st == DW_ERR_LIMIT) memcpy(pl, &n32, 4);
  return st;
}

static uint32_t put_session(dw_instance *inst, dw_abi *a, dw_session *s, uint32_t out) {
  uint32_t i = 0;
  while (i < a->n_sessions && a->sessions[i]) i++; /* the lowest free handle */
  if (i == max_sessions(a) || !session_slots(a, i + 1)) {
    dw_sess_free(s);
    return i == max_sessions(a) ? DW_ERR_LIMIT : DW_ERR_NOMEM;
  }
  a->sessions[i] = s;
  return put_u32(inst, out, i + 1); /* out was checked by the caller */
}

static uint32_t h_session_new(dw_instance *inst, uint32_t model, uint32_t n_ctx, uint32_t out) {
  dw_abi *a = ABI(inst);
  dw_model *m = model_of(a, model);
  void *p;
  dw_session *s;
  dw_status st;
  if (!m) return DW_ERR_NOT_FOUND;
  if ((st = view(inst, out, 1, 4, 4, &p))) return st;
  if ((int32_t)n_ctx < 0) return DW_ERR_INVALID_ARG;
  if ((st = dw_sess_new(m, a->engine, (int)n_ctx, &s))) return st;
  return put_session(inst, a, s, out);
}

static uint32_t h_decode(dw_instance *inst, uint32_t session, uint32_t tokens, uint32_t n, uint32_t logits) {
  dw_session *s = session_of(ABI(inst), session);
  void *pt, *pl;
  dw_status st;
  if (!s) return DW_ERR_NOT_FOUND;
  uint64_t nv = (uint64_t)s->model->hp.n_vocab;
  if ((st = view(inst, tokens, n, 4, 4, &pt)) || (st = view(inst, logits, nv, 4, 4, &pl))) return st;
  if (overlaps(tokens, (uint64_t)n * 4, logits, nv * 4)) return DW_ERR_INVALID_ARG;
  if (n > (uint32_t)INT32_MAX) return DW_ERR_LIMIT;
  dw_abi *a = ABI(inst);
  st = dw_decode(s, pt, (int)n, pl, NULL);
  /* the guest sees only the code; a device failure is the operator's to see */
  if (st == DW_ERR_BACKEND) dw_log(a->settings, DW_LOG_ERROR, "driftwood: decode: %s", dw_last_error());
  /* what reached the guest's logits: written in place, or DMA'd from the engine's buffer */
  a->last = (dwg_op_info){.zero_copy = !st && s->last.zero_copy, .status = st,
                         .staged_bytes = st ? 0 : s->last.staged_bytes};
  return st;
}

static uint32_t h_session_len(dw_instance *inst, uint32_t session, uint32_t out) {
  dw_session *s = session_of(ABI(inst), session);
  if (!s) return DW_ERR_NOT_FOUND;
  return put_u32(inst, out, (uint32_t)s->n_past);
}

static uint32_t h_session_truncate(dw_instance *inst, uint32_t session, uint32_t n_keep) {
  dw_session *s = session_of(ABI(inst), session);
  if (!s) return DW_ERR_NOT_FOUND;
  if (n_keep > (uint32_t)s->n_past) return DW_ERR_INVALID_ARG;
  return dw_sess_truncate(s, (int)n_keep);
}

static uint32_t h_session_fork(dw_instance *inst, uint32_t session, uint32_t out) {
  dw_abi *a = ABI(inst);
  dw_session *s = session_of(a, session), *f;
  void *p;
  dw_status st;
  if (!s) return DW_ERR_NOT_FOUND;
  if ((st = view(inst, out, 1, 4, 4, &p))) return st;
  if ((st = dw_sess_fork(s, &f))) return st;
  return put_session(inst, a, f, out);
}

static uint32_t h_session_free(dw_instance *inst, uint32_t session) {
  dw_abi *a = ABI(inst);
  if (!session_of(a, session)) return DW_ERR_NOT_FOUND;
  dw_sess_free(a->sessions[session - 1]);
  a->sessions[session - 1] = NULL;
  return DW_OK;
}

#define F(name, sig) {"driftwood", #name, sig, (dw_fnptr)h_##name}

const dw_hostfn dw_abi_llm_functions[] = {
    F(model_open, "i:iii"),
    F(model_info, "i:ii"),
    F(model_meta, "i:iiiiii"),
    F(tokenize, "i:iiiiiii"),
    F(token_piece, "i:iiiii"),
    F(session_new, "i:iii"),
    F(decode, "i:iiii"),
    F(session_len, "i:ii"),
    F(session_truncate, "i:ii"),
    F(session_fork, "i:ii"),
    F(session_free, "i:i"),
    {0},
};
