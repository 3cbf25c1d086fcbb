/*
 * sampler.c (SDK) — the samplers and chat templates of driftwood_sampler.h.
 * Plain C11 with libc only, so it builds for wasm32-wasi and natively.
 */
#include "driftwood_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dws_params dws_default_params(void) {
  dws_params p = {0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0};
  return p;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float dws_uniform(uint64_t *state) { return (float)(splitmix(state) >> 40) * (1.0f / 16777216.0f); }

int dws_init(dws_sampler *s, const dws_params *p, int32_t n_vocab) {
  memset(s, 0, sizeof *s);
  s->p = *p;
  if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
  s->rng = p->seed;
  s->n_vocab = n_vocab;
  s->cand = malloc((size_t)(n_vocab > 0 ? n_vocab : 1) * sizeof *s->cand);
  s->recent = malloc((size_t)(s->p.repeat_last_n + 1) * sizeof *s->recent);
  if (!s->cand || !s->recent) {
    dws_free(s);
    return -1;
  }
  return 0;
}

void dws_free(dws_sampler *s) {
  free(s->cand);
  free(s->recent);
  s->cand = NULL;
  s->recent = NULL;
}

void dws_accept(dws_sampler *s, int32_t token) {
  if (s->p.repeat_last_n <= 0) return;
  s->recent[s->recent_pos] = token;
  s->recent_pos = (s->recent_pos + 1) % s->p.repeat_last_n;
  if (s->n_recent < s->p.repeat_last_n) s->n_recent++;
}

static int by_logit_desc(const void *a, const void *b) {
  float x = ((const dws_cand *)a)->logit, y = ((const dws_cand *)b)->logit;
  if (x != y) return x < y ? 1 : -1;
  return ((const dws_cand *)a)->id - ((const dws_cand *)b)->id;
}

/* Moves the k largest to c[0..k) (unordered), by quickselect. */
static void select_top(dws_cand *c, int32_t n, int32_t k) {
  int32_t lo = 0, hi = n - 1;
  while (lo < hi) {
    dws_cand pv = c[(lo + hi) / 2];
    int32_t i = lo, j = hi;
    while (i <= j) {
      while (by_logit_desc(&c[i], &pv) < 0) i++;
      while (by_logit_desc(&c[j], &pv) > 0) j--;
      if (i <= j) {
        dws_cand t = c[i];
        c[i++] = c[j];
        c[j--] = t;
      }
    }
    if (k - 1 <= j) hi = j;
    else if (k - 1 >= i) lo = i;
    else break;
  }
}

int32_t dws_sample(dws_sampler *s, const float *logits) {
  int32_t n = s->n_vocab;
  dws_cand *c = s->cand;
  for (int32_t i = 0; i < n; i++) c[i] = (dws_cand){i, logits[i]};
  if (s->p.repeat_penalty != 1.0f && s->p.repeat_penalty > 0)
    for (int32_t r = 0; r < s->n_recent; r++) {
      int32_t t = s->recent[r];
      if (t < 0 || t >= n) continue;
      int dup = 0; /* penalise each token once */
      for (int32_t q = 0; q < r; q++) dup |= s->recent[q] == t;
      if (dup) continue;
      c[t].logit = c[t].logit > 0 ? c[t].logit / s->p.repeat_penalty : c[t].logit * s->p.repeat_penalty;
    }
  int32_t tok;
  if (s->p.temp <= 0) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
      if (c[i].logit > c[best].logit) best = i;
    tok = c[best].id;
  } else if ((s->p.top_k <= 0 || s->p.top_k >= n) && s->p.top_p >= 1.0f && s->p.min_p <= 0) {
    /* nothing truncates (OpenAI's defaults): draw from the whole softmax in
     * vocabulary order, one exp per token, no sort (sorting 32k candidates
     * cost ~9 ms a token in a guest). The distribution is the one below. */
    float mx = c[0].logit;
    for (int32_t i = 1; i < n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += c[i].logit = (float)exp(((double)c[i].logit - mx) / s->p.temp);
    double u = dws_uniform(&s->rng) * sum, acc = 0;
    tok = n - 1;
    for (int32_t i = 0; i < n; i++)
      if (u < (acc += c[i].logit)) {
        tok = i;
        break;
      }
  } else {
    int32_t k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    if (k < n) select_top(c, n, k);
    qsort(c, (size_t)k, sizeof *c, by_logit_desc);
    /* probabilities before temperature, for top-p and min-p */
    float mx = c[0].logit;
    double sum = 0;
    for (int32_t i = 0; i < k; i++) sum += exp((double)c[i].logit - mx);
    if (s->p.top_p < 1.0f) {
      double cum = 0;
      int32_t keep = k;
      for (int32_t i = 0; i < k; i++) {
        cum += exp((double)c[i].logit - mx) / sum;
        if (cum >= s->p.top_p) {
          keep = i + 1;
          break;
        }
      }
      k = keep;
    }
    if (s->p.min_p > 0) {
      /* p_i >= min_p * p_max  <=>  logit_i >= mx + ln(min_p) */
      double floor_l = mx + log((double)s->p.min_p);
      int32_t keep = 1;
      while (keep < k && c[keep].logit >= floor_l) keep++;
      k = keep;
    }
    sum = 0;
    for (int32_t i = 0; i < k; i++) sum += exp(((double)c[i].logit - mx) / s->p.temp);
    double u = dws_uniform(&s->rng) * sum, acc = 0;
    tok = c[k - 1].id;
    for (int32_t i = 0; i < k; i++) {
      acc += exp(((double)c[i].logit - mx) / s->p.temp);
      if (u < acc) {
        tok = c[i].id;
        break;
      }
    }
  }
  dws_accept(s, tok);
  return tok;
}

/* ---- chat templates ---- */

static int has(const char *t, size_t n, const char *needle) {
  size_t m = strlen(needle);
  for (size_t i = 0; i + m <= n; i++)
    if (!memcmp(t + i, needle, m)) return 1;
  return 0;
}

int dws_chat_detect(const char *t, size_t n) {
  if (!t) return DWS_CHAT_CHATML;
  if (has(t, n, "<|start_header_id|>")) return DWS_CHAT_LLAMA3;
  if (has(t, n, "<|im_start|>")) return DWS_CHAT_CHATML;
  if (has(t, n, "[INST]")) return DWS_CHAT_LLAMA2;
  return DWS_CHAT_CHATML;
}

int dws_chat_add_special(int kind) { return kind != DWS_CHAT_LLAMA3; }

typedef struct out {
  char *p;
  size_t cap, n;
} out;

static void put(out *o, const char *s) {
  for (; *s; s++) {
    if (o->n + 1 < o->cap) o->p[o->n] = *s;
    o->n++;
  }
}

/* Content with leading/trailing whitespace removed (Llama 3 trims). */
static void put_trim(out *o, const char *s) {
  const char *e = s + strlen(s);
  while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
  while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t' || e[-1] == '\r')) e--;
  for (; s < e; s++) {
    if (o->n + 1 < o->cap) o->p[o->n] = *s;
    o->n++;
  }
}

size_t dws_chat_render(int kind, const dws_msg *m, int n, int add_assistant, char *buf, size_t cap) {
  out o = {buf, cap, 0};
  if (kind == DWS_CHAT_LLAMA3) {
    put(&o, "<|begin_of_text|>");
    for (int i = 0; i < n; i++) {
      put(&o, "<|start_header_id|>");
      put(&o, m[i].role);
      put(&o, "<|end_header_id|>\n\n");
      put_trim(&o, m[i].content);
      put(&o, "<|eot_id|>");
    }
    if (add_assistant) put(&o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
  } else if (kind == DWS_CHAT_LLAMA2) {
    const char *sys = NULL;
    int first_user = 1;
    for (int i = 0; i < n; i++) {
      if (!strcmp(m[i].role, "system")) {
        sys = m[i].content;
      } else if (!strcmp(m[i].role, "user")) {
        if (!first_user) put(&o, "<s>"); /* the first <s> is the tokenizer's BOS */
        put(&o, "[INST] ");
        if (sys) {
          put(&o, "<<SYS>>\n");
          put(&o, sys);
          put(&o, "\n<</SYS>>\n\n");
          sys = NULL;
        }
        put(&o, m[i].content);
        put(&o, " [/INST]");
        first_user = 0;
      } else {
        put(&o, " ");
        put(&o, m[i].content);
        put(&o, " </s>");
      }
    }
    (void)add_assistant; /* the assistant turn follows [/INST] directly */
  } else {
    for (int i = 0; i < n; i++) {
      put(&o, "<|im_start|>");
      put(&o, m[i].role);
      put(&o, "\n");
      put(&o, m[i].content);
      put(&o, "<|im_end|>\n");
    }
    if (add_assistant) put(&o, "<|im_start|>assistant\n");
  }
  if (cap) buf[o.n < cap ? o.n : cap - 1] = 0;
  return o.n;
}

size_t dws_chat_render_turn(int kind, const char *system, const char *user, int first, char *buf, size_t cap) {
  dws_msg m[2];
  int n = 0;
  if (first) {
    if (system) m[n++] = (dws_msg){"system", system};
    m[n++] = (dws_msg){"user", user};
    return dws_chat_render(kind, m, n, 1, buf, cap);
  }
  out o = {buf, cap, 0};
  if (kind == DWS_CHAT_LLAMA3) {
    put(&o, "<|start_header_id|>user<|end_header_id|>\n\n");
    put_trim(&o, user);
    put(&o, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  } else if (kind == DWS_CHAT_LLAMA2) {
    put(&o, "<s>[INST] ");
    put(&o, user);
    put(&o, " [/INST]");
  } else {
    put(&o, "\n<|im_start|>user\n");
    put(&o, user);
    put(&o, "<|im_end|>\n<|im_start|>assistant\n");
  }
  if (cap) buf[o.n < cap ? o.n : cap - 1] = 0;
  return o.n;
}
