/*
 * cuda.c — the CUDA backend: cuBLAS computes directly on guest linear
 * memory that has been registered (pinned and mapped) with the driver.
 * The only file that includes CUDA headers.
 *
 * Invariants:
 *  1. Under unified virtual addressing a registered host range has device
 *     address == host address; register_memory checks this and refuses the
 *     range otherwise, so kernels receive guest pointers unchanged.
 *  2. Where the device can access pageable host memory (HMM, ATS, unified
 *     memory platforms) nothing is registered: that is this backend's call.
 *  3. Arguments were validated by the caller before any CUDA call, so a bad
 *     guest never leaves a sticky CUDA error behind for other actors.
 *  4. matmul_f32 is full f32 (CUBLAS_PEDANTIC_MATH: no TF32), synchronous.
 *  5. pinned_bytes returns to zero when every memory is released.
 *  6. Staging (see backend.h): SGEMM re-reads its operands once per output
 *     tile, and each re-read of guest memory crosses PCIe, so in place a
 *     GEMM is 2–18x slower than copying its operands in once from 192³ up;
 *     even a GEMV is 13% slower than a DMA (bench/RESULTS.md). So a GEMM
 *     whose operands reach the threshold (256 KiB: 128³ stays in place)
 *     DMAs A and B from the registered guest pages into a device scratch
 *     buffer, computes there and DMAs C back: no host-side copy, reported
 *     as staged bytes (zero_copy = 0). Pageable-access devices compute in
 *     place; so does any GEMM whose scratch cannot be allocated.
 *
 * Threads: one context per process-wide device use; calls are serialised
 * on `lock` (one cuBLAS handle and stream).
 */
#include "backend/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cuda_ctx {
  int device;
  cublasHandle_t blas;
  cudaStream_t stream;
  bool pageable;          /* device reads pageable host memory directly */
  char name[256];
  int cc_major, cc_minor;
  size_t total_mem;
  pthread_mutex_t lock;
  _Atomic int64_t pinned_bytes;
  enum { STAGE_AUTO, STAGE_NEVER, STAGE_ALWAYS } staging;
  uint64_t stage_min_bytes;
  uint8_t *scratch;       /* device memory for staged operands (under lock) */
  size_t scratch_cap;
} cuda_ctx;

static dw_status cuda_fail(cudaError_t e, const char *what) {
  return dw_error_set(DW_ERR_BACKEND, "cuda: %s: %s", what, cudaGetErrorString(e));
}

static dw_status cuda_register(void *vctx, void *ptr, size_t n) {
  cuda_ctx *c = vctx;
  if (c->pageable) return DW_OK;
  cudaSetDevice(c->device);
  cudaError_t e = cudaHostRegister(ptr, n, cudaHostRegisterMapped | cudaHostRegisterPortable);
  if (e != cudaSuccess) {
    cudaGetLastError(); /* clear the (non-sticky) error */
    return cuda_fail(e, "cudaHostRegister of guest memory");
  }
  void *dev = NULL;
  e = cudaHostGetDevicePointer(&dev, ptr, 0);
  if (e != cudaSuccess || dev != ptr) {
    cudaHostUnregister(ptr);
    cudaGetLastError();
    return dw_error_set(DW_ERR_BACKEND, "cuda: registered guest memory has device address %p != host %p", dev, ptr);
  }
  atomic_fetch_add(&c->pinned_bytes, (int64_t)n);
  return DW_OK;
}

static void cuda_unregister(void *vctx, void *ptr, size_t n) {
  cuda_ctx *c = vctx;
  if (c->pageable) return;
  cudaSetDevice(c->device);
  if (cudaHostUnregister(ptr) == cudaSuccess) atomic_fetch_sub(&c->pinned_bytes, (int64_t)n);
  else cudaGetLastError();
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Device buffers for A, B and C of one staged GEMM, or false (compute in
 * place) when the policy says so or the memory is not there. */
static bool stage_buffers(cuda_ctx *c, uint32_t m, uint32_t n, uint32_t k, float **da, float **db, float **dc) {
  size_t na = align256((size_t)m * k * 4), nb = align256((size_t)k * n * 4), nc = align256((size_t)m * n * 4);
  if (c->pageable || k == 0 || c->staging == STAGE_NEVER ||
      (c->staging == STAGE_AUTO && ((uint64_t)m * k + (uint64_t)k * n + (uint64_t)m * n) * 4 < c->stage_min_bytes))
    return false;
  if (na + nb + nc > c->scratch_cap) {
    cudaFree(c->scratch);
    c->scratch = NULL, c->scratch_cap = 0;
    if (cudaMalloc((void **)&c->scratch, na + nb + nc) != cudaSuccess) {
      cudaGetLastError();
      c->scratch = NULL;
      return false;
    }
    c->scratch_cap = na + nb + nc;
  }
  *da = (float *)c->scratch, *db = (float *)(c->scratch + na), *dc = (float *)(c->scratch + na + nb);
  return true;
}

static dw_status cuda_matmul(void *vctx, const float *a, const float *b, float *cm, uint32_t m, uint32_t n,
                             uint32_t k, uint64_t *staged) {
  cuda_ctx *c = vctx;
  const float one = 1.0f, zero = 0.0f;
  dw_status st = DW_OK;
  pthread_mutex_lock(&c->lock);
  cudaSetDevice(c->device);
  float *da, *db, *dc;
  if (k == 0) {
    cudaError_t e = cudaMemsetAsync(cm, 0, (size_t)m * n * sizeof(float), c->stream);
    if (e != cudaSuccess) st = cuda_fail(e, "memset");
  } else {
    bool stage = stage_buffers(c, m, n, k, &da, &db, &dc);
    size_t na = (size_t)m * k * 4, nb = (size_t)k * n * 4, nc = (size_t)m * n * 4;
    cudaError_t e = cudaSuccess;
    if (stage && ((e = cudaMemcpyAsync(da, a, na, cudaMemcpyHostToDevice, c->stream)) != cudaSuccess ||
                  (e = cudaMemcpyAsync(db, b, nb, cudaMemcpyHostToDevice, c->stream)) != cudaSuccess))
      st = cuda_fail(e, "DMA of the operands");
    /* Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: swap the operands. */
    cublasStatus_t bs = st ? CUBLAS_STATUS_SUCCESS
                           : cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one,
                                         stage ? db : b, (int)n, stage ? da : a, (int)k, &zero, stage ? dc : cm,
                                         (int)n);
    if (bs != CUBLAS_STATUS_SUCCESS)
      st = dw_error_set(DW_ERR_BACKEND, "cuda: cublasSgemm failed (%d)", (int)bs);
    if (!st && stage && (e = cudaMemcpyAsync(cm, dc, nc, cudaMemcpyDeviceToHost, c->stream)) != cudaSuccess)
      st = cuda_fail(e, "DMA of the result");
    if (!st && stage) *staged = na + nb + nc;
  }
  cudaError_t e = cudaStreamSynchronize(c->stream);
  if (st == DW_OK && e != cudaSuccess) st = cuda_fail(e, "matmul");
  pthread_mutex_unlock(&c->lock);
  return st;
}

static void cuda_describe(void *vctx, char *buf, size_t cap) {
  cuda_ctx *c = vctx;
  snprintf(buf, cap,
           "cuda: device %d: %s, compute capability %d.%d, %.1f GiB; pageable memory access: %s "
           "(guest memory is %s); pinned now: %lld bytes; matmul staging: %s (operands >= %llu bytes)",
           c->device, c->name, c->cc_major, c->cc_minor, c->total_mem / 1073741824.0, c->pageable ? "yes" : "no",
           c->pageable ? "used as it is" : "registered with cudaHostRegister", (long long)atomic_load(&c->pinned_bytes),
           c->pageable ? "off (pageable access)" : (const char *[]){"auto", "never", "always"}[c->staging],
           (unsigned long long)c->stage_min_bytes);
}

static void cuda_destroy(void *vctx) {
  cuda_ctx *c = vctx;
  if (!c) return;
  cudaSetDevice(c->device);
  if (c->blas) cublasDestroy(c->blas);
  cudaFree(c->scratch);
  if (c->stream) cudaStreamDestroy(c->stream);
  pthread_mutex_destroy(&c->lock);
  dw_free(c);
}

static const dw_backend_ops cuda_ops = {
    .version = DW_BACKEND_OPS_VERSION,
    .name = "cuda",
    .register_memory = cuda_register,
    .unregister_memory = cuda_unregister,
    .matmul_f32 = cuda_matmul,
    .describe = cuda_describe,
    .destroy = cuda_destroy,
};

int64_t dw_backend_cuda_pinned_bytes(const dw_backend *b) {
  return b->ops == &cuda_ops ? atomic_load(&((cuda_ctx *)b->ctx)->pinned_bytes) : 0;
}

dw_status dw_backend_cuda_set_staging(dw_backend *b, const char *mode, uint64_t min_bytes) {
  if (b->ops != &cuda_ops) return dw_error_set(DW_ERR_UNSUPPORTED, "staging: not the CUDA backend");
  cuda_ctx *c = b->ctx;
  int s = !strcmp(mode, "auto") ? STAGE_AUTO : !strcmp(mode, "never") ? STAGE_NEVER
                                              : !strcmp(mode, "always") ? STAGE_ALWAYS : -1;
  if (s < 0) return dw_error_set(DW_ERR_INVALID_ARG, "CUDA staging '%s': choose auto, never or always", mode);
  pthread_mutex_lock(&c->lock);
  c->staging = s;
  c->stage_min_bytes = min_bytes ? min_bytes : DW_CUDA_STAGE_MIN_BYTES;
  pthread_mutex_unlock(&c->lock);
  return DW_OK;
}

int64_t dw_backend_cuda_scratch_bytes(const dw_backend *b) {
  if (b->ops != &cuda_ops) return 0;
  cuda_ctx *c = b->ctx;
  pthread_mutex_lock(&c->lock);
  int64_t n = (int64_t)c->scratch_cap;
  pthread_mutex_unlock(&c->lock);
  return n;
}

dw_status dw_backend_cuda_reg(const dw_settings *settings, dw_backend *out) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return dw_error_set(DW_ERR_UNSUPPORTED, "no CUDA device (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "none found");
  }
  cuda_ctx *c = dw_calloc(1, sizeof *c);
  if (!c) return dw_error_set(DW_ERR_NOMEM, "cuda backend");
  pthread_mutex_init(&c->lock, NULL);
  c->device = 0;
  struct cudaDeviceProp prop;
  dw_status st = DW_OK;
  int pageable = 0, uses_host_pt = 0;
  if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
    st = cuda_fail(e, "device 0");
  } else {
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    c->cc_major = prop.major;
    c->cc_minor = prop.minor;
    c->total_mem = prop.totalGlobalMem;
    cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, 0);
    cudaDeviceGetAttribute(&uses_host_pt, cudaDevAttrPageableMemoryAccessUsesHostPageTables, 0);
    c->pageable = pageable != 0 && dw_setting(settings, "DRIFTWOOD_CUDA_FORCE_REGISTER") == NULL;
    if (!prop.unifiedAddressing) st = dw_error_set(DW_ERR_UNSUPPORTED, "cuda: device lacks unified addressing");
  }
  if (st == DW_OK && (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
    st = cuda_fail(e, "stream");
  if (st == DW_OK && (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ||
                      cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS ||
                      cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS))
    st = dw_error_set(DW_ERR_BACKEND, "cuda: cannot create the cuBLAS handle");
  (void)uses_host_pt;
  if (st != DW_OK) {
    cuda_destroy(c);
    return st;
  }
  out->ops = &cuda_ops;
  out->ctx = c;
  const char *mode = dw_setting(settings, "DRIFTWOOD_CUDA_STAGING");
  const char *min = dw_setting(settings, "DRIFTWOOD_CUDA_STAGE_MIN_BYTES");
  st = dw_backend_cuda_set_staging(out, mode && *mode ? mode : "auto", min ? strtoull(min, NULL, 10) : 0);
  if (st != DW_OK) {
    cuda_destroy(c);
    out->ops = NULL, out->ctx = NULL;
    return st;
  }
  return DW_OK;
}
