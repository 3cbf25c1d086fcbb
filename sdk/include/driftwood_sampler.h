/*
 * driftwood_sampler.h (SDK) — token samplers and chat templates that run in
 * the guest (and, compiled natively from the same source, in the host's
 * `driftwood generate` and WASI-NN compatibility layer).
 *
 * Everything a sampler needs — parameters, RNG state, the recent-token
 * window — lives in the dws_sampler struct, i.e. in the guest's memory, so
 * a snapshot of the guest captures it and a thawed actor continues the same
 * random sequence.
 *
 * Sampling order (as llama.cpp's default chain): repetition penalty over the
 * last `repeat_last_n` tokens → top-k → top-p → min-p → temperature →
 * draw. temp <= 0 is greedy (argmax after the penalty).
 *
 * Include this header and compile sdk/src/sampler.c into the guest.
 */
#ifndef DRIFTWOOD_SAMPLER_H
#define DRIFTWOOD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct dws_params {
  float temp;            /* <= 0: greedy. default 0.8 */
  int32_t top_k;         /* <= 0: off. default 40 */
  float top_p;           /* >= 1: off. default 0.95 */
  float min_p;           /* <= 0: off. default 0.05 */
  float repeat_penalty;  /* 1: off (default) */
  int32_t repeat_last_n; /* window for the penalty, default 64 */
  uint64_t seed;
} dws_params;

typedef struct dws_cand {
  int32_t id;
  float logit;
} dws_cand;

typedef struct dws_sampler {
  dws_params p;
  uint64_t rng;          /* splitmix64 state */
  int32_t n_vocab;
  int32_t n_recent;      /* tokens in the window (<= repeat_last_n) */
  int32_t recent_pos;    /* ring position */
  int32_t *recent;       /* [repeat_last_n] */
  dws_cand *cand;        /* [n_vocab] scratch */
} dws_sampler;

/* The defaults above. */
dws_params dws_default_params(void);
/* Returns 0, or -1 when memory is short. */
int dws_init(dws_sampler *s, const dws_params *p, int32_t n_vocab);
void dws_free(dws_sampler *s);
/* Picks the next token from logits[n_vocab] (not modified) and records it
 * in the penalty window. */
int32_t dws_sample(dws_sampler *s, const float *logits);
/* Records a token (e.g. of the prompt) in the penalty window. */
void dws_accept(dws_sampler *s, int32_t token);
/* Uniform in [0, 1), advancing the state. */
float dws_uniform(uint64_t *state);

/* ---- chat templates ---- */

enum { DWS_CHAT_CHATML = 0, DWS_CHAT_LLAMA3 = 1, DWS_CHAT_LLAMA2 = 2 };

typedef struct dws_msg {
  const char *role;      /* "system", "user", "assistant" */
  const char *content;
} dws_msg;

/* Detects the format from a model's tokenizer.chat_template text (NULL or
 * unknown: ChatML), by the markers llama.cpp uses. */
int dws_chat_detect(const char *tmpl, size_t len);
/* Renders messages, then the assistant prompt if add_assistant. Returns the
 * full length (may exceed cap; out is NUL-terminated when cap > 0). */
size_t dws_chat_render(int kind, const dws_msg *msgs, int n, int add_assistant, char *out, size_t cap);
/* One more user turn of a running conversation whose previous assistant
 * reply ended with its end-of-turn token: the text that follows it, up to
 * the assistant prompt (first: the conversation's opening, with the system
 * prompt if any). Returns the full length like dws_chat_render. */
size_t dws_chat_render_turn(int kind, const char *system, const char *user, int first, char *out, size_t cap);
/* Whether to tokenize the rendered text with add_special (BOS from the
 * vocabulary): 0 for formats that print their own BOS (Llama 3). Always
 * tokenize with parse_special. */
int dws_chat_add_special(int kind);

#endif
