/*
 * mem.h — WebAssembly linear memory: reserve + guard, commit on grow,
 * checked views, and registration of committed ranges with a backend.
 *
 * Invariants:
 *  1. A memory reserves DW_MEM_RESERVE bytes (4 GiB addressable + 4 GiB
 *     guard), PROT_NONE; [base, base + size) is read/write, the rest faults.
 *  2. base never moves: a pointer handed to a backend stays valid after grow.
 *  3. Every committed range goes through hooks.commit exactly once, and
 *     through hooks.release once before the memory is unmapped.
 *  4. The only way to turn a guest (offset, length) into a host pointer is
 *     dw_mem_view*(): checked in 64-bit arithmetic against the current size.
 *  5. pages <= 65535: wasm-rt stores the byte size in a uint32_t, so a full
 *     4 GiB memory cannot be represented; a grow past that fails cleanly.
 *  6. Copy-on-write: parts of [base, base + size) may be private mappings of
 *     a file (a snapshot, or the memfd a fork shares); they read like any
 *     other page and the first write to a page copies it. Memories whose
 *     hooks pin their pages (registered with a GPU) never get such
 *     mappings: their pages must not move. A mapped memory is reset to anonymous
 *     pages before its reservation is reused.
 *
 * Threads: one memory is grown by one thread at a time (its instance's);
 * views may be taken from any thread. The reservation registry (used by the
 * fault handler) is lock-free to read and locked to write.
 */
#ifndef DW_MEM_H
#define DW_MEM_H

#include "base/base.h"

#include <stdbool.h>
#include <stdint.h>

#define DW_MEM_PAGE (64u * 1024u)
#define DW_MEM_MAX_PAGES 65535u
#define DW_MEM_RESERVE (8ull << 30)
#define DW_MEM_SMALL_PAGE 4096u /* the OS page: the grain of mappings and snapshots */

/* Called after a range becomes accessible / before it is unmapped. A commit
 * hook failure makes the grow fail and leaves the memory unchanged. */
typedef struct dw_mem_hooks {
  void *ud;                                              /* borrowed */
  dw_status (*commit)(void *ud, void *ptr, size_t n_bytes);  /* optional */
  void (*release)(void *ud, void *ptr, size_t n_bytes);      /* optional */
  bool pins;  /* commit pins the pages (e.g. for a GPU): they must never be
                 remapped, so copy-on-write mappings are refused */
  bool no_file_maps; /* copy instead of mapping files copy-on-write (the
                        API's DRIFTWOOD_MEM_COW=0, for measuring) */
} dw_mem_hooks;

typedef struct dw_mem_range {
  uint64_t off, n_bytes;
} dw_mem_range;

typedef struct dw_mem {
  uint8_t *base;         /* owned: the DW_MEM_RESERVE-byte reservation */
  uint64_t size;         /* bytes committed (pages * DW_MEM_PAGE) */
  uint32_t pages;        /* current page count */
  uint32_t max_pages;    /* module maximum clamped by the limit */
  dw_mem_hooks hooks;
  dw_mem_range *ranges;  /* owned: committed ranges handed to hooks.commit */
  uint32_t n_ranges, cap_ranges;
  bool mapped;           /* some range is a private file mapping (invariant 6) */
} dw_mem;

/* Reserves a memory of `initial` pages, growable to min(max_pages,
 * limit_bytes / 64 KiB, 65535). limit_bytes == 0 means no extra limit. */
DW_HIDDEN dw_status dw_mem_create(uint32_t initial, uint32_t max_pages, uint64_t limit_bytes,
                                  const dw_mem_hooks *hooks, dw_mem **out);
DW_HIDDEN void dw_mem_destroy(dw_mem *m);
/* Grows by delta pages; *old_pages gets the previous count. Fails (memory
 * unchanged) past max_pages or when commit/registration fails. */
DW_HIDDEN dw_status dw_mem_grow(dw_mem *m, uint32_t delta, uint32_t *old_pages);

/* Whether copy-on-write mappings are allowed for m: hooks that do not pin, and
 * DRIFTWOOD_MEM_COW is not "0" (a switch for comparisons and for snapshot
 * files on storage that may change under a mapping). */
DW_HIDDEN bool dw_mem_can_map(const dw_mem *m);
/* Maps file bytes [file_off, file_off + n) of fd privately over
 * [off, off + n): reads come from the page cache, shared with every other
 * mapping of the file; a write copies the page. off, file_off and n must be
 * multiples of 4 KiB inside the committed size. DW_ERR_UNSUPPORTED when
 * !dw_mem_can_map(m) (the caller copies instead). The file must not shrink
 * while mapped. */
DW_HIDDEN dw_status dw_mem_map_file(dw_mem *m, uint64_t off, uint64_t n, int fd, uint64_t file_off);
/* Makes dst (same size as src) a copy-on-write copy of src: src's non-zero
 * 4 KiB chunks are copied once into an anonymous shared file (memfd), and
 * both memories then map it privately, so the pages are stored once until
 * either side writes them. DW_ERR_UNSUPPORTED when either memory cannot be
 * mapped (the caller copies instead). */
DW_HIDDEN dw_status dw_mem_share(dw_mem *src, dw_mem *dst);

/* Whether the DW_MEM_SMALL_PAGE bytes at p are all zero. */
DW_HIDDEN bool dw_mem_page_is_zero(const uint8_t *p);
/* Zeroes [off, off + n) (page-aligned, inside the size) as cheaply as the
 * memory allows: dropped pages (they read back as zeros and cost no
 * memory), anonymous pages over a file mapping, or memset where the pages
 * are pinned (dropping them would leave a device seeing the old ones). */
DW_HIDDEN void dw_mem_zero(dw_mem *m, uint64_t off, uint64_t n);

/* The memory whose reservation starts at base, or NULL. */
DW_HIDDEN dw_mem *dw_mem_from_base(const void *base);
/* Whether addr lies inside any live reservation (async-signal-safe). */
DW_HIDDEN bool dw_mem_owns_addr(const void *addr);

/* Checked view of guest bytes [off, off + n_bytes). */
static inline dw_status dw_mem_view(const dw_mem *m, uint64_t off, uint64_t n_bytes, void **out) {
  if (off > m->size || n_bytes > m->size - off) {
    *out = 0;
    return DW_ERR_OUT_OF_BOUNDS;
  }
  *out = m->base + off;
  return DW_OK;
}

/* Checked view of an array of `count` elements of `elem_bytes` each, whose
 * start must be a multiple of `align` (1 = any). */
DW_HIDDEN dw_status dw_mem_view_array(const dw_mem *m, uint64_t off, uint64_t count,
                                      uint64_t elem_bytes, uint64_t align, void **out);

#endif
