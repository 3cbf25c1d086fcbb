/*
 * snapshot_bench.c — freeze and thaw against re-prefill: for each context
 * length, a fresh actor (bench/kv_actor.wasm) prefills N tokens (timed:
 * the re-prefill a thaw replaces), is frozen to a file (timed, with the
 * fsyncs of the atomic write) and thawed from it (timed, the file in the
 * page cache). Prints one CSV line per length: tokens, snapshot bytes,
 * prefill ms, freeze ms, thaw ms, thaw GB/s, speed-up (best of REPS), and
 * how much resident memory the thawed, idle actor added (RSS growth).
 *
 *   bench_snapshot MODEL.gguf KV_ACTOR.wasm DIR [REPS] [N...]
 *
 * DW_BENCH_BACKEND=cuda runs it on the CUDA backend and LLM engine.
 */
#define _POSIX_C_SOURCE 200809L
#include "driftwood.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static long rss_kib(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f && fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
  if (f) fclose(f);
  return rss * 4;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CHECK(x)                                                  \
  do {                                                            \
    if ((x) != DW_OK) {                                           \
      fprintf(stderr, "bench_snapshot: %s\n", dw_last_error());   \
      return 1;                                                   \
    }                                                             \
  } while (0)

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_snapshot MODEL.gguf KV_ACTOR.wasm DIR [REPS] [N...]\n");
    return 2;
  }
  int reps = argc > 4 ? atoi(argv[4]) : 3;
  int lens[16] = {24, 256, 1024, 2048}, nl = 4;
  if (argc > 5) {
    nl = 0;
    for (int i = 5; i < argc && nl < 16; i++) lens[nl++] = atoi(argv[i]);
  }
  const char *be = getenv("DW_BENCH_BACKEND"); /* cpu (default), cuda */
  dw_runtime_config rc = {.backend = be && *be ? be : "cpu"};
  dw_runtime *rt;
  dw_module *m;
  CHECK(dw_runtime_create(&rc, &rt));
  CHECK(dw_runtime_add_model(rt, "default", argv[1]));
  CHECK(dw_module_load(rt, argv[2], &m, NULL));
  char path[4096];
  snprintf(path, sizeof path, "%s/bench.dws", argv[3]);
  printf("tokens,snapshot_bytes,prefill_ms,freeze_ms,thaw_ms,thaw_gbps,speedup,thawed_rss_mib\n");
  for (int li = 0; li < nl; li++) {
    double best_p = 1e9, best_f = 1e9, best_t = 1e9;
    long rss_growth = 0;
    struct stat sb = {0};
    for (int r = 0; r < reps; r++) {
      dw_actor *a, *t;
      char msg[32];
      int32_t res;
      snprintf(msg, sizeof msg, "fill %d", lens[li]);
      CHECK(dw_actor_spawn(m, &a));
      double t0 = now();
      CHECK(dw_actor_send(a, msg, strlen(msg), 1, &res));
      double t1 = now();
      if (res) {
        fprintf(stderr, "bench_snapshot: the actor answered %d\n", res);
        return 1;
      }
      CHECK(dw_actor_freeze_file(a, 0, path));
      double t2 = now();
      dw_actor_destroy(a); /* the original goes first, so the growth below is the thawed actor's */
      a = NULL;
      long r0 = rss_kib();
      double t2b = now();
      CHECK(dw_actor_thaw_file(rt, m, path, &t, NULL));
      double t3 = now();
      rss_growth = rss_kib() - r0;
      t3 -= t2b - t2; /* exclude the destroy */
      stat(path, &sb);
      if (t1 - t0 < best_p) best_p = t1 - t0;
      if (t2 - t1 < best_f) best_f = t2 - t1;
      if (t3 - t2 < best_t) best_t = t3 - t2;
      dw_actor_destroy(a);
      dw_actor_destroy(t);
    }
    printf("%d,%lld,%.2f,%.2f,%.2f,%.2f,%.1f,%.1f\n", lens[li], (long long)sb.st_size, best_p * 1e3, best_f * 1e3,
           best_t * 1e3, (double)sb.st_size / best_t / 1e9, best_p / best_t, rss_growth / 1024.0);
    fflush(stdout);
  }
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
  return 0;
}
