/*
 * abi_test.c — hostile guests against every `driftwood` import: out-of-bounds
 * pointers, ptr + len wrapping 32 bits, m*n*k overflowing, zero sizes,
 * misaligned and overlapping operands. Each gets a status code (never a trap
 * or a host crash) and leaves every byte of guest memory as it was.
 */
#include "harness.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static th T;
static int pipefd[2];
static void setup(void) {
  cr_assert_eq(pipe2(pipefd, O_NONBLOCK), 0);
  th_open(&T, GUEST("traps"), pipefd[1]);
}
static void teardown(void) {
  th_close(&T);
  close(pipefd[0]);
  close(pipefd[1]);
}

TestSuite(hostile, .init = setup, .fini = teardown);

#define PAGE 65536u

/* Calls `mm` and checks it returns status `want` without trapping and
 * without changing guest memory. */
static void mm_refused(uint32_t a, uint32_t b, uint32_t c, uint32_t m, uint32_t n, uint32_t k, dw_status want) {
  uint8_t *before = malloc(T.mem->size);
  for (uint64_t i = 0; i < T.mem->size; i++) T.mem->base[i] = (uint8_t)(i * 31 + 7);
  memcpy(before, T.mem->base, T.mem->size);
  dw_call_result r;
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, a, b, c, m, n, k), DW_OK, "trapped: %s", dw_last_error());
  cr_assert_eq(r.outcome, DW_RAN);
  cr_assert_eq((dw_status)r.value, want, "mm(%u,%u,%u,%u,%u,%u) -> %d, want %d", a, b, c, m, n, k, (int)r.value,
               want);
  cr_assert(!memcmp(before, T.mem->base, T.mem->size), "guest memory changed");
  free(before);
}

Test(hostile, matmul_valid_baseline) {
  float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8}, want[4] = {19, 22, 43, 50};
  memcpy(T.mem->base + 0, A, 16);
  memcpy(T.mem->base + 16, B, 16);
  dw_call_result r;
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, 0, 16, 32, 2, 2, 2), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  cr_assert(!memcmp(T.mem->base + 32, want, 16));
  cr_assert_eq(CALL(&T, "info", "i:i", &r, 64), DW_OK);
  dwg_op_info info;
  memcpy(&info, T.mem->base + 64, sizeof info);
  cr_assert_eq(info.zero_copy, 1);
  cr_assert_eq(info.staged_bytes, 0);
}

Test(hostile, matmul_out_of_bounds) {
  mm_refused(PAGE - 8, 0, 64, 2, 2, 2, DW_ERR_OUT_OF_BOUNDS);   /* A runs past the end */
  mm_refused(0, PAGE, 64, 1, 1, 1, DW_ERR_OUT_OF_BOUNDS);       /* B starts at the end */
  mm_refused(0, 16, PAGE - 4, 2, 2, 2, DW_ERR_OUT_OF_BOUNDS);   /* C runs past the end */
  mm_refused(0, 16, 0x7ffffff0, 2, 2, 2, DW_ERR_OUT_OF_BOUNDS); /* C in the guard */
}

Test(hostile, matmul_wrapping_pointers) {
  /* ptr + len wraps in 32 bits (0xfffffff0 + 64 = 0x30): must not pass. */
  mm_refused(0xfffffff0u, 0, 1024, 4, 4, 4, DW_ERR_OUT_OF_BOUNDS);
  mm_refused(0, 0xfffffffcu, 1024, 1, 2, 1, DW_ERR_OUT_OF_BOUNDS);
  mm_refused(0, 64, 0xffffffc0u, 4, 4, 4, DW_ERR_OUT_OF_BOUNDS);
}

Test(hostile, matmul_size_overflow) {
  mm_refused(0, 64, 128, 0xffffffffu, 0xffffffffu, 0xffffffffu, DW_ERR_OVERFLOW); /* m*k*4 > 2^64 */
  mm_refused(0, 64, 128, 0x10000u, 1, 0x10000u, DW_ERR_OUT_OF_BOUNDS);            /* 16 GiB of A */
  mm_refused(0, 64, 128, 0x80000000u, 0x80000000u, 2, DW_ERR_OUT_OF_BOUNDS);
}

Test(hostile, matmul_misaligned_and_overlapping) {
  mm_refused(1, 64, 128, 2, 2, 2, DW_ERR_MISALIGNED);
  mm_refused(0, 66, 128, 2, 2, 2, DW_ERR_MISALIGNED);
  mm_refused(0, 64, 130, 2, 2, 2, DW_ERR_MISALIGNED);
  mm_refused(0, 64, 8, 2, 2, 2, DW_ERR_INVALID_ARG); /* C overlaps A */
  mm_refused(0, 64, 64, 2, 2, 2, DW_ERR_INVALID_ARG); /* C is B */
}

Test(hostile, matmul_zero_sizes) {
  mm_refused(0, 64, 128, 0, 5, 5, DW_OK);  /* m == 0: nothing to do */
  mm_refused(0, 64, 128, 5, 0, 5, DW_OK);  /* n == 0 */
  mm_refused(PAGE, PAGE, PAGE, 0, 0, 0, DW_OK); /* empty ranges at the end are in bounds */
  /* k == 0: C = 0 */
  dw_call_result r;
  memset(T.mem->base + 128, 0xff, 16);
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, 0, 64, 128, 2, 2, 0), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  for (int i = 0; i < 16; i++) cr_assert_eq(T.mem->base[128 + i], 0);
}

Test(hostile, emit_checks_bounds) {
  dw_call_result r;
  memcpy(T.mem->base + 100, "hello", 5);
  cr_assert_eq(CALL(&T, "emit", "i:ii", &r, 100, 5), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  char buf[16] = {0};
  cr_assert_eq(read(pipefd[0], buf, sizeof buf), 5);
  cr_assert_str_eq(buf, "hello");
  cr_assert_eq(CALL(&T, "emit", "i:ii", &r, PAGE - 2, 5), DW_OK);
  cr_assert_eq(r.value, DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(CALL(&T, "emit", "i:ii", &r, 0xfffffff0u, 0x20), DW_OK); /* wraps */
  cr_assert_eq(r.value, DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(CALL(&T, "emit", "i:ii", &r, PAGE, 0), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  cr_assert_eq(read(pipefd[0], buf, sizeof buf), -1, "nothing was written by refused calls");
}

Test(hostile, last_op_info_checks_bounds_and_alignment) {
  dw_call_result r;
  cr_assert_eq(CALL(&T, "info", "i:i", &r, PAGE - 8), DW_OK);
  cr_assert_eq(r.value, DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(CALL(&T, "info", "i:i", &r, 0xfffffffcu), DW_OK);
  cr_assert_eq(r.value, DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(CALL(&T, "info", "i:i", &r, 2), DW_OK);
  cr_assert_eq(r.value, DW_ERR_MISALIGNED);
  cr_assert_eq(CALL0(&T, "version", "i:", &r), DW_OK);
  cr_assert_eq(r.value, 1);
}

Test(hostile, after_growth_new_pages_are_usable) {
  dw_call_result r;
  cr_assert_eq(CALL(&T, "grow", "i:i", &r, 1), DW_OK);
  /* Operands straddling the seam between the first and the grown range. */
  float *a = (float *)(T.mem->base + PAGE - 8);
  a[0] = 1, a[1] = 2, a[2] = 3, a[3] = 4;
  float *b = (float *)(T.mem->base + PAGE + 64);
  b[0] = 1, b[1] = 0, b[2] = 0, b[3] = 1;
  cr_assert_eq(CALL(&T, "mm", "i:iiiiii", &r, PAGE - 8, PAGE + 64, PAGE + 128, 2, 2, 2), DW_OK);
  cr_assert_eq(r.value, DW_OK);
  float *c = (float *)(T.mem->base + PAGE + 128);
  cr_assert(c[0] == 1 && c[1] == 2 && c[2] == 3 && c[3] == 4);
}
