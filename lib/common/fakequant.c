/* fakequant: fake quantizers with straight-through estimators (see fakequant.h). Rounding is
 * rintf (half to even, as torch.round). */
#include "fakequant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

static const struct as_fq_info table[AS_FQ_COUNT] = {
    [AS_FQ_NONE] = {"none", 32, 0, 0},         [AS_FQ_SEQ2] = {"seq2", 2, 0, 1},
    [AS_FQ_SEQ3] = {"seq3", 1.58, 0, 1},       [AS_FQ_LSQ3] = {"lsq3", 3, 0, 1},
    [AS_FQ_LSQ4] = {"lsq4", 4, 0, 1},          [AS_FQ_ABSMEAN] = {"absmean", 1.58, -1, 0},
    [AS_FQ_TWN] = {"twn", 1.58, -1, 0},        [AS_FQ_TEQUILA] = {"tequila", 1.58, 128, 0},
    [AS_FQ_SHERRY] = {"sherry", 1.25, 128, 0},
};

const struct as_fq_info *as_fq_info(enum as_fq_scheme s) {
    return (unsigned)s < AS_FQ_COUNT ? &table[s] : NULL;
}

int as_fq_parse(const char *name) {
    for (int i = 0; i < AS_FQ_COUNT; i++)
        if (strcmp(name, table[i].name) == 0) return i;
    return -1;
}

/* SEQ's k and s; LSQ's Qn, Qp */
static void seq_ks(enum as_fq_scheme s, float *k, float *sh) {
    *k = s == AS_FQ_SEQ2 ? 2.0f : 1.5f;
    *sh = s == AS_FQ_SEQ2 ? 0.5f : 0.0f;
}
static int lsq_bits(enum as_fq_scheme s) {
    return s == AS_FQ_LSQ3 ? 3 : 4;
}

int as_fq_init(struct as_fq *q, enum as_fq_scheme s, const float *W, int rows, int cols,
               int group) {
    memset(q, 0, sizeof *q);
    if ((unsigned)s >= AS_FQ_COUNT) return as_fail("fakequant: unknown scheme %d", (int)s);
    if (group == INT32_MIN) group = table[s].default_group;
    if (group > cols) group = cols; /* a small layer: one group per row */
    if (s == AS_FQ_SHERRY && (cols % 4 != 0 || (group > 0 && group % 4 != 0)))
        return as_fail("fakequant sherry: 3:4 blocks need inputs (%d) and group (%d) in 4s", cols,
                       group);
    if (table[s].learnable && group != 0)
        return as_fail("fakequant %s: the learnable scale is per output row (group 0), not %d",
                       table[s].name, group);
    q->scheme = s, q->rows = rows, q->cols = cols, q->group = group;
    q->gsize = group > 0 ? group : cols;
    q->ngroups =
        (cols + q->gsize - 1) / q->gsize; /* a shorter last group when it does not divide */
    if (table[s].learnable) {
        q->alpha = as_xmalloc((size_t)rows * sizeof(float));
        q->galpha = as_xcalloc((size_t)rows, sizeof(float));
        float div = 1.0f;
        if (s == AS_FQ_LSQ3 || s == AS_FQ_LSQ4) div = (float)((1 << (lsq_bits(s) - 1)) - 1);
        for (int r = 0; r < rows; r++) {
            float mx = 0;
            for (int i = 0; i < cols; i++)
                mx = fmaxf(mx, fabsf(W[(size_t)r * cols + i]));
            q->alpha[r] = mx / div;
        }
    }
    if (s == AS_FQ_TEQUILA) q->lambda = 1e-3f;
    return 0;
}

void as_fq_free(struct as_fq *q) {
    free(q->alpha), free(q->galpha);
    q->alpha = q->galpha = NULL;
}

/* The data-derived scale of one group (n weights at w, rows of stride `stride` for the
 * per-tensor case: rows x n). For tequila this is the absmean a (threshold a/2). */
static float group_scale(enum as_fq_scheme s, const float *w, int nrows, int n, int stride) {
    double sum = 0, kept = 0;
    long cnt = 0;
    for (int r = 0; r < nrows; r++)
        for (int i = 0; i < n; i++)
            sum += fabs(w[(size_t)r * stride + i]);
    double mean = sum / ((double)nrows * n);
    switch (s) {
    case AS_FQ_ABSMEAN:
        return (float)fmax(mean, 1e-5); /* BitNet: mean clamped at 1e-5 */
    case AS_FQ_TEQUILA:
        return (float)mean;
    case AS_FQ_TWN: {
        double delta = 0.7 * mean;
        for (int r = 0; r < nrows; r++)
            for (int i = 0; i < n; i++) {
                double a = fabs(w[(size_t)r * stride + i]);
                if (a > delta) kept += a, cnt++;
            }
        return cnt ? (float)(kept / cnt) : 0.0f;
    }
    case AS_FQ_SHERRY:
        for (int r = 0; r < nrows; r++)
            for (int b = 0; b < n; b += 4) {
                const float *v = w + (size_t)r * stride + b;
                float mn = fabsf(v[0]);
                for (int j = 1; j < 4; j++)
                    mn = fminf(mn, fabsf(v[j]));
                for (int j = 0; j < 4; j++)
                    kept += fabsf(v[j]);
                kept -= mn; /* the pruned lane */
            }
        return (float)(kept / ((double)nrows * n * 0.75));
    default:
        return 0;
    }
}

/* Index (0..3) of the lane sherry zeroes in block v: the smallest |w|, first on ties. */
static int sherry_zero(const float *v) {
    int z = 0;
    for (int j = 1; j < 4; j++)
        if (fabsf(v[j]) < fabsf(v[z])) z = j;
    return z;
}

/* Code q of weight w given the group scale a (data-derived schemes). */
static int ternary_code(enum as_fq_scheme s, float w, float a, int zeroed) {
    switch (s) {
    case AS_FQ_ABSMEAN: {
        float x = rintf(w / a);
        return x > 1 ? 1 : x < -1 ? -1 : (int)x;
    }
    case AS_FQ_TWN: /* threshold 0.7 mean|W| is recomputed by the caller: a is alpha here */
        return 0;
    case AS_FQ_TEQUILA:
        return w >= a / 2 ? 1 : w <= -a / 2 ? -1 : 0;
    case AS_FQ_SHERRY:
        return zeroed ? 0 : w > 0 ? 1 : w < 0 ? -1 : 0;
    default:
        return 0;
    }
}

/* Inputs in group g of a row (the last may be shorter). */
static int glen(const struct as_fq *q, int g) {
    int end = (g + 1) * q->gsize < q->cols ? (g + 1) * q->gsize : q->cols;
    return end - g * q->gsize;
}

/* Scales per group for the data-derived schemes: out[r * ngroups + g]; for TWN also the
 * thresholds into thr (same layout). */
static void data_scales(const struct as_fq *q, const float *W, float *sc, float *thr) {
    int R = q->rows, C = q->cols;
    if (q->group < 0) {
        float a = group_scale(q->scheme, W, R, C, C), t = 0;
        if (q->scheme == AS_FQ_TWN) {
            double sum = 0;
            for (size_t i = 0; i < (size_t)R * C; i++)
                sum += fabs(W[i]);
            t = (float)(0.7 * sum / ((double)R * C));
        }
        for (int r = 0; r < R; r++)
            sc[r] = a, thr[r] = t;
        return;
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < q->ngroups; g++) {
            const float *w = W + (size_t)r * C + (size_t)g * q->gsize;
            int len = glen(q, g);
            sc[r * q->ngroups + g] = group_scale(q->scheme, w, 1, len, C);
            if (q->scheme == AS_FQ_TWN) {
                double sum = 0;
                for (int i = 0; i < len; i++)
                    sum += fabs(w[i]);
                thr[r * q->ngroups + g] = (float)(0.7 * sum / len);
            }
        }
}

/* Codes and scales for every scheme; the common core of forward and codes. */
static void quantize(const struct as_fq *q, const float *W, int8_t *codes, float *scales,
                     float *bias) {
    int R = q->rows, C = q->cols, ng = q->ngroups;
    enum as_fq_scheme s = q->scheme;
    if (table[s].learnable) {
        int seq = s == AS_FQ_SEQ2 || s == AS_FQ_SEQ3;
        float k = 0, sh = 0;
        int qn = 0, qp = 0;
        if (seq)
            seq_ks(s, &k, &sh);
        else
            qp = (1 << (lsq_bits(s) - 1)) - 1, qn = -qp - 1;
        for (int r = 0; r < R; r++) {
            float a = fmaxf(q->alpha[r], 1e-8f);
            for (int i = 0; i < C; i++) {
                float x = W[(size_t)r * C + i] / a;
                int c;
                if (seq) { /* qhat = (round(clamp(x) k - s) + s) / k; code = (qhat k - s)*2+... */
                    float cx = fminf(fmaxf(x, -0.99f), 0.99f);
                    float n = rintf(cx * k - sh); /* 2-bit: -2..1; ternary: -1..1 */
                    c = s == AS_FQ_SEQ2 ? (int)(2 * n + 1) : (int)n; /* {-3,-1,1,3} / {-1,0,1} */
                } else {
                    float n = rintf(x);
                    c = n < qn ? qn : n > qp ? qp : (int)n;
                }
                codes[(size_t)r * C + i] = (int8_t)c;
            }
            /* SEQ2: qhat = (n + .5)/2 = code/4; SEQ3: qhat = n/1.5 = code * 2/3 */
            scales[r] = s == AS_FQ_SEQ2 ? a / 4 : s == AS_FQ_SEQ3 ? a * 2.0f / 3.0f : a;
        }
        return;
    }
    float *sc = as_xmalloc((size_t)R * ng * sizeof(float));
    float *thr = as_xcalloc((size_t)R * ng, sizeof(float));
    data_scales(q, W, sc, thr);
    for (int r = 0; r < R; r++) {
        double b = 0;
        for (int g = 0; g < ng; g++) {
            float a = sc[r * ng + g], t = thr[r * ng + g];
            int end = g * q->gsize + glen(q, g);
            for (int i0 = g * q->gsize; i0 < end; i0 += s == AS_FQ_SHERRY ? 4 : 1) {
                const float *v = W + (size_t)r * C + i0;
                if (s == AS_FQ_SHERRY) {
                    int z = sherry_zero(v);
                    for (int j = 0; j < 4; j++)
                        codes[(size_t)r * C + i0 + j] = (int8_t)ternary_code(s, v[j], a, j == z);
                    continue;
                }
                int c = s == AS_FQ_TWN ? (fabsf(v[0]) > t ? (v[0] > 0 ? 1 : -1) : 0)
                                       : ternary_code(s, v[0], a, 0);
                codes[(size_t)r * C + i0] = (int8_t)c;
                if (s == AS_FQ_TEQUILA && c == 0) b += v[0]; /* dead zone |w| < a/2 */
            }
            scales[r * ng + g] = a;
        }
        if (bias) bias[r] = s == AS_FQ_TEQUILA ? (float)(q->lambda * b) : 0.0f;
    }
    free(sc), free(thr);
}

static int scale_groups(const struct as_fq *q) {
    return q->group > 0 ? q->ngroups : 1;
}

int as_fq_codes(const struct as_fq *q, const float *W, int8_t *codes, float *scales, float *bias) {
    quantize(q, W, codes, scales, bias);
    return scale_groups(q);
}

void as_fq_forward(const struct as_fq *q, const float *W, float *W_eff, float *b_eff,
                   int *has_bias) {
    size_t n = (size_t)q->rows * q->cols;
    *has_bias = 0;
    if (q->scheme == AS_FQ_NONE) {
        memcpy(W_eff, W, n * sizeof(float));
        return;
    }
    int8_t *codes = as_xmalloc(n);
    int ng = scale_groups(q), gs = ng > 1 ? q->gsize : q->cols;
    float *sc = as_xmalloc((size_t)q->rows * ng * sizeof(float));
    quantize(q, W, codes, sc, q->scheme == AS_FQ_TEQUILA ? b_eff : NULL);
    for (int r = 0; r < q->rows; r++)
        for (int i = 0; i < q->cols; i++) {
            size_t j = (size_t)r * q->cols + i;
            W_eff[j] = sc[r * ng + i / gs] * codes[j];
        }
    if (q->scheme == AS_FQ_SHERRY && q->lambda != 0) /* Arenas: Q + lambda_t W */
        for (size_t j = 0; j < n; j++)
            W_eff[j] += q->lambda * W[j];
    *has_bias = q->scheme == AS_FQ_TEQUILA;
    free(codes), free(sc);
}

void as_fq_backward(const struct as_fq *q, const float *W, const float *gW_eff, const float *gb_eff,
                    float *gW) {
    int R = q->rows, C = q->cols;
    size_t n = (size_t)R * C;
    enum as_fq_scheme s = q->scheme;
    if (table[s].learnable) {
        int seq = s == AS_FQ_SEQ2 || s == AS_FQ_SEQ3;
        float k = 0, sh = 0, lo, hi, qlo, qhi;
        double gamma;
        if (seq) {
            seq_ks(s, &k, &sh);
            lo = -0.99f, hi = 0.99f, qhi = (k - sh) / k, qlo = -qhi;
            gamma = 1.0 / sqrt((double)n);
        } else {
            int qp = (1 << (lsq_bits(s) - 1)) - 1;
            lo = (float)(-qp - 1), hi = (float)qp, qlo = lo, qhi = hi;
            gamma = 1.0 / sqrt((double)n * qp);
        }
        for (int r = 0; r < R; r++) {
            float a = fmaxf(q->alpha[r], 1e-8f);
            double ga = 0;
            for (int i = 0; i < C; i++) {
                size_t j = (size_t)r * C + i;
                float x = W[j] / a, g = gW_eff[j], term;
                if (x < lo)
                    term = qlo;
                else if (x > hi)
                    term = qhi;
                else {
                    gW[j] += g;
                    float qhat = seq ? (rintf(x * k - sh) + sh) / k : rintf(x);
                    term = qhat - x;
                }
                ga += (double)g * term;
            }
            q->galpha[r] += (float)(gamma * ga);
        }
        return;
    }
    float mul = s == AS_FQ_SHERRY ? 1.0f + q->lambda : 1.0f;
    for (size_t j = 0; j < n; j++)
        gW[j] += mul * gW_eff[j];
    if (s == AS_FQ_TEQUILA && gb_eff) {
        /* dead-zone weights feed the bias c_j = lambda sum W_ji: + lambda dL/dc_j */
        int ng = q->ngroups;
        float *sc = as_xmalloc((size_t)R * ng * sizeof(float));
        float *thr = as_xcalloc((size_t)R * ng, sizeof(float));
        data_scales(q, W, sc, thr);
        int per_tensor = q->group < 0;
        for (int r = 0; r < R; r++)
            for (int i = 0; i < C; i++) {
                float a = per_tensor ? sc[r] : sc[r * ng + i / q->gsize];
                size_t j = (size_t)r * C + i;
                if (W[j] < a / 2 && W[j] > -a / 2) gW[j] += q->lambda * gb_eff[r];
            }
        free(sc), free(thr);
    }
}

float as_arenas_lambda(int64_t step, int64_t total, float max) {
    int64_t warm = total / 10;
    if (step >= total || total <= 0) return 0;
    if (step < warm) return max * (float)step / (float)warm;
    return (float)(max * 0.5 * (1 + cos(M_PI * (double)(step - warm) / (double)(total - warm))));
}
