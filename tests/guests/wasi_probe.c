/*
 * wasi_probe.c — a WASI command the tests drive through `driftwood run`:
 *   args                 print each argument on its own line
 *   env NAME             print NAME's value or "(unset)"
 *   exit N               exit with status N
 *   cat                  copy stdin to stdout
 *   read PATH            print the file's contents
 *   write PATH TEXT      write TEXT to PATH
 *   ls DIR               print the directory's entries, sorted
 *   try-open PATH        print "ok" or "denied: <errno name>"
 *   open-dir DIR SUB     path_open SUB (beneath the preopen DIR) as a
 *                        directory asking for every right, as wasi-libc and
 *                        Rust's std do, then list it through that fd; then
 *                        without O_DIRECTORY asking to write (ISDIR)
 *   sock                 sock_shutdown on a bad fd and on a non-socket
 *   symlink DIR          path_symlink beneath the preopen DIR: a relative
 *                        link (read back, followed), then targets that
 *                        leave the grant, and a path that does; each status
 *   open-many PATH N     open PATH up to N times, keeping each open; print
 *                        how many opened, why the next failed, whether the
 *                        first and last read the file, and the lowest fd
 *                        handed out again after the first is closed
 *   alloc MIB            malloc MIB MiB and touch it; print "ok" or "failed"
 *   time                 print "ok" when the clock moves and random bytes vary
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The descriptor of the preopened directory the guest knows as `name`, or -1. */
static int preopen(const char *name) {
  for (int fd = 3; fd < 64; fd++) {
    __wasi_prestat_t ps;
    char n[256] = {0};
    if (__wasi_fd_prestat_get(fd, &ps) == 0 && ps.u.dir.pr_name_len < sizeof n &&
        __wasi_fd_prestat_dir_name(fd, (uint8_t *)n, ps.u.dir.pr_name_len) == 0 && !strcmp(n, name))
      return fd;
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc < 2) return 64;
  const char *c = argv[1];
  if (!strcmp(c, "args")) {
    for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
  } else if (!strcmp(c, "env") && argc == 3) {
    const char *v = getenv(argv[2]);
    printf("%s\n", v ? v : "(unset)");
  } else if (!strcmp(c, "exit") && argc == 3) {
    exit(atoi(argv[2]));
  } else if (!strcmp(c, "cat")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
  } else if (!strcmp(c, "read") && argc == 3) {
    FILE *f = fopen(argv[2], "r");
    if (!f) {
      printf("denied: %s\n", strerror(errno));
      return 1;
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
  } else if (!strcmp(c, "write") && argc == 4) {
    FILE *f = fopen(argv[2], "w");
    if (!f) {
      printf("denied: %s\n", strerror(errno));
      return 1;
    }
    fputs(argv[3], f);
    fclose(f);
    printf("ok\n");
  } else if (!strcmp(c, "ls") && argc == 3) {
    DIR *d = opendir(argv[2]);
    if (!d) {
      printf("denied: %s\n", strerror(errno));
      return 1;
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp);
    for (int i = 0; i < n; i++) printf("%s\n", names[i]);
  } else if (!strcmp(c, "symlink") && argc == 3) {
    int pre = preopen(argv[2]);
    char buf[64] = {0};
    __wasi_size_t n = 0;
    __wasi_fd_t f;
    printf("link %d", __wasi_path_symlink("sub/a", pre, "l"));
    printf(", readlink %d", __wasi_path_readlink(pre, "l", (uint8_t *)buf, sizeof buf - 1, &n));
    printf(" '%s'", buf);
    printf(", follow %d", __wasi_path_open(pre, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "l", 0, __WASI_RIGHTS_FD_READ, 0, 0, &f));
    printf(", up and out %d", __wasi_path_symlink("../../etc/passwd", pre, "bad"));
    printf(", down then out %d", __wasi_path_symlink("../../x", pre, "sub/bad"));
    printf(", down and up %d", __wasi_path_symlink("../sub/a", pre, "sub/ok"));
    printf(", absolute %d", __wasi_path_symlink("/etc/passwd", pre, "abs"));
    printf(", open outside %d", __wasi_path_open(pre, 0, "../x", 0, __WASI_RIGHTS_FD_READ, 0, 0, &f));
    /* times through the link: followed, the target's; not, the link's */
    __wasi_filestat_t st;
    printf(", times followed %d", __wasi_path_filestat_set_times(pre, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "l", 0,
                                                                  7000000000ull, __WASI_FSTFLAGS_MTIM));
    printf(" %d", __wasi_path_filestat_get(pre, 0, "sub/a", &st) == 0 && st.mtim == 7000000000ull);
    printf(", on the link %d", __wasi_path_filestat_set_times(pre, 0, "l", 0, 8000000000ull, __WASI_FSTFLAGS_MTIM));
    printf(" %d", __wasi_path_filestat_get(pre, 0, "l", &st) == 0 && st.mtim == 8000000000ull);
    printf(" %d", __wasi_path_filestat_get(pre, 0, "sub/a", &st) == 0 && st.mtim == 7000000000ull);
    printf(", given and now %d\n", __wasi_path_filestat_set_times(pre, 0, "sub/a", 0, 1,
                                                                    __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
  } else if (!strcmp(c, "open-dir") && argc == 4) {
    int pre = preopen(argv[2]);
    __wasi_fd_t d;
    __wasi_errno_t e = __wasi_path_open(pre, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, argv[3], __WASI_OFLAGS_DIRECTORY,
                                        (__wasi_rights_t)0x1fffffff, (__wasi_rights_t)0x1fffffff, 0, &d);
    printf("open as a directory with every right: %d\n", e);
    if (!e) {
      uint8_t buf[1024];
      __wasi_size_t used = 0;
      e = __wasi_fd_readdir(d, buf, sizeof buf, 0, &used);
      int n = 0;
      for (size_t o = 0; !e && o + sizeof(__wasi_dirent_t) <= used;) {
        __wasi_dirent_t de;
        memcpy(&de, buf + o, sizeof de);
        o += sizeof de + de.d_namlen, n++;
      }
      printf("readdir %d: %d entries\n", e, n);
      (void)__wasi_fd_close(d);
    }
    e = __wasi_path_open(pre, 0, argv[3], 0, __WASI_RIGHTS_FD_WRITE, 0, 0, &d);
    printf("open for writing without O_DIRECTORY: %d\n", e);
  } else if (!strcmp(c, "sock") && argc == 2) {
    printf("bad fd %d, stdout %d\n", __wasi_sock_shutdown(77, __WASI_SDFLAGS_WR), __wasi_sock_shutdown(1, __WASI_SDFLAGS_WR));
  } else if (!strcmp(c, "open-many") && argc == 4) {
    int n = atoi(argv[3]), k = 0, *fds = calloc((size_t)n + 1, sizeof *fds);
    const char *why = "none";
    while (k < n && (fds[k] = open(argv[2], O_RDONLY)) >= 0) k++;
    if (k < n) why = errno == EMFILE ? "EMFILE" : strerror(errno);
    char a = 0, b = 0;
    int ok = k > 0 && read(fds[0], &a, 1) == 1 && read(fds[k - 1], &b, 1) == 1 && a == b;
    int first = k > 0 ? fds[0] : -1;
    if (k > 0) close(fds[0]);
    int again = open(argv[2], O_RDONLY);
    printf("opened %d, then %s; reads %s; after closing fd %d the next is fd %d\n", k, why, ok ? "ok" : "failed", first,
           again);
    free(fds);
  } else if (!strcmp(c, "try-open") && argc == 3) {
    int fd = open(argv[2], O_RDONLY);
    if (fd >= 0) {
      printf("ok\n");
      close(fd);
    } else {
      printf("denied: %s\n", strerror(errno));
    }
  } else if (!strcmp(c, "alloc") && argc == 3) {
    size_t n = (size_t)atoi(argv[2]) << 20;
    /* volatile: the compiler must not elide the allocation */
    char *volatile p = malloc(n);
    if (!p) {
      printf("failed\n");
      return 1;
    }
    for (size_t i = 0; i < n; i += 4096) ((volatile char *)p)[i] = 1;
    printf("ok\n");
  } else if (!strcmp(c, "time")) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    unsigned char r1[16] = {0}, r2[16] = {0};
    getentropy(r1, sizeof r1);
    getentropy(r2, sizeof r2);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while (a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec);
    printf("%s\n", memcmp(r1, r2, 16) && time(NULL) > 1700000000 ? "ok" : "bad");
  } else {
    return 64;
  }
  return 0;
}
