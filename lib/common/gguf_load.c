/* gguf_load: a llama-architecture GGUF file as an engine model and tokenizer.
 *
 * The inverse of gguf_pack.c: llama.* keys -> struct as_model_config, blocks dequantized as
 * ggml does (gguf.c), q/k rows put back from the interleaved RoPE order into HF's rotate-half
 * order, so the one forward pass (forward.c) evaluates GGUF files like any checkpoint. The
 * tokenizer.ggml.* vocabulary is rebuilt as the equivalent tokenizer.json: "llama" vocabularies
 * get merges derived from the scores exactly as the llama2.c importer derives them (every split
 * of a token into two vocabulary tokens, by the token's score), "gpt2" ones their merges. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

int as_path_is_gguf(const char *path) {
    size_t n = strlen(path);
    return n > 5 && !strcmp(path + n - 5, ".gguf");
}

static int need_u32(const struct as_gguf *g, const char *key, int *out) {
    uint32_t v;
    int r = as_gguf_get_u32(g, key, &v);
    if (r < 0) return -1;
    if (r == 0) return as_fail("file %s: missing key %s", g->path, key);
    if (v == 0 || v > (1u << 30)) return as_fail("file %s: key %s: bad value %u", g->path, key, v);
    *out = (int)v;
    return 0;
}

/* Tensor `name` as f32 [rows, cols] (cols 0: a vector), rows taken back through perm (HF row
 * perm[r] = GGUF row r). */
static int load_tensor(const struct as_gguf *g, const char *name, int64_t rows, int64_t cols,
                       const int *perm, float *dst) {
    const struct as_gguf_tensor *t = as_gguf_find_tensor(g, name);
    if (!t) return as_fail("file %s: tensor %s missing", g->path, name);
    int nd = cols > 0 ? 2 : 1;
    int64_t ne0 = cols > 0 ? cols : rows;
    if (t->n_dims != nd || t->ne[0] != ne0 || (nd == 2 && t->ne[1] != rows))
        return as_fail("file %s: tensor %s: shape [%lld, %lld] (ne, innermost first), expected "
                       "[%lld, %lld]",
                       g->path, name, (long long)t->ne[0], (long long)t->ne[1], (long long)ne0,
                       (long long)(nd == 2 ? rows : 1));
    if (!perm) {
        as_gguf_tensor_to_f32(t, dst);
        return 0;
    }
    float *tmp = as_xmalloc(sizeof(float) * (size_t)(rows * cols));
    as_gguf_tensor_to_f32(t, tmp);
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + (size_t)perm[r] * cols, tmp + r * cols, sizeof(float) * (size_t)cols);
    free(tmp);
    return 0;
}

static float *load_new(const struct as_gguf *g, const char *name, int64_t rows, int64_t cols,
                       const int *perm) {
    float *p = as_xmalloc(sizeof(float) * (size_t)(rows * (cols > 0 ? cols : 1)));
    if (load_tensor(g, name, rows, cols, perm, p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int parse_config(const struct as_gguf *g, struct as_model_config *c) {
    memset(c, 0, sizeof *c);
    const char *arch = as_gguf_get_str(g, "general.architecture");
    if (!arch) return as_fail("file %s: missing key general.architecture", g->path);
    if (strcmp(arch, "llama"))
        return as_fail("file %s: general.architecture \"%s\" is not supported (llama)", g->path,
                       arch);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->arch = AS_ARCH_LLAMA;
    if (need_u32(g, "llama.embedding_length", &c->hidden) ||
        need_u32(g, "llama.feed_forward_length", &c->intermediate) ||
        need_u32(g, "llama.block_count", &c->n_layers) ||
        need_u32(g, "llama.attention.head_count", &c->n_heads))
        return -1;
    c->n_kv_heads = c->n_heads;
    c->max_pos = 2048;
    uint32_t v;
    if (as_gguf_get_u32(g, "llama.attention.head_count_kv", &v) < 0 ||
        as_gguf_get_u32(g, "llama.context_length", &v) < 0)
        return -1;
    if (as_gguf_get_u32(g, "llama.attention.head_count_kv", &v) == 1) c->n_kv_heads = (int)v;
    if (as_gguf_get_u32(g, "llama.context_length", &v) == 1) c->max_pos = (int)v;
    c->head_dim = c->hidden / c->n_heads;
    int r = as_gguf_get_u32(g, "llama.attention.key_length", &v);
    if (r < 0) return -1;
    if (r == 1) c->head_dim = (int)v;
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads || c->head_dim <= 0 || c->head_dim % 2)
        return as_fail("file %s: head_count %d, head_count_kv %d, head dim %d do not fit", g->path,
                       c->n_heads, c->n_kv_heads, c->head_dim);
    if ((r = as_gguf_get_u32(g, "llama.rope.dimension_count", &v)) < 0) return -1;
    if (r == 1 && (int)v != c->head_dim)
        return as_fail("file %s: llama.rope.dimension_count %u differs from the head dim %d "
                       "(partial RoPE is not supported)",
                       g->path, v, c->head_dim);
    const char *rs = as_gguf_get_str(g, "llama.rope.scaling.type");
    if (rs && strcmp(rs, "none"))
        return as_fail("file %s: llama.rope.scaling.type \"%s\" is not supported", g->path, rs);
    if (as_gguf_find_tensor(g, "rope_freqs.weight"))
        return as_fail("file %s: tensor rope_freqs (llama3 RoPE scaling) is not supported",
                       g->path);
    c->rms_eps = 1e-5f, c->rope_theta = 10000.0f;
    if (as_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c->rms_eps) < 0 ||
        as_gguf_get_f32(g, "llama.rope.freq_base", &c->rope_theta) < 0)
        return -1;
    const struct as_gguf_tensor *emb = as_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2)
        return as_fail("file %s: tensor token_embd missing or not 2-D", g->path);
    c->vocab = (int)emb->ne[1];
    c->tie_embeddings = !as_gguf_find_tensor(g, "output.weight");
    c->bos_id = c->eos_id = -1;
    if (as_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == 1) c->bos_id = (int)v;
    if (as_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == 1) c->eos_id = (int)v;
    c->rope_type = AS_ROPE_DEFAULT;
    return 0;
}

static const char *const gguf_lin[AS_LIN_COUNT] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                   "ffn_gate", "ffn_up", "ffn_down"};

struct as_model *as_model_load_gguf(const char *path) {
    struct as_gguf *g = as_gguf_open(path);
    if (!g) return NULL;
    struct as_model *m = as_xcalloc(1, sizeof *m);
    m->dir = as_xstrdup(path);
    int *perm_q = NULL, *perm_k = NULL;
    if (parse_config(g, &m->cfg)) goto fail;
    struct as_model_config *c = &m->cfg;
    m->inv_freq = as_xmalloc((size_t)c->head_dim / 2 * sizeof(float));
    m->attn_factor = as_rope_init(c, m->inv_freq);
    m->layers = as_xcalloc((size_t)c->n_layers, sizeof *m->layers);
    int H = c->hidden;
    if (!(m->embed = load_new(g, "token_embd.weight", c->vocab, H, NULL)) ||
        !(m->norm = load_new(g, "output_norm.weight", H, 0, NULL)))
        goto fail;
    if (c->tie_embeddings)
        m->lm_head = m->embed;
    else if (!(m->lm_head = load_new(g, "output.weight", c->vocab, H, NULL)))
        goto fail;
    perm_q = as_xmalloc(sizeof(int) * (size_t)c->n_heads * c->head_dim);
    perm_k = as_xmalloc(sizeof(int) * (size_t)c->n_kv_heads * c->head_dim);
    as_gguf_qk_perm(c->n_heads, c->head_dim, perm_q);
    as_gguf_qk_perm(c->n_kv_heads, c->head_dim, perm_k);
    for (int l = 0; l < c->n_layers; l++) {
        struct as_layer_weights *L = &m->layers[l];
        char name[128];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if (!(L->attn_norm = load_new(g, name, H, 0, NULL))) goto fail;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if (!(L->ffn_norm = load_new(g, name, H, 0, NULL))) goto fail;
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            int rows, cols;
            as_model_linear_shape(m, (enum as_linear)k, &rows, &cols);
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, gguf_lin[k]);
            const int *perm = k == AS_LIN_Q ? perm_q : k == AS_LIN_K ? perm_k : NULL;
            if (!(L->w[k] = load_new(g, name, rows, cols, perm))) goto fail;
        }
    }
    free(perm_q), free(perm_k);
    as_gguf_close(g);
    return m;
fail:
    free(perm_q), free(perm_k);
    as_gguf_close(g);
    as_model_free(m);
    return NULL;
}

/* ---- tokenizer ------------------------------------------------------------------------------ */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct split {
    float score;
    int id, at;
};
static int cmp_split(const void *pa, const void *pb) {
    const struct split *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return (a->at > b->at) - (a->at < b->at);
}

/* SentencePiece scores -> BPE merges: every split of a normal token t = a + b (at a UTF-8
 * character boundary) with a and b in the vocabulary, ordered by t's score (descending), then
 * id and split. A BPE taking the lowest-rank merge first (rank = first merge producing the
 * result) then merges the adjacent pair whose concatenation scores highest, as llama.cpp's
 * SentencePiece tokenizer does. */
static json_t *merges_from_scores(const struct as_gguf_kv *tok, const float *scores,
                                  const int32_t *types, const json_t *vocab) {
    size_t cap = 1024, n = 0;
    struct split *s = as_xmalloc(cap * sizeof *s);
    for (uint64_t id = 0; id < tok->n; id++) {
        if (types[id] != TT_NORMAL) continue;
        const char *p = tok->strs[id];
        size_t len = tok->lens[id];
        char *buf = as_xmalloc(len + 1);
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)p[k] & 0xC0) == 0x80) continue;
            memcpy(buf, p, k), buf[k] = 0;
            if (!json_object_get(vocab, buf) || !json_object_get(vocab, p + k)) continue;
            if (n == cap) s = as_xrealloc(s, (cap *= 2) * sizeof *s);
            s[n++] = (struct split){scores[id], (int)id, (int)k};
        }
        free(buf);
    }
    qsort(s, n, sizeof *s, cmp_split);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *p = tok->strs[s[i].id];
        char *m = as_xmalloc(tok->lens[s[i].id] + 2);
        memcpy(m, p, (size_t)s[i].at);
        m[s[i].at] = ' ';
        strcpy(m + s[i].at + 1, p + s[i].at);
        json_array_append_new(arr, json_string(m));
        free(m);
    }
    free(s);
    return arr;
}

static json_t *replace_step(const char *from, const char *to) {
    return json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", from, "content",
                     to);
}

struct as_tokenizer *as_tokenizer_load_gguf(const char *path) {
    struct as_gguf *g = as_gguf_open(path);
    if (!g) return NULL;
    struct as_tokenizer *t = NULL;
    json_t *root = NULL;
    int32_t *types = NULL;
    const char *model = as_gguf_get_str(g, "tokenizer.ggml.model");
    const struct as_gguf_kv *tok = as_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const struct as_gguf_kv *tt = as_gguf_find_kv(g, "tokenizer.ggml.token_type");
    const struct as_gguf_kv *sc = as_gguf_find_kv(g, "tokenizer.ggml.scores");
    const struct as_gguf_kv *mg = as_gguf_find_kv(g, "tokenizer.ggml.merges");
    int spm = model && !strcmp(model, "llama");
    if (!model || (!spm && strcmp(model, "gpt2"))) {
        as_fail("file %s: tokenizer.ggml.model \"%s\" is not supported (llama, gpt2)", path,
                model ? model : "(missing)");
        goto out;
    }
    if (!tok || tok->type != AS_GGUF_ARRAY || tok->arr_type != AS_GGUF_STRING) {
        as_fail("file %s: tokenizer.ggml.tokens missing or not an array of strings", path);
        goto out;
    }
    if (tt && (tt->type != AS_GGUF_ARRAY || tt->arr_type != AS_GGUF_I32 || tt->n != tok->n)) {
        as_fail("file %s: tokenizer.ggml.token_type must be %llu i32", path,
                (unsigned long long)tok->n);
        goto out;
    }
    if (spm &&
        (!sc || sc->type != AS_GGUF_ARRAY || sc->arr_type != AS_GGUF_F32 || sc->n != tok->n)) {
        as_fail("file %s: tokenizer.ggml.scores must be %llu f32 for a llama vocabulary", path,
                (unsigned long long)tok->n);
        goto out;
    }
    if (!spm && (!mg || mg->type != AS_GGUF_ARRAY || mg->arr_type != AS_GGUF_STRING)) {
        as_fail("file %s: tokenizer.ggml.merges missing for a gpt2 vocabulary", path);
        goto out;
    }
    const char *pre = as_gguf_get_str(g, "tokenizer.ggml.pre");
    if (!spm && pre && strcmp(pre, "gpt2") && strcmp(pre, "default")) {
        as_fail("file %s: tokenizer.ggml.pre \"%s\" is not supported (gpt2)", path, pre);
        goto out;
    }
    types = as_xmalloc(sizeof(int32_t) * (size_t)(tok->n ? tok->n : 1));
    for (uint64_t i = 0; i < tok->n; i++) {
        types[i] = TT_NORMAL;
        if (tt) memcpy(&types[i], (const char *)tt->arr + 4 * i, 4);
    }
    uint32_t v;
    int32_t bos = -1, eos = -1, unk = -1;
    if (as_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == 1) bos = (int32_t)v;
    if (as_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == 1) eos = (int32_t)v;
    if (as_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &v) == 1) unk = (int32_t)v;

    json_t *vocab = json_object(), *added = json_array();
    for (uint64_t i = 0; i < tok->n; i++) {
        if (types[i] == TT_UNUSED) continue;
        /* a duplicate string keeps its first id, as tokenizer.json's vocab can hold only one */
        if (!json_object_get(vocab, tok->strs[i]) &&
            json_object_setn_new(vocab, tok->strs[i], tok->lens[i], json_integer((json_int_t)i))) {
            json_decref(vocab), json_decref(added);
            as_fail("file %s: tokenizer.ggml.tokens[%llu] is not valid UTF-8", path,
                    (unsigned long long)i);
            goto out;
        }
        if (types[i] == TT_CONTROL || types[i] == TT_UNKNOWN || types[i] == TT_USER)
            json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b}", "id", (json_int_t)i,
                                                   "content", tok->strs[i], "normalized", 0,
                                                   "special", types[i] != TT_USER));
    }
    json_t *merges;
    if (spm) {
        merges = merges_from_scores(tok, sc->arr, types, vocab);
    } else {
        merges = json_array();
        for (uint64_t i = 0; i < mg->n; i++)
            json_array_append_new(merges, json_string(mg->strs[i]));
    }
    json_t *bpe = json_pack("{s:s, s:o, s:o, s:b, s:b}", "type", "BPE", "vocab", vocab, "merges",
                            merges, "byte_fallback", spm, "fuse_unk", spm);
    if (unk >= 0 && (uint64_t)unk < tok->n)
        json_object_set_new(bpe, "unk_token", json_string(tok->strs[unk]));
    root = json_pack("{s:o, s:o}", "model", bpe, "added_tokens", added);
    if (spm) {
        int prefix = 1;
        as_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix);
        const char *meta = "\xe2\x96\x81";
        json_t *norm = json_array();
        if (prefix)
            json_array_append_new(norm,
                                  json_pack("{s:s, s:s}", "type", "Prepend", "prepend", meta));
        json_array_append_new(norm, replace_step(" ", meta));
        json_object_set_new(root, "normalizer",
                            json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", norm));
        json_object_set_new(root, "decoder",
                            json_pack("{s:s, s:[o, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type",
                                      "Sequence", "decoders", replace_step(meta, " "), "type",
                                      "ByteFallback", "type", "Fuse", "type", "Strip", "content",
                                      " ", "start", prefix ? 1 : 0, "stop", 0));
    } else {
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                      "use_regex", 1));
        json_object_set_new(root, "decoder", json_pack("{s:s}", "type", "ByteLevel"));
    }
    t = as_tokenizer_from_json(path, root, bos, eos);
out:
    free(types);
    json_decref(root);
    as_gguf_close(g);
    return t;
}
