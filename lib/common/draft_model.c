/* draft_model: Eagle3 draft head (see draft_model.h). The ops are the engine's (forward.h), so
 * the draft's numerics follow the target's: f32 RMSNorm, rotate-half RoPE, GQA softmax attention,
 * SwiGLU. */
#include "draft_model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "atomic_file.h"
#include "forward.h"
#include "model_save.h"
#include "safetensors.h"

void as_draft_default_taps(int n_layers, int taps[3]) {
    int ids[3] = {2, n_layers / 2, n_layers - 3};
    for (int i = 0; i < 3; i++)
        taps[i] = ids[i] < 0 ? 0 : ids[i] >= n_layers ? n_layers - 1 : ids[i];
}

static size_t qdim(const struct as_draft *d) {
    return (size_t)d->cfg.n_heads * d->cfg.head_dim;
}
static size_t kvdim(const struct as_draft *d) {
    return (size_t)d->cfg.n_kv_heads * d->cfg.head_dim;
}

/* The weights and their shapes, in the order they are written: one table for load, save and
 * random init, so the three cannot disagree. */
struct wdesc {
    const char *name;
    float **p;
    int64_t rows, cols; /* cols 0: a vector */
    int norm;           /* 1: a norm weight (random init near 1) */
};

static int weight_table(struct as_draft *d, struct wdesc *t) {
    int64_t H = d->cfg.hidden, I = d->cfg.intermediate, qd = (int64_t)qdim(d),
            kvd = (int64_t)kvdim(d);
    struct wdesc w[] = {
        {"fc.weight", &d->fc, H, 3 * (int64_t)d->target_hidden, 0},
        {"midlayer.input_layernorm.weight", &d->in_norm, H, 0, 1},
        {"midlayer.hidden_norm.weight", &d->hid_norm, H, 0, 1},
        {"midlayer.self_attn.q_proj.weight", &d->wq, qd, 2 * H, 0},
        {"midlayer.self_attn.k_proj.weight", &d->wk, kvd, 2 * H, 0},
        {"midlayer.self_attn.v_proj.weight", &d->wv, kvd, 2 * H, 0},
        {"midlayer.self_attn.o_proj.weight", &d->wo, H, qd, 0},
        {"midlayer.post_attention_layernorm.weight", &d->post_norm, H, 0, 1},
        {"midlayer.mlp.gate_proj.weight", &d->wgate, I, H, 0},
        {"midlayer.mlp.up_proj.weight", &d->wup, I, H, 0},
        {"midlayer.mlp.down_proj.weight", &d->wdown, H, I, 0},
        {"norm.weight", &d->norm, H, 0, 1},
        {"lm_head.weight", &d->lm_head, d->vd, H, 0},
    };
    memcpy(t, w, sizeof w);
    return (int)(sizeof w / sizeof w[0]);
}
#define N_WEIGHTS 13

static void init_rope(struct as_draft *d) {
    d->inv_freq = as_xmalloc((size_t)(d->cfg.head_dim / 2) * sizeof(float));
    d->attn_factor = as_rope_init(&d->cfg, d->inv_freq);
}

void as_draft_free(struct as_draft *d) {
    if (!d) return;
    struct wdesc t[N_WEIGHTS];
    int n = weight_table(d, t);
    for (int i = 0; i < n; i++)
        free(*t[i].p);
    free(d->d2t), free(d->inv_freq);
    free(d);
}

int as_draft_check_target(const struct as_draft *d, const struct as_model *m, const char *dir) {
    const struct as_model_config *c = &m->cfg;
    if (d->target_hidden != c->hidden)
        return as_fail("draft %s: made for a target of hidden size %d, the target has %d", dir,
                       d->target_hidden, c->hidden);
    if (d->cfg.vocab != c->vocab)
        return as_fail("draft %s: made for a target vocabulary of %d, the target has %d", dir,
                       d->cfg.vocab, c->vocab);
    if (d->cfg.hidden != c->hidden)
        return as_fail("draft %s: hidden size %d differs from the target's %d (its embedding is "
                       "the target's)",
                       dir, d->cfg.hidden, c->hidden);
    if (d->target_layers && d->target_layers != c->n_layers)
        return as_fail("draft %s: made for a target of %d layers, the target has %d", dir,
                       d->target_layers, c->n_layers);
    for (int i = 0; i < 3; i++)
        if (d->taps[i] < 0 || d->taps[i] >= c->n_layers)
            return as_fail("draft %s: tapped layer %d out of range (the target has %d layers)", dir,
                           d->taps[i], c->n_layers);
    for (int i = 0; d->d2t && i < d->vd; i++) {
        int64_t t = i + d->d2t[i];
        if (t < 0 || t >= c->vocab)
            return as_fail("draft %s: d2t[%d] maps to target id %lld, outside the vocabulary (%d)",
                           dir, i, (long long)t, c->vocab);
    }
    return 0;
}

/* A draft call of few rows (the chain's one-token steps, the re-read of the accepted tokens)
 * runs each row as a matvec on the engine's pool: on SmolLM2's draft, 2 rows through sgemm took
 * 2.1 ms against 0.46 ms for one row, and OpenBLAS's threads then spin into the target's
 * verification pass. Prompts (many rows) keep sgemm. */
enum { DRAFT_ROWS_MAX = 16 };
static void draft_linear(float *out, const float *x, const float *W, int T, int cols, int rows) {
    if (T <= DRAFT_ROWS_MAX)
        as_op_linear_rows(out, x, W, NULL, T, cols, rows);
    else
        as_op_linear(out, x, W, NULL, T, cols, rows);
}

/* splitmix64 -> uniform in [-1, 1) */
static float rnd(uint64_t *st) {
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((z >> 40) * (2.0 / 16777216.0) - 1.0);
}

struct as_draft *as_draft_new_random(const struct as_model *m, int vd, const int32_t *used,
                                     uint64_t seed) {
    const struct as_model_config *c = &m->cfg;
    if (vd <= 0 || vd > c->vocab) {
        as_fail("draft: draft vocabulary %d out of range 1..%d", vd, c->vocab);
        return NULL;
    }
    struct as_draft *d = as_xcalloc(1, sizeof *d);
    d->cfg = *c;
    d->cfg.n_layers = 1;
    d->cfg.tie_embeddings = 0;
    d->cfg.qkv_bias = 0, d->cfg.qk_norm = 0;
    d->cfg.arch = AS_ARCH_LLAMA;
    snprintf(d->cfg.model_type, sizeof d->cfg.model_type, "llama");
    d->vd = vd;
    d->target_hidden = c->hidden;
    d->target_layers = c->n_layers;
    as_draft_default_taps(c->n_layers, d->taps);
    d->embed = m->embed;
    uint64_t st = seed;
    struct wdesc t[N_WEIGHTS];
    int n = weight_table(d, t);
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
        float *p = *t[i].p = as_xmalloc(cnt * sizeof(float));
        float amp = t[i].cols ? 1.7f / sqrtf((float)t[i].cols) : 0.2f;
        for (size_t j = 0; j < cnt; j++)
            p[j] = (t[i].norm ? 1.0f : 0.0f) + amp * rnd(&st);
    }
    d->d2t = as_xmalloc((size_t)vd * sizeof(int64_t));
    for (int i = 0; i < vd; i++)
        d->d2t[i] = used ? (int64_t)used[i] - i : 0;
    init_rope(d);
    return d;
}

static int json_int(json_t *o, const char *key, int def, int *out, const char *path) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 30))
        return as_fail("file %s: field \"%s\" must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

struct as_draft *as_draft_load(const char *dir, const struct as_model *m) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct as_draft *d = as_xcalloc(1, sizeof *d);
    struct as_ckpt *ck = NULL;
    json_t *o = NULL;
    if (as_config_parse(path, &d->cfg) != 0) goto fail;
    if (d->cfg.n_layers != 1) {
        as_fail("draft %s: num_hidden_layers is %d, an Eagle3 draft has 1", dir, d->cfg.n_layers);
        goto fail;
    }
    json_error_t err;
    if (!(o = json_load_file(path, 0, &err))) {
        as_fail("file %s: cannot parse JSON: %s", path, err.text);
        goto fail;
    }
    if (json_int(o, "draft_vocab_size", d->cfg.vocab, &d->vd, path) ||
        json_int(o, "target_hidden_size", d->cfg.hidden, &d->target_hidden, path) ||
        json_int(o, "as_target_layers", 0, &d->target_layers, path))
        goto fail;
    if (d->vd > d->cfg.vocab) {
        as_fail("file %s: draft_vocab_size %d exceeds vocab_size %d", path, d->vd, d->cfg.vocab);
        goto fail;
    }
    json_t *ids = json_object_get(o, "eagle_aux_hidden_state_layer_ids");
    if (ids && !json_is_null(ids)) {
        if (!json_is_array(ids) || json_array_size(ids) != 3) {
            as_fail("file %s: eagle_aux_hidden_state_layer_ids must be 3 layer ids", path);
            goto fail;
        }
        for (int i = 0; i < 3; i++) {
            json_t *v = json_array_get(ids, (size_t)i);
            if (!json_is_integer(v)) {
                as_fail("file %s: eagle_aux_hidden_state_layer_ids must be integers", path);
                goto fail;
            }
            d->taps[i] = (int)json_integer_value(v);
        }
    } else {
        as_draft_default_taps(m->cfg.n_layers, d->taps);
    }
    if (as_draft_check_target(d, m, dir) != 0) goto fail; /* before shapes: name the cause */
    if (!(ck = as_ckpt_open(dir))) goto fail;
    struct wdesc t[N_WEIGHTS];
    int n = weight_table(d, t);
    for (int i = 0; i < n; i++) {
        int64_t shape[2] = {t[i].rows, t[i].cols};
        const struct as_st_tensor *ts = as_ckpt_expect(ck, t[i].name, t[i].cols ? 2 : 1, shape);
        if (!ts) goto fail;
        *t[i].p = as_xmalloc(ts->numel * sizeof(float));
        if (as_ckpt_read_f32(ck, ts, *t[i].p) != 0) goto fail;
    }
    int64_t vshape[1] = {d->vd};
    const struct as_st_tensor *td = as_ckpt_expect(ck, "d2t", 1, vshape);
    if (!td) goto fail;
    if (td->dtype != AS_I64) {
        as_fail("draft %s: tensor d2t is %s, expected I64", dir, as_dtype_name(td->dtype));
        goto fail;
    }
    d->d2t = as_xmalloc((size_t)d->vd * sizeof(int64_t));
    memcpy(d->d2t, td->data, (size_t)d->vd * sizeof(int64_t));
    if (as_draft_check_target(d, m, dir) != 0) goto fail;
    d->embed = m->embed;
    init_rope(d);
    json_decref(o);
    as_ckpt_close(ck);
    return d;
fail:
    json_decref(o);
    as_ckpt_close(ck);
    as_draft_free(d);
    return NULL;
}

static int write_dir(const struct as_draft *d, const char *dir, enum as_dtype dt) {
    json_t *cfg = as_config_to_json(&d->cfg, dt);
    json_object_set_new(cfg, "architectures", json_pack("[s]", "LlamaForCausalLMEagle3"));
    json_object_set_new(cfg, "model_type", json_string("llama"));
    json_object_set_new(cfg, "num_hidden_layers", json_integer(1));
    json_object_set_new(cfg, "tie_word_embeddings", json_false());
    json_object_set_new(cfg, "draft_vocab_size", json_integer(d->vd));
    if (d->cfg.rope_type == AS_ROPE_DEFAULT) json_object_set_new(cfg, "rope_scaling", json_null());
    if (d->target_hidden != d->cfg.hidden)
        json_object_set_new(cfg, "target_hidden_size", json_integer(d->target_hidden));
    json_object_set_new(cfg, "eagle_aux_hidden_state_layer_ids",
                        json_pack("[i,i,i]", d->taps[0], d->taps[1], d->taps[2]));
    if (d->target_layers)
        json_object_set_new(cfg, "as_target_layers", json_integer(d->target_layers));
    int rc = as_json_write_file(cfg, dir, "config.json");
    json_decref(cfg);
    if (rc) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct as_st_writer *w = as_st_writer_new(path);
    if (!w) return -1;
    struct wdesc t[N_WEIGHTS];
    int n = weight_table((struct as_draft *)d, t);
    for (int i = 0; i < n && rc == 0; i++) {
        int64_t shape[2] = {t[i].rows, t[i].cols};
        size_t cnt = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
        const float *src = *t[i].p;
        int nd = t[i].cols ? 2 : 1;
        if (dt == AS_F32) {
            rc = as_st_writer_add(w, t[i].name, AS_F32, nd, shape, src, cnt * 4);
            continue;
        }
        uint16_t *h = as_xmalloc(cnt * sizeof *h);
        for (size_t j = 0; j < cnt; j++)
            h[j] = dt == AS_BF16 ? as_f32_to_bf16(src[j]) : as_f32_to_f16(src[j]);
        rc = as_st_writer_add_copy(w, t[i].name, dt, nd, shape, h, cnt * 2);
        free(h);
    }
    int64_t vs[1] = {d->vd}, ts[1] = {d->cfg.vocab};
    if (rc == 0) rc = as_st_writer_add(w, "d2t", AS_I64, 1, vs, d->d2t, (uint64_t)d->vd * 8);
    uint8_t *t2d = as_xcalloc((size_t)d->cfg.vocab, 1);
    for (int i = 0; i < d->vd; i++)
        t2d[as_draft_to_target(d, i)] = 1;
    if (rc == 0) rc = as_st_writer_add_copy(w, "t2d", AS_BOOL, 1, ts, t2d, (uint64_t)d->cfg.vocab);
    free(t2d);
    if (rc != 0) {
        as_st_writer_abort(w);
        return -1;
    }
    return as_st_writer_finish(w);
}

int as_draft_save(const struct as_draft *d, const char *dir, enum as_dtype dt) {
    if (dt != AS_F32 && dt != AS_BF16 && dt != AS_F16)
        return as_fail("draft %s: weights must be F32, BF16 or F16", dir);
    char *tmp = as_atomic_dir_begin(dir);
    if (!tmp) return -1;
    if (write_dir(d, tmp, dt) != 0 || as_atomic_dir_commit(tmp, dir) != 0) {
        as_atomic_dir_abort(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

struct as_draft_state *as_draft_state_new(const struct as_draft *d, int max_T, int max_seq) {
    if (max_T <= 0 || max_seq <= 0 || max_T > max_seq) {
        as_fail("draft state: bad sizes max_T=%d max_seq=%d", max_T, max_seq);
        return NULL;
    }
    struct as_draft_state *s = as_xcalloc(1, sizeof *s);
    size_t T = (size_t)max_T, S = (size_t)max_seq, H = (size_t)d->cfg.hidden;
    size_t half = (size_t)d->cfg.head_dim / 2, I = (size_t)d->cfg.intermediate;
    s->max_T = max_T, s->max_seq = max_seq;
    s->kc = as_xcalloc(S * kvdim(d), sizeof(float));
    s->vc = as_xcalloc(S * kvdim(d), sizeof(float));
    s->rope_cos = as_xmalloc(S * half * sizeof(float));
    s->rope_sin = as_xmalloc(S * half * sizeof(float));
    for (size_t p = 0; p < S; p++)
        for (size_t i = 0; i < half; i++) {
            float ang = (float)p * d->inv_freq[i];
            s->rope_cos[p * half + i] = cosf(ang) * d->attn_factor;
            s->rope_sin[p * half + i] = sinf(ang) * d->attn_factor;
        }
    s->g = as_xmalloc(T * H * sizeof(float));
    s->x2 = as_xmalloc(T * 2 * H * sizeof(float));
    s->q = as_xmalloc(T * qdim(d) * sizeof(float));
    s->k = as_xmalloc(T * kvdim(d) * sizeof(float));
    s->v = as_xmalloc(T * kvdim(d) * sizeof(float));
    s->att_out = as_xmalloc(T * qdim(d) * sizeof(float));
    s->att = as_xmalloc(T * S * sizeof(float));
    s->h = as_xmalloc(T * H * sizeof(float));
    s->xb = as_xmalloc(T * H * sizeof(float));
    s->hb = as_xmalloc(T * I * sizeof(float));
    s->hb2 = as_xmalloc(T * I * sizeof(float));
    s->hidden = as_xmalloc(T * H * sizeof(float));
    s->logits = as_xmalloc(T * (size_t)d->vd * sizeof(float));
    return s;
}

void as_draft_state_free(struct as_draft_state *s) {
    if (!s) return;
    free(s->kc), free(s->vc), free(s->rope_cos), free(s->rope_sin), free(s->g), free(s->x2);
    free(s->q), free(s->k), free(s->v), free(s->att_out), free(s->att), free(s->h), free(s->xb);
    free(s->hb), free(s->hb2), free(s->hidden), free(s->logits);
    free(s);
}

int as_draft_forward(const struct as_draft *d, struct as_draft_state *s, const int *tokens,
                     const float *feats, const float *hidden, int T) {
    const struct as_model_config *c = &d->cfg;
    int H = c->hidden, kvd = (int)kvdim(d), qd = (int)qdim(d), pos0 = s->pos;
    if (T <= 0 || T > s->max_T)
        return as_fail("draft: %d tokens per call, its state holds %d", T, s->max_T);
    if (pos0 + T > s->max_seq)
        return as_fail("draft: position %d exceeds its KV cache (%d)", pos0 + T, s->max_seq);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return as_fail("draft: token id %d out of range (vocab %d)", tokens[t], c->vocab);
    /* g: fc of the target features, or the chained hidden state */
    if (feats)
        draft_linear(s->g, feats, d->fc, T, 3 * d->target_hidden, H);
    else
        memcpy(s->g, hidden, (size_t)T * H * sizeof(float));
    /* x2 = [RMSNorm_in(embed) | RMSNorm_hid(g)] per row */
    for (int t = 0; t < T; t++) {
        float *row = s->x2 + (size_t)t * 2 * H;
        as_op_rmsnorm(row, d->embed + (size_t)tokens[t] * H, d->in_norm, 1, H, c->rms_eps);
        as_op_rmsnorm(row + H, s->g + (size_t)t * H, d->hid_norm, 1, H, c->rms_eps);
    }
    draft_linear(s->q, s->x2, d->wq, T, 2 * H, qd);
    draft_linear(s->k, s->x2, d->wk, T, 2 * H, kvd);
    draft_linear(s->v, s->x2, d->wv, T, 2 * H, kvd);
    as_op_rope(s->q, T, c->n_heads, c->head_dim, pos0, s->rope_cos, s->rope_sin);
    as_op_rope(s->k, T, c->n_kv_heads, c->head_dim, pos0, s->rope_cos, s->rope_sin);
    memcpy(s->kc + (size_t)pos0 * kvd, s->k, (size_t)T * kvd * sizeof(float));
    memcpy(s->vc + (size_t)pos0 * kvd, s->v, (size_t)T * kvd * sizeof(float));
    as_op_attention(c, s->q, s->kc, s->vc, s->att_out, s->att, s->max_seq, 0, T, pos0);
    /* h1 = g + o(att); h2 = h1 + mlp(RMSNorm_post(h1)) */
    draft_linear(s->h, s->att_out, d->wo, T, qd, H);
    for (size_t i = 0; i < (size_t)T * H; i++)
        s->h[i] += s->g[i];
    as_op_rmsnorm(s->xb, s->h, d->post_norm, T, H, c->rms_eps);
    draft_linear(s->hb, s->xb, d->wgate, T, H, c->intermediate);
    draft_linear(s->hb2, s->xb, d->wup, T, H, c->intermediate);
    as_op_swiglu(s->hb, s->hb2, (size_t)T * c->intermediate);
    draft_linear(s->hidden, s->hb, d->wdown, T, c->intermediate, H);
    for (size_t i = 0; i < (size_t)T * H; i++)
        s->hidden[i] += s->h[i];
    as_op_rmsnorm(s->xb, s->hidden, d->norm, T, H, c->rms_eps);
    draft_linear(s->logits, s->xb, d->lm_head, T, H, d->vd);
    s->pos = pos0 + T;
    s->T = T;
    return 0;
}
