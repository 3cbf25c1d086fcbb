/*
 * openai.c — the OpenAI-compatible endpoints of `driftwood serve`:
 * /v1/models, /v1/chat/completions and /v1/completions (served by the chat
 * actor guest, streamed as server-sent events or not), /v1/embeddings
 * (native, on a worker).
 *
 * A completion is one actor message in the chat guest's request format
 * (examples/chat/chat_serve.c); its reply frames ('T' text, 'D' done with
 * the counts, 'E' error) become OpenAI's JSON. Without `conversation` the
 * request runs on a fresh actor that is discarded after it; with
 * `conversation: ID` it runs on the persistent actor ID (created on first
 * use), whose KV cache keeps the conversation so only the new turn is
 * prefilled.
 */
#define _GNU_SOURCE
#include "server/server.h"
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- text that is valid UTF-8 ------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1-4), 0 if p[0..n) starts an
 * incomplete but possibly valid one, -1 if invalid. */
static int utf8_seq(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  int k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : -1;
  if (k < 0 || (k == 2 && c < 0xc2) || (k == 4 && c > 0xf4)) return -1;
  for (int i = 1; i < k; i++) {
    if ((size_t)i >= n) return 0;
    if ((p[i] & 0xc0) != 0x80) return -1;
  }
  if (k == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))) return -1;
  if (k == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))) return -1;
  return k;
}

typedef struct utf8buf {
  char *p;
  size_t n, cap;
  unsigned char carry[4]; /* an incomplete sequence waiting for its rest */
  int n_carry;
} utf8buf;

static void ub_put(utf8buf *b, const void *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return;
    b->p = q, b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

/* Appends bytes as valid UTF-8: invalid bytes become U+FFFD; a sequence cut
 * at the end waits in carry (final: it is replaced too). */
static void ub_add(utf8buf *b, const unsigned char *s, size_t n, bool final) {
  unsigned char tmp[4096 + 4];
  size_t i = 0;
  while (i < n || (final && b->n_carry)) {
    /* feed carry + new bytes through a small window */
    size_t m = (size_t)b->n_carry;
    memcpy(tmp, b->carry, m);
    size_t take = n - i < 4096 ? n - i : 4096;
    memcpy(tmp + m, s + i, take);
    i += take;
    m += take;
    b->n_carry = 0;
    size_t o = 0;
    while (o < m) {
      int k = utf8_seq(tmp + o, m - o);
      if (k > 0) {
        ub_put(b, tmp + o, (size_t)k);
        o += (size_t)k;
      } else if (k == 0 && !(final && i >= n)) {
        b->n_carry = (int)(m - o);
        memcpy(b->carry, tmp + o, m - o);
        break;
      } else {
        ub_put(b, "\xef\xbf\xbd", 3);
        o++;
      }
    }
    if (i >= n && !(final && b->n_carry)) break;
  }
}

/* ---- /v1/models ----------------------------------------------------------------- */

static json_t *model_json(dw_srv *s, int i) {
  dw_model_info mi;
  dw_model_get_info(s->models[i], &mi);
  return json_pack("{s:s,s:s,s:I,s:s,s:{s:i,s:i,s:i}}", "id", s->model_names[i], "object", "model", "created",
                   (json_int_t)time(NULL), "owned_by", "driftwood", "meta", "n_ctx_train", (int)mi.n_ctx_train,
                   "n_vocab", (int)mi.n_vocab, "n_embd", (int)mi.n_embd);
}

enum MHD_Result dw_openai_models(dw_srv *s, dw_req *r) {
  if (strcmp(r->method, "GET"))
    return dw_reply_error(s, r, 405, "invalid_request_error", "method_not_allowed", "%s %s", r->method, r->url);
  if (!strncmp(r->url, "/v1/models/", 11)) {
    for (int i = 0; i < s->n_models; i++)
      if (!strcmp(r->url + 11, s->model_names[i])) return dw_reply_json(s, r, 200, model_json(s, i));
    return dw_reply_error(s, r, 404, "invalid_request_error", "model_not_found", "no model '%s'", r->url + 11);
  }
  json_t *arr = json_array();
  for (int i = 0; i < s->n_models; i++) json_array_append_new(arr, model_json(s, i));
  return dw_reply_json(s, r, 200, json_pack("{s:s,s:o}", "object", "list", "data", arr));
}

static int model_index(dw_srv *s, json_t *req, const char **name) {
  json_t *m = json_object_get(req, "model");
  if (!m || json_is_null(m) || (json_is_string(m) && !*json_string_value(m))) {
    *name = s->model_names[0];
    return 0;
  }
  *name = json_string_value(m);
  if (!*name) return -2;
  for (int i = 0; i < s->n_models; i++)
    if (!strcmp(*name, s->model_names[i])) return i;
  return -1;
}

/* ---- completions --------------------------------------------------------------------- */

typedef struct comp {
  dw_host_job job;
  dw_srv *s;
  dw_stream *st;          /* streaming only */
  char *msg;              /* the guest request */
  size_t msg_len;
  bool chat, stream, include_usage;
  char id[48], model[128], conversation[DW_HOST_ID_MAX + 1];
  long created;
  double t0;
  bool any;               /* a text frame came */
  bool header_sent;       /* streaming: the role chunk went */
  utf8buf text;           /* non-streaming: the whole reply; streaming: scratch */
  /* from the 'D' frame */
  bool done;
  unsigned prompt, completion, cached;
  char finish[16];
  /* from an 'E' frame */
  int err_code;
  char err[256];
} comp;

static void comp_free(void *p) {
  comp *c = p;
  dw_host_job_fini(&c->job);
  free(c->msg);
  free(c->text.p);
  free(c);
}

static int sse_data(dw_stream *st, json_t *j) {
  char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!t) return 0;
  int rc = dw_stream_write(st, "data: ", 6) || dw_stream_write(st, t, strlen(t)) || dw_stream_write(st, "\n\n", 2);
  free(t);
  return rc;
}

static json_t *chunk(comp *c, json_t *choice) {
  return json_pack("{s:s,s:s,s:I,s:s,s:s,s:[o]}", "id", c->id, "object",
                   c->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)c->created, "model",
                   c->model, "system_fingerprint", "driftwood", "choices", choice);
}

static json_t *usage_json(comp *c) {
  return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", (int)c->prompt, "completion_tokens", (int)c->completion,
                   "total_tokens", (int)(c->prompt + c->completion), "prompt_tokens_details", "cached_tokens",
                   (int)c->cached);
}

/* Sends the valid UTF-8 text gathered so far as one chunk. */
static int send_delta(comp *c, bool final) {
  if (!c->header_sent && c->chat) {
    c->header_sent = true;
    json_t *ch = json_pack("{s:i,s:{s:s,s:s},s:n,s:n}", "index", 0, "delta", "role", "assistant", "content", "",
                           "logprobs", "finish_reason");
    if (sse_data(c->st, chunk(c, ch))) return 1;
  }
  (void)final;
  if (!c->text.n) return 0;
  json_t *t = json_stringn(c->text.p, c->text.n);
  c->text.n = 0;
  if (!t) return 0;
  json_t *ch = c->chat ? json_pack("{s:i,s:{s:o},s:n,s:n}", "index", 0, "delta", "content", t, "logprobs", "finish_reason")
                       : json_pack("{s:i,s:o,s:n,s:n}", "index", 0, "text", t, "logprobs", "finish_reason");
  return sse_data(c->st, chunk(c, ch));
}

static int comp_emit(void *ctx, const void *data, size_t len) {
  comp *c = ctx;
  const unsigned char *p = data;
  if (!len) return 0;
  switch (p[0]) {
  case 'T':
    if (!c->any) dw_hist_add(&c->s->m.ttft, dw_now() - c->t0);
    c->any = true;
    ub_add(&c->text, p + 1, len - 1, false);
    if (c->stream) return send_delta(c, false);
    return 0;
  case 'D':
  case 'E': {
    char b[250];
    size_t n = len - 1 < sizeof b - 1 ? len - 1 : sizeof b - 1;
    memcpy(b, p + 1, n);
    b[n] = 0;
    if (p[0] == 'D') {
      c->done = sscanf(b, "prompt=%u completion=%u cached=%u finish=%15s", &c->prompt, &c->completion, &c->cached,
                       c->finish) == 4;
    } else {
      char *sp = strchr(b, ' ');
      c->err_code = atoi(b);
      snprintf(c->err, sizeof c->err, "%s", sp ? sp + 1 : b);
    }
    return 0;
  }
  default:
    return 0;
  }
}

static void account(comp *c) {
  if (!c->done) return;
  atomic_fetch_add(&c->s->m.prompt_tokens, c->prompt);
  atomic_fetch_add(&c->s->m.completion_tokens, c->completion);
  atomic_fetch_add(&c->s->m.cached_tokens, c->cached);
}

/* The failure of a completion: (status, type, code, message). */
static void comp_failure(comp *c, unsigned *status, const char **type, const char **code, const char **msg) {
  *type = "invalid_request_error";
  if (c->err_code) {
    *msg = c->err;
    *code = c->err_code == DW_ERR_LIMIT ? "context_length_exceeded" : dw_status_str((dw_status)c->err_code);
    *status = c->err_code == DW_ERR_LIMIT ? 400 : dw_status_http((dw_status)c->err_code);
  } else if (c->job.st) {
    *msg = c->job.error;
    *code = dw_status_str(c->job.st);
    *status = dw_status_http(c->job.st);
  } else {
    *msg = "the chat actor ended without an answer";
    *code = "bad_guest";
    *status = 500;
  }
  if (*status >= 500) *type = "server_error";
}

static void comp_release(dw_host_job *j) {
  comp *c = (comp *)j;
  account(c);
  if (c->stream && c->done && !c->err_code && j->st == DW_OK) {
    ub_add(&c->text, NULL, 0, true);
    send_delta(c, true);
    json_t *ch = c->chat ? json_pack("{s:i,s:{},s:n,s:s}", "index", 0, "delta", "logprobs", "finish_reason", c->finish)
                         : json_pack("{s:i,s:s,s:n,s:s}", "index", 0, "text", "", "logprobs", "finish_reason", c->finish);
    sse_data(c->st, chunk(c, ch));
    if (c->include_usage) {
      json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", c->id, "object",
                            c->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)c->created,
                            "model", c->model, "choices", "usage", usage_json(c));
      sse_data(c->st, u);
    }
    dw_stream_write(c->st, "data: [DONE]\n\n", 14);
  } else if (c->stream && c->any) { /* failed after text went out: an error event, then the end */
    unsigned status;
    const char *type, *code, *msg;
    comp_failure(c, &status, &type, &code, &msg);
    sse_data(c->st, json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type", type, "code", code));
    if (j->st == DW_ERR_CANCELLED) atomic_fetch_add(&c->s->m.streams_cancelled, 1);
  }
  dw_stream_close(c->st, false);
}

/* Appends "key LEN\nBYTES\n" (or "key ROLE LEN\n...") to the guest request. */
static void put_field(utf8buf *b, const char *key, const char *role, const char *s, size_t n) {
  char head[160];
  int k = role ? snprintf(head, sizeof head, "%s %s %zu\n", key, role, n) : snprintf(head, sizeof head, "%s %zu\n", key, n);
  ub_put(b, head, (size_t)k);
  ub_put(b, s, n);
  ub_put(b, "\n", 1);
}

/* A message's content as text: a string, or an array of {type: text} parts. */
static bool content_text(json_t *content, utf8buf *out) {
  if (json_is_string(content)) {
    ub_put(out, json_string_value(content), json_string_length(content));
    return true;
  }
  if (json_is_null(content)) return true;
  if (!json_is_array(content)) return false;
  size_t i;
  json_t *part;
  json_array_foreach(content, i, part) {
    const char *type = json_string_value(json_object_get(part, "type"));
    json_t *t = json_object_get(part, "text");
    if (!type || strcmp(type, "text") || !json_is_string(t)) return false;
    ub_put(out, json_string_value(t), json_string_length(t));
  }
  return true;
}

#define BAD_REQ(...) dw_reply_error(s, r, 400, "invalid_request_error", NULL, __VA_ARGS__)

/* Builds the guest request from an OpenAI body; on a bad body replies 400
 * and returns false. */
static bool build_request(dw_srv *s, dw_req *r, json_t *req, comp *c, enum MHD_Result *sent) {
  utf8buf b = {0};
  char line[200];
  ub_put(&b, c->chat ? "mode chat\n" : "mode text\n", 10);
  snprintf(line, sizeof line, "model %s\n", c->model);
  ub_put(&b, line, strlen(line));
  json_t *v;
  long max_tokens = 0;
  if ((v = json_object_get(req, "max_completion_tokens")) || (v = json_object_get(req, "max_tokens"))) {
    if (!json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 1)) {
      *sent = BAD_REQ("max_tokens must be a positive integer");
      goto bad;
    }
    if (json_is_integer(v)) max_tokens = (long)json_integer_value(v);
  } else if (!c->chat) {
    max_tokens = 16; /* OpenAI's default for completions */
  }
  snprintf(line, sizeof line, "max_tokens %ld\n", max_tokens);
  ub_put(&b, line, strlen(line));
  double temp = 1.0, top_p = 1.0;
  if ((v = json_object_get(req, "temperature")) && !json_is_null(v)) {
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2) {
      *sent = BAD_REQ("temperature must be a number in [0, 2]");
      goto bad;
    }
    temp = json_number_value(v);
  }
  if ((v = json_object_get(req, "top_p")) && !json_is_null(v)) {
    if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1) {
      *sent = BAD_REQ("top_p must be a number in (0, 1]");
      goto bad;
    }
    top_p = json_number_value(v);
  }
  unsigned long long seed;
  if ((v = json_object_get(req, "seed")) && !json_is_null(v)) {
    if (!json_is_integer(v)) {
      *sent = BAD_REQ("seed must be an integer");
      goto bad;
    }
    seed = (unsigned long long)json_integer_value(v);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (unsigned long long)ts.tv_nsec * 2654435761u ^ (unsigned long long)ts.tv_sec;
  }
  snprintf(line, sizeof line, "temperature %.6g\ntop_p %.6g\nseed %llu\n", temp, top_p, seed);
  ub_put(&b, line, strlen(line));
  if ((v = json_object_get(req, "n")) && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) != 1)) {
    *sent = BAD_REQ("only n = 1 is supported");
    goto bad;
  }
  if ((v = json_object_get(req, "stop")) && !json_is_null(v)) {
    if (json_is_string(v)) {
      put_field(&b, "stop", NULL, json_string_value(v), json_string_length(v));
    } else if (json_is_array(v) && json_array_size(v) <= 4) {
      size_t i;
      json_t *e;
      json_array_foreach(v, i, e) {
        if (!json_is_string(e)) {
          *sent = BAD_REQ("stop must be a string or an array of up to 4 strings");
          goto bad;
        }
        put_field(&b, "stop", NULL, json_string_value(e), json_string_length(e));
      }
    } else {
      *sent = BAD_REQ("stop must be a string or an array of up to 4 strings");
      goto bad;
    }
  }
  if (c->chat) {
    json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || !json_array_size(msgs) || json_array_size(msgs) > 256) {
      *sent = BAD_REQ("messages must be an array of 1 to 256 messages");
      goto bad;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
      const char *role = json_string_value(json_object_get(m, "role"));
      if (!role || (strcmp(role, "system") && strcmp(role, "developer") && strcmp(role, "user") &&
                    strcmp(role, "assistant"))) {
        *sent = BAD_REQ("messages[%zu].role must be system, developer, user or assistant", i);
        goto bad;
      }
      utf8buf t = {0};
      if (!content_text(json_object_get(m, "content"), &t)) {
        free(t.p);
        *sent = BAD_REQ("messages[%zu].content must be a string or an array of text parts", i);
        goto bad;
      }
      put_field(&b, "message", strcmp(role, "developer") ? role : "system", t.p ? t.p : "", t.n);
      free(t.p);
    }
  } else {
    json_t *p = json_object_get(req, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
    if (!json_is_string(p)) {
      *sent = BAD_REQ("prompt must be a string (or an array of one string)");
      goto bad;
    }
    put_field(&b, "prompt", NULL, json_string_value(p), json_string_length(p));
  }
  c->msg = b.p;
  c->msg_len = b.n;
  return true;
bad:
  free(b.p);
  return false;
}

static enum MHD_Result reply_comp(dw_srv *s, dw_req *r, comp *c) {
  if (c->job.st || c->err_code || !c->done) {
    unsigned status;
    const char *type, *code, *msg;
    comp_failure(c, &status, &type, &code, &msg);
    if (status == 429) return dw_reply_busy(s, r, msg);
    return dw_reply_error(s, r, status, type, code, "%s", msg);
  }
  ub_add(&c->text, NULL, 0, true);
  json_t *text = json_stringn(c->text.p ? c->text.p : "", c->text.n);
  json_t *choice = c->chat ? json_pack("{s:i,s:{s:s,s:o},s:n,s:s}", "index", 0, "message", "role", "assistant",
                                       "content", text, "logprobs", "finish_reason", c->finish)
                           : json_pack("{s:i,s:o,s:n,s:s}", "index", 0, "text", text, "logprobs", "finish_reason",
                                       c->finish);
  json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[o],s:o}", "id", c->id, "object",
                        c->chat ? "chat.completion" : "text_completion", "created", (json_int_t)c->created, "model",
                        c->model, "system_fingerprint", "driftwood", "choices", choice, "usage", usage_json(c));
  if (o && c->conversation[0]) json_object_set_new(o, "conversation", json_string(c->conversation));
  return dw_reply_json(s, r, 200, o);
}

enum MHD_Result dw_openai_completion(dw_srv *s, dw_req *r, bool chat) {
  enum MHD_Result sent;
  json_t *req = dw_parse_body(s, r, &sent);
  if (!req) return sent;
  const char *model;
  int mi = model_index(s, req, &model);
  if (mi < 0) {
    enum MHD_Result ret = mi == -2 ? BAD_REQ("model must be a string")
                                   : dw_reply_error(s, r, 404, "invalid_request_error", "model_not_found",
                                                    "no model '%s' (GET /v1/models)", model);
    json_decref(req);
    return ret;
  }
  comp *c = calloc(1, sizeof *c);
  if (!c) {
    json_decref(req);
    return dw_reply_error(s, r, 500, "server_error", NULL, "out of memory");
  }
  c->s = s;
  c->chat = chat;
  c->t0 = r->t0;
  c->created = (long)time(NULL);
  snprintf(c->model, sizeof c->model, "%s", s->model_names[mi]);
  static _Atomic unsigned long serial;
  snprintf(c->id, sizeof c->id, "%s-%lx%lx", chat ? "chatcmpl" : "cmpl", (unsigned long)c->created,
           atomic_fetch_add(&serial, 1));
  json_t *v = json_object_get(req, "stream");
  c->stream = json_is_true(v);
  json_t *so = json_object_get(req, "stream_options");
  c->include_usage = c->stream && json_is_true(json_object_get(so, "include_usage"));
  const char *conv = json_string_value(json_object_get(req, "conversation"));
  if (!conv) conv = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Driftwood-Conversation");
  if (conv && !dw_host_valid_id(conv)) {
    json_decref(req);
    comp_free(c);
    return BAD_REQ("conversation must be 1-64 of A-Z a-z 0-9 _ - .");
  }
  if (conv) snprintf(c->conversation, sizeof c->conversation, "%s", conv);
  dw_host_job_init(&c->job, DW_JOB_MESSAGE);
  if (!build_request(s, r, req, c, &sent)) {
    json_decref(req);
    comp_free(c);
    return sent;
  }
  json_decref(req);
  c->job.msg = c->msg;
  c->job.len = c->msg_len;
  c->job.emit = comp_emit;
  c->job.ctx = c;
  if (c->stream) {
    if (!(c->st = dw_stream_new())) {
      comp_free(c);
      return dw_reply_error(s, r, 500, "server_error", NULL, "out of memory");
    }
    c->job.release = comp_release;
  }
  dw_status st;
  char why[256] = "";
  if (c->conversation[0] && !dw_host_exists(s->host, c->conversation)) {
    st = dw_host_spawn(s->host, "chat", c->conversation, NULL);
    if (st && !dw_host_exists(s->host, c->conversation)) { /* (another request may have created it) */
      snprintf(why, sizeof why, "%s", dw_last_error());
      goto refused;
    }
  }
  st = c->conversation[0] ? dw_host_submit(s->host, c->conversation, &c->job)
                          : dw_host_submit_ephemeral(s->host, "chat", &c->job);
  if (st) {
    snprintf(why, sizeof why, "%s", dw_last_error());
    goto refused;
  }
  if (!c->stream) {
    dw_host_job_wait(&c->job);
    account(c);
    enum MHD_Result ret = reply_comp(s, r, c);
    comp_free(c);
    return ret;
  }
  /* Streaming: the status is decided by the first output (an error before
   * any text is an ordinary JSON error reply). */
  if (!dw_stream_wait_first(c->st)) {
    enum MHD_Result ret = reply_comp(s, r, c);
    dw_stream *stm = c->st;
    comp_free(c);
    dw_stream_unref(stm);
    return ret;
  }
  dw_stream *stm = c->st;
  dw_stream_set_owner(stm, comp_free, c);
  return dw_reply_stream(s, r, 200, "text/event-stream", stm);

refused: {
  enum MHD_Result ret = st == DW_ERR_LIMIT ? dw_reply_busy(s, r, why) : dw_reply_error(s, r, dw_status_http(st),
                                                                                      "invalid_request_error", NULL, "%s", why);
  if (c->st) {
    dw_stream_unref(c->st);
    dw_stream_unref(c->st);
  }
  comp_free(c);
  return ret;
}
}

/* ---- /v1/embeddings ------------------------------------------------------------------ */

typedef struct embed_call {
  dw_srv *s;
  dw_model *model;
  int32_t **toks;
  size_t *n_toks, n;
  float *out;          /* [n][n_embd] */
  int n_embd;
  dw_status st;
  char err[256];
} embed_call;

static void embed_run(void *p) {
  embed_call *e = p;
  for (size_t i = 0; i < e->n && !e->st; i++) {
    dw_session *ss;
    e->st = dw_session_create(e->s->rt, e->model, (int)e->n_toks[i], &ss);
    if (!e->st) {
      e->st = dw_session_embed(ss, e->toks[i], (int)e->n_toks[i], e->out + i * (size_t)e->n_embd);
      dw_session_destroy(ss);
    }
    if (e->st) snprintf(e->err, sizeof e->err, "input %zu: %s", i, dw_last_error());
  }
}

enum MHD_Result dw_openai_embeddings(dw_srv *s, dw_req *r) {
  enum MHD_Result sent;
  json_t *req = dw_parse_body(s, r, &sent);
  if (!req) return sent;
  const char *model;
  int mi = model_index(s, req, &model);
  if (mi < 0) {
    enum MHD_Result ret = dw_reply_error(s, r, mi == -2 ? 400 : 404, "invalid_request_error", "model_not_found",
                                         "no model '%s'", model ? model : "?");
    json_decref(req);
    return ret;
  }
  const char *fmt = json_string_value(json_object_get(req, "encoding_format"));
  if (fmt && strcmp(fmt, "float") && strcmp(fmt, "base64")) {
    json_decref(req);
    return BAD_REQ("encoding_format must be float or base64");
  }
  bool b64 = fmt && !strcmp(fmt, "base64");
  json_t *in = json_object_get(req, "input");
  json_t *items = json_is_array(in) ? in : NULL;
  /* an array of integers is one input of token ids */
  bool one_ids = items && json_array_size(items) && json_is_integer(json_array_get(items, 0));
  size_t n = (items && !one_ids) ? json_array_size(items) : 1;
  if ((!json_is_string(in) && !items) || n == 0 || n > 2048) {
    json_decref(req);
    return BAD_REQ("input must be a string, an array of strings or token ids (1 to 2048 inputs)");
  }
  dw_model_info info;
  dw_model_get_info(s->models[mi], &info);
  embed_call e = {.s = s, .model = s->models[mi], .n = n, .n_embd = (int)info.n_embd};
  e.toks = calloc(n, sizeof *e.toks);
  e.n_toks = calloc(n, sizeof *e.n_toks);
  e.out = malloc(n * info.n_embd * sizeof *e.out);
  enum MHD_Result ret = MHD_NO;
  size_t total = 0;
  if (!e.toks || !e.n_toks || !e.out) {
    ret = dw_reply_error(s, r, 500, "server_error", NULL, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *x = one_ids ? in : items ? json_array_get(items, i) : in;
    if (json_is_string(x)) {
      const char *t = json_string_value(x);
      size_t tl = json_string_length(x), cap = tl + 8, got = 0;
      if (!(e.toks[i] = malloc(cap * sizeof **e.toks))) goto oom;
      dw_status st = dw_model_tokenize(s->models[mi], t, tl, DW_TOKENIZE_ADD_SPECIAL, e.toks[i], cap, &got);
      if (st) {
        ret = BAD_REQ("input %zu: %s", i, dw_last_error());
        goto out;
      }
      e.n_toks[i] = got;
    } else if (json_is_array(x)) {
      size_t k = json_array_size(x);
      if (!(e.toks[i] = malloc((k ? k : 1) * sizeof **e.toks))) goto oom;
      for (size_t q = 0; q < k; q++) {
        json_t *id = json_array_get(x, q);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (json_int_t)info.n_vocab) {
          ret = BAD_REQ("input %zu: token ids must be integers in [0, %u)", i, info.n_vocab);
          goto out;
        }
        e.toks[i][q] = (int32_t)json_integer_value(id);
      }
      e.n_toks[i] = k;
    } else {
      ret = BAD_REQ("input %zu must be a string or an array of token ids", i);
      goto out;
    }
    if (e.n_toks[i] == 0 || e.n_toks[i] > info.n_ctx_train) {
      ret = dw_reply_error(s, r, 400, "invalid_request_error", "context_length_exceeded",
                           "input %zu has %zu tokens; the model takes 1 to %u", i, e.n_toks[i], info.n_ctx_train);
      goto out;
    }
    total += e.n_toks[i];
  }
  {
    dw_host_job j;
    dw_host_job_init(&j, DW_JOB_CALL);
    j.call = embed_run;
    j.ctx = &e;
    dw_status st = dw_host_submit_ephemeral(s->host, NULL, &j);
    if (st) {
      ret = st == DW_ERR_LIMIT ? dw_reply_busy(s, r, dw_last_error())
                               : dw_reply_error(s, r, 500, "server_error", NULL, "%s", dw_last_error());
      dw_host_job_fini(&j);
      goto out;
    }
    dw_host_job_wait(&j);
    dw_host_job_fini(&j);
  }
  if (e.st) {
    ret = dw_reply_error(s, r, dw_status_http(e.st), "invalid_request_error", NULL, "%s", e.err);
    goto out;
  }
  json_t *data = json_array();
  for (size_t i = 0; i < n; i++) {
    const float *v = e.out + i * (size_t)e.n_embd;
    json_t *emb;
    if (b64) {
      char *o = dw_base64(v, (size_t)e.n_embd * sizeof *v);
      if (!o) goto oom;
      emb = json_string(o);
      free(o);
    } else {
      emb = json_array();
      for (int k = 0; k < e.n_embd; k++) json_array_append_new(emb, json_real(v[k]));
    }
    json_array_append_new(data, json_pack("{s:s,s:i,s:o}", "object", "embedding", "index", (int)i, "embedding", emb));
  }
  ret = dw_reply_json(s, r, 200,
                      json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model", s->model_names[mi],
                                "usage", "prompt_tokens", (json_int_t)total, "total_tokens", (json_int_t)total));
  goto out;
oom:
  ret = dw_reply_error(s, r, 500, "server_error", NULL, "out of memory");
out:
  for (size_t i = 0; e.toks && i < n; i++) free(e.toks[i]);
  free(e.toks);
  free(e.n_toks);
  free(e.out);
  json_decref(req);
  return ret;
}
