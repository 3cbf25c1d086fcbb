/*
 * cpu_engine.c — the CPU engine (engine.h): weights read in place from the
 * file mapping, KV blocks carved from large anonymous mappings (slabs, one
 * per block size), and the batched forward pass on a dw_pool of host
 * threads.
 *
 * Forward pass per micro-batch of T tokens (spec §4): embeddings (scaled
 * for gemma); per layer RMSNorm → fused Q/K/V projection (+bias) → per-head
 * Q/K RMSNorm (qwen3, gemma3) → RoPE (NORM or NEOX, the layer's table) →
 * K/V written to the session's blocks → causal GQA attention (scaled,
 * soft-capped, windowed as the model says) → output projection added to
 * the residual (through a post-norm for gemma) → RMSNorm → fused gate/up
 * with SiLU or GELU → down projection added likewise; final RMSNorm, the
 * output projection for the positions asked for, soft-capped for gemma2.
 * Each projection is one pool job.
 * A micro-batch may hold tokens of many sequences (a step batched across
 * sessions): the projections run over all of them at once, and each
 * token attends over its own session's KV at its own position.
 *
 * Threads: steps run one at a time per pool (dw_pool_run queues them).
 */
#define _GNU_SOURCE
#include "llm/quant.h"
#include "llm/session.h"
#include "base/pool.h"

#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { UBATCH = 256, RB = 48 };

/* ---- KV blocks --------------------------------------------------------------- */

/* KV blocks of one size come from slabs: mappings of up to SLAB_BYTES (64
 * blocks at most), so a node with thousands of short sessions holds a few
 * mappings, not one per block (the kernel allows ~65k a process). A free
 * block goes on its slab's free list with its pages dropped (MADV_DONTNEED:
 * an idle session's KV costs no memory once freed); a block handed out is
 * populated in one go (faulting megabytes in page by page costs more than
 * filling them). Mappings are returned when the engine ends. */
enum { SLAB_BYTES = 32 << 20, SLAB_MAX_BLOCKS = 64 };

typedef struct kv_slab {
  size_t bytes;              /* of each block (page-rounded) */
  void **free;               /* free blocks (a stack) */
  size_t n_free, cap_free;
  void **maps;               /* the mappings, to unmap at the end */
  size_t n_maps, cap_maps, per_map;
  struct kv_slab *next;
} kv_slab;

typedef struct cpu_engine {
  dw_pool *pool;          /* owned */
  pthread_mutex_t kv_lock; /* the slabs */
  kv_slab *slabs;         /* owned list, one per block size */
  bool int_dots;          /* decode through quant.h's integer dot products */
} cpu_engine;

static bool push(void ***v, size_t *n, size_t *cap, void *p) {
  if (*n == *cap) {
    size_t c = *cap ? 2 * *cap : 64;
    void **nv = dw_realloc(*v, c * sizeof *nv);
    if (!nv) return false;
    *v = nv, *cap = c;
  }
  (*v)[(*n)++] = p;
  return true;
}

/* Fills the block's pages now (zero pages: contents are undefined anyway). */
static void populate(void *p, size_t bytes) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0) return;
#endif
  for (size_t o = 0; o < bytes; o += 4096) ((volatile char *)p)[o] = 0; /* a kernel without it */
}

/* A block from c's slab of its size, mapping a new slab when none is free;
 * NULL when memory is short. Thread-safe (restore workers call it at once). */
static void *block_alloc(cpu_engine *c, size_t bytes) {
  bytes = (bytes + 4095) & ~(size_t)4095;
  void *p = NULL;
  pthread_mutex_lock(&c->kv_lock);
  kv_slab *s = c->slabs;
  while (s && s->bytes != bytes) s = s->next;
  if (!s && (s = dw_calloc(1, sizeof *s))) {
    s->bytes = bytes;
    s->per_map = SLAB_BYTES / bytes;
    s->per_map = s->per_map < 1 ? 1 : s->per_map > SLAB_MAX_BLOCKS ? SLAB_MAX_BLOCKS : s->per_map;
    s->next = c->slabs, c->slabs = s;
  }
  if (s && !s->n_free) { /* a new mapping; the free stack gets room for every block there will be */
    size_t len = s->per_map * bytes, total = (s->n_maps + 1) * s->per_map;
    void **fv = total > s->cap_free ? dw_realloc(s->free, total * sizeof *fv) : s->free;
    if (fv) s->free = fv, s->cap_free = total > s->cap_free ? total : s->cap_free;
    uint8_t *m = fv ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                    : MAP_FAILED;
    if (m != MAP_FAILED && push(&s->maps, &s->n_maps, &s->cap_maps, m)) {
      for (size_t i = s->per_map; i-- > 0;) s->free[s->n_free++] = m + i * bytes;
    } else if (m != MAP_FAILED) {
      munmap(m, len);
    }
  }
  if (s && s->n_free) p = s->free[--s->n_free];
  pthread_mutex_unlock(&c->kv_lock);
  if (p) populate(p, bytes);
  return p;
}

static void block_free(cpu_engine *c, void *blk, size_t bytes) {
  if (!blk) return;
  bytes = (bytes + 4095) & ~(size_t)4095;
  madvise(blk, bytes, MADV_DONTNEED); /* its memory back to the system now */
  pthread_mutex_lock(&c->kv_lock);
  kv_slab *s = c->slabs;
  while (s && s->bytes != bytes) s = s->next;
  if (s && s->n_free < s->cap_free) s->free[s->n_free++] = blk; /* room for every block: block_alloc made it */
  pthread_mutex_unlock(&c->kv_lock);
}

static void slabs_free(cpu_engine *c) {
  for (kv_slab *s = c->slabs, *n; s; s = n) {
    n = s->next;
    for (size_t i = 0; i < s->n_maps; i++) munmap(s->maps[i], s->per_map * s->bytes);
    dw_free(s->maps), dw_free(s->free), dw_free(s);
  }
  c->slabs = NULL;
}

static dw_status kv_alloc(void *ctx, size_t bytes, void **out) {
  if (!(*out = block_alloc(ctx, bytes))) return dw_error_set(DW_ERR_NOMEM, "kv cache: %zu bytes", bytes);
  return DW_OK;
}

static void kv_free(void *ctx, void *blk, size_t bytes) { block_free(ctx, blk, bytes); }

static dw_status kv_copy(void *ctx, void *dst, const void *src, size_t bytes) {
  (void)ctx;
  memcpy(dst, src, bytes);
  return DW_OK;
}

/* The K (v false) or V row of a position in a block (engine.h invariant 2). */
static inline float *block_row(const dw_hparams *hp, void *block, int layer, int pos, bool v) {
  size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
  size_t off = ((size_t)layer * DW_KV_BLOCK + pos % DW_KV_BLOCK) * kvd;
  if (v) off += (size_t)hp->n_layer * DW_KV_BLOCK * kvd;
  return (float *)block + off;
}

static inline float *kv_row(const dw_session *s, int layer, int pos, bool v) {
  return block_row(&s->model->hp, s->blocks[pos / DW_KV_BLOCK]->data, layer, pos, v);
}

/* ---- kernels as pool jobs ------------------------------------------------- */

typedef enum { MM_STORE, MM_ADD, MM_GLU } mm_mode;

typedef struct mm_item {
  const dw_wt *w;
  const float *bias;
  float *y;           /* [nt][w->n_out] */
} mm_item;

typedef struct mm_job {
  const float *x;     /* [nt][n_in] */
  const float *xt;    /* x transposed, [n_in][ntp] (nt > 2 only) */
  const float *zero;  /* [n_in] zeros */
  const dw_q8x *xq;   /* x quantised for integer dots, [nt][n_in/32] (NULL: none) */
  int nt, ntp, n_items;
  mm_mode mode;       /* MM_GLU: items 0 (gate) and 1 (up), output in items[0].y */
  bool gelu;          /* MM_GLU with GELU instead of SiLU */
  mm_item it[3];
  float *const *ys;   /* MM_STORE of one item: token t's row goes to ys[t] (else y + t·n_out) */
  float *scratch;     /* per worker: RB*n_in + 2*RB*nt floats */
  size_t scratch_per_worker;
  _Atomic int64_t next; /* next chunk of RB rows to take */
} mm_job;

/* out[t*RB + i] = row (r0 + i) of w · token t, for i < nr. Up to VEC_NT
 * tokens (a decode step batched over a few sessions) take dot products on
 * the stored row, each token reading it from cache; more amortise
 * dequantising the rows once for a GEMM (measured on 2 cores, 143M f16:
 * 4 and 8 sessions decode faster this way than through the GEMM). */
enum { VEC_NT = 8 };
static void mm_rows(const mm_job *J, const dw_wt *w, int r0, int nr, float *wbuf, float *out) {
  int64_t n = w->n_in;
  if (J->nt <= VEC_NT && J->xq && dw_q8x_has(w->type)) {
    for (int i = 0; i < nr; i++)
      for (int t = 0; t < J->nt; t++)
        out[t * RB + i] = dw_vec_dot_q8x(w->type, w->data + (size_t)(r0 + i) * w->row_bytes, J->xq + t * (n / 32), n);
    return;
  }
  if (J->nt <= VEC_NT) {
    float o[VEC_NT];
    for (int i = 0; i < nr; i++) {
      dw_vec_dot_n(w->type, w->data + (size_t)(r0 + i) * w->row_bytes, J->x, n, J->nt, n, o);
      for (int t = 0; t < J->nt; t++) out[t * RB + i] = o[t];
    }
    return;
  }
  for (int i = 0; i < nr; i++) dw_dequant_row(w->type, w->data + (size_t)(r0 + i) * w->row_bytes, wbuf + i * n, n);
  dw_gemm_xt(wbuf, nr, n, J->xt, J->nt, J->ntp, J->zero, out, RB);
}

static void mm_worker(void *arg, int wi, int nw) {
  mm_job *J = arg;
  float *wbuf = J->scratch + (size_t)wi * J->scratch_per_worker;
  float *o1 = wbuf + (size_t)RB * J->it[0].w->n_in, *o2 = o1 + (size_t)RB * J->nt;
  int n_items = J->mode == MM_GLU ? 1 : J->n_items;
  int64_t start[4] = {0}, total;
  for (int i = 0; i < n_items; i++) start[i + 1] = start[i] + (J->it[i].w->n_out + RB - 1) / RB;
  total = start[n_items];
  /* Batches take chunks dynamically, so a slow worker never holds the
   * others up; one or two tokens are bandwidth-bound, and each worker
   * streams one contiguous run of rows instead (longer prefetch streams). */
  bool contiguous = J->nt <= 2;
  int64_t c_end = contiguous ? total * (wi + 1) / nw : total;
  for (int64_t c = contiguous ? total * wi / nw - 1 : 0;;) {
    c = contiguous ? c + 1 : atomic_fetch_add(&J->next, 1);
    if (c >= c_end) break;
    int i = 0;
    while (c >= start[i + 1]) i++;
    const mm_item *I = &J->it[i];
    int r0 = (int)((c - start[i]) * RB), nr = (int)(I->w->n_out - r0 < RB ? I->w->n_out - r0 : RB);
    int64_t ld = I->w->n_out;
    mm_rows(J, I->w, r0, nr, wbuf, o1);
    if (J->mode == MM_GLU) {
      mm_rows(J, J->it[1].w, r0, nr, wbuf, o2);
      for (int t = 0; t < J->nt; t++)
        (J->gelu ? dw_gelu_mul : dw_silu_mul)(I->y + t * ld + r0, o1 + t * RB, o2 + t * RB, nr);
      continue;
    }
    for (int t = 0; t < J->nt; t++) {
      float *y = (J->ys ? J->ys[t] : I->y + t * ld) + r0;
      const float *o = o1 + t * RB, *b = I->bias ? I->bias + r0 : NULL;
      if (J->mode == MM_ADD)
        for (int r = 0; r < nr; r++) y[r] += o[r] + (b ? b[r] : 0.f);
      else
        for (int r = 0; r < nr; r++) y[r] = o[r] + (b ? b[r] : 0.f);
    }
  }
}

typedef struct fwd {
  dw_pool *pool;
  dw_session *const *ts;  /* [nt]: each token's session */
  const int *tp;          /* [nt]: each token's position */
  int max_ctx;            /* the largest n_ctx among them (score rows) */
  const dw_model *m;
  int nt, layer;
  bool int_dots;          /* integer dot products for decode where a kernel exists */
  float *x, *xn, *q, *k, *v, *att, *h;
  float *scratch, *scores, *xt, *zero;
  dw_q8x *xq;             /* [nt][max_in/32]: the matmul input quantised (decode) */
  const float *cs, *sn;   /* RoPE cos/sin per token */
  const float *cs_l, *sn_l; /* the same from the local table (NULL without one) */
  size_t scratch_per_worker;
} fwd;

/* ---- per-token preparation, parallel over tokens ---------------------------- */

/* NORM: dst = rmsnorm(src)·w; TRANSPOSE: src into xt for the GEMM; ROPE:
 * Q/K norms and RoPE, K and V into the cache; ADD_NORMED: x += rmsnorm(src)·w. */
typedef enum { PREP_NORM, PREP_TRANSPOSE, PREP_ROPE, PREP_ADD_NORMED } prep_kind;

typedef struct prep_job {
  fwd *F;
  prep_kind kind;
  const float *src;   /* NORM: x; TRANSPOSE: the input [nt][n] */
  const float *w;     /* NORM: the norm weight */
  float *dst;         /* NORM: xn */
  int64_t n;
  const float *cs, *sn;
} prep_job;

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps);
static void rope(float *v, int n_heads, int hd, int n_rot, bool neox, const float *cs, const float *sn);

static void prep_worker(void *arg, int wi, int nw) {
  const prep_job *P = arg;
  fwd *F = P->F;
  const dw_hparams *hp = &F->m->hp;
  if (P->kind == PREP_TRANSPOSE) {
    /* each worker owns a range of columns */
    dw_transpose_x(P->src, F->nt, P->n, P->n * wi / nw, P->n * (wi + 1) / nw, F->xt, (F->nt + 31) / 32 * 32);
    return;
  }
  for (int t = F->nt * wi / nw; t < F->nt * (wi + 1) / nw; t++) {
    if (P->kind == PREP_NORM) {
      rmsnorm(P->dst + (size_t)t * P->n, P->src + (size_t)t * P->n, P->w, (int)P->n, hp->eps);
    } else if (P->kind == PREP_ADD_NORMED) {
      float *row = P->dst + (size_t)t * P->n, *x = F->x + (size_t)t * P->n;
      rmsnorm(row, row, P->w, (int)P->n, hp->eps);
      for (int64_t i = 0; i < P->n; i++) x[i] += row[i];
    } else {
      int hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd, half = hp->n_rot / 2;
      const dw_layer *L = &F->m->layers[F->layer];
      bool local = L->local_rope && F->cs_l;
      const float *c = (local ? F->cs_l : P->cs) + (size_t)t * half, *sn = (local ? F->sn_l : P->sn) + (size_t)t * half;
      if (L->q_norm)
        for (int h = 0; h < hp->n_head; h++) {
          float *v = F->q + (size_t)t * qd + (size_t)h * hd;
          rmsnorm(v, v, L->q_norm, hd, hp->eps);
        }
      if (L->k_norm)
        for (int h = 0; h < hp->n_head_kv; h++) {
          float *v = F->k + (size_t)t * kvd + (size_t)h * hd;
          rmsnorm(v, v, L->k_norm, hd, hp->eps);
        }
      rope(F->q + (size_t)t * qd, hp->n_head, hd, hp->n_rot, hp->rope_neox, c, sn);
      rope(F->k + (size_t)t * kvd, hp->n_head_kv, hd, hp->n_rot, hp->rope_neox, c, sn);
      memcpy(kv_row(F->ts[t], F->layer, F->tp[t], false), F->k + (size_t)t * kvd, (size_t)kvd * sizeof(float));
      memcpy(kv_row(F->ts[t], F->layer, F->tp[t], true), F->v + (size_t)t * kvd, (size_t)kvd * sizeof(float));
    }
  }
}

static void prep(fwd *F, prep_kind kind, const float *src, const float *w, float *dst, int64_t n) {
  prep_job P = {F, kind, src, w, dst, n, F->cs, F->sn};
  if (F->nt <= 2) { /* too little work to hand out; one or two tokens need no transposed copy */
    if (kind != PREP_TRANSPOSE) prep_worker(&P, 0, 1);
    return;
  }
  dw_pool_run(F->pool, prep_worker, &P);
  if (kind == PREP_ADD_NORMED) return;
  if (kind == PREP_NORM) { /* then the normed rows, transposed, for the matmul */
    P = (prep_job){F, PREP_TRANSPOSE, dst, NULL, NULL, n, F->cs, F->sn};
    dw_pool_run(F->pool, prep_worker, &P);
  }
}

/* The input must have been through prep (NORM or TRANSPOSE) when nt > 2. */
static void matmul_to(fwd *F, const float *x, int nt, mm_mode mode, int n, const mm_item *items, float *const *ys) {
  mm_job J = {.x = x, .nt = nt, .ntp = (nt + 31) / 32 * 32, .n_items = n, .mode = mode, .gelu = F->m->hp.gelu, .xt = F->xt,
              .zero = F->zero, .ys = ys, .scratch = F->scratch, .scratch_per_worker = F->scratch_per_worker};
  /* Decode: a few tokens against weights with integer kernels take the
   * input quantised once (a few thousand values; the rows are the cost). */
  bool ints = false;
  for (int i = 0; i < n; i++) ints |= dw_q8x_has(items[i].w->type);
  if (nt <= VEC_NT && ints && F->int_dots) {
    int64_t n_in = items[0].w->n_in;
    for (int t = 0; t < nt; t++) dw_q8x_quantize(x + t * n_in, n_in, F->xq + t * (n_in / 32));
    J.xq = F->xq;
  }
  memcpy(J.it, items, (size_t)n * sizeof *items);
  atomic_init(&J.next, 0);
  dw_pool_run(F->pool, mm_worker, &J);
}

static void matmul(fwd *F, const float *x, int nt, mm_mode mode, int n, const mm_item *items) {
  matmul_to(F, x, nt, mode, n, items, NULL);
}

static void attn_worker(void *arg, int wi, int nw) {
  const fwd *F = arg;
  const dw_hparams *hp = &F->m->hp;
  int hd = hp->head_dim, H = hp->n_head, g = H / hp->n_head_kv, qd = H * hd;
  float *sc = F->scores + (size_t)wi * F->max_ctx;
  float scale = hp->attn_scale, cap = hp->attn_softcap;
  int total = F->nt * H, swa = F->m->layers[F->layer].swa;
  for (int item = wi; item < total; item += nw) { /* interleaved: causal rows grow with t */
    int t = item / H, h = item % H, p = F->tp[t], kvo = (h / g) * hd;
    int j0 = swa && p - swa + 1 > 0 ? p - swa + 1 : 0; /* the first key in the window */
    const dw_session *S = F->ts[t];
    const float *q = F->q + (size_t)t * qd + (size_t)h * hd;
    float *o = F->att + (size_t)t * qd + (size_t)h * hd;
#if defined(__AVX512F__)
    if (hd % 16 == 0 && hd <= 128) { /* q and the output row stay in registers */
      int nv = hd / 16;
      __m512 qv[8], ov[8];
      for (int i = 0; i < nv; i++) qv[i] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * i), _mm512_set1_ps(scale));
      float mx = -INFINITY;
      for (int j = j0; j <= p; j++) {
        const float *kr = kv_row(S, F->layer, j, false) + kvo;
        __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kr));
        for (int i = 1; i < nv; i++) acc = _mm512_fmadd_ps(qv[i], _mm512_loadu_ps(kr + 16 * i), acc);
        sc[j] = _mm512_reduce_add_ps(acc);
        if (cap > 0) sc[j] = cap * tanhf(sc[j] / cap);
        if (sc[j] > mx) mx = sc[j];
      }
      float inv = 1.f / dw_exp_sum(sc + j0, p - j0 + 1, mx);
      for (int i = 0; i < nv; i++) ov[i] = _mm512_setzero_ps();
      for (int j = j0; j <= p; j++) {
        const float *vr = kv_row(S, F->layer, j, true) + kvo;
        __m512 a = _mm512_set1_ps(sc[j] * inv);
        for (int i = 0; i < nv; i++) ov[i] = _mm512_fmadd_ps(a, _mm512_loadu_ps(vr + 16 * i), ov[i]);
      }
      for (int i = 0; i < nv; i++) _mm512_storeu_ps(o + 16 * i, ov[i]);
      continue;
    }
#endif
    float mx = -INFINITY;
    for (int j = j0; j <= p; j++) {
      sc[j] = dw_dot_f32(q, kv_row(S, F->layer, j, false) + kvo, hd) * scale;
      if (cap > 0) sc[j] = cap * tanhf(sc[j] / cap);
      if (sc[j] > mx) mx = sc[j];
    }
    float inv = 1.f / dw_exp_sum(sc + j0, p - j0 + 1, mx);
    memset(o, 0, (size_t)hd * sizeof *o);
    for (int j = j0; j <= p; j++) {
      const float *vr = kv_row(S, F->layer, j, true) + kvo;
      float a = sc[j] * inv;
      for (int d = 0; d < hd; d++) o[d] += a * vr[d];
    }
  }
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
  double ss = 0;
  for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
  float r = (float)(1.0 / sqrt(ss / n + eps));
  for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

static void rope(float *v, int n_heads, int hd, int n_rot, bool neox, const float *cs, const float *sn) {
  for (int h = 0; h < n_heads; h++) {
    float *x = v + (size_t)h * hd;
    for (int i = 0; i < n_rot / 2; i++) {
      int ia = neox ? i : 2 * i, ib = neox ? i + n_rot / 2 : 2 * i + 1;
      float a = x[ia], b = x[ib];
      x[ia] = a * cs[i] - b * sn[i];
      x[ib] = a * sn[i] + b * cs[i];
    }
  }
}

static void forward_layer(fwd *F, int l) {
  const dw_model *m = F->m;
  const dw_hparams *hp = &m->hp;
  const dw_layer *L = &m->layers[l];
  int nt = F->nt, dim = hp->dim;
  F->layer = l;
  prep(F, PREP_NORM, F->x, L->attn_norm, F->xn, dim);
  mm_item qkv[3] = {{&L->wq, L->bq, F->q}, {&L->wk, L->bk, F->k}, {&L->wv, L->bv, F->v}};
  matmul(F, F->xn, nt, MM_STORE, 3, qkv);
  prep(F, PREP_ROPE, NULL, NULL, NULL, 0);
  dw_pool_run(F->pool, attn_worker, F);
  prep(F, PREP_TRANSPOSE, F->att, NULL, NULL, hp->n_head * hp->head_dim);
  /* with a post-norm, the block's output goes through xn (free by now) */
  mm_item o = {&L->wo, L->bo, L->post_attn_norm ? F->xn : F->x};
  matmul(F, F->att, nt, L->post_attn_norm ? MM_STORE : MM_ADD, 1, &o);
  if (L->post_attn_norm) prep(F, PREP_ADD_NORMED, NULL, L->post_attn_norm, F->xn, dim);
  prep(F, PREP_NORM, F->x, L->ffn_norm, F->xn, dim);
  mm_item glu[2] = {{&L->gate, NULL, F->h}, {&L->up, NULL, NULL}};
  matmul(F, F->xn, nt, MM_GLU, 2, glu);
  prep(F, PREP_TRANSPOSE, F->h, NULL, NULL, hp->n_ff);
  mm_item d = {&L->down, NULL, L->post_ffn_norm ? F->xn : F->x};
  matmul(F, F->h, nt, L->post_ffn_norm ? MM_STORE : MM_ADD, 1, &d);
  if (L->post_ffn_norm) prep(F, PREP_ADD_NORMED, NULL, L->post_ffn_norm, F->xn, dim);
}

/* One micro-batch: the tokens of seqs[0 .. n_seqs), nt <= UBATCH of them
 * in all, sequence i's at positions [s->n_past, +n). */
static dw_status forward(dw_pool *pool, const dw_step_seq *seqs, int n_seqs, int nt, bool int_dots) {
  const dw_model *m = seqs[0].s->model;
  const dw_hparams *hp = &m->hp;
  int dim = hp->dim, qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim, half = hp->n_rot / 2;
  int nw = dw_pool_size(pool), max_in = hp->n_ff > qd ? hp->n_ff : qd, max_ctx = 0;
  if (dim > max_in) max_in = dim;
  for (int i = 0; i < n_seqs; i++)
    if (seqs[i].s->n_ctx > max_ctx) max_ctx = seqs[i].s->n_ctx;
  fwd F = {.pool = pool, .m = m, .nt = nt, .max_ctx = max_ctx, .int_dots = int_dots};
  int ntp = (nt + 31) / 32 * 32;
  F.scratch_per_worker = (size_t)RB * max_in + 2 * (size_t)RB * nt;
  size_t nfl = (size_t)nt * (2 * dim + 2 * qd + 2 * kvd + hp->n_ff) + 4 * (size_t)nt * half +
               F.scratch_per_worker * nw + (size_t)max_ctx * nw + (size_t)max_in * ntp + (size_t)max_in +
               (size_t)nt * dw_q8x_bytes(max_in) / sizeof(float);
  /* per token: its session, its output row and its position, then the activations, 64-byte aligned */
  size_t head = ((size_t)nt * (sizeof(dw_session *) + sizeof(float *) + sizeof(int)) + 63) / 64 * 64;
  char *buf = dw_malloc(head + nfl * sizeof(float));
  if (!buf) return dw_error_set(DW_ERR_NOMEM, "decode: %zu bytes of activations", nfl * sizeof(float));
  dw_session **ts = (dw_session **)buf;
  float **rows = (float **)(ts + nt);
  int *tp = (int *)(rows + nt);
  float *p = (float *)(buf + head);
  F.x = p, p += (size_t)nt * dim;
  F.xn = p, p += (size_t)nt * dim;
  F.q = p, p += (size_t)nt * qd;
  F.att = p, p += (size_t)nt * qd;
  F.k = p, p += (size_t)nt * kvd;
  F.v = p, p += (size_t)nt * kvd;
  F.h = p, p += (size_t)nt * hp->n_ff;
  float *cs = p, *sn = p + (size_t)nt * half, *cs_l = sn + (size_t)nt * half, *sn_l = cs_l + (size_t)nt * half;
  p += 4 * (size_t)nt * half;
  F.scratch = p, p += F.scratch_per_worker * nw;
  F.xt = p, p += (size_t)max_in * ntp;
  F.zero = p, p += max_in;
  F.xq = (dw_q8x *)p, p += (size_t)nt * dw_q8x_bytes(max_in) / sizeof(float);
  memset(F.zero, 0, (size_t)max_in * sizeof(float));
  F.scores = p;
  F.ts = ts, F.tp = tp;
  for (int i = 0, t = 0; i < n_seqs; i++)
    for (int j = 0; j < seqs[i].n; j++, t++) {
      const int32_t tok = seqs[i].tokens[j];
      ts[t] = seqs[i].s, tp[t] = seqs[i].s->n_past + j;
      float *xt = F.x + (size_t)t * dim;
      dw_dequant_row(m->tok_embd.type, m->tok_embd.data + (size_t)tok * m->tok_embd.row_bytes, xt, dim);
      if (hp->embd_scale != 1.f)
        for (int d = 0; d < dim; d++) xt[d] *= hp->embd_scale;
      /* the global table (phi3's long one past n_ctx_orig) and the local one */
      const dw_layer plain = {0};
      const float *inv = dw_model_rope(m, &plain, seqs[i].s->n_ctx);
      double pos = tp[t];
      for (int k = 0; k < half; k++) {
        double ang = pos * (double)inv[k];
        cs[(size_t)t * half + k] = (float)cos(ang) * hp->rope_mscale;
        sn[(size_t)t * half + k] = (float)sin(ang) * hp->rope_mscale;
        if (!m->inv_freq_local) continue;
        ang = pos * (double)m->inv_freq_local[k];
        cs_l[(size_t)t * half + k] = (float)cos(ang);
        sn_l[(size_t)t * half + k] = (float)sin(ang);
      }
    }
  F.cs = cs, F.sn = sn;
  if (m->inv_freq_local) F.cs_l = cs_l, F.sn_l = sn_l;
  for (int l = 0; l < hp->n_layer; l++) forward_layer(&F, l);
  /* the final-normed hidden states, summed; the rows whose logits are asked
   * for, gathered (normed) at the front of xn, each written straight to its
   * caller's row */
  int n_out = 0;
  for (int i = 0, t0 = 0; i < n_seqs; t0 += seqs[i].n, i++) {
    const dw_step_seq *q = &seqs[i];
    for (int j = 0; q->embd_sum && j < q->n; j++) {
      rmsnorm(F.xn + (size_t)n_out * dim, F.x + (size_t)(t0 + j) * dim, m->output_norm, dim, hp->eps);
      for (int d = 0; d < dim; d++) q->embd_sum[d] += F.xn[(size_t)n_out * dim + d];
    }
    int first = q->all_logits ? 0 : q->logits ? q->n - 1 : q->n;
    for (int j = first; j < q->n; j++, n_out++) {
      rmsnorm(F.xn + (size_t)n_out * dim, F.x + (size_t)(t0 + j) * dim, m->output_norm, dim, hp->eps);
      rows[n_out] = q->all_logits ? q->all_logits + (size_t)j * hp->n_vocab : q->logits;
    }
  }
  if (n_out) {
    F.nt = n_out;
    if (n_out > 2) prep(&F, PREP_TRANSPOSE, F.xn, NULL, NULL, dim);
    mm_item o = {&m->output, NULL, NULL};
    matmul_to(&F, F.xn, n_out, MM_STORE, 1, &o, rows);
    for (int r = 0; hp->final_softcap > 0 && r < n_out; r++)
      for (int v = 0; v < hp->n_vocab; v++) rows[r][v] = hp->final_softcap * tanhf(rows[r][v] / hp->final_softcap);
    for (int i = 0; i < n_seqs; i++)
      if (seqs[i].all_logits && seqs[i].logits)
        memcpy(seqs[i].logits, seqs[i].all_logits + (size_t)(seqs[i].n - 1) * hp->n_vocab,
               (size_t)hp->n_vocab * sizeof(float));
  }
  dw_free(buf);
  return DW_OK;
}

typedef struct restore_job {
  cpu_engine *c;
  const dw_model *m;
  void **blocks;
  int n;
  const uint8_t *k, *v;
  _Atomic bool failed;
} restore_job;

/* Blocks are split between the workers: each maps its blocks (populated
 * in one go) and copies their rows, so both halves of the work scale. */
static void restore_worker(void *arg, int wi, int nw) {
  restore_job *J = arg;
  const dw_hparams *hp = &J->m->hp;
  size_t row = (size_t)hp->n_head_kv * hp->head_dim * sizeof(float), bytes = dw_kv_block_bytes(J->m);
  int nb = (J->n + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  for (int b = nb * wi / nw; b < nb * (wi + 1) / nw; b++) {
    void *blk = block_alloc(J->c, bytes);
    if (!blk) {
      atomic_store(&J->failed, true);
      continue;
    }
    J->blocks[b] = blk;
    int p0 = b * DW_KV_BLOCK, np = J->n - p0 < DW_KV_BLOCK ? J->n - p0 : DW_KV_BLOCK;
    for (int l = 0; l < hp->n_layer; l++) { /* rows of one layer and block are contiguous on both sides */
      memcpy(block_row(hp, blk, l, p0, false), J->k + ((size_t)l * J->n + p0) * row, (size_t)np * row);
      memcpy(block_row(hp, blk, l, p0, true), J->v + ((size_t)l * J->n + p0) * row, (size_t)np * row);
    }
  }
}


static dw_status kv_import(void *ctx, const dw_model *m, void **blocks, int n, const void *k, const void *v) {
  cpu_engine *c = ctx;
  restore_job J = {c, m, blocks, n, k, v, false};
  dw_pool_run(c->pool, restore_worker, &J);
  if (!atomic_load(&J.failed)) return DW_OK;
  for (int b = 0; b < (n + DW_KV_BLOCK - 1) / DW_KV_BLOCK; b++) {
    kv_free(ctx, blocks[b], dw_kv_block_bytes(m));
    blocks[b] = NULL;
  }
  return dw_error_set(DW_ERR_NOMEM, "session restore: kv cache");
}

static dw_status kv_export(void *ctx, const dw_model *m, void *const *blocks, int n, void *kp, void *vp) {
  (void)ctx;
  const dw_hparams *hp = &m->hp;
  size_t kvd = (size_t)hp->n_head_kv * hp->head_dim, row = kvd * sizeof(float);
  uint8_t *k = kp, *v = vp;
  for (int b = 0; b < (n + DW_KV_BLOCK - 1) / DW_KV_BLOCK; b++) {
    int p0 = b * DW_KV_BLOCK, np = n - p0 < DW_KV_BLOCK ? n - p0 : DW_KV_BLOCK;
    for (int l = 0; l < hp->n_layer; l++) {
      memcpy(k + ((size_t)l * n + p0) * row, block_row(hp, blocks[b], l, p0, false), np * row);
      memcpy(v + ((size_t)l * n + p0) * row, block_row(hp, blocks[b], l, p0, true), np * row);
    }
  }
  return DW_OK;
}

/* ---- the engine ------------------------------------------------------------- */

/* The weights are the model's own views into the file mapping. */
static dw_status weights_load(void *ctx, dw_model *m, void **out, uint64_t *device_bytes) {
  (void)ctx;
  *out = m;
  *device_bytes = 0;
  return DW_OK;
}

static void weights_free(void *ctx, void *w) { (void)ctx, (void)w; }

/* The sequences of a step go through in micro-batches of up to UBATCH
 * tokens, as many sequences in each as fit. */
static dw_status cpu_forward(void *ctx, void *weights, dw_step_seq *seqs, int n_seqs, dw_step_info *info) {
  cpu_engine *c = ctx;
  (void)weights;
  *info = (dw_step_info){.zero_copy = true};
  for (int i = 0; i < n_seqs;) {
    int j = i, nt = 0;
    while (j < n_seqs && nt + seqs[j].n <= UBATCH) nt += seqs[j++].n;
    if (j == i) return dw_error_set(DW_ERR_LIMIT, "decode: a step of %d tokens (at most %d)", seqs[i].n, UBATCH);
    dw_status st = forward(c->pool, seqs + i, j - i, nt, c->int_dots);
    if (st) return st;
    i = j;
  }
  return DW_OK;
}

static void cpu_describe(void *ctx, char *buf, size_t cap) {
  cpu_engine *c = ctx;
  snprintf(buf, cap, "CPU engine, %d threads%s", dw_pool_size(c->pool),
           c->int_dots && dw_q8x_has(GGML_Q8_0) ? ", 8-bit integer dot products for quantised decode" : "");
}

static void cpu_destroy(void *ctx) {
  cpu_engine *c = ctx;
  dw_pool_destroy(c->pool);
  slabs_free(c);
  pthread_mutex_destroy(&c->kv_lock);
  dw_free(c);
}

static const dw_engine_ops cpu_ops = {
    .version = DW_ENGINE_OPS_VERSION,
    .name = "cpu",
    .weights_load = weights_load,
    .weights_free = weights_free,
    .kv_alloc = kv_alloc,
    .kv_free = kv_free,
    .kv_copy = kv_copy,
    .kv_export = kv_export,
    .kv_import = kv_import,
    .forward = cpu_forward,
    .describe = cpu_describe,
    .destroy = cpu_destroy,
};

dw_status dw_engine_cpu_reg(int threads, bool int_dots, dw_engine *out) {
  cpu_engine *c = dw_calloc(1, sizeof *c);
  if (!c) return dw_error_set(DW_ERR_NOMEM, "cpu engine");
  c->int_dots = int_dots;
  dw_status st = dw_pool_create(threads, &c->pool);
  if (st) {
    dw_free(c);
    return st;
  }
  pthread_mutex_init(&c->kv_lock, NULL);
  out->ops = &cpu_ops;
  out->ctx = c;
  out->max_step_tokens = UBATCH;
  return DW_OK;
}
