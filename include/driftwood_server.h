/*
 * driftwood_server.h — `driftwood serve` as a library call: a long-running
 * actor host with an HTTP API (actor endpoints and OpenAI-compatible ones).
 * docs/serve.md describes the endpoints.
 */
#ifndef DRIFTWOOD_SERVER_H
#define DRIFTWOOD_SERVER_H

#include "driftwood.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dw_serve_config {
  const char *listen;            /* "ADDR:PORT" ("[::1]:8080" for IPv6); NULL: 127.0.0.1:8080;
                                    port 0 picks a free one */
  int n_models;
  const char *const *models;     /* "NAME=PATH.gguf"; the first is the default model */
  int n_modules;
  const char *const *modules;    /* "NAME=PATH.wasm" actor modules */
  const void *chat_module;       /* the built-in chat actor (registered as "chat"
                                    unless a module of that name is given) */
  size_t chat_module_len;
  const char *state_dir;         /* NULL: a private temporary directory, removed at exit */
  const char *api_key;           /* NULL: no authentication */
  dw_runtime_config runtime;     /* backend, threads, cache, time limit */
  int workers;                   /* actor workers; 0: one per core */
  int max_queue;                 /* queued messages before 429; 0: 4096 */
  int max_connections;           /* 0: 4096 */
  uint64_t max_body;             /* JSON / message body bytes; 0: 1 MiB */
  uint64_t max_upload;           /* snapshot upload bytes; 0: 256 MiB */
  bool persist_each;             /* snapshot after every message (else on idle/exit) */
  double hibernate_after_s;      /* release idle actors after this; 0: never */
  const char *ready_file;        /* if set: the listening address is written here once ready */
} dw_serve_config;

/* Serves until SIGINT or SIGTERM; returns DW_OK after a clean shutdown
 * (every live actor saved). */
DW_API dw_status dw_serve(const dw_serve_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
