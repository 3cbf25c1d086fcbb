/*
 * snapshot.c — the snapshot container (see snapshot.h): building,
 * checking and decompressing sections.
 */
#include "actor/snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

static const char MAGIC[8] = {'D', 'W', 'S', 'N', 'A', 'P', '\r', '\n'};
enum { SEC_HDR = 4 + 4 + 8 + 8 + 16 };

uint8_t *dw_reserve(dw_bytes *b, size_t n) {
  if (b->oom) return NULL;
  if (b->n + n > b->cap) {
    size_t nc = (b->n + n) * 2 + 256;
    uint8_t *np = dw_realloc(b->p, nc);
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

/* Piecewise checksums: the XXH3-64 of each DW_SNAP_PIECE bytes of a
 * section's stored bytes, computed by several threads, which take pieces in
 * turn. */
enum { MAX_HASH_THREADS = 16, PIECES_PER_THREAD = 4 };

typedef struct piece_job {
  dw_part one;             /* the stored bytes, when they are in one place */
  const dw_part *parts;    /* else the stored bytes in order (the caller's; NULL: one) */
  size_t n_parts;
  uint64_t n;
  uint64_t *out;           /* [n_pieces] */
  size_t n_pieces;
  _Atomic size_t next;
} piece_job;

/* XXH3-64 of bytes [off, off + len) of the parts. */
static uint64_t parts_hash(const dw_part *parts, size_t n_parts, uint64_t off, uint64_t len, XXH3_state_t *st) {
  size_t k = 0;
  while (k < n_parts && off >= parts[k].n) off -= parts[k++].n;
  if (k < n_parts && parts[k].n - off >= len) return XXH3_64bits((const uint8_t *)parts[k].p + off, len);
  XXH3_64bits_reset(st); /* the piece spans parts */
  for (; k < n_parts && len; k++, off = 0) {
    uint64_t take = parts[k].n - off < len ? parts[k].n - off : len;
    XXH3_64bits_update(st, (const uint8_t *)parts[k].p + off, take);
    len -= take;
  }
  return XXH3_64bits_digest(st);
}

static void piece_worker(piece_job *j) {
  const dw_part *parts = j->parts ? j->parts : &j->one; /* not a pointer into j: jobs move */
  size_t np = j->parts ? j->n_parts : 1;
  XXH3_state_t *st = np > 1 ? XXH3_createState() : NULL;
  for (size_t i; (i = atomic_fetch_add(&j->next, 1)) < j->n_pieces;) {
    uint64_t off = (uint64_t)i * DW_SNAP_PIECE, left = j->n - off;
    /* without a state (out of memory) a piece is marked 0: the section then fails its checksum */
    j->out[i] = np > 1 && !st ? 0 : parts_hash(parts, np, off, left < DW_SNAP_PIECE ? left : DW_SNAP_PIECE, st);
  }
  if (st) XXH3_freeState(st);
}

/* The stored bytes are parts[0..n_parts) (NULL: the n bytes at p). */
static bool piece_job_init(piece_job *j, const uint8_t *p, uint64_t n, const dw_part *parts, size_t n_parts) {
  *j = (piece_job){.one = {p, n}, .parts = parts, .n_parts = n_parts, .n = n,
                   .n_pieces = (size_t)((n + DW_SNAP_PIECE - 1) / DW_SNAP_PIECE)};
  atomic_init(&j->next, 0);
  return (j->out = dw_malloc((j->n_pieces ? j->n_pieces : 1) * sizeof *j->out)) != NULL;
}

/* The header fields a section's checksum starts with. */
static void sec_header(uint32_t type, uint32_t flags, uint64_t raw, uint64_t stored_len, uint8_t hdr[24]) {
  dw_bytes b = {hdr, 0, 24, false};
  dw_put_u32(&b, type), dw_put_u32(&b, flags), dw_put_u64(&b, raw), dw_put_u64(&b, stored_len);
}

/* XXH3-128 over the header fields and then either the stored bytes or the
 * big-endian piece digests; stored big-endian (XXH's canonical form). */
static bool sec_digest(const uint8_t hdr[24], const dw_part *stored, size_t n_stored, const piece_job *pieces,
                       uint8_t out[16]) {
  uint8_t *be = NULL;
  if (pieces) {
    if (!(be = dw_malloc((pieces->n_pieces ? pieces->n_pieces : 1) * 8))) return false;
    for (size_t i = 0; i < pieces->n_pieces; i++)
      XXH64_canonicalFromHash((XXH64_canonical_t *)(be + 8 * i), pieces->out[i]);
  }
  XXH3_state_t *st = XXH3_createState();
  if (!st) {
    dw_free(be);
    return false;
  }
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, hdr, 24);
  if (be) XXH3_128bits_update(st, be, pieces->n_pieces * 8);
  else
    for (size_t k = 0; k < n_stored; k++) XXH3_128bits_update(st, stored[k].p, stored[k].n);
  XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits_digest(st));
  XXH3_freeState(st);
  dw_free(be);
  return true;
}

/* Piecewise checksums being computed: one entry a section, and the threads
 * that take their pieces. */
typedef struct deferred {
  uint32_t index, type;
  uint8_t hdr[24], want[16];
  piece_job j;
} deferred;

struct dw_snap_check {
  deferred *d;
  size_t n, cap;
  pthread_t th[MAX_HASH_THREADS];
  size_t n_threads;
};

static void *check_worker(void *arg) {
  dw_snap_check *c = arg;
  for (size_t k = 0; k < c->n; k++) piece_worker(&c->d[k].j);
  return NULL;
}

static size_t online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (size_t)n : 1;
}

/* Starts up to `cap` threads on c's pieces (fewer for few pieces). */
static void check_start(dw_snap_check *c, size_t cap) {
  size_t pieces = 0;
  for (size_t k = 0; k < c->n; k++) pieces += c->d[k].j.n_pieces;
  size_t want = pieces / PIECES_PER_THREAD;
  if (want > cap) want = cap;
  if (want > MAX_HASH_THREADS) want = MAX_HASH_THREADS;
  while (c->n_threads < want && pthread_create(&c->th[c->n_threads], NULL, check_worker, c) == 0) c->n_threads++;
}

/* The calling thread takes what pieces are left, then waits for the threads. */
static void check_wait(dw_snap_check *c) {
  check_worker(c);
  for (size_t i = 0; i < c->n_threads; i++) pthread_join(c->th[i], NULL);
  c->n_threads = 0;
}

/* A section's checksum, on this thread and (piecewise) helpers it starts
 * and joins. False when out of memory. */
static bool sec_hash(uint32_t type, uint32_t flags, uint64_t raw, uint64_t stored_len, const dw_part *stored,
                     size_t n_stored, uint8_t out[16]) {
  uint8_t hdr[24];
  sec_header(type, flags, raw, stored_len, hdr);
  if (!(flags & DW_SNAP_FLAG_PIECEWISE)) return sec_digest(hdr, stored, n_stored, NULL, out);
  deferred d;
  if (!piece_job_init(&d.j, NULL, stored_len, stored, n_stored)) return false;
  dw_snap_check c = {.d = &d, .n = 1};
  check_start(&c, online_cpus() - 1);
  check_wait(&c);
  bool ok = sec_digest(hdr, stored, n_stored, &d.j, out);
  dw_free(d.j.out);
  return ok;
}

static void check_free(dw_snap_check *c) {
  for (size_t k = 0; c && k < c->n; k++) dw_free(c->d[k].j.out);
  if (c) dw_free(c->d);
  dw_free(c);
}

dw_status dw_snap_check_end(dw_snap_check *c) {
  if (!c) return DW_OK;
  check_wait(c);
  dw_status st = DW_OK;
  for (size_t k = 0; !st && k < c->n; k++) {
    uint8_t got[16];
    if (!sec_digest(c->d[k].hdr, NULL, 0, &c->d[k].j, got)) st = dw_error_set(DW_ERR_NOMEM, "snapshot: checksums");
    else if (memcmp(got, c->d[k].want, 16))
      st = dw_error_set(DW_ERR_BAD_SNAPSHOT, "invalid snapshot: section %u (type %u) fails its checksum",
                        c->d[k].index, c->d[k].type);
  }
  check_free(c);
  return st;
}

/* One section, encoded: its 40-byte header (checksum included) and the
 * bytes to store (raw, or *z when compressing paid; the caller frees *z).
 * False when out of memory. */
static bool sec_encode(uint32_t type, const void *raw, size_t n, bool compress, uint8_t hdr[SEC_HDR],
                       const uint8_t **stored, uint64_t *sn, void **z) {
  *z = NULL;
  size_t zn = 0;
  if (compress && n > 4096) {
    size_t bound = ZSTD_compressBound(n);
    if ((*z = dw_malloc(bound))) {
      zn = ZSTD_compress(*z, bound, raw, n, 1);
      if (ZSTD_isError(zn) || zn > n - n / 10) dw_free(*z), *z = NULL;
    }
  }
  *stored = *z ? *z : raw;
  *sn = *z ? zn : n;
  uint32_t flags = (*z ? DW_SNAP_FLAG_ZSTD : 0u) | (*sn >= DW_SNAP_PIECEWISE_MIN ? DW_SNAP_FLAG_PIECEWISE : 0u);
  sec_header(type, flags, n, *sn, hdr);
  dw_part one = {*stored, *sn};
  return sec_hash(type, flags, n, *sn, &one, 1, hdr + 24);
}

static void out_write(dw_snap_out *w, const void *p, size_t n) {
  if (w->st) return;
  if (w->file) {
    w->st = dw_afile_write(w->file, p, n);
  } else {
    dw_put(w->buf, p, n);
    if (w->buf->oom) w->st = dw_error_set(DW_ERR_NOMEM, "snapshot: %zu bytes", w->buf->n + n);
  }
  if (!w->st) w->off += n;
}

void dw_snap_out_begin(dw_snap_out *w) {
  w->off = 0, w->n = 0, w->st = DW_OK;
  uint8_t h[16];
  memcpy(h, MAGIC, 8);
  uint32_t v = DW_SNAP_VERSION, zero = 0;
  memcpy(h + 8, &v, 4), memcpy(h + 12, &zero, 4); /* the count, patched by dw_snap_out_end */
  out_write(w, h, 16);
}

void dw_snap_out_add(dw_snap_out *w, uint32_t type, const void *raw, size_t n, bool compress) {
  if (w->st) return;
  uint8_t hdr[SEC_HDR];
  const uint8_t *stored;
  uint64_t sn;
  void *z;
  if (!sec_encode(type, raw, n, compress, hdr, &stored, &sn, &z)) w->st = dw_error_set(DW_ERR_NOMEM, "snapshot");
  out_write(w, hdr, SEC_HDR);
  out_write(w, stored, sn);
  dw_free(z);
  if (!w->st) w->n++;
}

void dw_snap_out_add_parts(dw_snap_out *w, uint32_t type, const dw_part *parts, size_t n_parts) {
  if (w->st) return;
  uint64_t n = 0;
  for (size_t k = 0; k < n_parts; k++) n += parts[k].n;
  uint32_t flags = n >= DW_SNAP_PIECEWISE_MIN ? DW_SNAP_FLAG_PIECEWISE : 0u;
  uint8_t hdr[SEC_HDR];
  sec_header(type, flags, n, n, hdr);
  if (!sec_hash(type, flags, n, n, parts, n_parts, hdr + 24)) w->st = dw_error_set(DW_ERR_NOMEM, "snapshot");
  out_write(w, hdr, SEC_HDR);
  for (size_t k = 0; k < n_parts; k++) out_write(w, parts[k].p, parts[k].n);
  if (!w->st) w->n++;
}

size_t dw_snap_out_next_payload(const dw_snap_out *w) { return (size_t)w->off + SEC_HDR; }

dw_status dw_snap_out_end(dw_snap_out *w) {
  if (w->st) return w->st;
  if (w->file) return w->st = dw_afile_pwrite(w->file, 12, &w->n, 4);
  memcpy(w->buf->p + 12, &w->n, 4);
  return DW_OK;
}

/* The buffer API, over the writer: the count lives in the header. */
void dw_snap_begin(dw_bytes *out) {
  memset(out, 0, sizeof *out);
  dw_snap_out w = {.buf = out};
  dw_snap_out_begin(&w);
}

void dw_snap_add(dw_bytes *out, uint32_t type, const void *raw, size_t n, bool compress) {
  if (out->oom) return;
  dw_snap_out w = {.buf = out, .off = out->n};
  memcpy(&w.n, out->p + 12, 4);
  dw_snap_out_add(&w, type, raw, n, compress);
  if (w.st) out->oom = true;
  else dw_snap_out_end(&w);
}

dw_status dw_snap_end(dw_bytes *out) {
  if (out->oom) {
    dw_free(out->p);
    memset(out, 0, sizeof *out);
    return dw_error_set(DW_ERR_NOMEM, "snapshot: out of memory");
  }
  return DW_OK;
}

#define BAD DW_SNAP_BAD

/* Remembers section i's checksum to be checked by dw_snap_check_end's threads. */
static bool defer_check(dw_snap_check **cp, uint32_t i, const dw_snap_sec *s, uint32_t flags, const uint8_t want[16]) {
  dw_snap_check *c = *cp;
  if (!c && !(c = *cp = dw_calloc(1, sizeof *c))) return false;
  if (c->n == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 4;
    deferred *d = dw_realloc(c->d, cap * sizeof *d);
    if (!d) return false;
    c->d = d, c->cap = cap;
  }
  deferred *d = &c->d[c->n];
  d->index = i, d->type = s->type;
  sec_header(s->type, flags, s->raw_len, s->stored_len, d->hdr);
  memcpy(d->want, want, 16);
  if (!piece_job_init(&d->j, s->stored, s->stored_len, NULL, 0)) return false;
  c->n++;
  return true;
}

dw_status dw_snap_parse(const uint8_t *buf, size_t n, dw_snap *out) {
  return dw_snap_parse_deferred(buf, n, 0, out, NULL);
}

dw_status dw_snap_parse_deferred(const uint8_t *buf, size_t n, uint32_t defer_types, dw_snap *out,
                                 dw_snap_check **check) {
  dw_snap_check *chk = NULL;
  if (check) *check = NULL;
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
  if (!(out->sec = dw_calloc(out->n ? out->n : 1, sizeof *out->sec))) return dw_error_set(DW_ERR_NOMEM, "snapshot");
  for (uint32_t i = 0; i < out->n; i++) {
    dw_snap_sec *s = &out->sec[i];
    uint32_t flags;
    s->type = dw_get_u32(&r), flags = dw_get_u32(&r), s->raw_len = dw_get_u64(&r), s->stored_len = dw_get_u64(&r);
    s->flags = flags & DW_SNAP_FLAG_ZSTD;
    const uint8_t *h = dw_get(&r, 16);
    if (r.bad || s->stored_len > (uint64_t)(r.end - r.p)) {
      check_free(chk);
      dw_snap_free(out);
      return BAD("section %u runs past the end of the file (truncated?)", i);
    }
    uint32_t known = out->version >= 3 ? DW_SNAP_FLAG_ZSTD | DW_SNAP_FLAG_PIECEWISE : DW_SNAP_FLAG_ZSTD;
    if ((flags & ~known) || s->raw_len > DW_SNAP_MAX_RAW || (!s->flags && s->raw_len != s->stored_len)) {
      check_free(chk);
      dw_snap_free(out);
      return BAD("section %u has an impossible header", i);
    }
    s->stored = dw_get(&r, s->stored_len);
    uint8_t want[16];
    bool defer = check && (flags & DW_SNAP_FLAG_PIECEWISE) && s->type < 32 && (defer_types & (1u << s->type));
    if (defer ? !defer_check(&chk, i, s, flags, h)
              : !sec_hash(s->type, flags, s->raw_len, s->stored_len, &(dw_part){s->stored, s->stored_len}, 1, want)) {
      check_free(chk);
      dw_snap_free(out);
      return dw_error_set(DW_ERR_NOMEM, "snapshot: checksums");
    }
    if (!defer && memcmp(want, h, 16)) {
      check_free(chk);
      uint32_t type = s->type;
      dw_snap_free(out);
      return BAD("section %u (type %u) fails its checksum", i, type);
    }
  }
  if (r.p != r.end) {
    check_free(chk);
    dw_snap_free(out);
    return BAD("%zu bytes of trailing data", (size_t)(r.end - r.p));
  }
  if (chk) { /* on half the CPUs: the caller goes on with its own work (a thaw's copies) */
    check_start(chk, online_cpus() / 2);
    *check = chk;
  }
  return DW_OK;
}

void dw_snap_free(dw_snap *s) {
  dw_free(s->sec);
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
  uint8_t *p = dw_malloc(s->raw_len ? s->raw_len : 1);
  if (!p) return dw_error_set(DW_ERR_NOMEM, "snapshot: %llu bytes", (unsigned long long)s->raw_len);
  size_t got = ZSTD_decompress(p, s->raw_len, s->stored, s->stored_len);
  if (ZSTD_isError(got) || got != s->raw_len) {
    dw_free(p);
    return BAD("a compressed section does not decompress");
  }
  *raw = p;
  *owned = true;
  return DW_OK;
}

const dw_snap_sec *dw_snap_find(const dw_snap *s, uint32_t type) {
  for (uint32_t i = 0; i < s->n; i++)
    if (s->sec[i].type == type) return &s->sec[i];
  return NULL;
}
