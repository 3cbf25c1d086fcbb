/*
 * host.h — the actor host behind `driftwood serve`: live actors in memory,
 * one mailbox each, a pool of workers, and their snapshots in a state
 * directory.
 *
 * Invariants:
 *  1. Jobs for one actor run in the order they were submitted, one at a
 *     time; different actors run in parallel on the workers.
 *  2. A message's job completes only after the snapshot that includes its
 *     effect is durable (with persist_each); a message that fails (a trap,
 *     a time limit, a cancel, a failed snapshot) leaves no effect: the live
 *     instance is dropped and the actor comes back from its last snapshot.
 *  3. Jobs waiting in all mailboxes never exceed max_queue: a submit past it
 *     is refused with DW_ERR_LIMIT (the HTTP layer answers 429).
 *  4. An actor's state file is DIR/actors/ID.dws, replaced atomically; a
 *     restarted host lists every actor found there (hibernated: it is thawed
 *     by its next job).
 *
 * Uses only the public API (driftwood.h). Threads: every function may be
 * called from any thread; a job's emit and done callbacks run on a worker.
 */
#ifndef DW_SERVER_HOST_H
#define DW_SERVER_HOST_H

#include "driftwood.h"

#include <pthread.h>

#define DW_HOST_ID_MAX 64

/* Default workers at least: actors blocked in a decode call wait for a
 * step shared with the others, so more workers than cores keep the steps
 * full (16 chat streams on 2 cores: 83 → 114 tok/s, RESULTS.md). */
enum { DW_HOST_MIN_WORKERS = 16 };

typedef struct dw_host dw_host;

typedef struct dw_host_config {
  dw_runtime *rt;            /* borrowed */
  const char *state_dir;     /* required: where actors persist */
  int workers;               /* <= 0: one per core, at least DW_HOST_MIN_WORKERS */
  int max_queue;             /* jobs waiting in all mailboxes; <= 0: 4096 */
  int mailbox_cap;           /* jobs waiting for one actor; <= 0: 256 */
  bool persist_each;         /* snapshot after every message (before it completes) */
  double hibernate_after_s;  /* idle live actors are released after this; 0: never */
} dw_host_config;

typedef enum dw_job_kind { DW_JOB_MESSAGE, DW_JOB_FREEZE, DW_JOB_FORK, DW_JOB_DELETE, DW_JOB_CALL } dw_job_kind;

/* A unit of work; owned by the submitter, which must keep it alive until
 * it is finished (dw_host_job_wait returns, or done was called). */
typedef struct dw_host_job {
  dw_job_kind kind;
  const void *msg;              /* MESSAGE: the bytes handed to dw_on_message */
  size_t len;
  dw_emit_fn emit;              /* MESSAGE: each emit (NULL: discarded) */
  void *ctx;
  void (*call)(void *ctx);      /* CALL: run on a worker (no actor) */
  unsigned freeze_flags;        /* FREEZE: dw_actor_freeze flags */
  void (*done)(struct dw_host_job *j); /* optional, on the worker when finished */
  void (*release)(struct dw_host_job *j); /* optional: called last instead of waking
                                             waiters; the host never touches j after it */
  /* results */
  dw_status st;
  int32_t result;               /* MESSAGE: dw_on_message's return value */
  char error[256];              /* when st != DW_OK */
  uint8_t *snapshot;            /* FREEZE: malloc'd; the submitter frees it */
  size_t snapshot_len;
  char new_id[DW_HOST_ID_MAX + 1]; /* FORK: the fork's id (empty: the host picks one and writes it here) */
  double queued_s, started_s, finished_s; /* monotonic seconds */
  /* the host's */
  struct dw_host_job *next;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool finished;
} dw_host_job;

/* Prepares a job for submission (zeroes the results, sets up its wait). */
void dw_host_job_init(dw_host_job *j, dw_job_kind kind);
void dw_host_job_fini(dw_host_job *j);
/* Blocks until j has finished (not for jobs with a release callback). */
void dw_host_job_wait(dw_host_job *j);

/* What one actor looks like from outside (bookkeeping the workers keep). */
typedef struct dw_host_actor_info {
  char id[DW_HOST_ID_MAX + 1];
  char module[64];              /* "" until known (thawed after a restart) */
  bool live;                    /* instantiated; false: only its snapshot */
  bool running;
  int queued;
  uint64_t messages;            /* handled by this host since it started */
  dw_actor_stats stats;         /* as of its last job */
  uint64_t snapshot_bytes;      /* its state file's size, 0 if none */
  char last_error[256];
} dw_host_actor_info;

typedef struct dw_host_stats {
  int actors, live, running, queued;
  uint64_t kv_bytes, memory_bytes; /* over live actors, as of their last job */
  uint64_t messages, failed, cancelled, refused;
} dw_host_stats;

dw_status dw_host_create(const dw_host_config *cfg, dw_host **out);
/* Stops the workers after the jobs running now, finishes the queued ones
 * with DW_ERR_IO, freezes live actors that have unsaved state, frees all. */
void dw_host_destroy(dw_host *h);

/* Registers a module actors may run (loaded, and compiled on a miss, now). */
dw_status dw_host_add_module(dw_host *h, const char *name, const char *path);
/* The names of the registered modules, in order; NULL past the end. */
const char *dw_host_module_name(dw_host *h, int i);

/* A new actor of a registered module, persisted before this returns.
 * id may be NULL (a random one is chosen) or [A-Za-z0-9_.-]{1,64}. */
dw_status dw_host_spawn(dw_host *h, const char *module, const char *id, char out_id[DW_HOST_ID_MAX + 1]);
/* A new actor from a snapshot (which must be made by a registered module;
 * models only those the runtime serves). */
dw_status dw_host_thaw(dw_host *h, const uint8_t *buf, size_t len, const char *id, char out_id[DW_HOST_ID_MAX + 1]);
/* Queues j for actor id. DW_ERR_NOT_FOUND: no such actor; DW_ERR_LIMIT:
 * its mailbox or the host's queue is full. */
dw_status dw_host_submit(dw_host *h, const char *id, dw_host_job *j);
/* Queues a MESSAGE for a fresh actor of module that is discarded after it
 * (or a CALL job when module is NULL). */
dw_status dw_host_submit_ephemeral(dw_host *h, const char *module, dw_host_job *j);

bool dw_host_exists(dw_host *h, const char *id);
dw_status dw_host_info(dw_host *h, const char *id, dw_host_actor_info *out);
/* Calls fn for every actor (in no particular order) under the host's lock:
 * fn must not call back into the host. */
void dw_host_each(dw_host *h, void (*fn)(void *ctx, const dw_host_actor_info *a), void *ctx);
void dw_host_get_stats(dw_host *h, dw_host_stats *out);

/* Whether s is a valid actor id. */
bool dw_host_valid_id(const char *s);

#endif
