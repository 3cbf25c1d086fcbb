/*
 * llm_native.c — the native side of the LLM benchmark: the same work as
 * llm_guest.c (prefill exactly N tokens of the same text, then M greedy
 * decode steps, best of REPS) through the public C API, with the SDK
 * sampler compiled natively.
 *
 *   bench_llm_native MODEL.gguf N_PROMPT N_DECODE [REPS] [THREADS]
 */
#define _POSIX_C_SOURCE 200809L
#include "driftwood.h"

#include <driftwood_sampler.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_llm_native MODEL.gguf [N_PROMPT] [N_DECODE] [REPS] [THREADS]\n");
    return 2;
  }
  int np = argc > 2 ? atoi(argv[2]) : 128, nd = argc > 3 ? atoi(argv[3]) : 64, reps = argc > 4 ? atoi(argv[4]) : 3;
  dw_runtime_config rc = {.backend = "cpu", .threads = argc > 5 ? atoi(argv[5]) : 0};
  dw_runtime *rt;
  dw_model *m;
  if (dw_runtime_create(&rc, &rt) || dw_model_open(argv[1], 0, &m)) {
    fprintf(stderr, "bench_llm_native: %s\n", dw_last_error());
    return 1;
  }
  dw_model_info info;
  dw_model_get_info(m, &info);
  static const char text[] = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
  int32_t *tok = malloc(sizeof(int32_t) * (size_t)(np + 64));
  size_t n = 0;
  int have = 0;
  while (have < np) {
    if (dw_model_tokenize(m, text, sizeof text - 1, have == 0 ? DW_TOKENIZE_ADD_SPECIAL : 0, tok + have,
                          (size_t)(np + 64 - have), &n))
      return 1;
    have += (int)n;
  }
  float *logits = malloc(sizeof(float) * info.n_vocab);
  dws_params p = dws_default_params();
  p.temp = 0;
  dws_sampler s;
  dws_init(&s, &p, (int32_t)info.n_vocab);
  double best_pf = 1e9, best_dc = 1e9;
  /* one session, emptied between repetitions (as llama-bench clears its KV cache) */
  dw_session *sess;
  if (dw_session_create(rt, m, np + nd + 1, &sess)) return 1;
  for (int r = 0; r < reps; r++) {
    if (dw_session_truncate(sess, 0)) return 1;
    double t0 = now();
    if (dw_session_decode(sess, tok, np, logits)) return 1;
    double t1 = now();
    for (int i = 0; i < nd; i++) {
      int32_t t = dws_sample(&s, logits);
      if (dw_session_decode(sess, &t, 1, logits)) return 1;
    }
    double t2 = now();
    if (t1 - t0 < best_pf) best_pf = t1 - t0;
    if (t2 - t1 < best_dc) best_dc = t2 - t1;
  }
  dw_session_destroy(sess);
  printf("native: prefill %d tokens %.1f tok/s; decode %d tokens %.1f tok/s (best of %d)\n", np, np / best_pf, nd,
         nd / best_dc, reps);
  dws_free(&s);
  free(tok);
  free(logits);
  dw_model_close(m);
  dw_runtime_destroy(rt);
  return 0;
}
