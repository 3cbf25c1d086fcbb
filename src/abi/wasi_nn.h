/*
 * wasi_nn.h — the `wasi_ephemeral_nn` import module as WasmEdge's GGML
 * backend implements it (../shared/specs/wasi-nn-ggml.md), on the LLM
 * engine: graphs are registry models (--nn-preload / --model), contexts own
 * a KV session, and sampling and the generation loop run on the host with
 * the SDK sampler, as the GGML plugin does.
 *
 * Invariants:
 *  1. Every guest pointer and struct is bounds-checked first; a bad one is
 *     error 1 (invalid_argument), never a trap or a host crash.
 *  2. Graph and context handles count from 0 and are never reused.
 *  3. get_output copies min(len, buf_max) bytes and reports the full length.
 *
 * Threads: one instance's state is used by one thread at a time.
 */
#ifndef DW_WASI_NN_H
#define DW_WASI_NN_H

#include "abi/abi.h"

typedef struct dw_nn dw_nn;

/* stdout_fd: where stream-stdout writes (the host's stdout). */
/* settings (borrowed, may be NULL): where its messages go. */
DW_HIDDEN dw_status dw_nn_create(dw_registry *reg, dw_engine *engine, int stdout_fd, const dw_settings *settings,
                                 dw_nn **out);
DW_HIDDEN void dw_nn_destroy(dw_nn *nn);

/* The host module (ends with {0}). */
DW_HIDDEN extern const dw_hostfn dw_nn_functions[];

#endif
