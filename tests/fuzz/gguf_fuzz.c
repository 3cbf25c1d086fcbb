/*
 * gguf_fuzz.c — libFuzzer target for everything a model file reaches: the
 * GGUF parser, the hyperparameter and shape checks, the tokenizer loader,
 * and, when a file passes them all, tokenizing and a 2-token decode.
 * Built by `make fuzz` (clang, ASan + UBSan); seeds: tests/fuzz/seeds/ and
 * the demo model.
 */
#include "llm/session.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dw_gguf *g;
  if (dw_gguf_parse(data, size, &g) != DW_OK) return 0;
  dw_model *m;
  bool vocab_only = size & 1; /* exercise both paths */
  if (dw_model_from_gguf(g, "fuzz", vocab_only, &m) != DW_OK) return 0;
  int32_t ids[64];
  size_t n = 0;
  static const char text[] = " Hello <s> world\n\n 123 ½ \xff\xfe <|im_start|>";
  dw_tokenize(m->tok, text, sizeof text - 1, true, true, ids, 64, &n);
  for (size_t i = 0; i < n && i < 64; i++) {
    char piece[64];
    size_t pl;
    dw_token_piece(m->tok, ids[i], piece, sizeof piece, &pl);
  }
  dw_session *s;
  dw_engine *e = NULL; /* one per input: an engine keeps the models it prepared */
  if (!vocab_only && m->hp.n_vocab > 0 && dw_engine_create("cpu", 1, NULL, &e) != DW_OK) abort();
  if (e && dw_sess_new(m, e, 8, &s) == DW_OK) {
    int32_t t[2] = {0, m->hp.n_vocab - 1};
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    if (logits) dw_decode(s, t, 2, logits, NULL);
    free(logits);
    dw_sess_free(s);
  }
  dw_engine_destroy(e);
  dw_model_release(m);
  return 0;
}
