/*
 * cuda_paths.c — ways to run an M×N×K f32 matmul on the GPU, same run:
 *   1. Driftwood: dw_abi_matmul_f32 on guest linear memory registered by
 *      the CUDA backend, three staging policies —
 *        in place (never): cuBLAS reads and writes guest memory over PCIe;
 *        staged (always): A and B DMA'd from guest memory into device
 *          scratch, C DMA'd back (no host copy);
 *        auto: the backend's default choice between the two;
 *   2. copy: cudaMalloc'd device buffers, cudaMemcpy A and B in and C out
 *      around the same SGEMM (buffers allocated once per shape, not timed);
 *   3. resident: the operands already in device memory (the compute floor).
 * Plus the bandwidth at which kernels read and write registered guest memory
 * (cublasScopy between guest memory and a device buffer) against a pinned
 * cudaMemcpy of the same bytes.
 *
 * Usage: cuda_paths [N | MxNxK ...]
 *   (default 128 192 256 384 512 1024 2048 4096 1x4096x4096 16x4096x4096 64x4096x4096)
 */
#define _GNU_SOURCE
#include "abi/abi.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static dw_status commit(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void release(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long a = 0, r = 0;
  if (f && fscanf(f, "%ld %ld", &a, &r) != 2) r = 0;
  if (f) fclose(f);
  return r * 4;
}

#define REPS 10
#define MEDIAN(expr)                                   \
  ({                                                   \
    double t_[REPS];                                   \
    for (int r_ = -2; r_ < REPS; r_++) {               \
      double t0_ = now();                              \
      expr;                                            \
      if (r_ >= 0) t_[r_] = now() - t0_;               \
    }                                                  \
    qsort(t_, REPS, sizeof(double), cmp_d);            \
    t_[REPS / 2] * 1e3;                                \
  })

int main(int argc, char **argv) {
  dw_backend *be;
  if (dw_backend_create("cuda", 1, NULL, &be) != DW_OK) {
    fprintf(stderr, "%s\n", dw_last_error());
    return 1;
  }
  char desc[512];
  dw_backend_describe(be, desc, sizeof desc);
  int drv = 0, rtv = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rtv);
  printf("%s\ndriver %d, runtime %d\n\n", desc, drv, rtv);
  const char *defaults[] = {"128", "192", "256", "384", "512", "1024", "2048", "4096", "1x4096x4096",
                            "16x4096x4096", "64x4096x4096"};
  const char **shapes = argc > 1 ? (const char **)argv + 1 : defaults;
  int ns = argc > 1 ? argc - 1 : (int)(sizeof defaults / sizeof *defaults);
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
  const float one = 1, zero = 0;
  printf("| M×N×K | 1 in place ms | 1 staged ms | 1 auto ms (choice) | 2 copy ms | 3 resident ms | pinned bytes | "
         "auto extra device bytes | 2 extra device bytes | RSS Δ KiB | register ms |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int s = 0; s < ns; s++) {
    uint32_t m, n, k;
    if (sscanf(shapes[s], "%ux%ux%u", &m, &n, &k) != 3) m = n = k = (uint32_t)atoi(shapes[s]);
    size_t ba = (size_t)m * k * 4, bb = (size_t)k * n * 4, bc = (size_t)m * n * 4;
    uint32_t pages = (uint32_t)((ba + bb + bc + 65535) / 65536);
    dw_backend *bs; /* a fresh backend per shape: its scratch starts empty */
    if (dw_backend_create("cuda", 1, NULL, &bs) != DW_OK) {
      fprintf(stderr, "%s\n", dw_last_error());
      return 1;
    }
    dw_mem_hooks hooks = {bs, commit, release, true, false};
    size_t free0, free1, total;
    cudaMemGetInfo(&free0, &total);
    long rss0 = rss_kib();
    double tr = now();
    dw_mem *mem;
    if (dw_mem_create(pages, pages, 0, &hooks, &mem) != DW_OK) {
      fprintf(stderr, "%s\n", dw_last_error());
      return 1;
    }
    tr = (now() - tr) * 1e3;
    cudaMemGetInfo(&free1, &total);
    float *A = (float *)mem->base, *B = A + (size_t)m * k, *C = B + (size_t)k * n;
    for (size_t i = 0; i < (size_t)m * k; i++) A[i] = (float)(i % 7) - 3;
    for (size_t i = 0; i < (size_t)k * n; i++) B[i] = (float)(i % 5) - 2;
    dw_abi abi;
    dw_abi_init(&abi, bs, 1);
#define DW_MM() dw_abi_matmul_f32(&abi, mem, 0, (uint32_t)ba, (uint32_t)(ba + bb), m, n, k)
    double t1a = MEDIAN(DW_MM()); /* first, so the scratch it holds is its own */
    int staged = abi.last.staged_bytes != 0;
    int64_t scratch = dw_backend_cuda_scratch_bytes(bs);
    long rss1 = rss_kib();
    int64_t pinned = dw_backend_cuda_pinned_bytes(bs);
    dw_backend_cuda_set_staging(bs, "never", 0);
    double t1n = MEDIAN(DW_MM());
    dw_backend_cuda_set_staging(bs, "always", 0);
    double t1s = MEDIAN(DW_MM());
    float *dA, *dB, *dC;
    size_t f2a, f2b;
    cudaMemGetInfo(&f2a, &total);
    cudaMalloc((void **)&dA, ba);
    cudaMalloc((void **)&dB, bb);
    cudaMalloc((void **)&dC, bc);
    cudaMemGetInfo(&f2b, &total);
    double t2 = MEDIAN({
      cudaMemcpy(dA, A, ba, cudaMemcpyHostToDevice);
      cudaMemcpy(dB, B, bb, cudaMemcpyHostToDevice);
      cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, dB, (int)n, dA, (int)k, &zero, dC, (int)n);
      cudaMemcpy(C, dC, bc, cudaMemcpyDeviceToHost);
    });
    double t3 = MEDIAN({
      cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, dB, (int)n, dA, (int)k, &zero, dC, (int)n);
      cudaDeviceSynchronize();
    });
    printf("| %ux%ux%u | %.3f | %.3f | %.3f (%s) | %.3f | %.3f | %lld | %lld | %lld | %ld | %.2f |\n", m, n, k, t1n,
           t1s, t1a, staged ? "staged" : "in place", t2, t3, (long long)pinned, (long long)scratch,
           (long long)f2a - (long long)f2b, rss1 - rss0, tr);
    fflush(stdout);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    dw_mem_destroy(mem);
    dw_backend_destroy(bs);
  }
  /* bandwidth: kernels reading / writing registered guest memory */
  size_t bw_bytes = 256u << 20;
  dw_mem_hooks hooks = {be, commit, release, true, false};
  dw_mem *mem;
  dw_mem_create((uint32_t)(bw_bytes / 65536), (uint32_t)(bw_bytes / 65536), 0, &hooks, &mem);
  memset(mem->base, 1, bw_bytes);
  float *dbuf, *pinned_host;
  cudaMalloc((void **)&dbuf, bw_bytes);
  cudaMallocHost((void **)&pinned_host, bw_bytes);
  int cnt = (int)(bw_bytes / 4);
  double rd = MEDIAN({ cublasScopy(h, cnt, (float *)mem->base, 1, dbuf, 1); cudaDeviceSynchronize(); });
  double wr = MEDIAN({ cublasScopy(h, cnt, dbuf, 1, (float *)mem->base, 1); cudaDeviceSynchronize(); });
  double h2d = MEDIAN(cudaMemcpy(dbuf, pinned_host, bw_bytes, cudaMemcpyHostToDevice));
  double d2h = MEDIAN(cudaMemcpy(pinned_host, dbuf, bw_bytes, cudaMemcpyDeviceToHost));
  double gb = bw_bytes / 1e9;
  printf("\nbandwidth over %zu MiB: kernel reads guest memory %.1f GB/s, kernel writes guest memory %.1f GB/s; "
         "pinned cudaMemcpy H2D %.1f GB/s, D2H %.1f GB/s; read/H2D = %.0f%%, write/D2H = %.0f%%\n",
         bw_bytes >> 20, gb / (rd * 1e-3), gb / (wr * 1e-3), gb / (h2d * 1e-3), gb / (d2h * 1e-3),
         100 * h2d / rd, 100 * d2h / wr);
  dw_mem_destroy(mem);
  printf("pinned bytes after every memory was released: %lld\n", (long long)dw_backend_cuda_pinned_bytes(be));
  cudaFree(dbuf);
  cudaFreeHost(pinned_host);
  cublasDestroy(h);
  dw_backend_destroy(be);
  return 0;
}
