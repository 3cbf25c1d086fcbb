/*
 * host_test.c — the actor host's run queue (src/server/host.c) on its own,
 * without HTTP: jobs handed to idle workers always run, also while the
 * hibernation janitor sleeps beside them.
 */
#include "server/host.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static atomic_int ran;
static void count(void *ctx) {
  (void)ctx;
  atomic_fetch_add(&ran, 1);
}
static atomic_bool done_flag;
static void on_done(dw_host_job *j) {
  (void)j;
  atomic_store(&done_flag, true);
}

/* Regression: the janitor used to sleep on the workers' condition variable,
 * so a worker's wake-up could go to it and a job stay queued with every
 * worker asleep (seen with 10,000 hibernating chat actors: a request that
 * never started). One job at a time, each must start within 5 s. */
Test(host, idle_workers_always_take_a_queued_job_beside_the_janitor) {
  char dir[] = "/tmp/dw-host-XXXXXX";
  cr_assert(mkdtemp(dir));
  dw_runtime_config rc = {.backend = "cpu", .threads = 2};
  dw_runtime *rt = NULL;
  cr_assert_eq(dw_runtime_create(&rc, &rt), DW_OK, "%s", dw_last_error());
  dw_host_config cfg = {.rt = rt, .state_dir = dir, .workers = 2, .hibernate_after_s = 3600};
  dw_host *h = NULL;
  cr_assert_eq(dw_host_create(&cfg, &h), DW_OK, "%s", dw_last_error());
  const int n = 300;
  for (int i = 0; i < n; i++) {
    dw_host_job j;
    dw_host_job_init(&j, DW_JOB_CALL);
    j.call = count;
    j.done = on_done;
    atomic_store(&done_flag, false);
    cr_assert_eq(dw_host_submit_ephemeral(h, NULL, &j), DW_OK, "%s", dw_last_error());
    int waited_ms = 0;
    while (!atomic_load(&done_flag) && waited_ms < 5000) {
      usleep(1000);
      waited_ms++;
    }
    cr_assert(atomic_load(&done_flag), "job %d of %d still queued after 5 s with idle workers", i + 1, n);
    dw_host_job_wait(&j);
    dw_host_job_fini(&j);
    if (i % 50 == 0) usleep(110 * 1000); /* spread the jobs over several of the janitor's 1 s sleeps */
  }
  cr_assert_eq(atomic_load(&ran), n);
  dw_host_destroy(h);
  dw_runtime_destroy(rt);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert_eq(system(cmd), 0);
}
