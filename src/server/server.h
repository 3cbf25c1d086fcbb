/*
 * server.h — what the HTTP front (http.c) and the OpenAI endpoints
 * (openai.c) share: the server object, replies, response streams and the
 * metrics.
 *
 * Threads: libmicrohttpd runs each connection on its own thread; handlers
 * block there (waiting for a job) and stream from there.
 */
#ifndef DW_SERVER_SERVER_H
#define DW_SERVER_SERVER_H

#include "driftwood_server.h"
#include "server/host.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>

/* Endpoints, as the metrics label them. */
typedef enum dw_ep {
  EP_CHAT, EP_COMPLETIONS, EP_EMBEDDINGS, EP_MODELS, EP_ACTORS, EP_MESSAGES, EP_SNAPSHOT, EP_HEALTH, EP_METRICS,
  EP_OTHER, EP_COUNT
} dw_ep;

#define DW_HIST_BUCKETS 14

typedef struct dw_hist {
  _Atomic uint64_t le[DW_HIST_BUCKETS + 1]; /* counts per bucket (the last is +Inf) */
  _Atomic uint64_t count, sum_us;
} dw_hist;

typedef struct dw_metrics {
  _Atomic uint64_t requests[EP_COUNT][6]; /* by status class 1xx..5xx (index 1..5) */
  _Atomic uint64_t prompt_tokens, completion_tokens, cached_tokens;
  _Atomic uint64_t streams_cancelled;
  dw_hist ttft, duration;
} dw_metrics;

typedef struct dw_srv {
  const dw_serve_config *cfg;
  dw_runtime *rt;
  dw_host *host;
  int n_models;
  char **model_names;        /* owned: registered model aliases, in order */
  dw_model **models;         /* loaded (dw_model_open) for tokenizing and embeddings */
  uint64_t max_body, max_upload;
  dw_metrics m;
  double started;
} dw_srv;

/* A request as the handlers see it. */
typedef struct dw_req {
  struct MHD_Connection *conn;
  const char *method, *url;
  char *body;                /* NUL-terminated */
  size_t len;
  double t0;                 /* monotonic seconds at arrival */
  dw_ep ep;
} dw_req;

double dw_now(void);
void dw_hist_add(dw_hist *h, double seconds);

/* Replies (each queues the response and returns MHD's result). */
enum MHD_Result dw_reply(dw_srv *s, dw_req *r, unsigned status, const char *ctype, const void *body, size_t len);
enum MHD_Result dw_reply_json(dw_srv *s, dw_req *r, unsigned status, json_t *j); /* steals j */
/* OpenAI's error shape: {"error": {"message", "type", "param", "code"}}. */
enum MHD_Result dw_reply_error(dw_srv *s, dw_req *r, unsigned status, const char *type, const char *code,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The HTTP status and error type for a failed job or call. */
unsigned dw_status_http(dw_status st);
/* 429 with Retry-After. */
enum MHD_Result dw_reply_busy(dw_srv *s, dw_req *r, const char *why);

/* A response body produced on a worker and sent from the connection's
 * thread: bounded (writers wait while it is full), cancelled when the
 * client goes away. Reference-counted by the writer and the response. */
typedef struct dw_stream dw_stream;
dw_stream *dw_stream_new(void);
/* Appends bytes; non-zero when the reader is gone (stop producing). */
int dw_stream_write(dw_stream *st, const void *p, size_t n);
/* No more bytes; error: end the response with an error (the connection
 * is closed without the final chunk). Drops the writer's reference. */
void dw_stream_close(dw_stream *st, bool error);
/* Waits until the stream has bytes or is closed: true if it has bytes. */
bool dw_stream_wait_first(dw_stream *st);
/* Sends the stream as the body (chunked); takes the response's reference. */
enum MHD_Result dw_reply_stream(dw_srv *s, dw_req *r, unsigned status, const char *ctype, dw_stream *st);
/* fn(owner) runs when the stream's last reference goes (the job and the
 * response are both done with it). */
void dw_stream_set_owner(dw_stream *st, void (*fn)(void *), void *owner);
/* Standard base64 of n bytes (malloc'd, NUL-terminated; NULL: no memory). */
char *dw_base64(const void *p, size_t n);
/* Drops a reference without sending (the response was never made). */
void dw_stream_unref(dw_stream *st);

/* The OpenAI endpoints (openai.c). */
enum MHD_Result dw_openai_models(dw_srv *s, dw_req *r);
enum MHD_Result dw_openai_completion(dw_srv *s, dw_req *r, bool chat);
enum MHD_Result dw_openai_embeddings(dw_srv *s, dw_req *r);

/* Parses r's body as a JSON object (depth and size bounded); on failure
 * replies 400 itself and returns NULL (*sent says a reply was queued). */
json_t *dw_parse_body(dw_srv *s, dw_req *r, enum MHD_Result *sent);

#endif
