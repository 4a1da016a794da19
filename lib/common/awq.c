/* awq: AWQ scale search, clipping and folding (see awq.h; REFERENCE.md "AWQ").
 * Losses run on cached full-precision activations with BLAS: the attention and MLP blocks through
 * the engine's as_layer_attention / as_layer_mlp with trial weights, the linear-only groups as
 * one GEMM of the inputs with the weight difference (or its Gram form when cheaper). */
#include "awq.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "forward.h"
#include "quant_int.h"

void awq_opts_default(struct awq_opts *o) {
    *o = (struct awq_opts){.bits = 4,
                           .group_size = 128,
                           .sym = 0,
                           .duo_scaling = 1,
                           .n_grid = 20,
                           .clip = 1,
                           .clip_tokens = 512,
                           .clip_grid = 20,
                           .clip_max_shrink = 0.5f};
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int group_width(int K, int group_size) {
    return group_size <= 0 || group_size > K ? K : group_size;
}

/* One group of n values: AWQ fit, then q/dequant exactly as the emitted codes will be. */
static void fake_quant_group(const float *w, int n, int bits, int sym, float *out) {
    float s;
    int32_t z;
    quant_int_fit_group_awq(w, n, bits, sym, &s, &z);
    int maxq = quant_int_maxq(bits);
    for (int i = 0; i < n; i++)
        out[i] = quant_int_dequantize(quant_int_quantize(w[i], s, z, maxq), s, z);
}

void awq_fake_quant(const float *W, int N, int K, const struct awq_opts *o, float *out) {
    int gs = group_width(K, o->group_size);
    for (size_t n = 0; n < (size_t)N; n++)
        for (int k0 = 0; k0 < K; k0 += gs) {
            int len = k0 + gs <= K ? gs : K - k0;
            fake_quant_group(W + n * K + k0, len, o->bits, o->sym, out + n * K + k0);
        }
}

void awq_w_mean(const float *const *W, const int *rows, int n_mats, int K, int group_size,
                float *w_mean) {
    int gs = group_width(K, group_size);
    double *acc = as_xcalloc((size_t)K, sizeof *acc);
    long total = 0;
    for (int m = 0; m < n_mats; m++) {
        for (size_t n = 0; n < (size_t)rows[m]; n++) {
            const float *w = W[m] + n * K;
            for (int k0 = 0; k0 < K; k0 += gs) {
                int len = k0 + gs <= K ? gs : K - k0;
                float amax = 0.0f;
                for (int i = 0; i < len; i++)
                    amax = fmaxf(amax, fabsf(w[k0 + i]));
                /* + 1e-6: an all-zero group contributes 0, never 0/0 */
                float inv = 1.0f / (amax + 1e-6f);
                for (int i = 0; i < len; i++)
                    acc[k0 + i] += fabsf(w[k0 + i]) * inv;
            }
        }
        total += rows[m];
    }
    for (int j = 0; j < K; j++)
        w_mean[j] = total ? (float)(acc[j] / (double)total) : 0.0f;
    free(acc);
}

void awq_scales(const float *x_mean, const float *w_mean, int K, float alpha, int duo, float *s) {
    float mx = 0.0f, mn = INFINITY;
    for (int j = 0; j < K; j++) {
        /* powf(0, 0) = 1 and powf(0, a > 0) = 0: a dead channel gets the clamp value */
        float x = fmaxf(x_mean[j], 0.0f), v = powf(x, alpha);
        if (duo) v /= powf(fmaxf(w_mean[j], 0.0f), 1.0f - alpha) + 1e-4f;
        if (!isfinite(v)) v = 1.0f;
        v = fmaxf(v, 1e-4f);
        s[j] = v;
        mx = fmaxf(mx, v), mn = fminf(mn, v);
    }
    /* s /= sqrt(max s * min s), in double so the product cannot overflow */
    double norm = sqrt((double)mx * (double)mn);
    if (!(norm > 0.0) || !isfinite(norm)) norm = 1.0;
    for (int j = 0; j < K; j++) {
        float v = (float)(s[j] / norm);
        s[j] = isfinite(v) && v > 0.0f ? v : 1.0f;
    }
}

void awq_trial_weight(const float *W, int N, int K, const float *s, const struct awq_opts *o,
                      float *out) {
    int gs = group_width(K, o->group_size);
    for (size_t n = 0; n < (size_t)N; n++) {
        const float *w = W + n * K;
        float *r = out + n * K;
        for (int j = 0; j < K; j++)
            r[j] = w[j] * s[j];
        for (int k0 = 0; k0 < K; k0 += gs) {
            int len = k0 + gs <= K ? gs : K - k0;
            fake_quant_group(r + k0, len, o->bits, o->sym, r + k0);
        }
        for (int j = 0; j < K; j++)
            r[j] /= s[j];
    }
}

static double sum_sq(const float *a, size_t n) {
    double acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += (double)a[i] * a[i];
    return acc;
}

double awq_linear_loss(const float *X, const float *gram, int n, int K, const float *D, int N) {
    double acc = 0;
    if (gram) { /* Σ_rows d G dᵀ */
        float *DG = as_xmalloc(sizeof(float) * N * K);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, K, 1.0f, D, K, gram, K, 0.0f,
                    DG, K);
        for (size_t i = 0; i < (size_t)N * K; i++)
            acc += (double)DG[i] * D[i];
        free(DG);
    } else {
        enum { CHUNK = 256 };
        float *out = as_xmalloc(sizeof(float) * CHUNK * N);
        for (int r0 = 0; r0 < n; r0 += CHUNK) {
            int rows = r0 + CHUNK <= n ? CHUNK : n - r0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, N, K, 1.0f,
                        X + (size_t)r0 * K, K, D, K, 0.0f, out, N);
            acc += sum_sq(out, (size_t)rows * N);
        }
        free(out);
    }
    return acc / ((double)n * N);
}

int awq_clip(float *W, int N, int K, const float *X, int n, const struct awq_opts *o,
             float *max_val) {
    if (N <= 0 || K <= 0 || n <= 0)
        return as_fail("awq clip: bad shape W [%d, %d], %d input rows", N, K, n);
    int gs = group_width(K, o->group_size), G = (K + gs - 1) / gs;
    int steps = (int)(o->clip_max_shrink * o->clip_grid);
    if (steps < 1) steps = 1;
    /* Gram blocks C_g = X_gᵀ X_g / n: the error of a group is dᵀ C_g d, exactly the mean over the
     * rows of (x_g · d)², at gs² instead of n·gs operations per (row, group). */
    float *C = as_xmalloc(sizeof(float) * (size_t)G * gs * gs);
    for (int g = 0; g < G; g++) {
        int len = g * gs + gs <= K ? gs : K - g * gs;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, len, len, n, 1.0f / (float)n,
                    X + (size_t)g * gs, K, X + (size_t)g * gs, K, 0.0f, C + (size_t)g * gs * gs,
                    len);
    }
    float *m0 = as_xmalloc(sizeof(float) * (size_t)N * G);
    float *best_m = as_xmalloc(sizeof(float) * (size_t)N * G);
    double *best_err = as_xmalloc(sizeof(double) * (size_t)N * G);
    float *Dm = as_xmalloc(sizeof(float) * (size_t)N * K); /* Q(clamp w) - w */
    float *DG = as_xmalloc(sizeof(float) * (size_t)N * gs);
    float *buf = as_xmalloc(sizeof(float) * gs);
    for (size_t r = 0; r < (size_t)N; r++)
        for (int g = 0; g < G; g++) {
            int len = g * gs + gs <= K ? gs : K - g * gs;
            float a = 0.0f;
            for (int i = 0; i < len; i++)
                a = fmaxf(a, fabsf(W[r * K + g * gs + i]));
            m0[r * G + g] = best_m[r * G + g] = a;
            best_err[r * G + g] = INFINITY;
        }
    for (int step = 0; step < steps; step++) {
        float shrink = 1.0f - (float)step / (float)o->clip_grid;
        for (size_t r = 0; r < (size_t)N; r++)
            for (int g = 0; g < G; g++) {
                int len = g * gs + gs <= K ? gs : K - g * gs;
                const float *w = W + r * K + g * gs;
                float m = m0[r * G + g] * shrink;
                for (int i = 0; i < len; i++)
                    buf[i] = fminf(fmaxf(w[i], -m), m);
                fake_quant_group(buf, len, o->bits, o->sym, buf);
                for (int i = 0; i < len; i++)
                    Dm[r * K + g * gs + i] = buf[i] - w[i];
            }
        for (int g = 0; g < G; g++) {
            int len = g * gs + gs <= K ? gs : K - g * gs;
            const float *Dg = Dm + (size_t)g * gs;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, len, len, 1.0f, Dg, K,
                        C + (size_t)g * gs * gs, len, 0.0f, DG, len);
            for (size_t r = 0; r < (size_t)N; r++) {
                double e = 0;
                for (int i = 0; i < len; i++)
                    e += (double)DG[r * len + i] * Dg[r * K + i];
                if (e < best_err[r * G + g]) { /* strict: ties keep the wider range */
                    best_err[r * G + g] = e;
                    best_m[r * G + g] = m0[r * G + g] * shrink;
                }
            }
        }
    }
    for (size_t r = 0; r < (size_t)N; r++)
        for (int g = 0; g < G; g++) {
            int len = g * gs + gs <= K ? gs : K - g * gs;
            float m = best_m[r * G + g], *w = W + r * K + g * gs;
            for (int i = 0; i < len; i++)
                w[i] = fminf(fmaxf(w[i], -m), m);
        }
    if (max_val) memcpy(max_val, best_m, sizeof(float) * (size_t)N * G);
    free(C), free(m0), free(best_m), free(best_err), free(Dm), free(DG), free(buf);
    return 0;
}

void awq_div_vec(float *v, const float *s, int K) {
    for (int j = 0; j < K; j++)
        v[j] /= s[j];
}

void awq_scale_cols(float *W, int N, int K, const float *s) {
    for (size_t n = 0; n < (size_t)N; n++)
        for (int j = 0; j < K; j++)
            W[n * K + j] *= s[j];
}

void awq_div_rows(float *W, int N, int K, const float *s) {
    for (size_t n = 0; n < (size_t)N; n++)
        for (int j = 0; j < K; j++)
            W[n * K + j] /= s[n];
}

void awq_scale_sym_inv(float *H, int K, const float *s) {
    for (size_t i = 0; i < (size_t)K; i++)
        for (int j = 0; j < K; j++)
            H[i * K + j] = H[i * K + j] / s[i] / s[j];
}

int awq_quantize(const float *W, int N, int K, const struct awq_opts *o, struct as_qlinear *ql) {
    struct quant_int_params p = {o->bits, o->group_size <= 0 ? -1 : o->group_size, o->sym};
    if (quant_int_check_params(&p, N, K)) return -1;
    for (size_t i = 0; i < (size_t)N * K; i++)
        if (!isfinite(W[i])) return as_fail("weight: non-finite value at [%zu, %zu]", i / K, i % K);
    int gs = group_width(K, o->group_size), G = (K + gs - 1) / gs, maxq = quant_int_maxq(o->bits);
    *ql = (struct as_qlinear){
        .N = N, .K = K, .bits = o->bits, .group_size = p.group_size, .sym = o->sym};
    ql->q = as_xmalloc((size_t)N * K);
    ql->scale = as_xmalloc(sizeof(float) * (size_t)N * G);
    ql->zero = as_xmalloc(sizeof(int32_t) * (size_t)N * G);
    ql->g_idx = as_xmalloc(sizeof(int32_t) * K);
    for (int k = 0; k < K; k++)
        ql->g_idx[k] = k / gs;
    for (size_t n = 0; n < (size_t)N; n++)
        for (int g = 0; g < G; g++) {
            int k0 = g * gs, len = k0 + gs <= K ? gs : K - k0;
            float s;
            int32_t z;
            quant_int_fit_group_awq(W + n * K + k0, len, o->bits, o->sym, &s, &z);
            ql->scale[n * G + g] = s;
            ql->zero[n * G + g] = z;
            for (int i = 0; i < len; i++)
                ql->q[n * K + k0 + i] = quant_int_quantize(W[n * K + k0 + i], s, z, maxq);
        }
    return 0;
}

void awq_qlinear_free(struct as_qlinear *ql) {
    free(ql->q), free(ql->scale), free(ql->zero), free(ql->g_idx);
    ql->q = NULL, ql->scale = NULL, ql->zero = NULL, ql->g_idx = NULL;
}

/* ---- one decoder layer ---- */

/* Cached full-precision activations of the S*T kept tokens of one layer. */
struct layer_cache {
    struct as_model *m;
    int l, S, T, n; /* n = S*T rows */
    struct as_run_state *st;
    float *xn1;   /* [n, D] q/k/v input */
    float *att;   /* [n, qd] o input */
    float *y_att; /* [n, D] attention output (o's output) */
    float *xn2;   /* [n, D] gate/up input */
    float *hb;    /* [n, FF] down input */
    float *y_mlp; /* [n, D] MLP output */
    float *out;   /* [T, D] scratch */
};

static int cache_build(struct layer_cache *c, const float *X) {
    const struct as_model_config *cf = &c->m->cfg;
    const struct as_layer_weights *L = &c->m->layers[c->l];
    int D = cf->hidden, qd = cf->n_heads * cf->head_dim, FF = cf->intermediate, T = c->T;
    size_t n = (size_t)c->n;
    c->st = as_state_new(c->m, T, T, 0);
    if (!c->st) return -1;
    c->xn1 = as_xmalloc(sizeof(float) * n * D);
    c->att = as_xmalloc(sizeof(float) * n * qd);
    c->y_att = as_xmalloc(sizeof(float) * n * D);
    c->xn2 = as_xmalloc(sizeof(float) * n * D);
    c->hb = as_xmalloc(sizeof(float) * n * FF);
    c->y_mlp = as_xmalloc(sizeof(float) * n * D);
    c->out = as_xmalloc(sizeof(float) * (size_t)T * D);
    for (int i = 0; i < c->S; i++) {
        size_t r = (size_t)i * T;
        as_op_rmsnorm(c->xn1 + r * D, X + r * D, L->attn_norm, T, D, cf->rms_eps);
        c->st->pos = 0;
        as_layer_attention(c->m, L, c->st, c->l, c->xn1 + r * D, T, c->y_att + r * D, NULL);
        memcpy(c->att + r * qd, c->st->att_out, sizeof(float) * T * qd);
        for (size_t j = 0; j < (size_t)T * D; j++)
            c->out[j] = X[r * D + j] + c->y_att[r * D + j];
        as_op_rmsnorm(c->xn2 + r * D, c->out, L->ffn_norm, T, D, cf->rms_eps);
        as_layer_mlp(c->m, L, c->st, c->l, c->xn2 + r * D, T, c->y_mlp + r * D, NULL);
        memcpy(c->hb + r * FF, c->st->hb, sizeof(float) * T * FF);
    }
    return 0;
}

static void cache_free(struct layer_cache *c) {
    as_state_free(c->st);
    free(c->xn1), free(c->att), free(c->y_att), free(c->xn2), free(c->hb), free(c->y_mlp);
    free(c->out);
}

static double mse_rows(const float *a, const float *b, size_t n) {
    double acc = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        acc += d * d;
    }
    return acc;
}

/* The linears of a scaling group, and the input width of the group. */
static const enum as_linear group_lin[AS_GROUP_COUNT][4] = {
    {AS_LIN_Q, AS_LIN_K, AS_LIN_V, AS_LIN_COUNT},
    {AS_LIN_O, AS_LIN_COUNT},
    {AS_LIN_GATE, AS_LIN_UP, AS_LIN_COUNT},
    {AS_LIN_DOWN, AS_LIN_COUNT}};

struct group_eval {
    struct layer_cache *c;
    const struct awq_opts *o;
    enum as_linear_group g;
    int K;
    float *trial[3]; /* trial weights of the group's linears */
    float *diff;     /* linear-only groups: trial - W */
    float *gram;     /* linear-only groups with n > K: XᵀX */
};

/* Loss of the compared output with trial weights Q(W s)/s for the group. */
static double group_loss(struct group_eval *e, const float *s) {
    struct layer_cache *c = e->c;
    struct as_layer_weights Lt = c->m->layers[c->l];
    const struct as_model_config *cf = &c->m->cfg;
    int D = cf->hidden, T = c->T;
    for (int i = 0; group_lin[e->g][i] != AS_LIN_COUNT; i++) {
        enum as_linear w = group_lin[e->g][i];
        int rows, cols;
        as_model_linear_shape(c->m, w, &rows, &cols);
        awq_trial_weight(Lt.w[w], rows, cols, s, e->o, e->trial[i]);
        Lt.w[w] = e->trial[i];
    }
    double acc = 0;
    if (e->g == AS_GROUP_ATTN_QKV) {
        for (int i = 0; i < c->S; i++) {
            size_t r = (size_t)i * T;
            c->st->pos = 0;
            as_layer_attention(c->m, &Lt, c->st, c->l, c->xn1 + r * D, T, c->out, NULL);
            acc += mse_rows(c->out, c->y_att + r * D, (size_t)T * D);
        }
        return acc / ((double)c->n * D);
    }
    if (e->g == AS_GROUP_MLP_GATE_UP) {
        for (int r0 = 0; r0 < c->n; r0 += T) {
            int rows = r0 + T <= c->n ? T : c->n - r0;
            as_layer_mlp(c->m, &Lt, c->st, c->l, c->xn2 + (size_t)r0 * D, rows, c->out, NULL);
            acc += mse_rows(c->out, c->y_mlp + (size_t)r0 * D, (size_t)rows * D);
        }
        return acc / ((double)c->n * D);
    }
    /* linear-only: o (input att) or down (input hb) */
    enum as_linear w = group_lin[e->g][0];
    int rows, cols;
    as_model_linear_shape(c->m, w, &rows, &cols);
    const float *W = c->m->layers[c->l].w[w];
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        e->diff[i] = e->trial[0][i] - W[i];
    const float *X = e->g == AS_GROUP_ATTN_O ? c->att : c->hb;
    return awq_linear_loss(X, e->gram, c->n, cols, e->diff, rows);
}

static void mean_abs_rows(const float *X, size_t n, int K, float *out) {
    double *acc = as_xcalloc((size_t)K, sizeof *acc);
    for (size_t r = 0; r < n; r++)
        for (int j = 0; j < K; j++)
            acc[j] += fabs(X[r * K + j]);
    for (int j = 0; j < K; j++)
        out[j] = (float)(acc[j] / (double)n);
    free(acc);
}

static int search_group(struct layer_cache *c, enum as_linear_group g, const float *x_mean_in,
                        const struct awq_opts *o, struct awq_layer_report *rep) {
    const struct as_model_config *cf = &c->m->cfg;
    struct as_layer_weights *L = &c->m->layers[c->l];
    struct group_eval e = {.c = c, .o = o, .g = g};
    const float *Ws[3];
    int rows[3], n_mats = 0, K = 0;
    for (int i = 0; group_lin[g][i] != AS_LIN_COUNT; i++) {
        enum as_linear w = group_lin[g][i];
        as_model_linear_shape(c->m, w, &rows[i], &K);
        Ws[i] = L->w[w];
        e.trial[i] = as_xmalloc(sizeof(float) * (size_t)rows[i] * K);
        n_mats++;
    }
    e.K = K;
    const float *X = g == AS_GROUP_ATTN_QKV      ? c->xn1
                     : g == AS_GROUP_ATTN_O      ? c->att
                     : g == AS_GROUP_MLP_GATE_UP ? c->xn2
                                                 : c->hb;
    if (g == AS_GROUP_ATTN_O || g == AS_GROUP_MLP_DOWN) {
        e.diff = as_xmalloc(sizeof(float) * (size_t)rows[0] * K);
        if (c->n > K) {
            e.gram = as_xmalloc(sizeof(float) * (size_t)K * K);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, K, c->n, 1.0f, X, K, X, K, 0.0f,
                        e.gram, K);
        }
    }
    float *x_mean = as_xmalloc(sizeof(float) * K), *w_mean = as_xmalloc(sizeof(float) * K);
    float *s = as_xmalloc(sizeof(float) * K), *best = as_xmalloc(sizeof(float) * K);
    if (x_mean_in)
        memcpy(x_mean, x_mean_in, sizeof(float) * K);
    else
        mean_abs_rows(X, (size_t)c->n, K, x_mean);
    awq_w_mean(Ws, rows, n_mats, K, o->group_size, w_mean);
    for (int j = 0; j < K; j++)
        s[j] = 1.0f;
    rep->loss_rtn[g] = group_loss(&e, s);
    double best_loss = INFINITY;
    float best_alpha = 0.0f;
    for (int i = 0; i < o->n_grid; i++) {
        float alpha = (float)i / (float)o->n_grid;
        awq_scales(x_mean, w_mean, K, alpha, o->duo_scaling, s);
        double loss = group_loss(&e, s);
        if (loss < best_loss || i == 0) {
            best_loss = loss;
            best_alpha = alpha;
            memcpy(best, s, sizeof(float) * K);
        }
    }
    rep->applied[g] = 1;
    rep->alpha[g] = best_alpha;
    rep->loss[g] = best_loss;
    rep->scales[g] = best;
    for (int i = 0; i < n_mats; i++)
        free(e.trial[i]);
    free(e.diff), free(e.gram), free(x_mean), free(w_mean), free(s);
    (void)cf;
    return isfinite(best_loss) ? 0
                               : as_fail("layer %d %s: the scale search found no finite loss", c->l,
                                         g == AS_GROUP_ATTN_QKV ? "q/k/v" : "group");
}

/* Rows r*step of X [n, K], each column divided by s (NULL: 1); *rows_out rows. */
static float *sample_scaled(const float *X, int n, int K, const float *s, int want, int *rows_out) {
    int step = n / (want > 0 ? want : 1);
    if (step < 1) step = 1;
    int rows = (n + step - 1) / step;
    float *out = as_xmalloc(sizeof(float) * (size_t)rows * K);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < K; j++) {
            float v = X[(size_t)r * step * K + j];
            out[(size_t)r * K + j] = s ? v / s[j] : v;
        }
    *rows_out = rows;
    return out;
}

int awq_layer(struct as_model *m, int l, const float *X, int S, int T,
              const float *const x_mean[AS_GROUP_COUNT], const struct awq_opts *o,
              struct awq_layer_report *rep) {
    const struct as_model_config *cf = &m->cfg;
    memset(rep, 0, sizeof *rep);
    if (l < 0 || l >= cf->n_layers) return as_fail("awq: layer %d out of range", l);
    if (S <= 0 || T <= 0 || T > cf->max_pos)
        return as_fail("layer %d: %d kept sequences of %d tokens: need S >= 1 and 1 <= T <= %d", l,
                       S, T, cf->max_pos);
    if (o->bits < 2 || o->bits > 8 || o->n_grid < 1 || o->group_size == 0)
        return as_fail("awq: bad options (bits %d, grid %d, group %d)", o->bits, o->n_grid,
                       o->group_size);
    for (size_t i = 0; i < (size_t)S * T * cf->hidden; i++)
        if (!isfinite(X[i]))
            return as_fail("layer %d: layer input has a non-finite value at row %zu", l,
                           i / cf->hidden);
    struct layer_cache c = {.m = m, .l = l, .S = S, .T = T, .n = S * T};
    double t0 = now_s();
    if (cache_build(&c, X)) return -1;
    struct as_layer_weights *L = &m->layers[l];
    int D = cf->hidden, qd = cf->n_heads * cf->head_dim, kvd = cf->n_kv_heads * cf->head_dim;
    int FF = cf->intermediate;
    /* v -> o only when v's and o's weights have the same shape (AutoAWQ; not under GQA) */
    int vo = kvd == D && qd == D;
    int rc = 0;
    for (int g = 0; !rc && g < AS_GROUP_COUNT; g++) {
        if (g == AS_GROUP_ATTN_O && !vo) continue;
        rc = search_group(&c, (enum as_linear_group)g, x_mean ? x_mean[g] : NULL, o, rep);
    }
    rep->seconds_search = now_s() - t0;
    if (rc) {
        cache_free(&c);
        return -1;
    }
    /* Fold: prev op /= s, the group's columns *= s (all searches ran on the original weights). */
    const float *s_qkv = rep->scales[AS_GROUP_ATTN_QKV], *s_vo = rep->scales[AS_GROUP_ATTN_O];
    const float *s_gu = rep->scales[AS_GROUP_MLP_GATE_UP], *s_ud = rep->scales[AS_GROUP_MLP_DOWN];
    awq_div_vec(L->attn_norm, s_qkv, D);
    awq_scale_cols(L->w[AS_LIN_Q], qd, D, s_qkv);
    awq_scale_cols(L->w[AS_LIN_K], kvd, D, s_qkv);
    awq_scale_cols(L->w[AS_LIN_V], kvd, D, s_qkv);
    if (s_vo) {
        awq_div_rows(L->w[AS_LIN_V], kvd, D, s_vo);
        if (L->bv) awq_div_vec(L->bv, s_vo, kvd);
        awq_scale_cols(L->w[AS_LIN_O], D, qd, s_vo);
    }
    awq_div_vec(L->ffn_norm, s_gu, D);
    awq_scale_cols(L->w[AS_LIN_GATE], FF, D, s_gu);
    awq_scale_cols(L->w[AS_LIN_UP], FF, D, s_gu);
    awq_div_rows(L->w[AS_LIN_UP], FF, D, s_ud);
    awq_scale_cols(L->w[AS_LIN_DOWN], D, FF, s_ud);

    /* Clip every linear but q/k on its own (scaled) inputs. */
    double t1 = now_s();
    if (o->clip) {
        static const enum as_linear clipped[] = {AS_LIN_V, AS_LIN_O, AS_LIN_GATE, AS_LIN_UP,
                                                 AS_LIN_DOWN};
        for (size_t i = 0; !rc && i < sizeof clipped / sizeof *clipped; i++) {
            enum as_linear w = clipped[i];
            int rows, cols, nc;
            as_model_linear_shape(m, w, &rows, &cols);
            const float *src = w == AS_LIN_V      ? c.xn1
                               : w == AS_LIN_O    ? c.att
                               : w == AS_LIN_DOWN ? c.hb
                                                  : c.xn2;
            const float *sc = w == AS_LIN_V      ? s_qkv
                              : w == AS_LIN_O    ? s_vo
                              : w == AS_LIN_DOWN ? s_ud
                                                 : s_gu;
            float *Xc = sample_scaled(src, c.n, cols, sc, o->clip_tokens, &nc);
            rc = awq_clip(L->w[w], rows, cols, Xc, nc, o, NULL);
            free(Xc);
            rep->clipped[w] = 1;
        }
    }
    rep->seconds_clip = now_s() - t1;
    cache_free(&c);
    return rc;
}

void awq_layer_report_free(struct awq_layer_report *rep) {
    for (int g = 0; g < AS_GROUP_COUNT; g++) {
        free(rep->scales[g]);
        rep->scales[g] = NULL;
    }
}
