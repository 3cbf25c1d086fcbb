/*
 * model.h — a llama-family model (archs `llama`, `qwen2`, `qwen3`, `gemma2`,
 * `gemma3`, `phi3`; ../shared/specs/architectures.md) loaded from a mapped
 * GGUF file: hyperparameters, checked shapes and weight views. What sets
 * the architectures apart is data here (norms present or not, scales,
 * soft-caps, windows, RoPE tables), so an engine runs one forward pass. It
 * knows no device: engines (engine.h) prepare the weights for theirs, and
 * sessions (session.h) hold the KV cache.
 *
 * Invariants:
 *  1. Weights stay in the file mapping and are shared by every session and
 *     thread; only norm weights and biases (vectors) are copied to f32.
 *  2. The loader checks every shape and hyperparameter the forward pass
 *     relies on (spec §1.9), so decode needs no shape checks, only token-id
 *     and context checks.
 *
 * Threads: a model is immutable after load and may be used by many threads.
 */
#ifndef DW_MODEL_H
#define DW_MODEL_H

#include "base/base.h"
#include "llm/gguf.h"
#include "llm/tokenizer.h"

#include <stdatomic.h>

#define DW_KV_BLOCK 32 /* positions per KV block */

typedef enum dw_arch {
  DW_ARCH_LLAMA = 0, DW_ARCH_QWEN2 = 1, DW_ARCH_QWEN3 = 2, DW_ARCH_GEMMA2 = 3, DW_ARCH_GEMMA3 = 4, DW_ARCH_PHI3 = 5
} dw_arch;

/* A 2-D weight: n_out rows of n_in elements of `type`. */
typedef struct dw_wt {
  const uint8_t *data;
  uint32_t type;
  int64_t n_in, n_out;
  size_t row_bytes;
} dw_wt;

typedef struct dw_layer {
  float *attn_norm, *ffn_norm;  /* owned, [dim] */
  dw_wt wq, wk, wv, wo, gate, up, down; /* phi3's fused attn_qkv / ffn_up are viewed as row ranges */
  float *bq, *bk, *bv, *bo;     /* owned or NULL */
  float *q_norm, *k_norm;       /* owned [head_dim], RMSNorm of each Q/K head before RoPE, or NULL */
  float *post_attn_norm, *post_ffn_norm; /* owned [dim], RMSNorm of the block's output before the residual add, or NULL */
  int swa;                      /* sliding window: a query at p sees keys in (p - swa, p]; 0 = all of (0, p] */
  bool local_rope;              /* RoPE from dw_model.inv_freq_local (gemma3's sliding layers) */
} dw_layer;

typedef struct dw_hparams {
  dw_arch arch;
  int n_vocab, n_ctx_train, dim, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot;
  float eps, rope_base, rope_scale;
  float rope_mscale;            /* cos and sin are multiplied by it (YaRN's magnitude, attn_factor) */
  int n_ctx_orig;               /* RoPE scaling's original context (phi3 picks long factors past it) */
  float attn_scale;             /* q·k is multiplied by it: 1/sqrt(head_dim) unless the arch says otherwise */
  float attn_softcap;           /* scores become cap·tanh(s/cap) before the softmax; 0 = none (gemma2) */
  float final_softcap;          /* the same on the logits (gemma2) */
  float embd_scale;             /* token embeddings are multiplied by it (gemma: sqrt(dim)); else 1 */
  bool gelu;                    /* GELU(tanh)-gated FFN instead of SiLU-gated (gemma) */
  bool rope_neox;
} dw_hparams;

typedef struct dw_model {
  dw_gguf *g;                   /* owned mapping */
  char *path;                   /* owned */
  dw_hparams hp;
  dw_wt tok_embd, output;       /* output may alias tok_embd (tied) */
  float *output_norm;           /* owned */
  float *inv_freq;              /* owned, [n_rot/2]: θ_i(pos) = pos·inv_freq[i] (base, scaling, factors in it) */
  float *inv_freq_long;         /* owned or NULL: phi3's LongRoPE table for sessions past n_ctx_orig */
  float *inv_freq_local;        /* owned or NULL: the table of layers with local_rope */
  dw_layer *layers;             /* owned */
  dw_tokenizer *tok;            /* owned */
  uint32_t weight_type;         /* the type of most matrices (for info) */
  uint8_t fingerprint[32], family[32]; /* computed at load (see dw_model_fingerprint) */
  bool vocab_only;
  _Atomic int refs;
} dw_model;

/* vocab_only: the tokenizer alone (hp and weights stay empty). */
DW_HIDDEN dw_status dw_model_load(const char *path, bool vocab_only, dw_model **out);
/* The same from a parsed file, which the model takes over (closed on error
 * too); `path` only names it in messages. */
DW_HIDDEN dw_status dw_model_from_gguf(dw_gguf *g, const char *path, bool vocab_only, dw_model **out);
DW_HIDDEN void dw_model_retain(dw_model *m);
DW_HIDDEN void dw_model_release(dw_model *m);
/* What driftwood.h's dw_model_info says of the model (eot falls back to
 * eos); guests read the same 32 bytes through model_info. */
DW_HIDDEN void dw_model_info_get(const dw_model *m, dw_model_info *out);
/* The GGUF string value of `key` into out[0 .. cap) (not terminated), *n
 * its length: DW_ERR_NOT_FOUND without such a string key, DW_ERR_LIMIT
 * (with *n set) when it is longer than cap. */
DW_HIDDEN dw_status dw_model_meta_str(const dw_model *m, const char *key, char *out, size_t cap, size_t *n);
/* A one-line summary (arch, sizes, weight type). */
DW_HIDDEN void dw_model_summary(const dw_model *m, char *buf, size_t cap);
/* The RoPE table for a layer of a session of n_ctx positions. */
DW_HIDDEN const float *dw_model_rope(const dw_model *m, const dw_layer *L, int n_ctx);
/* Bytes of one KV block: K and V for DW_KV_BLOCK positions of every layer, f32. */
DW_HIDDEN size_t dw_kv_block_bytes(const dw_model *m);

/* SHA-256 over the file's metadata and tensor descriptions (everything
 * before the tensor data), its size, and the first, middle and last KiB of
 * every tensor: other types, vocabularies or weights (even under an
 * identical header) give other fingerprints, for a few KiB read a tensor. */
DW_HIDDEN void dw_model_fingerprint(const dw_model *m, uint8_t out[32]);
/* SHA-256 over the architecture, shapes and vocabulary: models with the
 * same family hash differ only in their weights (e.g. another
 * quantisation), so a session can move between them by re-prefilling. */
DW_HIDDEN void dw_model_family(const dw_model *m, uint8_t out[32]);
#endif
