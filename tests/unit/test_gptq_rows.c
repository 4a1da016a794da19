/* test_gptq_rows: the row-blocked GPTQ path (gptq_plan_init + gptq_plan_rows) that bounds memory
 * by one Hessian plus a block of rows.
 *  - Any split of W into row blocks of whole GEMM tiles (GPTQ_ROW_TILE rows) gives codes, scales,
 * zeros, g_idx and W_hat bit-identical to gptq_quantize over all rows (rows are independent given
 * U), for per-channel, grouped, act-order, static groups, asymmetric, both factorizations, GPTAQ, 1
 * and 2 threads.
 *  - The damping retry, which restores H from the triangle LAPACK left untouched (no K x K copy),
 *    gives exactly what a first attempt at the final damping gives (independent of the restore).
 *  - Errors: a non-finite weight is reported at its row in the whole weight; a non-finite Hessian
 *    fails the plan. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "gptq.h"

static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float urand(uint64_t *s) { /* [-0.5, 0.5) */
    return (float)((double)(rng(s) >> 11) / 9007199254740992.0) - 0.5f;
}

/* H = (2/T) X^T X (full symmetric) from T rows of correlated inputs with per-channel scales;
 * T < K makes it singular (the first Cholesky fails without damping). */
static float *make_h(int T, int K, uint64_t seed, int dead_col) {
    float *X = malloc(sizeof(float) * (size_t)T * K), *H = calloc((size_t)K * K, sizeof(float));
    for (int t = 0; t < T; t++) {
        float common = urand(&seed);
        for (int k = 0; k < K; k++)
            X[(long)t * K + k] = (urand(&seed) + 0.5f * common) * (float)(1 + k % 7);
        if (dead_col >= 0) X[(long)t * K + dead_col] = 0.0f;
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, K, T, 2.0f / (float)T, X, K, 0.0f, H, K);
    for (int i = 0; i < K; i++)
        for (int j = 0; j < i; j++)
            H[(long)i * K + j] = H[(long)j * K + i];
    free(X);
    return H;
}
static float *make_w(int N, int K, uint64_t seed) {
    float *W = malloc(sizeof(float) * (size_t)N * K);
    for (long i = 0; i < (long)N * K; i++)
        W[i] = 0.05f * urand(&seed) * (i % 53 == 0 ? 8.0f : 1.0f);
    return W;
}
static float *fdup(const float *a, size_t n) {
    float *b = malloc(sizeof(float) * n);
    memcpy(b, a, sizeof(float) * n);
    return b;
}

/* Quantize W by the plan in row blocks of `blk` rows and compare with gptq_quantize. */
static void check_blocks(const struct gptq_opts *o, int N, int K, const float *H0, const float *W0,
                         const float *D0, int blk) {
    float *H = fdup(H0, (size_t)K * K), *W = fdup(W0, (size_t)N * K), *D = NULL;
    struct gptq_opts oa = *o;
    if (D0) oa.dxxt = D = fdup(D0, (size_t)K * K);
    struct gptq_result a;
    assert_int_equal(gptq_quantize(&oa, W, N, K, H, &a), 0);

    float *H2 = fdup(H0, (size_t)K * K), *D2 = NULL;
    struct gptq_opts ob = *o;
    if (D0) ob.dxxt = D2 = fdup(D0, (size_t)K * K);
    struct gptq_plan p;
    assert_int_equal(gptq_plan_init(&p, &ob, N, K, H2), 0);
    const int G = p.G;
    uint8_t *q = malloc((size_t)N * K);
    float *scale = malloc(sizeof(float) * (size_t)N * G), *blockw = NULL;
    int32_t *zero = malloc(sizeof(int32_t) * (size_t)N * G);
    float *what = malloc(sizeof(float) * (size_t)N * K);
    double loss = 0;
    for (int n0 = 0; n0 < N; n0 += blk) {
        int rows = n0 + blk <= N ? blk : N - n0;
        /* only this block exists in f32, as when converting rows of a bf16 mapping */
        blockw = fdup(W0 + (long)n0 * K, (size_t)rows * K);
        assert_int_equal(gptq_plan_rows(&p, blockw, rows, n0, q + (long)n0 * K,
                                        scale + (long)n0 * G, zero + (long)n0 * G, &loss),
                         0);
        memcpy(what + (long)n0 * K, blockw, sizeof(float) * (size_t)rows * K);
        free(blockw);
    }
    assert_int_equal(a.G, G);
    assert_memory_equal(a.q, q, (size_t)N * K);
    assert_memory_equal(a.scale, scale, sizeof(float) * (size_t)N * G);
    assert_memory_equal(a.zero, zero, sizeof(int32_t) * (size_t)N * G);
    assert_memory_equal(a.g_idx, p.g_idx, sizeof(int32_t) * (size_t)K);
    assert_memory_equal(W, what, sizeof(float) * (size_t)N * K);
    assert_int_equal(a.n_dead, p.n_dead);
    assert_int_equal(a.damp_retries, p.damp_retries);
    assert_true(fabs(a.loss - loss) <= 1e-9 * fabs(a.loss) + 1e-12); /* summation order only */
    gptq_plan_free(&p);
    gptq_result_free(&a);
    free(q), free(scale), free(zero), free(what);
    free(H), free(W), free(D), free(H2), free(D2);
}

static void test_blocks_bitwise(void **state) {
    (void)state;
    /* 2 tiles + a 1-row tail: the whole weight's last GEMM has one row, as has the last block */
    const int N = 2 * GPTQ_ROW_TILE + 1, K = 150;
    float *H = make_h(400, K, 11, 17), *W = make_w(N, K, 12);
    static const int blks[] = {GPTQ_ROW_TILE, 2 * GPTQ_ROW_TILE, N};
    for (int cfg = 0; cfg < 12; cfg++) {
        struct gptq_opts o;
        gptq_opts_default(&o);
        o.bits = cfg % 3 == 0 ? 2 : cfg % 3 == 1 ? 4 : 8;
        o.group_size = cfg % 4 == 0 ? -1 : 32;
        o.act_order = cfg & 1;
        o.static_groups = cfg == 5 || cfg == 9;
        o.sym = cfg % 5 != 2;
        o.factor = cfg % 3 == 2 ? GPTQ_FACTOR_REVERSE : GPTQ_FACTOR_REFERENCE;
        o.blocksize = cfg % 2 ? 32 : 128;
        o.threads = 1 + cfg % 2;
        for (size_t b = 0; b < sizeof blks / sizeof *blks; b++)
            check_blocks(&o, N, K, H, W, NULL, blks[b]);
    }
    free(H), free(W);
}

static void test_blocks_bitwise_gptaq(void **state) {
    (void)state;
    const int N = GPTQ_ROW_TILE + 40, K = 96;
    float *H = make_h(300, K, 21, -1), *W = make_w(N, K, 22);
    float *D = malloc(sizeof(float) * (size_t)K * K);
    uint64_t s = 23;
    for (long i = 0; i < (long)K * K; i++)
        D[i] = 0.01f * urand(&s);
    struct gptq_opts o;
    gptq_opts_default(&o);
    o.method = GPTQ_METHOD_GPTAQ;
    o.group_size = 32;
    for (int ao = 0; ao < 2; ao++) {
        o.act_order = ao;
        check_blocks(&o, N, K, H, W, D, GPTQ_ROW_TILE);
        check_blocks(&o, N, K, H, W, D, N);
    }
    free(H), free(W), free(D);
}

/* A singular H (T < K) with no initial damping fails its first factorizations: the retry that
 * finally works must equal a first attempt made directly with that damping. */
static void test_retry_equals_direct(void **state) {
    (void)state;
    const int N = 30, K = 120;
    float *H0 = make_h(40, K, 31, -1), *W0 = make_w(N, K, 32);
    for (int f = 0; f < 2; f++)
        for (int ao = 0; ao < 2; ao++) {
            struct gptq_opts o;
            gptq_opts_default(&o);
            o.factor = f ? GPTQ_FACTOR_REVERSE : GPTQ_FACTOR_REFERENCE;
            o.act_order = ao;
            o.group_size = 32;
            o.percdamp = 0.0f;
            o.damp_step = 0.25f; /* exact in binary: percdamp is retries * 0.25 either way */
            float *H = fdup(H0, (size_t)K * K), *W = fdup(W0, (size_t)N * K);
            struct gptq_result a, b;
            assert_int_equal(gptq_quantize(&o, W, N, K, H, &a), 0);
            assert_true(a.damp_retries >= 1);
            struct gptq_opts od = o;
            od.percdamp = a.percdamp;
            float *H2 = fdup(H0, (size_t)K * K), *W2 = fdup(W0, (size_t)N * K);
            assert_int_equal(gptq_quantize(&od, W2, N, K, H2, &b), 0);
            assert_int_equal(b.damp_retries, 0);
            assert_true(a.damp == b.damp);
            assert_memory_equal(a.q, b.q, (size_t)N * K);
            assert_memory_equal(a.scale, b.scale, sizeof(float) * (size_t)N * a.G);
            assert_memory_equal(W, W2, sizeof(float) * (size_t)N * K);
            gptq_result_free(&a), gptq_result_free(&b);
            free(H), free(W), free(H2), free(W2);
        }
    free(H0), free(W0);
}

static void test_errors(void **state) {
    (void)state;
    const int N = 20, K = 64;
    float *H = make_h(200, K, 41, -1), *W = make_w(N, K, 42);
    struct gptq_opts o;
    gptq_opts_default(&o);
    o.group_size = 32;
    struct gptq_plan p;
    assert_int_equal(gptq_plan_init(&p, &o, N, K, H), 0);
    uint8_t q[4 * 64];
    float scale[4 * 2];
    int32_t zero[4 * 2];
    double loss = 0;
    W[2 * K + 5] = NAN; /* row 2 of the block that starts at row 12 -> row 14 */
    assert_int_equal(gptq_plan_rows(&p, W, 4, 12, q, scale, zero, &loss), -1);
    assert_non_null(strstr(as_last_error(), "weight: non-finite value"));
    assert_non_null(strstr(as_last_error(), "[14, 5]"));
    gptq_plan_free(&p);

    float *H2 = make_h(200, K, 43, -1);
    H2[3 * K + 9] = INFINITY;
    assert_int_equal(gptq_plan_init(&p, &o, N, K, H2), -1);
    assert_non_null(strstr(as_last_error(), "hessian: non-finite value"));
    assert_null(p.gcol); /* nothing left to free */
    free(H), free(H2), free(W);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_bitwise),
        cmocka_unit_test(test_blocks_bitwise_gptaq),
        cmocka_unit_test(test_retry_equals_direct),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
