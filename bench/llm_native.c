/*
 * llm_native.c — the native side of the LLM benchmark (the loop is
 * llm_loop.h, the same as llm_guest.c's) through the public C API, with
 * the SDK sampler compiled natively.
 *
 *   bench_llm_native MODEL.gguf N_PROMPT N_DECODE [REPS] [THREADS] [BACKEND]
 *
 * BACKEND: cpu (default), cuda or auto.
 */
#define _POSIX_C_SOURCE 200809L
#include "driftwood.h"

#include "llm_loop.h"

typedef struct native {
  dw_model *model;
  dw_session *sess;
} native;

static int n_tokenize(void *ctx, const char *text, size_t len, int add_special, int32_t *out, size_t cap,
                      size_t *n) {
  return dw_model_tokenize(((native *)ctx)->model, text, len, add_special ? DW_TOKENIZE_ADD_SPECIAL : 0, out, cap, n);
}
static int n_decode(void *ctx, const int32_t *t, int n, float *logits) {
  return dw_session_decode(((native *)ctx)->sess, t, n, logits);
}
static int n_empty(void *ctx) { return dw_session_truncate(((native *)ctx)->sess, 0); }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_llm_native MODEL.gguf [N_PROMPT] [N_DECODE] [REPS] [THREADS] [BACKEND]\n");
    return 2;
  }
  int np = argc > 2 ? atoi(argv[2]) : 128, nd = argc > 3 ? atoi(argv[3]) : 64, reps = argc > 4 ? atoi(argv[4]) : 3;
  dw_runtime_config rc = {.backend = argc > 6 ? argv[6] : "cpu", .threads = argc > 5 ? atoi(argv[5]) : 0};
  dw_runtime *rt;
  native g = {0};
  dw_model_info info;
  if (dw_runtime_create(&rc, &rt) || dw_model_open(argv[1], 0, &g.model) ||
      dw_session_create(rt, g.model, np + nd + 1, &g.sess)) {
    fprintf(stderr, "bench_llm_native: %s\n", dw_last_error());
    return 1;
  }
  dw_model_get_info(g.model, &info);
  llm_ops o = {&g, n_tokenize, n_decode, n_empty};
  int code = llm_bench("native", &o, (int32_t)info.n_vocab, np, nd, reps);
  dw_session_destroy(g.sess);
  dw_model_close(g.model);
  dw_runtime_destroy(rt);
  return code;
}
