/*
 * rt.c — Driftwood's implementation of the wasm-rt.h contract (wabt 1.0.32)
 * that wasm2c output calls: traps, unwinding, memories, tables, function
 * types and exceptions; plus the fault handler.
 *
 * Invariants:
 *  1. Trap and unwind targets are thread-local: instances on different
 *     threads never see each other's traps.
 *  2. The SIGSEGV/SIGBUS handler turns a fault into a trap only while the
 *     faulting thread is inside a guarded call AND the address lies in a
 *     linear-memory reservation (-> out of bounds) or in the thread's stack
 *     guard zone (-> call stack exhausted). Any other fault goes to the
 *     handler that was installed before ours, as if we were not there.
 *  3. Each thread that runs guest code has an alternate signal stack, so a
 *     stack overflow can still be handled.
 *  4. The function-type registry is global (types compare by index across
 *     modules) and locked.
 */
#define _GNU_SOURCE
#include "wasm/rt.h"

#include <wasm-rt.h>

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#if WASM_RT_USE_STACK_DEPTH_COUNT || !WASM_RT_MEMCHECK_SIGNAL_HANDLER
#error "Driftwood's runtime expects wasm2c's signal-handler bounds checks"
#endif

#define ALT_STACK_BYTES (256u * 1024u)
#define STACK_GUARD_ZONE (1u << 20) /* below the lowest stack address */
#define MAX_EXCEPTION_BYTES 256

typedef struct rt_tls {
  WASM_RT_UNWIND_TARGET *trap_target;   /* where traps and exits go */
  WASM_RT_UNWIND_TARGET *unwind_target; /* where exceptions go */
  int exit_code;
  dw_status host_status;
  bool prepared;
  uintptr_t stack_lo;                   /* lowest usable stack address */
  void *alt_stack;                      /* owned, when we installed it */
  const dw_rt_alloc_ctx *alloc;
  uint32_t exc_tag, exc_size;
  uint8_t exc[MAX_EXCEPTION_BYTES];
} rt_tls;

static _Thread_local rt_tls tls;

/* ---- fault handler --------------------------------------------------- */

static struct sigaction prev_segv, prev_bus;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_key;

static void chain(int sig, siginfo_t *si, void *uc) {
  struct sigaction *p = sig == SIGSEGV ? &prev_segv : &prev_bus;
  if (p->sa_flags & SA_SIGINFO) {
    p->sa_sigaction(sig, si, uc);
  } else if (p->sa_handler == SIG_DFL) {
    signal(sig, SIG_DFL); /* returning re-executes the access and dies */
  } else if (p->sa_handler != SIG_IGN) {
    p->sa_handler(sig);
  }
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  if (tls.trap_target) {
    uintptr_t a = (uintptr_t)si->si_addr;
    if (dw_mem_owns_addr(si->si_addr)) siglongjmp(*tls.trap_target, WASM_RT_TRAP_OOB);
    if (tls.stack_lo && a < tls.stack_lo + 65536 && a + STACK_GUARD_ZONE >= tls.stack_lo)
      siglongjmp(*tls.trap_target, WASM_RT_TRAP_EXHAUSTION);
  }
  chain(sig, si, uc);
}

static void thread_exit(void *p) {
  (void)p;
  if (tls.alt_stack) {
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    munmap(tls.alt_stack, ALT_STACK_BYTES);
    tls.alt_stack = NULL;
  }
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &prev_segv);
  sigaction(SIGBUS, &sa, &prev_bus);
  pthread_key_create(&thread_key, thread_exit);
}

void dw_rt_init(void) { pthread_once(&init_once, install); }

static void thread_prepare(void) {
  if (tls.prepared) return;
  dw_rt_init();
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
    void *p = mmap(NULL, ALT_STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      stack_t ss = {.ss_sp = p, .ss_size = ALT_STACK_BYTES, .ss_flags = 0};
      if (sigaltstack(&ss, NULL) == 0) {
        tls.alt_stack = p;
        pthread_setspecific(thread_key, &tls);
      } else {
        munmap(p, ALT_STACK_BYTES);
      }
    }
  }
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *addr;
    size_t size;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) tls.stack_lo = (uintptr_t)addr;
    pthread_attr_destroy(&attr);
  }
  tls.prepared = true;
}

/* ---- guarded calls ----------------------------------------------------- */

dw_status dw_rt_guard(void (*body)(void *), void *arg, dw_call_result *res) {
  thread_prepare();
  WASM_RT_UNWIND_TARGET buf;
  WASM_RT_UNWIND_TARGET *volatile prev_trap = tls.trap_target;
  WASM_RT_UNWIND_TARGET *volatile prev_unwind = tls.unwind_target;
  memset(res, 0, sizeof *res);
  int code = WASM_RT_SETJMP(buf);
  if (code == 0) {
    tls.trap_target = &buf;
    tls.unwind_target = &buf;
    body(arg);
    tls.trap_target = prev_trap;
    tls.unwind_target = prev_unwind;
    res->outcome = DW_RAN;
    return DW_OK;
  }
  tls.trap_target = prev_trap;
  tls.unwind_target = prev_unwind;
  if (code == DW_UNWIND_EXIT) {
    res->outcome = DW_EXITED;
    res->exit_code = tls.exit_code;
    return DW_OK;
  }
  if (code == DW_UNWIND_HOSTERR) return tls.host_status;
  res->outcome = DW_TRAPPED;
  res->trap = code;
  return dw_error_set(DW_ERR_TRAP, "wasm trap: %s", dw_trap_str(code));
}

static _Noreturn void unwind(int code) {
  if (!tls.trap_target) {
    /* Guest code outside dw_rt_guard is a Driftwood bug, not a guest error. */
    fprintf(stderr, "driftwood: internal error: wasm unwind (%d) outside a guarded call\n", code);
    abort();
  }
  siglongjmp(*tls.trap_target, code);
}

void dw_rt_exit(int code) {
  tls.exit_code = code;
  unwind(DW_UNWIND_EXIT);
}

void dw_rt_host_error(dw_status st) {
  tls.host_status = st;
  unwind(DW_UNWIND_HOSTERR);
}

const char *dw_trap_str(int trap) {
  switch (trap) {
  case WASM_RT_TRAP_OOB: return "out of bounds memory access";
  case WASM_RT_TRAP_INT_OVERFLOW: return "integer overflow";
  case WASM_RT_TRAP_DIV_BY_ZERO: return "integer divide by zero";
  case WASM_RT_TRAP_INVALID_CONVERSION: return "invalid conversion to integer";
  case WASM_RT_TRAP_UNREACHABLE: return "unreachable executed";
  case WASM_RT_TRAP_CALL_INDIRECT: return "indirect call type mismatch or null";
  case WASM_RT_TRAP_UNCAUGHT_EXCEPTION: return "uncaught exception";
  case WASM_RT_TRAP_EXHAUSTION: return "call stack exhausted";
  }
  return "unknown trap";
}

/* ---- the wasm-rt.h contract --------------------------------------------- */

void wasm_rt_init(void) { dw_rt_init(); }
bool wasm_rt_is_initialized(void) { return true; }
void wasm_rt_free(void) {}

void wasm_rt_trap(wasm_rt_trap_t code) { unwind(code == WASM_RT_TRAP_NONE ? WASM_RT_TRAP_UNREACHABLE : (int)code); }

const char *wasm_rt_strerror(wasm_rt_trap_t trap) { return dw_trap_str(trap); }

typedef struct func_type {
  uint32_t n_params, n_results;
  wasm_rt_type_t types[]; /* params then results */
} func_type;

static pthread_mutex_t types_lock = PTHREAD_MUTEX_INITIALIZER;
static func_type **types;
static uint32_t n_types, cap_types;

uint32_t wasm_rt_register_func_type(uint32_t params, uint32_t results, ...) {
  uint32_t n = params + results;
  func_type *t = malloc(sizeof *t + n * sizeof(wasm_rt_type_t));
  if (!t) dw_rt_host_error(dw_error_set(DW_ERR_NOMEM, "function type registry"));
  t->n_params = params;
  t->n_results = results;
  va_list ap;
  va_start(ap, results);
  for (uint32_t i = 0; i < n; i++) t->types[i] = (wasm_rt_type_t)va_arg(ap, int);
  va_end(ap);
  pthread_mutex_lock(&types_lock);
  for (uint32_t i = 0; i < n_types; i++) {
    func_type *u = types[i];
    if (u->n_params == params && u->n_results == results &&
        memcmp(u->types, t->types, n * sizeof(wasm_rt_type_t)) == 0) {
      pthread_mutex_unlock(&types_lock);
      free(t);
      return i;
    }
  }
  if (n_types == cap_types) {
    uint32_t cap = cap_types ? cap_types * 2 : 64;
    func_type **nt = realloc(types, cap * sizeof *nt);
    if (!nt) {
      pthread_mutex_unlock(&types_lock);
      free(t);
      dw_rt_host_error(dw_error_set(DW_ERR_NOMEM, "function type registry"));
    }
    types = nt;
    cap_types = cap;
  }
  types[n_types] = t;
  uint32_t idx = n_types++;
  pthread_mutex_unlock(&types_lock);
  return idx;
}

/* Exceptions: a tag is just a unique number; payloads travel in TLS. */
static _Atomic uint32_t next_tag;
uint32_t wasm_rt_register_tag(uint32_t size) {
  (void)size;
  return next_tag++;
}

void wasm_rt_load_exception(uint32_t tag, uint32_t size, const void *values) {
  if (size > MAX_EXCEPTION_BYTES) unwind(WASM_RT_TRAP_EXHAUSTION);
  tls.exc_tag = tag;
  tls.exc_size = size;
  if (size) memcpy(tls.exc, values, size);
}

void wasm_rt_throw(void) {
  if (!tls.unwind_target) unwind(WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
  siglongjmp(*tls.unwind_target, WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
}

WASM_RT_UNWIND_TARGET *wasm_rt_get_unwind_target(void) { return tls.unwind_target; }
void wasm_rt_set_unwind_target(WASM_RT_UNWIND_TARGET *target) { tls.unwind_target = target; }
uint32_t wasm_rt_exception_tag(void) { return tls.exc_tag; }
uint32_t wasm_rt_exception_size(void) { return tls.exc_size; }
void *wasm_rt_exception(void) { return tls.exc; }

/* Memories live in src/mem; wasm_rt_memory_t mirrors their size. */
void dw_rt_set_alloc_ctx(const dw_rt_alloc_ctx *ctx) { tls.alloc = ctx; }

void wasm_rt_allocate_memory(wasm_rt_memory_t *rtm, uint32_t initial, uint32_t max_pages) {
  const dw_rt_alloc_ctx *a = tls.alloc;
  dw_mem *m;
  dw_status st = dw_mem_create(initial, max_pages, a ? a->limit_bytes : 0, a ? &a->hooks : NULL, &m);
  if (st != DW_OK) dw_rt_host_error(st);
  rtm->data = m->base;
  rtm->pages = m->pages;
  rtm->max_pages = m->max_pages;
  rtm->size = (uint32_t)m->size;
}

uint32_t wasm_rt_grow_memory(wasm_rt_memory_t *rtm, uint32_t delta) {
  dw_mem *m = dw_mem_from_base(rtm->data);
  uint32_t old;
  if (!m || dw_mem_grow(m, delta, &old) != DW_OK) return UINT32_MAX;
  rtm->pages = m->pages;
  rtm->size = (uint32_t)m->size;
  return old;
}

void wasm_rt_free_memory(wasm_rt_memory_t *rtm) {
  dw_mem_destroy(dw_mem_from_base(rtm->data));
  memset(rtm, 0, sizeof *rtm);
}

#define DEFINE_TABLE(kind, elem_t, null_v)                                                     \
  void wasm_rt_allocate_##kind##_table(wasm_rt_##kind##_table_t *t, uint32_t n, uint32_t max) { \
    t->data = calloc(n ? n : 1, sizeof(elem_t));                                               \
    if (!t->data) dw_rt_host_error(dw_error_set(DW_ERR_NOMEM, "table of %u elements", n));     \
    t->size = n;                                                                               \
    t->max_size = max;                                                                         \
  }                                                                                            \
  void wasm_rt_free_##kind##_table(wasm_rt_##kind##_table_t *t) {                              \
    free(t->data);                                                                             \
    memset(t, 0, sizeof *t);                                                                   \
  }                                                                                            \
  uint32_t wasm_rt_grow_##kind##_table(wasm_rt_##kind##_table_t *t, uint32_t delta, elem_t init) { \
    uint32_t old = t->size;                                                                    \
    if (delta > t->max_size - old || old + delta > (1u << 26)) return UINT32_MAX;            \
    if (delta == 0) return old;                                                                \
    elem_t *d = realloc(t->data, (size_t)(old + delta) * sizeof(elem_t));                      \
    if (!d) return UINT32_MAX;                                                                 \
    for (uint32_t i = old; i < old + delta; i++) d[i] = init;                                  \
    t->data = d;                                                                               \
    t->size = old + delta;                                                                     \
    return old;                                                                                \
  }

DEFINE_TABLE(funcref, wasm_rt_funcref_t, wasm_rt_funcref_null_value)
DEFINE_TABLE(externref, wasm_rt_externref_t, wasm_rt_externref_null_value)
