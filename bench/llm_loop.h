/*
 * llm_loop.h — the LLM benchmark's loop, shared by its guest side
 * (llm_guest.c, through the driftwood ABI) and its native side
 * (llm_native.c, through the C API), so that both do exactly the same
 * work: prefill exactly N tokens of a fixed text, then M greedy decode
 * steps (the SDK sampler at temperature 0), best of REPS, the session
 * emptied between repetitions (as llama-bench clears its KV cache).
 */
#ifndef DW_BENCH_LLM_LOOP_H
#define DW_BENCH_LLM_LOOP_H

#include <driftwood_sampler.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* One side's access to a model and one session; each returns 0 on success. */
typedef struct llm_ops {
  void *ctx;
  int (*tokenize)(void *ctx, const char *text, size_t len, int add_special, int32_t *out, size_t cap, size_t *n);
  int (*decode)(void *ctx, const int32_t *tokens, int n, float *logits);
  int (*empty)(void *ctx);
} llm_ops;

static double llm_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs the benchmark and prints "<who>: prefill ... decode ..."; 0 on success. */
static int llm_bench(const char *who, const llm_ops *o, int32_t n_vocab, int np, int nd, int reps) {
  static const char text[] = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
  int32_t *tok = malloc(sizeof(int32_t) * (size_t)(np + 64));
  float *logits = malloc(sizeof(float) * (size_t)n_vocab);
  if (!tok || !logits) return 1;
  for (int have = 0; have < np;) { /* the prompt: the text repeated, cut to exactly np tokens */
    size_t n = 0;
    int st = o->tokenize(o->ctx, text, sizeof text - 1, have == 0, tok + have, (size_t)(np + 64 - have), &n);
    if (st) return fprintf(stderr, "%s: tokenize failed (status %d)\n", who, st), 1;
    have += (int)n;
  }
  dws_params p = dws_default_params();
  p.temp = 0;
  dws_sampler s;
  dws_init(&s, &p, n_vocab);
  double best_pf = 1e9, best_dc = 1e9;
  for (int r = 0; r < reps; r++) {
    int st = o->empty(o->ctx);
    if (st) return fprintf(stderr, "%s: emptying the session failed (status %d)\n", who, st), 1;
    double t0 = llm_now();
    if ((st = o->decode(o->ctx, tok, np, logits))) return fprintf(stderr, "%s: prefill failed (status %d)\n", who, st), 1;
    double t1 = llm_now();
    for (int i = 0; i < nd; i++) {
      int32_t t = dws_sample(&s, logits);
      if ((st = o->decode(o->ctx, &t, 1, logits)))
        return fprintf(stderr, "%s: decode step %d failed (status %d)\n", who, i, st), 1;
    }
    double t2 = llm_now();
    if (t1 - t0 < best_pf) best_pf = t1 - t0;
    if (t2 - t1 < best_dc) best_dc = t2 - t1;
  }
  printf("%s: prefill %d tokens %.1f tok/s; decode %d tokens %.1f tok/s (best of %d)\n", who, np, np / best_pf, nd,
         nd / best_dc, reps);
  dws_free(&s);
  free(tok);
  free(logits);
  return 0;
}

#endif
