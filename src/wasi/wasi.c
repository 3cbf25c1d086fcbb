/*
 * wasi.c — wasi_snapshot_preview1 on Linux.
 *
 * The fd table maps guest fds to host fds: 0–2 are the configured stdio
 * (borrowed), 3… the granted directories (preopens, owned), then whatever
 * the guest opens (owned). Paths are resolved beneath a directory fd with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); operations that take a
 * path but have no openat2 form first open the parent that way, then act on
 * the last component with the *at() call, refusing "." and "..".
 */
#define _GNU_SOURCE
#include "wasi/wasi.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- WASI constants (preview1) ---------------------------------------- */

enum {
  E_SUCCESS = 0, E_2BIG = 1, E_ACCES = 2, E_AGAIN = 6, E_BADF = 8, E_BUSY = 10, E_EXIST = 20,
  E_FAULT = 21, E_FBIG = 22, E_INTR = 27, E_INVAL = 28, E_IO = 29, E_ISDIR = 31, E_LOOP = 32,
  E_MFILE = 33, E_NAMETOOLONG = 37, E_NOENT = 44, E_NOMEM = 48, E_NOSPC = 51, E_NOSYS = 52,
  E_NOTDIR = 54, E_NOTEMPTY = 55, E_NOTSOCK = 57, E_NOTSUP = 58, E_NOTTY = 59, E_OVERFLOW = 61, E_PERM = 63,
  E_PIPE = 64, E_ROFS = 69, E_SPIPE = 70, E_XDEV = 75, E_NOTCAPABLE = 76,
};
enum { FT_UNKNOWN = 0, FT_BLOCK = 1, FT_CHAR = 2, FT_DIR = 3, FT_FILE = 4, FT_SOCK = 6, FT_SYMLINK = 7 };
enum { OF_CREAT = 1, OF_DIRECTORY = 2, OF_EXCL = 4, OF_TRUNC = 8 };
enum { FDF_APPEND = 1, FDF_DSYNC = 2, FDF_NONBLOCK = 4, FDF_RSYNC = 8, FDF_SYNC = 16 };
#define R_FD_READ (1ull << 1)
#define R_FD_WRITE (1ull << 6)
#define R_FD_ALLOCATE (1ull << 8)
#define R_FD_READDIR (1ull << 14)
#define R_FD_FILESTAT_SET_SIZE (1ull << 22)
#define R_ALL 0x1fffffffull

#define DEFAULT_MAX_FDS 1024
#define INITIAL_FDS 8 /* stdio, a few grants and files; the table grows on demand */

typedef struct fd_entry {
  int host;          /* -1 when free */
  bool owned;        /* close on destroy */
  bool preopen;
  uint8_t type;      /* FT_* */
  char *name;        /* owned: preopen guest name */
} fd_entry;

struct dw_wasi {
  int argc, n_env;
  char **argv, **env; /* owned copies */
  fd_entry *fds;      /* owned: n_fds entries, free ones with host -1 */
  int n_fds, max_fds;
};

/* Grows the table to at least n entries (at most max_fds); false if it
 * cannot. Pointers into the table do not survive a growth. */
static bool fds_reserve(dw_wasi *w, int n) {
  if (n <= w->n_fds) return true;
  if (n > w->max_fds) return false;
  int cap = w->n_fds ? w->n_fds : INITIAL_FDS;
  while (cap < n) cap *= 2;
  if (cap > w->max_fds) cap = w->max_fds;
  fd_entry *v = dw_realloc(w->fds, (size_t)cap * sizeof *v);
  if (!v) return false;
  for (int i = w->n_fds; i < cap; i++) v[i] = (fd_entry){.host = -1};
  w->fds = v, w->n_fds = cap;
  return true;
}

static char **dup_strings(int n, const char *const *src) {
  char **out = dw_calloc((size_t)n + 1, sizeof *out);
  if (!out) return NULL;
  for (int i = 0; i < n; i++)
    if (!(out[i] = dw_strdup(src[i]))) return out; /* caller sees NULL entry */
  return out;
}

void dw_wasi_destroy(dw_wasi *w) {
  if (!w) return;
  for (int i = 0; i < w->n_fds; i++) {
    if (w->fds[i].host >= 0 && w->fds[i].owned) close(w->fds[i].host);
    dw_free(w->fds[i].name);
  }
  dw_free(w->fds);
  for (int i = 0; w->argv && i < w->argc; i++) dw_free(w->argv[i]);
  for (int i = 0; w->env && i < w->n_env; i++) dw_free(w->env[i]);
  dw_free(w->argv);
  dw_free(w->env);
  dw_free(w);
}

static uint8_t type_of_mode(mode_t m) {
  if (S_ISREG(m)) return FT_FILE;
  if (S_ISDIR(m)) return FT_DIR;
  if (S_ISCHR(m)) return FT_CHAR;
  if (S_ISBLK(m)) return FT_BLOCK;
  if (S_ISSOCK(m)) return FT_SOCK;
  if (S_ISLNK(m)) return FT_SYMLINK;
  return FT_UNKNOWN;
}

dw_status dw_wasi_create(const dw_wasi_config *cfg, dw_wasi **out) {
  *out = NULL;
  dw_wasi *w = dw_calloc(1, sizeof *w);
  if (!w) return dw_error_set(DW_ERR_NOMEM, "wasi context");
  w->max_fds = cfg->max_fds > 0 ? cfg->max_fds : DEFAULT_MAX_FDS;
  if (cfg->n_dirs < 0 || w->max_fds < 3 || cfg->n_dirs > w->max_fds - 3) {
    int max = w->max_fds;
    dw_wasi_destroy(w);
    return dw_error_set(DW_ERR_LIMIT, "%d directory grants do not fit %d descriptors", cfg->n_dirs, max);
  }
  int first = 3 + cfg->n_dirs > INITIAL_FDS ? 3 + cfg->n_dirs : INITIAL_FDS;
  if (!fds_reserve(w, first < w->max_fds ? first : w->max_fds)) {
    dw_wasi_destroy(w);
    return dw_error_set(DW_ERR_NOMEM, "wasi context");
  }
  w->argc = cfg->argc;
  w->n_env = cfg->n_env;
  w->argv = dup_strings(cfg->argc, cfg->argv);
  w->env = dup_strings(cfg->n_env, cfg->env);
  bool ok = w->argv && w->env;
  for (int i = 0; ok && i < cfg->argc; i++) ok = w->argv[i] != NULL;
  for (int i = 0; ok && i < cfg->n_env; i++) ok = w->env[i] != NULL && strchr(w->env[i], '=') != NULL;
  if (!ok) {
    dw_wasi_destroy(w);
    return dw_error_set(DW_ERR_INVALID_ARG, "bad argument or environment list (environment entries need KEY=VALUE)");
  }
  int stdio[3] = {cfg->stdin_fd, cfg->stdout_fd, cfg->stderr_fd};
  for (int i = 0; i < 3; i++) {
    struct stat sb;
    w->fds[i].host = stdio[i];
    w->fds[i].type = fstat(stdio[i], &sb) == 0 ? type_of_mode(sb.st_mode) : FT_CHAR;
  }
  for (int i = 0; i < cfg->n_dirs; i++) {
    int fd = open(cfg->dir_host[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      dw_status st = dw_error_set(DW_ERR_IO, "cannot grant directory %s: %s", cfg->dir_host[i], strerror(errno));
      dw_wasi_destroy(w);
      return st;
    }
    fd_entry *e = &w->fds[3 + i];
    e->host = fd;
    e->owned = true;
    e->preopen = true;
    e->type = FT_DIR;
    e->name = dw_strdup(cfg->dir_guest[i]);
    if (!e->name) {
      dw_wasi_destroy(w);
      return dw_error_set(DW_ERR_NOMEM, "wasi context");
    }
  }
  *out = w;
  return DW_OK;
}

/* ---- helpers ------------------------------------------------------------- */

static uint32_t errno_to_wasi(int e) {
  switch (e) {
  case 0: return E_SUCCESS;
  case E2BIG: return E_2BIG;
  case EACCES: return E_ACCES;
  case EAGAIN: return E_AGAIN;
  case EBADF: return E_BADF;
  case EBUSY: return E_BUSY;
  case EEXIST: return E_EXIST;
  case EFAULT: return E_FAULT;
  case EFBIG: return E_FBIG;
  case EINTR: return E_INTR;
  case EINVAL: return E_INVAL;
  case EIO: return E_IO;
  case EISDIR: return E_ISDIR;
  case ELOOP: return E_LOOP;
  case EMFILE: return E_MFILE;
  case ENAMETOOLONG: return E_NAMETOOLONG;
  case ENOENT: return E_NOENT;
  case ENOMEM: return E_NOMEM;
  case ENOSPC: return E_NOSPC;
  case ENOSYS: return E_NOSYS;
  case ENOTDIR: return E_NOTDIR;
  case ENOTEMPTY: return E_NOTEMPTY;
  case ENOTSUP: return E_NOTSUP;
  case ENOTTY: return E_NOTTY;
  case EOVERFLOW: return E_OVERFLOW;
  case EPERM: return E_PERM;
  case EPIPE: return E_PIPE;
  case EROFS: return E_ROFS;
  case ESPIPE: return E_SPIPE;
  case EXDEV: return E_XDEV;
  }
  return E_IO;
}

#define CTX(inst) ((dw_wasi *)dw_instance_ctx((inst), DW_SLOT_WASI))

/* Checked guest view; returns E_FAULT from the calling function on failure. */
#define VIEW(inst, var, off, len)                                                    \
  do {                                                                               \
    dw_mem *m_ = dw_instance_memory(inst);                                           \
    void *p_;                                                                        \
    if (!m_ || dw_mem_view(m_, (off), (len), &p_) != DW_OK) return E_FAULT;          \
    (var) = p_;                                                                      \
  } while (0)

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static fd_entry *fd_get(dw_wasi *w, uint32_t fd) {
  if (!w || fd >= (uint32_t)w->n_fds || w->fds[fd].host < 0) return NULL;
  return &w->fds[fd];
}

/* Copies a guest path into a NUL-terminated host buffer; refuses embedded NUL. */
static uint32_t guest_path(dw_instance *inst, uint32_t off, uint32_t len, char *out, size_t cap) {
  const char *p;
  VIEW(inst, p, off, len);
  if (len >= cap) return E_NAMETOOLONG;
  if (memchr(p, 0, len)) return E_INVAL;
  memcpy(out, p, len);
  out[len] = 0;
  return E_SUCCESS;
}

static int openat2_beneath(int dirfd, const char *path, uint64_t flags, uint64_t mode, bool follow) {
  struct open_how how = {.flags = flags | O_CLOEXEC, .mode = mode,
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
  if (!follow) flags |= O_NOFOLLOW;
  how.flags = flags | O_CLOEXEC;
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* Opens the parent of `path` beneath dirfd; *leaf points into path. */
static uint32_t open_parent(int dirfd, char *path, int *out_fd, const char **leaf) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') path[--n] = 0;
  char *slash = strrchr(path, '/');
  const char *dir = ".";
  if (slash) {
    *slash = 0;
    dir = slash == path ? "/" : path;
    *leaf = slash + 1;
  } else {
    *leaf = path;
  }
  if (!**leaf || !strcmp(*leaf, ".") || !strcmp(*leaf, "..")) return E_INVAL;
  int fd = openat2_beneath(dirfd, dir, O_PATH | O_DIRECTORY, 0, true);
  if (fd < 0) return errno == EXDEV ? E_NOTCAPABLE : errno_to_wasi(errno);
  *out_fd = fd;
  return E_SUCCESS;
}

/* A free descriptor number (the lowest, as POSIX does), growing the table
 * when it is full; -1 at max_fds. Invalidates fd_entry pointers. */
static int fd_alloc(dw_wasi *w) {
  for (int i = 3; i < w->n_fds; i++)
    if (w->fds[i].host < 0) return i;
  int n = w->n_fds;
  return fds_reserve(w, n + 1) ? n : -1;
}

/* ---- args, environment, clocks, random ------------------------------------ */

static uint32_t strings_sizes(dw_instance *inst, int n, char **s, uint32_t count_off, uint32_t size_off) {
  uint8_t *pc, *ps;
  VIEW(inst, pc, count_off, 4);
  VIEW(inst, ps, size_off, 4);
  uint64_t total = 0;
  for (int i = 0; i < n; i++) total += strlen(s[i]) + 1;
  if (total > UINT32_MAX) return E_OVERFLOW;
  put_u32(pc, (uint32_t)n);
  put_u32(ps, (uint32_t)total);
  return E_SUCCESS;
}

static uint32_t strings_get(dw_instance *inst, int n, char **s, uint32_t ptrs_off, uint32_t buf_off) {
  uint64_t total = 0;
  for (int i = 0; i < n; i++) total += strlen(s[i]) + 1;
  uint8_t *ptrs, *buf;
  VIEW(inst, ptrs, ptrs_off, (uint64_t)n * 4);
  VIEW(inst, buf, buf_off, total);
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    size_t len = strlen(s[i]) + 1;
    memcpy(buf + at, s[i], len);
    put_u32(ptrs + 4 * i, (uint32_t)(buf_off + at));
    at += len;
  }
  return E_SUCCESS;
}

static uint32_t w_args_sizes_get(dw_instance *inst, uint32_t a, uint32_t b) {
  dw_wasi *w = CTX(inst);
  return w ? strings_sizes(inst, w->argc, w->argv, a, b) : E_NOSYS;
}
static uint32_t w_args_get(dw_instance *inst, uint32_t a, uint32_t b) {
  dw_wasi *w = CTX(inst);
  return w ? strings_get(inst, w->argc, w->argv, a, b) : E_NOSYS;
}
static uint32_t w_environ_sizes_get(dw_instance *inst, uint32_t a, uint32_t b) {
  dw_wasi *w = CTX(inst);
  return w ? strings_sizes(inst, w->n_env, w->env, a, b) : E_NOSYS;
}
static uint32_t w_environ_get(dw_instance *inst, uint32_t a, uint32_t b) {
  dw_wasi *w = CTX(inst);
  return w ? strings_get(inst, w->n_env, w->env, a, b) : E_NOSYS;
}

static bool clock_of(uint32_t id, clockid_t *c) {
  switch (id) {
  case 0: *c = CLOCK_REALTIME; return true;
  case 1: *c = CLOCK_MONOTONIC; return true;
  case 2: *c = CLOCK_PROCESS_CPUTIME_ID; return true;
  case 3: *c = CLOCK_THREAD_CPUTIME_ID; return true;
  }
  return false;
}

static uint32_t w_clock_res_get(dw_instance *inst, uint32_t id, uint32_t out) {
  clockid_t c;
  struct timespec ts;
  uint8_t *p;
  if (!clock_of(id, &c)) return E_INVAL;
  VIEW(inst, p, out, 8);
  if (clock_getres(c, &ts) != 0) return errno_to_wasi(errno);
  put_u64(p, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
  return E_SUCCESS;
}

static uint32_t w_clock_time_get(dw_instance *inst, uint32_t id, uint64_t precision, uint32_t out) {
  (void)precision;
  clockid_t c;
  struct timespec ts;
  uint8_t *p;
  if (!clock_of(id, &c)) return E_INVAL;
  VIEW(inst, p, out, 8);
  if (clock_gettime(c, &ts) != 0) return errno_to_wasi(errno);
  put_u64(p, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
  return E_SUCCESS;
}

static uint32_t w_random_get(dw_instance *inst, uint32_t buf, uint32_t len) {
  uint8_t *p;
  VIEW(inst, p, buf, len);
  for (uint32_t got = 0; got < len;) {
    ssize_t r = getrandom(p + got, len - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_to_wasi(errno);
    got += (uint32_t)r;
  }
  return E_SUCCESS;
}

static void w_proc_exit(dw_instance *inst, uint32_t code) { dw_instance_exit(inst, (int)code); }
static uint32_t w_proc_raise(dw_instance *inst, uint32_t sig) {
  (void)inst;
  (void)sig;
  return E_NOTSUP;
}
static uint32_t w_sched_yield(dw_instance *inst) {
  (void)inst;
  sched_yield();
  return E_SUCCESS;
}

/* ---- fd operations ---------------------------------------------------------- */

/* Gathers a guest iovec array into host iovecs, each checked. */
static uint32_t gather(dw_instance *inst, uint32_t iovs, uint32_t n, struct iovec *out, int *n_out) {
  if (n > 1024) return E_INVAL;
  uint8_t *arr;
  VIEW(inst, arr, iovs, (uint64_t)n * 8);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t off = get_u32(arr + 8 * i), len = get_u32(arr + 8 * i + 4);
    void *p;
    VIEW(inst, p, off, len);
    out[i].iov_base = p;
    out[i].iov_len = len;
  }
  *n_out = (int)n;
  return E_SUCCESS;
}

static uint32_t rw(dw_instance *inst, uint32_t fd, uint32_t iovs, uint32_t n, int64_t offset, uint32_t out,
                   bool writing) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  if (e->type == FT_DIR) return E_ISDIR;
  struct iovec v[1024];
  int nv;
  uint8_t *po;
  uint32_t r = gather(inst, iovs, n, v, &nv);
  if (r) return r;
  VIEW(inst, po, out, 4);
  ssize_t got;
  do {
    if (writing) got = offset < 0 ? writev(e->host, v, nv) : pwritev(e->host, v, nv, offset);
    else got = offset < 0 ? readv(e->host, v, nv) : preadv(e->host, v, nv, offset);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return errno_to_wasi(errno);
  put_u32(po, (uint32_t)got);
  return E_SUCCESS;
}

static uint32_t w_fd_read(dw_instance *i, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t out) {
  return rw(i, fd, iovs, n, -1, out, false);
}
static uint32_t w_fd_write(dw_instance *i, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t out) {
  return rw(i, fd, iovs, n, -1, out, true);
}
static uint32_t w_fd_pread(dw_instance *i, uint32_t fd, uint32_t iovs, uint32_t n, uint64_t off, uint32_t out) {
  return off > INT64_MAX ? E_INVAL : rw(i, fd, iovs, n, (int64_t)off, out, false);
}
static uint32_t w_fd_pwrite(dw_instance *i, uint32_t fd, uint32_t iovs, uint32_t n, uint64_t off, uint32_t out) {
  return off > INT64_MAX ? E_INVAL : rw(i, fd, iovs, n, (int64_t)off, out, true);
}

static uint32_t w_fd_close(dw_instance *inst, uint32_t fd) {
  dw_wasi *w = CTX(inst);
  fd_entry *e = fd_get(w, fd);
  if (!e) return E_BADF;
  if (e->preopen) return E_NOTSUP;
  if (e->owned) close(e->host);
  dw_free(e->name);
  *e = (fd_entry){.host = -1};
  return E_SUCCESS;
}

static uint32_t w_fd_seek(dw_instance *inst, uint32_t fd, uint64_t off, uint32_t whence, uint32_t out) {
  fd_entry *e = fd_get(CTX(inst), fd);
  uint8_t *p;
  if (!e) return E_BADF;
  if (e->type == FT_DIR) return E_ISDIR;
  VIEW(inst, p, out, 8);
  int wh = whence == 0 ? SEEK_SET : whence == 1 ? SEEK_CUR : whence == 2 ? SEEK_END : -1;
  if (wh < 0) return E_INVAL;
  off_t r = lseek(e->host, (off_t)off, wh);
  if (r < 0) return errno_to_wasi(errno);
  put_u64(p, (uint64_t)r);
  return E_SUCCESS;
}

static uint32_t w_fd_tell(dw_instance *inst, uint32_t fd, uint32_t out) { return w_fd_seek(inst, fd, 0, 1, out); }

static uint32_t w_fd_sync(dw_instance *inst, uint32_t fd) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  return fsync(e->host) == 0 ? E_SUCCESS : errno_to_wasi(errno);
}
static uint32_t w_fd_datasync(dw_instance *inst, uint32_t fd) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  return fdatasync(e->host) == 0 ? E_SUCCESS : errno_to_wasi(errno);
}

static uint32_t w_fd_fdstat_get(dw_instance *inst, uint32_t fd, uint32_t out) {
  fd_entry *e = fd_get(CTX(inst), fd);
  uint8_t *p;
  if (!e) return E_BADF;
  VIEW(inst, p, out, 24);
  memset(p, 0, 24);
  p[0] = e->type;
  int fl = fcntl(e->host, F_GETFL);
  uint16_t flags = 0;
  if (fl >= 0) {
    if (fl & O_APPEND) flags |= FDF_APPEND;
    if (fl & O_NONBLOCK) flags |= FDF_NONBLOCK;
    if (fl & O_SYNC) flags |= FDF_SYNC;
  }
  memcpy(p + 2, &flags, 2);
  put_u64(p + 8, R_ALL);
  put_u64(p + 16, R_ALL);
  return E_SUCCESS;
}

static uint32_t w_fd_fdstat_set_flags(dw_instance *inst, uint32_t fd, uint32_t flags) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  int fl = fcntl(e->host, F_GETFL);
  if (fl < 0) return errno_to_wasi(errno);
  fl &= ~(O_APPEND | O_NONBLOCK);
  if (flags & FDF_APPEND) fl |= O_APPEND;
  if (flags & FDF_NONBLOCK) fl |= O_NONBLOCK;
  return fcntl(e->host, F_SETFL, fl) == 0 ? E_SUCCESS : errno_to_wasi(errno);
}

static uint32_t w_fd_fdstat_set_rights(dw_instance *inst, uint32_t fd, uint64_t b, uint64_t i) {
  (void)b;
  (void)i;
  return fd_get(CTX(inst), fd) ? E_SUCCESS : E_BADF;
}

static void put_filestat(uint8_t *p, const struct stat *sb) {
  memset(p, 0, 64);
  put_u64(p, (uint64_t)sb->st_dev);
  put_u64(p + 8, (uint64_t)sb->st_ino);
  p[16] = type_of_mode(sb->st_mode);
  put_u64(p + 24, (uint64_t)sb->st_nlink);
  put_u64(p + 32, (uint64_t)sb->st_size);
  put_u64(p + 40, (uint64_t)sb->st_atim.tv_sec * 1000000000ull + (uint64_t)sb->st_atim.tv_nsec);
  put_u64(p + 48, (uint64_t)sb->st_mtim.tv_sec * 1000000000ull + (uint64_t)sb->st_mtim.tv_nsec);
  put_u64(p + 56, (uint64_t)sb->st_ctim.tv_sec * 1000000000ull + (uint64_t)sb->st_ctim.tv_nsec);
}

static uint32_t w_fd_filestat_get(dw_instance *inst, uint32_t fd, uint32_t out) {
  fd_entry *e = fd_get(CTX(inst), fd);
  uint8_t *p;
  struct stat sb;
  if (!e) return E_BADF;
  VIEW(inst, p, out, 64);
  if (fstat(e->host, &sb) != 0) return errno_to_wasi(errno);
  put_filestat(p, &sb);
  return E_SUCCESS;
}

static uint32_t w_fd_filestat_set_size(dw_instance *inst, uint32_t fd, uint64_t size) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  if (size > INT64_MAX) return E_INVAL;
  return ftruncate(e->host, (off_t)size) == 0 ? E_SUCCESS : errno_to_wasi(errno);
}

static void to_timespecs(uint64_t atim, uint64_t mtim, uint32_t fst, struct timespec ts[2]) {
  /* fstflags: ATIM 1, ATIM_NOW 2, MTIM 4, MTIM_NOW 8 */
  ts[0].tv_sec = (time_t)(atim / 1000000000ull);
  ts[0].tv_nsec = (long)(atim % 1000000000ull);
  ts[1].tv_sec = (time_t)(mtim / 1000000000ull);
  ts[1].tv_nsec = (long)(mtim % 1000000000ull);
  if (fst & 2) ts[0].tv_nsec = UTIME_NOW;
  else if (!(fst & 1)) ts[0].tv_nsec = UTIME_OMIT;
  if (fst & 8) ts[1].tv_nsec = UTIME_NOW;
  else if (!(fst & 4)) ts[1].tv_nsec = UTIME_OMIT;
}

/* A time both given and "now" is INVAL, as the specification says. */
static bool fst_valid(uint32_t fst) { return (fst & 3) != 3 && (fst & 12) != 12 && !(fst & ~15u); }

static uint32_t w_fd_filestat_set_times(dw_instance *inst, uint32_t fd, uint64_t a, uint64_t m, uint32_t fst) {
  fd_entry *e = fd_get(CTX(inst), fd);
  struct timespec ts[2];
  if (!e) return E_BADF;
  if (!fst_valid(fst)) return E_INVAL;
  to_timespecs(a, m, fst, ts);
  return futimens(e->host, ts) == 0 ? E_SUCCESS : errno_to_wasi(errno);
}

static uint32_t w_fd_advise(dw_instance *inst, uint32_t fd, uint64_t off, uint64_t len, uint32_t adv) {
  (void)off;
  (void)len;
  if (adv > 5) return E_INVAL;
  return fd_get(CTX(inst), fd) ? E_SUCCESS : E_BADF;
}

static uint32_t w_fd_allocate(dw_instance *inst, uint32_t fd, uint64_t off, uint64_t len) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  if (off > INT64_MAX || len > INT64_MAX) return E_INVAL;
  int r = posix_fallocate(e->host, (off_t)off, (off_t)len);
  return r == 0 ? E_SUCCESS : errno_to_wasi(r);
}

static uint32_t w_fd_prestat_get(dw_instance *inst, uint32_t fd, uint32_t out) {
  fd_entry *e = fd_get(CTX(inst), fd);
  uint8_t *p;
  if (!e) return E_BADF;
  if (!e->preopen) return E_BADF;
  VIEW(inst, p, out, 8);
  memset(p, 0, 8);
  put_u32(p + 4, (uint32_t)strlen(e->name));
  return E_SUCCESS;
}

static uint32_t w_fd_prestat_dir_name(dw_instance *inst, uint32_t fd, uint32_t buf, uint32_t len) {
  fd_entry *e = fd_get(CTX(inst), fd);
  char *p;
  if (!e || !e->preopen) return E_BADF;
  size_t n = strlen(e->name);
  if (len < n) return E_NAMETOOLONG;
  VIEW(inst, p, buf, n);
  memcpy(p, e->name, n);
  return E_SUCCESS;
}

static uint32_t w_fd_renumber(dw_instance *inst, uint32_t from, uint32_t to) {
  dw_wasi *w = CTX(inst);
  fd_entry *a = fd_get(w, from), *b = fd_get(w, to);
  if (!a || !b) return E_BADF;
  if (a->preopen || b->preopen || to < 3) return E_NOTSUP;
  if (from == to) return E_SUCCESS;
  if (b->owned) close(b->host);
  dw_free(b->name);
  *b = *a;
  *a = (fd_entry){.host = -1};
  return E_SUCCESS;
}

static uint32_t w_fd_readdir(dw_instance *inst, uint32_t fd, uint32_t buf, uint32_t len, uint64_t cookie,
                             uint32_t used_out) {
  fd_entry *e = fd_get(CTX(inst), fd);
  uint8_t *p, *pu;
  if (!e) return E_BADF;
  if (e->type != FT_DIR) return E_NOTDIR;
  VIEW(inst, p, buf, len);
  VIEW(inst, pu, used_out, 4);
  int dfd = openat(e->host, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return errno_to_wasi(errno);
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return errno_to_wasi(errno);
  }
  /* Cookies are the directory's own offsets (d_off, what telldir gives),
   * not entry counts: a guest that removes entries between calls (Rust's
   * remove_dir_all, rm -r) resumes where it was instead of skipping. */
  if (cookie) seekdir(d, (long)cookie);
  uint32_t used = 0;
  struct dirent *de;
  while ((de = readdir(d)) && used < len) {
    uint8_t hdr[24] = {0};
    size_t nl = strlen(de->d_name);
    put_u64(hdr, (uint64_t)de->d_off);
    put_u64(hdr + 8, de->d_ino);
    put_u32(hdr + 16, (uint32_t)nl);
    hdr[20] = de->d_type == DT_DIR ? FT_DIR : de->d_type == DT_REG ? FT_FILE : de->d_type == DT_LNK ? FT_SYMLINK
              : de->d_type == DT_CHR ? FT_CHAR : de->d_type == DT_BLK ? FT_BLOCK : de->d_type == DT_SOCK ? FT_SOCK : FT_UNKNOWN;
    /* Entries that do not fit are truncated: the guest sees used == len and retries. */
    uint32_t room = len - used, take = room < 24 ? room : 24;
    memcpy(p + used, hdr, take);
    used += take;
    room = len - used;
    take = room < nl ? room : (uint32_t)nl;
    memcpy(p + used, de->d_name, take);
    used += take;
  }
  closedir(d);
  put_u32(pu, used);
  return E_SUCCESS;
}

/* ---- paths ------------------------------------------------------------------- */

#define PATH_CAP 4096

static uint32_t w_path_open(dw_instance *inst, uint32_t dirfd, uint32_t lookup, uint32_t path, uint32_t path_len,
                            uint32_t oflags, uint64_t rights, uint64_t inherit, uint32_t fdflags, uint32_t out) {
  (void)inherit;
  dw_wasi *w = CTX(inst);
  fd_entry *d = fd_get(w, dirfd);
  uint8_t *po;
  char p[PATH_CAP];
  if (!d) return E_BADF;
  if (d->type != FT_DIR) return E_NOTDIR;
  uint32_t r = guest_path(inst, path, path_len, p, sizeof p);
  if (r) return r;
  VIEW(inst, po, out, 4);
  bool rd = rights & (R_FD_READ | R_FD_READDIR), wr = rights & (R_FD_WRITE | R_FD_ALLOCATE | R_FD_FILESTAT_SET_SIZE);
  /* A directory is opened to look in, never to write to: with O_DIRECTORY
   * the write rights a guest asks for (wasi-libc and Rust ask for every
   * right the parent grants) are dropped, as Wasmtime does; without it, a
   * directory opened for writing is ISDIR. */
  if ((oflags & OF_DIRECTORY) && !(oflags & (OF_CREAT | OF_TRUNC))) wr = false;
  uint64_t fl = wr ? (rd ? O_RDWR : O_WRONLY) : O_RDONLY;
  if (oflags & OF_CREAT) fl |= O_CREAT;
  if (oflags & OF_DIRECTORY) fl |= O_DIRECTORY;
  if (oflags & OF_EXCL) fl |= O_EXCL;
  if (oflags & OF_TRUNC) fl |= O_TRUNC;
  if (fdflags & FDF_APPEND) fl |= O_APPEND;
  if (fdflags & FDF_NONBLOCK) fl |= O_NONBLOCK;
  if (fdflags & (FDF_SYNC | FDF_RSYNC)) fl |= O_SYNC;
  if (fdflags & FDF_DSYNC) fl |= O_DSYNC;
  if ((fl & O_DIRECTORY) && (fl & O_ACCMODE) != O_RDONLY) return E_ISDIR;
  int dir_host = d->host; /* d does not survive fd_alloc */
  int slot = fd_alloc(w);
  if (slot < 0) return E_MFILE;
  int h = openat2_beneath(dir_host, p, fl, (fl & O_CREAT) ? 0644 : 0, lookup & 1);
  if (h < 0 && errno == EISDIR && (fl & O_ACCMODE) != O_RDONLY) return E_ISDIR;
  if (h < 0) return errno == EXDEV ? E_NOTCAPABLE : errno_to_wasi(errno);
  struct stat sb;
  if (fstat(h, &sb) != 0) {
    close(h);
    return errno_to_wasi(errno);
  }
  w->fds[slot] = (fd_entry){.host = h, .owned = true, .type = type_of_mode(sb.st_mode)};
  put_u32(po, (uint32_t)slot);
  return E_SUCCESS;
}

/* Resolves (dirfd, path) to an open parent and leaf; caller closes *pfd. */
static uint32_t parent_of(dw_instance *inst, uint32_t dirfd, uint32_t path, uint32_t len, char *buf, int *pfd,
                          const char **leaf) {
  fd_entry *d = fd_get(CTX(inst), dirfd);
  if (!d) return E_BADF;
  if (d->type != FT_DIR) return E_NOTDIR;
  uint32_t r = guest_path(inst, path, len, buf, PATH_CAP);
  if (r) return r;
  return open_parent(d->host, buf, pfd, leaf);
}

enum path_op { OP_MKDIR, OP_RMDIR, OP_UNLINK };

/* mkdir / rmdir / unlink of the last component, beneath the directory fd. */
static uint32_t path_op(dw_instance *inst, uint32_t fd, uint32_t path, uint32_t len, enum path_op op) {
  char buf[PATH_CAP];
  const char *leaf;
  int pfd = -1;
  uint32_t r = parent_of(inst, fd, path, len, buf, &pfd, &leaf);
  if (r) return r;
  int rc = op == OP_MKDIR ? mkdirat(pfd, leaf, 0755) : unlinkat(pfd, leaf, op == OP_RMDIR ? AT_REMOVEDIR : 0);
  int e = errno;
  close(pfd);
  if (rc == 0) return E_SUCCESS;
  return errno_to_wasi(op == OP_RMDIR && e == EEXIST ? ENOTEMPTY : e);
}

static uint32_t w_path_create_directory(dw_instance *inst, uint32_t fd, uint32_t path, uint32_t len) {
  return path_op(inst, fd, path, len, OP_MKDIR);
}
static uint32_t w_path_remove_directory(dw_instance *inst, uint32_t fd, uint32_t path, uint32_t len) {
  return path_op(inst, fd, path, len, OP_RMDIR);
}
static uint32_t w_path_unlink_file(dw_instance *inst, uint32_t fd, uint32_t path, uint32_t len) {
  return path_op(inst, fd, path, len, OP_UNLINK);
}

/* An O_PATH descriptor of the file the guest path leads to beneath the
 * directory fd (a final symlink followed when `follow`). */
static uint32_t open_path(dw_instance *inst, uint32_t fd, uint32_t path, uint32_t len, bool follow, int *h) {
  fd_entry *d = fd_get(CTX(inst), fd);
  char buf[PATH_CAP];
  if (!d) return E_BADF;
  uint32_t r = guest_path(inst, path, len, buf, sizeof buf);
  if (r) return r;
  if ((*h = openat2_beneath(d->host, buf, O_PATH, 0, follow)) < 0)
    return errno == EXDEV ? E_NOTCAPABLE : errno_to_wasi(errno);
  return E_SUCCESS;
}

static uint32_t w_path_filestat_get(dw_instance *inst, uint32_t fd, uint32_t flags, uint32_t path, uint32_t len,
                                    uint32_t out) {
  uint8_t *p;
  int h;
  VIEW(inst, p, out, 64);
  uint32_t r = open_path(inst, fd, path, len, flags & 1, &h);
  if (r) return r;
  struct stat sb;
  int rc = fstatat(h, "", &sb, AT_EMPTY_PATH);
  int e = errno;
  close(h);
  if (rc != 0) return errno_to_wasi(e);
  put_filestat(p, &sb);
  return E_SUCCESS;
}

static uint32_t w_path_filestat_set_times(dw_instance *inst, uint32_t fd, uint32_t flags, uint32_t path,
                                          uint32_t len, uint64_t a, uint64_t m, uint32_t fst) {
  char buf[PATH_CAP];
  const char *leaf;
  int pfd = -1;
  struct timespec ts[2];
  if (!fst_valid(fst)) return E_INVAL;
  to_timespecs(a, m, fst, ts);
  if (flags & 1) { /* SYMLINK_FOLLOW: the file the path leads to, found beneath the directory */
    int h;
    uint32_t r = open_path(inst, fd, path, len, true, &h);
    if (r) return r;
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", h); /* utimensat cannot take an O_PATH fd itself */
    int rc = utimensat(AT_FDCWD, self, ts, 0), e = errno;
    close(h);
    return rc == 0 ? E_SUCCESS : errno_to_wasi(e);
  }
  uint32_t r = parent_of(inst, fd, path, len, buf, &pfd, &leaf);
  if (r) return r;
  int rc = utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW); /* the link itself */
  int e = errno;
  close(pfd);
  return rc == 0 ? E_SUCCESS : errno_to_wasi(e);
}

static uint32_t w_path_rename(dw_instance *inst, uint32_t fd, uint32_t old, uint32_t old_len, uint32_t nfd,
                              uint32_t nw, uint32_t new_len) {
  char b1[PATH_CAP], b2[PATH_CAP];
  const char *l1, *l2;
  int p1 = -1, p2 = -1;
  uint32_t r = parent_of(inst, fd, old, old_len, b1, &p1, &l1);
  if (r) return r;
  r = parent_of(inst, nfd, nw, new_len, b2, &p2, &l2);
  if (r) {
    close(p1);
    return r;
  }
  int rc = renameat(p1, l1, p2, l2);
  int e = errno;
  close(p1);
  close(p2);
  return rc == 0 ? E_SUCCESS : errno_to_wasi(e);
}

static uint32_t w_path_readlink(dw_instance *inst, uint32_t fd, uint32_t path, uint32_t len, uint32_t buf,
                                uint32_t buf_len, uint32_t used_out) {
  char b[PATH_CAP];
  const char *leaf;
  int pfd = -1;
  char *dst;
  uint8_t *pu;
  VIEW(inst, dst, buf, buf_len);
  VIEW(inst, pu, used_out, 4);
  uint32_t r = parent_of(inst, fd, path, len, b, &pfd, &leaf);
  if (r) return r;
  ssize_t n = readlinkat(pfd, leaf, dst, buf_len);
  int e = errno;
  close(pfd);
  if (n < 0) return errno_to_wasi(e);
  put_u32(pu, (uint32_t)n);
  return E_SUCCESS;
}

/* How deep `path` ends beneath its start, or -1 if it climbs above it
 * (lexically: "a/../.." is -1). */
static int depth_of(const char *path, int depth) {
  for (const char *p = path; *p && depth >= 0;) {
    size_t n = strcspn(p, "/");
    if (n == 2 && p[0] == '.' && p[1] == '.') depth--;
    else if (n && !(n == 1 && p[0] == '.')) depth++;
    p += n + (p[n] == '/');
  }
  return depth;
}

/* A symlink beneath the directory, holding a relative target. It is only
 * ever followed beneath the granted directory (openat2 RESOLVE_BENEATH;
 * the other path calls act on the link itself), and its target may not
 * climb out of the grant even lexically (../../etc/passwd from the top),
 * so the host is never left a link that leads out: NOTCAPABLE, as for an
 * absolute target. */
static uint32_t w_path_symlink(dw_instance *inst, uint32_t old, uint32_t old_len, uint32_t fd, uint32_t nw,
                               uint32_t new_len) {
  char target[PATH_CAP], b[PATH_CAP];
  const char *leaf;
  int pfd = -1;
  uint32_t r = guest_path(inst, old, old_len, target, sizeof target);
  if (r) return r;
  if (!target[0]) return E_NOENT;
  if (target[0] == '/') return E_NOTCAPABLE;
  if ((r = parent_of(inst, fd, nw, new_len, b, &pfd, &leaf))) return r;
  int parent_depth = leaf == b ? 0 : depth_of(b, 0); /* open_parent cut b at the parent */
  if (parent_depth < 0 || depth_of(target, parent_depth) < 0) {
    close(pfd);
    return E_NOTCAPABLE;
  }
  int rc = symlinkat(target, pfd, leaf);
  int e = errno;
  close(pfd);
  return rc == 0 ? E_SUCCESS : errno_to_wasi(e);
}

static uint32_t w_path_link(dw_instance *inst, uint32_t ofd, uint32_t oflags, uint32_t old, uint32_t old_len,
                            uint32_t nfd, uint32_t nw, uint32_t new_len) {
  char b1[PATH_CAP], b2[PATH_CAP];
  const char *l1, *l2;
  int p1 = -1, p2 = -1;
  (void)oflags;
  uint32_t r = parent_of(inst, ofd, old, old_len, b1, &p1, &l1);
  if (r) return r;
  r = parent_of(inst, nfd, nw, new_len, b2, &p2, &l2);
  if (r) {
    close(p1);
    return r;
  }
  int rc = linkat(p1, l1, p2, l2, 0);
  int e = errno;
  close(p1);
  close(p2);
  return rc == 0 ? E_SUCCESS : errno_to_wasi(e);
}

/* ---- poll and sockets ------------------------------------------------------- */

static uint32_t w_poll_oneoff(dw_instance *inst, uint32_t in, uint32_t out, uint32_t n, uint32_t n_out) {
  uint8_t *pi, *po, *pn;
  if (n == 0) return E_INVAL;
  VIEW(inst, pi, in, (uint64_t)n * 48);
  VIEW(inst, po, out, (uint64_t)n * 32);
  VIEW(inst, pn, n_out, 4);
  /* fds are always ready; clocks: sleep until the earliest deadline. */
  uint32_t n_ev = 0;
  uint64_t min_ns = UINT64_MAX;
  int min_i = -1;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *s = pi + 48 * i, tag = s[8];
    if (tag == 1 || tag == 2) {
      uint8_t *ev = po + 32 * n_ev++;
      memset(ev, 0, 32);
      memcpy(ev, s, 8);
      ev[10] = tag;
      uint32_t fd = get_u32(s + 16);
      if (!fd_get(CTX(inst), fd)) ev[8] = E_BADF;
    } else if (tag == 0) {
      uint32_t id = get_u32(s + 16);
      uint64_t t = get_u64(s + 24);
      uint16_t fl;
      memcpy(&fl, s + 40, 2);
      clockid_t c;
      if (!clock_of(id, &c)) return E_INVAL;
      if (fl & 1) {
        struct timespec now;
        clock_gettime(c, &now);
        uint64_t nn = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
        t = t > nn ? t - nn : 0;
      }
      if (t < min_ns) {
        min_ns = t;
        min_i = (int)i;
      }
    } else {
      return E_INVAL;
    }
  }
  if (n_ev == 0 && min_i >= 0) {
    struct timespec ts = {(time_t)(min_ns / 1000000000ull), (long)(min_ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    uint8_t *ev = po;
    memset(ev, 0, 32);
    memcpy(ev, pi + 48 * min_i, 8);
    ev[10] = 0;
    n_ev = 1;
  }
  put_u32(pn, n_ev);
  return E_SUCCESS;
}

static uint32_t w_sock_accept(dw_instance *i, uint32_t fd, uint32_t fl, uint32_t out) {
  (void)i; (void)fd; (void)fl; (void)out;
  return E_NOTSUP;
}
static uint32_t w_sock_recv(dw_instance *i, uint32_t fd, uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t e) {
  (void)i; (void)fd; (void)a; (void)b; (void)c; (void)d; (void)e;
  return E_NOTSUP;
}
static uint32_t w_sock_send(dw_instance *i, uint32_t fd, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  (void)i; (void)fd; (void)a; (void)b; (void)c; (void)d;
  return E_NOTSUP;
}
/* No socket is ever granted a guest (sock_accept has nothing to accept),
 * but the errors are exact: a bad descriptor is BADF, one that is not a
 * socket NOTSOCK, as C programs check. */
static uint32_t w_sock_shutdown(dw_instance *inst, uint32_t fd, uint32_t how) {
  fd_entry *e = fd_get(CTX(inst), fd);
  if (!e) return E_BADF;
  if (e->type != FT_SOCK) return E_NOTSOCK;
  if (!how || how & ~3u) return E_INVAL; /* RD = 1, WR = 2 */
  return shutdown(e->host, how == 3 ? SHUT_RDWR : how == 1 ? SHUT_RD : SHUT_WR) == 0 ? E_SUCCESS : errno_to_wasi(errno);
}

#define F(name, sig) {"wasi_snapshot_preview1", #name, sig, (dw_fnptr)w_##name}

const dw_hostfn dw_wasi_functions[] = {
    F(args_get, "i:ii"), F(args_sizes_get, "i:ii"), F(environ_get, "i:ii"), F(environ_sizes_get, "i:ii"),
    F(clock_res_get, "i:ii"), F(clock_time_get, "i:iIi"), F(fd_advise, "i:iIIi"), F(fd_allocate, "i:iII"),
    F(fd_close, "i:i"), F(fd_datasync, "i:i"), F(fd_fdstat_get, "i:ii"), F(fd_fdstat_set_flags, "i:ii"),
    F(fd_fdstat_set_rights, "i:iII"), F(fd_filestat_get, "i:ii"), F(fd_filestat_set_size, "i:iI"),
    F(fd_filestat_set_times, "i:iIIi"), F(fd_pread, "i:iiiIi"), F(fd_prestat_get, "i:ii"),
    F(fd_prestat_dir_name, "i:iii"), F(fd_pwrite, "i:iiiIi"), F(fd_read, "i:iiii"), F(fd_readdir, "i:iiiIi"),
    F(fd_renumber, "i:ii"), F(fd_seek, "i:iIii"), F(fd_sync, "i:i"), F(fd_tell, "i:ii"), F(fd_write, "i:iiii"),
    F(path_create_directory, "i:iii"), F(path_filestat_get, "i:iiiii"), F(path_filestat_set_times, "i:iiiiIIi"),
    F(path_link, "i:iiiiiii"), F(path_open, "i:iiiiiIIii"), F(path_readlink, "i:iiiiii"),
    F(path_remove_directory, "i:iii"), F(path_rename, "i:iiiiii"), F(path_symlink, "i:iiiii"),
    F(path_unlink_file, "i:iii"), F(poll_oneoff, "i:iiii"), F(proc_exit, "v:i"), F(proc_raise, "i:i"),
    F(random_get, "i:ii"), F(sched_yield, "i:"), F(sock_accept, "i:iii"), F(sock_recv, "i:iiiiii"),
    F(sock_send, "i:iiiii"), F(sock_shutdown, "i:ii"),
    {0},
};
