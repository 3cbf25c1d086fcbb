/*
 * chat_serve.c — the chat actor behind `driftwood serve`'s OpenAI endpoints
 * (/v1/chat/completions, /v1/completions). The guest is the control plane:
 * it renders the chat template, samples, applies stop strings and the token
 * limit; the host only translates HTTP and JSON.
 *
 * One message is one request, in lines the host writes (docs/serve.md):
 *   mode chat|text          chat: render `message`s with the template
 *   model NAME              the registered model to use ("" = the first)
 *   max_tokens N            reply tokens at most (0: until the context ends)
 *   temperature F / top_p F / seed N
 *   stop LEN\n BYTES\n      a stop string (up to 4)
 *   message ROLE LEN\n BYTES\n   one chat message, in order
 *   prompt LEN\n BYTES\n    the text of a text completion
 * Replies are frames, one per emit, told apart by the first byte:
 *   'T' text      a piece of the reply, never a part of a stop string
 *   'E' text      the request failed: "CODE message" (CODE a dw_status)
 *   'D' text      done: "prompt=N completion=N cached=N finish=stop|length"
 *
 * The conversation stays in the actor: its KV session and the tokens in
 * it. A request whose rendered prompt starts with tokens the session
 * already holds (the next turn of the same conversation, with the whole
 * history resent as OpenAI clients do) re-uses them and prefills only the
 * rest; `cached` counts the re-used tokens.
 */
#include <driftwood_guest.h>
#include <driftwood_sampler.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STOP 4
#define MAX_MSGS 256

typedef struct req {
  int chat;
  char model[128];
  int max_tokens;
  dws_params params;
  int n_stop;
  const char *stop[MAX_STOP];
  uint32_t stop_len[MAX_STOP];
  int n_msgs;
  dws_msg msgs[MAX_MSGS];
  const char *prompt;
  uint32_t prompt_len;
} req;

/* What lives across requests: the model and session, and what the KV holds. */
static struct {
  char model[128];
  dwg_model m;
  dwg_model_info info;
  int kind;
  dwg_session sess;
  int32_t *hist; /* the tokens in the session, [info.n_ctx_train] */
  uint32_t n_hist;
  float *logits;
} S;

__attribute__((export_name("dw_alloc"))) void *dw_alloc(uint32_t len) { return malloc(len ? len : 1); }

static void frame(char type, const char *s, size_t n) {
  char *b = malloc(n + 1);
  if (!b) return;
  b[0] = type;
  memcpy(b + 1, s, n);
  dwg_emit(b, (uint32_t)(n + 1));
  free(b);
}

static int32_t fail(int32_t code, const char *msg) {
  char b[512];
  int n = snprintf(b, sizeof b, "%d %s", code, msg);
  frame('E', b, (size_t)n);
  return code;
}

/* Parses the request in place (strings are NUL-terminated in msg). */
static int parse(char *p, char *end, req *r) {
  memset(r, 0, sizeof *r);
  r->params = dws_default_params();
  r->params.temp = 1.0f, r->params.top_p = 1.0f, r->params.top_k = 0, r->params.min_p = 0;
  r->chat = 1;
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return -1;
    *nl = 0;
    char *val = strchr(p, ' ');
    if (!val) return -1;
    *val++ = 0;
    char *next = nl + 1;
    if (!strcmp(p, "mode")) r->chat = !strcmp(val, "chat");
    else if (!strcmp(p, "model")) snprintf(r->model, sizeof r->model, "%s", val);
    else if (!strcmp(p, "max_tokens")) r->max_tokens = atoi(val);
    else if (!strcmp(p, "temperature")) r->params.temp = (float)atof(val);
    else if (!strcmp(p, "top_p")) r->params.top_p = (float)atof(val);
    else if (!strcmp(p, "seed")) r->params.seed = strtoull(val, NULL, 10);
    else if (!strcmp(p, "stop") || !strcmp(p, "message") || !strcmp(p, "prompt")) {
      char *role = val;
      if (!strcmp(p, "message")) {
        if (!(val = strchr(val, ' '))) return -1;
        *val++ = 0;
      }
      unsigned long n = strtoul(val, NULL, 10);
      if (n > (unsigned long)(end - next) || (size_t)(end - next) < n + 1 || next[n] != '\n') return -1;
      next[n] = 0;
      if (!strcmp(p, "stop")) {
        if (r->n_stop == MAX_STOP) return -1;
        if (n) r->stop[r->n_stop] = next, r->stop_len[r->n_stop++] = (uint32_t)n;
      } else if (!strcmp(p, "message")) {
        if (r->n_msgs == MAX_MSGS) return -1;
        r->msgs[r->n_msgs].role = role;
        r->msgs[r->n_msgs++].content = next;
      } else {
        r->prompt = next, r->prompt_len = (uint32_t)n;
      }
      next += n + 1;
    }
    p = next;
  }
  return 0;
}

static int32_t use_model(const char *name) {
  if (S.sess && !strcmp(S.model, name)) return DWG_OK;
  if (S.sess) dwg_session_free(S.sess);
  S.sess = 0, S.n_hist = 0;
  free(S.hist), free(S.logits);
  S.hist = NULL, S.logits = NULL;
  int32_t st;
  if ((st = dwg_model_open(name, (uint32_t)strlen(name), &S.m)) || (st = dwg_model_info_get(S.m, &S.info))) return st;
  static char tmpl[16384];
  uint32_t tl = 0;
  S.kind = dwg_model_meta(S.m, "tokenizer.chat_template", 23, tmpl, sizeof tmpl, &tl) == DWG_OK ? dws_chat_detect(tmpl, tl)
                                                                                              : DWS_CHAT_CHATML;
  if ((st = dwg_session_new(S.m, 0, &S.sess))) return st;
  S.hist = malloc(S.info.n_ctx_train * sizeof *S.hist);
  S.logits = malloc(S.info.n_vocab * sizeof *S.logits);
  if (!S.hist || !S.logits) return DWG_ERR_NOMEM;
  snprintf(S.model, sizeof S.model, "%s", name);
  return DWG_OK;
}

/* The longest suffix of text[0..n) that is a proper prefix of a stop
 * string: it may not be sent yet. */
static size_t held_back(const req *r, const char *text, size_t n) {
  size_t keep = 0;
  for (int i = 0; i < r->n_stop; i++)
    for (size_t k = r->stop_len[i] - 1; k > keep; k--)
      if (k <= n && !memcmp(text + n - k, r->stop[i], k)) {
        keep = k;
        break;
      }
  return keep;
}

/* The first stop string in text[0..n), as its offset, or -1. */
static long stop_at(const req *r, const char *text, size_t n) {
  long best = -1;
  for (int i = 0; i < r->n_stop; i++)
    for (size_t o = 0; o + r->stop_len[i] <= n; o++)
      if (!memcmp(text + o, r->stop[i], r->stop_len[i])) {
        if (best < 0 || (long)o < best) best = (long)o;
        break;
      }
  return best;
}

static int32_t serve(req *r) {
  int32_t st = use_model(r->model);
  if (st) return fail(st, "cannot open the model");
  char *prompt;
  size_t need;
  uint32_t flags = DWG_TOKENIZE_PARSE_SPECIAL;
  if (r->chat) {
    if (!r->n_msgs) return fail(DWG_ERR_INVALID_ARG, "no messages");
    need = dws_chat_render(S.kind, r->msgs, r->n_msgs, 1, NULL, 0);
    if (!(prompt = malloc(need + 1))) return fail(DWG_ERR_NOMEM, "prompt");
    dws_chat_render(S.kind, r->msgs, r->n_msgs, 1, prompt, need + 1);
    if (dws_chat_add_special(S.kind)) flags |= DWG_TOKENIZE_ADD_SPECIAL;
  } else {
    need = r->prompt_len;
    if (!(prompt = malloc(need + 1))) return fail(DWG_ERR_NOMEM, "prompt");
    memcpy(prompt, r->prompt ? r->prompt : "", need);
    flags = DWG_TOKENIZE_ADD_SPECIAL; /* a completion's prompt is plain text */
  }
  uint32_t n_ctx = S.info.n_ctx_train, n = 0;
  int32_t *tokens = malloc((need + 8) * sizeof *tokens);
  if (!tokens) return free(prompt), fail(DWG_ERR_NOMEM, "tokens");
  st = dwg_tokenize(S.m, prompt, (uint32_t)need, flags, tokens, (uint32_t)need + 8, &n);
  free(prompt);
  if (st) return free(tokens), fail(st, "cannot tokenize the prompt");
  if (n == 0) return free(tokens), fail(DWG_ERR_INVALID_ARG, "the prompt is empty");
  if (n >= n_ctx) {
    char b[160];
    snprintf(b, sizeof b, "the prompt has %u tokens; the context holds %u", n, n_ctx);
    free(tokens);
    return fail(DWG_ERR_LIMIT, b);
  }
  /* keep what the session already holds of this prompt (at least one
   * token is decoded, for its logits) */
  uint32_t keep = 0;
  while (keep < S.n_hist && keep < n - 1 && S.hist[keep] == tokens[keep]) keep++;
  if ((st = dwg_session_truncate(S.sess, keep))) return free(tokens), fail(st, "truncate");
  S.n_hist = keep;
  st = dwg_decode(S.sess, tokens + keep, n - keep, S.logits);
  if (st) {
    free(tokens);
    return fail(st, "prefill failed");
  }
  memcpy(S.hist + keep, tokens + keep, (n - keep) * sizeof *tokens);
  S.n_hist = n;
  dws_sampler smp;
  if (dws_init(&smp, &r->params, (int32_t)S.info.n_vocab)) return free(tokens), fail(DWG_ERR_NOMEM, "sampler");
  for (uint32_t i = 0; i < n; i++) dws_accept(&smp, tokens[i]);
  free(tokens);

  size_t cap = 4096, len = 0, sent = 0;
  char *text = malloc(cap);
  const char *finish = "length";
  uint32_t produced = 0;
  for (; text && (r->max_tokens <= 0 || produced < (uint32_t)r->max_tokens) && S.n_hist < n_ctx; produced++) {
    int32_t tok = dws_sample(&smp, S.logits);
    if (tok == S.info.eos || tok == S.info.eot) {
      /* the end-of-turn token goes into the KV: the next turn follows it */
      if (dwg_decode(S.sess, &tok, 1, S.logits) == DWG_OK) S.hist[S.n_hist++] = tok;
      finish = "stop";
      produced++;
      break;
    }
    char piece[256];
    uint32_t pl = 0;
    if (dwg_token_piece(S.m, tok, piece, sizeof piece, &pl) != DWG_OK) pl = 0;
    if (len + pl > cap) {
      char *t = realloc(text, cap = 2 * (len + pl));
      if (!t) break;
      text = t;
    }
    memcpy(text + len, piece, pl);
    len += pl;
    long at = stop_at(r, text, len);
    if (at >= 0) {
      if ((size_t)at > sent) frame('T', text + sent, (size_t)at - sent);
      sent = len; /* the stop string and what follows are not sent */
      finish = "stop";
      produced++;
      break;
    }
    size_t ok = len - held_back(r, text, len);
    if (ok > sent) frame('T', text + sent, ok - sent), sent = ok;
    dws_accept(&smp, tok);
    if ((st = dwg_decode(S.sess, &tok, 1, S.logits))) break;
    S.hist[S.n_hist++] = tok;
  }
  if (text && len > sent) frame('T', text + sent, len - sent); /* held back, but no stop came */
  free(text);
  dws_free(&smp);
  if (st && st != DWG_ERR_LIMIT) return fail(st, "decode failed");
  char b[160];
  int bl = snprintf(b, sizeof b, "prompt=%u completion=%u cached=%u finish=%s", n, produced, keep, finish);
  frame('D', b, (size_t)bl);
  return DWG_OK;
}

__attribute__((export_name("dw_on_message"))) int32_t dw_on_message(char *msg, uint32_t len) {
  req r;
  int32_t st = parse(msg, msg + len, &r) ? fail(DWG_ERR_INVALID_ARG, "malformed request") : serve(&r);
  free(msg);
  return st;
}
