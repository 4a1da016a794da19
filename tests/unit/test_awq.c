/* Tests of lib/common/awq.c (AWQ search, clipping, folding) and pack_awq.c (AWQ GEMM layout).
 *
 * Expectations are independent of the code under test: hand-computed values, naive loops written
 * from REFERENCE.md "AWQ" (token-by-token clipping error, explicit sums), the invariance of the
 * layer's function under folding, and for the packed layout hand-derived nibble positions plus
 * tests/tools/awq_oracle.py (numpy, written from REFERENCE.md "AWQ GEMM"). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "as_error.h"
#include "awq.h"
#include "forward.h"
#include "model.h"
#include "pack_formats.h"
#include "quant_int.h"
#include "quant_load.h"
#include "safetensors.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_rf(const char *p) {
    nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}
static char *make_tmpdir(void) {
    char *d = strdup("/tmp/as_test_awq.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static struct awq_opts opts(int bits, int gs) {
    struct awq_opts o;
    awq_opts_default(&o);
    o.bits = bits, o.group_size = gs;
    return o;
}

/* ---- scales, w_mean, fake quant ------------------------------------------------------------ */

static void test_scales_guards(void **state) {
    (void)state;
    /* dead channel (x_mean 0), zero w_mean, huge and tiny values */
    float x[6] = {0.0f, 1.0f, 4.0f, 1e30f, 1e-30f, 2.0f},
          w[6] = {0.5f, 0.0f, 1.0f, 1.0f, 0.0f, 1e-20f};
    float s[6];
    for (int duo = 0; duo <= 1; duo++)
        for (int i = 0; i < 20; i++) {
            awq_scales(x, w, 6, i / 20.0f, duo, s);
            for (int j = 0; j < 6; j++) {
                if (!isfinite(s[j]) || !(s[j] > 0))
                    fail_msg("duo %d a %d: s[%d] = %g", duo, i, j, s[j]);
            }
        }
    /* no duo, a = 0.5, no clamping: s = sqrt(x) / sqrt(max * min) = sqrt(x) / sqrt(2 * 0.5) */
    float x2[3] = {1.0f, 4.0f, 0.25f};
    awq_scales(x2, NULL, 3, 0.5f, 0, s);
    assert_float_equal(s[0], 1.0f, 1e-6);
    assert_float_equal(s[1], 2.0f, 1e-6);
    assert_float_equal(s[2], 0.5f, 1e-6);
    /* a = 0 without duo is plain RTN: every s is exactly 1, even for a dead channel */
    awq_scales(x, w, 6, 0.0f, 0, s);
    for (int j = 0; j < 6; j++)
        assert_true(s[j] == 1.0f);
    /* duo, a = 0: s = 1 / (w + 1e-4), normalised */
    float w2[2] = {1.0f, 0.0f};
    awq_scales(x2, w2, 2, 0.0f, 1, s);
    double a = 1.0 / (1.0 + 1e-4), b = 1.0 / 1e-4, nrm = sqrt(a * b);
    assert_float_equal(s[0], a / nrm, 1e-5 * a / nrm);
    assert_float_equal(s[1], b / nrm, 1e-5 * b / nrm);
}

static void test_w_mean_hand(void **state) {
    (void)state;
    /* two matrices stacked, group 2: |w| / (group max + 1e-6) averaged over the 2 rows */
    float A[4] = {1, -2, 0, 4}, B[4] = {-3, 3, 0, 0};
    const float *W[2] = {A, B};
    int rows[2] = {1, 1};
    float wm[4];
    awq_w_mean(W, rows, 2, 4, 2, wm);
    double e = 1e-6;
    assert_float_equal(wm[0], (1 / (2 + e) + 3 / (3 + e)) / 2, 1e-6);
    assert_float_equal(wm[1], (2 / (2 + e) + 3 / (3 + e)) / 2, 1e-6);
    assert_float_equal(wm[2], 0.0f, 0);
    assert_float_equal(wm[3], (4 / (4 + e) + 0) / 2, 1e-6);
}

static void test_fake_quant_hand(void **state) {
    (void)state;
    struct awq_opts o = opts(2, 4);
    /* asym 2-bit: [0,1,2,3]: scale (3-0)/3 = 1, zero 0: exact */
    float w[8] = {0, 1, 2, 3, -1.0f, -0.5f, 0.2f, 0.5f}, out[8];
    awq_fake_quant(w, 1, 8, &o, out);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == w[i]);
    /* [-1, -0.5, 0.2, 0.5]: scale 1.5/3 = 0.5, zero = -round(-1/0.5) = 2; codes round(x/0.5)+2 */
    float want[4] = {-1.0f, -0.5f, 0.0f, 0.5f};
    for (int i = 0; i < 4; i++)
        assert_float_equal(out[4 + i], want[i], 1e-7);
    /* all-zero group: scale 1e-5/maxq, every code = zero: exact zeros, no NaN */
    float z[4] = {0}, zo[4];
    awq_fake_quant(z, 1, 4, &o, zo);
    for (int i = 0; i < 4; i++)
        assert_true(zo[i] == 0.0f);
    /* trial weights = Q(W s) / s against a naive loop */
    enum { N = 3, K = 16 };
    float W[N * K], s[K], t[N * K];
    for (int i = 0; i < N * K; i++)
        W[i] = frand();
    for (int j = 0; j < K; j++)
        s[j] = 0.25f + (frand() + 1.0f);
    struct awq_opts o4 = opts(4, 8);
    awq_trial_weight(W, N, K, s, &o4, t);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < 2; g++) {
            float v[8], mn = INFINITY, mx = -INFINITY;
            for (int i = 0; i < 8; i++) {
                v[i] = W[n * K + g * 8 + i] * s[g * 8 + i];
                mn = fminf(mn, v[i]), mx = fmaxf(mx, v[i]);
            }
            float sc = fmaxf(mx - mn, 1e-5f) / 15.0f, zz = fminf(fmaxf(-rintf(mn / sc), 0), 15);
            for (int i = 0; i < 8; i++) {
                float q = fminf(fmaxf(rintf(v[i] / sc) + zz, 0), 15);
                float want_t = (q - zz) * sc / s[g * 8 + i];
                assert_float_equal(t[n * K + g * 8 + i], want_t, 1e-6f * fmaxf(1, fabsf(want_t)));
            }
        }
}

/* ---- losses and clipping ------------------------------------------------------------------- */

static void test_linear_loss(void **state) {
    (void)state;
    enum { n = 300, K = 12, N = 5 };
    float *X = malloc(sizeof(float) * n * K), D[N * K], G[K * K];
    for (int i = 0; i < n * K; i++)
        X[i] = frand();
    for (int i = 0; i < N * K; i++)
        D[i] = frand() * 0.1f;
    double naive = 0;
    for (int t = 0; t < n; t++)
        for (int o = 0; o < N; o++) {
            double y = 0;
            for (int k = 0; k < K; k++)
                y += (double)X[t * K + k] * D[o * K + k];
            naive += y * y;
        }
    naive /= (double)n * N;
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
            double a = 0;
            for (int t = 0; t < n; t++)
                a += (double)X[t * K + i] * X[t * K + j];
            G[i * K + j] = (float)a;
        }
    double direct = awq_linear_loss(X, NULL, n, K, D, N);
    double gram = awq_linear_loss(NULL, G, n, K, D, N);
    assert_true(fabs(direct - naive) <= 1e-5 * naive);
    assert_true(fabs(gram - naive) <= 1e-5 * naive);
    free(X);
}

/* REFERENCE.md: error = mean over tokens of (Σ_group x (Q(clamp(w, ±m)) - w))², token by token */
static double naive_clip_err(const float *w, int len, const float *X, int n, int K, int k0, float m,
                             const struct awq_opts *o) {
    float c[64], q[64];
    for (int i = 0; i < len; i++)
        c[i] = fminf(fmaxf(w[i], -m), m);
    awq_fake_quant(c, 1, len, &(struct awq_opts){.bits = o->bits, .group_size = len, .sym = o->sym},
                   q);
    double acc = 0;
    for (int t = 0; t < n; t++) {
        double y = 0;
        for (int i = 0; i < len; i++)
            y += (double)X[t * K + k0 + i] * (q[i] - w[i]);
        acc += y * y;
    }
    return acc / n;
}

static void test_clip_vs_naive(void **state) {
    (void)state;
    enum { N = 6, K = 24, n = 80 };
    struct awq_opts o = opts(3, 8);
    float W[N * K], W0[N * K], X[n * K], mv[N * 3];
    for (int i = 0; i < N * K; i++)
        W0[i] = W[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
    for (int i = 0; i < n * K; i++)
        X[i] = frand() * (1.0f + (i % K) * 0.2f);
    assert_int_equal(awq_clip(W, N, K, X, n, &o, mv), 0);
    int shrunk = 0;
    for (int r = 0; r < N; r++)
        for (int g = 0; g < 3; g++) {
            const float *w = W0 + r * K + g * 8;
            float m0 = 0;
            for (int i = 0; i < 8; i++)
                m0 = fmaxf(m0, fabsf(w[i]));
            double best = INFINITY;
            for (int s = 0; s < 10; s++)
                best = fmin(best, naive_clip_err(w, 8, X, n, K, g * 8, m0 * (1 - s / 20.0f), &o));
            double got = naive_clip_err(w, 8, X, n, K, g * 8, mv[r * 3 + g], &o);
            if (got > best * (1 + 1e-4) + 1e-12)
                fail_msg("row %d group %d: chosen m %g has error %g, best %g", r, g, mv[r * 3 + g],
                         got, best);
            shrunk += mv[r * 3 + g] < m0;
            /* W is clamped to the chosen range */
            for (int i = 0; i < 8; i++)
                assert_true(W[r * K + g * 8 + i] ==
                            fminf(fmaxf(w[i], -mv[r * 3 + g]), mv[r * 3 + g]));
        }
    assert_true(shrunk > 0); /* with outliers some ranges must shrink */
    /* all-zero group and zero inputs: nothing to do, no NaN */
    float Z[8] = {0}, XZ[4 * 8] = {0}, mz;
    assert_int_equal(awq_clip(Z, 1, 8, XZ, 4, &o, &mz), 0);
    assert_true(mz == 0.0f);
    for (int i = 0; i < 8; i++)
        assert_true(Z[i] == 0.0f);
}

static void test_fold_helpers(void **state) {
    (void)state;
    enum { n = 50, K = 5 };
    float X[n * K], s[K], H[K * K], Hs[K * K];
    for (int i = 0; i < n * K; i++)
        X[i] = frand();
    for (int j = 0; j < K; j++)
        s[j] = 0.5f + frand() * 0.4f + 1.0f;
    /* H of x, transformed, vs H of x / s computed directly */
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
            double a = 0, b = 0;
            for (int t = 0; t < n; t++) {
                a += (double)X[t * K + i] * X[t * K + j];
                b += (double)(X[t * K + i] / s[i]) * (X[t * K + j] / s[j]);
            }
            H[i * K + j] = (float)a, Hs[i * K + j] = (float)b;
        }
    awq_scale_sym_inv(H, K, s);
    for (int i = 0; i < K * K; i++)
        assert_float_equal(H[i], Hs[i], 1e-4 * fmaxf(1, fabsf(Hs[i])));
    /* a linear pair: (x W1ᵀ / s) (W2 diag s)ᵀ == x W1ᵀ W2ᵀ */
    float W1[K * 3], W2[2 * K], x[3] = {0.3f, -1.0f, 2.0f};
    for (int i = 0; i < K * 3; i++)
        W1[i] = frand();
    for (int i = 0; i < 2 * K; i++)
        W2[i] = frand();
    float y0[2] = {0}, y1[2] = {0}, h[K];
    for (int o = 0; o < 2; o++)
        for (int j = 0; j < K; j++) {
            double a = 0;
            for (int i = 0; i < 3; i++)
                a += W1[j * 3 + i] * x[i];
            y0[o] += W2[o * K + j] * (float)a;
        }
    awq_div_rows(W1, K, 3, s);
    awq_scale_cols(W2, 2, K, s);
    for (int j = 0; j < K; j++) {
        h[j] = 0;
        for (int i = 0; i < 3; i++)
            h[j] += W1[j * 3 + i] * x[i];
    }
    for (int o = 0; o < 2; o++)
        for (int j = 0; j < K; j++)
            y1[o] += W2[o * K + j] * h[j];
    for (int o = 0; o < 2; o++)
        assert_float_equal(y1[o], y0[o], 1e-5);
}

/* ---- a whole layer on a synthetic model ---------------------------------------------------- */

struct synth {
    char *dir;
    struct as_model *m, *ref;
    float *X;
    int S, T;
};

static void synth_open(struct synth *s, int n_kv, int bias) {
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "%s", bias ? "qwen2" : "llama");
    c.arch = bias ? AS_ARCH_QWEN2 : AS_ARCH_LLAMA;
    c.qkv_bias = bias;
    c.hidden = 32, c.intermediate = 64, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = n_kv;
    c.head_dim = 8, c.vocab = 40, c.max_pos = 32, c.rms_eps = 1e-6f, c.rope_theta = 10000.0f;
    s->dir = make_tmpdir();
    assert_int_equal(as_model_write_random(&c, AS_F32, 7, s->dir), 0);
    assert_non_null(s->m = as_model_load(s->dir));
    assert_non_null(s->ref = as_model_load(s->dir));
    s->S = 2, s->T = 16;
    s->X = malloc(sizeof(float) * s->S * s->T * c.hidden);
    /* residual stream with a few large channels, as in real models (what AWQ protects) */
    for (int i = 0; i < s->S * s->T * c.hidden; i++)
        s->X[i] = frand() * ((i % c.hidden) % 11 == 3 ? 8.0f : 1.0f);
}

static void synth_close(struct synth *s) {
    as_model_free(s->m);
    as_model_free(s->ref);
    free(s->X);
    rm_rf(s->dir);
    free(s->dir);
}

/* The fp layer output (residual stream after the layer) for all S sequences. */
static float *layer_out(struct as_model *m, const float *X, int S, int T) {
    int D = m->cfg.hidden;
    struct as_run_state *st = as_state_new(m, T, T, 0);
    float *Y = malloc(sizeof(float) * S * T * D), *xn = malloc(sizeof(float) * T * D);
    for (int i = 0; i < S; i++) {
        float *y = Y + (size_t)i * T * D;
        memcpy(y, X + (size_t)i * T * D, sizeof(float) * T * D);
        st->pos = 0;
        as_op_rmsnorm(xn, y, m->layers[0].attn_norm, T, D, m->cfg.rms_eps);
        as_layer_attention(m, &m->layers[0], st, 0, xn, T, xn, NULL);
        for (int j = 0; j < T * D; j++)
            y[j] += xn[j];
        as_op_rmsnorm(xn, y, m->layers[0].ffn_norm, T, D, m->cfg.rms_eps);
        as_layer_mlp(m, &m->layers[0], st, 0, xn, T, xn, NULL);
        for (int j = 0; j < T * D; j++)
            y[j] += xn[j];
    }
    free(xn);
    as_state_free(st);
    return Y;
}

/* layer_out agrees with as_forward (the refactored pieces compose to the same layer) */
static void test_layer_pieces_match_forward(void **state) {
    (void)state;
    struct synth s;
    synth_open(&s, 2, 0);
    int toks[16], D = s.m->cfg.hidden;
    for (int i = 0; i < 16; i++)
        toks[i] = (i * 7 + 3) % s.m->cfg.vocab;
    struct as_run_state *st = as_state_new(s.m, 16, 16, AS_STATE_KEEP_ACTS);
    assert_int_equal(as_forward(s.m, st, toks, 16, AS_LOGITS_NONE, NULL), 0);
    float *Y = layer_out(s.m, st->layer_acts, 1, 16);
    for (int i = 0; i < 16 * D; i++)
        assert_true(Y[i] == st->layer_acts[(size_t)st->max_T * D + i]);
    free(Y);
    as_state_free(st);
    synth_close(&s);
}

static void check_equivalent(int n_kv, int bias) {
    struct synth s;
    synth_open(&s, n_kv, bias);
    struct awq_opts o = opts(3, 8);
    o.clip = 0;
    struct awq_layer_report rep;
    assert_int_equal(awq_layer(s.m, 0, s.X, s.S, s.T, NULL, &o, &rep), 0);
    assert_int_equal(rep.applied[AS_GROUP_ATTN_O], n_kv == 4);
    assert_true(rep.applied[AS_GROUP_ATTN_QKV] && rep.applied[AS_GROUP_MLP_GATE_UP] &&
                rep.applied[AS_GROUP_MLP_DOWN]);
    /* scales were really applied somewhere (not all ones) */
    int nontrivial = 0;
    for (int g = 0; g < AS_GROUP_COUNT; g++)
        for (int j = 0; rep.scales[g] && j < 8; j++)
            nontrivial += fabsf(rep.scales[g][j] - 1) > 1e-3f;
    assert_true(nontrivial > 0);
    float *a = layer_out(s.ref, s.X, s.S, s.T), *b = layer_out(s.m, s.X, s.S, s.T);
    size_t n = (size_t)s.S * s.T * s.m->cfg.hidden;
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(a[i] - b[i]) / fmax(1, fabs(a[i])));
    print_message("# n_kv %d bias %d: folded layer max rel diff %.3g, alpha %.2f %.2f %.2f %.2f\n",
                  n_kv, bias, worst, rep.alpha[0], rep.alpha[1], rep.alpha[2], rep.alpha[3]);
    assert_true(worst < 1e-4);
    free(a), free(b);
    awq_layer_report_free(&rep);
    synth_close(&s);
}

/* Folding keeps the layer's function (before rounding): GQA (v->o skipped), non-GQA (v->o
 * applied), and qwen2 with a v bias (divided with v's rows). */
static void test_layer_fold_equivalence(void **state) {
    (void)state;
    check_equivalent(2, 0);
    check_equivalent(4, 0);
    check_equivalent(4, 1);
}

/* The search loss is what the quantized folded layer really does, and the search never does
 * worse than RTN (a = 0 without duo scaling is s = 1). */
static void test_layer_loss_is_real(void **state) {
    (void)state;
    struct synth s;
    synth_open(&s, 4, 0);
    struct awq_opts o = opts(3, 8);
    o.clip = 0, o.duo_scaling = 0;
    struct awq_layer_report rep;
    assert_int_equal(awq_layer(s.m, 0, s.X, s.S, s.T, NULL, &o, &rep), 0);
    for (int g = 0; g < AS_GROUP_COUNT; g++) {
        print_message("# group %d: alpha %.2f loss %.4g rtn %.4g\n", g, rep.alpha[g], rep.loss[g],
                      rep.loss_rtn[g]);
        assert_true(rep.loss[g] <= rep.loss_rtn[g]);
    }
    /* quantize q/k/v of the folded layer, run the attention block with the folded norm */
    int D = s.m->cfg.hidden, T = s.T;
    struct as_layer_weights L = s.m->layers[0];
    float *deq[3];
    for (int i = 0; i < 3; i++) {
        int rows, cols;
        as_model_linear_shape(s.m, (enum as_linear)i, &rows, &cols);
        struct as_qlinear ql;
        assert_int_equal(awq_quantize(L.w[i], rows, cols, &o, &ql), 0);
        deq[i] = malloc(sizeof(float) * rows * cols);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) {
                int G = cols / 8;
                deq[i][r * cols + k] =
                    ql.scale[r * G + k / 8] * (ql.q[r * cols + k] - ql.zero[r * G + k / 8]);
            }
        awq_qlinear_free(&ql);
        L.w[i] = deq[i];
    }
    struct as_run_state *st = as_state_new(s.m, T, T, 0);
    float *xn = malloc(sizeof(float) * T * D), *y0 = malloc(sizeof(float) * T * D);
    double acc = 0;
    for (int i = 0; i < s.S; i++) {
        const float *x = s.X + (size_t)i * T * D;
        st->pos = 0;
        as_op_rmsnorm(y0, x, s.ref->layers[0].attn_norm, T, D, s.m->cfg.rms_eps);
        as_layer_attention(s.ref, &s.ref->layers[0], st, 0, y0, T, y0, NULL);
        as_op_rmsnorm(xn, x, L.attn_norm, T, D, s.m->cfg.rms_eps);
        as_layer_attention(s.m, &L, st, 0, xn, T, xn, NULL);
        for (int j = 0; j < T * D; j++)
            acc += ((double)xn[j] - y0[j]) * (xn[j] - y0[j]);
    }
    acc /= (double)s.S * T * D;
    print_message("# qkv: search loss %.6g, quantized folded layer %.6g\n", rep.loss[0], acc);
    assert_true(fabs(acc - rep.loss[0]) <= 0.02 * rep.loss[0]);
    for (int i = 0; i < 3; i++)
        free(deq[i]);
    free(xn), free(y0);
    as_state_free(st);
    awq_layer_report_free(&rep);
    synth_close(&s);
}

/* All-zero weight group and a dead input channel: every scale, weight and norm stays finite. */
static void test_layer_zero_group_dead_channel(void **state) {
    (void)state;
    struct synth s;
    synth_open(&s, 4, 0);
    struct as_layer_weights *L = &s.m->layers[0];
    int D = s.m->cfg.hidden, FF = s.m->cfg.intermediate;
    L->attn_norm[5] = 0.0f, L->ffn_norm[5] = 0.0f; /* channel 5 of the normed inputs is dead */
    for (int k = 0; k < 8; k++)
        L->w[AS_LIN_Q][k] = L->w[AS_LIN_GATE][3 * D + 8 + k] = 0.0f;
    for (int r = 0; r < D; r++)
        L->w[AS_LIN_DOWN][r * FF + 7] = 0.0f; /* a dead column of down */
    for (int r = 0; r < FF; r++)
        L->w[AS_LIN_UP][r * D + 5] = 0.0f;
    float zero_mean[64] = {0}; /* and an all-zero x_mean for the attention input */
    const float *xm[AS_GROUP_COUNT] = {zero_mean, NULL, NULL, NULL};
    for (int duo = 0; duo <= 1; duo++) {
        struct awq_opts o = opts(4, 8);
        o.duo_scaling = duo;
        struct awq_layer_report rep;
        assert_int_equal(awq_layer(s.m, 0, s.X, s.S, s.T, xm, &o, &rep), 0);
        for (int g = 0; g < AS_GROUP_COUNT; g++) {
            assert_true(isfinite(rep.loss[g]));
            int K = g == AS_GROUP_MLP_DOWN ? FF : D;
            for (int j = 0; rep.scales[g] && j < K; j++)
                assert_true(isfinite(rep.scales[g][j]) && rep.scales[g][j] > 0);
        }
        for (int j = 0; j < D; j++)
            assert_true(isfinite(L->attn_norm[j]) && isfinite(L->ffn_norm[j]));
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            int rows, cols;
            as_model_linear_shape(s.m, (enum as_linear)w, &rows, &cols);
            for (int i = 0; i < rows * cols; i++)
                assert_true(isfinite(L->w[w][i]));
            struct as_qlinear ql;
            assert_int_equal(awq_quantize(L->w[w], rows, cols, &o, &ql), 0);
            assert_int_equal(as_qlinear_check(&ql, "synthetic"), 0);
            awq_qlinear_free(&ql);
        }
        float *y = layer_out(s.m, s.X, s.S, s.T);
        for (int i = 0; i < s.S * s.T * D; i++)
            assert_true(isfinite(y[i]));
        free(y);
        awq_layer_report_free(&rep);
    }
    /* bad input: a non-finite layer input is an error naming the layer */
    s.X[3] = NAN;
    struct awq_opts o = opts(4, 8);
    struct awq_layer_report rep;
    assert_int_equal(awq_layer(s.m, 0, s.X, s.S, s.T, NULL, &o, &rep), -1);
    assert_non_null(strstr(as_last_error(), "layer 0"));
    synth_close(&s);
}

/* ---- AWQ GEMM layout ----------------------------------------------------------------------- */

static void fill_qlinear(struct as_qlinear *l, int N, int K, int gs) {
    int G = K / gs;
    *l = (struct as_qlinear){.N = N, .K = K, .bits = 4, .group_size = gs};
    l->q = malloc((size_t)N * K);
    l->scale = malloc(sizeof(float) * N * G);
    l->zero = malloc(sizeof(int32_t) * N * G);
    l->g_idx = malloc(sizeof(int32_t) * K);
    for (int i = 0; i < N * K; i++)
        l->q[i] = (uint8_t)((i * 7 + i / K) % 16);
    for (int i = 0; i < N * G; i++)
        l->scale[i] = 0.01f + 0.37f * (frand() + 1.0f), l->zero[i] = (i * 5) % 16;
    for (int k = 0; k < K; k++)
        l->g_idx[k] = k / gs;
}

static void free_qlinear(struct as_qlinear *l) {
    free(l->q), free(l->scale), free(l->zero), free(l->g_idx);
}

static void test_pack_layout_hand(void **state) {
    (void)state;
    /* q[n, 0] = n for 8 outputs: nibble i holds column order[i] = 0,2,4,6,1,3,5,7 */
    struct as_qlinear l;
    fill_qlinear(&l, 8, 8, 8);
    for (int n = 0; n < 8; n++)
        for (int k = 0; k < 8; k++)
            l.q[n * 8 + k] = (uint8_t)(k == 0 ? n : 15 - n);
    for (int n = 0; n < 8; n++)
        l.zero[n] = n + 8 > 15 ? 15 : n + 8;
    uint32_t qw[8], qz[1];
    as_awq_pack_qweight(&l, qw);
    as_awq_pack_qzeros(&l, qz);
    assert_int_equal(qw[0], 0x75316420u);
    /* 15 - n: nibble i = 15 - order[i] */
    assert_int_equal(qw[1], 0x8ACE9BDFu);
    /* zeros 8..15 (n + 8): nibble i = 8 + order[i] */
    assert_int_equal(qz[0], 0xFDB9ECA8u);
    free_qlinear(&l);
}

static void test_packable_reasons(void **state) {
    (void)state;
    char why[256];
    struct as_qlinear l;
    fill_qlinear(&l, 16, 64, 32);
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 1);
    l.bits = 3;
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "4 bits"));
    l.bits = 4, l.N = 12;
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "multiple of 8"));
    l.N = 16, l.group_size = 48;
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "ragged"));
    l.group_size = -1;
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    l.group_size = 32, l.g_idx[0] = 1;
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "g_idx"));
    l.g_idx[0] = 0, l.scale[3] = 1e6f;
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "fp16"));
    free_qlinear(&l);
}

#define PREFIX "model.layers.0.mlp.up_proj"

static void test_roundtrip_and_oracle(void **state) {
    (void)state;
    enum { N = 24, K = 64, GS = 16, G = K / GS };
    struct as_qlinear l;
    fill_qlinear(&l, N, K, GS);
    char *dir = make_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct as_st_writer *w = as_st_writer_new(path);
    assert_int_equal(as_awq_write(w, PREFIX, &l), 0);
    assert_int_equal(as_st_writer_finish(w), 0);
    json_t *qc = as_awq_quant_config(GS, NULL, 0);
    assert_string_equal(json_string_value(json_object_get(qc, "version")), "gemm");
    assert_true(json_is_null(json_object_get(qc, "modules_to_not_convert")));
    /* expectation: fp16(scale) * (q - zero), computed here */
    float *want = malloc(sizeof(float) * N * K), *got = malloc(sizeof(float) * N * K);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            float s = as_f16_to_f32(as_f32_to_f16(l.scale[n * G + k / GS]));
            want[n * K + k] = s * (float)(l.q[n * K + k] - l.zero[n * G + k / GS]);
        }
    struct as_ckpt *c = as_ckpt_open(dir);
    assert_non_null(c);
    assert_int_equal(as_quant_load_linear(c, qc, PREFIX, N, K, got), 1);
    assert_memory_equal(got, want, sizeof(float) * N * K);
    /* modules_to_not_convert: the layer is left to the dense loader */
    const char *skip[] = {"mlp.up_proj"};
    json_t *qs = as_awq_quant_config(GS, skip, 1);
    assert_int_equal(as_quant_load_linear(c, qs, PREFIX, N, K, got), 0);
    json_decref(qs);
    /* bad shapes and settings are errors naming file and tensor */
    assert_int_equal(as_quant_load_linear(c, qc, PREFIX, N, 2 * K, got), -1);
    assert_non_null(strstr(as_last_error(), PREFIX ".qweight"));
    assert_non_null(strstr(as_last_error(), "model.safetensors"));
    json_t *q3 = json_deep_copy(qc);
    json_object_set_new(q3, "bits", json_integer(3));
    assert_int_equal(as_quant_load_linear(c, q3, PREFIX, N, K, got), -1);
    assert_non_null(strstr(as_last_error(), "bits"));
    json_object_set_new(q3, "bits", json_integer(4));
    json_object_set_new(q3, "version", json_string("gemv"));
    assert_int_equal(as_quant_load_linear(c, q3, PREFIX, N, K, got), -1);
    assert_non_null(strstr(as_last_error(), "gemv"));
    json_decref(q3);
    as_ckpt_close(c);

    /* the independent numpy unpacker */
    char cfgp[512], expp[512], cmd[4096], cwd[1024];
    snprintf(cfgp, sizeof cfgp, "%s/quant_config.json", dir);
    snprintf(expp, sizeof expp, "%s/expected.f32", dir);
    assert_int_equal(json_dump_file(qc, cfgp, 0), 0);
    FILE *f = fopen(expp, "wb");
    assert_int_equal(fwrite(want, sizeof(float), N * K, f), N * K);
    fclose(f);
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/tools/awq_oracle.py' '%s' '%s' %s '%s'", cwd, cfgp,
             path, PREFIX, expp);
    int rc = system(cmd);
    int status = WEXITSTATUS(rc);
    json_decref(qc);
    free(want), free(got);
    free_qlinear(&l);
    rm_rf(dir);
    free(dir);
    /* 77: numpy/safetensors missing. They come with `make deps` (.venv, put first in PATH by
     * tests/run): a missing oracle fails, it never skips */
    if (status == 77) fail_msg("awq_oracle.py: numpy/safetensors missing (make deps)");
    assert_int_equal(status, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scales_guards),
        cmocka_unit_test(test_w_mean_hand),
        cmocka_unit_test(test_fake_quant_hand),
        cmocka_unit_test(test_linear_loss),
        cmocka_unit_test(test_clip_vs_naive),
        cmocka_unit_test(test_fold_helpers),
        cmocka_unit_test(test_layer_pieces_match_forward),
        cmocka_unit_test(test_layer_fold_equivalence),
        cmocka_unit_test(test_layer_loss_is_real),
        cmocka_unit_test(test_layer_zero_group_dead_channel),
        cmocka_unit_test(test_pack_layout_hand),
        cmocka_unit_test(test_packable_reasons),
        cmocka_unit_test(test_roundtrip_and_oracle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
