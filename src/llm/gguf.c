/*
 * gguf.c — the GGUF parser (see gguf.h for what it guarantees).
 *
 * Every read goes through a cursor bounded by the bytes remaining, every
 * count is compared with what the remaining bytes could hold before it
 * drives an allocation or a loop, and duplicate detection uses a hash set,
 * so hostile files cost time linear in their size.
 */
#define _GNU_SOURCE
#include "llm/gguf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- type tables ------------------------------------------------------- */

typedef struct tinfo {
  const char *name;
  uint16_t block, bytes;
} tinfo;

static const tinfo types[GGML_NTYPES_MAX] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},
};

uint32_t dw_ggml_block_size(uint32_t t) { return t < GGML_NTYPES_MAX ? types[t].block : 0; }
uint32_t dw_ggml_type_size(uint32_t t) { return t < GGML_NTYPES_MAX ? types[t].bytes : 0; }
const char *dw_ggml_type_name(uint32_t t) {
  return t < GGML_NTYPES_MAX && types[t].name ? types[t].name : "unknown";
}

static const uint8_t scalar_size[GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ---- bounded cursor ---------------------------------------------------- */

typedef struct cur {
  const uint8_t *p, *end, *base;
} cur;

static uint64_t left(const cur *c) { return (uint64_t)(c->end - c->p); }

#define BAD(...) dw_error_set(DW_ERR_BAD_MODEL, "invalid GGUF: " __VA_ARGS__)

static dw_status rd(cur *c, void *out, size_t n, const char *what) {
  if (left(c) < n)
    return BAD("%s at offset %zu runs past the end of the file", what, (size_t)(c->p - c->base));
  memcpy(out, c->p, n);
  c->p += n;
  return DW_OK;
}

static dw_status rd_str(cur *c, dw_gguf_str *s, const char *what) {
  uint64_t n = 0;
  dw_status st = rd(c, &n, 8, what);
  if (st) return st;
  if (n > left(c))
    return BAD("%s at offset %zu: length %llu exceeds the %llu bytes left", what, (size_t)(c->p - c->base) - 8,
               (unsigned long long)n, (unsigned long long)left(c));
  s->p = (const char *)c->p;
  s->n = n;
  c->p += n;
  return DW_OK;
}

/* ---- hash set of byte strings (duplicate keys / names) -------------------- */

typedef struct hset {
  uint64_t cap;
  dw_gguf_str *slots;
} hset;

static uint64_t hash_bytes(const char *p, uint64_t n) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
  return h;
}

static bool hset_init(hset *h, uint64_t n) {
  h->cap = 16;
  while (h->cap < n * 2) h->cap <<= 1;
  h->slots = dw_calloc(h->cap, sizeof *h->slots);
  return h->slots != NULL;
}

/* Returns false if s was already present. */
static bool hset_add(hset *h, dw_gguf_str s) {
  for (uint64_t i = hash_bytes(s.p, s.n) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
    dw_gguf_str *e = &h->slots[i];
    if (!e->p) {
      *e = s;
      return true;
    }
    if (e->n == s.n && memcmp(e->p, s.p, s.n) == 0) return false;
  }
}

/* ---- parsing ----------------------------------------------------------- */

static dw_status parse_value(cur *c, dw_gguf_kv *kv) {
  dw_status st;
  kv->n = 1;
  if (kv->type == GGUF_STRING) {
    dw_gguf_str s;
    if ((st = rd_str(c, &s, "string value"))) return st;
    kv->val = (const uint8_t *)s.p - 8;
    kv->val_bytes = s.n + 8;
    return DW_OK;
  }
  if (kv->type != GGUF_ARRAY) {
    kv->val = c->p;
    kv->val_bytes = scalar_size[kv->type];
    if (left(c) < kv->val_bytes) return BAD("value of '%.*s' runs past the end", (int)kv->key.n, kv->key.p);
    if (kv->type == GGUF_BOOL && *c->p > 1) return BAD("bool '%.*s' holds %u", (int)kv->key.n, kv->key.p, *c->p);
    c->p += kv->val_bytes;
    return DW_OK;
  }
  uint32_t et = 0;
  uint64_t n = 0;
  if ((st = rd(c, &et, 4, "array type")) || (st = rd(c, &n, 8, "array count"))) return st;
  if (et >= GGUF_NTYPES) return BAD("array '%.*s' has unknown element type %u", (int)kv->key.n, kv->key.p, et);
  if (et == GGUF_ARRAY) return BAD("array '%.*s' is nested (not supported)", (int)kv->key.n, kv->key.p);
  kv->arr_type = et;
  kv->n = n;
  kv->val = c->p;
  if (et == GGUF_STRING) {
    /* each element needs at least its 8-byte length */
    if (n > left(c) / 8) return BAD("array '%.*s' count %llu exceeds the file", (int)kv->key.n, kv->key.p,
                                    (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
      dw_gguf_str s;
      if ((st = rd_str(c, &s, "string array element"))) return st;
    }
  } else {
    uint64_t es = scalar_size[et];
    if (n > left(c) / es)
      return BAD("array '%.*s' count %llu exceeds the file", (int)kv->key.n, kv->key.p, (unsigned long long)n);
    if (et == GGUF_BOOL)
      for (uint64_t i = 0; i < n; i++)
        if (c->p[i] > 1) return BAD("bool array '%.*s' holds %u", (int)kv->key.n, kv->key.p, c->p[i]);
    c->p += n * es;
  }
  kv->val_bytes = (uint64_t)(c->p - kv->val);
  return DW_OK;
}

static bool kv_uint(uint32_t type, const uint8_t *v, uint64_t *out) {
  switch (type) {
  case GGUF_U8: *out = v[0]; return true;
  case GGUF_U16: { uint16_t x; memcpy(&x, v, 2); *out = x; return true; }
  case GGUF_U32: { uint32_t x; memcpy(&x, v, 4); *out = x; return true; }
  case GGUF_U64: memcpy(out, v, 8); return true;
  case GGUF_I8: { int8_t x = (int8_t)v[0]; *out = (uint64_t)x; return x >= 0; }
  case GGUF_I16: { int16_t x; memcpy(&x, v, 2); *out = (uint64_t)x; return x >= 0; }
  case GGUF_I32: { int32_t x; memcpy(&x, v, 4); *out = (uint64_t)x; return x >= 0; }
  case GGUF_I64: { int64_t x; memcpy(&x, v, 8); *out = (uint64_t)x; return x >= 0; }
  default: return false;
  }
}

static dw_status parse(dw_gguf *g) {
  cur c = {g->buf, g->buf + g->size, g->buf};
  uint32_t magic;
  uint64_t nt = 0, nkv = 0;
  dw_status st;
  if (g->size < 24) return BAD("the file is %zu bytes, shorter than the 24-byte header", g->size);
  if ((st = rd(&c, &magic, 4, "magic"))) return st;
  if (memcmp(g->buf, "GGUF", 4) != 0) return BAD("bad magic (not a GGUF file)");
  if ((st = rd(&c, &g->version, 4, "version"))) return st;
  if ((g->version & 0xFFFF) == 0 && g->version != 0)
    return dw_error_set(DW_ERR_UNSUPPORTED, "big-endian GGUF files are not supported");
  if (g->version < 2 || g->version > 3)
    return dw_error_set(DW_ERR_UNSUPPORTED, "GGUF version %u is not supported (2 and 3 are)", g->version);
  if ((st = rd(&c, &nt, 8, "tensor count")) || (st = rd(&c, &nkv, 8, "kv count"))) return st;
  /* a KV record takes >= 8+4+1 bytes, a tensor info >= 8+4+8+4+8 */
  if (nkv > left(&c) / 13) return BAD("kv count %llu exceeds the file size", (unsigned long long)nkv);
  if (nt > left(&c) / 32) return BAD("tensor count %llu exceeds the file size", (unsigned long long)nt);
  g->n_kv = nkv;
  g->n_tensors = nt;
  g->kv = dw_calloc(nkv ? nkv : 1, sizeof *g->kv);
  g->tensors = dw_calloc(nt ? nt : 1, sizeof *g->tensors);
  if (!g->kv || !g->tensors) return dw_error_set(DW_ERR_NOMEM, "GGUF tables");

  hset seen = {0};
  if (!hset_init(&seen, nkv > nt ? nkv : nt)) return dw_error_set(DW_ERR_NOMEM, "GGUF tables");
  g->alignment = 32;
  for (uint64_t i = 0; i < nkv; i++) {
    dw_gguf_kv *kv = &g->kv[i];
    if ((st = rd_str(&c, &kv->key, "key")) || (st = rd(&c, &kv->type, 4, "value type"))) goto out;
    if (kv->type >= GGUF_NTYPES) {
      st = BAD("key '%.*s' has unknown value type %u", (int)(kv->key.n > 200 ? 200 : kv->key.n), kv->key.p,
               kv->type);
      goto out;
    }
    if (!hset_add(&seen, kv->key)) {
      st = BAD("duplicate key '%.*s'", (int)(kv->key.n > 200 ? 200 : kv->key.n), kv->key.p);
      goto out;
    }
    if ((st = parse_value(&c, kv))) goto out;
    if (dw_gguf_str_eq(kv->key, "general.alignment")) {
      uint64_t a;
      if (!kv_uint(kv->type, kv->val, &a) || a == 0 || a > (1u << 30) || (a & (a - 1))) {
        st = BAD("general.alignment must be a power of two");
        goto out;
      }
      g->alignment = (uint32_t)a;
    }
  }
  memset(seen.slots, 0, seen.cap * sizeof *seen.slots);
  for (uint64_t i = 0; i < nt; i++) {
    dw_gguf_tensor *t = &g->tensors[i];
    dw_gguf_str name;
    uint64_t off = 0;
    if ((st = rd_str(&c, &name, "tensor name"))) goto out;
    if (name.n > 64 || name.n == 0 || memchr(name.p, 0, name.n)) {
      st = BAD("tensor %llu has a name of %llu bytes (1..64 without NULs allowed)", (unsigned long long)i,
               (unsigned long long)name.n);
      goto out;
    }
    memcpy(t->name, name.p, name.n);
    if (!hset_add(&seen, name)) {
      st = BAD("duplicate tensor '%s'", t->name);
      goto out;
    }
    if ((st = rd(&c, &t->n_dims, 4, "tensor dims"))) goto out;
    if (t->n_dims < 1 || t->n_dims > 4) {
      st = BAD("tensor '%s' has %u dims (1..4 allowed)", t->name, t->n_dims);
      goto out;
    }
    t->ne[0] = t->ne[1] = t->ne[2] = t->ne[3] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
      if ((st = rd(&c, &t->ne[d], 8, "tensor dim"))) goto out;
    if ((st = rd(&c, &t->type, 4, "tensor type")) || (st = rd(&c, &off, 8, "tensor offset"))) goto out;
    uint32_t bs = dw_ggml_block_size(t->type), ts = dw_ggml_type_size(t->type);
    if (!bs) {
      st = BAD("tensor '%s' has unknown or removed type %u", t->name, t->type);
      goto out;
    }
    uint64_t ne = 1;
    for (int d = 0; d < 4; d++) {
      if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX) {
        st = BAD("tensor '%s' dim %d is %llu", t->name, d, (unsigned long long)t->ne[d]);
        goto out;
      }
      if (ne > (uint64_t)INT64_MAX / t->ne[d]) {
        st = BAD("tensor '%s' element count overflows", t->name);
        goto out;
      }
      ne *= t->ne[d];
    }
    if (t->ne[0] % bs) {
      st = BAD("tensor '%s' row of %llu elements is not a multiple of the %s block (%u)", t->name,
               (unsigned long long)t->ne[0], dw_ggml_type_name(t->type), bs);
      goto out;
    }
    if (ne / bs > UINT64_MAX / ts) {
      st = BAD("tensor '%s' byte size overflows", t->name);
      goto out;
    }
    t->n_elems = ne;
    t->n_bytes = ne / bs * ts;
    if (off % g->alignment) {
      st = BAD("tensor '%s' offset %llu is not a multiple of the alignment %u", t->name, (unsigned long long)off,
               g->alignment);
      goto out;
    }
    t->data = (const uint8_t *)(uintptr_t)off; /* resolved below */
  }
  uint64_t pos = (uint64_t)(c.p - g->buf);
  uint64_t pad = (g->alignment - pos % g->alignment) % g->alignment;
  g->data_start = pos + pad;
  if (nt && g->data_start > g->size) {
    st = BAD("the tensor data section starts past the end of the file");
    goto out;
  }
  for (uint64_t i = 0; i < nt; i++) {
    dw_gguf_tensor *t = &g->tensors[i];
    uint64_t off = (uint64_t)(uintptr_t)t->data;
    if (off > g->size - g->data_start || t->n_bytes > g->size - g->data_start - off) {
      st = BAD("tensor '%s' (%llu bytes at data offset %llu) runs past the end of the file", t->name,
               (unsigned long long)t->n_bytes, (unsigned long long)off);
      goto out;
    }
    t->data = g->buf + g->data_start + off;
  }
  st = DW_OK;
out:
  dw_free(seen.slots);
  return st;
}

dw_status dw_gguf_parse(const uint8_t *buf, size_t size, dw_gguf **out) {
  *out = NULL;
  dw_gguf *g = dw_calloc(1, sizeof *g);
  if (!g) return dw_error_set(DW_ERR_NOMEM, "gguf");
  g->buf = buf;
  g->size = size;
  dw_status st = parse(g);
  if (st) {
    dw_gguf_close(g);
    return st;
  }
  *out = g;
  return DW_OK;
}

dw_status dw_gguf_open(const char *path, bool populate, dw_gguf **out) {
  *out = NULL;
  const uint8_t *m;
  size_t n;
  dw_status st = dw_file_map(path, populate, &m, &n, NULL);
  if (st) return st;
  if ((st = dw_gguf_parse(m ? m : (const uint8_t *)"", n, out))) {
    if (m) munmap((void *)m, n);
    return dw_error_wrap(st, "%s", path);
  }
  (*out)->mapped = m != NULL;
  return DW_OK;
}

void dw_gguf_close(dw_gguf *g) {
  if (!g) return;
  if (g->mapped) munmap((void *)g->buf, g->size);
  dw_free(g->kv);
  dw_free(g->tensors);
  dw_free(g);
}

/* ---- lookups ------------------------------------------------------------ */

bool dw_gguf_str_eq(dw_gguf_str s, const char *lit) {
  size_t n = strlen(lit);
  return s.n == n && memcmp(s.p, lit, n) == 0;
}

const dw_gguf_kv *dw_gguf_find(const dw_gguf *g, const char *key) {
  for (uint64_t i = 0; i < g->n_kv; i++)
    if (dw_gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
  return NULL;
}

const dw_gguf_tensor *dw_gguf_tensor_find(const dw_gguf *g, const char *name) {
  for (uint64_t i = 0; i < g->n_tensors; i++)
    if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

bool dw_gguf_get_u64(const dw_gguf *g, const char *key, uint64_t *out) {
  const dw_gguf_kv *kv = dw_gguf_find(g, key);
  return kv && kv->type != GGUF_ARRAY && kv_uint(kv->type, kv->val, out);
}

bool dw_gguf_get_f32(const dw_gguf *g, const char *key, float *out) {
  const dw_gguf_kv *kv = dw_gguf_find(g, key);
  uint64_t u;
  if (!kv) return false;
  if (kv->type == GGUF_F32) {
    memcpy(out, kv->val, 4);
    return true;
  }
  if (kv->type == GGUF_F64) {
    double d;
    memcpy(&d, kv->val, 8);
    *out = (float)d;
    return true;
  }
  if (kv->type != GGUF_ARRAY && kv_uint(kv->type, kv->val, &u)) {
    *out = (float)u;
    return true;
  }
  return false;
}

bool dw_gguf_get_bool(const dw_gguf *g, const char *key, bool *out) {
  const dw_gguf_kv *kv = dw_gguf_find(g, key);
  uint64_t u;
  if (!kv || kv->type == GGUF_ARRAY) return false;
  if (kv->type == GGUF_BOOL) u = kv->val[0];
  else if (!kv_uint(kv->type, kv->val, &u)) return false;
  *out = u != 0;
  return true;
}

bool dw_gguf_get_str(const dw_gguf *g, const char *key, dw_gguf_str *out) {
  const dw_gguf_kv *kv = dw_gguf_find(g, key);
  if (!kv || kv->type != GGUF_STRING) return false;
  memcpy(&out->n, kv->val, 8);
  out->p = (const char *)kv->val + 8;
  return true;
}

bool dw_gguf_arr_u64(const dw_gguf_kv *kv, uint64_t i, uint64_t *out) {
  if (kv->type != GGUF_ARRAY || i >= kv->n || kv->arr_type == GGUF_STRING || kv->arr_type == GGUF_F32 ||
      kv->arr_type == GGUF_F64 || kv->arr_type == GGUF_BOOL)
    return false;
  return kv_uint(kv->arr_type, kv->val + i * scalar_size[kv->arr_type], out);
}

bool dw_gguf_arr_strs(const dw_gguf_kv *kv, dw_gguf_str *out) {
  if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING) return false;
  const uint8_t *p = kv->val;
  for (uint64_t i = 0; i < kv->n; i++) { /* bounds were checked at parse time */
    memcpy(&out[i].n, p, 8);
    out[i].p = (const char *)p + 8;
    p += 8 + out[i].n;
  }
  return true;
}
