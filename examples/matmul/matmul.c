/*
 * matmul.c — example guest: fills A and B with small integers in its own
 * linear memory, asks the host to multiply them with driftwood.matmul_f32,
 * and checks every element of C against its own scalar loop.
 *
 * Usage: driftwood run matmul.wasm [M N K]   (default 128 128 128)
 * Last line: "matmul MxNxK: E errors of C elements, zero_copy=Z"
 * Exit status 0 only when there are no errors and the host computed in place.
 */
#include <driftwood_guest.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  uint32_t m = 128, n = 128, k = 128;
  if (argc == 4) {
    m = (uint32_t)strtoul(argv[1], NULL, 10);
    n = (uint32_t)strtoul(argv[2], NULL, 10);
    k = (uint32_t)strtoul(argv[3], NULL, 10);
  } else if (argc != 1) {
    fprintf(stderr, "usage: matmul.wasm [M N K]\n");
    return 2;
  }
  float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n), *c = malloc(sizeof(float) * m * n);
  if (!a || !b || !c) {
    fprintf(stderr, "matmul: out of memory for %ux%ux%u\n", m, n, k);
    return 1;
  }
  /* Values in [-3, 3]: every product and partial sum is an exact f32 integer
   * while k * 9 < 2^24. */
  for (uint32_t i = 0; i < m * k; i++) a[i] = (float)((int)((i * 5u + 3u) % 7u) - 3);
  for (uint32_t i = 0; i < k * n; i++) b[i] = (float)((int)((i * 13u + 5u) % 7u) - 3);
  for (uint32_t i = 0; i < m * n; i++) c[i] = -12345.0f;

  int32_t st = dwg_matmul_f32(a, b, c, m, n, k);
  if (st != DWG_OK) {
    fprintf(stderr, "matmul: host returned status %d\n", st);
    return 1;
  }
  dwg_op_info info = {0};
  dwg_last_op_info(&info);

  uint64_t errors = 0;
  for (uint32_t i = 0; i < m; i++)
    for (uint32_t j = 0; j < n; j++) {
      float s = 0;
      for (uint32_t p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      if (s != c[i * n + j]) errors++;
    }
  int zero_copy = info.zero_copy == 1 && info.staged_bytes == 0;
  printf("matmul %ux%ux%u: %llu errors of %llu elements, zero_copy=%d\n", m, n, k,
         (unsigned long long)errors, (unsigned long long)m * n, zero_copy);
  return errors == 0 && zero_copy ? 0 : 1;
}
