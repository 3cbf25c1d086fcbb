/*
 * echo_actor.c — a minimal actor for the snapshot tests: replies
 * "<n>: <message>" with a counter kept in its memory, traps on "trap",
 * grows its memory on "grow", never returns from "spin", writes a byte into every other 4 KiB page of
 * 4 MiB on "scatter" (more separate runs of pages than a snapshot maps one
 * by one) and sums them back on "check", and keeps a KV session on "llm" messages
 * (decoding the message's tokens) so sessions can be checked; "model NAME"
 * opens model NAME and starts that session over on it (replying with the
 * model handle).
 */
#include <driftwood_guest.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int counter;
static volatile unsigned char *scat;
static dwg_session sess;
static dwg_model model;

__attribute__((export_name("dw_alloc"))) void *dw_alloc(uint32_t len) { return malloc(len ? len : 1); }

__attribute__((export_name("dw_on_message"))) int32_t dw_on_message(char *msg, uint32_t len) {
  char out[512];
  if (len == 4 && !memcmp(msg, "trap", 4)) __builtin_trap();
  if (len == 4 && !memcmp(msg, "spin", 4))
    for (volatile int i = 0;; i++) counter += i & 1;
  if (len == 4 && !memcmp(msg, "grow", 4)) {
    volatile char *big = malloc(4 << 20);
    big[0] = 1, big[(4 << 20) - 1] = 2;
  }
  if (len == 7 && !memcmp(msg, "scatter", 7)) {
    scat = malloc(4 << 20);
    for (int i = 0; i < 512; i++) scat[i * 8192] = (unsigned char)(i % 255 + 1);
  }
  if (len == 5 && !memcmp(msg, "check", 5)) {
    unsigned sum = 0, nonzero = 0;
    for (int i = 0; scat && i < (4 << 20); i++) sum += scat[i] * (unsigned)(i + 1), nonzero += scat[i] != 0;
    int k = snprintf(out, sizeof out, "%d: check %u %u\n", ++counter, sum, nonzero);
    dwg_emit(out, (uint32_t)k);
    free(msg);
    return 0;
  }
  if (len > 6 && !memcmp(msg, "model ", 6)) {
    int32_t st;
    if (sess) dwg_session_free(sess), sess = 0;
    if ((st = dwg_model_open(msg + 6, len - 6, &model)) || (st = dwg_session_new(model, 256, &sess))) return st;
    int k = snprintf(out, sizeof out, "%d: model %u\n", ++counter, (unsigned)model);
    dwg_emit(out, (uint32_t)k);
    free(msg);
    return 0;
  }
  if (len > 4 && !memcmp(msg, "llm ", 4)) {
    dwg_model_info info;
    int32_t st = 0;
    if (!sess && ((st = dwg_model_open("", 0, &model)) || (st = dwg_session_new(model, 256, &sess)))) return st;
    dwg_model_info_get(model, &info);
    int32_t tok[64];
    uint32_t n = 0;
    float *logits = malloc(info.n_vocab * sizeof(float));
    if ((st = dwg_tokenize(model, msg + 4, len - 4, 0, tok, 64, &n)) || (st = dwg_decode(sess, tok, n, logits))) return st;
    int best = 0;
    for (uint32_t i = 1; i < info.n_vocab; i++)
      if (logits[i] > logits[best]) best = (int)i;
    uint32_t pos;
    dwg_session_len(sess, &pos);
    free(logits);
    int k = snprintf(out, sizeof out, "%d: next %d at %u\n", ++counter, best, pos);
    dwg_emit(out, (uint32_t)k);
    free(msg);
    return 0;
  }
  int k = snprintf(out, sizeof out, "%d: %.*s\n", ++counter, (int)(len > 400 ? 400 : len), msg);
  dwg_emit(out, (uint32_t)k);
  free(msg);
  return 0;
}
