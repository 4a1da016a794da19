/* tokenizer: BPE tokenizers loaded from Hugging Face tokenizer.json (parsed with jansson).
 *
 * Two families (docs/tokenizers.md):
 *  - SentencePiece-style BPE (Llama 1/2, Mistral, the llama2.c import): '▁' for spaces, a dummy
 *    prefix, <0xXX> byte fallback. Merge rank = rank of the merge's RESULT token, ties broken
 *    leftmost, which reproduces llama2.c's "merge the highest-scoring pair" exactly.
 *  - Byte-level BPE (GPT-2, Llama-3, Qwen2/3): regex pre-tokenizer (PCRE2, UTF+UCP), GPT-2
 *    bytes_to_unicode alphabet, merges by rank, optional ignore_merges.
 * Added tokens (added_tokens[]) are matched verbatim in the input before pre-tokenization.
 * The whole text is encoded as one sequence (llama.cpp perplexity convention). */
#ifndef AS_TOKENIZER_H
#define AS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

struct as_tokenizer;

enum as_tok_kind {
    AS_TOK_SPM = 1,       /* SentencePiece-style BPE ('▁', byte fallback) */
    AS_TOK_BYTELEVEL = 2, /* GPT-2 style byte-level BPE */
};

/* Load a tokenizer.json (or a directory holding one). NULL with as_fail("FILE: problem") on error:
 * unreadable file, invalid JSON, unsupported model type / normalizer / pre-tokenizer, bad merge. */
struct as_tokenizer *as_tokenizer_load(const char *path);
void as_tokenizer_free(struct as_tokenizer *t);

enum as_tok_kind as_tokenizer_kind(const struct as_tokenizer *t);

/* Encode text[0..len) as one sequence; BOS first when add_bos and the tokenizer has a BOS.
 * *ids_out is malloc'ed (caller frees), *n_out its length. Returns 0, or -1 with as_fail. */
int as_tokenizer_encode(const struct as_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids_out, size_t *n_out);

/* Streaming decode of one token: writes the bytes that token contributes to the text into buf
 * (NUL-terminated when bufsize > 0) and returns their number (which may exceed bufsize - 1: then
 * the output is truncated, as snprintf). prev_id is the token before id (-1 if none): the
 * SentencePiece decoder strips the leading space of the first piece after BOS (prev_id == bos).
 * Special tokens (BOS/EOS/added special) decode to "" ; byte tokens <0xXX> to the raw byte.
 * Byte-level tokens may hold partial UTF-8 sequences: concatenate the bytes, then print.
 * Returns -1 with as_fail if id is out of range. */
int as_tokenizer_decode_piece(const struct as_tokenizer *t, int32_t prev_id, int32_t id, char *buf,
                              size_t bufsize);

/* Decode a whole id sequence to a malloc'ed NUL-terminated byte string (length in *len_out if
 * non-NULL). Equivalent to concatenating decode_piece with each id's predecessor as prev_id;
 * leading space after a leading BOS is stripped as above. NULL with as_fail on a bad id. */
char *as_tokenizer_decode(const struct as_tokenizer *t, const int32_t *ids, size_t n,
                          size_t *len_out);

int32_t as_tokenizer_bos(const struct as_tokenizer *t);        /* -1 if none */
int32_t as_tokenizer_eos(const struct as_tokenizer *t);        /* -1 if none */
int32_t as_tokenizer_vocab_size(const struct as_tokenizer *t); /* max id + 1 (incl. added) */
/* The model's own BOS rule, for as_tokenizer_encode's add_bos: 1 if the tokenizer has a BOS and
 * tokenizer_config.json's add_bos_token says so; without that key, 1 if the post-processor's
 * template starts with a special token; without either, 1 for SentencePiece tokenizers, 0 for
 * byte-level ones. GGUF tokenizers follow tokenizer.ggml.add_bos_token (gguf_vocab.h). */
int as_tokenizer_add_bos(const struct as_tokenizer *t);
void as_tokenizer_set_add_bos(struct as_tokenizer *t, int add_bos);

/* Vocabulary lookup: id of the token whose model text is `piece` (as in tokenizer.json, e.g.
 * "▁the", "Ġthe", "<0x0A>", "<s>"), or -1. */
int32_t as_tokenizer_piece_to_id(const struct as_tokenizer *t, const char *piece);
/* The model text of a token (as in tokenizer.json), for debugging; NULL if id out of range or
 * unused. Owned by the tokenizer. */
const char *as_tokenizer_id_to_piece(const struct as_tokenizer *t, int32_t id);
/* Non-zero if id is an added token marked special (BOS, EOS, <|endoftext|>, ...). */
int as_tokenizer_is_special(const struct as_tokenizer *t, int32_t id);

/* Build a tokenizer from an in-memory tokenizer.json object (jansson json_t), e.g. one rebuilt
 * from GGUF metadata (gguf_load.c). `label` names it in errors. bos/eos set the special ids
 * (-1 = none; -2 = detect as as_tokenizer_load does). NULL with as_fail on error. */
struct json_t;
struct as_tokenizer *as_tokenizer_from_json(const char *label, const struct json_t *root,
                                            int32_t bos, int32_t eos);

#endif
