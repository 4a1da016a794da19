/* act_stats: the streamed Hessian equals a naive fp64 (2/N) XᵀX over all tokens however the
 * tokens are chunked; mean |x| and absmax match direct computation; reservoir keeps real rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_stats.h"

static float lcg_uniform(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static void test_hessian_matches_naive(void **state) {
    (void)state;
    const int d = 13, T = 301;
    float *x = malloc(sizeof(float) * T * d);
    uint64_t seed = 7;
    for (int i = 0; i < T * d; i++) x[i] = lcg_uniform(&seed) * (1 + i % 5);
    struct as_act_stats s;
    assert_int_equal(as_act_stats_init(&s, d, 0, 1), 0);
    /* ragged chunks: 1, 100, 200 tokens */
    assert_int_equal(as_act_stats_add(&s, x, 1), 0);
    assert_int_equal(as_act_stats_add(&s, x + d, 100), 0);
    assert_int_equal(as_act_stats_add(&s, x + 101 * d, 200), 0);
    float *H = malloc(sizeof(float) * d * d);
    as_act_stats_hessian(&s, H);
    float mean_abs[13];
    as_act_stats_mean_abs(&s, mean_abs);
    for (int i = 0; i < d; i++) {
        double ma = 0, mx = 0;
        for (int t = 0; t < T; t++) {
            ma += fabs(x[t * d + i]);
            mx = fmax(mx, fabs(x[t * d + i]));
        }
        assert_float_equal(mean_abs[i], ma / T, 1e-5);
        assert_float_equal(s.absmax[i], mx, 0);
        for (int j = 0; j < d; j++) {
            double ref = 0;
            for (int t = 0; t < T; t++) ref += (double)x[t * d + i] * x[t * d + j];
            ref *= 2.0 / T;
            assert_float_equal(H[i * d + j], ref, 1e-5 * fabs(ref) + 1e-6);
            assert_float_equal(H[i * d + j], H[j * d + i], 0);
        }
    }
    assert_int_equal(s.tokens, T);
    as_act_stats_free(&s);
    free(H);
    free(x);
}

static void test_reservoir_keeps_input_rows(void **state) {
    (void)state;
    const int d = 4, T = 50, keep = 8;
    float x[50 * 4];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < d; j++) x[t * d + j] = (float)(t * 10 + j);
    struct as_act_stats s;
    as_act_stats_init(&s, d, keep, 3);
    for (int t = 0; t < T; t += 5) assert_int_equal(as_act_stats_add(&s, x + t * d, 5), 0);
    assert_int_equal(s.kept, keep);
    int distinct = 0;
    for (int k = 0; k < keep; k++) {
        float *row = s.kept_rows + k * d;
        int t = (int)(row[0] / 10);
        assert_true(t >= 0 && t < T);
        for (int j = 0; j < d; j++) assert_float_equal(row[j], t * 10 + j, 0);
        distinct += t >= keep; /* some rows beyond the first `keep` must have been sampled */
    }
    assert_true(distinct > 0);
    as_act_stats_free(&s);
}

static void test_rejects_nan(void **state) {
    (void)state;
    struct as_act_stats s;
    as_act_stats_init(&s, 2, 0, 0);
    float x[2] = {1.0f, NAN};
    assert_int_equal(as_act_stats_add(&s, x, 1), -1);
    as_act_stats_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hessian_matches_naive),
        cmocka_unit_test(test_reservoir_keeps_input_rows),
        cmocka_unit_test(test_rejects_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
