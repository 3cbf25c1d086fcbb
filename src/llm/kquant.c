/*
 * kquant.c — the GGUF block formats beyond Q8_0/Q4_0 that llama.cpp's
 * quantiser writes: Q4_1, Q5_0, Q5_1, IQ4_NL (32-element blocks) and Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS (256-element super-blocks). It owns
 * decoding one block into f32 and the dot product of a row with an f32
 * vector; quant.c dispatches here.
 *
 * Layouts and formulas: ../shared/specs/quants.md (restated per function).
 * Every product and sum is a separately rounded f32 operation in the order
 * the formats define (the build turns off FMA contraction for this file),
 * so a decoded block is bit for bit what llama.cpp's dequantize_row_*
 * gives. The dot products decode a chunk of at most 256 elements into a
 * stack buffer and multiply it there (AVX-512 forms for the types of the
 * common Q4_K_M / Q5_K_M / Q6_K files multiply straight from the codes).
 *
 * Threads: all functions are pure.
 */
#include "llm/kquant.h"
#include "llm/gguf.h"
#include "llm/quant.h"

#include <string.h>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DW_KQ_512 1
#endif

/* f16 -> f32 is exact, so the hardware conversion gives the same values. */
static inline float h2f(const uint8_t *p) {
#ifdef __F16C__
  return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
#else
  return dw_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
#endif
}

/* IQ4_NL / IQ4_XS: the fixed non-linear code book. */
static const int8_t iq4_k[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

bool dw_kq_handles(uint32_t t) {
  switch (t) {
  case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1: case GGML_IQ4_NL:
  case GGML_Q2_K: case GGML_Q3_K: case GGML_Q4_K: case GGML_Q5_K: case GGML_Q6_K: case GGML_IQ4_XS:
    return true;
  }
  return false;
}

/* ---- 32-element blocks: byte qs[j] holds elements j (low) and j+16 (high) ---- */

/* Q4_1 (20 B): f16 d, f16 m, qs[16]; x = d·q + m. */
static void deq_q4_1(const uint8_t *b, float *y) {
  float d = h2f(b), m = h2f(b + 2);
  for (int j = 0; j < 16; j++) {
    y[j] = d * (float)(b[4 + j] & 15) + m;
    y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
  }
}

/* Q5_0 (22 B): f16 d, u32 qh (bit e = fifth bit of element e), qs[16];
 * x = d·(q − 16). */
static void deq_q5_0(const uint8_t *b, float *y) {
  float d = h2f(b);
  uint32_t h = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
  for (int j = 0; j < 16; j++) {
    int lo = (b[6 + j] & 15) | (int)((h >> j) & 1) << 4, hi = (b[6 + j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
    y[j] = d * (float)(lo - 16);
    y[j + 16] = d * (float)(hi - 16);
  }
}

/* Q5_1 (24 B): f16 d, f16 m, u32 qh, qs[16]; x = d·q + m. */
static void deq_q5_1(const uint8_t *b, float *y) {
  float d = h2f(b), m = h2f(b + 2);
  uint32_t h = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
  for (int j = 0; j < 16; j++) {
    int lo = (b[8 + j] & 15) | (int)((h >> j) & 1) << 4, hi = (b[8 + j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
    y[j] = d * (float)lo + m;
    y[j + 16] = d * (float)hi + m;
  }
}

/* IQ4_NL (18 B): f16 d, qs[16] of code-book indices; x = d·K[i]. */
static void deq_iq4_nl(const uint8_t *b, float *y) {
  float d = h2f(b);
  for (int j = 0; j < 16; j++) {
    y[j] = d * (float)iq4_k[b[2 + j] & 15];
    y[j + 16] = d * (float)iq4_k[b[2 + j] >> 4];
  }
}

/* ---- 256-element super-blocks ------------------------------------------------ */

/* Q2_K (84 B): scales[16] (low nibble scale, high nibble min of each 16),
 * qs[64] (2 bits: byte 32n+t holds elements 128n+t+32j at bits 2j), f16 d,
 * f16 dmin at the end; x = (d·sc)·q − (dmin·m). */
static void deq_q2_k(const uint8_t *b, float *y) {
  const uint8_t *sc = b, *qs = b + 16;
  float d = h2f(b + 80), dmin = h2f(b + 82);
  for (int e = 0; e < 256; e++) {
    int n = e / 128, j = (e % 128) / 32, t = e % 32, s = sc[e / 16];
    float dl = d * (float)(s & 15), ml = dmin * (float)(s >> 4);
    y[e] = dl * (float)((qs[32 * n + t] >> (2 * j)) & 3) - ml;
  }
}

/* Q3_K (110 B): hmask[32] (bit 4n+j of byte t: "no −4" for element
 * 128n+32j+t), qs[64] (low 2 bits, as Q2_K), scales[12] (sixteen 6-bit
 * codes, signed by −32), f16 d; x = (d·s)·q, q ∈ −4..3. */
static void deq_q3_k(const uint8_t *b, float *y) {
  const uint8_t *hm = b, *qs = b + 32, *S = b + 96;
  float d = h2f(b + 108);
  int s[16];
  for (int i = 0; i < 16; i++) {
    int lo = i < 8 ? S[i] & 15 : S[i - 8] >> 4, hi = (S[8 + i % 4] >> (2 * (i / 4))) & 3;
    s[i] = (lo | hi << 4) - 32;
  }
  for (int e = 0; e < 256; e++) {
    int n = e / 128, j = (e % 128) / 32, t = e % 32;
    int q = ((qs[32 * n + t] >> (2 * j)) & 3) - ((hm[t] >> (4 * n + j)) & 1 ? 0 : 4);
    float dl = d * (float)s[e / 16];
    y[e] = dl * (float)q;
  }
}

/* The eight (scale, min) 6-bit pairs of Q4_K and Q5_K. */
static void scale_min_k4(const uint8_t *S, int sc[8], int m[8]) {
  for (int b = 0; b < 4; b++) sc[b] = S[b] & 63, m[b] = S[b + 4] & 63;
  for (int b = 4; b < 8; b++) {
    sc[b] = (S[b + 4] & 15) | (S[b - 4] >> 6) << 4;
    m[b] = (S[b + 4] >> 4) | (S[b] >> 6) << 4;
  }
}

/* Q4_K (144 B): f16 d, f16 dmin, scales[12], qs[128]: chunk c = e/64 of 32
 * bytes serves group 2c (low nibbles) and 2c+1 (high); x = (d·sc)·q − (dmin·m). */
static void deq_q4_k(const uint8_t *b, float *y) {
  float d = h2f(b), dmin = h2f(b + 2);
  int sc[8], m[8];
  scale_min_k4(b + 4, sc, m);
  const uint8_t *qs = b + 16;
  for (int g = 0; g < 8; g++) {
    float dl = d * (float)sc[g], ml = dmin * (float)m[g];
    const uint8_t *q = qs + 32 * (g / 2);
    for (int l = 0; l < 32; l++) y[32 * g + l] = dl * (float)(g & 1 ? q[l] >> 4 : q[l] & 15) - ml;
  }
}

/* Q5_K (176 B): as Q4_K with qh[32] after the scales (bit g of byte l: the
 * fifth bit of element 32g+l) and qs at 48. */
static void deq_q5_k(const uint8_t *b, float *y) {
  float d = h2f(b), dmin = h2f(b + 2);
  int sc[8], m[8];
  scale_min_k4(b + 4, sc, m);
  const uint8_t *qh = b + 16, *qs = b + 48;
  for (int g = 0; g < 8; g++) {
    float dl = d * (float)sc[g], ml = dmin * (float)m[g];
    const uint8_t *q = qs + 32 * (g / 2);
    for (int l = 0; l < 32; l++) {
      int v = (g & 1 ? q[l] >> 4 : q[l] & 15) | ((qh[l] >> g) & 1) << 4;
      y[32 * g + l] = dl * (float)v - ml;
    }
  }
}

/* Q6_K (210 B): ql[128] low 4 bits, qh[64] high 2 bits, i8 scales[16],
 * f16 d; in half h, element 32k+l: low nibble of ql[64h+l+32(k%2)] (high
 * nibble for k ≥ 2), bits 2k of qh[32h+l]; x = (d·scale)·(q − 32). */
static void deq_q6_k(const uint8_t *b, float *y) {
  const uint8_t *ql = b, *qh = b + 128;
  const int8_t *sc = (const int8_t *)(b + 192);
  float d = h2f(b + 208);
  for (int e = 0; e < 256; e++) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    int lo = ql[64 * h + l + 32 * (k % 2)], hi = (qh[32 * h + l] >> (2 * k)) & 3;
    int q = ((k < 2 ? lo & 15 : lo >> 4) | hi << 4) - 32;
    float dl = d * (float)sc[e / 16];
    y[e] = dl * (float)q;
  }
}

/* IQ4_XS (136 B): f16 d, u16 scales_h, scales_l[4], qs[128] (16 bytes per
 * group of 32, Q4_0-style); x = (d·(ls − 32))·K[i]. */
static void deq_iq4_xs(const uint8_t *b, float *y) {
  float d = h2f(b);
  unsigned sh = (unsigned)(b[2] | b[3] << 8);
  for (int g = 0; g < 8; g++) {
    int ls = ((g & 1 ? b[4 + g / 2] >> 4 : b[4 + g / 2] & 15) | (int)((sh >> (2 * g)) & 3) << 4);
    float dl = d * (float)(ls - 32);
    const uint8_t *q = b + 8 + 16 * g;
    for (int j = 0; j < 16; j++) {
      y[32 * g + j] = dl * (float)iq4_k[q[j] & 15];
      y[32 * g + j + 16] = dl * (float)iq4_k[q[j] >> 4];
    }
  }
}

typedef void (*deq_fn)(const uint8_t *, float *);

static deq_fn deq_of(uint32_t t, int *blk, int *bytes) {
  switch (t) {
  case GGML_Q4_1: *blk = 32, *bytes = 20; return deq_q4_1;
  case GGML_Q5_0: *blk = 32, *bytes = 22; return deq_q5_0;
  case GGML_Q5_1: *blk = 32, *bytes = 24; return deq_q5_1;
  case GGML_IQ4_NL: *blk = 32, *bytes = 18; return deq_iq4_nl;
  case GGML_Q2_K: *blk = 256, *bytes = 84; return deq_q2_k;
  case GGML_Q3_K: *blk = 256, *bytes = 110; return deq_q3_k;
  case GGML_Q4_K: *blk = 256, *bytes = 144; return deq_q4_k;
  case GGML_Q5_K: *blk = 256, *bytes = 176; return deq_q5_k;
  case GGML_Q6_K: *blk = 256, *bytes = 210; return deq_q6_k;
  case GGML_IQ4_XS: *blk = 256, *bytes = 136; return deq_iq4_xs;
  }
  return NULL;
}

void dw_kq_dequant(uint32_t t, const void *src, float *dst, int64_t n) {
  int blk, bytes;
  deq_fn f = deq_of(t, &blk, &bytes);
  const uint8_t *s = src;
  for (int64_t i = 0; f && i + blk <= n; i += blk, s += bytes) f(s, dst + i);
}

/* ---- dot products --------------------------------------------------------------- */

#ifdef DW_KQ_512
/* Q4_K · x: per group of 32, Σ q·x and Σ x in f32 vectors, then
 * dl·Σqx − ml·Σx; the codes are widened in registers, never stored. */
static float dot_q4_k(const uint8_t *b, const float *x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  const __m128i m4 = _mm_set1_epi8(15);
  for (int64_t i = 0; i < n; i += 256, b += 144, x += 256) {
    float d = h2f(b), dmin = h2f(b + 2);
    int sc[8], m[8];
    scale_min_k4(b + 4, sc, m);
    for (int c = 0; c < 4; c++) {
      const uint8_t *q = b + 16 + 32 * c;
      const float *xc = x + 64 * c;
      __m128i q0 = _mm_loadu_si128((const void *)q), q1 = _mm_loadu_si128((const void *)(q + 16));
      __m512 x0 = _mm512_loadu_ps(xc), x1 = _mm512_loadu_ps(xc + 16);
      __m512 x2 = _mm512_loadu_ps(xc + 32), x3 = _mm512_loadu_ps(xc + 48);
      __m512 lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q0, m4))), x0);
      lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q1, m4))), x1, lo);
      __m512 hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q0, 4), m4))), x2);
      hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q1, 4), m4))), x3, hi);
      __m512 s0 = _mm512_add_ps(x0, x1), s1 = _mm512_add_ps(x2, x3);
      int g = 2 * c;
      acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[g]), lo, acc);
      acc = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * (float)m[g]), s0, acc);
      acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[g + 1]), hi, acc);
      acc = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * (float)m[g + 1]), s1, acc);
    }
  }
  return _mm512_reduce_add_ps(acc);
}

/* Q6_K · x: 16 elements share a scale; the codes of 16 elements are built
 * from their ql/qh bytes in a 128-bit register and widened. */
static float dot_q6_k(const uint8_t *b, const float *x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  const __m128i m4 = _mm_set1_epi8(15), m2 = _mm_set1_epi8(3), o32 = _mm_set1_epi8(32);
  for (int64_t i = 0; i < n; i += 256, b += 210, x += 256) {
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int h = 0; h < 2; h++)
      for (int k = 0; k < 4; k++)
        for (int u = 0; u < 2; u++) { /* 16 elements l = 16u.. of slice k */
          __m128i ql = _mm_loadu_si128((const void *)(b + 64 * h + 32 * (k % 2) + 16 * u));
          __m128i qh = _mm_loadu_si128((const void *)(b + 128 + 32 * h + 16 * u));
          __m128i lo = k < 2 ? _mm_and_si128(ql, m4) : _mm_and_si128(_mm_srli_epi16(ql, 4), m4);
          __m128i hi = _mm_and_si128(_mm_srli_epi16(qh, 2 * k), m2);
          __m128i q = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), o32);
          __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)),
                                   _mm512_loadu_ps(x + 128 * h + 32 * k + 16 * u));
          acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[8 * h + 2 * k + u]), p, acc);
        }
  }
  return _mm512_reduce_add_ps(acc);
}

/* Q5_0 · x: the fifth bits come from a mask register. */
static float dot_q5_0(const uint8_t *b, const float *x, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  const __m128i m4 = _mm_set1_epi8(15);
  for (int64_t i = 0; i < n; i += 32, b += 22, x += 32) {
    uint32_t h;
    memcpy(&h, b + 2, 4);
    __m128i q = _mm_loadu_si128((const void *)(b + 6));
    __m128i lo = _mm_mask_add_epi8(_mm_and_si128(q, m4), (__mmask16)h, _mm_and_si128(q, m4), _mm_set1_epi8(16));
    __m128i hi4 = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    __m128i hi = _mm_mask_add_epi8(hi4, (__mmask16)(h >> 16), hi4, _mm_set1_epi8(16));
    lo = _mm_sub_epi8(lo, _mm_set1_epi8(16)), hi = _mm_sub_epi8(hi, _mm_set1_epi8(16));
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_loadu_ps(x));
    p = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), _mm512_loadu_ps(x + 16), p);
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(b)), p, acc);
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

float dw_kq_dot(uint32_t t, const void *row, const float *x, int64_t n) {
#ifdef DW_KQ_512
  if (t == GGML_Q4_K) return dot_q4_k(row, x, n);
  if (t == GGML_Q6_K) return dot_q6_k(row, x, n);
  if (t == GGML_Q5_0) return dot_q5_0(row, x, n);
#endif
  int blk, bytes;
  deq_fn f = deq_of(t, &blk, &bytes);
  if (!f) return 0;
  float buf[256], s = 0;
  const uint8_t *r = row;
  for (int64_t i = 0; i < n;) {
    int64_t m = n - i < 256 ? n - i : 256;
    for (int64_t j = 0; j < m; j += blk, r += bytes) f(r, buf + j);
    s += dw_dot_f32(buf, x + i, m);
    i += m;
  }
  return s;
}
