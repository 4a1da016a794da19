/* gguf_load: a llama, qwen2 or qwen3 GGUF file as an engine model.
 *
 * The inverse of gguf_pack.c: ARCH.* keys -> struct as_model_config, blocks dequantized as
 * ggml does (gguf.c), llama's q/k rows put back from the interleaved RoPE order into HF's
 * rotate-half order, so the one forward pass (forward.c) evaluates GGUF files like any
 * checkpoint, and as-import writes them out as Hugging Face checkpoints (gguf_import.c). The
 * tokenizer.ggml.* vocabulary is gguf_vocab.c's. */
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

/* The GGUF architectures the engine runs, and how llama.cpp's converter stored them. Only
 * "llama" has its q/k rows permuted (convert_hf_to_gguf.py LlamaModel.permute: llama.cpp's
 * LLAMA_ROPE_TYPE_NORM rotates adjacent pairs); qwen2/qwen3 use NEOX RoPE (rotate-half, HF's own
 * order) and are stored unpermuted. */
static const struct gguf_arch {
    const char *name;
    enum as_arch arch;
    int qk_permuted, qkv_bias, qk_norm;
} gguf_archs[] = {
    {"llama", AS_ARCH_LLAMA, 1, 0, 0},
    {"qwen2", AS_ARCH_QWEN2, 0, 1, 0},
    {"qwen3", AS_ARCH_QWEN3, 0, 0, 1},
};

static const struct gguf_arch *find_arch(const char *name) {
    for (size_t i = 0; i < sizeof gguf_archs / sizeof gguf_archs[0]; i++)
        if (!strcmp(gguf_archs[i].name, name)) return &gguf_archs[i];
    return NULL;
}

/* "ARCH.suffix" */
static const char *akey(const struct gguf_arch *a, const char *suffix, char *buf, size_t n) {
    snprintf(buf, n, "%s.%s", a->name, suffix);
    return buf;
}

static int parse_config(const struct as_gguf *g, struct as_model_config *c,
                        const struct gguf_arch **arch_out) {
    memset(c, 0, sizeof *c);
    const char *an = as_gguf_get_str(g, "general.architecture");
    if (!an) return as_fail("file %s: missing key general.architecture", g->path);
    const struct gguf_arch *a = find_arch(an);
    if (!a)
        return as_fail("file %s: general.architecture \"%s\" is not supported (llama, qwen2, "
                       "qwen3)",
                       g->path, an);
    *arch_out = a;
    snprintf(c->model_type, sizeof c->model_type, "%s", a->name);
    c->arch = a->arch;
    c->qkv_bias = a->qkv_bias;
    c->qk_norm = a->qk_norm;
    char k[128];
    if (need_u32(g, akey(a, "embedding_length", k, sizeof k), &c->hidden) ||
        need_u32(g, akey(a, "feed_forward_length", k, sizeof k), &c->intermediate) ||
        need_u32(g, akey(a, "block_count", k, sizeof k), &c->n_layers) ||
        need_u32(g, akey(a, "attention.head_count", k, sizeof k), &c->n_heads))
        return -1;
    c->n_kv_heads = c->n_heads;
    c->max_pos = 2048;
    uint32_t v;
    int r;
    if ((r = as_gguf_get_u32(g, akey(a, "attention.head_count_kv", k, sizeof k), &v)) < 0)
        return -1;
    if (r == 1) c->n_kv_heads = (int)v;
    if ((r = as_gguf_get_u32(g, akey(a, "context_length", k, sizeof k), &v)) < 0) return -1;
    if (r == 1) c->max_pos = (int)v;
    c->head_dim = c->hidden / c->n_heads;
    if ((r = as_gguf_get_u32(g, akey(a, "attention.key_length", k, sizeof k), &v)) < 0) return -1;
    if (r == 1) c->head_dim = (int)v;
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads || c->head_dim <= 0 || c->head_dim % 2)
        return as_fail("file %s: head_count %d, head_count_kv %d, head dim %d do not fit", g->path,
                       c->n_heads, c->n_kv_heads, c->head_dim);
    if ((r = as_gguf_get_u32(g, akey(a, "attention.value_length", k, sizeof k), &v)) < 0) return -1;
    if (r == 1 && (int)v != c->head_dim)
        return as_fail("file %s: %s %u differs from the key length %d (not supported)", g->path, k,
                       v, c->head_dim);
    if ((r = as_gguf_get_u32(g, akey(a, "rope.dimension_count", k, sizeof k), &v)) < 0) return -1;
    if (r == 1 && (int)v != c->head_dim)
        return as_fail("file %s: %s %u differs from the head dim %d (partial RoPE is not "
                       "supported)",
                       g->path, k, v, c->head_dim);
    c->rms_eps = 1e-5f, c->rope_theta = 10000.0f;
    c->rope_type = AS_ROPE_DEFAULT;
    if (as_gguf_get_f32(g, akey(a, "attention.layer_norm_rms_epsilon", k, sizeof k), &c->rms_eps) <
            0 ||
        as_gguf_get_f32(g, akey(a, "rope.freq_base", k, sizeof k), &c->rope_theta) < 0)
        return -1;
    if (!(c->rms_eps > 0) || !(c->rope_theta > 0))
        return as_fail("file %s: rms epsilon %g / rope freq_base %g must be positive", g->path,
                       (double)c->rms_eps, (double)c->rope_theta);
    /* RoPE scaling as llama.cpp's converter writes it (ARCH.rope.scaling.*): linear and yarn map
     * onto HF rope_scaling; llama3's frequency factors live in a rope_freqs tensor instead. */
    const char *rs = as_gguf_get_str(g, akey(a, "rope.scaling.type", k, sizeof k));
    if (rs && strcmp(rs, "none")) {
        if (strcmp(rs, "linear") && strcmp(rs, "yarn"))
            return as_fail("file %s: %s \"%s\" is not supported (none, linear, yarn)", g->path, k,
                           rs);
        c->rope_type = !strcmp(rs, "linear") ? AS_ROPE_LINEAR : AS_ROPE_YARN;
        c->rope_factor = 0;
        if (as_gguf_get_f32(g, akey(a, "rope.scaling.factor", k, sizeof k), &c->rope_factor) < 0)
            return -1;
        if (!(c->rope_factor >= 1))
            return as_fail("file %s: %s must be >= 1 for %s scaling", g->path, k, rs);
        if ((r = as_gguf_get_u32(g, akey(a, "rope.scaling.original_context_length", k, sizeof k),
                                 &v)) < 0)
            return -1;
        if (r == 1) c->rope_orig_max_pos = (int)v;
        if (c->rope_type == AS_ROPE_YARN) {
            /* HF's yarn defaults (beta_fast 32, beta_slow 1); GGUF carries no others here */
            c->yarn_beta_fast = 32, c->yarn_beta_slow = 1;
            if (!c->rope_orig_max_pos)
                return as_fail("file %s: yarn scaling without %s.rope.scaling."
                               "original_context_length",
                               g->path, a->name);
        }
    }
    if (as_gguf_find_tensor(g, "rope_freqs.weight"))
        return as_fail("file %s: tensor rope_freqs (llama3 RoPE frequency factors) is not "
                       "supported",
                       g->path);
    const struct as_gguf_tensor *emb = as_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2)
        return as_fail("file %s: tensor token_embd missing or not 2-D", g->path);
    c->vocab = (int)emb->ne[1];
    c->tie_embeddings = !as_gguf_find_tensor(g, "output.weight");
    c->bos_id = c->eos_id = -1;
    if (as_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == 1) c->bos_id = (int)v;
    if (as_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == 1) c->eos_id = (int)v;
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
    const struct gguf_arch *a = NULL;
    if (parse_config(g, &m->cfg, &a)) goto fail;
    struct as_model_config *c = &m->cfg;
    m->inv_freq = as_xmalloc((size_t)c->head_dim / 2 * sizeof(float));
    m->attn_factor = as_rope_init(c, m->inv_freq);
    m->layers = as_xcalloc((size_t)c->n_layers, sizeof *m->layers);
    int H = c->hidden, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    if (!(m->embed = load_new(g, "token_embd.weight", c->vocab, H, NULL)) ||
        !(m->norm = load_new(g, "output_norm.weight", H, 0, NULL)))
        goto fail;
    if (c->tie_embeddings)
        m->lm_head = m->embed;
    else if (!(m->lm_head = load_new(g, "output.weight", c->vocab, H, NULL)))
        goto fail;
    if (a->qk_permuted) {
        perm_q = as_xmalloc(sizeof(int) * (size_t)qd);
        perm_k = as_xmalloc(sizeof(int) * (size_t)kvd);
        as_gguf_qk_perm(c->n_heads, c->head_dim, perm_q);
        as_gguf_qk_perm(c->n_kv_heads, c->head_dim, perm_k);
    }
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
        if (c->qkv_bias) { /* qwen2: stored unpermuted, as vectors */
            const char *bn[3] = {"attn_q", "attn_k", "attn_v"};
            float **bp[3] = {&L->bq, &L->bk, &L->bv};
            int bl[3] = {qd, kvd, kvd};
            for (int i = 0; i < 3; i++) {
                snprintf(name, sizeof name, "blk.%d.%s.bias", l, bn[i]);
                if (!(*bp[i] = load_new(g, name, bl[i], 0, NULL))) goto fail;
            }
        }
        if (c->qk_norm) { /* qwen3: per-head RMSNorm weights [head_dim] */
            snprintf(name, sizeof name, "blk.%d.attn_q_norm.weight", l);
            if (!(L->q_norm = load_new(g, name, c->head_dim, 0, NULL))) goto fail;
            snprintf(name, sizeof name, "blk.%d.attn_k_norm.weight", l);
            if (!(L->k_norm = load_new(g, name, c->head_dim, 0, NULL))) goto fail;
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
