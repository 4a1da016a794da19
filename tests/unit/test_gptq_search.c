/* GPTQ with the per-group scale search (gptq_opts.scale_search): with a diagonal Hessian GPTQ
 * has no error feedback, so each group's parameters must do at least as well as the reference
 * min/max fit on the weighted error sum_i H_ii (w_i - w_hat_i)^2 (quant_search's guarantee),
 * strictly better in total, and the codes must dequantize to the returned W_hat. Float minimum
 * (gptq_opts.float_min): no worse than the integer-zero search (up to fp16 rounding of m) and
 * clearly better; W_hat == scale * q + minv with both in fp16; the blocked kernel, the
 * column-by-column one and row blocks (gptq_plan_rows_min) agree on a full Hessian. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "gptq.h"
#include "quant_int.h"
#include "quant_search.h"

static float lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

/* Weighted error of one run's output against the original weights. */
static double weighted_error(const float *W0, const float *What, const float *h, int N, int K) {
    double e = 0;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            double d = (double)W0[n * K + k] - What[n * K + k];
            e += h[k] * d * d;
        }
    return e;
}

static void run_case(int sym, int signed_scale, int group) {
    enum { N = 24, K = 96 };
    uint64_t seed = 11 + sym * 7 + signed_scale * 3 + group;
    float *W0 = malloc(sizeof(float) * N * K), *W1 = malloc(sizeof(float) * N * K),
          *W2 = malloc(sizeof(float) * N * K), *H = calloc(K * K, sizeof(float)),
          *h = malloc(sizeof(float) * K);
    for (int i = 0; i < N * K; i++)
        W0[i] = lcg(&seed) * (1.0f + (i % 7 == 0) * 3.0f);
    double mean = 0;
    for (int k = 0; k < K; k++) {
        h[k] = 0.1f + fabsf(lcg(&seed)) * 10.0f;
        mean += h[k];
    }
    mean /= K;
    struct gptq_opts o;
    gptq_opts_default(&o);
    o.bits = 4;
    o.group_size = group;
    o.sym = sym;
    struct gptq_result r1, r2;
    memcpy(W1, W0, sizeof(float) * N * K);
    memcpy(W2, W0, sizeof(float) * N * K);
    for (int k = 0; k < K; k++)
        H[k * K + k] = h[k];
    assert_int_equal(gptq_quantize(&o, W1, N, K, H, &r1), 0);
    memset(H, 0, sizeof(float) * K * K);
    for (int k = 0; k < K; k++)
        H[k * K + k] = h[k];
    o.scale_search = 1;
    o.scale_search_signed = signed_scale;
    assert_int_equal(gptq_quantize(&o, W2, N, K, H, &r2), 0);
    /* the importance GPTQ uses is 1/U_ii^2 = H_ii + damp */
    float *hd = malloc(sizeof(float) * K);
    for (int k = 0; k < K; k++)
        hd[k] = h[k] + (float)(o.percdamp * mean);
    double e_plain = weighted_error(W0, W1, hd, N, K), e_search = weighted_error(W0, W2, hd, N, K);
    assert_true(e_search <= e_plain * (1 + 1e-6));
    assert_true(e_search < e_plain * 0.995); /* the search finds real improvements */
    for (int n = 0; n < N; n++) /* W_hat is exactly scale * (q - zero) of the returned params */
        for (int k = 0; k < K; k++) {
            int g = r2.g_idx[k];
            float want = quant_int_dequantize(r2.q[n * K + k], r2.scale[n * r2.G + g],
                                              r2.zero[n * r2.G + g]);
            assert_true(W2[n * K + k] == want);
        }
    gptq_result_free(&r1);
    gptq_result_free(&r2);
    free(W0), free(W1), free(W2), free(H), free(h), free(hd);
}

static void test_search_sym(void **state) {
    (void)state;
    run_case(1, 0, 32);
}
static void test_search_sym_signed(void **state) {
    (void)state;
    run_case(1, 1, 32);
}
static void test_search_asym(void **state) {
    (void)state;
    run_case(0, 0, 32);
}
static void test_search_per_channel(void **state) {
    (void)state;
    run_case(1, 1, -1);
}

static void test_float_min_diagonal(void **state) {
    (void)state;
    enum { N = 24, K = 96 };
    uint64_t seed = 99;
    float *W0 = malloc(sizeof(float) * N * K), *W1 = malloc(sizeof(float) * N * K),
          *W2 = malloc(sizeof(float) * N * K), *H = calloc(K * K, sizeof(float)),
          *h = malloc(sizeof(float) * K), *hd = malloc(sizeof(float) * K);
    for (int i = 0; i < N * K; i++)
        W0[i] = lcg(&seed) * (1.0f + (i % 7 == 0) * 3.0f) + 0.3f;
    double mean = 0;
    for (int k = 0; k < K; k++)
        h[k] = 0.1f + fabsf(lcg(&seed)) * 10.0f, mean += h[k];
    mean /= K;
    struct gptq_opts o;
    gptq_opts_default(&o);
    o.group_size = 32, o.sym = 0, o.scale_search = o.scale_search_fp16 = 1;
    struct gptq_result r1, r2;
    memcpy(W1, W0, sizeof(float) * N * K), memcpy(W2, W0, sizeof(float) * N * K);
    for (int k = 0; k < K; k++)
        H[k * K + k] = h[k];
    assert_int_equal(gptq_quantize(&o, W1, N, K, H, &r1), 0);
    assert_null(r1.minv);
    memset(H, 0, sizeof(float) * K * K);
    for (int k = 0; k < K; k++)
        H[k * K + k] = h[k];
    o.float_min = 1;
    assert_int_equal(gptq_quantize(&o, W2, N, K, H, &r2), 0);
    assert_non_null(r2.minv);
    for (int k = 0; k < K; k++)
        hd[k] = h[k] + (float)(o.percdamp * mean);
    double e_int = weighted_error(W0, W1, hd, N, K), e_min = weighted_error(W0, W2, hd, N, K);
    printf("# weighted error: integer zero %g, float minimum %g\n", e_int, e_min);
    assert_true(e_min <= e_int * (1 + 1e-3)); /* floor: (s, fp16(-s*z)) */
    assert_true(e_min < e_int * 0.97);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int g = r2.g_idx[k];
            float d = r2.scale[n * r2.G + g], m = r2.minv[n * r2.G + g];
            assert_true(d == as_f16_to_f32(as_f32_to_f16(d)) &&
                        m == as_f16_to_f32(as_f32_to_f16(m)));
            assert_true(W2[n * K + k] == d * (float)r2.q[n * K + k] + m);
            assert_int_equal(r2.zero[n * r2.G + g], quant_fmin_nearest_zero(d, m, 4));
        }
    gptq_result_free(&r1);
    gptq_result_free(&r2);
    free(W0), free(W1), free(W2), free(H), free(h), free(hd);
}

/* A full Hessian: error feedback runs; blocked == row blocks bit for bit, columnwise close. */
static void test_float_min_kernels_agree(void **state) {
    (void)state;
    enum { N = 40, K = 64, T = 200 };
    uint64_t seed = 5;
    float *X = malloc(sizeof(float) * T * K), *H = calloc(K * K, sizeof(float)),
          *H2 = malloc(sizeof(float) * K * K), *W0 = malloc(sizeof(float) * N * K),
          *Wa = malloc(sizeof(float) * N * K), *Wb = malloc(sizeof(float) * N * K);
    for (int i = 0; i < T * K; i++)
        X[i] = lcg(&seed) + (i ? 0.3f * X[i - 1] : 0.0f); /* correlated neighbouring inputs */
    for (int a = 0; a < K; a++)
        for (int b = 0; b < K; b++) {
            double acc = 0;
            for (int t = 0; t < T; t++)
                acc += (double)X[t * K + a] * X[t * K + b];
            H[a * K + b] = (float)(2 * acc / T);
        }
    for (int i = 0; i < N * K; i++)
        W0[i] = lcg(&seed);
    struct gptq_opts o;
    gptq_opts_default(&o);
    o.group_size = 32, o.sym = 0, o.float_min = 1, o.scale_search_fp16 = 1, o.blocksize = 16;
    o.act_order = 1, o.static_groups = 1;
    struct gptq_result ra, rb;
    memcpy(H2, H, sizeof(float) * K * K), memcpy(Wa, W0, sizeof(float) * N * K);
    assert_int_equal(gptq_quantize(&o, Wa, N, K, H2, &ra), 0);
    memcpy(H2, H, sizeof(float) * K * K), memcpy(Wb, W0, sizeof(float) * N * K);
    assert_int_equal(gptq_quantize_columnwise(&o, Wb, N, K, H2, &rb), 0);
    int diff = 0;
    for (int i = 0; i < N * K; i++)
        diff += ra.q[i] != rb.q[i];
    assert_true(diff <= N * K / 100);
    /* row blocks of 16 through the plan API: identical to the one-shot run */
    struct gptq_plan p;
    memcpy(H2, H, sizeof(float) * K * K), memcpy(Wb, W0, sizeof(float) * N * K);
    assert_int_equal(gptq_plan_init(&p, &o, N, K, H2), 0);
    uint8_t *q = malloc(N * K);
    float *sc = malloc(sizeof(float) * N * 2), *mv = malloc(sizeof(float) * N * 2);
    int32_t *z = malloc(sizeof(int32_t) * N * 2);
    double loss = 0;
    for (int n0 = 0; n0 < N; n0 += 16) {
        int rows = N - n0 < 16 ? N - n0 : 16;
        assert_int_equal(gptq_plan_rows_min(&p, Wb + n0 * K, rows, n0, q + n0 * K, sc + n0 * 2,
                                            z + n0 * 2, mv + n0 * 2, &loss),
                         0);
    }
    assert_memory_equal(q, ra.q, N * K);
    assert_memory_equal(mv, ra.minv, sizeof(float) * N * 2);
    assert_memory_equal(Wb, Wa, sizeof(float) * N * K);
    /* a float-min plan needs the minv output; a symmetric one is refused */
    assert_int_equal(gptq_plan_rows(&p, Wb, 1, 0, q, sc, z, &loss), -1);
    assert_non_null(strstr(as_last_error(), "minv"));
    gptq_plan_free(&p);
    gptq_result_free(&ra);
    gptq_result_free(&rb);
    o.sym = 1;
    memcpy(H2, H, sizeof(float) * K * K);
    assert_int_equal(gptq_quantize(&o, Wb, N, K, H2, &ra), -1);
    assert_non_null(strstr(as_last_error(), "asymmetric"));
    free(X), free(H), free(H2), free(W0), free(Wa), free(Wb), free(q), free(sc), free(mv), free(z);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_search_sym),         cmocka_unit_test(test_search_sym_signed),
        cmocka_unit_test(test_search_asym),        cmocka_unit_test(test_search_per_channel),
        cmocka_unit_test(test_float_min_diagonal), cmocka_unit_test(test_float_min_kernels_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
