/*
 * gguf.h — GGUF v2/v3 files: metadata (key/value records) and tensor
 * descriptions, read from a read-only mapping of the file (never copied).
 *
 * Invariants (checked once at parse time, so later readers need no checks):
 *  1. Every string, array and tensor byte range lies inside the buffer; all
 *     size arithmetic is overflow-checked.
 *  2. Keys and tensor names are unique; value types are known; arrays are
 *     not nested; general.alignment is a non-zero power of two.
 *  3. Tensors have 1..4 dims, each >= 1, ne[0] a multiple of the block
 *     size, a known type, an aligned offset, and data inside the file.
 *  4. Big-endian files (v3 allows them) are refused with a clear message.
 *
 * Threads: a parsed dw_gguf is immutable and may be shared.
 */
#ifndef DW_GGUF_H
#define DW_GGUF_H

#include "base/base.h"

#include <stdbool.h>

enum dw_gguf_vtype {
  GGUF_U8 = 0, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL,
  GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64, GGUF_NTYPES
};

/* ggml tensor types we know the block layout of. */
enum dw_ggml_type {
  GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
  GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13,
  GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_IQ4_NL = 20, GGML_IQ4_XS = 23, GGML_I8 = 24, GGML_I16 = 25, GGML_I32 = 26, GGML_I64 = 27,
  GGML_F64 = 28, GGML_BF16 = 30, GGML_NTYPES_MAX = 40
};

typedef struct dw_gguf_str {
  const char *p; /* not NUL-terminated; points into the mapping */
  uint64_t n;
} dw_gguf_str;

typedef struct dw_gguf_kv {
  dw_gguf_str key;
  uint32_t type;       /* dw_gguf_vtype */
  uint32_t arr_type;   /* element type when type == GGUF_ARRAY */
  uint64_t n;          /* array element count (1 for scalars) */
  const uint8_t *val;  /* the value (array: its first element) */
  uint64_t val_bytes;  /* bytes of the value (array: of all elements) */
} dw_gguf_kv;

typedef struct dw_gguf_tensor {
  char name[65];       /* NUL-terminated copy */
  uint32_t n_dims;
  uint64_t ne[4];      /* missing dims are 1 */
  uint32_t type;       /* dw_ggml_type */
  uint64_t n_elems;
  uint64_t n_bytes;
  const uint8_t *data; /* inside the mapping */
} dw_gguf_tensor;

typedef struct dw_gguf {
  const uint8_t *buf;  /* the mapping (or caller buffer) */
  size_t size;
  bool mapped;         /* buf is ours to munmap */
  uint32_t version;
  uint32_t alignment;
  uint64_t data_start;
  uint64_t n_kv, n_tensors;
  dw_gguf_kv *kv;
  dw_gguf_tensor *tensors;
} dw_gguf;

/* Maps and parses the file. Errors name the file and what is wrong.
 * populate: fault the whole file in now (weights about to be used), rather
 * than page by page on first use. */
DW_HIDDEN dw_status dw_gguf_open(const char *path, bool populate, dw_gguf **out);
/* Parses a caller-owned buffer (which must outlive the result). */
DW_HIDDEN dw_status dw_gguf_parse(const uint8_t *buf, size_t size, dw_gguf **out);
DW_HIDDEN void dw_gguf_close(dw_gguf *g);

/* Block size (elements) and bytes per block; 0 for unknown types. */
DW_HIDDEN uint32_t dw_ggml_block_size(uint32_t type);
DW_HIDDEN uint32_t dw_ggml_type_size(uint32_t type);
DW_HIDDEN const char *dw_ggml_type_name(uint32_t type);

DW_HIDDEN const dw_gguf_kv *dw_gguf_find(const dw_gguf *g, const char *key);
DW_HIDDEN const dw_gguf_tensor *dw_gguf_tensor_find(const dw_gguf *g, const char *name);
/* Typed getters: false when absent or of an incompatible type. Integers of
 * any width are accepted when the value fits. */
DW_HIDDEN bool dw_gguf_get_u64(const dw_gguf *g, const char *key, uint64_t *out);
DW_HIDDEN bool dw_gguf_get_f32(const dw_gguf *g, const char *key, float *out);
DW_HIDDEN bool dw_gguf_get_bool(const dw_gguf *g, const char *key, bool *out);
DW_HIDDEN bool dw_gguf_get_str(const dw_gguf *g, const char *key, dw_gguf_str *out);
/* Element i of an integer array (any width), range-checked like get_u64. */
DW_HIDDEN bool dw_gguf_arr_u64(const dw_gguf_kv *kv, uint64_t i, uint64_t *out);
/* Walks a string array: fills out[0..kv->n). */
DW_HIDDEN bool dw_gguf_arr_strs(const dw_gguf_kv *kv, dw_gguf_str *out);
DW_HIDDEN bool dw_gguf_str_eq(dw_gguf_str s, const char *lit);

#endif
