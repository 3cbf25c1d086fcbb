/*
 * base.c — the thread-local error slot, file helpers and atomic writes.
 *
 * Invariants: dw_last_error() never returns NULL; dw_file_write_atomic never
 * leaves a partial file at the target path (temp + fsync + rename + fsync of
 * the directory, the temp unlinked on any failure).
 */
#define _GNU_SOURCE
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static _Thread_local char err_msg[1024];

const char *dw_last_error(void) { return err_msg[0] ? err_msg : "no error"; }

const char *dw_status_str(dw_status st) {
  switch (st) {
  case DW_OK: return "ok";
  case DW_ERR_INVALID_ARG: return "invalid argument";
  case DW_ERR_OUT_OF_BOUNDS: return "out of bounds";
  case DW_ERR_NOMEM: return "out of memory";
  case DW_ERR_IO: return "i/o error";
  case DW_ERR_BAD_MODULE: return "bad module";
  case DW_ERR_UNKNOWN_IMPORT: return "unknown import";
  case DW_ERR_COMPILE: return "compile error";
  case DW_ERR_TRAP: return "trap";
  case DW_ERR_UNSUPPORTED: return "unsupported";
  case DW_ERR_LIMIT: return "limit reached";
  case DW_ERR_BACKEND: return "backend error";
  case DW_ERR_NOT_FOUND: return "not found";
  case DW_ERR_OVERFLOW: return "size overflow";
  case DW_ERR_MISALIGNED: return "misaligned";
  case DW_ERR_BAD_MODEL: return "bad model file";
  case DW_ERR_BAD_SNAPSHOT: return "bad snapshot";
  case DW_ERR_CANCELLED: return "cancelled";
  }
  return "unknown status";
}

dw_status dw_error_set(dw_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  return st;
}

dw_status dw_error_wrap(dw_status st, const char *fmt, ...) {
  char old[sizeof err_msg], pre[512];
  memcpy(old, err_msg, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  snprintf(err_msg, sizeof err_msg, "%.400s: %.600s", pre, old);
  return st;
}

/* Opens path, which must be a regular file; *n gets its size. */
static dw_status open_regular(const char *path, int *fd, size_t *n) {
  *fd = open(path, O_RDONLY | O_CLOEXEC);
  if (*fd < 0) return dw_error_set(DW_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(*fd);
    *fd = -1;
    return dw_error_set(DW_ERR_IO, "%s is not a regular file", path);
  }
  *n = (size_t)sb.st_size;
  return DW_OK;
}

dw_status dw_file_read(const char *path, uint8_t **out, size_t *out_bytes) {
  *out = NULL;
  *out_bytes = 0;
  int fd;
  size_t n;
  dw_status st = open_regular(path, &fd, &n);
  if (st) return st;
  uint8_t *buf = dw_malloc(n);
  if (!buf) {
    close(fd);
    return dw_error_set(DW_ERR_NOMEM, "cannot allocate %zu bytes for %s", n, path);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      dw_free(buf);
      close(fd);
      return dw_error_set(DW_ERR_IO, "cannot read %s: %s", path, r ? strerror(errno) : "short read");
    }
    got += (size_t)r;
  }
  close(fd);
  *out = buf;
  *out_bytes = n;
  return DW_OK;
}

dw_status dw_file_map(const char *path, bool populate, const uint8_t **data, size_t *n, int *fd_out) {
  *data = NULL;
  *n = 0;
  if (fd_out) *fd_out = -1;
  int fd;
  size_t len;
  dw_status st = open_regular(path, &fd, &len);
  if (st) return st;
  void *p = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0) : NULL;
  if (p == MAP_FAILED) {
    st = dw_error_set(DW_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    close(fd);
    return st;
  }
  if (fd_out) *fd_out = fd;
  else close(fd);
  *data = p;
  *n = len;
  return DW_OK;
}

static dw_status write_all(int fd, const void *data, size_t n, const char *what) {
  const uint8_t *p = data;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return dw_error_set(DW_ERR_IO, "write %s: %s", what, strerror(errno));
    p += w;
    n -= (size_t)w;
  }
  return DW_OK;
}

/* ---- the allocator ----------------------------------------------------------- */

static dw_allocator alloc_hook; /* all NULL: libc (set before anything exists: not locked) */

void dw_set_allocator(const dw_allocator *a) { alloc_hook = a ? *a : (dw_allocator){0}; }

void *dw_malloc(size_t n) {
  if (!n) n = 1; /* a unique pointer, as the callers expect of malloc */
  return alloc_hook.malloc ? alloc_hook.malloc(alloc_hook.ctx, n) : malloc(n);
}

void *dw_calloc(size_t n, size_t size) {
  if (size && n > SIZE_MAX / size) return NULL;
  size_t total = n * size;
  if (!total) total = 1;
  void *p = dw_malloc(total);
  if (p) memset(p, 0, total);
  return p;
}

void *dw_realloc(void *p, size_t n) {
  if (!n) n = 1;
  return alloc_hook.realloc ? alloc_hook.realloc(alloc_hook.ctx, p, n) : realloc(p, n);
}

void dw_free(void *p) {
  if (!p) return;
  if (alloc_hook.free) alloc_hook.free(alloc_hook.ctx, p);
  else free(p);
}

void dw_free_buffer(void *p) { dw_free(p); }

char *dw_strdup(const char *s) {
  size_t len = strlen(s);
  char *d = dw_malloc(len + 1);
  if (d) memcpy(d, s, len + 1);
  return d;
}

static _Atomic int fault_step; /* dw_file_fault_step */

void dw_file_fault_step(int step) { atomic_store(&fault_step, step); }

static bool fault(int step) { return atomic_load_explicit(&fault_step, memory_order_relaxed) == step; }

const char *dw_setting(const dw_settings *s, const char *name) { return s && s->get ? s->get(s->ctx, name) : NULL; }

void dw_log(const dw_settings *s, dw_log_level level, const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (s && s->log) s->log(s->log_ctx, level, line);
  else fprintf(stderr, "%s\n", line);
}

dw_status dw_afile_open(dw_afile *f, const char *path) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path ||
      snprintf(f->tmp, sizeof f->tmp, "%s.tmp-%ld-XXXXXX", path, (long)getpid()) >= (int)sizeof f->tmp)
    return f->st = dw_error_set(DW_ERR_INVALID_ARG, "path too long: %s", path);
  f->fd = fault(1) ? (errno = EIO, -1) : mkstemp(f->tmp);
  if (f->fd < 0) return f->st = dw_error_set(DW_ERR_IO, "create %s: %s", f->tmp, strerror(errno));
  return DW_OK;
}

dw_status dw_afile_write(dw_afile *f, const void *data, size_t n_bytes) {
  if (f->st) return f->st;
  f->st = fault(2) ? dw_error_set(DW_ERR_IO, "write %s: %s", f->tmp, strerror(EIO)) : write_all(f->fd, data, n_bytes, f->tmp);
  if (!f->st) f->size += n_bytes;
  return f->st;
}

dw_status dw_afile_pwrite(dw_afile *f, uint64_t off, const void *data, size_t n_bytes) {
  if (f->st) return f->st;
  if (off + n_bytes > f->size) return f->st = dw_error_set(DW_ERR_INVALID_ARG, "write past the end of %s", f->tmp);
  const uint8_t *p = data;
  while (n_bytes) {
    ssize_t w = pwrite(f->fd, p, n_bytes, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return f->st = dw_error_set(DW_ERR_IO, "write %s: %s", f->tmp, strerror(w < 0 ? errno : EIO));
    p += w, off += (uint64_t)w, n_bytes -= (size_t)w;
  }
  return DW_OK;
}

void dw_afile_abort(dw_afile *f) {
  if (f->fd >= 0) close(f->fd), unlink(f->tmp);
  f->fd = -1;
}

dw_status dw_afile_commit(dw_afile *f) {
  dw_status st = f->st;
  if (f->fd < 0) return st ? st : dw_error_set(DW_ERR_INVALID_ARG, "%s is not open", f->tmp);
  if (st == DW_OK && (fault(3) || fsync(f->fd) != 0))
    st = dw_error_set(DW_ERR_IO, "fsync %s: %s", f->tmp, strerror(errno ? errno : EIO));
  if ((close(f->fd) != 0 || fault(4)) && st == DW_OK) st = dw_error_set(DW_ERR_IO, "close %s: %s", f->tmp, strerror(EIO));
  f->fd = -1;
  if (st == DW_OK && (fault(5) || rename(f->tmp, f->path) != 0))
    st = dw_error_set(DW_ERR_IO, "rename %s -> %s: %s", f->tmp, f->path, strerror(errno ? errno : EIO));
  if (st != DW_OK) {
    unlink(f->tmp);
    return f->st = st;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", f->path);
  char *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = 0;
  else snprintf(dir, sizeof dir, ".");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return dw_error_set(DW_ERR_IO, "open %s: %s", dir, strerror(errno));
  int rc = fault(6) ? (errno = EIO, -1) : fsync(dfd);
  if (rc != 0 && (errno == EINVAL || errno == ENOTSUP)) rc = 0; /* filesystems without directory fsync */
  close(dfd);
  /* the new file is in place; only its directory entry may not be durable yet */
  if (rc != 0) return dw_error_set(DW_ERR_IO, "fsync %s: the new %s may not survive a crash", dir, f->path);
  return DW_OK;
}

dw_status dw_file_write_atomic(const char *path, const void *data, size_t n_bytes) {
  dw_afile f;
  dw_status st = dw_afile_open(&f, path);
  if (!st) st = dw_afile_write(&f, data, n_bytes);
  if (st) {
    dw_afile_abort(&f);
    return st;
  }
  return dw_afile_commit(&f);
}

dw_status dw_mkdirs(const char *path) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
    return dw_error_set(DW_ERR_INVALID_ARG, "path too long: %s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == 0) {
      char c = *p;
      *p = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return dw_error_set(DW_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
      *p = c;
      if (!c) break;
    }
  }
  return DW_OK;
}

void dw_hex(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = 0;
}

dw_status dw_parse_size(const char *text, uint64_t *out) {
  if (!text || !*text) return dw_error_set(DW_ERR_INVALID_ARG, "empty size");
  errno = 0;
  char *end;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text || text[0] == '-')
    return dw_error_set(DW_ERR_INVALID_ARG, "bad size '%s'", text);
  uint64_t mul = 1;
  if (*end) {
    char u = (char)(*end | 0x20);
    if (u == 'k') mul = 1ull << 10;
    else if (u == 'm') mul = 1ull << 20;
    else if (u == 'g') mul = 1ull << 30;
    else if (u == 'b' && end[1] == 0) mul = 1;
    else return dw_error_set(DW_ERR_INVALID_ARG, "bad size unit in '%s' (use K, M, G, KiB, MiB, GiB)", text);
    const char *rest = end + 1;
    if (u != 'b' && *rest && strcmp(rest, "iB") && strcmp(rest, "ib") && strcmp(rest, "B") && strcmp(rest, "b"))
      return dw_error_set(DW_ERR_INVALID_ARG, "bad size unit in '%s' (use K, M, G, KiB, MiB, GiB)", text);
  }
  if (v > UINT64_MAX / mul) return dw_error_set(DW_ERR_OVERFLOW, "size '%s' too large", text);
  *out = v * mul;
  return DW_OK;
}
