/*
 * models.c — the public model and session API (include/driftwood.h) over
 * the LLM engine, and the runtime's registry of models guests may open.
 *
 * A dw_model handle is the engine's reference-counted model: close drops the
 * caller's reference, sessions hold their own. Sessions decode on the
 * runtime's LLM engine, so the runtime must outlive them.
 */
#define _GNU_SOURCE
#include "api/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

dw_status dw_model_open(const char *path, uint32_t flags, dw_model **out) {
  return dw_model_load(path, (flags & DW_MODEL_VOCAB_ONLY) != 0, out);
}

void dw_model_close(dw_model *m) { dw_model_release(m); }

void dw_model_get_info(const dw_model *m, dw_model_info *out) { dw_model_info_get(m, out); }

void dw_model_describe(const dw_model *m, char *buf, size_t cap) {
  if (m->vocab_only) {
    const dw_tok_info *ti = dw_tokenizer_info(m->tok);
    snprintf(buf, cap, "vocabulary only: %s tokenizer%s%s, %d tokens", ti->kind == DW_TOK_SPM ? "llama (SPM)" : "gpt2 (BPE)",
             ti->kind == DW_TOK_BPE ? ", pre " : "", ti->pre, ti->n_tokens);
    return;
  }
  dw_model_summary(m, buf, cap);
}

dw_status dw_model_meta(const dw_model *m, const char *key, char *out, size_t cap, size_t *n_out) {
  return dw_model_meta_str(m, key, out, cap, n_out);
}

dw_status dw_model_tokenize(const dw_model *m, const char *text, size_t len, uint32_t flags, int32_t *out, size_t cap,
                            size_t *n_out) {
  return dw_tokenize(m->tok, text, len, flags & DW_TOKENIZE_ADD_SPECIAL, flags & DW_TOKENIZE_PARSE_SPECIAL, out, cap,
                     n_out);
}

dw_status dw_model_pretokenize(const dw_model *m, const char *text, size_t len, size_t *ends, size_t cap,
                               size_t *n_out) {
  return dw_pretokenize(m->tok, text, len, ends, cap, n_out);
}

dw_status dw_model_token_piece(const dw_model *m, int32_t token, char *out, size_t cap, size_t *n_out) {
  return dw_token_piece(m->tok, token, out, cap, n_out);
}

dw_status dw_runtime_add_model(dw_runtime *rt, const char *name, const char *path) {
  return dw_registry_add(&rt->models, name, path, true);
}

dw_status dw_runtime_add_nn_preload(dw_runtime *rt, const char *spec) {
  const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
  if (!c3 || c1 == spec || !c3[1])
    return dw_error_set(DW_ERR_INVALID_ARG, "--nn-preload needs alias:ENCODING:TARGET:path, got '%s'", spec);
  char alias[256], enc[32], target[32];
  if ((size_t)(c1 - spec) >= sizeof alias || (size_t)(c2 - c1 - 1) >= sizeof enc || (size_t)(c3 - c2 - 1) >= sizeof target)
    return dw_error_set(DW_ERR_INVALID_ARG, "--nn-preload: '%s' has a field that is too long", spec);
  snprintf(alias, sizeof alias, "%.*s", (int)(c1 - spec), spec);
  snprintf(enc, sizeof enc, "%.*s", (int)(c2 - c1 - 1), c1 + 1);
  snprintf(target, sizeof target, "%.*s", (int)(c3 - c2 - 1), c2 + 1);
  if (strcasecmp(enc, "ggml") != 0) {
    dw_log(&rt->settings, DW_LOG_WARN, "driftwood: --nn-preload %s: encoding '%s' is not supported (GGML is); entry dropped",
           alias, enc);
    return DW_OK;
  }
  if (strcasecmp(target, "cpu") && strcasecmp(target, "gpu") && strcasecmp(target, "tpu") && strcasecmp(target, "auto")) {
    dw_log(&rt->settings, DW_LOG_WARN, "driftwood: --nn-preload %s: unknown target '%s'; entry dropped", alias, target);
    return DW_OK;
  }
  return dw_registry_add(&rt->models, alias, c3 + 1, false);
}

dw_status dw_session_create(dw_runtime *rt, dw_model *m, int n_ctx, dw_session **out) {
  return dw_sess_new(m, rt->engine, n_ctx, out);
}

void dw_session_destroy(dw_session *s) { dw_sess_free(s); }

dw_status dw_session_decode(dw_session *s, const int32_t *tokens, int n, float *logits) {
  return dw_decode(s, tokens, n, logits, NULL);
}

int dw_session_length(const dw_session *s) { return s->n_past; }
dw_status dw_session_embed(dw_session *s, const int32_t *tokens, int n, float *out) {
  if (!s || !out || n <= 0 || !tokens) return dw_error_set(DW_ERR_INVALID_ARG, "embed: no tokens");
  return dw_embed(s, tokens, n, out);
}
dw_status dw_session_truncate(dw_session *s, int n_keep) { return dw_sess_truncate(s, n_keep); }
dw_status dw_session_fork(const dw_session *s, dw_session **out) { return dw_sess_fork(s, out); }

void dw_session_describe(const dw_session *s, char *buf, size_t cap) {
  snprintf(buf, cap, "engine %s: weights and buffers %.1f MiB of device memory, prepared in %.1f ms",
           dw_engine_name(s->engine), (double)s->w->device_bytes / (1 << 20), s->w->load_ms);
}
