/*
 * kv_actor.c — the actor of the snapshot benchmark: "fill N" appends N
 * token ids to its KV session (one decode call, like a prompt prefill).
 */
#include <driftwood_guest.h>

#include <stdlib.h>
#include <string.h>

static dwg_model model;
static dwg_session sess;
static float *logits;

__attribute__((export_name("dw_alloc"))) void *dw_alloc(uint32_t len) { return malloc(len ? len : 1); }

__attribute__((export_name("dw_on_message"))) int32_t dw_on_message(char *msg, uint32_t len) {
  dwg_model_info info;
  int32_t st;
  if (len < 6 || memcmp(msg, "fill ", 5)) return DWG_ERR_INVALID_ARG;
  int n = atoi(msg + 5);
  free(msg);
  if (!sess && ((st = dwg_model_open("", 0, &model)) || (st = dwg_model_info_get(model, &info)) ||
                (st = dwg_session_new(model, 0, &sess))))
    return st;
  dwg_model_info_get(model, &info);
  if (!logits && !(logits = malloc(info.n_vocab * sizeof *logits))) return DWG_ERR_NOMEM;
  int32_t *tok = malloc((size_t)n * sizeof *tok);
  for (int i = 0; i < n; i++) tok[i] = (int32_t)(1000 + (i * 7919) % (info.n_vocab - 2000));
  st = dwg_decode(sess, tok, (uint32_t)n, logits);
  free(tok);
  return st;
}
