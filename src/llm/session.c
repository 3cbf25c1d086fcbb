/*
 * session.c — KV sessions over an engine (see session.h): the block table
 * and its copy-on-write, decode split into engine steps, embeddings, and
 * the canonical export/import of the KV cache.
 */
#include "llm/session.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int n_blocks(int n_pos) { return (n_pos + DW_KV_BLOCK - 1) / DW_KV_BLOCK; }

static void block_unref(dw_session *s, dw_kv_block *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
  s->engine->ops->kv_free(s->engine->ctx, b->data, dw_kv_block_bytes(s->model));
  dw_free(b);
}

/* A block header around engine memory (taken over; freed on failure). */
static dw_kv_block *block_wrap(dw_session *s, void *data) {
  dw_kv_block *b = dw_malloc(sizeof *b);
  if (!b) {
    s->engine->ops->kv_free(s->engine->ctx, data, dw_kv_block_bytes(s->model));
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->data = data;
  return b;
}

dw_status dw_sess_new(dw_model *m, dw_engine *e, int n_ctx, dw_session **out) {
  *out = NULL;
  if (m->vocab_only) return dw_error_set(DW_ERR_UNSUPPORTED, "session: the model was opened vocab-only");
  if (n_ctx <= 0) n_ctx = m->hp.n_ctx_train;
  if (n_ctx > m->hp.n_ctx_train)
    return dw_error_set(DW_ERR_LIMIT, "session: context %d exceeds the model's %d", n_ctx, m->hp.n_ctx_train);
  const dw_engine_weights *w;
  dw_status st = dw_engine_weights_for(e, m, &w);
  if (st) return st;
  dw_session *s = dw_calloc(1, sizeof *s);
  if (!s) return dw_error_set(DW_ERR_NOMEM, "session");
  s->n_ctx = n_ctx;
  s->engine = e;
  s->w = w;
  s->blocks = dw_calloc((size_t)n_blocks(n_ctx), sizeof *s->blocks);
  s->tokens = dw_malloc((size_t)n_ctx * sizeof *s->tokens);
  if (!s->blocks || !s->tokens) {
    dw_free(s->blocks), dw_free(s->tokens), dw_free(s);
    return dw_error_set(DW_ERR_NOMEM, "session");
  }
  dw_model_retain(m);
  s->model = m;
  *out = s;
  return DW_OK;
}

void dw_sess_free(dw_session *s) {
  if (!s) return;
  for (int i = 0; i < n_blocks(s->n_ctx); i++) block_unref(s, s->blocks[i]);
  dw_free(s->blocks);
  dw_free(s->tokens);
  dw_model_release(s->model);
  dw_free(s);
}

dw_status dw_sess_fork(const dw_session *s, dw_session **out) {
  dw_status st = dw_sess_new(s->model, s->engine, s->n_ctx, out);
  if (st) return st;
  for (int i = 0; i < n_blocks(s->n_past); i++) {
    (*out)->blocks[i] = s->blocks[i];
    atomic_fetch_add(&s->blocks[i]->refs, 1);
  }
  memcpy((*out)->tokens, s->tokens, (size_t)s->n_past * sizeof *s->tokens);
  (*out)->n_past = s->n_past;
  return DW_OK;
}

dw_status dw_sess_truncate(dw_session *s, int n_keep) {
  if (n_keep < 0 || n_keep > s->n_past)
    return dw_error_set(DW_ERR_INVALID_ARG, "session: cannot keep %d of %d positions", n_keep, s->n_past);
  for (int i = n_blocks(n_keep); i < n_blocks(s->n_past); i++) {
    block_unref(s, s->blocks[i]);
    s->blocks[i] = NULL;
  }
  s->n_past = n_keep;
  return DW_OK;
}

/* Makes blocks covering [p0, p1) present and exclusively owned. */
static dw_status own_blocks(dw_session *s, int p0, int p1) {
  const dw_engine_ops *ops = s->engine->ops;
  void *ctx = s->engine->ctx;
  size_t bytes = dw_kv_block_bytes(s->model);
  for (int b = p0 / DW_KV_BLOCK; b <= (p1 - 1) / DW_KV_BLOCK; b++) {
    dw_kv_block *cur = s->blocks[b];
    if (cur && atomic_load(&cur->refs) == 1) continue;
    void *data;
    dw_status st = ops->kv_alloc(ctx, bytes, &data);
    if (st) return st;
    if (cur && (st = ops->kv_copy(ctx, data, cur->data, bytes))) {
      ops->kv_free(ctx, data, bytes);
      return st;
    }
    dw_kv_block *nb = block_wrap(s, data);
    if (!nb) return dw_error_set(DW_ERR_NOMEM, "kv cache");
    block_unref(s, cur);
    s->blocks[b] = nb;
  }
  return DW_OK;
}

dw_status dw_sess_reserve(dw_session *s, int n) {
  if (n < 1 || (int64_t)s->n_past + n > s->n_ctx)
    return dw_error_set(DW_ERR_LIMIT, "session: %d more positions past %d (context %d)", n, s->n_past, s->n_ctx);
  return own_blocks(s, s->n_past, s->n_past + n);
}

static dw_status decode(dw_session *s, const int32_t *tokens, int n, float *logits, float *all_logits,
                        double *embd_sum) {
  const dw_hparams *hp = &s->model->hp;
  if (n < 0) return dw_error_set(DW_ERR_INVALID_ARG, "decode: negative token count");
  if (n == 0) return dw_error_set(DW_ERR_INVALID_ARG, "decode: no tokens");
  if ((int64_t)s->n_past + n > s->n_ctx)
    return dw_error_set(DW_ERR_LIMIT, "decode: %d + %d tokens exceed the context of %d", s->n_past, n, s->n_ctx);
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
      return dw_error_set(DW_ERR_INVALID_ARG, "decode: token %d at index %d is not in the vocabulary (%d)", tokens[i],
                          i, hp->n_vocab);
  dw_engine *e = s->engine;
  int start = s->n_past, step = e->max_step_tokens;
  s->last = (dw_step_info){.zero_copy = true};
  for (int i = 0; i < n; i += step) {
    int nt = n - i < step ? n - i : step;
    dw_step_seq q = {s, tokens + i, nt, i + nt == n ? logits : NULL,
                     all_logits ? all_logits + (size_t)i * hp->n_vocab : NULL, embd_sum};
    dw_step_info info = {0};
    dw_status st = own_blocks(s, s->n_past, s->n_past + nt);
    if (!st) st = dw_engine_step(e, s->w, &q, &info);
    if (st) {
      s->n_past = start; /* positions written so far are simply dropped */
      return st;
    }
    s->last.zero_copy &= info.zero_copy;
    s->last.staged_bytes += info.staged_bytes;
    memcpy(s->tokens + s->n_past, tokens + i, (size_t)nt * sizeof *tokens);
    s->n_past += nt;
  }
  return DW_OK;
}

dw_status dw_decode(dw_session *s, const int32_t *tokens, int n, float *logits, float *all_logits) {
  return decode(s, tokens, n, logits, all_logits, NULL);
}

dw_status dw_embed(dw_session *s, const int32_t *tokens, int n, float *out) {
  int dim = s->model->hp.dim;
  double *sum = dw_calloc((size_t)dim, sizeof *sum);
  if (!sum) return dw_error_set(DW_ERR_NOMEM, "embed");
  dw_status st = decode(s, tokens, n, NULL, NULL, sum);
  if (!st) {
    double norm = 0;
    for (int i = 0; i < dim; i++) norm += (sum[i] / n) * (sum[i] / n);
    norm = norm > 0 ? sqrt(norm) : 1;
    for (int i = 0; i < dim; i++) out[i] = (float)(sum[i] / n / norm);
  }
  dw_free(sum);
  return st;
}

/* The engine's view of the block table: the data pointers of blocks [0, nb). */
static void **block_data(const dw_session *s, int nb) {
  void **d = dw_malloc((size_t)(nb ? nb : 1) * sizeof *d);
  for (int b = 0; d && b < nb; b++) d[b] = s->blocks[b] ? s->blocks[b]->data : NULL;
  return d;
}

dw_status dw_sess_export(const dw_session *s, void *k, void *v) {
  if (s->n_past == 0) return DW_OK;
  void **d = block_data(s, n_blocks(s->n_past));
  if (!d) return dw_error_set(DW_ERR_NOMEM, "session export");
  dw_status st = s->engine->ops->kv_export(s->engine->ctx, s->model, d, s->n_past, k, v);
  dw_free(d);
  return st;
}

dw_status dw_sess_restore(dw_session *s, const int32_t *tokens, int n, const void *k, const void *v) {
  const dw_hparams *hp = &s->model->hp;
  if (s->n_past != 0 || n < 0 || n > s->n_ctx)
    return dw_error_set(DW_ERR_INVALID_ARG, "session restore: %d positions into a context of %d", n, s->n_ctx);
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
      return dw_error_set(DW_ERR_INVALID_ARG, "session restore: token %d is not in the vocabulary", tokens[i]);
  if (n == 0) return DW_OK;
  int nb = n_blocks(n);
  for (int b = 0; b < nb; b++)
    if (s->blocks[b]) return dw_error_set(DW_ERR_INVALID_ARG, "session restore: the session is not empty");
  void **d = dw_calloc((size_t)nb, sizeof *d);
  if (!d) return dw_error_set(DW_ERR_NOMEM, "session restore");
  dw_status st = s->engine->ops->kv_import(s->engine->ctx, s->model, d, n, k, v);
  for (int b = 0; !st && b < nb; b++)
    if (!(s->blocks[b] = block_wrap(s, d[b]))) {
      for (int j = b + 1; j < nb; j++) s->engine->ops->kv_free(s->engine->ctx, d[j], dw_kv_block_bytes(s->model));
      st = dw_error_set(DW_ERR_NOMEM, "session restore: kv cache");
    }
  dw_free(d);
  if (st) {
    for (int b = 0; b < nb; b++) {
      block_unref(s, s->blocks[b]);
      s->blocks[b] = NULL;
    }
    return st;
  }
  memcpy(s->tokens, tokens, (size_t)n * sizeof *tokens);
  s->n_past = n;
  return DW_OK;
}
