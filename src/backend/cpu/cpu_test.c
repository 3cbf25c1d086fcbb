/*
 * cpu_test.c — the CPU backend's matmul against an independent double-
 * precision reference on random data, over shapes that exercise every edge
 * of the blocking (odd sizes, fewer rows than threads, k past one block).
 * Tolerance: |c - ref| <= 1e-5 * sum_p |a_ip * b_pj| (f32 accumulation).
 */
#include "backend/backend.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

static float frand(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void check(dw_backend *be, uint32_t m, uint32_t n, uint32_t k) {
  float *a = malloc(sizeof(float) * m * k + 4), *b = malloc(sizeof(float) * k * n + 4);
  float *c = malloc(sizeof(float) * m * n + 4);
  uint32_t s = m * 131 + n * 17 + k;
  for (size_t i = 0; i < (size_t)m * k; i++) a[i] = frand(&s);
  for (size_t i = 0; i < (size_t)k * n; i++) b[i] = frand(&s);
  for (size_t i = 0; i < (size_t)m * n; i++) c[i] = NAN;
  cr_assert_eq(dw_backend_matmul_f32(be, a, b, c, m, n, k, NULL), DW_OK);
  for (uint32_t i = 0; i < m; i++)
    for (uint32_t j = 0; j < n; j++) {
      double ref = 0, mag = 0;
      for (uint32_t p = 0; p < k; p++) {
        ref += (double)a[i * k + p] * b[p * n + j];
        mag += fabs((double)a[i * k + p] * b[p * n + j]);
      }
      double got = c[(size_t)i * n + j];
      cr_assert(fabs(got - ref) <= 1e-5 * mag + 1e-30, "%ux%ux%u C[%u,%u] = %g, reference %g", m, n, k, i, j, got,
                ref);
    }
  free(a);
  free(b);
  free(c);
}

Test(cpu, matmul_matches_double_reference) {
  int threads[] = {1, 3};
  for (int t = 0; t < 2; t++) {
    dw_backend *be;
    cr_assert_eq(dw_backend_create("cpu", threads[t], NULL, &be), DW_OK);
    uint32_t shapes[][3] = {{1, 1, 1}, {2, 3, 4}, {5, 7, 3}, {4, 300, 129}, {130, 257, 131},
                            {64, 64, 64}, {3, 513, 17}, {128, 128, 128}, {7, 1, 300}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check(be, shapes[i][0], shapes[i][1], shapes[i][2]);
    dw_backend_destroy(be);
  }
}

Test(cpu, k_zero_writes_zeros) {
  dw_backend *be;
  cr_assert_eq(dw_backend_create("cpu", 2, NULL, &be), DW_OK);
  float c[6] = {1, 2, 3, 4, 5, 6};
  cr_assert_eq(dw_backend_matmul_f32(be, NULL, NULL, c, 2, 3, 0, NULL), DW_OK);
  for (int i = 0; i < 6; i++) cr_assert_eq(c[i], 0.0f);
  dw_backend_destroy(be);
}

Test(cpu, unknown_backend_is_an_error) {
  dw_backend *be;
  cr_assert_eq(dw_backend_create("tpu", 1, NULL, &be), DW_ERR_INVALID_ARG);
  cr_assert(strstr(dw_last_error(), "tpu"));
}
