/* Tests of lib/common/lepto.c: LeptoQuant's candidate scales (against a full sort and Python's
 * round-half-even index rule), the search's guarantee never to lose to the absmax baseline on its
 * own objective, its losses recomputed by an independent loop, and the diagnostics (kurtosis,
 * FP8 flush-to-zero / saturation fractions on hand-built inputs, the SVG histogram). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "dtype.h"
#include "forward.h"
#include "fpquant.h"
#include "lepto.h"
#include "model.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Python: n = min(round(N * p), N - 1); round() is half to even. */
static size_t py_index(size_t N, int r) {
    double v = (double)N * (0.999 + 0.00005 * r);
    double f = floor(v), d = v - f;
    double n = d > 0.5 ? f + 1 : d < 0.5 ? f : (fmod(f, 2) == 0 ? f : f + 1);
    return n > (double)(N - 1) ? N - 1 : (size_t)n;
}

static void test_candidates_vs_sort(void **st) {
    (void)st;
    size_t sizes[] = {1, 7, 1000, 20000, 123457};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t N = sizes[si];
        float *v = malloc(sizeof(float) * N), *s = malloc(sizeof(float) * N);
        for (size_t i = 0; i < N; i++) {
            float x = frand();
            v[i] = s[i] = fabsf(x * x * x) * (i % 1000 == 0 ? 50.0f : 1.0f);
        }
        qsort(s, N, sizeof(float), cmpf);
        float scales[AS_LEPTO_NCAND], amax;
        as_lepto_candidates(v, N, &amax, scales);
        assert_true(amax == s[N - 1]);
        for (int r = 8; r <= 20; r++) {
            float xn = s[py_index(N, r)];
            float c = fabsf(as_fp8_e4m3_to_f32(as_f32_to_fp8_e4m3(xn * 448.0f / amax)));
            float want = c > 0 ? amax / c : fmaxf(amax / 448.0f, 0x1p-23f);
            assert_true(scales[r - 8] == want);
        }
        /* p = 1 (r = 20) is the absmax scale */
        assert_true(scales[12] == amax / 448.0f);
        free(v), free(s);
    }
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* Independent block-output loss: the attention or MLP block run through its own hook. */
struct fq {
    int group;
    float scale;
    float buf[64 * 96];
};
static const float *fq_cb(void *ctx, int layer, enum as_linear_group g, const float *x, int T,
                          int d) {
    (void)layer;
    struct fq *f = ctx;
    if ((int)g != f->group) return x;
    for (int i = 0; i < T * d; i++)
        f->buf[i] = as_fp8_e4m3_to_f32(as_f32_to_fp8_e4m3(x[i] / f->scale)) * f->scale;
    return f->buf;
}

static double ref_loss(const struct as_model *m, int l, const float *X, int S, int T, int g,
                       float scale) {
    int D = m->cfg.hidden;
    struct as_run_state *s = as_state_new(m, T, T, 0);
    const struct as_layer_weights *L = &m->layers[l];
    float *xn = malloc(sizeof(float) * T * D), *y0 = malloc(sizeof(float) * T * D);
    float *y1 = malloc(sizeof(float) * T * D), *h = malloc(sizeof(float) * T * D);
    static struct fq f;
    f.group = g, f.scale = scale;
    double sum = 0;
    for (int q = 0; q < S; q++) {
        const float *x = X + (size_t)q * T * D;
        as_op_rmsnorm(xn, x, L->attn_norm, T, D, m->cfg.rms_eps);
        if (g <= AS_GROUP_ATTN_O) {
            s->pos = 0;
            as_layer_attention(m, L, s, l, xn, T, y0, NULL);
            s->pos = 0;
            s->quant_linear_input = fq_cb, s->qctx = &f;
            as_layer_attention(m, L, s, l, xn, T, y1, NULL);
            s->quant_linear_input = NULL;
        } else {
            s->pos = 0;
            as_layer_attention(m, L, s, l, xn, T, y0, NULL);
            for (int i = 0; i < T * D; i++)
                h[i] = x[i] + y0[i];
            as_op_rmsnorm(xn, h, L->ffn_norm, T, D, m->cfg.rms_eps);
            as_layer_mlp(m, L, s, l, xn, T, y0, NULL);
            s->quant_linear_input = fq_cb, s->qctx = &f;
            as_layer_mlp(m, L, s, l, xn, T, y1, NULL);
            s->quant_linear_input = NULL;
        }
        for (int i = 0; i < T * D; i++)
            sum += ((double)y1[i] - y0[i]) * ((double)y1[i] - y0[i]);
    }
    free(xn), free(y0), free(y1), free(h);
    as_state_free(s);
    return sum / ((double)S * T * D);
}

static void test_search_never_loses(void **st) {
    (void)st;
    char dir[] = "/tmp/test_lepto_XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.hidden = 32, c.intermediate = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 8, c.vocab = 50, c.max_pos = 64, c.rms_eps = 1e-5f, c.rope_theta = 10000;
    c.bos_id = 1, c.eos_id = 2;
    assert_int_equal(as_model_write_random(&c, AS_F32, 5, dir), 0);
    struct as_model *m = as_model_load(dir);
    assert_non_null(m);
    int S = 3, T = 24, D = c.hidden;
    float *X = malloc(sizeof(float) * S * T * D);
    struct as_run_state *s = as_state_new(m, T, T, AS_STATE_KEEP_ACTS);
    for (int l = 0; l < c.n_layers; l++) {
        for (int q = 0; q < S; q++) { /* the residual stream entering layer l */
            int tok[24];
            for (int i = 0; i < T; i++)
                tok[i] = (i * 13 + q * 7 + 1) % c.vocab;
            as_state_reset(s);
            assert_int_equal(as_forward(m, s, tok, T, AS_LOGITS_NONE, NULL), 0);
            memcpy(X + (size_t)q * T * D, s->layer_acts + (size_t)l * T * D, sizeof(float) * T * D);
        }
        /* an outlier channel, as real activations have */
        for (int i = 0; i < S * T; i++)
            X[(size_t)i * D + 3] *= 20.0f;
        float calib[AS_GROUP_COUNT] = {0, 0, 0, 0};
        struct as_lepto_result res[AS_GROUP_COUNT];
        assert_int_equal(as_lepto_search_layer(m, l, X, S, T, calib, res), 0);
        for (int g = 0; g < AS_GROUP_COUNT; g++) {
            struct as_lepto_result *r = &res[g];
            assert_true(r->loss_best <= r->loss_absmax);
            assert_true(r->loss_absmax > 0);
            /* the losses agree with the independent loop */
            double la = ref_loss(m, l, X, S, T, g, r->absmax_scale);
            double lb = ref_loss(m, l, X, S, T, g, r->best_scale);
            assert_true(fabs(la - r->loss_absmax) <= 1e-9 * fmax(la, 1e-30) + 1e-20);
            assert_true(fabs(lb - r->loss_best) <= 1e-9 * fmax(lb, 1e-30) + 1e-20);
            for (int i = 0; i < AS_LEPTO_NCAND; i++)
                assert_true(r->cand_loss[i] >= r->loss_best);
            if (r->best_r >= 0)
                assert_true(r->best_scale == r->cand_scale[r->best_r - 8]);
            else
                assert_true(r->best_scale == r->absmax_scale);
            int dim = g == AS_GROUP_ATTN_O ? 32 : g == AS_GROUP_MLP_DOWN ? 96 : 32;
            assert_int_equal(r->n_values, (size_t)S * T * dim);
        }
        /* a calibration absmax larger than the sample's: the baseline uses it */
        calib[AS_GROUP_ATTN_QKV] = res[AS_GROUP_ATTN_QKV].sample_absmax * 4;
        assert_int_equal(as_lepto_search_layer(m, l, X, S, T, calib, res), 0);
        assert_true(res[0].absmax_scale == calib[0] / 448.0f);
        assert_true(res[0].loss_best <= res[0].loss_absmax);
    }
    /* bad input */
    assert_int_equal(as_lepto_search_layer(m, 9, X, S, T, NULL, NULL), -1);
    assert_non_null(strstr(as_last_error(), "layer 9"));
    X[5] = NAN;
    struct as_lepto_result res[AS_GROUP_COUNT];
    assert_int_equal(as_lepto_search_layer(m, 0, X, S, T, NULL, res), -1);
    assert_non_null(strstr(as_last_error(), "non-finite"));
    as_state_free(s);
    free(X);
    as_model_free(m);
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_diag(void **st) {
    (void)st;
    float a[4] = {-1, 1, -1, 1};
    struct as_tensor_diag d;
    as_tensor_diag(a, 4, 0, &d);
    assert_true(fabs(d.kurtosis - 1.0) < 1e-12); /* two-point distribution: m4 / m2^2 = 1 */
    assert_true(d.absmax == 1 && d.absmean == 1);
    assert_true(d.frac_zero == 0 && d.frac_saturated == 0);
    /* scale 1: 2^-12 flushes to zero (below half of 2^-9), 2^-8 is subnormal, 900 saturates */
    float b[4] = {448, 0x1p-12f, 0x1p-8f, 900};
    as_tensor_diag(b, 4, 1.0f, &d);
    assert_true(d.frac_zero == 0.25 && d.frac_saturated == 0.25 && d.frac_subnormal == 0.5);
    /* kurtosis of a sample of a normal distribution is near 3 */
    size_t n = 200000;
    float *g = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i += 2) { /* Box-Muller */
        double u1 = (frand() + 1.0001) / 2.0002, u2 = frand();
        g[i] = (float)(sqrt(-2 * log(u1)) * cos(M_PI * u2));
        g[i + 1] = (float)(sqrt(-2 * log(u1)) * sin(M_PI * u2));
    }
    as_tensor_diag(g, n, 0, &d);
    assert_true(fabs(d.kurtosis - 3.0) < 0.1);
    /* SVG */
    char path[] = "/tmp/test_lepto_svg_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w+");
    assert_int_equal(as_fp8_histogram_svg(g, n, 0, 64, "w <&> title", f), 0);
    fflush(f);
    rewind(f);
    char *buf = calloc(1, 1 << 20);
    size_t got = fread(buf, 1, (1 << 20) - 1, f);
    assert_true(got > 100);
    assert_non_null(strstr(buf, "<svg"));
    assert_non_null(strstr(buf, "w &lt;&amp;&gt; title"));
    assert_non_null(strstr(buf, "FP8 E4M3"));
    char *p1 = strstr(buf, "<polyline"), *p2 = p1 ? strstr(p1 + 1, "<polyline") : NULL;
    assert_non_null(p2);
    assert_non_null(strstr(buf, "</svg>"));
    fclose(f);
    unlink(path);
    free(buf);
    assert_int_equal(as_fp8_histogram_svg(g, 0, 0, 64, "x", stdout), -1);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_candidates_vs_sort),
        cmocka_unit_test(test_search_never_loses),
        cmocka_unit_test(test_diag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
