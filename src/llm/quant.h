/*
 * quant.h — weight element types (F32, F16, BF16, Q8_0, Q4_0 here; Q4_1, Q5_0,
 * Q5_1, IQ4_NL, Q2_K..Q6_K, IQ4_XS through kquant.c): conversion,
 * row dequantisation, and the dot-product / matrix kernels of the forward
 * pass. Quantised weights are decoded inside the kernels, a block or a few
 * rows at a time; a whole tensor is never expanded in memory.
 *
 * Invariants: callers pass n a multiple of the type's block size (the GGUF
 * loader guarantees it for rows); results accumulate in f32.
 *
 * Threads: all functions are pure.
 */
#ifndef DW_QUANT_H
#define DW_QUANT_H

#include "base/base.h"

#include <stdbool.h>

DW_HIDDEN float dw_f16_to_f32(uint16_t h);
DW_HIDDEN uint16_t dw_f32_to_f16(float f);
DW_HIDDEN bool dw_quant_supported(uint32_t ggml_type);
/* Bytes of a row of n elements. */
DW_HIDDEN size_t dw_quant_row_bytes(uint32_t ggml_type, int64_t n);
DW_HIDDEN void dw_dequant_row(uint32_t ggml_type, const void *src, float *dst, int64_t n);
/* Σ row[i]·x[i] over n elements, row of the given type. */
DW_HIDDEN float dw_vec_dot(uint32_t ggml_type, const void *row, const float *x, int64_t n);
/* out[t] = dw_vec_dot(row, x + t·ldx) for t < nt, bit for bit, reading the
 * row once for all of them where a kernel exists (F16 on AVX-512, nt <= 8). */
DW_HIDDEN void dw_vec_dot_n(uint32_t ggml_type, const void *row, const float *x, int64_t ldx, int nt, int64_t n,
                            float *out);
/* ---- integer dot products (qdot.c) ----
 * An activation vector quantised to 8 bits per 32 elements: d = amax/127,
 * q = round(x/d), ds = d·Σq over each half of 16. */
typedef struct dw_q8x {
  float d, ds[2];
  int8_t q[32];
} dw_q8x;
DW_HIDDEN size_t dw_q8x_bytes(int64_t n);
DW_HIDDEN void dw_q8x_quantize(const float *x, int64_t n, dw_q8x *out);
/* Whether weights of this type have an integer kernel on this build
 * (AVX-512 VNNI: Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K); then dw_vec_dot_q8x(row,
 * x) approximates dw_vec_dot(row, x before quantising) within ~0.3 % of
 * Σ|w·x|. */
DW_HIDDEN bool dw_q8x_has(uint32_t ggml_type);
DW_HIDDEN float dw_vec_dot_q8x(uint32_t ggml_type, const void *row, const dw_q8x *x, int64_t n);

/* f32 dot product. */
DW_HIDDEN float dw_dot_f32(const float *a, const float *b, int64_t n);
/* xt[k*ntp + t] = x[t*n + k] for columns k0 <= k < k1, t < nt; 0 for
 * nt <= t < ntp (ntp: nt rounded up to a multiple of 32). Disjoint column
 * ranges may be written by different threads. */
DW_HIDDEN void dw_transpose_x(const float *x, int nt, int64_t n, int64_t k0, int64_t k1, float *xt, int ntp);
/* y[t*ldy + r] = Σ_k w[r*n + k]·xt[k*ntp + t] for r < nr, t < nt: micro-tiles
 * of 6 rows × 32 tokens (vectors run over tokens; no horizontal sums).
 * zero: n zeros, read in place of missing rows. */
DW_HIDDEN void dw_gemm_xt(const float *w, int nr, int64_t n, const float *xt, int nt, int ntp, const float *zero,
                          float *y, int64_t ldy);
/* x[i] = e^(x[i] − mx) for i < n; returns their sum (softmax numerators). */
DW_HIDDEN float dw_exp_sum(float *x, int64_t n, float mx);
/* out[i] = silu(g[i])·u[i], silu(z) = z/(1+e^-z) (relative error ~1e-6). */
DW_HIDDEN void dw_silu_mul(float *out, const float *g, const float *u, int64_t n);
/* out = gelu_tanh(g) · u (gemma's FFN). */
DW_HIDDEN void dw_gelu_mul(float *out, const float *g, const float *u, int64_t n);
#endif
