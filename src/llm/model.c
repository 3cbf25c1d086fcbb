/*
 * model.c — loading a llama-family GGUF: hyperparameters, shape checks,
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

/* What each architecture changes in the llama forward pass. */
typedef struct arch_def {
  const char *name;
  dw_arch arch;
  bool neox, qkv_bias, qk_norm, post_norms, gemma;
} arch_def;

static const arch_def arch_defs[] = {
    {"llama", DW_ARCH_LLAMA, false, false, false, false, false},
    {"qwen2", DW_ARCH_QWEN2, true, true, false, false, false},
    {"qwen3", DW_ARCH_QWEN3, true, false, true, false, false},
    {"gemma2", DW_ARCH_GEMMA2, true, false, false, true, true},
    {"gemma3", DW_ARCH_GEMMA3, true, false, true, true, true},
    {"phi3", DW_ARCH_PHI3, true, false, false, false, false},
};

static const arch_def *arch_of(const dw_hparams *hp) {
  for (size_t i = 0; i < sizeof arch_defs / sizeof *arch_defs; i++)
    if (arch_defs[i].arch == hp->arch) return &arch_defs[i];
  return &arch_defs[0];
}

static float get_f32(loader *L, const char *suffix, float def) {
  float v = def;
  dw_gguf_get_f32(L->g, akey(L, suffix), &v);
  return v;
}

/* RoPE: the scaling type and its keys (spec §0.1-0.2) folded into the
 * per-pair frequencies and one magnitude. YaRN blends interpolated and
 * extrapolated frequencies over the pairs between two correction dims
 * (beta_fast 32, beta_slow 1, as llama.cpp's defaults) and scales the
 * magnitude by 1 + 0.1·ln(factor). */
static dw_status load_rope(loader *L, dw_hparams *hp, bool *yarn) {
  hp->rope_base = get_f32(L, "rope.freq_base", 10000.f);
  if (!(hp->rope_base > 1) || !isfinite(hp->rope_base))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: rope.freq_base %g is invalid", hp->rope_base);
  dw_gguf_str rt;
  bool none = false;
  *yarn = false;
  if (dw_gguf_get_str(L->g, akey(L, "rope.scaling.type"), &rt)) {
    none = dw_gguf_str_eq(rt, "none");
    *yarn = dw_gguf_str_eq(rt, "yarn");
    if (!none && !*yarn && !dw_gguf_str_eq(rt, "linear") && !dw_gguf_str_eq(rt, "longrope"))
      return dw_error_set(DW_ERR_UNSUPPORTED, "model: rope scaling '%.*s' is not supported (none, linear, yarn, longrope are)",
                          (int)(rt.n > 32 ? 32 : rt.n), rt.p);
  }
  float f = 0;
  if (!dw_gguf_get_f32(L->g, akey(L, "rope.scaling.factor"), &f)) dw_gguf_get_f32(L->g, akey(L, "rope.scale_linear"), &f);
  hp->rope_scale = f > 0 && isfinite(f) && !none ? 1.f / f : 1.f;
  hp->rope_mscale = get_f32(L, "rope.scaling.attn_factor", 1.f);
  if (!(hp->rope_mscale > 0) || !isfinite(hp->rope_mscale))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: rope.scaling.attn_factor %g is invalid", hp->rope_mscale);
  if (*yarn) hp->rope_mscale *= 1.f + 0.1f * logf(1.f / hp->rope_scale);
  dw_status st = get_int(L, "rope.scaling.original_context_length", false, (uint64_t)hp->n_ctx_train, 1 << 24, 0,
                         &hp->n_ctx_orig);
  if (!st && hp->n_ctx_orig < 1) st = dw_error_set(DW_ERR_BAD_MODEL, "model: rope.scaling.original_context_length is 0");
  return st;
}

static dw_status load_hparams(loader *L, dw_model *m, bool *yarn) {
  dw_hparams *hp = &m->hp;
  dw_gguf_str a;
  dw_status st;
  if (!dw_gguf_get_str(L->g, "general.architecture", &a))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: general.architecture is missing");
  const arch_def *ad = NULL;
  for (size_t i = 0; i < sizeof arch_defs / sizeof *arch_defs; i++)
    if (dw_gguf_str_eq(a, arch_defs[i].name)) ad = &arch_defs[i];
  if (!ad)
    return dw_error_set(DW_ERR_UNSUPPORTED,
                        "model: architecture '%.*s' is not supported (llama, qwen2, qwen3, gemma2, gemma3, phi3 are)",
                        (int)(a.n > 64 ? 64 : a.n), a.p);
  hp->arch = ad->arch, L->arch = ad->name;
  hp->rope_neox = ad->neox;
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
  bool has_kl = dw_gguf_find(L->g, akey(L, "attention.key_length")) != NULL;
  if ((!has_kl && hp->dim % hp->n_head) || hp->n_head % hp->n_head_kv)
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
  if ((st = load_rope(L, hp, yarn))) return st;
  /* Gemma scales the embeddings, soft-caps (gemma2), and scales Q by
   * 1/sqrt(dim/heads) instead of 1/sqrt(head_dim) for its 27B models (46
   * and 62 layers), as llama.cpp decides it (spec §3-4). */
  hp->embd_scale = ad->gemma ? sqrtf((float)hp->dim) : 1.f;
  hp->gelu = ad->gemma;
  bool big_gemma = (hp->arch == DW_ARCH_GEMMA2 && hp->n_layer == 46) || (hp->arch == DW_ARCH_GEMMA3 && hp->n_layer == 62);
  hp->attn_scale = 1.f / sqrtf(big_gemma ? (float)hp->dim / hp->n_head : (float)hp->head_dim);
  if (hp->arch == DW_ARCH_GEMMA2) {
    hp->attn_softcap = get_f32(L, "attn_logit_softcapping", 50.f);
    hp->final_softcap = get_f32(L, "final_logit_softcapping", 30.f);
  } else if (hp->arch == DW_ARCH_GEMMA3) {
    hp->final_softcap = get_f32(L, "final_logit_softcapping", 0.f);
  }
  if (!(hp->attn_softcap >= 0) || !(hp->final_softcap >= 0) || !isfinite(hp->attn_softcap) || !isfinite(hp->final_softcap))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: a soft-capping value is negative or not finite");
  return DW_OK;
}

/* The sliding window of every layer (spec §1.3, 3-5): gemma2 slides on
 * even layers, gemma3 on five of every six (with their own RoPE), phi3 on
 * all when its window is not 0, llama (mistral-style) on all when the
 * file gives a window. */
static dw_status load_windows(loader *L, dw_model *m) {
  dw_hparams *hp = &m->hp;
  int def = hp->arch == DW_ARCH_GEMMA2 ? 4096 : 0;
  if (hp->arch == DW_ARCH_PHI3) { /* llama.cpp's defaults for files from before the key */
    if ((hp->n_layer == 32 || hp->n_layer == 40) && hp->n_ctx_train == 4096) def = 2047;
    else if (hp->n_layer == 32 && hp->n_head_kv == 32 && hp->n_ctx_train == 131072) def = 262144;
    else if (hp->n_layer == 40 && hp->n_ctx_train == 131072) def = 131072;
  }
  int w;
  dw_status st = get_int(L, "attention.sliding_window", false, (uint64_t)def, 1u << 30, 0, &w);
  if (st) return st;
  for (int l = 0; l < hp->n_layer; l++) {
    dw_layer *Y = &m->layers[l];
    bool slides = hp->arch == DW_ARCH_GEMMA2 ? l % 2 == 0 : hp->arch == DW_ARCH_GEMMA3 ? l % 6 < 5 : true;
    Y->swa = slides ? w : 0;
    Y->local_rope = hp->arch == DW_ARCH_GEMMA3 && slides && w > 0;
  }
  return DW_OK;
}

/* out[i] = the frequency of RoPE pair i (see load_rope): base^(-2i/n_rot)
 * divided by the file's factor for the pair, then linearly scaled or, for
 * YaRN, blended between scaled and not. */
static dw_status rope_table(const dw_hparams *hp, float base, float scale, bool yarn, const dw_gguf_tensor *factors,
                            float **out) {
  int n_pairs = hp->n_rot / 2;
  if (factors && (factors->type != GGML_F32 || factors->n_elems < (uint64_t)n_pairs))
    return dw_error_set(DW_ERR_BAD_MODEL, "model: tensor '%s' must be F32 with >= %d elements", factors->name, n_pairs);
  if (!(*out = dw_malloc((size_t)n_pairs * sizeof(float)))) return dw_error_set(DW_ERR_NOMEM, "model");
  double lo = 0, hi = 0;
  if (yarn) { /* the correction dims of beta_fast = 32 and beta_slow = 1 rotations */
    double d_fast = hp->n_rot * log(hp->n_ctx_orig / (32 * 2 * M_PI)) / (2 * log(base));
    double d_slow = hp->n_rot * log(hp->n_ctx_orig / (1 * 2 * M_PI)) / (2 * log(base));
    lo = fmax(0, floor(d_fast)), hi = fmin(hp->n_rot - 1, ceil(d_slow));
  }
  for (int i = 0; i < n_pairs; i++) {
    float fi = 1.f;
    if (factors) memcpy(&fi, factors->data + 4 * (size_t)i, 4); /* the data section is aligned to >= 8 */
    if (!(fi > 0) || !isfinite(fi)) return dw_error_set(DW_ERR_BAD_MODEL, "model: %s[%d] = %g", factors->name, i, fi);
    double extrap = pow((double)base, -2.0 * i / hp->n_rot) / fi, interp = extrap * scale;
    double mix = 0;
    if (yarn) mix = 1 - fmin(1, fmax(0, (i - lo) / fmax(0.001, hi - lo)));
    (*out)[i] = (float)(interp * (1 - mix) + extrap * mix);
  }
  return DW_OK;
}

static dw_status load_weights(loader *Ld, dw_model *m, bool yarn) {
  const dw_gguf *g = m->g;
  dw_hparams *hp = &m->hp;
  const arch_def *ad = arch_of(hp);
  int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim, hd = hp->head_dim;
  char nm[96];
  dw_status st;
  if ((st = bind(g, "token_embd.weight", hp->dim, hp->n_vocab, true, &m->tok_embd))) return st;
  if ((st = bind(g, "output.weight", hp->dim, hp->n_vocab, false, &m->output))) return st;
  if (!m->output.data) m->output = m->tok_embd;
  if ((st = vec(g, "output_norm.weight", hp->dim, true, &m->output_norm))) return st;
  m->weight_type = m->tok_embd.type;
  /* llama's rope_freqs (Llama 3.1), phi3's LongRoPE pair (short below
   * n_ctx_orig, long past it) */
  const dw_gguf_tensor *ff = dw_gguf_tensor_find(g, "rope_freqs.weight"),
                       *fs = dw_gguf_tensor_find(g, "rope_factors_short.weight"),
                       *fl = dw_gguf_tensor_find(g, "rope_factors_long.weight");
  if ((st = rope_table(hp, hp->rope_base, hp->rope_scale, yarn, ff ? ff : fs, &m->inv_freq))) return st;
  if (fl && (st = rope_table(hp, hp->rope_base, hp->rope_scale, yarn, fl, &m->inv_freq_long))) return st;
  if (!(m->layers = dw_calloc((size_t)hp->n_layer, sizeof *m->layers))) return dw_error_set(DW_ERR_NOMEM, "model");
  if ((st = load_windows(Ld, m))) return st;
  if (hp->arch == DW_ARCH_GEMMA3 && m->layers[0].local_rope &&
      (st = rope_table(hp, get_f32(Ld, "rope.freq_base_swa", 10000.f), 1.f, false, NULL, &m->inv_freq_local)))
    return st;
  for (int l = 0; l < hp->n_layer; l++) {
    dw_layer *L = &m->layers[l];
    bool qb = ad->qkv_bias;
#define T(s) (snprintf(nm, sizeof nm, "blk.%d.%s", l, s), nm)
    if ((st = vec(g, T("attn_norm.weight"), hp->dim, true, &L->attn_norm)) ||
        (st = vec(g, T("ffn_norm.weight"), hp->dim, true, &L->ffn_norm)) ||
        (st = bind(g, T("attn_output.weight"), qd, hp->dim, true, &L->wo)) ||
        (st = bind(g, T("ffn_down.weight"), hp->n_ff, hp->dim, true, &L->down)) ||
        (st = vec(g, T("attn_output.bias"), hp->dim, false, &L->bo)) ||
        (st = vec(g, T("attn_q_norm.weight"), hd, ad->qk_norm, &L->q_norm)) ||
        (st = vec(g, T("attn_k_norm.weight"), hd, ad->qk_norm, &L->k_norm)) ||
        (st = vec(g, T("post_attention_norm.weight"), hp->dim, ad->post_norms, &L->post_attn_norm)) ||
        (st = vec(g, T("post_ffw_norm.weight"), hp->dim, ad->post_norms, &L->post_ffn_norm)))
      return st;
    if (!ad->qk_norm && (L->q_norm || L->k_norm))
      return dw_error_set(DW_ERR_UNSUPPORTED, "model: %s has Q/K norms, which %s does not use", T("attn_q_norm"), ad->name);
    dw_wt qkv, gu;
    if ((st = bind(g, T("attn_qkv.weight"), hp->dim, qd + 2 * kvd, false, &qkv))) return st;
    if (qkv.data) { /* phi3: Q rows, then K rows, then V rows */
      L->wq = L->wk = L->wv = qkv;
      L->wq.n_out = qd;
      L->wk.n_out = L->wv.n_out = kvd;
      L->wk.data += (size_t)qd * qkv.row_bytes;
      L->wv.data += (size_t)(qd + kvd) * qkv.row_bytes;
    } else if ((st = bind(g, T("attn_q.weight"), hp->dim, qd, true, &L->wq)) ||
               (st = bind(g, T("attn_k.weight"), hp->dim, kvd, true, &L->wk)) ||
               (st = bind(g, T("attn_v.weight"), hp->dim, kvd, true, &L->wv)) ||
               (st = vec(g, T("attn_q.bias"), qd, qb, &L->bq)) || (st = vec(g, T("attn_k.bias"), kvd, qb, &L->bk)) ||
               (st = vec(g, T("attn_v.bias"), kvd, qb, &L->bv))) {
      return st;
    }
    if (hp->arch == DW_ARCH_PHI3 && !dw_gguf_tensor_find(g, T("ffn_gate.weight"))) {
      /* phi3: ffn_up holds the gate rows, then the up rows */
      if ((st = bind(g, T("ffn_up.weight"), hp->dim, 2 * (int64_t)hp->n_ff, true, &gu))) return st;
      L->gate = L->up = gu;
      L->gate.n_out = L->up.n_out = hp->n_ff;
      L->up.data += (size_t)hp->n_ff * gu.row_bytes;
    } else if ((st = bind(g, T("ffn_gate.weight"), hp->dim, hp->n_ff, true, &L->gate)) ||
               (st = bind(g, T("ffn_up.weight"), hp->dim, hp->n_ff, true, &L->up))) {
      return st;
    }
    static const char *const unsupported[] = {"ffn_gate.bias", "ffn_up.bias", "ffn_down.bias", "ffn_gate_inp.weight"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
      if (dw_gguf_tensor_find(g, T(unsupported[i])))
        return dw_error_set(DW_ERR_UNSUPPORTED, "model: tensor '%s' is not supported", nm);
#undef T
    if (l == 0) m->weight_type = L->wq.type;
  }
  return DW_OK;
}

const float *dw_model_rope(const dw_model *m, const dw_layer *L, int n_ctx) {
  if (L->local_rope && m->inv_freq_local) return m->inv_freq_local;
  return m->inv_freq_long && n_ctx > m->hp.n_ctx_orig ? m->inv_freq_long : m->inv_freq;
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
  bool yarn = false;
  if (!st && !vocab_only) st = load_hparams(&L, m, &yarn);
  if (!st) st = dw_tokenizer_load(m->g, &m->tok);
  if (!st && vocab_only) m->hp.n_vocab = dw_tokenizer_info(m->tok)->n_tokens;
  if (!st && !vocab_only) {
    int nv = dw_tokenizer_info(m->tok)->n_tokens;
    uint64_t vs;
    if (dw_gguf_get_u64(m->g, akey(&L, "vocab_size"), &vs) && vs != (uint64_t)nv)
      st = dw_error_set(DW_ERR_BAD_MODEL, "model: vocab_size %llu != %d tokens", (unsigned long long)vs, nv);
    m->hp.n_vocab = nv;
  }
  if (!st && !vocab_only) st = load_weights(&L, m, yarn);
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
      dw_free(L->q_norm), dw_free(L->k_norm), dw_free(L->post_attn_norm), dw_free(L->post_ffn_norm);
    }
  dw_free(m->layers);
  dw_free(m->output_norm);
  dw_free(m->inv_freq), dw_free(m->inv_freq_long), dw_free(m->inv_freq_local);
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
  int n_swa = 0, window = 0;
  for (int l = 0; l < hp->n_layer; l++)
    if (m->layers[l].swa) n_swa++, window = m->layers[l].swa;
  int n = snprintf(buf, cap, "%s: %d layers, dim %d, %d/%d heads (head dim %d), ffn %d, vocab %d, context %d, weights %s%s",
                   arch_of(hp)->name, hp->n_layer, hp->dim, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff,
                   hp->n_vocab, hp->n_ctx_train, dw_ggml_type_name(m->weight_type),
                   m->output.data == m->tok_embd.data ? ", tied embeddings" : "");
  if (n > 0 && (size_t)n < cap && n_swa)
    n += snprintf(buf + n, cap - (size_t)n, ", sliding window %d on %d of %d layers", window, n_swa, hp->n_layer);
  if (n > 0 && (size_t)n < cap && hp->rope_mscale != 1.f)
    snprintf(buf + n, cap - (size_t)n, ", RoPE magnitude %.4g", hp->rope_mscale);
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
