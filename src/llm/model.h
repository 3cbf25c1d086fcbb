/*
 * model.h — a llama-family model (archs `llama` and `qwen2`) loaded from a
 * mapped GGUF file, its KV-cache sessions, and the forward pass on the CPU.
 *
 * Invariants:
 *  1. Weights stay in the file mapping and are shared by every session and
 *     thread; only norm weights and biases (vectors) are copied to f32.
 *  2. The loader checks every shape and hyperparameter the forward pass
 *     relies on (spec §1.9), so decode needs no shape checks, only token-id
 *     and context checks.
 *  3. A session's KV cache is a list of fixed-size blocks (DW_KV_BLOCK
 *     positions × all layers), reference-counted: session_fork shares them,
 *     and a block is copied before its first write while shared.
 *  4. KV entries are f32 in a canonical layout [layer][position][kv_dim]
 *     (K then V), independent of the backend.
 *
 * Threads: a model is immutable after load and may be used by many threads;
 * a session is used by one thread at a time. Forward passes run on a
 * dw_pool (one job at a time per pool).
 */
#ifndef DW_MODEL_H
#define DW_MODEL_H

#include "base/pool.h"
#include "llm/gguf.h"
#include "llm/tokenizer.h"

#include <stdatomic.h>

#define DW_KV_BLOCK 32

typedef enum dw_arch { DW_ARCH_LLAMA = 0, DW_ARCH_QWEN2 = 1 } dw_arch;

/* A 2-D weight: n_out rows of n_in elements of `type`. */
typedef struct dw_wt {
  const uint8_t *data;
  uint32_t type;
  int64_t n_in, n_out;
  size_t row_bytes;
} dw_wt;

typedef struct dw_layer {
  float *attn_norm, *ffn_norm;  /* owned, [dim] */
  dw_wt wq, wk, wv, wo, gate, up, down;
  float *bq, *bk, *bv, *bo;     /* owned or NULL */
} dw_layer;

typedef struct dw_hparams {
  dw_arch arch;
  int n_vocab, n_ctx_train, dim, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot;
  float eps, rope_base, rope_scale;
  bool rope_neox;
} dw_hparams;

typedef struct dw_model {
  dw_gguf *g;                   /* owned mapping */
  char *path;                   /* owned */
  dw_hparams hp;
  dw_wt tok_embd, output;       /* output may alias tok_embd (tied) */
  float *output_norm;           /* owned */
  float *inv_freq;              /* owned, [n_rot/2]: base^(-2i/n_rot)·scale/f_i */
  dw_layer *layers;             /* owned */
  dw_tokenizer *tok;            /* owned */
  uint32_t weight_type;         /* the type of most matrices (for info) */
  uint8_t fingerprint[32], family[32]; /* computed at load (see dw_model_fingerprint) */
  bool vocab_only;
  _Atomic int refs;
} dw_model;

typedef struct dw_kv_block {
  _Atomic int refs;
  float data[];                 /* K [n_layer][BLOCK][kv_dim], then V likewise */
} dw_kv_block;

typedef struct dw_session {
  dw_model *model;              /* counted reference */
  dw_pool *pool;                /* borrowed: where decode runs */
  int n_ctx, n_past;
  dw_kv_block **blocks;         /* [ceil(n_ctx / BLOCK)] */
  int32_t *tokens;              /* [n_ctx]: the token history */
} dw_session;

/* vocab_only: the tokenizer alone (hp and weights stay empty). */
DW_HIDDEN dw_status dw_model_load(const char *path, bool vocab_only, dw_model **out);
/* The same from a parsed file, which the model takes over (closed on error
 * too); `path` only names it in messages. */
DW_HIDDEN dw_status dw_model_from_gguf(dw_gguf *g, const char *path, bool vocab_only, dw_model **out);
DW_HIDDEN void dw_model_retain(dw_model *m);
DW_HIDDEN void dw_model_release(dw_model *m);
/* A one-line summary (arch, sizes, weight type). */
DW_HIDDEN void dw_model_summary(const dw_model *m, char *buf, size_t cap);

/* n_ctx <= 0: the model's training context. The pool must outlive the session. */
DW_HIDDEN dw_status dw_sess_new(dw_model *m, dw_pool *pool, int n_ctx, dw_session **out);
DW_HIDDEN void dw_sess_free(dw_session *s);
DW_HIDDEN dw_status dw_sess_fork(const dw_session *s, dw_session **out);
DW_HIDDEN dw_status dw_sess_truncate(dw_session *s, int n_keep);
DW_HIDDEN size_t dw_kv_block_bytes(const dw_model *m);

/* Appends n tokens; writes the last position's logits [n_vocab] to `logits`
 * (may be NULL) and, if `all_logits` is not NULL, every position's
 * [n][n_vocab]. Token ids >= n_vocab → DW_ERR_INVALID_ARG; n_past + n >
 * n_ctx → DW_ERR_LIMIT; on error the session is unchanged. */
DW_HIDDEN dw_status dw_decode(dw_session *s, const int32_t *tokens, int n, float *logits,
                              float *all_logits);

/* SHA-256 over the file's metadata and tensor descriptions (everything
 * before the tensor data) and its size: different weights, types or
 * vocabularies give different fingerprints; it costs no weight reads. */
DW_HIDDEN void dw_model_fingerprint(const dw_model *m, uint8_t out[32]);
/* SHA-256 over the architecture, shapes and vocabulary: models with the
 * same family hash differ only in their weights (e.g. another
 * quantisation), so a session can move between them by re-prefilling. */
DW_HIDDEN void dw_model_family(const dw_model *m, uint8_t out[32]);
/* The K (v false) or V row of a position, [n_head_kv * head_dim] floats. */
DW_HIDDEN const float *dw_sess_kv(const dw_session *s, int layer, int pos, bool v);
/* Loads n positions into an empty session: tokens, and K/V rows in the
 * canonical layout [layer][pos][kv_dim] read with memcpy from k and v. */
DW_HIDDEN dw_status dw_sess_restore(dw_session *s, const int32_t *tokens, int n, const void *k, const void *v);

/* Appends n tokens and writes their mean-pooled, L2-normalised final hidden
 * state (after output_norm) to out[n_embd]: a sentence embedding. */
DW_HIDDEN dw_status dw_embed(dw_session *s, const int32_t *tokens, int n, float *out);

#endif
