/* GPTQ with the per-group scale search (gptq_opts.scale_search): with a diagonal Hessian GPTQ
 * has no error feedback, so each group's parameters must do at least as well as the reference
 * min/max fit on the weighted error sum_i H_ii (w_i - w_hat_i)^2 (quant_search's guarantee),
 * strictly better in total, and the codes must dequantize to the returned W_hat. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gptq.h"
#include "quant_int.h"

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
    for (int i = 0; i < N * K; i++) W0[i] = lcg(&seed) * (1.0f + (i % 7 == 0) * 3.0f);
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
    for (int k = 0; k < K; k++) H[k * K + k] = h[k];
    assert_int_equal(gptq_quantize(&o, W1, N, K, H, &r1), 0);
    memset(H, 0, sizeof(float) * K * K);
    for (int k = 0; k < K; k++) H[k * K + k] = h[k];
    o.scale_search = 1;
    o.scale_search_signed = signed_scale;
    assert_int_equal(gptq_quantize(&o, W2, N, K, H, &r2), 0);
    /* the importance GPTQ uses is 1/U_ii^2 = H_ii + damp */
    float *hd = malloc(sizeof(float) * K);
    for (int k = 0; k < K; k++) hd[k] = h[k] + (float)(o.percdamp * mean);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_search_sym),
        cmocka_unit_test(test_search_sym_signed),
        cmocka_unit_test(test_search_asym),
        cmocka_unit_test(test_search_per_channel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
