/* eval_metrics: log-softmax normalises; KL of identical distributions is 0 and of a known pair
 * equals the closed form; PPL and its error follow llama.cpp's formula; percentiles interpolate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "eval_metrics.h"

static void test_log_softmax(void **state) {
    (void)state;
    float logits[4] = {1000.0f, 1000.0f, 999.0f, -5.0f}; /* large values must not overflow */
    double lp[4], s = 0;
    as_log_softmax(logits, 4, lp);
    for (int i = 0; i < 4; i++) s += exp(lp[i]);
    assert_float_equal(s, 1.0, 1e-12);
    assert_float_equal(lp[0] - lp[2], 1.0, 1e-9);
}

static void test_kld_closed_form(void **state) {
    (void)state;
    /* p = (0.5, 0.25, 0.25), q = (0.25, 0.5, 0.25): KL = 0.5 ln2 - 0.25 ln2 = 0.25 ln2 */
    double p[3] = {log(0.5), log(0.25), log(0.25)}, q[3] = {log(0.25), log(0.5), log(0.25)};
    struct as_kld_acc a = {0};
    as_kld_add(&a, p, p, 3, 0);
    as_kld_add(&a, p, q, 3, 0);
    struct as_kld_summary s;
    as_kld_summarize(&a, &s);
    assert_int_equal(s.n, 2);
    assert_float_equal(s.min, 0.0, 1e-15);
    assert_float_equal(s.max, 0.25 * log(2.0), 1e-12);
    assert_float_equal(s.mean, 0.125 * log(2.0), 1e-12);
    assert_float_equal(s.same_top, 0.5, 0); /* argmax 0 vs argmax 1 in the second token */
    assert_float_equal(s.dp_mean, (0 + (0.25 - 0.5)) / 2, 1e-12);
    assert_float_equal(s.dp_rms, sqrt(0.0625 / 2), 1e-12);
    as_kld_free(&a);
}

static void test_ppl(void **state) {
    (void)state;
    struct as_nll_acc a = {0};
    double v[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) as_nll_add(&a, v[i]);
    assert_float_equal(as_nll_ppl(&a), exp(2.5), 1e-9);
    /* population variance 1.25, /(n-1) = 3 -> sqrt(1.25/3) */
    assert_float_equal(as_nll_ppl_err(&a), exp(2.5) * sqrt(1.25 / 3), 1e-9);
}

static void test_percentile(void **state) {
    (void)state;
    double v[5] = {0, 1, 2, 3, 4};
    assert_float_equal(as_percentile_sorted(v, 5, 0.5), 2, 0);
    assert_float_equal(as_percentile_sorted(v, 5, 0.9), 3.6, 1e-12);
    assert_float_equal(as_percentile_sorted(v, 5, 1.0), 4, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_softmax),
        cmocka_unit_test(test_kld_closed_form),
        cmocka_unit_test(test_ppl),
        cmocka_unit_test(test_percentile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
