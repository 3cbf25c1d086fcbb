/*
 * nn_test.c — WASI-NN guests as WasmEdge users run them: `driftwood run
 * --nn-preload alias:GGML:AUTO:model.gguf guest.wasm alias ...` with
 * tests/guests/nn_guest.c doing what the WasmEdge GGML examples do
 * (one-shot, interactive, streaming, metadata, set_input twice, unload,
 * model not found, context overflow, embeddings, config errors, hostile
 * pointers), checking the statuses and outputs of ../shared/specs/wasi-nn-ggml.md.
 */
#include "sh.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEMO DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"
#define PRE DW_TEST_DRIFTWOOD " run --nn-preload default:GGML:AUTO:" DEMO " "
#define GUEST DW_TEST_GUESTS "/nn_guest.wasm default "
#define RUN PRE GUEST
/* with a config: guests see only --env variables, as under WasmEdge */
#define RUNC(cfg) PRE "--env 'NN_CONFIG=" cfg "' " GUEST

static int field(const char *key) { /* the integer after the last "key": in out */
  const char *p = NULL;
  for (const char *q = out; (q = strstr(q, key)); q++) p = q;
  cr_assert(p, "no %s in %s", key, out);
  return atoi(p + strlen(key) + 2);
}

Test(nn, one_shot_and_metadata) {
  cr_assert_eq(sh(RUN "oneshot 'Once upon a time'"), 0, "%s", out);
  cr_assert(strstr(out, "load 0 graph 0\ninit 0\nset_input 0\n"), "%s", out);
  cr_assert(strstr(out, "meta 0 [{\"input_tokens\": 5, \"output_tokens\": 0, "), "metadata before compute: %s", out);
  cr_assert(strstr(out, "compute 0\n"), "%s", out);
  cr_assert(strstr(out, "\"output_tokens\": 12,"), "n-predict 12 honoured: %s", out);
  const char *o = strstr(out, "output 0 [");
  cr_assert(o && o[10] != ']', "empty output: %s", out);
  /* a short buffer gets a prefix and the full length, status 0 */
  size_t len = (size_t)(strstr(o, "]\nmeta") - (o + 10));
  char want[64];
  snprintf(want, sizeof want, "small buffer 0 size %zu", len);
  cr_assert(strstr(out, want), "%s in %s", want, out);
  /* the same seed gives the same text */
  static char first[sizeof out];
  snprintf(first, sizeof first, "%s", out);
  sh(RUN "oneshot 'Once upon a time'");
  cr_assert_str_eq(out, first);
}

Test(nn, streaming_matches_and_fini_resets) {
  cr_assert_eq(sh(RUNC("{\"ctx-size\":48,\"seed\":3}") "stream 'Hello'"), 0, "%s", out);
  cr_assert(strstr(out, "] end 101\n"), "a context of 48 fills up: %s", out);
  const char *s = strstr(out, "stream [") + 8, *e = strstr(out, "] end 101");
  const char *o = strstr(out, "output 0 [") + 10;
  /* the whole output is the streamed pieces plus the last sampled one */
  cr_assert(!strncmp(o, s, (size_t)(e - s)), "stream and output differ: %s", out);
  cr_assert(strstr(out, "fini 0\nmeta 0 [{\"input_tokens\": 2, \"output_tokens\": 0"), "%s", out);
}

Test(nn, interactive_over_stdin) {
  cr_assert_eq(sh("printf 'first question\\n\\nsecond one\\n' | " RUN "interactive"), 0, "%s", out);
  const char *a = strstr(out, "compute 0\nanswer 0 ["), *b = a ? strstr(a + 1, "compute 0\nanswer 0 [") : NULL;
  cr_assert(a && b, "two turns answered: %s", out);
  cr_assert_null(strstr(b + 1, "compute"), "the empty line is skipped: %s", out);
}

Test(nn, set_input_twice_and_metadata_input) {
  cr_assert_eq(sh(RUN "twice 'The same prompt'"), 0, "%s", out);
  const char *m1 = strstr(out, "meta 0 ["), *m2 = strstr(m1 + 1, "meta 0 [");
  cr_assert(m1 && m2 && atoi(strstr(m1, "input_tokens") + 15) == atoi(strstr(m2, "input_tokens") + 15), "%s", out);
  cr_assert(strstr(out, "metadata input 0\nmetadata bad 2\nmetadata type 1\ncompute 0\n"), "%s", out);
  cr_assert(strstr(out, "\"output_tokens\": 3,"), "metadata n-predict 3 applied: %s", out);
}

Test(nn, unload_then_load_gets_a_new_graph) {
  cr_assert_eq(sh(RUN "unload hi"), 0, "%s", out);
  cr_assert(strstr(out, "round 0 graph 0 ctx 0 compute 0\nunload 0\n"), "%s", out);
  cr_assert(strstr(out, "round 2 graph 2 ctx 2 compute 0\nunload 0\nunload again 1\n"), "%s", out);
}

Test(nn, model_not_found_and_unknown_alias) {
  cr_assert_eq(sh(DW_TEST_DRIFTWOOD " run --nn-preload default:GGML:AUTO:/nonexistent/m.gguf " DW_TEST_GUESTS
                  "/nn_guest.wasm default notfound"), 0, "%s", out);
  cr_assert(strstr(out, "load_by_name 103"), "%s", out);
  cr_assert_eq(sh(RUN "notfound" " && " DW_TEST_DRIFTWOOD " run --nn-preload default:GGML:AUTO:" DEMO " " DW_TEST_GUESTS
                  "/nn_guest.wasm other notfound"), 0, "%s", out);
  cr_assert(strstr(out, "load_by_name 0\nload_by_name 8"), "%s", out);
  /* an unknown encoding or target drops the entry, as WasmEdge does */
  sh(DW_TEST_DRIFTWOOD " run --nn-preload default:ONNX:AUTO:" DEMO " " DW_TEST_GUESTS "/nn_guest.wasm default notfound");
  cr_assert(strstr(out, "not supported") && strstr(out, "load_by_name 8"), "%s", out);
  cr_assert_eq(sh(DW_TEST_DRIFTWOOD " run --nn-preload nocolons " DW_TEST_GUESTS "/nn_guest.wasm default notfound"), 126);
}

Test(nn, context_overflow_and_prompt_too_long) {
  cr_assert_eq(sh(RUNC("{\"ctx-size\":8}") "overflow 'a prompt that is longer than four tokens'"), 0);
  cr_assert(strstr(out, "compute 102"), "%s", out);
  cr_assert_eq(sh(RUNC("{\"ctx-size\":24,\"n-predict\":-1,\"seed\":2}") "overflow 'Hi'"), 0);
  cr_assert(strstr(out, "compute 101"), "%s", out);
  cr_assert(field("\"output_tokens\"") > 10, "the text so far is kept: %s", out);
}

Test(nn, embeddings) {
  cr_assert_eq(sh(RUNC("{\"embedding\":true}") "embed 'hello world'"), 0, "%s", out);
  cr_assert(strstr(out, "compute 0"), "%s", out);
  cr_assert_eq(field("\"n_embedding\""), 32);
  const char *p = strstr(out, "\"embedding\": [") + 14;
  double norm = 0;
  int n = 0;
  for (char *end; *p != ']'; p = end + (*end == ',')) {
    double v = strtod(p, &end);
    cr_assert_neq(end, p, "not a number at %.20s", p);
    norm += v * v, n++;
  }
  cr_assert_eq(n, 32);
  cr_assert_lt(fabs(norm - 1.0), 1e-6, "L2-normalised: %g", norm);
}

Test(nn, config_errors_and_unknown_keys) {
  sh(RUNC("{bad json") "config");
  cr_assert(strstr(out, "config 2"), "%s", out);
  sh(RUNC("{\"ctx-size\":\"big\"}") "config");
  cr_assert(strstr(out, "config 1"), "%s", out);
  sh(RUNC("{\"temp\":true}") "config");
  cr_assert(strstr(out, "config 1"), "%s", out);
  sh(RUNC("{\"llama3\":false,\"n-gpu-layers\":0,\"enable-log\":false,\"whatever\":[1,2]}") "config");
  cr_assert(strstr(out, "config 0"), "%s", out);
}

Test(nn, reverse_prompt_and_stream_stdout) {
  cr_assert_eq(sh(RUNC("{\"n-predict\":12,\"seed\":4,\"temp\":0}") "oneshot 'Tell me'"), 0, "%s", out);
  const char *o = strstr(out, "output 0 [") + 10;
  char stop[8];
  snprintf(stop, sizeof stop, "%.4s", o + 6); /* some text from the middle of the greedy answer */
  cr_assert_eq(sh(RUNC("{\"n-predict\":12,\"seed\":4,\"temp\":0,\"reverse-prompt\":\"%s\"}") "oneshot 'Tell me'",
                  stop), 0, "%s", out);
  cr_assert(field("\"output_tokens\"") < 12, "stopped at the reverse prompt '%s': %s", stop, out);
  o = strstr(out, "output 0 [") + 10;
  cr_assert(strstr(o, stop) && strstr(o, stop) < strstr(o, "]\n"), "%s", out);
  cr_assert_eq(sh(RUNC("{\"n-predict\":6,\"seed\":4,\"stream-stdout\":true}") "oneshot 'Tell me'"), 0);
  o = strstr(out, "output 0 [") + 10;
  size_t len = (size_t)(strstr(o, "]\nmeta") - o);
  cr_assert(memmem(out, (size_t)(o - out), o, len), "the host streamed the text before compute returned: %s", out);
}

Test(nn, hostile_pointers_and_handles) {
  cr_assert_eq(sh(RUN "hostile"), 0, "%s", out);
  static const char *const lines[] = {"bad name 1", "bad graph_out 1", "bad graph 1", "bad ctx 1", "bad tensor 1",
                                      "bad data 1", "bad type 1", "no input 1", "bad buf 1", "bad size 1",
                                      "bad unload 1"};
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) cr_assert(strstr(out, lines[i]), "%s: %s", lines[i], out);
}

/* --timeout bounds the whole call, host work included: a compute that
 * would generate for seconds (2,048 tokens) ends at the limit with the
 * time-limit trap, not after the loop (as it did). */
Test(nn, the_time_limit_covers_a_long_compute) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = sh(PRE "--timeout 100ms --env 'NN_CONFIG={\"ctx-size\":2048,\"n-predict\":100000}' " GUEST
              "oneshot 'Once upon a time'");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  cr_assert_eq(rc, 134, "exit %d: %s", rc, out);
  cr_assert(strstr(out, "time limit"), "%s", out);
  cr_assert_lt(s, 1.5, "the run took %.2f s under a 100 ms limit", s);
}
