/*
 * snapshot.c — the snapshot container (see snapshot.h): building,
 * checking and decompressing sections.
 */
#include "actor/snapshot.h"

#include <xxhash.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

static const char MAGIC[8] = {'D', 'W', 'S', 'N', 'A', 'P', '\r', '\n'};
enum { SEC_HDR = 4 + 4 + 8 + 8 + 16 };

uint8_t *dw_reserve(dw_bytes *b, size_t n) {
  if (b->oom) return NULL;
  if (b->n + n > b->cap) {
    size_t nc = (b->n + n) * 2 + 256;
    uint8_t *np = realloc(b->p, nc);
    if (!np) {
      b->oom = true;
      return NULL;
    }
    b->p = np, b->cap = nc;
  }
  b->n += n;
  return b->p + b->n - n;
}

void dw_put(dw_bytes *b, const void *d, size_t n) {
  uint8_t *p = dw_reserve(b, n);
  if (p && n) memcpy(p, d, n);
}

void dw_put_u32(dw_bytes *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  dw_put(b, x, 4);
}

void dw_put_u64(dw_bytes *b, uint64_t v) {
  dw_put_u32(b, (uint32_t)v);
  dw_put_u32(b, (uint32_t)(v >> 32));
}

void dw_put_str(dw_bytes *b, const char *s) {
  size_t n = strlen(s);
  dw_put_u32(b, (uint32_t)n);
  dw_put(b, s, n);
}

const uint8_t *dw_get(dw_reader *r, size_t n) {
  if (r->bad || (size_t)(r->end - r->p) < n) {
    r->bad = true;
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  return p;
}

uint32_t dw_get_u32(dw_reader *r) {
  const uint8_t *p = dw_get(r, 4);
  return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}

uint64_t dw_get_u64(dw_reader *r) {
  uint64_t lo = dw_get_u32(r);
  return lo | (uint64_t)dw_get_u32(r) << 32;
}

void dw_get_str(dw_reader *r, char *out, size_t cap) {
  uint32_t n = dw_get_u32(r);
  const uint8_t *p = n < cap ? dw_get(r, n) : NULL;
  if (!p) {
    r->bad = true;
    out[0] = 0;
    return;
  }
  memcpy(out, p, n);
  out[n] = 0;
  if (memchr(out, 0, n)) r->bad = true;
}

/* XXH3-128 over the section header fields and the stored bytes, stored
 * big-endian (XXH's canonical form). */
static void sec_hash(uint32_t type, uint32_t flags, uint64_t raw, uint64_t stored_len, const uint8_t *stored,
                     uint8_t out[16]) {
  uint8_t hdr[24];
  dw_bytes b = {hdr, 0, sizeof hdr, false};
  dw_put_u32(&b, type), dw_put_u32(&b, flags), dw_put_u64(&b, raw), dw_put_u64(&b, stored_len);
  XXH3_state_t *st = XXH3_createState();
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, hdr, sizeof hdr);
  XXH3_128bits_update(st, stored, stored_len);
  XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits_digest(st));
  XXH3_freeState(st);
}

void dw_snap_begin(dw_bytes *out) {
  memset(out, 0, sizeof *out);
  dw_put(out, MAGIC, 8);
  dw_put_u32(out, DW_SNAP_VERSION);
  dw_put_u32(out, 0); /* patched by dw_snap_end */
}

void dw_snap_add(dw_bytes *out, uint32_t type, const void *raw, size_t n, bool compress) {
  void *z = NULL;
  size_t zn = 0;
  if (compress && n > 4096) {
    size_t bound = ZSTD_compressBound(n);
    if ((z = malloc(bound))) {
      zn = ZSTD_compress(z, bound, raw, n, 1);
      if (ZSTD_isError(zn) || zn > n - n / 10) free(z), z = NULL;
    }
  }
  const uint8_t *stored = z ? z : raw;
  uint64_t sn = z ? zn : n;
  uint8_t h[16];
  sec_hash(type, z ? 1u : 0u, n, sn, stored, h);
  dw_put_u32(out, type), dw_put_u32(out, z ? 1u : 0u), dw_put_u64(out, n), dw_put_u64(out, sn);
  dw_put(out, h, 16);
  dw_put(out, stored, sn);
  free(z);
  if (!out->oom) { /* count it */
    uint32_t c;
    memcpy(&c, out->p + 12, 4);
    c++;
    memcpy(out->p + 12, &c, 4);
  }
}

size_t dw_snap_next_payload(const dw_bytes *out) { return out->n + SEC_HDR; }

dw_status dw_snap_end(dw_bytes *out) {
  if (out->oom) {
    free(out->p);
    memset(out, 0, sizeof *out);
    return dw_error_set(DW_ERR_NOMEM, "snapshot: out of memory");
  }
  return DW_OK;
}

#define BAD(...) dw_error_set(DW_ERR_BAD_SNAPSHOT, "invalid snapshot: " __VA_ARGS__)

dw_status dw_snap_parse(const uint8_t *buf, size_t n, dw_snap *out) {
  memset(out, 0, sizeof *out);
  dw_reader r = {buf, buf + n, false};
  const uint8_t *m = dw_get(&r, 8);
  if (!m || memcmp(m, MAGIC, 8)) return BAD("not a Driftwood snapshot (bad magic)");
  out->version = dw_get_u32(&r);
  out->n = dw_get_u32(&r);
  if (r.bad) return BAD("truncated header");
  if (out->version < DW_SNAP_MIN_VERSION || out->version > DW_SNAP_VERSION)
    return dw_error_set(DW_ERR_UNSUPPORTED, "snapshot format version %u is not supported (this build reads %d to %d)",
                        out->version, DW_SNAP_MIN_VERSION, DW_SNAP_VERSION);
  if (out->n > DW_SNAP_MAX_SECTIONS || out->n > (n - 16) / SEC_HDR) return BAD("%u sections cannot fit", out->n);
  if (!(out->sec = calloc(out->n ? out->n : 1, sizeof *out->sec))) return dw_error_set(DW_ERR_NOMEM, "snapshot");
  for (uint32_t i = 0; i < out->n; i++) {
    dw_snap_sec *s = &out->sec[i];
    s->type = dw_get_u32(&r), s->flags = dw_get_u32(&r), s->raw_len = dw_get_u64(&r), s->stored_len = dw_get_u64(&r);
    const uint8_t *h = dw_get(&r, 16);
    if (r.bad || s->stored_len > (uint64_t)(r.end - r.p)) {
      dw_snap_free(out);
      return BAD("section %u runs past the end of the file (truncated?)", i);
    }
    if (s->flags > 1 || s->raw_len > DW_SNAP_MAX_RAW || (!s->flags && s->raw_len != s->stored_len)) {
      dw_snap_free(out);
      return BAD("section %u has an impossible header", i);
    }
    s->stored = dw_get(&r, s->stored_len);
    uint8_t want[16];
    sec_hash(s->type, s->flags, s->raw_len, s->stored_len, s->stored, want);
    if (memcmp(want, h, 16)) {
      uint32_t type = s->type;
      dw_snap_free(out);
      return BAD("section %u (type %u) fails its checksum", i, type);
    }
  }
  if (r.p != r.end) {
    dw_snap_free(out);
    return BAD("%zu bytes of trailing data", (size_t)(r.end - r.p));
  }
  return DW_OK;
}

void dw_snap_free(dw_snap *s) {
  free(s->sec);
  memset(s, 0, sizeof *s);
}

dw_status dw_snap_payload(const dw_snap_sec *s, const uint8_t **raw, bool *owned) {
  *owned = false;
  if (!s->flags) {
    *raw = s->stored;
    return DW_OK;
  }
  unsigned long long sz = ZSTD_getFrameContentSize(s->stored, s->stored_len);
  if (sz != s->raw_len) return BAD("a compressed section's size disagrees with its header");
  uint8_t *p = malloc(s->raw_len ? s->raw_len : 1);
  if (!p) return dw_error_set(DW_ERR_NOMEM, "snapshot: %llu bytes", (unsigned long long)s->raw_len);
  size_t got = ZSTD_decompress(p, s->raw_len, s->stored, s->stored_len);
  if (ZSTD_isError(got) || got != s->raw_len) {
    free(p);
    return BAD("a compressed section does not decompress");
  }
  *raw = p;
  *owned = true;
  return DW_OK;
}
