/*
 * cuda_test.c — the CUDA backend on a device: the matmul example, memory
 * growth while registered (operands across the seam), hostile arguments
 * refused before any CUDA call, 16 instances registered concurrently,
 * pinned-memory accounting back to zero (also after a trap), and large
 * GEMMs staged into device memory (exact, and reported), and actors
 * thawed or forked on CUDA computing on their restored memory. Without a device (or without the
 * CUDA build) every test reports as skipped.
 */
#include "harness.h"
#include "skip_main.h"

#include "driftwood.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef DW_HAVE_CUDA
static th T;
static bool have;
static void setup(void) {
  have = th_open_on(&T, GUEST("traps"), 1, "cuda");
  if (!have) cr_skip_test("no CUDA device: %s", dw_last_error());
}
static void teardown(void) {
  if (have) th_close(&T);
}
#define PAGE 65536u

Test(cuda, matmul_example_on_cuda) {
  dw_backend *be;
  if (dw_backend_create("cuda", 1, NULL, &be) != DW_OK) cr_skip_test("no CUDA device: %s", dw_last_error());
  dw_backend_destroy(be);
  FILE *p = popen(DW_TEST_DRIFTWOOD " run --backend cuda " DW_TEST_BUILD "/examples/matmul.wasm 2>&1", "r");
  char out[4096] = {0};
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  cr_assert_eq(pclose(p), 0, "%s", out);
  cr_assert(strstr(out, "matmul 128x128x128: 0 errors of 16384 elements, zero_copy=1"), "%s", out);
}

Test(cuda, growth_while_registered, .init = setup, .fini = teardown) {
  dw_call_result r;
  int64_t pinned0 = dw_backend_cuda_pinned_bytes(T.be);
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 1), DW_OK);
  int64_t pinned1 = dw_backend_cuda_pinned_bytes(T.be);
  /* Registered, unless the device reads pageable memory (then nothing is pinned). */
  cr_assert(pinned1 == pinned0 + PAGE || (pinned0 == 0 && pinned1 == 0), "pinned %lld -> %lld", (long long)pinned0,
            (long long)pinned1);
  cr_assert_eq(atomic_load(&T.be->stats.registered_bytes), 2 * PAGE);
  float *a = (float *)(T.mem->base + PAGE - 8);
  a[0] = 1, a[1] = 2, a[2] = 3, a[3] = 4;
  float *b = (float *)(T.mem->base + PAGE + 64);
  b[0] = 5, b[1] = 6, b[2] = 7, b[3] = 8;
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, PAGE - 8, PAGE + 64, PAGE + 128, 2, 2, 2), DW_OK);
  cr_assert_eq(r.value, DW_OK, "%s", dw_last_error());
  float *c = (float *)(T.mem->base + PAGE + 128);
  cr_assert(c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50, "%g %g %g %g", c[0], c[1], c[2], c[3]);
}

Test(cuda, hostile_arguments_are_refused, .init = setup, .fini = teardown) {
  struct { uint32_t a, b, c, m, n, k; dw_status want; } cases[] = {
      {PAGE - 8, 0, 64, 2, 2, 2, DW_ERR_OUT_OF_BOUNDS},   {0xfffffff0u, 0, 1024, 4, 4, 4, DW_ERR_OUT_OF_BOUNDS},
      {0, 64, 128, 0xffffffffu, 0xffffffffu, 0xffffffffu, DW_ERR_OVERFLOW},
      {1, 64, 128, 2, 2, 2, DW_ERR_MISALIGNED},          {0, 64, 8, 2, 2, 2, DW_ERR_INVALID_ARG},
      {0, 64, 128, 0, 5, 5, DW_OK},
  };
  uint8_t *before = malloc(T.mem->size);
  memcpy(before, T.mem->base, T.mem->size);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    dw_call_result r;
    cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, cases[i].a, cases[i].b, cases[i].c, cases[i].m, cases[i].n, cases[i].k),
                 DW_OK);
    cr_assert_eq((dw_status)r.value, cases[i].want, "case %zu", i);
  }
  cr_assert(!memcmp(before, T.mem->base, T.mem->size));
  free(before);
  /* The backend still works for everyone after the refusals. */
  float *m = (float *)T.mem->base;
  m[0] = 3, m[1] = 4;
  dw_call_result r;
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, 0, 4, 8, 1, 1, 1), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  cr_assert_eq(m[2], 12.0f);
}

Test(cuda, trap_releases_pinned_memory, .init = setup, .fini = teardown) {
  dw_call_result r;
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 3), DW_OK);
  float *m = (float *)T.mem->base;
  m[0] = 2, m[1] = 5;
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, 0, 4, 65536, 1, 1, 1), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  int64_t pinned = dw_backend_cuda_pinned_bytes(T.be);
  cr_assert(pinned == 4 * PAGE || pinned == 0, "pinned %lld", (long long)pinned);
  cr_assert_eq(CALL0(&T, "unreachable", "v:", &r), DW_ERR_TRAP);
  cr_assert_eq(CALL(&T, "load", "i:i", &r, 5 * PAGE), DW_ERR_TRAP, "out of bounds past the grown memory");
  dw_instance_destroy(T.inst);
  T.inst = NULL;
  cr_assert_eq(dw_backend_cuda_pinned_bytes(T.be), 0, "a trapped instance leaves nothing pinned");
  cr_assert_eq(atomic_load(&T.be->stats.registered_bytes), 0);
}

static dw_status s_commit(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void s_release(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

/* C = A·B for integer-valued A, B in registered memory, checked exactly
 * against a double-precision product on the host. */
static void check_product(dw_abi *abi, dw_mem *mem, uint32_t m, uint32_t n, uint32_t k) {
  float *a = (float *)mem->base, *b = a + (size_t)m * k, *c = b + (size_t)k * n;
  for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((int)(i % 7) - 3);
  for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)((int)(i % 5) - 2);
  memset(c, 0xff, (size_t)m * n * 4);
  uint32_t bo = (uint32_t)((size_t)m * k * 4), co = (uint32_t)(bo + (size_t)k * n * 4);
  cr_assert_eq(dw_abi_matmul_f32(abi, mem, 0, bo, co, m, n, k), DW_OK, "%s", dw_last_error());
  for (uint32_t i = 0; i < m; i++)
    for (uint32_t j = 0; j < n; j += 7) {
      double s = 0;
      for (uint32_t x = 0; x < k; x++) s += (double)a[(size_t)i * k + x] * b[(size_t)x * n + j];
      cr_assert_eq(c[(size_t)i * n + j], (float)s, "C[%u][%u] = %g, want %g", i, j, c[(size_t)i * n + j], s);
    }
}

Test(cuda, large_gemms_are_staged_exactly_and_reported, .init = setup, .fini = teardown) {
  dw_mem_hooks h = {T.be, s_commit, s_release, true, false};
  dw_mem *mem;
  const uint32_t N = 320;
  cr_assert_eq(dw_mem_create(24, 24, 0, &h, &mem), DW_OK);
  dw_abi abi;
  dw_abi_init(&abi, T.be, 1);
  bool pageable = dw_backend_cuda_pinned_bytes(T.be) == 0;
  uint64_t want = pageable ? 0 : 3ull * N * N * 4;
  cr_assert_eq(dw_backend_cuda_set_staging(T.be, "auto", 0), DW_OK);
  check_product(&abi, mem, N, N, N);
  cr_assert_eq(abi.last.staged_bytes, want, "staged %llu", (unsigned long long)abi.last.staged_bytes);
  cr_assert_eq(abi.last.zero_copy, want == 0);
  cr_assert(pageable || dw_backend_cuda_scratch_bytes(T.be) >= (int64_t)want);
  check_product(&abi, mem, 1, 1024, N); /* a GEMV of 1.3 MB: staged too */
  cr_assert_eq(abi.last.staged_bytes, pageable ? 0 : (N + N * 1024u + 1024u) * 4u);
  check_product(&abi, mem, 128, 128, 128); /* 192 KiB: below the threshold, in place */
  cr_assert_eq(abi.last.staged_bytes, 0);
  cr_assert_eq(abi.last.zero_copy, 1);
  cr_assert_eq(dw_backend_cuda_set_staging(T.be, "auto", 100), DW_OK);
  check_product(&abi, mem, 4, 4, 4); /* 192 bytes >= a threshold of 100 */
  cr_assert_eq(abi.last.staged_bytes, pageable ? 0 : 192u);
  cr_assert_eq(dw_backend_cuda_set_staging(T.be, "never", 0), DW_OK);
  check_product(&abi, mem, N, N, N);
  cr_assert_eq(abi.last.staged_bytes, 0);
  cr_assert_eq(abi.last.zero_copy, 1);
  cr_assert_eq(dw_backend_cuda_set_staging(T.be, "always", 0), DW_OK);
  check_product(&abi, mem, 3, 5, 7);
  cr_assert_eq(abi.last.staged_bytes, pageable ? 0 : (3 * 7 + 7 * 5 + 3 * 5) * 4u);
  cr_assert_eq(dw_backend_cuda_set_staging(T.be, "sometimes", 0), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_backend_cuda_set_staging(T.be, "auto", 0), DW_OK);
  dw_mem_destroy(mem);
}

/* What an actor replies to msg. */
static void ask(dw_actor *a, const char *msg, char *buf, size_t cap) {
  int p[2];
  cr_assert_eq(pipe(p), 0);
  int32_t r;
  cr_assert_eq(dw_actor_send(a, msg, strlen(msg), p[1], &r), DW_OK, "%s", dw_last_error());
  cr_assert_eq(r, 0);
  close(p[1]);
  ssize_t n = read(p[0], buf, cap - 1);
  buf[n > 0 ? n : 0] = 0;
  close(p[0]);
}

/* Thaw and fork write the restored bytes into memory the GPU has pinned:
 * the pages must stay the ones registered (dropping or remapping them
 * would leave the GPU computing on the old ones). */
Test(cuda, thawed_and_forked_actors_compute_on_restored_memory) {
  dw_runtime_config rc = {.backend = "cuda", .threads = 1};
  dw_runtime *rt;
  if (dw_runtime_create(&rc, &rt) != DW_OK) cr_skip_test("no CUDA device: %s", dw_last_error());
  dw_module *m;
  cr_assert_eq(dw_module_load(rt, GUEST("mm_actor"), &m, NULL), DW_OK, "%s", dw_last_error());
  dw_actor *a, *t, *f;
  char before[128], after[128];
  cr_assert_eq(dw_actor_spawn(m, &a), DW_OK, "%s", dw_last_error());
  ask(a, "fill", before, sizeof before);
  ask(a, "mm", before, sizeof before);
  cr_assert(!strncmp(before, "mm 0 ", 5) && strcmp(before, "mm 0 0.0\n"), "%s", before);
  char path[] = "/tmp/dw-cuda-actor-XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
  cr_assert_eq(dw_actor_freeze_file(a, 0, path), DW_OK, "%s", dw_last_error());
  dw_thaw_report rep;
  cr_assert_eq(dw_actor_thaw_file(rt, m, path, &t, &rep), DW_OK, "%s", dw_last_error());
  cr_assert_eq(rep.memory_mapped, 0, "pinned memory is copied, not mapped");
  ask(t, "mm", after, sizeof after);
  cr_assert_str_eq(after, before, "the thawed actor's GPU matmul saw other bytes");
  cr_assert_eq(dw_actor_fork(a, &f), DW_OK, "%s", dw_last_error());
  ask(f, "mm", after, sizeof after);
  cr_assert_str_eq(after, before, "the forked actor's GPU matmul saw other bytes");
  dw_actor_destroy(a), dw_actor_destroy(t), dw_actor_destroy(f);
  unlink(path);
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
}

typedef struct job {
  dw_wasm_module *mod;
  dw_backend *be;
  int ok;
} job;

static dw_status j_commit(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void j_release(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

static void *run_one(void *p) {
  job *j = p;
  dw_abi abi;
  dw_abi_init(&abi, j->be, 1);
  dw_instance_config ic = {.hooks = {j->be, j_commit, j_release, true}};
  ic.ctx[DW_SLOT_DRIFTWOOD] = &abi;
  dw_instance *inst;
  if (dw_instance_create(j->mod, &ic, &inst) != DW_OK) return NULL;
  dw_call_result r;
  uint64_t g[1] = {3};
  int good = dw_instance_call(inst, "grow", "i:i", g, &r) == DW_OK && r.value == 1;
  float *m = (float *)dw_instance_memory(inst)->base;
  for (int i = 0; i < 64 * 64; i++) m[i] = (float)(i % 3), m[4096 + i] = (float)(i % 5);
  uint64_t args[6] = {0, 4096 * 4, 8192 * 4 + 3 * 65536, 64, 64, 64};
  good = good && dw_instance_call(inst, "mm", "i:iiiiii", args, &r) == DW_OK && r.value == DW_OK;
  float *c = (float *)(dw_instance_memory(inst)->base + 8192 * 4 + 3 * 65536);
  for (int i = 0; good && i < 64; i++)
    for (int jx = 0; jx < 64; jx++) {
      float s = 0;
      for (int k = 0; k < 64; k++) s += m[i * 64 + k] * m[4096 + k * 64 + jx];
      good = s == c[i * 64 + jx];
    }
  dw_instance_destroy(inst);
  j->ok = good;
  return NULL;
}

Test(cuda, sixteen_instances_and_pinned_accounting, .init = setup, .fini = teardown) {
  pthread_t t[16];
  job jobs[16];
  for (int i = 0; i < 16; i++) {
    jobs[i] = (job){T.mod, T.be, 0};
    pthread_create(&t[i], NULL, run_one, &jobs[i]);
  }
  for (int i = 0; i < 16; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 16; i++) cr_expect(jobs[i].ok, "instance %d", i);
  dw_instance_destroy(T.inst);
  T.inst = NULL;
  cr_assert_eq(dw_backend_cuda_pinned_bytes(T.be), 0, "pinned memory back to zero");
  cr_assert_eq(atomic_load(&T.be->stats.registered_bytes), 0);
}
#endif

/* Without a device the whole suite is skipped (skip_main.h). */
static bool have_cuda(const char **why) {
#ifdef DW_HAVE_CUDA
  dw_backend *be;
  if (dw_backend_create("cuda", 1, NULL, &be) != DW_OK) return *why = dw_last_error(), false;
  dw_backend_destroy(be);
  return true;
#else
  *why = "built without the CUDA toolkit";
  return false;
#endif
}

int main(int argc, char **argv) { return dw_test_main(argc, argv, "cuda_test", have_cuda); }
