/*
 * llm_test.c — the LLM engine below the ABI: GGUF parsing of valid and
 * malformed files, the tokenizers against the fixture vectors (and their
 * round trip), the weight-type kernels against an f64 reference, KV
 * sessions (batched vs incremental decode, fork, truncate, limits) and the
 * SDK sampler.
 */
#include "llm/session.h"
#include "llm/quant.h"

#include <criterion/criterion.h>
#include <driftwood_sampler.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#define FIXTURES DW_TEST_SOURCE "/../shared/fixtures/vocab"
#define DEMO_MODEL DW_TEST_SOURCE "/models/demo-tiny-q8_0.gguf"

/* ---- a tiny GGUF builder ---------------------------------------------------- */

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) {
  u64(b, strlen(s));
  put(b, s, strlen(s));
}

/* A valid file: 2 KVs, one F32 tensor [8, 2] with data. */
static buf valid_file(void) {
  buf b = {0};
  put(&b, "GGUF", 4);
  u32(&b, 3);
  u64(&b, 1); /* tensors */
  u64(&b, 2); /* kvs */
  str(&b, "general.architecture");
  u32(&b, GGUF_STRING);
  str(&b, "llama");
  str(&b, "some.array");
  u32(&b, GGUF_ARRAY);
  u32(&b, GGUF_U32);
  u64(&b, 3);
  u32(&b, 1), u32(&b, 2), u32(&b, 3);
  str(&b, "w");
  u32(&b, 2);
  u64(&b, 8), u64(&b, 2);
  u32(&b, GGML_F32);
  u64(&b, 0);
  while (b.n % 32) put(&b, "", 1);
  for (int i = 0; i < 16; i++) {
    float f = (float)i;
    put(&b, &f, 4);
  }
  return b;
}

static dw_status parse(buf *b) {
  dw_gguf *g = NULL;
  dw_status st = dw_gguf_parse(b->p, b->n, &g);
  dw_gguf_close(g);
  return st;
}

Test(gguf, valid_file_parses) {
  buf b = valid_file();
  dw_gguf *g;
  cr_assert_eq(dw_gguf_parse(b.p, b.n, &g), DW_OK, "%s", dw_last_error());
  dw_gguf_str s;
  cr_assert(dw_gguf_get_str(g, "general.architecture", &s) && dw_gguf_str_eq(s, "llama"));
  const dw_gguf_tensor *t = dw_gguf_tensor_find(g, "w");
  cr_assert(t && t->ne[0] == 8 && t->ne[1] == 2 && t->n_bytes == 64);
  float f;
  memcpy(&f, t->data + 4 * 5, 4);
  cr_assert_eq(f, 5.0f);
  uint64_t v;
  cr_assert(dw_gguf_arr_u64(dw_gguf_find(g, "some.array"), 2, &v) && v == 3);
  dw_gguf_close(g);
  free(b.p);
}

Test(gguf, every_truncation_is_an_error) {
  buf b = valid_file();
  for (size_t n = 0; n < b.n; n++) {
    buf t = {b.p, n, n};
    dw_status st = parse(&t);
    cr_assert_eq(st, DW_ERR_BAD_MODEL, "truncated to %zu bytes: %s (%s)", n, dw_status_str(st), dw_last_error());
  }
  free(b.p);
}

/* Patches bytes at an offset of the valid file and expects an error. */
static void patched(size_t off, const void *bytes, size_t n, const char *what) {
  buf b = valid_file();
  memcpy(b.p + off, bytes, n);
  dw_status st = parse(&b);
  cr_assert_neq(st, DW_OK, "%s: parsed", what);
  cr_assert(strlen(dw_last_error()) > 10, "%s: no message", what);
  free(b.p);
}

Test(gguf, malformed_headers_and_values) {
  uint32_t v;
  uint64_t q;
  patched(0, "GGUX", 4, "bad magic");
  v = 1, patched(4, &v, 4, "version 1");
  v = 4, patched(4, &v, 4, "version 4");
  v = 0x03000000, patched(4, &v, 4, "big-endian");
  q = UINT64_MAX, patched(8, &q, 8, "huge tensor count");
  q = 1ull << 40, patched(16, &q, 8, "huge kv count");
  size_t k0 = 24;                 /* first key length */
  q = 1ull << 62, patched(k0, &q, 8, "huge key length");
  size_t t0 = k0 + 8 + 20;        /* first value type */
  v = 13, patched(t0, &v, 4, "unknown value type");
  size_t k1 = t0 + 4 + 8 + 5;     /* second key */
  size_t a1 = k1 + 8 + 10 + 4;    /* its element type */
  v = GGUF_ARRAY, patched(a1, &v, 4, "nested array");
  q = 1ull << 61, patched(a1 + 4, &q, 8, "huge array count");
  (void)k1;
  buf d = {0}; /* the same key twice */
  put(&d, "GGUF", 4);
  u32(&d, 3), u64(&d, 0), u64(&d, 2);
  for (int i = 0; i < 2; i++) {
    str(&d, "a.key");
    u32(&d, GGUF_U8);
    put(&d, "\1", 1);
  }
  cr_assert_neq(parse(&d), DW_OK, "duplicate key accepted");
  free(d.p);
}

Test(gguf, malformed_tensor_infos) {
  buf b = valid_file();
  size_t ti = 24 + (8 + 20 + 4 + 8 + 5) + (8 + 10 + 4 + 4 + 8 + 12); /* tensor info */
  free(b.p);
  uint32_t v;
  uint64_t q;
  q = 65, patched(ti, &q, 8, "name too long");
  v = 5, patched(ti + 9, &v, 4, "5 dims");
  v = 0, patched(ti + 9, &v, 4, "0 dims");
  q = 0, patched(ti + 13, &q, 8, "zero dim");
  q = 1ull << 62, patched(ti + 13, &q, 8, "dims overflow / past EOF");
  v = 4, patched(ti + 29, &v, 4, "removed type 4");
  v = 99, patched(ti + 29, &v, 4, "unknown type");
  v = GGML_Q8_0, patched(ti + 29, &v, 4, "row not a multiple of the block");
  q = 4, patched(ti + 33, &q, 8, "unaligned offset");
  q = 32, patched(ti + 33, &q, 8, "data past EOF");
  q = UINT64_MAX - 31, patched(ti + 33, &q, 8, "offset overflow");
}

Test(gguf, bad_alignment_and_bool) {
  buf b = {0};
  put(&b, "GGUF", 4);
  u32(&b, 3), u64(&b, 0), u64(&b, 1);
  str(&b, "general.alignment");
  u32(&b, GGUF_U32);
  u32(&b, 3);
  cr_assert_neq(parse(&b), DW_OK, "alignment 3 accepted");
  memcpy(b.p + b.n - 4, "\0\0\0\0", 4);
  cr_assert_neq(parse(&b), DW_OK, "alignment 0 accepted");
  free(b.p);
  buf c = {0};
  put(&c, "GGUF", 4);
  u32(&c, 3), u64(&c, 0), u64(&c, 1);
  str(&c, "flag");
  u32(&c, GGUF_BOOL);
  put(&c, "\2", 1);
  cr_assert_neq(parse(&c), DW_OK, "bool 2 accepted");
  free(c.p);
}

Test(gguf, random_bit_flips_never_crash) {
  buf b = valid_file();
  uint8_t *orig = malloc(b.n);
  memcpy(orig, b.p, b.n);
  srand(1);
  for (int i = 0; i < 20000; i++) {
    memcpy(b.p, orig, b.n);
    for (int f = 0; f < 3; f++) b.p[rand() % b.n] ^= (uint8_t)(1u << (rand() % 8));
    parse(&b); /* any status; ASan checks there is no bad access */
  }
  free(orig);
  free(b.p);
}

/* Inputs the fuzzer once crashed on (tests/fuzz/regress/) load or fail
 * cleanly, never crash; the seeds load. */
Test(gguf, fuzz_regressions_and_seeds) {
  static const char *const dirs[] = {DW_TEST_SOURCE "/tests/fuzz/regress", DW_TEST_SOURCE "/tests/fuzz/seeds"};
  for (int d = 0; d < 2; d++) {
    DIR *dir = opendir(dirs[d]);
    cr_assert(dir, "%s", dirs[d]);
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));) {
      if (e->d_name[0] == '.') continue;
      char path[1024];
      snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name);
      for (int vocab_only = 0; vocab_only < 2; vocab_only++) {
        dw_model *m = NULL;
        dw_status st = dw_model_load(path, vocab_only, &m);
        if (d == 1) cr_assert_eq(st, DW_OK, "seed %s: %s", path, dw_last_error());
        dw_model_release(m);
      }
      n++;
    }
    closedir(dir);
    cr_assert_gt(n, 0);
  }
}

/* ---- tokenizers against the fixtures --------------------------------------------- */

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)sz + 1);
  *n = fread(p, 1, (size_t)sz, f);
  p[*n] = 0;
  fclose(f);
  return p;
}

static void check_vocab(const char *name) {
  char path[512], inp[600], outp[600];
  snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", FIXTURES, name);
  struct stat sb;
  if (stat(path, &sb) != 0) cr_skip_test("fixtures not found at %s", FIXTURES);
  snprintf(inp, sizeof inp, "%s.inp", path);
  snprintf(outp, sizeof outp, "%s.out", path);
  dw_model *m;
  cr_assert_eq(dw_model_load(path, true, &m), DW_OK, "%s", dw_last_error());
  size_t ni, no;
  char *in = slurp(inp, &ni), *out = slurp(outp, &no);
  cr_assert(in && out);
  const char *sep = "\n__ggml_vocab_test__\n";
  char *p = in, *line = out;
  int cases = 0;
  const dw_tok_info *ti = dw_tokenizer_info(m->tok);
  for (char *e; (e = strstr(p, sep)); p = e + strlen(sep), cases++) {
    size_t len = (size_t)(e - p);
    char *nl = strchr(line, '\n');
    cr_assert(nl, "%s: .out has fewer lines than cases", name);
    *nl = 0;
    int32_t want[512], got[512];
    size_t nw = 0, ng = 0;
    for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) want[nw++] = atoi(tok);
    cr_assert_eq(dw_tokenize(m->tok, p, len, false, false, got, 512, &ng), DW_OK, "%s", dw_last_error());
    cr_assert_eq(ng, nw, "%s case %d ('%.*s'): %zu ids, want %zu", name, cases, (int)len, p, ng, nw);
    for (size_t i = 0; i < nw; i++)
      cr_assert_eq(got[i], want[i], "%s case %d ('%.*s') id %zu: %d, want %d", name, cases, (int)len, p, i, got[i],
                   want[i]);
    /* round trip: the pieces concatenate back to the text (SPM: plus the prefix space) */
    char back[4096];
    size_t bn = 0;
    for (size_t i = 0; i < ng; i++) {
      size_t pl;
      cr_assert_eq(dw_token_piece(m->tok, got[i], back + bn, sizeof back - bn, &pl), DW_OK);
      bn += pl;
    }
    const char *exp = p;
    size_t en = len;
    if (ti->add_space_prefix && len) {
      cr_assert(bn >= 1 && back[0] == ' ', "%s case %d: no prefix space", name, cases);
      memmove(back, back + 1, --bn);
    }
    cr_assert(bn == en && !memcmp(back, exp, en), "%s case %d: round trip gave '%.*s'", name, cases, (int)bn, back);
    line = nl + 1;
  }
  cr_assert_gt(cases, 40);
  free(in);
  free(out);
  dw_model_release(m);
}

Test(tokenizer, llama_spm) { check_vocab("llama-spm"); }
Test(tokenizer, phi_3) { check_vocab("phi-3"); }
Test(tokenizer, gpt_2) { check_vocab("gpt-2"); }
Test(tokenizer, starcoder) { check_vocab("starcoder"); }
Test(tokenizer, falcon) { check_vocab("falcon"); }
Test(tokenizer, mpt) { check_vocab("mpt"); }

Test(tokenizer, special_tokens_and_limits) {
  dw_model *m;
  cr_assert_eq(dw_model_load(DEMO_MODEL, true, &m), DW_OK, "%s", dw_last_error());
  const dw_tok_info *ti = dw_tokenizer_info(m->tok);
  int32_t ids[64];
  size_t n;
  /* add_special prepends BOS; parse_special turns "</s>" into EOS */
  cr_assert_eq(dw_tokenize(m->tok, "hi</s>", 6, true, true, ids, 64, &n), DW_OK);
  cr_assert_eq(ids[0], ti->bos);
  cr_assert_eq(ids[n - 1], ti->eos);
  size_t n2;
  cr_assert_eq(dw_tokenize(m->tok, "hi</s>", 6, true, false, ids, 64, &n2), DW_OK);
  cr_assert_gt(n2, n, "without parse_special </s> is text");
  cr_assert_neq(ids[n2 - 1], ti->eos);
  /* a short buffer reports the size needed */
  cr_assert_eq(dw_tokenize(m->tok, "hello world", 11, true, false, ids, 1, &n), DW_ERR_LIMIT);
  cr_assert_gt(n, 1);
  /* invalid UTF-8 falls back to bytes and round-trips */
  const char bad[] = "a\xff\xfe" "b";
  cr_assert_eq(dw_tokenize(m->tok, bad, 4, false, false, ids, 64, &n), DW_OK);
  char back[64];
  size_t bn = 0, pl;
  for (size_t i = 0; i < n; i++, bn += pl) dw_token_piece(m->tok, ids[i], back + bn, sizeof back - bn, &pl);
  cr_assert(bn == 5 && !memcmp(back, " a\xff\xfe" "b", 5));
  cr_assert_eq(dw_token_piece(m->tok, ti->n_tokens, back, 64, &pl), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_token_piece(m->tok, -1, back, 64, &pl), DW_ERR_INVALID_ARG);
  dw_model_release(m);
}

/* ---- kernels ----------------------------------------------------------------------- */

static void quantize_row(uint32_t t, const float *x, uint8_t *o, int n) {
  for (int b = 0; b < n / 32; b++) {
    const float *v = x + 32 * b;
    float amax = 0, mx = 0;
    for (int j = 0; j < 32; j++)
      if (fabsf(v[j]) > amax) amax = fabsf(v[j]), mx = v[j];
    if (t == GGML_Q8_0) {
      float d = amax / 127;
      uint16_t h = dw_f32_to_f16(d);
      memcpy(o, &h, 2);
      for (int j = 0; j < 32; j++) o[2 + j] = (uint8_t)(int8_t)lrintf(d ? v[j] / d : 0);
      o += 34;
    } else {
      float d = mx / -8;
      uint16_t h = dw_f32_to_f16(d);
      memcpy(o, &h, 2);
      for (int j = 0; j < 16; j++) {
        int lo = (int)(d ? v[j] / d + 8.5f : 8), hi = (int)(d ? v[j + 16] / d + 8.5f : 8);
        lo = lo > 15 ? 15 : lo < 0 ? 0 : lo, hi = hi > 15 ? 15 : hi < 0 ? 0 : hi;
        o[2 + j] = (uint8_t)(lo | hi << 4);
      }
      o += 18;
    }
  }
}

Test(kernels, dot_products_match_f64_reference) {
  enum { N = 1024 + 32 };
  static const uint32_t types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0, GGML_Q4_0};
  float *x = malloc(N * 4), *w = malloc(N * 4), *deq = malloc(N * 4);
  uint8_t *row = malloc(N * 4);
  srand(3);
  for (int i = 0; i < N; i++) {
    x[i] = (float)rand() / RAND_MAX * 2 - 1;
    w[i] = (float)rand() / RAND_MAX * 2 - 1;
  }
  for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
    uint32_t t = types[ti];
    for (int n = 32; n <= N; n += (n < 128 ? 32 : 480)) {
      if (t == GGML_F32) memcpy(row, w, (size_t)n * 4);
      else if (t == GGML_F16)
        for (int i = 0; i < n; i++) ((uint16_t *)row)[i] = dw_f32_to_f16(w[i]);
      else if (t == GGML_BF16)
        for (int i = 0; i < n; i++) {
          uint32_t u;
          memcpy(&u, &w[i], 4);
          ((uint16_t *)row)[i] = (uint16_t)(u >> 16);
        }
      else quantize_row(t, w, row, n);
      dw_dequant_row(t, row, deq, n);
      double ref = 0, mag = 0;
      for (int i = 0; i < n; i++) {
        ref += (double)deq[i] * x[i];
        mag += fabs((double)deq[i] * x[i]);
        if (t != GGML_F32) /* Q4_0's worst case is one step (max/8) */
          cr_assert_lt(fabsf(deq[i] - w[i]), 0.13f, "%s dequant far off", dw_ggml_type_name(t));
      }
      float got = dw_vec_dot(t, row, x, n);
      cr_assert_leq(fabs(got - ref), 1e-5 * mag + 1e-6, "%s n=%d: %g vs %g", dw_ggml_type_name(t), n, got, ref);
    }
  }
  free(x), free(w), free(deq), free(row);
}

/* The integer decode path: activations rounded to 8 bits per 32 (each
 * within half a step, amax/254, of its value), and each kernel must give
 * the dot product of the weights with exactly those rounded activations,
 * to f32 accumulation (1e-5 of Σ|terms|), on rows of random bytes (every
 * code) with moderate random scales; activations of both signs and of
 * one sign (where an offset error would show). */
Test(kernels, integer_dots_match_rounded_activations) {
  enum { N = 2048 };
  static const struct { uint32_t t; int blk, bytes, f16[2]; } T[] = {
      {GGML_Q8_0, 32, 34, {0, -1}}, {GGML_Q4_0, 32, 18, {0, -1}}, {GGML_Q5_0, 32, 22, {0, -1}},
      {GGML_Q4_K, 256, 144, {0, 2}}, {GGML_Q5_K, 256, 176, {0, 2}}, {GGML_Q6_K, 256, 210, {208, -1}}};
  float *x = malloc(N * 4), *w = malloc(N * 4);
  uint8_t *row = malloc(N * 2);
  dw_q8x *xq = malloc(dw_q8x_bytes(N));
  srand(11);
  int checked = 0;
  for (size_t ti = 0; ti < sizeof T / sizeof *T; ti++) {
    if (!dw_q8x_has(T[ti].t)) continue; /* no VNNI on this machine: the f32 kernels serve */
    for (int rep = 0; rep < 20; rep++) {
      float scale = rep % 3 ? 1.f : 100.f, off = rep % 2 ? 1.f : 0.f;
      for (int i = 0; i < N; i++) x[i] = ((float)rand() / RAND_MAX * 2 - 1 + off) * scale;
      size_t nbytes = (size_t)N / T[ti].blk * T[ti].bytes;
      for (size_t i = 0; i < nbytes; i++) row[i] = (uint8_t)rand();
      for (size_t b = 0; b < nbytes; b += T[ti].bytes)
        for (int k = 0; k < 2 && T[ti].f16[k] >= 0; k++) {
          uint16_t h = dw_f32_to_f16(((float)rand() / RAND_MAX * 2 - 1) * 0.01f);
          memcpy(row + b + T[ti].f16[k], &h, 2);
        }
      dw_dequant_row(T[ti].t, row, w, N);
      dw_q8x_quantize(x, N, xq);
      double ref = 0, mag = 0;
      for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        int s[2] = {0, 0};
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        for (int j = 0; j < 32; j++) {
          double xr = (double)xq[b].d * xq[b].q[j];
          cr_assert_leq(fabs(xr - x[32 * b + j]), amax / 254 * 1.0001, "activation %d rounded too far", 32 * b + j);
          ref += (double)w[32 * b + j] * xr, mag += fabs((double)w[32 * b + j] * xr);
          s[j / 16] += xq[b].q[j];
        }
        cr_assert(xq[b].ds[0] == xq[b].d * (float)s[0] && xq[b].ds[1] == xq[b].d * (float)s[1]);
      }
      double q = dw_vec_dot_q8x(T[ti].t, row, xq, N);
      cr_assert_leq(fabs(q - ref), 1e-5 * mag, "%s rep %d: integer %.9g vs %.9g", dw_ggml_type_name(T[ti].t), rep, q,
                    ref);
      checked++;
    }
  }
  cr_log_info("integer dots checked: %d", checked);
  free(x), free(w), free(row), free(xq);
}

Test(kernels, f16_conversion_covers_specials) {
  cr_assert_eq(dw_f16_to_f32(0x3C00), 1.0f);
  cr_assert_eq(dw_f16_to_f32(0xC000), -2.0f);
  cr_assert_eq(dw_f16_to_f32(0x0001), ldexpf(1, -24)); /* smallest subnormal */
  cr_assert(isinf(dw_f16_to_f32(0x7C00)));
  cr_assert(isnan(dw_f16_to_f32(0x7E00)));
  for (uint32_t h = 0; h < 0x7C00; h++) /* every finite positive f16 round-trips */
    cr_assert_eq(dw_f32_to_f16(dw_f16_to_f32((uint16_t)h)), h, "0x%04x", h);
}

Test(kernels, token_vector_gemm_matches_naive) {
  enum { K = 75, R = 13, LDY = 20, NT = 70 };
  static float w[R * K], x[NT * K], xt[K * 96], y[NT * LDY], zero[K];
  srand(9);
  for (int i = 0; i < R * K; i++) w[i] = (float)rand() / RAND_MAX - 0.5f;
  for (int i = 0; i < NT * K; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
  for (int nr = 1; nr <= R; nr += 4)
    for (int nt = 3; nt <= NT; nt += 11) {
      int ntp = (nt + 31) / 32 * 32;
      for (int i = 0; i < NT * LDY; i++) y[i] = -999;
      dw_transpose_x(x, nt, K, 0, K / 2, xt, ntp); /* two column ranges, as the workers do */
      dw_transpose_x(x, nt, K, K / 2, K, xt, ntp);
      dw_gemm_xt(w, nr, K, xt, nt, ntp, zero, y, LDY);
      for (int t = 0; t < NT; t++)
        for (int r = 0; r < LDY; r++) {
          if (t >= nt || r >= nr) {
            cr_assert_eq(y[t * LDY + r], -999, "wrote outside nr x nt");
            continue;
          }
          double s = 0;
          for (int k = 0; k < K; k++) s += (double)w[r * K + k] * x[t * K + k];
          cr_assert_lt(fabs(y[t * LDY + r] - s), 1e-5, "nr %d nt %d (%d,%d)", nr, nt, t, r);
        }
    }
}

Test(kernels, exp_sum_matches_libm) {
  enum { N = 1003 };
  static float x[N];
  double want = 0;
  for (int i = 0; i < N; i++) x[i] = -60.0f + 60.0f * i / N;
  /* the reference takes the same f32 argument (x − mx rounds in f32) */
  for (int i = 0; i < N; i++) want += exp((double)(x[i] - 1.5f));
  static float y[N];
  memcpy(y, x, sizeof x);
  float got = dw_exp_sum(y, N, 1.5f);
  cr_assert_lt(fabs(got - want) / want, 1e-6, "%g vs %g", got, want);
  for (int i = 0; i < N; i++) {
    double e = exp((double)(x[i] - 1.5f));
    cr_assert_leq(fabs(y[i] - e), 1e-6 * e, "x=%g: %g vs %g", x[i], y[i], e);
  }
}

Test(kernels, silu_mul_matches_libm) {
  enum { N = 2000 };
  static float g[N], u[N], o[N];
  for (int i = 0; i < N; i++) g[i] = -95.0f + 190.0f * i / N, u[i] = 1.0f + (float)i / N;
  dw_silu_mul(o, g, u, N);
  for (int i = 0; i < N; i++) {
    double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    cr_assert_leq(fabs(o[i] - want), 1e-6 * fabs(want) + 1e-30, "g=%g: %g vs %g", g[i], o[i], want);
  }
}

/* ---- sessions ---------------------------------------------------------------------- */

static dw_model *M;
static dw_engine *P;
/* These tests hold sessions, forks and ragged steps to the same logits as
 * one long prefill (1e-5), so decode keeps f32 dot products here: the
 * 8-bit integer path (kernels tests above; compare.py end to end) rounds
 * one-token decodes' activations, which a prefill never does. */
static const char *f32_dots(void *ctx, const char *name) {
  (void)ctx;
  return !strcmp(name, "DRIFTWOOD_INT_DOT") ? "0" : NULL;
}
static void sess_setup(void) {
  static const dw_settings exact = {.get = f32_dots};
  cr_assert_eq(dw_model_load(DEMO_MODEL, false, &M), DW_OK, "%s", dw_last_error());
  cr_assert_eq(dw_engine_create("cpu", 2, &exact, &P), DW_OK);
}
static void sess_teardown(void) {
  dw_engine_destroy(P);
  dw_model_release(M);
}
TestSuite(session, .init = sess_setup, .fini = sess_teardown);

static float max_rel(const float *a, const float *b, int n) {
  float d = 0, mag = 0;
  for (int i = 0; i < n; i++) {
    d = fmaxf(d, fabsf(a[i] - b[i]));
    mag = fmaxf(mag, fabsf(b[i]));
  }
  return d / mag;
}

#define NT 70 /* crosses two KV blocks */

static void some_tokens(int32_t *t, int n, int seed) {
  for (int i = 0; i < n; i++) t[i] = (int32_t)((i * 7919 + seed * 104729) % (M->hp.n_vocab - 300) + 259);
}

Test(session, batched_equals_incremental) {
  int nv = M->hp.n_vocab;
  int32_t tok[NT];
  some_tokens(tok, NT, 1);
  float *all = malloc((size_t)NT * nv * 4), *one = malloc((size_t)nv * 4), *last = malloc((size_t)nv * 4);
  dw_session *a, *b;
  cr_assert_eq(dw_sess_new(M, P, 0, &a), DW_OK);
  cr_assert_eq(dw_sess_new(M, P, 0, &b), DW_OK);
  cr_assert_eq(dw_decode(a, tok, NT, last, all), DW_OK);
  cr_assert_eq(max_rel(last, all + (size_t)(NT - 1) * nv, nv), 0);
  for (int i = 0; i < NT; i++) {
    cr_assert_eq(dw_decode(b, tok + i, 1, one, NULL), DW_OK);
    cr_assert_lt(max_rel(one, all + (size_t)i * nv, nv), 1e-5, "position %d", i);
  }
  cr_assert_eq(a->n_past, NT);
  cr_assert_eq(memcmp(a->tokens, tok, sizeof tok), 0);
  dw_sess_free(a), dw_sess_free(b);
  free(all), free(one), free(last);
}

Test(session, fork_shares_prefix_and_diverges_independently) {
  int nv = M->hp.n_vocab;
  int32_t pre[40], x[5], y[5];
  some_tokens(pre, 40, 2), some_tokens(x, 5, 3), some_tokens(y, 5, 4);
  float *l1 = malloc((size_t)nv * 4), *l2 = malloc((size_t)nv * 4), *r1 = malloc((size_t)nv * 4),
        *r2 = malloc((size_t)nv * 4);
  dw_session *s, *f, *fresh;
  cr_assert_eq(dw_sess_new(M, P, 128, &s), DW_OK);
  cr_assert_eq(dw_decode(s, pre, 40, NULL, NULL), DW_OK);
  cr_assert_eq(dw_sess_fork(s, &f), DW_OK);
  cr_assert_eq(s->blocks[0], f->blocks[0], "the prefix block is shared");
  cr_assert_eq(atomic_load(&s->blocks[1]->refs), 2);
  cr_assert_eq(dw_decode(s, x, 5, l1, NULL), DW_OK);
  cr_assert_eq(dw_decode(f, y, 5, l2, NULL), DW_OK);
  cr_assert_neq(s->blocks[1], f->blocks[1], "the written block was copied");
  cr_assert_eq(s->blocks[0], f->blocks[0], "the untouched block stays shared");
  /* each equals a fresh session fed the same tokens */
  int32_t seq[45];
  memcpy(seq, pre, sizeof pre);
  memcpy(seq + 40, x, sizeof x);
  cr_assert_eq(dw_sess_new(M, P, 128, &fresh), DW_OK);
  cr_assert_eq(dw_decode(fresh, seq, 45, r1, NULL), DW_OK);
  cr_assert_lt(max_rel(l1, r1, nv), 1e-5);
  memcpy(seq + 40, y, sizeof y);
  cr_assert_eq(dw_sess_truncate(fresh, 0), DW_OK);
  cr_assert_eq(dw_decode(fresh, seq, 45, r2, NULL), DW_OK);
  cr_assert_lt(max_rel(l2, r2, nv), 1e-5);
  cr_assert_gt(max_rel(l1, l2, nv), 1e-3, "different continuations must differ");
  dw_sess_free(s);
  cr_assert_eq(atomic_load(&f->blocks[0]->refs), 1);
  dw_sess_free(f), dw_sess_free(fresh);
  free(l1), free(l2), free(r1), free(r2);
}

static int n_mappings(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  int n = 0, ch;
  while (f && (ch = fgetc(f)) != EOF) n += ch == '\n';
  if (f) fclose(f);
  return n;
}

/* KV blocks come from slabs, not a mapping each: 300 live sessions of two
 * blocks take a few mappings, each session's KV is its own (same logits as
 * one session alone), and blocks freed are reused. */
Test(session, kv_blocks_share_few_mappings) {
  enum { N = 300 };
  int nv = M->hp.n_vocab;
  int32_t t[40];
  some_tokens(t, 40, 6);
  float *want = malloc((size_t)nv * 4), *got = malloc((size_t)nv * 4);
  static dw_session *s[N];
  int before = n_mappings();
  for (int i = 0; i < N; i++) {
    cr_assert_eq(dw_sess_new(M, P, 128, &s[i]), DW_OK);
    cr_assert_eq(dw_decode(s[i], t, 33 + i % 7, i == 0 ? want : NULL, NULL), DW_OK); /* two blocks each */
  }
  int during = n_mappings();
  cr_assert_lt(during - before, 40, "%d live KV blocks took %d mappings", 2 * N, during - before);
  for (int i = 0; i < N; i += 7) { /* each session's blocks are its own */
    cr_assert_eq(dw_sess_truncate(s[i], 0), DW_OK);
    cr_assert_eq(dw_decode(s[i], t, 33, got, NULL), DW_OK);
    cr_assert_lt(max_rel(got, want, nv), 1e-6, "session %d", i);
  }
  /* sessions ending in no order leave no holes that split mappings (a
   * mapping a block, unmapped at its end, left one mapping per hole) */
  for (int i = 0; i < N; i += 2) dw_sess_free(s[i]);
  int holes = n_mappings();
  cr_assert_lt(holes - before, 40, "after %d of %d sessions ended: %d mappings", N / 2, N, holes - before);
  for (int i = 0; i < N; i += 2) { /* freed blocks come back before any new mapping */
    cr_assert_eq(dw_sess_new(M, P, 128, &s[i]), DW_OK);
    cr_assert_eq(dw_decode(s[i], t, 40, NULL, NULL), DW_OK);
  }
  cr_assert_leq(n_mappings(), holes, "the slabs' blocks were reused");
  for (int i = 0; i < N; i++) dw_sess_free(s[i]);
  free(want), free(got);
}

Test(session, truncate_then_redecode_reproduces) {
  int nv = M->hp.n_vocab;
  int32_t t[50];
  some_tokens(t, 50, 5);
  float *a = malloc((size_t)nv * 4), *b = malloc((size_t)nv * 4);
  dw_session *s;
  cr_assert_eq(dw_sess_new(M, P, 64, &s), DW_OK);
  cr_assert_eq(dw_decode(s, t, 50, a, NULL), DW_OK);
  cr_assert_eq(dw_sess_truncate(s, 20), DW_OK);
  cr_assert_eq(s->n_past, 20);
  cr_assert_null(s->blocks[1], "blocks past the kept positions are released");
  cr_assert_eq(dw_decode(s, t + 20, 30, b, NULL), DW_OK);
  cr_assert_lt(max_rel(b, a, nv), 1e-5);
  cr_assert_eq(dw_sess_truncate(s, 51), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_sess_truncate(s, -1), DW_ERR_INVALID_ARG);
  dw_sess_free(s);
  free(a), free(b);
}

Test(session, limits_leave_the_session_unchanged) {
  int nv = M->hp.n_vocab;
  int32_t t[40];
  some_tokens(t, 40, 6);
  float *l = malloc((size_t)nv * 4);
  dw_session *s;
  cr_assert_eq(dw_sess_new(M, P, 40, &s), DW_OK);
  cr_assert_eq(dw_decode(s, t, 30, l, NULL), DW_OK);
  cr_assert_eq(dw_decode(s, t, 11, l, NULL), DW_ERR_LIMIT);
  cr_assert_eq(s->n_past, 30);
  int32_t bad[2] = {5, nv};
  cr_assert_eq(dw_decode(s, bad, 2, l, NULL), DW_ERR_INVALID_ARG);
  bad[1] = -1;
  cr_assert_eq(dw_decode(s, bad, 2, l, NULL), DW_ERR_INVALID_ARG);
  cr_assert_eq(dw_decode(s, t, 0, l, NULL), DW_ERR_INVALID_ARG);
  cr_assert_eq(s->n_past, 30);
  cr_assert_eq(dw_decode(s, t, 10, l, NULL), DW_OK);
  dw_session *big;
  cr_assert_eq(dw_sess_new(M, P, M->hp.n_ctx_train + 1, &big), DW_ERR_LIMIT);
  dw_sess_free(s);
  free(l);
}

/* One forward step over sequences of different lengths and positions
 * (a prefill with every row's logits, a one-token decode, a longer chunk)
 * gives each the logits it gets alone, within the tolerance of the
 * vector path against the batched one (the alone decode is one token). */
Test(session, one_step_over_ragged_sequences) {
  int nv = M->hp.n_vocab;
  enum { NA = 5, NC = 40 };
  int32_t pa[NA], pb[12], pc[NC], tb = 321;
  some_tokens(pa, NA, 11), some_tokens(pb, 12, 12), some_tokens(pc, NC, 13);
  float *all_a = malloc((size_t)NA * nv * 4), *lb = malloc((size_t)nv * 4), *lc = malloc((size_t)nv * 4);
  float *ref_a = malloc((size_t)NA * nv * 4), *ref_b = malloc((size_t)nv * 4), *ref_c = malloc((size_t)nv * 4);
  dw_session *a, *b, *c, *ra, *rb, *rc;
  cr_assert_eq(dw_sess_new(M, P, 128, &a), DW_OK);
  cr_assert_eq(dw_sess_new(M, P, 128, &b), DW_OK);
  cr_assert_eq(dw_sess_new(M, P, 128, &c), DW_OK);
  cr_assert_eq(dw_decode(b, pb, 12, NULL, NULL), DW_OK); /* b decodes its 13th token in the step */
  cr_assert_eq(dw_sess_fork(b, &rb), DW_OK);
  cr_assert_eq(dw_sess_new(M, P, 128, &ra), DW_OK);
  cr_assert_eq(dw_sess_new(M, P, 128, &rc), DW_OK);
  cr_assert_eq(dw_decode(ra, pa, NA, NULL, ref_a), DW_OK);
  cr_assert_eq(dw_decode(rb, &tb, 1, ref_b, NULL), DW_OK);
  cr_assert_eq(dw_decode(rc, pc, NC, ref_c, NULL), DW_OK);
  /* the step, as the batcher builds it: blocks owned first (dw_decode would) */
  cr_assert_eq(dw_sess_reserve(a, NA), DW_OK);
  cr_assert_eq(dw_sess_reserve(b, 1), DW_OK);
  cr_assert_eq(dw_sess_reserve(c, NC), DW_OK);
  dw_step_seq q[3] = {{a, pa, NA, NULL, all_a, NULL}, {b, &tb, 1, lb, NULL, NULL}, {c, pc, NC, lc, NULL, NULL}};
  dw_step_info info;
  cr_assert_eq(P->ops->forward(P->ctx, a->w->w, q, 3, &info), DW_OK, "%s", dw_last_error());
  cr_assert(info.zero_copy);
  for (int t = 0; t < NA; t++)
    cr_assert_lt(max_rel(all_a + (size_t)t * nv, ref_a + (size_t)t * nv, nv), 1e-5, "a, row %d", t);
  float eb = max_rel(lb, ref_b, nv), ec = max_rel(lc, ref_c, nv);
  cr_log_info("ragged step: one-token decode %.2g, 40-token chunk %.2g from alone", eb, ec);
  cr_assert_lt(eb, 1e-5);
  cr_assert_lt(ec, 1e-5);
  dw_sess_free(a), dw_sess_free(b), dw_sess_free(c), dw_sess_free(ra), dw_sess_free(rb), dw_sess_free(rc);
  free(all_a), free(lb), free(lc), free(ref_a), free(ref_b), free(ref_c);
}

/* Decode calls made at once from many threads share forward steps, and
 * each thread's logits are those of its session decoded alone. */
enum { BT = 8, BSTEPS = 12 };
typedef struct bt_arg {
  dw_session *s;
  int seed;
  float *logits; /* [BSTEPS][nv] */
  pthread_barrier_t *go;
  dw_status st;
} bt_arg;

static void *bt_thread(void *p) {
  bt_arg *A = p;
  int nv = M->hp.n_vocab;
  int32_t t[BSTEPS];
  some_tokens(t, BSTEPS, A->seed);
  pthread_barrier_wait(A->go);
  for (int i = 0; i < BSTEPS && !A->st; i++) A->st = dw_decode(A->s, t + i, 1, A->logits + (size_t)i * nv, NULL);
  return NULL;
}

Test(session, concurrent_decodes_share_steps) {
  int nv = M->hp.n_vocab;
  uint64_t steps0, seqs0, steps1, seqs1;
  int mx;
  bt_arg A[BT];
  pthread_t th[BT];
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, BT);
  for (int i = 0; i < BT; i++) {
    int32_t pre[20];
    some_tokens(pre, 20, 30 + i);
    A[i] = (bt_arg){.seed = 40 + i, .go = &go, .logits = malloc((size_t)BSTEPS * nv * 4)};
    cr_assert_eq(dw_sess_new(M, P, 64, &A[i].s), DW_OK);
    cr_assert_eq(dw_decode(A[i].s, pre, 10 + i, NULL, NULL), DW_OK); /* different lengths */
  }
  dw_engine_batch_stats(P, &steps0, &seqs0, &mx);
  for (int i = 0; i < BT; i++) pthread_create(&th[i], NULL, bt_thread, &A[i]);
  for (int i = 0; i < BT; i++) pthread_join(th[i], NULL);
  dw_engine_batch_stats(P, &steps1, &seqs1, &mx);
  uint64_t steps = steps1 - steps0, calls = seqs1 - seqs0;
  cr_log_info("%d threads × %d decodes: %llu steps, the most in one %d", BT, BSTEPS, (unsigned long long)steps, mx);
  cr_assert_eq(calls, (uint64_t)BT * BSTEPS);
  cr_assert_lt(steps, calls, "no two calls shared a step");
  cr_assert_geq(mx, 2);
  float worst = 0;
  for (int i = 0; i < BT; i++) {
    cr_assert_eq(A[i].st, DW_OK, "%s", dw_last_error());
    cr_assert_eq(A[i].s->n_past, 10 + i + BSTEPS);
    /* alone: the same prompt and tokens, one call at a time */
    int32_t pre[20], t[BSTEPS];
    some_tokens(pre, 20, 30 + i), some_tokens(t, BSTEPS, 40 + i);
    dw_session *r;
    float *l = malloc((size_t)nv * 4);
    cr_assert_eq(dw_sess_new(M, P, 64, &r), DW_OK);
    cr_assert_eq(dw_decode(r, pre, 10 + i, NULL, NULL), DW_OK);
    for (int k = 0; k < BSTEPS; k++) {
      cr_assert_eq(dw_decode(r, t + k, 1, l, NULL), DW_OK);
      float e = max_rel(A[i].logits + (size_t)k * nv, l, nv);
      worst = fmaxf(worst, e);
      cr_assert_lt(e, 1e-5, "thread %d, step %d", i, k);
    }
    dw_sess_free(r), dw_sess_free(A[i].s);
    free(l), free(A[i].logits);
  }
  cr_log_info("concurrent decodes: worst relative error from alone %.2g", worst);
  /* steps of up to 8 one-token sequences take the per-token dot products: bit for bit */
  cr_assert_eq(worst, 0.f, "batched decodes of %d sessions differ from alone", BT);
  pthread_barrier_destroy(&go);
}

Test(session, vocab_only_models_refuse_sessions) {
  dw_model *v;
  cr_assert_eq(dw_model_load(DEMO_MODEL, true, &v), DW_OK);
  dw_session *s;
  cr_assert_eq(dw_sess_new(v, P, 0, &s), DW_ERR_UNSUPPORTED);
  dw_model_release(v);
}

/* ---- the SDK sampler ------------------------------------------------------------------ */

Test(sampler, greedy_topk1_and_seeded_reproducibility) {
  enum { V = 1000 };
  float lg[V];
  for (int i = 0; i < V; i++) lg[i] = sinf((float)i * 0.37f) * 3;
  int best = 0;
  for (int i = 1; i < V; i++)
    if (lg[i] > lg[best]) best = i;
  dws_params p = dws_default_params();
  dws_sampler s;
  p.temp = 0;
  cr_assert_eq(dws_init(&s, &p, V), 0);
  cr_assert_eq(dws_sample(&s, lg), best);
  dws_free(&s);
  p = dws_default_params(), p.top_k = 1;
  dws_init(&s, &p, V);
  cr_assert_eq(dws_sample(&s, lg), best);
  dws_free(&s);
  p = dws_default_params(), p.seed = 99;
  int32_t a[50], b[50];
  dws_init(&s, &p, V);
  for (int i = 0; i < 50; i++) a[i] = dws_sample(&s, lg);
  dws_free(&s);
  dws_init(&s, &p, V);
  for (int i = 0; i < 50; i++) b[i] = dws_sample(&s, lg);
  dws_free(&s);
  cr_assert_eq(memcmp(a, b, sizeof a), 0, "same seed, same tokens");
  int distinct = 0;
  for (int i = 1; i < 50; i++) distinct |= a[i] != a[0];
  cr_assert(distinct, "temperature sampling is not constant");
}

Test(sampler, frequencies_follow_softmax_and_filters_hold) {
  float lg[4] = {2.0f, 1.0f, 0.0f, -8.0f};
  dws_params p = {1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 7};
  dws_sampler s;
  dws_init(&s, &p, 4);
  int cnt[4] = {0};
  enum { N = 40000 };
  for (int i = 0; i < N; i++) cnt[dws_sample(&s, lg)]++;
  dws_free(&s);
  double z = exp(2) + exp(1) + 1 + exp(-8);
  cr_assert_lt(fabs(cnt[0] / (double)N - exp(2) / z), 0.01);
  cr_assert_lt(fabs(cnt[1] / (double)N - exp(1) / z), 0.01);
  /* the same with temperature 0.5 (softmax of 2 * logits), no truncation */
  p.temp = 0.5f;
  memset(cnt, 0, sizeof cnt);
  dws_init(&s, &p, 4);
  for (int i = 0; i < N; i++) cnt[dws_sample(&s, lg)]++;
  dws_free(&s);
  z = exp(4) + exp(2) + 1 + exp(-16);
  cr_assert_lt(fabs(cnt[0] / (double)N - exp(4) / z), 0.01);
  cr_assert_lt(fabs(cnt[1] / (double)N - exp(2) / z), 0.01);
  cr_assert_lt(fabs(cnt[2] / (double)N - 1 / z), 0.01);
  p.temp = 1.0f;
  /* min_p 0.2 removes tokens below 0.2 * p_max: only 0 and 1 remain */
  p.min_p = 0.2f;
  dws_init(&s, &p, 4);
  for (int i = 0; i < 2000; i++) cr_assert_lt(dws_sample(&s, lg), 2);
  dws_free(&s);
  /* top_p 0.5: the first token alone covers 0.66 */
  p.min_p = 0, p.top_p = 0.5f;
  dws_init(&s, &p, 4);
  for (int i = 0; i < 2000; i++) cr_assert_eq(dws_sample(&s, lg), 0);
  dws_free(&s);
  /* a strong repetition penalty on token 0 moves greedy to token 1 */
  dws_params r = {0, 0, 1, 0, 10.0f, 8, 0};
  dws_init(&s, &r, 4);
  dws_accept(&s, 0);
  cr_assert_eq(dws_sample(&s, lg), 1);
  dws_free(&s);
}

Test(sampler, chat_templates_render_as_specified) {
  dws_msg m[2] = {{"system", "Be brief."}, {"user", " Hi "}};
  char out[512];
  dws_chat_render(DWS_CHAT_CHATML, m, 2, 1, out, sizeof out);
  cr_assert_str_eq(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
                        "<|im_start|>assistant\n");
  dws_chat_render(DWS_CHAT_LLAMA3, m, 2, 1, out, sizeof out);
  cr_assert_str_eq(out, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  dws_chat_render(DWS_CHAT_LLAMA2, m, 2, 1, out, sizeof out);
  cr_assert_str_eq(out, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi  [/INST]");
  cr_assert_eq(dws_chat_detect("x<|start_header_id|>y", 21), DWS_CHAT_LLAMA3);
  cr_assert_eq(dws_chat_detect("{{'<|im_start|>'}}", 18), DWS_CHAT_CHATML);
  cr_assert_eq(dws_chat_detect("[INST]", 6), DWS_CHAT_LLAMA2);
  size_t need = dws_chat_render(DWS_CHAT_CHATML, m, 2, 1, out, 8);
  cr_assert_eq(need, strlen("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
                            "<|im_start|>assistant\n"));
  cr_assert_eq(strlen(out), 7);
}
