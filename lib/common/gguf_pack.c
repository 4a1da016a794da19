/* gguf_pack: a Hugging Face Llama checkpoint plus quantized linears -> one llama.cpp GGUF file.
 *
 * What llama.cpp's "llama" architecture loader expects (convert_hf_to_gguf.py LlamaModel):
 * llama.* hyper-parameters, tokenizer.ggml.* vocabulary, tensor names token_embd / blk.N.* /
 * output_norm / output, and q/k rows in the interleaved RoPE order (as_gguf_qk_perm). Integer
 * codes of group-32 layers become Q4_0 / Q4_1 / Q8_0 blocks without re-rounding (float-minimum
 * layers, as-gptq --float-min, become Q4_1 with d = scale, m = minv); any other
 * matrix is written in the float type asked for, with a note on stderr for quantized layers
 * that could not be stored as blocks (docs/gguf.md). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "atomic_file.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "model.h"
#include "pack_ternary.h"
#include "qstream.h"
#include "quant_ternary.h"
#include "safetensors.h"
#include "tokenizer.h"

void as_gguf_qk_perm(int n_head, int head_dim, int *perm) {
    int half = head_dim / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                perm[h * head_dim + 2 * i + j] = h * head_dim + j * half + i;
}

static const char *const gguf_lin_names[AS_LIN_COUNT] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

/* ---- tokenizer metadata --------------------------------------------------------------------- */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

static int is_byte_piece(const char *p) {
    unsigned b;
    char end;
    return strlen(p) == 6 && sscanf(p, "<0x%2X%c", &b, &end) == 2 && end == '>';
}

/* Merge i of tokenizer.json as "a b" (string form or [a, b] pair form); NULL if malformed. */
static char *merge_text(const json_t *m) {
    if (json_is_string(m)) return as_xstrdup(json_string_value(m));
    if (json_is_array(m) && json_array_size(m) == 2) {
        const char *a = json_string_value(json_array_get(m, 0));
        const char *b = json_string_value(json_array_get(m, 1));
        if (!a || !b) return NULL;
        char *s = as_xmalloc(strlen(a) + strlen(b) + 2);
        sprintf(s, "%s %s", a, b);
        return s;
    }
    return NULL;
}

static int add_tokenizer(struct as_gguf_writer *w, const char *model_dir, int n_vocab) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    struct as_tokenizer *tok = as_tokenizer_load(path);
    if (!tok) return -1;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        as_tokenizer_free(tok);
        return as_fail("file %s: line %d: %s", path, je.line, je.text);
    }
    int rc = -1;
    int spm = as_tokenizer_kind(tok) == AS_TOK_SPM;
    const json_t *model = json_object_get(root, "model");
    const json_t *merges = json_object_get(model, "merges");
    size_t n_merges = json_array_size(merges);
    if (as_tokenizer_vocab_size(tok) > n_vocab) {
        as_fail("file %s: %d tokens but the model's vocab_size is %d", path,
                as_tokenizer_vocab_size(tok), n_vocab);
        goto out;
    }
    const char *unk_s = json_string_value(json_object_get(model, "unk_token"));
    int32_t unk = unk_s ? as_tokenizer_piece_to_id(tok, unk_s) : -1;
    int32_t bos = as_tokenizer_bos(tok), eos = as_tokenizer_eos(tok);
    char **tokens = as_xcalloc((size_t)n_vocab, sizeof *tokens);
    float *scores = as_xcalloc((size_t)n_vocab, sizeof *scores);
    int32_t *types = as_xcalloc((size_t)n_vocab, sizeof *types);
    for (int i = 0; i < n_vocab; i++) {
        const char *p = as_tokenizer_id_to_piece(tok, i);
        if (!p) { /* padding rows of the embedding: llama.cpp's converter names them [PADi] */
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            tokens[i] = as_xstrdup(pad);
            types[i] = TT_UNUSED;
            continue;
        }
        tokens[i] = as_xstrdup(p);
        types[i] = i == unk                                                  ? TT_UNKNOWN
                   : i == bos || i == eos || as_tokenizer_is_special(tok, i) ? TT_CONTROL
                   : spm && is_byte_piece(p)                                 ? TT_BYTE
                                                                             : TT_NORMAL;
    }
    /* Added tokens that are not special are user-defined (matched verbatim). */
    const json_t *added = json_object_get(root, "added_tokens");
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (id >= 0 && id < n_vocab && types[id] == TT_NORMAL &&
            !json_is_true(json_object_get(a, "special")))
            types[id] = TT_USER;
    }
    if (spm) {
        /* SentencePiece scores: llama.cpp merges the adjacent pair whose concatenation has the
         * highest score. tokenizer.json keeps only the merge order; the rank of the first merge
         * producing a token is its score's order (docs/tokenizers.md), so score = -rank. Tokens
         * no merge produces (characters, bytes, specials) rank below every merge result. */
        for (int i = 0; i < n_vocab; i++)
            scores[i] = -(float)(n_merges + (size_t)i);
        for (size_t i = n_merges; i-- > 0;) {
            char *m = merge_text(json_array_get(merges, i));
            char *sp = m ? strchr(m, ' ') : NULL;
            if (!sp) {
                free(m);
                as_fail("file %s: merges[%zu] is not \"a b\"", path, i);
                goto free_arrays;
            }
            memmove(sp, sp + 1, strlen(sp + 1) + 1); /* "a b" -> "ab" */
            int32_t r = as_tokenizer_piece_to_id(tok, m);
            free(m);
            if (r >= 0 && r < n_vocab) scores[r] = -(float)i;
        }
        as_gguf_set_str(w, "tokenizer.ggml.model", "llama");
    } else {
        as_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
        /* llama.cpp picks the pre-tokenizer regexes by name (llama-vocab.cpp): write the name
         * whose pipeline splits text as this tokenizer.json does (gguf_vocab.h) */
        char tc_path[4096];
        snprintf(tc_path, sizeof tc_path, "%s/tokenizer_config.json", model_dir);
        json_t *tcj = json_load_file(tc_path, 0, NULL);
        const json_t *cs = json_object_get(tcj, "clean_up_tokenization_spaces");
        const char *pre_name =
            as_gguf_pre_name_for(root, json_is_boolean(cs) ? json_is_true(cs) : -1);
        json_decref(tcj);
        if (!pre_name)
            fprintf(stderr,
                    "%s: note: %s: no llama.cpp pre-tokenizer name splits text as this "
                    "pre_tokenizer does; written as tokenizer.ggml.pre \"default\" (llama.cpp's "
                    "fallback regexes): llama.cpp may split text differently\n",
                    as_progname(), path);
        as_gguf_set_str(w, "tokenizer.ggml.pre", pre_name ? pre_name : "default");
        char **ms = as_xcalloc(n_merges ? n_merges : 1, sizeof *ms);
        for (size_t i = 0; i < n_merges; i++)
            if (!(ms[i] = merge_text(json_array_get(merges, i)))) {
                for (size_t j = 0; j < i; j++)
                    free(ms[j]);
                free(ms);
                as_fail("file %s: merges[%zu] is not \"a b\" or [a, b]", path, i);
                goto free_arrays;
            }
        as_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)ms, n_merges);
        for (size_t i = 0; i < n_merges; i++)
            free(ms[i]);
        free(ms);
    }
    as_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (uint64_t)n_vocab);
    if (spm) as_gguf_set_arr(w, "tokenizer.ggml.scores", AS_GGUF_F32, scores, (uint64_t)n_vocab);
    as_gguf_set_arr(w, "tokenizer.ggml.token_type", AS_GGUF_I32, types, (uint64_t)n_vocab);
    if (bos >= 0) as_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0) as_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (unk >= 0) as_gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    /* add_bos_token: tokenizer_config.json says so, else SentencePiece vocabularies add BOS */
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    json_t *tc = json_load_file(path, 0, NULL);
    const json_t *ab = json_object_get(tc, "add_bos_token");
    as_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", ab ? json_is_true(ab) : spm && bos >= 0);
    const json_t *ae = json_object_get(tc, "add_eos_token");
    as_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(ae));
    json_decref(tc);
    rc = 0;
free_arrays:
    for (int i = 0; i < n_vocab; i++)
        free(tokens[i]);
    free(tokens), free(scores), free(types);
out:
    json_decref(root);
    as_tokenizer_free(tok);
    return rc;
}

/* ---- tensors -------------------------------------------------------------------------------- */

/* Float-minimum layers (struct as_qlinear.minv): Q4_1 blocks with d = fp16(scale) and
 * m = fp16(minv). as-gptq --float-min searches d and m as stored in fp16, so both roundings are
 * exact there. -1 with the reason when a minimum overflows fp16 or the block type is not Q4_1. */
static int fmin_check(const struct as_qlinear *l, int bt, char *why, size_t why_len) {
    if (bt != AS_GGML_Q4_1) {
        snprintf(why, why_len, "a float minimum needs Q4_1 blocks (4-bit asymmetric)");
        return -1;
    }
    int G = as_qlinear_groups(l);
    for (size_t i = 0; i < (size_t)l->N * G; i++)
        if (!isfinite(as_f16_to_f32(as_f32_to_f16(l->minv[i])))) {
            snprintf(why, why_len, "row %zu group %zu: minimum %g overflows fp16", i / G, i % G,
                     l->minv[i]);
            return -1;
        }
    return 0;
}

/* The encoder writes d and the nibbles; m is the stored minimum instead of fp16(-d * zero). */
static void fmin_set_m(const struct as_qlinear *l, const int *row_perm, void *blocks) {
    int G = as_qlinear_groups(l), nb = l->K / AS_QK;
    for (int r = 0; r < l->N; r++) {
        int n = row_perm ? row_perm[r] : r;
        for (int b = 0; b < nb; b++)
            ((as_block_q4_1 *)blocks)[(size_t)r * nb + b].m =
                as_f32_to_f16(l->minv[(size_t)n * G + b]);
    }
}

/* What a reader computes from those blocks: fp16(d) * q + fp16(m) (ggml dequantize_row_q4_1). */
static void fmin_expected(const struct as_qlinear *l, float *out) {
    int G = as_qlinear_groups(l);
    for (int n = 0; n < l->N; n++)
        for (int k = 0; k < l->K; k++) {
            size_t gi = (size_t)n * G + l->g_idx[k];
            float d = as_f16_to_f32(as_f32_to_f16(l->scale[gi]));
            float m = as_f16_to_f32(as_f32_to_f16(l->minv[gi]));
            out[(size_t)n * l->K + k] = (float)l->q[(size_t)n * l->K + k] * d + m;
        }
}

/* Float matrix [rows, cols] (rows permuted by perm when given) as a GGUF tensor of type t. */
static int add_float(struct as_gguf_writer *w, const char *name, enum as_ggml_type t,
                     const float *src, int64_t rows, int64_t cols, const int *perm) {
    const float *rowsrc = src;
    float *tmp = NULL;
    if (perm) {
        tmp = as_xmalloc(sizeof(float) * (size_t)(rows * cols));
        for (int64_t r = 0; r < rows; r++)
            memcpy(tmp + r * cols, src + (size_t)perm[r] * cols, sizeof(float) * (size_t)cols);
        rowsrc = tmp;
    }
    size_t n = (size_t)(rows * (cols > 0 ? cols : 1));
    void *buf = as_xmalloc(n * as_ggml_type_size(t));
    as_ggml_from_f32(t, rowsrc, buf, n);
    free(tmp);
    int64_t ne[2] = {cols > 0 ? cols : rows, rows};
    return as_gguf_add_tensor(w, name, t, cols > 0 ? 2 : 1, ne, buf);
}

/* A tensor of the checkpoint as f32, or its replacement from the stream. */
static float *read_dense(const struct as_gguf_pack_opts *o, const struct as_ckpt *ck,
                         const char *name, int64_t rows, int64_t cols) {
    size_t n = (size_t)(rows * (cols > 0 ? cols : 1));
    float *p = as_xmalloc(sizeof(float) * n);
    for (int i = 0; i < o->n_override; i++)
        if (!strcmp(o->override_name[i], name)) {
            memcpy(p, o->override_data[i], sizeof(float) * n);
            return p;
        }
    if (as_weight_load_dense(ck, name, rows, cols, p)) {
        free(p);
        return NULL;
    }
    return p;
}

static enum as_llama_ftype ftype_of(enum as_ggml_type t) {
    switch (t) {
    case AS_GGML_F16:
        return AS_FTYPE_MOSTLY_F16;
    case AS_GGML_BF16:
        return AS_FTYPE_MOSTLY_BF16;
    case AS_GGML_Q4_0:
        return AS_FTYPE_MOSTLY_Q4_0;
    case AS_GGML_Q4_1:
        return AS_FTYPE_MOSTLY_Q4_1;
    case AS_GGML_Q8_0:
        return AS_FTYPE_MOSTLY_Q8_0;
    case AS_GGML_TQ1_0:
        return AS_FTYPE_MOSTLY_TQ1_0;
    case AS_GGML_TQ2_0:
        return AS_FTYPE_MOSTLY_TQ2_0;
    default:
        return AS_FTYPE_ALL_F32;
    }
}

/* A layer whose weights the quantizer rescaled (AWQ folds its input scales into this layer and
 * the one before it): the checkpoint's unquantized weights no longer fit the neighbouring
 * layers, so a fallback must keep the quantizer's W_hat. */
static int layer_rescaled(const struct as_qcollect *qc, const char *pfx) {
    for (int i = 0; qc && i < as_qcollect_count(qc); i++) {
        const char *p;
        const json_t *a;
        as_qcollect_get(qc, i, &p, &a);
        if (!strcmp(p, pfx)) {
            const char *m = json_string_value(json_object_get(a, "method"));
            return m && !strcmp(m, "awq");
        }
    }
    return 0;
}

/* Ternary layers (as-gptq --ternary tq1_0 / tq2_0: codes 0..2, zero 1, one f16 scale per
 * 256 weights) as llama.cpp's TQ1_0 / TQ2_0 blocks, rows in GGUF order (row_perm as in
 * as_gguf_encode_qlinear). 1 when written into *out (malloc'ed), 0 with the reason in why when
 * the layer is not TQ-shaped (the caller keeps it as floats and reports it), -1 with as_fail on
 * codes or scales a TQ block cannot hold (as_tern_pack names the tensor). */
static int tq_encode(const struct as_qlinear *l, enum as_ggml_type t, const char *name,
                     const int *row_perm, void **out, char *why, size_t why_len) {
    const enum as_tern_fmt f = t == AS_GGML_TQ1_0 ? AS_TF_TQ1_0 : AS_TF_TQ2_0;
    if (!as_tern_packable(f, l, why, why_len)) return 0;
    struct as_qlinear p = *l; /* rows permuted; the packer reads q, scale (and checks zero) */
    const int G = as_qlinear_groups(l);
    uint8_t *q = NULL;
    float *sc = NULL;
    int32_t *z = NULL;
    if (row_perm) {
        q = as_xmalloc((size_t)l->N * l->K);
        sc = as_xmalloc(sizeof(float) * (size_t)l->N * G);
        z = as_xmalloc(sizeof(int32_t) * (size_t)l->N * G);
        for (int r = 0; r < l->N; r++) {
            memcpy(q + (size_t)r * l->K, l->q + (size_t)row_perm[r] * l->K, (size_t)l->K);
            memcpy(sc + (size_t)r * G, l->scale + (size_t)row_perm[r] * G, sizeof(float) * G);
            memcpy(z + (size_t)r * G, l->zero + (size_t)row_perm[r] * G, sizeof(int32_t) * G);
        }
        p.q = q, p.scale = sc, p.zero = z;
    }
    *out = as_xmalloc(as_tern_packed_bytes(f, l->N, l->K));
    /* checked in the checkpoint's row order first, so that an error names the row as-gptq wrote */
    int rc = (row_perm && as_tern_pack_qlinear(f, name, l, *out)) ||
                     as_tern_pack_qlinear(f, name, &p, *out)
                 ? -1
                 : 1;
    if (rc < 0) free(*out), *out = NULL;
    free(q), free(sc), free(z);
    return rc;
}

/* The engine model read back must hold, for every linear, what a llama.cpp reader computes. */
static int verify_file(const char *path, const struct as_model_config *c,
                       const struct as_qcollect *qc, const struct as_gguf_pack_opts *o,
                       const enum as_ggml_type *stored) {
    struct as_model *m = as_model_load_gguf(path);
    if (!m) return -1;
    int rc = 0;
    for (int l = 0; l < c->n_layers && !rc; l++)
        for (int k = 0; k < AS_LIN_COUNT && !rc; k++) {
            char pfx[256];
            as_linear_prefix(l, (enum as_linear)k, pfx, sizeof pfx);
            const struct as_qlinear *q = qc ? as_qcollect_find(qc, pfx) : NULL;
            enum as_ggml_type t = stored[l * AS_LIN_COUNT + k];
            const int tq = t == AS_GGML_TQ1_0 || t == AS_GGML_TQ2_0;
            if (!q || (t != AS_GGML_Q4_0 && t != AS_GGML_Q4_1 && t != AS_GGML_Q8_0 && !tq)) {
                if (!q || (o->fallback_original && !layer_rescaled(qc, pfx)))
                    continue; /* the checkpoint's floats: checked by the tests */
            }
            size_t n = (size_t)q->N * q->K;
            float *want = as_xmalloc(sizeof(float) * n);
            if (q->minv && t == AS_GGML_Q4_1) {
                fmin_expected(q, want);
            } else if (t == AS_GGML_Q4_0 || t == AS_GGML_Q4_1 || t == AS_GGML_Q8_0) {
                as_gguf_qlinear_expected(q, t, want);
            } else if (tq) { /* ggml dequantize_row_tq*: fp16(d) * (code - 1), d exact in f16 */
                as_qlinear_dequant(q, want);
            } else { /* W_hat rounded to the float type */
                as_qlinear_dequant(q, want);
                void *b = as_xmalloc(n * 4);
                as_ggml_from_f32(t, want, b, n);
                as_ggml_to_f32(t, b, want, n);
                free(b);
            }
            if (memcmp(want, m->layers[l].w[k], sizeof(float) * n))
                rc = as_fail("verify: file %s: tensor %s: weights read back differ from the "
                             "quantizer's output",
                             path, pfx);
            free(want);
        }
    as_model_free(m);
    return rc;
}

int as_gguf_pack(const char *model_dir, const struct as_qcollect *qc, const char *out_path,
                 const struct as_gguf_pack_opts *o, struct as_gguf_pack_report *rep) {
    struct as_gguf_pack_report r = {0};
    int lock = -1; /* the output lock on out_path, held while it is written and verified */
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    struct as_model_config c;
    if (as_config_parse(path, &c)) return -1;
    if ((c.arch != AS_ARCH_LLAMA && c.arch != AS_ARCH_MISTRAL) || c.qkv_bias || c.qk_norm)
        return as_fail("file %s: model_type %s: GGUF output supports the llama architecture "
                       "(llama, mistral without biases or q/k norms)",
                       path, c.model_type);
    if (c.rope_type != AS_ROPE_DEFAULT)
        return as_fail("file %s: rope_scaling is not written to GGUF yet (docs/gguf.md)", path);
    if (o->float_type != AS_GGML_F32 && o->float_type != AS_GGML_F16 &&
        o->float_type != AS_GGML_BF16)
        return as_fail("GGUF float type must be F32, F16 or BF16");
    struct as_ckpt *ck = as_ckpt_open(model_dir);
    if (!ck) return -1;
    for (int i = 0; i < o->n_override; i++) { /* shapes match: as-pack checked the counts */
        if (!as_ckpt_find(ck, o->override_name[i])) {
            as_ckpt_close(ck);
            return as_fail("tensor %s: replaced by the stream but not in %s", o->override_name[i],
                           model_dir);
        }
    }
    struct as_gguf_writer *w = as_gguf_writer_new();
    enum as_ggml_type *stored = as_xcalloc((size_t)c.n_layers * AS_LIN_COUNT, sizeof *stored);
    int rc = -1, H = c.hidden;
    float *buf = NULL;

    const char *base = strrchr(model_dir, '/');
    base = base && base[1] ? base + 1 : model_dir;
    as_gguf_set_str(w, "general.architecture", "llama");
    as_gguf_set_str(w, "general.name", base);
    as_gguf_set_u32(w, "general.alignment", AS_GGUF_DEFAULT_ALIGNMENT);
    as_gguf_set_u32(w, "general.file_type", AS_FTYPE_ALL_F32); /* set below */
    as_gguf_set_u32(w, "general.quantization_version", 2);
    as_gguf_set_u32(w, "llama.vocab_size", (uint32_t)c.vocab);
    as_gguf_set_u32(w, "llama.context_length", (uint32_t)c.max_pos);
    as_gguf_set_u32(w, "llama.embedding_length", (uint32_t)H);
    as_gguf_set_u32(w, "llama.block_count", (uint32_t)c.n_layers);
    as_gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)c.intermediate);
    as_gguf_set_u32(w, "llama.attention.head_count", (uint32_t)c.n_heads);
    as_gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c.n_kv_heads);
    as_gguf_set_f32(w, "llama.rope.freq_base", c.rope_theta);
    as_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c.rms_eps);
    as_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)c.head_dim);
    if (c.head_dim * c.n_heads != H) { /* llama.cpp derives head_dim from n_embd otherwise */
        as_gguf_set_u32(w, "llama.attention.key_length", (uint32_t)c.head_dim);
        as_gguf_set_u32(w, "llama.attention.value_length", (uint32_t)c.head_dim);
    }
    if (add_tokenizer(w, model_dir, c.vocab)) goto out;

    enum as_ggml_type ft = o->float_type;
    if (!(buf = read_dense(o, ck, "model.embed_tokens.weight", c.vocab, H)) ||
        add_float(w, "token_embd.weight", ft, buf, c.vocab, H, NULL))
        goto out;
    free(buf), buf = NULL;
    int qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
    int *perm_q = as_xmalloc(sizeof(int) * (size_t)qd),
        *perm_k = as_xmalloc(sizeof(int) * (size_t)kvd);
    as_gguf_qk_perm(c.n_heads, c.head_dim, perm_q);
    as_gguf_qk_perm(c.n_kv_heads, c.head_dim, perm_k);
    int first_block_type = -1, err = 0;
    for (int l = 0; l < c.n_layers && !err; l++) {
        char name[256], gname[128];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        snprintf(gname, sizeof gname, "blk.%d.attn_norm.weight", l);
        if (!(buf = read_dense(o, ck, name, H, 0)) ||
            add_float(w, gname, AS_GGML_F32, buf, H, 0, NULL)) {
            err = 1;
            break;
        }
        free(buf), buf = NULL;
        for (int k = 0; k < AS_LIN_COUNT && !err; k++) {
            if (k == AS_LIN_GATE) { /* llama.cpp order: attn_norm, attn_*, ffn_norm, ffn_* */
                snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
                snprintf(gname, sizeof gname, "blk.%d.ffn_norm.weight", l);
                if (!(buf = read_dense(o, ck, name, H, 0)) ||
                    add_float(w, gname, AS_GGML_F32, buf, H, 0, NULL)) {
                    err = 1;
                    break;
                }
                free(buf), buf = NULL;
            }
            int rows, cols;
            struct as_model mm = {.cfg = c};
            as_model_linear_shape(&mm, (enum as_linear)k, &rows, &cols);
            const int *perm = k == AS_LIN_Q ? perm_q : k == AS_LIN_K ? perm_k : NULL;
            char pfx[256];
            as_linear_prefix(l, (enum as_linear)k, pfx, sizeof pfx);
            as_linear_tensor_name(l, (enum as_linear)k, name, sizeof name);
            snprintf(gname, sizeof gname, "blk.%d.%s.weight", l, gguf_lin_names[k]);
            const struct as_qlinear *q = qc ? as_qcollect_find(qc, pfx) : NULL;
            enum as_ggml_type t = ft;
            if (q) {
                r.n_quant++;
                if (q->N != rows || q->K != cols) {
                    as_fail("tensor %s: shape [%d,%d] in the model but [%d,%d] in the stream", name,
                            rows, cols, q->N, q->K);
                    err = 1;
                    break;
                }
                char why[256];
                if (o->tern_type) {
                    void *blocks = NULL;
                    const enum as_ggml_type tt = (enum as_ggml_type)o->tern_type;
                    int tr = tq_encode(q, tt, name, perm, &blocks, why, sizeof why);
                    if (tr < 0) {
                        err = 1;
                        break;
                    }
                    if (tr > 0) {
                        int64_t ne[2] = {cols, rows};
                        if (as_gguf_add_tensor(w, gname, tt, 2, ne, blocks)) {
                            err = 1;
                            break;
                        }
                        if (first_block_type < 0) first_block_type = tt;
                        r.n_blocks++;
                        stored[l * AS_LIN_COUNT + k] = tt;
                        continue;
                    }
                    r.n_fallback++;
                    fprintf(stderr, "%s: note: tensor %s: %s; written as %s %s\n", as_progname(),
                            name, why, as_ggml_type_name(ft),
                            o->fallback_original ? "(the checkpoint's unquantized weights)"
                                                 : "(dequantized quantizer output)");
                    goto floats;
                }
                int bt = as_gguf_qlinear_type(q, o->prefer_q4_1, why, sizeof why);
                if (bt >= 0 && q->minv && fmin_check(q, bt, why, sizeof why)) bt = -1;
                if (bt >= 0) {
                    t = (enum as_ggml_type)bt;
                    void *blocks = as_xmalloc(as_ggml_row_size(t, cols) * (size_t)rows);
                    as_gguf_encode_qlinear(q, t, perm, blocks);
                    if (q->minv) fmin_set_m(q, perm, blocks);
                    int64_t ne[2] = {cols, rows};
                    if (as_gguf_add_tensor(w, gname, t, 2, ne, blocks)) {
                        err = 1;
                        break;
                    }
                    if (first_block_type < 0) first_block_type = bt;
                    r.n_blocks++;
                    stored[l * AS_LIN_COUNT + k] = t;
                    continue;
                }
                r.n_fallback++;
                int rescaled = o->fallback_original && layer_rescaled(qc, pfx);
                fprintf(stderr, "%s: note: tensor %s: %s; written as %s %s\n", as_progname(), name,
                        why, as_ggml_type_name(ft),
                        o->fallback_original && !rescaled ? "(the checkpoint's unquantized weights)"
                        : rescaled ? "(dequantized quantizer output: AWQ rescaled this layer, the "
                                     "checkpoint's weights would not fit)"
                                   : "(dequantized quantizer output)");
            }
        floats:
            if (q && (!o->fallback_original || layer_rescaled(qc, pfx))) {
                buf = as_xmalloc(sizeof(float) * (size_t)rows * cols);
                as_qlinear_dequant(q, buf);
            } else if (!(buf = read_dense(o, ck, name, rows, cols))) {
                err = 1;
                break;
            }
            if (add_float(w, gname, ft, buf, rows, cols, perm)) err = 1;
            stored[l * AS_LIN_COUNT + k] = ft;
            free(buf), buf = NULL;
        }
    }
    free(perm_q), free(perm_k);
    if (err) goto out;
    if (qc)
        for (int i = 0; i < as_qcollect_count(qc); i++) {
            const char *pfx;
            as_qcollect_get(qc, i, &pfx, NULL);
            int layer;
            enum as_linear which;
            if (as_linear_parse(pfx, &layer, &which) || layer >= c.n_layers) {
                as_fail("tensor %s: quantized in the stream but not a decoder linear of %s", pfx,
                        model_dir);
                goto out;
            }
        }
    if (!(buf = read_dense(o, ck, "model.norm.weight", H, 0)) ||
        add_float(w, "output_norm.weight", AS_GGML_F32, buf, H, 0, NULL))
        goto out;
    free(buf), buf = NULL;
    if (!c.tie_embeddings) { /* tied: llama.cpp falls back to token_embd when output is absent */
        if (!(buf = read_dense(o, ck, "lm_head.weight", c.vocab, H)) ||
            add_float(w, "output.weight", ft, buf, c.vocab, H, NULL))
            goto out;
        free(buf), buf = NULL;
    }
    r.file_type = first_block_type >= 0 ? (int)ftype_of((enum as_ggml_type)first_block_type)
                                        : (int)ftype_of(ft);
    as_gguf_set_u32(w, "general.file_type", (uint32_t)r.file_type);
    /* Written and verified under a temporary name, then renamed: a failed or killed run never
     * leaves a file at out_path that looks whole. */
    if ((lock = as_output_lock(out_path)) == -1) goto out;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.verify.%d", out_path, (int)getpid());
    if (as_gguf_writer_write(w, tmp)) goto out;
    struct as_gguf *g = as_gguf_open(tmp);
    if (!g || (o->verify && verify_file(tmp, &c, qc, o, stored))) {
        as_gguf_close(g);
        unlink(tmp);
        goto out;
    }
    r.n_tensors = g->n_tensors;
    r.file_bytes = g->map_size;
    as_gguf_close(g);
    if (rename(tmp, out_path)) {
        as_fail("file %s: cannot rename %s into place: %s", out_path, tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    if (lock != -1) as_output_unlock(out_path, lock);
    free(buf);
    free(stored);
    as_gguf_writer_free(w);
    as_ckpt_close(ck);
    if (rep) *rep = r;
    return rc;
}
