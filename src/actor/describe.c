/*
 * describe.c — what a snapshot holds, read without thawing it
 * (dw_snapshot_describe for `driftwood snapshot`, dw_snapshot_module_hash
 * for a host that picks the module to thaw with).
 */
#define _GNU_SOURCE
#include "actor/actor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


dw_status dw_snapshot_describe(const char *path, char *buf, size_t cap) {
  uint8_t *file;
  size_t n;
  dw_status st = dw_file_read(path, &file, &n);
  if (st) return st;
  dw_snap s;
  if ((st = dw_snap_parse(file, n, &s))) {
    dw_free(file);
    return dw_error_wrap(st, "%s", path);
  }
  size_t o = 0;
#define P(...) (o += (size_t)snprintf(buf + (o < cap ? o : cap), o < cap ? cap - o : 0, __VA_ARGS__))
  P("snapshot %s: format version %u, %zu bytes, %u sections\n", path, s.version, n, s.n);
  static const char *const names[] = {"?",      "meta",    "module", "memory", "globals",
                                      "models", "session", "tables", "pages",  "handles"};
  for (uint32_t i = 0; i < s.n; i++) {
    const dw_snap_sec *c = &s.sec[i];
    P("  section %-8s %10llu bytes%s", c->type < 10 ? names[c->type] : "unknown",
      (unsigned long long)c->stored_len, c->flags ? " (zstd)" : "");
    if (c->flags) P(", %llu raw", (unsigned long long)c->raw_len);
    P("\n");
    dw_reader r = {c->stored, c->stored + c->stored_len, false};
    if (c->type == DW_SEC_META && !c->flags) {
      const uint8_t *h = dw_get(&r, 64);
      uint32_t pages = dw_get_u32(&r), nm = dw_get_u32(&r), ns = dw_get_u32(&r);
      char mpath[4096];
      dw_get_str(&r, mpath, sizeof mpath);
      if (!r.bad)
        P("    module sha256 %.64s (%s)\n    memory %u pages (%u KiB), %u models, %u sessions\n", (const char *)h, mpath,
          pages, pages * 64, nm, ns);
    } else if (c->type == DW_SEC_PAGES && !c->flags) {
      uint64_t size = dw_get_u64(&r);
      dw_get_u32(&r);
      uint32_t runs = dw_get_u32(&r);
      if (!r.bad)
        P("    memory %llu KiB: %u runs of 4 KiB pages, page-aligned (a thaw maps them copy-on-write)\n",
          (unsigned long long)(size / 1024), runs);
    } else if (c->type == DW_SEC_MODELS && !c->flags) {
      uint32_t nm = dw_get_u32(&r);
      for (uint32_t k = 0; k < nm && !r.bad; k++) {
        char name[256], mpath[4096], hex[17];
        dw_get_str(&r, name, sizeof name);
        dw_get_str(&r, mpath, sizeof mpath);
        uint32_t loaded = dw_get_u32(&r);
        const uint8_t *fp = dw_get(&r, 64);
        if (r.bad) break;
        dw_hex(fp, 8, hex);
        P("    model %u '%s' %s%s%s\n", k + 1, name, mpath, loaded ? ", fingerprint " : " (not loaded)",
          loaded ? hex : "");
      }
    } else if (c->type == DW_SEC_HANDLES && !c->flags) {
      uint32_t nh = dw_get_u32(&r);
      P("    %u model handles:", nh);
      for (uint32_t h = 1; h <= nh && !r.bad; h++) {
        uint32_t e = dw_get_u32(&r);
        if (!r.bad) P(" %u = model %u%s", h, e + 1, h < nh ? "," : "");
      }
      P("\n");
    } else if (c->type == DW_SEC_SESSION && !c->flags) {
      uint32_t slot = dw_get_u32(&r), mh = dw_get_u32(&r), n_ctx = dw_get_u32(&r), n_past = dw_get_u32(&r);
      uint32_t nl = dw_get_u32(&r), kvd = dw_get_u32(&r);
      if (!r.bad)
        P("    session %u: model handle %u, %u of %u positions, KV %u layers x %u f32\n", slot, mh, n_past, n_ctx, nl, kvd);
    }
  }
#undef P
  dw_snap_free(&s);
  dw_free(file);
  if (o >= cap) return dw_error_set(DW_ERR_LIMIT, "description of %zu bytes", o);
  return DW_OK;
}

dw_status dw_snapshot_module_hash(const uint8_t *buf, size_t len, char out[65], bool *embedded) {
  dw_snap s;
  out[0] = 0;
  dw_status st = dw_snap_parse(buf, len, &s);
  if (st) return st;
  const dw_snap_sec *meta = dw_snap_find(&s, DW_SEC_META);
  if (!meta || meta->flags || meta->stored_len < 64) {
    dw_snap_free(&s);
    return DW_SNAP_BAD("the meta section is missing");
  }
  memcpy(out, meta->stored, 64);
  out[64] = 0;
  for (int i = 0; i < 64; i++)
    if (!((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f'))) {
      dw_snap_free(&s);
      out[0] = 0;
      return DW_SNAP_BAD("the module hash is not hexadecimal");
    }
  if (embedded) *embedded = dw_snap_find(&s, DW_SEC_MODULE) != NULL;
  dw_snap_free(&s);
  return DW_OK;
}
