/*
 * memstate_bench.c — an actor's linear memory through thaw and fork:
 * copy-on-write mapping against copying, in one run. For each size, the
 * actor (bench/mem_actor.wasm) fills N MiB of memory; it is frozen raw
 * (PAGES, mappable) and compressed (MEMORY, zstd). Then, best of REPS:
 *   thaw   map   PAGES file mapped copy-on-write (the default)
 *          copy  the same file with DRIFTWOOD_MEM_COW=0 (pages copied)
 *          zstd  the compressed file (decompressed into memory)
 *   fork   share (memfd, both sides map it) against copy (COW off)
 * and reports the time, the proportional set size (Pss, which counts a
 * page mapped k times as 1/k) the new actor added while idle, the time of
 * its first full read of memory ("sum"), and for DENSITY actors thawed
 * from one file the total Pss they add.
 *
 *   bench_memstate MEM_ACTOR.wasm DIR [REPS] [MiB...]
 */
#define _POSIX_C_SOURCE 200809L
#include "driftwood.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { DENSITY = 8 };

static long pss_kib(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Pss: %ld", &v) == 1) break;
  if (f) fclose(f);
  return v;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int devnull;

#define CHECK(x)                                                  \
  do {                                                            \
    if ((x) != DW_OK) {                                           \
      fprintf(stderr, "bench_memstate: %s\n", dw_last_error());   \
      exit(1);                                                    \
    }                                                             \
  } while (0)

static double send(dw_actor *a, const char *msg) {
  int32_t r;
  double t = now();
  CHECK(dw_actor_send(a, msg, strlen(msg), devnull, &r));
  if (r != 0) fprintf(stderr, "bench_memstate: %s answered %d\n", msg, r), exit(1);
  return now() - t;
}

typedef struct row {
  double t, first_read;
  long pss;
} row;

static void keep_best(row *best, row r) {
  if (best->t == 0 || r.t < best->t) best->t = r.t;
  if (best->first_read == 0 || r.first_read < best->first_read) best->first_read = r.first_read;
  best->pss = r.pss; /* the same every round: keep the last */
}

static void cow(bool on) {
  if (on) unsetenv("DRIFTWOOD_MEM_COW");
  else setenv("DRIFTWOOD_MEM_COW", "0", 1);
}

static row thaw_once(dw_runtime *rt, dw_module *m, const char *path, bool map) {
  cow(map);
  dw_actor *a;
  long p0 = pss_kib();
  double t = now();
  CHECK(dw_actor_thaw_file(rt, m, path, &a, NULL));
  row r = {now() - t, 0, pss_kib() - p0};
  r.first_read = send(a, "sum");
  dw_actor_destroy(a);
  cow(true);
  return r;
}

static row fork_once(dw_actor *src, bool share) {
  cow(share);
  dw_actor *f;
  long p0 = pss_kib();
  double t = now();
  CHECK(dw_actor_fork(src, &f));
  row r = {now() - t, 0, pss_kib() - p0};
  r.first_read = send(f, "sum");
  dw_actor_destroy(f);
  cow(true);
  return r;
}

static long density(dw_runtime *rt, dw_module *m, const char *path, bool map) {
  cow(map);
  dw_actor *a[DENSITY];
  long p0 = pss_kib();
  for (int i = 0; i < DENSITY; i++) CHECK(dw_actor_thaw_file(rt, m, path, &a[i], NULL));
  for (int i = 0; i < DENSITY; i++) send(a[i], "sum"); /* every page read once by every actor */
  long grown = pss_kib() - p0;
  for (int i = 0; i < DENSITY; i++) dw_actor_destroy(a[i]);
  cow(true);
  return grown;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_memstate MEM_ACTOR.wasm DIR [REPS] [MiB...]\n");
    return 2;
  }
  int reps = argc > 3 ? atoi(argv[3]) : 3;
  int sizes[16] = {16, 64, 256}, ns = 3;
  if (argc > 4) {
    ns = 0;
    for (int i = 4; i < argc && ns < 16; i++) sizes[ns++] = atoi(argv[i]);
  }
  devnull = open("/dev/null", O_WRONLY);
  dw_runtime_config rc = {.backend = "cpu"};
  dw_runtime *rt;
  dw_module *m;
  CHECK(dw_runtime_create(&rc, &rt));
  CHECK(dw_module_load(rt, argv[1], &m, NULL));
  char pages[4096], zstd[4096];
  snprintf(pages, sizeof pages, "%s/pages.dws", argv[2]);
  snprintf(zstd, sizeof zstd, "%s/zstd.dws", argv[2]);
  printf("mib,path,file_bytes,freeze_ms,ms,idle_pss_mib,first_read_ms\n");
  for (int s = 0; s < ns; s++) {
    dw_actor *a;
    CHECK(dw_actor_spawn(m, &a));
    char msg[32];
    snprintf(msg, sizeof msg, "fill %d", sizes[s]);
    send(a, msg);
    double fz[2] = {1e9, 1e9};
    for (int r = 0; r < reps; r++) {
      double t = now();
      CHECK(dw_actor_freeze_file(a, 0, pages));
      if (now() - t < fz[0]) fz[0] = now() - t;
      t = now();
      CHECK(dw_actor_freeze_file(a, DW_FREEZE_COMPRESS_MEMORY, zstd));
      if (now() - t < fz[1]) fz[1] = now() - t;
    }
    struct stat sp, sz;
    stat(pages, &sp), stat(zstd, &sz);
    row best[5] = {{0}};
    for (int r = 0; r < reps; r++) { /* rounds alternate the order */
      int first = r & 1;
      for (int k = 0; k < 2; k++) {
        int mode = first ^ k;
        keep_best(&best[mode], thaw_once(rt, m, pages, mode == 0));
        keep_best(&best[3 + mode], fork_once(a, mode == 0));
      }
      keep_best(&best[2], thaw_once(rt, m, zstd, false));
    }
    static const char *const names[] = {"thaw-map", "thaw-copy", "thaw-zstd", "fork-share", "fork-copy"};
    for (int k = 0; k < 5; k++)
      printf("%d,%s,%lld,%.2f,%.2f,%.1f,%.2f\n", sizes[s], names[k],
             k < 2 ? (long long)sp.st_size : k == 2 ? (long long)sz.st_size : 0LL,
             k < 2 ? fz[0] * 1e3 : k == 2 ? fz[1] * 1e3 : 0.0, best[k].t * 1e3, best[k].pss / 1024.0,
             best[k].first_read * 1e3);
    long dm = density(rt, m, pages, true), dc = density(rt, m, pages, false);
    printf("%d,density-%d-map,,,,%.1f,\n%d,density-%d-copy,,,,%.1f,\n", sizes[s], DENSITY, dm / 1024.0, sizes[s],
           DENSITY, dc / 1024.0);
    fflush(stdout);
    dw_actor_destroy(a);
  }
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
  return 0;
}
