/*
 * kquant.h — decoding and dot products for the block formats of kquant.c
 * (Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS). Callers
 * go through quant.h; n is a multiple of the type's block size.
 */
#ifndef DW_KQUANT_H
#define DW_KQUANT_H

#include "base/base.h"

#include <stdbool.h>

DW_HIDDEN bool dw_kq_handles(uint32_t ggml_type);
DW_HIDDEN void dw_kq_dequant(uint32_t ggml_type, const void *src, float *dst, int64_t n);
DW_HIDDEN float dw_kq_dot(uint32_t ggml_type, const void *row, const float *x, int64_t n);

#endif
