/*
 * mem.c — linear memory reservations, growth, registration and the global
 * reservation registry the fault handler consults.
 *
 * Destroyed reservations go to a small pool (see `pool`), zeroed, for the
 * next memory: instantiation then costs no page-table set-up or faults.
 *
 * The registry is a fixed table of slots; a slot's base is published with a
 * release store after its fields are set, and cleared before the memory is
 * unmapped, so dw_mem_owns_addr() (called from a signal handler) only needs
 * acquire loads and never takes a lock.
 *
 * Copy-on-write (mem.h invariant 6): a file range is first mapped at a free
 * address and then moved over the target with mremap, so the usual
 * failures (bad descriptor or offset, mapping limits) leave the memory as
 * it was.
 */
#define _GNU_SOURCE
#include "mem/mem.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define N_SLOTS 16384 /* 8 GiB each: more than a 47-bit address space holds */

typedef struct slot {
  _Atomic(uintptr_t) base;
  dw_mem *mem;
} slot;

static slot slots[N_SLOTS];
static _Atomic int slots_hwm; /* slots at or past this index are empty */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

/* Reservations of destroyed memories, kept for reuse: mapping 8 GiB anew
 * costs page-table set-up, and fresh pages cost faults and zeroing. A pooled
 * reservation has [0, warm) read/write, resident and zero; the rest PROT_NONE
 * and not resident. */
#define POOL_CAP 32
#define POOL_KEEP (256u * 1024u)
typedef struct pooled {
  uint8_t *base;
  uint64_t warm;
} pooled;
static pooled pool[POOL_CAP];
static int n_pool;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static dw_status registry_add(dw_mem *m) {
  pthread_mutex_lock(&slots_lock);
  for (int i = 0; i < N_SLOTS; i++) {
    if (atomic_load_explicit(&slots[i].base, memory_order_relaxed) == 0) {
      slots[i].mem = m;
      if (i >= atomic_load(&slots_hwm)) atomic_store(&slots_hwm, i + 1);
      atomic_store_explicit(&slots[i].base, (uintptr_t)m->base, memory_order_release);
      pthread_mutex_unlock(&slots_lock);
      return DW_OK;
    }
  }
  pthread_mutex_unlock(&slots_lock);
  return dw_error_set(DW_ERR_LIMIT, "too many live linear memories (%d)", N_SLOTS);
}

static void registry_remove(dw_mem *m) {
  pthread_mutex_lock(&slots_lock);
  for (int i = 0, n = atomic_load(&slots_hwm); i < n; i++) {
    if (atomic_load_explicit(&slots[i].base, memory_order_relaxed) == (uintptr_t)m->base) {
      atomic_store_explicit(&slots[i].base, 0, memory_order_release);
      slots[i].mem = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&slots_lock);
}

dw_mem *dw_mem_from_base(const void *base) {
  dw_mem *found = NULL;
  pthread_mutex_lock(&slots_lock);
  for (int i = 0, n = atomic_load(&slots_hwm); i < n; i++) {
    if (atomic_load_explicit(&slots[i].base, memory_order_relaxed) == (uintptr_t)base) {
      found = slots[i].mem;
      break;
    }
  }
  pthread_mutex_unlock(&slots_lock);
  return found;
}

bool dw_mem_owns_addr(const void *addr) {
  uintptr_t a = (uintptr_t)addr;
  for (int i = 0, n = atomic_load_explicit(&slots_hwm, memory_order_acquire); i < n; i++) {
    uintptr_t b = atomic_load_explicit(&slots[i].base, memory_order_acquire);
    if (b && a >= b && a - b < DW_MEM_RESERVE) return true;
  }
  return false;
}

static dw_status commit_range(dw_mem *m, uint64_t off, uint64_t n) {
  if (n == 0) return DW_OK;
  if (m->n_ranges == m->cap_ranges) {
    uint32_t cap = m->cap_ranges ? m->cap_ranges * 2 : 8;
    dw_mem_range *r = dw_realloc(m->ranges, cap * sizeof *r);
    if (!r) return dw_error_set(DW_ERR_NOMEM, "memory range table");
    m->ranges = r;
    m->cap_ranges = cap;
  }
  if (mprotect(m->base + off, n, PROT_READ | PROT_WRITE) != 0)
    return dw_error_set(DW_ERR_NOMEM, "commit %llu bytes of linear memory: %s",
                        (unsigned long long)n, strerror(errno));
  if (m->hooks.commit) {
    dw_status st = m->hooks.commit(m->hooks.ud, m->base + off, n);
    if (st != DW_OK) {
      mprotect(m->base + off, n, PROT_NONE);
      return st;
    }
  }
  m->ranges[m->n_ranges++] = (dw_mem_range){off, n};
  return DW_OK;
}

dw_status dw_mem_create(uint32_t initial, uint32_t max_pages, uint64_t limit_bytes,
                        const dw_mem_hooks *hooks, dw_mem **out) {
  *out = NULL;
  if (max_pages > DW_MEM_MAX_PAGES) max_pages = DW_MEM_MAX_PAGES;
  if (limit_bytes && limit_bytes / DW_MEM_PAGE < max_pages) max_pages = (uint32_t)(limit_bytes / DW_MEM_PAGE);
  if (initial > max_pages)
    return dw_error_set(DW_ERR_LIMIT, "module needs %u pages of memory (%llu KiB); the limit allows %u",
                        initial, (unsigned long long)initial * 64, max_pages);
  dw_mem *m = dw_calloc(1, sizeof *m);
  if (!m) return dw_error_set(DW_ERR_NOMEM, "linear memory");
  uint64_t warm = 0;
  void *p = NULL;
  pthread_mutex_lock(&pool_lock);
  if (n_pool) {
    n_pool--;
    p = pool[n_pool].base;
    warm = pool[n_pool].warm;
  }
  pthread_mutex_unlock(&pool_lock);
  if (p) {
    /* [0, warm) is read/write and zero; hide what the new size does not cover */
    uint64_t init_bytes = (uint64_t)initial * DW_MEM_PAGE;
    if (warm > init_bytes) mprotect((uint8_t *)p + init_bytes, warm - init_bytes, PROT_NONE);
  } else {
    p = mmap(NULL, DW_MEM_RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      dw_free(m);
      return dw_error_set(DW_ERR_NOMEM, "reserve 8 GiB of address space: %s", strerror(errno));
    }
  }
  m->base = p;
  m->max_pages = max_pages;
  if (hooks) m->hooks = *hooks;
  dw_status st = registry_add(m);
  if (st == DW_OK) st = commit_range(m, 0, (uint64_t)initial * DW_MEM_PAGE);
  if (st != DW_OK) {
    dw_mem_destroy(m);
    return st;
  }
  m->pages = initial;
  m->size = (uint64_t)initial * DW_MEM_PAGE;
  *out = m;
  return DW_OK;
}

void dw_mem_destroy(dw_mem *m) {
  if (!m) return;
  if (m->hooks.release)
    for (uint32_t i = 0; i < m->n_ranges; i++)
      m->hooks.release(m->hooks.ud, m->base + m->ranges[i].off, m->ranges[i].n_bytes);
  registry_remove(m);
  /* file-backed ranges would read back their file, not zeros: start over
   * with an anonymous reservation (kept only as address space) */
  if (m->mapped) {
    if (mmap(m->base, m->size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) ==
        MAP_FAILED) {
      munmap(m->base, DW_MEM_RESERVE);
      dw_free(m->ranges);
      dw_free(m);
      return;
    }
    m->size = 0;
  }
  /* Back to the pool when there is room: zero the first POOL_KEEP bytes in
   * place (cheaper than fresh pages), drop the rest. */
  bool pooled_ok = false;
  pthread_mutex_lock(&pool_lock);
  bool room = n_pool < POOL_CAP;
  pthread_mutex_unlock(&pool_lock);
  if (room) {
    uint64_t keep = m->size < POOL_KEEP ? m->size : POOL_KEEP;
    if (m->size > keep) {
      madvise(m->base + keep, m->size - keep, MADV_DONTNEED);
      mprotect(m->base + keep, m->size - keep, PROT_NONE);
    }
    memset(m->base, 0, keep);
    pthread_mutex_lock(&pool_lock);
    if (n_pool < POOL_CAP) { /* still room: another thread may have filled it */
      pool[n_pool++] = (pooled){m->base, keep};
      pooled_ok = true;
    }
    pthread_mutex_unlock(&pool_lock);
  }
  if (!pooled_ok) munmap(m->base, DW_MEM_RESERVE);
  dw_free(m->ranges);
  dw_free(m);
}

dw_status dw_mem_grow(dw_mem *m, uint32_t delta, uint32_t *old_pages) {
  *old_pages = m->pages;
  if (delta == 0) return DW_OK;
  if (delta > m->max_pages - m->pages)
    return dw_error_set(DW_ERR_LIMIT, "memory.grow by %u pages past the maximum of %u pages", delta, m->max_pages);
  uint64_t off = m->size, n = (uint64_t)delta * DW_MEM_PAGE;
  dw_status st = commit_range(m, off, n);
  if (st != DW_OK) return st;
  m->pages += delta;
  m->size += n;
  return DW_OK;
}

dw_status dw_mem_view_array(const dw_mem *m, uint64_t off, uint64_t count, uint64_t elem_bytes,
                            uint64_t align, void **out) {
  *out = NULL;
  /* count and elem_bytes come from 32-bit guest values, so the product fits
   * 64 bits; still, guard for host callers. */
  if (elem_bytes && count > UINT64_MAX / elem_bytes) return DW_ERR_OVERFLOW;
  if (align > 1 && off % align) return DW_ERR_MISALIGNED;
  return dw_mem_view(m, off, count * elem_bytes, out);
}

bool dw_mem_can_map(const dw_mem *m) {
  return m && !m->hooks.pins && !m->hooks.no_file_maps;
}

static dw_status map_private(dw_mem *m, uint64_t off, uint64_t n, int fd, uint64_t file_off) {
  void *tmp = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, (off_t)file_off);
  if (tmp == MAP_FAILED) return dw_error_set(DW_ERR_IO, "map %llu bytes into linear memory: %s",
                                             (unsigned long long)n, strerror(errno));
  if (mremap(tmp, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, m->base + off) == MAP_FAILED) {
    int e = errno;
    munmap(tmp, n);
    return dw_error_set(DW_ERR_IO, "move a mapping into linear memory: %s", strerror(e));
  }
  m->mapped = true;
  return DW_OK;
}

dw_status dw_mem_map_file(dw_mem *m, uint64_t off, uint64_t n, int fd, uint64_t file_off) {
  if (!dw_mem_can_map(m)) return DW_ERR_UNSUPPORTED;
  if (off % DW_MEM_SMALL_PAGE || n % DW_MEM_SMALL_PAGE || file_off % DW_MEM_SMALL_PAGE || off > m->size ||
      n > m->size - off)
    return dw_error_set(DW_ERR_INVALID_ARG, "map_file: range %llu+%llu (file %llu) is not 4 KiB-aligned "
                        "inside the memory", (unsigned long long)off, (unsigned long long)n,
                        (unsigned long long)file_off);
  return n ? map_private(m, off, n, fd, file_off) : DW_OK;
}

void dw_mem_zero(dw_mem *m, uint64_t off, uint64_t n) {
  if (!n || off > m->size || n > m->size - off) return;
  uint8_t *p = m->base + off;
  if (m->hooks.pins) {
    memset(p, 0, n);
  } else if (m->mapped) { /* dropping file-backed pages would bring the file back */
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
    if (mmap(p, n, PROT_READ | PROT_WRITE, flags, -1, 0) == MAP_FAILED) memset(p, 0, n);
  } else if (madvise(p, n, MADV_DONTNEED) != 0) {
    memset(p, 0, n);
  }
}

bool dw_mem_page_is_zero(const uint8_t *p) {
  static const uint8_t zero[DW_MEM_SMALL_PAGE];
  return memcmp(p, zero, DW_MEM_SMALL_PAGE) == 0;
}

dw_status dw_mem_share(dw_mem *src, dw_mem *dst) {
  if (!dw_mem_can_map(src) || !dw_mem_can_map(dst)) return DW_ERR_UNSUPPORTED;
  if (src->size != dst->size)
    return dw_error_set(DW_ERR_INVALID_ARG, "share: memory sizes differ (%llu, %llu)",
                        (unsigned long long)src->size, (unsigned long long)dst->size);
  uint64_t size = src->size;
  if (!size) return DW_OK;
  int fd = memfd_create("driftwood-memory", MFD_CLOEXEC);
  if (fd < 0) return dw_error_set(DW_ERR_IO, "memfd_create: %s", strerror(errno));
  dw_status st = DW_OK;
  uint8_t *w = MAP_FAILED;
  if (ftruncate(fd, (off_t)size) != 0 ||
      (w = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    st = dw_error_set(DW_ERR_NOMEM, "share %llu bytes of linear memory: %s", (unsigned long long)size,
                      strerror(errno));
  } else {
    /* zero chunks stay holes: they cost nothing and read as zeros */
    for (uint64_t o = 0; o < size; o += DW_MEM_SMALL_PAGE)
      if (!dw_mem_page_is_zero(src->base + o)) memcpy(w + o, src->base + o, DW_MEM_SMALL_PAGE);
    munmap(w, size);
    /* dst first: if src's mapping then fails, src is untouched */
    if (!(st = map_private(dst, 0, size, fd, 0))) st = map_private(src, 0, size, fd, 0);
  }
  close(fd);
  return st;
}
