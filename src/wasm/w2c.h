/*
 * w2c.h — everything that depends on the wasm2c version (wabt 1.0.32).
 *
 * wasm2c turns a module into C with a generated header; this file's job is
 * to read that header (instance struct, imports, exports) and write a small
 * "shim" translation unit that #includes the generated C and exposes one
 * descriptor, dw_w2c_desc_v1, with a version-independent shape: instance
 * size, instantiate/free, the memory, exports behind uniform invokers, the
 * import list, every global's and table's offset (exported or not), and the
 * functions the element segments declare (what ref.func and table.init can
 * put into a table), so a table element can be named by an index.
 *
 * Imports are not linked by symbol name: the shim defines each imported
 * function as a trampoline through the host context's import table, whose
 * pointer is the first field of the context passed to instantiate.
 */
#ifndef DW_WASM_W2C_H
#define DW_WASM_W2C_H

#include "wasm/wasm.h"

#define DW_W2C_VERSION "1.0.32"
#define DW_W2C_ABI 4

/* The descriptor types, written once and pasted into every shim as text. */
#define DW_W2C_TYPES                                                           \
  typedef void (*dw_w2c_invoke)(void *inst, const unsigned long long *args,    \
                                unsigned long long *res);                      \
  typedef struct dw_w2c_export {                                               \
    const char *name, *sig;                                                    \
    dw_w2c_invoke invoke;                                                      \
  } dw_w2c_export;                                                             \
  typedef struct dw_w2c_import {                                               \
    const char *module, *field, *sig;                                          \
  } dw_w2c_import;                                                             \
  typedef struct dw_w2c_global {                                               \
    const char *name;                                                          \
    char type;                                                                 \
    unsigned offset, n_bytes;                                                  \
  } dw_w2c_global;                                                             \
  typedef struct dw_w2c_table {                                                \
    const char *name;                                                          \
    unsigned offset; /* of a wasm_rt_funcref_table_t */                        \
  } dw_w2c_table;                                                              \
  typedef struct dw_w2c_desc {                                                 \
    unsigned abi;                                                              \
    const char *key;                                                           \
    unsigned long instance_bytes;                                              \
    void (*init_module)(void);                                                 \
    void (*instantiate)(void *inst, void *host);                               \
    void (*free_instance)(void *inst);                                         \
    void *(*memory)(void *inst);                                               \
    const dw_w2c_export *exports;                                              \
    unsigned n_exports;                                                        \
    const dw_w2c_import *imports;                                              \
    unsigned n_imports;                                                        \
    const dw_w2c_global *globals;                                              \
    unsigned n_globals;                                                        \
    const dw_w2c_table *tables;                                                \
    unsigned n_tables;                                                         \
    /* the idx-th function of the element segments (all, in order) as a     \
     * wasm_rt_funcref_t closed over inst, into out; 0 when idx >= n_refs */ \
    int (*ref)(unsigned idx, void *inst, void *out);                           \
    unsigned n_refs;                                                           \
  } dw_w2c_desc;

DW_W2C_TYPES

#define DW_W2C_DESC_SYMBOL "dw_w2c_desc_v1"

/* Runs wasm2c on wasm_path, writing out_c and its header beside it. On a
 * malformed or invalid module returns DW_ERR_BAD_MODULE with wasm2c's
 * message. */
DW_HIDDEN dw_status dw_w2c_translate(const char *wasm_path, const char *out_c);
/* Reads the header wasm2c wrote for gen_c and writes shim_path. Every import
 * must resolve in hosts (DW_ERR_UNKNOWN_IMPORT naming module.field). */
DW_HIDDEN dw_status dw_w2c_write_shim(const char *gen_c, const char *key, const dw_host_set *hosts,
                                      const char *shim_path);
/* Looks an import up in the host set; NULL when absent (the message says
 * whether the name or the signature did not match). */
DW_HIDDEN const dw_hostfn *dw_w2c_resolve(const dw_host_set *hosts, const char *module,
                                          const char *field, const char *sig);
/* Runs argv (argv[0] looked up in PATH), capturing stderr into err.
 * Returns the exit status, or -1 if it could not be started. */
DW_HIDDEN int dw_w2c_spawn(char *const argv[], char *err, size_t err_cap);

#endif
