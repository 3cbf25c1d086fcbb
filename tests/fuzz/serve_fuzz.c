/*
 * serve_fuzz.c — libFuzzer target for `driftwood serve`: each input is sent
 * as it is, as the raw bytes of one HTTP connection, to a server this
 * process runs on loopback (the HTTP library's parser, then our routing,
 * authentication, JSON bodies, actor messages and snapshot uploads). The
 * server must answer or close every connection, never crash, and still
 * answer GET /health after every input.
 *
 * Environment: DW_FUZZ_MODULE (an actor module, served as "echo"),
 * DW_FUZZ_MODEL (a GGUF, the default model). tests/fuzz/serve-seeds holds
 * requests of every endpoint to start from.
 */
#define _GNU_SOURCE
#include "driftwood_server.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static char ready[64];
static dw_serve_config cfg;

static void *serve(void *arg) {
  (void)arg;
  if (dw_serve(&cfg) != DW_OK) fprintf(stderr, "serve_fuzz: %s\n", dw_last_error());
  abort(); /* it only returns on SIGINT/SIGTERM or a failed start */
}

static void start(void) {
  static const char *models[1], *modules[1];
  static char model[4096], module[4096];
  const char *mp = getenv("DW_FUZZ_MODEL"), *wp = getenv("DW_FUZZ_MODULE");
  if (!mp || !wp) {
    fprintf(stderr, "serve_fuzz: set DW_FUZZ_MODEL and DW_FUZZ_MODULE\n");
    abort();
  }
  snprintf(model, sizeof model, "default=%s", mp);
  snprintf(module, sizeof module, "echo=%s", wp);
  models[0] = model, modules[0] = module;
  snprintf(ready, sizeof ready, "/tmp/serve-fuzz-%d.addr", (int)getpid());
  unlink(ready);
  cfg = (dw_serve_config){.listen = "127.0.0.1:0", .n_models = 1, .models = models, .n_modules = 1,
                          .modules = modules, .runtime = {.backend = "cpu", .threads = 1, .time_limit_ms = 2000, .actor_memory_limit_bytes = 64u << 20},
                          .workers = 2, .max_queue = 64, .max_connections = 64, .max_body = 64 << 10,
                          .max_upload = 4 << 20, .hibernate_after_s = 1, .ready_file = ready};
  pthread_t t;
  if (pthread_create(&t, NULL, serve, NULL)) abort();
  for (int i = 0; i < 3000; i++) { /* up to 30 s for the model and module */
    FILE *f = fopen(ready, "r");
    char line[128] = "";
    if (f && fgets(line, sizeof line, f)) {
      fclose(f);
      char *colon = strrchr(line, ':');
      if (!colon) abort();
      *colon = 0;
      addr.sin_family = AF_INET;
      addr.sin_port = htons((uint16_t)atoi(colon + 1));
      if (inet_pton(AF_INET, line, &addr.sin_addr) != 1) abort();
      unlink(ready);
      return;
    }
    if (f) fclose(f);
    usleep(10000);
  }
  fprintf(stderr, "serve_fuzz: the server did not start\n");
  abort();
}

/* Sends data on one connection, half-closes it and reads the answer to its
 * end; the first bytes of the answer go to head. False when the server
 * could not be reached or did not finish within `seconds`. */
static int exchange(const void *data, size_t size, char *head, size_t cap, int seconds) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct timeval tv = {.tv_sec = seconds};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(fd);
    return 0;
  }
  for (size_t off = 0; off < size;) {
    ssize_t n = send(fd, (const char *)data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) break; /* the server may close early on a bad request */
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  size_t got = 0;
  char buf[4096];
  int ok = 1;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      ok = 0; /* timed out, or reset: the caller decides */
      break;
    }
    if (got + 1 < cap) {
      size_t k = (size_t)n < cap - 1 - got ? (size_t)n : cap - 1 - got;
      memcpy(head + got, buf, k);
      got += k;
    }
  }
  head[got] = 0;
  close(fd);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!addr.sin_port) start();
  char head[256];
  exchange(data, size, head, sizeof head, 10);
  static const char health[] = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (!exchange(health, sizeof health - 1, head, sizeof head, 10) || strncmp(head, "HTTP/1.1 200", 12) != 0) {
    fprintf(stderr, "serve_fuzz: the server no longer answers /health (%s)\n", head);
    abort();
  }
  return 0;
}
