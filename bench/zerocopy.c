/*
 * zerocopy.c — matmul on the guest's own bytes vs the usual copy path.
 *
 * For each size N (N×N×N): a guest instance (tests/guests/traps.wasm, whose
 * `mm` export calls driftwood.matmul_f32) holds A, B and C in its linear
 * memory. Path (a): the guest calls matmul_f32 and the backend computes in
 * place. Path (b): the host copies A and B out of guest memory into
 * malloc'd buffers, computes there on the same backend, copies C back.
 * Each path runs in its own forked child so its peak-RSS delta is its own.
 *
 * Usage: zerocopy GUEST.wasm [sizes...]   (default 128 512 1024 2048)
 * Output: one markdown table row per size.
 */
#define _GNU_SOURCE
#include "abi/abi.h"
#include "api/internal.h" /* dw_env_settings */
#include "wasi/wasi.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static long rss_kib(void) { /* current RSS from /proc */
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
    fclose(f);
  }
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static long peak_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

typedef struct result {
  double ms;          /* median per call */
  long peak_delta_kib;
  uint64_t staged_bytes;
} result;

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static const dw_hostfn *const tables[] = {dw_wasi_functions, dw_abi_functions};
static const dw_host_set hosts = {tables, 2};

static dw_status commit(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void release(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

static void run_path(const char *guest, uint32_t n, int copy, int fd) {
  dw_backend *be;
  dw_wasm_module *mod;
  dw_instance *inst;
  dw_abi abi;
  if (dw_backend_create("cpu", 0, NULL, &be) || dw_wasm_module_load(guest, &(dw_wasm_config){.settings = &dw_env_settings}, &hosts, &mod, NULL)) {
    fprintf(stderr, "setup: %s\n", dw_last_error());
    _exit(1);
  }
  dw_abi_init(&abi, be, 1);
  dw_instance_config ic = {.hooks = {be, commit, release, dw_backend_pins_memory(be)}};
  ic.ctx[DW_SLOT_DRIFTWOOD] = &abi;
  if (dw_instance_create(mod, &ic, &inst)) _exit(1);
  uint64_t bytes = (uint64_t)n * n * 4, need = 3 * bytes + 65536;
  uint32_t pages = (uint32_t)((need + 65535) / 65536);
  dw_call_result r;
  uint64_t g[1] = {pages};
  dw_instance_call(inst, "grow", "i:i", g, &r);
  dw_mem *mem = dw_instance_memory(inst);
  uint32_t a_off = 65536, b_off = (uint32_t)(a_off + bytes), c_off = (uint32_t)(b_off + bytes);
  float *A = (float *)(mem->base + a_off), *B = (float *)(mem->base + b_off), *C = (float *)(mem->base + c_off);
  for (uint64_t i = 0; i < (uint64_t)n * n; i++) {
    A[i] = (float)(i % 7) - 3;
    B[i] = (float)(i % 5) - 2;
    C[i] = 0;
  }
  int reps = n <= 512 ? 20 : n <= 1024 ? 5 : 3;
  double t[32];
  uint64_t staged = 0;
  long base_peak = 0;
  /* iteration -1 warms up (code pages, backend threads) before the baseline */
  for (int it = -1; it < reps; it++) {
    if (it == 0) {
      malloc_trim(0);
      base_peak = rss_kib();
    }
    double t0 = now();
    if (!copy) {
      uint64_t args[6] = {a_off, b_off, c_off, n, n, n};
      if (dw_instance_call(inst, "mm", "i:iiiiii", args, &r) || r.value) _exit(2);
    } else {
      /* the usual path: checked views, then staging copies */
      void *pa, *pb, *pc;
      if (dw_mem_view(mem, a_off, bytes, &pa) || dw_mem_view(mem, b_off, bytes, &pb) ||
          dw_mem_view(mem, c_off, bytes, &pc))
        _exit(2);
      float *sa = malloc(bytes), *sb = malloc(bytes), *sc = malloc(bytes);
      if (!sa || !sb || !sc) _exit(3);
      memcpy(sa, pa, bytes);
      memcpy(sb, pb, bytes);
      dw_backend_matmul_f32(be, sa, sb, sc, n, n, n, NULL);
      memcpy(pc, sc, bytes);
      free(sa);
      free(sb);
      free(sc);
      staged = 3 * bytes;
    }
    if (it >= 0) t[it] = now() - t0;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_d);
  result res = {t[reps / 2] * 1e3, peak_kib() - base_peak, copy ? staged : abi.last.staged_bytes};
  if (write(fd, &res, sizeof res) != sizeof res) _exit(4);
  _exit(0);
}

static result child(const char *guest, uint32_t n, int copy) {
  int p[2];
  result res = {0};
  if (pipe(p)) exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    run_path(guest, n, copy, p[1]);
  }
  close(p[1]);
  if (read(p[0], &res, sizeof res) != sizeof res) fprintf(stderr, "child failed for n=%u\n", n);
  close(p[0]);
  waitpid(pid, NULL, 0);
  return res;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: zerocopy GUEST.wasm [sizes...]\n");
    return 2;
  }
  uint32_t sizes[16] = {128, 512, 1024, 2048};
  int ns = 4;
  if (argc > 2) {
    ns = 0;
    for (int i = 2; i < argc && ns < 16; i++) sizes[ns++] = (uint32_t)atoi(argv[i]);
  }
  printf("| N | zero-copy ms | copy ms | zero-copy GFLOP/s | zero-copy peak RSS Δ | copy peak RSS Δ | zero-copy staged bytes | copy staged bytes |\n");
  printf("|---|---|---|---|---|---|---|---|\n");
  for (int i = 0; i < ns; i++) {
    uint32_t n = sizes[i];
    result a = child(argv[1], n, 0), b = child(argv[1], n, 1);
    double gf = 2.0 * n * n * n / (a.ms * 1e-3) / 1e9;
    printf("| %u | %.3f | %.3f | %.1f | %.2f MiB | %.2f MiB | %llu | %llu |\n", n, a.ms, b.ms, gf,
           a.peak_delta_kib / 1024.0, b.peak_delta_kib / 1024.0, (unsigned long long)a.staged_bytes,
           (unsigned long long)b.staged_bytes);
    fflush(stdout);
  }
  return 0;
}
