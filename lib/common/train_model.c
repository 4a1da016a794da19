/* train_model: training forward/backward of the decoder (see train_model.h). */
#include "train_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "train_ops.h"

struct as_train_state {
    int max_T, T;
    int *tokens;
    float *resid;               /* [n_layers+1][max_T*hidden] residual stream entering each layer */
    float *xnf, *logits;        /* final norm output [T, hidden], logits [T, vocab] */
    float *rope_cos, *rope_sin; /* [max_T, head_dim/2] */
    /* one layer's recomputed activations */
    float *xn1, *q, *k, *v, *P, *att, *x1, *xn2, *g, *u, *h, *tmp;
    /* gradients inside a layer */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dg, *du, *dh, *scratch;
    /* weight map: effective weights and biases of one layer's linears, their gradients */
    struct as_weight_map map;
    int has_map;
    float *weff[AS_LIN_COUNT], *beff[AS_LIN_COUNT], *gweff, *gbeff;
    int hasb[AS_LIN_COUNT];
};

static float *fbuf(size_t n) {
    return as_xmalloc((n ? n : 1) * sizeof(float));
}

struct as_train_state *as_train_state_new(const struct as_model *m, int max_T) {
    const struct as_model_config *c = &m->cfg;
    if (c->qkv_bias || c->qk_norm)
        return as_fail("training: model_type %s (q/k/v biases or q/k norms) is not supported yet",
                       c->model_type),
               NULL;
    if (max_T <= 0) return as_fail("training: bad window length %d", max_T), NULL;
    struct as_train_state *st = as_xcalloc(1, sizeof *st);
    size_t T = (size_t)max_T, D = c->hidden, FF = c->intermediate, V = c->vocab;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t half = (size_t)c->head_dim / 2;
    st->max_T = max_T;
    st->tokens = as_xmalloc(T * sizeof(int));
    st->resid = fbuf(((size_t)c->n_layers + 1) * T * D);
    st->xnf = fbuf(T * D), st->logits = fbuf(T * V);
    st->rope_cos = fbuf(T * half), st->rope_sin = fbuf(T * half);
    for (size_t p = 0; p < T; p++)
        for (size_t i = 0; i < half; i++) { /* as as_state_new computes them */
            float ang = (float)p * m->inv_freq[i];
            st->rope_cos[p * half + i] = cosf(ang) * m->attn_factor;
            st->rope_sin[p * half + i] = sinf(ang) * m->attn_factor;
        }
    st->xn1 = fbuf(T * D), st->q = fbuf(T * qd), st->k = fbuf(T * kvd), st->v = fbuf(T * kvd);
    st->P = fbuf((size_t)c->n_heads * T * T), st->att = fbuf(T * qd), st->x1 = fbuf(T * D);
    st->xn2 = fbuf(T * D), st->g = fbuf(T * FF), st->u = fbuf(T * FF), st->h = fbuf(T * FF);
    st->tmp = fbuf(T * D);
    st->dx = fbuf(T * D), st->dxn = fbuf(T * D), st->dq = fbuf(T * qd), st->dk = fbuf(T * kvd);
    st->dv = fbuf(T * kvd), st->datt = fbuf(T * qd), st->dg = fbuf(T * FF), st->du = fbuf(T * FF);
    st->dh = fbuf(T * FF), st->scratch = fbuf(T * T);
    return st;
}

void as_train_state_free(struct as_train_state *st) {
    if (!st) return;
    float *bufs[] = {st->resid, st->xnf, st->logits,  st->rope_cos, st->rope_sin, st->xn1,
                     st->q,     st->k,   st->v,       st->P,        st->att,      st->x1,
                     st->xn2,   st->g,   st->u,       st->h,        st->tmp,      st->dx,
                     st->dxn,   st->dq,  st->dk,      st->dv,       st->datt,     st->dg,
                     st->du,    st->dh,  st->scratch, st->gweff,    st->gbeff};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
    for (int i = 0; i < AS_LIN_COUNT; i++)
        free(st->weff[i]), free(st->beff[i]);
    free(st->tokens);
    free(st);
}

float *as_train_logits(struct as_train_state *st) {
    return st->logits;
}

void as_train_set_map(struct as_train_state *st, const struct as_weight_map *map) {
    st->has_map = map != NULL;
    if (map) st->map = *map;
}

struct as_model_grads *as_model_grads_new(const struct as_model *m) {
    const struct as_model_config *c = &m->cfg;
    struct as_model_grads *g = as_xcalloc(1, sizeof *g);
    size_t D = c->hidden, V = c->vocab;
    g->embed = as_xcalloc(V * D, sizeof(float));
    g->norm = as_xcalloc(D, sizeof(float));
    g->lm_head = m->lm_head == m->embed ? g->embed : as_xcalloc(V * D, sizeof(float));
    g->layers = as_xcalloc((size_t)c->n_layers, sizeof *g->layers);
    for (int l = 0; l < c->n_layers; l++) {
        struct as_layer_weights *L = &g->layers[l];
        L->attn_norm = as_xcalloc(D, sizeof(float));
        L->ffn_norm = as_xcalloc(D, sizeof(float));
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            int r, cc;
            as_model_linear_shape(m, w, &r, &cc);
            L->w[w] = as_xcalloc((size_t)r * cc, sizeof(float));
        }
    }
    return g;
}

void as_model_grads_free(const struct as_model *m, struct as_model_grads *g) {
    if (!g) return;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        free(g->layers[l].attn_norm), free(g->layers[l].ffn_norm);
        for (int w = 0; w < AS_LIN_COUNT; w++)
            free(g->layers[l].w[w]);
    }
    if (g->lm_head != g->embed) free(g->lm_head);
    free(g->embed), free(g->norm), free(g->layers), free(g);
}

int as_model_params(struct as_model *m, struct as_model_grads *g, struct as_params *ps) {
    const struct as_model_config *c = &m->cfg;
    int n0 = ps->n, D = c->hidden, V = c->vocab;
    char name[160];
    as_params_add(ps, "model.embed_tokens.weight", m->embed, g->embed, V, D, 1);
    for (int l = 0; l < c->n_layers; l++) {
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        as_params_add(ps, name, m->layers[l].attn_norm, g->layers[l].attn_norm, 1, D, 0);
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            int r, cc;
            as_model_linear_shape(m, w, &r, &cc);
            as_linear_tensor_name(l, w, name, sizeof name);
            as_params_add(ps, name, m->layers[l].w[w], g->layers[l].w[w], r, cc, 1);
            if (w == AS_LIN_O) {
                snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
                as_params_add(ps, name, m->layers[l].ffn_norm, g->layers[l].ffn_norm, 1, D, 0);
            }
        }
    }
    as_params_add(ps, "model.norm.weight", m->norm, g->norm, 1, D, 0);
    if (m->lm_head != m->embed)
        as_params_add(ps, "lm_head.weight", m->lm_head, g->lm_head, V, D, 1);
    return ps->n - n0;
}

/* The effective weights of layer l's linears (the model's, or the map's into st->weff). */
static void layer_weights(const struct as_model *m, struct as_train_state *st, int l,
                          const float *W[AS_LIN_COUNT], const float *B[AS_LIN_COUNT]) {
    for (int w = 0; w < AS_LIN_COUNT; w++) {
        W[w] = m->layers[l].w[w], B[w] = NULL;
        if (!st->has_map) continue;
        int r, c;
        as_model_linear_shape(m, w, &r, &c);
        if (!st->weff[w]) {
            st->weff[w] = fbuf((size_t)r * c);
            st->beff[w] = fbuf((size_t)r);
        }
        st->hasb[w] = 0;
        st->map.map(st->map.ctx, l, w, W[w], r, c, st->weff[w], st->beff[w], &st->hasb[w]);
        W[w] = st->weff[w];
        B[w] = st->hasb[w] ? st->beff[w] : NULL;
    }
}

/* Layer l from x0 [T, D] into x2 (may not alias x0); intermediates stay in st. */
static void layer_fwd(const struct as_model *m, struct as_train_state *st, int l, const float *x0,
                      float *x2, int T, const float *W[AS_LIN_COUNT],
                      const float *B[AS_LIN_COUNT]) {
    const struct as_model_config *c = &m->cfg;
    const struct as_layer_weights *L = &m->layers[l];
    int D = c->hidden, FF = c->intermediate, hd = c->head_dim;
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    size_t n = (size_t)T * D;
    as_op_rmsnorm(st->xn1, x0, L->attn_norm, T, D, c->rms_eps);
    as_op_linear(st->q, st->xn1, W[AS_LIN_Q], B[AS_LIN_Q], T, D, qd);
    as_op_linear(st->k, st->xn1, W[AS_LIN_K], B[AS_LIN_K], T, D, kvd);
    as_op_linear(st->v, st->xn1, W[AS_LIN_V], B[AS_LIN_V], T, D, kvd);
    as_op_rope(st->q, T, c->n_heads, hd, 0, st->rope_cos, st->rope_sin);
    as_op_rope(st->k, T, c->n_kv_heads, hd, 0, st->rope_cos, st->rope_sin);
    as_op_attention(c, st->q, st->k, st->v, st->att, st->P, T, (size_t)T * T, T, 0);
    as_op_linear(st->tmp, st->att, W[AS_LIN_O], B[AS_LIN_O], T, qd, D);
    for (size_t i = 0; i < n; i++)
        st->x1[i] = x0[i] + st->tmp[i];
    as_op_rmsnorm(st->xn2, st->x1, L->ffn_norm, T, D, c->rms_eps);
    as_op_linear(st->g, st->xn2, W[AS_LIN_GATE], B[AS_LIN_GATE], T, D, FF);
    as_op_linear(st->u, st->xn2, W[AS_LIN_UP], B[AS_LIN_UP], T, D, FF);
    memcpy(st->h, st->g, (size_t)T * FF * sizeof(float));
    as_op_swiglu(st->h, st->u, (size_t)T * FF);
    as_op_linear(st->tmp, st->h, W[AS_LIN_DOWN], B[AS_LIN_DOWN], T, FF, D);
    for (size_t i = 0; i < n; i++)
        x2[i] = st->x1[i] + st->tmp[i];
}

int as_train_forward(const struct as_model *m, struct as_train_state *st, const int *tokens,
                     int T) {
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden;
    if (T <= 0 || T > st->max_T)
        return as_fail("training: window of %d tokens, state holds %d", T, st->max_T);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return as_fail("training: token id %d out of range (vocab %d)", tokens[t], c->vocab);
    st->T = T;
    memcpy(st->tokens, tokens, (size_t)T * sizeof(int));
    size_t act = (size_t)st->max_T * D;
    for (int t = 0; t < T; t++)
        memcpy(st->resid + (size_t)t * D, m->embed + (size_t)tokens[t] * D,
               (size_t)D * sizeof(float));
    const float *W[AS_LIN_COUNT], *B[AS_LIN_COUNT];
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights(m, st, l, W, B);
        layer_fwd(m, st, l, st->resid + l * act, st->resid + (l + 1) * act, T, W, B);
    }
    as_op_rmsnorm(st->xnf, st->resid + (size_t)c->n_layers * act, m->norm, T, D, c->rms_eps);
    as_op_linear(st->logits, st->xnf, m->lm_head, NULL, T, D, c->vocab);
    return 0;
}

/* Backward of linear `w` of layer l: dx += dy W_eff; the weight's gradient to g (through the
 * map's unmap when there is one). */
static void lin_bwd(const struct as_model *m, struct as_train_state *st, int l, enum as_linear w,
                    const float *Weff, float *dx, const float *dy, const float *x, int T,
                    float *gW) {
    int r, c;
    as_model_linear_shape(m, w, &r, &c);
    if (!st->has_map) {
        as_bwd_linear(dx, gW, NULL, dy, x, Weff, T, c, r);
        return;
    }
    if (!st->gweff) {
        size_t mx = 0, mr = 0;
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            int rr, cc;
            as_model_linear_shape(m, k, &rr, &cc);
            if ((size_t)rr * cc > mx) mx = (size_t)rr * cc;
            if ((size_t)rr > mr) mr = (size_t)rr;
        }
        st->gweff = fbuf(mx), st->gbeff = fbuf(mr);
    }
    memset(st->gweff, 0, (size_t)r * c * sizeof(float));
    memset(st->gbeff, 0, (size_t)r * sizeof(float));
    as_bwd_linear(dx, st->gweff, st->hasb[w] ? st->gbeff : NULL, dy, x, Weff, T, c, r);
    st->map.unmap(st->map.ctx, l, w, m->layers[l].w[w], r, c, st->gweff,
                  st->hasb[w] ? st->gbeff : NULL, gW);
}

void as_train_backward(const struct as_model *m, struct as_train_state *st,
                       struct as_model_grads *g, const float *dlogits) {
    const struct as_model_config *c = &m->cfg;
    int T = st->T, D = c->hidden, FF = c->intermediate, hd = c->head_dim;
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    size_t act = (size_t)st->max_T * D, n = (size_t)T * D;
    /* lm_head and final norm */
    memset(st->dxn, 0, n * sizeof(float));
    as_bwd_linear(st->dxn, g->lm_head, NULL, dlogits, st->xnf, m->lm_head, T, D, c->vocab);
    memset(st->dx, 0, n * sizeof(float));
    as_bwd_rmsnorm(st->dx, g->norm, st->dxn, st->resid + (size_t)c->n_layers * act, m->norm, T, D,
                   c->rms_eps);
    const float *W[AS_LIN_COUNT], *B[AS_LIN_COUNT];
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const struct as_layer_weights *L = &m->layers[l];
        struct as_layer_weights *G = &g->layers[l];
        const float *x0 = st->resid + l * act;
        layer_weights(m, st, l, W, B);
        layer_fwd(m, st, l, x0, st->tmp, T, W, B); /* recompute; tmp's output is not needed */
        /* MLP: x2 = x1 + down(silu(gate(xn2)) * up(xn2)); dx holds dL/dx2 = dL/dx1's residual */
        memset(st->dh, 0, (size_t)T * FF * sizeof(float));
        lin_bwd(m, st, l, AS_LIN_DOWN, W[AS_LIN_DOWN], st->dh, st->dx, st->h, T, G->w[AS_LIN_DOWN]);
        memset(st->dg, 0, (size_t)T * FF * sizeof(float));
        memset(st->du, 0, (size_t)T * FF * sizeof(float));
        as_bwd_swiglu(st->dg, st->du, st->dh, st->g, st->u, (size_t)T * FF);
        memset(st->dxn, 0, n * sizeof(float));
        lin_bwd(m, st, l, AS_LIN_GATE, W[AS_LIN_GATE], st->dxn, st->dg, st->xn2, T,
                G->w[AS_LIN_GATE]);
        lin_bwd(m, st, l, AS_LIN_UP, W[AS_LIN_UP], st->dxn, st->du, st->xn2, T, G->w[AS_LIN_UP]);
        as_bwd_rmsnorm(st->dx, G->ffn_norm, st->dxn, st->x1, L->ffn_norm, T, D, c->rms_eps);
        /* attention: x1 = x0 + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))) */
        memset(st->datt, 0, (size_t)T * qd * sizeof(float));
        lin_bwd(m, st, l, AS_LIN_O, W[AS_LIN_O], st->datt, st->dx, st->att, T, G->w[AS_LIN_O]);
        memset(st->dq, 0, (size_t)T * qd * sizeof(float));
        memset(st->dk, 0, (size_t)T * kvd * sizeof(float));
        memset(st->dv, 0, (size_t)T * kvd * sizeof(float));
        as_bwd_attention(c, st->dq, st->dk, st->dv, st->datt, st->q, st->k, st->v, st->P, T,
                         (size_t)T * T, T, st->scratch);
        as_bwd_rope(st->dq, T, c->n_heads, hd, 0, st->rope_cos, st->rope_sin);
        as_bwd_rope(st->dk, T, c->n_kv_heads, hd, 0, st->rope_cos, st->rope_sin);
        memset(st->dxn, 0, n * sizeof(float));
        lin_bwd(m, st, l, AS_LIN_Q, W[AS_LIN_Q], st->dxn, st->dq, st->xn1, T, G->w[AS_LIN_Q]);
        lin_bwd(m, st, l, AS_LIN_K, W[AS_LIN_K], st->dxn, st->dk, st->xn1, T, G->w[AS_LIN_K]);
        lin_bwd(m, st, l, AS_LIN_V, W[AS_LIN_V], st->dxn, st->dv, st->xn1, T, G->w[AS_LIN_V]);
        as_bwd_rmsnorm(st->dx, G->attn_norm, st->dxn, x0, L->attn_norm, T, D, c->rms_eps);
    }
    for (int t = 0; t < T; t++) {
        float *e = g->embed + (size_t)st->tokens[t] * D;
        const float *d = st->dx + (size_t)t * D;
        for (int j = 0; j < D; j++)
            e[j] += d[j];
    }
}
