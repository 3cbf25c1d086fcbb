/*
 * sh.h — runs a shell command for the command-line suites, capturing its
 * stdout and stderr into `out`.
 */
#ifndef DW_TEST_SH_H
#define DW_TEST_SH_H

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

static char out[65536];

/* Runs a shell command (stdout and stderr captured into `out`); returns the
 * exit status, or 1000 + signal if it died from one. */
static int sh(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  char full[8300];
  snprintf(full, sizeof full, "( %s ) 2>&1", cmd);
  FILE *p = popen(full, "r");
  cr_assert(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

#endif
