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
  dw_mem_hooks h = {&c, on_commit, on_release};
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
  dw_mem_hooks h = {&c, on_commit, on_release};
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
