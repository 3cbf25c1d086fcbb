/*
 * wasi.h — wasi_snapshot_preview1 host functions: arguments, environment,
 * stdio, clocks, random, and a capability-scoped filesystem.
 *
 * Invariants:
 *  1. The guest reaches only the directories granted as preopens; every path
 *     is resolved beneath its directory fd (openat2 RESOLVE_BENEATH), so
 *     "..", absolute paths and symlinks cannot leave it.
 *  2. Every guest pointer and length is checked (dw_mem_view) before use;
 *     a bad one is ERRNO_FAULT, never a host fault.
 *  3. Host fds given as stdio are borrowed (never closed); fds the guest
 *     opens are owned and closed with the context.
 *
 * Threads: a context belongs to one instance, used by one thread at a time.
 */
#ifndef DW_WASI_H
#define DW_WASI_H

#include "wasm/wasm.h"

typedef struct dw_wasi_config {
  int argc;
  const char *const *argv;
  int n_env;
  const char *const *env;       /* "K=V" */
  int n_dirs;
  const char *const *dir_host;  /* host directory paths */
  const char *const *dir_guest; /* names the guest sees */
  int stdin_fd, stdout_fd, stderr_fd;
  int max_fds;                  /* descriptors the guest may hold open at once
                                   (stdio and grants included); 0 = 1024. The
                                   table starts small and grows on demand. */
} dw_wasi_config;

typedef struct dw_wasi dw_wasi;

DW_HIDDEN dw_status dw_wasi_create(const dw_wasi_config *cfg, dw_wasi **out);
DW_HIDDEN void dw_wasi_destroy(dw_wasi *w);

/* The wasi_snapshot_preview1 host module (ends with {0}). */
DW_HIDDEN extern const dw_hostfn dw_wasi_functions[];

#endif
