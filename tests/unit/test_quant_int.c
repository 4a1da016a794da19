/* test_quant_int: the GPTQ-convention and AWQ-convention integer quantizer against hand-computed
 * cases (values chosen so every scale is exact in binary), round-trip invariants and RTN shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "quant_int.h"

/* sym 4-bit: xmin -1, xmax 3.75 -> xmax 3.75, xmin -3.75, scale 7.5/15 = 0.5, zero 8.
 * codes: -1/.5 = -2 -> 6; .25/.5 = .5 -> 0 (half to even) -> 8; 7.5 -> 8 -> 16 -> clamp 15;
 * -1.5 -> -2 -> 6; 2.5 -> 2 -> 10. */
static void test_sym4_hand(void **state) {
    (void)state;
    const float x[5] = {-1.0f, 0.25f, 3.75f, -0.75f, 1.25f};
    float s;
    int32_t z;
    quant_int_fit_group(x, 5, 4, 1, &s, &z);
    assert_true(s == 0.5f);
    assert_int_equal(z, 8);
    const uint8_t want[5] = {6, 8, 15, 6, 10};
    const float deq[5] = {-1.0f, 0.0f, 3.5f, -1.0f, 1.0f};
    for (int i = 0; i < 5; i++) {
        uint8_t c = quant_int_quantize(x[i], s, z, 15);
        assert_int_equal(c, want[i]);
        assert_true(quant_int_dequantize(c, s, z) == deq[i]);
    }
}

/* asym 4-bit: xmin -1.5, xmax 6 -> scale 0.5, zero round(3) = 3.
 * codes: -3+3 = 0; 12+3 = 15; 1.5 -> 2 -> 5; 4.5 -> 4 -> 7. */
static void test_asym4_hand(void **state) {
    (void)state;
    const float x[4] = {-1.5f, 6.0f, 0.75f, 2.25f};
    float s;
    int32_t z;
    quant_int_fit_group(x, 4, 4, 0, &s, &z);
    assert_true(s == 0.5f);
    assert_int_equal(z, 3);
    const uint8_t want[4] = {0, 15, 5, 7};
    for (int i = 0; i < 4; i++)
        assert_int_equal(quant_int_quantize(x[i], s, z, 15), want[i]);
    /* positive-only group: xmin forced to 0 -> scale 3/15, zero 0 */
    const float y[3] = {1.0f, 2.0f, 3.0f};
    quant_int_fit_group(y, 3, 4, 0, &s, &z);
    assert_true(s == 3.0f / 15.0f);
    assert_int_equal(z, 0);
}

/* All-zero group: xmin = -1, xmax = +1 -> scale 2/maxq. sym zero 8; asym zero = round(1/(2/15))
 * where 2/15 rounds up in f32 (0.13333334), so 1/scale = 7.4999996 -> 7. Every code is the zero. */
static void test_all_zero(void **state) {
    (void)state;
    const float x[6] = {0};
    float s;
    int32_t z;
    quant_int_fit_group(x, 6, 4, 1, &s, &z);
    assert_true(s == 2.0f / 15.0f);
    assert_int_equal(z, 8);
    assert_true(quant_int_dequantize(quant_int_quantize(0.0f, s, z, 15), s, z) == 0.0f);
    quant_int_fit_group(x, 6, 4, 0, &s, &z);
    assert_true(s == 2.0f / 15.0f);
    assert_int_equal(z, 7);
    assert_int_equal(quant_int_quantize(0.0f, s, z, 15), 7);
}

/* The reference mirrors xmin only where it is negative: a non-negative sym group keeps xmin = 0,
 * scale = xmax/maxq = 0.2, zero 8, and its top value clamps (3/0.2 + 8 = 23 -> 15 -> 1.4). */
static void test_sym_nonnegative_quirk(void **state) {
    (void)state;
    const float x[3] = {0.0f, 1.5f, 3.0f};
    float s;
    int32_t z;
    quant_int_fit_group(x, 3, 4, 1, &s, &z);
    assert_true(s == 3.0f / 15.0f);
    assert_int_equal(z, 8);
    assert_int_equal(quant_int_quantize(3.0f, s, z, 15), 15);
}

static void test_sym_zero_points(void **state) {
    (void)state;
    const float x[2] = {-1.0f, 1.0f};
    const int bits[4] = {2, 3, 4, 8}, zero[4] = {2, 4, 8, 128};
    for (int b = 0; b < 4; b++) {
        float s;
        int32_t z;
        quant_int_fit_group(x, 2, bits[b], 1, &s, &z);
        assert_int_equal(z, zero[b]);
        assert_true(fabsf(s - 2.0f / (float)quant_int_maxq(bits[b])) < 1e-7f);
    }
}

/* Every code survives dequantize -> quantize, for every bit width and both conventions. */
static void test_code_roundtrip(void **state) {
    (void)state;
    const float x[5] = {-0.7f, 0.1f, 1.3f, -0.2f, 0.05f};
    for (int bits = 2; bits <= 8; bits++)
        for (int sym = 0; sym < 2; sym++) {
            float s;
            int32_t z;
            quant_int_fit_group(x, 5, bits, sym, &s, &z);
            int maxq = quant_int_maxq(bits);
            assert_true(z >= 0 && z <= maxq);
            for (int c = 0; c <= maxq; c++)
                assert_int_equal(
                    quant_int_quantize(quant_int_dequantize((uint8_t)c, s, z), s, z, maxq), c);
        }
}

static float frand(uint64_t *st) {
    *st ^= *st << 13, *st ^= *st >> 7, *st ^= *st << 17;
    return (float)((*st >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* RTN: ragged last group (K = 10, g = 4 -> groups of 4, 4, 2), g_idx, params of the last group
 * depend only on its two columns, |w - w_hat| <= scale/2 for asym (every value is in range). */
static void test_rtn_ragged(void **state) {
    (void)state;
    enum { N = 3, K = 10, G = 3 };
    float W[N * K], what[N * K], sc[N * G];
    uint8_t q[N * K];
    int32_t zp[N * G], gi[K];
    uint64_t st = 42;
    for (int i = 0; i < N * K; i++)
        W[i] = frand(&st);
    struct quant_int_params p = {4, 4, 0};
    assert_int_equal(quant_int_n_groups(K, 4), G);
    assert_int_equal(quant_int_rtn(W, N, K, &p, q, sc, zp, gi, what), 0);
    const int32_t want_g[K] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    assert_memory_equal(gi, want_g, sizeof want_g);
    for (int n = 0; n < N; n++) {
        float s;
        int32_t z;
        quant_int_fit_group(W + n * K + 8, 2, 4, 0, &s, &z);
        assert_true(s == sc[n * G + 2]);
        assert_int_equal(z, zp[n * G + 2]);
        for (int k = 0; k < K; k++) {
            float sg = sc[n * G + gi[k]];
            assert_true(fabsf(W[n * K + k] - what[n * K + k]) <= sg * 0.5f * (1 + 1e-5f));
            assert_true(what[n * K + k] ==
                        quant_int_dequantize(q[n * K + k], sg, zp[n * G + gi[k]]));
        }
    }
    /* per channel: one group, g_idx all 0 */
    struct quant_int_params pc = {4, -1, 1};
    assert_int_equal(quant_int_rtn(W, N, K, &pc, q, sc, zp, gi, NULL), 0);
    for (int k = 0; k < K; k++)
        assert_int_equal(gi[k], 0);
    assert_int_equal(zp[0], 8);
}

static void test_rtn_bad_input(void **state) {
    (void)state;
    float W[4] = {1, 2, NAN, 4}, sc[2];
    uint8_t q[4];
    int32_t zp[2], gi[2];
    struct quant_int_params p = {4, -1, 1};
    assert_int_equal(quant_int_rtn(W, 2, 2, &p, q, sc, zp, gi, NULL), -1);
    assert_non_null(strstr(as_last_error(), "non-finite"));
    assert_non_null(strstr(as_last_error(), "[1, 0]"));
    W[2] = 3;
    struct quant_int_params pb = {9, -1, 1};
    assert_int_equal(quant_int_rtn(W, 2, 2, &pb, q, sc, zp, gi, NULL), -1);
    assert_non_null(strstr(as_last_error(), "bits 9"));
    struct quant_int_params pg = {4, 0, 1};
    assert_int_equal(quant_int_rtn(W, 2, 2, &pg, q, sc, zp, gi, NULL), -1);
    assert_non_null(strstr(as_last_error(), "group size 0"));
}

/* AWQ: min/max not forced to include 0. [-1.5, 6]: scale 0.5, zero -round(-3) = 3 (same as
 * GPTQ here); [1, 4] (no negatives): AWQ scale 3/15 and zero clamp(-5) = 0, GPTQ scale 4/15;
 * constant group: scale 1e-5/15 (the epsilon). sym: absmax/7, zero 8. */
static void test_awq_fit(void **state) {
    (void)state;
    float s;
    int32_t z;
    const float a[4] = {-1.5f, 6.0f, 0.75f, 2.25f};
    quant_int_fit_group_awq(a, 4, 4, 0, &s, &z);
    assert_true(s == 0.5f);
    assert_int_equal(z, 3);
    const float b[3] = {1.0f, 2.0f, 4.0f};
    quant_int_fit_group_awq(b, 3, 4, 0, &s, &z);
    assert_true(s == 3.0f / 15.0f);
    assert_int_equal(z, 0);
    quant_int_fit_group(b, 3, 4, 0, &s, &z);
    assert_true(s == 4.0f / 15.0f);
    const float c[2] = {2.0f, 2.0f};
    quant_int_fit_group_awq(c, 2, 4, 0, &s, &z);
    assert_true(s == 1e-5f / 15.0f);
    const float d[3] = {-3.5f, 1.0f, 2.0f};
    quant_int_fit_group_awq(d, 3, 4, 1, &s, &z);
    assert_true(s == 0.5f);
    assert_int_equal(z, 8);
    assert_int_equal(quant_int_quantize(-3.5f, s, z, 15), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sym4_hand),       cmocka_unit_test(test_asym4_hand),
        cmocka_unit_test(test_all_zero),        cmocka_unit_test(test_sym_nonnegative_quirk),
        cmocka_unit_test(test_sym_zero_points), cmocka_unit_test(test_code_roundtrip),
        cmocka_unit_test(test_rtn_ragged),      cmocka_unit_test(test_rtn_bad_input),
        cmocka_unit_test(test_awq_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
