/*
 * driftwood.h — the public embedding API of the Driftwood runtime.
 *
 * Driftwood runs WebAssembly modules compiled ahead of time (wasm2c + the
 * system C compiler), with linear memory the compute backend (CPU or CUDA)
 * reads and writes in place. This header needs only libc types; every handle
 * is opaque. Functions return a dw_status (DW_OK = 0); on failure
 * dw_last_error() gives a message for the calling thread.
 *
 * Usage:
 *   dw_runtime *rt; dw_module *m; dw_run_result r;
 *   dw_runtime_config rc = {0};
 *   if (dw_runtime_create(&rc, &rt) != DW_OK) fail(dw_last_error());
 *   if (dw_module_load(rt, "app.wasm", &m, NULL) != DW_OK) fail(dw_last_error());
 *   const char *argv[] = {"app.wasm", "hello"};
 *   dw_run_config cfg = {.argc = 2, .argv = argv}; // stdio: the process's own
 *   dw_run_command(m, &cfg, &r);   // r.exit_code, r.trapped, r.message
 *   dw_module_destroy(m); dw_runtime_destroy(rt);
 *
 * Threads: a dw_runtime and dw_module may be shared by many threads; each
 * dw_run_command call runs one fresh instance on the calling thread.
 */
#ifndef DRIFTWOOD_H
#define DRIFTWOOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DW_API __attribute__((visibility("default")))

/* Status codes. The same numbers are returned to guests by the `driftwood`
 * import module (sdk/include/driftwood_abi.h names them DWG_* for guest
 * code; src/abi asserts that the two agree). */
typedef enum dw_status {
  DW_OK = 0,
  DW_ERR_INVALID_ARG = 1,   /* a bad argument (guest or host) */
  DW_ERR_OUT_OF_BOUNDS = 2, /* a guest (ptr, len) outside its memory */
  DW_ERR_NOMEM = 3,         /* allocation or commit failed */
  DW_ERR_IO = 4,            /* a file or process operation failed */
  DW_ERR_BAD_MODULE = 5,    /* malformed or invalid WebAssembly */
  DW_ERR_UNKNOWN_IMPORT = 6,/* the module imports what Driftwood lacks */
  DW_ERR_COMPILE = 7,       /* wasm2c or the C compiler failed */
  DW_ERR_TRAP = 8,          /* the guest trapped */
  DW_ERR_UNSUPPORTED = 9,   /* not available on this backend or build */
  DW_ERR_LIMIT = 10,        /* a configured limit was reached */
  DW_ERR_BACKEND = 11,      /* the compute backend failed */
  DW_ERR_NOT_FOUND = 12,    /* no such thing (export, model, handle) */
  DW_ERR_OVERFLOW = 13,     /* sizes overflow (e.g. m*n*k) */
  DW_ERR_MISALIGNED = 14,   /* a pointer lacks the alignment required */
  DW_ERR_BAD_MODEL = 15,    /* a malformed or inconsistent model (GGUF) file */
  DW_ERR_BAD_SNAPSHOT = 16, /* a truncated, corrupt or malformed snapshot */
  DW_ERR_CANCELLED = 17,    /* the caller stopped the call (its receiver went away) */
} dw_status;

/* The calling thread's message for the last failure (never NULL). */
DW_API const char *dw_last_error(void);
/* "0.9.0 (commit 1a2b3c4d5e6f, wasm2c 1.0.32, backends cpu cuda, LLM
 * engines cpu cuda)": this build, for `driftwood --version`. */
DW_API const char *dw_version(void);
/* A fixed name for a status code, e.g. "out of bounds". */
DW_API const char *dw_status_str(dw_status st);

/* ---- runtime ---------------------------------------------------------- */

typedef struct dw_runtime dw_runtime;
typedef struct dw_module dw_module;

/* The allocator the library allocates through (its own objects, buffers,
 * tables; not the guests' linear memories or KV caches, which are mapped,
 * nor what other libraries allocate inside). Process-wide: set it before
 * creating anything, and keep it until everything is destroyed. NULL
 * restores libc's. A buffer the library hands out (dw_actor_freeze) comes
 * from it: release it with dw_free_buffer (or free(), with libc's). malloc
 * and realloc return NULL when they cannot; the library then fails the call
 * with DW_ERR_NOMEM and leaks nothing. */
typedef struct dw_allocator {
  void *(*malloc)(void *ctx, size_t n);
  void *(*realloc)(void *ctx, void *p, size_t n); /* p may be NULL */
  void (*free)(void *ctx, void *p);                /* p may be NULL */
  void *ctx;
} dw_allocator;
DW_API void dw_set_allocator(const dw_allocator *a);
DW_API void dw_free_buffer(void *p);

/* How much a runtime message matters (dw_runtime_config.log). */
typedef enum dw_log_level { DW_LOG_ERROR = 0, DW_LOG_WARN = 1, DW_LOG_INFO = 2 } dw_log_level;

typedef struct dw_runtime_config {
  const char *backend;   /* "cpu", "cuda" or "auto"; NULL means "auto" */
  const char *cache_dir; /* AOT cache; NULL: $DRIFTWOOD_CACHE, then
                            $XDG_CACHE_HOME/driftwood, then ~/.cache/driftwood */
  bool progress;         /* print compile progress on stderr if it is a tty */
  int threads;           /* backend worker threads; 0 = one per core */
  uint64_t time_limit_ms; /* each call into a guest (a command's run, an
                             actor's message) traps after this long; time
                             in host calls counts, but the trap waits for
                             the guest's own code. 0 = no limit */
  bool fixed_models;     /* thaws use only models registered on this
                            runtime: a snapshot naming another model is
                            refused instead of registering the path it
                            recorded (for snapshots from untrusted hands) */
  uint64_t actor_memory_limit_bytes; /* each actor's linear memory: a grow
                            past it fails as at the module's own maximum,
                            and a snapshot whose memory is larger is
                            refused at thaw. 0 = only the module's maximum */
  uint32_t max_sessions;   /* KV sessions one guest may hold at once; 0 = 256 */
  uint32_t max_open_files; /* WASI descriptors one guest may hold (stdio and
                              --dir grants included); 0 = 1024. Both tables
                              start small and grow on demand. */
  /* Where the runtime reads its tunables and test hooks by name
   * (DRIFTWOOD_CACHE, DRIFTWOOD_CC, DRIFTWOOD_MEM_COW, DRIFTWOOD_CUDA_*, …;
   * the README lists them, and PATH, XDG_CACHE_HOME, HOME): the value, or
   * NULL if unset. NULL reads the process environment; nothing below the
   * API calls getenv, so runtimes of one process may differ. */
  const char *(*setting)(void *ctx, const char *name);
  void *setting_ctx;
  /* Where the runtime's own messages go, one line (no newline) at a time:
   * warnings such as a session re-prefilled at thaw, guest-visible errors
   * the operator should see (a device failure), WASI-NN's per-call
   * summary. NULL writes them to stderr. Called on the thread that does
   * the work; it must not call back into the runtime. */
  void (*log)(void *ctx, dw_log_level level, const char *line);
  void *log_ctx;
} dw_runtime_config;

DW_API dw_status dw_runtime_create(const dw_runtime_config *cfg, dw_runtime **out);
DW_API void dw_runtime_destroy(dw_runtime *rt);
/* Writes a human-readable description of the backends compiled in and the
 * active one into buf (NUL-terminated, truncated to cap). */
DW_API void dw_runtime_describe(const dw_runtime *rt, char *buf, size_t cap);

/* ---- modules ---------------------------------------------------------- */

/* Loads a .wasm file: compiles it into the cache on a miss (or when the
 * cache entry is corrupt), then loads the compiled code. `*cache_hit`, when
 * not NULL, says whether compilation was skipped. */
DW_API dw_status dw_module_load(dw_runtime *rt, const char *path,
                                dw_module **out, bool *cache_hit);
DW_API void dw_module_destroy(dw_module *m);

/* ---- running WASI commands ------------------------------------------- */

typedef struct dw_dir_grant {
  const char *host_path;  /* directory on the host */
  const char *guest_path; /* name the guest sees it under */
} dw_dir_grant;

typedef struct dw_run_config {
  int argc;                 /* argv[0] is the program name the guest sees */
  const char *const *argv;
  int n_env;
  const char *const *env;   /* "KEY=VALUE" strings */
  int n_dirs;
  const dw_dir_grant *dirs; /* the only filesystem the guest can reach */
  uint64_t max_memory_bytes;/* 0: only the module's own maximum */
  int stdin_fd, stdout_fd, stderr_fd; /* host fds; 0 in stdout_fd or stderr_fd means
                                         the usual 1 or 2, so a zeroed config gets
                                         the process's stdin, stdout and stderr */
} dw_run_config;

/* Why a guest trapped. */
typedef enum dw_trap_kind {
  DW_TRAP_NONE = 0,
  DW_TRAP_OUT_OF_BOUNDS,      /* memory access outside linear memory */
  DW_TRAP_INT_OVERFLOW,
  DW_TRAP_DIV_BY_ZERO,
  DW_TRAP_INVALID_CONVERSION, /* float to integer out of range */
  DW_TRAP_UNREACHABLE,
  DW_TRAP_INDIRECT_CALL,      /* type mismatch or null table entry */
  DW_TRAP_UNCAUGHT_EXCEPTION,
  DW_TRAP_STACK_EXHAUSTED,
  DW_TRAP_TIME_LIMIT,         /* time_limit_ms ran out */
  DW_TRAP_OTHER,
} dw_trap_kind;

typedef struct dw_run_result {
  int exit_code;      /* from proc_exit, 0 when _start returns */
  bool trapped;       /* the guest trapped; message names the trap */
  char message[256];
  dw_trap_kind trap;  /* what it was, when trapped */
} dw_run_result;

/* Instantiates `m` and runs its `_start`. Returns DW_OK when the guest ran
 * to an exit or a trap (see *out); an error status when it could not run. */
DW_API dw_status dw_run_command(dw_module *m, const dw_run_config *cfg,
                                dw_run_result *out);

/* A WebAssembly value: type 'i' (i32), 'I' (i64), 'f' (f32) or 'F' (f64);
 * 'v' for "no value" (a function that returns nothing). */
typedef struct dw_value {
  char type;
  union {
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
  } of;
} dw_value;

/* Export `name`'s type as "R:PP…" (R the result, P the parameters, in the
 * letters of dw_value, e.g. "i:iI" for (i32, i64) -> i32), or NULL if m
 * exports no such function. */
DW_API const char *dw_module_export_type(const dw_module *m, const char *name);

/* Instantiates `m` (WASI as in dw_run_command; a reactor's _initialize runs
 * first) and calls export `name` with n_args typed arguments, which must
 * match its type (else DW_ERR_INVALID_ARG naming it). *result gets the
 * returned value ('v' for none). A trap or proc_exit is reported in *out
 * as by dw_run_command (then *result is 'v'). Like `wasmtime run --invoke`:
 * one fresh instance per call. */
DW_API dw_status dw_run_invoke(dw_module *m, const dw_run_config *cfg, const char *name, const dw_value *args,
                               int n_args, dw_value *result, dw_run_result *out);

/* ---- models and sessions (the LLM engine) ------------------------------ */

typedef struct dw_model dw_model;
typedef struct dw_session dw_session;

/* What a model offers (guests get the same fields from model_info, in the
 * layout of the guest SDK's driftwood_abi.h). */
typedef struct dw_model_info {
  uint32_t n_vocab;
  uint32_t n_ctx_train;     /* the context length the model was trained for */
  int32_t bos, eos, eot;    /* special token ids, -1 when the vocab has none; eot falls back to eos */
  uint32_t n_embd;
  uint32_t n_layer;
  uint32_t flags;           /* DW_MODEL_ADD_BOS | DW_MODEL_ADD_EOS */
} dw_model_info;

#define DW_MODEL_ADD_BOS 1u
#define DW_MODEL_ADD_EOS 2u

/* dw_model_open flags */
#define DW_MODEL_VOCAB_ONLY 1u  /* tokenizer only: files without weights */

/* Tokenize flags (also the guest ABI's `add_special` argument). */
#define DW_TOKENIZE_ADD_SPECIAL 1u   /* BOS/EOS as the vocabulary asks */
#define DW_TOKENIZE_PARSE_SPECIAL 2u /* "<|im_start|>" written as text → its id */

/* Maps a GGUF model (llama or qwen2; F32/F16/BF16/Q8_0/Q4_0 weights). The
 * weights are shared by every session; the model stays alive until it is
 * closed and its last session is destroyed. */
DW_API dw_status dw_model_open(const char *path, uint32_t flags, dw_model **out);
DW_API void dw_model_close(dw_model *m);
DW_API void dw_model_get_info(const dw_model *m, dw_model_info *out);
/* One line: architecture, sizes, weight type. */
DW_API void dw_model_describe(const dw_model *m, char *buf, size_t cap);
/* A string metadata value (e.g. "tokenizer.chat_template"). *n_out is the
 * full length; DW_ERR_LIMIT when it exceeds cap, DW_ERR_NOT_FOUND if absent. */
DW_API dw_status dw_model_meta(const dw_model *m, const char *key, char *out, size_t cap, size_t *n_out);
/* text → ids. *n_out is the full count; DW_ERR_LIMIT when it exceeds cap. */
DW_API dw_status dw_model_tokenize(const dw_model *m, const char *text, size_t len, uint32_t flags,
                                   int32_t *out, size_t cap, size_t *n_out);
/* The pieces a byte-level BPE vocabulary's pre-tokenizer (its regex list)
 * cuts text into, before any merge: ends[i] is the byte offset where piece
 * i ends. Special tokens are not looked for; other tokenizers give one
 * piece. *n_out is the full count; DW_ERR_LIMIT when it exceeds cap. */
DW_API dw_status dw_model_pretokenize(const dw_model *m, const char *text, size_t len, size_t *ends, size_t cap,
                                      size_t *n_out);
/* id → the bytes it stands for (control tokens: none). */
DW_API dw_status dw_model_token_piece(const dw_model *m, int32_t token, char *out, size_t cap, size_t *n_out);

/* Registers a model under an alias that guests open with model_open.
 * A path registered twice is mapped once. */
DW_API dw_status dw_runtime_add_model(dw_runtime *rt, const char *name, const char *path);

/* WasmEdge's preload syntax, "alias:ENCODING:TARGET:path" (ENCODING ggml,
 * TARGET cpu|gpu|tpu|auto, case-insensitive; the path may contain ':').
 * Registers the alias like dw_runtime_add_model, but the file is mapped
 * only when a guest loads it (a missing file is then error 103). An
 * unknown encoding or target is reported on stderr and the entry dropped,
 * as WasmEdge does; a spec without three ':' is DW_ERR_INVALID_ARG. */
DW_API dw_status dw_runtime_add_nn_preload(dw_runtime *rt, const char *spec);

/* A KV-cache session on the runtime's worker threads. n_ctx <= 0: the
 * model's training context. */
DW_API dw_status dw_session_create(dw_runtime *rt, dw_model *m, int n_ctx, dw_session **out);
DW_API void dw_session_destroy(dw_session *s);
/* Appends n tokens and writes the last position's n_vocab logits to
 * `logits` (may be NULL). On error the session is unchanged. */
DW_API dw_status dw_session_decode(dw_session *s, const int32_t *tokens, int n, float *logits);
DW_API int dw_session_length(const dw_session *s);
DW_API dw_status dw_session_truncate(dw_session *s, int n_keep);
/* A new session sharing s's KV blocks copy-on-write. */
DW_API dw_status dw_session_fork(const dw_session *s, dw_session **out);
/* One line: the engine the session runs on ("cpu", "cuda"), the device
 * memory its model's weights and buffers take there (shared by every
 * session of that model on the runtime) and how long preparing them took. */
DW_API void dw_session_describe(const dw_session *s, char *buf, size_t cap);
/* Runs n tokens through a fresh (empty) session and writes their
 * mean-pooled, L2-normalised final hidden state to out[n_embd]. */
DW_API dw_status dw_session_embed(dw_session *s, const int32_t *tokens, int n, float *out);

/* ---- actors and snapshots --------------------------------------------
 *
 * An actor is an instance of a reactor module that exports
 * dw_alloc(len) -> ptr and dw_on_message(ptr, len) -> i32 (and optionally
 * _initialize, called once at spawn). Its whole state — linear memory,
 * globals, KV sessions and the models it refers to by name — can be frozen
 * into a snapshot and thawed in another process or machine. */

typedef struct dw_actor dw_actor;

typedef struct dw_thaw_report {
  int sessions;             /* KV sessions restored */
  int reprefilled;          /* of which rebuilt from their tokens (another
                               quantisation of the same model) */
  uint64_t memory_bytes;    /* linear memory restored */
  uint64_t memory_mapped;   /* of which mapped copy-on-write from the file
                               (dw_actor_thaw_file; the rest was copied) */
  bool memory_compressed;   /* the snapshot stores memory compressed */
  bool module_embedded;     /* the snapshot carries its module */
} dw_thaw_report;

DW_API dw_status dw_actor_spawn(dw_module *m, dw_actor **out);
DW_API void dw_actor_destroy(dw_actor *a);
/* Delivers one message; the guest's replies (emit) go to out_fd.
 * *result is dw_on_message's return value. A trap is DW_ERR_TRAP (the
 * actor must then be discarded; its last snapshot is intact). */
DW_API dw_status dw_actor_send(dw_actor *a, const void *msg, size_t len, int out_fd, int32_t *result);
/* Like dw_actor_send, but each of the guest's emit calls is handed to
 * fn(ctx, data, len) on the calling thread, one call per emit. When fn
 * returns non-zero the message is cancelled: the guest is stopped inside
 * that emit and dw_actor_send_cb returns DW_ERR_CANCELLED (discard the actor, as
 * after a trap; its last snapshot is intact). */
typedef int (*dw_emit_fn)(void *ctx, const void *data, size_t len);
DW_API dw_status dw_actor_send_cb(dw_actor *a, const void *msg, size_t len, dw_emit_fn fn, void *ctx,
                                  int32_t *result);
/* What an actor holds now. */
typedef struct dw_actor_stats {
  uint64_t memory_bytes;    /* linear memory size */
  int sessions;             /* KV sessions open */
  uint64_t kv_tokens;       /* positions held over all its sessions */
  uint64_t kv_bytes;        /* engine memory of their KV blocks (shared blocks counted in full) */
} dw_actor_stats;
DW_API void dw_actor_get_stats(const dw_actor *a, dw_actor_stats *out);
/* The SHA-256 (64 hex digits and a NUL) of the module an actor runs, and of
 * the module a snapshot in buf was made by (DW_ERR_BAD_SNAPSHOT when buf is
 * not a valid snapshot; *embedded says whether it carries the module). */
DW_API const char *dw_module_hash(const dw_module *m);
DW_API dw_status dw_snapshot_module_hash(const uint8_t *buf, size_t len, char out[65], bool *embedded);
/* After DW_ERR_TRAP: what the trap was (DW_TRAP_NONE if the actor never trapped). */
DW_API dw_trap_kind dw_actor_last_trap(const dw_actor *a);
/* dw_actor_freeze flags. EMBED_MODULE stores the module bytes too, so a
 * thaw needs no module path. Memory is stored raw and page-aligned, so
 * dw_actor_thaw_file maps it copy-on-write (actors thawed from one file
 * share its pages until they write them); COMPRESS_MEMORY stores it
 * zstd-compressed instead (smaller; a thaw copies it). */
enum { DW_FREEZE_EMBED_MODULE = 1, DW_FREEZE_COMPRESS_MEMORY = 2 };
/* A snapshot in a malloc'd buffer (free() it), or written atomically to a
 * file (temporary file, fsync, rename, fsync of the directory). */
DW_API dw_status dw_actor_freeze(dw_actor *a, unsigned flags, uint8_t **buf, size_t *len);
DW_API dw_status dw_actor_freeze_file(dw_actor *a, unsigned flags, const char *path);
/* Rebuilds an actor. m may be NULL when the snapshot embeds its module;
 * otherwise its SHA-256 must match. Models are taken from the runtime's
 * registry by name, in the snapshot's order; names the runtime lacks are
 * registered from the paths the snapshot recorded. */
DW_API dw_status dw_actor_thaw(dw_runtime *rt, dw_module *m, const uint8_t *buf, size_t len, dw_actor **out,
                               dw_thaw_report *report);
DW_API dw_status dw_actor_thaw_file(dw_runtime *rt, dw_module *m, const char *path, dw_actor **out,
                                    dw_thaw_report *report);
/* An independent copy that shares what it can: the memory's non-zero pages
 * are copied once into a shared file that both actors then map
 * copy-on-write (stored once until either writes a page; memories
 * registered with a GPU are copied instead), KV blocks are shared by
 * reference count. Snapshot files the thaw mapped must not be truncated
 * or rewritten in place while actors use them (Driftwood's own writes
 * replace files by rename, which is safe). */
DW_API dw_status dw_actor_fork(dw_actor *a, dw_actor **out);
/* A human-readable description of a snapshot file (format version, module
 * hash, models, sessions with token counts, section sizes). */
DW_API dw_status dw_snapshot_describe(const char *path, char *buf, size_t cap);

/* Parses a size such as "64MiB", "1G", "4096" into bytes. */
DW_API dw_status dw_parse_size(const char *text, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* DRIFTWOOD_H */
