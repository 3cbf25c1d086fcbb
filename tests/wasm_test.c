/*
 * wasm_test.c — the wasm layer end to end: each trap kind, deep recursion,
 * memory growth and limits, pointer identity and backend registration,
 * many instances on many threads, malformed modules and the AOT cache.
 */
#include "harness.h"
#include "wasm/rt.h"

#include <wasm-rt.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static th T;
static void setup(void) { th_open(&T, GUEST("traps"), 1); }
static void teardown(void) { th_close(&T); }

static void expect_trap(const char *name, const char *sig, const uint64_t *args, int trap) {
  dw_call_result r;
  dw_status st = dw_instance_call(T.inst, name, sig, args, &r);
  cr_assert_eq(st, DW_ERR_TRAP, "%s: status %d (%s)", name, st, dw_last_error());
  cr_assert_eq(r.outcome, DW_TRAPPED);
  cr_assert_eq(r.trap, trap, "%s: trap %d (%s), expected %d", name, r.trap, dw_trap_str(r.trap), trap);
  cr_assert(strstr(dw_last_error(), dw_trap_str(trap)), "message names the trap: %s", dw_last_error());
  cr_assert(dw_trap_kind_of(r.trap) != DW_TRAP_OTHER && dw_trap_kind_of(r.trap) != DW_TRAP_NONE,
            "%s: no public kind for trap %d", name, r.trap);
  /* The instance survives: a normal call afterwards works. */
  uint64_t a[1] = {10};
  cr_assert_eq(dw_instance_call(T.inst, "sumsq", "i:i", a, &r), DW_OK);
  cr_assert_eq(r.value, 285);
}

TestSuite(traps, .init = setup, .fini = teardown);

Test(traps, out_of_bounds) {
  expect_trap("oob", "i:", NULL, WASM_RT_TRAP_OOB);
  expect_trap("oob_far", "i:", NULL, WASM_RT_TRAP_OOB);
  expect_trap("fill_oob", "v:", NULL, WASM_RT_TRAP_OOB);
}

Test(traps, integer_division) {
  expect_trap("div0", "i:i", (uint64_t[]){0}, WASM_RT_TRAP_DIV_BY_ZERO);
  expect_trap("overflow", "i:i", (uint64_t[]){0xffffffffu}, WASM_RT_TRAP_INT_OVERFLOW);
}

Test(traps, conversions) {
  float nan = __builtin_nanf(""), big = 3e9f;
  uint32_t bn, bb;
  memcpy(&bn, &nan, 4);
  memcpy(&bb, &big, 4);
  expect_trap("trunc", "i:f", (uint64_t[]){bn}, WASM_RT_TRAP_INVALID_CONVERSION);
  expect_trap("trunc", "i:f", (uint64_t[]){bb}, WASM_RT_TRAP_INT_OVERFLOW);
}

Test(traps, unreachable) { expect_trap("unreachable", "v:", NULL, WASM_RT_TRAP_UNREACHABLE); }

Test(traps, bad_indirect_calls) {
  dw_call_result r;
  cr_assert_eq(dw_instance_call(T.inst, "call_table", "i:i", (uint64_t[]){0}, &r), DW_OK);
  cr_assert_eq(r.value, 7);
  expect_trap("call_table", "i:i", (uint64_t[]){1}, WASM_RT_TRAP_CALL_INDIRECT);  /* wrong type */
  expect_trap("call_table", "i:i", (uint64_t[]){2}, WASM_RT_TRAP_CALL_INDIRECT);  /* null */
  expect_trap("call_table", "i:i", (uint64_t[]){99}, WASM_RT_TRAP_CALL_INDIRECT); /* past the table */
}

Test(traps, deep_recursion_exhausts_the_stack) {
  expect_trap("recurse", "i:i", (uint64_t[]){0}, WASM_RT_TRAP_EXHAUSTION);
  expect_trap("recurse", "i:i", (uint64_t[]){0}, WASM_RT_TRAP_EXHAUSTION); /* twice: the guard is re-armed */
}

Test(traps, wrong_export_or_signature) {
  dw_call_result r;
  cr_assert_eq(CALL0(&T, "nope", "v:", &r), DW_ERR_NOT_FOUND);
  cr_assert_eq(CALL0(&T, "sumsq", "v:", &r), DW_ERR_INVALID_ARG);
}

TestSuite(memory, .init = setup, .fini = teardown);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One instance of traps.wat with a time limit: calls `name`, which must
 * end in a time trap after about the limit, then checks the instance still
 * works. Returns NULL, or what went wrong (runs on other threads too). */
static void *spin_until_limit(void *name) {
  static _Thread_local char why[256];
  dw_instance_config ic = {.time_limit_ms = 200};
  ic.ctx[DW_SLOT_DRIFTWOOD] = &T.abi;
  dw_instance *inst;
  if (dw_instance_create(T.mod, &ic, &inst) != DW_OK) return "instantiate";
  dw_call_result r;
  double t0 = now_s();
  dw_status st = dw_instance_call(inst, name, "v:", NULL, &r);
  double dt = now_s() - t0;
  uint64_t a[1] = {10};
  why[0] = 0;
  if (st != DW_ERR_TRAP || r.trap != DW_UNWIND_DEADLINE || !strstr(dw_last_error(), "time limit exceeded (200 ms)"))
    snprintf(why, sizeof why, "%s: status %d, trap %d: %s", (const char *)name, st, r.trap, dw_last_error());
  else if (dt < 0.19 || dt > 5)
    snprintf(why, sizeof why, "%s trapped after %.3f s", (const char *)name, dt);
  else if (dw_instance_call(inst, "sumsq", "i:i", a, &r) != DW_OK || r.value != 285)
    snprintf(why, sizeof why, "the instance does not work after a time trap");
  usleep(300 * 1000); /* a timer left armed would fire here */
  dw_instance_destroy(inst);
  return why[0] ? why : NULL;
}

Test(traps, time_limit_ends_a_spinning_guest, .timeout = 60) {
  const char *why = spin_until_limit("spin");
  cr_assert_null(why, "%s", why);
  /* most interrupts land in memset (host code): the trap waits for guest code */
  why = spin_until_limit("spin_fill");
  cr_assert_null(why, "%s", why);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, spin_until_limit, i % 2 ? "spin" : "spin_fill");
  for (int i = 0; i < 4; i++) {
    void *w;
    pthread_join(t[i], &w);
    cr_expect_null(w, "thread %d: %s", i, (const char *)w);
  }
  /* without a limit nothing changes */
  dw_call_result r;
  uint64_t a[1] = {4};
  cr_assert_eq(dw_instance_call(T.inst, "sumsq", "i:i", a, &r), DW_OK);
  cr_assert_eq(r.value, 14);
}

Test(memory, grow_commits_and_keeps_base) {
  dw_call_result r;
  uint8_t *base = T.mem->base;
  cr_assert_eq(CALL0(&T, "size", "i:", &r), DW_OK);
  cr_assert_eq(r.value, 1);
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 2), DW_OK);
  cr_assert_eq(r.value, 1, "grow returns the old size");
  cr_assert_eq(T.mem->base, base, "base never moves");
  cr_assert_eq(T.mem->size, 3 * 65536);
  cr_assert_eq(CALL(&T, "store", "v:ii", &r, 2 * 65536 + 8, 0xdeadbeef), DW_OK);
  uint32_t v;
  memcpy(&v, base + 2 * 65536 + 8, 4); /* pointer identity: host sees base + offset */
  cr_assert_eq(v, 0xdeadbeef);
  cr_assert_eq(CALL(&T, "load", "i:i", &r, 3 * 65536), DW_ERR_TRAP);
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 100), DW_OK);
  cr_assert_eq((uint32_t)r.value, 0xffffffffu, "past the module maximum (16) grow fails");
  cr_assert_eq(T.mem->size, 3 * 65536);
}

Test(memory, registration_is_counted_and_released) {
  dw_call_result r;
  cr_assert_eq(atomic_load(&T.be->stats.registered_bytes), 65536);
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 3), DW_OK);
  cr_assert_eq(atomic_load(&T.be->stats.registered_bytes), 4 * 65536);
  cr_assert_eq(atomic_load(&T.be->stats.n_register), 2);
  dw_instance_destroy(T.inst);
  T.inst = NULL;
  cr_assert_eq(atomic_load(&T.be->stats.registered_bytes), 0);
  cr_assert_eq(atomic_load(&T.be->stats.n_unregister), 2);
}

Test(memory, per_instance_limit) {
  dw_call_result r;
  dw_instance_destroy(T.inst);
  th_instance(&T, 3 * 65536);
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 2), DW_OK);
  cr_assert_eq(r.value, 1);
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 1), DW_OK);
  cr_assert_eq((uint32_t)r.value, 0xffffffffu);
  /* A limit below the module's initial size refuses to instantiate. */
  dw_instance_destroy(T.inst);
  T.inst = NULL;
  dw_instance_config ic = {.max_memory_bytes = 1000};
  cr_assert_eq(dw_instance_create(T.mod, &ic, &T.inst), DW_ERR_LIMIT);
  cr_assert(strstr(dw_last_error(), "limit"), "%s", dw_last_error());
}

/* ---- threads ---------------------------------------------------------------- */

typedef struct thread_job {
  dw_wasm_module *mod;
  int id, ok;
} thread_job;

static void *thread_main(void *p) {
  thread_job *j = p;
  dw_instance *inst;
  if (dw_instance_create(j->mod, NULL, &inst) != DW_OK) return NULL;
  int good = 1;
  for (int it = 0; it < 200 && good; it++) {
    uint32_t n = (uint32_t)(1000 + j->id * 37 + it), want = 0;
    for (uint32_t i = 0; i < n; i++) want += i * i;
    dw_call_result r;
    uint64_t a[1] = {n};
    good = dw_instance_call(inst, "sumsq", "i:i", a, &r) == DW_OK && (uint32_t)r.value == want;
    if (it % 10 == 0) {
      a[0] = 0;
      good = good && dw_instance_call(inst, "div0", "i:i", a, &r) == DW_ERR_TRAP &&
             r.trap == WASM_RT_TRAP_DIV_BY_ZERO;
      good = good && dw_instance_call(inst, "oob", "i:", NULL, &r) == DW_ERR_TRAP && r.trap == WASM_RT_TRAP_OOB;
    }
    if (it == 100) {
      a[0] = 0;
      good = good && dw_instance_call(inst, "recurse", "i:i", a, &r) == DW_ERR_TRAP;
    }
  }
  dw_instance_destroy(inst);
  j->ok = good;
  return NULL;
}

Test(threads, eight_threads_run_instances_concurrently) {
  dw_wasm_module *mod;
  cr_assert_eq(dw_wasm_module_load(GUEST("traps"), &(dw_wasm_config){.settings = &dw_env_settings}, &th_hosts, &mod, NULL), DW_OK, "%s", dw_last_error());
  pthread_t tid[8];
  thread_job jobs[8];
  for (int i = 0; i < 8; i++) {
    jobs[i] = (thread_job){mod, i, 0};
    pthread_create(&tid[i], NULL, thread_main, &jobs[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(tid[i], NULL);
  for (int i = 0; i < 8; i++) cr_expect(jobs[i].ok, "thread %d", i);
  dw_wasm_module_destroy(mod);
}

/* A fault outside any linear memory is not ours: it must reach the previous
 * handler (the default, or ASan's), as if Driftwood were not there. */
#if defined(__SANITIZE_ADDRESS__)
Test(faults, foreign_fault_is_chained, .exit_code = 1)
#else
Test(faults, foreign_fault_is_chained, .signal = SIGSEGV)
#endif
{
  th t;
  th_open(&t, GUEST("traps"), 1);
  volatile uintptr_t addr = 16; /* not a linear memory: a plain host bug */
  *(volatile int *)addr = 1;
}

/* ---- malformed modules and the cache ------------------------------------------ */

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  fwrite(data, 1, n, f);
  fclose(f);
}

static void expect_refused(const char *path, dw_status want, const char *msg) {
  dw_wasm_module *m = NULL;
  dw_status st = dw_wasm_module_load(path, &(dw_wasm_config){.settings = &dw_env_settings}, &th_hosts, &m, NULL);
  cr_assert_eq(st, want, "%s: status %d: %s", path, st, dw_last_error());
  cr_assert_null(m);
  cr_assert(strstr(dw_last_error(), msg), "message for %s: %s", path, dw_last_error());
}

Test(modules, malformed_are_refused_clearly) {
  uint8_t *bytes;
  size_t n;
  cr_assert_eq(dw_file_read(GUEST("traps"), &bytes, &n), DW_OK);
  char path[] = "/tmp/dw-test-XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  write_file(path, bytes, n / 2);
  expect_refused(path, DW_ERR_BAD_MODULE, "invalid WebAssembly module");
  write_file(path, "\0asX\1\0\0\0", 8);
  expect_refused(path, DW_ERR_BAD_MODULE, "bad magic");
  write_file(path, "", 0);
  expect_refused(path, DW_ERR_BAD_MODULE, "bad magic");
  write_file(path, "\0asm\2\0\0\0", 8);
  expect_refused(path, DW_ERR_BAD_MODULE, "version");
  unlink(path);
  free(bytes);
  expect_refused(GUEST("invalid"), DW_ERR_BAD_MODULE, "invalid WebAssembly module");
  expect_refused(GUEST("unknown_import"), DW_ERR_UNKNOWN_IMPORT, "env.mystery");
  expect_refused(GUEST("bad_sig_import"), DW_ERR_UNKNOWN_IMPORT, "wasi_snapshot_preview1.fd_write");
  expect_refused("/nonexistent.wasm", DW_ERR_IO, "nonexistent.wasm");
}

Test(modules, cache_hit_and_corrupt_entry_rebuilt) {
  char dir[] = "/tmp/dw-cache-XXXXXX";
  cr_assert(mkdtemp(dir));
  dw_wasm_config cfg = {.cache_dir = dir, .settings = &dw_env_settings};
  dw_wasm_module *m;
  bool hit = true;
  cr_assert_eq(dw_wasm_module_load(GUEST("trap_start"), &cfg, &th_hosts, &m, &hit), DW_OK, "%s", dw_last_error());
  cr_assert(!hit);
  dw_wasm_module_destroy(m);
  cr_assert_eq(dw_wasm_module_load(GUEST("trap_start"), &cfg, &th_hosts, &m, &hit), DW_OK);
  cr_assert(hit, "second load is a cache hit");
  dw_wasm_module_destroy(m);
  /* Corrupt every .so in the cache: the next load must notice and rebuild. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "for f in %s/*.so; do head -c 100 /dev/urandom > $f; done", dir);
  cr_assert_eq(system(cmd), 0);
  cr_assert_eq(dw_wasm_module_load(GUEST("trap_start"), &cfg, &th_hosts, &m, &hit), DW_OK, "%s", dw_last_error());
  cr_assert(!hit, "a corrupt entry is rebuilt, not used");
  dw_wasm_module_destroy(m);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  system(cmd);
}
