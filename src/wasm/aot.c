/*
 * aot.c — ahead-of-time compilation and the content-addressed cache.
 *
 * A module's compiled form is <cache>/<key>.so plus <key>.sum (the .so's
 * SHA-256). key = SHA-256 over the module bytes, the identities (path, size,
 * mtime) of wasm2c and the C compiler, the compiler flags and the shim ABI.
 *
 * Invariants:
 *  1. A cache entry is used only if its .so hashes to its .sum and carries
 *     the expected key inside its descriptor; anything else is rebuilt.
 *  2. Compilation of one key is serialized across processes by flock on
 *     <key>.lock; work happens in a private temp dir and lands by rename, so
 *     a reader never sees a half-written .so.
 *  3. The bytes compiled are the bytes hashed (copied into the temp dir).
 */
#define _GNU_SOURCE
#include "wasm/rt.h"
#include "wasm/w2c.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CC_FLAGS "-O2", "-fPIC", "-shared", "-w", "-fno-strict-aliasing", "-fvisibility=hidden"
#define CC_FLAGS_TEXT "-O2 -fPIC -shared -w -fno-strict-aliasing -fvisibility=hidden"

struct dw_wasm_module {
  void *dl;                 /* owned: dlopen handle */
  const dw_w2c_desc *desc;  /* view into dl */
  dw_fnptr *imports;        /* owned: host functions in desc->imports order */
  char hash[65];            /* hex SHA-256 of the module bytes */
  uint8_t *bytes;           /* owned: the module as loaded (what was hashed and compiled) */
  size_t n_bytes;
};

static const char *cc_name(const dw_wasm_config *cfg) {
  const char *cc = dw_setting(cfg ? cfg->settings : NULL, "DRIFTWOOD_CC");
  return cc && *cc ? cc : "cc";
}

static void sha256(const void *data, size_t n, uint8_t out[32]) {
  unsigned len = 32;
  EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
}

/* "realpath:size:mtime" of a program found in PATH, or "missing:name";
 * false when out of memory. */
static bool tool_identity(const dw_wasm_config *cfg, const char *name, char *out, size_t cap) {
  char cand[PATH_MAX], real[PATH_MAX];
  const char *path = dw_setting(cfg ? cfg->settings : NULL, "PATH");
  if (strchr(name, '/')) path = "";
  char *dup = dw_strdup(path ? path : "/usr/bin:/bin");
  if (!dup) return false;
  snprintf(out, cap, "missing:%s", name);
  for (char *save, *dir = strtok_r(dup, ":", &save);; dir = strtok_r(NULL, ":", &save)) {
    if (strchr(name, '/')) snprintf(cand, sizeof cand, "%s", name);
    else if (!dir) break;
    else snprintf(cand, sizeof cand, "%s/%s", dir, name);
    struct stat sb;
    if (access(cand, X_OK) == 0 && realpath(cand, real) && stat(real, &sb) == 0) {
      snprintf(out, cap, "%s:%lld:%lld", real, (long long)sb.st_size, (long long)sb.st_mtime);
      break;
    }
    if (strchr(name, '/')) break;
  }
  dw_free(dup);
  return true;
}

dw_status dw_wasm_cache_dir(const dw_wasm_config *cfg, char *out, size_t cap) {
  const dw_settings *set = cfg ? cfg->settings : NULL;
  const char *d = cfg && cfg->cache_dir ? cfg->cache_dir : dw_setting(set, "DRIFTWOOD_CACHE");
  int n;
  if (d && *d) n = snprintf(out, cap, "%s", d);
  else if ((d = dw_setting(set, "XDG_CACHE_HOME")) && *d) n = snprintf(out, cap, "%s/driftwood", d);
  else if ((d = dw_setting(set, "HOME")) && *d) n = snprintf(out, cap, "%s/.cache/driftwood", d);
  else return dw_error_set(DW_ERR_IO, "no cache directory: set DRIFTWOOD_CACHE or HOME");
  if (n < 0 || (size_t)n >= cap) return dw_error_set(DW_ERR_INVALID_ARG, "cache path too long");
  return DW_OK;
}

static dw_status hash_file(const char *path, char hex[65]) {
  uint8_t *buf;
  size_t n;
  dw_status st = dw_file_read(path, &buf, &n);
  if (st != DW_OK) return st;
  uint8_t d[32];
  sha256(buf, n, d);
  dw_free(buf);
  dw_hex(d, 32, hex);
  return DW_OK;
}

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[PATH_MAX + 256];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
  closedir(d);
  rmdir(dir);
}

static dw_status resolve_imports(dw_wasm_module *m, const dw_host_set *hosts) {
  const dw_w2c_desc *d = m->desc;
  m->imports = dw_calloc(d->n_imports ? d->n_imports : 1, sizeof *m->imports);
  if (!m->imports) return dw_error_set(DW_ERR_NOMEM, "import table");
  for (unsigned i = 0; i < d->n_imports; i++) {
    const dw_hostfn *f = dw_w2c_resolve(hosts, d->imports[i].module, d->imports[i].field, d->imports[i].sig);
    if (!f) return DW_ERR_UNKNOWN_IMPORT;
    m->imports[i] = f->fn;
  }
  return DW_OK;
}

/* Opens a cache entry; DW_ERR_NOT_FOUND when absent or not trustworthy. */
static dw_status open_entry(const char *so, const char *sum, const char *key, dw_wasm_module *m) {
  char want[80] = "", got[65];
  FILE *f = fopen(sum, "r");
  if (!f) return DW_ERR_NOT_FOUND;
  bool ok = fgets(want, sizeof want, f) != NULL;
  fclose(f);
  want[strcspn(want, "\n")] = 0;
  if (!ok || access(so, R_OK) != 0 || hash_file(so, got) != DW_OK || strcmp(want, got)) return DW_ERR_NOT_FOUND;
  void *dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!dl) return DW_ERR_NOT_FOUND;
  const dw_w2c_desc *d = dlsym(dl, DW_W2C_DESC_SYMBOL);
  if (!d || d->abi != DW_W2C_ABI || !d->key || strcmp(d->key, key) || d->instance_bytes == 0 ||
      d->instance_bytes > (1u << 30)) {
    dlclose(dl);
    return DW_ERR_NOT_FOUND;
  }
  m->dl = dl;
  m->desc = d;
  return DW_OK;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static dw_status compile(const char *cache, const char *key, const uint8_t *bytes, size_t n,
                         const char *name, const dw_host_set *hosts, bool progress, const char *cc,
                         const char *so, const char *sum) {
  char tmp[PATH_MAX], wasm[PATH_MAX + 32], gen[PATH_MAX + 32], shim[PATH_MAX + 32], out[PATH_MAX + 32], err[8192];
  if (snprintf(tmp, sizeof tmp, "%s/tmp-%.12s-XXXXXX", cache, key) >= (int)sizeof tmp)
    return dw_error_set(DW_ERR_INVALID_ARG, "cache path too long: %s", cache);
  if (!mkdtemp(tmp)) return dw_error_set(DW_ERR_IO, "mkdtemp in %s: %s", cache, strerror(errno));
  snprintf(wasm, sizeof wasm, "%s/module.wasm", tmp);
  snprintf(gen, sizeof gen, "%s/guest.c", tmp);
  snprintf(shim, sizeof shim, "%s/shim.c", tmp);
  snprintf(out, sizeof out, "%s/module.so", tmp);
  double t0 = now_s();
  dw_status st = dw_file_write_atomic(wasm, bytes, n);
  if (st == DW_OK && progress) fprintf(stderr, "driftwood: compiling %s: wasm2c...", name);
  if (st == DW_OK) st = dw_w2c_translate(wasm, gen);
  if (st == DW_OK) st = dw_w2c_write_shim(gen, key, hosts, shim);
  if (st == DW_OK && progress) fprintf(stderr, " cc...");
  if (st == DW_OK) {
    char *argv[] = {(char *)cc, CC_FLAGS, "-o", out, shim, NULL};
    int rc = dw_w2c_spawn(argv, err, sizeof err);
    if (rc != 0)
      st = dw_error_set(DW_ERR_COMPILE, "C compiler '%s' failed (status %d): %.2000s", cc, rc, err);
  }
  char hex[65];
  if (st == DW_OK) st = hash_file(out, hex);
  if (st == DW_OK && rename(out, so) != 0)
    st = dw_error_set(DW_ERR_IO, "rename into cache %s: %s", so, strerror(errno));
  if (st == DW_OK) {
    char line[80];
    int len = snprintf(line, sizeof line, "%s\n", hex);
    st = dw_file_write_atomic(sum, line, (size_t)len);
  }
  if (progress) {
    if (st == DW_OK) fprintf(stderr, " done in %.1f s\n", now_s() - t0);
    else fprintf(stderr, " failed\n");
  }
  rm_tree(tmp);
  return st;
}

static void init_module(void *arg) { ((dw_wasm_module *)arg)->desc->init_module(); }

dw_status dw_wasm_module_load(const char *path, const dw_wasm_config *cfg, const dw_host_set *hosts,
                              dw_wasm_module **out, bool *cache_hit) {
  *out = NULL;
  if (cache_hit) *cache_hit = false;
  uint8_t *bytes = NULL;
  size_t n;
  dw_status st = dw_file_read(path, &bytes, &n);
  if (st != DW_OK) return st;
  if (n < 8 || memcmp(bytes, "\0asm", 4) != 0) {
    dw_free(bytes);
    return dw_error_set(DW_ERR_BAD_MODULE, "%s is not a WebAssembly binary (bad magic number)", path);
  }
  if (bytes[4] != 1 || bytes[5] || bytes[6] || bytes[7]) {
    unsigned version = bytes[4];
    dw_free(bytes);
    return dw_error_set(DW_ERR_BAD_MODULE, "%s: unsupported WebAssembly version %u", path, version);
  }
  dw_wasm_module *m = dw_calloc(1, sizeof *m);
  if (!m) {
    dw_free(bytes);
    return dw_error_set(DW_ERR_NOMEM, "module");
  }
  uint8_t digest[32];
  sha256(bytes, n, digest);
  dw_hex(digest, 32, m->hash);

  char ident[4 * PATH_MAX], w2c_id[PATH_MAX + 64], cc_id[PATH_MAX + 64], key[65];
  if (!tool_identity(cfg, "wasm2c", w2c_id, sizeof w2c_id) || !tool_identity(cfg, cc_name(cfg), cc_id, sizeof cc_id)) {
    st = dw_error_set(DW_ERR_NOMEM, "module %s", path);
    goto fail;
  }
  int len = snprintf(ident, sizeof ident, "driftwood-aot abi=%d wasm2c=%s %s cc=%s flags=%s module=%s",
                     DW_W2C_ABI, DW_W2C_VERSION, w2c_id, cc_id, CC_FLAGS_TEXT, m->hash);
  sha256(ident, (size_t)len, digest);
  dw_hex(digest, 32, key);

  char cache[PATH_MAX], so[PATH_MAX + 80], sum[PATH_MAX + 80], lock[PATH_MAX + 80];
  st = dw_wasm_cache_dir(cfg, cache, sizeof cache);
  if (st == DW_OK) st = dw_mkdirs(cache);
  if (st != DW_OK) goto fail;
  snprintf(so, sizeof so, "%s/%s.so", cache, key);
  snprintf(sum, sizeof sum, "%s/%s.sum", cache, key);
  snprintf(lock, sizeof lock, "%s/%s.lock", cache, key);

  if (open_entry(so, sum, key, m) == DW_OK) {
    if (cache_hit) *cache_hit = true;
  } else {
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0) {
      st = dw_error_set(DW_ERR_IO, "cannot open %s: %s", lock, strerror(errno));
      goto fail;
    }
    while (flock(lfd, LOCK_EX) != 0 && errno == EINTR) {
    }
    if (open_entry(so, sum, key, m) != DW_OK) { /* nobody built it meanwhile */
      const char *base = strrchr(path, '/');
      st = compile(cache, key, bytes, n, base ? base + 1 : path, hosts,
                   cfg && cfg->progress && isatty(2), cc_name(cfg), so, sum);
      if (st == DW_OK && open_entry(so, sum, key, m) != DW_OK)
        st = dw_error_set(DW_ERR_COMPILE, "compiled module %s cannot be loaded: %s", so, dlerror());
    } else if (cache_hit) {
      *cache_hit = true;
    }
    flock(lfd, LOCK_UN);
    close(lfd);
    if (st != DW_OK) goto fail;
  }
  st = resolve_imports(m, hosts);
  if (st != DW_OK) goto fail;
  m->bytes = bytes, m->n_bytes = n; /* kept: a snapshot embeds these, not what the path holds later */
  dw_rt_code_add(m->desc, m);
  bytes = NULL; /* m owns them now */
  dw_call_result res; /* the module's function types are registered here: it may run out of memory */
  if ((st = dw_rt_guard(init_module, m, 0, &res)) == DW_OK && res.outcome != DW_RAN)
    st = dw_error_set(DW_ERR_TRAP, "module %s: its set-up trapped", path);
  if (st != DW_OK) goto fail;
  *out = m;
  return DW_OK;
fail:
  dw_free(bytes);
  dw_wasm_module_destroy(m);
  return st;
}

void dw_wasm_module_destroy(dw_wasm_module *m) {
  if (!m) return;
  dw_rt_code_remove(m);
  if (m->dl) dlclose(m->dl);
  dw_free(m->imports);
  dw_free(m->bytes);
  dw_free(m);
}

const char *dw_wasm_module_hash(const dw_wasm_module *m) { return m->hash; }

const uint8_t *dw_wasm_module_bytes(const dw_wasm_module *m, size_t *n) {
  *n = m->n_bytes;
  return m->bytes;
}

/* ---- instances ------------------------------------------------------------ */

#include "wasm/rt.h"
#include <wasm-rt.h>

struct dw_instance {
  dw_fnptr *imports;        /* borrowed from the module; MUST stay first (shim contract) */
  dw_wasm_module *module;   /* borrowed */
  void *ctx[DW_N_SLOTS];    /* borrowed host-module state */
  void *w2c;                /* owned: the wasm2c instance struct */
  dw_mem *mem;              /* the instance's memory (owned through w2c), or NULL */
  bool live;                /* instantiate completed: free_instance is safe */
  uint64_t time_limit_ms;   /* per outermost call; 0 = none */
};

static const dw_w2c_export *find_export(const dw_wasm_module *m, const char *name) {
  for (unsigned i = 0; i < m->desc->n_exports; i++)
    if (!strcmp(m->desc->exports[i].name, name)) return &m->desc->exports[i];
  return NULL;
}

const char *dw_wasm_export_sig(const dw_wasm_module *m, const char *name) {
  const dw_w2c_export *e = find_export(m, name);
  return e ? e->sig : NULL;
}

static void do_instantiate(void *arg) {
  dw_instance *inst = arg;
  inst->module->desc->instantiate(inst->w2c, inst);
}

dw_status dw_instance_create(dw_wasm_module *m, const dw_instance_config *cfg, dw_instance **out) {
  *out = NULL;
  dw_instance *inst = dw_calloc(1, sizeof *inst);
  if (!inst) return dw_error_set(DW_ERR_NOMEM, "instance");
  inst->w2c = dw_calloc(1, m->desc->instance_bytes);
  if (!inst->w2c) {
    dw_free(inst);
    return dw_error_set(DW_ERR_NOMEM, "instance state");
  }
  inst->imports = m->imports;
  inst->module = m;
  if (cfg) memcpy(inst->ctx, cfg->ctx, sizeof inst->ctx);
  inst->time_limit_ms = cfg ? cfg->time_limit_ms : 0;
  dw_rt_alloc_ctx actx = {.limit_bytes = cfg ? cfg->max_memory_bytes : 0};
  if (cfg) actx.hooks = cfg->hooks;
  dw_rt_set_alloc_ctx(&actx);
  dw_call_result res;
  dw_status st = dw_rt_guard(do_instantiate, inst, cfg ? cfg->time_limit_ms : 0, &res);
  dw_rt_set_alloc_ctx(NULL);
  if (st == DW_OK && res.outcome == DW_EXITED)
    st = dw_error_set(DW_ERR_TRAP, "guest exited (status %d) during instantiation", res.exit_code);
  if (st != DW_OK) {
    /* A partially built wasm2c instance cannot be freed through its own
     * free function (it may touch unallocated parts); release what we can. */
    if (m->desc->memory) {
      wasm_rt_memory_t *rtm = m->desc->memory(inst->w2c);
      if (rtm->data) wasm_rt_free_memory(rtm);
    }
    dw_free(inst->w2c);
    dw_free(inst);
    return dw_error_wrap(st, "instantiate");
  }
  inst->live = true;
  if (m->desc->memory) {
    wasm_rt_memory_t *rtm = m->desc->memory(inst->w2c);
    inst->mem = rtm->data ? dw_mem_from_base(rtm->data) : NULL;
  }
  *out = inst;
  return DW_OK;
}

void dw_instance_destroy(dw_instance *inst) {
  if (!inst) return;
  if (inst->live) inst->module->desc->free_instance(inst->w2c);
  dw_free(inst->w2c);
  dw_free(inst);
}

dw_mem *dw_instance_memory(const dw_instance *inst) { return inst->mem; }

dw_status dw_instance_grow_to(dw_instance *inst, uint32_t pages) {
  if (!inst->mem) return pages ? dw_error_set(DW_ERR_INVALID_ARG, "the module has no memory") : DW_OK;
  if (inst->mem->pages >= pages) return DW_OK;
  wasm_rt_memory_t *rtm = inst->module->desc->memory(inst->w2c);
  if (wasm_rt_grow_memory(rtm, pages - inst->mem->pages) == UINT32_MAX)
    return dw_error_set(DW_ERR_LIMIT, "memory cannot grow to %u pages (maximum %u)", pages, inst->mem->max_pages);
  return DW_OK;
}

unsigned dw_instance_n_globals(const dw_instance *inst) { return inst->module->desc->n_globals; }

unsigned dw_instance_n_tables(const dw_instance *inst) { return inst->module->desc->n_tables; }

unsigned dw_instance_n_refs(const dw_instance *inst) { return inst->module->desc->n_refs; }

bool dw_instance_ref(dw_instance *inst, unsigned idx, void *funcref_out) {
  return idx < inst->module->desc->n_refs && inst->module->desc->ref(idx, inst->w2c, funcref_out);
}

void *dw_instance_table(const dw_instance *inst, unsigned i) {
  return (uint8_t *)inst->w2c + inst->module->desc->tables[i].offset;
}

void *dw_instance_global(const dw_instance *inst, unsigned i, const char **name, char *type, unsigned *n_bytes) {
  const dw_w2c_global *g = &inst->module->desc->globals[i];
  if (name) *name = g->name;
  if (type) *type = g->type;
  if (n_bytes) *n_bytes = g->n_bytes;
  return (uint8_t *)inst->w2c + g->offset;
}

void *dw_instance_ctx(const dw_instance *inst, int slot) {
  return slot >= 0 && slot < DW_N_SLOTS ? inst->ctx[slot] : NULL;
}

typedef struct call_args {
  dw_instance *inst;
  const dw_w2c_export *e;
  const uint64_t *args;
  uint64_t value;
} call_args;

static void do_call(void *arg) {
  call_args *c = arg;
  unsigned long long v = 0;
  c->e->invoke(c->inst->w2c, (const unsigned long long *)c->args, &v);
  c->value = v;
}

dw_status dw_instance_call(dw_instance *inst, const char *name, const char *sig, const uint64_t *args,
                           dw_call_result *res) {
  memset(res, 0, sizeof *res);
  const dw_w2c_export *e = find_export(inst->module, name);
  if (!e) return dw_error_set(DW_ERR_NOT_FOUND, "the module exports no function '%s'", name);
  if (sig && strcmp(e->sig, sig))
    return dw_error_set(DW_ERR_INVALID_ARG, "export '%s' has signature %s, expected %s", name, e->sig, sig);
  static const uint64_t none[1];
  call_args c = {inst, e, args ? args : none, 0};
  dw_status st = dw_rt_guard(do_call, &c, inst->time_limit_ms, res);
  res->value = c.value;
  return st;
}

void dw_instance_exit(dw_instance *inst, int code) {
  (void)inst;
  dw_rt_exit(code);
}
