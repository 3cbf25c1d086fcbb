/*
 * mm_actor.c — an actor for the CUDA tests: "fill" writes two 64×64
 * integer-valued matrices into its memory, "mm" multiplies them with
 * driftwood.matmul_f32 and replies with a checksum of C, computed by the
 * guest from its own memory. A thaw must leave the backend seeing the
 * restored bytes, so "mm" after a thaw must reply as it did before.
 */
#include <driftwood_guest.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 64 };
static float a[N * N], b[N * N], c[N * N];

__attribute__((export_name("dw_alloc"))) void *dw_alloc(uint32_t len) { return malloc(len ? len : 1); }

__attribute__((export_name("dw_on_message"))) int32_t dw_on_message(char *msg, uint32_t len) {
  char out[128];
  int k = 0;
  if (len == 4 && !memcmp(msg, "fill", 4)) {
    for (int i = 0; i < N * N; i++) a[i] = (float)(i % 7 - 3), b[i] = (float)(i % 5 - 2);
    k = snprintf(out, sizeof out, "filled\n");
  } else if (len == 2 && !memcmp(msg, "mm", 2)) {
    memset(c, 0, sizeof c);
    int32_t st = dwg_matmul_f32(a, b, c, N, N, N);
    double sum = 0;
    for (int i = 0; i < N * N; i++) sum += (double)c[i] * (i % 11 + 1);
    k = snprintf(out, sizeof out, "mm %d %.1f\n", st, sum);
  }
  free(msg);
  if (k) dwg_emit(out, (uint32_t)k);
  return k ? 0 : DWG_ERR_INVALID_ARG;
}
