/*
 * wasi_nn.c — `wasi_ephemeral_nn` on the LLM engine (see wasi_nn.h and
 * ../shared/specs/wasi-nn-ggml.md §1–4 for the behaviour mirrored here).
 *
 * compute: clears the session, evaluates the prompt (> ctx − 4 tokens →
 * 102), then samples up to n-predict tokens, appending each piece (the EOG
 * token's text included), streaming it to stdout with stream-stdout, and
 * stops on EOG or the reverse prompt; a token that would pass the context
 * → 101 with the text kept. compute_single does one token per call (0,
 * 100 on EOG, 101). Embedding mode pools the final hidden states.
 */
#define _GNU_SOURCE
#include "abi/wasi_nn.h"
#include "wasm/rt.h"

#include <driftwood_sampler.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

enum {
  NN_OK = 0, NN_INVALID_ARG = 1, NN_INVALID_ENCODING = 2, NN_RUNTIME = 5, NN_UNSUPPORTED = 6,
  NN_NOT_FOUND = 8, NN_EOS = 100, NN_CONTEXT_FULL = 101, NN_PROMPT_TOO_LONG = 102, NN_MODEL_NOT_FOUND = 103,
};
enum { MAX_HANDLES = 4096, ENC_GGML = 6 };

typedef struct nn_cfg {
  int64_t ctx_size, n_predict, batch_size, top_k, repeat_last_n;
  double temp, top_p, min_p, repeat_penalty;
  uint64_t seed;
  bool stream_stdout, enable_log, enable_debug_log, embedding;
  char reverse_prompt[256];
} nn_cfg;

typedef struct nn_graph {
  bool live;
  int reg_idx;
  dw_model *model;  /* borrowed from the registry */
  nn_cfg cfg;
} nn_graph;

typedef struct nn_ctx {
  bool live;
  dw_engine *engine;
  int graph;
  dw_model *model;
  nn_cfg cfg;
  bool has_input, single_active;
  int32_t *input;
  size_t n_input;
  char *out;
  size_t out_len, out_cap;
  int64_t out_tokens;
  char piece[256];
  size_t piece_len;
  dw_session *sess;
  float *logits;
  dws_sampler smp;
} nn_ctx;

struct dw_nn {
  dw_registry *reg;
  dw_engine *engine;
  int stdout_fd;
  const dw_settings *settings; /* borrowed: where messages go */
  nn_graph *graphs;
  int n_graphs;
  nn_ctx *ctxs;
  int n_ctxs;
};

#define NN(inst) ((dw_nn *)dw_instance_ctx((inst), DW_SLOT_NN))

dw_status dw_nn_create(dw_registry *reg, dw_engine *engine, int stdout_fd, const dw_settings *settings,
                       dw_nn **out) {
  dw_nn *nn = dw_calloc(1, sizeof *nn);
  if (!nn) return dw_error_set(DW_ERR_NOMEM, "wasi-nn");
  nn->reg = reg, nn->engine = engine, nn->stdout_fd = stdout_fd, nn->settings = settings;
  *out = nn;
  return DW_OK;
}

static void ctx_clear(nn_ctx *c) {
  dw_free(c->input), dw_free(c->out), dw_free(c->logits);
  dw_sess_free(c->sess);
  dws_free(&c->smp);
  memset(c, 0, sizeof *c);
}

void dw_nn_destroy(dw_nn *nn) {
  if (!nn) return;
  for (int i = 0; i < nn->n_ctxs; i++) ctx_clear(&nn->ctxs[i]);
  dw_free(nn->ctxs);
  dw_free(nn->graphs);
  dw_free(nn);
}

/* ---- guest memory ------------------------------------------------------------ */

static void *view(dw_instance *inst, uint32_t off, uint64_t n) {
  dw_mem *mem = dw_instance_memory(inst);
  void *p;
  return mem && dw_mem_view(mem, off, n, &p) == DW_OK ? p : NULL;
}

static bool put_u32(dw_instance *inst, uint32_t off, uint32_t v) {
  void *p = view(inst, off, 4);
  if (p) memcpy(p, &v, 4);
  return p != NULL;
}

/* ---- configuration (load_by_name_with_config, set_input index 1) ------------- */

static void cfg_defaults(nn_cfg *c, const dw_model *m) {
  memset(c, 0, sizeof *c);
  c->ctx_size = 4096;
  if (c->ctx_size > m->hp.n_ctx_train) c->ctx_size = m->hp.n_ctx_train;
  c->n_predict = -1;
  c->batch_size = 2048;
  c->top_k = 40;
  c->repeat_last_n = 64;
  c->temp = 0.8;
  c->top_p = 0.95;
  c->min_p = 0.05;
  c->repeat_penalty = 1.0;
  if (getrandom(&c->seed, sizeof c->seed, 0) != sizeof c->seed) c->seed = (uint64_t)time(NULL);
}

/* Applies a JSON object: bad JSON → 2, a known key of the wrong type or an
 * invalid value → 1; unknown keys are ignored. On error c is unchanged. */
static int cfg_apply(nn_cfg *out, const dw_model *m, const char *json, size_t len) {
  json_error_t jerr;
  json_t *root = json_loadb(json, len, 0, &jerr);
  if (!root) return NN_INVALID_ENCODING;
  if (!json_is_object(root)) {
    json_decref(root);
    return NN_INVALID_ENCODING;
  }
  nn_cfg c = *out;
  int rc = NN_OK;
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
#define IS(k) (!strcmp(key, k))
    if (IS("enable-log") || IS("enable-debug-log") || IS("stream-stdout") || IS("embedding") || IS("use-mmap")) {
      if (!json_is_boolean(v)) rc = NN_INVALID_ARG;
      else if (IS("enable-log")) c.enable_log = json_is_true(v);
      else if (IS("enable-debug-log")) c.enable_debug_log = json_is_true(v);
      else if (IS("stream-stdout")) c.stream_stdout = json_is_true(v);
      else if (IS("embedding")) c.embedding = json_is_true(v);
    } else if (IS("ctx-size") || IS("n-predict") || IS("n-gpu-layers") || IS("batch-size") || IS("ubatch-size") ||
               IS("threads") || IS("main-gpu") || IS("top-k") || IS("repeat-last-n") || IS("seed")) {
      if (!json_is_integer(v)) {
        rc = NN_INVALID_ARG;
        continue;
      }
      json_int_t x = json_integer_value(v);
      if (IS("ctx-size")) {
        if (x <= 0) x = m->hp.n_ctx_train; /* 0: the model's own */
        if (x > m->hp.n_ctx_train) x = m->hp.n_ctx_train;
        c.ctx_size = x;
      } else if (IS("n-predict")) c.n_predict = x < 0 ? -1 : x;
      else if (IS("batch-size")) c.batch_size = x > 0 ? x : 2048;
      else if (IS("top-k")) c.top_k = x;
      else if (IS("repeat-last-n")) c.repeat_last_n = x < 0 ? 64 : x;
      else if (IS("seed")) c.seed = (uint64_t)x;
      else if (x < -1) rc = NN_INVALID_ARG; /* n-gpu-layers, threads, …: accepted, not used on the CPU */
    } else if (IS("temp") || IS("top-p") || IS("min-p") || IS("repeat-penalty") || IS("presence-penalty") ||
               IS("frequency-penalty")) {
      if (!json_is_number(v)) {
        rc = NN_INVALID_ARG;
        continue;
      }
      double x = json_number_value(v);
      if (IS("temp")) c.temp = x < 0 ? 0 : x;
      else if (IS("top-p")) c.top_p = x;
      else if (IS("min-p")) c.min_p = x;
      else if (IS("repeat-penalty")) {
        if (x <= 0) rc = NN_INVALID_ARG;
        else c.repeat_penalty = x;
      }
    } else if (IS("reverse-prompt") || IS("grammar") || IS("json-schema") || IS("mmproj") || IS("image") ||
               IS("tensor-split")) {
      if (!json_is_string(v)) rc = NN_INVALID_ARG;
      else if (IS("reverse-prompt")) {
        if (strlen(json_string_value(v)) >= sizeof c.reverse_prompt) rc = NN_INVALID_ARG;
        else snprintf(c.reverse_prompt, sizeof c.reverse_prompt, "%s", json_string_value(v));
      } else if ((IS("grammar") || IS("json-schema")) && json_string_length(v) > 0) {
        rc = NN_INVALID_ARG; /* constrained sampling is not implemented: refuse rather than ignore */
      }
    }
#undef IS
  }
  json_decref(root);
  if (rc == NN_OK) *out = c;
  return rc;
}

/* ---- handles ------------------------------------------------------------------- */

static nn_graph *graph_of(dw_nn *nn, uint32_t h) {
  return nn && h < (uint32_t)nn->n_graphs && nn->graphs[h].live ? &nn->graphs[h] : NULL;
}

static nn_ctx *ctx_of(dw_nn *nn, uint32_t h) {
  return nn && h < (uint32_t)nn->n_ctxs && nn->ctxs[h].live ? &nn->ctxs[h] : NULL;
}

static uint32_t load_common(dw_instance *inst, uint32_t name, uint32_t name_len, uint32_t cfg, uint32_t cfg_len,
                            uint32_t out) {
  dw_nn *nn = NN(inst);
  if (!nn) return NN_INVALID_ARG;
  const char *pn = view(inst, name, name_len), *pc = cfg_len ? view(inst, cfg, cfg_len) : "";
  if (!pn || !pc || !view(inst, out, 4)) return NN_INVALID_ARG;
  int idx = dw_registry_find(nn->reg, pn, name_len);
  if (idx < 0) return NN_NOT_FOUND;
  for (int g = 0; g < nn->n_graphs; g++) /* a live graph for the alias: reuse it, ignore the config */
    if (nn->graphs[g].live && nn->graphs[g].reg_idx == idx) return put_u32(inst, out, (uint32_t)g) ? NN_OK : NN_INVALID_ARG;
  if (nn->n_graphs >= MAX_HANDLES) return NN_RUNTIME;
  dw_model *m;
  dw_status st = dw_registry_model(nn->reg, idx, &m); /* maps the file on first use */
  if (st) {
    dw_log(nn->settings, DW_LOG_ERROR, "[wasi-nn] %s", dw_last_error());
    return st == DW_ERR_IO ? NN_MODEL_NOT_FOUND : NN_INVALID_ARG; /* IO: the file cannot be opened */
  }
  nn_graph g = {.live = true, .reg_idx = idx, .model = m};
  cfg_defaults(&g.cfg, m);
  if (cfg_len) {
    int rc = cfg_apply(&g.cfg, m, pc, cfg_len);
    if (rc) return (uint32_t)rc;
  }
  nn_graph *ng = dw_realloc(nn->graphs, (size_t)(nn->n_graphs + 1) * sizeof *ng);
  if (!ng) return NN_RUNTIME;
  nn->graphs = ng;
  nn->graphs[nn->n_graphs] = g;
  put_u32(inst, out, (uint32_t)nn->n_graphs);
  nn->n_graphs++;
  return NN_OK;
}

static uint32_t h_load_by_name(dw_instance *inst, uint32_t name, uint32_t len, uint32_t out) {
  return load_common(inst, name, len, 0, 0, out);
}

static uint32_t h_load_by_name_with_config(dw_instance *inst, uint32_t name, uint32_t len, uint32_t cfg,
                                           uint32_t cfg_len, uint32_t out) {
  return load_common(inst, name, len, cfg, cfg_len, out);
}

static uint32_t h_load(dw_instance *inst, uint32_t builders, uint32_t count, uint32_t encoding, uint32_t target,
                       uint32_t out) {
  if (!view(inst, builders, (uint64_t)count * 8) || !view(inst, out, 4)) return NN_INVALID_ARG;
  if (encoding != ENC_GGML) return NN_INVALID_ENCODING;
  if (target > 2) return NN_INVALID_ARG;
  return NN_UNSUPPORTED; /* model bytes from guest memory: use --nn-preload and load_by_name */
}

static uint32_t h_init_execution_context(dw_instance *inst, uint32_t graph, uint32_t out) {
  dw_nn *nn = NN(inst);
  nn_graph *g = graph_of(nn, graph);
  if (!g || !view(inst, out, 4)) return NN_INVALID_ARG;
  if (nn->n_ctxs >= MAX_HANDLES) return NN_RUNTIME;
  nn_ctx *nc = dw_realloc(nn->ctxs, (size_t)(nn->n_ctxs + 1) * sizeof *nc);
  if (!nc) return NN_RUNTIME;
  nn->ctxs = nc;
  nn_ctx *c = &nn->ctxs[nn->n_ctxs];
  memset(c, 0, sizeof *c);
  c->live = true;
  c->engine = nn->engine;
  c->graph = (int)graph;
  c->model = g->model;
  c->cfg = g->cfg;
  put_u32(inst, out, (uint32_t)nn->n_ctxs);
  nn->n_ctxs++;
  return NN_OK;
}

static uint32_t h_finalize_execution_context(dw_instance *inst, uint32_t ctx) {
  nn_ctx *c = ctx_of(NN(inst), ctx);
  if (!c) return NN_INVALID_ARG;
  ctx_clear(c); /* leaves live = false */
  return NN_OK;
}

static uint32_t h_unload(dw_instance *inst, uint32_t graph) {
  nn_graph *g = graph_of(NN(inst), graph);
  if (!g) return NN_INVALID_ARG;
  g->live = false; /* contexts keep using the model, which the registry keeps */
  return NN_OK;
}

/* ---- input ---------------------------------------------------------------------- */

static void reset_output(nn_ctx *c) {
  c->out_len = 0;
  c->out_tokens = 0;
  c->piece_len = 0;
  c->single_active = false;
}

static uint32_t h_set_input(dw_instance *inst, uint32_t ctx, uint32_t index, uint32_t tensor) {
  nn_ctx *c = ctx_of(NN(inst), ctx);
  const uint8_t *t = view(inst, tensor, 20);
  if (!c || !t) return NN_INVALID_ARG;
  uint32_t f[5];
  memcpy(f, t, sizeof f); /* dims_ptr, dims_count, type, data_ptr, data_len */
  uint8_t type = (uint8_t)f[2];
  if (type != 0 && type != 1 && type != 3 && type != 4) return NN_INVALID_ARG;
  if (!view(inst, f[0], (uint64_t)f[1] * 4)) return NN_INVALID_ARG; /* dims are ignored, but must be there */
  const char *data = view(inst, f[3], f[4]);
  if (!data) return NN_INVALID_ARG;
  if (index == 1) return (uint32_t)cfg_apply(&c->cfg, c->model, data, f[4]);
  size_t cap = (size_t)f[4] + 8, n = 0;
  int32_t *ids = dw_malloc(cap * sizeof *ids);
  if (!ids) return NN_RUNTIME;
  dw_status st = dw_tokenize(c->model->tok, data, f[4], true, true, ids, cap, &n);
  if (st) {
    dw_free(ids);
    return NN_INVALID_ARG;
  }
  dw_free(c->input);
  c->input = ids;
  c->n_input = n;
  c->has_input = true;
  c->single_active = false;
  if (c->sess) dw_sess_truncate(c->sess, 0);
  return NN_OK;
}

/* ---- generation -------------------------------------------------------------------- */

static bool append(nn_ctx *c, const char *s, size_t n) {
  if (c->out_len + n + 1 > c->out_cap) {
    size_t nc = (c->out_len + n + 1) * 2;
    char *no = dw_realloc(c->out, nc);
    if (!no) return false;
    c->out = no, c->out_cap = nc;
  }
  memcpy(c->out + c->out_len, s, n);
  c->out_len += n;
  c->out[c->out_len] = 0;
  return true;
}

/* Fresh session (or emptied), logits buffer and sampler for a computation. */
static int begin(nn_ctx *c) {
  const dw_model *m = c->model;
  if (!c->has_input) return NN_INVALID_ARG;
  reset_output(c);
  if (c->sess && c->sess->n_ctx != (int)c->cfg.ctx_size) {
    dw_sess_free(c->sess);
    c->sess = NULL;
  }
  if (!c->sess && dw_sess_new((dw_model *)m, c->engine, (int)c->cfg.ctx_size, &c->sess) != DW_OK) return NN_INVALID_ARG;
  dw_sess_truncate(c->sess, 0);
  if (!c->logits && !(c->logits = dw_malloc((size_t)m->hp.n_vocab * sizeof *c->logits))) return NN_RUNTIME;
  dws_free(&c->smp);
  dws_params p = {(float)c->cfg.temp, (int32_t)c->cfg.top_k, (float)c->cfg.top_p, (float)c->cfg.min_p,
                  (float)c->cfg.repeat_penalty, (int32_t)c->cfg.repeat_last_n, c->cfg.seed};
  if (dws_init(&c->smp, &p, m->hp.n_vocab)) return NN_RUNTIME;
  return NN_OK;
}

static int eval_prompt(nn_ctx *c) {
  if ((int64_t)c->n_input > c->cfg.ctx_size - 4) return NN_PROMPT_TOO_LONG;
  if (c->n_input == 0) return NN_INVALID_ARG;
  for (size_t i = 0; i < c->n_input; i++) dws_accept(&c->smp, c->input[i]);
  dw_status st = dw_decode(c->sess, c->input, (int)c->n_input, c->logits, NULL);
  return st == DW_OK ? NN_OK : st == DW_ERR_LIMIT ? NN_CONTEXT_FULL : NN_RUNTIME;
}

/* Samples one token and appends its text (control tokens as their text,
 * as llama.cpp renders them). Returns the token. */
static int32_t sample_append(nn_ctx *c, bool *eog) {
  const dw_tok_info *ti = dw_tokenizer_info(c->model->tok);
  int32_t tok = dws_sample(&c->smp, c->logits);
  *eog = tok == ti->eos || tok == ti->eot;
  size_t n = 0;
  if (dw_token_type(c->model->tok, tok) == TT_CONTROL) {
    dw_gguf_str s = dw_token_text(c->model->tok, tok);
    n = s.n < sizeof c->piece ? s.n : sizeof c->piece;
    memcpy(c->piece, s.p, n);
  } else if (dw_token_piece(c->model->tok, tok, c->piece, sizeof c->piece, &n) != DW_OK) {
    n = n > sizeof c->piece ? sizeof c->piece : n;
  }
  c->piece_len = n;
  append(c, c->piece, n);
  c->out_tokens++;
  return tok;
}

static int embed(nn_ctx *c) {
  int dim = c->model->hp.dim;
  if ((int64_t)c->n_input > c->cfg.batch_size || (int64_t)c->n_input > c->cfg.ctx_size) return NN_PROMPT_TOO_LONG;
  if (c->n_input == 0) return NN_INVALID_ARG;
  float *e = dw_malloc((size_t)dim * sizeof *e);
  if (!e) return NN_RUNTIME;
  if (dw_embed(c->sess, c->input, (int)c->n_input, e) != DW_OK) {
    dw_free(e);
    return NN_RUNTIME;
  }
  char num[64];
  int k = snprintf(num, sizeof num, "{\"n_embedding\": %d, \"embedding\": [", dim);
  append(c, num, (size_t)k);
  for (int i = 0; i < dim; i++) {
    k = snprintf(num, sizeof num, "%s%.10g", i ? "," : "", e[i]);
    append(c, num, (size_t)k);
  }
  append(c, "]}", 2);
  dw_free(e);
  return NN_OK;
}

static uint32_t h_compute(dw_instance *inst, uint32_t ctx) {
  dw_nn *nn = NN(inst);
  nn_ctx *c = ctx_of(nn, ctx);
  if (!c) return NN_INVALID_ARG;
  int rc = begin(c);
  if (rc) return (uint32_t)rc;
  if (c->cfg.embedding) return (uint32_t)embed(c);
  double t0 = c->cfg.enable_log ? (double)clock() : 0;
  if ((rc = eval_prompt(c))) return (uint32_t)rc;
  for (int64_t i = 0; c->cfg.n_predict < 0 || i < c->cfg.n_predict; i++) {
    bool eog;
    int32_t tok = sample_append(c, &eog);
    if (c->cfg.stream_stdout && c->piece_len && write(nn->stdout_fd, c->piece, c->piece_len) < 0) { /* best effort */
    }
    if (eog || (c->cfg.reverse_prompt[0] && strstr(c->out, c->cfg.reverse_prompt))) break;
    if (c->sess->n_past + 1 > c->sess->n_ctx) return NN_CONTEXT_FULL;
    if (dw_decode(c->sess, &tok, 1, c->logits, NULL) != DW_OK) return NN_RUNTIME;
    if (dw_rt_deadline_passed()) dw_rt_deadline_trap(); /* the time limit covers this loop too */
  }
  if (c->cfg.enable_log)
    dw_log(NN(inst)->settings, DW_LOG_INFO, "[wasi-nn] compute: %zu prompt tokens, %lld output tokens, %.1f ms cpu",
           c->n_input, (long long)c->out_tokens, ((double)clock() - t0) * 1e3 / CLOCKS_PER_SEC);
  return NN_OK;
}

static uint32_t h_compute_single(dw_instance *inst, uint32_t ctx) {
  nn_ctx *c = ctx_of(NN(inst), ctx);
  int rc;
  if (!c) return NN_INVALID_ARG;
  if (!c->single_active) {
    if ((rc = begin(c)) || (rc = eval_prompt(c))) return (uint32_t)rc;
    c->single_active = true;
  }
  bool eog;
  int32_t tok = sample_append(c, &eog);
  if (eog) {
    c->single_active = false;
    return NN_EOS;
  }
  if (c->sess->n_past + 1 > c->sess->n_ctx) {
    c->single_active = false;
    return NN_CONTEXT_FULL;
  }
  if (dw_decode(c->sess, &tok, 1, c->logits, NULL) != DW_OK) {
    c->single_active = false;
    return NN_RUNTIME;
  }
  return NN_OK;
}

static uint32_t h_fini_single(dw_instance *inst, uint32_t ctx) {
  nn_ctx *c = ctx_of(NN(inst), ctx);
  if (!c) return NN_INVALID_ARG;
  reset_output(c);
  dws_free(&c->smp);
  return NN_OK;
}

/* ---- output ------------------------------------------------------------------------ */

static uint32_t put_out(dw_instance *inst, const char *s, size_t n, uint32_t buf, uint32_t max, uint32_t size_out) {
  char *p = view(inst, buf, max);
  if (!p || !view(inst, size_out, 4)) return NN_INVALID_ARG;
  memcpy(p, s, n < max ? n : max);
  put_u32(inst, size_out, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
  return NN_OK;
}

static uint32_t metadata(dw_instance *inst, const nn_ctx *c, uint32_t buf, uint32_t max, uint32_t size_out) {
  char js[256];
  int n = snprintf(js, sizeof js,
                   "{\"input_tokens\": %zu, \"output_tokens\": %lld, \"llama_build_number\": 0, "
                   "\"llama_commit\": \"driftwood\"}",
                   c->has_input ? c->n_input : 0, (long long)c->out_tokens);
  return put_out(inst, js, (size_t)n, buf, max, size_out);
}

static uint32_t h_get_output(dw_instance *inst, uint32_t ctx, uint32_t index, uint32_t buf, uint32_t max,
                             uint32_t size_out) {
  nn_ctx *c = ctx_of(NN(inst), ctx);
  if (!c) return NN_INVALID_ARG;
  if (index == 1) return metadata(inst, c, buf, max, size_out);
  return put_out(inst, c->out ? c->out : "", c->out_len, buf, max, size_out);
}

static uint32_t h_get_output_single(dw_instance *inst, uint32_t ctx, uint32_t index, uint32_t buf, uint32_t max,
                                    uint32_t size_out) {
  nn_ctx *c = ctx_of(NN(inst), ctx);
  if (!c) return NN_INVALID_ARG;
  if (index == 1) return metadata(inst, c, buf, max, size_out);
  return put_out(inst, c->piece, c->piece_len, buf, max, size_out);
}

#define F(name, sig) {"wasi_ephemeral_nn", #name, sig, (dw_fnptr)h_##name}

const dw_hostfn dw_nn_functions[] = {
    F(load, "i:iiiii"),
    F(load_by_name, "i:iii"),
    F(load_by_name_with_config, "i:iiiii"),
    F(init_execution_context, "i:ii"),
    F(finalize_execution_context, "i:i"),
    F(set_input, "i:iii"),
    F(compute, "i:i"),
    F(compute_single, "i:i"),
    F(fini_single, "i:i"),
    F(get_output, "i:iiiii"),
    F(get_output_single, "i:iiiii"),
    F(unload, "i:i"),
    {0},
};
