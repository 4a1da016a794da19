/* llama2c: reader for Karpathy's llama2.c checkpoints and tokenizer.bin, plus the llama2.c
 * reference encoder and reference forward pass.
 *
 * Checkpoint (REFERENCE.md "llama2.c checkpoint format"): 7 int32 header, then fp32 arrays in the
 * llama2.c order, matrices [out, in] row-major, q/k rows in the interleaved-pair RoPE layout.
 * The encoder and the forward pass follow llama2.c's run.c line by line (interleaved RoPE, its own
 * weight order). They are kept as the independent oracle that the importer (as-import) and the HF
 * engine (forward.c) are tested against; nothing in the toolkit's main path uses them. */
#ifndef AS_LLAMA2C_H
#define AS_LLAMA2C_H

#include <stddef.h>

struct as_l2c_config {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier; /* vocab_size was positive in the header */
};

struct as_l2c_weights {
    float *token_embedding; /* [vocab, dim] */
    float *rms_att;         /* [L, dim] */
    float *wq, *wk, *wv;    /* [L, dim, dim], [L, kv_dim, dim], [L, kv_dim, dim] */
    float *wo;              /* [L, dim, dim] */
    float *rms_ffn;         /* [L, dim] */
    float *w1, *w2, *w3;    /* [L, hidden, dim], [L, dim, hidden], [L, hidden, dim] */
    float *rms_final;       /* [dim] */
    float *wcls;            /* [vocab, dim]; == token_embedding when shared */
};

struct as_l2c_model {
    struct as_l2c_config cfg;
    struct as_l2c_weights w;
    float *data; /* owns every array above */
    size_t n_floats;
};

/* Read a checkpoint; -1 with as_fail("file F: problem") for unreadable, truncated or bad headers.
 */
int as_l2c_load(const char *path, struct as_l2c_model *m);
void as_l2c_free(struct as_l2c_model *m);

struct as_l2c_tokenizer {
    int vocab_size;
    int max_token_length;
    char **vocab; /* NUL-terminated pieces (as stored: ' ' is a space, BOS is "\n<s>\n") */
    int *lens;    /* byte length of each piece */
    float *scores;
    int *sorted; /* ids sorted by piece, for lookup */
};

int as_l2c_tokenizer_load(const char *path, int vocab_size, struct as_l2c_tokenizer *t);
void as_l2c_tokenizer_free(struct as_l2c_tokenizer *t);
/* Piece id, or -1. */
int as_l2c_lookup(const struct as_l2c_tokenizer *t, const char *s, int len);
/* llama2.c's encode(): dummy prefix " ", UTF-8 characters with <0xXX> byte fallback (id byte+3),
 * then merge the adjacent pair whose concatenation has the highest score (first on ties).
 * ids must hold strlen(text) + 3 entries. Returns the number of ids. */
int as_l2c_encode(const struct as_l2c_tokenizer *t, const char *text, int bos, int eos, int *ids);
/* llama2.c's decode(): piece bytes for `id` following `prev` (leading space stripped after BOS,
 * <0xXX> turned into the raw byte). Writes at most 64 bytes; returns the length. */
int as_l2c_decode(const struct as_l2c_tokenizer *t, int prev, int id, char *out);

/* Reference forward pass (llama2.c run.c layout): logits[T, vocab] for tokens at positions
 * 0..T-1, computed one position at a time with its own KV cache. */
int as_l2c_forward_ref(const struct as_l2c_model *m, const int *tokens, int T, float *logits);

/* ---- conversion to the Hugging Face layout (as-import) ---- */

/* HF row index -> llama2.c row index for q/k: per head, HF row i < hd/2 is llama2.c row 2i and
 * HF row i + hd/2 is row 2i+1 (interleaved-pair RoPE -> rotate-half RoPE). */
int as_l2c_hf_row(int hf_row, int head_dim);
/* Write tokenizer.json (HF Llama/SentencePiece BPE form: vocab, merges derived from the scores,
 * byte fallback, U+2581 for spaces) to path. */
int as_l2c_write_tokenizer_json(const struct as_l2c_tokenizer *t, const char *path);
/* Write an HF checkpoint directory atomically: config.json, model.safetensors (F32),
 * generation_config.json and, when tok != NULL, tokenizer.json and tokenizer_config.json. */
int as_l2c_export_hf(const struct as_l2c_model *m, const struct as_l2c_tokenizer *tok,
                     const char *out_dir);

#endif
