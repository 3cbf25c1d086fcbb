/*
 * runtime.c — the public embedding API (include/driftwood.h): runtimes,
 * modules, and running WASI commands with the driftwood host modules.
 *
 * A dw_runtime owns one backend shared by every instance it creates; each
 * instance's committed memory is registered with that backend through the
 * memory hooks. A dw_module owns its compiled code; instances borrow it.
 */
#define _GNU_SOURCE
#include "abi/wasi_nn.h"
#include "api/internal.h"
#include "wasi/wasi.h"
#include "wasm/w2c.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const dw_hostfn *const host_tables[] = {dw_wasi_functions, dw_abi_functions, dw_abi_llm_functions,
                                               dw_nn_functions};

#ifndef DW_VERSION
#define DW_VERSION "unknown"
#endif
#ifndef DW_COMMIT
#define DW_COMMIT "unknown"
#endif

static char version[256];

static void version_fill(void) {
#ifdef DW_HAVE_CUDA_ENGINE
  const char *engines = "cpu cuda";
#else
  const char *engines = "cpu";
#endif
  snprintf(version, sizeof version, "%s (commit %s, wasm2c %s, backends %s, LLM engines %s)", DW_VERSION, DW_COMMIT,
           DW_W2C_VERSION, dw_backend_list(), engines);
}

const char *dw_version(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, version_fill);
  return version;
}

static const char *env_setting(void *ctx, const char *name) {
  (void)ctx;
  return getenv(name);
}

const dw_settings dw_env_settings = {env_setting, NULL, NULL, NULL};

dw_status dw_runtime_create(const dw_runtime_config *cfg, dw_runtime **out) {
  *out = NULL;
  dw_runtime_config def = {0};
  if (!cfg) cfg = &def;
  dw_runtime *rt = dw_calloc(1, sizeof *rt);
  if (!rt) return dw_error_set(DW_ERR_NOMEM, "runtime");
  rt->settings = cfg->setting ? (dw_settings){cfg->setting, cfg->setting_ctx, NULL, NULL} : dw_env_settings;
  rt->settings.log = cfg->log, rt->settings.log_ctx = cfg->log_ctx;
  const char *step = dw_setting(&rt->settings, "DRIFTWOOD_FAULT_WRITE_STEP"); /* a test hook */
  if (step) dw_file_fault_step(atoi(step));
  dw_status st = dw_backend_create(cfg->backend, cfg->threads, &rt->settings, &rt->backend);
  if (st != DW_OK) {
    dw_free(rt);
    return st;
  }
  /* The LLM runs where the backend computes; a build with the CUDA backend
   * but without nvcc has no CUDA engine, and its LLM stays on the CPU
   * (`driftwood info` says which engine runs). */
  const char *engine = dw_backend_name(rt->backend);
#ifndef DW_HAVE_CUDA_ENGINE
  engine = "cpu";
#endif
  if ((st = dw_engine_create(engine, cfg->threads, &rt->settings, &rt->engine)) != DW_OK) {
    dw_runtime_destroy(rt);
    return st;
  }
  if (cfg->cache_dir && !(rt->cache_dir = dw_strdup(cfg->cache_dir))) {
    dw_runtime_destroy(rt);
    return dw_error_set(DW_ERR_NOMEM, "runtime");
  }
  rt->wcfg.cache_dir = rt->cache_dir;
  rt->wcfg.progress = cfg->progress;
  rt->wcfg.settings = &rt->settings;
  rt->time_limit_ms = cfg->time_limit_ms;
  rt->actor_mem_limit = cfg->actor_memory_limit_bytes;
  rt->fixed_models = cfg->fixed_models;
  rt->max_sessions = cfg->max_sessions;
  rt->max_open_files = cfg->max_open_files;
  dw_registry_init(&rt->models);
  rt->hosts.tables = host_tables;
  rt->hosts.n_tables = 4;
  *out = rt;
  return DW_OK;
}

void dw_runtime_destroy(dw_runtime *rt) {
  if (!rt) return;
  dw_registry_fini(&rt->models);
  dw_engine_destroy(rt->engine);
  dw_backend_destroy(rt->backend);
  dw_free(rt->cache_dir);
  dw_free(rt);
}

void dw_runtime_describe(const dw_runtime *rt, char *buf, size_t cap) {
  char dev[1024], cache[1024], llm[256];
  dw_backend_describe(rt->backend, dev, sizeof dev);
  dw_engine_describe(rt->engine, llm, sizeof llm);
  if (dw_wasm_cache_dir(&rt->wcfg, cache, sizeof cache) != DW_OK) snprintf(cache, sizeof cache, "(none)");
  snprintf(buf, cap,
           "backends compiled in: %s\n"
           "active backend: %s\n"
           "%s\n"
           "wasm: ahead-of-time via wasm2c %s, cache %s\n"
           "llm: %s\n",
           dw_backend_list(), dw_backend_name(rt->backend), dev, DW_W2C_VERSION, cache, llm);
}

dw_status dw_module_load(dw_runtime *rt, const char *path, dw_module **out, bool *cache_hit) {
  *out = NULL;
  dw_module *m = dw_calloc(1, sizeof *m);
  if (!m) return dw_error_set(DW_ERR_NOMEM, "module");
  dw_status st = dw_wasm_module_load(path, &rt->wcfg, &rt->hosts, &m->wasm, cache_hit);
  if (st != DW_OK) {
    dw_free(m);
    return st;
  }
  m->rt = rt;
  if (!(m->path = dw_strdup(path))) {
    dw_module_destroy(m);
    return dw_error_set(DW_ERR_NOMEM, "module");
  }
  *out = m;
  return DW_OK;
}

void dw_module_destroy(dw_module *m) {
  if (!m) return;
  dw_wasm_module_destroy(m->wasm);
  dw_free(m->path);
  dw_free(m);
}

static dw_status commit_hook(void *ud, void *p, size_t n) { return dw_backend_register_memory(ud, p, n); }
static void release_hook(void *ud, void *p, size_t n) { dw_backend_unregister_memory(ud, p, n); }

dw_mem_hooks dw_rt_hooks(dw_runtime *rt) {
  const char *cow = dw_setting(&rt->settings, "DRIFTWOOD_MEM_COW"); /* read per instance: benches flip it */
  return (dw_mem_hooks){rt->backend, commit_hook, release_hook, dw_backend_pins_memory(rt->backend),
                        cow && !strcmp(cow, "0")};
}

dw_status dw_guest_create(dw_module *m, const dw_wasi_config *wc, uint64_t max_memory_bytes, dw_guest *g) {
  memset(g, 0, sizeof *g);
  dw_abi_init(&g->abi, m->rt->backend, wc->stdout_fd);
  g->abi.reg = &m->rt->models;
  g->abi.engine = m->rt->engine;
  g->abi.max_sessions = m->rt->max_sessions;
  g->abi.settings = &m->rt->settings;
  dw_wasi_config w = *wc;
  if (!w.max_fds) w.max_fds = (int)(m->rt->max_open_files > INT32_MAX ? INT32_MAX : m->rt->max_open_files);
  dw_status st = dw_wasi_create(&w, &g->wasi);
  if (!st) st = dw_nn_create(&m->rt->models, m->rt->engine, wc->stdout_fd, &m->rt->settings, &g->nn);
  if (!st) {
    dw_instance_config ic = {.max_memory_bytes = max_memory_bytes, .hooks = dw_rt_hooks(m->rt),
                             .time_limit_ms = m->rt->time_limit_ms};
    ic.ctx[DW_SLOT_WASI] = g->wasi;
    ic.ctx[DW_SLOT_DRIFTWOOD] = &g->abi;
    ic.ctx[DW_SLOT_NN] = g->nn;
    st = dw_instance_create(m->wasm, &ic, &g->inst);
  }
  if (st) dw_guest_destroy(g);
  return st;
}

void dw_guest_destroy(dw_guest *g) {
  dw_instance_destroy(g->inst);
  dw_abi_fini(&g->abi);
  dw_nn_destroy(g->nn);
  dw_wasi_destroy(g->wasi);
  memset(g, 0, sizeof *g);
}

/* The guest a command or an invoke runs in, from the public run config. */
static dw_status run_guest(dw_module *m, const dw_run_config *cfg, dw_guest *g) {
  const char **dh = dw_calloc((size_t)cfg->n_dirs + 1, sizeof *dh), **dg = dw_calloc((size_t)cfg->n_dirs + 1, sizeof *dg);
  if (!dh || !dg) {
    dw_free(dh);
    dw_free(dg);
    return dw_error_set(DW_ERR_NOMEM, "run");
  }
  for (int i = 0; i < cfg->n_dirs; i++) {
    dh[i] = cfg->dirs[i].host_path;
    dg[i] = cfg->dirs[i].guest_path;
  }
  dw_wasi_config wc = {.argc = cfg->argc, .argv = cfg->argv, .n_env = cfg->n_env, .env = cfg->env,
                       .n_dirs = cfg->n_dirs, .dir_host = dh, .dir_guest = dg,
                       .stdin_fd = cfg->stdin_fd, .stdout_fd = cfg->stdout_fd ? cfg->stdout_fd : 1,
                       .stderr_fd = cfg->stderr_fd ? cfg->stderr_fd : 2};
  dw_status st = dw_guest_create(m, &wc, cfg->max_memory_bytes, g);
  dw_free(dh);
  dw_free(dg);
  return st;
}

/* A call's trap or exit into *out; DW_OK unless the call could not run. */
static dw_status run_outcome(dw_status st, const dw_call_result *res, dw_run_result *out) {
  if (st == DW_ERR_TRAP || res->outcome == DW_TRAPPED) {
    out->trapped = true;
    out->exit_code = 134;
    snprintf(out->message, sizeof out->message, "wasm trap: %s", dw_trap_str(res->trap));
    out->trap = dw_trap_kind_of(res->trap);
    return DW_OK;
  }
  if (st == DW_OK) out->exit_code = res->outcome == DW_EXITED ? res->exit_code : 0;
  return st;
}

dw_status dw_run_command(dw_module *m, const dw_run_config *cfg, dw_run_result *out) {
  memset(out, 0, sizeof *out);
  dw_guest g;
  dw_status st = run_guest(m, cfg, &g);
  if (st != DW_OK) return st;
  if (!dw_wasm_export_sig(m->wasm, "_start")) {
    dw_guest_destroy(&g);
    return dw_error_set(DW_ERR_NOT_FOUND, "not a WASI command: the module exports no _start function");
  }
  dw_call_result res;
  st = run_outcome(dw_instance_call(g.inst, "_start", "v:", NULL, &res), &res, out);
  dw_guest_destroy(&g);
  return st;
}

const char *dw_module_export_type(const dw_module *m, const char *name) { return dw_wasm_export_sig(m->wasm, name); }

dw_status dw_run_invoke(dw_module *m, const dw_run_config *cfg, const char *name, const dw_value *args, int n_args,
                        dw_value *result, dw_run_result *out) {
  memset(out, 0, sizeof *out);
  result->type = 'v', result->of.i64 = 0;
  const char *sig = dw_wasm_export_sig(m->wasm, name);
  if (!sig) return dw_error_set(DW_ERR_NOT_FOUND, "the module exports no function '%s'", name);
  const char *params = sig + 2; /* "R:PP…" */
  uint64_t raw[64];
  if (n_args < 0 || (size_t)n_args != strlen(params) || n_args > 64)
    return dw_error_set(DW_ERR_INVALID_ARG, "'%s' has type %s: it takes %zu arguments, not %d", name, sig,
                        strlen(params), n_args);
  for (int i = 0; i < n_args; i++) {
    if (args[i].type != params[i])
      return dw_error_set(DW_ERR_INVALID_ARG, "'%s' has type %s: argument %d must be '%c', not '%c'", name, sig, i + 1,
                          params[i], args[i].type);
    raw[i] = 0;
    switch (params[i]) { /* the bit patterns the call passes */
    case 'i': raw[i] = (uint32_t)args[i].of.i32; break;
    case 'I': raw[i] = (uint64_t)args[i].of.i64; break;
    case 'f': memcpy(&raw[i], &args[i].of.f32, 4); break;
    default: memcpy(&raw[i], &args[i].of.f64, 8); break;
    }
  }
  dw_guest g;
  dw_status st = run_guest(m, cfg, &g);
  if (st != DW_OK) return st;
  dw_call_result res = {0};
  if (dw_wasm_export_sig(m->wasm, "_initialize")) st = dw_instance_call(g.inst, "_initialize", "v:", NULL, &res);
  if (st == DW_OK && res.outcome == DW_RAN) st = dw_instance_call(g.inst, name, sig, raw, &res);
  st = run_outcome(st, &res, out);
  if (st == DW_OK && !out->trapped && res.outcome == DW_RAN) {
    result->type = sig[0];
    switch (sig[0]) {
    case 'i': result->of.i32 = (int32_t)(uint32_t)res.value; break;
    case 'I': result->of.i64 = (int64_t)res.value; break;
    case 'f': memcpy(&result->of.f32, &res.value, 4); break;
    case 'F': memcpy(&result->of.f64, &res.value, 8); break;
    default: break;
    }
  }
  dw_guest_destroy(&g);
  return st;
}
