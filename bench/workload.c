/*
 * workload.c — a CPU-bound guest workload built from one source as native
 * code and as wasm32-wasi: for each round, softmax over 128k logits, top-p
 * (nucleus) selection by sorting probabilities (our own quicksort), and a sample from a seeded
 * xorshift RNG. Prints its own elapsed time (excluding start-up) so native,
 * Driftwood and Node.js are compared on the work alone.
 *
 * Usage: workload [ROUNDS]   (default 20)
 * Output: "workload rounds=R ms=T checksum=X"
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define VOCAB (128 * 1024)

typedef struct {
  float p;
  int32_t id;
} prob;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 32);
}

/* Our own sort (the libcs' qsort differ: glibc merges, musl smoothsorts),
 * so native and wasm run the same algorithm: quicksort, insertion below 16. */
static int before(const prob *a, const prob *b) { return a->p > b->p || (a->p == b->p && a->id < b->id); }

static void sort_desc(prob *v, int n) {
  while (n > 16) {
    prob pivot = v[n / 2];
    int i = 0, j = n - 1;
    while (i <= j) {
      while (before(&v[i], &pivot)) i++;
      while (before(&pivot, &v[j])) j--;
      if (i <= j) {
        prob t = v[i];
        v[i++] = v[j];
        v[j--] = t;
      }
    }
    if (j + 1 < n - i) { /* recurse into the smaller part */
      sort_desc(v, j + 1);
      v += i;
      n -= i;
    } else {
      sort_desc(v + i, n - i);
      n = j + 1;
    }
  }
  for (int i = 1; i < n; i++) {
    prob x = v[i];
    int j = i - 1;
    while (j >= 0 && before(&x, &v[j])) {
      v[j + 1] = v[j];
      j--;
    }
    v[j + 1] = x;
  }
}

static float logits[VOCAB];
static prob probs[VOCAB];

static int32_t sample_top_p(float top_p) {
  float mx = logits[0];
  for (int i = 1; i < VOCAB; i++) mx = logits[i] > mx ? logits[i] : mx;
  double sum = 0;
  for (int i = 0; i < VOCAB; i++) {
    float e = expf(logits[i] - mx);
    probs[i] = (prob){e, i};
    sum += e;
  }
  for (int i = 0; i < VOCAB; i++) probs[i].p = (float)(probs[i].p / sum);
  sort_desc(probs, VOCAB);
  double cum = 0;
  int keep = 0;
  while (keep < VOCAB && cum < top_p) cum += probs[keep++].p;
  double r = (next() / 4294967296.0) * cum, acc = 0;
  for (int i = 0; i < keep; i++) {
    acc += probs[i].p;
    if (acc >= r) return probs[i].id;
  }
  return probs[keep - 1].id;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 20;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t checksum = 0;
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < VOCAB; i++) logits[i] = (float)(next() % 20000) / 1000.0f - 10.0f;
    checksum = checksum * 31 + (uint64_t)sample_top_p(0.9f);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
  printf("workload rounds=%d ms=%.1f checksum=%llu\n", rounds, ms, (unsigned long long)checksum);
  return 0;
}
