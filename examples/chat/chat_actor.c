/*
 * chat_actor.c — the chat example as an actor (a reactor module): each
 * message is a user turn; the conversation lives in the KV session and the
 * sampler in this guest's memory, so both grow across turns and survive
 * freeze/thaw (driftwood actor spawn / send / fork).
 *
 * An actor has no arguments: a message "/set seed=N temp=T n=N" before the
 * first turn sets the sampling options (replied to with "ok"); otherwise
 * the defaults are seed 42, temperature 0.7, up to 48 reply tokens. The
 * model is the first one the host registered.
 */
#include <driftwood_guest.h>
#include <driftwood_sampler.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
  int ready, turns, kind, n_predict;
  dwg_model model;
  dwg_model_info info;
  dwg_session sess;
  dws_params params;
  dws_sampler smp;
  float *logits;
} S;

__attribute__((export_name("dw_alloc"))) void *dw_alloc(uint32_t len) { return malloc(len ? len : 1); }

static void say(const char *s) { dwg_emit(s, (uint32_t)strlen(s)); }

static int32_t setup(void) {
  static char tmpl[16384];
  uint32_t tl = 0;
  int32_t st;
  if ((st = dwg_model_open("", 0, &S.model)) || (st = dwg_model_info_get(S.model, &S.info))) return st;
  S.kind = dwg_model_meta(S.model, "tokenizer.chat_template", 23, tmpl, sizeof tmpl, &tl) == DWG_OK
               ? dws_chat_detect(tmpl, tl)
               : DWS_CHAT_CHATML;
  if ((st = dwg_session_new(S.model, 0, &S.sess))) return st;
  if (!(S.logits = malloc(S.info.n_vocab * sizeof *S.logits))) return DWG_ERR_NOMEM;
  if (dws_init(&S.smp, &S.params, (int32_t)S.info.n_vocab)) return DWG_ERR_NOMEM;
  S.ready = 1;
  return DWG_OK;
}

__attribute__((export_name("dw_on_message"))) int32_t dw_on_message(char *msg, uint32_t len) {
  char *text = malloc(len + 1);
  if (!text) return DWG_ERR_NOMEM;
  memcpy(text, msg, len);
  text[len] = 0;
  free(msg);
  if (!S.ready && !S.params.temp && !S.n_predict) { /* defaults, before the first turn */
    S.params = dws_default_params();
    S.params.temp = 0.7f;
    S.params.seed = 42;
    S.n_predict = 48;
  }
  if (!strncmp(text, "/set ", 5)) {
    if (S.ready) {
      say("error: /set only before the first turn\n");
      free(text);
      return DWG_ERR_INVALID_ARG;
    }
    for (char *tok = strtok(text + 5, " "); tok; tok = strtok(NULL, " ")) {
      if (!strncmp(tok, "seed=", 5)) S.params.seed = strtoull(tok + 5, NULL, 10);
      else if (!strncmp(tok, "temp=", 5)) S.params.temp = (float)atof(tok + 5);
      else if (!strncmp(tok, "n=", 2)) S.n_predict = atoi(tok + 2);
    }
    say("ok\n");
    free(text);
    return DWG_OK;
  }
  int32_t st;
  if (!S.ready && (st = setup())) {
    free(text);
    return st;
  }
  size_t need = dws_chat_render_turn(S.kind, NULL, text, S.turns == 0, NULL, 0);
  char *prompt = malloc(need + 1);
  uint32_t cap = (uint32_t)need + 8, n = 0;
  int32_t *tokens = malloc(cap * sizeof *tokens);
  if (!prompt || !tokens) return DWG_ERR_NOMEM;
  dws_chat_render_turn(S.kind, NULL, text, S.turns == 0, prompt, need + 1);
  uint32_t flags = DWG_TOKENIZE_PARSE_SPECIAL | (S.turns == 0 && dws_chat_add_special(S.kind) ? DWG_TOKENIZE_ADD_SPECIAL : 0);
  st = dwg_tokenize(S.model, prompt, (uint32_t)need, flags, tokens, cap, &n);
  if (!st) st = dwg_decode(S.sess, tokens, n, S.logits);
  for (uint32_t i = 0; !st && i < n; i++) dws_accept(&S.smp, tokens[i]);
  for (int i = 0; !st && i < S.n_predict; i++) {
    int32_t tok = dws_sample(&S.smp, S.logits);
    int eog = tok == S.info.eos || tok == S.info.eot;
    if (!eog) {
      char piece[128];
      uint32_t pl = 0;
      if (dwg_token_piece(S.model, tok, piece, sizeof piece, &pl) == DWG_OK) dwg_emit(piece, pl);
    }
    /* the end-of-turn token goes into the KV too, so the next turn follows it */
    st = dwg_decode(S.sess, &tok, 1, S.logits);
    if (eog) break;
  }
  if (st == DWG_ERR_LIMIT) say(" [context full]");
  say("\n");
  S.turns++;
  free(prompt);
  free(tokens);
  free(text);
  return st == DWG_ERR_LIMIT ? DWG_OK : st;
}
