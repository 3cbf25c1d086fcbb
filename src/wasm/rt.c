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
 *     linear-memory reservation and the guest's own code made the access
 *     (-> out of bounds), or in the thread's stack guard zone (-> call
 *     stack exhausted). A fault on guest memory in host code is reported
 *     on stderr and, like any other fault, goes to the handler that was
 *     installed before ours: unwinding host code would leave its locks
 *     held and its work half done.
 *  3. Each thread that runs guest code has an alternate signal stack, so a
 *     stack overflow can still be handled.
 *  4. The function-type registry is global (types compare by index across
 *     modules) and locked.
 *  5. Time limits: an outermost guarded call with a limit arms a one-shot
 *     per-thread timer (SIGEV_THREAD_ID). When it fires, the call is ended
 *     with a trap only if the thread was interrupted inside compiled guest
 *     code (a registered code range): there it holds no host lock and owns
 *     no host allocation; likewise inside the memset/memmove that guest
 *     code calls for memory.fill/copy (the shim flags them: dw_rt_bulk).
 *     Inside host code (an import, the runtime) the timer is re-armed for
 *     1 ms, so the trap lands once the guest is back in its own code; and
 *     it marks the deadline passed, so that host work that loops on the
 *     guest's behalf (WASI-NN compute) can end the call itself between
 *     steps, where it holds nothing (dw_rt_deadline_trap).
 *     Unsupported architectures never trap for time.
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
#include <link.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

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
  bool has_timer;
  timer_t timer;                        /* fires DEADLINE_SIG at this thread */
  volatile sig_atomic_t deadline_armed;
  volatile sig_atomic_t deadline_passed; /* fired while the thread was in host code */
  volatile sig_atomic_t in_bulk;        /* guest code is in memset/memmove */
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

static bool in_guest_code(uintptr_t pc);
static uintptr_t interrupted_pc(const void *uc);

/* A fault on guest memory in host code is not the guest's to trap on:
 * unwinding would leave host locks held and host work half done. Only a
 * file mapped into the memory and truncated under it can cause one (every
 * guest range is checked before host code touches it), so say that and
 * let the previous handler end the process. Async-signal-safe. */
static void host_fault_message(const void *addr) {
  char msg[160] = "driftwood: host code faulted on guest memory at 0x";
  size_t n = strlen(msg);
  uintptr_t v = (uintptr_t)addr;
  for (int sh = (int)sizeof v * 8 - 4; sh >= 0; sh -= 4) msg[n++] = "0123456789abcdef"[(v >> sh) & 15];
  const char *tail = " (a snapshot file mapped into it truncated or rewritten in place?)\n";
  size_t tl = strlen(tail);
  memcpy(msg + n, tail, tl);
  ssize_t w = write(2, msg, n + tl);
  (void)w;
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  bool guest_mem = dw_mem_owns_addr(si->si_addr);
  if (tls.trap_target) {
    uintptr_t a = (uintptr_t)si->si_addr, pc = interrupted_pc(uc);
    /* guest code (or its memory.fill/copy), or a machine whose PC we cannot read */
    if (guest_mem && (!pc || tls.in_bulk || in_guest_code(pc))) siglongjmp(*tls.trap_target, WASM_RT_TRAP_OOB);
    if (tls.stack_lo && a < tls.stack_lo + 65536 && a + STACK_GUARD_ZONE >= tls.stack_lo)
      siglongjmp(*tls.trap_target, WASM_RT_TRAP_EXHAUSTION);
  }
  if (guest_mem) host_fault_message(si->si_addr); /* host code, in a guest call or not (a freeze) */
  chain(sig, si, uc);
}

/* ---- code ranges and time limits ----------------------------------------- */

#define N_CODE 4096
static struct {
  _Atomic(uintptr_t) lo, hi;
  const void *key;
} code[N_CODE];
static _Atomic int code_hwm;
static pthread_mutex_t code_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct find_ctx {
  uintptr_t addr;
  const void *key;
} find_ctx;

/* dl_iterate_phdr callback: in the object whose loaded segments contain
 * f->addr, registers every executable segment. */
static int add_segments(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  find_ctx *f = arg;
  bool mine = false;
  for (int i = 0; i < info->dlpi_phnum && !mine; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    mine = ph->p_type == PT_LOAD && f->addr >= lo && f->addr < lo + ph->p_memsz;
  }
  if (!mine) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    for (int k = 0; k < N_CODE; k++) {
      if (atomic_load_explicit(&code[k].hi, memory_order_relaxed)) continue;
      code[k].key = f->key;
      atomic_store_explicit(&code[k].lo, info->dlpi_addr + ph->p_vaddr, memory_order_relaxed);
      atomic_store_explicit(&code[k].hi, info->dlpi_addr + ph->p_vaddr + ph->p_memsz, memory_order_release);
      if (k >= atomic_load(&code_hwm)) atomic_store(&code_hwm, k + 1);
      break;
    }
  }
  return 1;
}

void dw_rt_code_add(const void *any_symbol, const void *key) {
  pthread_mutex_lock(&code_lock);
  find_ctx f = {(uintptr_t)any_symbol, key};
  dl_iterate_phdr(add_segments, &f);
  pthread_mutex_unlock(&code_lock);
}

void dw_rt_code_remove(const void *key) {
  pthread_mutex_lock(&code_lock);
  for (int k = 0, n = atomic_load(&code_hwm); k < n; k++)
    if (code[k].key == key) {
      atomic_store_explicit(&code[k].hi, 0, memory_order_release);
      atomic_store_explicit(&code[k].lo, 0, memory_order_relaxed);
      code[k].key = NULL;
    }
  pthread_mutex_unlock(&code_lock);
}

static bool in_guest_code(uintptr_t pc) {
  for (int k = 0, n = atomic_load_explicit(&code_hwm, memory_order_acquire); k < n; k++) {
    uintptr_t hi = atomic_load_explicit(&code[k].hi, memory_order_acquire);
    if (hi && pc >= atomic_load_explicit(&code[k].lo, memory_order_relaxed) && pc < hi) return true;
  }
  return false;
}

static uintptr_t interrupted_pc(const void *uc) {
#if defined(__x86_64__)
  return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
  return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.pc;
#else
  (void)uc;
  return 0; /* never "in guest code": no time traps */
#endif
}

#define DEADLINE_SIG (SIGRTMIN + 4)

static void arm(uint64_t ns) {
  struct itimerspec it = {{0, 0}, {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)}};
  timer_settime(tls.timer, 0, &it, NULL);
}

static void on_deadline(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)si;
  if (!tls.deadline_armed || !tls.trap_target) return;
  if (tls.in_bulk || in_guest_code(interrupted_pc(uc))) {
    tls.in_bulk = 0;
    tls.deadline_armed = 0;
    siglongjmp(*tls.trap_target, DW_UNWIND_DEADLINE);
  }
  tls.deadline_passed = 1; /* long host loops look at this (dw_rt_deadline_passed) */
  arm(1000000);            /* in host code: try again in 1 ms */
}

bool dw_rt_deadline_passed(void) { return tls.deadline_armed && tls.deadline_passed; }

/* Called by the shim around the memset/memmove of memory.fill/copy. */
__attribute__((visibility("default"))) void dw_rt_bulk(int on) { tls.in_bulk = on; }

static void thread_exit(void *p) {
  (void)p;
  if (tls.has_timer) {
    timer_delete(tls.timer);
    tls.has_timer = false;
  }
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
  struct sigaction dl;
  memset(&dl, 0, sizeof dl);
  dl.sa_sigaction = on_deadline;
  dl.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&dl.sa_mask);
  sigaction(DEADLINE_SIG, &dl, NULL);
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

static bool thread_timer(void) {
  if (tls.has_timer) return true;
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = DEADLINE_SIG;
  ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
  if (timer_create(CLOCK_MONOTONIC, &ev, &tls.timer) != 0) return false;
  tls.has_timer = true;
  pthread_setspecific(thread_key, &tls); /* deleted at thread exit */
  return true;
}

dw_status dw_rt_guard(void (*body)(void *), void *arg, uint64_t limit_ms, dw_call_result *res) {
  thread_prepare();
  WASM_RT_UNWIND_TARGET buf;
  WASM_RT_UNWIND_TARGET *volatile prev_trap = tls.trap_target;
  WASM_RT_UNWIND_TARGET *volatile prev_unwind = tls.unwind_target;
  /* only the outermost guarded call keeps time */
  volatile bool timed = limit_ms && !prev_trap && thread_timer();
  memset(res, 0, sizeof *res);
  int code = WASM_RT_SETJMP(buf);
  if (code == 0) {
    tls.trap_target = &buf;
    tls.unwind_target = &buf;
    if (timed) {
      tls.deadline_passed = 0;
      tls.deadline_armed = 1;
      arm(limit_ms * 1000000u);
    }
    body(arg);
    if (timed) tls.deadline_armed = 0, arm(0);
    tls.trap_target = prev_trap;
    tls.unwind_target = prev_unwind;
    res->outcome = DW_RAN;
    return DW_OK;
  }
  if (timed) tls.deadline_armed = 0, arm(0);
  tls.in_bulk = 0;
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
  if (code == DW_UNWIND_DEADLINE)
    return dw_error_set(DW_ERR_TRAP, "wasm trap: %s (%llu ms)", dw_trap_str(code), (unsigned long long)limit_ms);
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

void dw_rt_deadline_trap(void) {
  tls.deadline_armed = 0;
  arm(0);
  unwind(DW_UNWIND_DEADLINE);
}

void dw_rt_host_error(dw_status st) {
  tls.host_status = st;
  unwind(DW_UNWIND_HOSTERR);
}

dw_trap_kind dw_trap_kind_of(int trap) {
  switch (trap) {
  case WASM_RT_TRAP_OOB: return DW_TRAP_OUT_OF_BOUNDS;
  case WASM_RT_TRAP_INT_OVERFLOW: return DW_TRAP_INT_OVERFLOW;
  case WASM_RT_TRAP_DIV_BY_ZERO: return DW_TRAP_DIV_BY_ZERO;
  case WASM_RT_TRAP_INVALID_CONVERSION: return DW_TRAP_INVALID_CONVERSION;
  case WASM_RT_TRAP_UNREACHABLE: return DW_TRAP_UNREACHABLE;
  case WASM_RT_TRAP_CALL_INDIRECT: return DW_TRAP_INDIRECT_CALL;
  case WASM_RT_TRAP_UNCAUGHT_EXCEPTION: return DW_TRAP_UNCAUGHT_EXCEPTION;
  case WASM_RT_TRAP_EXHAUSTION: return DW_TRAP_STACK_EXHAUSTED;
  case DW_UNWIND_DEADLINE: return DW_TRAP_TIME_LIMIT;
  }
  return DW_TRAP_OTHER;
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
  case DW_UNWIND_DEADLINE: return "time limit exceeded";
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
  func_type *t = dw_malloc(sizeof *t + n * sizeof(wasm_rt_type_t));
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
      dw_free(t);
      return i;
    }
  }
  if (n_types == cap_types) {
    uint32_t cap = cap_types ? cap_types * 2 : 64;
    func_type **nt = dw_realloc(types, cap * sizeof *nt);
    if (!nt) {
      pthread_mutex_unlock(&types_lock);
      dw_free(t);
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
    t->data = dw_calloc(n ? n : 1, sizeof(elem_t));                                               \
    if (!t->data) dw_rt_host_error(dw_error_set(DW_ERR_NOMEM, "table of %u elements", n));     \
    t->size = n;                                                                               \
    t->max_size = max;                                                                         \
  }                                                                                            \
  void wasm_rt_free_##kind##_table(wasm_rt_##kind##_table_t *t) {                              \
    dw_free(t->data);                                                                             \
    memset(t, 0, sizeof *t);                                                                   \
  }                                                                                            \
  uint32_t wasm_rt_grow_##kind##_table(wasm_rt_##kind##_table_t *t, uint32_t delta, elem_t init) { \
    uint32_t old = t->size;                                                                    \
    if (delta > t->max_size - old || old + delta > (1u << 26)) return UINT32_MAX;            \
    if (delta == 0) return old;                                                                \
    elem_t *d = dw_realloc(t->data, (size_t)(old + delta) * sizeof(elem_t));                      \
    if (!d) return UINT32_MAX;                                                                 \
    for (uint32_t i = old; i < old + delta; i++) d[i] = init;                                  \
    t->data = d;                                                                               \
    t->size = old + delta;                                                                     \
    return old;                                                                                \
  }

DEFINE_TABLE(funcref, wasm_rt_funcref_t, wasm_rt_funcref_null_value)
DEFINE_TABLE(externref, wasm_rt_externref_t, wasm_rt_externref_null_value)
