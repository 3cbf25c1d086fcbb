/*
 * pool.h — a fork-join thread pool for short, frequent parallel jobs (the
 * LLM forward pass dispatches a few hundred per token).
 *
 * Invariants:
 *  1. One job runs at a time; dw_pool_run from several threads queue.
 *  2. The calling thread works as worker 0; dw_pool_run returns after every
 *     worker has finished the job.
 *  3. Idle workers spin briefly, then sleep on a condition variable, so an
 *     idle pool costs no CPU.
 *
 * Threads: any thread may call dw_pool_run.
 */
#ifndef DW_POOL_H
#define DW_POOL_H

#include "base/base.h"

typedef struct dw_pool dw_pool;
typedef void (*dw_pool_fn)(void *arg, int worker, int n_workers);

/* n_threads <= 0: one per online CPU. */
DW_HIDDEN dw_status dw_pool_create(int n_threads, dw_pool **out);
DW_HIDDEN void dw_pool_destroy(dw_pool *p);
DW_HIDDEN int dw_pool_size(const dw_pool *p);
DW_HIDDEN void dw_pool_run(dw_pool *p, dw_pool_fn fn, void *arg);

#endif
