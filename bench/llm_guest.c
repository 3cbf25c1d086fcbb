/*
 * llm_guest.c — the guest side of the LLM benchmark (the loop is
 * llm_loop.h): everything goes through the driftwood ABI (logits land in
 * this guest's memory; sampling runs in the guest). bench/llm.sh runs it
 * beside bench_llm_native, which does the same work natively.
 *
 *   driftwood run --model m=M.gguf llm_guest.wasm N_PROMPT N_DECODE [REPS]
 */
#include <driftwood_guest.h>

#include "llm_loop.h"

typedef struct guest {
  dwg_model model;
  dwg_session sess;
} guest;

static int g_tokenize(void *ctx, const char *text, size_t len, int add_special, int32_t *out, size_t cap,
                      size_t *n) {
  uint32_t got = 0;
  int st = dwg_tokenize(((guest *)ctx)->model, text, (uint32_t)len, add_special ? DWG_TOKENIZE_ADD_SPECIAL : 0, out,
                       (uint32_t)cap, &got);
  *n = got;
  return st;
}
static int g_decode(void *ctx, const int32_t *t, int n, float *logits) {
  return dwg_decode(((guest *)ctx)->sess, t, (uint32_t)n, logits);
}
static int g_empty(void *ctx) { return dwg_session_truncate(((guest *)ctx)->sess, 0); }

int main(int argc, char **argv) {
  int np = argc > 1 ? atoi(argv[1]) : 128, nd = argc > 2 ? atoi(argv[2]) : 64, reps = argc > 3 ? atoi(argv[3]) : 3;
  guest g;
  dwg_model_info info;
  if (dwg_model_open("", 0, &g.model) || dwg_model_info_get(g.model, &info)) {
    fprintf(stderr, "llm_guest: no model (pass --model NAME=PATH)\n");
    return 1;
  }
  int st = dwg_session_new(g.model, (uint32_t)(np + nd + 1), &g.sess);
  if (st) return fprintf(stderr, "llm_guest: session_new failed (status %d)\n", st), 1;
  llm_ops o = {&g, g_tokenize, g_decode, g_empty};
  int rc = llm_bench("guest", &o, (int32_t)info.n_vocab, np, nd, reps);
  dwg_session_free(g.sess);
  return rc;
}
