/*
 * mem_test.c — linear memory: reservation, growth, limits, checked views,
 * the registry, and commit hooks (including a failing one).
 */
#include "mem/mem.h"

#include <criterion/criterion.h>

typedef struct counter {
  int commits, releases, fail_after;
  uint64_t bytes;
} counter;

static dw_status on_commit(void *ud, void *p, size_t n) {
  counter *c = ud;
  (void)p;
  if (c->fail_after >= 0 && c->commits >= c->fail_after) return DW_ERR_BACKEND;
  c->commits++;
  c->bytes += n;
  return DW_OK;
}
static void on_release(void *ud, void *p, size_t n) {
  counter *c = ud;
  (void)p;
  c->releases++;
  c->bytes -= n;
}

Test(mem, create_grow_and_views) {
  counter c = {.fail_after = -1};
  dw_mem_hooks h = {&c, on_commit, on_release, false, false};
  dw_mem *m;
  cr_assert_eq(dw_mem_create(2, 10, 0, &h, &m), DW_OK);
  cr_assert_eq(m->size, 2 * DW_MEM_PAGE);
  cr_assert(dw_mem_owns_addr(m->base + 5));
  cr_assert(dw_mem_owns_addr(m->base + DW_MEM_RESERVE - 1), "the guard is part of the reservation");
  cr_assert_eq(dw_mem_from_base(m->base), m);
  void *p;
  cr_assert_eq(dw_mem_view(m, 0, m->size, &p), DW_OK);
  cr_assert_eq(p, m->base);
  cr_assert_eq(dw_mem_view(m, m->size, 0, &p), DW_OK);
  cr_assert_eq(dw_mem_view(m, m->size, 1, &p), DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(dw_mem_view(m, 1, m->size, &p), DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(dw_mem_view(m, UINT64_MAX, 2, &p), DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(dw_mem_view(m, 8, UINT64_MAX - 4, &p), DW_ERR_OUT_OF_BOUNDS);
  cr_assert_eq(dw_mem_view_array(m, 4, 3, 4, 4, &p), DW_OK);
  cr_assert_eq(dw_mem_view_array(m, 2, 3, 4, 4, &p), DW_ERR_MISALIGNED);
  cr_assert_eq(dw_mem_view_array(m, 0, UINT64_MAX / 2, 4, 4, &p), DW_ERR_OVERFLOW);

  uint8_t *base = m->base;
  uint32_t old;
  cr_assert_eq(dw_mem_grow(m, 3, &old), DW_OK);
  cr_assert_eq(old, 2);
  cr_assert_eq(m->base, base);
  m->base[5 * DW_MEM_PAGE - 1] = 42; /* newly committed and writable */
  cr_assert_eq(dw_mem_grow(m, 6, &old), DW_ERR_LIMIT);
  cr_assert_eq(m->pages, 5);
  cr_assert_eq(c.commits, 2);
  cr_assert_eq(c.bytes, 5 * DW_MEM_PAGE);
  dw_mem_destroy(m);
  cr_assert_eq(c.releases, 2);
  cr_assert_eq(c.bytes, 0);
  cr_assert(!dw_mem_owns_addr(base + 5), "unregistered after destroy");
}

Test(mem, limits) {
  dw_mem *m;
  cr_assert_eq(dw_mem_create(1, 65536, 3 * DW_MEM_PAGE, NULL, &m), DW_OK);
  cr_assert_eq(m->max_pages, 3);
  dw_mem_destroy(m);
  cr_assert_eq(dw_mem_create(4, 65536, 3 * DW_MEM_PAGE, NULL, &m), DW_ERR_LIMIT);
  cr_assert_eq(dw_mem_create(1, UINT32_MAX, 0, NULL, &m), DW_OK);
  cr_assert_eq(m->max_pages, DW_MEM_MAX_PAGES, "pages are capped to what wasm-rt can represent");
  dw_mem_destroy(m);
}

Test(mem, failed_registration_leaves_memory_unchanged) {
  counter c = {.fail_after = 1};
  dw_mem_hooks h = {&c, on_commit, on_release, false, false};
  dw_mem *m;
  cr_assert_eq(dw_mem_create(1, 10, 0, &h, &m), DW_OK);
  uint32_t old;
  cr_assert_eq(dw_mem_grow(m, 2, &old), DW_ERR_BACKEND);
  cr_assert_eq(m->pages, 1);
  cr_assert_eq(m->size, DW_MEM_PAGE);
  dw_mem_destroy(m);
  cr_assert_eq(c.bytes, 0);
  c = (counter){.fail_after = 0};
  cr_assert_eq(dw_mem_create(1, 10, 0, &h, &m), DW_ERR_BACKEND);
}

Test(mem, many_memories) {
  dw_mem *ms[64];
  for (int i = 0; i < 64; i++) cr_assert_eq(dw_mem_create(1, 2, 0, NULL, &ms[i]), DW_OK);
  for (int i = 0; i < 64; i++) {
    cr_assert_eq(dw_mem_from_base(ms[i]->base), ms[i]);
    dw_mem_destroy(ms[i]);
  }
}

/* ---- copy-on-write mappings (mem.h invariant 6) ---------------------------- */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int pattern_file(size_t n) {
  char path[] = "/tmp/dw-mem-test-XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  unlink(path);
  uint8_t *b = malloc(n);
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 7 + 3);
  cr_assert_eq(pwrite(fd, b, n, 0), (ssize_t)n);
  free(b);
  return fd;
}

/* whether the line of /proc/self/maps covering addr names `what` */
static bool mapping_names(const void *addr, const char *what) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  bool hit = false;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)addr >= lo && (uintptr_t)addr < hi)
      hit = strstr(line, what) != NULL;
  }
  if (f) fclose(f);
  return hit;
}

Test(mem, map_file_is_private_and_checked) {
  int fd = pattern_file(16384);
  dw_mem *m;
  cr_assert_eq(dw_mem_create(2, 4, 0, NULL, &m), DW_OK);
  m->base[0] = 1;
  cr_assert_eq(dw_mem_map_file(m, 8192, 8192, fd, 4096), DW_OK);
  cr_assert(m->mapped);
  cr_assert_eq(m->base[0], 1, "bytes outside the mapped range are kept");
  dw_mem_zero(m, 12288, 4096); /* zeroing part of a mapping: zeros, not the file */
  for (int i = 0; i < 4096; i++) cr_assert_eq(m->base[12288 + i], 0);
  for (int i = 0; i < 4096; i++) cr_assert_eq(m->base[8192 + i], (uint8_t)((4096 + i) * 7 + 3));
  cr_assert_eq(m->base[16384], 0);
  m->base[8192] = 0xee; /* a write copies the page: the file keeps its byte */
  uint8_t b;
  cr_assert_eq(pread(fd, &b, 1, 4096), 1);
  cr_assert_eq(b, (uint8_t)(4096 * 7 + 3));
  cr_assert_eq(m->base[8192], 0xee);
  /* checked: alignment, bounds */
  cr_assert_eq(dw_mem_map_file(m, 100, 4096, fd, 0), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_mem_map_file(m, 0, 4096, fd, 10), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_mem_map_file(m, m->size - 4096, 8192, fd, 0), DW_ERR_INVALID_ARG);
  uint32_t old;
  cr_assert_eq(dw_mem_grow(m, 1, &old), DW_OK);
  cr_assert_eq(m->base[2 * DW_MEM_PAGE + 5], 0, "grown pages are zero");
  /* a reused reservation reads zeros, not the file it once mapped */
  uint8_t *base = m->base;
  dw_mem_destroy(m);
  cr_assert_eq(dw_mem_create(3, 4, 0, NULL, &m), DW_OK);
  if (m->base == base) cr_assert(!mapping_names(base + 8192, "dw-mem-test"));
  for (uint64_t i = 0; i < m->size; i++) cr_assert_eq(m->base[i], 0, "byte %llu", (unsigned long long)i);
  dw_mem_destroy(m);
  /* pinned memories and the switch refuse mappings */
  counter c = {.fail_after = -1};
  dw_mem_hooks h = {&c, on_commit, on_release, true, false};
  cr_assert_eq(dw_mem_create(1, 2, 0, &h, &m), DW_OK);
  cr_assert_eq(dw_mem_map_file(m, 0, 4096, fd, 0), DW_ERR_UNSUPPORTED);
  m->base[5] = 7;
  dw_mem_zero(m, 0, 4096); /* pinned: zeroed in place, the page stays resident */
  unsigned char res = 0;
  cr_assert_eq(mincore(m->base, 4096, &res), 0);
  cr_assert(res & 1, "a pinned page was dropped");
  cr_assert_eq(m->base[5], 0);
  dw_mem_destroy(m);
  cr_assert_eq(dw_mem_create(1, 2, 0, NULL, &m), DW_OK);
  m->base[5] = 7;
  dw_mem_zero(m, 0, 4096); /* unpinned: dropped */
  cr_assert_eq(mincore(m->base, 4096, &res), 0);
  cr_assert(!(res & 1), "an unpinned page was kept");
  cr_assert_eq(m->base[5], 0);
  dw_mem_destroy(m);
  dw_mem_hooks copy = {.no_file_maps = true}; /* the API's DRIFTWOOD_MEM_COW=0 */
  cr_assert_eq(dw_mem_create(1, 2, 0, &copy, &m), DW_OK);
  cr_assert_eq(dw_mem_map_file(m, 0, 4096, fd, 0), DW_ERR_UNSUPPORTED);
  dw_mem_destroy(m);
  close(fd);
}

Test(mem, share_is_copy_on_write_both_ways) {
  dw_mem *a, *b, *small;
  cr_assert_eq(dw_mem_create(3, 4, 0, NULL, &a), DW_OK);
  cr_assert_eq(dw_mem_create(3, 4, 0, NULL, &b), DW_OK);
  cr_assert_eq(dw_mem_create(2, 4, 0, NULL, &small), DW_OK);
  for (uint64_t i = 0; i < a->size; i += 3) a->base[i] = (uint8_t)(i >> 4 | 1);
  memset(a->base + 65536, 0, 65536); /* a zero page in the middle */
  b->base[100] = 9;                  /* dst's own bytes go */
  cr_assert_eq(dw_mem_share(a, small), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_mem_share(a, b), DW_OK);
  cr_assert(mapping_names(a->base, "driftwood-memory") && mapping_names(b->base, "driftwood-memory"),
            "both memories map the shared file");
  cr_assert_eq(memcmp(a->base, b->base, a->size), 0);
  a->base[3] = 0x55;
  b->base[6] = 0x66;
  cr_assert_eq(b->base[3], (uint8_t)(3 >> 4 | 1));
  cr_assert_eq(a->base[6], (uint8_t)(6 >> 4 | 1));
  cr_assert_eq(b->base[65536 + 3], 0);
  uint32_t old;
  cr_assert_eq(dw_mem_grow(a, 1, &old), DW_OK);
  a->base[3 * DW_MEM_PAGE] = 1;
  dw_mem_destroy(a);
  cr_assert_eq(b->base[3], (uint8_t)(3 >> 4 | 1), "the other side outlives its source");
  dw_mem_destroy(b);
  dw_mem_destroy(small);
}
