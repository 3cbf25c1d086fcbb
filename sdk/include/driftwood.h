/*
 * driftwood.h (guest SDK) — the `driftwood` import module, version 1, for
 * guest code compiled to wasm32 (clang --target=wasm32-wasi).
 *
 * Every pointer is an address in the guest's own linear memory; the host
 * reads and writes those bytes in place (no copies). Every function returns
 * a status: DW_OK (0) or one of the DW_ERR_* codes below, identical to the
 * host's dw_status. Sizes are in elements unless a name ends in _bytes.
 *
 * Usage:
 *   float a[M*K], b[K*N], c[M*N];
 *   if (dw_matmul_f32(a, b, c, M, N, K) != DW_OK) ...;
 *   dw_op_info info; dw_last_op_info(&info);   // info.zero_copy == 1
 *
 * This header includes nothing from the host.
 */
#ifndef DRIFTWOOD_GUEST_H
#define DRIFTWOOD_GUEST_H

#include <stdint.h>

#define DW_IMPORT(name) __attribute__((import_module("driftwood"), import_name(#name)))

enum {
  DW_OK = 0,
  DW_ERR_INVALID_ARG = 1,
  DW_ERR_OUT_OF_BOUNDS = 2,
  DW_ERR_NOMEM = 3,
  DW_ERR_IO = 4,
  DW_ERR_UNSUPPORTED = 9,
  DW_ERR_LIMIT = 10,
  DW_ERR_BACKEND = 11,
  DW_ERR_NOT_FOUND = 12,
  DW_ERR_OVERFLOW = 13,
  DW_ERR_MISALIGNED = 14,
  DW_ERR_BAD_MODEL = 15,
};

/* What the host saw during the last compute call (16 bytes, 4-aligned). */
typedef struct dw_op_info {
  uint32_t zero_copy;    /* 1: the backend computed on this guest's own bytes */
  uint32_t status;       /* that call's status */
  uint64_t staged_bytes; /* bytes the backend moved to its own buffers and
                            back: 0, except for large matmuls on CUDA, whose
                            operands are DMA'd into device memory (no host
                            copy); zero_copy is then 0 */
} dw_op_info;

/* Returns 1 (this header's ABI version). */
DW_IMPORT(abi_version) int32_t dw_abi_version(void);

/* C[m×n] = A[m×k] · B[k×n], row-major f32 in guest memory, on the host's
 * active backend. Pointers must be 4-byte aligned; C must not overlap A or
 * B; m == 0 or n == 0 does nothing; k == 0 zeroes C. Precision: f32 inputs
 * and f32 accumulation (no TF32), so integer-valued data stays exact while
 * every partial sum stays below 2^24. */
DW_IMPORT(matmul_f32)
int32_t dw_matmul_f32(const float *a, const float *b, float *c, uint32_t m, uint32_t n, uint32_t k);

/* Streams len bytes to whoever called the actor (stdout under `driftwood run`). */
DW_IMPORT(emit) int32_t dw_emit(const void *ptr, uint32_t len_bytes);

/* Fills *out with what the host saw during the last compute call. */
DW_IMPORT(last_op_info) int32_t dw_last_op_info(dw_op_info *out);

/* ---- LLM inference (models the host registered with --model NAME=PATH) ----
 *
 * Handles are small non-zero integers local to this instance. Token ids are
 * int32, logits f32, both in this guest's memory: decode writes the logits
 * straight into out_logits (n_vocab floats, 4-byte aligned). Every size
 * argument is a count of elements; *_len/out_n results are written even on
 * DW_ERR_LIMIT (the size that would be needed). */

typedef uint32_t dw_model_t;
typedef uint32_t dw_session_t;

/* 32 bytes, as the host's dw_model_info. */
typedef struct dw_model_info {
  uint32_t n_vocab;
  uint32_t n_ctx_train;
  int32_t bos, eos, eot;  /* -1 when absent; eot falls back to eos */
  uint32_t n_embd;
  uint32_t n_layer;
  uint32_t flags;         /* DW_MODEL_ADD_BOS | DW_MODEL_ADD_EOS */
} dw_model_info;

#define DW_MODEL_ADD_BOS 1u
#define DW_MODEL_ADD_EOS 2u
#define DW_TOKENIZE_ADD_SPECIAL 1u   /* BOS/EOS as the vocabulary asks */
#define DW_TOKENIZE_PARSE_SPECIAL 2u /* control-token texts become their ids */

/* Opens the model registered as name[0..name_len); name_len 0 opens the
 * first one registered. DW_ERR_NOT_FOUND when there is none. */
DW_IMPORT(model_open) int32_t dw_model_open(const char *name, uint32_t name_len, dw_model_t *out);
DW_IMPORT(model_info) int32_t dw_model_info_get(dw_model_t model, dw_model_info *out);
/* A string metadata value, e.g. "tokenizer.chat_template". */
DW_IMPORT(model_meta)
int32_t dw_model_meta(dw_model_t model, const char *key, uint32_t key_len, char *out, uint32_t cap, uint32_t *out_len);
/* flags: DW_TOKENIZE_*. */
DW_IMPORT(tokenize)
int32_t dw_tokenize(dw_model_t model, const char *text, uint32_t text_len, uint32_t flags, int32_t *out_tokens,
                    uint32_t cap, uint32_t *out_n);
/* The bytes token stands for (control tokens: none). */
DW_IMPORT(token_piece)
int32_t dw_token_piece(dw_model_t model, int32_t token, char *out, uint32_t cap, uint32_t *out_len);
/* n_ctx 0: the model's training context. */
DW_IMPORT(session_new) int32_t dw_session_new(dw_model_t model, uint32_t n_ctx, dw_session_t *out);
/* Appends n tokens; writes the last position's logits. DW_ERR_LIMIT when
 * the context is full (nothing appended). */
DW_IMPORT(decode) int32_t dw_decode(dw_session_t s, const int32_t *tokens, uint32_t n, float *out_logits);
DW_IMPORT(session_len) int32_t dw_session_len(dw_session_t s, uint32_t *out_n);
DW_IMPORT(session_truncate) int32_t dw_session_truncate(dw_session_t s, uint32_t n_keep);
/* A new session sharing s's KV prefix (copy-on-write). */
DW_IMPORT(session_fork) int32_t dw_session_fork(dw_session_t s, dw_session_t *out);
DW_IMPORT(session_free) int32_t dw_session_free(dw_session_t s);

#endif
