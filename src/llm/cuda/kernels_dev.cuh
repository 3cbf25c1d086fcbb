/*
 * kernels_dev.cuh — device-side pieces the CUDA engine's kernel files
 * share (kernels.cu, stream.cu): programmatic dependent launch, the weight
 * and KV-table descriptors as kernels see them, warp reductions.
 * C++ only; the C side sees kernels.h.
 */
#ifndef DW_CUDA_KERNELS_DEV_CUH
#define DW_CUDA_KERNELS_DEV_CUH

#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define KV_BLOCK 32

/* ---- programmatic dependent launch (sm_90) ---------------------------------------
 * Decode steps are chains of small kernels, each waiting on the last. With
 * PDL a kernel's blocks start while its predecessor's last blocks finish:
 * each kernel lets its successor launch at once (pdl_launch_dependents),
 * and does nothing that depends on earlier kernels (reading their outputs,
 * writing anything) before pdl_wait(), which returns once the predecessor
 * has completed and its writes are visible. What it may do before: read
 * weights, which no kernel writes. Older cards compile both to nothing and
 * launch in plain stream order. */
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

extern bool dw_k_pdl; /* process-wide switch, set before any launch (DRIFTWOOD_CUDA_PDL=0) */

/* Launches kernel k on stream st, as a programmatic dependent of the
 * kernel before it when PDL is on. */
template <typename... KArgs, typename... Args>
static inline void launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t shm, cudaStream_t st, Args... args) {
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = dw_k_pdl ? 1 : 0;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = shm, cfg.stream = st;
  cfg.attrs = at, cfg.numAttrs = 1;
  cudaLaunchKernelEx(&cfg, k, args...);
}


/* ---- weights and KV tables as kernels see them ------------------------------------ */

struct kwt {
  const void *q;
  const __half *scales;
  int n_in;
};

static inline kwt to_kwt(const dw_kwt *w) { return kwt{w->q, (const __half *)w->scales, w->n_in}; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

struct kv_args_d {
  float *const *tables;
  const int *tab_off, *seq_of, *pos;
  int n_layer, n_head, n_head_kv, head_dim, n_rot, neox;
  const float *rope;
  float scale, cap;
  int window;
};

static inline kv_args_d to_kvd(const dw_kv_args *a) {
  return kv_args_d{a->tables, a->tab_off, a->seq_of, a->pos, a->n_layer, a->n_head, a->n_head_kv,
                   a->head_dim, a->n_rot, a->neox ? 1 : 0, a->rope, a->scale, a->cap, a->window};
}

/* The first key a query at position p attends to. */
__device__ __forceinline__ int first_key(const kv_args_d &a, int p) { return a.window && p - a.window + 1 > 0 ? p - a.window + 1 : 0; }

/* A score soft-capped as the model says (gemma2). */
__device__ __forceinline__ float cap_score(const kv_args_d &a, float s) { return a.cap > 0.f ? a.cap * tanhf(s / a.cap) : s; }

/* The K (v = 0) or V row of position p, layer l, in a token's sequence. */
__device__ __forceinline__ float *kv_row(const kv_args_d &a, int seq, int l, int p, int v) {
  size_t kvd = (size_t)a.n_head_kv * a.head_dim;
  float *blk = a.tables[a.tab_off[seq] + p / KV_BLOCK];
  return blk + ((size_t)v * a.n_layer * KV_BLOCK + (size_t)l * KV_BLOCK + p % KV_BLOCK) * kvd;
}

#endif
