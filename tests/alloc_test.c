/*
 * alloc_test.c — the library under an allocator that fails on demand
 * (dw_set_allocator): a whole life cycle (runtime, model, module, actor,
 * messages with LLM calls, freeze and thaw in memory and through a file,
 * fork, the embedding API's sessions, a WASI-NN command) is run once to
 * count its allocations, then again with the k-th allocation failing, for every k.
 * Each run must end in an error status or a success (a failure the guest
 * saw as a status counts as one), never a crash, and must leave nothing
 * allocated behind (the allocator counts live blocks; LeakSanitizer checks
 * too).
 */
#include "driftwood.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEMO DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"
#define ECHO DW_TEST_GUESTS "/echo_actor.wasm"

static _Atomic long calls, live, fail_at; /* fail_at 0: never */

static bool fails(void) { return atomic_fetch_add(&calls, 1) + 1 == atomic_load(&fail_at); }

static void *t_malloc(void *ctx, size_t n) {
  (void)ctx;
  if (fails()) return NULL;
  void *p = malloc(n);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

static void *t_realloc(void *ctx, void *p, size_t n) {
  (void)ctx;
  if (fails()) return NULL;
  void *q = realloc(p, n);
  if (q && !p) atomic_fetch_add(&live, 1);
  return q;
}

static void t_free(void *ctx, void *p) {
  (void)ctx;
  if (p) atomic_fetch_sub(&live, 1), free(p);
}

static const dw_allocator failing = {t_malloc, t_realloc, t_free, NULL};

static int sink(void *ctx, const void *data, size_t len) {
  (void)ctx, (void)data, (void)len;
  return 0;
}

static char path[64];
static int devnull = -1;

/* The life cycle; every object it made is destroyed before it returns. */
static dw_status life(void) {
  dw_runtime *rt = NULL;
  dw_module *m = NULL;
  dw_actor *a = NULL, *t = NULL;
  uint8_t *buf = NULL;
  size_t n = 0;
  int32_t res;
  dw_runtime_config rc = {.backend = "cpu", .threads = 1};
  dw_status st = dw_runtime_create(&rc, &rt);
  if (!st) st = dw_runtime_add_model(rt, "default", DEMO);
  if (!st) st = dw_module_load(rt, ECHO, &m, NULL);
  if (!st) st = dw_actor_spawn(m, &a);
  if (!st) st = dw_actor_send_cb(a, "llm hello world", 15, sink, NULL, &res);
  if (!st) st = dw_actor_send_cb(a, "hi", 2, sink, NULL, &res);
  if (!st) st = dw_actor_freeze(a, 0, &buf, &n);
  if (!st) st = dw_actor_thaw(rt, m, buf, n, &t, NULL);
  if (!st) st = dw_actor_send_cb(t, "llm and more", 12, sink, NULL, &res);
  dw_actor *f = NULL, *u = NULL;
  if (!st) st = dw_actor_fork(t, &f); /* copy-on-write memory, shared KV blocks */
  if (!st) st = dw_actor_send_cb(f, "llm in the fork", 15, sink, NULL, &res);
  if (!st) st = dw_actor_freeze_file(f, DW_FREEZE_EMBED_MODULE, path); /* streamed */
  if (!st) st = dw_actor_thaw_file(rt, NULL, path, &u, NULL);          /* its embedded module */
  if (!st) st = dw_actor_send_cb(u, "hi", 2, sink, NULL, &res);
  /* the embedding API's sessions, and a WASI-NN command */
  dw_model *md = NULL;
  dw_session *s = NULL;
  int32_t tok[16];
  size_t nt = 0;
  static float logits[1 << 16];
  if (!st) st = dw_model_open(DEMO, 0, &md);
  if (!st) st = dw_model_tokenize(md, "hello there", 11, 1, tok, 16, &nt);
  if (!st) st = dw_session_create(rt, md, 64, &s);
  if (!st) st = dw_session_decode(s, tok, (int)nt, logits);
  dw_module *nn = NULL;
  if (!st) st = dw_runtime_add_nn_preload(rt, "nn:GGML:AUTO:" DEMO);
  if (!st) st = dw_module_load(rt, DW_TEST_GUESTS "/nn_guest.wasm", &nn, NULL);
  static const char *const argv[] = {"nn_guest", "nn", "oneshot", "Once upon a time"};
  static const char *const env[] = {"NN_CONFIG={\"n-predict\":4}"};
  dw_run_config run = {.argc = 4, .argv = argv, .n_env = 1, .env = env, .stdout_fd = devnull, .stderr_fd = devnull};
  dw_run_result rr;
  if (!st) st = dw_run_command(nn, &run, &rr);
  dw_module_destroy(nn);
  dw_session_destroy(s);
  dw_model_close(md);
  dw_free_buffer(buf);
  dw_actor_destroy(u), dw_actor_destroy(f), dw_actor_destroy(t), dw_actor_destroy(a);
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
  return st;
}

Test(alloc, every_allocation_failing_in_turn_is_an_error_not_a_crash_or_a_leak, .timeout = 1200) {
  char dir[] = "/tmp/dw-alloc-XXXXXX";
  cr_assert(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/a.dws", dir);
  devnull = open("/dev/null", O_WRONLY);
  dw_set_allocator(&failing);
  cr_assert_eq(life(), DW_OK, "%s", dw_last_error()); /* warm: the AOT cache, one-time tables */
  long base = atomic_load(&live);
  atomic_store(&calls, 0);
  cr_assert_eq(life(), DW_OK, "%s", dw_last_error());
  long total = atomic_load(&calls);
  cr_assert_eq(atomic_load(&live), base, "a clean run leaves %ld blocks", atomic_load(&live) - base);
  cr_assert_gt(total, 100, "the life cycle allocates through the hook (%ld calls)", total);
  int failed = 0, survived = 0;
  /* every k up to 3,000, then every 7th (a vocabulary loads thousands of strings alike) */
  for (long k = 1; k <= total; k += k < 3000 ? 1 : 7) {
    atomic_store(&calls, 0);
    atomic_store(&fail_at, k);
    if (getenv("DW_ALLOC_TRACE")) fprintf(stderr, "k=%ld\n", k);
    dw_status st = life();
    atomic_store(&fail_at, 0);
    if (st) {
      failed++;
      cr_assert(dw_last_error()[0], "k=%ld: status %d without a message", k, st);
    } else {
      survived++;
    }
    cr_assert_eq(atomic_load(&live), base, "k=%ld (status %d: %s): %ld blocks leaked", k, st, st ? dw_last_error() : "",
                 atomic_load(&live) - base);
  }
  cr_log_info("%ld allocations; %d runs failed cleanly, %d absorbed the failure", total, failed, survived);
  cr_assert_gt(failed, 0);
  dw_set_allocator(NULL);
  unlink(path), rmdir(dir), close(devnull);
}
