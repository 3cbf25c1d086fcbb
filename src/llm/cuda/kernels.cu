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
#include "kernels_dev.cuh"

bool dw_k_pdl = true;

extern "C" void dw_k_set_pdl(bool on) { dw_k_pdl = on; }

/* ---- weights: 8 consecutive elements (e % 8 == 0) of row r -------------------- */

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
  const float *norm;    /* RMSNorm weight [n_in] applied to x first, or NULL */
  float eps;
};

__device__ __forceinline__ float dot8(const float w[8], const float *x) {
  float4 a = __ldg((const float4 *)x), b = __ldg((const float4 *)x + 1);
  return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

/* A block of GEMV_WARPS warps computes R rows together: its threads take
 * consecutive 8-element chunks, so the block reads 1024 contiguous
 * elements of each row per step, U steps in flight, and each x chunk it
 * loads serves all R rows. Since the block covers every element of x once,
 * the fused RMSNorm's sum of squares accumulates in the same loop at no
 * extra reads, and its scale is applied to the finished dot products.
 * Item i owns the padded global rows [row_start[i], row_start[i + 1]), a
 * multiple of R, so a block's rows never straddle two items. */
template <int T, int NT, bool GLU, int R>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(const gemv_args a) {
  constexpr int U = R >= 4 ? 2 : 8 / (2 * R), NV = R * NT * (GLU ? 2 : 1) + NT;
  pdl_launch_dependents();
  int row0 = blockIdx.x * R, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int i = 0;
  while (i + 1 < a.n_items && row0 >= a.row_start[i + 1]) i++;
  const gemv_item_d &it = a.it[i];
  int r0 = row0 - a.row_start[i], n = a.n_in;
  float acc[R][NT], acc2[R][NT], ss[NT];
#pragma unroll
  for (int t = 0; t < NT; t++) {
    ss[t] = 0.f;
#pragma unroll
    for (int q = 0; q < R; q++) acc[q][t] = 0.f, acc2[q][t] = 0.f;
  }
  constexpr int STEP = GEMV_WARPS * 32 * 8;
  float w[U][R][8], w2[U][R][8];
  auto load_tile = [&](int e0) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      int e = e0 + u * STEP;
#pragma unroll
      for (int q = 0; q < R; q++)
        if (e < n && r0 + q < it.n_out) {
          load8<T>(it.w, r0 + q, e, w[u][q]);
          if (GLU) load8<T>(it.w2, r0 + q, e, w2[u][q]);
        }
    }
  };
  load_tile(threadIdx.x * 8); /* weights: no kernel writes them, so before the wait */
  pdl_wait();
  for (int e0 = threadIdx.x * 8; e0 < n; e0 += STEP * U) {
    if (e0 != threadIdx.x * 8) load_tile(e0);
#pragma unroll
    for (int u = 0; u < U; u++) {
      int e = e0 + u * STEP;
      if (e >= n) continue;
      float g[8] = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f};
      if (a.norm) { /* the norm weight folds into x; its per-token scale comes at the end */
        float4 g0 = __ldg((const float4 *)(a.norm + e)), g1 = __ldg((const float4 *)(a.norm + e) + 1);
        g[0] = g0.x, g[1] = g0.y, g[2] = g0.z, g[3] = g0.w, g[4] = g1.x, g[5] = g1.y, g[6] = g1.z, g[7] = g1.w;
      }
#pragma unroll
      for (int t = 0; t < NT; t++) {
        const float4 *xp = (const float4 *)(a.x + (size_t)t * n + e);
        float4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
        float xr[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w}, xv[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
          ss[t] += xr[k] * xr[k];
          xv[k] = xr[k] * g[k];
        }
#pragma unroll
        for (int q = 0; q < R; q++) {
          if (r0 + q >= it.n_out) continue;
#pragma unroll
          for (int k = 0; k < 8; k++) {
            acc[q][t] += w[u][q][k] * xv[k];
            if (GLU) acc2[q][t] += w2[u][q][k] * xv[k];
          }
        }
      }
    }
  }
  /* reduce: lanes, then the block's warps through shared memory */
  __shared__ float red[GEMV_WARPS][NV];
#pragma unroll
  for (int t = 0; t < NT; t++) {
#pragma unroll
    for (int q = 0; q < R; q++) {
      float v = warp_sum(acc[q][t]);
      if (lane == 0) red[warp][q * NT + t] = v;
      if (GLU) {
        v = warp_sum(acc2[q][t]);
        if (lane == 0) red[warp][R * NT + q * NT + t] = v;
      }
    }
    float v = a.norm ? warp_sum(ss[t]) : 0.f;
    if (lane == 0) red[warp][NV - NT + t] = v;
  }
  __syncthreads();
  if (threadIdx.x >= R * NT) return;
  int q = threadIdx.x / NT, t = threadIdx.x % NT, r = r0 + q;
  if (r >= it.n_out) return;
  float s = 0.f, s2 = 0.f;
  double sq = 0;
  for (int wi = 0; wi < GEMV_WARPS; wi++) {
    s += red[wi][q * NT + t];
    if (GLU) s2 += red[wi][R * NT + q * NT + t];
    sq += red[wi][NV - NT + t];
  }
  if (a.norm) {
    float rms = (float)(1.0 / sqrt(sq / n + a.eps));
    s *= rms, s2 *= rms;
  }
  float *y = it.y + (size_t)t * it.n_out + r;
  if (GLU) {
    *y = s / (1.f + expf(-s)) * s2;
  } else {
    if (it.bias) s += it.bias[r];
    *y = a.mode == DW_GEMV_ADD ? *y + s : s;
  }
}

template <int T, int NT, int R>
static void gemv_launch(const gemv_args &a, cudaStream_t st) {
  dim3 grid(a.row_start[a.n_items] / R);
  if (a.mode == DW_GEMV_GLU) launch(gemv_kernel<T, NT, true, R>, grid, GEMV_WARPS * 32, 0, st, a);
  else launch(gemv_kernel<T, NT, false, R>, grid, GEMV_WARPS * 32, 0, st, a);
}

template <int T>
static void gemv_nt(const gemv_args &a, int nt, int rpw, cudaStream_t st) {
  switch (nt) {
  case 1:
    if (rpw == 4) gemv_launch<T, 1, 4>(a, st);
    else if (rpw == 2) gemv_launch<T, 1, 2>(a, st);
    else gemv_launch<T, 1, 1>(a, st);
    break;
  case 2:
    if (rpw >= 2) gemv_launch<T, 2, 2>(a, st);
    else gemv_launch<T, 2, 1>(a, st);
    break;
  case 3: gemv_launch<T, 3, 1>(a, st); break;
  case 4: gemv_launch<T, 4, 1>(a, st); break;
  case 5: gemv_launch<T, 5, 1>(a, st); break;
  case 6: gemv_launch<T, 6, 1>(a, st); break;
  case 7: gemv_launch<T, 7, 1>(a, st); break;
  default: gemv_launch<T, 8, 1>(a, st); break;
  }
}

static int g_rows_per_warp = 0; /* 0: by size; set once from DRIFTWOOD_CUDA_GEMV_ROWS */

extern "C" void dw_k_gemv_rows_per_warp(int r) { g_rows_per_warp = r; }

extern "C" void dw_k_gemv(const float *x, const float *norm, float eps, int nt, int mode, const dw_gemv_item *items,
                          int n_items, cudaStream_t stream) {
  gemv_args a = {};
  a.n_items = n_items, a.x = x, a.n_in = items[0].w->n_in, a.mode = mode, a.norm = norm, a.eps = eps;
  int rows = 0;
  for (int i = 0; i < n_items; i++) rows += items[i].w->n_out;
  /* rows per block: more rows share each x load, but keep thousands of blocks */
  int rpw = g_rows_per_warp ? g_rows_per_warp : rows >= 16384 ? 4 : rows >= 8192 ? 2 : 1;
  if (nt > 2) rpw = 1;
  if (nt == 2 && rpw > 2) rpw = 2;
  for (int i = 0; i < n_items; i++) {
    a.it[i].w = to_kwt(items[i].w);
    if (items[i].w2) a.it[i].w2 = to_kwt(items[i].w2);
    a.it[i].bias = items[i].bias, a.it[i].y = items[i].y, a.it[i].n_out = items[i].w->n_out;
    a.row_start[i + 1] = a.row_start[i] + (items[i].w->n_out + rpw - 1) / rpw * rpw;
  }
  switch (items[0].w->type) {
  case DW_KT_F32: gemv_nt<DW_KT_F32>(a, nt, rpw, stream); break;
  case DW_KT_F16: gemv_nt<DW_KT_F16>(a, nt, rpw, stream); break;
  case DW_KT_BF16: gemv_nt<DW_KT_BF16>(a, nt, rpw, stream); break;
  case DW_KT_Q8_0: gemv_nt<DW_KT_Q8_0>(a, nt, rpw, stream); break;
  default: gemv_nt<DW_KT_Q4_0>(a, nt, rpw, stream); break;
  }
}

/* ---- RMSNorm, embeddings ------------------------------------------------------------ */

enum { NORM_THREADS = 256 };

/* o = rmsnorm(xr) · w for one row, by the block's NORM_THREADS threads (o may be xr). */
__device__ void rmsnorm_row(const float *xr, const float *w, float *o, int dim, float eps) {
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

__global__ void rmsnorm_kernel(const float *x, const int *rows, const float *w, float *out, int dim, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  rmsnorm_row(x + (size_t)(rows ? rows[blockIdx.x] : blockIdx.x) * dim, w, out + (size_t)blockIdx.x * dim, dim, eps);
}

extern "C" void dw_k_rmsnorm(const float *x, const int *rows, const float *w, float *out, int n, int dim, float eps,
                             cudaStream_t stream) {
  launch(rmsnorm_kernel, n, NORM_THREADS, 0, stream, x, rows, w, out, dim, eps);
}

template <int T>
__global__ void embed_kernel(kwt w, const int *tokens, float *x, int dim) {
  pdl_launch_dependents();
  pdl_wait();
  int r = tokens[blockIdx.x];
  for (int e = threadIdx.x; e < dim; e += blockDim.x) x[(size_t)blockIdx.x * dim + e] = load1<T>(w, r, e);
}

extern "C" void dw_k_embed(const dw_kwt *w, const int *tokens, float *x, int nt, cudaStream_t stream) {
  kwt k = to_kwt(w);
  switch (w->type) {
  case DW_KT_F32: launch(embed_kernel<DW_KT_F32>, nt, 256, 0, stream, k, tokens, x, w->n_in); break;
  case DW_KT_F16: launch(embed_kernel<DW_KT_F16>, nt, 256, 0, stream, k, tokens, x, w->n_in); break;
  case DW_KT_BF16: launch(embed_kernel<DW_KT_BF16>, nt, 256, 0, stream, k, tokens, x, w->n_in); break;
  case DW_KT_Q8_0: launch(embed_kernel<DW_KT_Q8_0>, nt, 256, 0, stream, k, tokens, x, w->n_in); break;
  default: launch(embed_kernel<DW_KT_Q4_0>, nt, 256, 0, stream, k, tokens, x, w->n_in); break;
  }
}

/* ---- RoPE + KV store, attention -------------------------------------------------------- */

__global__ void __launch_bounds__(256)
    rope_store_kernel(kv_args_d a, int layer, float *__restrict__ q, float *__restrict__ k, const float *__restrict__ v) {
  pdl_launch_dependents();
  pdl_wait();
  int t = blockIdx.x, half = a.n_rot / 2, hd = a.head_dim, p = a.pos[t];
  const float *cs = a.rope + (size_t)t * half * 2; /* (cos, sin) pairs */
  int qd = a.n_head * hd, kvd = a.n_head_kv * hd;
  int n_pairs = (a.n_head + a.n_head_kv) * half;
  for (int j = threadIdx.x; j < n_pairs; j += blockDim.x) {
    int h = j / half, i = j % half;
    float *base = h < a.n_head ? q + (size_t)t * qd + (size_t)h * hd : k + (size_t)t * kvd + (size_t)(h - a.n_head) * hd;
    int ia = a.neox ? i : 2 * i, ib = a.neox ? i + half : 2 * i + 1;
    float x0 = base[ia], x1 = base[ib], c = cs[2 * i], s = cs[2 * i + 1];
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
  launch(rope_store_kernel, nt, 256, 0, stream, to_kvd(a), layer, q, k, v);
}

enum { ATT_WARPS = 4, ATT_U = 4 };

/* Split-K attention (flash decoding). Block (head h, token t, split s)
 * takes keys [s·kps, min((s + 1)·kps, pos[t] + 1)); its warps take every
 * ATT_WARPS-th key, ATT_U at a time, lanes over head dims (d = lane + 32i),
 * with an online softmax in registers. Each block leaves its split's max,
 * sum and unnormalised output in `part` (or, with one split, the result in
 * `out`); attn_combine_kernel merges the splits. */
template <int DPL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attn_split_kernel(kv_args_d a, int layer, const float *q, float *out, float *part, int n_split, int kps) {
  pdl_launch_dependents();
  pdl_wait();
  int h = blockIdx.x, t = blockIdx.y, s = blockIdx.z, hd = a.head_dim;
  int kvo = (h / (a.n_head / a.n_head_kv)) * hd, seq = a.seq_of[t], n_keys = a.pos[t] + 1;
  int k0 = max(s * kps, first_key(a, n_keys - 1)), k1 = min(n_keys, s * kps + kps), warp = threadIdx.x / 32,
      lane = threadIdx.x % 32;
  size_t pi = ((size_t)t * a.n_head + h) * n_split + s;
  float *pml = part, *pacc = part + (size_t)gridDim.y * a.n_head * n_split * 2;
  if (k0 >= k1) { /* past this token's keys: an empty split */
    if (threadIdx.x == 0) pml[2 * pi] = -INFINITY, pml[2 * pi + 1] = 0.f;
    return;
  }
  float scale = a.scale, qv[DPL], acc[DPL], m = -INFINITY, l = 0.f;
  const float *qr = q + (size_t)t * a.n_head * hd + (size_t)h * hd;
#pragma unroll
  for (int i = 0; i < DPL; i++) {
    int d = lane + 32 * i;
    qv[i] = d < hd ? qr[d] * scale : 0.f;
    acc[i] = 0.f;
  }
  for (int j = k0 + warp; j < k1; j += ATT_WARPS * ATT_U) {
    float sc[ATT_U];
#pragma unroll
    for (int u = 0; u < ATT_U; u++) {
      int key = j + u * ATT_WARPS;
      float p = 0.f;
      if (key < k1) {
        const float *kr = kv_row(a, seq, layer, key, 0) + kvo;
#pragma unroll
        for (int i = 0; i < DPL; i++)
          if (lane + 32 * i < hd) p += qv[i] * kr[lane + 32 * i];
      }
      sc[u] = p;
    }
#pragma unroll
    for (int u = 0; u < ATT_U; u++) sc[u] = cap_score(a, warp_sum(sc[u]));
    float mu = m;
#pragma unroll
    for (int u = 0; u < ATT_U; u++)
      if (j + u * ATT_WARPS < k1) mu = fmaxf(mu, sc[u]);
    float corr = expf(m - mu); /* m = -inf the first time: 0 */
    l *= corr;
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] *= corr;
#pragma unroll
    for (int u = 0; u < ATT_U; u++) {
      int key = j + u * ATT_WARPS;
      if (key >= k1) continue;
      float p = expf(sc[u] - mu);
      l += p;
      const float *vr = kv_row(a, seq, layer, key, 1) + kvo;
#pragma unroll
      for (int i = 0; i < DPL; i++)
        if (lane + 32 * i < hd) acc[i] += p * vr[lane + 32 * i];
    }
    m = mu;
  }
  /* merge the warps */
  __shared__ float wm[ATT_WARPS], wl[ATT_WARPS], wacc[ATT_WARPS][DPL * 32];
  if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
  for (int i = 0; i < DPL; i++) wacc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  float M = wm[0];
  for (int w = 1; w < ATT_WARPS; w++) M = fmaxf(M, wm[w]);
  float L = 0.f;
  for (int w = 0; w < ATT_WARPS; w++) L += wm[w] == -INFINITY ? 0.f : wl[w] * expf(wm[w] - M);
  for (int d = threadIdx.x; d < hd; d += ATT_WARPS * 32) {
    float v = 0.f;
    for (int w = 0; w < ATT_WARPS; w++)
      if (wm[w] != -INFINITY) v += wacc[w][d] * expf(wm[w] - M);
    if (n_split == 1) out[(size_t)t * a.n_head * hd + (size_t)h * hd + d] = v / L;
    else pacc[pi * hd + d] = v;
  }
  if (n_split > 1 && threadIdx.x == 0) pml[2 * pi] = M, pml[2 * pi + 1] = L;
}

__global__ void attn_combine_kernel(const float *part, float *out, int n_head, int hd, int n_split) {
  pdl_launch_dependents();
  pdl_wait();
  int h = blockIdx.x, t = blockIdx.y;
  size_t p0 = ((size_t)t * n_head + h) * n_split;
  const float *pml = part, *pacc = part + (size_t)gridDim.y * n_head * n_split * 2;
  float M = -INFINITY;
  for (int s = 0; s < n_split; s++) M = fmaxf(M, pml[2 * (p0 + s)]);
  float L = 0.f;
  for (int s = 0; s < n_split; s++)
    if (pml[2 * (p0 + s)] != -INFINITY) L += pml[2 * (p0 + s) + 1] * expf(pml[2 * (p0 + s)] - M);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float v = 0.f;
    for (int s = 0; s < n_split; s++)
      if (pml[2 * (p0 + s)] != -INFINITY) v += pacc[(p0 + s) * hd + d] * expf(pml[2 * (p0 + s)] - M);
    out[(size_t)t * n_head * hd + (size_t)h * hd + d] = v / L;
  }
}

extern "C" void dw_k_attention(const dw_kv_args *a, int layer, const float *q, float *out, int nt, int n_split, int kps,
                               float *part, cudaStream_t stream) {
  dim3 grid(a->n_head, nt, n_split);
  kv_args_d k = to_kvd(a);
  int dpl = (a->head_dim + 31) / 32;
  if (dpl <= 1) launch(attn_split_kernel<1>, grid, ATT_WARPS * 32, 0, stream, k, layer, q, out, part, n_split, kps);
  else if (dpl <= 2) launch(attn_split_kernel<2>, grid, ATT_WARPS * 32, 0, stream, k, layer, q, out, part, n_split, kps);
  else if (dpl <= 4) launch(attn_split_kernel<4>, grid, ATT_WARPS * 32, 0, stream, k, layer, q, out, part, n_split, kps);
  else launch(attn_split_kernel<8>, grid, ATT_WARPS * 32, 0, stream, k, layer, q, out, part, n_split, kps);
  if (n_split > 1)
    launch(attn_combine_kernel, dim3(a->n_head, nt), 128, 0, stream, (const float *)part, out, a->n_head, a->head_dim,
           n_split);
}

/* Tiled causal attention for prefill steps: block (head h, tile) takes up
 * to ATT_QT consecutive tokens of one sequence (tiles[] = t0 | n << 16)
 * and walks that sequence's keys ATT_KT at a time through shared memory,
 * so each K/V row is read once per tile instead of once per token. Four
 * threads per query row: they split the row's scores and its output dims. */
enum { ATT_QT = 32, ATT_KT = 16 };

template <int HDMAX>
__global__ void __launch_bounds__(ATT_QT * 4) attn_tile_kernel(kv_args_d a, int layer, const float *q, float *out,
                                                               const int *tiles) {
  extern __shared__ float sh[];
  int hd = a.head_dim, h = blockIdx.x, tile = tiles[blockIdx.y], t0 = tile & 0xffff, n = tile >> 16;
  int kvo = (h / (a.n_head / a.n_head_kv)) * hd, seq = a.seq_of[t0], p0 = a.pos[t0], n_keys = p0 + n;
  int qs_ld = hd + 1, ks_ld = hd + 1;
  float *Qs = sh, *Ks = Qs + ATT_QT * qs_ld, *Vs = Ks + ATT_KT * ks_ld, *Ps = Vs + ATT_KT * hd;
  int r = threadIdx.x / 4, sub = threadIdx.x % 4;
  float scale = a.scale;
  for (int i = threadIdx.x; i < ATT_QT * hd; i += ATT_QT * 4) {
    int rr = i / hd, d = i % hd;
    Qs[rr * qs_ld + d] = rr < n ? q[(size_t)(t0 + rr) * a.n_head * hd + (size_t)h * hd + d] * scale : 0.f;
  }
  float acc[HDMAX / 4], m = -INFINITY, l = 0.f;
#pragma unroll
  for (int i = 0; i < HDMAX / 4; i++) acc[i] = 0.f;
  int my_pos = p0 + r, my_first = first_key(a, my_pos); /* this row's keys */
  for (int k0 = first_key(a, p0) / ATT_KT * ATT_KT; k0 < n_keys; k0 += ATT_KT) {
    __syncthreads(); /* the previous tile is consumed */
    for (int i = threadIdx.x; i < ATT_KT * hd; i += ATT_QT * 4) {
      int j = i / hd, d = i % hd, key = k0 + j;
      float kv = 0.f, vv = 0.f;
      if (key < n_keys) {
        kv = kv_row(a, seq, layer, key, 0)[kvo + d];
        vv = kv_row(a, seq, layer, key, 1)[kvo + d];
      }
      Ks[j * ks_ld + d] = kv;
      Vs[j * hd + d] = vv;
    }
    __syncthreads();
    float sc[ATT_KT / 4], mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < ATT_KT / 4; k++) {
      int j = sub + 4 * k, key = k0 + j;
      float s = 0.f;
      for (int d = 0; d < hd; d++) s += Qs[r * qs_ld + d] * Ks[j * ks_ld + d];
      sc[k] = key <= my_pos && key >= my_first && r < n ? cap_score(a, s) : -INFINITY;
      mx = fmaxf(mx, sc[k]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float nm = fmaxf(m, mx);
    bool live = nm != -INFINITY; /* false only for rows past the tile's tokens */
    float corr = live ? expf(m - nm) : 1.f, ps = 0.f;
#pragma unroll
    for (int k = 0; k < ATT_KT / 4; k++) {
      float p = live ? expf(sc[k] - nm) : 0.f;
      Ps[r * (ATT_KT + 1) + sub + 4 * k] = p;
      ps += p;
    }
    ps += __shfl_xor_sync(0xffffffffu, ps, 1);
    ps += __shfl_xor_sync(0xffffffffu, ps, 2);
    l = l * corr + ps;
    m = nm;
    __syncwarp();
#pragma unroll
    for (int i = 0; i < HDMAX / 4; i++) {
      int d = sub + 4 * i;
      if (d < hd) {
        float v = acc[i] * corr;
        for (int j = 0; j < ATT_KT; j++) v += Ps[r * (ATT_KT + 1) + j] * Vs[j * hd + d];
        acc[i] = v;
      }
    }
    __syncwarp();
  }
  if (r >= n) return;
  float *o = out + (size_t)(t0 + r) * a.n_head * hd + (size_t)h * hd;
#pragma unroll
  for (int i = 0; i < HDMAX / 4; i++)
    if (sub + 4 * i < hd) o[sub + 4 * i] = acc[i] / l;
}

extern "C" void dw_k_attention_tiles(const dw_kv_args *a, int layer, const float *q, float *out, const int *tiles,
                                     int n_tiles, cudaStream_t stream) {
  int hd = a->head_dim;
  size_t shm = ((size_t)ATT_QT * (hd + 1) + (size_t)ATT_KT * (hd + 1) + (size_t)ATT_KT * hd +
                (size_t)ATT_QT * (ATT_KT + 1)) * sizeof(float);
  dim3 grid(a->n_head, n_tiles);
  kv_args_d k = to_kvd(a);
  if (hd <= 64) {
    attn_tile_kernel<64><<<grid, ATT_QT * 4, shm, stream>>>(k, layer, q, out, tiles);
  } else if (hd <= 128) {
    cudaFuncSetAttribute(attn_tile_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    attn_tile_kernel<128><<<grid, ATT_QT * 4, shm, stream>>>(k, layer, q, out, tiles);
  } else {
    cudaFuncSetAttribute(attn_tile_kernel<256>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    attn_tile_kernel<256><<<grid, ATT_QT * 4, shm, stream>>>(k, layer, q, out, tiles);
  }
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

__global__ void gelu_mul_kernel(float *h, const float *g, const float *u, long long n) {
  pdl_launch_dependents();
  pdl_wait();
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = g[i], z = 2.f * 0.7978845608028654f * (x + 0.044715f * x * x * x);
  h[i] = x / (1.f + expf(-z)) * u[i];
}

extern "C" void dw_k_gelu_mul(float *h, const float *g, const float *u, long long n, cudaStream_t stream) {
  launch(gelu_mul_kernel, grid_for(n), 256, 0, stream, h, g, u, n);
}

__global__ void scale_cap_kernel(float *x, long long n, float scale, float cap) {
  pdl_launch_dependents();
  pdl_wait();
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = cap > 0.f ? cap * tanhf(x[i] / cap) : x[i] * scale;
}

extern "C" void dw_k_scale_cap(float *x, long long n, float scale, float cap, cudaStream_t stream) {
  launch(scale_cap_kernel, grid_for(n), 256, 0, stream, x, n, scale, cap);
}

__global__ void add_normed_kernel(float *x, float *y, const float *w, int dim, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  rmsnorm_row(y + (size_t)blockIdx.x * dim, w, y + (size_t)blockIdx.x * dim, dim, eps);
  __syncthreads();
  for (int i = threadIdx.x; i < dim; i += NORM_THREADS) x[(size_t)blockIdx.x * dim + i] += y[(size_t)blockIdx.x * dim + i];
}

extern "C" void dw_k_add_normed(float *x, float *y, const float *w, int nt, int dim, float eps, cudaStream_t stream) {
  launch(add_normed_kernel, nt, NORM_THREADS, 0, stream, x, y, w, dim, eps);
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

/* One block of threads a row: row r of the canonical K-then-V array is
 * position p = r % n_pos of (K/V, layer) = r / n_pos, which lives in block
 * p / KV_BLOCK at row (r / n_pos)·KV_BLOCK + p % KV_BLOCK. */
__global__ void kv_rows_kernel(float *const *blocks, float *buf, long long row0, int n_pos, int kvd, bool to_blocks) {
  long long r = row0 + blockIdx.x, lv = r / n_pos;
  int p = (int)(r % n_pos);
  float *blk = blocks[p / KV_BLOCK] + ((size_t)lv * KV_BLOCK + p % KV_BLOCK) * kvd;
  float *row = buf + (size_t)blockIdx.x * kvd;
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    if (to_blocks) blk[i] = row[i];
    else row[i] = blk[i];
  }
}

extern "C" void dw_k_kv_rows(float *const *blocks, float *buf, long long row0, int n_rows, int n_pos, int kvd,
                             bool to_blocks, cudaStream_t stream) {
  if (n_rows > 0) kv_rows_kernel<<<n_rows, 128, 0, stream>>>(blocks, buf, row0, n_pos, kvd, to_blocks);
}
