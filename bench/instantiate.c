/*
 * instantiate.c — time to instantiate a module that is already compiled and
 * loaded (the cost an actor pays per spawn): reserve + commit linear memory,
 * register it with the backend, run data/element initialisers; then destroy.
 *
 * Usage: instantiate MODULE.wasm [N]   (default 2000)
 * Output: median and p90 in microseconds, with and without a WASI context.
 */
#define _GNU_SOURCE
#include "abi/abi.h"
#include "api/internal.h" /* dw_env_settings */
#include "wasi/wasi.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}
static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static dw_status commit(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void release(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int n = argc > 2 ? atoi(argv[2]) : 2000;
  static const dw_hostfn *const tables[] = {dw_wasi_functions, dw_abi_functions};
  dw_host_set hosts = {tables, 2};
  dw_backend *be;
  dw_wasm_module *mod;
  bool hit;
  if (dw_backend_create("cpu", 1, NULL, &be) || dw_wasm_module_load(argv[1], &(dw_wasm_config){.settings = &dw_env_settings}, &hosts, &mod, &hit)) {
    fprintf(stderr, "%s\n", dw_last_error());
    return 1;
  }
  double *t = malloc(sizeof(double) * (size_t)n), *tw = malloc(sizeof(double) * (size_t)n);
  double *td = malloc(sizeof(double) * (size_t)n);
  dw_abi abi;
  dw_abi_init(&abi, be, 1);
  const char *argv0[] = {"x"};
  for (int i = 0; i < n; i++) {
    dw_instance_config ic = {.hooks = {be, commit, release, dw_backend_pins_memory(be)}};
    ic.ctx[DW_SLOT_DRIFTWOOD] = &abi;
    dw_instance *inst;
    double t0 = now_us();
    if (dw_instance_create(mod, &ic, &inst)) return 1;
    t[i] = now_us() - t0;
    t0 = now_us();
    dw_instance_destroy(inst);
    td[i] = now_us() - t0;
    dw_wasi_config wc = {.argc = 1, .argv = argv0, .stdin_fd = 0, .stdout_fd = 1, .stderr_fd = 2};
    dw_wasi *w;
    t0 = now_us();
    if (dw_wasi_create(&wc, &w)) return 1;
    ic.ctx[DW_SLOT_WASI] = w;
    if (dw_instance_create(mod, &ic, &inst)) return 1;
    tw[i] = now_us() - t0;
    dw_instance_destroy(inst);
    dw_wasi_destroy(w);
  }
  qsort(t, (size_t)n, sizeof *t, cmp_d);
  qsort(tw, (size_t)n, sizeof *tw, cmp_d);
  qsort(td, (size_t)n, sizeof *td, cmp_d);
  printf("instantiate %s (cache %s): n=%d median %.1f us, p90 %.1f us; with a WASI context: median %.1f us, p90 %.1f us; destroy: median %.1f us\n",
         argv[1], hit ? "hit" : "miss", n, t[n / 2], t[n * 9 / 10], tw[n / 2], tw[n * 9 / 10], td[n / 2]);
  return 0;
}
