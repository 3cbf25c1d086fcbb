/*
 * chat.c — a chat guest: applies the model's chat template, tokenizes
 * through the driftwood ABI, calls decode (the logits land in this guest's
 * own memory), samples with the SDK sampler and streams the reply.
 *
 *   driftwood run --model default=M.gguf build/examples/chat.wasm [OPTIONS] "prompt"
 *
 * OPTIONS: --model NAME (the alias to open; default: the first registered)
 *          --system TEXT, -n N (max reply tokens, default 64), --temp T,
 *          --top-k K, --top-p P, --min-p M, --repeat-penalty R, --seed S
 *          --stats (print token counts to stderr)
 * With the same seed the reply is the same, byte for byte.
 */
#include <driftwood_guest.h>
#include <driftwood_sampler.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, int32_t st) {
  fprintf(stderr, "chat: %s failed with status %d\n", what, st);
  return 1;
}

int main(int argc, char **argv) {
  const char *name = "", *system = NULL, *prompt = NULL;
  int n_predict = 64, stats = 0;
  dws_params sp = dws_default_params();
  sp.repeat_penalty = 1.1f;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--model") && has) name = argv[++i];
    else if (!strcmp(a, "--system") && has) system = argv[++i];
    else if (!strcmp(a, "-n") && has) n_predict = atoi(argv[++i]);
    else if (!strcmp(a, "--temp") && has) sp.temp = (float)atof(argv[++i]);
    else if (!strcmp(a, "--top-k") && has) sp.top_k = atoi(argv[++i]);
    else if (!strcmp(a, "--top-p") && has) sp.top_p = (float)atof(argv[++i]);
    else if (!strcmp(a, "--min-p") && has) sp.min_p = (float)atof(argv[++i]);
    else if (!strcmp(a, "--repeat-penalty") && has) sp.repeat_penalty = (float)atof(argv[++i]);
    else if (!strcmp(a, "--seed") && has) sp.seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--stats")) stats = 1;
    else prompt = a;
  }
  if (!prompt) {
    fprintf(stderr, "usage: chat.wasm [--model NAME] [--system TEXT] [-n N] [--temp T] [--seed S] PROMPT\n");
    return 2;
  }
  dwg_model model;
  dwg_model_info info;
  int32_t st;
  if ((st = dwg_model_open(name, (uint32_t)strlen(name), &model))) return fail("model_open (did you pass --model?)", st);
  if ((st = dwg_model_info_get(model, &info))) return fail("model_info", st);

  /* the chat template, detected from the model's metadata */
  static char tmpl[16384];
  uint32_t tl = 0;
  int kind = dwg_model_meta(model, "tokenizer.chat_template", 23, tmpl, sizeof tmpl, &tl) == DWG_OK
                 ? dws_chat_detect(tmpl, tl)
                 : DWS_CHAT_CHATML;
  dws_msg msgs[2];
  int nm = 0;
  if (system) msgs[nm++] = (dws_msg){"system", system};
  msgs[nm++] = (dws_msg){"user", prompt};
  size_t need = dws_chat_render(kind, msgs, nm, 1, NULL, 0);
  char *text = malloc(need + 1);
  if (!text) return fail("malloc", 0);
  dws_chat_render(kind, msgs, nm, 1, text, need + 1);

  uint32_t flags = DWG_TOKENIZE_PARSE_SPECIAL | (dws_chat_add_special(kind) ? DWG_TOKENIZE_ADD_SPECIAL : 0);
  uint32_t cap = (uint32_t)need + 8, n = 0;
  int32_t *tokens = malloc(cap * sizeof *tokens);
  float *logits = malloc(info.n_vocab * sizeof *logits);
  if (!tokens || !logits) return fail("malloc", 0);
  if ((st = dwg_tokenize(model, text, (uint32_t)need, flags, tokens, cap, &n))) return fail("tokenize", st);

  dwg_session sess;
  if ((st = dwg_session_new(model, 0, &sess))) return fail("session_new", st);
  dws_sampler smp;
  if (dws_init(&smp, &sp, (int32_t)info.n_vocab)) return fail("sampler", 0);
  for (uint32_t i = 0; i < n; i++) dws_accept(&smp, tokens[i]);
  if ((st = dwg_decode(sess, tokens, n, logits))) return fail("decode (prompt)", st);

  int generated = 0;
  for (; generated < n_predict; generated++) {
    int32_t tok = dws_sample(&smp, logits);
    if (tok == info.eos || tok == info.eot) break;
    char piece[128];
    uint32_t pl = 0;
    if (dwg_token_piece(model, tok, piece, sizeof piece, &pl) == DWG_OK) dwg_emit(piece, pl);
    st = dwg_decode(sess, &tok, 1, logits);
    if (st == DWG_ERR_LIMIT) break; /* context full */
    if (st) return fail("decode", st);
  }
  dwg_emit("\n", 1);
  if (stats) fprintf(stderr, "chat: template %d, prompt %u tokens, generated %d\n", kind, n, generated);
  dws_free(&smp);
  dwg_session_free(sess);
  return 0;
}
