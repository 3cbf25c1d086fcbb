/*
 * cuda_llm_test.c — the CUDA LLM engine against the CPU engine on the same
 * model files: logits for prefill (cuBLAS) and decode (our GEMV) steps
 * within stated tolerances for every architecture and weight type,
 * identical greedy continuations, fork and truncate, all-position logits
 * and embeddings, and KV caches moving between the engines in the
 * canonical layout. Without a CUDA device the suite is skipped (exit 77).
 *
 * Tolerance: err = max|gpu - cpu| / max|cpu| over a step's logits. F32
 * weights: 1e-4 (both engines accumulate f32). Other types: 1e-2 (prefill
 * GEMMs take f16/bf16 activations on the GPU, f32 on the CPU).
 */
#include "llm/session.h"
#include "skip_main.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEMO_MODEL DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"
#define VOCAB DW_TEST_SOURCE "/../shared/fixtures/vocab/ggml-vocab-"

static dw_engine *cpu, *gpu;
static char dir[256];

/* The CPU side decodes with f32 dot products, as the GPU does: the 8-bit
 * integer path (on by default) rounds activations and may pick another
 * token where two logits nearly tie. */
static const char *f32_dots(void *ctx, const char *name) {
  (void)ctx;
  return !strcmp(name, "DRIFTWOOD_INT_DOT") ? "0" : NULL;
}

static void setup(void) {
  static const dw_settings exact = {.get = f32_dots};
  cr_assert_eq(dw_engine_create("cpu", 2, &exact, &cpu), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_engine_create("cuda", 0, NULL, &gpu), DW_OK, "%s", dw_last_error());
  snprintf(dir, sizeof dir, "%s/cuda-llm-models", DW_TEST_BUILD);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
  cr_assert_eq(system(cmd), 0);
}
static void teardown(void) {
  dw_engine_destroy(gpu);
  dw_engine_destroy(cpu);
}
TestSuite(cuda_llm, .init = setup, .fini = teardown);

/* A random model written by tools/mkmodel.py (cached in the build tree). */
static dw_model *make_model(const char *arch, const char *type, const char *extra) {
  char path[512], cmd[2048];
  unsigned h = 5381; /* the extra arguments name the file too */
  for (const char *p = extra; *p; p++) h = h * 33 + (unsigned char)*p;
  snprintf(path, sizeof path, "%s/%s-%s-%08x.gguf", dir, arch, type, h);
  if (access(path, R_OK) != 0) {
    snprintf(cmd, sizeof cmd,
             "python3 %s/tools/mkmodel.py --arch %s --dim 256 --layers 2 --heads 4 --kv-heads 2 --ffn 512 "
             "--ctx 512 --type %s --seed 3 --vocab %s%s.gguf %s -o %s",
             DW_TEST_SOURCE, arch, type, VOCAB, strncmp(arch, "qwen", 4) ? "llama-spm" : "gpt-2", extra, path);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
  }
  dw_model *m;
  cr_assert_eq(dw_model_load(path, false, &m), DW_OK, "%s", dw_last_error());
  return m;
}

static double rel_err(const float *got, const float *want, int n) {
  double d = 0, mx = 0;
  for (int i = 0; i < n; i++) {
    cr_assert(isfinite(got[i]), "logit %d is %g", i, got[i]);
    d = fmax(d, fabs((double)got[i] - want[i]));
    mx = fmax(mx, fabs((double)want[i]));
  }
  return d / mx;
}

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

static void fill_tokens(int32_t *t, int n, int n_vocab, unsigned seed) {
  for (int i = 0; i < n; i++) t[i] = (int32_t)((seed * 2654435761u + (unsigned)i * 40503u) % (unsigned)n_vocab);
}

/* Prefill of 40 tokens (GEMM path), then single-token and 5-token steps
 * (GEMV path), both engines on the same inputs. */
static double compare_engines(dw_model *m) {
  int nv = m->hp.n_vocab;
  float *a = malloc(nv * sizeof *a), *b = malloc(nv * sizeof *b);
  /* poison: every logit must be written */
  for (int i = 0; i < nv; i++) b[i] = NAN;
  dw_session *sc, *sg;
  cr_assert_eq(dw_sess_new(m, cpu, 256, &sc), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_sess_new(m, gpu, 256, &sg), DW_OK, "%s", dw_last_error());
  int32_t t[64];
  fill_tokens(t, 64, nv, 7);
  double worst = 0;
  int steps[] = {40, 1, 1, 5, 1, 9, 1};
  for (size_t i = 0, p = 0; i < sizeof steps / sizeof *steps; p += steps[i++]) {
    cr_assert_eq(dw_decode(sc, t + p, steps[i], a, NULL), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_decode(sg, t + p, steps[i], b, NULL), DW_OK, "%s", dw_last_error());
    worst = fmax(worst, rel_err(b, a, nv));
  }
  cr_assert_eq(sg->n_past, sc->n_past);
  dw_sess_free(sc), dw_sess_free(sg);
  free(a), free(b);
  return worst;
}

Test(cuda_llm, logits_match_cpu_every_type_and_arch) {
  struct { const char *arch, *type, *extra; double tol; } cfg[] = {
      {"llama", "f32", "--llama3-rope", 1e-4}, {"llama", "f16", "", 1e-2}, {"llama", "bf16", "--tied", 1e-2},
      {"llama", "q8_0", "", 1e-2},             {"llama", "q4_0", "", 1e-2}, {"qwen2", "f32", "--tied", 1e-4},
      {"qwen2", "f16", "", 1e-2},              {"qwen2", "q8_0", "--tied", 1e-2}, {"qwen2", "q4_0", "", 1e-2},
      /* the other architectures: windows shorter than the 40-token prefill, soft-caps that bite */
      {"qwen3", "f32", "--head-dim 128", 1e-4},
      {"gemma2", "f32", "--swa 16 --attn-softcap 5 --final-softcap 3", 1e-4},
      {"gemma2", "q4_k", "--swa 16", 1e-2},
      {"gemma3", "f16", "--layers 6 --swa 16 --head-dim 128 --rope-base 1e6", 1e-2},
      {"phi3", "f32", "--rot 32 --swa 24", 1e-4},
      {"phi3", "q8_0", "--longrope --orig-ctx 128", 1e-2},
      {"llama", "f32", "--yarn 4 --orig-ctx 128", 1e-4},
  };
  for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
    dw_model *m = make_model(cfg[i].arch, cfg[i].type, cfg[i].extra);
    double e = compare_engines(m);
    printf("cuda_llm: %s %s %s: max rel err %.2e (tol %.0e)\n", cfg[i].arch, cfg[i].type, cfg[i].extra, e,
           cfg[i].tol);
    cr_expect_leq(e, cfg[i].tol, "%s %s: %.3e > %.0e", cfg[i].arch, cfg[i].type, e, cfg[i].tol);
    dw_model_release(m);
  }
}

/* One step of many one-token sequences at different positions (decodes
 * batched across sessions; more than a GEMV step takes, so the GEMM path
 * with the split decode attention), against each sequence decoded alone
 * on the CPU engine. */
Test(cuda_llm, one_step_of_many_decodes_matches_cpu) {
  enum { NS = 20 };
  dw_model *m = make_model("llama", "f16", "");
  int nv = m->hp.n_vocab;
  dw_session *g[NS], *c[NS];
  dw_step_seq q[NS];
  int32_t tok[NS];
  float *lg = malloc((size_t)NS * nv * sizeof *lg), *lc = malloc(nv * sizeof *lc);
  for (size_t i = 0; i < (size_t)NS * nv; i++) lg[i] = NAN; /* every logit must be written */
  for (int i = 0; i < NS; i++) {
    int32_t pre[80];
    int np = 3 + 4 * i; /* 3 .. 79 positions: up to three KV blocks */
    fill_tokens(pre, np, nv, 100 + i);
    tok[i] = pre[0];
    cr_assert_eq(dw_sess_new(m, gpu, 128, &g[i]), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_sess_new(m, cpu, 128, &c[i]), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_decode(g[i], pre, np, NULL, NULL), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_decode(c[i], pre, np, NULL, NULL), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_sess_reserve(g[i], 1), DW_OK, "%s", dw_last_error());
    q[i] = (dw_step_seq){g[i], &tok[i], 1, lg + (size_t)i * nv, NULL, NULL};
  }
  dw_step_info info;
  cr_assert_eq(gpu->ops->forward(gpu->ctx, g[0]->w->w, q, NS, &info), DW_OK, "%s", dw_last_error());
  double worst = 0;
  for (int i = 0; i < NS; i++) {
    cr_assert_eq(dw_decode(c[i], &tok[i], 1, lc, NULL), DW_OK, "%s", dw_last_error());
    worst = fmax(worst, rel_err(lg + (size_t)i * nv, lc, nv));
    dw_sess_free(g[i]), dw_sess_free(c[i]);
  }
  printf("cuda_llm: one step of %d one-token sequences: max rel err %.2e against the CPU (tol 1e-2)\n", NS, worst);
  cr_expect_leq(worst, 1e-2);
  free(lg), free(lc);
  dw_model_release(m);
}

/* Greedy continuation on one engine: n tokens after the prompt. */
static void greedy(dw_engine *e, dw_model *m, const int32_t *prompt, int np, int n, int32_t *out) {
  int nv = m->hp.n_vocab;
  float *l = malloc(nv * sizeof *l);
  dw_session *s;
  cr_assert_eq(dw_sess_new(m, e, np + n + 1, &s), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_decode(s, prompt, np, l, NULL), DW_OK, "%s", dw_last_error());
  for (int i = 0; i < n; i++) {
    out[i] = argmax(l, nv);
    cr_assert_eq(dw_decode(s, &out[i], 1, l, NULL), DW_OK, "%s", dw_last_error());
  }
  dw_sess_free(s);
  free(l);
}

Test(cuda_llm, greedy_64_tokens_identical_to_cpu) {
  dw_model *ms[4];
  cr_assert_eq(dw_model_load(DEMO_MODEL, false, &ms[0]), DW_OK, "%s", dw_last_error());
  ms[1] = make_model("llama", "f16", "");
  ms[2] = make_model("gemma2", "f32", "--swa 16 --attn-softcap 5 --final-softcap 3");
  ms[3] = make_model("qwen3", "f32", "--head-dim 128");
  for (int k = 0; k < 4; k++) {
    int32_t prompt[6], a[64], b[64];
    fill_tokens(prompt, 6, ms[k]->hp.n_vocab, 11);
    greedy(cpu, ms[k], prompt, 6, 64, a);
    greedy(gpu, ms[k], prompt, 6, 64, b);
    int same = 0;
    while (same < 64 && a[same] == b[same]) same++;
    cr_expect_eq(same, 64, "model %d: the continuations part at token %d (%d vs %d)", k, same, a[same], b[same]);
    dw_model_release(ms[k]);
  }
}

Test(cuda_llm, fork_and_truncate_on_the_gpu) {
  dw_model *m;
  cr_assert_eq(dw_model_load(DEMO_MODEL, false, &m), DW_OK, "%s", dw_last_error());
  int nv = m->hp.n_vocab;
  int32_t pre[45], x[5], y[5];
  fill_tokens(pre, 45, nv, 3), fill_tokens(x, 5, nv, 4), fill_tokens(y, 5, nv, 5);
  float *l1 = malloc(nv * 4), *l2 = malloc(nv * 4), *r1 = malloc(nv * 4), *r2 = malloc(nv * 4);
  dw_session *s, *f, *fresh;
  cr_assert_eq(dw_sess_new(m, gpu, 128, &s), DW_OK);
  cr_assert_eq(dw_decode(s, pre, 40, NULL, NULL), DW_OK);
  cr_assert_eq(dw_sess_fork(s, &f), DW_OK);
  /* both write into the shared block at positions 40..44: copy-on-write */
  cr_assert_eq(dw_decode(s, x, 5, l1, NULL), DW_OK);
  cr_assert_eq(dw_decode(f, y, 5, l2, NULL), DW_OK);
  int32_t sx[45], sy[45];
  memcpy(sx, pre, 160), memcpy(sx + 40, x, 20), memcpy(sy, pre, 160), memcpy(sy + 40, y, 20);
  cr_assert_eq(dw_sess_new(m, gpu, 128, &fresh), DW_OK);
  cr_assert_eq(dw_decode(fresh, sx, 45, r1, NULL), DW_OK);
  cr_expect_leq(rel_err(l1, r1, nv), 1e-2, "the parent's logits after the fork");
  cr_assert_eq(dw_sess_truncate(fresh, 0), DW_OK);
  cr_assert_eq(dw_decode(fresh, sy, 45, r2, NULL), DW_OK);
  cr_expect_leq(rel_err(l2, r2, nv), 1e-2, "the fork's logits");
  /* truncate and redo: the same steps give the same bits */
  cr_assert_eq(dw_sess_truncate(s, 40), DW_OK);
  cr_assert_eq(dw_decode(s, x, 5, r1, NULL), DW_OK);
  cr_expect(!memcmp(r1, l1, nv * 4), "truncate + the same tokens changed the logits");
  dw_sess_free(s), dw_sess_free(f), dw_sess_free(fresh);
  free(l1), free(l2), free(r1), free(r2);
  dw_model_release(m);
}

Test(cuda_llm, all_logits_and_embeddings_match_cpu) {
  dw_model *m = make_model("qwen2", "f16", "");
  int nv = m->hp.n_vocab, n = 12, dim = m->hp.dim;
  int32_t t[12];
  fill_tokens(t, n, nv, 9);
  float *a = malloc((size_t)n * nv * 4), *b = malloc((size_t)n * nv * 4), *ea = malloc(dim * 4),
        *eb = malloc(dim * 4);
  dw_session *sc, *sg;
  cr_assert_eq(dw_sess_new(m, cpu, 64, &sc), DW_OK);
  cr_assert_eq(dw_sess_new(m, gpu, 64, &sg), DW_OK);
  cr_assert_eq(dw_decode(sc, t, n, NULL, a), DW_OK);
  cr_assert_eq(dw_decode(sg, t, n, NULL, b), DW_OK, "%s", dw_last_error());
  for (int i = 0; i < n; i++) cr_expect_leq(rel_err(b + (size_t)i * nv, a + (size_t)i * nv, nv), 1e-2, "row %d", i);
  cr_assert_eq(dw_sess_truncate(sc, 0), DW_OK);
  cr_assert_eq(dw_sess_truncate(sg, 0), DW_OK);
  cr_assert_eq(dw_embed(sc, t, n, ea), DW_OK);
  cr_assert_eq(dw_embed(sg, t, n, eb), DW_OK, "%s", dw_last_error());
  cr_expect_leq(rel_err(eb, ea, dim), 1e-2, "embedding");
  dw_sess_free(sc), dw_sess_free(sg);
  free(a), free(b), free(ea), free(eb);
  dw_model_release(m);
}

/* A session's KV moves GPU → CPU and CPU → GPU in the canonical layout:
 * the continuation is the same greedy text on every side. */
Test(cuda_llm, kv_moves_between_engines) {
  dw_model *m;
  cr_assert_eq(dw_model_load(DEMO_MODEL, false, &m), DW_OK, "%s", dw_last_error());
  const dw_hparams *hp = &m->hp;
  int nv = hp->n_vocab, n = 70; /* three blocks, the last partial */
  size_t half = (size_t)hp->n_layer * n * hp->n_head_kv * hp->head_dim;
  int32_t t[70];
  fill_tokens(t, n, nv, 21);
  dw_engine *es[2] = {gpu, cpu};
  for (int from = 0; from < 2; from++) {
    dw_session *src, *dst;
    cr_assert_eq(dw_sess_new(m, es[from], 128, &src), DW_OK);
    cr_assert_eq(dw_decode(src, t, n, NULL, NULL), DW_OK);
    float *kv = malloc(2 * half * 4);
    cr_assert_eq(dw_sess_export(src, kv, kv + half), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_sess_new(m, es[!from], 128, &dst), DW_OK);
    cr_assert_eq(dw_sess_restore(dst, t, n, kv, kv + half), DW_OK, "%s", dw_last_error());
    /* the exported rows come back bit for bit */
    float *kv2 = malloc(2 * half * 4);
    cr_assert_eq(dw_sess_export(dst, kv2, kv2 + half), DW_OK);
    cr_expect(!memcmp(kv, kv2, 2 * half * 4), "export(import(kv)) != kv");
    float *l1 = malloc(nv * 4), *l2 = malloc(nv * 4);
    int32_t tok = 5, same = 0;
    for (int i = 0; i < 16; i++) {
      cr_assert_eq(dw_decode(src, &tok, 1, l1, NULL), DW_OK);
      cr_assert_eq(dw_decode(dst, &tok, 1, l2, NULL), DW_OK);
      cr_expect_leq(rel_err(l2, l1, nv), 1e-3, "step %d after moving %s", i, from ? "cpu→gpu" : "gpu→cpu");
      same += argmax(l1, nv) == argmax(l2, nv);
      tok = argmax(l1, nv);
    }
    cr_expect_eq(same, 16, "greedy continuation after moving %s", from ? "cpu→gpu" : "gpu→cpu");
    dw_sess_free(src), dw_sess_free(dst);
    free(kv), free(kv2), free(l1), free(l2);
  }
  dw_model_release(m);
}

Test(cuda_llm, weights_loaded_once_per_model) {
  dw_model *m;
  cr_assert_eq(dw_model_load(DEMO_MODEL, false, &m), DW_OK, "%s", dw_last_error());
  dw_session *a, *b;
  cr_assert_eq(dw_sess_new(m, gpu, 32, &a), DW_OK);
  cr_assert_eq(dw_sess_new(m, gpu, 32, &b), DW_OK);
  cr_assert_eq(a->w, b->w, "two sessions, two copies of the weights");
  cr_assert_gt(a->w->device_bytes, 0);
  dw_sess_free(a), dw_sess_free(b);
  dw_model_release(m);
}

static bool have_cuda_engine(const char **why) {
  dw_engine *e;
  if (dw_engine_create("cuda", 0, NULL, &e) != DW_OK) return *why = dw_last_error(), false;
  dw_engine_destroy(e);
  return true;
}

int main(int argc, char **argv) { return dw_test_main(argc, argv, "cuda_llm_test", have_cuda_engine); }
