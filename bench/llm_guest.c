/*
 * llm_guest.c — the guest side of the LLM benchmark: prefill a prompt of
 * exactly N tokens, then greedy-decode M tokens, all through the driftwood
 * ABI (logits land in this guest's memory; argmax runs in the guest), and
 * print the timings. bench/llm.sh runs it beside `driftwood generate`,
 * which does the same work natively.
 *
 *   driftwood run --model m=M.gguf llm_guest.wasm N_PROMPT N_DECODE [REPS]
 */
#include <driftwood.h>
#include <driftwood_sampler.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  int np = argc > 1 ? atoi(argv[1]) : 128, nd = argc > 2 ? atoi(argv[2]) : 64, reps = argc > 3 ? atoi(argv[3]) : 3;
  dw_model_t m;
  dw_model_info info;
  if (dw_model_open("", 0, &m) || dw_model_info_get(m, &info)) {
    fprintf(stderr, "llm_guest: no model (pass --model NAME=PATH)\n");
    return 1;
  }
  /* the prompt: a fixed text, tokenized and cut to exactly np tokens */
  static const char text[] = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
  int32_t *tok = malloc(sizeof(int32_t) * (size_t)(np + 64));
  uint32_t n = 0;
  int have = 0;
  while (have < np) {
    if (dw_tokenize(m, text, sizeof text - 1, have == 0 ? DW_TOKENIZE_ADD_SPECIAL : 0, tok + have,
                    (uint32_t)(np + 64 - have), &n))
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
  dw_session_t sess;
  if (dw_session_new(m, (uint32_t)(np + nd + 1), &sess)) return 1;
  for (int r = 0; r < reps; r++) {
    if (dw_session_truncate(sess, 0)) return 1;
    double t0 = now();
    if (dw_decode(sess, tok, (uint32_t)np, logits)) return 1;
    double t1 = now();
    for (int i = 0; i < nd; i++) {
      int32_t t = dws_sample(&s, logits);
      if (dw_decode(sess, &t, 1, logits)) return 1;
    }
    double t2 = now();
    if (t1 - t0 < best_pf) best_pf = t1 - t0;
    if (t2 - t1 < best_dc) best_dc = t2 - t1;
  }
  dw_session_free(sess);
  printf("guest: prefill %d tokens %.1f tok/s; decode %d tokens %.1f tok/s (best of %d)\n", np, np / best_pf, nd,
         nd / best_dc, reps);
  return 0;
}
