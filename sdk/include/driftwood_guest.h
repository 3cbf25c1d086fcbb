/*
 * driftwood_guest.h (guest SDK) — the `driftwood` import module, version
 * 1, for guest code compiled to wasm32 (clang --target=wasm32-wasi). Its
 * names (dwg_*, DWG_*) are the guest's own: none is a host name.
 *
 * Every pointer is an address in the guest's own linear memory; the host
 * reads and writes those bytes in place (no copies). Every function returns
 * a status: DWG_OK (0) or one of the DWG_ERR_* codes of driftwood_abi.h
 * (the wire format: codes, flags and struct layouts, shared with the host),
 * identical to the host's dw_status. Sizes are in elements unless a name ends in _bytes.
 *
 * Usage:
 *   float a[M*K], b[K*N], c[M*N];
 *   if (dwg_matmul_f32(a, b, c, M, N, K) != DWG_OK) ...;
 *   dwg_op_info info; dwg_last_op_info(&info);   // info.zero_copy == 1
 *
 * This header includes nothing from the host.
 */
#ifndef DRIFTWOOD_GUEST_H
#define DRIFTWOOD_GUEST_H

#include "driftwood_abi.h"

#include <stdint.h>

#define DWG_IMPORT(name) __attribute__((import_module("driftwood"), import_name(#name)))

/* Returns 1 (this header's ABI version). */
DWG_IMPORT(abi_version) int32_t dwg_abi_version(void);

/* C[m×n] = A[m×k] · B[k×n], row-major f32 in guest memory, on the host's
 * active backend. Pointers must be 4-byte aligned; C must not overlap A or
 * B; m == 0 or n == 0 does nothing; k == 0 zeroes C. Precision: f32 inputs
 * and f32 accumulation (no TF32), so integer-valued data stays exact while
 * every partial sum stays below 2^24. */
DWG_IMPORT(matmul_f32)
int32_t dwg_matmul_f32(const float *a, const float *b, float *c, uint32_t m, uint32_t n, uint32_t k);

/* Streams len bytes to whoever called the actor (stdout under `driftwood run`). */
DWG_IMPORT(emit) int32_t dwg_emit(const void *ptr, uint32_t len_bytes);

/* Fills *out with what the host saw during the last compute call. */
DWG_IMPORT(last_op_info) int32_t dwg_last_op_info(dwg_op_info *out);

/* ---- LLM inference (models the host registered with --model NAME=PATH) ----
 *
 * Handles are small non-zero integers local to this instance (model handles
 * count 1, 2, … in the order this guest first opens each model, and
 * survive freeze and thaw). Token ids are
 * int32, logits f32, both in this guest's memory: decode writes the logits
 * straight into out_logits (n_vocab floats, 4-byte aligned). Every size
 * argument is a count of elements; *_len/out_n results are written even on
 * DWG_ERR_LIMIT (the size that would be needed). */

typedef uint32_t dwg_model;
typedef uint32_t dwg_session;

/* Opens the model registered as name[0..name_len); name_len 0 opens the
 * first one registered. DWG_ERR_NOT_FOUND when there is none. */
DWG_IMPORT(model_open) int32_t dwg_model_open(const char *name, uint32_t name_len, dwg_model *out);
DWG_IMPORT(model_info) int32_t dwg_model_info_get(dwg_model model, dwg_model_info *out);
/* A string metadata value, e.g. "tokenizer.chat_template". */
DWG_IMPORT(model_meta)
int32_t dwg_model_meta(dwg_model model, const char *key, uint32_t key_len, char *out, uint32_t cap, uint32_t *out_len);
/* flags: DW_TOKENIZE_*. */
DWG_IMPORT(tokenize)
int32_t dwg_tokenize(dwg_model model, const char *text, uint32_t text_len, uint32_t flags, int32_t *out_tokens,
                    uint32_t cap, uint32_t *out_n);
/* The bytes token stands for (control tokens: none). */
DWG_IMPORT(token_piece)
int32_t dwg_token_piece(dwg_model model, int32_t token, char *out, uint32_t cap, uint32_t *out_len);
/* n_ctx 0: the model's training context. */
DWG_IMPORT(session_new) int32_t dwg_session_new(dwg_model model, uint32_t n_ctx, dwg_session *out);
/* Appends n tokens; writes the last position's logits. DWG_ERR_LIMIT when
 * the context is full (nothing appended). */
DWG_IMPORT(decode) int32_t dwg_decode(dwg_session s, const int32_t *tokens, uint32_t n, float *out_logits);
DWG_IMPORT(session_len) int32_t dwg_session_len(dwg_session s, uint32_t *out_n);
DWG_IMPORT(session_truncate) int32_t dwg_session_truncate(dwg_session s, uint32_t n_keep);
/* A new session sharing s's KV prefix (copy-on-write). */
DWG_IMPORT(session_fork) int32_t dwg_session_fork(dwg_session s, dwg_session *out);
DWG_IMPORT(session_free) int32_t dwg_session_free(dwg_session s);

#endif
