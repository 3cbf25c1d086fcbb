/*
 * actor_test.c — actors and snapshots: state moving between processes
 * (`driftwood actor spawn | send | fork | inspect`), byte-identical replies
 * whether messages arrive in one send or several, forks that diverge
 * independently, a crash injected at every step of the atomic write,
 * truncated and corrupted snapshots, module and model mismatches, a
 * re-prefill onto another quantisation, and the embedding API.
 */
#include "sh.h"

#include "api/internal.h"
#include "actor/snapshot.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define DW DW_TEST_DRIFTWOOD
#define DEMO DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"
#define ECHO DW_TEST_GUESTS "/echo_actor.wasm"
#define CHAT DW_TEST_BUILD "/examples/chat_actor.wasm"

static char dir[64];
static void mkdir_tmp(void) {
  snprintf(dir, sizeof dir, "/tmp/dw-actor-XXXXXX");
  cr_assert(mkdtemp(dir));
}
static void rm_tmp(void) { sh("rm -rf %s", dir); }
TestSuite(actor, .init = mkdir_tmp, .fini = rm_tmp);

static uint8_t *slurp(const char *path, size_t *n) {
  uint8_t *p = NULL;
  cr_assert_eq(dw_file_read(path, &p, n), DW_OK, "%s", dw_last_error());
  return p;
}

Test(actor, one_send_or_many_gives_identical_replies) {
  static char a[sizeof out];
  for (int greedy = 0; greedy < 2; greedy++) {
    cr_assert_eq(sh(DW " actor spawn --module " CHAT " --model default=" DEMO " --state %s/a.dws && cp %s/a.dws %s/b.dws",
                    dir, dir, dir), 0, "%s", out);
    const char *set = greedy ? "'/set temp=0 n=12'" : "'/set seed=7 n=12'";
    cr_assert_eq(sh(DW " actor send --state %s/a.dws %s 'Hello there' 'Tell me more' 'Bye'", dir, set), 0, "%s", out);
    snprintf(a, sizeof a, "%s", out);
    cr_assert_eq(sh(DW " actor send --state %s/b.dws %s && " DW " actor send --state %s/b.dws 'Hello there' && " DW
                    " actor send --state %s/b.dws 'Tell me more' 'Bye'", dir, set, dir, dir), 0, "%s", out);
    cr_assert_str_eq(out, a, "replies differ between one send and three");
    cr_assert_eq(sh("cmp %s/a.dws %s/b.dws", dir, dir), 0, "the snapshots differ: %s", out);
    /* the conversation grew in the KV session across turns */
    cr_assert_eq(sh(DW " actor inspect %s/a.dws", dir), 0, "%s", out);
    cr_assert(strstr(out, "session 1: model handle 1,"), "%s", out);
  }
}

Test(actor, forks_diverge_independently) {
  cr_assert_eq(sh(DW " actor spawn --module " ECHO " --model default=" DEMO " --state %s/s.dws && " DW
                  " actor send --state %s/s.dws one 'llm Hello world'", dir, dir), 0, "%s", out);
  cr_assert_eq(sh(DW " actor fork --state %s/s.dws --to %s/t.dws", dir, dir), 0, "%s", out);
  static char r1[sizeof out];
  cr_assert_eq(sh(DW " actor send --state %s/s.dws 'llm same' same", dir), 0, "%s", out);
  snprintf(r1, sizeof r1, "%s", out);
  cr_assert_eq(sh(DW " actor send --state %s/t.dws 'llm same' same", dir), 0, "%s", out);
  cr_assert_str_eq(out, r1, "two forks given the same messages reply identically");
  cr_assert(strstr(r1, "3: next") && strstr(r1, "at 3\n") && strstr(r1, "4: same"), "%s", r1);
  size_t n1 = 0, n2 = 0;
  uint8_t *before = slurp((sprintf(out, "%s/s.dws", dir), out), &n1);
  cr_assert_eq(sh(DW " actor send --state %s/t.dws 'llm other words here' x", dir), 0, "%s", out);
  cr_assert(strstr(out, "5: next") && strstr(out, "6: x"), "%s", out);
  uint8_t *after = slurp((sprintf(out, "%s/s.dws", dir), out), &n2);
  cr_assert(n1 == n2 && !memcmp(before, after, n1), "sending to the fork changed the original");
  free(before), free(after);
  cr_assert_eq(sh(DW " actor send --state %s/s.dws y", dir), 0);
  cr_assert_str_eq(out, "5: y\n");
}

Test(actor, function_tables_round_trip) {
  const char *tab = DW_TEST_GUESTS "/table_actor.wasm";
  cr_assert_eq(sh(DW " actor spawn --module %s --state %s/t.dws && " DW " actor send --state %s/t.dws call", tab, dir, dir),
               0, "%s", out);
  cr_assert_str_eq(out, "A");
  cr_assert_eq(sh(DW " actor send --state %s/t.dws swap grow", dir), 0, "%s", out);
  cr_assert_eq(sh(DW " actor send --state %s/t.dws call", dir), 0, "%s", out);
  cr_assert_str_eq(out, "B", "the swapped table survived freeze and thaw");
  cr_assert_eq(sh(DW " actor inspect %s/t.dws", dir), 0, "%s", out);
  cr_assert(strstr(out, "section tables"), "%s", out);
  /* a function that was in no table at instantiation (ref.func) */
  cr_assert_eq(sh(DW " actor send --state %s/t.dws ref call call", dir), 0, "%s", out);
  cr_assert_str_eq(out, "CC");
  cr_assert_eq(sh(DW " actor send --state %s/t.dws n call n", dir), 0, "%s", out);
  cr_assert_str_eq(out, "2C3", "the ref.func'd function survived freeze and thaw, bound to this actor");
  /* forked: each actor's table calls the function on its own memory */
  cr_assert_eq(sh(DW " actor fork --state %s/t.dws --to %s/u.dws && " DW " actor send --state %s/u.dws call call n && "
                  DW " actor send --state %s/t.dws n", dir, dir, dir, dir), 0, "%s", out);
  cr_assert_str_eq(out, "CC53");
}

Test(actor, inspect_and_module_checks) {
  cr_assert_eq(sh(DW " actor spawn --module " ECHO " --model default=" DEMO " --state %s/s.dws --no-embed-module && " DW
                  " actor send --state %s/s.dws --module " ECHO " 'llm a b c'", dir, dir), 0, "%s", out);
  cr_assert_eq(sh(DW " actor inspect %s/s.dws", dir), 0, "%s", out);
  cr_assert(strstr(out, "format version 4") && strstr(out, "module sha256 ") && strstr(out, "model 1 'default'") &&
            strstr(out, "session 1: model handle 1, ") && strstr(out, "1 model handles: 1 = model 1\n") &&
            strstr(out, "section pages") && strstr(out, "copy-on-write"),
            "%s", out);
  cr_assert_null(strstr(out, "section module"), "--no-embed-module: %s", out);
  cr_assert_eq(sh(DW " actor send --state %s/s.dws hi", dir), 1, "no module: %s", out);
  cr_assert(strstr(out, "not embedded"), "%s", out);
  cr_assert_eq(sh(DW " actor send --state %s/s.dws --module " CHAT " hi", dir), 1, "another module: %s", out);
  cr_assert(strstr(out, "made by module"), "%s", out);
  cr_assert_eq(sh(DW " actor spawn --module " DW_TEST_GUESTS "/wasi_probe.wasm --state %s/x.dws", dir), 1);
  cr_assert(strstr(out, "dw_on_message"), "%s", out);
  cr_assert_eq(sh(DW " actor send --backend bogus --state %s/s.dws --module " ECHO " hi", dir), 1, "%s", out);
  cr_assert(strstr(out, "unknown backend 'bogus'"), "%s", out);
  cr_assert_eq(sh(DW " actor send --backend cpu --state %s/s.dws --module " ECHO " 'llm d e'", dir), 0, "%s", out);
}

Test(actor, a_trap_leaves_the_snapshot_as_it_was) {
  cr_assert_eq(sh(DW " actor spawn --module " ECHO " --state %s/s.dws && " DW " actor send --state %s/s.dws a", dir, dir), 0);
  size_t n1 = 0, n2 = 0;
  char path[128];
  snprintf(path, sizeof path, "%s/s.dws", dir);
  uint8_t *before = slurp(path, &n1);
  cr_assert_eq(sh(DW " actor send --state %s/s.dws b trap", dir), 134, "%s", out);
  uint8_t *after = slurp(path, &n2);
  cr_assert(n1 == n2 && !memcmp(before, after, n1));
  free(before), free(after);
  cr_assert_eq(sh(DW " actor send --state %s/s.dws c", dir), 0);
  cr_assert_str_eq(out, "2: c\n");
}

Test(actor, a_crash_at_any_write_step_keeps_the_previous_snapshot) {
  cr_assert_eq(sh(DW " actor spawn --module " ECHO " --state %s/s.dws && " DW " actor send --state %s/s.dws a", dir, dir), 0);
  char path[128];
  snprintf(path, sizeof path, "%s/s.dws", dir);
  for (int step = 1; step <= 6; step++) {
    size_t n1 = 0, n2 = 0;
    uint8_t *before = slurp(path, &n1);
    int rc = sh("DRIFTWOOD_FAULT_WRITE_STEP=%d " DW " actor send --state %s/s.dws step%d", step, dir, step);
    cr_assert_eq(rc, 1, "step %d: %s", step, out);
    uint8_t *after = slurp(path, &n2);
    if (step < 6) cr_assert(n1 == n2 && !memcmp(before, after, n1), "step %d replaced the snapshot", step);
    free(before), free(after);
    /* whatever happened, what is there loads, and no temporary file is left */
    cr_assert_eq(sh(DW " actor send --state %s/s.dws probe%d", dir, step), 0, "step %d: %s", step, out);
    cr_assert_eq(sh("ls %s | grep -c tmp", dir), 1, "a temporary file is left: %s", out);
  }
  /* the six failed sends ran but never landed, except the last (the rename happened) */
  cr_assert_eq(sh(DW " actor send --state %s/s.dws end", dir), 0);
  cr_assert_str_eq(out, "9: end\n");
}

Test(actor, a_message_past_the_timeout_traps_and_the_snapshot_stays, .timeout = 120) {
  cr_assert_eq(sh(DW " actor spawn --module " ECHO " --state %s/s.dws && " DW " actor send --state %s/s.dws one",
                  dir, dir), 0, "%s", out);
  cr_assert_eq(sh("cp %s/s.dws %s/before.dws", dir, dir), 0);
  cr_assert_eq(sh(DW " actor send --timeout 0.5 --state %s/s.dws two spin three", dir), 134, "%s", out);
  cr_assert(strstr(out, "2: two") && strstr(out, "time limit exceeded") && !strstr(out, "three"), "%s", out);
  cr_assert_eq(sh("cmp %s/s.dws %s/before.dws", dir, dir), 0, "the snapshot changed: %s", out);
  cr_assert_eq(sh(DW " actor send --timeout 30 --state %s/s.dws two", dir), 0, "%s", out);
  cr_assert_str_eq(out, "2: two\n");
}

Test(actor, max_memory_caps_growth_and_refuses_a_larger_snapshot, .timeout = 120) {
  cr_assert_eq(sh(DW " actor spawn --module " ECHO " --state %s/s.dws && " DW " actor send --state %s/s.dws one",
                  dir, dir), 0, "%s", out);
  cr_assert_eq(sh("cp %s/s.dws %s/before.dws", dir, dir), 0);
  /* "grow" mallocs 4 MiB: under a 2 MiB cap the allocation fails and the
   * guest's write past its memory traps; the snapshot stays as it was */
  cr_assert_eq(sh(DW " actor send --max-memory 2MiB --state %s/s.dws two grow", dir), 134, "%s", out);
  cr_assert(strstr(out, "2: two") && strstr(out, "out of bounds"), "%s", out);
  cr_assert_eq(sh("cmp %s/s.dws %s/before.dws", dir, dir), 0, "the snapshot changed: %s", out);
  /* without the cap it grows; the grown snapshot is then refused under the cap */
  cr_assert_eq(sh(DW " actor send --state %s/s.dws two grow", dir), 0, "%s", out);
  cr_assert_eq(sh("cp %s/s.dws %s/grown.dws", dir, dir), 0);
  cr_assert_neq(sh(DW " actor send --max-memory 2MiB --state %s/s.dws four", dir), 0, "%s", out);
  cr_assert(strstr(out, "memory cannot grow"), "%s", out);
  cr_assert_eq(sh("cmp %s/s.dws %s/grown.dws", dir, dir), 0, "the refused thaw changed the snapshot: %s", out);
  cr_assert_eq(sh(DW " actor send --max-memory 64MiB --state %s/s.dws four", dir), 0, "%s", out);
  cr_assert_str_eq(out, "4: four\n");
  cr_assert_neq(sh(DW " actor send --max-memory lots --state %s/s.dws five", dir), 0);
  cr_assert(strstr(out, "--max-memory wants a size"), "%s", out);
}

/* ---- the embedding API and hostile snapshots ---- */

static dw_runtime *RT;
static dw_module *MOD;
static void api_setup(void) {
  dw_runtime_config rc = {.backend = "cpu", .threads = 2};
  cr_assert_eq(dw_runtime_create(&rc, &RT), DW_OK);
  cr_assert_eq(dw_runtime_add_model(RT, "default", DEMO), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_module_load(RT, ECHO, &MOD, NULL), DW_OK, "%s", dw_last_error());
}
static void api_teardown(void) {
  dw_module_destroy(MOD);
  dw_runtime_destroy(RT);
}
TestSuite(snapshot, .init = api_setup, .fini = api_teardown);

static void reply(dw_actor *a, const char *msg, char *buf, size_t cap) {
  int p[2];
  cr_assert_eq(pipe(p), 0);
  int32_t r;
  cr_assert_eq(dw_actor_send(a, msg, strlen(msg), p[1], &r), DW_OK, "%s", dw_last_error());
  close(p[1]);
  ssize_t n = read(p[0], buf, cap - 1);
  buf[n > 0 ? n : 0] = 0;
  close(p[0]);
}

static int stop_at_first_emit(void *ctx, const void *data, size_t len) {
  (void)data, (void)len;
  ++*(int *)ctx;
  return 1;
}

Test(snapshot, a_receiver_that_goes_away_cancels_the_message) {
  dw_actor *a;
  cr_assert_eq(dw_actor_spawn(MOD, &a), DW_OK, "%s", dw_last_error());
  int calls = 0;
  int32_t r = 0;
  dw_status st = dw_actor_send_cb(a, "hello", 5, stop_at_first_emit, &calls, &r);
  cr_assert_eq(st, DW_ERR_CANCELLED, "%s (%s)", dw_status_str(st), dw_last_error());
  cr_assert_str_eq(dw_status_str(st), "cancelled");
  cr_assert_eq(calls, 1, "the guest went on emitting after the cancel");
  dw_actor_destroy(a);
}

Test(snapshot, fork_in_process_and_buffer_round_trip) {
  dw_actor *a, *f, *t;
  char r1[256], r2[256];
  cr_assert_eq(dw_actor_spawn(MOD, &a), DW_OK, "%s", dw_last_error());
  reply(a, "llm Hello world", r1, sizeof r1);
  cr_assert_eq(dw_actor_fork(a, &f), DW_OK, "%s", dw_last_error());
  reply(a, "llm again", r1, sizeof r1);
  reply(f, "llm again", r2, sizeof r2);
  cr_assert_str_eq(r1, r2);
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(a, 0, &buf, &n), DW_OK);
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw(RT, MOD, buf, n, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert_eq(rep.sessions, 1);
  cr_assert_eq(rep.reprefilled, 0);
  reply(a, "x", r1, sizeof r1);
  reply(t, "x", r2, sizeof r2);
  cr_assert_str_eq(r1, r2);
  cr_assert_str_eq(r1, "3: x\n");
  free(buf);
  dw_actor_destroy(a), dw_actor_destroy(f), dw_actor_destroy(t);
}

static int devnull(void) {
  static int fd = -1;
  if (fd < 0) fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  return fd;
}

/* whether /proc/self/maps has a line naming `what` */
static bool mapped(const char *what) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[1024];
  bool hit = false;
  while (f && fgets(line, sizeof line, f)) hit |= strstr(line, what) != NULL;
  if (f) fclose(f);
  return hit;
}

Test(snapshot, thaw_maps_memory_copy_on_write_and_fork_shares_it) {
  unsetenv("DRIFTWOOD_MEM_COW");
  dw_actor *a, *t1, *t2, *t3;
  char ra[256], r1[256], r2[256];
  cr_assert_eq(dw_actor_spawn(MOD, &a), DW_OK);
  reply(a, "scatter", ra, sizeof ra);
  char check[256];
  reply(a, "check", check, sizeof check);
  const char *nz = strrchr(check, ' ');
  cr_assert(nz && atoi(nz + 1) >= 512, "%s", check);
  reply(a, "llm Hello world", ra, sizeof ra);
  char d[] = "/tmp/dw-cow-XXXXXX", path[128], path2[128];
  cr_assert(mkdtemp(d));
  snprintf(path, sizeof path, "%s/cow.dws", d), snprintf(path2, sizeof path2, "%s/copy.dws", d);
  cr_assert_eq(dw_actor_freeze_file(a, 0, path), DW_OK, "%s", dw_last_error());
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw_file(RT, MOD, path, &t1, &rep), DW_OK, "%s", dw_last_error());
  cr_assert(rep.memory_mapped > 0 && rep.memory_mapped <= rep.memory_bytes && !rep.memory_compressed,
            "mapped %llu of %llu", (unsigned long long)rep.memory_mapped, (unsigned long long)rep.memory_bytes);
  cr_assert(mapped("cow.dws"), "the thawed memory maps the snapshot file");
  static char desc[8192];
  cr_assert_eq(dw_snapshot_describe(path, desc, sizeof desc), DW_OK);
  const char *runs = strstr(desc, " runs of 4 KiB pages");
  cr_assert(runs, "%s", desc);
  while (runs > desc && runs[-1] >= '0' && runs[-1] <= '9') runs--;
  cr_assert(atoi(runs) >= 1 && atoi(runs) <= 256, "512 scattered pages fit in at most 256 mappings: %s", desc);
  dw_actor *t0;
  cr_assert_eq(dw_actor_thaw_file(RT, MOD, path, &t0, NULL), DW_OK);
  reply(t0, "check", r1, sizeof r1);
  cr_assert_str_eq(strstr(r1, " check"), strstr(check, " check"), "the scattered bytes survive: %s vs %s", r1, check);
  dw_actor_destroy(t0);
  cr_assert_eq(dw_actor_thaw_file(RT, MOD, path, &t2, NULL), DW_OK);
  /* each thawed actor writes its own copy of the pages */
  reply(a, "x", ra, sizeof ra);
  reply(t1, "x", r1, sizeof r1);
  reply(t1, "y", r1, sizeof r1);
  reply(t2, "x", r2, sizeof r2);
  cr_assert_str_eq(r2, ra);
  cr_assert_str_eq(r1, "5: y\n");
  /* the file is replaced (atomically, as freeze does) under a live mapping */
  cr_assert_eq(dw_actor_freeze_file(t1, 0, path), DW_OK);
  reply(t2, "y", r2, sizeof r2);
  cr_assert_str_eq(r2, r1);
  /* in-process fork: both sides map one shared copy and diverge */
  cr_assert_eq(dw_actor_fork(t2, &t3), DW_OK, "%s", dw_last_error());
  cr_assert(mapped("driftwood-memory"), "the fork shares memory through a memfd");
  reply(t3, "z", r1, sizeof r1);
  reply(t3, "z", r1, sizeof r1);
  reply(t2, "z", r2, sizeof r2);
  cr_assert_str_eq(r1, "7: z\n");
  cr_assert_str_eq(r2, "6: z\n");
  dw_actor_destroy(t1), dw_actor_destroy(t2), dw_actor_destroy(t3);
  cr_assert(!mapped("cow.dws"), "destroyed actors leave no mapping of the file");
  /* switched off: copied, same behaviour; compressed: copied, and reported */
  setenv("DRIFTWOOD_MEM_COW", "0", 1);
  cr_assert_eq(dw_actor_thaw_file(RT, MOD, path, &t1, &rep), DW_OK);
  unsetenv("DRIFTWOOD_MEM_COW");
  cr_assert_eq(rep.memory_mapped, 0);
  cr_assert_eq(dw_actor_freeze_file(a, DW_FREEZE_COMPRESS_MEMORY, path2), DW_OK);
  cr_assert_eq(dw_actor_thaw_file(RT, MOD, path2, &t2, &rep), DW_OK);
  cr_assert(rep.memory_compressed && rep.memory_mapped == 0);
  reply(t1, "w", r1, sizeof r1);
  reply(t2, "w", r2, sizeof r2);
  cr_assert_str_eq(r1, "6: w\n");
  cr_assert_str_eq(r2, "5: w\n");
  dw_actor_destroy(t1), dw_actor_destroy(t2);
  /* a version 1 file (memory compressed, no pages section) still thaws;
   * a future version is refused */
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(a, DW_FREEZE_COMPRESS_MEMORY, &buf, &n), DW_OK);
  uint32_t v = 1;
  memcpy(buf + 8, &v, 4);
  cr_assert_eq(dw_actor_thaw(RT, MOD, buf, n, &t1, &rep), DW_OK, "%s", dw_last_error());
  dw_actor_destroy(t1);
  v = DW_SNAP_VERSION + 1;
  memcpy(buf + 8, &v, 4);
  cr_assert_eq(dw_actor_thaw(RT, MOD, buf, n, &t1, &rep), DW_ERR_UNSUPPORTED);
  free(buf);
  /* a mapped snapshot truncated in place under a live actor (what
   * Driftwood never does): the guest's next touch of a lost page traps;
   * the process lives on */
  cr_assert_eq(dw_actor_freeze_file(a, 0, path), DW_OK);
  cr_assert_eq(dw_actor_thaw_file(RT, MOD, path, &t1, NULL), DW_OK);
  cr_assert_eq(truncate(path, 0), 0);
  int32_t res;
  cr_assert_eq(dw_actor_last_trap(t1), DW_TRAP_NONE);
  cr_assert_eq(dw_actor_send(t1, "check", 5, devnull(), &res), DW_ERR_TRAP, "%s", dw_last_error());
  cr_assert_eq(dw_actor_last_trap(t1), DW_TRAP_OUT_OF_BOUNDS, "the lost page is an out-of-bounds access");
  dw_actor_destroy(t1);
  reply(a, "still here", r1, sizeof r1);
  dw_actor_destroy(a);
  sh("rm -rf %s", d);
}

Test(snapshot, in_process_fork_binds_declared_functions_to_the_fork) {
  dw_module *m;
  cr_assert_eq(dw_module_load(RT, DW_TEST_GUESTS "/table_actor.wasm", &m, NULL), DW_OK, "%s", dw_last_error());
  dw_actor *a, *f, *t;
  char r[64];
  cr_assert_eq(dw_actor_spawn(m, &a), DW_OK);
  reply(a, "ref", r, sizeof r);
  reply(a, "call", r, sizeof r);
  cr_assert_str_eq(r, "C");
  cr_assert_eq(dw_actor_fork(a, &f), DW_OK, "%s", dw_last_error());
  reply(f, "call", r, sizeof r);
  reply(f, "call", r, sizeof r);
  reply(f, "n", r, sizeof r);
  cr_assert_str_eq(r, "3");
  reply(a, "n", r, sizeof r);
  cr_assert_str_eq(r, "1", "the fork's calls went to the parent's memory");
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(f, 0, &buf, &n), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_actor_thaw(RT, m, buf, n, &t, NULL), DW_OK, "%s", dw_last_error());
  reply(t, "call", r, sizeof r);
  reply(t, "n", r, sizeof r);
  cr_assert_str_eq(r, "4");
  reply(f, "n", r, sizeof r);
  cr_assert_str_eq(r, "3");
  free(buf);
  dw_actor_destroy(a), dw_actor_destroy(f), dw_actor_destroy(t);
  dw_module_destroy(m);
}

Test(snapshot, truncated_and_corrupted_snapshots_are_refused) {
  dw_actor *a, *t = NULL;
  char r[256];
  cr_assert_eq(dw_actor_spawn(MOD, &a), DW_OK);
  reply(a, "llm Hello world and more", r, sizeof r);
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(a, DW_FREEZE_EMBED_MODULE, &buf, &n), DW_OK);
  for (size_t len = 0; len < n; len += (len < 256 ? 1 : 997)) {
    cr_assert_neq(dw_actor_thaw(RT, MOD, buf, len, &t, NULL), DW_OK, "truncated to %zu bytes thawed", len);
    cr_assert_null(t);
  }
  uint8_t *bad = malloc(n);
  srand(11);
  for (int i = 0; i < 300; i++) {
    memcpy(bad, buf, n);
    size_t at = (size_t)rand() % n;
    bad[at] ^= (uint8_t)(1u << (rand() % 8));
    dw_status st = dw_actor_thaw(RT, MOD, bad, n, &t, NULL);
    cr_assert_eq(st, DW_ERR_BAD_SNAPSHOT, "a flipped bit at %zu: %s (%s)", at, dw_status_str(st), dw_last_error());
    cr_assert(strlen(dw_last_error()) > 10);
  }
  /* absurd sizes in an otherwise well-formed header */
  memcpy(bad, buf, n);
  uint32_t many = 0xFFFFFFFFu;
  memcpy(bad + 12, &many, 4);
  cr_assert_neq(dw_actor_thaw(RT, MOD, bad, n, &t, NULL), DW_OK);
  free(bad);
  free(buf);
  dw_actor_destroy(a);
}

/* The container's piecewise checksum (snapshot.h), computed here from its
 * definition with the xxhash library, against what the writer stored. */
static void piecewise_digest(uint32_t type, uint32_t flags, const uint8_t *p, uint64_t n, uint8_t out[16]) {
  uint8_t hdr[24];
  uint64_t raw = n;
  memcpy(hdr, &type, 4), memcpy(hdr + 4, &flags, 4), memcpy(hdr + 8, &raw, 8), memcpy(hdr + 16, &n, 8);
  XXH3_state_t *st = XXH3_createState();
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, hdr, sizeof hdr);
  for (uint64_t off = 0; off < n; off += DW_SNAP_PIECE) {
    XXH64_canonical_t c;
    XXH64_canonicalFromHash(&c, XXH3_64bits(p + off, n - off < DW_SNAP_PIECE ? n - off : DW_SNAP_PIECE));
    XXH3_128bits_update(st, &c, sizeof c);
  }
  XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits_digest(st));
  XXH3_freeState(st);
}

Test(snapshot, large_sections_have_piecewise_checksums_that_catch_every_piece) {
  size_t big = 20 * DW_SNAP_PIECE + 12345; /* 21 pieces, the last one short */
  uint8_t *raw = malloc(big);
  srand(5);
  for (size_t i = 0; i < big; i++) raw[i] = (uint8_t)rand();
  dw_bytes b;
  dw_snap_begin(&b);
  dw_snap_add(&b, DW_SEC_GLOBALS, "small", 5, false);
  dw_snap_add(&b, DW_SEC_MEMORY, raw, big, false);
  cr_assert_eq(dw_snap_end(&b), DW_OK);
  uint32_t version, flags1, flags2;
  memcpy(&version, b.p + 8, 4);
  size_t sec2 = 16 + 40 + 5; /* header, then the small section */
  memcpy(&flags1, b.p + 16 + 4, 4), memcpy(&flags2, b.p + sec2 + 4, 4);
  cr_assert_eq(version, DW_SNAP_VERSION);
  cr_assert_eq(flags1, 0, "a small section is checked flat");
  cr_assert_eq(flags2, DW_SNAP_FLAG_PIECEWISE);
  uint8_t want[16];
  piecewise_digest(DW_SEC_MEMORY, flags2, raw, big, want);
  cr_assert(!memcmp(b.p + sec2 + 24, want, 16), "the stored checksum is not the documented piecewise one");
  dw_snap s;
  cr_assert_eq(dw_snap_parse(b.p, b.n, &s), DW_OK, "%s", dw_last_error());
  cr_assert(s.n == 2 && s.sec[1].flags == 0 && s.sec[1].stored_len == big && !memcmp(s.sec[1].stored, raw, big));
  dw_snap_free(&s);
  /* a flipped bit in any piece, the short last one included, is caught */
  size_t payload = sec2 + 40;
  for (size_t piece = 0; piece <= big / DW_SNAP_PIECE; piece++) {
    size_t at = payload + piece * DW_SNAP_PIECE + (size_t)rand() % (piece == big / DW_SNAP_PIECE ? 12345 : DW_SNAP_PIECE);
    b.p[at] ^= 0x10;
    cr_assert_eq(dw_snap_parse(b.p, b.n, &s), DW_ERR_BAD_SNAPSHOT, "a flip in piece %zu passed", piece);
    cr_assert(strstr(dw_last_error(), "checksum"), "%s", dw_last_error());
    b.p[at] ^= 0x10;
  }
  /* deferred: the large section's check runs on other threads and is
   * reported by dw_snap_check_end; other types are still checked at once */
  dw_snap_check *chk;
  cr_assert_eq(dw_snap_parse_deferred(b.p, b.n, 1u << DW_SEC_MEMORY, &s, &chk), DW_OK);
  cr_assert_not_null(chk);
  cr_assert_eq(dw_snap_check_end(chk), DW_OK, "%s", dw_last_error());
  dw_snap_free(&s);
  b.p[payload + 7 * DW_SNAP_PIECE + 99] ^= 1;
  cr_assert_eq(dw_snap_parse_deferred(b.p, b.n, 1u << DW_SEC_MEMORY, &s, &chk), DW_OK, "the check was not deferred");
  cr_assert_eq(dw_snap_check_end(chk), DW_ERR_BAD_SNAPSHOT);
  cr_assert(strstr(dw_last_error(), "section 1") && strstr(dw_last_error(), "checksum"), "%s", dw_last_error());
  dw_snap_free(&s);
  cr_assert_eq(dw_snap_parse_deferred(b.p, b.n, 1u << DW_SEC_SESSION, &s, &chk), DW_ERR_BAD_SNAPSHOT);
  cr_assert_null(chk);
  b.p[payload + 7 * DW_SNAP_PIECE + 99] ^= 1;
  cr_assert_eq(dw_snap_check_end(NULL), DW_OK);
  /* a version 2 file knows no piecewise flag; its flat sections still parse */
  uint32_t v2 = 2;
  memcpy(b.p + 8, &v2, 4);
  cr_assert_eq(dw_snap_parse(b.p, b.n, &s), DW_ERR_BAD_SNAPSHOT);
  cr_assert(strstr(dw_last_error(), "impossible header"), "%s", dw_last_error());
  dw_bytes f;
  dw_snap_begin(&f);
  dw_snap_add(&f, DW_SEC_GLOBALS, "small", 5, false);
  cr_assert_eq(dw_snap_end(&f), DW_OK);
  memcpy(f.p + 8, &v2, 4);
  cr_assert_eq(dw_snap_parse(f.p, f.n, &s), DW_OK, "%s", dw_last_error());
  dw_snap_free(&s);
  free(f.p), free(b.p), free(raw);
}

static char *logged_line;
static void capture_log(void *ctx, dw_log_level level, const char *line) {
  *(dw_log_level *)ctx = level;
  snprintf(logged_line, 512, "%s", line);
}

Test(snapshot, another_model_is_refused_another_quantisation_reprefills) {
  /* two quantisations of one synthetic model, and a different model */
  char d[] = "/tmp/dw-snapm-XXXXXX";
  cr_assert(mkdtemp(d));
  const char *mk = "/usr/bin/python3 " DW_TEST_SOURCE "/tools/mkmodel.py --synthetic-vocab spm --dim 32 --layers 2 "
                   "--heads 2 --kv-heads 1 --ffn 32 --ctx 512";
  cr_assert_eq(sh("%s --type q8_0 --seed 5 -o %s/q8.gguf && %s --type f16 --seed 5 -o %s/f16.gguf && "
                  "%s --type f16 --seed 5 --dim 64 -o %s/other.gguf", mk, d, mk, d, mk, d), 0, "%s", out);
  char q8[128], f16[128], other[128];
  snprintf(q8, sizeof q8, "%s/q8.gguf", d), snprintf(f16, sizeof f16, "%s/f16.gguf", d);
  snprintf(other, sizeof other, "%s/other.gguf", d);
  dw_runtime *r1, *r2, *r3;
  dw_runtime_config rc = {.backend = "cpu", .threads = 2};
  dw_module *m1, *m2, *m3;
  cr_assert_eq(dw_runtime_create(&rc, &r1), DW_OK);
  cr_assert_eq(dw_runtime_add_model(r1, "default", q8), DW_OK);
  cr_assert_eq(dw_module_load(r1, ECHO, &m1, NULL), DW_OK);
  dw_actor *a, *t;
  char rq[256], rf[256];
  cr_assert_eq(dw_actor_spawn(m1, &a), DW_OK);
  reply(a, "llm the hello world", rq, sizeof rq);
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(a, 0, &buf, &n), DW_OK);
  /* f16 of the same model: thaws by re-prefilling, and says so (through
   * the runtime's log hook, not stderr) */
  static char logged[512];
  static dw_log_level level;
  dw_runtime_config rc2 = rc;
  rc2.log = capture_log, rc2.log_ctx = &level;
  logged_line = logged;
  cr_assert_eq(dw_runtime_create(&rc2, &r2), DW_OK);
  cr_assert_eq(dw_runtime_add_model(r2, "default", f16), DW_OK);
  cr_assert_eq(dw_module_load(r2, ECHO, &m2, NULL), DW_OK);
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw(r2, m2, buf, n, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert_eq(rep.reprefilled, 1);
  cr_assert(strstr(logged, "re-prefilled from its") && level == DW_LOG_WARN, "log: %d %s", level, logged);
  reply(t, "llm and", rf, sizeof rf);
  reply(a, "llm and", rq, sizeof rq);
  cr_assert(strstr(rf, "2: next") && !strcmp(strstr(rf, " at "), strstr(rq, " at ")),
            "the re-prefilled session holds as many positions as the original: %s vs %s", rf, rq);
  dw_actor_destroy(t);
  /* another model: refused with a clear message */
  cr_assert_eq(dw_runtime_create(&rc, &r3), DW_OK);
  cr_assert_eq(dw_runtime_add_model(r3, "default", other), DW_OK);
  cr_assert_eq(dw_module_load(r3, ECHO, &m3, NULL), DW_OK);
  cr_assert_neq(dw_actor_thaw(r3, m3, buf, n, &t, &rep), DW_OK);
  cr_assert(strstr(dw_last_error(), "not the model the snapshot was made with"), "%s", dw_last_error());
  free(buf);
  dw_actor_destroy(a);
  dw_module_destroy(m1), dw_module_destroy(m2), dw_module_destroy(m3);
  dw_runtime_destroy(r1), dw_runtime_destroy(r2), dw_runtime_destroy(r3);
  sh("rm -rf %s", d);
}

/* Model handles are the guest's own, in the order it opened its models:
 * actors frozen on hosts that registered their models in different orders
 * thaw side by side into one host (it used to refuse all but one order),
 * keep their handles, and a host with fixed models finds a model it serves
 * under another name by its fingerprint. */
Test(snapshot, model_handles_are_the_guests_own_whatever_the_host_order) {
  char d[] = "/tmp/dw-snaph-XXXXXX";
  cr_assert(mkdtemp(d));
  const char *mk = "/usr/bin/python3 " DW_TEST_SOURCE "/tools/mkmodel.py --synthetic-vocab spm --dim 32 --layers 2 "
                   "--heads 2 --kv-heads 1 --ffn 32 --ctx 512 --type f16";
  cr_assert_eq(sh("%s --seed 5 -o %s/a.gguf && %s --seed 9 -o %s/b.gguf", mk, d, mk, d), 0, "%s", out);
  char pa[128], pb[128];
  snprintf(pa, sizeof pa, "%s/a.gguf", d), snprintf(pb, sizeof pb, "%s/b.gguf", d);
  dw_runtime_config rc = {.backend = "cpu", .threads = 2};
  dw_runtime *rt[5];
  dw_module *mod[5];
  const char *order[5][2][2] = {{{"a", pa}, {"b", pb}},       {{"b", pb}, {"a", pa}},     {{"b", pb}, {"a", pa}},
                                {{"alpha", pa}, {"beta", pb}}, {{"alpha", pa}, {NULL, NULL}}};
  for (int i = 0; i < 5; i++) {
    rc.fixed_models = i >= 3;
    cr_assert_eq(dw_runtime_create(&rc, &rt[i]), DW_OK);
    for (int k = 0; k < 2 && order[i][k][0]; k++)
      cr_assert_eq(dw_runtime_add_model(rt[i], order[i][k][0], order[i][k][1]), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_module_load(rt[i], ECHO, &mod[i], NULL), DW_OK);
  }
  /* x on host 0 (a, b): handles a=1, b=2, its session on b; y on host 1
   * (b, a): b=1, a=2, its session on a */
  dw_actor *x, *y, *t;
  char r[256], want[256];
  cr_assert_eq(dw_actor_spawn(mod[0], &x), DW_OK);
  cr_assert_eq(dw_actor_spawn(mod[1], &y), DW_OK);
  reply(x, "model a", r, sizeof r);
  cr_assert_str_eq(r, "1: model 1\n");
  reply(x, "model b", r, sizeof r);
  cr_assert_str_eq(r, "2: model 2\n");
  reply(x, "llm the hello world", r, sizeof r);
  reply(y, "model b", r, sizeof r);
  cr_assert_str_eq(r, "1: model 1\n");
  reply(y, "model a", r, sizeof r);
  cr_assert_str_eq(r, "2: model 2\n");
  reply(y, "llm the hello world", r, sizeof r);
  uint8_t *bx, *by;
  size_t nx, ny;
  cr_assert_eq(dw_actor_freeze(x, 0, &bx, &nx), DW_OK);
  cr_assert_eq(dw_actor_freeze(y, 0, &by, &ny), DW_OK);
  /* both into host 2 (b, a) and host 3 (fixed: alpha, beta), where each
   * continues exactly as the original does */
  for (int h = 2; h <= 3; h++) {
    dw_thaw_report rep;
    cr_assert_eq(dw_actor_thaw(rt[h], mod[h], bx, nx, &t, &rep), DW_OK, "host %d: %s", h, dw_last_error());
    cr_assert_eq(rep.sessions, 1);
    cr_assert_eq(rep.reprefilled, 0);
    reply(t, "llm and more", r, sizeof r);
    if (h == 2) reply(x, "llm and more", want, sizeof want);
    cr_assert_str_eq(r, want, "x on host %d: %s vs %s", h, r, want);
    dw_actor_destroy(t);
    cr_assert_eq(dw_actor_thaw(rt[h], mod[h], by, ny, &t, &rep), DW_OK, "host %d: %s", h, dw_last_error());
    reply(t, "llm and more", r, sizeof r);
    if (h == 2) reply(y, "llm and more", want + 128, 128);
    cr_assert_str_eq(r, want + 128, "y on host %d", h);
    if (h == 2) { /* its handles are its own: b is still 1 */
      reply(t, "model b", r, sizeof r);
      cr_assert_str_eq(r, "5: model 1\n");
    }
    dw_actor_destroy(t);
  }
  /* a fixed host that lacks one of them refuses, naming it */
  cr_assert_neq(dw_actor_thaw(rt[4], mod[4], bx, nx, &t, NULL), DW_OK);
  cr_assert(strstr(dw_last_error(), "model 'b'"), "%s", dw_last_error());
  free(bx), free(by);
  dw_actor_destroy(x), dw_actor_destroy(y);
  for (int i = 0; i < 5; i++) dw_module_destroy(mod[i]), dw_runtime_destroy(rt[i]);
  sh("rm -rf %s", d);
}

/* A CPU runtime serving the demo model as "default", and the echo actor. */
static void echo_on_demo(dw_runtime **rt, dw_module **m) {
  dw_runtime_config rc = {.backend = "cpu", .threads = 2};
  cr_assert_eq(dw_runtime_create(&rc, rt), DW_OK);
  cr_assert_eq(dw_runtime_add_model(*rt, "default", DEMO), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_module_load(*rt, ECHO, m, NULL), DW_OK);
}

/* A version-3 snapshot (no HANDLES section: a model handle was the
 * registry index + 1) still thaws, its handles the MODELS entries in order. */
Test(snapshot, a_version_3_snapshot_without_handles_thaws) {
  dw_runtime *rt;
  dw_module *m;
  echo_on_demo(&rt, &m);
  dw_actor *a, *t;
  char r[256], want[256];
  cr_assert_eq(dw_actor_spawn(m, &a), DW_OK);
  reply(a, "llm the hello world", r, sizeof r);
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(a, 0, &buf, &n), DW_OK);
  dw_snap s;
  cr_assert_eq(dw_snap_parse(buf, n, &s), DW_OK, "%s", dw_last_error());
  dw_bytes old;
  dw_snap_begin(&old);
  bool had = false;
  for (uint32_t i = 0; i < s.n; i++) {
    const dw_snap_sec *c = &s.sec[i];
    if (c->type == DW_SEC_HANDLES) {
      had = true;
      continue;
    }
    const uint8_t *raw;
    bool owned;
    cr_assert_eq(dw_snap_payload(c, &raw, &owned), DW_OK);
    dw_snap_add(&old, c->type, raw, c->raw_len, c->flags & DW_SNAP_FLAG_ZSTD);
    if (owned) free((void *)raw);
  }
  dw_snap_free(&s);
  cr_assert(had, "a version-4 snapshot has a HANDLES section");
  cr_assert_eq(dw_snap_end(&old), DW_OK);
  uint32_t v3 = 3;
  memcpy(old.p + 8, &v3, 4);
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw(rt, m, old.p, old.n, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert_eq(rep.sessions, 1);
  reply(t, "llm and more", r, sizeof r);
  reply(a, "llm and more", want, sizeof want);
  cr_assert_str_eq(r, want);
  free(buf), free(old.p);
  dw_actor_destroy(a), dw_actor_destroy(t);
  dw_module_destroy(m), dw_runtime_destroy(rt);
}

/* An embedder's settings source replaces the environment, for the layers
 * below the API too: its AOT cache directory is where modules compile, and
 * its DRIFTWOOD_MEM_COW=0 makes a thaw copy memory instead of mapping it,
 * while a runtime on the environment in the same process maps it. */
static const char *test_setting(void *ctx, const char *name) {
  if (!strcmp(name, "DRIFTWOOD_CACHE")) return ctx;
  if (!strcmp(name, "DRIFTWOOD_MEM_COW")) return "0";
  return NULL;
}

Test(snapshot, an_embedders_settings_replace_the_environment) {
  char d[] = "/tmp/dw-settings-XXXXXX", path[128];
  cr_assert(mkdtemp(d));
  dw_runtime_config rc = {.backend = "cpu", .threads = 1, .setting = test_setting, .setting_ctx = d};
  dw_runtime *mine, *env;
  dw_module *m1, *m2;
  cr_assert_eq(dw_runtime_create(&rc, &mine), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_runtime_create(&(dw_runtime_config){.backend = "cpu", .threads = 1}, &env), DW_OK);
  cr_assert_eq(dw_module_load(mine, ECHO, &m1, NULL), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_module_load(env, ECHO, &m2, NULL), DW_OK, "%s", dw_last_error());
  cr_assert_eq(sh("ls %s | grep -c '\\.so$'", d), 0, "the module compiled into the embedder's cache: %s", out);
  char desc[4096];
  dw_runtime_describe(mine, desc, sizeof desc);
  cr_assert(strstr(desc, d), "%s", desc);
  dw_actor *a, *t;
  char r[256];
  cr_assert_eq(dw_actor_spawn(m2, &a), DW_OK);
  reply(a, "scatter", r, sizeof r);
  snprintf(path, sizeof path, "%s/a.dws", d);
  cr_assert_eq(dw_actor_freeze_file(a, 0, path), DW_OK, "%s", dw_last_error());
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw_file(env, m2, path, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert_gt(rep.memory_mapped, 0, "the environment's runtime maps memory from the file");
  dw_actor_destroy(t);
  cr_assert_eq(dw_actor_thaw_file(mine, m1, path, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert_eq(rep.memory_mapped, 0, "DRIFTWOOD_MEM_COW=0 from the embedder's settings copies");
  cr_assert_gt(rep.memory_bytes, 0);
  reply(t, "check", r, sizeof r);
  char want[256];
  reply(a, "check", want, sizeof want);
  cr_assert_str_eq(r, want);
  dw_actor_destroy(t), dw_actor_destroy(a);
  dw_module_destroy(m1), dw_module_destroy(m2);
  dw_runtime_destroy(mine), dw_runtime_destroy(env);
  sh("rm -rf %s", d);
}

/* dw_actor_freeze_file streams the sections into the file as it builds
 * them; the file holds exactly the bytes an in-memory freeze gives. */
Test(snapshot, a_streamed_freeze_equals_the_one_in_memory) {
  dw_runtime *rt;
  dw_module *m;
  echo_on_demo(&rt, &m);
  dw_actor *a;
  char r[256], path[128], d[] = "/tmp/dw-stream-XXXXXX";
  cr_assert(mkdtemp(d));
  snprintf(path, sizeof path, "%s/a.dws", d);
  cr_assert_eq(dw_actor_spawn(m, &a), DW_OK);
  for (int i = 0; i < 3; i++) reply(a, "scatter", r, sizeof r); /* > 8 MiB of pages: checksummed piecewise */
  reply(a, "llm the hello world and more words", r, sizeof r);
  for (unsigned flags = 0; flags < 4; flags++) { /* embedded module or not, memory compressed or not */
    unsigned f = (flags & 1 ? DW_FREEZE_EMBED_MODULE : 0) | (flags & 2 ? DW_FREEZE_COMPRESS_MEMORY : 0);
    uint8_t *buf;
    size_t n, fn;
    cr_assert_eq(dw_actor_freeze(a, f, &buf, &n), DW_OK, "%s", dw_last_error());
    cr_assert_eq(dw_actor_freeze_file(a, f, path), DW_OK, "%s", dw_last_error());
    uint8_t *file = slurp(path, &fn);
    cr_assert(fn == n && !memcmp(file, buf, n), "flags %u: the file (%zu bytes) differs from the buffer (%zu)", f, fn, n);
    if (!(f & DW_FREEZE_COMPRESS_MEMORY)) cr_assert_gt(n, 8u << 20);
    free(buf), free(file);
    /* the pieces that span runs of pages were checksummed right: it thaws, and holds the same bytes */
    dw_actor *t;
    char want[256];
    cr_assert_eq(dw_actor_thaw_file(rt, m, path, &t, NULL), DW_OK, "flags %u: %s", f, dw_last_error());
    reply(t, "check", r, sizeof r);
    reply(a, "check", want, sizeof want);
    cr_assert_str_eq(strchr(r, ' '), strchr(want, ' '));
    dw_actor_destroy(t);
  }
  cr_assert_eq(sh("ls %s | wc -l", d), 0);
  cr_assert_str_eq(out, "1\n", "no temporary file is left behind");
  dw_actor_destroy(a);
  dw_module_destroy(m), dw_runtime_destroy(rt);
  sh("rm -rf %s", d);
}

/* A snapshot that embeds its module embeds the bytes the actor runs, even
 * when the file it came from has changed since (it used to re-read the
 * file, and such a snapshot could never thaw). */
Test(snapshot, embedded_module_is_the_one_loaded_not_the_file_now) {
  char path[256], cmd[600], r1[256], r2[256];
  snprintf(path, sizeof path, "%s/changing-module.wasm", DW_TEST_BUILD);
  snprintf(cmd, sizeof cmd, "cp %s %s", ECHO, path);
  cr_assert_eq(system(cmd), 0);
  dw_module *m;
  cr_assert_eq(dw_module_load(RT, path, &m, NULL), DW_OK, "%s", dw_last_error());
  dw_actor *a, *t;
  cr_assert_eq(dw_actor_spawn(m, &a), DW_OK, "%s", dw_last_error());
  reply(a, "llm Hello world", r1, sizeof r1);
  FILE *f = fopen(path, "wb"); /* the file changes under the live module */
  cr_assert(f);
  fputs("\0asm garbage", f);
  fclose(f);
  uint8_t *buf;
  size_t n;
  cr_assert_eq(dw_actor_freeze(a, DW_FREEZE_EMBED_MODULE, &buf, &n), DW_OK, "%s", dw_last_error());
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw(RT, NULL, buf, n, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert(rep.module_embedded);
  reply(a, "llm again", r1, sizeof r1);
  reply(t, "llm again", r2, sizeof r2);
  cr_assert_str_eq(r1, r2);
  free(buf);
  dw_actor_destroy(a), dw_actor_destroy(t);
  dw_module_destroy(m);
  unlink(path);
}

/* A zeroed dw_run_config (as in the header's example) gives the guest the
 * process's own stdout, not fd 0. */
Test(snapshot, a_zeroed_run_config_writes_to_stdout) {
  dw_module *m;
  cr_assert_eq(dw_module_load(RT, DW_TEST_BUILD "/examples/matmul.wasm", &m, NULL), DW_OK, "%s", dw_last_error());
  int p[2], saved = dup(1);
  cr_assert_eq(pipe(p), 0);
  fflush(stdout);
  dup2(p[1], 1);
  const char *argv[] = {"matmul.wasm"};
  dw_run_config cfg = {.argc = 1, .argv = argv};
  dw_run_result r;
  dw_status st = dw_run_command(m, &cfg, &r);
  dup2(saved, 1);
  close(saved), close(p[1]);
  char out[4096];
  ssize_t n = read(p[0], out, sizeof out - 1);
  out[n > 0 ? n : 0] = 0;
  close(p[0]);
  cr_assert_eq(st, DW_OK, "%s", dw_last_error());
  cr_assert_eq(r.exit_code, 0, "%s", r.message);
  cr_assert(n > 0 && strstr(out, "zero_copy"), "the guest's output did not reach stdout: '%s'", out);
  dw_module_destroy(m);
}

/* Freezing reads the model registry under its lock while other threads
 * register models (it used to walk the registry's array unlocked, which a
 * registration may move). */
typedef struct reg_hammer {
  dw_runtime *rt;
  _Atomic bool stop;
} reg_hammer;

static void *register_models(void *arg) {
  reg_hammer *h = arg;
  char name[32];
  for (int i = 0; i < 4000 && !atomic_load(&h->stop); i++) {
    snprintf(name, sizeof name, "m%d", i);
    if (dw_runtime_add_model(h->rt, name, DEMO) != DW_OK) break;
  }
  return NULL;
}

Test(snapshot, freeze_while_models_are_registered) {
  dw_runtime_config rc = {.backend = "cpu", .threads = 1};
  dw_runtime *rt;
  dw_module *m;
  dw_actor *a;
  char r[256];
  cr_assert_eq(dw_runtime_create(&rc, &rt), DW_OK);
  cr_assert_eq(dw_runtime_add_model(rt, "default", DEMO), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_module_load(rt, ECHO, &m, NULL), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_actor_spawn(m, &a), DW_OK, "%s", dw_last_error());
  reply(a, "llm Hello world", r, sizeof r);
  reg_hammer h = {rt, false};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, register_models, &h), 0);
  for (int i = 0; i < 300; i++) {
    uint8_t *buf;
    size_t n;
    cr_assert_eq(dw_actor_freeze(a, 0, &buf, &n), DW_OK, "%s", dw_last_error());
    free(buf);
  }
  atomic_store(&h.stop, true);
  pthread_join(th, NULL);
  dw_actor_destroy(a);
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
}

/* A command's trap reaches the embedder as a kind, not only as text. */
Test(snapshot, a_trapping_command_reports_the_trap_kind) {
  dw_module *m;
  cr_assert_eq(dw_module_load(RT, DW_TEST_GUESTS "/trap_start.wasm", &m, NULL), DW_OK, "%s", dw_last_error());
  const char *argv[] = {"trap_start.wasm"};
  dw_run_config cfg = {.argc = 1, .argv = argv};
  dw_run_result r;
  cr_assert_eq(dw_run_command(m, &cfg, &r), DW_OK, "%s", dw_last_error());
  cr_assert(r.trapped);
  cr_assert_eq(r.trap, DW_TRAP_DIV_BY_ZERO, "trap kind %d (%s)", r.trap, r.message);
  cr_assert_eq(r.exit_code, 134);
  dw_module_destroy(m);
}
