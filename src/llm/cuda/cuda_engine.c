/*
 * cuda_engine.c — the CUDA engine (engine.h): weights uploaded once per
 * model into HBM (quantised types repacked, never dequantised in memory),
 * KV blocks in HBM, and forward steps over many sequences at once: our
 * kernels (kernels.cu, and stream.cu: five a layer for steps of up to
 * DW_SV_MAX_NT tokens) for decode-sized steps, replayed from a CUDA graph,
 * and cuBLAS tensor-core GEMMs for prefill.
 *
 * Invariants:
 *  1. Every value a kernel uses to index memory (token ids, positions,
 *     block pointers) was checked on the host before the step: session.c
 *     validated the tokens, and the block table is built here from the
 *     session's own blocks.
 *  2. A step's inputs travel in one host-to-device copy from a pinned
 *     buffer; its logits leave by one DMA per sequence straight into the
 *     caller's memory (guest memory registered by the backend is pinned,
 *     so that DMA lands in the guest's own pages), or, with
 *     DRIFTWOOD_CUDA_LOGITS=mapped, the output GEMV writes them through the
 *     mapped pointer. No host staging copy either way.
 *  3. Steps of up to DW_GEMV_MAX_NT tokens run from a graph captured once
 *     per token count: all their device addresses are fixed per model, and
 *     what changes per step (tokens, positions, block tables) is data.
 *  4. A CUDA error fails the call with DW_ERR_BACKEND and its message; the
 *     session is left as it was (session.c does not advance it).
 *
 * Threads: steps, uploads and KV copies are serialised on `lock`, one
 * stream and one cuBLAS handle per engine.
 */
#define _GNU_SOURCE
#include "base/pool.h"
#include "llm/cuda/kernels.h"
#include "llm/quant.h"
#include "llm/session.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_STEP = 512 };

typedef struct dev_layer {
  float *attn_norm, *ffn_norm, *bq, *bk, *bv, *bo; /* device, [dim] / [n_out] or NULL */
  float *q_norm, *k_norm, *post_attn_norm, *post_ffn_norm; /* device or NULL (model.h) */
  dw_kwt wq, wk, wv, wo, gate, up, down;
} dev_layer;

/* One model's weights on the device and the buffers its steps use. */
typedef struct dev_model {
  const dw_model *m;             /* borrowed: the engine's cache holds a reference */
  dev_layer *layers;             /* host array, device pointers */
  dw_kwt tok_embd, output;       /* output may alias tok_embd */
  float *output_norm;            /* device */
  uint64_t weight_bytes, buffer_bytes;
  void **allocs;                 /* every device allocation, for freeing */
  int n_allocs, cap_allocs;
  /* step activations, [MAX_STEP][…] */
  float *x, *xn, *q, *k, *v, *att, *h, *u;
  void *x16;                     /* [MAX_STEP][max_in] f16/bf16: GEMM inputs */
  void *wdeq;                    /* f16 copy of one quantised matrix (prefill) */
  float *logits;                 /* [logits_cap][n_vocab] */
  float *h_logits;               /* pinned [h_logits_cap][n_vocab]: rows bound for pageable memory */
  int h_logits_cap;
  int logits_cap;
  float *att_part;               /* split-attention partials */
  int *att_count;                /* [MAX_STEP][n_head_kv], zero between steps (kernels.h) */
  size_t att_part_cap;           /* floats */
  /* step inputs, the same layout on both sides: IN_INTS int arrays of
   * [MAX_STEP] (tokens, pos, seq_of, out_rows, tab_off, tiles), RoPE
   * (cos, sin) [MAX_STEP][n_rot / 2], then tables_cap block pointers */
  uint8_t *d_in, *h_in;          /* device / pinned host */
  int tables_cap;
  cudaGraphExec_t graph[DW_GEMV_MAX_NT + 1]; /* by token count */
  int graph_split[DW_GEMV_MAX_NT + 1];       /* the attention split each was captured with */
} dev_model;

enum { COPY_THREADS = 8, RING_SLOTS = 2 * COPY_THREADS, RING_SLOT_BYTES = 2 << 20 };

/* Staging for KV export and import (kv_through_ring). */
typedef struct kv_ring {
  uint8_t *host[RING_SLOTS];     /* pinned */
  void *dev[RING_SLOTS];
  cudaEvent_t done[RING_SLOTS];  /* recorded after the slot's last copy and kernel */
  size_t slot_bytes;             /* 0 until allocated */
  dw_pool *pool;                 /* host threads for the copies into and out of the slots */
} kv_ring;

typedef struct cuda_engine {
  int device;
  cudaStream_t stream;
  cublasHandle_t blas;
  pthread_mutex_t lock;
  char name[300];
  size_t total_mem;
  bool mapped_logits;            /* DRIFTWOOD_CUDA_LOGITS=mapped */
  bool no_graphs;                /* DRIFTWOOD_CUDA_GRAPHS=0 */
  bool no_pdl;                   /* DRIFTWOOD_CUDA_PDL=0 */
  bool no_stream;                /* DRIFTWOOD_CUDA_STREAM=0: the older decode kernels (A/B runs) */
  bool no_pinned_rows;           /* DRIFTWOOD_CUDA_LOGITS_PINNED=0: a pageable copy a sequence (A/B runs) */
  void **free_blocks;            /* KV blocks kept for reuse */
  size_t free_block_bytes;
  int n_free, cap_free;
  _Atomic int64_t kv_bytes;      /* KV blocks handed out */
  kv_ring ring;
  const dw_settings *settings; /* borrowed (the runtime outlives its engine): where messages go */
} cuda_engine;

static dw_status cu_fail(cudaError_t e, const char *what) {
  cudaGetLastError();
  return dw_error_set(DW_ERR_BACKEND, "cuda engine: %s: %s", what, cudaGetErrorString(e));
}

#define CU(call, what)                                                                                       \
  do {                                                                                                       \
    cudaError_t e_ = (call);                                                                                 \
    if (e_ != cudaSuccess) return cu_fail(e_, what);                                                         \
  } while (0)

static void ring_free(cuda_engine *c) {
  kv_ring *r = &c->ring;
  for (int i = 0; i < RING_SLOTS; i++) {
    if (r->host[i]) cudaFreeHost(r->host[i]);
    if (r->dev[i]) cudaFree(r->dev[i]);
    if (r->done[i]) cudaEventDestroy(r->done[i]);
  }
  dw_pool_destroy(r->pool);
  memset(r, 0, sizeof *r);
}

/* ---- uploads ---------------------------------------------------------------------- */

static dw_status dev_alloc(dev_model *d, size_t bytes, void **out, uint64_t *count) {
  *out = NULL;
  if (d->n_allocs == d->cap_allocs) {
    int cap = d->cap_allocs ? 2 * d->cap_allocs : 64;
    void **a = dw_realloc(d->allocs, (size_t)cap * sizeof *a);
    if (!a) return dw_error_set(DW_ERR_NOMEM, "cuda engine");
    d->allocs = a, d->cap_allocs = cap;
  }
  cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
  if (e != cudaSuccess) return cu_fail(e, "cudaMalloc of model memory");
  d->allocs[d->n_allocs++] = *out;
  *count += bytes;
  return DW_OK;
}

static dw_status upload(dev_model *d, const void *src, size_t bytes, void **out) {
  dw_status st = dev_alloc(d, bytes, out, &d->weight_bytes);
  if (st) return st;
  CU(cudaMemcpy(*out, src, bytes, cudaMemcpyHostToDevice), "weight upload");
  return DW_OK;
}

static dw_status upload_vec(dev_model *d, const float *v, int64_t n, float **out) {
  *out = NULL;
  return v ? upload(d, v, (size_t)n * sizeof(float), (void **)out) : DW_OK;
}

/* A GGUF matrix in the device format of kernels.h. */
static dw_status upload_wt(dev_model *d, const dw_wt *w, dw_kwt *out) {
  int64_t n_in = w->n_in, n_out = w->n_out, nb = n_in / 32;
  *out = (dw_kwt){.n_in = (int)n_in, .n_out = (int)n_out};
  size_t n = (size_t)n_in * n_out;
  switch (w->type) {
  case GGML_F32: out->type = DW_KT_F32; return upload(d, w->data, n * 4, (void **)&out->q);
  case GGML_F16: out->type = DW_KT_F16; return upload(d, w->data, n * 2, (void **)&out->q);
  case GGML_BF16: out->type = DW_KT_BF16; return upload(d, w->data, n * 2, (void **)&out->q);
  case GGML_Q8_0:
  case GGML_Q4_0: {
    bool q8 = w->type == GGML_Q8_0;
    out->type = q8 ? DW_KT_Q8_0 : DW_KT_Q4_0;
    size_t qbytes = q8 ? n : n / 2, block = q8 ? 34 : 18;
    uint8_t *qs = dw_malloc(qbytes);
    uint16_t *sc = dw_malloc((size_t)n_out * nb * sizeof *sc);
    dw_status st = qs && sc ? DW_OK : dw_error_set(DW_ERR_NOMEM, "cuda engine: repacking a matrix");
    for (int64_t r = 0; !st && r < n_out; r++)
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w->data + (size_t)r * w->row_bytes + (size_t)b * block;
        memcpy(&sc[r * nb + b], blk, 2);
        if (q8) {
          memcpy(qs + (size_t)r * n_in + b * 32, blk + 2, 32);
          continue;
        }
        uint8_t *o = qs + ((size_t)r * n_in + b * 32) / 2; /* elements 2i, 2i+1 in byte i */
        for (int i = 0; i < 16; i++) {
          int e0 = 2 * i, e1 = 2 * i + 1;
          int v0 = e0 < 16 ? blk[2 + e0] & 15 : blk[2 + e0 - 16] >> 4;
          int v1 = e1 < 16 ? blk[2 + e1] & 15 : blk[2 + e1 - 16] >> 4;
          o[i] = (uint8_t)(v0 | v1 << 4);
        }
      }
    if (!st) st = upload(d, qs, qbytes, (void **)&out->q);
    if (!st) st = upload(d, sc, (size_t)n_out * nb * sizeof *sc, (void **)&out->scales);
    dw_free(qs), dw_free(sc);
    return st;
  }
  default: {
    /* The other block formats (K-quants, Q5_0, IQ4_*): decoded once here
     * and kept as F16 in HBM (relative rounding 2^-11, far below the
     * formats' own step) until the kernels read them natively. */
    if (!dw_quant_supported(w->type))
      return dw_error_set(DW_ERR_UNSUPPORTED, "cuda engine: weight type %s", dw_ggml_type_name(w->type));
    out->type = DW_KT_F16;
    float *row = dw_malloc((size_t)n_in * sizeof *row);
    uint16_t *h = dw_malloc(n * sizeof *h);
    dw_status st = row && h ? DW_OK : dw_error_set(DW_ERR_NOMEM, "cuda engine: decoding a matrix");
    for (int64_t r = 0; !st && r < n_out; r++) {
      dw_dequant_row(w->type, w->data + (size_t)r * w->row_bytes, row, n_in);
      for (int64_t i = 0; i < n_in; i++) h[r * n_in + i] = dw_f32_to_f16(row[i]);
    }
    if (!st) st = upload(d, h, n * 2, (void **)&out->q);
    dw_free(row), dw_free(h);
    return st;
  }
  }
}

/* Graphs hold buffer addresses: they go whenever a buffer moves. */
static void drop_graphs(dev_model *d) {
  for (int i = 0; i <= DW_GEMV_MAX_NT; i++)
    if (d->graph[i]) cudaGraphExecDestroy(d->graph[i]), d->graph[i] = NULL;
}

static void dev_model_free(dev_model *d) {
  if (!d) return;
  drop_graphs(d);
  for (int i = 0; i < d->n_allocs; i++) cudaFree(d->allocs[i]);
  cudaFreeHost(d->h_in);
  cudaFreeHost(d->h_logits);
  dw_free(d->allocs);
  dw_free(d->layers);
  dw_free(d);
}

/* Replaces the device buffer *p of old_bytes by a new one of new_bytes
 * (contents not kept). */
static dw_status dev_replace(dev_model *d, void **p, size_t old_bytes, size_t new_bytes) {
  for (int i = 0; i < d->n_allocs; i++)
    if (d->allocs[i] == *p) d->allocs[i] = d->allocs[--d->n_allocs];
  cudaFree(*p);
  *p = NULL;
  d->buffer_bytes -= old_bytes;
  return dev_alloc(d, new_bytes, p, &d->buffer_bytes);
}

enum { IN_INTS = 6 };
static size_t rope_off(void) { return (size_t)IN_INTS * MAX_STEP * sizeof(int); }
/* two RoPE tables: the model's (or phi3's long one) and gemma3's local one */
static size_t rope_bytes(const dev_model *d) { return (size_t)MAX_STEP * d->m->hp.n_rot * sizeof(float); }
static size_t tab_off(const dev_model *d) { return rope_off() + 2 * rope_bytes(d); }
static size_t in_bytes(const dev_model *d, int tables_cap) { return tab_off(d) + (size_t)tables_cap * sizeof(void *); }

/* Step inputs for at least n_tables block pointers (graphs use the old
 * addresses, so they go when the buffers move). */
static dw_status ensure_inputs(dev_model *d, int n_tables) {
  if (n_tables <= d->tables_cap) return DW_OK;
  int cap = d->tables_cap ? d->tables_cap : 1024;
  while (cap < n_tables) cap *= 2;
  drop_graphs(d);
  cudaFreeHost(d->h_in);
  d->h_in = NULL;
  CU(cudaMallocHost((void **)&d->h_in, in_bytes(d, cap)), "pinned step inputs");
  size_t old = d->tables_cap ? in_bytes(d, d->tables_cap) : 0;
  dw_status st = dev_replace(d, (void **)&d->d_in, old, in_bytes(d, cap));
  d->tables_cap = st ? 0 : cap;
  return st;
}

static dw_status alloc_buffers(dev_model *d) {
  const dw_hparams *hp = &d->m->hp;
  size_t T = MAX_STEP, qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
  size_t max_in = (size_t)hp->n_ff > qd ? (size_t)hp->n_ff : qd;
  if ((size_t)hp->dim > max_in) max_in = hp->dim;
  dw_status st;
  struct { float **p; size_t n; } bufs[] = {{&d->x, T * hp->dim}, {&d->xn, T * hp->dim}, {&d->q, T * qd},
                                             {&d->k, T * kvd}, {&d->v, T * kvd}, {&d->att, T * qd},
                                             {&d->h, T * hp->n_ff}, {&d->u, T * hp->n_ff}};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
    if ((st = dev_alloc(d, bufs[i].n * sizeof(float), (void **)bufs[i].p, &d->buffer_bytes))) return st;
  if ((st = dev_alloc(d, T * max_in * 2, &d->x16, &d->buffer_bytes))) return st;
  /* the largest quantised matrix, dequantised for prefill GEMMs */
  size_t deq = 0;
  const dw_kwt *all[] = {&d->output, &d->tok_embd};
  for (int i = 0; i < 2; i++)
    if (all[i]->type == DW_KT_Q8_0 || all[i]->type == DW_KT_Q4_0) deq = (size_t)all[i]->n_in * all[i]->n_out;
  for (int l = 0; l < hp->n_layer; l++) {
    const dw_kwt *w[] = {&d->layers[l].wq, &d->layers[l].wk, &d->layers[l].wv, &d->layers[l].wo,
                         &d->layers[l].gate, &d->layers[l].up, &d->layers[l].down};
    for (int i = 0; i < 7; i++)
      if ((w[i]->type == DW_KT_Q8_0 || w[i]->type == DW_KT_Q4_0) && (size_t)w[i]->n_in * w[i]->n_out > deq)
        deq = (size_t)w[i]->n_in * w[i]->n_out;
  }
  if (deq && (st = dev_alloc(d, deq * 2, &d->wdeq, &d->buffer_bytes))) return st;
  size_t cnt = (size_t)MAX_STEP * hp->n_head_kv * sizeof(int);
  if ((st = dev_alloc(d, cnt, (void **)&d->att_count, &d->buffer_bytes))) return st;
  CU(cudaMemset(d->att_count, 0, cnt), "attention counters");
  d->logits_cap = DW_GEMV_MAX_NT;
  if ((st = dev_alloc(d, (size_t)d->logits_cap * hp->n_vocab * sizeof(float), (void **)&d->logits,
                      &d->buffer_bytes)))
    return st;
  return ensure_inputs(d, 1024);
}

static dw_status weights_load(void *ctx, dw_model *m, void **out, uint64_t *device_bytes) {
  cuda_engine *c = ctx;
  const dw_hparams *hp = &m->hp;
  if (hp->head_dim % 4 || hp->head_dim > 256 || hp->dim % 32 || hp->n_ff % 32 || (hp->n_head * hp->head_dim) % 32)
    return dw_error_set(DW_ERR_UNSUPPORTED, "cuda engine: head dim %d (needs a multiple of 4, at most 256) or a "
                        "width not a multiple of 32", hp->head_dim);
  dev_model *d = dw_calloc(1, sizeof *d);
  if (!d || !(d->layers = dw_calloc((size_t)hp->n_layer, sizeof *d->layers))) {
    dw_free(d);
    return dw_error_set(DW_ERR_NOMEM, "cuda engine");
  }
  d->m = m;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
  dw_status st = upload_wt(d, &m->tok_embd, &d->tok_embd);
  if (!st) {
    if (m->output.data == m->tok_embd.data && m->output.type == m->tok_embd.type) d->output = d->tok_embd;
    else st = upload_wt(d, &m->output, &d->output);
  }
  if (!st) st = upload_vec(d, m->output_norm, hp->dim, &d->output_norm);
  for (int l = 0; !st && l < hp->n_layer; l++) {
    const dw_layer *L = &m->layers[l];
    dev_layer *D = &d->layers[l];
    if ((st = upload_vec(d, L->attn_norm, hp->dim, &D->attn_norm)) ||
        (st = upload_vec(d, L->ffn_norm, hp->dim, &D->ffn_norm)) || (st = upload_vec(d, L->bq, qd, &D->bq)) ||
        (st = upload_vec(d, L->bk, kvd, &D->bk)) || (st = upload_vec(d, L->bv, kvd, &D->bv)) ||
        (st = upload_vec(d, L->bo, hp->dim, &D->bo)) || (st = upload_vec(d, L->q_norm, hp->head_dim, &D->q_norm)) ||
        (st = upload_vec(d, L->k_norm, hp->head_dim, &D->k_norm)) ||
        (st = upload_vec(d, L->post_attn_norm, hp->dim, &D->post_attn_norm)) ||
        (st = upload_vec(d, L->post_ffn_norm, hp->dim, &D->post_ffn_norm)) || (st = upload_wt(d, &L->wq, &D->wq)) ||
        (st = upload_wt(d, &L->wk, &D->wk)) || (st = upload_wt(d, &L->wv, &D->wv)) ||
        (st = upload_wt(d, &L->wo, &D->wo)) || (st = upload_wt(d, &L->gate, &D->gate)) ||
        (st = upload_wt(d, &L->up, &D->up)) || (st = upload_wt(d, &L->down, &D->down)))
      break;
    if (D->wq.type != D->wk.type || D->wq.type != D->wv.type || D->gate.type != D->up.type)
      st = dw_error_set(DW_ERR_UNSUPPORTED, "cuda engine: layer %d mixes weight types within Q/K/V or gate/up", l);
  }
  if (!st) st = alloc_buffers(d);
  pthread_mutex_unlock(&c->lock);
  if (st) {
    dev_model_free(d);
    return st;
  }
  *out = d;
  *device_bytes = d->weight_bytes + d->buffer_bytes;
  return DW_OK;
}

static void weights_free(void *ctx, void *w) {
  cuda_engine *c = ctx;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  cudaStreamSynchronize(c->stream);
  dev_model_free(w);
  pthread_mutex_unlock(&c->lock);
}

/* ---- KV blocks --------------------------------------------------------------------- */

static dw_status kv_alloc(void *ctx, size_t bytes, void **out) {
  cuda_engine *c = ctx;
  dw_status st = DW_OK;
  pthread_mutex_lock(&c->lock);
  if (c->n_free && c->free_block_bytes == bytes) {
    *out = c->free_blocks[--c->n_free];
  } else {
    cudaSetDevice(c->device);
    cudaError_t e = cudaMalloc(out, bytes);
    if (e != cudaSuccess) st = cu_fail(e, "KV block");
  }
  if (!st) atomic_fetch_add(&c->kv_bytes, (int64_t)bytes);
  pthread_mutex_unlock(&c->lock);
  return st;
}

static void kv_free(void *ctx, void *blk, size_t bytes) {
  cuda_engine *c = ctx;
  if (!blk) return;
  pthread_mutex_lock(&c->lock);
  atomic_fetch_sub(&c->kv_bytes, (int64_t)bytes);
  /* blocks of one size are kept (work on the stream is ordered, so a block
   * still in use by a queued copy is only reused after it) */
  if (c->free_block_bytes != bytes) {
    for (int i = 0; i < c->n_free; i++) cudaFree(c->free_blocks[i]);
    c->n_free = 0;
    c->free_block_bytes = bytes;
  }
  if (c->n_free == c->cap_free) {
    int cap = c->cap_free ? 2 * c->cap_free : 256;
    void **f = dw_realloc(c->free_blocks, (size_t)cap * sizeof *f);
    if (f) c->free_blocks = f, c->cap_free = cap;
  }
  if (c->n_free < c->cap_free) c->free_blocks[c->n_free++] = blk;
  else cudaFree(blk);
  pthread_mutex_unlock(&c->lock);
}

static dw_status kv_copy(void *ctx, void *dst, const void *src, size_t bytes) {
  cuda_engine *c = ctx;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream);
  pthread_mutex_unlock(&c->lock);
  return e == cudaSuccess ? DW_OK : cu_fail(e, "KV block copy");
}

/* ---- KV export and import through a pinned ring ------------------------------------ */

/* A snapshot's KV moves in chunks of whole rows through pinned host slots
 * and as many device ones. Each of the copy pool's threads takes the next
 * chunk, copies it between the caller's array and one of its two slots,
 * and queues the DMA and the row kernel for it, so host copies, DMAs and
 * kernels of different chunks overlap and a thread the OS runs late delays
 * only its own chunk. Allocated on first use, kept until the engine goes. */
static dw_status ring_ready(cuda_engine *c, size_t row_bytes) {
  kv_ring *r = &c->ring;
  size_t want = row_bytes > RING_SLOT_BYTES ? row_bytes : RING_SLOT_BYTES;
  if (r->pool && r->slot_bytes >= want) return DW_OK;
  ring_free(c);
  /* half the CPUs at most: a thaw checks the snapshot's checksums on the
   * others meanwhile */
  long half = sysconf(_SC_NPROCESSORS_ONLN) / 2;
  dw_status st = dw_pool_create(half < 1 ? 1 : half < COPY_THREADS ? (int)half : COPY_THREADS, &r->pool);
  cudaError_t e = cudaSuccess;
  for (int i = 0; !st && e == cudaSuccess && i < 2 * dw_pool_size(r->pool); i++) {
    e = cudaHostAlloc((void **)&r->host[i], want, cudaHostAllocDefault);
    if (e == cudaSuccess) e = cudaMalloc(&r->dev[i], want);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&r->done[i], cudaEventDisableTiming);
  }
  if (!st && e != cudaSuccess) st = cu_fail(e, "KV transfer buffers");
  if (st) {
    ring_free(c);
    return st;
  }
  r->slot_bytes = want;
  return DW_OK;
}

/* One transfer: rows [0, 2·half) of the canonical layout, K rows from
 * host[0], V rows from host[1], `per` rows a chunk. */
typedef struct kv_job {
  cuda_engine *c;
  float *const *dtab;
  uint8_t *host[2];
  long long half, per, per_half, n_chunks;
  int n, kvd;
  size_t row;
  bool import;
  _Atomic long long next;  /* the next chunk to take */
  _Atomic int err;         /* the first cudaError_t, or 0 */
} kv_job;

static void kv_worker(void *arg, int w, int nw) {
  (void)nw;
  kv_job *j = arg;
  kv_ring *r = &j->c->ring;
  cudaStream_t stream = j->c->stream;
  cudaError_t e = cudaSetDevice(j->c->device);
  for (int turn = 0; e == cudaSuccess && !atomic_load(&j->err); turn++) {
    long long i = atomic_fetch_add(&j->next, 1);
    if (i >= j->n_chunks) break;
    int s = 2 * w + (turn & 1);
    long long r0 = (i % j->per_half) * j->per, nr = j->half - r0 < j->per ? j->half - r0 : j->per;
    uint8_t *at = j->host[i / j->per_half] + (size_t)r0 * j->row; /* rows of K (i < per_half) or V */
    long long first = (i / j->per_half) * j->half + r0;
    size_t bytes = (size_t)nr * j->row;
    e = cudaEventSynchronize(r->done[s]); /* the slot's previous chunk is done with it */
    if (e != cudaSuccess) break;
    if (j->import) {
      memcpy(r->host[s], at, bytes);
      e = cudaMemcpyAsync(r->dev[s], r->host[s], bytes, cudaMemcpyHostToDevice, stream);
      if (e == cudaSuccess) dw_k_kv_rows(j->dtab, r->dev[s], first, (int)nr, j->n, j->kvd, true, stream);
      if (e == cudaSuccess) e = cudaEventRecord(r->done[s], stream);
    } else {
      dw_k_kv_rows(j->dtab, r->dev[s], first, (int)nr, j->n, j->kvd, false, stream);
      e = cudaMemcpyAsync(r->host[s], r->dev[s], bytes, cudaMemcpyDeviceToHost, stream);
      if (e == cudaSuccess) e = cudaEventRecord(r->done[s], stream);
      if (e == cudaSuccess) e = cudaEventSynchronize(r->done[s]);
      if (e == cudaSuccess) memcpy(at, r->host[s], bytes);
    }
  }
  int none = 0;
  if (e != cudaSuccess) atomic_compare_exchange_strong(&j->err, &none, (int)e);
}

/* Moves n positions of every layer between the blocks (device table dtab)
 * and host K and V arrays [n_layer][n][kvd] f32: host[0] K, host[1] V. */
static dw_status kv_through_ring(cuda_engine *c, float *const *dtab, const dw_hparams *hp, int n, void *const host[2],
                                 bool import) {
  int kvd = hp->n_head_kv * hp->head_dim;
  size_t row = (size_t)kvd * sizeof(float);
  dw_status st = ring_ready(c, row);
  if (st) return st;
  kv_job j = {.c = c, .dtab = dtab, .host = {host[0], host[1]}, .half = (long long)hp->n_layer * n,
              .per = (long long)(c->ring.slot_bytes / row), .n = n, .kvd = kvd, .row = row, .import = import};
  j.per_half = (j.half + j.per - 1) / j.per;
  j.n_chunks = 2 * j.per_half;
  atomic_init(&j.next, 0);
  atomic_init(&j.err, 0);
  dw_pool_run(c->ring.pool, kv_worker, &j);
  cudaError_t e = (cudaError_t)atomic_load(&j.err);
  cudaError_t e2 = cudaStreamSynchronize(c->stream); /* nothing may still use a slot */
  if (e == cudaSuccess) e = e2;
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? DW_OK : cu_fail(e, import ? "KV import" : "KV export");
}

/* The block table in device memory, for one export or import. */
static dw_status kv_table(cuda_engine *c, int n, void *const *blocks, void ***dtab) {
  int nb = (n + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  *dtab = NULL;
  CU(cudaMalloc((void **)dtab, (size_t)nb * sizeof(void *)), "KV block table");
  cudaError_t e = cudaMemcpyAsync(*dtab, blocks, (size_t)nb * sizeof(void *), cudaMemcpyHostToDevice, c->stream);
  if (e != cudaSuccess) {
    cudaFree(*dtab);
    return cu_fail(e, "KV block table");
  }
  return DW_OK;
}

static dw_status kv_export(void *ctx, const dw_model *m, void *const *blocks, int n, void *k, void *v) {
  cuda_engine *c = ctx;
  void **dtab;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  dw_status st = kv_table(c, n, blocks, &dtab);
  if (!st) {
    void *host[2] = {k, v};
    st = kv_through_ring(c, (float *const *)dtab, &m->hp, n, host, false);
    cudaFree(dtab);
  }
  pthread_mutex_unlock(&c->lock);
  return st;
}

static dw_status kv_import(void *ctx, const dw_model *m, void **blocks, int n, const void *k, const void *v) {
  cuda_engine *c = ctx;
  int nb = (n + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  size_t bytes = dw_kv_block_bytes(m);
  dw_status st = DW_OK;
  for (int b = 0; !st && b < nb; b++) st = kv_alloc(ctx, bytes, &blocks[b]);
  void **dtab = NULL;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  if (!st) st = kv_table(c, n, blocks, &dtab);
  if (!st) {
    void *host[2] = {(void *)k, (void *)v}; /* read only: import copies out of them */
    st = kv_through_ring(c, (float *const *)dtab, &m->hp, n, host, true);
    cudaFree(dtab);
  }
  pthread_mutex_unlock(&c->lock);
  if (st)
    for (int b = 0; b < nb; b++) {
      kv_free(ctx, blocks[b], bytes);
      blocks[b] = NULL;
    }
  return st;
}

/* ---- forward steps -------------------------------------------------------------------- */

typedef struct step {
  cuda_engine *c;
  dev_model *d;
  const dw_hparams *hp;
  int nt;
  int n_split, kps;              /* attention: key ranges of kps (stream: n_split is the split capacity) */
  bool stream;                   /* decode-sized step on the stream.cu kernels */
  bool dec_att;                  /* every sequence decodes one token: the split decode attention */
  int *tokens, *out_rows, *tiles; /* device, in d_in */
  int n_tiles;
  dw_kv_args kv;
} step;

/* y = W·rmsnorm(x) (norm non-NULL) or W·x for the items of one projection
 * (see DW_GEMV_*): our GEMV for decode-sized steps, the norm fused in;
 * cuBLAS (f16/bf16 inputs, f32 accumulation and output) for larger ones. */
static dw_status project(step *S, const float *x, const float *norm, int nt, int mode, const dw_gemv_item *it,
                         int n_items) {
  cudaStream_t st = S->c->stream;
  if (S->stream && nt <= DW_SV_MAX_NT) {
    dw_k_sv(x, norm, S->hp->eps, nt, mode, it, n_items, NULL, 0, st);
    return DW_OK;
  }
  if (nt <= DW_GEMV_MAX_NT) {
    dw_k_gemv(x, norm, S->hp->eps, nt, mode, it, n_items, st);
    return DW_OK;
  }
  if (norm) {
    dw_k_rmsnorm(x, NULL, norm, S->d->xn, nt, it[0].w->n_in, S->hp->eps, st);
    x = S->d->xn;
  }
  const dw_kwt *w0 = it[0].w;
  int n_in = w0->n_in;
  bool bf16 = w0->type == DW_KT_BF16;
  if (w0->type != DW_KT_F32) dw_k_to_half(x, S->d->x16, (long long)nt * n_in, bf16, st);
  const float one = 1.f, zero = 0.f;
  for (int i = 0; i < n_items; i++)
    for (int part = 0; part < (mode == DW_GEMV_GLU ? 2 : 1); part++) {
      const dw_kwt *w = part ? it[i].w2 : it[i].w;
      float *y = part ? S->d->u : it[i].y;
      const float *beta = mode == DW_GEMV_ADD ? &one : &zero;
      cublasStatus_t bs;
      if (w->type == DW_KT_F32) {
        bs = cublasSgemm(S->c->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->n_out, nt, n_in, &one, w->q, n_in, x, n_in, beta, y,
                         w->n_out);
      } else {
        const void *wq = w->q;
        if (w->type == DW_KT_Q8_0 || w->type == DW_KT_Q4_0) {
          dw_k_dequant_f16(w, S->d->wdeq, st);
          wq = S->d->wdeq;
        }
        cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
        bs = cublasGemmEx(S->c->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->n_out, nt, n_in, &one, wq, t, n_in, S->d->x16, t,
                          n_in, beta, y, CUDA_R_32F, w->n_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      }
      if (bs != CUBLAS_STATUS_SUCCESS)
        return dw_error_set(DW_ERR_BACKEND, "cuda engine: cuBLAS GEMM %dx%dx%d failed (status %d)", w->n_out, nt,
                            n_in, (int)bs);
      if (!part && it[i].bias) dw_k_add_bias(y, it[i].bias, nt, w->n_out, st);
    }
  if (mode == DW_GEMV_GLU) dw_k_silu_mul(it[0].y, it[0].y, S->d->u, (long long)nt * it[0].w->n_out, st);
  return DW_OK;
}

/* Embeddings and every layer: everything but the output head. */
static dw_status body(step *S) {
  dev_model *d = S->d;
  const dw_hparams *hp = S->hp;
  cudaStream_t st = S->c->stream;
  int nt = S->nt;
  dw_status rc;
  dw_k_embed(&d->tok_embd, S->tokens, d->x, nt, st);
  if (hp->embd_scale != 1.f) dw_k_scale_cap(d->x, (long long)nt * hp->dim, hp->embd_scale, 0.f, st);
  for (int l = 0; l < hp->n_layer; l++) {
    const dev_layer *D = &d->layers[l];
    const dw_layer *L = &d->m->layers[l];
    dw_kv_args kv = S->kv; /* this layer's window and RoPE table */
    kv.window = L->swa;
    if (L->local_rope && d->m->inv_freq_local) kv.rope += rope_bytes(d) / sizeof(float);
    dw_gemv_item qkv[3] = {{&D->wq, NULL, D->bq, d->q}, {&D->wk, NULL, D->bk, d->k}, {&D->wv, NULL, D->bv, d->v}};
    if (S->stream && nt <= DW_SV_MAX_NT && !D->q_norm) { /* RoPE and the KV store in the GEMV's epilogue */
      dw_k_sv(d->x, D->attn_norm, hp->eps, nt, DW_GEMV_STORE, qkv, 3, &kv, l, st);
    } else {
      if ((rc = project(S, d->x, D->attn_norm, nt, DW_GEMV_STORE, qkv, 3))) return rc;
      if (D->q_norm) { /* each head of Q and K normed on its own */
        dw_k_rmsnorm(d->q, NULL, D->q_norm, d->q, nt * hp->n_head, hp->head_dim, hp->eps, st);
        dw_k_rmsnorm(d->k, NULL, D->k_norm, d->k, nt * hp->n_head_kv, hp->head_dim, hp->eps, st);
      }
      dw_k_rope_store(&kv, l, d->q, d->k, d->v, nt, st);
    }
    if (S->dec_att) dw_k_attention_decode(&kv, l, d->q, d->att, nt, S->n_split, d->att_part, d->att_count, st);
    else if (nt > DW_GEMV_MAX_NT) dw_k_attention_tiles(&kv, l, d->q, d->att, S->tiles, S->n_tiles, st);
    else dw_k_attention(&kv, l, d->q, d->att, nt, S->n_split, S->kps, d->att_part, st);
    /* with a post-norm, the block's output goes through xn, normed, then into the residual */
    dw_gemv_item o = {&D->wo, NULL, D->bo, D->post_attn_norm ? d->xn : d->x};
    if ((rc = project(S, d->att, NULL, nt, D->post_attn_norm ? DW_GEMV_STORE : DW_GEMV_ADD, &o, 1))) return rc;
    if (D->post_attn_norm) dw_k_add_normed(d->x, d->xn, D->post_attn_norm, nt, hp->dim, hp->eps, st);
    if (hp->gelu) { /* gate and up stored, then GELU; the fused GLU kernels are SiLU's */
      dw_gemv_item gu[2] = {{&D->gate, NULL, NULL, d->h}, {&D->up, NULL, NULL, d->u}};
      if ((rc = project(S, d->x, D->ffn_norm, nt, DW_GEMV_STORE, gu, 2))) return rc;
      dw_k_gelu_mul(d->h, d->h, d->u, (long long)nt * hp->n_ff, st);
    } else {
      dw_gemv_item glu = {&D->gate, &D->up, NULL, d->h};
      if ((rc = project(S, d->x, D->ffn_norm, nt, DW_GEMV_GLU, &glu, 1))) return rc;
    }
    dw_gemv_item down = {&D->down, NULL, NULL, D->post_ffn_norm ? d->xn : d->x};
    if ((rc = project(S, d->h, NULL, nt, D->post_ffn_norm ? DW_GEMV_STORE : DW_GEMV_ADD, &down, 1))) return rc;
    if (D->post_ffn_norm) dw_k_add_normed(d->x, d->xn, D->post_ffn_norm, nt, hp->dim, hp->eps, st);
  }
  return DW_OK;
}

/* The body from the graph for this token count, captured on first use. */
static dw_status run_body(step *S) {
  cuda_engine *c = S->c;
  dev_model *d = S->d;
  if (S->nt > DW_GEMV_MAX_NT || c->no_graphs) return body(S);
  if (d->graph[S->nt] && d->graph_split[S->nt] != S->n_split) {
    cudaGraphExecDestroy(d->graph[S->nt]);
    d->graph[S->nt] = NULL;
  }
  if (!d->graph[S->nt]) {
    d->graph_split[S->nt] = S->n_split;
    cudaGraph_t g;
    CU(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal), "graph capture");
    dw_status st = body(S);
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (st) {
      if (e == cudaSuccess) cudaGraphDestroy(g);
      return st;
    }
    if (e == cudaSuccess) {
      e = cudaGraphInstantiate(&d->graph[S->nt], g, 0);
      cudaGraphDestroy(g);
    }
    if (e != cudaSuccess) { /* no graphs on this driver: launch the kernels one by one from now on */
      cudaGetLastError();
      d->graph[S->nt] = NULL;
      c->no_graphs = true;
      dw_log(c->settings, DW_LOG_WARN, "driftwood: cuda engine: CUDA graphs unavailable (%s); decoding without them",
             cudaGetErrorString(e));
      return body(S);
    }
  }
  CU(cudaGraphLaunch(d->graph[S->nt], c->stream), "graph launch");
  return DW_OK;
}

/* D2H of n bytes into dst. Guest memory is registered range by range as it
 * grows, and one copy may not cross from one registration into the next:
 * then the copy goes in pieces split at 64 KiB (Wasm page) boundaries,
 * which registrations never straddle. */
static cudaError_t copy_out(void *dst, const void *src, size_t n, cudaStream_t st) {
  cudaError_t e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, st);
  if (e != cudaErrorInvalidValue) return e;
  cudaGetLastError();
  for (size_t off = 0; off < n;) {
    size_t end = (((uintptr_t)dst + off) | 0xFFFF) + 1 - (uintptr_t)dst; /* the next page boundary */
    if (end > n) end = n;
    e = cudaMemcpyAsync((uint8_t *)dst + off, (const uint8_t *)src + off, end - off, cudaMemcpyDeviceToHost, st);
    if (e != cudaSuccess) return e;
    off = end;
  }
  return cudaSuccess;
}

/* Whether the device can write p itself (registered or managed memory). */
static bool device_writable(const void *p) {
  struct cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return (a.type == cudaMemoryTypeHost && a.devicePointer == p) || a.type == cudaMemoryTypeManaged;
}

static dw_status grow_logits(dev_model *d, int rows) {
  if (rows <= d->logits_cap) return DW_OK;
  size_t row = (size_t)d->m->hp.n_vocab * sizeof(float);
  dw_status st = dev_replace(d, (void **)&d->logits, d->logits_cap * row, rows * row);
  d->logits_cap = st ? 0 : rows;
  return st;
}

/* Pinned room for `rows` rows of logits. */
static dw_status grow_pinned_rows(dev_model *d, int rows) {
  if (rows <= d->h_logits_cap) return DW_OK;
  cudaFreeHost(d->h_logits);
  d->h_logits = NULL, d->h_logits_cap = 0;
  CU(cudaMallocHost((void **)&d->h_logits, (size_t)rows * d->m->hp.n_vocab * sizeof(float)), "pinned logits");
  d->h_logits_cap = rows;
  return DW_OK;
}

/* Host memory the device may DMA into directly (pinned or registered). */
static bool host_registered(const void *p) {
  struct cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeHost;
}

/* Room for n floats of attention partials (graphs keep the old address,
 * so they go when it moves). */
static dw_status grow_att_part(dev_model *d, size_t n) {
  if (n <= d->att_part_cap) return DW_OK;
  size_t cap = d->att_part_cap ? d->att_part_cap : 1 << 16;
  while (cap < n) cap *= 2;
  drop_graphs(d);
  dw_status st = dev_replace(d, (void **)&d->att_part, d->att_part_cap * sizeof(float), cap * sizeof(float));
  d->att_part_cap = st ? 0 : cap;
  return st;
}

/* Sums each sequence's final-normed hidden states into its embd_sum. */
static dw_status embed_sums(step *S, dw_step_seq *seqs, int n_seqs) {
  const dw_hparams *hp = S->hp;
  size_t n = (size_t)S->nt * hp->dim;
  float *hx = dw_malloc(n * sizeof *hx);
  if (!hx) return dw_error_set(DW_ERR_NOMEM, "cuda engine: embeddings");
  dw_k_rmsnorm(S->d->x, NULL, S->d->output_norm, S->d->xn, S->nt, hp->dim, hp->eps, S->c->stream);
  cudaError_t e = cudaMemcpyAsync(hx, S->d->xn, n * sizeof *hx, cudaMemcpyDeviceToHost, S->c->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(S->c->stream);
  for (int i = 0, t0 = 0; e == cudaSuccess && i < n_seqs; t0 += seqs[i++].n)
    for (int t = 0; seqs[i].embd_sum && t < seqs[i].n; t++)
      for (int j = 0; j < hp->dim; j++) seqs[i].embd_sum[j] += hx[(size_t)(t0 + t) * hp->dim + j];
  dw_free(hx);
  return e == cudaSuccess ? DW_OK : cu_fail(e, "embeddings");
}

static dw_status cuda_forward(void *ctx, void *weights, dw_step_seq *seqs, int n_seqs, dw_step_info *info) {
  cuda_engine *c = ctx;
  dev_model *d = weights;
  const dw_hparams *hp = &d->m->hp;
  *info = (dw_step_info){0};
  int nt = 0, n_tab = 0, n_out = 0, max_keys = 0;
  bool staged[MAX_STEP] = {false}; /* sequence i's logits come through h_logits */
  bool embd = false;
  for (int i = 0; i < n_seqs; i++) {
    nt += seqs[i].n;
    if (seqs[i].s->n_past + seqs[i].n > max_keys) max_keys = seqs[i].s->n_past + seqs[i].n;
    n_tab += (seqs[i].s->n_past + seqs[i].n + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
    n_out += seqs[i].all_logits ? seqs[i].n : seqs[i].logits != NULL;
    embd |= seqs[i].embd_sum != NULL;
  }
  if (nt < 1 || nt > MAX_STEP || n_seqs > MAX_STEP)
    return dw_error_set(DW_ERR_LIMIT, "cuda engine: a step of %d tokens (1 to %d)", nt, MAX_STEP);
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  /* attention splits for decode steps: short key ranges, for parallelism;
   * the stream kernels split by KV block, and their graphs are captured for
   * a power-of-two split capacity, so they are recaptured only as it doubles */
  bool stream = !c->no_stream && nt <= DW_GEMV_MAX_NT, single = true;
  for (int i = 0; i < n_seqs; i++) single &= seqs[i].n == 1;
  /* a step of many one-token sequences (decodes batched across sessions)
   * takes the decode attention too: a block per (KV head, token, KV block)
   * instead of a prefill tile per token */
  bool dec_att = stream || (!c->no_stream && single);
  int kps = dec_att ? DW_KV_BLOCK : 64, n_split = nt <= DW_GEMV_MAX_NT || dec_att ? (max_keys + kps - 1) / kps : 1;
  if (dec_att) {
    int cap = 8;
    while (cap < n_split) cap *= 2;
    n_split = cap;
  }
  dw_status st = ensure_inputs(d, n_tab);
  if (!st) st = grow_logits(d, n_out);
  if (!st && (n_split > 1 || dec_att)) st = grow_att_part(d, (size_t)nt * hp->n_head * n_split * (hp->head_dim + 2));
  if (st) goto out;
  /* inputs (invariant 1) */
  int half = hp->n_rot / 2, n_tiles = 0;
  int *hi = (int *)d->h_in;
  int *h_tok = hi, *h_pos = hi + MAX_STEP, *h_seq = hi + 2 * MAX_STEP, *h_rows = hi + 3 * MAX_STEP,
      *h_off = hi + 4 * MAX_STEP, *h_tiles = hi + 5 * MAX_STEP;
  float *h_rope = (float *)(d->h_in + rope_off());
  void **tab = (void **)(d->h_in + tab_off(d));
  for (int i = 0, t = 0, b0 = 0, r = 0; i < n_seqs; i++) {
    const dw_session *s = seqs[i].s;
    int nb = (s->n_past + seqs[i].n + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
    for (int b = 0; b < nb; b++) tab[b0 + b] = s->blocks[b]->data;
    h_off[i] = b0;
    b0 += nb;
    for (int j = 0; j < seqs[i].n; j += DW_ATT_TILE)
      h_tiles[n_tiles++] = (t + j) | (seqs[i].n - j < DW_ATT_TILE ? seqs[i].n - j : DW_ATT_TILE) << 16;
    for (int j = 0; j < seqs[i].n; j++, t++) {
      h_tok[t] = seqs[i].tokens[j];
      h_pos[t] = s->n_past + j;
      h_seq[t] = i;
      if (seqs[i].all_logits || (seqs[i].logits && j == seqs[i].n - 1)) h_rows[r++] = t;
      const dw_layer plain = {0};
      const float *inv = dw_model_rope(d->m, &plain, s->n_ctx), *loc = d->m->inv_freq_local;
      float *h_loc = h_rope + rope_bytes(d) / sizeof(float);
      for (int k = 0; k < half; k++) { /* as the CPU engine computes them */
        double ang = (double)h_pos[t] * (double)inv[k];
        h_rope[((size_t)t * half + k) * 2] = (float)cos(ang) * hp->rope_mscale;
        h_rope[((size_t)t * half + k) * 2 + 1] = (float)sin(ang) * hp->rope_mscale;
        if (!loc) continue;
        ang = (double)h_pos[t] * (double)loc[k];
        h_loc[((size_t)t * half + k) * 2] = (float)cos(ang);
        h_loc[((size_t)t * half + k) * 2 + 1] = (float)sin(ang);
      }
    }
  }
  uint8_t *din = d->d_in;
  int *di = (int *)din;
  cudaError_t e = cudaMemcpyAsync(din, d->h_in, rope_off(), cudaMemcpyHostToDevice, c->stream);
  if (e == cudaSuccess)
    e = cudaMemcpyAsync(din + rope_off(), d->h_in + rope_off(), (size_t)nt * half * 2 * sizeof(float),
                        cudaMemcpyHostToDevice, c->stream);
  if (e == cudaSuccess && d->m->inv_freq_local)
    e = cudaMemcpyAsync(din + rope_off() + rope_bytes(d), d->h_in + rope_off() + rope_bytes(d),
                        (size_t)nt * half * 2 * sizeof(float), cudaMemcpyHostToDevice, c->stream);
  if (e == cudaSuccess)
    e = cudaMemcpyAsync(din + tab_off(d), d->h_in + tab_off(d), (size_t)n_tab * sizeof(void *),
                        cudaMemcpyHostToDevice, c->stream);
  if (e != cudaSuccess) {
    st = cu_fail(e, "step inputs");
    goto out;
  }
  step S = {.c = c, .d = d, .hp = hp, .nt = nt, .n_split = n_split, .kps = kps, .stream = stream, .dec_att = dec_att,
            .tokens = di, .out_rows = di + 3 * MAX_STEP, .tiles = di + 5 * MAX_STEP, .n_tiles = n_tiles,
            .kv = {.tables = (float *const *)(din + tab_off(d)), .tab_off = di + 4 * MAX_STEP,
                   .seq_of = di + 2 * MAX_STEP, .pos = di + MAX_STEP, .n_layer = hp->n_layer, .n_head = hp->n_head,
                   .n_head_kv = hp->n_head_kv, .head_dim = hp->head_dim, .n_rot = hp->n_rot,
                   .neox = hp->rope_neox, .rope = (const float *)(din + rope_off()), .scale = hp->attn_scale,
                   .cap = hp->attn_softcap}};
  if ((st = run_body(&S))) goto out;
  if (embd && (st = embed_sums(&S, seqs, n_seqs))) goto out;
  if (n_out) {
    float *first = seqs[0].logits;
    bool mapped = c->mapped_logits && n_seqs == 1 && n_out == 1 && first && device_writable(first);
    dw_gemv_item head = {&d->output, NULL, NULL, mapped ? first : d->logits};
    if (stream && n_out == nt && nt <= DW_SV_MAX_NT) { /* every row, in order: the norm goes into the GEMV */
      st = project(&S, d->x, d->output_norm, n_out, DW_GEMV_STORE, &head, 1);
    } else {
      dw_k_rmsnorm(d->x, S.out_rows, d->output_norm, d->xn, n_out, hp->dim, hp->eps, c->stream);
      st = project(&S, d->xn, NULL, n_out, DW_GEMV_STORE, &head, 1);
    }
    if (st) goto out;
    if (hp->final_softcap > 0) /* gemma2 */
      dw_k_scale_cap(head.y, (long long)n_out * hp->n_vocab, 1.f, hp->final_softcap, c->stream);
    info->zero_copy = mapped;
    size_t row = (size_t)hp->n_vocab * sizeof(float);
    /* Rows bound for pageable memory, of a step of many sequences: one
     * copy of every row into pinned memory, then each row to its place
     * (a pageable copy a sequence costs tens of µs each). Registered
     * (guest) memory still gets its own DMA: no staging there. */
    bool pin = !mapped && n_seqs > 1 && !c->no_pinned_rows && !(st = grow_pinned_rows(d, n_out));
    if (st) goto out;
    if (pin) e = cudaMemcpyAsync(d->h_logits, d->logits, (size_t)n_out * row, cudaMemcpyDeviceToHost, c->stream);
    for (int i = 0, r = 0; !mapped && i < n_seqs && e == cudaSuccess; i++) {
      const dw_step_seq *q = &seqs[i];
      int rows = q->all_logits ? q->n : q->logits != NULL;
      staged[i] = pin && ((q->all_logits && !host_registered(q->all_logits)) || (q->logits && !host_registered(q->logits)));
      if (!staged[i]) {
        if (q->all_logits) e = copy_out(q->all_logits, d->logits + (size_t)r * hp->n_vocab, rows * row, c->stream);
        if (q->logits && e == cudaSuccess)
          e = copy_out(q->logits, d->logits + (size_t)(r + rows - 1) * hp->n_vocab, row, c->stream);
      }
      info->staged_bytes += (q->all_logits ? rows * row : 0) + (q->logits ? row : 0);
      r += rows;
    }
  }
  if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) st = cu_fail(e, "forward step");
  for (int i = 0, r = 0; !st && n_out && i < n_seqs; i++) { /* the staged rows to their places */
    const dw_step_seq *q = &seqs[i];
    int rows = q->all_logits ? q->n : q->logits != NULL;
    size_t row = (size_t)hp->n_vocab * sizeof(float);
    if (staged[i] && q->all_logits) memcpy(q->all_logits, d->h_logits + (size_t)r * hp->n_vocab, rows * row);
    if (staged[i] && q->logits) memcpy(q->logits, d->h_logits + (size_t)(r + rows - 1) * hp->n_vocab, row);
    r += rows;
  }
out:
  pthread_mutex_unlock(&c->lock);
  return st;
}

/* ---- the engine ---------------------------------------------------------------------- */

static void cuda_describe(void *ctx, char *buf, size_t cap) {
  cuda_engine *c = ctx;
  snprintf(buf, cap, "CUDA engine on %s (%.1f GiB): weights and KV cache in device memory, KV blocks %.1f MiB in "
           "use, logits by %s, decode graphs %s, PDL %s, %s decode kernels",
           c->name, (double)c->total_mem / (1 << 30), (double)atomic_load(&c->kv_bytes) / (1 << 20),
           c->mapped_logits ? "mapped writes" : "DMA", c->no_graphs ? "off" : "on", c->no_pdl ? "off" : "on",
           c->no_stream ? "block-GEMV" : "streaming");
}

static void cuda_destroy(void *ctx) {
  cuda_engine *c = ctx;
  cudaSetDevice(c->device);
  cudaStreamSynchronize(c->stream);
  for (int i = 0; i < c->n_free; i++) cudaFree(c->free_blocks[i]);
  dw_free(c->free_blocks);
  ring_free(c);
  cublasDestroy(c->blas);
  cudaStreamDestroy(c->stream);
  pthread_mutex_destroy(&c->lock);
  dw_free(c);
}

static const dw_engine_ops cuda_ops = {
    .version = DW_ENGINE_OPS_VERSION,
    .name = "cuda",
    .weights_load = weights_load,
    .weights_free = weights_free,
    .kv_alloc = kv_alloc,
    .kv_free = kv_free,
    .kv_copy = kv_copy,
    .kv_export = kv_export,
    .kv_import = kv_import,
    .forward = cuda_forward,
    .describe = cuda_describe,
    .destroy = cuda_destroy,
};

dw_status dw_engine_cuda_reg(const dw_settings *settings, dw_engine *out) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return dw_error_set(DW_ERR_UNSUPPORTED, "cuda engine: no CUDA device");
  }
  cuda_engine *c = dw_calloc(1, sizeof *c);
  if (!c) return dw_error_set(DW_ERR_NOMEM, "cuda engine");
  c->device = 0;
  struct cudaDeviceProp p;
  cudaError_t e = cudaSetDevice(c->device);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&p, c->device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    dw_free(c);
    return cu_fail(e, "device set-up");
  }
  if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(c->stream);
    dw_free(c);
    return dw_error_set(DW_ERR_BACKEND, "cuda engine: cublasCreate failed");
  }
  cublasSetStream(c->blas, c->stream);
  snprintf(c->name, sizeof c->name, "%s (cc %d.%d)", p.name, p.major, p.minor);
  c->total_mem = p.totalGlobalMem;
  c->settings = settings;
  const char *lg = dw_setting(settings, "DRIFTWOOD_CUDA_LOGITS"), *gr = dw_setting(settings, "DRIFTWOOD_CUDA_GRAPHS");
  c->mapped_logits = lg && !strcmp(lg, "mapped");
  c->no_graphs = gr && !strcmp(gr, "0");
  const char *pdl = dw_setting(settings, "DRIFTWOOD_CUDA_PDL");
  c->no_pdl = pdl && !strcmp(pdl, "0");
  const char *pr = dw_setting(settings, "DRIFTWOOD_CUDA_LOGITS_PINNED");
  c->no_pinned_rows = pr && !strcmp(pr, "0");
  const char *sv = dw_setting(settings, "DRIFTWOOD_CUDA_STREAM");
  c->no_stream = sv && !strcmp(sv, "0");
  dw_k_set_pdl(!c->no_pdl);
  const char *rw = dw_setting(settings, "DRIFTWOOD_CUDA_GEMV_ROWS"); /* a tuning knob for bench/cuda_llm.sh */
  if (rw && (!strcmp(rw, "1") || !strcmp(rw, "2") || !strcmp(rw, "4"))) dw_k_gemv_rows_per_warp(atoi(rw));
  pthread_mutex_init(&c->lock, NULL);
  out->ops = &cuda_ops;
  out->ctx = c;
  out->max_step_tokens = MAX_STEP;
  return DW_OK;
}
