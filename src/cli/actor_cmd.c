/*
 * actor_cmd.c — `driftwood actor spawn | send | fork | inspect`: each step
 * its own process, the actor's whole state moving through a snapshot file.
 */
#include "driftwood.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void actor_usage_to(FILE *f) {
  fprintf(f,
          "usage: driftwood actor spawn --module M.wasm [--model NAME=PATH]... --state S.dws [--no-embed-module]\n"
          "       driftwood actor send --state S.dws [--module M.wasm] [--model NAME=PATH]... MESSAGE...\n"
          "       driftwood actor fork --state S.dws --to T.dws\n"
          "       driftwood actor inspect S.dws\n"
          "common options: --backend cpu|cuda|auto (default auto), --threads N, --cache DIR,\n"
          "                --nn-preload A:GGML:TARGET:PATH, --timeout SECONDS, --max-memory SIZE\n"
          "  (--timeout: a message whose handling runs longer traps; the snapshot stays as it was;\n"
          "   --max-memory: caps the actor's linear memory, e.g. 64MiB; a snapshot with more is refused)\n"
          "snapshot memory: stored raw and page-aligned, so a thaw maps it copy-on-write; --compress-memory\n"
          "  stores it zstd-compressed instead (smaller files, thaw copies). send and fork keep the snapshot's\n"
          "  choice unless --compress-memory is given.\n");
}

static void actor_usage(void) { actor_usage_to(stderr); }

typedef struct aopts {
  const char *module, *state, *to, *cache, *backend;
  const char **models, **preloads, **msgs;
  int n_models, n_preloads, n_msgs, threads;
  int no_embed, compress;
  unsigned long long timeout_ms;
  uint64_t max_memory;
} aopts;

static int parse(int argc, char **argv, aopts *o) {
  o->models = calloc((size_t)argc, sizeof(char *));
  o->preloads = calloc((size_t)argc, sizeof(char *));
  o->msgs = calloc((size_t)argc, sizeof(char *));
  if (!o->models || !o->preloads || !o->msgs) return 0;
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--module") && has) o->module = argv[++i];
    else if (!strcmp(a, "--state") && has) o->state = argv[++i];
    else if (!strcmp(a, "--to") && has) o->to = argv[++i];
    else if (!strcmp(a, "--cache") && has) o->cache = argv[++i];
    else if (!strcmp(a, "--backend") && has) o->backend = argv[++i];
    else if (!strcmp(a, "--model") && has) o->models[o->n_models++] = argv[++i];
    else if (!strcmp(a, "--nn-preload") && has) o->preloads[o->n_preloads++] = argv[++i];
    else if (!strcmp(a, "--threads") && has) o->threads = atoi(argv[++i]);
    else if (!strcmp(a, "--timeout") && has) {
      if (!dw_cli_parse_timeout(argv[++i], &o->timeout_ms)) return 0;
    }
    else if (!strcmp(a, "--max-memory") && has) {
      if (dw_parse_size(argv[++i], &o->max_memory) != DW_OK || !o->max_memory) {
        fprintf(stderr, "driftwood actor: --max-memory wants a size (e.g. 64MiB), not '%s'\n", argv[i]);
        return 0;
      }
    }
    else if (!strcmp(a, "--no-embed-module")) o->no_embed = 1;
    else if (!strcmp(a, "--compress-memory")) o->compress = 1;
    else if (!strcmp(a, "--")) {
      while (++i < argc) o->msgs[o->n_msgs++] = argv[i];
    } else if (a[0] == '-' && a[1] == '-') {
      fprintf(stderr, "driftwood actor: unknown option or missing value: '%s'\n", a);
      return 0;
    } else o->msgs[o->n_msgs++] = a;
  }
  return 1;
}

static dw_runtime *runtime(const aopts *o) {
  dw_runtime_config rc = {.backend = o->backend ? o->backend : "auto", .cache_dir = o->cache, .progress = true, .threads = o->threads,
                          .time_limit_ms = o->timeout_ms, .actor_memory_limit_bytes = o->max_memory};
  dw_runtime *rt;
  if (dw_runtime_create(&rc, &rt)) return NULL;
  for (int i = 0; i < o->n_models; i++) {
    char name[256];
    const char *eq = strchr(o->models[i], '=');
    if (!eq || eq == o->models[i] || (size_t)(eq - o->models[i]) >= sizeof name) {
      fprintf(stderr, "driftwood: --model needs NAME=PATH, got '%s'\n", o->models[i]);
      dw_runtime_destroy(rt);
      return NULL;
    }
    snprintf(name, sizeof name, "%.*s", (int)(eq - o->models[i]), o->models[i]);
    if (dw_runtime_add_model(rt, name, eq + 1)) {
      dw_runtime_destroy(rt);
      return NULL;
    }
  }
  for (int i = 0; i < o->n_preloads; i++)
    if (dw_runtime_add_nn_preload(rt, o->preloads[i])) {
      dw_runtime_destroy(rt);
      return NULL;
    }
  return rt;
}

int dw_cli_actor(int argc, char **argv) {
  if (argc < 3) {
    actor_usage();
    return DW_EXIT_USAGE;
  }
  const char *cmd = argv[2];
  for (int i = 2; i < argc && strcmp(argv[i], "--"); i++) /* `actor --help`, `actor send --help`, … */
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help") || (i == 2 && !strcmp(argv[i], "help"))) {
      actor_usage_to(stdout);
      return 0;
    }
  aopts o = {0};
  int code = DW_EXIT_USAGE;
  dw_runtime *rt = NULL;
  dw_module *m = NULL;
  dw_actor *a = NULL;
  if (!parse(argc, argv, &o)) goto out;
  if (!strcmp(cmd, "inspect")) {
    const char *path = o.state ? o.state : (o.n_msgs ? o.msgs[0] : NULL);
    static char text[1 << 16];
    if (!path) {
      actor_usage();
      goto out;
    }
    if (dw_snapshot_describe(path, text, sizeof text)) goto fail;
    fputs(text, stdout);
    code = 0;
    goto out;
  }
  if (!o.state || (strcmp(cmd, "spawn") && strcmp(cmd, "send") && strcmp(cmd, "fork")) ||
      (!strcmp(cmd, "spawn") && !o.module) || (!strcmp(cmd, "fork") && !o.to)) {
    actor_usage();
    goto out;
  }
  if (!(rt = runtime(&o))) goto fail;
  if (o.module && dw_module_load(rt, o.module, &m, NULL)) goto fail;
  dw_thaw_report rep;
  if (!strcmp(cmd, "spawn")) {
    unsigned flags = (o.no_embed ? 0u : DW_FREEZE_EMBED_MODULE) | (o.compress ? DW_FREEZE_COMPRESS_MEMORY : 0u);
    if (dw_actor_spawn(m, &a) || dw_actor_freeze_file(a, flags, o.state)) goto fail;
    code = 0;
    goto out;
  }
  if (dw_actor_thaw_file(rt, m, o.state, &a, &rep)) goto fail;
  unsigned keep = (rep.module_embedded ? DW_FREEZE_EMBED_MODULE : 0u) |
                  (rep.memory_compressed || o.compress ? DW_FREEZE_COMPRESS_MEMORY : 0u);
  if (!strcmp(cmd, "fork")) {
    if (dw_actor_freeze_file(a, keep, o.to)) goto fail;
    code = 0;
    goto out;
  }
  for (int i = 0; i < o.n_msgs; i++) {
    int32_t r = 0;
    fflush(stdout);
    dw_status st = dw_actor_send(a, o.msgs[i], strlen(o.msgs[i]), 1, &r);
    if (st == DW_ERR_TRAP) {
      fprintf(stderr, "driftwood: %s; %s is left as it was before this send\n", dw_last_error(), o.state);
      code = 134;
      goto out;
    }
    if (st) goto fail;
    if (r != 0) fprintf(stderr, "driftwood: the actor answered message %d with status %d\n", i + 1, r);
  }
  if (dw_actor_freeze_file(a, keep, o.state)) goto fail;
  code = 0;
  goto out;
fail:
  fprintf(stderr, "driftwood: %s\n", dw_last_error());
  code = 1;
out:
  dw_actor_destroy(a);
  dw_module_destroy(m);
  dw_runtime_destroy(rt);
  free(o.models), free(o.preloads), free(o.msgs);
  return code;
}
