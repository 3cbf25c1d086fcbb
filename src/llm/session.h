/*
 * session.h — KV-cache sessions over any engine: the block table, fork
 * and truncate, decode (validation and micro-batching into engine steps),
 * sentence embeddings, and the canonical export/import snapshots use.
 *
 * Invariants:
 *  1. A session's KV cache is a table of fixed-size blocks (DW_KV_BLOCK
 *     positions × all layers) in its engine's memory, reference-counted
 *     on the host: session_fork shares them, and a block is copied (on the
 *     engine) before its first write while shared.
 *  2. Blocks [0, ceil(n_past / DW_KV_BLOCK)) are present; later slots are
 *     NULL or hold positions past n_past that the next step overwrites.
 *  3. On any error a call leaves n_past, the tokens and what the blocks
 *     hold for positions < n_past unchanged.
 *
 * Threads: a session is used by one thread at a time; its model and
 * engine are shared.
 */
#ifndef DW_SESSION_H
#define DW_SESSION_H

#include "llm/engine.h"

typedef struct dw_kv_block {
  _Atomic int refs;
  void *data;                   /* owned by the engine: dw_kv_block_bytes(model) */
} dw_kv_block;

struct dw_session {
  dw_model *model;              /* counted reference */
  dw_engine *engine;            /* borrowed: must outlive the session */
  const dw_engine_weights *w;   /* borrowed from the engine's cache */
  int n_ctx, n_past;
  dw_kv_block **blocks;         /* owned table [ceil(n_ctx / BLOCK)], entries counted */
  int32_t *tokens;              /* owned [n_ctx]: the token history */
  dw_step_info last;            /* what the last decode did */
};

/* n_ctx <= 0: the model's training context. Prepares the model's weights
 * on the engine on first use. */
DW_HIDDEN dw_status dw_sess_new(dw_model *m, dw_engine *e, int n_ctx, dw_session **out);
DW_HIDDEN void dw_sess_free(dw_session *s);
DW_HIDDEN dw_status dw_sess_fork(const dw_session *s, dw_session **out);
DW_HIDDEN dw_status dw_sess_truncate(dw_session *s, int n_keep);

/* Makes the KV blocks of positions [n_past, n_past + n) present and this
 * session's own, for a caller that builds forward steps itself (dw_decode
 * does it for its own). */
DW_HIDDEN dw_status dw_sess_reserve(dw_session *s, int n);

/* Appends n tokens; writes the last position's logits [n_vocab] to `logits`
 * (may be NULL) and, if `all_logits` is not NULL, every position's
 * [n][n_vocab]. Token ids >= n_vocab → DW_ERR_INVALID_ARG; n_past + n >
 * n_ctx → DW_ERR_LIMIT; on error the session is unchanged. */
DW_HIDDEN dw_status dw_decode(dw_session *s, const int32_t *tokens, int n, float *logits, float *all_logits);

/* Appends n tokens and writes their mean-pooled, L2-normalised final hidden
 * state (after output_norm) to out[n_embd]: a sentence embedding. */
DW_HIDDEN dw_status dw_embed(dw_session *s, const int32_t *tokens, int n, float *out);

/* The K and V rows of positions [0, n_past) in the canonical layout, each
 * [n_layer][n_past][kv_dim] f32 (for snapshots), written with memcpy to
 * k and v (which may be unaligned). */
DW_HIDDEN dw_status dw_sess_export(const dw_session *s, void *k, void *v);
/* Loads n positions into an empty session: tokens, and K/V rows in the
 * canonical layout [layer][pos][kv_dim] read with memcpy from k and v. */
DW_HIDDEN dw_status dw_sess_restore(dw_session *s, const int32_t *tokens, int n, const void *k, const void *v);

#endif
