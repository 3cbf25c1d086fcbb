/*
 * batch.c — forward steps batched across sessions (engine.h dw_batcher):
 * every decode call joins its model's queue; the caller that finds no step
 * running takes the queue's oldest calls, as many as the step limits allow,
 * runs them as one forward step on its own thread, and hands each its
 * result; the others sleep until theirs is done or it is their turn to run
 * a step. No thread of our own and no timer: a call that finds the engine
 * idle runs at once, and calls that arrive while a step runs make up the
 * next one (continuous batching). Callers that loop (decode, sample,
 * decode) come back a little apart after each step: a caller about to run
 * a step with fewer calls waiting than the last step carried gives the
 * rest a short grace (a fifth of the last step's time, 2 ms at most) to
 * join, so a steady set of callers keeps stepping together instead of
 * splitting into halves that alternate.
 *
 * Invariants:
 *  1. Calls are taken oldest first, and the oldest waiting call is always
 *     in the next step (its tokens fit one step on their own: session.c
 *     cuts longer calls), so no call waits behind more than the step
 *     running when it arrived and the calls queued before it.
 *  2. A step that fails fails every call in it, each with the step's
 *     status and message.
 *
 * Threads: everything in dw_batcher is under its lock but `seqs` and
 * `reqs`, which only the thread running the step (busy) touches.
 */
#define _GNU_SOURCE
#include "llm/engine.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

struct dw_batch_req {
  dw_step_seq q;
  dw_step_info info;
  dw_status st;
  bool done;
  char err[512];
  dw_batch_req *next;
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Runs one step over the oldest waiting calls; called with b->lock held
 * and b->busy set, returns with the lock held again. */
static void run_step(dw_engine *e, const dw_engine_weights *w, dw_batcher *b) {
  if (b->n_waiting < b->last_n && b->last_step_s > 0) {
    double grace = b->last_step_s / 5 < 2e-3 ? b->last_step_s / 5 : 2e-3, until = now_s() + grace;
    struct timespec ts = {(time_t)until, (long)((until - (double)(time_t)until) * 1e9)};
    while (b->n_waiting < b->last_n && pthread_cond_timedwait(&b->arrived, &b->lock, &ts) == 0) {}
  }
  int n = 0, tokens = 0;
  while (b->head && n < e->max_batch && (n == 0 || tokens + b->head->q.n <= e->max_step_tokens)) {
    dw_batch_req *r = b->head;
    b->head = r->next;
    if (!b->head) b->tail = NULL;
    b->reqs[n] = r;
    b->seqs[n++] = r->q;
    tokens += r->q.n;
    b->n_waiting--;
  }
  pthread_mutex_unlock(&b->lock);
  dw_step_info info = {0};
  double t0 = now_s();
  dw_status st = e->ops->forward(e->ctx, w->w, b->seqs, n, &info);
  const char *msg = st ? dw_last_error() : NULL;
  double took = now_s() - t0;
  pthread_mutex_lock(&b->lock);
  b->last_n = n, b->last_step_s = took;
  for (int i = 0; i < n; i++) {
    dw_batch_req *r = b->reqs[i];
    r->st = st, r->info = info, r->done = true;
    if (msg) snprintf(r->err, sizeof r->err, "%s", msg);
  }
  b->steps++;
  b->seqs_run += (uint64_t)n;
  if (n > b->max_seqs) b->max_seqs = n;
}

dw_status dw_engine_step(dw_engine *e, const dw_engine_weights *cw, dw_step_seq *q, dw_step_info *info) {
  if (e->max_batch <= 1) return e->ops->forward(e->ctx, cw->w, q, 1, info);
  dw_engine_weights *w = (dw_engine_weights *)cw; /* the batcher is the entry's one mutable part */
  dw_batcher *b = &w->batch;
  dw_batch_req me = {.q = *q};
  pthread_mutex_lock(&b->lock);
  if (!b->seqs) {
    b->seqs = dw_calloc((size_t)e->max_batch, sizeof *b->seqs);
    b->reqs = dw_calloc((size_t)e->max_batch, sizeof *b->reqs);
    if (!b->seqs || !b->reqs) {
      dw_free(b->seqs), dw_free(b->reqs);
      b->seqs = NULL, b->reqs = NULL;
      pthread_mutex_unlock(&b->lock);
      return dw_error_set(DW_ERR_NOMEM, "decode: batch queue");
    }
  }
  if (b->tail) b->tail->next = &me;
  else b->head = &me;
  b->tail = &me;
  b->n_waiting++;
  pthread_cond_signal(&b->arrived);
  while (!me.done) {
    if (b->busy) {
      pthread_cond_wait(&b->cond, &b->lock);
      continue;
    }
    b->busy = true;
    run_step(e, w, b);
    b->busy = false;
    pthread_cond_broadcast(&b->cond);
  }
  pthread_mutex_unlock(&b->lock);
  *info = me.info;
  if (me.st) return dw_error_set(me.st, "%s", me.err);
  return DW_OK;
}

void dw_engine_batch_stats(dw_engine *e, uint64_t *steps, uint64_t *seqs, int *max_seqs) {
  *steps = *seqs = 0, *max_seqs = 0;
  pthread_mutex_lock(&e->lock);
  for (dw_engine_weights *w = e->cache; w; w = w->next) {
    pthread_mutex_lock(&w->batch.lock);
    *steps += w->batch.steps, *seqs += w->batch.seqs_run;
    if (w->batch.max_seqs > *max_seqs) *max_seqs = w->batch.max_seqs;
    pthread_mutex_unlock(&w->batch.lock);
  }
  pthread_mutex_unlock(&e->lock);
}
