/*
 * model.c — loading a llama/qwen2 GGUF: hyperparameters, shape checks,
 * weight binding, fingerprints (see model.h). The forward passes are the
 * engines' (cpu/, cuda/).
 */
#define _GNU_SOURCE
#include "llm/model.h"
#include "llm/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

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
    if (required) return dw_error_set(DW_ERR_BAD_MODEL, "model: required key '%s' is missing", k);
  } else if (kv->type == GGUF_ARRAY) {
    if (n_layer <= 0 || kv->n != (uint64_t)n_layer)
      return dw_error_set(DW_ERR_BAD_MODEL, "model: '%s' has %llu entries for %d layers", k,
                          (unsigned long long)kv->n, n_layer);
    for (uint64_t i = 0; i < kv->n; i++) {
      uint64_t x;
      if (!dw_gguf_arr_u64(kv, i, &x)) return dw_error_set(DW_ERR_BAD_MODEL, "model: '%s' is not an integer array", k);
      if (i == 0) v = x;
      else if (x != v)
        return dw_error_set(DW_ERR_UNSUPPORTED, "model: '%s' differs between layers (not supported)", k);
    }
  } else if (!dw_gguf_get_u64(L->g, k, &v)) {
    return dw_error_set(DW_ERR_BAD_MODEL, "model: '%s' is not a non-negative integer", k);
  }
  if (v > max) return dw_error_set(DW_ERR_BAD_MODEL, "model: '%s' = %llu is out of range", k, (unsigned long long)v);
  *out = (int)v;
  return DW_OK;
}

static dw_status bind(const dw_gguf *g, const char *name, int64_t n_in, int64_t n_out, bool required, dw_wt *w) {
  const dw_gguf_tensor *t = dw_gguf_tensor_find(g, name);
  memset(w, 0, sizeof *w);
  if (!t) return required ? dw_error_set(DW_ERR_BAD_MODEL, "model: tensor '%s' is missing", name) : DW_OK;
  if (t->ne[0] != (uint64_t)n_in || t->ne[1] != (uint64_t)n_out || t->ne[2] != 1 || t->ne[3] != 1)
    return dw_error_set(DW_ERR_BAD_MODEL, "model: tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, %lld]",
                        name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                        (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], (long long)n_in, (long long)n_out);
  if (!dw_quant_supported(t->type))
    return dw_error_set(DW_ERR_UNSUPPORTED, "model: tensor '%s' has type %s (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                        "IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)",
                        name, dw_ggml_type_name(t->type));
  *w = (dw_wt){t->data, t->type, n_in, n_out, dw_quant_row_bytes(t->type, n_in)};
  return DW_OK;
}

static dw_status vec(const dw_gguf *g, const char *name, int64_t n, bool required, float **out) {
  dw_wt w;
  *out = NULL;
  dw_status st = bind(g, name, n, 1, required, &w);
  if (st || !w.data) return st;
  if (!(*out = dw_malloc((size_t)n * sizeof(float)))) return dw_error_set(DW_ERR_NOMEM, "model");
  dw_dequant_row(w.type, w.data, *out, n);
  return DW_OK;
}

static dw_status load_hparams(loader *L, dw_model *m) {
  dw_hparams *hp = &m->hp;
  dw_gguf_str a;
  dw_status st;
  if (!dw_gguf_get_str(L->g, "general.architecture", &a))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: general.architecture is missing");
  if (dw_gguf_str_eq(a, "llama")) hp->arch = DW_ARCH_LLAMA, L->arch = "llama";
  else if (dw_gguf_str_eq(a, "qwen2")) hp->arch = DW_ARCH_QWEN2, L->arch = "qwen2";
  else
    return dw_error_set(DW_ERR_UNSUPPORTED, "model: architecture '%.*s' is not supported (llama, qwen2 are)",
                        (int)(a.n > 64 ? 64 : a.n), a.p);
  hp->rope_neox = hp->arch == DW_ARCH_QWEN2;
  if ((st = get_int(L, "block_count", true, 0, 512, 0, &hp->n_layer))) return st;
  if (hp->n_layer < 1) return dw_error_set(DW_ERR_BAD_MODEL, "model: block_count is 0");
  if ((st = get_int(L, "context_length", true, 0, 1 << 24, 0, &hp->n_ctx_train)) ||
      (st = get_int(L, "embedding_length", true, 0, 1 << 16, 0, &hp->dim)) ||
      (st = get_int(L, "feed_forward_length", true, 0, 1 << 18, hp->n_layer, &hp->n_ff)) ||
      (st = get_int(L, "attention.head_count", true, 0, 1 << 12, hp->n_layer, &hp->n_head)))
    return st;
  if ((st = get_int(L, "attention.head_count_kv", false, (uint64_t)hp->n_head, 1 << 12, hp->n_layer, &hp->n_head_kv)))
    return st;
  if (hp->dim < 1 || hp->n_head < 1 || hp->n_head_kv < 1 || hp->n_ff < 1 || hp->n_ctx_train < 1)
    return dw_error_set(DW_ERR_BAD_MODEL, "model: a size (embedding, heads, kv heads, ffn, context) is 0");
  if (hp->dim % hp->n_head || hp->n_head % hp->n_head_kv)
    return dw_error_set(DW_ERR_BAD_MODEL, "model: %d heads do not divide embedding %d or are not a multiple of %d kv heads",
                        hp->n_head, hp->dim, hp->n_head_kv);
  int kl, vl;
  if ((st = get_int(L, "attention.key_length", false, (uint64_t)(hp->dim / hp->n_head), 1 << 12, 0, &kl)) ||
      (st = get_int(L, "attention.value_length", false, (uint64_t)kl, 1 << 12, 0, &vl)))
    return st;
  if (kl != vl || kl < 1) return dw_error_set(DW_ERR_UNSUPPORTED, "model: key_length %d != value_length %d", kl, vl);
  hp->head_dim = kl;
  if ((st = get_int(L, "rope.dimension_count", false, (uint64_t)hp->head_dim, 1 << 12, 0, &hp->n_rot))) return st;
  if (hp->n_rot % 2 || hp->n_rot > hp->head_dim || hp->n_rot < 2)
    return dw_error_set(DW_ERR_BAD_MODEL, "model: rope dimension %d must be even and <= head dim %d", hp->n_rot,
                        hp->head_dim);
  if (!dw_gguf_get_f32(L->g, akey(L, "attention.layer_norm_rms_epsilon"), &hp->eps) || !(hp->eps > 0) ||
      !(hp->eps < 1))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: %s.attention.layer_norm_rms_epsilon is missing or not in (0, 1)",
                        L->arch);
  hp->rope_base = 10000.f;
  dw_gguf_get_f32(L->g, akey(L, "rope.freq_base"), &hp->rope_base);
  if (!(hp->rope_base > 1) || !isfinite(hp->rope_base))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: rope.freq_base %g is invalid", hp->rope_base);
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
  if (!(m->inv_freq = dw_malloc((size_t)n_pairs * sizeof(float)))) return dw_error_set(DW_ERR_NOMEM, "model");
  float *ff = NULL;
  const dw_gguf_tensor *rf = dw_gguf_tensor_find(g, "rope_freqs.weight");
  if (rf) {
    if (rf->type != GGML_F32 || rf->n_elems < (uint64_t)n_pairs)
      return dw_error_set(DW_ERR_BAD_MODEL, "model: rope_freqs.weight must be F32 with >= %d elements", n_pairs);
    ff = (float *)rf->data; /* the data section is aligned to >= 8 */
  }
  for (int i = 0; i < n_pairs; i++) {
    double theta = pow((double)hp->rope_base, -2.0 * i / hp->n_rot) * hp->rope_scale;
    float fi = 1.f;
    if (ff) memcpy(&fi, (const uint8_t *)ff + 4 * i, 4);
    if (!(fi > 0) || !isfinite(fi)) return dw_error_set(DW_ERR_BAD_MODEL, "model: rope_freqs[%d] = %g", i, fi);
    m->inv_freq[i] = (float)(theta / fi);
  }
  if (!(m->layers = dw_calloc((size_t)hp->n_layer, sizeof *m->layers))) return dw_error_set(DW_ERR_NOMEM, "model");
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
  dw_model *m = dw_calloc(1, sizeof *m);
  if (!m) {
    dw_gguf_close(g);
    return dw_error_set(DW_ERR_NOMEM, "model");
  }
  atomic_init(&m->refs, 1);
  m->g = g;
  dw_status st = DW_OK;
  loader L = {.g = m->g};
  if (!(m->path = dw_strdup(path))) st = dw_error_set(DW_ERR_NOMEM, "model");
  m->vocab_only = vocab_only;
  if (!st && !vocab_only) st = load_hparams(&L, m);
  if (!st) st = dw_tokenizer_load(m->g, &m->tok);
  if (!st && vocab_only) m->hp.n_vocab = dw_tokenizer_info(m->tok)->n_tokens;
  if (!st && !vocab_only) {
    int nv = dw_tokenizer_info(m->tok)->n_tokens;
    uint64_t vs;
    if (dw_gguf_get_u64(m->g, akey(&L, "vocab_size"), &vs) && vs != (uint64_t)nv)
      st = dw_error_set(DW_ERR_BAD_MODEL, "model: vocab_size %llu != %d tokens", (unsigned long long)vs, nv);
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
      dw_free(L->attn_norm), dw_free(L->ffn_norm), dw_free(L->bq), dw_free(L->bk), dw_free(L->bv), dw_free(L->bo);
    }
  dw_free(m->layers);
  dw_free(m->output_norm);
  dw_free(m->inv_freq);
  dw_tokenizer_free(m->tok);
  dw_gguf_close(m->g);
  dw_free(m->path);
  dw_free(m);
}

void dw_model_info_get(const dw_model *m, dw_model_info *out) {
  const dw_tok_info *ti = dw_tokenizer_info(m->tok);
  *out = (dw_model_info){
      .n_vocab = (uint32_t)m->hp.n_vocab, .n_ctx_train = (uint32_t)m->hp.n_ctx_train,
      .bos = ti->bos, .eos = ti->eos, .eot = ti->eot >= 0 ? ti->eot : ti->eos,
      .n_embd = (uint32_t)m->hp.dim, .n_layer = (uint32_t)m->hp.n_layer,
      .flags = (ti->add_bos ? DW_MODEL_ADD_BOS : 0) | (ti->add_eos ? DW_MODEL_ADD_EOS : 0)};
}

dw_status dw_model_meta_str(const dw_model *m, const char *key, char *out, size_t cap, size_t *n_out) {
  dw_gguf_str s;
  *n_out = 0;
  if (!dw_gguf_get_str(m->g, key, &s)) return dw_error_set(DW_ERR_NOT_FOUND, "model has no string key '%s'", key);
  *n_out = s.n;
  if (s.n > cap) return dw_error_set(DW_ERR_LIMIT, "'%s' is %llu bytes, more than %zu", key, (unsigned long long)s.n, cap);
  memcpy(out, s.p, s.n);
  return DW_OK;
}

void dw_model_summary(const dw_model *m, char *buf, size_t cap) {
  const dw_hparams *hp = &m->hp;
  snprintf(buf, cap, "%s: %d layers, dim %d, %d/%d heads (head dim %d), ffn %d, vocab %d, context %d, weights %s%s",
           hp->arch == DW_ARCH_QWEN2 ? "qwen2" : "llama", hp->n_layer, hp->dim, hp->n_head, hp->n_head_kv,
           hp->head_dim, hp->n_ff, hp->n_vocab, hp->n_ctx_train, dw_ggml_type_name(m->weight_type),
           m->output.data == m->tok_embd.data ? ", tied embeddings" : "");
}

size_t dw_kv_block_bytes(const dw_model *m) {
  return 2 * (size_t)m->hp.n_layer * DW_KV_BLOCK * m->hp.n_head_kv * m->hp.head_dim * sizeof(float);
}

static void compute_fingerprint(const dw_model *m, uint8_t out[32]) {
  uint64_t size = m->g->size;
  unsigned int n = 32;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  EVP_DigestUpdate(c, m->g->buf, m->g->data_start < m->g->size ? m->g->data_start : m->g->size);
  EVP_DigestUpdate(c, &size, sizeof size);
  /* and samples of every tensor's bytes (its first, middle and last KiB):
   * files with identical headers but other weights (another fine-tune, or
   * another seed) must not pass for one another, and hashing a few KiB a
   * tensor keeps the load from reading the whole file */
  for (uint64_t t = 0; t < m->g->n_tensors; t++) {
    const dw_gguf_tensor *x = &m->g->tensors[t];
    uint64_t k = x->n_bytes < 1024 ? x->n_bytes : 1024;
    EVP_DigestUpdate(c, x->data, k);
    EVP_DigestUpdate(c, x->data + (x->n_bytes - k) / 2, k);
    EVP_DigestUpdate(c, x->data + x->n_bytes - k, k);
  }
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

void dw_model_fingerprint(const dw_model *m, uint8_t out[32]) { memcpy(out, m->fingerprint, 32); }
void dw_model_family(const dw_model *m, uint8_t out[32]) { memcpy(out, m->family, 32); }
