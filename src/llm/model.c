/*
 * model.c — loading a llama/qwen2 GGUF (hyperparameters, shape checks,
 * weight binding), KV sessions, and the batched forward pass (see model.h).
 *
 * Forward pass per micro-batch of T tokens (spec §4): embeddings; per layer
 * RMSNorm → fused Q/K/V projection (+bias) → RoPE (NORM or NEOX) → K/V
 * written to the session's blocks → causal GQA attention → output
 * projection added to the residual → RMSNorm → fused gate/up with SiLU →
 * down projection added to the residual; final RMSNorm and the output
 * projection for the positions asked for. Each projection is one pool job.
 */
#define _GNU_SOURCE
#include "llm/model.h"
#include "llm/quant.h"

#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <sys/mman.h>

enum { UBATCH = 256, RB = 48 };

/* ---- loading --------------------------------------------------------------- */

typedef struct loader {
  const dw_gguf *g;
  const char *arch;
  char key[256];
} loader;

static const char *akey(loader *L, const char *suffix) {
  snprintf(L->key, sizeof L->key, "%s.%s", L->arch, suffix);
  return L->key;
}

/* A scalar or per-layer array of equal values. */
static dw_status get_int(loader *L, const char *suffix, bool required, uint64_t def, uint64_t max,
                         int n_layer, int *out) {
  const char *k = akey(L, suffix);
  const dw_gguf_kv *kv = dw_gguf_find(L->g, k);
  uint64_t v = def;
  if (!kv) {
    if (required) return dw_error_set(DW_ERR_BAD_MODULE, "model: required key '%s' is missing", k);
  } else if (kv->type == GGUF_ARRAY) {
    if (n_layer <= 0 || kv->n != (uint64_t)n_layer)
      return dw_error_set(DW_ERR_BAD_MODULE, "model: '%s' has %llu entries for %d layers", k,
                          (unsigned long long)kv->n, n_layer);
    for (uint64_t i = 0; i < kv->n; i++) {
      uint64_t x;
      if (!dw_gguf_arr_u64(kv, i, &x)) return dw_error_set(DW_ERR_BAD_MODULE, "model: '%s' is not an integer array", k);
      if (i == 0) v = x;
      else if (x != v)
        return dw_error_set(DW_ERR_UNSUPPORTED, "model: '%s' differs between layers (not supported)", k);
    }
  } else if (!dw_gguf_get_u64(L->g, k, &v)) {
    return dw_error_set(DW_ERR_BAD_MODULE, "model: '%s' is not a non-negative integer", k);
  }
  if (v > max) return dw_error_set(DW_ERR_BAD_MODULE, "model: '%s' = %llu is out of range", k, (unsigned long long)v);
  *out = (int)v;
  return DW_OK;
}

static dw_status bind(const dw_gguf *g, const char *name, int64_t n_in, int64_t n_out, bool required, dw_wt *w) {
  const dw_gguf_tensor *t = dw_gguf_tensor_find(g, name);
  memset(w, 0, sizeof *w);
  if (!t) return required ? dw_error_set(DW_ERR_BAD_MODULE, "model: tensor '%s' is missing", name) : DW_OK;
  if (t->ne[0] != (uint64_t)n_in || t->ne[1] != (uint64_t)n_out || t->ne[2] != 1 || t->ne[3] != 1)
    return dw_error_set(DW_ERR_BAD_MODULE, "model: tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, %lld]",
                        name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                        (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], (long long)n_in, (long long)n_out);
  if (!dw_quant_supported(t->type))
    return dw_error_set(DW_ERR_UNSUPPORTED, "model: tensor '%s' has type %s (supported: F32, F16, BF16, Q8_0, Q4_0)",
                        name, dw_ggml_type_name(t->type));
  *w = (dw_wt){t->data, t->type, n_in, n_out, dw_quant_row_bytes(t->type, n_in)};
  return DW_OK;
}

static dw_status vec(const dw_gguf *g, const char *name, int64_t n, bool required, float **out) {
  dw_wt w;
  *out = NULL;
  dw_status st = bind(g, name, n, 1, required, &w);
  if (st || !w.data) return st;
  if (!(*out = malloc((size_t)n * sizeof(float)))) return dw_error_set(DW_ERR_NOMEM, "model");
  dw_dequant_row(w.type, w.data, *out, n);
  return DW_OK;
}

static dw_status load_hparams(loader *L, dw_model *m) {
  dw_hparams *hp = &m->hp;
  dw_gguf_str a;
  dw_status st;
  if (!dw_gguf_get_str(L->g, "general.architecture", &a))
    return dw_error_set(DW_ERR_BAD_MODULE, "model: general.architecture is missing");
  if (dw_gguf_str_eq(a, "llama")) hp->arch = DW_ARCH_LLAMA, L->arch = "llama";
  else if (dw_gguf_str_eq(a, "qwen2")) hp->arch = DW_ARCH_QWEN2, L->arch = "qwen2";
  else
    return dw_error_set(DW_ERR_UNSUPPORTED, "model: architecture '%.*s' is not supported (llama, qwen2 are)",
                        (int)(a.n > 64 ? 64 : a.n), a.p);
  hp->rope_neox = hp->arch == DW_ARCH_QWEN2;
  if ((st = get_int(L, "block_count", true, 0, 512, 0, &hp->n_layer))) return st;
  if (hp->n_layer < 1) return dw_error_set(DW_ERR_BAD_MODULE, "model: block_count is 0");
  if ((st = get_int(L, "context_length", true, 0, 1 << 24, 0, &hp->n_ctx_train)) ||
      (st = get_int(L, "embedding_length", true, 0, 1 << 16, 0, &hp->dim)) ||
      (st = get_int(L, "feed_forward_length", true, 0, 1 << 18, hp->n_layer, &hp->n_ff)) ||
      (st = get_int(L, "attention.head_count", true, 0, 1 << 12, hp->n_layer, &hp->n_head)))
    return st;
  if ((st = get_int(L, "attention.head_count_kv", false, (uint64_t)hp->n_head, 1 << 12, hp->n_layer, &hp->n_head_kv)))
    return st;
  if (hp->dim < 1 || hp->n_head < 1 || hp->n_head_kv < 1 || hp->n_ff < 1 || hp->n_ctx_train < 1)
    return dw_error_set(DW_ERR_BAD_MODULE, "model: a size (embedding, heads, kv heads, ffn, context) is 0");
  if (hp->dim % hp->n_head || hp->n_head % hp->n_head_kv)
    return dw_error_set(DW_ERR_BAD_MODULE, "model: %d heads do not divide embedding %d or are not a multiple of %d kv heads",
                        hp->n_head, hp->dim, hp->n_head_kv);
  int kl, vl;
  if ((st = get_int(L, "attention.key_length", false, (uint64_t)(hp->dim / hp->n_head), 1 << 12, 0, &kl)) ||
      (st = get_int(L, "attention.value_length", false, (uint64_t)kl, 1 << 12, 0, &vl)))
    return st;
  if (kl != vl || kl < 1) return dw_error_set(DW_ERR_UNSUPPORTED, "model: key_length %d != value_length %d", kl, vl);
  hp->head_dim = kl;
  if ((st = get_int(L, "rope.dimension_count", false, (uint64_t)hp->head_dim, 1 << 12, 0, &hp->n_rot))) return st;
  if (hp->n_rot % 2 || hp->n_rot > hp->head_dim || hp->n_rot < 2)
    return dw_error_set(DW_ERR_BAD_MODULE, "model: rope dimension %d must be even and <= head dim %d", hp->n_rot,
                        hp->head_dim);
  if (!dw_gguf_get_f32(L->g, akey(L, "attention.layer_norm_rms_epsilon"), &hp->eps) || !(hp->eps > 0) ||
      !(hp->eps < 1))
    return dw_error_set(DW_ERR_BAD_MODULE, "model: %s.attention.layer_norm_rms_epsilon is missing or not in (0, 1)",
                        L->arch);
  hp->rope_base = 10000.f;
  dw_gguf_get_f32(L->g, akey(L, "rope.freq_base"), &hp->rope_base);
  if (!(hp->rope_base > 1) || !isfinite(hp->rope_base))
    return dw_error_set(DW_ERR_BAD_MODULE, "model: rope.freq_base %g is invalid", hp->rope_base);
  dw_gguf_str rt;
  if (dw_gguf_get_str(L->g, akey(L, "rope.scaling.type"), &rt) && !dw_gguf_str_eq(rt, "none") &&
      !dw_gguf_str_eq(rt, "linear"))
    return dw_error_set(DW_ERR_UNSUPPORTED, "model: rope scaling '%.*s' is not supported (none, linear are)",
                        (int)(rt.n > 32 ? 32 : rt.n), rt.p);
  float f = 0;
  if (!dw_gguf_get_f32(L->g, akey(L, "rope.scaling.factor"), &f)) dw_gguf_get_f32(L->g, akey(L, "rope.scale_linear"), &f);
  hp->rope_scale = f > 0 && isfinite(f) ? 1.f / f : 1.f;
  return DW_OK;
}

static dw_status load_weights(dw_model *m) {
  const dw_gguf *g = m->g;
  dw_hparams *hp = &m->hp;
  int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
  char nm[96];
  dw_status st;
  if ((st = bind(g, "token_embd.weight", hp->dim, hp->n_vocab, true, &m->tok_embd))) return st;
  if ((st = bind(g, "output.weight", hp->dim, hp->n_vocab, false, &m->output))) return st;
  if (!m->output.data) m->output = m->tok_embd;
  if ((st = vec(g, "output_norm.weight", hp->dim, true, &m->output_norm))) return st;
  m->weight_type = m->tok_embd.type;
  int n_pairs = hp->n_rot / 2;
  if (!(m->inv_freq = malloc((size_t)n_pairs * sizeof(float)))) return dw_error_set(DW_ERR_NOMEM, "model");
  float *ff = NULL;
  const dw_gguf_tensor *rf = dw_gguf_tensor_find(g, "rope_freqs.weight");
  if (rf) {
    if (rf->type != GGML_F32 || rf->n_elems < (uint64_t)n_pairs)
      return dw_error_set(DW_ERR_BAD_MODULE, "model: rope_freqs.weight must be F32 with >= %d elements", n_pairs);
    ff = (float *)rf->data; /* the data section is aligned to >= 8 */
  }
  for (int i = 0; i < n_pairs; i++) {
    double theta = pow((double)hp->rope_base, -2.0 * i / hp->n_rot) * hp->rope_scale;
    float fi = 1.f;
    if (ff) memcpy(&fi, (const uint8_t *)ff + 4 * i, 4);
    if (!(fi > 0) || !isfinite(fi)) return dw_error_set(DW_ERR_BAD_MODULE, "model: rope_freqs[%d] = %g", i, fi);
    m->inv_freq[i] = (float)(theta / fi);
  }
  if (!(m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers))) return dw_error_set(DW_ERR_NOMEM, "model");
  for (int l = 0; l < hp->n_layer; l++) {
    dw_layer *L = &m->layers[l];
    bool qb = hp->arch == DW_ARCH_QWEN2;
#define T(s) (snprintf(nm, sizeof nm, "blk.%d.%s", l, s), nm)
    if ((st = vec(g, T("attn_norm.weight"), hp->dim, true, &L->attn_norm)) ||
        (st = vec(g, T("ffn_norm.weight"), hp->dim, true, &L->ffn_norm)) ||
        (st = bind(g, T("attn_q.weight"), hp->dim, qd, true, &L->wq)) ||
        (st = bind(g, T("attn_k.weight"), hp->dim, kvd, true, &L->wk)) ||
        (st = bind(g, T("attn_v.weight"), hp->dim, kvd, true, &L->wv)) ||
        (st = bind(g, T("attn_output.weight"), qd, hp->dim, true, &L->wo)) ||
        (st = bind(g, T("ffn_gate.weight"), hp->dim, hp->n_ff, true, &L->gate)) ||
        (st = bind(g, T("ffn_up.weight"), hp->dim, hp->n_ff, true, &L->up)) ||
        (st = bind(g, T("ffn_down.weight"), hp->n_ff, hp->dim, true, &L->down)) ||
        (st = vec(g, T("attn_q.bias"), qd, qb, &L->bq)) || (st = vec(g, T("attn_k.bias"), kvd, qb, &L->bk)) ||
        (st = vec(g, T("attn_v.bias"), kvd, qb, &L->bv)) ||
        (st = vec(g, T("attn_output.bias"), hp->dim, false, &L->bo)))
      return st;
    static const char *const unsupported[] = {"ffn_gate.bias", "ffn_up.bias", "ffn_down.bias", "ffn_gate_inp.weight"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
      if (dw_gguf_tensor_find(g, T(unsupported[i])))
        return dw_error_set(DW_ERR_UNSUPPORTED, "model: tensor '%s' is not supported", nm);
#undef T
    if (l == 0) m->weight_type = L->wq.type;
  }
  return DW_OK;
}

static void compute_fingerprint(const dw_model *m, uint8_t out[32]);
static void compute_family(const dw_model *m, uint8_t out[32]);

dw_status dw_model_from_gguf(dw_gguf *g, const char *path, bool vocab_only, dw_model **out) {
  *out = NULL;
  dw_model *m = calloc(1, sizeof *m);
  if (!m) {
    dw_gguf_close(g);
    return dw_error_set(DW_ERR_NOMEM, "model");
  }
  atomic_init(&m->refs, 1);
  m->g = g;
  dw_status st = DW_OK;
  loader L = {.g = m->g};
  if (!(m->path = strdup(path))) st = dw_error_set(DW_ERR_NOMEM, "model");
  m->vocab_only = vocab_only;
  if (!st && !vocab_only) st = load_hparams(&L, m);
  if (!st) st = dw_tokenizer_load(m->g, &m->tok);
  if (!st && vocab_only) m->hp.n_vocab = dw_tokenizer_info(m->tok)->n_tokens;
  if (!st && !vocab_only) {
    int nv = dw_tokenizer_info(m->tok)->n_tokens;
    uint64_t vs;
    if (dw_gguf_get_u64(m->g, akey(&L, "vocab_size"), &vs) && vs != (uint64_t)nv)
      st = dw_error_set(DW_ERR_BAD_MODULE, "model: vocab_size %llu != %d tokens", (unsigned long long)vs, nv);
    m->hp.n_vocab = nv;
  }
  if (!st && !vocab_only) st = load_weights(m);
  if (!st && !vocab_only) { /* once, so that snapshots need not rehash */
    compute_fingerprint(m, m->fingerprint);
    compute_family(m, m->family);
  }
  if (st) {
    dw_error_wrap(st, "%s", path);
    dw_model_release(m);
    return st;
  }
  *out = m;
  return DW_OK;
}

dw_status dw_model_load(const char *path, bool vocab_only, dw_model **out) {
  dw_gguf *g;
  *out = NULL;
  dw_status st = dw_gguf_open(path, !vocab_only, &g); /* weights faulted in now, not in the first decode */
  if (st) return st;
  return dw_model_from_gguf(g, path, vocab_only, out);
}

void dw_model_retain(dw_model *m) { atomic_fetch_add(&m->refs, 1); }

void dw_model_release(dw_model *m) {
  if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
  if (m->layers)
    for (int l = 0; l < m->hp.n_layer; l++) {
      dw_layer *L = &m->layers[l];
      free(L->attn_norm), free(L->ffn_norm), free(L->bq), free(L->bk), free(L->bv), free(L->bo);
    }
  free(m->layers);
  free(m->output_norm);
  free(m->inv_freq);
  dw_tokenizer_free(m->tok);
  dw_gguf_close(m->g);
  free(m->path);
  free(m);
}

void dw_model_summary(const dw_model *m, char *buf, size_t cap) {
  const dw_hparams *hp = &m->hp;
  snprintf(buf, cap, "%s: %d layers, dim %d, %d/%d heads (head dim %d), ffn %d, vocab %d, context %d, weights %s%s",
           hp->arch == DW_ARCH_QWEN2 ? "qwen2" : "llama", hp->n_layer, hp->dim, hp->n_head, hp->n_head_kv,
           hp->head_dim, hp->n_ff, hp->n_vocab, hp->n_ctx_train, dw_ggml_type_name(m->weight_type),
           m->output.data == m->tok_embd.data ? ", tied embeddings" : "");
}

/* ---- sessions -------------------------------------------------------------- */

size_t dw_kv_block_bytes(const dw_model *m) {
  return sizeof(dw_kv_block) +
         2 * (size_t)m->hp.n_layer * DW_KV_BLOCK * m->hp.n_head_kv * m->hp.head_dim * sizeof(float);
}

/* KV blocks are mapped directly, populated in one go: faulting megabytes
 * in page by page costs more than filling them. */
static dw_kv_block *block_alloc(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void block_unref(dw_kv_block *b, size_t bytes) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1) munmap(b, bytes);
}

dw_status dw_sess_new(dw_model *m, dw_pool *pool, int n_ctx, dw_session **out) {
  *out = NULL;
  if (m->vocab_only) return dw_error_set(DW_ERR_UNSUPPORTED, "session: the model was opened vocab-only");
  if (n_ctx <= 0) n_ctx = m->hp.n_ctx_train;
  if (n_ctx > m->hp.n_ctx_train)
    return dw_error_set(DW_ERR_LIMIT, "session: context %d exceeds the model's %d", n_ctx, m->hp.n_ctx_train);
  dw_session *s = calloc(1, sizeof *s);
  if (!s) return dw_error_set(DW_ERR_NOMEM, "session");
  s->n_ctx = n_ctx;
  s->pool = pool;
  s->blocks = calloc((size_t)(n_ctx + DW_KV_BLOCK - 1) / DW_KV_BLOCK, sizeof *s->blocks);
  s->tokens = malloc((size_t)n_ctx * sizeof *s->tokens);
  if (!s->blocks || !s->tokens) {
    free(s->blocks), free(s->tokens), free(s);
    return dw_error_set(DW_ERR_NOMEM, "session");
  }
  dw_model_retain(m);
  s->model = m;
  *out = s;
  return DW_OK;
}

void dw_sess_free(dw_session *s) {
  if (!s) return;
  int nb = (s->n_ctx + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  for (int i = 0; i < nb; i++) block_unref(s->blocks[i], dw_kv_block_bytes(s->model));
  free(s->blocks);
  free(s->tokens);
  dw_model_release(s->model);
  free(s);
}

dw_status dw_sess_fork(const dw_session *s, dw_session **out) {
  dw_status st = dw_sess_new(s->model, s->pool, s->n_ctx, out);
  if (st) return st;
  int nb = (s->n_past + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  for (int i = 0; i < nb; i++) {
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
  int keep_blocks = (n_keep + DW_KV_BLOCK - 1) / DW_KV_BLOCK, nb = (s->n_past + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  for (int i = keep_blocks; i < nb; i++) {
    block_unref(s->blocks[i], dw_kv_block_bytes(s->model));
    s->blocks[i] = NULL;
  }
  s->n_past = n_keep;
  return DW_OK;
}

/* Makes blocks covering [p0, p1) present and exclusively owned. */
static dw_status own_blocks(dw_session *s, int p0, int p1) {
  size_t bytes = dw_kv_block_bytes(s->model);
  for (int b = p0 / DW_KV_BLOCK; b <= (p1 - 1) / DW_KV_BLOCK; b++) {
    dw_kv_block *cur = s->blocks[b];
    if (cur && atomic_load(&cur->refs) == 1) continue;
    dw_kv_block *nb = block_alloc(bytes);
    if (!nb) return dw_error_set(DW_ERR_NOMEM, "kv cache: %zu bytes", bytes);
    atomic_init(&nb->refs, 1);
    if (cur) {
      memcpy(nb->data, cur->data, bytes - sizeof(dw_kv_block));
      block_unref(cur, bytes);
    }
    s->blocks[b] = nb;
  }
  return DW_OK;
}

static inline float *kv_row(const dw_session *s, int layer, int pos, bool v) {
  const dw_hparams *hp = &s->model->hp;
  size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
  size_t off = ((size_t)layer * DW_KV_BLOCK + pos % DW_KV_BLOCK) * kvd;
  if (v) off += (size_t)hp->n_layer * DW_KV_BLOCK * kvd;
  return s->blocks[pos / DW_KV_BLOCK]->data + off;
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
  int nt, ntp, n_items;
  mm_mode mode;       /* MM_GLU: items 0 (gate) and 1 (up), output in items[0].y */
  mm_item it[3];
  float *scratch;     /* per worker: RB*n_in + 2*RB*nt floats */
  size_t scratch_per_worker;
  _Atomic int64_t next; /* next chunk of RB rows to take */
} mm_job;

/* out[t*RB + i] = row (r0 + i) of w · token t, for i < nr. */
static void mm_rows(const mm_job *J, const dw_wt *w, int r0, int nr, float *wbuf, float *out) {
  int64_t n = w->n_in;
  if (J->nt <= 2) {
    for (int i = 0; i < nr; i++)
      for (int t = 0; t < J->nt; t++)
        out[t * RB + i] = dw_vec_dot(w->type, w->data + (size_t)(r0 + i) * w->row_bytes, J->x + t * n, n);
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
      for (int t = 0; t < J->nt; t++) dw_silu_mul(I->y + t * ld + r0, o1 + t * RB, o2 + t * RB, nr);
      continue;
    }
    for (int t = 0; t < J->nt; t++) {
      float *y = I->y + t * ld + r0;
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
  dw_session *s;
  const dw_model *m;
  int nt, p0, layer;
  float *x, *xn, *q, *k, *v, *att, *h;
  float *scratch, *scores, *xt, *zero;
  const float *cs, *sn;   /* RoPE cos/sin per token */
  size_t scratch_per_worker;
} fwd;

/* ---- per-token preparation, parallel over tokens ---------------------------- */

typedef enum { PREP_NORM, PREP_TRANSPOSE, PREP_ROPE } prep_kind;

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
    } else {
      int hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd, half = hp->n_rot / 2;
      const float *c = P->cs + (size_t)t * half, *sn = P->sn + (size_t)t * half;
      rope(F->q + (size_t)t * qd, hp->n_head, hd, hp->n_rot, hp->rope_neox, c, sn);
      rope(F->k + (size_t)t * kvd, hp->n_head_kv, hd, hp->n_rot, hp->rope_neox, c, sn);
      memcpy(kv_row(F->s, F->layer, F->p0 + t, false), F->k + (size_t)t * kvd, (size_t)kvd * sizeof(float));
      memcpy(kv_row(F->s, F->layer, F->p0 + t, true), F->v + (size_t)t * kvd, (size_t)kvd * sizeof(float));
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
  if (kind == PREP_NORM) { /* then the normed rows, transposed, for the matmul */
    P = (prep_job){F, PREP_TRANSPOSE, dst, NULL, NULL, n, F->cs, F->sn};
    dw_pool_run(F->pool, prep_worker, &P);
  }
}

/* The input must have been through prep (NORM or TRANSPOSE) when nt > 2. */
static void matmul(fwd *F, const float *x, int nt, mm_mode mode, int n, const mm_item *items) {
  mm_job J = {.x = x, .nt = nt, .ntp = (nt + 31) / 32 * 32, .n_items = n, .mode = mode, .xt = F->xt,
              .zero = F->zero, .scratch = F->scratch, .scratch_per_worker = F->scratch_per_worker};
  memcpy(J.it, items, (size_t)n * sizeof *items);
  atomic_init(&J.next, 0);
  dw_pool_run(F->pool, mm_worker, &J);
}

static void attn_worker(void *arg, int wi, int nw) {
  const fwd *F = arg;
  const dw_hparams *hp = &F->m->hp;
  int hd = hp->head_dim, H = hp->n_head, g = H / hp->n_head_kv, qd = H * hd;
  float *sc = F->scores + (size_t)wi * F->s->n_ctx;
  float scale = 1.f / sqrtf((float)hd);
  int total = F->nt * H;
  for (int item = wi; item < total; item += nw) { /* interleaved: causal rows grow with t */
    int t = item / H, h = item % H, p = F->p0 + t, kvo = (h / g) * hd;
    const float *q = F->q + (size_t)t * qd + (size_t)h * hd;
    float *o = F->att + (size_t)t * qd + (size_t)h * hd;
#if defined(__AVX512F__)
    if (hd % 16 == 0 && hd <= 128) { /* q and the output row stay in registers */
      int nv = hd / 16;
      __m512 qv[8], ov[8];
      for (int i = 0; i < nv; i++) qv[i] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * i), _mm512_set1_ps(scale));
      float mx = -INFINITY;
      for (int j = 0; j <= p; j++) {
        const float *kr = kv_row(F->s, F->layer, j, false) + kvo;
        __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kr));
        for (int i = 1; i < nv; i++) acc = _mm512_fmadd_ps(qv[i], _mm512_loadu_ps(kr + 16 * i), acc);
        sc[j] = _mm512_reduce_add_ps(acc);
        if (sc[j] > mx) mx = sc[j];
      }
      float inv = 1.f / dw_exp_sum(sc, p + 1, mx);
      for (int i = 0; i < nv; i++) ov[i] = _mm512_setzero_ps();
      for (int j = 0; j <= p; j++) {
        const float *vr = kv_row(F->s, F->layer, j, true) + kvo;
        __m512 a = _mm512_set1_ps(sc[j] * inv);
        for (int i = 0; i < nv; i++) ov[i] = _mm512_fmadd_ps(a, _mm512_loadu_ps(vr + 16 * i), ov[i]);
      }
      for (int i = 0; i < nv; i++) _mm512_storeu_ps(o + 16 * i, ov[i]);
      continue;
    }
#endif
    float mx = -INFINITY;
    for (int j = 0; j <= p; j++) {
      sc[j] = dw_dot_f32(q, kv_row(F->s, F->layer, j, false) + kvo, hd) * scale;
      if (sc[j] > mx) mx = sc[j];
    }
    float inv = 1.f / dw_exp_sum(sc, p + 1, mx);
    memset(o, 0, (size_t)hd * sizeof *o);
    for (int j = 0; j <= p; j++) {
      const float *vr = kv_row(F->s, F->layer, j, true) + kvo;
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
  mm_item o = {&L->wo, L->bo, F->x};
  matmul(F, F->att, nt, MM_ADD, 1, &o);
  prep(F, PREP_NORM, F->x, L->ffn_norm, F->xn, dim);
  mm_item glu[2] = {{&L->gate, NULL, F->h}, {&L->up, NULL, NULL}};
  matmul(F, F->xn, nt, MM_GLU, 2, glu);
  prep(F, PREP_TRANSPOSE, F->h, NULL, NULL, hp->n_ff);
  mm_item d = {&L->down, NULL, F->x};
  matmul(F, F->h, nt, MM_ADD, 1, &d);
}

/* One micro-batch of nt <= UBATCH tokens at positions [s->n_past, +nt). */
static dw_status forward(dw_session *s, const int32_t *tok, int nt, float *logits, float *all, double *embd_sum) {
  const dw_model *m = s->model;
  const dw_hparams *hp = &m->hp;
  dw_pool *pool = s->pool;
  int dim = hp->dim, qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim, half = hp->n_rot / 2;
  int nw = dw_pool_size(pool), max_in = hp->n_ff > qd ? hp->n_ff : qd;
  if (dim > max_in) max_in = dim;
  dw_status st = own_blocks(s, s->n_past, s->n_past + nt);
  if (st) return st;
  fwd F = {.pool = pool, .s = s, .m = m, .nt = nt, .p0 = s->n_past};
  int ntp = (nt + 31) / 32 * 32;
  F.scratch_per_worker = (size_t)RB * max_in + 2 * (size_t)RB * nt;
  size_t nfl = (size_t)nt * (2 * dim + 2 * qd + 2 * kvd + hp->n_ff) + 2 * (size_t)nt * half +
               F.scratch_per_worker * nw + (size_t)s->n_ctx * nw + (size_t)max_in * ntp + (size_t)max_in;
  float *buf = malloc(nfl * sizeof(float));
  if (!buf) return dw_error_set(DW_ERR_NOMEM, "decode: %zu bytes of activations", nfl * sizeof(float));
  float *p = buf;
  F.x = p, p += (size_t)nt * dim;
  F.xn = p, p += (size_t)nt * dim;
  F.q = p, p += (size_t)nt * qd;
  F.att = p, p += (size_t)nt * qd;
  F.k = p, p += (size_t)nt * kvd;
  F.v = p, p += (size_t)nt * kvd;
  F.h = p, p += (size_t)nt * hp->n_ff;
  float *cs = p, *sn = p + (size_t)nt * half;
  p += 2 * (size_t)nt * half;
  F.scratch = p, p += F.scratch_per_worker * nw;
  F.xt = p, p += (size_t)max_in * ntp;
  F.zero = p, p += max_in;
  memset(F.zero, 0, (size_t)max_in * sizeof(float));
  F.scores = p;
  for (int t = 0; t < nt; t++) {
    dw_dequant_row(m->tok_embd.type, m->tok_embd.data + (size_t)tok[t] * m->tok_embd.row_bytes, F.x + (size_t)t * dim,
                   dim);
    double pos = F.p0 + t;
    for (int i = 0; i < half; i++) {
      double a = pos * (double)m->inv_freq[i];
      cs[(size_t)t * half + i] = (float)cos(a);
      sn[(size_t)t * half + i] = (float)sin(a);
    }
  }
  F.cs = cs, F.sn = sn;
  for (int l = 0; l < hp->n_layer; l++) forward_layer(&F, l);
  for (int t = 0; embd_sum && t < nt; t++) { /* the final-normed hidden states, summed */
    rmsnorm(F.xn, F.x + (size_t)t * dim, m->output_norm, dim, hp->eps);
    for (int i = 0; i < dim; i++) embd_sum[i] += F.xn[i];
  }
  int first = all ? 0 : nt - 1;
  if (all || logits) {
    float *y = all ? all : logits;
    mm_item o = {&m->output, NULL, y};
    if (all) {
      prep(&F, PREP_NORM, F.x, m->output_norm, F.xn, dim);
    } else {
      rmsnorm(F.xn, F.x + (size_t)(nt - 1) * dim, m->output_norm, dim, hp->eps);
      F.nt = 1;
    }
    matmul(&F, F.xn, nt - first, MM_STORE, 1, &o);
    if (all && logits) memcpy(logits, all + (size_t)(nt - 1) * hp->n_vocab, (size_t)hp->n_vocab * sizeof(float));
  }
  memcpy(s->tokens + s->n_past, tok, (size_t)nt * sizeof *tok);
  s->n_past += nt;
  free(buf);
  return DW_OK;
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
  int start = s->n_past;
  for (int i = 0; i < n; i += UBATCH) {
    int nt = n - i < UBATCH ? n - i : UBATCH;
    bool last = i + nt == n;
    dw_status st = forward(s, tokens + i, nt, last ? logits : NULL,
                           all_logits ? all_logits + (size_t)i * hp->n_vocab : NULL, embd_sum);
    if (st) {
      s->n_past = start; /* positions written so far are simply dropped */
      return st;
    }
  }
  return DW_OK;
}

dw_status dw_decode(dw_session *s, const int32_t *tokens, int n, float *logits, float *all_logits) {
  return decode(s, tokens, n, logits, all_logits, NULL);
}

dw_status dw_embed(dw_session *s, const int32_t *tokens, int n, float *out) {
  int dim = s->model->hp.dim;
  double *sum = calloc((size_t)dim, sizeof *sum);
  if (!sum) return dw_error_set(DW_ERR_NOMEM, "embed");
  dw_status st = decode(s, tokens, n, NULL, NULL, sum);
  if (!st) {
    double norm = 0;
    for (int i = 0; i < dim; i++) norm += (sum[i] / n) * (sum[i] / n);
    norm = norm > 0 ? sqrt(norm) : 1;
    for (int i = 0; i < dim; i++) out[i] = (float)(sum[i] / n / norm);
  }
  free(sum);
  return st;
}

static void compute_fingerprint(const dw_model *m, uint8_t out[32]) {
  uint64_t size = m->g->size;
  unsigned int n = 32;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  EVP_DigestUpdate(c, m->g->buf, m->g->data_start < m->g->size ? m->g->data_start : m->g->size);
  EVP_DigestUpdate(c, &size, sizeof size);
  EVP_DigestFinal_ex(c, out, &n);
  EVP_MD_CTX_free(c);
}

static void compute_family(const dw_model *m, uint8_t out[32]) {
  const dw_hparams *hp = &m->hp;
  int32_t shape[] = {(int32_t)hp->arch, hp->n_vocab, hp->dim, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim,
                     hp->n_ff, hp->n_rot};
  unsigned int n = 32;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  EVP_DigestUpdate(c, shape, sizeof shape);
  for (int i = 0; i < hp->n_vocab; i++) {
    dw_gguf_str t = dw_token_text(m->tok, i);
    uint64_t len = t.n;
    EVP_DigestUpdate(c, &len, sizeof len);
    EVP_DigestUpdate(c, t.p, t.n);
  }
  EVP_DigestFinal_ex(c, out, &n);
  EVP_MD_CTX_free(c);
}

const float *dw_sess_kv(const dw_session *s, int layer, int pos, bool v) { return kv_row(s, layer, pos, v); }

typedef struct restore_job {
  dw_session *s;
  int n;
  const uint8_t *k, *v;
  _Atomic bool failed;
} restore_job;

/* Blocks are split between the workers: each maps its blocks (populated
 * in one go) and copies their rows, so both halves of the work scale. */
static void restore_worker(void *arg, int wi, int nw) {
  restore_job *J = arg;
  dw_session *s = J->s;
  const dw_hparams *hp = &s->model->hp;
  size_t row = (size_t)hp->n_head_kv * hp->head_dim * sizeof(float), bytes = dw_kv_block_bytes(s->model);
  int nb = (J->n + DW_KV_BLOCK - 1) / DW_KV_BLOCK;
  for (int b = nb * wi / nw; b < nb * (wi + 1) / nw; b++) {
    dw_kv_block *blk = block_alloc(bytes);
    if (!blk) {
      atomic_store(&J->failed, true);
      continue;
    }
    atomic_init(&blk->refs, 1);
    s->blocks[b] = blk;
    int p0 = b * DW_KV_BLOCK, np = J->n - p0 < DW_KV_BLOCK ? J->n - p0 : DW_KV_BLOCK;
    for (int l = 0; l < hp->n_layer; l++) { /* rows of one layer and block are contiguous on both sides */
      memcpy(kv_row(s, l, p0, false), J->k + ((size_t)l * J->n + p0) * row, (size_t)np * row);
      memcpy(kv_row(s, l, p0, true), J->v + ((size_t)l * J->n + p0) * row, (size_t)np * row);
    }
  }
}

dw_status dw_sess_restore(dw_session *s, const int32_t *tokens, int n, const void *k, const void *v) {
  const dw_hparams *hp = &s->model->hp;
  if (s->n_past != 0 || n < 0 || n > s->n_ctx)
    return dw_error_set(DW_ERR_INVALID_ARG, "session restore: %d positions into a context of %d", n, s->n_ctx);
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
      return dw_error_set(DW_ERR_INVALID_ARG, "session restore: token %d is not in the vocabulary", tokens[i]);
  if (n == 0) return DW_OK;
  for (int b = 0; b < (n + DW_KV_BLOCK - 1) / DW_KV_BLOCK; b++)
    if (s->blocks[b]) return dw_error_set(DW_ERR_INVALID_ARG, "session restore: the session is not empty");
  restore_job J = {s, n, k, v, false};
  dw_pool_run(s->pool, restore_worker, &J);
  if (atomic_load(&J.failed)) {
    for (int b = 0; b < (n + DW_KV_BLOCK - 1) / DW_KV_BLOCK; b++) {
      block_unref(s->blocks[b], dw_kv_block_bytes(s->model));
      s->blocks[b] = NULL;
    }
    return dw_error_set(DW_ERR_NOMEM, "session restore: kv cache");
  }
  memcpy(s->tokens, tokens, (size_t)n * sizeof *tokens);
  s->n_past = n;
  return DW_OK;
}

void dw_model_fingerprint(const dw_model *m, uint8_t out[32]) { memcpy(out, m->fingerprint, 32); }
void dw_model_family(const dw_model *m, uint8_t out[32]) { memcpy(out, m->family, 32); }
