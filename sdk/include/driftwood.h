/*
 * driftwood.h (guest SDK) — the `driftwood` import module, version 1, for
 * guest code compiled to wasm32 (clang --target=wasm32-wasi).
 *
 * Every pointer is an address in the guest's own linear memory; the host
 * reads and writes those bytes in place (no copies). Every function returns
 * a status: DW_OK (0) or one of the DW_ERR_* codes below, identical to the
 * host's dw_status. Sizes are in elements unless a name ends in _bytes.
 *
 * Usage:
 *   float a[M*K], b[K*N], c[M*N];
 *   if (dw_matmul_f32(a, b, c, M, N, K) != DW_OK) ...;
 *   dw_op_info info; dw_last_op_info(&info);   // info.zero_copy == 1
 *
 * This header includes nothing from the host.
 */
#ifndef DRIFTWOOD_GUEST_H
#define DRIFTWOOD_GUEST_H

#include <stdint.h>

#define DW_IMPORT(name) __attribute__((import_module("driftwood"), import_name(#name)))

enum {
  DW_OK = 0,
  DW_ERR_INVALID_ARG = 1,
  DW_ERR_OUT_OF_BOUNDS = 2,
  DW_ERR_NOMEM = 3,
  DW_ERR_IO = 4,
  DW_ERR_UNSUPPORTED = 9,
  DW_ERR_LIMIT = 10,
  DW_ERR_BACKEND = 11,
  DW_ERR_NOT_FOUND = 12,
  DW_ERR_OVERFLOW = 13,
  DW_ERR_MISALIGNED = 14,
};

/* What the host saw during the last compute call (16 bytes, 4-aligned). */
typedef struct dw_op_info {
  uint32_t zero_copy;    /* 1: the backend computed on this guest's own bytes */
  uint32_t status;       /* that call's status */
  uint64_t staged_bytes; /* bytes the host copied to staging buffers (0) */
} dw_op_info;

/* Returns 1 (this header's ABI version). */
DW_IMPORT(abi_version) int32_t dw_abi_version(void);

/* C[m×n] = A[m×k] · B[k×n], row-major f32 in guest memory, on the host's
 * active backend. Pointers must be 4-byte aligned; C must not overlap A or
 * B; m == 0 or n == 0 does nothing; k == 0 zeroes C. Precision: f32 inputs
 * and f32 accumulation (no TF32), so integer-valued data stays exact while
 * every partial sum stays below 2^24. */
DW_IMPORT(matmul_f32)
int32_t dw_matmul_f32(const float *a, const float *b, float *c, uint32_t m, uint32_t n, uint32_t k);

/* Streams len bytes to whoever called the actor (stdout under `driftwood run`). */
DW_IMPORT(emit) int32_t dw_emit(const void *ptr, uint32_t len_bytes);

/* Fills *out with what the host saw during the last compute call. */
DW_IMPORT(last_op_info) int32_t dw_last_op_info(dw_op_info *out);

#endif
