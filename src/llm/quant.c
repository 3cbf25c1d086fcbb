/*
 * quant.c — kernels for the weight types of quant.h. Each has a portable C
 * form and, where the compiler targets AVX2+FMA+F16C, a vector form; the two
 * agree to f32 rounding (tests compare them with an f64 reference).
 *
 * Block layouts (ggml, little-endian):
 *   Q8_0: f16 d, int8 q[32];            x[j] = d·q[j]
 *   Q4_0: f16 d, uint8 q[16];           x[j] = d·((q[j]&15)−8), x[j+16] = d·((q[j]>>4)−8)
 * The other block formats (K-quants and friends) live in kquant.c.
 */
#include "llm/quant.h"
#include "llm/gguf.h"
#include "llm/kquant.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define DW_X86 1
#endif

float dw_f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, bits;
  if (e == 0) {
    if (m == 0) bits = s;
    else { /* subnormal: normalise */
      e = 127 - 15 + 1;
      while (!(m & 0x400)) {
        m <<= 1;
        e--;
      }
      bits = s | (e << 23) | ((m & 0x3FF) << 13);
    }
  } else if (e == 31) bits = s | 0x7F800000 | (m << 13);
  else bits = s | ((e + 127 - 15) << 23) | (m << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t dw_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t s = (x >> 16) & 0x8000, e = (x >> 23) & 0xFF, m = x & 0x7FFFFF;
  if (e == 0xFF) return (uint16_t)(s | 0x7C00 | (m ? 0x200 : 0));
  int32_t ne = (int32_t)e - 127 + 15;
  if (ne >= 31) return (uint16_t)(s | 0x7C00);
  if (ne <= 0) {
    if (ne < -10) return (uint16_t)s;
    m |= 0x800000;
    uint32_t shift = (uint32_t)(14 - ne), half = 1u << (shift - 1);
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(s | r);
  }
  uint32_t r = (uint32_t)ne << 10 | m >> 13, rem = m & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; /* may carry into the exponent: correct */
  return (uint16_t)(s | r);
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t b = (uint32_t)h << 16;
  float f;
  memcpy(&f, &b, 4);
  return f;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* The f16 at p as f32 (exact either way; the hardware form in hot loops). */
static inline float h2f(const uint8_t *p) {
#ifdef DW_X86
  return _cvtsh_ss(rd16(p));
#else
  return h2f(p);
#endif
}

bool dw_quant_supported(uint32_t t) {
  return t == GGML_F32 || t == GGML_F16 || t == GGML_BF16 || t == GGML_Q8_0 || t == GGML_Q4_0 || dw_kq_handles(t);
}

size_t dw_quant_row_bytes(uint32_t t, int64_t n) {
  return (size_t)n / dw_ggml_block_size(t) * dw_ggml_type_size(t);
}

/* ---- dequantise a row ----------------------------------------------------- */

void dw_dequant_row(uint32_t t, const void *src, float *dst, int64_t n) {
  const uint8_t *s = src;
  switch (t) {
  case GGML_F32: memcpy(dst, src, (size_t)n * 4); return;
  case GGML_F16: {
    int64_t i = 0;
#ifdef DW_X86
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const void *)(s + 2 * i))));
#endif
    for (; i < n; i++) dst[i] = h2f(s + 2 * i);
    return;
  }
  case GGML_BF16:
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(rd16(s + 2 * i));
    return;
  case GGML_Q8_0:
    for (int64_t b = 0; b < n / 32; b++, s += 34) {
      float d = h2f(s);
      for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)(int8_t)s[2 + j];
    }
    return;
  case GGML_Q4_0:
    for (int64_t b = 0; b < n / 32; b++, s += 18) {
      float d = h2f(s);
      for (int j = 0; j < 16; j++) {
        dst[b * 32 + j] = d * (float)((s[2 + j] & 15) - 8);
        dst[b * 32 + j + 16] = d * (float)((s[2 + j] >> 4) - 8);
      }
    }
    return;
  default: dw_kq_dequant(t, src, dst, n); return;
  }
}

/* ---- dot products ----------------------------------------------------------- */

#ifdef DW_X86
static inline float hsum(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}
static inline __m256 i8x8_ps(const uint8_t *p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const void *)p)));
}
#endif

float dw_dot_f32(const float *a, const float *b, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef DW_X86
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

static float dot_f16(const uint8_t *w, const float *x, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef DW_X86
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w + 2 * i))), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w + 2 * i + 16))), _mm256_loadu_ps(x + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w + 2 * i + 32))), _mm256_loadu_ps(x + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w + 2 * i + 48))), _mm256_loadu_ps(x + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w + 2 * i))), _mm256_loadu_ps(x + i), s0);
  s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
  for (; i < n; i++) s += h2f(w + 2 * i) * x[i];
  return s;
}

static float dot_bf16(const uint8_t *w, const float *x, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef DW_X86
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  for (; i + 16 <= n; i += 16) {
    __m256i a = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)(w + 2 * i))), 16);
    __m256i b = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)(w + 2 * i + 16))), 16);
    s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(a), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_castsi256_ps(b), _mm256_loadu_ps(x + i + 8), s1);
  }
  s = hsum(_mm256_add_ps(s0, s1));
#endif
  for (; i < n; i++) s += bf16_to_f32(rd16(w + 2 * i)) * x[i];
  return s;
}

static float dot_q8_0(const uint8_t *w, const float *x, int64_t n) {
  float s = 0;
#ifdef DW_X86
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++, w += 34, x += 32) {
    const uint8_t *q = w + 2;
    __m256 p = _mm256_mul_ps(i8x8_ps(q), _mm256_loadu_ps(x));
    p = _mm256_fmadd_ps(i8x8_ps(q + 8), _mm256_loadu_ps(x + 8), p);
    p = _mm256_fmadd_ps(i8x8_ps(q + 16), _mm256_loadu_ps(x + 16), p);
    p = _mm256_fmadd_ps(i8x8_ps(q + 24), _mm256_loadu_ps(x + 24), p);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w)), p, acc);
  }
  s = hsum(acc);
#else
  for (int64_t b = 0; b < n / 32; b++, w += 34, x += 32) {
    float p = 0;
    for (int j = 0; j < 32; j++) p += (float)(int8_t)w[2 + j] * x[j];
    s += h2f(w) * p;
  }
#endif
  return s;
}

/* unused where AVX-512 is on (dot_q4_0_512 replaces it below) */
__attribute__((unused)) static inline float dot_q4_0(const uint8_t *w, const float *x, int64_t n) {
  float s = 0;
#ifdef DW_X86
  __m256 acc = _mm256_setzero_ps();
  const __m128i m4 = _mm_set1_epi8(15), e8 = _mm_set1_epi8(8);
  for (int64_t b = 0; b < n / 32; b++, w += 18, x += 32) {
    __m128i q = _mm_loadu_si128((const void *)(w + 2));
    __m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), e8);
    __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8);
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
    p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), p);
    p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16), p);
    p = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), p);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w)), p, acc);
  }
  s = hsum(acc);
#else
  for (int64_t b = 0; b < n / 32; b++, w += 18, x += 32) {
    float p = 0;
    for (int j = 0; j < 16; j++) p += (float)((w[2 + j] & 15) - 8) * x[j] + (float)((w[2 + j] >> 4) - 8) * x[j + 16];
    s += h2f(w) * p;
  }
#endif
  return s;
}

#if defined(__AVX512F__)
/* AVX-512 forms for decode (one token: these are bandwidth-bound). */
static float dot_f16_512(const uint8_t *w, const float *x, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w + 2 * i))), _mm512_loadu_ps(x + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w + 2 * i + 32))), _mm512_loadu_ps(x + i + 16),
                         s1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  return s + (i < n ? dot_f16(w + 2 * i, x + i, n - i) : 0.f);
}

/* dot_f16_512 for NT tokens at once (x rows ldx apart): each 32 weights are
 * loaded and converted once for all tokens, and every token's sums are
 * the very operations dot_f16_512 does, in the same order, so each result
 * is bit for bit that of the one-token call. */
static inline __attribute__((always_inline)) void dot_f16_nt(const uint8_t *w, const float *x, int64_t ldx,
                                                             int64_t n, float *out, const int NT) {
  __m512 s0[8], s1[8];
  for (int t = 0; t < NT; t++) s0[t] = s1[t] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w + 2 * i)));
    __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w + 2 * i + 32)));
    for (int t = 0; t < NT; t++) {
      s0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * ldx + i), s0[t]);
      s1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * ldx + i + 16), s1[t]);
    }
  }
  for (int t = 0; t < NT; t++) {
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0[t], s1[t]));
    out[t] = s + (i < n ? dot_f16(w + 2 * i, x + t * ldx + i, n - i) : 0.f);
  }
}

static float dot_bf16_512(const uint8_t *w, const float *x, int64_t n) {
  __m512 s0 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i b = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)(w + 2 * i))), 16);
    s0 = _mm512_fmadd_ps(_mm512_castsi512_ps(b), _mm512_loadu_ps(x + i), s0);
  }
  float s = _mm512_reduce_add_ps(s0);
  return s + (i < n ? dot_bf16(w + 2 * i, x + i, n - i) : 0.f);
}

static float dot_q8_0_512(const uint8_t *w, const float *x, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
  int64_t nb = n / 32, b = 0;
  for (; b + 2 <= nb; b += 2, w += 68, x += 64) {
    __m512 p0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(w + 2)))),
                              _mm512_loadu_ps(x));
    p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(w + 18)))),
                         _mm512_loadu_ps(x + 16), p0);
    __m512 p1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(w + 36)))),
                              _mm512_loadu_ps(x + 32));
    p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(w + 52)))),
                         _mm512_loadu_ps(x + 48), p1);
    acc0 = _mm512_fmadd_ps(_mm512_set1_ps(h2f(w)), p0, acc0);
    acc1 = _mm512_fmadd_ps(_mm512_set1_ps(h2f(w + 34)), p1, acc1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  return s + (b < nb ? dot_q8_0(w, x, 32) : 0.f);
}

static float dot_q4_0_512(const uint8_t *w, const float *x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  const __m128i m4 = _mm_set1_epi8(15), e8 = _mm_set1_epi8(8);
  for (int64_t b = 0; b < n / 32; b++, w += 18, x += 32) {
    __m128i q = _mm_loadu_si128((const void *)(w + 2));
    __m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), e8);
    __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8);
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_loadu_ps(x));
    p = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), _mm512_loadu_ps(x + 16), p);
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(w)), p, acc);
  }
  return _mm512_reduce_add_ps(acc);
}
#define dot_f16 dot_f16_512
#define dot_bf16 dot_bf16_512
#define dot_q8_0 dot_q8_0_512
#define dot_q4_0 dot_q4_0_512
#endif


void dw_vec_dot_n(uint32_t t, const void *row, const float *x, int64_t ldx, int nt, int64_t n, float *out) {
#if defined(__AVX512F__)
  if (t == GGML_F16 && nt <= 8) {
    switch (nt) {
#define DN(k)                                                                                                      \
  case k: dot_f16_nt(row, x, ldx, n, out, k); return;
      DN(1) DN(2) DN(3) DN(4) DN(5) DN(6) DN(7) DN(8)
#undef DN
    }
  }
#endif
  for (int i = 0; i < nt; i++) out[i] = dw_vec_dot(t, row, x + i * ldx, n);
}

float dw_vec_dot(uint32_t t, const void *row, const float *x, int64_t n) {
  switch (t) {
  case GGML_F32: return dw_dot_f32(row, x, n);
  case GGML_F16: return dot_f16(row, x, n);
  case GGML_BF16: return dot_bf16(row, x, n);
  case GGML_Q8_0: return dot_q8_0(row, x, n);
  case GGML_Q4_0: return dot_q4_0(row, x, n);
  }
  return dw_kq_dot(t, row, x, n);
}

/* ---- token-vector GEMM (prefill) ------------------------------------------------ */

void dw_transpose_x(const float *x, int nt, int64_t n, int64_t k0, int64_t k1, float *xt, int ntp) {
  for (int64_t kb = k0; kb < k1; kb += 16) { /* 16 columns at a time: 64-byte reads, sequential writes */
    int64_t ke = kb + 16 < k1 ? kb + 16 : k1;
    for (int t = 0; t < ntp; t++)
      for (int64_t k = kb; k < ke; k++) xt[k * ntp + t] = t < nt ? x[(int64_t)t * n + k] : 0.f;
  }
}

enum { TR = 6, TV = 32 }; /* a micro-tile: 6 weight rows × 32 tokens */

#if defined(__AVX512F__)
static void tile(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV]) {
  __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
  __m512 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5];
  for (int64_t k = 0; k < n; k++, xt += ntp) {
    __m512 x0 = _mm512_loadu_ps(xt), x1 = _mm512_loadu_ps(xt + 16), b;
    b = _mm512_set1_ps(w0[k]); a00 = _mm512_fmadd_ps(b, x0, a00); a01 = _mm512_fmadd_ps(b, x1, a01);
    b = _mm512_set1_ps(w1[k]); a10 = _mm512_fmadd_ps(b, x0, a10); a11 = _mm512_fmadd_ps(b, x1, a11);
    b = _mm512_set1_ps(w2[k]); a20 = _mm512_fmadd_ps(b, x0, a20); a21 = _mm512_fmadd_ps(b, x1, a21);
    b = _mm512_set1_ps(w3[k]); a30 = _mm512_fmadd_ps(b, x0, a30); a31 = _mm512_fmadd_ps(b, x1, a31);
    b = _mm512_set1_ps(w4[k]); a40 = _mm512_fmadd_ps(b, x0, a40); a41 = _mm512_fmadd_ps(b, x1, a41);
    b = _mm512_set1_ps(w5[k]); a50 = _mm512_fmadd_ps(b, x0, a50); a51 = _mm512_fmadd_ps(b, x1, a51);
  }
  _mm512_storeu_ps(acc[0], a00), _mm512_storeu_ps(acc[0] + 16, a01);
  _mm512_storeu_ps(acc[1], a10), _mm512_storeu_ps(acc[1] + 16, a11);
  _mm512_storeu_ps(acc[2], a20), _mm512_storeu_ps(acc[2] + 16, a21);
  _mm512_storeu_ps(acc[3], a30), _mm512_storeu_ps(acc[3] + 16, a31);
  _mm512_storeu_ps(acc[4], a40), _mm512_storeu_ps(acc[4] + 16, a41);
  _mm512_storeu_ps(acc[5], a50), _mm512_storeu_ps(acc[5] + 16, a51);
}

/* The same for the first 16 tokens only (a last column block of <= 16:
 * half the FMAs of the full tile); each sum in the same order as tile's. */
static void tile16(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV]) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5];
  for (int64_t k = 0; k < n; k++, xt += ntp) {
    __m512 x0 = _mm512_loadu_ps(xt);
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(w0[k]), x0, a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(w1[k]), x0, a1);
    a2 = _mm512_fmadd_ps(_mm512_set1_ps(w2[k]), x0, a2);
    a3 = _mm512_fmadd_ps(_mm512_set1_ps(w3[k]), x0, a3);
    a4 = _mm512_fmadd_ps(_mm512_set1_ps(w4[k]), x0, a4);
    a5 = _mm512_fmadd_ps(_mm512_set1_ps(w5[k]), x0, a5);
  }
  _mm512_storeu_ps(acc[0], a0), _mm512_storeu_ps(acc[1], a1), _mm512_storeu_ps(acc[2], a2);
  _mm512_storeu_ps(acc[3], a3), _mm512_storeu_ps(acc[4], a4), _mm512_storeu_ps(acc[5], a5);
}
#elif defined(DW_X86)
/* AVX2: 32 tokens as two halves of 2 ymm × 6 rows (halves: 1, the first 16 only). */
static void tile_h(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV], int halves) {
  for (int h = 0; h < halves; h++) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
    __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    const float *xp = xt + 16 * h;
    for (int64_t k = 0; k < n; k++, xp += ntp) {
      __m256 x0 = _mm256_loadu_ps(xp), x1 = _mm256_loadu_ps(xp + 8), b;
      b = _mm256_broadcast_ss(w[0] + k); a00 = _mm256_fmadd_ps(b, x0, a00); a01 = _mm256_fmadd_ps(b, x1, a01);
      b = _mm256_broadcast_ss(w[1] + k); a10 = _mm256_fmadd_ps(b, x0, a10); a11 = _mm256_fmadd_ps(b, x1, a11);
      b = _mm256_broadcast_ss(w[2] + k); a20 = _mm256_fmadd_ps(b, x0, a20); a21 = _mm256_fmadd_ps(b, x1, a21);
      b = _mm256_broadcast_ss(w[3] + k); a30 = _mm256_fmadd_ps(b, x0, a30); a31 = _mm256_fmadd_ps(b, x1, a31);
      b = _mm256_broadcast_ss(w[4] + k); a40 = _mm256_fmadd_ps(b, x0, a40); a41 = _mm256_fmadd_ps(b, x1, a41);
      b = _mm256_broadcast_ss(w[5] + k); a50 = _mm256_fmadd_ps(b, x0, a50); a51 = _mm256_fmadd_ps(b, x1, a51);
    }
    int o = 16 * h;
    _mm256_storeu_ps(acc[0] + o, a00), _mm256_storeu_ps(acc[0] + o + 8, a01);
    _mm256_storeu_ps(acc[1] + o, a10), _mm256_storeu_ps(acc[1] + o + 8, a11);
    _mm256_storeu_ps(acc[2] + o, a20), _mm256_storeu_ps(acc[2] + o + 8, a21);
    _mm256_storeu_ps(acc[3] + o, a30), _mm256_storeu_ps(acc[3] + o + 8, a31);
    _mm256_storeu_ps(acc[4] + o, a40), _mm256_storeu_ps(acc[4] + o + 8, a41);
    _mm256_storeu_ps(acc[5] + o, a50), _mm256_storeu_ps(acc[5] + o + 8, a51);
  }
}
static void tile(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV]) {
  tile_h(w, n, xt, ntp, acc, 2);
}
static void tile16(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV]) {
  tile_h(w, n, xt, ntp, acc, 1);
}
#else
static void tile_n(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV], int tv) {
  memset(acc, 0, sizeof(float) * TR * TV);
  for (int64_t k = 0; k < n; k++, xt += ntp)
    for (int r = 0; r < TR; r++)
      for (int t = 0; t < tv; t++) acc[r][t] += w[r][k] * xt[t];
}
static void tile(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV]) {
  tile_n(w, n, xt, ntp, acc, TV);
}
static void tile16(const float *const *w, int64_t n, const float *xt, int ntp, float acc[TR][TV]) {
  tile_n(w, n, xt, ntp, acc, 16);
}
#endif

void dw_gemm_xt(const float *w, int nr, int64_t n, const float *xt, int nt, int ntp, const float *zero, float *y,
                int64_t ldy) {
  float acc[TR][TV];
  for (int r0 = 0; r0 < nr; r0 += TR) {
    const float *ws[TR];
    for (int i = 0; i < TR; i++) ws[i] = r0 + i < nr ? w + (int64_t)(r0 + i) * n : zero;
    for (int t0 = 0; t0 < nt; t0 += TV) {
      int tn = nt - t0 < TV ? nt - t0 : TV, rn = nr - r0 < TR ? nr - r0 : TR;
      (tn <= 16 ? tile16 : tile)(ws, n, xt + t0, ntp, acc);
      for (int t = 0; t < tn; t++)
        for (int i = 0; i < rn; i++) y[(int64_t)(t0 + t) * ldy + r0 + i] = acc[i][t];
    }
  }
}

/* ---- SiLU-gated product ------------------------------------------------------------ */

#if defined(__AVX512F__)
/* e^x for x in [-87, 88], relative error ~2e-7: x = n·ln2 + r, |r| <= ln2/2,
 * e^r by a degree-7 polynomial, then scaled by 2^n. */
static inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
#endif

float dw_exp_sum(float *x, int64_t n, float mx) {
  int64_t i = 0;
  float sum = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps(), m = _mm512_set1_ps(mx);
  for (; i + 16 <= n; i += 16) {
    __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; i++) sum += x[i] = expf(x[i] - mx);
  return sum;
}

void dw_silu_mul(float *out, const float *g, const float *u, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __m512 gv = _mm512_loadu_ps(g + i), e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
  }
#endif
  for (; i < n; i++) out[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}

/* GELU in its tanh form, 0.5·g·(1 + tanh(sqrt(2/π)(g + 0.044715 g³))),
 * written as g·sigmoid(2z) so that it shares exp with SiLU. */
void dw_gelu_mul(float *out, const float *g, const float *u, int64_t n) {
  const float c = 0.7978845608028654f, k = 0.044715f;
  for (int64_t i = 0; i < n; i++) {
    float x = g[i], z = 2.f * c * (x + k * x * x * x);
    out[i] = x / (1.f + expf(-z)) * u[i];
  }
}
