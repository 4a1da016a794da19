/* lepto: LeptoQuant input-scale search and FP8 scale diagnostics (lepto.h). */
#include "lepto.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "forward.h"
#include "fpquant.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Quickselect: afterwards v[k] is the k-th smallest, v[..k] <= v[k] <= v[k..]. */
static void select_nth(float *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        /* median of three as the pivot */
        float a = v[lo], b = v[mid], c = v[hi];
        float piv = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < piv)
                i++;
            while (v[j] > piv)
                j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j], v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* n = min(round(N p), N - 1), p = 0.999 + 0.00005 r; round half to even like Python's round. */
static size_t cand_index(size_t N, int r) {
    double p = 0.999 + 0.00005 * r;
    double n = nearbyint((double)N * p);
    return n > (double)(N - 1) ? N - 1 : (size_t)n;
}

void as_lepto_candidates(float *v, size_t N, float *absmax, float scales[AS_LEPTO_NCAND]) {
    size_t n0 = cand_index(N, 8);
    select_nth(v, N, n0);
    qsort(v + n0, N - n0, sizeof(float), cmp_float); /* only the top 0.06% is sorted */
    float amax = v[N - 1];
    *absmax = amax;
    for (int r = 8; r <= 20; r++) {
        float xn = v[cand_index(N, r)];
        float c = amax > 0 ? fabsf(as_fp8_dec(as_fp8_enc(xn * AS_FP8_MAX / amax))) : 0;
        scales[r - 8] = c > 0 ? amax / c : as_scale_for(amax, AS_FP8_MAX);
    }
}

/* ---- block-output loss ---- */

struct fq_ctx {
    enum as_linear_group group;
    float scale;
    float *buf;
    size_t cap;
};

static const float *fq_apply(void *ctx, int layer, enum as_linear_group g, const float *x, int T,
                             int d) {
    (void)layer;
    struct fq_ctx *c = ctx;
    if (g != c->group) return x;
    size_t n = (size_t)T * d;
    if (n > c->cap) {
        free(c->buf);
        c->buf = as_xmalloc(n * sizeof(float));
        c->cap = n;
    }
    as_fp8_qdq(x, n, c->scale, c->buf);
    return c->buf;
}

struct cap_ctx {
    float *in_o, *in_down; /* this sequence's slot */
};

static void cap_input(void *ctx, int layer, enum as_linear_group g, const float *x, int T, int d) {
    (void)layer;
    struct cap_ctx *c = ctx;
    if (g == AS_GROUP_ATTN_O) memcpy(c->in_o, x, sizeof(float) * T * d);
    if (g == AS_GROUP_MLP_DOWN) memcpy(c->in_down, x, sizeof(float) * T * d);
}

struct layer_data {
    const struct as_model *m;
    int l, S, T, D;
    struct as_run_state *st;
    float *xn1, *xn2, *yatt, *ymlp, *in_o, *in_down, *y;
};

static double block_loss(struct layer_data *ld, enum as_linear_group g, float scale) {
    struct fq_ctx fq = {.group = g, .scale = scale};
    ld->st->quant_linear_input = fq_apply;
    ld->st->qctx = &fq;
    const struct as_layer_weights *L = &ld->m->layers[ld->l];
    size_t per = (size_t)ld->T * ld->D;
    double sum = 0;
    int attn = g == AS_GROUP_ATTN_QKV || g == AS_GROUP_ATTN_O;
    for (int s = 0; s < ld->S; s++) {
        ld->st->pos = 0;
        const float *ref;
        if (attn) {
            as_layer_attention(ld->m, L, ld->st, ld->l, ld->xn1 + s * per, ld->T, ld->y, NULL);
            ref = ld->yatt + s * per;
        } else {
            as_layer_mlp(ld->m, L, ld->st, ld->l, ld->xn2 + s * per, ld->T, ld->y, NULL);
            ref = ld->ymlp + s * per;
        }
        for (size_t i = 0; i < per; i++) {
            double e = (double)ld->y[i] - ref[i];
            sum += e * e;
        }
    }
    ld->st->quant_linear_input = NULL;
    ld->st->qctx = NULL;
    free(fq.buf);
    return sum / ((double)per * ld->S);
}

int as_lepto_search_layer(const struct as_model *m, int l, const float *X, int S, int seqlen,
                          const float calib_absmax[AS_GROUP_COUNT],
                          struct as_lepto_result res[AS_GROUP_COUNT]) {
    const struct as_model_config *c = &m->cfg;
    if (l < 0 || l >= c->n_layers) return as_fail("lepto: layer %d out of range", l);
    if (S < 1 || seqlen < 1 || seqlen > c->max_pos)
        return as_fail("lepto: layer %d: bad sample shape %d x %d", l, S, seqlen);
    int D = c->hidden, qd = c->n_heads * c->head_dim, FF = c->intermediate, T = seqlen;
    size_t per = (size_t)T * D;
    struct layer_data ld = {.m = m, .l = l, .S = S, .T = T, .D = D};
    ld.st = as_state_new(m, T, T, 0);
    if (!ld.st) return -1;
    ld.xn1 = as_xmalloc(sizeof(float) * per * S);
    ld.xn2 = as_xmalloc(sizeof(float) * per * S);
    ld.yatt = as_xmalloc(sizeof(float) * per * S);
    ld.ymlp = as_xmalloc(sizeof(float) * per * S);
    ld.in_o = as_xmalloc(sizeof(float) * (size_t)T * qd * S);
    ld.in_down = as_xmalloc(sizeof(float) * (size_t)T * FF * S);
    ld.y = as_xmalloc(sizeof(float) * per);
    const struct as_layer_weights *L = &m->layers[l];

    /* Full-precision pass: the block inputs, reference outputs and the group inputs. */
    for (int s = 0; s < S; s++) {
        struct cap_ctx cc = {ld.in_o + (size_t)s * T * qd, ld.in_down + (size_t)s * T * FF};
        struct as_hooks hk = {.on_linear_input = cap_input, .ctx = &cc};
        const float *xs = X + s * per;
        float *xn1 = ld.xn1 + s * per, *xn2 = ld.xn2 + s * per;
        as_op_rmsnorm(xn1, xs, L->attn_norm, T, D, c->rms_eps);
        ld.st->pos = 0;
        as_layer_attention(m, L, ld.st, l, xn1, T, ld.yatt + s * per, &hk);
        for (size_t i = 0; i < per; i++)
            ld.y[i] = xs[i] + ld.yatt[s * per + i];
        as_op_rmsnorm(xn2, ld.y, L->ffn_norm, T, D, c->rms_eps);
        as_layer_mlp(m, L, ld.st, l, xn2, T, ld.ymlp + s * per, &hk);
    }

    int rc = 0;
    for (int g = 0; g < AS_GROUP_COUNT; g++) {
        double t0 = now_s();
        struct as_lepto_result *r = &res[g];
        memset(r, 0, sizeof *r);
        const float *in = g == AS_GROUP_ATTN_QKV      ? ld.xn1
                          : g == AS_GROUP_ATTN_O      ? ld.in_o
                          : g == AS_GROUP_MLP_GATE_UP ? ld.xn2
                                                      : ld.in_down;
        int dim = g == AS_GROUP_ATTN_O ? qd : g == AS_GROUP_MLP_DOWN ? FF : D;
        size_t N = (size_t)S * T * dim;
        float *vals = as_xmalloc(sizeof(float) * N);
        for (size_t i = 0; i < N; i++) {
            vals[i] = fabsf(in[i]);
            if (!isfinite(vals[i])) {
                free(vals);
                rc = as_fail("lepto: layer %d %s input: non-finite activation", l,
                             g == 0   ? "q/k/v"
                             : g == 1 ? "o"
                             : g == 2 ? "gate/up"
                                      : "down");
                goto out;
            }
        }
        as_lepto_candidates(vals, N, &r->sample_absmax, r->cand_scale);
        free(vals);
        r->n_values = N;
        float base_amax = calib_absmax && calib_absmax[g] > 0 ? calib_absmax[g] : r->sample_absmax;
        r->absmax_scale = as_scale_for(base_amax, AS_FP8_MAX);
        r->loss_absmax = block_loss(&ld, (enum as_linear_group)g, r->absmax_scale);
        r->best_scale = r->absmax_scale, r->loss_best = r->loss_absmax;
        r->best_r = -1, r->best_p = 1.0;
        for (int i = 0; i < AS_LEPTO_NCAND; i++) {
            /* equal scales give equal losses: evaluate each distinct scale once */
            int j = 0;
            while (j < i && r->cand_scale[j] != r->cand_scale[i])
                j++;
            if (j < i)
                r->cand_loss[i] = r->cand_loss[j];
            else if (r->cand_scale[i] == r->absmax_scale)
                r->cand_loss[i] = r->loss_absmax;
            else
                r->cand_loss[i] = block_loss(&ld, (enum as_linear_group)g, r->cand_scale[i]);
            if (r->cand_loss[i] < r->loss_best) {
                r->loss_best = r->cand_loss[i];
                r->best_scale = r->cand_scale[i];
                r->best_r = i + 8;
                r->best_p = 0.999 + 0.00005 * (i + 8);
            }
        }
        r->seconds = now_s() - t0;
    }
out:
    as_state_free(ld.st);
    free(ld.xn1), free(ld.xn2), free(ld.yatt), free(ld.ymlp), free(ld.in_o), free(ld.in_down);
    free(ld.y);
    return rc;
}

/* ---- diagnostics ---- */

void as_tensor_diag(const float *x, size_t n, float scale, struct as_tensor_diag *d) {
    memset(d, 0, sizeof *d);
    d->n = n;
    if (!n) return;
    double s1 = 0, sa = 0, amax = 0;
    for (size_t i = 0; i < n; i++) {
        double a = fabs((double)x[i]);
        s1 += x[i], sa += a;
        if (a > amax) amax = a;
    }
    double mean = s1 / n, m2 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double e = x[i] - mean, e2 = e * e;
        m2 += e2, m4 += e2 * e2;
    }
    m2 /= n, m4 /= n;
    d->absmax = amax, d->absmean = sa / n;
    d->kurtosis = m2 > 0 ? m4 / (m2 * m2) : 0;
    d->scale = scale > 0 ? scale : as_scale_for((float)amax, AS_FP8_MAX);
    size_t zero = 0, sat = 0, sub = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] == 0) continue;
        float v = x[i] / d->scale;
        uint8_t code = as_fp8_enc(v);
        if ((code & 0x7F) == 0) zero++;
        if (fabsf(v) > AS_FP8_MAX) sat++;
        if (fabsf(v) < 0x1p-6f) sub++;
    }
    d->frac_zero = (double)zero / n, d->frac_saturated = (double)sat / n;
    d->frac_subnormal = (double)sub / n;
}

int as_fp8_histogram_svg(const float *x, size_t n, float scale, int bins, const char *title,
                         FILE *out) {
    if (!n || bins < 2) return as_fail("histogram: no values or fewer than 2 bins");
    float amax = as_absmax(x, n);
    if (!(amax > 0)) amax = 1;
    if (scale <= 0) scale = as_scale_for(amax, AS_FP8_MAX);
    double *h[2] = {as_xcalloc(bins, sizeof(double)), as_xcalloc(bins, sizeof(double))};
    for (size_t i = 0; i < n; i++) {
        float v[2] = {x[i], as_fp8_dec(as_fp8_enc(x[i] / scale)) * scale};
        for (int k = 0; k < 2; k++) {
            int b = (int)floor((v[k] + amax) / (2 * amax) * bins);
            b = b < 0 ? 0 : b >= bins ? bins - 1 : b;
            h[k][b] += 1;
        }
    }
    double hmax = 1;
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < bins; b++)
            hmax = fmax(hmax, h[k][b]);
    const int W = 720, H = 360, ml = 60, mr = 20, mt = 40, mb = 50;
    double pw = W - ml - mr, ph = H - mt - mb, lmax = log10(hmax + 1);
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"20\" font-size=\"14\">",
            W, H, ml);
    for (const char *p = title ? title : ""; *p; p++) /* escape the title for XML */
        fputs(*p == '<'   ? "&lt;"
              : *p == '>' ? "&gt;"
              : *p == '&' ? "&amp;"
                          : (char[2]){*p, 0},
              out);
    fprintf(out, "</text>\n");
    static const char *const color[2] = {"#1f77b4", "#d62728"};
    static const char *const label[2] = {"original", "FP8 E4M3 quantize-dequantize"};
    for (int k = 0; k < 2; k++) {
        fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.2\" points=\"",
                color[k]);
        for (int b = 0; b < bins; b++) {
            double x0 = ml + pw * b / bins, x1 = ml + pw * (b + 1) / bins;
            double y = mt + ph * (1 - log10(h[k][b] + 1) / lmax);
            fprintf(out, "%.1f,%.1f %.1f,%.1f ", x0, y, x1, y);
        }
        fprintf(out, "\"/>\n<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", W - 260,
                mt + 16 * (k + 1), color[k], label[k]);
    }
    fprintf(
        out,
        "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n"
        "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n"
        "<text x=\"%d\" y=\"%d\">%.4g</text><text x=\"%d\" y=\"%d\" "
        "text-anchor=\"end\">%.4g</text>\n"
        "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">value (%d bins, FP8 scale %.4g)</text>\n"
        "<text x=\"14\" y=\"%d\" transform=\"rotate(-90 14 %d)\" text-anchor=\"middle\">"
        "log10(count + 1), max %.0f</text>\n</svg>\n",
        ml, H - mb, W - mr, H - mb, ml, mt, ml, H - mb, ml, H - mb + 16, (double)-amax, W - mr,
        H - mb + 16, (double)amax, ml + (int)pw / 2, H - 12, bins, (double)scale, mt + (int)ph / 2,
        mt + (int)ph / 2, hmax);
    free(h[0]), free(h[1]);
    return ferror(out) ? as_fail("histogram: write failed") : 0;
}
