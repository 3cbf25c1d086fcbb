/*
 * main.c — the `driftwood` command: run, compile, info; tokenize and
 * generate live in llm_cmds.c.
 *
 * Uses only the public header. Exit status of `driftwood run`:
 *   0–125  the guest's own exit status (proc_exit, or 0 when _start returns)
 *   125    also: the guest exited with a status outside WASI's 0–125
 *   126    Driftwood could not run the module (usage, bad or incompatible
 *          module, unknown import, compile error, I/O)
 *   134    the guest trapped (the trap is named on stderr)
 */
#include "driftwood.h"
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_CANNOT_RUN 126
#define EXIT_TRAP 134

static void usage(FILE *f) {
  fprintf(f,
          "usage: driftwood <command> [options]\n"
          "\n"
          "commands:\n"
          "  run [OPTIONS] MODULE.wasm [ARGS...]   run a WASI command module\n"
          "  compile [--cache DIR] MODULE.wasm     compile ahead of time into the cache\n"
          "  info [--backend NAME]                 backends compiled in and the active device\n"
          "  tokenize --model M.gguf [--no-bos] [--pieces] [--parse-special] TEXT\n"
          "                                        print TEXT's token ids (--pieces: with their bytes)\n"
          "  generate --model M.gguf --prompt TEXT [-n N] [sampling options]\n"
          "                                        generate natively (driftwood generate --help)\n"
          "  actor spawn|send|fork|inspect ...      actors with snapshots (driftwood actor for usage)\n"
          "  serve [--listen ADDR:PORT] [--model NAME=PATH]... [--state-dir DIR] ...\n"
          "                                        HTTP server: actors and an OpenAI-compatible API\n"
          "                                        (driftwood serve --help)\n"
          "  --version, -V                         version, commit, wasm2c and backends\n"
          "  help                                  this text\n"
          "\n"
          "run options:\n"
          "  --backend cpu|cuda|auto   compute backend (default auto: CUDA if a device is present)\n"
          "  --env KEY=VALUE           set a guest environment variable (repeatable)\n"
          "  --dir HOST[::GUEST]       grant a host directory, seen by the guest as GUEST\n"
          "                            (default: the same name); nothing else is reachable;\n"
          "                            WasmEdge's GUEST:HOST form is accepted too\n"
          "  --max-memory SIZE         cap the guest's linear memory, e.g. 64MiB\n"
          "  --cache DIR               AOT cache (default $DRIFTWOOD_CACHE, then\n"
          "                            $XDG_CACHE_HOME/driftwood, then ~/.cache/driftwood)\n"
          "  --threads N               worker threads (default: one per core)\n"
          "  --timeout SECONDS         trap the guest once it has run this long (e.g. 2, 0.5, 1500ms)\n"
          "  --invoke NAME             call export NAME with ARGS (read as its parameter types)\n"
          "                            instead of _start, and print its result\n"
          "  --model NAME=PATH         register a GGUF model guests open by NAME (repeatable;\n"
          "                            an empty name in model_open means the first one)\n"
          "  --nn-preload A:GGML:TARGET:PATH\n"
          "                            WasmEdge's form: register PATH as alias A for WASI-NN\n"
          "                            (and driftwood) guests, mapped when first loaded\n"
          "\n"
          "exit status of run: the guest's (0-125); 125 for a guest status outside 0-125;\n"
          "126 when the module cannot be run; 134 when the guest traps.\n"
          "\n"
          "environment:\n"
          "  DRIFTWOOD_CACHE           AOT cache directory (see --cache)\n"
          "  DRIFTWOOD_CC              C compiler for ahead-of-time compilation (default cc)\n"
          "  DRIFTWOOD_CUDA_STAGING    auto|never|always: whether CUDA matmuls DMA their operands\n"
          "                            into device memory (auto: from 256 KiB of operands)\n"
          "  DRIFTWOOD_CUDA_STAGE_MIN_BYTES  auto's threshold in bytes\n"
          "  DRIFTWOOD_MEM_COW=0       copy snapshot memory on thaw and fork instead of mapping it\n");
}

typedef struct opts {
  const char *backend, *cache, *module;
  const char **env;
  int n_env;
  dw_dir_grant *dirs;
  int n_dirs;
  char **models;   /* NAME=PATH */
  int n_models;
  char **preloads; /* alias:ENC:TARGET:path */
  int n_preloads;
  uint64_t max_memory;
  int threads;
  unsigned long long timeout_ms;
  const char *invoke; /* --invoke NAME: call this export with the arguments instead of _start */
  int first_arg; /* index in argv of the module */
} opts;

int dw_cli_parse_timeout(const char *text, unsigned long long *ms) {
  char *end;
  double v = strtod(text, &end);
  double scale = !strcmp(end, "ms") ? 1 : (!*end || !strcmp(end, "s")) ? 1000 : -1;
  if (end == text || scale < 0 || !(v > 0) || v * scale > 1e12) {
    fprintf(stderr, "driftwood: --timeout '%s': give seconds (2, 0.5, 2s) or milliseconds (1500ms)\n", text);
    return 0;
  }
  *ms = (unsigned long long)(v * scale + 0.5);
  if (*ms == 0) *ms = 1;
  return 1;
}

static int need(int i, int argc, const char *flag) {
  if (i + 1 >= argc) {
    fprintf(stderr, "driftwood: %s needs a value\n", flag);
    return 0;
  }
  return 1;
}

/* --invoke: the export called with the arguments read as its parameter
 * types (integers in decimal or 0x hex, floats as strtod reads them), its
 * result printed on stdout as wasmtime does. Returns 0 when the call ran
 * (*r says how it ended), else an exit status. */
static int invoke(dw_module *m, const opts *o, int n, char **args, dw_run_config *cfg, dw_run_result *r) {
  const char *type = dw_module_export_type(m, o->invoke); /* NULL, or a count that does not fit: */
  size_t np = type ? strlen(type + 2) : 0;                  /* dw_run_invoke says what is wrong */
  dw_value v[64], res;
  for (int i = 0; i < n && i < 64; i++) { /* past 64, dw_run_invoke refuses the count before reading v */
    char *end;
    v[i].type = (size_t)i < np ? type[2 + i] : 'v';
    if (v[i].type == 'v') continue;
    errno = 0;
    if (v[i].type == 'i' || v[i].type == 'I') {
      long long x = strtoll(args[i], &end, 0);
      if (v[i].type == 'i' && (x < INT32_MIN || x > UINT32_MAX)) errno = ERANGE;
      if (v[i].type == 'i') v[i].of.i32 = (int32_t)(uint32_t)x;
      else v[i].of.i64 = x;
    } else {
      double x = strtod(args[i], &end);
      if (v[i].type == 'f') v[i].of.f32 = (float)x;
      else v[i].of.f64 = x;
    }
    if (errno || end == args[i] || *end) {
      fprintf(stderr, "driftwood: argument %d of '%s' (type %s) is not a%s: '%s'\n", i + 1, o->invoke, type,
              v[i].type == 'i' ? "n i32" : v[i].type == 'I' ? "n i64" : v[i].type == 'f' ? "n f32" : "n f64", args[i]);
      return EXIT_CANNOT_RUN;
    }
  }
  cfg->argc = 1, cfg->argv = (const char *const *)&o->module; /* the guest's argv: the module alone */
  if (dw_run_invoke(m, cfg, o->invoke, v, n, &res, r) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    return EXIT_CANNOT_RUN;
  }
  if (!r->trapped && !r->exit_code) switch (res.type) {
    case 'i': printf("%d\n", res.of.i32); break;
    case 'I': printf("%lld\n", (long long)res.of.i64); break;
    case 'f': printf("%.9g\n", res.of.f32); break;
    case 'F': printf("%.17g\n", res.of.f64); break;
    default: break;
    }
  return 0;
}

/* Parses options up to the module path; returns 0 on error. */
static int parse(int argc, char **argv, int start, opts *o, int allow_run_opts) {
  o->env = calloc((size_t)argc, sizeof *o->env);
  o->dirs = calloc((size_t)argc, sizeof *o->dirs);
  o->models = calloc((size_t)argc, sizeof *o->models);
  o->preloads = calloc((size_t)argc, sizeof *o->preloads);
  if (!o->env || !o->dirs || !o->models || !o->preloads) return 0;
  for (int i = start; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      if (i + 1 < argc) {
        o->module = argv[i + 1];
        o->first_arg = i + 1;
      }
      return o->module != NULL;
    }
    if (a[0] != '-' || !a[1]) {
      o->module = a;
      o->first_arg = i;
      return 1;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      exit(0);
    }
    if (!strcmp(a, "--cache")) {
      if (!need(i, argc, a)) return 0;
      o->cache = argv[++i];
    } else if (!strcmp(a, "--backend")) {
      if (!need(i, argc, a)) return 0;
      o->backend = argv[++i];
    } else if (allow_run_opts && !strcmp(a, "--env")) {
      if (!need(i, argc, a)) return 0;
      const char *kv = argv[++i];
      if (!strchr(kv, '=') || kv[0] == '=') {
        fprintf(stderr, "driftwood: --env needs KEY=VALUE, got '%s'\n", kv);
        return 0;
      }
      o->env[o->n_env++] = kv;
    } else if (allow_run_opts && !strcmp(a, "--dir")) {
      if (!need(i, argc, a)) return 0;
      char *spec = argv[++i];
      char *sep = strstr(spec, "::"), *colon = strchr(spec, ':');
      dw_dir_grant *g = &o->dirs[o->n_dirs++];
      if (sep) {
        *sep = 0;
        g->host_path = spec;
        g->guest_path = sep + 2;
      } else if (colon) { /* WasmEdge: GUEST:HOST */
        *colon = 0;
        g->guest_path = spec;
        g->host_path = colon + 1;
      } else {
        g->host_path = g->guest_path = spec;
      }
      if (!*g->host_path || !*g->guest_path) {
        fprintf(stderr, "driftwood: --dir needs HOST[::GUEST] or GUEST:HOST\n");
        return 0;
      }
    } else if (allow_run_opts && !strcmp(a, "--model")) {
      if (!need(i, argc, a)) return 0;
      char *spec = argv[++i], *eq = strchr(spec, '=');
      if (!eq || eq == spec || !eq[1]) {
        fprintf(stderr, "driftwood: --model needs NAME=PATH, got '%s'\n", spec);
        return 0;
      }
      o->models[o->n_models++] = spec;
    } else if (allow_run_opts && !strcmp(a, "--nn-preload")) {
      if (!need(i, argc, a)) return 0;
      o->preloads[o->n_preloads++] = argv[++i];
    } else if (allow_run_opts && !strcmp(a, "--max-memory")) {
      if (!need(i, argc, a)) return 0;
      if (dw_parse_size(argv[++i], &o->max_memory) != DW_OK) {
        fprintf(stderr, "driftwood: --max-memory: %s\n", dw_last_error());
        return 0;
      }
    } else if (allow_run_opts && !strcmp(a, "--invoke")) {
      if (!need(i, argc, a)) return 0;
      o->invoke = argv[++i];
    } else if (allow_run_opts && !strcmp(a, "--timeout")) {
      if (!need(i, argc, a) || !dw_cli_parse_timeout(argv[++i], &o->timeout_ms)) return 0;
    } else if (allow_run_opts && !strcmp(a, "--threads")) {
      if (!need(i, argc, a)) return 0;
      o->threads = atoi(argv[++i]);
      if (o->threads <= 0) {
        fprintf(stderr, "driftwood: --threads needs a positive number\n");
        return 0;
      }
    } else {
      fprintf(stderr, "driftwood: unknown option '%s' (see driftwood help)\n", a);
      return 0;
    }
  }
  return 1;
}

static int cmd_run(int argc, char **argv) {
  opts o = {0};
  int parsed = parse(argc, argv, 2, &o, 1);
  if (!parsed || !o.module) {
    if (parsed) fprintf(stderr, "driftwood run: no module given (driftwood run [OPTIONS] MODULE.wasm [ARGS...])\n");
    free(o.env);
    free(o.dirs);
    free(o.models);
    free(o.preloads);
    return EXIT_CANNOT_RUN;
  }
  dw_runtime_config rc = {.backend = o.backend, .cache_dir = o.cache, .progress = true, .threads = o.threads,
                          .time_limit_ms = o.timeout_ms};
  dw_runtime *rt = NULL;
  dw_module *m = NULL;
  int code = EXIT_CANNOT_RUN;
  if (dw_runtime_create(&rc, &rt) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    goto out;
  }
  for (int i = 0; i < o.n_models; i++) {
    char *eq = strchr(o.models[i], '=');
    *eq = 0;
    dw_status st = dw_runtime_add_model(rt, o.models[i], eq + 1);
    *eq = '=';
    if (st != DW_OK) {
      fprintf(stderr, "driftwood: --model %s: %s\n", o.models[i], dw_last_error());
      goto out;
    }
  }
  for (int i = 0; i < o.n_preloads; i++)
    if (dw_runtime_add_nn_preload(rt, o.preloads[i]) != DW_OK) {
      fprintf(stderr, "driftwood: %s\n", dw_last_error());
      goto out;
    }
  if (dw_module_load(rt, o.module, &m, NULL) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    goto out;
  }
  dw_run_config cfg = {.argc = argc - o.first_arg, .argv = (const char *const *)argv + o.first_arg,
                       .n_env = o.n_env, .env = o.env, .n_dirs = o.n_dirs, .dirs = o.dirs,
                       .max_memory_bytes = o.max_memory, .stdin_fd = 0, .stdout_fd = 1, .stderr_fd = 2};
  dw_run_result r;
  if (o.invoke) {
    if ((code = invoke(m, &o, argc - o.first_arg - 1, argv + o.first_arg + 1, &cfg, &r)) != 0) goto out;
  } else if (dw_run_command(m, &cfg, &r) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    goto out;
  }
  if (r.trapped) {
    fprintf(stderr, "driftwood: %s: %s\n", o.module, r.message);
    code = EXIT_TRAP;
  } else if (r.exit_code < 0 || r.exit_code > 125) {
    fprintf(stderr, "driftwood: guest exited with status %d, outside WASI's 0-125\n", r.exit_code);
    code = 125;
  } else {
    code = r.exit_code;
  }
out:
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
  free(o.env);
  free(o.dirs);
  free(o.models);
  free(o.preloads);
  return code;
}

static int cmd_compile(int argc, char **argv) {
  opts o = {0};
  int parsed = parse(argc, argv, 2, &o, 0);
  if (!parsed || !o.module) {
    if (parsed) fprintf(stderr, "driftwood compile: no module given\n");
    free(o.env);
    free(o.dirs);
    free(o.models);
    free(o.preloads);
    return EXIT_CANNOT_RUN;
  }
  dw_runtime_config rc = {.backend = "cpu", .cache_dir = o.cache, .progress = true, .threads = 1};
  dw_runtime *rt = NULL;
  dw_module *m = NULL;
  bool hit = false;
  int code = 0;
  if (dw_runtime_create(&rc, &rt) != DW_OK || dw_module_load(rt, o.module, &m, &hit) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    code = EXIT_CANNOT_RUN;
  } else {
    printf("%s: %s\n", o.module, hit ? "already compiled (cache hit)" : "compiled into the cache");
  }
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
  free(o.env);
  free(o.dirs);
  free(o.models);
  free(o.preloads);
  return code;
}

static int cmd_info(int argc, char **argv) {
  opts o = {0};
  if (!parse(argc, argv, 2, &o, 0)) {
    free(o.env);
    free(o.dirs);
    free(o.models);
    free(o.preloads);
    return 2;
  }
  dw_runtime_config rc = {.backend = o.backend, .cache_dir = o.cache};
  dw_runtime *rt;
  int code = 0;
  if (dw_runtime_create(&rc, &rt) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    code = 1;
  } else {
    char buf[4096];
    dw_runtime_describe(rt, buf, sizeof buf);
    fputs(buf, stdout);
    dw_runtime_destroy(rt);
  }
  free(o.env);
  free(o.dirs);
  free(o.models);
  free(o.preloads);
  return code;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
  if (!strcmp(cmd, "compile")) return cmd_compile(argc, argv);
  if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
  if (!strcmp(cmd, "tokenize")) return dw_cli_tokenize(argc, argv);
  if (!strcmp(cmd, "generate")) return dw_cli_generate(argc, argv);
  if (!strcmp(cmd, "actor")) return dw_cli_actor(argc, argv);
  if (!strcmp(cmd, "serve")) return dw_cli_serve(argc, argv);
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
    printf("driftwood %s\n", dw_version());
    return 0;
  }
  if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "driftwood: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}
