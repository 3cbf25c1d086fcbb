/*
 * qdot.c — integer dot products for decode: the activation vector is
 * quantised once per matrix to 8 bits per 32 elements (dw_q8x), and each
 * weight row's codes meet it in AVX-512 VNNI multiply-adds (vpdpbusd: 32
 * byte products per instruction), with the block scales applied in f32 —
 * the way the fastest CPU engines do it. Decode is bandwidth-bound, and
 * this keeps the arithmetic well under the memory time.
 *
 * vpdpbusd multiplies unsigned by signed bytes. Weight codes are unsigned
 * (Q4_0, Q5_0, Q4_K, Q5_K, Q6_K store q + offset), so Σ (q − o)·x = Σ q·x − o·Σ x
 * with d·Σ x kept per 16 activations; signed Q8_0 codes are shifted by 128
 * the same way.
 *
 * Numerics: each activation is rounded to 1/254 of its block's largest
 * magnitude, so a dot product differs from the f32 one by about 0.3 % of
 * Σ|w·x| at worst (tests/llm_test.c bounds it); the result does not depend
 * on how many tokens are in the batch.
 *
 * Without VNNI (or off x86) dw_q8x_has is false and callers use the f32
 * kernels of quant.h.
 */
#include "llm/quant.h"
#include "llm/gguf.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__F16C__)
#include <immintrin.h>
#define DW_QDOT 1
#endif

size_t dw_q8x_bytes(int64_t n) { return (size_t)(n / 32) * sizeof(dw_q8x); }

void dw_q8x_quantize(const float *x, int64_t n, dw_q8x *out) {
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127, id = d > 0 ? 1 / d : 0;
    int s0 = 0, s1 = 0;
    for (int j = 0; j < 32; j++) {
      int q = (int)lrintf(x[j] * id);
      q = q > 127 ? 127 : q < -127 ? -127 : q;
      out[b].q[j] = (int8_t)q;
      *(j < 16 ? &s0 : &s1) += q;
    }
    out[b].d = d, out[b].ds[0] = d * (float)s0, out[b].ds[1] = d * (float)s1;
  }
}

#ifdef DW_QDOT
static inline float h2f(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

static inline float hsum8(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

static inline __m256i dp(__m256i u8, const int8_t *x) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u8, _mm256_loadu_si256((const void *)x));
}

/* 16 bytes of nibbles -> 32 codes: elements 0..15 low nibbles, 16..31 high */
static inline __m256i nib32(const uint8_t *q) {
  __m128i v = _mm_loadu_si128((const void *)q), m4 = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

static float q8_0(const uint8_t *w, const dw_q8x *x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  for (int64_t b = 0; b < nb; b++, w += 34) {
    float s = h2f(w) * x[b].d;
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const void *)(w + 2)), flip); /* q + 128 */
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(dp(u, x[b].q)), acc);
    corr += 128.f * h2f(w) * (x[b].ds[0] + x[b].ds[1]);
  }
  return hsum8(acc) - corr;
}

static float q4_0(const uint8_t *w, const dw_q8x *x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  for (int64_t b = 0; b < nb; b++, w += 18) {
    float s = h2f(w) * x[b].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(dp(nib32(w + 2), x[b].q)), acc);
    corr += 8.f * h2f(w) * (x[b].ds[0] + x[b].ds[1]);
  }
  return hsum8(acc) - corr;
}

static float q5_0(const uint8_t *w, const dw_q8x *x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  const __m256i b16 = _mm256_set1_epi8(16);
  for (int64_t b = 0; b < nb; b++, w += 22) {
    float s = h2f(w) * x[b].d;
    uint32_t h;
    memcpy(&h, w + 2, 4);
    __m256i q = nib32(w + 6);
    q = _mm256_mask_add_epi8(q, (__mmask32)h, q, b16); /* bit e of h: element e's fifth bit */
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(dp(q, x[b].q)), acc);
    corr += 16.f * h2f(w) * (x[b].ds[0] + x[b].ds[1]);
  }
  return hsum8(acc) - corr;
}

static void scale_min_k4(const uint8_t *S, int sc[8], int m[8]) {
  for (int b = 0; b < 4; b++) sc[b] = S[b] & 63, m[b] = S[b + 4] & 63;
  for (int b = 4; b < 8; b++) {
    sc[b] = (S[b + 4] & 15) | (S[b - 4] >> 6) << 4;
    m[b] = (S[b + 4] >> 4) | (S[b] >> 6) << 4;
  }
}

/* Q4_K and Q5_K: group g of 32 = activation block g; x = dl·q − ml; Q5_K's
 * fifth bit of element 32g+l is bit g of qh[l] (qh before the nibbles). */
static float q45_k(const uint8_t *w, const dw_q8x *x, int64_t nb, bool five) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
  for (int64_t sb = 0; sb < nb / 8; sb++, w += five ? 176 : 144, x += 8) {
    float d = h2f(w), dmin = h2f(w + 2);
    int sc[8], m[8];
    scale_min_k4(w + 4, sc, m);
    __m256i qh = five ? _mm256_loadu_si256((const void *)(w + 16)) : _mm256_setzero_si256();
    for (int g = 0; g < 8; g += 2) {
      __m256i q = _mm256_loadu_si256((const void *)(w + (five ? 48 : 16) + 16 * g));
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if (five) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, g), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, g + 1), one), 4));
      }
      const dw_q8x *x0 = &x[g], *x1 = &x[g + 1];
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[g] * x0->d), _mm256_cvtepi32_ps(dp(lo, x0->q)), acc);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[g + 1] * x1->d), _mm256_cvtepi32_ps(dp(hi, x1->q)), acc);
      corr += dmin * ((float)m[g] * (x0->ds[0] + x0->ds[1]) + (float)m[g + 1] * (x1->ds[0] + x1->ds[1]));
    }
  }
  return hsum8(acc) - corr;
}

/* Q6_K: slice (h, k) of 32 elements = activation block 4h + k; its two
 * halves of 16 have their own scales (lanes 0-3 and 4-7 of the sums). */
static float q6_k(const uint8_t *w, const dw_q8x *x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
  for (int64_t sb = 0; sb < nb / 8; sb++, w += 210, x += 8) {
    const int8_t *sc = (const int8_t *)(w + 192);
    float d = h2f(w + 208);
    for (int h = 0; h < 2; h++) {
      __m256i qh = _mm256_loadu_si256((const void *)(w + 128 + 32 * h));
      for (int k = 0; k < 4; k++) {
        __m256i ql = _mm256_loadu_si256((const void *)(w + 64 * h + 32 * (k % 2)));
        __m256i lo = k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2);
        __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)); /* 0..63, value q − 32 */
        const dw_q8x *xb = &x[4 * h + k];
        int g = 8 * h + 2 * k;
        float s0 = d * (float)sc[g] * xb->d, s1 = d * (float)sc[g + 1] * xb->d;
        __m256 sv = _mm256_set_m128(_mm_set1_ps(s1), _mm_set1_ps(s0));
        acc = _mm256_fmadd_ps(sv, _mm256_cvtepi32_ps(dp(q, xb->q)), acc);
        corr += 32.f * d * ((float)sc[g] * xb->ds[0] + (float)sc[g + 1] * xb->ds[1]);
      }
    }
  }
  return hsum8(acc) - corr;
}
#endif

bool dw_q8x_has(uint32_t t) {
#ifdef DW_QDOT
  return t == GGML_Q8_0 || t == GGML_Q4_0 || t == GGML_Q5_0 || t == GGML_Q4_K || t == GGML_Q5_K || t == GGML_Q6_K;
#else
  (void)t;
  return false;
#endif
}

float dw_vec_dot_q8x(uint32_t t, const void *row, const dw_q8x *x, int64_t n) {
#ifdef DW_QDOT
  switch (t) {
  case GGML_Q8_0: return q8_0(row, x, n / 32);
  case GGML_Q4_0: return q4_0(row, x, n / 32);
  case GGML_Q5_0: return q5_0(row, x, n / 32);
  case GGML_Q4_K: return q45_k(row, x, n / 32, false);
  case GGML_Q5_K: return q45_k(row, x, n / 32, true);
  case GGML_Q6_K: return q6_k(row, x, n / 32);
  }
#endif
  (void)t, (void)row, (void)x, (void)n;
  return 0;
}
