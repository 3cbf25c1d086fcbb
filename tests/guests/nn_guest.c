/*
 * nn_guest.c — a WASI-NN guest in C that does what the WasmEdge GGML
 * example programs do (one-shot, interactive over stdin, streaming,
 * metadata read-back, set_input twice, unload, model not found, context
 * overflow, embeddings) plus hostile calls, printing each status so tests
 * can check them.
 *
 *   nn_guest.wasm ALIAS MODE [PROMPT]     (config JSON from $NN_CONFIG)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NN(name) __attribute__((import_module("wasi_ephemeral_nn"), import_name(#name)))
NN(load_by_name) int32_t load_by_name(const char *name, uint32_t len, uint32_t *graph);
NN(load_by_name_with_config)
int32_t load_by_name_with_config(const char *name, uint32_t len, const char *cfg, uint32_t cfg_len, uint32_t *graph);
NN(init_execution_context) int32_t init_execution_context(uint32_t graph, uint32_t *ctx);
NN(set_input) int32_t set_input(uint32_t ctx, uint32_t index, const void *tensor);
NN(compute) int32_t compute(uint32_t ctx);
NN(compute_single) int32_t compute_single(uint32_t ctx);
NN(fini_single) int32_t fini_single(uint32_t ctx);
NN(get_output) int32_t get_output(uint32_t ctx, uint32_t index, char *buf, uint32_t max, uint32_t *size);
NN(get_output_single) int32_t get_output_single(uint32_t ctx, uint32_t index, char *buf, uint32_t max, uint32_t *size);
NN(unload) int32_t unload(uint32_t graph);

typedef struct tensor {
  const uint32_t *dims;
  uint32_t n_dims, type;
  const char *data;
  uint32_t len;
} tensor;

static char out[65536];
static const char *alias;

static uint32_t load(const char *cfg) {
  uint32_t g = 0;
  int32_t rc = load_by_name_with_config(alias, (uint32_t)strlen(alias), cfg, (uint32_t)strlen(cfg), &g);
  printf("load %d graph %u\n", rc, g);
  if (rc) exit(1);
  return g;
}

static int32_t input(uint32_t ctx, uint32_t index, const char *text) {
  static const uint32_t dims[1] = {1};
  tensor t = {dims, 1, 3, text, (uint32_t)strlen(text)};
  return set_input(ctx, index, &t);
}

static void show(uint32_t ctx, uint32_t index, const char *label) {
  uint32_t n = 0;
  int32_t rc = get_output(ctx, index, out, sizeof out - 1, &n);
  out[n < sizeof out - 1 ? n : sizeof out - 1] = 0;
  printf("%s %d [%s]\n", label, rc, out);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: nn_guest.wasm ALIAS MODE [PROMPT]\n");
    return 2;
  }
  alias = argv[1];
  const char *mode = argv[2], *prompt = argc > 3 ? argv[3] : "Once upon a time";
  const char *cfg = getenv("NN_CONFIG") ? getenv("NN_CONFIG") : "{\"ctx-size\":256,\"n-predict\":12,\"seed\":1}";
  uint32_t g, ctx;
  int32_t rc;

  if (!strcmp(mode, "notfound")) {
    printf("load_by_name %d\n", load_by_name(alias, (uint32_t)strlen(alias), &g));
    return 0;
  }
  if (!strcmp(mode, "config")) { /* configuration errors: 2 bad JSON, 1 wrong type */
    rc = load_by_name_with_config(alias, (uint32_t)strlen(alias), cfg, (uint32_t)strlen(cfg), &g);
    printf("config %d\n", rc);
    return 0;
  }
  if (!strcmp(mode, "unload")) {
    for (int i = 0; i < 3; i++) {
      g = load(cfg);
      init_execution_context(g, &ctx);
      input(ctx, 0, prompt);
      rc = compute(ctx);
      printf("round %d graph %u ctx %u compute %d\n", i, g, ctx, rc);
      printf("unload %d\n", unload(g));
    }
    printf("unload again %d\n", unload(g));
    return 0;
  }
  g = load(cfg);
  printf("init %d\n", init_execution_context(g, &ctx));
  if (!strcmp(mode, "hostile")) {
    uint32_t far = 0xFFFFFFF0u;
    printf("bad name %d\n", load_by_name((const char *)far, 32, &g));
    printf("bad graph_out %d\n", load_by_name(alias, (uint32_t)strlen(alias), (uint32_t *)far));
    printf("bad graph %d\n", init_execution_context(12345, &ctx));
    printf("bad ctx %d\n", compute(777));
    printf("bad tensor %d\n", set_input(ctx, 0, (const void *)far));
    tensor t = {NULL, 0, 3, (const char *)far, 100};
    printf("bad data %d\n", set_input(ctx, 0, &t));
    t = (tensor){NULL, 0, 9, prompt, 3};
    printf("bad type %d\n", set_input(ctx, 0, &t));
    printf("no input %d\n", compute(ctx));
    printf("bad buf %d\n", get_output(ctx, 0, (char *)far, 64, (uint32_t *)out));
    printf("bad size %d\n", get_output(ctx, 0, out, 64, (uint32_t *)far));
    printf("bad unload %d\n", unload(99));
    return 0;
  }
  rc = input(ctx, 0, prompt);
  printf("set_input %d\n", rc);
  show(ctx, 1, "meta");
  if (!strcmp(mode, "twice")) {
    printf("set_input %d\n", input(ctx, 0, prompt));
    show(ctx, 1, "meta");
    printf("metadata input %d\n", input(ctx, 1, "{\"n-predict\": 3}"));
    printf("metadata bad %d\n", input(ctx, 1, "{not json"));
    printf("metadata type %d\n", input(ctx, 1, "{\"n-predict\": \"3\"}"));
    printf("compute %d\n", compute(ctx));
    show(ctx, 1, "meta");
    return 0;
  }
  if (!strcmp(mode, "stream")) {
    printf("stream [");
    for (;;) {
      rc = compute_single(ctx);
      if (rc) break;
      uint32_t n = 0;
      get_output_single(ctx, 0, out, sizeof out - 1, &n);
      fwrite(out, 1, n, stdout);
    }
    printf("] end %d\n", rc);
    show(ctx, 1, "meta");
    show(ctx, 0, "output");
    printf("fini %d\n", fini_single(ctx));
    show(ctx, 1, "meta");
    return 0;
  }
  if (!strcmp(mode, "interactive")) {
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
      line[strcspn(line, "\n")] = 0;
      if (!line[0]) continue;
      printf("set_input %d\n", input(ctx, 0, line));
      printf("compute %d\n", compute(ctx));
      show(ctx, 0, "answer");
    }
    return 0;
  }
  /* oneshot, overflow, embed */
  rc = compute(ctx);
  printf("compute %d\n", rc);
  show(ctx, 0, "output");
  show(ctx, 1, "meta");
  uint32_t n = 0;
  printf("small buffer %d", get_output(ctx, 0, out, 3, &n));
  printf(" size %u\n", n);
  return 0;
}
