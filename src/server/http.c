/*
 * http.c — `driftwood serve`'s HTTP front on libmicrohttpd: start-up and
 * shutdown (dw_serve), request bodies and their bounds, authentication,
 * routing, the actor endpoints, response streams, /health and /metrics.
 * The OpenAI endpoints are in openai.c.
 *
 * libmicrohttpd runs in thread-per-connection mode: a handler may block on
 * a job, and a streamed body is pulled from a dw_stream that a worker
 * fills, so a slow client holds its own thread, never a worker.
 */
#define _GNU_SOURCE
#include "server/server.h"
#include "base/base.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STREAM_HIGH_WATER (256u << 10) /* a writer waits while this much is unsent */

double dw_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Bucket bounds in seconds (the last bucket is +Inf). */
static const double hist_le[DW_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25,  0.5,    1,     2.5,  5,     10,   30};

void dw_hist_add(dw_hist *h, double seconds) {
  int b = 0;
  while (b < DW_HIST_BUCKETS && seconds > hist_le[b]) b++;
  atomic_fetch_add(&h->le[b], 1);
  atomic_fetch_add(&h->count, 1);
  atomic_fetch_add(&h->sum_us, (uint64_t)(seconds * 1e6));
}

/* ---- replies ------------------------------------------------------------- */

static void count(dw_srv *s, dw_req *r, unsigned status) {
  unsigned c = status / 100;
  if (c >= 1 && c <= 5) atomic_fetch_add(&s->m.requests[r->ep][c], 1);
}

static enum MHD_Result queue(dw_srv *s, dw_req *r, unsigned status, struct MHD_Response *resp) {
  if (!resp) return MHD_NO;
  count(s, r, status);
  enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
  MHD_destroy_response(resp);
  return ret;
}

enum MHD_Result dw_reply(dw_srv *s, dw_req *r, unsigned status, const char *ctype, const void *body, size_t len) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (resp && ctype) MHD_add_response_header(resp, "Content-Type", ctype);
  return queue(s, r, status, resp);
}

enum MHD_Result dw_reply_json(dw_srv *s, dw_req *r, unsigned status, json_t *j) {
  char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!txt) return dw_reply(s, r, 500, "text/plain", "out of memory\n", 14);
  size_t n = strlen(txt);
  txt[n] = 0;
  enum MHD_Result ret = dw_reply(s, r, status, "application/json", txt, n);
  free(txt);
  return ret;
}

enum MHD_Result dw_reply_error(dw_srv *s, dw_req *r, unsigned status, const char *type, const char *code,
                               const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", msg, "type", type, "param", "code", code);
  if (!e) e = json_pack("{s:{s:s,s:s}}", "error", "message", "invalid message text", "type", type);
  return dw_reply_json(s, r, status, e);
}

unsigned dw_status_http(dw_status st) {
  switch (st) {
  case DW_OK: return 200;
  case DW_ERR_INVALID_ARG:
  case DW_ERR_BAD_SNAPSHOT:
  case DW_ERR_BAD_MODULE:
  case DW_ERR_OVERFLOW: return 400;
  case DW_ERR_NOT_FOUND: return 404;
  case DW_ERR_LIMIT: return 413; /* a limit the request ran into; a full queue is 429 (job_error) */
  case DW_ERR_TRAP: return 422;
  case DW_ERR_UNSUPPORTED: return 501;
  default: return 500;
  }
}

enum MHD_Result dw_reply_busy(dw_srv *s, dw_req *r, const char *why) {
  json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", why, "type", "rate_limit_error", "param", "code",
                        "server_busy");
  char *txt = e ? json_dumps(e, JSON_COMPACT) : NULL;
  json_decref(e);
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(txt ? strlen(txt) : 0, txt ? txt : (char *)"", MHD_RESPMEM_MUST_COPY);
  free(txt);
  if (resp) {
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Retry-After", "1");
  }
  return queue(s, r, 429, resp);
}

/* ---- streams ------------------------------------------------------------- */

struct dw_stream {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *buf;
  size_t off, len, cap;
  bool closed, error, gone;
  int refs;
  void (*owner_free)(void *); /* called when the last reference goes */
  void *owner;
};

void dw_stream_set_owner(dw_stream *st, void (*fn)(void *), void *owner) {
  pthread_mutex_lock(&st->mu);
  st->owner_free = fn, st->owner = owner;
  pthread_mutex_unlock(&st->mu);
}

dw_stream *dw_stream_new(void) {
  dw_stream *st = calloc(1, sizeof *st);
  if (!st) return NULL;
  pthread_mutex_init(&st->mu, NULL);
  pthread_cond_init(&st->cv, NULL);
  st->refs = 2; /* the writer's and the reader's */
  return st;
}

void dw_stream_unref(dw_stream *st) {
  pthread_mutex_lock(&st->mu);
  bool last = --st->refs == 0;
  pthread_mutex_unlock(&st->mu);
  if (!last) return;
  if (st->owner_free) st->owner_free(st->owner);
  pthread_mutex_destroy(&st->mu);
  pthread_cond_destroy(&st->cv);
  free(st->buf);
  free(st);
}

int dw_stream_write(dw_stream *st, const void *p, size_t n) {
  pthread_mutex_lock(&st->mu);
  while (!st->gone && st->len - st->off > STREAM_HIGH_WATER) pthread_cond_wait(&st->cv, &st->mu);
  if (st->gone) {
    pthread_mutex_unlock(&st->mu);
    return 1;
  }
  if (st->off && st->off == st->len) st->off = st->len = 0;
  if (st->len + n > st->cap) {
    size_t cap = st->cap ? st->cap : 4096;
    while (cap < st->len + n) cap *= 2;
    char *b = realloc(st->buf, cap);
    if (!b) {
      pthread_mutex_unlock(&st->mu);
      return 1;
    }
    st->buf = b, st->cap = cap;
  }
  memcpy(st->buf + st->len, p, n);
  st->len += n;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  return 0;
}

void dw_stream_close(dw_stream *st, bool error) {
  pthread_mutex_lock(&st->mu);
  st->closed = true;
  st->error = error;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  dw_stream_unref(st);
}

bool dw_stream_wait_first(dw_stream *st) {
  pthread_mutex_lock(&st->mu);
  while (st->len == st->off && !st->closed) pthread_cond_wait(&st->cv, &st->mu);
  bool has = st->len > st->off;
  pthread_mutex_unlock(&st->mu);
  return has;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max) {
  (void)pos;
  dw_stream *st = cls;
  pthread_mutex_lock(&st->mu);
  while (st->len == st->off && !st->closed) pthread_cond_wait(&st->cv, &st->mu);
  ssize_t n;
  if (st->len > st->off) {
    size_t k = st->len - st->off < max ? st->len - st->off : max;
    memcpy(out, st->buf + st->off, k);
    st->off += k;
    n = (ssize_t)k;
    pthread_cond_broadcast(&st->cv);
  } else {
    n = st->error ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
  }
  pthread_mutex_unlock(&st->mu);
  return n;
}

static void stream_gone(void *cls) {
  dw_stream *st = cls;
  pthread_mutex_lock(&st->mu);
  st->gone = true; /* the writer's next write sees it and stops */
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  dw_stream_unref(st);
}

enum MHD_Result dw_reply_stream(dw_srv *s, dw_req *r, unsigned status, const char *ctype, dw_stream *st) {
  struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_gone);
  if (!resp) {
    dw_stream_unref(st);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", ctype);
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  return queue(s, r, status, resp);
}

/* ---- bodies ----------------------------------------------------------------- */

/* Nesting depth of a JSON text (brackets outside strings), to refuse deep
 * documents before the parser recurses into them. */
static int json_depth(const char *p, size_t n) {
  int d = 0, max = 0;
  bool str = false;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (str) {
      if (c == '\\') i++;
      else if (c == '"') str = false;
    } else if (c == '"') {
      str = true;
    } else if (c == '[' || c == '{') {
      if (++d > max) max = d;
    } else if (c == ']' || c == '}') {
      d--;
    }
  }
  return max;
}

#define MAX_JSON_DEPTH 32

json_t *dw_parse_body(dw_srv *s, dw_req *r, enum MHD_Result *sent) {
  if (json_depth(r->body, r->len) > MAX_JSON_DEPTH) {
    *sent = dw_reply_error(s, r, 400, "invalid_request_error", "invalid_json", "JSON nested deeper than %d levels",
                           MAX_JSON_DEPTH);
    return NULL;
  }
  json_error_t err;
  json_t *j = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &err);
  if (!j || !json_is_object(j)) {
    json_decref(j);
    *sent = j ? dw_reply_error(s, r, 400, "invalid_request_error", "invalid_json", "the body must be a JSON object")
              : dw_reply_error(s, r, 400, "invalid_request_error", "invalid_json", "invalid JSON: %s (line %d)",
                               err.text, err.line);
    return NULL;
  }
  return j;
}

/* ---- actor endpoints ---------------------------------------------------------- */

static json_t *actor_json(const dw_host_actor_info *a) {
  return json_pack("{s:s,s:s,s:s,s:s,s:b,s:i,s:I,s:I,s:i,s:I,s:I,s:I,s:s}", "id", a->id, "object", "actor", "module",
                   a->module, "state", a->live ? (a->running ? "running" : "live") : "hibernated", "running",
                   a->running, "queued", a->queued, "messages", (json_int_t)a->messages, "memory_bytes",
                   (json_int_t)a->stats.memory_bytes, "sessions", a->stats.sessions, "kv_tokens",
                   (json_int_t)a->stats.kv_tokens, "kv_bytes", (json_int_t)a->stats.kv_bytes, "snapshot_bytes",
                   (json_int_t)a->snapshot_bytes, "last_error", a->last_error);
}

static void list_one(void *ctx, const dw_host_actor_info *a) {
  json_t *o = actor_json(a);
  if (o) json_array_append_new(ctx, o);
}

static const char *header(dw_req *r, const char *name) {
  return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static bool is_octets(dw_req *r) {
  const char *ct = header(r, "Content-Type");
  return ct && !strncasecmp(ct, "application/octet-stream", 24);
}

/* A failed job's answer. `refused`: the host never queued it, and a
 * DW_ERR_LIMIT then means a full queue or mailbox (429 + Retry-After);
 * once queued, a limit is the job's own (a snapshot over --max-memory). */
static enum MHD_Result job_error(dw_srv *s, dw_req *r, dw_status st, const char *msg, bool refused) {
  if (refused && st == DW_ERR_LIMIT) return dw_reply_busy(s, r, msg);
  unsigned code = dw_status_http(st);
  return dw_reply_error(s, r, code, code >= 500 ? "server_error" : "invalid_request_error", dw_status_str(st), "%s",
                        msg);
}

/* Runs a job on actor id and waits for it; *refused: the host did not queue it. */
static dw_status run_wait(dw_srv *s, const char *id, dw_host_job *j, bool *refused) {
  dw_status st = dw_host_submit(s->host, id, j);
  *refused = st != DW_OK;
  if (st) {
    snprintf(j->error, sizeof j->error, "%s", dw_last_error());
    return st;
  }
  dw_host_job_wait(j);
  return j->st;
}

static enum MHD_Result actors_create(dw_srv *s, dw_req *r) {
  char id[DW_HOST_ID_MAX + 1];
  const char *want = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "id");
  dw_status st;
  if (is_octets(r)) {
    st = dw_host_thaw(s->host, (const uint8_t *)r->body, r->len, want, id);
  } else {
    enum MHD_Result sent;
    json_t *j = r->len ? dw_parse_body(s, r, &sent) : json_object();
    if (!j) return sent;
    const char *module = json_string_value(json_object_get(j, "module"));
    const char *jid = json_string_value(json_object_get(j, "id"));
    if (!module) module = dw_host_module_name(s->host, 0);
    st = dw_host_spawn(s->host, module ? module : "", jid ? jid : want, id);
    json_decref(j);
  }
  if (st) return job_error(s, r, st, dw_last_error(), false); /* spawn and thaw run here, queued nowhere */
  dw_host_actor_info info;
  if (dw_host_info(s->host, id, &info)) return dw_reply_error(s, r, 500, "server_error", NULL, "actor vanished");
  return dw_reply_json(s, r, 201, actor_json(&info));
}

/* A message whose emits stream back: raw bytes, or server-sent events. */
typedef struct msg_call {
  dw_host_job job;
  dw_stream *st;
  char *msg;         /* owned copy of the body: the job may outlive the request */
  bool sse;
  bool any;          /* something was emitted */
} msg_call;

static void msg_call_free(void *p) {
  msg_call *c = p;
  dw_host_job_fini(&c->job);
  free(c->msg);
  free(c);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *dw_base64(const void *data, size_t n) {
  const uint8_t *p = data;
  char *o = malloc(4 * ((n + 2) / 3) + 1), *q = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    *q++ = b64[v >> 18 & 63], *q++ = b64[v >> 12 & 63];
    *q++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
    *q++ = i + 2 < n ? b64[v & 63] : '=';
  }
  *q = 0;
  return o;
}

static int sse_event(dw_stream *st, const char *event, json_t *data) {
  char *txt = data ? json_dumps(data, JSON_COMPACT) : NULL;
  json_decref(data);
  if (!txt) return 1;
  char head[64];
  int hn = snprintf(head, sizeof head, "event: %s\ndata: ", event);
  int rc = dw_stream_write(st, head, (size_t)hn) || dw_stream_write(st, txt, strlen(txt)) ||
           dw_stream_write(st, "\n\n", 2);
  free(txt);
  return rc;
}

static int msg_emit(void *ctx, const void *data, size_t len) {
  msg_call *c = ctx;
  c->any = true;
  if (!c->sse) return dw_stream_write(c->st, data, len);
  json_t *t = json_stringn(data, len);
  if (t) return sse_event(c->st, "emit", json_pack("{s:o}", "text", t));
  char *b = dw_base64(data, len);
  json_t *o = b ? json_pack("{s:s}", "base64", b) : NULL;
  free(b);
  return sse_event(c->st, "emit", o);
}

static void msg_release(dw_host_job *j) {
  msg_call *c = (msg_call *)j;
  if (c->sse && j->st == DW_OK) sse_event(c->st, "done", json_pack("{s:i}", "result", (int)j->result));
  else if (c->sse && c->any)
    sse_event(c->st, "error", json_pack("{s:{s:s,s:s}}", "error", "message", j->error, "code", dw_status_str(j->st)));
  dw_stream *st = c->st;
  bool err = j->st != DW_OK && !c->sse;
  /* the reader keeps c alive until it drops its own reference (below) */
  dw_stream_close(st, err);
}

static enum MHD_Result actor_message(dw_srv *s, dw_req *r, const char *id) {
  const char *accept = header(r, "Accept");
  msg_call *c = calloc(1, sizeof *c);
  if (c) c->msg = malloc(r->len + 1);
  if (c && c->msg) c->st = dw_stream_new();
  if (!c || !c->st) {
    if (c) free(c->msg);
    free(c);
    return dw_reply_error(s, r, 500, "server_error", NULL, "out of memory");
  }
  memcpy(c->msg, r->body, r->len);
  c->sse = accept && strstr(accept, "text/event-stream");
  dw_host_job_init(&c->job, DW_JOB_MESSAGE);
  c->job.msg = c->msg;
  c->job.len = r->len;
  c->job.emit = msg_emit;
  c->job.ctx = c;
  c->job.release = msg_release;
  dw_stream *st = c->st;
  dw_status sst = dw_host_submit(s->host, id, &c->job);
  if (sst) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", dw_last_error());
    dw_stream_unref(st);
    dw_stream_set_owner(st, msg_call_free, c);
    dw_stream_unref(st);
    return job_error(s, r, sst, msg, true);
  }
  /* Before the status line: the first output, or the end without any. */
  if (!dw_stream_wait_first(st) && c->job.st != DW_OK) {
    enum MHD_Result ret = job_error(s, r, c->job.st, c->job.error, false);
    dw_stream_set_owner(st, msg_call_free, c);
    dw_stream_unref(st);
    return ret;
  }
  dw_stream_set_owner(st, msg_call_free, c); /* c lives until the response and the job are done */
  return dw_reply_stream(s, r, 200, c->sse ? "text/event-stream" : "application/octet-stream", st);
}

static enum MHD_Result actor_fork(dw_srv *s, dw_req *r, const char *id) {
  dw_host_job j;
  dw_host_job_init(&j, DW_JOB_FORK);
  const char *want = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "id");
  char wid[DW_HOST_ID_MAX + 2] = "";
  if (r->len) {
    enum MHD_Result sent;
    json_t *b = dw_parse_body(s, r, &sent);
    if (!b) {
      dw_host_job_fini(&j);
      return sent;
    }
    const char *jid = json_string_value(json_object_get(b, "id"));
    if (jid) want = jid;
    if (want) snprintf(wid, sizeof wid, "%s", want);
    json_decref(b);
  } else if (want) {
    snprintf(wid, sizeof wid, "%s", want);
  }
  want = wid[0] ? wid : NULL;
  if (want && !dw_host_valid_id(want)) {
    dw_host_job_fini(&j);
    return dw_reply_error(s, r, 400, "invalid_request_error", "invalid_id", "invalid actor id (1-64 of A-Z a-z 0-9 _ - .)");
  }
  if (want) snprintf(j.new_id, sizeof j.new_id, "%.*s", DW_HOST_ID_MAX, want); /* valid: at most that long */
  bool refused;
  dw_status st = run_wait(s, id, &j, &refused);
  enum MHD_Result ret;
  dw_host_actor_info info;
  if (st) ret = job_error(s, r, st, j.error, refused);
  else if (dw_host_info(s->host, j.new_id, &info)) ret = dw_reply_error(s, r, 500, "server_error", NULL, "fork vanished");
  else ret = dw_reply_json(s, r, 201, actor_json(&info));
  dw_host_job_fini(&j);
  return ret;
}

static enum MHD_Result actor_snapshot(dw_srv *s, dw_req *r, const char *id) {
  dw_host_job j;
  dw_host_job_init(&j, DW_JOB_FREEZE);
  const char *embed = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "embed_module");
  if (embed && strcmp(embed, "0") && strcmp(embed, "false")) j.freeze_flags |= DW_FREEZE_EMBED_MODULE;
  bool refused;
  dw_status st = run_wait(s, id, &j, &refused);
  enum MHD_Result ret;
  if (st) {
    ret = job_error(s, r, st, j.error, refused);
  } else {
    struct MHD_Response *resp = MHD_create_response_from_buffer(j.snapshot_len, j.snapshot, MHD_RESPMEM_MUST_FREE);
    if (resp) {
      j.snapshot = NULL;
      MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
      char cd[128];
      snprintf(cd, sizeof cd, "attachment; filename=\"%s.dws\"", id);
      MHD_add_response_header(resp, "Content-Disposition", cd);
    }
    ret = queue(s, r, 200, resp);
  }
  free(j.snapshot);
  dw_host_job_fini(&j);
  return ret;
}

static enum MHD_Result actor_delete(dw_srv *s, dw_req *r, const char *id) {
  dw_host_job j;
  dw_host_job_init(&j, DW_JOB_DELETE);
  bool refused;
  dw_status st = run_wait(s, id, &j, &refused);
  enum MHD_Result ret = st ? job_error(s, r, st, j.error, refused)
                           : dw_reply_json(s, r, 200, json_pack("{s:s,s:s,s:b}", "id", id, "object", "actor", "deleted", 1));
  dw_host_job_fini(&j);
  return ret;
}

/* /v1/actors[/{id}[/{verb}]] */
static enum MHD_Result route_actors(dw_srv *s, dw_req *r, const char *rest) {
  bool get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
  if (!*rest) {
    if (post) return actors_create(s, r);
    if (get) {
      json_t *arr = json_array();
      dw_host_each(s->host, list_one, arr);
      return dw_reply_json(s, r, 200, json_pack("{s:s,s:o}", "object", "list", "data", arr));
    }
    return dw_reply_error(s, r, 405, "invalid_request_error", "method_not_allowed", "%s /v1/actors", r->method);
  }
  if (*rest != '/') return dw_reply_error(s, r, 404, "invalid_request_error", "not_found", "no route %s", r->url);
  rest++;
  char id[DW_HOST_ID_MAX + 1];
  const char *slash = strchr(rest, '/');
  size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
  if (n == 0 || n > DW_HOST_ID_MAX)
    return dw_reply_error(s, r, 404, "invalid_request_error", "not_found", "no such actor");
  memcpy(id, rest, n);
  id[n] = 0;
  if (!dw_host_valid_id(id)) return dw_reply_error(s, r, 404, "invalid_request_error", "not_found", "no such actor");
  const char *verb = slash ? slash + 1 : "";
  if (!dw_host_exists(s->host, id))
    return dw_reply_error(s, r, 404, "invalid_request_error", "actor_not_found", "no actor '%s'", id);
  if (!*verb) {
    if (get) {
      dw_host_actor_info info;
      if (dw_host_info(s->host, id, &info))
        return dw_reply_error(s, r, 404, "invalid_request_error", "actor_not_found", "no actor '%s'", id);
      return dw_reply_json(s, r, 200, actor_json(&info));
    }
    if (!strcmp(r->method, "DELETE")) return actor_delete(s, r, id);
  } else if (!strcmp(verb, "messages") && post) {
    r->ep = EP_MESSAGES;
    return actor_message(s, r, id);
  } else if (!strcmp(verb, "fork") && post) {
    return actor_fork(s, r, id);
  } else if (!strcmp(verb, "snapshot") && get) {
    r->ep = EP_SNAPSHOT;
    return actor_snapshot(s, r, id);
  }
  return dw_reply_error(s, r, 405, "invalid_request_error", "method_not_allowed", "%s %s", r->method, r->url);
}

/* ---- /health and /metrics ------------------------------------------------------- */

static const char *const ep_names[EP_COUNT] = {"chat_completions", "completions", "embeddings", "models", "actors",
                                               "messages", "snapshot", "health", "metrics", "other"};

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->p && b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    size_t cap = b->cap ? 2 * b->cap : 8192;
    while (cap < b->n + (size_t)k + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return;
    b->p = q, b->cap = cap;
  }
}

static void hist_print(sbuf *b, const char *name, const char *help, dw_hist *h) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  uint64_t cum = 0;
  for (int i = 0; i <= DW_HIST_BUCKETS; i++) {
    cum += atomic_load(&h->le[i]);
    if (i < DW_HIST_BUCKETS) sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, hist_le[i], (unsigned long long)cum);
    else sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
  }
  sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, atomic_load(&h->sum_us) / 1e6, name,
            (unsigned long long)atomic_load(&h->count));
}

static enum MHD_Result metrics(dw_srv *s, dw_req *r) {
  sbuf b = {0};
  dw_host_stats hs;
  dw_host_get_stats(s->host, &hs);
  sb_printf(&b, "# HELP driftwood_http_requests_total HTTP requests answered, by endpoint and status class.\n"
                "# TYPE driftwood_http_requests_total counter\n");
  for (int e = 0; e < EP_COUNT; e++)
    for (int c = 1; c <= 5; c++) {
      uint64_t v = atomic_load(&s->m.requests[e][c]);
      if (v) sb_printf(&b, "driftwood_http_requests_total{endpoint=\"%s\",code=\"%dxx\"} %llu\n", ep_names[e], c,
                       (unsigned long long)v);
    }
  sb_printf(&b, "# HELP driftwood_prompt_tokens_total Prompt tokens of completions (cached ones included).\n"
                "# TYPE driftwood_prompt_tokens_total counter\ndriftwood_prompt_tokens_total %llu\n"
                "# HELP driftwood_cached_prompt_tokens_total Prompt tokens re-used from an actor's KV cache.\n"
                "# TYPE driftwood_cached_prompt_tokens_total counter\ndriftwood_cached_prompt_tokens_total %llu\n"
                "# HELP driftwood_completion_tokens_total Tokens generated.\n"
                "# TYPE driftwood_completion_tokens_total counter\ndriftwood_completion_tokens_total %llu\n"
                "# HELP driftwood_streams_cancelled_total Streams whose client went away before the end.\n"
                "# TYPE driftwood_streams_cancelled_total counter\ndriftwood_streams_cancelled_total %llu\n",
            (unsigned long long)atomic_load(&s->m.prompt_tokens), (unsigned long long)atomic_load(&s->m.cached_tokens),
            (unsigned long long)atomic_load(&s->m.completion_tokens),
            (unsigned long long)atomic_load(&s->m.streams_cancelled));
  hist_print(&b, "driftwood_time_to_first_token_seconds", "From a completion request's arrival to its first token.",
             &s->m.ttft);
  hist_print(&b, "driftwood_request_duration_seconds", "From a request's arrival to its last byte sent.",
             &s->m.duration);
  sb_printf(&b,
            "# HELP driftwood_actors Actors known to the host (live or hibernated).\n# TYPE driftwood_actors gauge\n"
            "driftwood_actors %d\n"
            "# HELP driftwood_live_actors Actors instantiated in memory.\n# TYPE driftwood_live_actors gauge\n"
            "driftwood_live_actors %d\n"
            "# HELP driftwood_running_jobs Jobs running on the workers now.\n# TYPE driftwood_running_jobs gauge\n"
            "driftwood_running_jobs %d\n"
            "# HELP driftwood_queued_jobs Jobs waiting in mailboxes.\n# TYPE driftwood_queued_jobs gauge\n"
            "driftwood_queued_jobs %d\n"
            "# HELP driftwood_kv_bytes KV-cache bytes held by live actors.\n# TYPE driftwood_kv_bytes gauge\n"
            "driftwood_kv_bytes %llu\n"
            "# HELP driftwood_actor_memory_bytes Linear memory of live actors.\n"
            "# TYPE driftwood_actor_memory_bytes gauge\ndriftwood_actor_memory_bytes %llu\n"
            "# HELP driftwood_messages_total Actor messages run (failed and cancelled included).\n"
            "# TYPE driftwood_messages_total counter\ndriftwood_messages_total %llu\n"
            "# HELP driftwood_messages_failed_total Messages that trapped, ran out of time or failed to persist.\n"
            "# TYPE driftwood_messages_failed_total counter\ndriftwood_messages_failed_total %llu\n"
            "# HELP driftwood_messages_cancelled_total Messages cancelled because their client went away.\n"
            "# TYPE driftwood_messages_cancelled_total counter\ndriftwood_messages_cancelled_total %llu\n"
            "# HELP driftwood_refused_total Jobs refused because a queue was full (answered 429).\n"
            "# TYPE driftwood_refused_total counter\ndriftwood_refused_total %llu\n"
            "# HELP driftwood_uptime_seconds Seconds since the server started.\n"
            "# TYPE driftwood_uptime_seconds gauge\ndriftwood_uptime_seconds %.3f\n",
            hs.actors, hs.live, hs.running, hs.queued, (unsigned long long)hs.kv_bytes,
            (unsigned long long)hs.memory_bytes, (unsigned long long)hs.messages, (unsigned long long)hs.failed,
            (unsigned long long)hs.cancelled, (unsigned long long)hs.refused, dw_now() - s->started);
  enum MHD_Result ret = dw_reply(s, r, 200, "text/plain; version=0.0.4", b.p ? b.p : "", b.n);
  free(b.p);
  return ret;
}

/* ---- requests ------------------------------------------------------------------- */

typedef struct conn_ctx {
  dw_req r;
  size_t cap, limit;
  bool too_big;
} conn_ctx;

static bool authorized(dw_srv *s, dw_req *r) {
  const char *key = s->cfg->api_key;
  if (!key || !*key) return true;
  const char *h = header(r, "Authorization");
  if (!h || strncasecmp(h, "Bearer ", 7)) return false;
  h += 7;
  size_t a = strlen(h), b = strlen(key);
  unsigned char diff = a != b;
  for (size_t i = 0; i < b; i++) diff |= (unsigned char)(h[i < a ? i : 0] ^ key[i]);
  return diff == 0;
}

static dw_ep endpoint_of(const char *url) {
  if (!strcmp(url, "/v1/chat/completions")) return EP_CHAT;
  if (!strcmp(url, "/v1/completions")) return EP_COMPLETIONS;
  if (!strcmp(url, "/v1/embeddings")) return EP_EMBEDDINGS;
  if (!strncmp(url, "/v1/models", 10)) return EP_MODELS;
  if (!strncmp(url, "/v1/actors", 10)) return EP_ACTORS;
  if (!strcmp(url, "/health")) return EP_HEALTH;
  if (!strcmp(url, "/metrics")) return EP_METRICS;
  return EP_OTHER;
}

static enum MHD_Result dispatch(dw_srv *s, dw_req *r) {
  const char *u = r->url;
  bool get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
  if (!strcmp(u, "/health") && get) return dw_reply(s, r, 200, "application/json", "{\"status\":\"ok\"}", 15);
  if (!authorized(s, r))
    return dw_reply_error(s, r, 401, "invalid_request_error", "invalid_api_key",
                          "a valid API key is needed: Authorization: Bearer KEY");
  if (!strcmp(u, "/metrics") && get) return metrics(s, r);
  if (!strcmp(u, "/v1/models") || !strncmp(u, "/v1/models/", 11)) return dw_openai_models(s, r);
  if (!strcmp(u, "/v1/chat/completions") && post) return dw_openai_completion(s, r, true);
  if (!strcmp(u, "/v1/completions") && post) return dw_openai_completion(s, r, false);
  if (!strcmp(u, "/v1/embeddings") && post) return dw_openai_embeddings(s, r);
  if (!strncmp(u, "/v1/actors", 10)) return route_actors(s, r, u + 10);
  return dw_reply_error(s, r, 404, "invalid_request_error", "not_found", "no route %s %s", r->method, u);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **state) {
  (void)version;
  dw_srv *s = cls;
  conn_ctx *c = *state;
  if (!c) { /* headers are in */
    if (!(c = calloc(1, sizeof *c))) return MHD_NO;
    c->r.conn = conn;
    c->r.method = method;
    c->r.url = url;
    c->r.t0 = dw_now();
    c->r.ep = endpoint_of(url);
    c->r.body = NULL;
    c->limit = s->max_body;
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    if (!strcmp(url, "/v1/actors") && ct && !strncasecmp(ct, "application/octet-stream", 24)) c->limit = s->max_upload;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > c->limit) c->too_big = true;
    *state = c;
    return MHD_YES;
  }
  if (*size) { /* a piece of the body */
    if (!c->too_big && c->r.len + *size > c->limit) {
      c->too_big = true;
      free(c->r.body);
      c->r.body = NULL;
      c->r.len = c->cap = 0;
    }
    if (!c->too_big) {
      if (c->r.len + *size + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->r.len + *size + 1) cap *= 2;
        char *b = realloc(c->r.body, cap);
        if (!b) return MHD_NO;
        c->r.body = b, c->cap = cap;
      }
      memcpy(c->r.body + c->r.len, data, *size);
      c->r.len += *size;
    }
    *size = 0;
    return MHD_YES;
  }
  if (c->too_big)
    return dw_reply_error(s, &c->r, 413, "invalid_request_error", "body_too_large", "the body exceeds %llu bytes",
                          (unsigned long long)c->limit);
  if (!c->r.body && !(c->r.body = calloc(1, 1))) return MHD_NO;
  c->r.body[c->r.len] = 0;
  return dispatch(s, &c->r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state, enum MHD_RequestTerminationCode why) {
  (void)conn, (void)why;
  dw_srv *s = cls;
  conn_ctx *c = *state;
  if (!c) return;
  dw_hist_add(&s->m.duration, dw_now() - c->r.t0); /* every request, once its last byte went */
  free(c->r.body);
  free(c);
  *state = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  fprintf(stderr, "driftwood serve: http: ");
  vfprintf(stderr, fmt, ap);
}

/* ---- start-up and shutdown ------------------------------------------------------- */

static dw_status parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len, bool *v6) {
  char host[256];
  const char *colon = strrchr(spec, ':');
  if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host)
    return dw_error_set(DW_ERR_INVALID_ARG, "--listen wants ADDR:PORT, got '%s'", spec);
  memcpy(host, spec, (size_t)(colon - spec));
  host[colon - spec] = 0;
  char *end;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (*end || port > 65535 || !colon[1]) return dw_error_set(DW_ERR_INVALID_ARG, "--listen: bad port in '%s'", spec);
  memset(ss, 0, sizeof *ss);
  size_t hl = strlen(host);
  if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
    host[hl - 1] = 0;
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
      return dw_error_set(DW_ERR_INVALID_ARG, "--listen: bad IPv6 address in '%s'", spec);
    *len = sizeof *a, *v6 = true;
    return DW_OK;
  }
  struct sockaddr_in *a = (struct sockaddr_in *)ss;
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
    return dw_error_set(DW_ERR_INVALID_ARG, "--listen: bad IPv4 address in '%s' (names other than localhost are not looked up)", spec);
  *len = sizeof *a, *v6 = false;
  return DW_OK;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* Writes bytes to path atomically (temporary file, rename). */
static dw_status write_file(const char *path, const void *p, size_t n) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return dw_error_set(DW_ERR_IO, "%s: %s", tmp, strerror(errno));
  bool ok = fwrite(p, 1, n, f) == n;
  ok = fflush(f) == 0 && ok;
  ok = fsync(fileno(f)) == 0 && ok;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return dw_error_set(DW_ERR_IO, "%s: %s", path, strerror(errno));
  }
  return DW_OK;
}

static dw_status split_kv(const char *spec, const char *what, char *name, size_t cap, const char **path) {
  *path = NULL;
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec || !eq[1] || (size_t)(eq - spec) >= cap)
    return dw_error_set(DW_ERR_INVALID_ARG, "--%s wants NAME=PATH, got '%s'", what, spec);
  memcpy(name, spec, (size_t)(eq - spec));
  name[eq - spec] = 0;
  *path = eq + 1;
  return DW_OK;
}

static dw_status setup(dw_srv *s, const dw_serve_config *cfg, const char *state_dir) {
  dw_status st;
  dw_runtime_config rc = cfg->runtime;
  rc.fixed_models = true; /* an uploaded snapshot never opens a file the server was not given */
  if ((st = dw_runtime_create(&rc, &s->rt))) return st;
  if (!(s->model_names = calloc((size_t)cfg->n_models + 1, sizeof *s->model_names)) ||
      !(s->models = calloc((size_t)cfg->n_models + 1, sizeof *s->models)))
    return dw_error_set(DW_ERR_NOMEM, "serve");
  for (int i = 0; i < cfg->n_models; i++) {
    char name[128];
    const char *path;
    if ((st = split_kv(cfg->models[i], "model", name, sizeof name, &path))) return st;
    for (int k = 0; k < s->n_models; k++)
      if (!strcmp(s->model_names[k], name)) return dw_error_set(DW_ERR_INVALID_ARG, "model '%s' given twice", name);
    if ((st = dw_runtime_add_model(s->rt, name, path)) || (st = dw_model_open(path, 0, &s->models[i]))) return st;
    if (!(s->model_names[i] = strdup(name))) return dw_error_set(DW_ERR_NOMEM, "serve");
    s->n_models++;
  }
  dw_host_config hc = {.rt = s->rt, .state_dir = state_dir, .workers = cfg->workers, .max_queue = cfg->max_queue,
                       .persist_each = cfg->persist_each, .hibernate_after_s = cfg->hibernate_after_s};
  if ((st = dw_host_create(&hc, &s->host))) return st;
  bool have_chat = false;
  for (int i = 0; i < cfg->n_modules; i++) {
    char name[64];
    const char *path;
    if ((st = split_kv(cfg->modules[i], "module", name, sizeof name, &path))) return st;
    if ((st = dw_host_add_module(s->host, name, path))) return st;
    have_chat |= !strcmp(name, "chat");
  }
  if (!have_chat && cfg->chat_module && cfg->chat_module_len) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/modules", state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return dw_error_set(DW_ERR_IO, "%s: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/chat.wasm", dir);
    if ((st = write_file(path, cfg->chat_module, cfg->chat_module_len)) ||
        (st = dw_host_add_module(s->host, "chat", path)))
      return st;
  }
  return DW_OK;
}

static void teardown(dw_srv *s) {
  dw_host_destroy(s->host);
  for (int i = 0; i < s->n_models; i++) {
    dw_model_close(s->models[i]);
    free(s->model_names[i]);
  }
  free(s->models);
  free(s->model_names);
  dw_runtime_destroy(s->rt);
}

dw_status dw_serve(const dw_serve_config *cfg) {
  dw_srv s = {.cfg = cfg, .started = dw_now()};
  s.max_body = cfg->max_body ? cfg->max_body : 1u << 20;
  s.max_upload = cfg->max_upload ? cfg->max_upload : 256u << 20;
  struct sockaddr_storage ss;
  socklen_t sl;
  bool v6 = false;
  dw_status st = parse_listen(cfg->listen ? cfg->listen : "127.0.0.1:8080", &ss, &sl, &v6);
  if (st) return st;
  if (cfg->n_models < 1) return dw_error_set(DW_ERR_INVALID_ARG, "serve: at least one --model NAME=PATH");

  /* SIGINT and SIGTERM are taken by sigwait below, never by another thread */
  sigset_t sigs, old;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  signal(SIGPIPE, SIG_IGN);

  char tmpdir[] = "/tmp/driftwood-serve-XXXXXX";
  const char *state_dir = cfg->state_dir;
  if (!state_dir) {
    if (!mkdtemp(tmpdir)) return dw_error_set(DW_ERR_IO, "temporary state directory: %s", strerror(errno));
    state_dir = tmpdir;
  } else if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
    return dw_error_set(DW_ERR_IO, "--state-dir %s: %s", state_dir, strerror(errno));
  }
  if ((st = setup(&s, cfg, state_dir))) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", dw_last_error());
    teardown(&s);
    if (!cfg->state_dir) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return dw_error_set(st, "%s", msg);
  }
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
                   (v6 ? MHD_USE_IPv6 : 0);
  unsigned limit = cfg->max_connections > 0 ? (unsigned)cfg->max_connections : 4096;
  struct MHD_Daemon *d =
      MHD_start_daemon(flags, 0, NULL, NULL, on_request, &s, MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                       MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                       MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512u << 10), MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                       &s, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
                       MHD_OPTION_END);
  if (!d) {
    st = dw_error_set(DW_ERR_IO, "cannot listen on %s (in use, or not an address of this machine?)",
                      cfg->listen ? cfg->listen : "127.0.0.1:8080");
  } else {
    const union MHD_DaemonInfo *li = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    char addr[INET6_ADDRSTRLEN + 16] = "?", ip[INET6_ADDRSTRLEN] = "?";
    if (li && getsockname(li->listen_fd, (struct sockaddr *)&bound, &bl) == 0) {
      if (bound.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&bound;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(addr, sizeof addr, "[%s]:%u", ip, ntohs(a->sin6_port));
      } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&bound;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(addr, sizeof addr, "%s:%u", ip, ntohs(a->sin_port));
      }
    }
    dw_host_stats hs;
    dw_host_get_stats(s.host, &hs);
    char desc[512];
    dw_runtime_describe(s.rt, desc, sizeof desc);
    fprintf(stderr, "driftwood serve: %d model%s (default '%s'), module%s:", s.n_models, s.n_models == 1 ? "" : "s",
            s.model_names[0], "s");
    for (int i = 0; dw_host_module_name(s.host, i); i++) fprintf(stderr, " %s", dw_host_module_name(s.host, i));
    fprintf(stderr, "; %d actor%s in %s%s\n", hs.actors, hs.actors == 1 ? "" : "s", state_dir,
            cfg->state_dir ? "" : " (temporary)");
    fprintf(stderr, "driftwood serve: %s\n", desc);
    fprintf(stderr, "driftwood serve: listening on http://%s/ (OpenAI API at http://%s/v1)%s\n", addr, addr,
            cfg->api_key ? "; API key required" : "");
    if (cfg->ready_file && (st = write_file(cfg->ready_file, addr, strlen(addr))))
      fprintf(stderr, "driftwood serve: %s\n", dw_last_error());
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "driftwood serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    MHD_stop_daemon(d); /* waits for the connection threads */
    st = DW_OK;
  }
  teardown(&s);
  if (!cfg->state_dir) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!st) fprintf(stderr, "driftwood serve: stopped\n");
  return st;
}
