/*
 * abi.c — host side of the `driftwood` v1 import module: abi_version,
 * matmul_f32, emit and last_op_info. (The LLM functions of the table in
 * DESIGN.md arrive with the LLM engine.)
 *
 * matmul_f32's argument contract, checked in this order:
 *   m*k, k*n, m*n computed in 64 bits; a product of byte sizes that does
 *   not fit → DW_ERR_OVERFLOW; an operand offset not a multiple of 4 →
 *   DW_ERR_MISALIGNED; an operand outside memory → DW_ERR_OUT_OF_BOUNDS;
 *   C overlapping A or B → DW_ERR_INVALID_ARG. m == 0 or n == 0 is a no-op;
 *   k == 0 writes zeros to C.
 */
#include "abi/abi.h"
#include "wasm/rt.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* The codes guests see are the host's statuses (driftwood_abi.h). */
#define SAME(c) _Static_assert((int)DWG_##c == (int)DW_##c, "driftwood_abi.h: DWG_" #c " is not DW_" #c)
SAME(OK);
SAME(ERR_INVALID_ARG);
SAME(ERR_OUT_OF_BOUNDS);
SAME(ERR_NOMEM);
SAME(ERR_IO);
SAME(ERR_UNSUPPORTED);
SAME(ERR_LIMIT);
SAME(ERR_BACKEND);
SAME(ERR_NOT_FOUND);
SAME(ERR_OVERFLOW);
SAME(ERR_MISALIGNED);
SAME(ERR_BAD_MODEL);
#undef SAME

void dw_abi_init(dw_abi *a, dw_backend *backend, int emit_fd) {
  memset(a, 0, sizeof *a);
  a->backend = backend;
  a->emit_fd = emit_fd;
}

static bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) {
  return an && bn && a < b + bn && b < a + an;
}

dw_status dw_abi_matmul_f32(dw_abi *ab, dw_mem *mem, uint32_t a_off, uint32_t b_off, uint32_t c_off, uint32_t m,
                            uint32_t n, uint32_t k) {
  uint64_t na = (uint64_t)m * k, nb = (uint64_t)k * n, nc = (uint64_t)m * n;
  void *pa, *pb, *pc;
  dw_status st;
  ab->last = (dwg_op_info){0};
  if (!mem) return ab->last.status = DW_ERR_OUT_OF_BOUNDS;
  if ((st = dw_mem_view_array(mem, a_off, na, 4, 4, &pa)) != DW_OK ||
      (st = dw_mem_view_array(mem, b_off, nb, 4, 4, &pb)) != DW_OK ||
      (st = dw_mem_view_array(mem, c_off, nc, 4, 4, &pc)) != DW_OK)
    return ab->last.status = st;
  if (overlaps(c_off, nc * 4, a_off, na * 4) || overlaps(c_off, nc * 4, b_off, nb * 4))
    return ab->last.status = DW_ERR_INVALID_ARG;
  st = dw_backend_matmul_f32(ab->backend, pa, pb, pc, m, n, k, &ab->last.staged_bytes);
  /* Zero copy: the backend was handed exactly base + offset for each
   * operand and computed on those bytes (it staged none). */
  ab->last.zero_copy = (uint8_t *)pa == mem->base + a_off && (uint8_t *)pb == mem->base + b_off &&
                       (uint8_t *)pc == mem->base + c_off && ab->last.staged_bytes == 0;
  ab->last.status = st;
  return st;
}

#define ABI(inst) ((dw_abi *)dw_instance_ctx((inst), DW_SLOT_DRIFTWOOD))

static uint32_t h_abi_version(dw_instance *inst) {
  (void)inst;
  return DWG_ABI_VERSION;
}

static uint32_t h_matmul_f32(dw_instance *inst, uint32_t a, uint32_t b, uint32_t c, uint32_t m, uint32_t n,
                             uint32_t k) {
  dw_abi *ab = ABI(inst);
  if (!ab) return DW_ERR_UNSUPPORTED;
  return dw_abi_matmul_f32(ab, dw_instance_memory(inst), a, b, c, m, n, k);
}

static uint32_t h_emit(dw_instance *inst, uint32_t ptr, uint32_t len) {
  dw_abi *ab = ABI(inst);
  dw_mem *mem = dw_instance_memory(inst);
  void *p;
  if (!ab) return DW_ERR_UNSUPPORTED;
  if (!mem || dw_mem_view(mem, ptr, len, &p) != DW_OK) return DW_ERR_OUT_OF_BOUNDS;
  const uint8_t *s = p;
  if (ab->emit_fn) {
    if (ab->emit_fn(ab->emit_ctx, s, len) == 0) return DW_OK;
    /* the receiver went away: stop the guest here (it holds nothing) */
    dw_rt_host_error(dw_error_set(DW_ERR_CANCELLED, "cancelled: the receiver of the replies went away"));
  }
  while (len) {
    ssize_t w = write(ab->emit_fd, s, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return DW_ERR_IO;
    s += w;
    len -= (uint32_t)w;
  }
  return DW_OK;
}

static uint32_t h_last_op_info(dw_instance *inst, uint32_t out) {
  dw_abi *ab = ABI(inst);
  dw_mem *mem = dw_instance_memory(inst);
  void *p;
  if (!ab) return DW_ERR_UNSUPPORTED;
  if (!mem) return DW_ERR_OUT_OF_BOUNDS;
  dw_status st = dw_mem_view_array(mem, out, 1, sizeof(dwg_op_info), 4, &p);
  if (st != DW_OK) return st;
  memcpy(p, &ab->last, sizeof ab->last);
  return DW_OK;
}

#define F(name, sig) {"driftwood", #name, sig, (dw_fnptr)h_##name}

const dw_hostfn dw_abi_functions[] = {
    F(abi_version, "i:"),
    F(matmul_f32, "i:iiiiii"),
    F(emit, "i:ii"),
    F(last_op_info, "i:i"),
    {0},
};
