/*
 * base.h — status and error messages, small file helpers, atomic writes,
 * and the settings source the layers below the API read tunables from.
 *
 * Owns the thread-local error slot read by dw_last_error(). Every function
 * here is thread-safe. libc only.
 */
#ifndef DW_BASE_H
#define DW_BASE_H

#include "driftwood.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DW_HIDDEN __attribute__((visibility("hidden")))
#define DW_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Every layer allocates through these (the embedder's dw_allocator, else
 * libc's); dw_calloc checks n * size for overflow. */
DW_HIDDEN void *dw_malloc(size_t n);
DW_HIDDEN void *dw_calloc(size_t n, size_t size);
DW_HIDDEN void *dw_realloc(void *p, size_t n);
DW_HIDDEN void dw_free(void *p);
DW_HIDDEN char *dw_strdup(const char *s);

/* Sets the calling thread's error message and returns st, so failures read
 * `return dw_error_set(DW_ERR_IO, "open %s: %s", path, strerror(errno));`. */
DW_HIDDEN dw_status dw_error_set(dw_status st, const char *fmt, ...) DW_PRINTF(2, 3);
/* Prefixes the current message: "context: old message". Returns st. */
DW_HIDDEN dw_status dw_error_wrap(dw_status st, const char *fmt, ...) DW_PRINTF(2, 3);

/* Reads a whole file into a malloc'd buffer (owned by the caller). */
DW_HIDDEN dw_status dw_file_read(const char *path, uint8_t **out, size_t *out_bytes);
/* Maps a whole regular file read-only and private (populated when asked).
 * *data is NULL for an empty file, else release it with munmap(*data, *n).
 * With fd non-NULL the descriptor stays open for the caller to close (to
 * map parts of the file again); otherwise it is closed. */
DW_HIDDEN dw_status dw_file_map(const char *path, bool populate, const uint8_t **data, size_t *n, int *fd);
/* Writes data to path atomically: temp file in the same directory, fsync,
 * rename over path, fsync the directory. On failure path is untouched. */
DW_HIDDEN dw_status dw_file_write_atomic(const char *path, const void *data, size_t n_bytes);

/* The same written piece by piece: dw_afile_open creates a temporary file
 * beside path; writes append (pwrite may patch what was written); commit
 * fsyncs, renames it over path and fsyncs the directory; abort, or a failed
 * commit, removes it and leaves path as it was. A failed write sticks:
 * later writes and the commit return it. */
typedef struct dw_afile {
  int fd;
  uint64_t size;            /* bytes written */
  dw_status st;             /* the first failure */
  char path[4096], tmp[4096];
} dw_afile;
DW_HIDDEN dw_status dw_afile_open(dw_afile *f, const char *path);
DW_HIDDEN dw_status dw_afile_write(dw_afile *f, const void *data, size_t n_bytes);
DW_HIDDEN dw_status dw_afile_pwrite(dw_afile *f, uint64_t off, const void *data, size_t n_bytes);
DW_HIDDEN dw_status dw_afile_commit(dw_afile *f);
DW_HIDDEN void dw_afile_abort(dw_afile *f);
/* Test hook: step N (1..6) of every later atomic write fails as if the disk
 * had (1 create, 2 write, 3 fsync, 4 close, 5 rename, 6 fsync of the
 * directory), so a test sees what a crash there leaves behind; 0 = none.
 * Process-wide; the API sets it from DRIFTWOOD_FAULT_WRITE_STEP. */
DW_HIDDEN void dw_file_fault_step(int step);

/* What the API gives the layers below it: where they read tunables and
 * test hooks by name (DRIFTWOOD_CC, DRIFTWOOD_CUDA_*, …: never getenv) and
 * where their messages go (never straight to stderr), so each runtime of
 * an embedder may have its own. The API's are the embedder's
 * (dw_runtime_config.setting, .log) or the environment and stderr. */
typedef struct dw_settings {
  const char *(*get)(void *ctx, const char *name); /* the value, or NULL if unset */
  void *ctx;
  void (*log)(void *log_ctx, dw_log_level level, const char *line); /* NULL: stderr */
  void *log_ctx;
} dw_settings;
/* s's value for name; NULL when s or the value is missing. */
DW_HIDDEN const char *dw_setting(const dw_settings *s, const char *name);
/* One message line (formatted, no newline) to s's log, or to stderr when s
 * or its log is NULL. */
DW_HIDDEN void dw_log(const dw_settings *s, dw_log_level level, const char *fmt, ...) DW_PRINTF(3, 4);
/* mkdir -p with mode 0755. */
DW_HIDDEN dw_status dw_mkdirs(const char *path);

/* Hex encoding of n bytes into out (2n+1 chars). */
DW_HIDDEN void dw_hex(const uint8_t *in, size_t n, char *out);

#endif
