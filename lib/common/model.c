/* model: HF config.json parsing and f32 weight loading for Llama-family decoders. */
#include "model.h"
#include "model_save.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "qlinear.h"
#include "quant_load.h"

/* ---- config.json ---------------------------------------------------------------------------- */

static int get_int(json_t *o, const char *path, const char *key, int required, int def, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return as_fail("file %s: missing field \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 30))
        return as_fail("file %s: field \"%s\" must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* A finite number >= min (> min when `strict`): rope_theta 0 or a negative rms_norm_eps give
 * finite-looking garbage (or NaN much later, far from the cause), so they are refused here. */
static int get_num(json_t *o, const char *path, const char *key, double def, double min, int strict,
                   float *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v)) return as_fail("file %s: field \"%s\" must be a number", path, key);
    double x = json_number_value(v);
    if (!isfinite(x) || !isfinite((float)x) || (strict ? x <= min : x < min))
        return as_fail("file %s: field \"%s\" is %g, must be %s %g", path, key, x,
                       strict ? ">" : ">=", min);
    *out = (float)x;
    return 0;
}

/* bos/eos may be an int or a list of ints (Llama 3 lists several eos ids); take the first. */
static int get_token_id(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (json_is_array(v)) v = json_array_get(v, 0);
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

static int parse_rope_scaling(json_t *rs, const char *path, struct as_model_config *c) {
    json_t *t = json_object_get(rs, "rope_type");
    if (!json_is_string(t)) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (!strcmp(type, "default"))
        c->rope_type = AS_ROPE_DEFAULT;
    else if (!strcmp(type, "linear"))
        c->rope_type = AS_ROPE_LINEAR;
    else if (!strcmp(type, "llama3"))
        c->rope_type = AS_ROPE_LLAMA3;
    else if (!strcmp(type, "yarn"))
        c->rope_type = AS_ROPE_YARN;
    else
        return as_fail("file %s: rope_scaling type \"%s\" is not supported", path, type);
    if (c->rope_type == AS_ROPE_DEFAULT) return 0;
    json_t *f = json_object_get(rs, "factor");
    if (f && !json_is_number(f))
        return as_fail("file %s: rope_scaling.factor must be a number", path);
    int orig = 0;
    if (get_int(rs, path, "original_max_position_embeddings", c->rope_type == AS_ROPE_LLAMA3, 0,
                &orig) != 0)
        return as_fail_prefix("rope_scaling: ");
    c->rope_orig_max_pos = orig ? orig : c->max_pos;
    if (f)
        c->rope_factor = (float)json_number_value(f);
    else if (c->rope_type == AS_ROPE_YARN && orig)
        c->rope_factor = (float)c->max_pos / orig;
    else
        return as_fail("file %s: rope_scaling: missing field \"factor\"", path);
    if (!(c->rope_factor > 0)) return as_fail("file %s: rope_scaling.factor must be > 0", path);
    if (get_num(rs, path, "low_freq_factor", 1.0, 0.0, 1, &c->rope_low_freq_factor) ||
        get_num(rs, path, "high_freq_factor", 4.0, 0.0, 1, &c->rope_high_freq_factor) ||
        get_num(rs, path, "beta_fast", 32.0, 0.0, 0, &c->yarn_beta_fast) ||
        get_num(rs, path, "beta_slow", 1.0, 0.0, 0, &c->yarn_beta_slow) ||
        get_num(rs, path, "mscale", 0.0, 0.0, 0, &c->yarn_mscale) ||
        get_num(rs, path, "mscale_all_dim", 0.0, 0.0, 0, &c->yarn_mscale_all_dim) ||
        get_num(rs, path, "attention_factor", 0.0, 0.0, 0, &c->yarn_attn_factor))
        return -1;
    if (c->rope_type == AS_ROPE_LLAMA3 && !(c->rope_high_freq_factor > c->rope_low_freq_factor))
        return as_fail("file %s: rope_scaling: high_freq_factor must exceed low_freq_factor", path);
    return 0;
}

int as_config_parse(const char *path, struct as_model_config *c) {
    memset(c, 0, sizeof *c);
    json_error_t err;
    json_t *o = json_load_file(path, 0, &err);
    if (!o) return as_fail("file %s: cannot parse JSON: %s (line %d)", path, err.text, err.line);
    int rc = -1;
    if (!json_is_object(o)) {
        as_fail("file %s: not a JSON object", path);
        goto out;
    }
    json_t *mt = json_object_get(o, "model_type");
    if (!json_is_string(mt)) {
        as_fail("file %s: missing field \"model_type\"", path);
        goto out;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", json_string_value(mt));
    if (!strcmp(c->model_type, "llama"))
        c->arch = AS_ARCH_LLAMA;
    else if (!strcmp(c->model_type, "mistral"))
        c->arch = AS_ARCH_MISTRAL;
    else if (!strcmp(c->model_type, "qwen2"))
        c->arch = AS_ARCH_QWEN2;
    else if (!strcmp(c->model_type, "qwen3"))
        c->arch = AS_ARCH_QWEN3;
    else {
        as_fail("file %s: model_type \"%s\" is not supported (llama, mistral, qwen2, qwen3)", path,
                c->model_type);
        goto out;
    }
    c->qkv_bias = c->arch == AS_ARCH_QWEN2;
    c->qk_norm = c->arch == AS_ARCH_QWEN3;
    if (get_int(o, path, "hidden_size", 1, 0, &c->hidden) ||
        get_int(o, path, "intermediate_size", 1, 0, &c->intermediate) ||
        get_int(o, path, "num_hidden_layers", 1, 0, &c->n_layers) ||
        get_int(o, path, "num_attention_heads", 1, 0, &c->n_heads) ||
        get_int(o, path, "vocab_size", 1, 0, &c->vocab) ||
        get_int(o, path, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads) ||
        get_int(o, path, "max_position_embeddings", 0, 2048, &c->max_pos) ||
        get_int(o, path, "head_dim", 0, 0, &c->head_dim))
        goto out;
    if (c->n_layers > 65536) { /* per-layer tables are allocated before any tensor is read */
        as_fail("file %s: field \"num_hidden_layers\" is %d, more than 65536", path, c->n_layers);
        goto out;
    }
    if (!c->head_dim) {
        if (c->hidden % c->n_heads != 0) {
            as_fail("file %s: hidden_size %d not divisible by num_attention_heads %d", path,
                    c->hidden, c->n_heads);
            goto out;
        }
        c->head_dim = c->hidden / c->n_heads;
    }
    if (c->n_heads % c->n_kv_heads != 0 || c->head_dim % 2 != 0) {
        as_fail("file %s: num_attention_heads %d not a multiple of num_key_value_heads %d, or odd "
                "head_dim %d",
                path, c->n_heads, c->n_kv_heads, c->head_dim);
        goto out;
    }
    /* transformers v5 moves rope_theta/rope_type into "rope_parameters" */
    json_t *rp = json_object_get(o, "rope_parameters");
    json_t *rs = json_object_get(o, "rope_scaling");
    if (json_is_object(rp) && !json_is_object(rs)) rs = rp;
    if (get_num(o, path, "rms_norm_eps", 1e-6, 0.0, 0, &c->rms_eps) ||
        get_num(json_is_object(rp) && json_object_get(rp, "rope_theta") ? rp : o, path,
                "rope_theta", 10000.0, 0.0, 1, &c->rope_theta))
        goto out;
    json_t *act = json_object_get(o, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu") != 0) {
        as_fail("file %s: hidden_act \"%s\" is not supported (silu)", path, json_string_value(act));
        goto out;
    }
    json_t *tie = json_object_get(o, "tie_word_embeddings");
    c->tie_embeddings = json_is_true(tie);
    if (json_is_true(json_object_get(o, "attention_bias"))) c->qkv_bias = 1;
    c->bos_id = get_token_id(o, "bos_token_id");
    c->eos_id = get_token_id(o, "eos_token_id");
    c->rope_type = AS_ROPE_DEFAULT;
    if (json_is_object(rs) && parse_rope_scaling(rs, path, c) != 0) goto out;
    json_t *qc = json_object_get(o, "quantization_config");
    if (json_is_object(qc)) {
        json_t *qm = json_object_get(qc, "quant_method");
        if (!json_is_string(qm)) {
            as_fail("file %s: quantization_config: missing field \"quant_method\"", path);
            goto out;
        }
        snprintf(c->quant_method, sizeof c->quant_method, "%s", json_string_value(qm));
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/* ---- RoPE frequencies (transformers modeling_rope_utils) ------------------------------------ */

static double yarn_get_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static double yarn_correction_dim(double rot, int dim, double base, int max_pos) {
    return (dim * log(max_pos / (rot * 2 * M_PI))) / (2 * log(base));
}

float as_rope_init(const struct as_model_config *c, float *inv_freq) {
    int dim = c->head_dim, half = dim / 2;
    double base = c->rope_theta, attn = 1.0;
    for (int i = 0; i < half; i++)
        inv_freq[i] = (float)(1.0 / pow(base, (2.0 * i) / dim));
    switch (c->rope_type) {
    case AS_ROPE_DEFAULT:
        break;
    case AS_ROPE_LINEAR:
        for (int i = 0; i < half; i++)
            inv_freq[i] /= c->rope_factor;
        break;
    case AS_ROPE_LLAMA3: {
        /* wavelengths longer than orig/low are interpolated by factor, shorter than orig/high kept,
         * and the band between blended linearly in orig/wavelen */
        double old = c->rope_orig_max_pos, lo = c->rope_low_freq_factor,
               hi = c->rope_high_freq_factor, f = c->rope_factor;
        double low_wl = old / lo, high_wl = old / hi;
        for (int i = 0; i < half; i++) {
            double fr = inv_freq[i], wl = 2 * M_PI / fr;
            if (wl > low_wl)
                fr = fr / f;
            else if (wl >= high_wl) {
                double s = (old / wl - lo) / (hi - lo);
                fr = (1 - s) * fr / f + s * fr;
            }
            inv_freq[i] = (float)fr;
        }
        break;
    }
    case AS_ROPE_YARN: {
        double f = c->rope_factor;
        if (c->yarn_attn_factor > 0)
            attn = c->yarn_attn_factor;
        else if (c->yarn_mscale > 0 && c->yarn_mscale_all_dim > 0)
            attn = yarn_get_mscale(f, c->yarn_mscale) / yarn_get_mscale(f, c->yarn_mscale_all_dim);
        else
            attn = yarn_get_mscale(f, 1.0);
        double low = floor(yarn_correction_dim(c->yarn_beta_fast, dim, base, c->rope_orig_max_pos));
        double high = ceil(yarn_correction_dim(c->yarn_beta_slow, dim, base, c->rope_orig_max_pos));
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            double ramp = (i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra = 1 - ramp; /* inv_freq_extrapolation_factor */
            double pos_freq = pow(base, (2.0 * i) / dim);
            inv_freq[i] = (float)((1.0 / (f * pos_freq)) * (1 - extra) + (1.0 / pos_freq) * extra);
        }
        break;
    }
    }
    return (float)attn;
}

/* ---- weight loaders ------------------------------------------------------------------------- */

int as_weight_load_dense(const struct as_ckpt *c, const char *name, int64_t rows, int64_t cols,
                         float *dst) {
    int64_t shape[2] = {rows, cols};
    const struct as_st_tensor *t = as_ckpt_expect(c, name, cols > 0 ? 2 : 1, shape);
    if (!t) return -1;
    /* integers or bare FP8 codes would convert to numbers, silently wrong ones: a dense weight
     * is a floating-point tensor (quantized ones go through the format loaders) */
    if (t->dtype != AS_F32 && t->dtype != AS_F16 && t->dtype != AS_BF16 && t->dtype != AS_F64)
        return as_fail("file %s: tensor %s: dtype %s is not a floating-point weight (F32, F16, "
                       "BF16, F64)",
                       as_ckpt_file_of(c, t), name, as_dtype_name(t->dtype));
    return as_ckpt_read_f32(c, t, dst);
}

static struct {
    char method[32];
    as_weight_loader fn;
} loaders[16];
static int n_loaders;

int as_weight_loader_register(const char *method, as_weight_loader fn) {
    for (int i = 0; i < n_loaders; i++)
        if (!strcmp(loaders[i].method, method)) {
            loaders[i].fn = fn;
            return 0;
        }
    if (n_loaders == 16) return as_fail("weight loader table full");
    snprintf(loaders[n_loaders].method, sizeof loaders[0].method, "%s", method);
    loaders[n_loaders++].fn = fn;
    return 0;
}

as_weight_loader as_weight_loader_find(const char *method) {
    if (!method || !method[0]) return as_weight_load_dense;
    for (int i = 0; i < n_loaders; i++)
        if (!strcmp(loaders[i].method, method)) return loaders[i].fn;
    return NULL;
}

/* One linear: a registered loader for the quant_method, else quant_load.h's dequantizers
 * (which decline layers they do not hold), else the dense PREFIX.weight. */
static int load_linear(const struct as_model *m, const struct as_ckpt *ck, const char *name,
                       int64_t rows, int64_t cols, float *dst) {
    as_weight_loader fn = as_weight_loader_find(m->cfg.quant_method);
    if (fn) return fn(ck, name, rows, cols, dst);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s", name);
    size_t n = strlen(prefix);
    if (n > 7 && !strcmp(prefix + n - 7, ".weight")) prefix[n - 7] = 0;
    int r = as_quant_load_linear(ck, m->quant_config, prefix, rows, cols, dst);
    if (r < 0) return -1;
    if (r == 1) return 0;
    return as_weight_load_dense(ck, name, rows, cols, dst);
}

/* ---- model ---------------------------------------------------------------------------------- */

static const char *lin_names[AS_LIN_COUNT] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};

const char *as_linear_name(enum as_linear which) {
    return lin_names[which];
}

void as_linear_tensor_name(int layer, enum as_linear which, char *buf, int n) {
    snprintf(buf, (size_t)n, "model.layers.%d.%s.%s.weight", layer,
             which <= AS_LIN_O ? "self_attn" : "mlp", lin_names[which]);
}

enum as_linear_group as_linear_group_of(enum as_linear which) {
    switch (which) {
    case AS_LIN_Q:
    case AS_LIN_K:
    case AS_LIN_V:
        return AS_GROUP_ATTN_QKV;
    case AS_LIN_O:
        return AS_GROUP_ATTN_O;
    case AS_LIN_GATE:
    case AS_LIN_UP:
        return AS_GROUP_MLP_GATE_UP;
    default:
        return AS_GROUP_MLP_DOWN;
    }
}

void as_model_linear_shape(const struct as_model *m, enum as_linear which, int *rows, int *cols) {
    const struct as_model_config *c = &m->cfg;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int r = 0, k = c->hidden;
    switch (which) {
    case AS_LIN_Q:
        r = qd;
        break;
    case AS_LIN_K:
    case AS_LIN_V:
        r = kvd;
        break;
    case AS_LIN_O:
        r = c->hidden, k = qd;
        break;
    case AS_LIN_GATE:
    case AS_LIN_UP:
        r = c->intermediate;
        break;
    case AS_LIN_DOWN:
        r = c->hidden, k = c->intermediate;
        break;
    default:
        break;
    }
    *rows = r, *cols = k;
}

float *as_model_linear_weight(struct as_model *m, int layer, enum as_linear which) {
    if (layer < 0 || layer >= m->cfg.n_layers || which < 0 || which >= AS_LIN_COUNT) return NULL;
    return m->layers[layer].w[which];
}

/* Load a 1-D or 2-D tensor as f32 through the dense path (norms, biases, embeddings). */
static float *load_vec(const struct as_ckpt *ck, const char *name, int64_t rows, int64_t cols) {
    size_t n = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    float *p = as_xmalloc(n * sizeof(float));
    if (as_weight_load_dense(ck, name, rows, cols, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

struct as_model *as_model_load(const char *dir) {
    struct as_model *m = as_xcalloc(1, sizeof *m);
    m->dir = as_xstrdup(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (as_config_parse(path, &m->cfg) != 0) {
        as_model_free(m);
        return NULL;
    }
    struct as_model_config *c = &m->cfg;
    if (c->quant_method[0]) {
        json_t *root = json_load_file(path, 0, NULL);
        m->quant_config = json_incref(json_object_get(root, "quantization_config"));
        json_decref(root);
    }
    struct as_ckpt *ck = as_ckpt_open(dir);
    if (!ck) {
        as_model_free(m);
        return NULL;
    }
    m->inv_freq = as_xmalloc((size_t)c->head_dim / 2 * sizeof(float));
    m->attn_factor = as_rope_init(c, m->inv_freq);
    m->layers = as_xcalloc((size_t)c->n_layers, sizeof *m->layers);
    char name[256];
    int H = c->hidden;
    if (!(m->embed = load_vec(ck, "model.embed_tokens.weight", c->vocab, H))) goto fail;
    if (!(m->norm = load_vec(ck, "model.norm.weight", H, 0))) goto fail;
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else {
        m->lm_head = as_xmalloc((size_t)c->vocab * H * sizeof(float));
        if (load_linear(m, ck, "lm_head.weight", c->vocab, H, m->lm_head) != 0) goto fail;
    }
    for (int l = 0; l < c->n_layers; l++) {
        struct as_layer_weights *L = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if (!(L->attn_norm = load_vec(ck, name, H, 0))) goto fail;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!(L->ffn_norm = load_vec(ck, name, H, 0))) goto fail;
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            int rows, cols;
            as_model_linear_shape(m, w, &rows, &cols);
            as_linear_tensor_name(l, w, name, sizeof name);
            L->w[w] = as_xmalloc((size_t)rows * cols * sizeof(float));
            if (load_linear(m, ck, name, rows, cols, L->w[w]) != 0) goto fail;
            if (!strcmp(m->cfg.quant_method, "as-ternary"))
                L->packed[w] = as_qlin_open(ck, name, rows, cols);
        }
        if (c->qkv_bias) {
            float **b[3] = {&L->bq, &L->bk, &L->bv};
            for (int i = 0; i < 3; i++) {
                int rows, cols;
                as_model_linear_shape(m, i, &rows, &cols);
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l, lin_names[i]);
                if (!(*b[i] = load_vec(ck, name, rows, 0))) goto fail;
            }
        }
        if (c->qk_norm) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
            if (!(L->q_norm = load_vec(ck, name, c->head_dim, 0))) goto fail;
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
            if (!(L->k_norm = load_vec(ck, name, c->head_dim, 0))) goto fail;
        }
    }
    as_ckpt_close(ck);
    return m;
fail:
    as_ckpt_close(ck);
    as_model_free(m);
    return NULL;
}

void as_model_free(struct as_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            struct as_layer_weights *L = &m->layers[l];
            free(L->attn_norm), free(L->ffn_norm), free(L->bq), free(L->bk), free(L->bv);
            free(L->q_norm), free(L->k_norm);
            for (int w = 0; w < AS_LIN_COUNT; w++) {
                free(L->w[w]);
                as_qlin_free(L->packed[w]);
            }
        }
        free(m->layers);
    }
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed);
    free(m->norm);
    free(m->inv_freq);
    free(m->dir);
    json_decref(m->quant_config);
    free(m);
}

/* ---- random checkpoints (tests, benchmarks) ------------------------------------------------- */

static uint64_t rnd_next(uint64_t *st) {
    /* splitmix64 */
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int add_random(struct as_st_writer *w, const char *name, int ndim, int64_t rows,
                      int64_t cols, float center, float amp, enum as_dtype dt, uint64_t *st) {
    size_t n = (size_t)rows * (size_t)(ndim == 2 ? cols : 1);
    float *f = as_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        f[i] = center + amp * (2.0f * (float)(rnd_next(st) >> 40) / 16777216.0f - 1.0f);
    int64_t shape[2] = {rows, cols};
    uint64_t nbytes = as_dtype_nbytes(dt, n, NULL);
    void *buf = as_xmalloc(nbytes);
    int rc = as_convert_from_f32(dt, f, buf, n);
    if (rc == 0) rc = as_st_writer_add_copy(w, name, dt, ndim, shape, buf, nbytes);
    free(f);
    free(buf);
    return rc;
}

int as_model_write_random(const struct as_model_config *c, int dtype, uint64_t seed,
                          const char *dir) {
    enum as_dtype dt = (enum as_dtype)dtype;
    uint64_t st = seed;
    char path[4096];
    json_t *cfg = as_config_to_json(c, dt);
    int rc = as_json_write_file(cfg, dir, "config.json");
    json_decref(cfg);
    if (rc != 0) return -1;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct as_st_writer *w = as_st_writer_new(path);
    if (!w) return -1;
    int64_t H = c->hidden, hd = c->head_dim, FF = c->intermediate;
    int64_t qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    char name[256];
    rc = add_random(w, "model.embed_tokens.weight", 2, c->vocab, H, 0, 1.0f, dt, &st);
    for (int l = 0; l < c->n_layers && rc == 0; l++) {
        const struct {
            const char *n;
            int ndim;
            int64_t r, k;
            float center, amp;
            int on;
        } ts[] = {
            {"input_layernorm.weight", 1, H, 0, 1, 0.2f, 1},
            {"self_attn.q_proj.weight", 2, qd, H, 0, 1.7f / sqrtf((float)H), 1},
            {"self_attn.k_proj.weight", 2, kvd, H, 0, 1.7f / sqrtf((float)H), 1},
            {"self_attn.v_proj.weight", 2, kvd, H, 0, 1.7f / sqrtf((float)H), 1},
            {"self_attn.o_proj.weight", 2, H, qd, 0, 1.7f / sqrtf((float)qd), 1},
            {"self_attn.q_proj.bias", 1, qd, 0, 0, 0.1f, c->qkv_bias},
            {"self_attn.k_proj.bias", 1, kvd, 0, 0, 0.1f, c->qkv_bias},
            {"self_attn.v_proj.bias", 1, kvd, 0, 0, 0.1f, c->qkv_bias},
            {"self_attn.q_norm.weight", 1, hd, 0, 1, 0.2f, c->qk_norm},
            {"self_attn.k_norm.weight", 1, hd, 0, 1, 0.2f, c->qk_norm},
            {"post_attention_layernorm.weight", 1, H, 0, 1, 0.2f, 1},
            {"mlp.gate_proj.weight", 2, FF, H, 0, 1.7f / sqrtf((float)H), 1},
            {"mlp.up_proj.weight", 2, FF, H, 0, 1.7f / sqrtf((float)H), 1},
            {"mlp.down_proj.weight", 2, H, FF, 0, 1.7f / sqrtf((float)FF), 1},
        };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0] && rc == 0; i++) {
            if (!ts[i].on) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, ts[i].n);
            rc =
                add_random(w, name, ts[i].ndim, ts[i].r, ts[i].k, ts[i].center, ts[i].amp, dt, &st);
        }
    }
    if (rc == 0) rc = add_random(w, "model.norm.weight", 1, H, 0, 1, 0.2f, dt, &st);
    if (rc == 0 && !c->tie_embeddings)
        rc = add_random(w, "lm_head.weight", 2, c->vocab, H, 0, 1.7f / sqrtf((float)H), dt, &st);
    if (rc != 0) {
        as_st_writer_abort(w);
        return -1;
    }
    return as_st_writer_finish(w);
}
