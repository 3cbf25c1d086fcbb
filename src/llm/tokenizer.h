/*
 * tokenizer.h — text ↔ token ids from a GGUF vocabulary: SentencePiece-style
 * BPE (`llama`, scores + byte fallback) and byte-level BPE (`gpt2`, merges +
 * a regex pre-tokenizer chosen by tokenizer.ggml.pre).
 *
 * Invariants:
 *  1. Every id this module returns is < n_tokens.
 *  2. Special-token texts are split out first (user-defined always,
 *     control/unknown only with parse_special), longest first.
 *  3. Token strings point into the GGUF mapping, which must outlive us.
 *
 * Threads: immutable after load; tokenize/detokenize are reentrant.
 */
#ifndef DW_TOKENIZER_H
#define DW_TOKENIZER_H

#include "llm/gguf.h"

enum dw_tok_kind { DW_TOK_SPM = 1, DW_TOK_BPE = 2 };
enum dw_tok_type { TT_UNDEF = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef struct dw_tokenizer dw_tokenizer;

typedef struct dw_tok_info {
  int kind;                 /* dw_tok_kind */
  int n_tokens;
  int32_t bos, eos, eot, unk, pad;  /* -1 when absent */
  bool add_bos, add_eos, add_space_prefix;
  const char *pre;          /* BPE pre-tokenizer name */
} dw_tok_info;

DW_HIDDEN dw_status dw_tokenizer_load(const dw_gguf *g, dw_tokenizer **out);
DW_HIDDEN void dw_tokenizer_free(dw_tokenizer *t);
DW_HIDDEN const dw_tok_info *dw_tokenizer_info(const dw_tokenizer *t);

/* Tokenizes text[0..len) into out[0..cap). add_special: BOS/EOS as the vocab
 * asks; parse_special: control tokens written as text become their ids.
 * *n_out is the full count even when it exceeds cap (then DW_ERR_LIMIT). */
DW_HIDDEN dw_status dw_tokenize(const dw_tokenizer *t, const char *text, size_t len, bool add_special,
                                bool parse_special, int32_t *out, size_t cap, size_t *n_out);
/* The pre-tokenizer's pieces of text (driftwood.h dw_model_pretokenize). */
DW_HIDDEN dw_status dw_pretokenize(const dw_tokenizer *t, const char *text, size_t len, size_t *ends, size_t cap,
                                   size_t *n_out);
/* The bytes token id stands for (▁ → space, <0xNN> → a byte, byte-level BPE
 * decoded; control tokens → empty). *n_out is the full length even when it
 * exceeds cap (then DW_ERR_LIMIT). */
DW_HIDDEN dw_status dw_token_piece(const dw_tokenizer *t, int32_t id, char *out, size_t cap, size_t *n_out);
/* The raw vocabulary text of id (for --pieces). */
DW_HIDDEN dw_gguf_str dw_token_text(const dw_tokenizer *t, int32_t id);
DW_HIDDEN int dw_token_type(const dw_tokenizer *t, int32_t id);
/* Id of the exact vocab text, or -1. */
DW_HIDDEN int32_t dw_token_lookup(const dw_tokenizer *t, const char *text, size_t len);

#endif
