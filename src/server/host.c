/*
 * host.c — the actor host (host.h): the actor table, mailboxes, the run
 * queue and its workers, persistence in the state directory, hibernation.
 *
 * One mutex guards the table, every mailbox and the run queue; it is never
 * held while guest code runs or a snapshot is written. An actor is on the
 * run queue exactly when it has a queued job and no worker holds it.
 */
#define _GNU_SOURCE
#include "server/host.h"
#include "base/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct hmod {
  char name[64];
  dw_module *m;
} hmod;

typedef struct hactor {
  char id[DW_HOST_ID_MAX + 1];
  int mod;                  /* index into h->mods, -1 until known */
  dw_actor *a;              /* NULL: hibernated (only the state file) */
  bool dirty;               /* live state not yet in the state file */
  bool running, on_runq, deleted, ephemeral;
  dw_host_job *head, *tail;
  int queued;
  uint64_t messages;
  double last_used;
  dw_actor_stats stats;
  uint64_t snapshot_bytes;
  char last_error[256];
  struct hactor *runq_next;
} hactor;

struct dw_host {
  dw_host_config cfg;
  char *dir;                /* DIR/actors */
  pthread_mutex_t mu;
  pthread_cond_t work;      /* the run queue got an actor, or stop (workers only) */
  pthread_cond_t tick;      /* the janitor's own sleep: it must never take a
                               signal meant for a worker (a job left queued
                               with every worker asleep) */
  hmod *mods;
  int n_mods;
  hactor **actors;
  int n_actors, cap_actors;
  hactor *runq_head, *runq_tail;
  int queued;
  bool stop;
  pthread_t *threads;
  int n_threads;
  pthread_t janitor;
  bool has_janitor;
  int ephemeral_running;    /* fresh actors of one job each, not in the table */
  dw_host_stats totals;     /* messages, failed, cancelled, refused */
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_err(char *dst, size_t cap, dw_status st) {
  snprintf(dst, cap, "%s", st ? dw_last_error() : "");
}

bool dw_host_valid_id(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > DW_HOST_ID_MAX || s[0] == '.') return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.'))
      return false;
  }
  return true;
}

static void state_path(const dw_host *h, const char *id, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s.dws", h->dir, id);
}

/* ---- jobs ---------------------------------------------------------------- */

void dw_host_job_init(dw_host_job *j, dw_job_kind kind) {
  memset(j, 0, sizeof *j);
  j->kind = kind;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
}

void dw_host_job_fini(dw_host_job *j) {
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
}

void dw_host_job_wait(dw_host_job *j) {
  pthread_mutex_lock(&j->mu);
  while (!j->finished) pthread_cond_wait(&j->cv, &j->mu);
  pthread_mutex_unlock(&j->mu);
}

static void job_finish(dw_host_job *j, dw_status st) {
  j->st = st;
  if (st && !j->error[0]) set_err(j->error, sizeof j->error, st);
  j->finished_s = now_s();
  void (*done)(dw_host_job *) = j->done;
  if (done) done(j);
  if (j->release) {
    j->release(j);
    return;
  }
  pthread_mutex_lock(&j->mu);
  j->finished = true;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

/* ---- the table (callers hold h->mu) --------------------------------------- */

static hactor *find_actor(dw_host *h, const char *id) {
  for (int i = 0; i < h->n_actors; i++)
    if (!h->actors[i]->deleted && !strcmp(h->actors[i]->id, id)) return h->actors[i];
  return NULL;
}

static dw_status add_actor(dw_host *h, hactor *a) {
  if (h->n_actors == h->cap_actors) {
    int cap = h->cap_actors ? 2 * h->cap_actors : 64;
    hactor **v = realloc(h->actors, (size_t)cap * sizeof *v);
    if (!v) return DW_ERR_NOMEM;
    h->actors = v, h->cap_actors = cap;
  }
  h->actors[h->n_actors++] = a;
  return DW_OK;
}

static void remove_actor(dw_host *h, hactor *a) {
  for (int i = 0; i < h->n_actors; i++)
    if (h->actors[i] == a) {
      h->actors[i] = h->actors[--h->n_actors];
      return;
    }
}

static void runq_push(dw_host *h, hactor *a) {
  a->on_runq = true;
  a->runq_next = NULL;
  if (h->runq_tail) h->runq_tail->runq_next = a;
  else h->runq_head = a;
  h->runq_tail = a;
  pthread_cond_signal(&h->work);
}

static hactor *runq_pop(dw_host *h) {
  hactor *a = h->runq_head;
  if (!a) return NULL;
  h->runq_head = a->runq_next;
  if (!h->runq_head) h->runq_tail = NULL;
  a->on_runq = false;
  return a;
}

static void free_actor(hactor *a) {
  if (!a) return;
  dw_actor_destroy(a->a);
  free(a);
}

/* ---- work on one actor (a worker holds it; h->mu not held) ------------------ */

static int module_by_hash(dw_host *h, const char *hash) {
  for (int i = 0; i < h->n_mods; i++)
    if (!strcmp(dw_module_hash(h->mods[i].m), hash)) return i;
  return -1;
}

/* Brings a hibernated actor back from its state file. */
static dw_status wake(dw_host *h, hactor *a) {
  char path[4096];
  state_path(h, a->id, path, sizeof path);
  if (a->mod < 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
      if (fd >= 0) close(fd);
      return dw_error_set(DW_ERR_IO, path);
    }
    void *p = sb.st_size ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (p == MAP_FAILED) return dw_error_set(DW_ERR_BAD_SNAPSHOT, path);
    char hash[65];
    dw_status st = dw_snapshot_module_hash(p, (size_t)sb.st_size, hash, NULL);
    munmap(p, (size_t)sb.st_size);
    if (st) return st;
    int mi = module_by_hash(h, hash);
    if (mi < 0) return dw_error_set(DW_ERR_NOT_FOUND, "its module is not registered on this server");
    pthread_mutex_lock(&h->mu);
    a->mod = mi;
    pthread_mutex_unlock(&h->mu);
  }
  return dw_actor_thaw_file(h->cfg.rt, h->mods[a->mod].m, path, &a->a, NULL);
}

static dw_status persist(dw_host *h, hactor *a) {
  char path[4096];
  state_path(h, a->id, path, sizeof path);
  dw_status st = dw_actor_freeze_file(a->a, 0, path);
  struct stat sb;
  if (!st) {
    a->dirty = false;
    a->snapshot_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
  }
  return st;
}

/* Drops the live instance: the actor is what its state file holds. */
static void revert(hactor *a) {
  dw_actor_destroy(a->a);
  a->a = NULL;
  a->dirty = false;
}

static dw_status run_message(dw_host *h, hactor *a, dw_host_job *j) {
  dw_status st = DW_OK;
  if (!a->a && (st = a->ephemeral ? dw_actor_spawn(h->mods[a->mod].m, &a->a) : wake(h, a))) {
    set_err(j->error, sizeof j->error, st);
    return st;
  }
  static const uint8_t empty[1];
  st = j->emit ? dw_actor_send_cb(a->a, j->msg ? j->msg : empty, j->len, j->emit, j->ctx, &j->result)
               : dw_actor_send(a->a, j->msg ? j->msg : empty, j->len, -1, &j->result);
  if (st) {
    set_err(j->error, sizeof j->error, st);
    if (!a->ephemeral) revert(a); /* the message has no effect: back to the last snapshot */
    return st;
  }
  a->dirty = true;
  if (!a->ephemeral && h->cfg.persist_each && (st = persist(h, a))) {
    set_err(j->error, sizeof j->error, st);
    revert(a);
  }
  return st;
}

static void random_id(char *out);

static dw_status run_job(dw_host *h, hactor *a, dw_host_job *j) {
  dw_status st = DW_OK;
  switch (j->kind) {
  case DW_JOB_MESSAGE:
    st = run_message(h, a, j);
    break;
  case DW_JOB_FREEZE:
    if (!a->a && (st = wake(h, a))) break;
    st = dw_actor_freeze(a->a, j->freeze_flags, &j->snapshot, &j->snapshot_len);
    break;
  case DW_JOB_FORK: {
    if (!a->a && (st = wake(h, a))) break;
    hactor *b = calloc(1, sizeof *b);
    if (!b) {
      st = DW_ERR_NOMEM;
      break;
    }
    b->mod = a->mod;
    if (!j->new_id[0]) random_id(j->new_id);
    snprintf(b->id, sizeof b->id, "%s", j->new_id);
    if ((st = dw_actor_fork(a->a, &b->a)) || (st = persist(h, b))) {
      free_actor(b);
      break;
    }
    pthread_mutex_lock(&h->mu);
    if (find_actor(h, b->id)) st = dw_error_set(DW_ERR_INVALID_ARG, "an actor with that id exists");
    else if (add_actor(h, b)) st = DW_ERR_NOMEM;
    pthread_mutex_unlock(&h->mu);
    if (st) {
      char path[4096];
      state_path(h, b->id, path, sizeof path);
      if (st != DW_ERR_INVALID_ARG) unlink(path);
      free_actor(b);
    } else {
      b->last_used = now_s();
      dw_actor_get_stats(b->a, &b->stats);
    }
    break;
  }
  case DW_JOB_DELETE: {
    char path[4096];
    state_path(h, a->id, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT) st = dw_error_set(DW_ERR_IO, path);
    else revert(a);
    break;
  }
  case DW_JOB_CALL:
    if (j->call) j->call(j->ctx);
    break;
  }
  return st;
}

static void *worker(void *arg) {
  dw_host *h = arg;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    hactor *a;
    while (!(a = runq_pop(h)) && !h->stop) pthread_cond_wait(&h->work, &h->mu);
    if (!a) break;
    dw_host_job *j = a->head;
    a->head = j->next;
    if (!a->head) a->tail = NULL;
    a->queued--;
    h->queued--;
    a->running = true;
    h->ephemeral_running += a->ephemeral;
    pthread_mutex_unlock(&h->mu);

    j->started_s = now_s();
    dw_status st = run_job(h, a, j);
    if (a->a && !a->ephemeral) dw_actor_get_stats(a->a, &a->stats);

    pthread_mutex_lock(&h->mu);
    a->running = false;
    h->ephemeral_running -= a->ephemeral;
    a->last_used = now_s();
    if (j->kind == DW_JOB_MESSAGE) {
      h->totals.messages++;
      a->messages += st == DW_OK;
      if (st == DW_ERR_CANCELLED) h->totals.cancelled++;
      else if (st) h->totals.failed++;
    }
    if (st) snprintf(a->last_error, sizeof a->last_error, "%s", j->error);
    bool gone = a->ephemeral || (j->kind == DW_JOB_DELETE && st == DW_OK);
    if (gone) {
      a->deleted = true;
      if (!a->ephemeral) remove_actor(h, a);
      /* jobs queued behind a delete find no actor */
      for (dw_host_job *q = a->head; q; q = q->next) h->queued--;
    } else if (a->head) {
      runq_push(h, a);
    }
    pthread_mutex_unlock(&h->mu);
    if (gone) {
      dw_host_job *q = a->head;
      while (q) {
        dw_host_job *next = q->next;
        snprintf(q->error, sizeof q->error, "the actor was deleted");
        job_finish(q, DW_ERR_NOT_FOUND);
        q = next;
      }
      free_actor(a);
    }
    job_finish(j, st);
    pthread_mutex_lock(&h->mu);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

/* Releases live actors idle past hibernate_after_s (their state is saved
 * first when it is not in the state file yet). */
static void *janitor(void *arg) {
  dw_host *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&h->tick, &h->mu, &ts);
    double t = now_s();
    for (int i = 0; i < h->n_actors && !h->stop; i++) {
      hactor *a = h->actors[i];
      if (!a->a || a->running || a->on_runq || a->head || t - a->last_used < h->cfg.hibernate_after_s) continue;
      a->running = true; /* hold it like a worker would */
      pthread_mutex_unlock(&h->mu);
      dw_status st = a->dirty ? persist(h, a) : DW_OK;
      if (!st) revert(a);
      pthread_mutex_lock(&h->mu);
      a->running = false;
      if (a->head && !a->on_runq) runq_push(h, a);
    }
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

/* ---- the public side ---------------------------------------------------------- */

static dw_status mkdirs(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return dw_error_set(DW_ERR_IO, path);
      *p = '/';
    }
  if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return dw_error_set(DW_ERR_IO, path);
  return DW_OK;
}

/* Lists DIR/actors/ID.dws as hibernated actors; leftover temporary files
 * of an interrupted write are removed. */
static dw_status scan_state(dw_host *h) {
  DIR *d = opendir(h->dir);
  if (!d) return dw_error_set(DW_ERR_IO, h->dir);
  struct dirent *e;
  dw_status st = DW_OK;
  while (!st && (e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n > 4 && !strcmp(e->d_name + n - 4, ".dws") && n - 4 <= DW_HOST_ID_MAX) {
      char id[DW_HOST_ID_MAX + 1];
      memcpy(id, e->d_name, n - 4);
      id[n - 4] = 0;
      if (!dw_host_valid_id(id)) continue;
      hactor *a = calloc(1, sizeof *a);
      if (!a) {
        st = DW_ERR_NOMEM;
        break;
      }
      snprintf(a->id, sizeof a->id, "%s", id);
      a->mod = -1;
      char path[4096];
      struct stat sb;
      state_path(h, id, path, sizeof path);
      a->snapshot_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
      a->last_used = now_s();
      if ((st = add_actor(h, a))) free(a);
    } else if (strstr(e->d_name, ".tmp")) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", h->dir, e->d_name);
      unlink(path);
    }
  }
  closedir(d);
  return st;
}

dw_status dw_host_create(const dw_host_config *cfg, dw_host **out) {
  *out = NULL;
  if (!cfg->rt || !cfg->state_dir) return dw_error_set(DW_ERR_INVALID_ARG, "host: runtime and state directory");
  dw_host *h = calloc(1, sizeof *h);
  if (!h) return DW_ERR_NOMEM;
  h->cfg = *cfg;
  if (h->cfg.max_queue <= 0) h->cfg.max_queue = 4096;
  if (h->cfg.mailbox_cap <= 0) h->cfg.mailbox_cap = 256;
  if (h->cfg.workers <= 0) { /* actors waiting in decode share steps (llm/batch.c): more of them than cores */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    h->cfg.workers = cores > DW_HOST_MIN_WORKERS ? (int)cores : DW_HOST_MIN_WORKERS;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->work, NULL);
  pthread_cond_init(&h->tick, NULL);
  size_t n = strlen(cfg->state_dir) + 16;
  dw_status st = DW_OK;
  if (!(h->dir = malloc(n))) st = DW_ERR_NOMEM;
  else snprintf(h->dir, n, "%s/actors", cfg->state_dir);
  if (!st) st = mkdirs(h->dir);
  if (!st) st = scan_state(h);
  if (!st && !(h->threads = calloc((size_t)h->cfg.workers, sizeof *h->threads))) st = DW_ERR_NOMEM;
  for (int i = 0; !st && i < h->cfg.workers; i++) {
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 8u << 20); /* guest code runs here */
    if (pthread_create(&h->threads[i], &at, worker, h) != 0) st = dw_error_set(DW_ERR_NOMEM, "host: worker thread");
    else h->n_threads++;
    pthread_attr_destroy(&at);
  }
  if (!st && h->cfg.hibernate_after_s > 0) {
    if (pthread_create(&h->janitor, NULL, janitor, h) != 0) st = dw_error_set(DW_ERR_NOMEM, "host: thread");
    else h->has_janitor = true;
  }
  if (st) {
    dw_host_destroy(h);
    return st;
  }
  *out = h;
  return DW_OK;
}

void dw_host_destroy(dw_host *h) {
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->stop = true;
  pthread_cond_broadcast(&h->work);
  pthread_cond_broadcast(&h->tick);
  pthread_mutex_unlock(&h->mu);
  for (int i = 0; i < h->n_threads; i++) pthread_join(h->threads[i], NULL);
  if (h->has_janitor) pthread_join(h->janitor, NULL);
  /* what never ran */
  for (hactor *a; (a = runq_pop(h));) {
    for (dw_host_job *q = a->head; q;) {
      dw_host_job *next = q->next;
      snprintf(q->error, sizeof q->error, "the server is shutting down");
      job_finish(q, DW_ERR_IO);
      q = next;
    }
    a->head = a->tail = NULL;
    if (a->ephemeral) free_actor(a);
  }
  for (int i = 0; i < h->n_actors; i++) {
    hactor *a = h->actors[i];
    if (a->a && a->dirty && persist(h, a) != DW_OK)
      fprintf(stderr, "driftwood serve: could not save actor %s: %s\n", a->id, dw_last_error());
    free_actor(a);
  }
  for (int i = 0; i < h->n_mods; i++) dw_module_destroy(h->mods[i].m);
  free(h->mods);
  free(h->actors);
  free(h->threads);
  free(h->dir);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->work);
  pthread_cond_destroy(&h->tick);
  free(h);
}

dw_status dw_host_add_module(dw_host *h, const char *name, const char *path) {
  if (!name[0] || strlen(name) >= sizeof h->mods[0].name)
    return dw_error_set(DW_ERR_INVALID_ARG, "module name '%s'", name);
  for (int i = 0; i < h->n_mods; i++)
    if (!strcmp(h->mods[i].name, name)) return dw_error_set(DW_ERR_INVALID_ARG, "module '%s' registered twice", name);
  dw_module *m;
  dw_status st = dw_module_load(h->cfg.rt, path, &m, NULL);
  if (st) return st;
  hmod *v = realloc(h->mods, (size_t)(h->n_mods + 1) * sizeof *v);
  if (!v) {
    dw_module_destroy(m);
    return DW_ERR_NOMEM;
  }
  pthread_mutex_lock(&h->mu);
  h->mods = v;
  snprintf(v[h->n_mods].name, sizeof v[h->n_mods].name, "%s", name);
  v[h->n_mods++].m = m;
  pthread_mutex_unlock(&h->mu);
  return DW_OK;
}

const char *dw_host_module_name(dw_host *h, int i) { return i >= 0 && i < h->n_mods ? h->mods[i].name : NULL; }

static int module_index(dw_host *h, const char *name) {
  for (int i = 0; i < h->n_mods; i++)
    if (!strcmp(h->mods[i].name, name)) return i;
  return -1;
}

static void random_id(char *out) {
  uint8_t r[8];
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
    uint64_t t = (uint64_t)(now_s() * 1e9) ^ (uint64_t)getpid();
    memcpy(r, &t, sizeof r);
  }
  for (int i = 0; i < 8; i++) sprintf(out + 2 * i, "%02x", r[i]);
}

/* Registers a fresh live actor b (its state file already written) under
 * b->id, choosing an id when it has none. */
static dw_status publish(dw_host *h, hactor *b, char *out_id) {
  pthread_mutex_lock(&h->mu);
  dw_status st = find_actor(h, b->id) ? dw_error_set(DW_ERR_INVALID_ARG, "an actor '%s' exists", b->id)
                                      : add_actor(h, b);
  pthread_mutex_unlock(&h->mu);
  if (!st && out_id) snprintf(out_id, DW_HOST_ID_MAX + 1, "%s", b->id);
  return st;
}

static dw_status new_entry(dw_host *h, const char *id, hactor **out) {
  if (id && !dw_host_valid_id(id))
    return dw_error_set(DW_ERR_INVALID_ARG, "an actor id is 1-64 of A-Z a-z 0-9 _ - . (not starting with .)");
  hactor *b = calloc(1, sizeof *b);
  if (!b) return DW_ERR_NOMEM;
  if (id) snprintf(b->id, sizeof b->id, "%s", id);
  else random_id(b->id);
  pthread_mutex_lock(&h->mu);
  bool taken = find_actor(h, b->id) != NULL;
  pthread_mutex_unlock(&h->mu);
  if (taken) {
    free(b);
    return dw_error_set(DW_ERR_INVALID_ARG, "an actor '%s' exists", id);
  }
  b->last_used = now_s();
  *out = b;
  return DW_OK;
}

static dw_status finish_new(dw_host *h, hactor *b, char *out_id) {
  dw_status st = persist(h, b);
  if (!st) dw_actor_get_stats(b->a, &b->stats);
  if (!st && (st = publish(h, b, out_id))) {
    char path[4096];
    state_path(h, b->id, path, sizeof path);
    unlink(path);
  }
  if (st) free_actor(b);
  return st;
}

dw_status dw_host_spawn(dw_host *h, const char *module, const char *id, char out_id[DW_HOST_ID_MAX + 1]) {
  int mi = module_index(h, module);
  if (mi < 0) return dw_error_set(DW_ERR_NOT_FOUND, "no module '%s' is registered", module);
  hactor *b;
  dw_status st = new_entry(h, id, &b);
  if (st) return st;
  b->mod = mi;
  if ((st = dw_actor_spawn(h->mods[mi].m, &b->a))) {
    free_actor(b);
    return st;
  }
  return finish_new(h, b, out_id);
}

dw_status dw_host_thaw(dw_host *h, const uint8_t *buf, size_t len, const char *id, char out_id[DW_HOST_ID_MAX + 1]) {
  char hash[65];
  dw_status st = dw_snapshot_module_hash(buf, len, hash, NULL);
  if (st) return st;
  int mi = module_by_hash(h, hash);
  if (mi < 0)
    return dw_error_set(DW_ERR_NOT_FOUND, "the snapshot was made by module %.12s…, which this server does not run",
                               hash);
  hactor *b;
  if ((st = new_entry(h, id, &b))) return st;
  b->mod = mi;
  if ((st = dw_actor_thaw(h->cfg.rt, h->mods[mi].m, buf, len, &b->a, NULL))) {
    free_actor(b);
    return st;
  }
  return finish_new(h, b, out_id);
}

static dw_status enqueue(dw_host *h, hactor *a, dw_host_job *j, bool check_mailbox) {
  if (h->stop) return dw_error_set(DW_ERR_IO, "the server is shutting down");
  if (h->queued >= h->cfg.max_queue || (check_mailbox && a->queued >= h->cfg.mailbox_cap)) {
    h->totals.refused++;
    return dw_error_set(DW_ERR_LIMIT, "%s is full (%d jobs waiting)",
                               h->queued >= h->cfg.max_queue ? "the server's queue" : "the actor's mailbox",
                               h->queued >= h->cfg.max_queue ? h->queued : a->queued);
  }
  j->next = NULL;
  j->queued_s = now_s();
  if (a->tail) a->tail->next = j;
  else a->head = j;
  a->tail = j;
  a->queued++;
  h->queued++;
  if (!a->running && !a->on_runq) runq_push(h, a);
  return DW_OK;
}

dw_status dw_host_submit(dw_host *h, const char *id, dw_host_job *j) {
  pthread_mutex_lock(&h->mu);
  hactor *a = find_actor(h, id);
  dw_status st = a ? enqueue(h, a, j, true) : dw_error_set(DW_ERR_NOT_FOUND, "no actor '%s'", id);
  pthread_mutex_unlock(&h->mu);
  return st;
}

dw_status dw_host_submit_ephemeral(dw_host *h, const char *module, dw_host_job *j) {
  hactor *a = calloc(1, sizeof *a);
  if (!a) return DW_ERR_NOMEM;
  a->ephemeral = true;
  a->mod = -1;
  dw_status st = DW_OK;
  if (module) {
    int mi = module_index(h, module);
    if (mi < 0) st = dw_error_set(DW_ERR_NOT_FOUND, "no module '%s' is registered", module);
    else a->mod = mi; /* instantiated by the worker that runs it */
  } else if (j->kind != DW_JOB_CALL) {
    st = dw_error_set(DW_ERR_INVALID_ARG, "host: an ephemeral job needs a module");
  }
  if (!st) {
    pthread_mutex_lock(&h->mu);
    st = enqueue(h, a, j, false);
    pthread_mutex_unlock(&h->mu);
  }
  if (st) free_actor(a);
  return st;
}

bool dw_host_exists(dw_host *h, const char *id) {
  pthread_mutex_lock(&h->mu);
  bool yes = find_actor(h, id) != NULL;
  pthread_mutex_unlock(&h->mu);
  return yes;
}

static void info_of(const dw_host *h, const hactor *a, dw_host_actor_info *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->id, sizeof out->id, "%s", a->id);
  if (a->mod >= 0) snprintf(out->module, sizeof out->module, "%s", h->mods[a->mod].name);
  out->live = a->a != NULL;
  out->running = a->running;
  out->queued = a->queued;
  out->messages = a->messages;
  out->stats = a->stats;
  out->snapshot_bytes = a->snapshot_bytes;
  snprintf(out->last_error, sizeof out->last_error, "%s", a->last_error);
}

dw_status dw_host_info(dw_host *h, const char *id, dw_host_actor_info *out) {
  pthread_mutex_lock(&h->mu);
  hactor *a = find_actor(h, id);
  if (a) info_of(h, a, out);
  pthread_mutex_unlock(&h->mu);
  return a ? DW_OK : dw_error_set(DW_ERR_NOT_FOUND, "no actor '%s'", id);
}

void dw_host_each(dw_host *h, void (*fn)(void *ctx, const dw_host_actor_info *a), void *ctx) {
  dw_host_actor_info info;
  pthread_mutex_lock(&h->mu);
  for (int i = 0; i < h->n_actors; i++) {
    info_of(h, h->actors[i], &info);
    fn(ctx, &info);
  }
  pthread_mutex_unlock(&h->mu);
}

void dw_host_get_stats(dw_host *h, dw_host_stats *out) {
  pthread_mutex_lock(&h->mu);
  *out = h->totals;
  out->actors = h->n_actors;
  out->queued = h->queued;
  out->running = h->ephemeral_running;
  for (int i = 0; i < h->n_actors; i++) {
    const hactor *a = h->actors[i];
    if (!a->a) continue;
    out->live++;
    out->running += a->running;
    out->kv_bytes += a->stats.kv_bytes;
    out->memory_bytes += a->stats.memory_bytes;
  }
  pthread_mutex_unlock(&h->mu);
}
