/*
 * actor.h — what the actor layer's files share (private to src/actor):
 * the actor object, calls into its guest, and how table elements are
 * named in a snapshot. actor.c owns lifecycle, messages and fork;
 * freeze.c, thaw.c and describe.c the snapshot of an actor.
 *
 * A snapshot holds exactly an actor's state (DESIGN.md §5–6):
 *   META     module SHA-256, memory pages, counts
 *   MODULE   the module bytes (optional)
 *   PAGES    linear memory as runs of 4 KiB chunks (the zero ones left out),
 *            stored raw and 4 KiB-aligned in the file, so a thaw from a
 *            file maps them copy-on-write instead of copying them
 *   MEMORY   (instead of PAGES, with DW_FREEZE_COMPRESS_MEMORY, and in
 *            version 1 files) the non-zero chunks, zstd when it pays
 *   GLOBALS  every global by index, name and type (exported or not)
 *   MODELS   the runtime's registry in order (names, paths, fingerprints),
 *            since guests hold model handles = registry index + 1
 *   SESSION  one per live KV session: slot, model handle, n_ctx, tokens,
 *            K and V as f32 in the canonical [layer][pos][kv_dim] layout
 *   TABLES   each funcref table's size and elements, as indices into the
 *            table as instantiated (function pointers are not portable), or
 *            for a function it did not start with (put there by ref.func or
 *            table.init), REF_TAG | its index among the functions the
 *            element segments declare (dw_instance_ref)
 * Open files and the WASI fd table are not saved: a thaw re-instantiates
 * the module, then overwrites memory, globals and tables; stdio is the
 * host's.
 *
 * Thaw checks before it builds anything: the module hash, every length,
 * every model (same fingerprint: KV restored as is; same architecture,
 * shapes and vocabulary but other weights: re-prefilled from the tokens and
 * reported; otherwise refused).
 */
#ifndef DW_ACTOR_ACTOR_H
#define DW_ACTOR_ACTOR_H

#include "actor/snapshot.h"
#include "api/internal.h"

#include <wasm-rt.h>

/* Linear memory is saved and restored in chunks of this many bytes. */
enum { DW_ACTOR_CHUNK = DW_MEM_SMALL_PAGE };
/* At most this many runs of chunks in a PAGES section (each is one mapping
 * at thaw). */
enum { DW_ACTOR_MAX_RUNS = 256 };

struct dw_actor {
  dw_runtime *rt;        /* borrowed */
  dw_module *module;     /* borrowed, or own_module */
  dw_module *own_module; /* owned when thawed from embedded bytes */
  uint8_t *mod_bytes;    /* owned: those bytes, for the next freeze */
  size_t mod_len;
  /* Each funcref table as instantiation left it: snapshot elements are
   * stored as indices into it (function pointers are not portable). */
  unsigned n_tables;
  wasm_rt_funcref_t **init_tab;
  uint32_t *init_size;
  dw_guest g;             /* WASI, WASI-NN, the driftwood ABI, the instance */
  dw_trap_kind last_trap; /* of the last call that trapped */
};

/* A new actor of m, instantiated but not initialised (no _initialize). */
DW_HIDDEN dw_status dw_actor_new(dw_module *m, dw_actor **out);

/* Calls export `name` of a's guest; a trap or proc_exit is an error
 * (DW_ERR_TRAP, with a's last trap kind set). */
DW_HIDDEN dw_status dw_actor_call(dw_actor *a, const char *name, const char *sig, const uint64_t *args,
                                  uint64_t *value);

/* Table elements are named portably (function pointers are not): by
 * where the function was in the table as instantiated, or, for one it did
 * not start with (put there by ref.func or table.init), DW_ACTOR_REF_TAG |
 * its index among the functions the element segments declare. */
#define DW_ACTOR_REF_TAG 0x80000000u

/* The portable name of f, element e of a's table i: UINT32_MAX if f is a
 * function the module does not declare. f is not null. */
DW_HIDDEN uint32_t dw_actor_ref_name(const dw_actor *a, unsigned i, uint32_t e, const wasm_rt_funcref_t *f);

/* The function of a's instance that `name` (from dw_actor_ref_name on any
 * instance of the same module) stands for in table i; false if none. */
DW_HIDDEN bool dw_actor_ref_resolve(const dw_actor *a, unsigned i, uint32_t name, wasm_rt_funcref_t *out);

#endif
