/* test_quant_search: the importance-weighted per-group scale search (quant_search.c).
 *
 * Independent expectations: the plain GPTQ-convention fit (quant_int_fit_group) bounds every
 * result from above on the weighted objective; a dense brute-force scan over scales (zero fixed,
 * symmetric) bounds it from below and the search must land within a few percent of it; a group
 * whose first element carries all the importance must reproduce that element almost exactly.
 * Float minimum (quant_fmin_*): the exact optimum over (d > 0, m) by enumerating every monotone
 * code assignment of a small group (the optimal codes are monotone in w; each assignment's
 * weighted least squares (d, m) is exact and re-rounding the codes cannot increase E); never worse
 * than the integer-zero search written as (s, -s*z); an exactly representable group is recovered
 * with E = 0. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "quant_int.h"
#include "quant_search.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float gauss(void) {
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}
/* weights: gaussian with an occasional outlier; importances: log-normal (activation energies) */
static void make_group(float *w, float *h, int n) {
    for (int i = 0; i < n; i++) {
        w[i] = 0.02f * gauss() * (urand() < 0.05 ? 4.0f : 1.0f);
        h[i] = expf(1.5f * gauss());
    }
}

static void test_never_worse_than_plain_fit(void **state) {
    (void)state;
    const int n = 32;
    float w[32], h[32];
    int bits_list[4] = {2, 3, 4, 8};
    for (int b = 0; b < 4; b++)
        for (int sym = 0; sym < 2; sym++)
            for (int variant = 0; variant < 4; variant++) {
                struct quant_search_params p = {.bits = bits_list[b],
                                                .sym = sym,
                                                .fp16_scale = variant & 1,
                                                .signed_scale = variant >> 1};
                double sum_plain = 0, sum_search = 0;
                for (int t = 0; t < 300; t++) {
                    make_group(w, h, n);
                    const float *hh = t % 3 == 0 ? NULL : h;
                    float s0, s;
                    int32_t z0, z;
                    quant_int_fit_group(w, n, p.bits, sym, &s0, &z0);
                    if (p.fp16_scale) s0 = as_f16_to_f32(as_f32_to_f16(s0));
                    double e0 = quant_search_error(w, hh, n, p.bits, s0, z0);
                    double e = quant_search_group(w, hh, n, &p, &s, &z);
                    assert_true(fabs(e - quant_search_error(w, hh, n, p.bits, s, z)) <= 1e-12 * e0);
                    if (e > e0)
                        fail_msg("bits %d sym %d variant %d group %d: %g > plain %g", p.bits, sym,
                                 variant, t, e, e0);
                    assert_true(z >= 0 && z <= quant_int_maxq(p.bits));
                    if (sym) assert_int_equal(z, 1 << (p.bits - 1));
                    if (!p.signed_scale || !sym) assert_true(s > 0);
                    if (p.fp16_scale) assert_true(s == as_f16_to_f32(as_f32_to_f16(s)));
                    sum_plain += e0, sum_search += e;
                }
                /* and clearly better on average at 2-4 bits */
                if (p.bits <= 4 && !(sum_search < 0.9 * sum_plain))
                    fail_msg("bits %d sym %d variant %d: mean error %g vs plain %g", p.bits, sym,
                             variant, sum_search, sum_plain);
            }
}

/* Symmetric 4-bit, positive scales, zero 8: E(s) scanned on a dense grid is the optimum the
 * search approximates. */
static void test_close_to_brute_force(void **state) {
    (void)state;
    const int n = 32;
    float w[32], h[32];
    struct quant_search_params p = {.bits = 4, .sym = 1};
    double ratio_sum = 0;
    for (int t = 0; t < 200; t++) {
        make_group(w, h, n);
        float amax = 0;
        for (int i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(w[i]));
        double best = INFINITY;
        for (int j = 0; j <= 20000; j++) {
            float s = amax / 32.0f + (amax / 4.0f - amax / 32.0f) * (float)j / 20000.0f;
            double e = quant_search_error(w, h, n, 4, s, 8);
            best = e < best ? e : best;
        }
        float s;
        int32_t z;
        double e = quant_search_group(w, h, n, &p, &s, &z);
        if (!(e <= best * 1.25 + 1e-30)) fail_msg("group %d: E %g, brute force %g", t, e, best);
        ratio_sum += e / best;
    }
    printf("# mean E(search) / E(brute force) = %.4f\n", ratio_sum / 200);
    assert_true(ratio_sum / 200 < 1.03);
}

static void test_importance_is_honoured(void **state) {
    (void)state;
    float w[32], h[32];
    struct quant_search_params p = {.bits = 4, .sym = 0};
    double worst = 0; /* error of the heavy element / max|w|: plain RTN allows up to 1/15 */
    for (int t = 0; t < 100; t++) {
        make_group(w, h, 32);
        for (int i = 0; i < 32; i++)
            h[i] = i == 0 ? 1e6f : 1.0f;
        float s0, s;
        int32_t z0, z;
        quant_int_fit_group(w, 32, 4, 0, &s0, &z0);
        quant_search_group(w, h, 32, &p, &s, &z);
        float e = fabsf(w[0] - quant_int_dequantize(quant_int_quantize(w[0], s, z, 15), s, z));
        float e0 = fabsf(w[0] - quant_int_dequantize(quant_int_quantize(w[0], s0, z0, 15), s0, z0));
        assert_true(e <= e0 + 1e-9f);
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(w[i]));
        worst = fmax(worst, e / amax);
    }
    if (!(worst < 0.03)) fail_msg("worst relative error of the heavy element %g", worst);
}

static void test_rtn_matrix(void **state) {
    (void)state;
    const int N = 5, K = 40, G = 2; /* ragged last group of 8 */
    float W[200], h[40];
    for (int i = 0; i < N * K; i++)
        W[i] = 0.05f * gauss();
    for (int k = 0; k < K; k++)
        h[k] = 0.5f + (float)urand();
    uint8_t q[200];
    float scale[10];
    int32_t zero[10], g_idx[40];
    struct quant_search_params p = {.bits = 4, .sym = 1, .fp16_scale = 1};
    assert_int_equal(quant_search_rtn(W, N, K, 32, h, &p, q, scale, zero, g_idx), 0);
    for (int k = 0; k < K; k++)
        assert_int_equal(g_idx[k], k / 32);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            int k0 = 32 * g, len = g ? 8 : 32;
            float s;
            int32_t z;
            quant_search_group(W + n * K + k0, h + k0, len, &p, &s, &z);
            assert_true(s == scale[n * G + g] && z == zero[n * G + g]);
            for (int i = 0; i < len; i++)
                assert_int_equal(q[n * K + k0 + i],
                                 quant_int_quantize(W[n * K + k0 + i], s, z, 15));
        }
    W[7] = NAN;
    assert_int_equal(quant_search_rtn(W, N, K, 32, h, &p, q, scale, zero, g_idx), -1);
    assert_non_null(strstr(as_last_error(), "row 0 column 7"));
    p.bits = 9;
    W[7] = 0;
    assert_int_equal(quant_search_rtn(W, N, K, 32, h, &p, q, scale, zero, g_idx), -1);
}

/* ---- float minimum ---- */

/* Exact min over (d, m) of sum h (w - d q - m)^2 over monotone code assignments of sorted w. */
struct bf {
    const float *w, *h;
    int n, maxq, idx[16], code[16];
    double best;
};
static void bf_rec(struct bf *b, int i, int lo) {
    if (i == b->n) {
        double A = 0, B = 0, C = 0, X = 0, Y = 0;
        for (int j = 0; j < b->n; j++) {
            double hi = b->h[b->idx[j]], q = b->code[j], x = b->w[b->idx[j]];
            A += hi, B += hi * q, C += hi * q * q, X += hi * x, Y += hi * x * q;
        }
        double det = A * C - B * B, d = 0, m = X / A;
        if (det > 1e-300) d = (A * Y - B * X) / det, m = (C * X - B * Y) / det;
        double e = 0;
        for (int j = 0; j < b->n; j++) {
            double r = b->w[b->idx[j]] - d * b->code[j] - m;
            e += b->h[b->idx[j]] * r * r;
        }
        if (e < b->best) b->best = e;
        return;
    }
    for (int c = lo; c <= b->maxq; c++) {
        b->code[i] = c;
        bf_rec(b, i + 1, c);
    }
}
static double fmin_brute_force(const float *w, const float *h, int n, int bits) {
    struct bf b = {.w = w, .h = h, .n = n, .maxq = (1 << bits) - 1, .best = INFINITY};
    for (int i = 0; i < n; i++)
        b.idx[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort by w */
        for (int j = i; j > 0 && w[b.idx[j]] < w[b.idx[j - 1]]; j--) {
            int t = b.idx[j];
            b.idx[j] = b.idx[j - 1], b.idx[j - 1] = t;
        }
    bf_rec(&b, 0, 0);
    return b.best;
}

static void test_fmin_close_to_exact_optimum(void **state) {
    (void)state;
    struct {
        int bits, n, groups;
    } cases[] = {{2, 10, 200}, {3, 8, 100}, {4, 6, 40}};
    for (int c = 0; c < 3; c++) {
        float w[16], h[16];
        struct quant_search_params p = {.bits = cases[c].bits};
        double ratio_sum = 0, worst = 0;
        for (int t = 0; t < cases[c].groups; t++) {
            make_group(w, h, cases[c].n);
            double opt = fmin_brute_force(w, h, cases[c].n, p.bits);
            float d, m;
            double e = quant_fmin_group(w, h, cases[c].n, &p, &d, &m);
            assert_true(fabs(e - quant_fmin_error(w, h, cases[c].n, p.bits, d, m)) <= 1e-12 * e);
            /* the enumeration is the optimum: nothing may beat it (beyond rounding) */
            if (e < opt * (1 - 1e-5) - 1e-20)
                fail_msg("bits %d group %d: E %g below the exact optimum %g", p.bits, t, e, opt);
            double r = opt > 0 ? e / opt : 1.0;
            if (getenv("QS_DEBUG") && r > 1.2) {
                printf("# ratio %.3f d %g m %g:", r, d, m);
                for (int i = 0; i < cases[c].n; i++)
                    printf(" %.4f/%.2f", w[i], h[i]);
                printf("\n");
            }
            ratio_sum += r, worst = r > worst ? r : worst;
        }
        printf("# float min, %d bits, n %d: mean E/E_opt %.4f, worst %.4f\n", cases[c].bits,
               cases[c].n, ratio_sum / cases[c].groups, worst);
        assert_true(ratio_sum / cases[c].groups < 1.02);
    }
}

static void test_fmin_never_worse_than_integer_zero(void **state) {
    (void)state;
    const int n = 32;
    float w[32], h[32];
    int bits_list[4] = {2, 3, 4, 8};
    for (int b = 0; b < 4; b++)
        for (int fp16 = 0; fp16 < 2; fp16++) {
            struct quant_search_params p = {.bits = bits_list[b], .fp16_scale = fp16};
            double sum_int = 0, sum_f = 0;
            for (int t = 0; t < 200; t++) {
                make_group(w, h, n);
                const float *hh = t % 4 == 0 ? NULL : h;
                float s, d, m;
                int32_t z;
                struct quant_search_params pa = p;
                quant_search_group(w, hh, n, &pa, &s, &z);
                /* the integer-zero result as a (d, m) pair, stored the same way */
                float m0 = -s * (float)z;
                if (fp16) m0 = as_f16_to_f32(as_f32_to_f16(m0));
                double e0 = quant_fmin_error(w, hh, n, p.bits, s, m0);
                double e = quant_fmin_group(w, hh, n, &p, &d, &m);
                if (e > e0) fail_msg("bits %d fp16 %d group %d: %g > %g", p.bits, fp16, t, e, e0);
                assert_true(d > 0 && isfinite(m));
                if (fp16)
                    assert_true(d == as_f16_to_f32(as_f32_to_f16(d)) &&
                                m == as_f16_to_f32(as_f32_to_f16(m)));
                sum_int += e0, sum_f += e;
            }
            /* a free minimum is a real gain at 2-4 bits */
            if (p.bits <= 4 && !(sum_f < 0.97 * sum_int))
                fail_msg("bits %d fp16 %d: mean %g vs integer zero %g", p.bits, fp16, sum_f,
                         sum_int);
        }
}

static void test_fmin_exact_representation(void **state) {
    (void)state;
    /* w = d0 * q + m0 with fp16 d0, m0, codes 0..15 in shuffled order, m0 not a multiple of d0:
     * the least-squares step recovers (d0, m0) and E = 0 */
    float d0 = as_f16_to_f32(as_f32_to_f16(0.0123f)), m0 = as_f16_to_f32(as_f32_to_f16(-0.0457f));
    float w[32];
    for (int i = 0; i < 32; i++)
        w[i] = d0 * (float)((i * 7) % 16) + m0;
    assert_true(fabsf(m0 / d0 - rintf(m0 / d0)) > 0.1f);
    for (int fp16 = 0; fp16 < 2; fp16++) {
        struct quant_search_params p = {.bits = 4, .fp16_scale = fp16};
        float d, m;
        double e = quant_fmin_group(w, NULL, 32, &p, &d, &m);
        assert_true(e == 0.0);
        assert_true(d == d0 && m == m0);
        for (int i = 0; i < 32; i++)
            assert_int_equal(quant_fmin_quantize(w[i], d, m, 15), (i * 7) % 16);
    }
    /* least squares by hand: w = {0, 1, 2, 4}, 2 bits, codes 0,1,2,3 -> d = 1.3, m = -0.1 */
    float v[4] = {0, 1, 2, 4};
    struct quant_search_params p = {.bits = 2};
    float d, m;
    double e = quant_fmin_group(v, NULL, 4, &p, &d, &m);
    assert_true(fabs(d - 1.3) < 1e-6 && fabs(m + 0.2) < 1e-6);
    assert_true(fabs(e - 0.3) < 1e-6); /* residuals 0.2, -0.1, -0.4, 0.3 */
    /* equal values: reproduced exactly */
    float c[8] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    e = quant_fmin_group(c, NULL, 8, &p, &d, &m);
    assert_true(e == 0.0 && d > 0);
}

static void test_fmin_rtn_matrix(void **state) {
    (void)state;
    const int N = 4, K = 40, G = 2;
    float W[160];
    for (int i = 0; i < N * K; i++)
        W[i] = 0.05f * gauss() + 0.01f;
    uint8_t q[160];
    float scale[8], minv[8];
    int32_t zero[8], g_idx[40];
    struct quant_search_params p = {.bits = 4, .fp16_scale = 1};
    assert_int_equal(quant_fmin_rtn(W, N, K, 32, NULL, &p, q, scale, minv, zero, g_idx), 0);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            int k0 = 32 * g, len = g ? 8 : 32;
            float d, m;
            quant_fmin_group(W + n * K + k0, NULL, len, &p, &d, &m);
            assert_true(d == scale[n * G + g] && m == minv[n * G + g]);
            int z = (int)rintf(-m / d);
            z = z < 0 ? 0 : z > 15 ? 15 : z;
            assert_int_equal(zero[n * G + g], z);
            for (int i = 0; i < len; i++)
                assert_int_equal(q[n * K + k0 + i],
                                 quant_fmin_quantize(W[n * K + k0 + i], d, m, 15));
        }
    W[45] = INFINITY;
    assert_int_equal(quant_fmin_rtn(W, N, K, 32, NULL, &p, q, scale, minv, zero, g_idx), -1);
    assert_non_null(strstr(as_last_error(), "row 1 column 5"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_worse_than_plain_fit),
        cmocka_unit_test(test_close_to_brute_force),
        cmocka_unit_test(test_importance_is_honoured),
        cmocka_unit_test(test_rtn_matrix),
        cmocka_unit_test(test_fmin_close_to_exact_optimum),
        cmocka_unit_test(test_fmin_never_worse_than_integer_zero),
        cmocka_unit_test(test_fmin_exact_representation),
        cmocka_unit_test(test_fmin_rtn_matrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
