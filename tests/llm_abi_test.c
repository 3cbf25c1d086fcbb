/*
 * llm_abi_test.c — hostile guests against every LLM import of `driftwood`
 * (model_open … session_free): bad handles, out-of-bounds, wrapping and
 * misaligned pointers, overlapping buffers, bad token ids, short buffers,
 * full contexts, use after free. Each gets a status code, never a trap or a
 * host crash, and a refused call leaves guest memory as it was. A valid
 * decode writes the logits in place in guest memory, equal to a direct host
 * decode of the same tokens.
 */
#include "harness.h"
#include "skip_main.h"

#include <fcntl.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_MODEL DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"
#define PAGE 65536u
#define MEM (4 * PAGE)

static th T;
static int pipefd[2];
static dw_model *M;
static dw_engine *P;
static dw_registry reg;

/* DW_TEST_LLM_ENGINE=cuda runs the suite on the CUDA backend and engine. */
static const char *engine_name(void) {
  const char *e = getenv("DW_TEST_LLM_ENGINE");
  return e && *e ? e : "cpu";
}

static void setup(void) {
  cr_assert_eq(pipe2(pipefd, O_NONBLOCK), 0);
  cr_assert(th_open_on(&T, GUEST("llm_calls"), pipefd[1], engine_name()), "%s", dw_last_error());
  cr_assert_eq(dw_engine_create(engine_name(), 2, NULL, &P), DW_OK, "%s", dw_last_error());
  dw_registry_init(&reg);
  cr_assert_eq(dw_registry_add(&reg, "demo", DEMO_MODEL, true), DW_OK, "%s", dw_last_error());
  M = dw_registry_loaded(&reg, 0);
  T.abi.reg = &reg;
  T.abi.engine = P;
  /* handle 1 is the demo model, as if the guest had opened it first */
  cr_assert_eq(dw_abi_model_add(&T.abi, 0), DW_OK);
}
static void teardown(void) {
  th_close(&T);
  dw_registry_fini(&reg);
  dw_engine_destroy(P);
  close(pipefd[0]);
  close(pipefd[1]);
}
TestSuite(llm_abi, .init = setup, .fini = teardown);

static uint32_t call(const char *fn, const char *sig, ...) {
  uint64_t a[8] = {0};
  va_list ap;
  va_start(ap, sig);
  for (size_t i = 0; i + 2 < strlen(sig) && i < 8; i++) a[i] = va_arg(ap, uint32_t);
  va_end(ap);
  dw_call_result r;
  cr_assert_eq(dw_instance_call(T.inst, fn, sig, a, &r), DW_OK, "%s trapped: %s", fn, dw_last_error());
  cr_assert_eq(r.outcome, DW_RAN);
  return (uint32_t)r.value;
}

static uint8_t *snap(void) {
  uint8_t *b = malloc(T.mem->size);
  memcpy(b, T.mem->base, T.mem->size);
  return b;
}

/* The call returns `want` and changes no byte of guest memory. */
#define REFUSED(want, fn, sig, ...)                                                                     \
  do {                                                                                                  \
    uint8_t *before_ = snap();                                                                          \
    uint32_t got_ = call(fn, sig, __VA_ARGS__);                                                         \
    cr_assert_eq(got_, (uint32_t)(want), "%s(%s) -> %u, want %u", fn, #__VA_ARGS__, got_, (unsigned)(want)); \
    cr_assert(!memcmp(before_, T.mem->base, T.mem->size), "%s(%s) changed guest memory", fn, #__VA_ARGS__); \
    free(before_);                                                                                      \
  } while (0)

static uint32_t rd32(uint32_t off) {
  uint32_t v;
  memcpy(&v, T.mem->base + off, 4);
  return v;
}

Test(llm_abi, model_open_and_info) {
  memcpy(T.mem->base + 100, "demo", 4);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "model_open", "i:iii", MEM - 2, 4, 200);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "model_open", "i:iii", 0xFFFFFFF0u, 0x20, 200);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "model_open", "i:iii", 100, 4, MEM);
  REFUSED(DW_ERR_MISALIGNED, "model_open", "i:iii", 100, 4, 201);
  REFUSED(DW_ERR_NOT_FOUND, "model_open", "i:iii", 100, 3, 200);
  cr_assert_eq(call("model_open", "i:iii", 100, 4, 200), DW_OK);
  cr_assert_eq(rd32(200), 1);
  cr_assert_eq(call("model_open", "i:iii", 100, 0, 204), DW_OK, "empty name: the first model");
  cr_assert_eq(rd32(204), 1);
  /* a model registered later, opened: the next handle of this guest's own */
  cr_assert_eq(dw_registry_add(&reg, "again", DEMO_MODEL, true), DW_OK, "%s", dw_last_error());
  memcpy(T.mem->base + 110, "again", 5);
  cr_assert_eq(call("model_open", "i:iii", 110, 5, 208), DW_OK);
  cr_assert_eq(rd32(208), 2);
  cr_assert_eq(call("model_open", "i:iii", 110, 5, 208), DW_OK);
  cr_assert_eq(rd32(208), 2, "opening a model again gives its handle back");
  REFUSED(DW_ERR_NOT_FOUND, "model_info", "i:ii", 0, 300);
  REFUSED(DW_ERR_NOT_FOUND, "model_info", "i:ii", 3, 300);
  REFUSED(DW_ERR_NOT_FOUND, "model_info", "i:ii", 0xFFFFFFFFu, 300);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "model_info", "i:ii", 1, MEM - 16);
  REFUSED(DW_ERR_MISALIGNED, "model_info", "i:ii", 1, 302);
  cr_assert_eq(call("model_info", "i:ii", 1, 300), DW_OK);
  dw_model_info mi;
  memcpy(&mi, T.mem->base + 300, sizeof mi);
  cr_assert_eq(mi.n_vocab, (uint32_t)M->hp.n_vocab);
  cr_assert_eq(mi.n_ctx_train, (uint32_t)M->hp.n_ctx_train);
  cr_assert_eq(mi.bos, 1);
  cr_assert_eq(mi.flags & DW_MODEL_ADD_BOS, DW_MODEL_ADD_BOS);
}

Test(llm_abi, model_meta) {
  const char *key = "tokenizer.chat_template";
  memcpy(T.mem->base + 100, key, strlen(key));
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "model_meta", "i:iiiiii", 1, MEM - 4, 23, 1000, 100, 400);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "model_meta", "i:iiiiii", 1, 100, 23, MEM - 50, 100, 400);
  REFUSED(DW_ERR_MISALIGNED, "model_meta", "i:iiiiii", 1, 100, 23, 1000, 100, 401);
  REFUSED(DW_ERR_NOT_FOUND, "model_meta", "i:iiiiii", 1, 100, 22, 1000, 100, 400);
  REFUSED(DW_ERR_NOT_FOUND, "model_meta", "i:iiiiii", 1, 100, 300, 1000, 100, 400); /* key longer than any */
  REFUSED(DW_ERR_NOT_FOUND, "model_meta", "i:iiiiii", 7, 100, 23, 1000, 100, 400);
  cr_assert_eq(call("model_meta", "i:iiiiii", 1, 100, 23, 1000, 4, 400), DW_ERR_LIMIT);
  uint32_t need = rd32(400);
  cr_assert_gt(need, 4);
  cr_assert_eq(call("model_meta", "i:iiiiii", 1, 100, 23, 1000, need, 400), DW_OK);
  cr_assert(memmem(T.mem->base + 1000, need, "[INST]", 6));
}

Test(llm_abi, tokenize_and_piece) {
  memcpy(T.mem->base + 100, "Hello world", 11);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "tokenize", "i:iiiiiii", 1, MEM - 5, 11, 1, 1024, 16, 400);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "tokenize", "i:iiiiiii", 1, 100, 0xFFFFFFFFu, 1, 1024, 16, 400);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "tokenize", "i:iiiiiii", 1, 100, 11, 1, 1024, 0x40000000u, 400); /* cap*4 wraps */
  REFUSED(DW_ERR_MISALIGNED, "tokenize", "i:iiiiiii", 1, 100, 11, 1, 1026, 16, 400);
  REFUSED(DW_ERR_MISALIGNED, "tokenize", "i:iiiiiii", 1, 100, 11, 1, 1024, 16, 402);
  REFUSED(DW_ERR_INVALID_ARG, "tokenize", "i:iiiiiii", 1, 100, 11, 4, 1024, 16, 400); /* unknown flag */
  REFUSED(DW_ERR_INVALID_ARG, "tokenize", "i:iiiiiii", 1, 100, 11, 1, 96, 16, 400);   /* out overlaps text */
  REFUSED(DW_ERR_NOT_FOUND, "tokenize", "i:iiiiiii", 0, 100, 11, 1, 1024, 16, 400);
  cr_assert_eq(call("tokenize", "i:iiiiiii", 1, 100, 11, 1, 1024, 1, 400), DW_ERR_LIMIT);
  cr_assert_eq(rd32(400), 3, "BOS + 2 tokens needed");
  cr_assert_eq(call("tokenize", "i:iiiiiii", 1, 100, 11, 1, 1024, 16, 400), DW_OK);
  cr_assert_eq(rd32(400), 3);
  int32_t want[3] = {1, 15043, 3186};
  cr_assert(!memcmp(T.mem->base + 1024, want, sizeof want));
  REFUSED(DW_ERR_INVALID_ARG, "token_piece", "i:iiiii", 1, (uint32_t)M->hp.n_vocab, 2000, 16, 400);
  REFUSED(DW_ERR_INVALID_ARG, "token_piece", "i:iiiii", 1, 0xFFFFFFFFu, 2000, 16, 400);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "token_piece", "i:iiiii", 1, 15043, MEM - 2, 16, 400);
  REFUSED(DW_ERR_MISALIGNED, "token_piece", "i:iiiii", 1, 15043, 2000, 16, 403);
  cr_assert_eq(call("token_piece", "i:iiiii", 1, 15043, 2000, 16, 400), DW_OK);
  cr_assert_eq(rd32(400), 6);
  cr_assert(!memcmp(T.mem->base + 2000, " Hello", 6));
}

static uint32_t new_session(uint32_t n_ctx) {
  cr_assert_eq(call("session_new", "i:iii", 1, n_ctx, 500), DW_OK);
  return rd32(500);
}

Test(llm_abi, session_lifecycle_and_handles) {
  REFUSED(DW_ERR_NOT_FOUND, "session_new", "i:iii", 2, 0, 500);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "session_new", "i:iii", 1, 0, MEM);
  REFUSED(DW_ERR_MISALIGNED, "session_new", "i:iii", 1, 0, 501);
  REFUSED(DW_ERR_LIMIT, "session_new", "i:iii", 1, (uint32_t)M->hp.n_ctx_train + 1, 500);
  REFUSED(DW_ERR_INVALID_ARG, "session_new", "i:iii", 1, 0x80000000u, 500);
  uint32_t s = new_session(64);
  cr_assert_geq(s, 1);
  REFUSED(DW_ERR_NOT_FOUND, "session_len", "i:ii", 0, 600);
  REFUSED(DW_ERR_NOT_FOUND, "session_len", "i:ii", s + 1, 600);
  REFUSED(DW_ERR_NOT_FOUND, "session_len", "i:ii", 0xFFFFFFFFu, 600);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "session_len", "i:ii", s, MEM);
  REFUSED(DW_ERR_INVALID_ARG, "session_truncate", "i:ii", s, 1);
  REFUSED(DW_ERR_NOT_FOUND, "session_fork", "i:ii", 77, 600);
  REFUSED(DW_ERR_MISALIGNED, "session_fork", "i:ii", s, 602);
  cr_assert_eq(call("session_fork", "i:ii", s, 600), DW_OK);
  uint32_t f = rd32(600);
  cr_assert_neq(f, s);
  cr_assert_eq(call("session_free", "i:i", f), DW_OK);
  REFUSED(DW_ERR_NOT_FOUND, "session_free", "i:i", f); /* double free */
  REFUSED(DW_ERR_NOT_FOUND, "session_len", "i:ii", f, 600); /* use after free */
  /* the per-instance session table is bounded */
  int made = 1;
  uint32_t st;
  while ((st = call("session_new", "i:iii", 1, 8, 500)) == DW_OK) made++;
  cr_assert_eq(st, DW_ERR_LIMIT);
  cr_assert_eq(made, DW_ABI_MAX_SESSIONS);
  /* teardown frees every session the guest left open (LeakSanitizer checks) */
}

/* The session table grows on demand up to max_sessions (the runtime's
 * dw_runtime_config.max_sessions), handing out the lowest free handle. */
Test(llm_abi, the_session_table_grows_to_its_configured_bound) {
  T.abi.max_sessions = 6;
  cr_assert_eq(dw_abi_session_slots(&T.abi), 0, "no slots before the first session");
  for (uint32_t i = 1; i <= 6; i++) {
    cr_assert_eq(call("session_new", "i:iii", 1, 8, 500), DW_OK);
    cr_assert_eq(rd32(500), i);
  }
  cr_assert_leq(dw_abi_session_slots(&T.abi), 6);
  REFUSED(DW_ERR_LIMIT, "session_new", "i:iii", 1, 8, 500);
  cr_assert_eq(call("session_free", "i:i", 3), DW_OK);
  cr_assert_eq(call("session_new", "i:iii", 1, 8, 500), DW_OK);
  cr_assert_eq(rd32(500), 3, "the lowest free handle again");
}

Test(llm_abi, decode_in_place_and_hostile) {
  uint32_t s = new_session(40);
  int nv = M->hp.n_vocab;
  uint32_t tok = 1000, lg = PAGE; /* logits: nv floats from page 1 */
  int32_t ids[5] = {1, 15043, 3186, 29892, 920};
  memcpy(T.mem->base + tok, ids, sizeof ids);
  REFUSED(DW_ERR_NOT_FOUND, "decode", "i:iiii", s + 9, tok, 5, lg);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "decode", "i:iiii", s, MEM - 8, 5, lg);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "decode", "i:iiii", s, tok, 0x40000001u, lg);
  REFUSED(DW_ERR_OUT_OF_BOUNDS, "decode", "i:iiii", s, tok, 5, MEM - 4 * (uint32_t)nv + 4);
  REFUSED(DW_ERR_MISALIGNED, "decode", "i:iiii", s, tok + 2, 5, lg);
  REFUSED(DW_ERR_MISALIGNED, "decode", "i:iiii", s, tok, 5, lg + 1);
  REFUSED(DW_ERR_INVALID_ARG, "decode", "i:iiii", s, lg + 8, 5, lg); /* tokens inside the logits */
  REFUSED(DW_ERR_INVALID_ARG, "decode", "i:iiii", s, tok, 0, lg);
  int32_t bad[2] = {5, nv};
  memcpy(T.mem->base + 2000, bad, 8);
  REFUSED(DW_ERR_INVALID_ARG, "decode", "i:iiii", s, 2000, 2, lg);
  bad[1] = -7;
  memcpy(T.mem->base + 2000, bad, 8);
  REFUSED(DW_ERR_INVALID_ARG, "decode", "i:iiii", s, 2000, 2, lg);
  REFUSED(DW_ERR_LIMIT, "decode", "i:iiii", s, tok, 41, lg);
  cr_assert_eq(call("session_len", "i:ii", s, 600), DW_OK);
  cr_assert_eq(rd32(600), 0, "refused decodes append nothing");

  cr_assert_eq(call("decode", "i:iiii", s, tok, 5, lg), DW_OK);
  cr_assert_eq(call("session_len", "i:ii", s, 600), DW_OK);
  cr_assert_eq(rd32(600), 5);
  /* the same tokens decoded directly on the host give the same logits */
  dw_session *h;
  float *want = malloc((size_t)nv * 4);
  cr_assert_eq(dw_sess_new(M, P, 40, &h), DW_OK);
  cr_assert_eq(dw_decode(h, ids, 5, want, NULL), DW_OK);
  cr_assert(!memcmp(T.mem->base + lg, want, (size_t)nv * 4), "logits in guest memory differ from the host's");
  dw_sess_free(h);
  free(want);
  /* logits across the seam between two commits of memory (on CUDA: two
   * registrations, which one DMA may not cross) */
  uint32_t old_pages;
  cr_assert_eq(dw_mem_grow(T.mem, 2, &old_pages), DW_OK, "%s", dw_last_error());
  uint32_t seam = MEM - PAGE;
  cr_assert_eq(call("session_truncate", "i:ii", s, 0), DW_OK);
  cr_assert_eq(call("decode", "i:iiii", s, tok, 5, seam), DW_OK);
  cr_assert(!memcmp(T.mem->base + seam, T.mem->base + lg, (size_t)nv * 4), "logits across the seam differ");
  /* rewind and fork through the ABI */
  cr_assert_eq(call("session_truncate", "i:ii", s, 2), DW_OK);
  cr_assert_eq(call("session_len", "i:ii", s, 600), DW_OK);
  cr_assert_eq(rd32(600), 2);
}

/* On an engine this machine lacks, the suite is skipped (exit 77). */
static bool have_engine(const char **why) {
  dw_engine *e;
  if (dw_engine_create(engine_name(), 1, NULL, &e) != DW_OK) return *why = dw_last_error(), false;
  dw_engine_destroy(e);
  return true;
}

int main(int argc, char **argv) { return dw_test_main(argc, argv, "llm_abi_test", have_engine); }

/* Host code that faults on guest memory (here the tokenizer reading a
 * file mapping truncated under the guest) is not turned into a guest trap
 * (unwinding the host would leave its locks held): the process ends, and
 * says why. Run in a child process. */
Test(llm_abi, a_host_fault_on_guest_memory_ends_the_process_with_a_message) {
  char path[] = "/tmp/dw-hostfault-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  char text[8192];
  for (size_t i = 0; i < sizeof text; i++) text[i] = "Hello world "[i % 12];
  cr_assert_eq(write(fd, text, sizeof text), (ssize_t)sizeof text);
  uint32_t off = 2 * PAGE;
  cr_assert_eq(dw_mem_map_file(T.mem, off, sizeof text, fd, 0), DW_OK, "%s", dw_last_error());
  cr_assert_eq(ftruncate(fd, 0), 0);
  int p[2];
  cr_assert_eq(pipe(p), 0);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 2);
    uint64_t a[7] = {1, off, 64, 1, 1024, 16, 400};
    dw_call_result r;
    dw_instance_call(T.inst, "tokenize", "i:iiiiiii", a, &r);
    _exit(3); /* came back: the fault was turned into a trap, or never happened */
  }
  close(p[1]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  char err[4096];
  ssize_t n = read(p[0], err, sizeof err - 1);
  err[n > 0 ? n : 0] = 0;
  close(p[0]), close(fd), unlink(path);
  cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 3), "the host fault came back as a return: %s", err);
  cr_assert(strstr(err, "host code faulted on guest memory"), "no message: %s", err);
}
