/* gguf_vocab: a GGUF file's tokenizer.ggml.* vocabulary as the equivalent Hugging Face tokenizer.
 *
 * llama.cpp keeps a vocabulary as token strings, types, scores (SentencePiece, "llama") or merges
 * (byte-level BPE, "gpt2"), and picks the pre-tokenizer regexes by the NAME in
 * tokenizer.ggml.pre (llama-vocab.cpp). gguf_vocab.c turns that back into a tokenizer.json:
 * SentencePiece vocabularies get merges derived from the scores, byte-level ones the pipeline
 * that pre name stands for (docs/tokenizers.md, "GGUF vocabularies"), and a tokenizer_config.json
 * with the special tokens, the BOS/EOS rule and the chat template.
 * as_tokenizer_load_gguf (declared in gguf.h) is the engine's entry point. */
#ifndef AS_GGUF_VOCAB_H
#define AS_GGUF_VOCAB_H

#include <stddef.h>

#include "gguf.h"

struct json_t;

/* The tokenizer.json of an open GGUF as a new jansson object (caller json_decref's it). NULL
 * with as_fail("file F: problem"): unsupported tokenizer.ggml.model, unknown pre name, merges
 * that do not parse, tokens that are not UTF-8. */
struct json_t *as_gguf_vocab_tokenizer_json(const struct as_gguf *g);

/* The matching tokenizer_config.json (special tokens as strings, add_bos_token, add_eos_token,
 * chat_template verbatim, model_max_length = ARCH.context_length, tokenizer_class
 * PreTrainedTokenizerFast, clean_up_tokenization_spaces as llama.cpp sets it for the pre name). */
struct json_t *as_gguf_vocab_config_json(const struct as_gguf *g);

/* llama.cpp's BOS / EOS rule: tokenizer.ggml.add_bos_token / add_eos_token when present, else
 * the vocabulary's default (BOS: SentencePiece "llama" yes; byte-level only for the Llama-3
 * family of pre names; EOS: no). 1 or 0, -1 with as_fail on a key of the wrong type or an
 * unsupported vocabulary. */
int as_gguf_vocab_add_bos(const struct as_gguf *g);
int as_gguf_vocab_add_eos(const struct as_gguf *g);

/* Write DIR/tokenizer.json and DIR/tokenizer_config.json (DIR must exist). Both are built in
 * memory first and each written atomically, so on failure (-1 with as_fail) neither is left. */
int as_gguf_vocab_write_hf(const struct as_gguf *g, const char *dir);

/* The tokenizer.ggml.pre name whose pipeline splits text as tokenizer_json's pre_tokenizer (and
 * BPE ignore_merges, NFC normalizer) do, for writing a GGUF: e.g. Digits + ByteLevel -> "smollm"
 * or "starcoder" (clean_spaces 0/1 picks between names that split alike; -1: no preference),
 * plain ByteLevel -> "gpt-2", Llama 3's Split -> "llama-bpe". NULL when no name fits. */
const char *as_gguf_pre_name_for(const struct json_t *tokenizer_json, int clean_spaces);

/* The i-th GGUF pre-tokenizer name gguf_vocab.c knows, NULL past the last (for tests). */
const char *as_gguf_pre_name(size_t i);

#endif
