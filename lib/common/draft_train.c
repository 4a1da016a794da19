/* draft_train: TTT forward and backward of an Eagle3 draft (see draft_train.h). The ops are the
 * engine's (forward.h) and their backwards the training engine's (train_ops.h); only the TTT
 * attention (step-0 keys causally plus one same-position column per later step) is local. */
#include "draft_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "forward.h"
#include "train_ops.h"

struct as_draft_grads {
    float *fc, *in_norm, *hid_norm, *wq, *wk, *wv, *wo, *post_norm, *wgate, *wup, *wdown, *norm,
        *lm_head;
};

/* (value, gradient, rows, cols, name) of every trainable weight, in one table. */
struct pdesc {
    const char *name;
    float *w, **g;
    int rows, cols;
};

static int ptable(struct as_draft *d, struct as_draft_grads *g, struct pdesc *t) {
    int H = d->cfg.hidden, I = d->cfg.intermediate, qd = d->cfg.n_heads * d->cfg.head_dim,
        kvd = d->cfg.n_kv_heads * d->cfg.head_dim;
    struct pdesc p[] = {
        {"fc.weight", d->fc, &g->fc, H, 3 * d->target_hidden},
        {"midlayer.input_layernorm.weight", d->in_norm, &g->in_norm, 1, H},
        {"midlayer.hidden_norm.weight", d->hid_norm, &g->hid_norm, 1, H},
        {"midlayer.self_attn.q_proj.weight", d->wq, &g->wq, qd, 2 * H},
        {"midlayer.self_attn.k_proj.weight", d->wk, &g->wk, kvd, 2 * H},
        {"midlayer.self_attn.v_proj.weight", d->wv, &g->wv, kvd, 2 * H},
        {"midlayer.self_attn.o_proj.weight", d->wo, &g->wo, H, qd},
        {"midlayer.post_attention_layernorm.weight", d->post_norm, &g->post_norm, 1, H},
        {"midlayer.mlp.gate_proj.weight", d->wgate, &g->wgate, I, H},
        {"midlayer.mlp.up_proj.weight", d->wup, &g->wup, I, H},
        {"midlayer.mlp.down_proj.weight", d->wdown, &g->wdown, H, I},
        {"norm.weight", d->norm, &g->norm, 1, H},
        {"lm_head.weight", d->lm_head, &g->lm_head, d->vd, H},
    };
    memcpy(t, p, sizeof p);
    return (int)(sizeof p / sizeof p[0]);
}

struct as_draft_grads *as_draft_grads_new(const struct as_draft *d) {
    struct as_draft_grads *g = as_xcalloc(1, sizeof *g);
    struct pdesc t[13];
    int n = ptable((struct as_draft *)d, g, t);
    for (int i = 0; i < n; i++)
        *t[i].g = as_xcalloc((size_t)t[i].rows * t[i].cols, sizeof(float));
    return g;
}

void as_draft_grads_free(struct as_draft_grads *g) {
    if (!g) return;
    free(g->fc), free(g->in_norm), free(g->hid_norm), free(g->wq), free(g->wk), free(g->wv);
    free(g->wo), free(g->post_norm), free(g->wgate), free(g->wup), free(g->wdown), free(g->norm);
    free(g->lm_head);
    free(g);
}

int as_draft_params(struct as_draft *d, struct as_draft_grads *g, struct as_params *ps) {
    struct pdesc t[13];
    int n = ptable(d, g, t);
    for (int i = 0; i < n; i++)
        as_params_add(ps, t[i].name, t[i].w, *t[i].g, t[i].rows, t[i].cols, t[i].rows > 1);
    return n;
}

/* One step's saved activations, N rows each. */
struct step {
    int *tok;
    unsigned char *valid;
    float *g, *x2, *q, *k, *v, *ao, *h1, *y, *gate, *up, *act, *h2, *fn, *dlog;
};

struct ctx {
    const struct as_draft *d;
    int N, B, R, S, H, I, qd, kvd, nh, nkv, hd, Vd; /* N positions per window, B windows, R rows */
    float *cos, *sin;
    struct step st[AS_TTT_MAX];
};

/* Probabilities of query (step i, row r = window base + t, head h) over its keys: step-0 rows
 * base..base+t of its own window, then steps 1..i at row r. p has t+1+i entries. */
static void scores(const struct ctx *c, int i, int r, int h, float *p) {
    int t = r % c->N, base = r - t, kh = h / (c->nh / c->nkv), n = t + 1 + i;
    const float *q = c->st[i].q + (size_t)r * c->qd + (size_t)h * c->hd;
    float scale = 1.0f / sqrtf((float)c->hd), mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) {
        const float *k = j <= t ? c->st[0].k + (size_t)(base + j) * c->kvd
                                : c->st[j - t].k + (size_t)r * c->kvd; /* step j-t */
        k += (size_t)kh * c->hd;
        float s = 0;
        for (int e = 0; e < c->hd; e++)
            s += q[e] * k[e];
        p[j] = s * scale;
        if (p[j] > mx) mx = p[j];
    }
    for (int j = 0; j < n; j++)
        sum += (p[j] = expf(p[j] - mx));
    for (int j = 0; j < n; j++)
        p[j] /= sum;
}

static const float *vrow(const struct ctx *c, const float *const *vv, int r, int j, int kh) {
    int t = r % c->N;
    const float *v = j <= t ? vv[0] + (size_t)(r - t + j) * c->kvd : vv[j - t] + (size_t)r * c->kvd;
    return v + (size_t)kh * c->hd;
}

static void attn_fwd(const struct ctx *c, int i, float *p) {
    const float *vv[AS_TTT_MAX];
    for (int s = 0; s <= i; s++)
        vv[s] = c->st[s].v;
    for (int r = 0; r < c->R; r++)
        for (int h = 0; h < c->nh; h++) {
            int kh = h / (c->nh / c->nkv), n = r % c->N + 1 + i;
            scores(c, i, r, h, p);
            float *o = c->st[i].ao + (size_t)r * c->qd + (size_t)h * c->hd;
            memset(o, 0, (size_t)c->hd * sizeof(float));
            for (int j = 0; j < n; j++) {
                const float *v = vrow(c, vv, r, j, kh);
                for (int e = 0; e < c->hd; e++)
                    o[e] += p[j] * v[e];
            }
        }
}

/* dq (step i) and dK[s], dV[s] (s <= i) from dao. */
static void attn_bwd(const struct ctx *c, int i, const float *dao, float *dq, float **dK,
                     float **dV, float *p, float *dp) {
    const float *vv[AS_TTT_MAX];
    for (int s = 0; s <= i; s++)
        vv[s] = c->st[s].v;
    float scale = 1.0f / sqrtf((float)c->hd);
    for (int r = 0; r < c->R; r++)
        for (int h = 0; h < c->nh; h++) {
            int t = r % c->N, kh = h / (c->nh / c->nkv), n = t + 1 + i;
            scores(c, i, r, h, p);
            const float *go = dao + (size_t)r * c->qd + (size_t)h * c->hd;
            const float *q = c->st[i].q + (size_t)r * c->qd + (size_t)h * c->hd;
            float *gq = dq + (size_t)r * c->qd + (size_t)h * c->hd;
            double dot = 0;
            for (int j = 0; j < n; j++) {
                const float *v = vrow(c, vv, r, j, kh);
                float s = 0;
                for (int e = 0; e < c->hd; e++)
                    s += go[e] * v[e];
                dp[j] = s;
                dot += (double)p[j] * s;
            }
            for (int j = 0; j < n; j++) {
                int sj = j <= t ? 0 : j - t;
                size_t row = (size_t)(j <= t ? r - t + j : r) * c->kvd + (size_t)kh * c->hd;
                const float *k = c->st[sj].k + row;
                float *gk = dK[sj] + row, *gv = dV[sj] + row;
                float ds = p[j] * (dp[j] - (float)dot) * scale;
                for (int e = 0; e < c->hd; e++) {
                    gv[e] += p[j] * go[e];
                    gq[e] += ds * k[e];
                    gk[e] += ds * q[e];
                }
            }
        }
}

int as_draft_ttt(const struct as_draft *d, const int *tokens, const float *feats,
                 const float *tlogits, const unsigned char *tmask, int T, int steps,
                 struct as_draft_grads *g, struct as_ttt_result *r) {
    return as_draft_ttt_batch(d, tokens, feats, tlogits, tmask, T, 1, steps, g, r);
}

/* RoPE of every window's rows at positions t + pos0 (rows of one window are consecutive). */
static void rope_windows(const struct ctx *c, float *x, int heads, int pos0, int bwd) {
    size_t w = (size_t)c->N * heads * c->hd;
    for (int b = 0; b < c->B; b++)
        if (bwd)
            as_bwd_rope(x + b * w, c->N, heads, c->hd, pos0, c->cos, c->sin);
        else
            as_op_rope(x + b * w, c->N, heads, c->hd, pos0, c->cos, c->sin);
}

int as_draft_ttt_batch(const struct as_draft *d, const int *tokens, const float *feats,
                       const float *tlogits, const unsigned char *tmask, int T, int B, int steps,
                       struct as_draft_grads *g, struct as_ttt_result *r) {
    if (T < 2 || B < 1 || steps < 1 || steps > AS_TTT_MAX)
        return as_fail("draft training: %d windows of %d tokens, %d TTT steps", B, T, steps);
    struct ctx c = {.d = d, .N = T - 1, .B = B, .R = B * (T - 1), .S = steps};
    c.H = d->cfg.hidden, c.I = d->cfg.intermediate, c.nh = d->cfg.n_heads;
    c.nkv = d->cfg.n_kv_heads, c.hd = d->cfg.head_dim, c.Vd = d->vd;
    c.qd = c.nh * c.hd, c.kvd = c.nkv * c.hd;
    int N = c.N, R = c.R, H = c.H, I = c.I, qd = c.qd, kvd = c.kvd, Vd = c.Vd, half = c.hd / 2;
    float eps = d->cfg.rms_eps;
    int npos = N + steps;
    c.cos = as_xmalloc((size_t)npos * half * sizeof(float));
    c.sin = as_xmalloc((size_t)npos * half * sizeof(float));
    for (int p = 0; p < npos; p++)
        for (int e = 0; e < half; e++) {
            float ang = (float)p * d->inv_freq[e];
            c.cos[p * half + e] = cosf(ang) * d->attn_factor;
            c.sin[p * half + e] = sinf(ang) * d->attn_factor;
        }
    float *p = as_xmalloc((size_t)(N + steps) * sizeof(float));
    float *dp = as_xmalloc((size_t)(N + steps) * sizeof(float));
    float *e = as_xmalloc((size_t)Vd * sizeof(float)), *pt = as_xmalloc((size_t)Vd * sizeof(float));
    /* the taps of positions 0..T-2 of every window, packed: fc's input rows */
    size_t fw = (size_t)3 * d->target_hidden;
    float *fa = as_xmalloc((size_t)R * fw * sizeof(float));
    for (int b = 0; b < B; b++)
        memcpy(fa + (size_t)b * N * fw, feats + (size_t)b * T * fw, (size_t)N * fw * sizeof(float));
    memset(r, 0, sizeof *r);
    for (int i = 0; i < steps; i++) {
        struct step *s = &c.st[i];
        size_t n = (size_t)R;
        s->tok = as_xmalloc(n * sizeof(int));
        s->valid = as_xmalloc(n);
        s->g = as_xmalloc(n * H * 4), s->x2 = as_xmalloc(n * 2 * H * 4);
        s->q = as_xmalloc(n * qd * 4), s->k = as_xmalloc(n * kvd * 4);
        s->v = as_xmalloc(n * kvd * 4), s->ao = as_xmalloc(n * qd * 4);
        s->h1 = as_xmalloc(n * H * 4), s->y = as_xmalloc(n * H * 4);
        s->gate = as_xmalloc(n * I * 4), s->up = as_xmalloc(n * I * 4);
        s->act = as_xmalloc(n * I * 4), s->h2 = as_xmalloc(n * H * 4);
        s->fn = as_xmalloc(n * H * 4), s->dlog = as_xmalloc(n * Vd * 4);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < N; t++) {
                int src = t + 1 + i;
                s->tok[b * N + t] = src < T ? tokens[b * T + src] : 0;
                s->valid[b * N + t] = src < T && tmask[b * T + src];
            }
        if (i == 0)
            as_op_linear(s->g, fa, d->fc, NULL, R, 3 * d->target_hidden, H);
        else
            memcpy(s->g, c.st[i - 1].h2, n * H * 4);
        for (int t = 0; t < R; t++) {
            float *row = s->x2 + (size_t)t * 2 * H;
            as_op_rmsnorm(row, d->embed + (size_t)s->tok[t] * H, d->in_norm, 1, H, eps);
            as_op_rmsnorm(row + H, s->g + (size_t)t * H, d->hid_norm, 1, H, eps);
        }
        as_op_linear(s->q, s->x2, d->wq, NULL, R, 2 * H, qd);
        as_op_linear(s->k, s->x2, d->wk, NULL, R, 2 * H, kvd);
        as_op_linear(s->v, s->x2, d->wv, NULL, R, 2 * H, kvd);
        rope_windows(&c, s->q, c.nh, i, 0);
        rope_windows(&c, s->k, c.nkv, i, 0);
        attn_fwd(&c, i, p);
        as_op_linear(s->h1, s->ao, d->wo, NULL, R, qd, H);
        for (size_t j = 0; j < n * H; j++)
            s->h1[j] += s->g[j];
        as_op_rmsnorm(s->y, s->h1, d->post_norm, R, H, eps);
        as_op_linear(s->gate, s->y, d->wgate, NULL, R, H, I);
        as_op_linear(s->up, s->y, d->wup, NULL, R, H, I);
        memcpy(s->act, s->gate, n * I * 4);
        as_op_swiglu(s->act, s->up, n * I);
        as_op_linear(s->h2, s->act, d->wdown, NULL, R, I, H);
        for (size_t j = 0; j < n * H; j++)
            s->h2[j] += s->h1[j];
        as_op_rmsnorm(s->fn, s->h2, d->norm, R, H, eps);
        as_op_linear(s->dlog, s->fn, d->lm_head, NULL, R, H, Vd);
        /* soft cross-entropy against the target restricted to the draft vocabulary */
        double w = pow(0.8, i), li = 0;
        for (int t = 0; t < R; t++) {
            float *z = s->dlog + (size_t)t * Vd;
            if (!s->valid[t]) {
                memset(z, 0, (size_t)Vd * 4);
                continue;
            }
            const float *zt = tlogits + (size_t)((t / N) * T + t % N + 1 + i) * Vd;
            int am = 0, at = 0;
            float mx = z[0], mt = zt[0];
            for (int v = 1; v < Vd; v++) {
                if (z[v] > mx) mx = z[v], am = v;
                if (zt[v] > mt) mt = zt[v], at = v;
            }
            double se = 0, st = 0;
            for (int v = 0; v < Vd; v++) {
                se += (e[v] = expf(z[v] - mx));
                st += (pt[v] = expf(zt[v] - mt));
            }
            double lse = log(se), row = 0;
            for (int v = 0; v < Vd; v++) {
                double pv = pt[v] / st;
                row -= pv * ((z[v] - mx) - lse);
                z[v] = (float)(w * (e[v] / se - pv) / R);
            }
            li += row;
            r->valid_step[i]++;
            r->acc_step[i] += am == at;
        }
        r->loss_step[i] = li / R;
        r->loss += w * li / R;
        if (r->valid_step[i]) r->acc_step[i] /= r->valid_step[i];
    }
    if (g) {
        size_t n = (size_t)R;
        float *dK[AS_TTT_MAX], *dV[AS_TTT_MAX];
        for (int i = 0; i < steps; i++) {
            dK[i] = as_xcalloc(n * kvd, 4);
            dV[i] = as_xcalloc(n * kvd, 4);
        }
        float *dnext = as_xcalloc(n * H, 4), *dh2 = as_xmalloc(n * H * 4);
        float *dfn = as_xmalloc(n * H * 4), *dh1 = as_xmalloc(n * H * 4);
        float *dact = as_xmalloc(n * I * 4), *dgate = as_xmalloc(n * I * 4);
        float *dup = as_xmalloc(n * I * 4), *dy = as_xmalloc(n * H * 4);
        float *dao = as_xmalloc(n * qd * 4), *dq = as_xmalloc(n * qd * 4);
        float *dx2 = as_xmalloc(n * 2 * H * 4), *dg = as_xmalloc(n * H * 4);
        for (int i = steps - 1; i >= 0; i--) {
            struct step *s = &c.st[i];
            memcpy(dh2, dnext, n * H * 4);
            memset(dfn, 0, n * H * 4);
            as_bwd_linear(dfn, g->lm_head, NULL, s->dlog, s->fn, d->lm_head, R, H, Vd);
            as_bwd_rmsnorm(dh2, g->norm, dfn, s->h2, d->norm, R, H, eps);
            memcpy(dh1, dh2, n * H * 4);
            memset(dact, 0, n * I * 4);
            as_bwd_linear(dact, g->wdown, NULL, dh2, s->act, d->wdown, R, I, H);
            memset(dgate, 0, n * I * 4), memset(dup, 0, n * I * 4);
            as_bwd_swiglu(dgate, dup, dact, s->gate, s->up, n * I);
            memset(dy, 0, n * H * 4);
            as_bwd_linear(dy, g->wgate, NULL, dgate, s->y, d->wgate, R, H, I);
            as_bwd_linear(dy, g->wup, NULL, dup, s->y, d->wup, R, H, I);
            as_bwd_rmsnorm(dh1, g->post_norm, dy, s->h1, d->post_norm, R, H, eps);
            memcpy(dg, dh1, n * H * 4);
            memset(dao, 0, n * qd * 4);
            as_bwd_linear(dao, g->wo, NULL, dh1, s->ao, d->wo, R, qd, H);
            memset(dq, 0, n * qd * 4);
            attn_bwd(&c, i, dao, dq, dK, dV, p, dp);
            /* dK[i], dV[i] are complete: every later step has added its share */
            rope_windows(&c, dq, c.nh, i, 1);
            rope_windows(&c, dK[i], c.nkv, i, 1);
            memset(dx2, 0, n * 2 * H * 4);
            as_bwd_linear(dx2, g->wq, NULL, dq, s->x2, d->wq, R, 2 * H, qd);
            as_bwd_linear(dx2, g->wk, NULL, dK[i], s->x2, d->wk, R, 2 * H, kvd);
            as_bwd_linear(dx2, g->wv, NULL, dV[i], s->x2, d->wv, R, 2 * H, kvd);
            for (int t = 0; t < R; t++) {
                const float *gx = dx2 + (size_t)t * 2 * H;
                as_bwd_rmsnorm(NULL, g->in_norm, gx, d->embed + (size_t)s->tok[t] * H, d->in_norm,
                               1, H, eps);
                as_bwd_rmsnorm(dg + (size_t)t * H, g->hid_norm, gx + H, s->g + (size_t)t * H,
                               d->hid_norm, 1, H, eps);
            }
            if (i > 0)
                memcpy(dnext, dg, n * H * 4);
            else
                as_bwd_linear(NULL, g->fc, NULL, dg, fa, d->fc, R, 3 * d->target_hidden, H);
        }
        for (int i = 0; i < steps; i++)
            free(dK[i]), free(dV[i]);
        free(dnext), free(dh2), free(dfn), free(dh1), free(dact), free(dgate), free(dup);
        free(dy), free(dao), free(dq), free(dx2), free(dg);
    }
    for (int i = 0; i < steps; i++) {
        struct step *s = &c.st[i];
        free(s->tok), free(s->valid), free(s->g), free(s->x2), free(s->q), free(s->k);
        free(s->v), free(s->ao), free(s->h1), free(s->y), free(s->gate), free(s->up);
        free(s->act), free(s->h2), free(s->fn), free(s->dlog);
    }
    free(fa), free(c.cos), free(c.sin), free(p), free(dp), free(e), free(pt);
    return 0;
}
