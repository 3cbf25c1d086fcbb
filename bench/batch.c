/*
 * batch.c — aggregate decode speed of many sessions decoding at once, one
 * thread each, through the public C API: the engine batches their
 * concurrent decode calls into shared forward steps (DRIFTWOOD_BATCH_MAX=1
 * turns that off, for the side-by-side run in bench/batch.sh).
 *
 *   bench_batch MODEL.gguf STREAMS [N_PROMPT] [N_DECODE] [THREADS] [BACKEND]
 *
 * Each stream prefills its own prompt of N_PROMPT tokens, then decodes
 * N_DECODE tokens greedily, one decode call per token. Prints the
 * aggregate prefill and decode tok/s (decode: all streams' tokens over the
 * time from the start of decoding to the last stream's end).
 */
#define _POSIX_C_SOURCE 200809L
#include "driftwood.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct stream {
  dw_session *s;
  int id, n_prompt, n_decode;
  int32_t n_vocab;
  pthread_barrier_t *start, *decode;
  int rc;
  char err[256];
} stream;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *run(void *p) {
  stream *S = p;
  float *logits = malloc((size_t)S->n_vocab * sizeof(float));
  int32_t *prompt = malloc((size_t)S->n_prompt * sizeof(int32_t));
  for (int i = 0; i < S->n_prompt; i++) prompt[i] = (int32_t)(((i + 1) * 7919 + S->id * 104729) % (S->n_vocab - 300) + 259);
  pthread_barrier_wait(S->start);
  S->rc = dw_session_decode(S->s, prompt, S->n_prompt, logits);
  pthread_barrier_wait(S->decode);
  for (int i = 0; i < S->n_decode && !S->rc; i++) {
    int32_t best = 0;
    for (int32_t v = 1; v < S->n_vocab; v++)
      if (logits[v] > logits[best]) best = v;
    S->rc = dw_session_decode(S->s, &best, 1, logits);
  }
  if (S->rc) snprintf(S->err, sizeof S->err, "%s", dw_last_error());
  free(logits);
  free(prompt);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_batch MODEL.gguf STREAMS [N_PROMPT] [N_DECODE] [THREADS] [BACKEND]\n");
    return 2;
  }
  int n = atoi(argv[2]), np = argc > 3 ? atoi(argv[3]) : 128, nd = argc > 4 ? atoi(argv[4]) : 64;
  if (n < 1 || np < 1 || nd < 1) {
    fprintf(stderr, "bench_batch: STREAMS, N_PROMPT and N_DECODE must be positive\n");
    return 2;
  }
  dw_runtime_config rc = {.backend = argc > 6 ? argv[6] : "cpu", .threads = argc > 5 ? atoi(argv[5]) : 0};
  dw_runtime *rt;
  dw_model *m;
  dw_model_info info;
  if (dw_runtime_create(&rc, &rt) || dw_model_open(argv[1], 0, &m)) {
    fprintf(stderr, "bench_batch: %s\n", dw_last_error());
    return 1;
  }
  dw_model_get_info(m, &info);
  stream *S = calloc((size_t)n, sizeof *S);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  pthread_barrier_t start, decode;
  pthread_barrier_init(&start, NULL, (unsigned)n + 1);
  pthread_barrier_init(&decode, NULL, (unsigned)n + 1);
  for (int i = 0; i < n; i++) {
    S[i] = (stream){.id = i, .n_prompt = np, .n_decode = nd, .n_vocab = (int32_t)info.n_vocab, .start = &start,
                    .decode = &decode};
    if (dw_session_create(rt, m, np + nd + 1, &S[i].s)) {
      fprintf(stderr, "bench_batch: %s\n", dw_last_error());
      return 1;
    }
  }
  for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, run, &S[i]);
  pthread_barrier_wait(&start);
  double t0 = now();
  pthread_barrier_wait(&decode);
  double t1 = now();
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  double t2 = now();
  int code = 0;
  for (int i = 0; i < n; i++)
    if (S[i].rc) fprintf(stderr, "bench_batch: stream %d: %s\n", i, S[i].err), code = 1;
  if (!code)
    printf("batch: %d streams, prefill %d tokens each %.1f tok/s, decode %d tokens each %.1f tok/s (aggregate)\n", n,
           np, (double)n * np / (t1 - t0), nd, (double)n * nd / (t2 - t1));
  for (int i = 0; i < n; i++) dw_session_destroy(S[i].s);
  dw_model_close(m);
  dw_runtime_destroy(rt);
  free(S);
  free(th);
  return code;
}
