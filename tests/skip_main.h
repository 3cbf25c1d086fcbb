/*
 * skip_main.h — a Criterion main for suites that need something this
 * machine may lack (a CUDA device): without it the whole suite reports
 * as skipped (exit 77, CTest's SKIP_RETURN_CODE) rather than passed.
 */
#ifndef DW_TEST_SKIP_MAIN_H
#define DW_TEST_SKIP_MAIN_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>

/* available() says whether the suite can run here; why is printed if not. */
static int dw_test_main(int argc, char **argv, const char *suite, bool (*available)(const char **why)) {
  const char *why = "";
  if (!available(&why)) {
    printf("%s: skipped: %s\n", suite, why);
    return 77;
  }
  struct criterion_test_set *tests = criterion_initialize();
  int result = 0;
  if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
  criterion_finalize(tests);
  return result;
}

#endif
