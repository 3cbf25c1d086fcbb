/*
 * kernels.h — the CUDA engine's device kernels (kernels.cu), callable from
 * C: each dw_k_* enqueues work on `stream` and returns at once; errors
 * surface at the next synchronisation (cuda_engine.c checks them).
 *
 * Device weight formats (uploaded and repacked once by cuda_engine.c):
 *   DW_KT_F32   float  [n_out][n_in]
 *   DW_KT_F16   half   [n_out][n_in]
 *   DW_KT_BF16  bf16   [n_out][n_in]
 *   DW_KT_Q8_0  int8   [n_out][n_in], scales half [n_out][n_in / 32]
 *   DW_KT_Q4_0  uint8  [n_out][n_in / 2]: byte i holds element 2i in its low
 *               nibble and 2i + 1 in its high one, value (q - 8) · scale;
 *               scales half [n_out][n_in / 32]
 * Every n_in is a multiple of 32. Activations are f32 row-major [token][dim].
 * KV blocks are the canonical layout of engine.h invariant 2.
 */
#ifndef DW_CUDA_KERNELS_H
#define DW_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { DW_KT_F32, DW_KT_F16, DW_KT_BF16, DW_KT_Q8_0, DW_KT_Q4_0 };
enum { DW_GEMV_MAX_NT = 8 };        /* tokens one GEMV launch takes */
enum { DW_GEMV_STORE, DW_GEMV_ADD, DW_GEMV_GLU };

typedef struct dw_kv_args dw_kv_args;

typedef struct dw_kwt {
  int type, n_in, n_out;
  const void *q;                    /* the matrix (format above) */
  const uint16_t *scales;           /* Q8_0, Q4_0: half scales, else NULL */
} dw_kwt;

typedef struct dw_gemv_item {
  const dw_kwt *w;                  /* host copy of the descriptor (read at launch) */
  const dw_kwt *w2;                 /* GLU: the "up" matrix (same shape and type) */
  const float *bias;                /* [n_out] or NULL */
  float *y;                         /* [nt][n_out] */
} dw_gemv_item;

/* y = W·x (+ bias), y += W·x (+ bias), or y = silu(W·x) ⊙ (W2·x), for up
 * to three matrices of the same n_in and type at once; x is [nt][n_in]
 * with nt <= DW_GEMV_MAX_NT. With `norm` (device [n_in]), x is first
 * RMS-normalised with that weight and eps, inside the kernel. */
void dw_k_gemv(const float *x, const float *norm, float eps, int nt, int mode, const dw_gemv_item *items,
               int n_items, cudaStream_t stream);

/* The decode step's streaming GEMV (stream.cu): the same contract as
 * dw_k_gemv for nt <= DW_SV_MAX_NT. With `qkv` non-NULL the three items
 * are Q, K and V: RoPE is applied to Q and K in the epilogue (at
 * qkv->pos, with qkv->rope) and K and V go straight into the layer's KV
 * rows (items[1].y and items[2].y are not written). */
enum { DW_SV_MAX_NT = 4 };
void dw_k_sv(const float *x, const float *norm, float eps, int nt, int mode, const dw_gemv_item *items, int n_items,
             const dw_kv_args *qkv, int layer, cudaStream_t stream);

/* Programmatic dependent launch for the decode kernels (on by default;
 * it takes effect on sm_90 and newer). Call before any launch. */
void dw_k_set_pdl(bool on);

/* Rows each block of dw_k_gemv computes (1, 2 or 4; 0 = chosen by size). */
void dw_k_gemv_rows_per_warp(int r);

/* out[i] = rmsnorm(x[rows ? rows[i] : i]) · w for i < n; rows is device memory. */
void dw_k_rmsnorm(const float *x, const int *rows, const float *w, float *out, int n, int dim, float eps,
                  cudaStream_t stream);

/* x[t] = row tokens[t] of the embedding matrix, dequantised. */
void dw_k_embed(const dw_kwt *w, const int *tokens, float *x, int nt, cudaStream_t stream);

/* RoPE on q [nt][n_head·hd] and k [nt][n_head_kv·hd] at positions pos[t],
 * then K and V rows stored to the token's KV block:
 * tables[tab_off[seq_of[t]] + pos / 32]. The attention kernels take the
 * scores as scale·q·k, soft-capped to cap·tanh(s/cap) when cap > 0, over
 * the keys (pos - window, pos] (all of [0, pos] when window is 0). */
struct dw_kv_args {
  float *const *tables;             /* device: block data pointers */
  const int *tab_off, *seq_of, *pos;/* device */
  int n_layer, n_head, n_head_kv, head_dim, n_rot;
  bool neox;
  const float *rope;                /* device [nt][n_rot / 2] (cos, sin) of pos · inv_freq, for this layer */
  float scale, cap;
  int window;
};
void dw_k_rope_store(const dw_kv_args *a, int layer, float *q, float *k, const float *v, int nt, cudaStream_t stream);

/* Causal attention of each token over its sequence's positions [0, pos[t]]:
 * out [nt][n_head·hd] from q [nt][n_head·hd] (grouped-query). Keys are
 * split into n_split ranges of kps (n_split · kps >= every pos[t] + 1);
 * with n_split > 1, `part` holds nt · n_head · n_split · (head_dim + 2)
 * floats of partial results. */
void dw_k_attention(const dw_kv_args *a, int layer, const float *q, float *out, int nt, int n_split, int kps,
                    float *part, cudaStream_t stream);

/* The same for decode steps (nt <= DW_GEMV_MAX_NT, or any number of
 * one-token sequences), one block per (KV
 * head, token, KV block of 32 keys), the splits merged in the same launch:
 * split_cap >= every token's ceil((pos + 1) / 32) (blocks past a token's
 * keys return at once), `part` as above with n_split = split_cap, and
 * `count` nt · n_head_kv ints, zero before the launch and after it. */
void dw_k_attention_decode(const dw_kv_args *a, int layer, const float *q, float *out, int nt, int split_cap,
                           float *part, int *count, cudaStream_t stream);

/* The same for prefill steps, tiled: tiles[i] = t0 | n << 16 names n <= 32
 * consecutive tokens of one sequence at consecutive positions. */
enum { DW_ATT_TILE = 32 };
void dw_k_attention_tiles(const dw_kv_args *a, int layer, const float *q, float *out, const int *tiles, int n_tiles,
                          cudaStream_t stream);

/* f32 → f16 or bf16, n elements. */
void dw_k_to_half(const float *x, void *out, long long n, bool bf16, cudaStream_t stream);
/* The whole matrix dequantised to f16 [n_out][n_in] (Q8_0, Q4_0). */
void dw_k_dequant_f16(const dw_kwt *w, void *out, cudaStream_t stream);
/* h = silu(g) ⊙ u, n elements. */
void dw_k_silu_mul(float *h, const float *g, const float *u, long long n, cudaStream_t stream);
/* h = gelu_tanh(g) ⊙ u, n elements. */
void dw_k_gelu_mul(float *h, const float *g, const float *u, long long n, cudaStream_t stream);
/* x[i] = cap·tanh(x[i]/cap) (cap > 0), or x[i] ·= scale (cap = 0), n elements. */
void dw_k_scale_cap(float *x, long long n, float scale, float cap, cudaStream_t stream);
/* x[t] += rmsnorm(y[t]) · w for t < nt (rows of dim); y is overwritten. */
void dw_k_add_normed(float *x, float *y, const float *w, int nt, int dim, float eps, cudaStream_t stream);
/* y[t][i] += b[i] for t < nt, i < n. */
void dw_k_add_bias(float *y, const float *b, int nt, int n, cudaStream_t stream);

/* Rows [row0, row0 + n_rows) of the canonical layout, K [layer][n_pos][kvd]
 * then V the same, between buf (device; row row0 first) and the blocks. */
void dw_k_kv_rows(float *const *blocks, float *buf, long long row0, int n_rows, int n_pos, int kvd, bool to_blocks,
                  cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
