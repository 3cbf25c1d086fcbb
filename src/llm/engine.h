/*
 * engine.h — the LLM engine interface: where a model's weights live, where
 * a session's KV blocks live, and how one forward step runs. Model loading
 * (model.c), tokenizers and session bookkeeping (session.c) know no device;
 * cpu/ (host threads) and cuda/ (HBM, our kernels, cuBLAS) implement this
 * vtable, and every caller (the ABI, WASI-NN, actors, the CLI) reaches an
 * engine only through the dw_engine_* wrappers.
 *
 * Invariants:
 *  1. Weights are prepared once per (engine, model) and cached on the
 *     engine until it is destroyed; every session of that model on that
 *     engine shares them. The cache holds a model reference.
 *  2. KV blocks are opaque engine memory of dw_kv_block_bytes(m) bytes in
 *     the canonical layout [layer][DW_KV_BLOCK][kv_dim] f32, K then V, so
 *     a block means the same on every engine; kv_export/kv_import convert
 *     between blocks and the snapshot layout [layer][pos][kv_dim].
 *  3. forward runs one step over many sequences; each sequence's tokens
 *     were validated and its blocks for the new positions are present and
 *     exclusively owned (session.c sees to both). It does not advance
 *     n_past: the caller does, once the step succeeded.
 *  4. Output pointers (logits) may be guest memory registered with the
 *     runtime's backend: engines write them in place or by DMA, never
 *     through a host staging copy.
 *
 * Threads: an engine may be called from many threads; each engine
 * serialises its own steps. A session is used by one thread at a time.
 */
#ifndef DW_ENGINE_H
#define DW_ENGINE_H

#include "llm/model.h"

#include <pthread.h>

#define DW_ENGINE_OPS_VERSION 1

typedef struct dw_session dw_session;

/* One sequence's share of a forward step: its n tokens go to positions
 * [s->n_past, s->n_past + n). */
typedef struct dw_step_seq {
  dw_session *s;            /* borrowed */
  const int32_t *tokens;    /* [n], each < n_vocab */
  int n;
  float *logits;            /* [n_vocab]: the last token's logits, or NULL */
  float *all_logits;        /* [n][n_vocab], or NULL */
  double *embd_sum;         /* [dim] += each token's final-normed hidden state, or NULL */
} dw_step_seq;

/* What the last step did (reported to guests through last_op_info). */
typedef struct dw_step_info {
  bool zero_copy;           /* outputs were written straight into the caller's memory */
  uint64_t staged_bytes;    /* bytes moved through staging buffers (0 = none) */
} dw_step_info;

typedef struct dw_engine_ops {
  uint32_t version;         /* DW_ENGINE_OPS_VERSION */
  const char *name;         /* "cpu", "cuda" */
  /* Prepares m's weights (views into the mapping, or device copies);
   * *device_bytes gets the device memory they take (0 on the host). */
  dw_status (*weights_load)(void *ctx, dw_model *m, void **out, uint64_t *device_bytes);
  void (*weights_free)(void *ctx, void *w);
  /* A KV block of `bytes`; contents undefined. */
  dw_status (*kv_alloc)(void *ctx, size_t bytes, void **out);
  void (*kv_free)(void *ctx, void *blk, size_t bytes);
  dw_status (*kv_copy)(void *ctx, void *dst, const void *src, size_t bytes);
  /* Blocks [0, ceil(n_pos / DW_KV_BLOCK)) → k, v, each [n_layer][n_pos][kv_dim] f32,
   * written with memcpy (k and v may be unaligned). */
  dw_status (*kv_export)(void *ctx, const dw_model *m, void *const *blocks, int n_pos, void *k, void *v);
  /* Allocates blocks[0 .. ceil(n_pos / DW_KV_BLOCK)) and fills them from k, v
   * (same layout, read with memcpy: may be unaligned). On failure every
   * block it allocated is freed and the slots are NULL. */
  dw_status (*kv_import)(void *ctx, const dw_model *m, void **blocks, int n_pos, const void *k, const void *v);
  /* One step (invariant 3). */
  dw_status (*forward)(void *ctx, void *weights, dw_step_seq *seqs, int n_seqs, dw_step_info *info);
  /* One line about the engine. Optional. */
  void (*describe)(void *ctx, char *buf, size_t cap);
  void (*destroy)(void *ctx);
} dw_engine_ops;

/* Steps batched across sessions (batch.c), one per cached model: decode
 * calls made at the same time on different sessions of that model gather
 * into one forward step. The caller that finds no step running runs the
 * next one, for every call waiting in order of arrival (up to max_batch
 * sequences and max_step_tokens tokens), and the others wait for it. */
typedef struct dw_batch_req dw_batch_req;
typedef struct dw_batcher {
  pthread_mutex_t lock;
  pthread_cond_t cond;      /* a step ended */
  pthread_cond_t arrived;   /* a call joined the queue (CLOCK_MONOTONIC) */
  dw_batch_req *head, *tail; /* waiting calls, oldest first */
  int n_waiting;            /* calls in the queue */
  int last_n;               /* calls the last step carried */
  double last_step_s;       /* and its time */
  bool busy;                /* a step is running */
  dw_step_seq *seqs;        /* the running step's [max_batch] (its runner's) */
  dw_batch_req **reqs;
  uint64_t steps, seqs_run; /* steps run, the sequences they carried */
  int max_seqs;             /* the most in one step */
} dw_batcher;

typedef struct dw_engine_weights {
  dw_model *model;          /* counted reference */
  void *w;                  /* owned by the engine's ops */
  uint64_t device_bytes;
  double load_ms;
  dw_batcher batch;         /* the one mutable part of a cached entry */
  struct dw_engine_weights *next;
} dw_engine_weights;

typedef struct dw_engine {
  const dw_engine_ops *ops; /* static */
  void *ctx;                /* owned */
  int max_step_tokens;      /* tokens one forward step takes at most */
  int max_batch;            /* sequences one batched step takes at most (1: no batching) */
  pthread_mutex_t lock;     /* the weights cache */
  pthread_mutex_t load_lock; /* one weights load at a time, outside `lock` */
  dw_engine_weights *cache; /* owned list; entries never move */
} dw_engine;

/* "cpu", "cuda" or "auto" (CUDA when a device is present). threads: the
 * CPU engine's workers (<= 0: one per core). settings (may be NULL):
 * DRIFTWOOD_BATCH_MAX (sequences a batched step takes, default 64; 1 turns
 * batching off) and the CUDA engine's DRIFTWOOD_CUDA_LOGITS, _GRAPHS,
 * _PDL, _STREAM, _GEMV_ROWS. */
DW_HIDDEN dw_status dw_engine_create(const char *name, int threads, const dw_settings *settings, dw_engine **out);
DW_HIDDEN void dw_engine_destroy(dw_engine *e);
DW_HIDDEN const char *dw_engine_name(const dw_engine *e);
DW_HIDDEN void dw_engine_describe(const dw_engine *e, char *buf, size_t cap);
/* m's weights on e, prepared on first use (invariant 1); borrowed while e lives. */
DW_HIDDEN dw_status dw_engine_weights_for(dw_engine *e, dw_model *m, const dw_engine_weights **out);

/* One step for one sequence, batched with the concurrent steps of other
 * sessions of the same weights (dw_batcher). q is as for ops->forward. */
DW_HIDDEN dw_status dw_engine_step(dw_engine *e, const dw_engine_weights *w, dw_step_seq *q, dw_step_info *info);
/* Batching so far, over every model of e: steps run, the sequences they
 * carried, the most sequences in one step. */
DW_HIDDEN void dw_engine_batch_stats(dw_engine *e, uint64_t *steps, uint64_t *seqs, int *max_seqs);

/* Plug-ins. */
/* int_dots: decode through the integer dot products of quant.h where the
 * weight type has one (DRIFTWOOD_INT_DOT=0 turns them off). */
DW_HIDDEN dw_status dw_engine_cpu_reg(int threads, bool int_dots, dw_engine *out);
#ifdef DW_HAVE_CUDA_ENGINE
/* DW_ERR_UNSUPPORTED when no device is present. */
DW_HIDDEN dw_status dw_engine_cuda_reg(const dw_settings *settings, dw_engine *out);
#endif

#endif
