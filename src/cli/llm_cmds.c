/*
 * llm_cmds.c — `driftwood tokenize` and `driftwood generate`: the LLM engine
 * driven natively from the host, through the public API, with the SDK's
 * sampler compiled natively (the same source guests use).
 */
#define _POSIX_C_SOURCE 200809L
#include "driftwood.h"
#include "cli.h"

#include <driftwood_sampler.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int num(const char *flag, const char *v, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || end == v || *end || d < lo || d > hi) {
    fprintf(stderr, "driftwood: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, v);
    return 0;
  }
  *out = d;
  return 1;
}

static void print_escaped(const char *s, size_t n) {
  putchar('\'');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n') fputs("\\n", stdout);
    else if (c == '\t') fputs("\\t", stdout);
    else if (c == '\'' || c == '\\') printf("\\%c", c);
    else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
    else putchar(c);
  }
  putchar('\'');
}

int dw_cli_tokenize(int argc, char **argv) {
  const char *model = NULL, *text = NULL;
  int no_bos = 0, pieces = 0, parse_special = 0, split = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(a, "--no-bos")) no_bos = 1;
    else if (!strcmp(a, "--pieces")) pieces = 1;
    else if (!strcmp(a, "--split")) split = 1;
    else if (!strcmp(a, "--parse-special")) parse_special = 1;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("usage: driftwood tokenize --model M.gguf [--no-bos] [--pieces] [--parse-special] [--split] TEXT\n"
             "  prints TEXT's token ids; --pieces: one token a line with its bytes; --parse-special:\n"
             "  control tokens written as text become their ids; --split: the pieces the vocabulary's\n"
             "  pre-tokenizer cuts TEXT into before merging (byte-level BPE), one a line, quoted\n");
      return 0;
    }
    else if (!strcmp(a, "--") && i + 1 < argc) text = argv[++i];
    else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "driftwood tokenize: unknown option '%s'\n", a);
      return DW_EXIT_USAGE;
    } else text = a;
  }
  if (!model || !text) {
    fprintf(stderr, "usage: driftwood tokenize --model M.gguf [--no-bos] [--pieces] [--parse-special] [--split] TEXT\n");
    return DW_EXIT_USAGE;
  }
  dw_model *m;
  if (dw_model_open(model, DW_MODEL_VOCAB_ONLY, &m) != DW_OK) {
    fprintf(stderr, "driftwood: %s\n", dw_last_error());
    return DW_EXIT_USAGE;
  }
  size_t len = strlen(text), cap = len + 16, n = 0;
  if (split) {
    size_t *ends = malloc((len + 1) * sizeof *ends);
    int rc = 0;
    if (!ends || dw_model_pretokenize(m, text, len, ends, len + 1, &n) != DW_OK) {
      fprintf(stderr, "driftwood: tokenize: %s\n", ends ? dw_last_error() : "out of memory");
      rc = 1;
    }
    for (size_t i = 0; !rc && i < n; i++) {
      size_t a = i ? ends[i - 1] : 0;
      print_escaped(text + a, ends[i] - a);
      putchar('\n');
    }
    free(ends);
    dw_model_close(m);
    return rc;
  }
  int32_t *ids = malloc(cap * sizeof *ids);
  uint32_t flags = (no_bos ? 0 : DW_TOKENIZE_ADD_SPECIAL) | (parse_special ? DW_TOKENIZE_PARSE_SPECIAL : 0);
  int rc = 0;
  if (!ids || dw_model_tokenize(m, text, len, flags, ids, cap, &n) != DW_OK) {
    fprintf(stderr, "driftwood: tokenize: %s\n", ids ? dw_last_error() : "out of memory");
    rc = 1;
  } else {
    for (size_t i = 0; i < n; i++) {
      if (pieces) {
        char buf[256];
        size_t pl = 0;
        dw_model_token_piece(m, ids[i], buf, sizeof buf, &pl);
        printf("%6d -> ", ids[i]);
        print_escaped(buf, pl < sizeof buf ? pl : sizeof buf);
        putchar('\n');
      } else {
        printf(i ? " %d" : "%d", ids[i]);
      }
    }
    if (!pieces) putchar('\n');
  }
  free(ids);
  dw_model_close(m);
  return rc;
}

int dw_cli_generate(int argc, char **argv) {
  const char *model = NULL, *prompt = NULL, *dump = NULL, *backend = NULL;
  double v;
  int n_predict = 32, threads = 0, n_ctx = 0, ignore_eos = 0, quiet = 0;
  dws_params sp = dws_default_params();
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--model") && has) model = argv[++i];
    else if (!strcmp(a, "--prompt") && has) prompt = argv[++i];
    else if ((!strcmp(a, "-n") || !strcmp(a, "--n-predict")) && has) {
      if (!num(a, argv[++i], 0, 1 << 24, &v)) return DW_EXIT_USAGE;
      n_predict = (int)v;
    } else if (!strcmp(a, "--temp") && has) {
      if (!num(a, argv[++i], 0, 100, &v)) return DW_EXIT_USAGE;
      sp.temp = (float)v;
    } else if (!strcmp(a, "--top-k") && has) {
      if (!num(a, argv[++i], 0, 1e9, &v)) return DW_EXIT_USAGE;
      sp.top_k = (int32_t)v;
    } else if (!strcmp(a, "--top-p") && has) {
      if (!num(a, argv[++i], 0, 1, &v)) return DW_EXIT_USAGE;
      sp.top_p = (float)v;
    } else if (!strcmp(a, "--min-p") && has) {
      if (!num(a, argv[++i], 0, 1, &v)) return DW_EXIT_USAGE;
      sp.min_p = (float)v;
    } else if (!strcmp(a, "--repeat-penalty") && has) {
      if (!num(a, argv[++i], 0.01, 100, &v)) return DW_EXIT_USAGE;
      sp.repeat_penalty = (float)v;
    } else if (!strcmp(a, "--seed") && has) {
      if (!num(a, argv[++i], 0, 1.8e19, &v)) return DW_EXIT_USAGE;
      sp.seed = (uint64_t)v;
    } else if (!strcmp(a, "--threads") && has) {
      if (!num(a, argv[++i], 1, 256, &v)) return DW_EXIT_USAGE;
      threads = (int)v;
    } else if (!strcmp(a, "--ctx") && has) {
      if (!num(a, argv[++i], 1, 1 << 24, &v)) return DW_EXIT_USAGE;
      n_ctx = (int)v;
    } else if (!strcmp(a, "--dump-logits") && has) dump = argv[++i];
    else if (!strcmp(a, "--backend") && has) backend = argv[++i];
    else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      model = prompt = NULL;
      break;
    }
    else if (!strcmp(a, "--quiet")) quiet = 1;
    else {
      fprintf(stderr, "driftwood generate: unknown option or missing value: '%s'\n", a);
      return DW_EXIT_USAGE;
    }
  }
  if (!model || !prompt) {
    bool help = false;
    for (int i = 2; i < argc; i++) help |= !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help");
    fprintf(help ? stdout : stderr, "usage: driftwood generate --model M.gguf --prompt TEXT [-n N] [--temp T] [--top-k K]\n"
                    "         [--top-p P] [--min-p M] [--repeat-penalty R] [--seed S] [--threads N]\n"
                    "         [--ctx N] [--backend cpu|cuda|auto] [--ignore-eos] [--dump-logits FILE] [--quiet]\n"
                    "defaults: -n 32, --temp 0.8 (0 = greedy), --top-k 40, --top-p 0.95, --min-p 0.05,\n"
                    "          --repeat-penalty 1 (off), --seed 0, --ctx: the model's context,\n"
                    "          --backend auto (the GPU when there is one)\n");
    return help ? 0 : DW_EXIT_USAGE;
  }
  dw_runtime_config rc = {.backend = backend ? backend : "auto", .threads = threads};
  dw_runtime *rt = NULL;
  dw_model *m = NULL;
  dw_session *s = NULL;
  FILE *df = NULL;
  int32_t *ids = NULL;
  float *logits = NULL;
  dws_sampler smp = {0};
  int code = 1;
  if (dw_runtime_create(&rc, &rt) || dw_model_open(model, 0, &m)) goto fail;
  dw_model_info info;
  dw_model_get_info(m, &info);
  size_t plen = strlen(prompt), cap = plen + 16, n = 0;
  if (!(ids = malloc(cap * sizeof *ids)) || !(logits = malloc(info.n_vocab * sizeof *logits))) goto nomem;
  if (dw_model_tokenize(m, prompt, plen, DW_TOKENIZE_ADD_SPECIAL | DW_TOKENIZE_PARSE_SPECIAL, ids, cap, &n)) goto fail;
  if (n == 0) {
    fprintf(stderr, "driftwood generate: the prompt has no tokens\n");
    goto out;
  }
  if (dw_session_create(rt, m, n_ctx, &s)) goto fail;
  if (!quiet) {
    char desc[256];
    dw_session_describe(s, desc, sizeof desc);
    fprintf(stderr, "driftwood: %s\n", desc);
  }
  if (dump && !(df = fopen(dump, "wb"))) {
    fprintf(stderr, "driftwood: %s: %s\n", dump, strerror(errno));
    goto out;
  }
  if (dws_init(&smp, &sp, (int32_t)info.n_vocab)) goto nomem;
  for (size_t i = 0; i < n; i++) dws_accept(&smp, ids[i]);
  double t0 = now_s();
  if (dw_session_decode(s, ids, (int)n, logits)) goto fail;
  double t1 = now_s();
  int gen = 0;
  for (; gen < n_predict; gen++) {
    if (df && fwrite(logits, sizeof *logits, info.n_vocab, df) != info.n_vocab) {
      fprintf(stderr, "driftwood: %s: write failed\n", dump);
      goto out;
    }
    int32_t tok = dws_sample(&smp, logits);
    if (!ignore_eos && (tok == info.eos || tok == info.eot)) break;
    char piece[256];
    size_t pl = 0;
    if (dw_model_token_piece(m, tok, piece, sizeof piece, &pl) == DW_OK && !quiet) {
      fwrite(piece, 1, pl, stdout);
      fflush(stdout);
    }
    if (gen + 1 < n_predict && dw_session_decode(s, &tok, 1, logits)) goto fail;
  }
  double t2 = now_s();
  if (!quiet) putchar('\n');
  int decoded = gen > 0 ? gen - (gen == n_predict) : 0;
  fprintf(stderr, "driftwood: prompt %zu tokens in %.1f ms (%.1f tok/s); generated %d tokens, %d decode steps in %.1f ms (%.1f tok/s)\n",
          n, (t1 - t0) * 1e3, n / (t1 - t0), gen, decoded, (t2 - t1) * 1e3, decoded > 0 ? decoded / (t2 - t1) : 0.0);
  code = 0;
  goto out;
nomem:
  fprintf(stderr, "driftwood: out of memory\n");
  goto out;
fail:
  fprintf(stderr, "driftwood: %s\n", dw_last_error());
out:
  if (df && fclose(df) != 0 && code == 0) {
    fprintf(stderr, "driftwood: %s: write failed\n", dump);
    code = 1;
  }
  dws_free(&smp);
  free(ids);
  free(logits);
  dw_session_destroy(s);
  dw_model_close(m);
  dw_runtime_destroy(rt);
  return code;
}
