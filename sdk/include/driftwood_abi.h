/*
 * driftwood_abi.h — the wire format of the `driftwood` import module,
 * version 1, written once for both sides: guests (through
 * driftwood_guest.h) and the host (src/abi). Status codes, flags, and the
 * layout of every struct the host writes into guest memory, each layout
 * pinned with _Static_assert so a change that would move a byte fails to
 * compile on either side. Only <stddef.h> and <stdint.h>; no host types.
 */
#ifndef DRIFTWOOD_ABI_H
#define DRIFTWOOD_ABI_H

#include <stddef.h>
#include <stdint.h>

#define DWG_ABI_VERSION 1

/* Every import returns one of these (the host's dw_status values; src/abi
 * asserts that they agree). */
enum {
  DWG_OK = 0,
  DWG_ERR_INVALID_ARG = 1,
  DWG_ERR_OUT_OF_BOUNDS = 2,
  DWG_ERR_NOMEM = 3,
  DWG_ERR_IO = 4,
  DWG_ERR_UNSUPPORTED = 9,
  DWG_ERR_LIMIT = 10,
  DWG_ERR_BACKEND = 11,
  DWG_ERR_NOT_FOUND = 12,
  DWG_ERR_OVERFLOW = 13,
  DWG_ERR_MISALIGNED = 14,
  DWG_ERR_BAD_MODEL = 15,
};

/* last_op_info: what the host saw during the last compute call (16 bytes,
 * 4-aligned in guest memory). */
typedef struct dwg_op_info {
  uint32_t zero_copy;    /* 1: the backend computed on this guest's own bytes */
  uint32_t status;       /* that call's status */
  uint64_t staged_bytes; /* bytes the backend moved to its own buffers and
                            back: 0, except for large matmuls on CUDA, whose
                            operands are DMA'd into device memory (no host
                            copy); zero_copy is then 0 */
} dwg_op_info;
_Static_assert(sizeof(dwg_op_info) == 16, "op_info is 16 bytes");
_Static_assert(offsetof(dwg_op_info, status) == 4 && offsetof(dwg_op_info, staged_bytes) == 8, "op_info layout");

/* model_info: 32 bytes, 4-aligned in guest memory. */
typedef struct dwg_model_info {
  uint32_t n_vocab;
  uint32_t n_ctx_train;
  int32_t bos, eos, eot; /* -1 when absent; eot falls back to eos */
  uint32_t n_embd;
  uint32_t n_layer;
  uint32_t flags;        /* DWG_MODEL_ADD_BOS | DWG_MODEL_ADD_EOS */
} dwg_model_info;
_Static_assert(sizeof(dwg_model_info) == 32, "model_info is 32 bytes");
_Static_assert(offsetof(dwg_model_info, bos) == 8 && offsetof(dwg_model_info, eot) == 16 &&
                   offsetof(dwg_model_info, n_layer) == 24 && offsetof(dwg_model_info, flags) == 28,
               "model_info layout");

#define DWG_MODEL_ADD_BOS 1u
#define DWG_MODEL_ADD_EOS 2u
#define DWG_TOKENIZE_ADD_SPECIAL 1u   /* BOS/EOS as the vocabulary asks */
#define DWG_TOKENIZE_PARSE_SPECIAL 2u /* control-token texts become their ids */

#endif
