/*
 * snapshot.h — the snapshot container: a versioned, little-endian sequence
 * of typed sections, each with its own checksum (XXH3-128 over its header
 * and payload) and optionally zstd-compressed; plus a bounded byte reader and
 * writer for section payloads.
 *
 * File layout: "DWSNAP\r\n" | u32 version (4; 1 to 3 are still read) | u32 n_sections |
 * sections, each: u32 type | u32 flags | u64 raw_len | u64 stored_len |
 * 16-byte checksum | stored_len bytes. Flags: 1 = zstd; 2 (version 3) =
 * piecewise checksum. The checksum is XXH3-128 over the four header fields
 * (24 bytes, little-endian) followed by the stored bytes, or, piecewise, by
 * the big-endian XXH3-64 of each DW_SNAP_PIECE bytes of them (the last piece
 * may be shorter), so a large section is checked by many threads at once.
 * The writer uses piecewise checksums for sections of DW_SNAP_PIECEWISE_MIN
 * bytes or more.
 *
 * Invariants: parsing never reads outside the buffer; every length is
 * checked before use; a decompressed section is exactly raw_len bytes
 * (and raw_len is capped) or the snapshot is refused.
 */
#ifndef DW_SNAPSHOT_H
#define DW_SNAPSHOT_H

#include "base/base.h"

#include <stdbool.h>

#define DW_SNAP_VERSION 4     /* 2 added PAGES, 3 piecewise checksums, 4 HANDLES */
#define DW_SNAP_MIN_VERSION 1
#define DW_SNAP_MAX_SECTIONS 4096
#define DW_SNAP_MAX_RAW (64ull << 30)
#define DW_SNAP_FLAG_ZSTD 1u
#define DW_SNAP_FLAG_PIECEWISE 2u
#define DW_SNAP_PIECE (1u << 20)
#define DW_SNAP_PIECEWISE_MIN (8u << 20)

enum dw_snap_type {
  DW_SEC_META = 1, DW_SEC_MODULE = 2, DW_SEC_MEMORY = 3, DW_SEC_GLOBALS = 4, DW_SEC_MODELS = 5, DW_SEC_SESSION = 6,
  DW_SEC_TABLES = 7, DW_SEC_PAGES = 8, DW_SEC_HANDLES = 9,
};

/* A growable byte buffer with little-endian writers. */
typedef struct dw_bytes {
  uint8_t *p;
  size_t n, cap;
  bool oom;
} dw_bytes;

DW_HIDDEN void dw_put(dw_bytes *b, const void *d, size_t n);
/* Appends n bytes the caller fills; NULL (and oom set) when out of memory. */
DW_HIDDEN uint8_t *dw_reserve(dw_bytes *b, size_t n);
DW_HIDDEN void dw_put_u32(dw_bytes *b, uint32_t v);
DW_HIDDEN void dw_put_u64(dw_bytes *b, uint64_t v);
DW_HIDDEN void dw_put_str(dw_bytes *b, const char *s);

/* A bounded reader: reading past the end sets bad and yields zeros. */
typedef struct dw_reader {
  const uint8_t *p, *end;
  bool bad;
} dw_reader;

DW_HIDDEN const uint8_t *dw_get(dw_reader *r, size_t n);
DW_HIDDEN uint32_t dw_get_u32(dw_reader *r);
DW_HIDDEN uint64_t dw_get_u64(dw_reader *r);
/* A string of at most cap-1 bytes, NUL-terminated into out. */
DW_HIDDEN void dw_get_str(dw_reader *r, char *out, size_t cap);

/* A container written as it is built, each section as soon as it is
 * added, to a buffer or an atomic file (dw_afile): no section waits in
 * memory for the others. Set buf or file, then begin, add…, end (which
 * fills in the section count); the first failure sticks in st. */
typedef struct dw_snap_out {
  dw_bytes *buf;     /* the buffer appended to, or NULL */
  dw_afile *file;    /* else the file */
  uint64_t off;      /* bytes written */
  uint32_t n;        /* sections written */
  dw_status st;
} dw_snap_out;
DW_HIDDEN void dw_snap_out_begin(dw_snap_out *w);
DW_HIDDEN void dw_snap_out_add(dw_snap_out *w, uint32_t type, const void *raw, size_t n, bool compress);
/* An uncompressed section whose payload is the parts in order, written
 * (and checksummed) from where they lie: guest memory is never copied into
 * a buffer on its way to a file. */
typedef struct dw_part {
  const void *p;
  uint64_t n;
} dw_part;
DW_HIDDEN void dw_snap_out_add_parts(dw_snap_out *w, uint32_t type, const dw_part *parts, size_t n_parts);
/* Where the payload of the next uncompressed section will start. */
DW_HIDDEN size_t dw_snap_out_next_payload(const dw_snap_out *w);
DW_HIDDEN dw_status dw_snap_out_end(dw_snap_out *w);

/* Builds a container in a buffer (for tests and small ones): sections are
 * appended in order. */
DW_HIDDEN void dw_snap_begin(dw_bytes *out);
/* compress: try zstd (level 1) and keep it only if it saves >= 10%. */
DW_HIDDEN void dw_snap_add(dw_bytes *out, uint32_t type, const void *raw, size_t n, bool compress);
DW_HIDDEN dw_status dw_snap_end(dw_bytes *out);

typedef struct dw_snap_sec {
  uint32_t type, flags;   /* flags: DW_SNAP_FLAG_ZSTD or 0 (how it is checked is the parser's business) */
  uint64_t raw_len, stored_len;
  const uint8_t *stored;
} dw_snap_sec;

typedef struct dw_snap {
  uint32_t version, n;
  dw_snap_sec *sec;    /* owned */
} dw_snap;

/* Checks the header and every section's bounds and checksum. */
DW_HIDDEN dw_status dw_snap_parse(const uint8_t *buf, size_t n, dw_snap *out);

/* Checksums still being computed (dw_snap_parse_deferred). */
typedef struct dw_snap_check dw_snap_check;

/* dw_snap_parse, except that the piecewise checksums of sections whose type
 * is in defer_types (a mask of 1u << type) are only started: threads on up
 * to half the CPUs compute them while the caller goes on, and *check (NULL
 * when nothing was deferred) says how they came out; dw_snap_check_end
 * takes what pieces are left on the calling thread before it waits. The caller may read
 * those sections meanwhile (bounds are checked; contents are not yet
 * trusted), must not free or unmap buf before dw_snap_check_end, and must
 * call it on every path. */
DW_HIDDEN dw_status dw_snap_parse_deferred(const uint8_t *buf, size_t n, uint32_t defer_types, dw_snap *out,
                                           dw_snap_check **check);
/* Waits for the deferred checksums and frees check (NULL: DW_OK);
 * DW_ERR_BAD_SNAPSHOT names the first section that fails. */
DW_HIDDEN dw_status dw_snap_check_end(dw_snap_check *check);
DW_HIDDEN void dw_snap_free(dw_snap *s);
/* The first section of `type` in s, or NULL. */
DW_HIDDEN const dw_snap_sec *dw_snap_find(const dw_snap *s, uint32_t type);
/* A corrupt or inconsistent snapshot: DW_ERR_BAD_SNAPSHOT with a message. */
#define DW_SNAP_BAD(...) dw_error_set(DW_ERR_BAD_SNAPSHOT, "invalid snapshot: " __VA_ARGS__)
/* The raw payload of a section (decompressed when needed; *owned tells
 * whether the caller must free it). */
DW_HIDDEN dw_status dw_snap_payload(const dw_snap_sec *s, const uint8_t **raw, bool *owned);

#endif
