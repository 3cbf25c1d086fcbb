/*
 * stream.cu — the decode step's kernels for one to DW_SV_MAX_NT tokens:
 * a streaming GEMV whose warps keep the weight bytes of the next chunk in
 * flight while they compute on the current one (the QKV variant applies
 * RoPE and stores K and V into the KV blocks in its epilogue), and a
 * paged decode attention that merges its own key splits (the last block of
 * a head group to finish does the merge), so a layer is five kernels.
 *
 * Invariants:
 *  1. As kernels.cu: every index was checked on the host; accumulation is
 *     f32, RMSNorm's sum of squares f64.
 *  2. A warp owns whole output rows (tasks): no atomics and no block-wide
 *     reduction in the GEMV; blocks share only the activation vector,
 *     copied (and RMS-normalised) into shared memory once per block.
 *  3. The attention's per-(token, KV head) counters are zero between
 *     launches: the block that merges resets its own.
 */
#include "kernels_dev.cuh"

enum { SV_WARPS = 8, SV_LOADS = 8 }; /* warps a block; 16-byte loads in flight per lane and buffer */

enum { SV_PLAIN, SV_ROPE_Q, SV_ROPE_K, SV_STORE_V };

template <int T> __host__ __device__ constexpr int sv_epl() { /* elements per 16 bytes */
  return T == DW_KT_F32 ? 4 : T == DW_KT_Q8_0 ? 16 : T == DW_KT_Q4_0 ? 32 : 8;
}

struct sv_item {
  kwt w, w2;
  const float *bias;
  float *y;
  int n_out, kind;
};

struct sv_args {
  sv_item it[3];
  int task_start[4]; /* item i owns tasks [task_start[i], task_start[i + 1]) */
  int n_items, n_in, mode;
  const float *x, *norm;
  float eps;
  kv_args_d kv;
  int layer;
};

__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/* Σ of the EPL elements in u (16 bytes of row data; sc its block's scale
 * for the quantised types) times x[0 .. EPL). */
template <int T>
__device__ __forceinline__ float sv_dot(uint4 u, float sc, const float *x) {
  float s = 0.f;
  if (T == DW_KT_F32) {
    float4 a = *(const float4 *)x;
    s = __uint_as_float(u.x) * a.x + __uint_as_float(u.y) * a.y + __uint_as_float(u.z) * a.z +
        __uint_as_float(u.w) * a.w;
  } else if (T == DW_KT_F16 || T == DW_KT_BF16) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 2; i++) {
      float4 a = *(const float4 *)(x + 4 * i);
      float2 f0, f1;
      if (T == DW_KT_F16) {
        f0 = __half22float2(*(const __half2 *)&w[2 * i]), f1 = __half22float2(*(const __half2 *)&w[2 * i + 1]);
      } else {
        f0 = __bfloat1622float2(*(const __nv_bfloat162 *)&w[2 * i]);
        f1 = __bfloat1622float2(*(const __nv_bfloat162 *)&w[2 * i + 1]);
      }
      s += f0.x * a.x + f0.y * a.y + f1.x * a.z + f1.y * a.w;
    }
  } else if (T == DW_KT_Q8_0) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float4 a = *(const float4 *)(x + 4 * i);
      const int8_t *b = (const int8_t *)&w[i];
      s += (float)b[0] * a.x + (float)b[1] * a.y + (float)b[2] * a.z + (float)b[3] * a.w;
    }
    s *= sc;
  } else { /* Q4_0: byte i holds elements 2i (low nibble) and 2i + 1 */
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
      for (int j = 0; j < 2; j++) {
        float4 a = *(const float4 *)(x + 8 * i + 4 * j);
        uint32_t b = w[i] >> (16 * j);
        s += (float)((int)(b & 15) - 8) * a.x + (float)((int)(b >> 4 & 15) - 8) * a.y +
             (float)((int)(b >> 8 & 15) - 8) * a.z + (float)((int)(b >> 12 & 15) - 8) * a.w;
      }
    }
    s *= sc;
  }
  return s;
}

/* Rows of a task: R = 1, row = p; R = 2, a pair — for the RoPE items the
 * two dimensions RoPE rotates together (or two neighbours past n_rot), for
 * the rest rows 2p and 2p + 1. *pair is the rotated pair's index, or -1. */
template <int R>
__device__ __forceinline__ void sv_rows(const sv_args &a, int kind, int p, int rows[R], int *pair) {
  *pair = -1;
  if (R == 1) {
    rows[0] = p;
    return;
  }
  if (kind == SV_ROPE_Q || kind == SV_ROPE_K) {
    int hd = a.kv.head_dim, h = p / (hd / 2), pp = p % (hd / 2), half = a.kv.n_rot / 2;
    if (pp < half) {
      *pair = pp;
      rows[0] = h * hd + (a.kv.neox ? pp : 2 * pp);
      rows[R - 1] = h * hd + (a.kv.neox ? pp + half : 2 * pp + 1);
    } else {
      rows[0] = h * hd + a.kv.n_rot + 2 * (pp - half);
      rows[R - 1] = rows[0] + 1;
    }
    return;
  }
  rows[0] = 2 * p, rows[R - 1] = 2 * p + 1;
}

__device__ __forceinline__ int sv_item_of(const sv_args &a, int task) {
  int i = 0;
  while (i + 1 < a.n_items && task >= a.task_start[i + 1]) i++;
  return i;
}

/* The block of threads: SV_WARPS warps, each streaming its own tasks
 * (task gw, gw + n_warps, …), every task in chunks of 32 · NL units of 16
 * bytes per row; chunk k + 1's loads are issued before chunk k is used. */
template <int T, int NT, bool GLU, int R>
__global__ void __launch_bounds__(SV_WARPS * 32) sv_kernel(const sv_args a) {
  constexpr int EPL = sv_epl<T>(), M = GLU ? 2 : 1, NL = SV_LOADS / (R * M), NB = R * M * NL;
  constexpr bool QT = T == DW_KT_Q8_0 || T == DW_KT_Q4_0;
  extern __shared__ float xs[]; /* [NT][n_in] */
  pdl_launch_dependents();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_in = a.n_in, units = n_in / EPL;
  const int n_chunks = (units + 32 * NL - 1) / (32 * NL), total = a.task_start[a.n_items];
  const int n_warps = gridDim.x * SV_WARPS;
  uint4 bA[NB], bB[NB];
  float sA[NB], sB[NB];

  auto fetch = [&](int task, int c, uint4 *b, float *s) {
    int i = sv_item_of(a, task), rows[R], pair;
    const sv_item &it = a.it[i];
    sv_rows<R>(a, it.kind, task - a.task_start[i], rows, &pair);
#pragma unroll
    for (int q = 0; q < R; q++)
#pragma unroll
      for (int m = 0; m < M; m++) {
        const kwt &w = m ? it.w2 : it.w;
        const uint4 *row = (const uint4 *)((const char *)w.q + (size_t)rows[q] * units * 16);
#pragma unroll
        for (int j = 0; j < NL; j++) {
          int u = c * 32 * NL + j * 32 + lane, k = (q * M + m) * NL + j;
          bool ok = u < units;
          b[k] = ok ? ld_stream(row + u) : make_uint4(0, 0, 0, 0);
          if (QT) s[k] = ok ? __half2float(w.scales[(size_t)rows[q] * (n_in / 32) + u * EPL / 32]) : 0.f;
        }
      }
  };

  float acc[R][M][NT];
  auto zero = [&]() {
#pragma unroll
    for (int q = 0; q < R; q++)
#pragma unroll
      for (int m = 0; m < M; m++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[q][m][t] = 0.f;
  };

  auto compute = [&](int c, const uint4 *b, const float *s) {
#pragma unroll
    for (int j = 0; j < NL; j++) {
      int u = c * 32 * NL + j * 32 + lane;
      if (u >= units) continue;
#pragma unroll
      for (int t = 0; t < NT; t++) {
        const float *xv = xs + (size_t)t * n_in + (size_t)u * EPL;
#pragma unroll
        for (int q = 0; q < R; q++)
#pragma unroll
          for (int m = 0; m < M; m++) {
            int k = (q * M + m) * NL + j;
            acc[q][m][t] += sv_dot<T>(b[k], QT ? s[k] : 1.f, xv);
          }
      }
    }
  };

  auto finish = [&](int task) {
#pragma unroll
    for (int q = 0; q < R; q++)
#pragma unroll
      for (int m = 0; m < M; m++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[q][m][t] = warp_sum(acc[q][m][t]);
    if (lane >= NT) return; /* lane t writes token t */
    int i = sv_item_of(a, task), rows[R], pair;
    const sv_item &it = a.it[i];
    sv_rows<R>(a, it.kind, task - a.task_start[i], rows, &pair);
    float v[R], v2 = 0.f;
#pragma unroll
    for (int t = 0; t < NT; t++) {
      if (t != lane) continue;
#pragma unroll
      for (int q = 0; q < R; q++) v[q] = acc[q][0][t];
      if (GLU) v2 = acc[0][M - 1][t];
    }
    const int t = lane;
    if constexpr (GLU) {
      it.y[(size_t)t * it.n_out + rows[0]] = v[0] / (1.f + expf(-v[0])) * v2;
    } else {
#pragma unroll
      for (int q = 0; q < R; q++)
        if (it.bias) v[q] += it.bias[rows[q]];
      if (it.kind == SV_PLAIN) {
#pragma unroll
        for (int q = 0; q < R; q++) {
          float *y = it.y + (size_t)t * it.n_out + rows[q];
          *y = a.mode == DW_GEMV_ADD ? *y + v[q] : v[q];
        }
        return;
      }
      if (R == 2 && pair >= 0) { /* RoPE, as rope_store_kernel does it */
        const float *cs = a.kv.rope + ((size_t)t * (a.kv.n_rot / 2) + pair) * 2;
        float x0 = v[0], x1 = v[R - 1], c = cs[0], s = cs[1];
        v[0] = x0 * c - x1 * s;
        v[R - 1] = x0 * s + x1 * c;
      }
      float *dst = it.kind == SV_ROPE_Q ? it.y + (size_t)t * it.n_out
                                        : kv_row(a.kv, a.kv.seq_of[t], a.layer, a.kv.pos[t], it.kind == SV_STORE_V);
#pragma unroll
      for (int q = 0; q < R; q++) dst[rows[q]] = v[q];
    }
  };

  int task = blockIdx.x * SV_WARPS + warp, c = 0;
  if (task < total) fetch(task, c, bA, sA); /* weights: no kernel writes them, so before the wait */
  pdl_wait();
  /* x (RMS-normalised) into shared memory */
  __shared__ double red[SV_WARPS][NT];
#pragma unroll
  for (int t = 0; t < NT; t++) {
    float ss = 0.f;
    for (int e = threadIdx.x * 4; e < n_in; e += SV_WARPS * 32 * 4) {
      float4 v = *(const float4 *)(a.x + (size_t)t * n_in + e);
      *(float4 *)(xs + (size_t)t * n_in + e) = v;
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    if (a.norm) {
      ss = warp_sum(ss);
      if (lane == 0) red[warp][t] = ss;
    }
  }
  if (a.norm) {
    __syncthreads();
#pragma unroll
    for (int t = 0; t < NT; t++) {
      double tot = 0;
      for (int w = 0; w < SV_WARPS; w++) tot += red[w][t];
      float rms = (float)(1.0 / sqrt(tot / n_in + a.eps));
      for (int e = threadIdx.x * 4; e < n_in; e += SV_WARPS * 32 * 4) {
        float4 v = *(float4 *)(xs + (size_t)t * n_in + e), g = *(const float4 *)(a.norm + e);
        v.x *= rms * g.x, v.y *= rms * g.y, v.z *= rms * g.z, v.w *= rms * g.w;
        *(float4 *)(xs + (size_t)t * n_in + e) = v;
      }
    }
  }
  __syncthreads();
  zero();
  auto advance = [&](int &tk, int &ch) {
    if (++ch == n_chunks) ch = 0, tk += n_warps;
  };
  while (task < total) {
    int nt_ = task, nc = c;
    advance(nt_, nc);
    if (nt_ < total) fetch(nt_, nc, bB, sB);
    compute(c, bA, sA);
    if (c == n_chunks - 1) finish(task), zero();
    task = nt_, c = nc;
    if (task >= total) break;
    advance(nt_, nc);
    if (nt_ < total) fetch(nt_, nc, bA, sA);
    compute(c, bB, sB);
    if (c == n_chunks - 1) finish(task), zero();
    task = nt_, c = nc;
  }
}

static int sv_sm_count() {
  static int n = 0;
  if (!n) {
    int dev = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n < 1) n = 1;
  }
  return n;
}

template <int T, int NT, bool GLU, int R>
static void sv_launch(const sv_args &a, cudaStream_t st) {
  auto k = sv_kernel<T, NT, GLU, R>;
  size_t shm = (size_t)NT * a.n_in * sizeof(float);
  if (shm > 48 * 1024) cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, SV_WARPS * 32, shm) != cudaSuccess || per_sm < 1)
    per_sm = 1;
  int tasks = a.task_start[a.n_items], blocks = (tasks + SV_WARPS - 1) / SV_WARPS;
  int cap = per_sm * sv_sm_count();
  launch(k, dim3(blocks < cap ? blocks : cap), dim3(SV_WARPS * 32), shm, st, a);
}

template <int T, int NT>
static void sv_mode(const sv_args &a, bool pairs, cudaStream_t st) {
  if (a.mode == DW_GEMV_GLU) sv_launch<T, NT, true, 1>(a, st);
  else if (pairs) sv_launch<T, NT, false, 2>(a, st);
  else sv_launch<T, NT, false, 1>(a, st);
}

template <int T>
static void sv_nt(const sv_args &a, int nt, bool pairs, cudaStream_t st) {
  switch (nt) {
  case 1: sv_mode<T, 1>(a, pairs, st); break;
  case 2: sv_mode<T, 2>(a, pairs, st); break;
  case 3: sv_mode<T, 3>(a, pairs, st); break;
  default: sv_mode<T, 4>(a, pairs, st); break;
  }
}

extern "C" void dw_k_sv(const float *x, const float *norm, float eps, int nt, int mode, const dw_gemv_item *items,
                        int n_items, const dw_kv_args *qkv, int layer, cudaStream_t stream) {
  sv_args a = {};
  a.n_items = n_items, a.x = x, a.n_in = items[0].w->n_in, a.mode = mode, a.norm = norm, a.eps = eps;
  a.layer = layer;
  if (qkv) a.kv = to_kvd(qkv);
  for (int i = 0; i < n_items; i++) {
    a.it[i].w = to_kwt(items[i].w);
    if (items[i].w2) a.it[i].w2 = to_kwt(items[i].w2);
    a.it[i].bias = items[i].bias, a.it[i].y = items[i].y, a.it[i].n_out = items[i].w->n_out;
    a.it[i].kind = !qkv ? SV_PLAIN : i == 0 ? SV_ROPE_Q : i == 1 ? SV_ROPE_K : SV_STORE_V;
    a.task_start[i + 1] = a.task_start[i] + (qkv ? items[i].w->n_out / 2 : items[i].w->n_out);
  }
  switch (items[0].w->type) {
  case DW_KT_F32: sv_nt<DW_KT_F32>(a, nt, qkv != NULL, stream); break;
  case DW_KT_F16: sv_nt<DW_KT_F16>(a, nt, qkv != NULL, stream); break;
  case DW_KT_BF16: sv_nt<DW_KT_BF16>(a, nt, qkv != NULL, stream); break;
  case DW_KT_Q8_0: sv_nt<DW_KT_Q8_0>(a, nt, qkv != NULL, stream); break;
  default: sv_nt<DW_KT_Q4_0>(a, nt, qkv != NULL, stream); break;
  }
}

/* ---- decode attention ------------------------------------------------------------------ */

enum { AD_WARPS = 4, AD_BATCH = 8 }; /* warps a block; splits merged per batch of loads */

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Block (KV head kh, token t, split s) takes the 32 keys of the token's
 * KV block s for the query heads of group kh: K and V rows into shared
 * memory, lane j scores key j, the warp's online-softmax partial (max, sum,
 * unnormalised output) goes to `part`. The last block of (t, kh) to finish
 * merges every split of its heads into `out`. */
template <int DPL>
__global__ void __launch_bounds__(AD_WARPS * 32)
    attn_dec_kernel(kv_args_d a, int layer, const float *q, float *out, float *part, int *count, int split_cap) {
  extern __shared__ float sh[];
  pdl_launch_dependents();
  /* positions and block tables come from the step's input copy, which
   * precedes every kernel of the step: read them before the wait */
  const int kh = blockIdx.x, t = blockIdx.y, s = blockIdx.z, hd = a.head_dim, g = a.n_head / a.n_head_kv;
  const int n_keys = a.pos[t] + 1, k0 = s * KV_BLOCK, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (k0 >= n_keys) {
    pdl_wait();
    return;
  }
  const int nk = min(KV_BLOCK, n_keys - k0), kvd = a.n_head_kv * hd, need = (n_keys + KV_BLOCK - 1) / KV_BLOCK;
  float *Ks = sh, *Vs = Ks + KV_BLOCK * (hd + 1), *Qs = Vs + KV_BLOCK * hd;
  const float *blk = a.tables[a.tab_off[a.seq_of[t]] + s];
  const float *K = blk + (size_t)layer * KV_BLOCK * kvd + (size_t)kh * hd;
  const float *V = blk + ((size_t)a.n_layer + layer) * KV_BLOCK * kvd + (size_t)kh * hd;
  pdl_wait(); /* K and V of this step's tokens, and q, come from the kernel before */
  for (int i = threadIdx.x; i < KV_BLOCK * hd / 4; i += AD_WARPS * 32) {
    int j = i / (hd / 4), d = (i % (hd / 4)) * 4;
    float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
    if (j < nk) kv = *(const float4 *)(K + (size_t)j * kvd + d), vv = *(const float4 *)(V + (size_t)j * kvd + d);
    float *kr = Ks + j * (hd + 1) + d;
    kr[0] = kv.x, kr[1] = kv.y, kr[2] = kv.z, kr[3] = kv.w;
    *(float4 *)(Vs + j * hd + d) = vv;
  }
  const float scale = a.scale;
  const int lo = first_key(a, n_keys - 1); /* keys below it are outside the window */
  const float *qt = q + ((size_t)t * a.n_head + (size_t)kh * g) * hd;
  for (int i = threadIdx.x; i < g * hd; i += AD_WARPS * 32) Qs[i] = qt[i] * scale;
  __syncthreads();
  float *pml = part, *pacc = part + (size_t)gridDim.y * a.n_head * split_cap * 2;
  for (int hh = warp; hh < g; hh += AD_WARPS) {
    int h = kh * g + hh;
    float sc = -INFINITY;
    if (lane < nk && k0 + lane >= lo) {
      float p = 0.f;
      for (int d = 0; d < hd; d++) p += Qs[hh * hd + d] * Ks[lane * (hd + 1) + d];
      sc = cap_score(a, p);
    }
    /* a block wholly outside the window leaves max -inf and sum 0 */
    float m = warp_max(sc), p = sc != -INFINITY ? expf(sc - m) : 0.f, l = warp_sum(p), acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.f;
    for (int j = 0; j < nk; j++) {
      float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < DPL; i++)
        if (lane + 32 * i < hd) acc[i] += pj * Vs[j * hd + lane + 32 * i];
    }
    size_t pi = ((size_t)t * a.n_head + h) * split_cap + s;
    if (lane == 0) pml[2 * pi] = m, pml[2 * pi + 1] = l;
#pragma unroll
    for (int i = 0; i < DPL; i++)
      if (lane + 32 * i < hd) pacc[pi * hd + lane + 32 * i] = acc[i];
  }
  /* the last of this (token, KV head)'s blocks merges (invariant 3) */
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) {
    int *c = count + (size_t)t * a.n_head_kv + kh;
    last = atomicAdd(c, 1) == need - 1;
    if (last) *c = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int hh = warp; hh < g; hh += AD_WARPS) {
    int h = kh * g + hh;
    size_t p0 = ((size_t)t * a.n_head + h) * split_cap;
    float M = -INFINITY, L = 0.f;
    for (int i = lane; i < need; i += 32) { /* online over this lane's splits */
      float m = __ldcg(pml + 2 * (p0 + i)), l = __ldcg(pml + 2 * (p0 + i) + 1), mx = fmaxf(M, m);
      if (m == -INFINITY) continue; /* a split outside the window */
      L = L * expf(M - mx) + l * expf(m - mx), M = mx;
    }
    float Mw = warp_max(M);
    L = warp_sum(M == -INFINITY ? 0.f : L * expf(M - Mw)), M = Mw;
    float o[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) o[i] = 0.f;
    /* AD_BATCH splits' loads in flight at once: the merge is latency-bound */
    for (int sp0 = 0; sp0 < need; sp0 += AD_BATCH) {
      float f[AD_BATCH], v[AD_BATCH][DPL];
#pragma unroll
      for (int u = 0; u < AD_BATCH; u++) {
        bool ok = sp0 + u < need;
        f[u] = ok ? __ldcg(pml + 2 * (p0 + sp0 + u)) : -INFINITY;
#pragma unroll
        for (int i = 0; i < DPL; i++)
          v[u][i] = ok && lane + 32 * i < hd ? __ldcg(pacc + (p0 + sp0 + u) * hd + lane + 32 * i) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < AD_BATCH; u++) {
        float w = f[u] == -INFINITY ? 0.f : expf(f[u] - M);
#pragma unroll
        for (int i = 0; i < DPL; i++) o[i] += v[u][i] * w;
      }
    }
#pragma unroll
    for (int i = 0; i < DPL; i++)
      if (lane + 32 * i < hd) out[((size_t)t * a.n_head + h) * hd + lane + 32 * i] = o[i] / L;
  }
}

extern "C" void dw_k_attention_decode(const dw_kv_args *a, int layer, const float *q, float *out, int nt,
                                      int split_cap, float *part, int *count, cudaStream_t stream) {
  int hd = a->head_dim, g = a->n_head / a->n_head_kv, dpl = (hd + 31) / 32;
  size_t shm = ((size_t)KV_BLOCK * (hd + 1) + (size_t)KV_BLOCK * hd + (size_t)g * hd) * sizeof(float);
  dim3 grid(a->n_head_kv, nt, split_cap);
  kv_args_d k = to_kvd(a);
  auto run = [&](void (*kern)(kv_args_d, int, const float *, float *, float *, int *, int)) {
    if (shm > 48 * 1024) cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    launch(kern, grid, dim3(AD_WARPS * 32), shm, stream, k, layer, q, out, part, count, split_cap);
  };
  if (dpl <= 1) run(attn_dec_kernel<1>);
  else if (dpl <= 2) run(attn_dec_kernel<2>);
  else if (dpl <= 4) run(attn_dec_kernel<4>);
  else run(attn_dec_kernel<8>);
}
