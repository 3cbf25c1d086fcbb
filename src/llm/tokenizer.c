/*
 * tokenizer.c — SentencePiece-style BPE and byte-level BPE (see
 * tokenizer.h). Pre-tokenizer regexes run on PCRE2 (UTF + Unicode
 * properties); invalid UTF-8 never matches and is kept as its own piece.
 *
 * Both BPE flavours share one merge engine: symbols are contiguous byte
 * ranges of a work buffer kept in a linked list; candidate pairs sit in a
 * binary heap ordered by (key, left index), where key is −score (SPM) or
 * the merge rank (BPE); entries whose symbols changed are skipped.
 */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include "llm/tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_RE = 6 };

struct dw_tokenizer {
  dw_tok_info info;
  char pre[64];
  dw_gguf_str *text;    /* [n] */
  float *scores;        /* [n] or NULL */
  int32_t *types;       /* [n] */
  uint64_t hcap;
  int32_t *htab;        /* text → id, open addressing, -1 empty */
  uint64_t n_merges, mcap;
  dw_gguf_str *merges;
  int32_t *mtab;        /* merge text → rank */
  int n_special;
  int32_t *special;     /* ids, longest text first */
  int n_re;
  pcre2_code *re[MAX_RE];
  bool ignore_merges;
  int32_t byte_tok[256];
  uint16_t byte_cp[256];  /* BPE byte → code point */
  int16_t cp_byte[324];   /* code point → byte, -1 */
};

/* ---- hashing ------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
  return h;
}
#define FNV0 1469598103934665603ull

static bool table_init(uint64_t n, uint64_t *cap, int32_t **tab) {
  *cap = 16;
  while (*cap < n * 2) *cap <<= 1;
  if (!(*tab = dw_malloc(*cap * sizeof **tab))) return false;
  memset(*tab, 0xFF, *cap * sizeof **tab);
  return true;
}

int32_t dw_token_lookup(const dw_tokenizer *t, const char *s, size_t n) {
  for (uint64_t i = fnv(FNV0, s, n) & (t->hcap - 1);; i = (i + 1) & (t->hcap - 1)) {
    int32_t id = t->htab[i];
    if (id < 0) return -1;
    if (t->text[id].n == n && memcmp(t->text[id].p, s, n) == 0) return id;
  }
}

/* Rank of the merge "a b", or -1. */
static int32_t merge_rank(const dw_tokenizer *t, const char *a, size_t an, const char *b, size_t bn) {
  uint64_t h = fnv(fnv(fnv(FNV0, a, an), " ", 1), b, bn);
  for (uint64_t i = h & (t->mcap - 1);; i = (i + 1) & (t->mcap - 1)) {
    int32_t r = t->mtab[i];
    if (r < 0) return -1;
    const dw_gguf_str *m = &t->merges[r];
    if (m->n == an + 1 + bn && memcmp(m->p, a, an) == 0 && m->p[an] == ' ' && memcmp(m->p + an + 1, b, bn) == 0)
      return r;
  }
}

/* ---- loading --------------------------------------------------------------- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_A                                                                                  \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
#define RE_LLAMA3_B " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* CJK ideographs (to U+9FA5), U+0800..U+4E00 and Hangul syllables: the deepseek lists' ideograph class */
#define RE_DS_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* deepseek-llm's cased letters (Unicode L&, spelled out as in its tokenizer) */
#define RE_DS_CASED                                                                                              \
  "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-"   \
  "\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-"   \
  "\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-"     \
  "\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}"       \
  "\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-"      \
  "\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"        \
  "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-"      \
  "\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}"         \
  "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"        \
  "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}"         \
  "\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-"      \
  "\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"     \
  "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"      \
  "\\x{1E900}-\\x{1E943}]+"
/* bloom's word class: everything but whitespace and its sentence marks (and, as written upstream, ( | )) */
#define RE_BLOOM " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}\\x{60C})]+"

/* The pre-tokenizers llama.cpp accepts (../shared/specs/pretokenizers.md
 * §2, §5): the names that select each regex list, applied in order; the
 * lists of llama.cpp's std::regex path keep its one quirk, that `~` is not
 * a symbol (\p{S}) in deepseek-v3's. add_bos: BOS by default; no_bos: the
 * vocabulary has no BOS (chatglm). */
typedef struct pre_def {
  const char *names[14];
  const char *re[MAX_RE];
  bool ignore_merges, add_bos, no_bos;
} pre_def;

static const pre_def pre_defs[] = {
    {{"default"}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false, false},
    {{"gpt-2", "phi-2", "roberta-bpe", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code",
      "gigachat", "mpt", "olmo", "jais"},
     {RE_GPT2}, false, false, false},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3"}, {RE_LLAMA3_A "{1,3}|" RE_LLAMA3_B}, true, true, false},
    {{"dbrx", "smaug-bpe"}, {RE_LLAMA3_A "{1,3}|" RE_LLAMA3_B}, false, false, false},
    {{"chatglm-bpe"}, {RE_LLAMA3_A "{1,3}|" RE_LLAMA3_B}, .no_bos = true},
    {{"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"}, {RE_LLAMA3_A "|" RE_LLAMA3_B}, false, false, false},
    {{"starcoder", "smollm", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}, {"\\p{N}", RE_GPT2}, false, false, false},
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, false, false, false},
    {{"deepseek-llm"},
     {"[\\r\\n]", RE_DS_CASED, "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      "\\s+$", RE_DS_CJK, "\\p{N}+"}, false, false, false},
    {{"deepseek-coder"}, {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_DS_CJK, "\\p{N}"}, false, false, false},
    {{"deepseek-v3"},
     {"\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|(?:~|[^\\r\\n\\p{L}\\p{P}\\p{S}])?[\\p{L}\\p{M}]+|"
      " ?(?:(?!~)[\\p{P}\\p{S}])+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false, false},
    {{"bloom", "gpt3-finnish", "poro-chat"}, {RE_BLOOM}, false, false, false},
    {{"viking"}, {RE_BLOOM, "\\p{N}"}, false, false, false},
    {{"tekken"},
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+"
      "((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true, true, false},
    {{"chameleon"},
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2},
     .add_bos = true},
};

static const pre_def *compile_pre(dw_tokenizer *t, const char *name, dw_status *st) {
  *st = DW_OK;
  for (size_t d = 0; d < sizeof pre_defs / sizeof *pre_defs; d++)
    for (int k = 0; k < 14 && pre_defs[d].names[k]; k++) {
      if (strcmp(pre_defs[d].names[k], name) != 0) continue;
      t->ignore_merges = pre_defs[d].ignore_merges;
      for (int i = 0; i < MAX_RE && pre_defs[d].re[i]; i++) {
        int err;
        PCRE2_SIZE off;
        /* $ only at the end of a piece, as in llama.cpp's regex engine */
        t->re[i] = pcre2_compile((PCRE2_SPTR)pre_defs[d].re[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &err, &off,
                                 NULL);
        if (!t->re[i]) {
          *st = dw_error_set(DW_ERR_BACKEND, "tokenizer: pre-tokenizer '%s' regex %d: error %d", name, i, err);
          return NULL;
        }
        t->n_re = i + 1;
      }
      return &pre_defs[d];
    }
  *st = dw_error_set(DW_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer '%s' is not supported", name);
  return NULL;
}

static void build_byte_map(dw_tokenizer *t) {
  int n = 0;
  for (int i = 0; i < 324; i++) t->cp_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    t->byte_cp[b] = (uint16_t)(keep ? b : 0x100 + n++);
    t->cp_byte[t->byte_cp[b]] = (int16_t)b;
  }
}

static size_t put_cp(char *o, uint32_t cp) {
  if (cp < 0x80) return o[0] = (char)cp, 1;
  o[0] = (char)(0xC0 | cp >> 6);
  o[1] = (char)(0x80 | (cp & 0x3F));
  return 2; /* the byte map only uses code points < 0x800 */
}

static int cmp_len_desc(const void *a, const void *b, void *ctx) {
  const dw_tokenizer *t = ctx;
  uint64_t la = t->text[*(const int32_t *)a].n, lb = t->text[*(const int32_t *)b].n;
  return la < lb ? 1 : la > lb ? -1 : *(const int32_t *)a - *(const int32_t *)b;
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int32_t special_id(const dw_gguf *g, const char *key, int32_t def, int n) {
  uint64_t v;
  if (dw_gguf_get_u64(g, key, &v)) return v < (uint64_t)n ? (int32_t)v : -1;
  return def < n ? def : -1;
}

dw_status dw_tokenizer_load(const dw_gguf *g, dw_tokenizer **out) {
  *out = NULL;
  dw_gguf_str model;
  if (!dw_gguf_get_str(g, "tokenizer.ggml.model", &model))
    return dw_error_set(DW_ERR_BAD_MODEL, "tokenizer: tokenizer.ggml.model is missing");
  dw_tokenizer *t = dw_calloc(1, sizeof *t);
  if (!t) return dw_error_set(DW_ERR_NOMEM, "tokenizer");
  dw_status st = DW_OK;
#define FAIL(...) do { st = dw_error_set(__VA_ARGS__); goto fail; } while (0)
  if (dw_gguf_str_eq(model, "llama")) t->info.kind = DW_TOK_SPM;
  else if (dw_gguf_str_eq(model, "gpt2")) t->info.kind = DW_TOK_BPE;
  else FAIL(DW_ERR_UNSUPPORTED, "tokenizer: model '%.*s' is not supported (llama, gpt2 are)", (int)(model.n > 32 ? 32 : model.n), model.p);
  const dw_gguf_kv *tk = dw_gguf_find(g, "tokenizer.ggml.tokens");
  if (!tk || tk->type != GGUF_ARRAY || tk->arr_type != GGUF_STRING || tk->n == 0 || tk->n > (1u << 24))
    FAIL(DW_ERR_BAD_MODEL, "tokenizer: tokenizer.ggml.tokens is missing, empty or not a string array");
  int n = (int)tk->n;
  t->info.n_tokens = n;
  if (!(t->text = dw_malloc((size_t)n * sizeof *t->text)) || !(t->types = dw_malloc((size_t)n * sizeof *t->types)))
    FAIL(DW_ERR_NOMEM, "tokenizer");
  dw_gguf_arr_strs(tk, t->text);
  const dw_gguf_kv *ty = dw_gguf_find(g, "tokenizer.ggml.token_type");
  if (ty && (ty->type != GGUF_ARRAY || ty->arr_type != GGUF_I32 || ty->n < (uint64_t)n))
    FAIL(DW_ERR_BAD_MODEL, "tokenizer: token_type must be an i32 array of at least %d entries", n);
  for (int i = 0; i < n; i++) {
    int32_t v = TT_NORMAL;
    if (ty) memcpy(&v, ty->val + 4 * (size_t)i, 4);
    t->types[i] = v;
  }
  const dw_gguf_kv *sc = dw_gguf_find(g, "tokenizer.ggml.scores");
  if (t->info.kind == DW_TOK_SPM) {
    if (!sc || sc->type != GGUF_ARRAY || sc->arr_type != GGUF_F32 || sc->n < (uint64_t)n)
      FAIL(DW_ERR_BAD_MODEL, "tokenizer: scores must be an f32 array of at least %d entries", n);
    if (!(t->scores = dw_malloc((size_t)n * sizeof *t->scores))) FAIL(DW_ERR_NOMEM, "tokenizer");
    memcpy(t->scores, sc->val, (size_t)n * 4);
  }
  if (!table_init((uint64_t)n, &t->hcap, &t->htab)) FAIL(DW_ERR_NOMEM, "tokenizer");
  for (int i = 0; i < n; i++) { /* on duplicate texts the first id wins */
    if (dw_token_lookup(t, t->text[i].p, t->text[i].n) >= 0) continue;
    uint64_t h = fnv(FNV0, t->text[i].p, t->text[i].n) & (t->hcap - 1);
    while (t->htab[h] >= 0) h = (h + 1) & (t->hcap - 1);
    t->htab[h] = i;
  }
  for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
  if (t->info.kind == DW_TOK_SPM) {
    for (int i = 0; i < n; i++) {
      if (t->types[i] != TT_BYTE) continue;
      const char *q = t->text[i].p;
      int hi = t->text[i].n == 6 ? hexval(q[3]) : -1, lo = t->text[i].n == 6 ? hexval(q[4]) : -1;
      if (hi < 0 || lo < 0 || memcmp(q, "<0x", 3) != 0 || q[5] != '>')
        FAIL(DW_ERR_BAD_MODEL, "tokenizer: byte token %d is not <0xNN>", i);
      int v = hi << 4 | lo;
      if (t->byte_tok[v] < 0) t->byte_tok[v] = i;
    }
    t->info.bos = special_id(g, "tokenizer.ggml.bos_token_id", 1, n);
    t->info.eos = special_id(g, "tokenizer.ggml.eos_token_id", 2, n);
    t->info.unk = special_id(g, "tokenizer.ggml.unknown_token_id", 0, n);
    t->info.add_bos = true;
    t->info.add_space_prefix = true;
  } else {
    build_byte_map(t);
    for (int b = 0; b < 256; b++) {
      char s[4];
      t->byte_tok[b] = dw_token_lookup(t, s, put_cp(s, t->byte_cp[b]));
    }
    const dw_gguf_kv *mk = dw_gguf_find(g, "tokenizer.ggml.merges");
    if (!mk || mk->type != GGUF_ARRAY || mk->arr_type != GGUF_STRING)
      FAIL(DW_ERR_BAD_MODEL, "tokenizer: tokenizer.ggml.merges is missing or not a string array");
    if (mk->n > (1u << 24)) FAIL(DW_ERR_BAD_MODEL, "tokenizer: too many merges");
    t->n_merges = mk->n;
    if (!(t->merges = dw_malloc((mk->n ? mk->n : 1) * sizeof *t->merges)) || !table_init(mk->n, &t->mcap, &t->mtab))
      FAIL(DW_ERR_NOMEM, "tokenizer");
    dw_gguf_arr_strs(mk, t->merges);
    for (uint64_t r = 0; r < mk->n; r++) {
      const dw_gguf_str *m = &t->merges[r];
      const char *sp = m->n > 1 ? memchr(m->p + 1, ' ', m->n - 1) : NULL;
      if (!sp) FAIL(DW_ERR_BAD_MODEL, "tokenizer: merge %llu has no space", (unsigned long long)r);
      size_t an = (size_t)(sp - m->p);
      if (merge_rank(t, m->p, an, sp + 1, m->n - an - 1) >= 0) continue; /* duplicate: first wins */
      uint64_t h = fnv(FNV0, m->p, m->n) & (t->mcap - 1);
      while (t->mtab[h] >= 0) h = (h + 1) & (t->mcap - 1);
      t->mtab[h] = (int32_t)r;
    }
    dw_gguf_str pre;
    snprintf(t->pre, sizeof t->pre, "default");
    if (dw_gguf_get_str(g, "tokenizer.ggml.pre", &pre))
      snprintf(t->pre, sizeof t->pre, "%.*s", (int)(pre.n > 60 ? 60 : pre.n), pre.p);
    const pre_def *pd = compile_pre(t, t->pre, &st);
    if (!pd) goto fail;
    t->info.bos = pd->no_bos ? -1 : special_id(g, "tokenizer.ggml.bos_token_id", 11, n);
    t->info.eos = special_id(g, "tokenizer.ggml.eos_token_id", 11, n);
    t->info.unk = special_id(g, "tokenizer.ggml.unknown_token_id", n, n);
    t->info.add_bos = pd->add_bos;
  }
  t->info.pre = t->info.kind == DW_TOK_BPE ? t->pre : "";
  t->info.pad = special_id(g, "tokenizer.ggml.padding_token_id", n, n);
  dw_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->info.add_bos);
  dw_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->info.add_eos);
  dw_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->info.add_space_prefix);
  if (t->info.kind == DW_TOK_BPE) t->info.add_space_prefix = false;
  t->info.eot = special_id(g, "tokenizer.ggml.eot_token_id", n, n);
  if (t->info.eot < 0) {
    static const char *const eots[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>"};
    for (size_t i = 0; i < sizeof eots / sizeof *eots && t->info.eot < 0; i++)
      t->info.eot = dw_token_lookup(t, eots[i], strlen(eots[i]));
  }
  if (!(t->special = dw_malloc((size_t)n * sizeof *t->special))) FAIL(DW_ERR_NOMEM, "tokenizer");
  for (int i = 0; i < n; i++)
    if ((t->types[i] == TT_CONTROL || t->types[i] == TT_USER || t->types[i] == TT_UNKNOWN) && t->text[i].n)
      t->special[t->n_special++] = i;
  qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_len_desc, t);
  *out = t;
  return DW_OK;
fail:
  dw_tokenizer_free(t);
  return st;
#undef FAIL
}

void dw_tokenizer_free(dw_tokenizer *t) {
  if (!t) return;
  for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
  dw_free(t->text), dw_free(t->scores), dw_free(t->types), dw_free(t->htab), dw_free(t->merges), dw_free(t->mtab), dw_free(t->special);
  dw_free(t);
}

const dw_tok_info *dw_tokenizer_info(const dw_tokenizer *t) { return &t->info; }
dw_gguf_str dw_token_text(const dw_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->info.n_tokens ? t->text[id] : (dw_gguf_str){"", 0};
}
int dw_token_type(const dw_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->info.n_tokens ? t->types[id] : TT_UNDEF;
}

/* ---- output ------------------------------------------------------------------ */

typedef struct ids {
  int32_t *p;
  size_t cap, n;
} ids;

static void push(ids *o, int32_t id) {
  if (o->n < o->cap) o->p[o->n] = id;
  o->n++;
}

/* ---- the merge engine ---------------------------------------------------------- */

typedef struct sym {
  uint32_t off, len;
  int prev, next;
} sym;

typedef struct cand {
  double key;    /* smaller merges first */
  int left, right;
  uint32_t len;  /* len(left) + len(right) when queued: stale if changed */
} cand;

typedef struct heap {
  cand *a;
  size_t n, cap;
} heap;

static bool cand_less(const cand *x, const cand *y) {
  return x->key < y->key || (x->key == y->key && x->left < y->left);
}

static bool heap_push(heap *h, cand c) {
  if (h->n == h->cap) {
    size_t nc = h->cap ? h->cap * 2 : 64;
    cand *na = dw_realloc(h->a, nc * sizeof *na);
    if (!na) return false;
    h->a = na, h->cap = nc;
  }
  size_t i = h->n++;
  while (i && cand_less(&c, &h->a[(i - 1) / 2])) {
    h->a[i] = h->a[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->a[i] = c;
  return true;
}

static cand heap_pop(heap *h) {
  cand top = h->a[0], last = h->a[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && cand_less(&h->a[c + 1], &h->a[c])) c++;
    if (!cand_less(&h->a[c], &last)) break;
    h->a[i] = h->a[c];
    i = c;
  }
  if (h->n) h->a[i] = last;
  return top;
}

typedef struct merger {
  const dw_tokenizer *t;
  const char *buf;
  sym *s;
  heap h;
} merger;

static bool try_pair(merger *M, int l, int r) {
  if (l < 0 || r < 0) return true;
  const sym *a = &M->s[l], *b = &M->s[r];
  cand c = {0, l, r, a->len + b->len};
  if (M->t->info.kind == DW_TOK_SPM) {
    int32_t id = dw_token_lookup(M->t, M->buf + a->off, a->len + b->len);
    if (id < 0) return true;
    c.key = -(double)M->t->scores[id];
  } else {
    int32_t rank = merge_rank(M->t, M->buf + a->off, a->len, M->buf + b->off, b->len);
    if (rank < 0) return true;
    c.key = rank;
  }
  return heap_push(&M->h, c);
}

/* Merges the symbols of buf[0..n) (already split in s[0..ns)) and emits ids. */
static dw_status merge_emit(const dw_tokenizer *t, const char *buf, sym *s, int ns, ids *o) {
  merger M = {t, buf, s, {0}};
  for (int i = 0; i + 1 < ns; i++)
    if (!try_pair(&M, i, i + 1)) goto nomem;
  while (M.h.n) {
    cand c = heap_pop(&M.h);
    sym *a = &s[c.left], *b = &s[c.right];
    if (a->len == 0 || b->len == 0 || a->len + b->len != c.len || a->next != c.right) continue;
    a->len += b->len;
    b->len = 0;
    a->next = b->next;
    if (b->next >= 0) s[b->next].prev = c.left;
    if (!try_pair(&M, a->prev, c.left) || !try_pair(&M, c.left, a->next)) goto nomem;
  }
  dw_free(M.h.a);
  for (int i = 0; i >= 0 && i < ns; i = s[i].next) {
    int32_t id = dw_token_lookup(t, buf + s[i].off, s[i].len);
    if (id >= 0) {
      push(o, id);
      continue;
    }
    for (uint32_t k = 0; k < s[i].len; k++) { /* byte fallback */
      uint8_t b = (uint8_t)buf[s[i].off + k];
      if (t->info.kind == DW_TOK_BPE) { /* buf holds mapped code points: recover the byte */
        uint32_t cp = b, l = 1;
        if ((b & 0xE0) == 0xC0 && k + 1 < s[i].len) cp = (uint32_t)(b & 0x1F) << 6 | (buf[s[i].off + k + 1] & 0x3F), l = 2;
        k += l - 1;
        if (cp < 324 && t->cp_byte[cp] >= 0 && t->byte_tok[t->cp_byte[cp]] >= 0) push(o, t->byte_tok[t->cp_byte[cp]]);
      } else if (t->byte_tok[b] >= 0) {
        push(o, t->byte_tok[b]);
      } else if (t->info.unk >= 0) {
        push(o, t->info.unk);
      }
    }
  }
  return DW_OK;
nomem:
  dw_free(M.h.a);
  return dw_error_set(DW_ERR_NOMEM, "tokenize");
}

static int utf8_len(uint8_t c) {
  return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
}

/* ---- SPM -------------------------------------------------------------------------- */

static dw_status spm_fragment(const dw_tokenizer *t, const char *text, size_t len, bool prefix, ids *o) {
  size_t cap = (len + 1) * 3;
  char *buf = dw_malloc(cap);
  sym *s = dw_malloc((len + 1) * sizeof *s);
  if (!buf || !s) {
    dw_free(buf), dw_free(s);
    return dw_error_set(DW_ERR_NOMEM, "tokenize");
  }
  size_t n = 0;
  if (prefix) memcpy(buf, "\xe2\x96\x81", 3), n = 3;
  for (size_t i = 0; i < len; i++) {
    if (text[i] == ' ') memcpy(buf + n, "\xe2\x96\x81", 3), n += 3;
    else buf[n++] = text[i];
  }
  int ns = 0;
  for (size_t i = 0; i < n;) {
    size_t l = (size_t)utf8_len((uint8_t)buf[i]);
    if (l > n - i) l = n - i;
    s[ns] = (sym){(uint32_t)i, (uint32_t)l, ns - 1, ns + 1};
    ns++;
    i += l;
  }
  if (ns) s[ns - 1].next = -1;
  dw_status st = merge_emit(t, buf, s, ns, o);
  dw_free(buf), dw_free(s);
  return st;
}

/* ---- byte-level BPE ------------------------------------------------------------------ */

typedef struct span {
  size_t off, len;
} span;

typedef struct spans {
  span *a;
  size_t n, cap;
} spans;

static bool spans_add(spans *v, size_t off, size_t len) {
  if (!len) return true;
  if (v->n == v->cap) {
    size_t nc = v->cap ? v->cap * 2 : 32;
    span *na = dw_realloc(v->a, nc * sizeof *na);
    if (!na) return false;
    v->a = na, v->cap = nc;
  }
  v->a[v->n++] = (span){off, len};
  return true;
}

/* Splits text into pieces with each regex in turn; unmatched text is kept. */
static dw_status pretokenize(const dw_tokenizer *t, const char *text, size_t len, spans *out) {
  spans cur = {0}, next = {0};
  dw_status st = DW_OK;
  pcre2_match_data *md = NULL;
  if (!spans_add(&cur, 0, len)) goto nomem;
  for (int r = 0; r < t->n_re; r++) {
    if (!(md = pcre2_match_data_create_from_pattern(t->re[r], NULL))) goto nomem;
    next.n = 0;
    for (size_t i = 0; i < cur.n; i++) {
      const char *p = text + cur.a[i].off;
      size_t n = cur.a[i].len, pos = 0, last = 0;
      while (pos < n) {
        int rc = pcre2_match(t->re[r], (PCRE2_SPTR)p, n, pos, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* empty match: step one byte */
          pos = ov[0] + 1;
          continue;
        }
        if (!spans_add(&next, cur.a[i].off + last, ov[0] - last) ||
            !spans_add(&next, cur.a[i].off + ov[0], ov[1] - ov[0]))
          goto nomem;
        pos = last = ov[1];
      }
      if (!spans_add(&next, cur.a[i].off + last, n - last)) goto nomem;
    }
    pcre2_match_data_free(md);
    md = NULL;
    spans tmp = cur;
    cur = next, next = tmp;
  }
  dw_free(next.a);
  *out = cur;
  return st;
nomem:
  pcre2_match_data_free(md);
  dw_free(cur.a), dw_free(next.a);
  return dw_error_set(DW_ERR_NOMEM, "tokenize");
}

static dw_status bpe_fragment(const dw_tokenizer *t, const char *text, size_t len, ids *o) {
  spans pieces = {0};
  dw_status st = pretokenize(t, text, len, &pieces);
  if (st) return st;
  char *buf = dw_malloc(len * 2 + 1);
  sym *s = dw_malloc((len + 1) * sizeof *s);
  if (!buf || !s) st = dw_error_set(DW_ERR_NOMEM, "tokenize");
  for (size_t i = 0; !st && i < pieces.n; i++) {
    const uint8_t *p = (const uint8_t *)text + pieces.a[i].off;
    size_t n = 0;
    int ns = 0;
    for (size_t k = 0; k < pieces.a[i].len; k++) {
      size_t l = put_cp(buf + n, t->byte_cp[p[k]]);
      s[ns] = (sym){(uint32_t)n, (uint32_t)l, ns - 1, ns + 1};
      ns++;
      n += l;
    }
    s[ns - 1].next = -1;
    int32_t whole;
    if (t->ignore_merges && (whole = dw_token_lookup(t, buf, n)) >= 0) {
      push(o, whole);
      continue;
    }
    st = merge_emit(t, buf, s, ns, o);
  }
  dw_free(buf), dw_free(s), dw_free(pieces.a);
  return st;
}

/* ---- the public entry points ------------------------------------------------------------ */

dw_status dw_pretokenize(const dw_tokenizer *t, const char *text, size_t len, size_t *ends, size_t cap,
                         size_t *n_out) {
  *n_out = 0;
  if (t->info.kind != DW_TOK_BPE) {
    if (len && cap) ends[0] = len;
    *n_out = len ? 1 : 0;
    return len && !cap ? dw_error_set(DW_ERR_LIMIT, "pretokenize: 1 piece, room for 0") : DW_OK;
  }
  spans pieces = {0};
  dw_status st = len ? pretokenize(t, text, len, &pieces) : DW_OK;
  if (st) return st;
  for (size_t i = 0; i < pieces.n; i++) {
    if (!pieces.a[i].len) continue; /* gaps of nothing between adjacent matches */
    if (*n_out < cap) ends[*n_out] = pieces.a[i].off + pieces.a[i].len;
    ++*n_out;
  }
  dw_free(pieces.a);
  return *n_out > cap ? dw_error_set(DW_ERR_LIMIT, "pretokenize: %zu pieces, room for %zu", *n_out, cap) : DW_OK;
}

dw_status dw_tokenize(const dw_tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                      int32_t *out, size_t cap, size_t *n_out) {
  ids o = {out, cap, 0};
  dw_status st = DW_OK;
  spans frag = {0};   /* raw-text fragments; a special token is stored as len 0, off = id */
  bool *is_tok = NULL;
  *n_out = 0;
  if (add_special && t->info.add_bos && t->info.bos >= 0) push(&o, t->info.bos);
  if (len) {
    /* partition on special-token texts, longest first */
    size_t fcap = 16;
    frag.a = dw_malloc(fcap * sizeof *frag.a);
    is_tok = dw_malloc(fcap);
    if (!frag.a || !is_tok) goto nomem;
    frag.a[0] = (span){0, len};
    is_tok[0] = false;
    frag.n = 1, frag.cap = fcap;
    for (int si = 0; si < t->n_special; si++) {
      int32_t id = t->special[si];
      if (t->types[id] != TT_USER && !parse_special) continue;
      const dw_gguf_str tx = t->text[id];
      for (size_t f = 0; f < frag.n; f++) {
        if (is_tok[f] || frag.a[f].len < tx.n) continue;
        const char *base = text + frag.a[f].off;
        const char *hit = memmem(base, frag.a[f].len, tx.p, tx.n);
        if (!hit) continue;
        size_t pre = (size_t)(hit - base), post = frag.a[f].len - pre - tx.n;
        if (frag.n + 2 > frag.cap) {
          size_t nc = frag.cap * 2;
          span *na = dw_realloc(frag.a, nc * sizeof *na);
          if (!na) goto nomem;
          frag.a = na;
          bool *nb = dw_realloc(is_tok, nc);
          if (!nb) goto nomem;
          is_tok = nb;
          frag.cap = nc;
        }
        /* [pre][token][post]: replace f by up to three entries */
        span old = frag.a[f];
        size_t ins = (pre ? 1 : 0) + 1 + (post ? 1 : 0);
        memmove(frag.a + f + ins, frag.a + f + 1, (frag.n - f - 1) * sizeof *frag.a);
        memmove(is_tok + f + ins, is_tok + f + 1, frag.n - f - 1);
        size_t k = f;
        if (pre) frag.a[k] = (span){old.off, pre}, is_tok[k++] = false;
        frag.a[k] = (span){(size_t)id, 0}, is_tok[k++] = true;
        if (post) frag.a[k] = (span){old.off + pre + tx.n, post}, is_tok[k++] = false;
        frag.n += ins - 1;
        f = k - 2 + (post ? 0 : 1); /* continue scanning in the post part */
      }
    }
    bool prev_special = true;
    for (size_t f = 0; f < frag.n && !st; f++) {
      if (is_tok[f]) {
        push(&o, (int32_t)frag.a[f].off);
        prev_special = true;
        continue;
      }
      if (t->info.kind == DW_TOK_SPM)
        st = spm_fragment(t, text + frag.a[f].off, frag.a[f].len, t->info.add_space_prefix && prev_special, &o);
      else
        st = bpe_fragment(t, text + frag.a[f].off, frag.a[f].len, &o);
      prev_special = false;
    }
  }
  if (!st && add_special && t->info.add_eos && t->info.eos >= 0) push(&o, t->info.eos);
  dw_free(frag.a), dw_free(is_tok);
  if (st) return st;
  *n_out = o.n;
  if (o.n > cap) return dw_error_set(DW_ERR_LIMIT, "tokenize: %zu tokens do not fit in %zu", o.n, cap);
  return DW_OK;
nomem:
  dw_free(frag.a), dw_free(is_tok);
  return dw_error_set(DW_ERR_NOMEM, "tokenize");
}

dw_status dw_token_piece(const dw_tokenizer *t, int32_t id, char *out, size_t cap, size_t *n_out) {
  *n_out = 0;
  if (id < 0 || id >= t->info.n_tokens)
    return dw_error_set(DW_ERR_INVALID_ARG, "token %d is not in the vocabulary (%d)", id, t->info.n_tokens);
  int ty = t->types[id];
  const dw_gguf_str tx = t->text[id];
  size_t n = 0;
#define PUT(c) do { if (n < cap) out[n] = (char)(c); n++; } while (0)
  if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_UNUSED) {
    /* renders as nothing */
  } else if (ty == TT_USER) {
    for (size_t i = 0; i < tx.n; i++) PUT(tx.p[i]);
  } else if (t->info.kind == DW_TOK_SPM) {
    if (ty == TT_BYTE) {
      for (int b = 0; b < 256; b++)
        if (t->byte_tok[b] == id) PUT(b);
    } else {
      for (size_t i = 0; i < tx.n; i++) {
        if (i + 2 < tx.n && !memcmp(tx.p + i, "\xe2\x96\x81", 3)) {
          PUT(' ');
          i += 2;
        } else {
          PUT(tx.p[i]);
        }
      }
    }
  } else {
    for (size_t i = 0; i < tx.n;) {
      uint8_t c = (uint8_t)tx.p[i];
      uint32_t cp = c;
      size_t l = (size_t)utf8_len(c);
      if (l > tx.n - i) l = tx.n - i;
      if (l == 2) cp = (uint32_t)(c & 0x1F) << 6 | (tx.p[i + 1] & 0x3F);
      if (l <= 2 && cp < 324 && t->cp_byte[cp] >= 0) PUT(t->cp_byte[cp]);
      else for (size_t k = 0; k < l; k++) PUT(tx.p[i + k]); /* not byte-mapped: keep as is */
      i += l;
    }
  }
#undef PUT
  *n_out = n;
  if (n > cap) return dw_error_set(DW_ERR_LIMIT, "token piece of %zu bytes does not fit in %zu", n, cap);
  return DW_OK;
}
