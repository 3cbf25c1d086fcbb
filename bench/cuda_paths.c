/*
 * cuda_paths.c — three ways to run an N×N×N f32 matmul on the GPU, same run:
 *   1. zero-copy: cuBLAS on guest linear memory registered by the CUDA
 *      backend (the Driftwood path: dw_abi_matmul_f32 on a dw_mem);
 *   2. copy: cudaMalloc'd device buffers, cudaMemcpy A and B in and C out
 *      around the same SGEMM (buffers allocated once per size, not timed);
 *   3. resident: the operands already in device memory (the compute floor).
 * Plus the bandwidth at which kernels read and write registered guest memory
 * (cublasScopy between guest memory and a device buffer) against a pinned
 * cudaMemcpy of the same bytes.
 *
 * Usage: cuda_paths [sizes...]   (default 128 512 1024 2048 4096)
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
  if (dw_backend_create("cuda", 1, &be) != DW_OK) {
    fprintf(stderr, "%s\n", dw_last_error());
    return 1;
  }
  char desc[512];
  dw_backend_describe(be, desc, sizeof desc);
  int drv = 0, rtv = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rtv);
  printf("%s\ndriver %d, runtime %d\n\n", desc, drv, rtv);
  uint32_t sizes[8] = {128, 512, 1024, 2048, 4096};
  int ns = 5;
  if (argc > 1) {
    ns = 0;
    for (int i = 1; i < argc && ns < 8; i++) sizes[ns++] = (uint32_t)atoi(argv[i]);
  }
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
  const float one = 1, zero = 0;
  printf("| N | 1 zero-copy ms | 2 copy ms | 3 resident ms | 1 pinned bytes | 1 extra device bytes | 2 extra device bytes | 1 RSS Δ KiB | register ms |\n");
  printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int s = 0; s < ns; s++) {
    uint32_t n = sizes[s];
    size_t bytes = (size_t)n * n * 4;
    uint32_t pages = (uint32_t)((3 * bytes + 65535) / 65536);
    dw_mem_hooks hooks = {be, commit, release, true};
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
    float *A = (float *)mem->base, *B = A + (size_t)n * n, *C = B + (size_t)n * n;
    for (size_t i = 0; i < (size_t)n * n; i++) A[i] = (float)(i % 7) - 3, B[i] = (float)(i % 5) - 2;
    dw_abi abi;
    dw_abi_init(&abi, be, 1);
    double t1 = MEDIAN(dw_abi_matmul_f32(&abi, mem, 0, (uint32_t)bytes, (uint32_t)(2 * bytes), n, n, n));
    long rss1 = rss_kib();
    int64_t pinned = dw_backend_cuda_pinned_bytes(be);
    float *dA, *dB, *dC;
    size_t f2a, f2b;
    cudaMemGetInfo(&f2a, &total);
    cudaMalloc((void **)&dA, bytes);
    cudaMalloc((void **)&dB, bytes);
    cudaMalloc((void **)&dC, bytes);
    cudaMemGetInfo(&f2b, &total);
    float *hostC = malloc(bytes); /* the copy path's C lands here, then in guest memory */
    double t2 = MEDIAN({
      cudaMemcpy(dA, A, bytes, cudaMemcpyHostToDevice);
      cudaMemcpy(dB, B, bytes, cudaMemcpyHostToDevice);
      cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n, &one, dB, (int)n, dA, (int)n, &zero, dC, (int)n);
      cudaMemcpy(C, dC, bytes, cudaMemcpyDeviceToHost);
    });
    double t3 = MEDIAN({
      cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n, &one, dB, (int)n, dA, (int)n, &zero, dC, (int)n);
      cudaDeviceSynchronize();
    });
    printf("| %u | %.3f | %.3f | %.3f | %lld | %lld | %lld | %ld | %.2f |\n", n, t1, t2, t3, (long long)pinned,
           (long long)free0 - (long long)free1, (long long)f2a - (long long)f2b, rss1 - rss0, tr);
    fflush(stdout);
    free(hostC);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    dw_mem_destroy(mem);
  }
  /* bandwidth: kernels reading / writing registered guest memory */
  size_t bw_bytes = 256u << 20;
  dw_mem_hooks hooks = {be, commit, release, true};
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
