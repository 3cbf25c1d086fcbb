/*
 * kernels.cu — the CUDA engine's kernels (see kernels.h for the formats):
 * batched GEMV with dequantisation inside, RMSNorm, embedding gather,
 * RoPE with the KV store into paged blocks, paged causal attention with an
 * online softmax, and the small element-wise steps around cuBLAS GEMMs.
 *
 * Invariants:
 *  1. Kernels read only what their arguments describe: the caller checked
 *     every token id, position and block index on the host.
 *  2. Accumulation is f32 (RMSNorm's sum of squares f64), as on the CPU
 *     engine, so the two agree to rounding.
 */
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define KV_BLOCK 32

/* ---- weights: 8 consecutive elements (e % 8 == 0) of row r -------------------- */

struct kwt {
  const void *q;
  const __half *scales;
  int n_in;
};

template <int T>
__device__ __forceinline__ void load8(const kwt &w, int r, int e, float out[8]) {
  if (T == DW_KT_F32) {
    const float4 *p = (const float4 *)((const float *)w.q + (size_t)r * w.n_in + e);
    float4 a = __ldg(p), b = __ldg(p + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  } else if (T == DW_KT_F16) {
    uint4 u = __ldg((const uint4 *)((const __half *)w.q + (size_t)r * w.n_in + e));
    const __half2 *h = (const __half2 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float2 f = __half22float2(h[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  } else if (T == DW_KT_BF16) {
    uint4 u = __ldg((const uint4 *)((const __nv_bfloat16 *)w.q + (size_t)r * w.n_in + e));
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  } else if (T == DW_KT_Q8_0) {
    int2 u = __ldg((const int2 *)((const int8_t *)w.q + (size_t)r * w.n_in + e));
    float d = __half2float(w.scales[(size_t)r * (w.n_in / 32) + e / 32]);
    const int8_t *b = (const int8_t *)&u;
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = d * (float)b[i];
  } else { /* Q4_0 */
    uint32_t u = __ldg((const uint32_t *)((const uint8_t *)w.q + ((size_t)r * w.n_in + e) / 2));
    float d = __half2float(w.scales[(size_t)r * (w.n_in / 32) + e / 32]);
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = d * (float)((int)((u >> (4 * i)) & 15) - 8);
  }
}

template <int T>
__device__ __forceinline__ float load1(const kwt &w, int r, int e) {
  size_t i = (size_t)r * w.n_in + e;
  if (T == DW_KT_F32) return ((const float *)w.q)[i];
  if (T == DW_KT_F16) return __half2float(((const __half *)w.q)[i]);
  if (T == DW_KT_BF16) return __bfloat162float(((const __nv_bfloat16 *)w.q)[i]);
  float d = __half2float(w.scales[(size_t)r * (w.n_in / 32) + e / 32]);
  if (T == DW_KT_Q8_0) return d * (float)((const int8_t *)w.q)[i];
  uint8_t b = ((const uint8_t *)w.q)[i / 2];
  return d * (float)((int)((i & 1) ? b >> 4 : b & 15) - 8);
}

static kwt to_kwt(const dw_kwt *w) { return kwt{w->q, (const __half *)w->scales, w->n_in}; }

/* ---- GEMV ------------------------------------------------------------------------- */

enum { GEMV_WARPS = 4, GEMV_UNROLL = 4 };

struct gemv_item_d {
  kwt w, w2;
  const float *bias;
  float *y;
  int n_out;
};

struct gemv_args {
  gemv_item_d it[3];
  int row_start[4];     /* item i owns global rows [row_start[i], row_start[i + 1]) */
  int n_items;
  const float *x;
  int n_in;
  int mode;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float dot8(const float w[8], const float *x) {
  float4 a = __ldg((const float4 *)x), b = __ldg((const float4 *)x + 1);
  return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

/* One warp per output row; lanes take consecutive 8-element chunks, so a
 * warp reads 256 contiguous elements per step, GEMV_UNROLL steps in flight. */
template <int T, int NT, bool GLU>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(const gemv_args a) {
  int row = blockIdx.x * GEMV_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
  int i = 0;
  while (i + 1 < a.n_items && row >= a.row_start[i + 1]) i++;
  if (row >= a.row_start[a.n_items]) return;
  const gemv_item_d &it = a.it[i];
  int r = row - a.row_start[i], n = a.n_in;
  float acc[NT], acc2[NT];
#pragma unroll
  for (int t = 0; t < NT; t++) acc[t] = 0.f, acc2[t] = 0.f;
  if (n % 8 == 0) {
    for (int e0 = lane * 8; e0 < n; e0 += 256 * GEMV_UNROLL) {
      float w[GEMV_UNROLL][8], w2[GEMV_UNROLL][8];
#pragma unroll
      for (int u = 0; u < GEMV_UNROLL; u++) {
        int e = e0 + u * 256;
        if (e < n) {
          load8<T>(it.w, r, e, w[u]);
          if (GLU) load8<T>(it.w2, r, e, w2[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < GEMV_UNROLL; u++) {
        int e = e0 + u * 256;
        if (e < n) {
#pragma unroll
          for (int t = 0; t < NT; t++) {
            acc[t] += dot8(w[u], a.x + (size_t)t * n + e);
            if (GLU) acc2[t] += dot8(w2[u], a.x + (size_t)t * n + e);
          }
        }
      }
    }
  } else { /* (not reached: n_in is a multiple of 32) one element per lane and step */
    for (int e = lane; e < n; e += 32) {
      float wv = load1<T>(it.w, r, e), wv2 = GLU ? load1<T>(it.w2, r, e) : 0.f;
#pragma unroll
      for (int t = 0; t < NT; t++) {
        float xv = a.x[(size_t)t * n + e];
        acc[t] += wv * xv;
        if (GLU) acc2[t] += wv2 * xv;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < NT; t++) {
    float s = warp_sum(acc[t]);
    float s2 = GLU ? warp_sum(acc2[t]) : 0.f;
    if (lane == 0) {
      float *y = it.y + (size_t)t * it.n_out + r;
      if (GLU) {
        *y = s / (1.f + expf(-s)) * s2;
      } else {
        if (it.bias) s += it.bias[r];
        *y = a.mode == DW_GEMV_ADD ? *y + s : s;
      }
    }
  }
}

template <int T, int NT>
static void gemv_launch(const gemv_args &a, int rows, cudaStream_t st) {
  dim3 grid((rows + GEMV_WARPS - 1) / GEMV_WARPS);
  if (a.mode == DW_GEMV_GLU) gemv_kernel<T, NT, true><<<grid, GEMV_WARPS * 32, 0, st>>>(a);
  else gemv_kernel<T, NT, false><<<grid, GEMV_WARPS * 32, 0, st>>>(a);
}

template <int T>
static void gemv_nt(const gemv_args &a, int nt, int rows, cudaStream_t st) {
  switch (nt) {
  case 1: gemv_launch<T, 1>(a, rows, st); break;
  case 2: gemv_launch<T, 2>(a, rows, st); break;
  case 3: gemv_launch<T, 3>(a, rows, st); break;
  case 4: gemv_launch<T, 4>(a, rows, st); break;
  case 5: gemv_launch<T, 5>(a, rows, st); break;
  case 6: gemv_launch<T, 6>(a, rows, st); break;
  case 7: gemv_launch<T, 7>(a, rows, st); break;
  default: gemv_launch<T, 8>(a, rows, st); break;
  }
}

extern "C" void dw_k_gemv(const float *x, int nt, int mode, const dw_gemv_item *items, int n_items,
                          cudaStream_t stream) {
  gemv_args a = {};
  a.n_items = n_items, a.x = x, a.n_in = items[0].w->n_in, a.mode = mode;
  for (int i = 0; i < n_items; i++) {
    a.it[i].w = to_kwt(items[i].w);
    if (items[i].w2) a.it[i].w2 = to_kwt(items[i].w2);
    a.it[i].bias = items[i].bias, a.it[i].y = items[i].y, a.it[i].n_out = items[i].w->n_out;
    a.row_start[i + 1] = a.row_start[i] + items[i].w->n_out;
  }
  int rows = a.row_start[n_items];
  switch (items[0].w->type) {
  case DW_KT_F32: gemv_nt<DW_KT_F32>(a, nt, rows, stream); break;
  case DW_KT_F16: gemv_nt<DW_KT_F16>(a, nt, rows, stream); break;
  case DW_KT_BF16: gemv_nt<DW_KT_BF16>(a, nt, rows, stream); break;
  case DW_KT_Q8_0: gemv_nt<DW_KT_Q8_0>(a, nt, rows, stream); break;
  default: gemv_nt<DW_KT_Q4_0>(a, nt, rows, stream); break;
  }
}

/* ---- RMSNorm, embeddings ------------------------------------------------------------ */

enum { NORM_THREADS = 256 };

__global__ void rmsnorm_kernel(const float *x, const int *rows, const float *w, float *out, int dim, float eps) {
  const float *xr = x + (size_t)(rows ? rows[blockIdx.x] : blockIdx.x) * dim;
  float *o = out + (size_t)blockIdx.x * dim;
  double ss = 0;
  for (int i = threadIdx.x; i < dim; i += NORM_THREADS) ss += (double)xr[i] * xr[i];
  __shared__ double part[NORM_THREADS / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  double tot = 0;
  for (int i = 0; i < NORM_THREADS / 32; i++) tot += part[i];
  float r = (float)(1.0 / sqrt(tot / dim + eps));
  for (int i = threadIdx.x; i < dim; i += NORM_THREADS) o[i] = xr[i] * r * w[i];
}

extern "C" void dw_k_rmsnorm(const float *x, const int *rows, const float *w, float *out, int n, int dim, float eps,
                             cudaStream_t stream) {
  rmsnorm_kernel<<<n, NORM_THREADS, 0, stream>>>(x, rows, w, out, dim, eps);
}

template <int T>
__global__ void embed_kernel(kwt w, const int *tokens, float *x, int dim) {
  int r = tokens[blockIdx.x];
  for (int e = threadIdx.x; e < dim; e += blockDim.x) x[(size_t)blockIdx.x * dim + e] = load1<T>(w, r, e);
}

extern "C" void dw_k_embed(const dw_kwt *w, const int *tokens, float *x, int nt, cudaStream_t stream) {
  kwt k = to_kwt(w);
  switch (w->type) {
  case DW_KT_F32: embed_kernel<DW_KT_F32><<<nt, 256, 0, stream>>>(k, tokens, x, w->n_in); break;
  case DW_KT_F16: embed_kernel<DW_KT_F16><<<nt, 256, 0, stream>>>(k, tokens, x, w->n_in); break;
  case DW_KT_BF16: embed_kernel<DW_KT_BF16><<<nt, 256, 0, stream>>>(k, tokens, x, w->n_in); break;
  case DW_KT_Q8_0: embed_kernel<DW_KT_Q8_0><<<nt, 256, 0, stream>>>(k, tokens, x, w->n_in); break;
  default: embed_kernel<DW_KT_Q4_0><<<nt, 256, 0, stream>>>(k, tokens, x, w->n_in); break;
  }
}

/* ---- RoPE + KV store, attention -------------------------------------------------------- */

struct kv_args_d {
  float *const *tables;
  const int *tab_off, *seq_of, *pos;
  int n_layer, n_head, n_head_kv, head_dim, n_rot, neox;
  const float *inv_freq;
};

static kv_args_d to_kvd(const dw_kv_args *a) {
  return kv_args_d{a->tables, a->tab_off, a->seq_of, a->pos, a->n_layer, a->n_head, a->n_head_kv,
                   a->head_dim, a->n_rot, a->neox ? 1 : 0, a->inv_freq};
}

/* The K (v = 0) or V row of position p, layer l, in a token's sequence. */
__device__ __forceinline__ float *kv_row(const kv_args_d &a, int seq, int l, int p, int v) {
  size_t kvd = (size_t)a.n_head_kv * a.head_dim;
  float *blk = a.tables[a.tab_off[seq] + p / KV_BLOCK];
  return blk + ((size_t)v * a.n_layer * KV_BLOCK + (size_t)l * KV_BLOCK + p % KV_BLOCK) * kvd;
}

__global__ void rope_store_kernel(kv_args_d a, int layer, float *q, float *k, const float *v) {
  int t = blockIdx.x, half = a.n_rot / 2, hd = a.head_dim;
  extern __shared__ float cs[]; /* [half] cos, then [half] sin */
  int p = a.pos[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double ang = (double)p * (double)a.inv_freq[i];
    cs[i] = (float)cos(ang), cs[half + i] = (float)sin(ang);
  }
  __syncthreads();
  int qd = a.n_head * hd, kvd = a.n_head_kv * hd;
  int n_pairs = (a.n_head + a.n_head_kv) * half;
  for (int j = threadIdx.x; j < n_pairs; j += blockDim.x) {
    int h = j / half, i = j % half;
    float *base = h < a.n_head ? q + (size_t)t * qd + (size_t)h * hd : k + (size_t)t * kvd + (size_t)(h - a.n_head) * hd;
    int ia = a.neox ? i : 2 * i, ib = a.neox ? i + half : 2 * i + 1;
    float x0 = base[ia], x1 = base[ib], c = cs[i], s = cs[half + i];
    base[ia] = x0 * c - x1 * s;
    base[ib] = x0 * s + x1 * c;
  }
  __syncthreads();
  int seq = a.seq_of[t];
  float *kr = kv_row(a, seq, layer, p, 0), *vr = kv_row(a, seq, layer, p, 1);
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    kr[i] = k[(size_t)t * kvd + i];
    vr[i] = v[(size_t)t * kvd + i];
  }
}

extern "C" void dw_k_rope_store(const dw_kv_args *a, int layer, float *q, float *k, const float *v, int nt,
                                cudaStream_t stream) {
  rope_store_kernel<<<nt, 128, (size_t)a->n_rot * sizeof(float), stream>>>(to_kvd(a), layer, q, k, v);
}

enum { ATT_THREADS = 128, ATT_CHUNK = 256, ATT_MAX_HD = 256 };

__device__ __forceinline__ float block_reduce(float v, float *red, bool is_max) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, w) : v + w;
  }
  __syncthreads(); /* red may still be read from the last call */
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int i = 1; i < ATT_THREADS / 32; i++) r = is_max ? fmaxf(r, red[i]) : r + red[i];
  return r;
}

/* One block per (head, token). Keys in chunks of ATT_CHUNK: each thread
 * scores whole key rows, then the running max and sum are updated (online
 * softmax) and thread groups of head_dim accumulate V rows, coalesced. */
__global__ void __launch_bounds__(ATT_THREADS) attention_kernel(kv_args_d a, int layer, const float *q, float *out) {
  int h = blockIdx.x, t = blockIdx.y, hd = a.head_dim, g = a.n_head / a.n_head_kv, kvo = (h / g) * hd;
  int seq = a.seq_of[t], n_keys = a.pos[t] + 1;
  __shared__ float qs[ATT_MAX_HD], sc[ATT_CHUNK], red[ATT_THREADS / 32];
  __shared__ float part[ATT_THREADS];
  float scale = rsqrtf((float)hd);
  const float *qr = q + (size_t)t * a.n_head * hd + (size_t)h * hd;
  for (int i = threadIdx.x; i < hd; i += ATT_THREADS) qs[i] = qr[i] * scale;
  /* output roles: groups of hd threads split the keys (hd <= 128), or each
   * thread owns dims tid and tid + 128 (hd > 128) */
  int groups = hd <= ATT_THREADS ? ATT_THREADS / hd : 1;
  int grp = hd <= ATT_THREADS ? threadIdx.x / hd : 0, d0 = hd <= ATT_THREADS ? threadIdx.x % hd : threadIdx.x;
  bool active = grp < groups && d0 < hd;
  float acc0 = 0.f, acc1 = 0.f, m = -INFINITY, l = 0.f;
  __syncthreads();
  for (int c0 = 0; c0 < n_keys; c0 += ATT_CHUNK) {
    int nc = min(ATT_CHUNK, n_keys - c0);
    float cmax = -INFINITY;
    for (int j = threadIdx.x; j < nc; j += ATT_THREADS) {
      const float *kr = kv_row(a, seq, layer, c0 + j, 0) + kvo;
      float s = 0.f;
      for (int i = 0; i < hd; i += 4) {
        float4 kv4 = *(const float4 *)(kr + i);
        s += qs[i] * kv4.x + qs[i + 1] * kv4.y + qs[i + 2] * kv4.z + qs[i + 3] * kv4.w;
      }
      sc[j] = s;
      cmax = fmaxf(cmax, s);
    }
    cmax = block_reduce(cmax, red, true);
    float nm = fmaxf(m, cmax), corr = expf(m - nm); /* m = -inf the first time: corr = 0 */
    float psum = 0.f;
    for (int j = threadIdx.x; j < nc; j += ATT_THREADS) {
      float p = expf(sc[j] - nm);
      sc[j] = p;
      psum += p;
    }
    psum = block_reduce(psum, red, false); /* its barriers also publish sc */
    l = l * corr + psum;
    m = nm;
    acc0 *= corr, acc1 *= corr;
    if (active)
      for (int j = grp; j < nc; j += groups) {
        const float *vr = kv_row(a, seq, layer, c0 + j, 1) + kvo;
        acc0 += sc[j] * vr[d0];
        if (d0 + ATT_THREADS < hd) acc1 += sc[j] * vr[d0 + ATT_THREADS];
      }
    __syncthreads(); /* sc is rewritten by the next chunk */
  }
  float *o = out + (size_t)t * a.n_head * hd + (size_t)h * hd;
  float inv = 1.f / l;
  if (groups == 1) {
    if (active) o[d0] = acc0 * inv;
    if (active && d0 + ATT_THREADS < hd) o[d0 + ATT_THREADS] = acc1 * inv;
    return;
  }
  part[threadIdx.x] = active ? acc0 : 0.f;
  __syncthreads();
  if (threadIdx.x < hd) {
    float s = 0.f;
    for (int gi = 0; gi < groups; gi++) s += part[gi * hd + threadIdx.x];
    o[threadIdx.x] = s * inv;
  }
}

extern "C" void dw_k_attention(const dw_kv_args *a, int layer, const float *q, float *out, int nt,
                               cudaStream_t stream) {
  attention_kernel<<<dim3(a->n_head, nt), ATT_THREADS, 0, stream>>>(to_kvd(a), layer, q, out);
}

/* ---- element-wise ----------------------------------------------------------------------- */

__global__ void to_half_kernel(const float *x, void *out, long long n, bool bf16) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    if (bf16) ((__nv_bfloat16 *)out)[i] = __float2bfloat16(x[i]);
    else ((__half *)out)[i] = __float2half(x[i]);
  }
}

static int grid_for(long long n) { return (int)min((n + 255) / 256, 65535LL * 8); }

extern "C" void dw_k_to_half(const float *x, void *out, long long n, bool bf16, cudaStream_t stream) {
  to_half_kernel<<<grid_for(n), 256, 0, stream>>>(x, out, n, bf16);
}

template <int T>
__global__ void dequant_kernel(kwt w, __half *out, long long n, int n_in) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = __float2half(load1<T>(w, (int)(i / n_in), (int)(i % n_in)));
}

extern "C" void dw_k_dequant_f16(const dw_kwt *w, void *out, cudaStream_t stream) {
  long long n = (long long)w->n_in * w->n_out;
  if (w->type == DW_KT_Q8_0) dequant_kernel<DW_KT_Q8_0><<<grid_for(n), 256, 0, stream>>>(to_kwt(w), (__half *)out, n, w->n_in);
  else dequant_kernel<DW_KT_Q4_0><<<grid_for(n), 256, 0, stream>>>(to_kwt(w), (__half *)out, n, w->n_in);
}

__global__ void silu_mul_kernel(float *h, const float *g, const float *u, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    h[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}

extern "C" void dw_k_silu_mul(float *h, const float *g, const float *u, long long n, cudaStream_t stream) {
  silu_mul_kernel<<<grid_for(n), 256, 0, stream>>>(h, g, u, n);
}

__global__ void add_bias_kernel(float *y, const float *b, long long total, int n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
    y[i] += b[i % n];
}

extern "C" void dw_k_add_bias(float *y, const float *b, int nt, int n, cudaStream_t stream) {
  long long total = (long long)nt * n;
  add_bias_kernel<<<grid_for(total), 256, 0, stream>>>(y, b, total, n);
}

/* ---- KV blocks ⇄ canonical layout ---------------------------------------------------------- */

/* One block of threads per (block, layer, K/V): 32 rows of kvd floats. */
__global__ void kv_move_kernel(float *const *blocks, float *kv, int n_pos, int n_layer, int kvd, bool to_blocks) {
  int b = blockIdx.x, l = blockIdx.y, v = blockIdx.z;
  int p0 = b * KV_BLOCK, np = min(KV_BLOCK, n_pos - p0);
  float *blk = blocks[b] + ((size_t)v * n_layer * KV_BLOCK + (size_t)l * KV_BLOCK) * kvd;
  float *can = kv + (size_t)v * n_layer * n_pos * kvd + ((size_t)l * n_pos + p0) * kvd;
  for (long long i = threadIdx.x; i < (long long)np * kvd; i += blockDim.x) {
    if (to_blocks) blk[i] = can[i];
    else can[i] = blk[i];
  }
}

extern "C" void dw_k_kv_gather(float *const *blocks, float *kv, int n_pos, int n_layer, int kvd, cudaStream_t stream) {
  dim3 grid((n_pos + KV_BLOCK - 1) / KV_BLOCK, n_layer, 2);
  kv_move_kernel<<<grid, 256, 0, stream>>>(blocks, kv, n_pos, n_layer, kvd, false);
}

extern "C" void dw_k_kv_scatter(float *const *blocks, const float *kv, int n_pos, int n_layer, int kvd,
                                cudaStream_t stream) {
  dim3 grid((n_pos + KV_BLOCK - 1) / KV_BLOCK, n_layer, 2);
  kv_move_kernel<<<grid, 256, 0, stream>>>(blocks, (float *)kv, n_pos, n_layer, kvd, true);
}
