/* test_gptq: GPTQ / GPTAQ against independent expectations:
 *  - diagonal H: U is diagonal, no error propagates, so GPTQ must give exactly RTN's codes;
 *  - blocked (lazy batch GEMM) == column-by-column rank-1 kernel, over shapes, ragged groups,
 *    act-order, static groups, sym/asym, 2/3/4/8 bits;
 *  - layer output error ||X W^T - X W_hat^T||^2 below RTN's on correlated inputs, several seeds;
 *  - a numpy transcription of the reference fasterquant (tests/tools/gptq_oracle.py) gives the
 *    same codes/scales/zeros/g_idx (skipped when python3/numpy are missing);
 *  - GPTAQ with dXX^T = 0 is bit-identical to GPTQ, and with alpha 1 it lowers the asymmetric
 *    error ||X_fp W^T - X_q W_hat^T||^2;
 *  - damping retries on indefinite H, dead inputs, NaN/Inf and bad options rejected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "gptq.h"
#include "quant_int.h"

/* ---- data ---- */

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}
static float randn(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Correlated activations X [T, K]: iid noise + a rank-8 shared part + per-column scales spread
 * over ~2 decades (so act-order has something to order). */
static float *make_x(int T, int K, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    float *X = malloc(sizeof(float) * (size_t)T * K), *F = malloc(sizeof(float) * (size_t)T * 8),
          *A = malloc(sizeof(float) * 8 * (size_t)K), *cs = malloc(sizeof(float) * (size_t)K);
    for (int i = 0; i < T * 8; i++)
        F[i] = randn(&s);
    for (int i = 0; i < 8 * K; i++)
        A[i] = randn(&s);
    for (int k = 0; k < K; k++)
        cs[k] = expf(2.0f * randn(&s) / 2.0f);
    for (int i = 0; i < T * K; i++)
        X[i] = 0.5f * randn(&s);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, 8, 1.0f, F, 8, A, K, 1.0f, X, K);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++)
            X[(long)t * K + k] *= cs[k];
    free(F), free(A), free(cs);
    return X;
}
/* H = (2/T) X^T X, full symmetric */
static float *make_h(const float *X, int T, int K) {
    float *H = calloc((size_t)K * K, sizeof(float));
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, K, T, 2.0f / (float)T, X, K, 0.0f, H, K);
    for (int i = 0; i < K; i++)
        for (int j = 0; j < i; j++)
            H[(long)i * K + j] = H[(long)j * K + i];
    return H;
}
static float *make_w(int N, int K, uint64_t seed) {
    uint64_t s = seed * 0xBF58476D1CE4E5B9ull + 7;
    float *W = malloc(sizeof(float) * (size_t)N * K);
    for (int i = 0; i < N * K; i++)
        W[i] = 0.02f * randn(&s);
    for (int i = 0; i < N * K / 97; i++)
        W[rng_next(&s) % ((uint64_t)N * K)] *= 8.0f; /* outliers */
    return W;
}
static float *fdup(const float *a, size_t n) {
    float *b = malloc(sizeof(float) * n);
    memcpy(b, a, sizeof(float) * n);
    return b;
}

/* ||Xa Wa^T - Xb Wb^T||^2 */
static double out_err(const float *Xa, const float *Wa, const float *Xb, const float *Wb, int T,
                      int N, int K) {
    float *Ya = malloc(sizeof(float) * (size_t)T * N), *Yb = malloc(sizeof(float) * (size_t)T * N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, Xa, K, Wa, K, 0.0f, Ya, N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, Xb, K, Wb, K, 0.0f, Yb, N);
    double e = 0;
    for (long i = 0; i < (long)T * N; i++)
        e += (double)(Ya[i] - Yb[i]) * (Ya[i] - Yb[i]);
    free(Ya), free(Yb);
    return e;
}

struct cfg {
    int N, K, bits, gs, sym, act, stat;
};

static struct gptq_opts opts_of(const struct cfg *c) {
    struct gptq_opts o;
    gptq_opts_default(&o);
    o.bits = c->bits, o.group_size = c->gs, o.sym = c->sym, o.act_order = c->act;
    o.static_groups = c->stat;
    return o;
}

/* ---- diagonal H reduces to RTN ---- */

static void test_diag_h_is_rtn(void **state) {
    (void)state;
    const struct cfg cs[] = {{16, 172, 4, 32, 1, 0, 0},
                             {16, 172, 3, 32, 0, 0, 0},
                             {8, 100, 4, -1, 0, 0, 0},
                             {8, 100, 2, 64, 1, 1, 1},
                             {8, 96, 8, 32, 0, 1, 1}};
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        const struct cfg *c = &cs[t];
        int N = c->N, K = c->K, G = quant_int_n_groups(K, c->gs);
        float *W = make_w(N, K, 11 + t), *W0 = fdup(W, (size_t)N * K);
        float *H = calloc((size_t)K * K, sizeof(float));
        uint64_t s = 5;
        for (int k = 0; k < K; k++)
            H[(long)k * K + k] = 0.1f + fabsf(randn(&s));
        struct gptq_opts o = opts_of(c);
        struct gptq_result r;
        assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
        uint8_t *q = malloc((size_t)N * K);
        float *sc = malloc(sizeof(float) * (size_t)N * G),
              *wh = malloc(sizeof(float) * (size_t)N * K);
        int32_t *zp = malloc(sizeof(int32_t) * (size_t)N * G),
                *gi = malloc(sizeof(int32_t) * (size_t)K);
        struct quant_int_params p = {c->bits, c->gs, c->sym};
        assert_int_equal(quant_int_rtn(W0, N, K, &p, q, sc, zp, gi, wh), 0);
        assert_memory_equal(r.q, q, (size_t)N * K);
        assert_memory_equal(r.scale, sc, sizeof(float) * (size_t)N * G);
        assert_memory_equal(r.zero, zp, sizeof(int32_t) * (size_t)N * G);
        assert_memory_equal(r.g_idx, gi, sizeof(int32_t) * (size_t)K);
        assert_memory_equal(W, wh, sizeof(float) * (size_t)N * K);
        assert_int_equal(r.damp_retries, 0);
        gptq_result_free(&r);
        free(W), free(W0), free(H), free(q), free(sc), free(wh), free(zp), free(gi);
    }
}

/* Diagonal H with act-order and dynamic groups: groups are consecutive in the processing order,
 * i.e. RTN of the column-permuted matrix; g_idx[perm[i]] = i / g. */
static void test_diag_h_actorder_dynamic(void **state) {
    (void)state;
    int N = 8, K = 96, gs = 32, G = 3;
    float *W = make_w(N, K, 3), *Wp = malloc(sizeof(float) * (size_t)N * K);
    float *H = calloc((size_t)K * K, sizeof(float));
    int32_t perm[96];
    for (int k = 0; k < K; k++)
        H[(long)k * K + k] = (float)((k * 37) % K + 1); /* distinct */
    /* expected order: decreasing diag */
    for (int i = 0; i < K; i++)
        for (int k = 0; k < K; k++)
            if ((k * 37) % K + 1 == K - i) perm[i] = k;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < K; i++)
            Wp[n * K + i] = W[n * K + perm[i]];
    struct cfg c = {N, K, 4, gs, 0, 1, 0};
    struct gptq_opts o = opts_of(&c);
    struct gptq_result r;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
    assert_memory_equal(r.perm, perm, sizeof perm);
    uint8_t q[8 * 96];
    float sc[8 * 3];
    int32_t zp[8 * 3], gi[96];
    struct quant_int_params p = {4, gs, 0};
    assert_int_equal(quant_int_rtn(Wp, N, K, &p, q, sc, zp, gi, NULL), 0);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < K; i++)
            assert_int_equal(r.q[n * K + perm[i]], q[n * K + i]);
    assert_memory_equal(r.scale, sc, sizeof(float) * (size_t)N * G);
    for (int i = 0; i < K; i++)
        assert_int_equal(r.g_idx[perm[i]], i / gs);
    gptq_result_free(&r);
    free(W), free(Wp), free(H);
}

/* ---- blocked == columnwise ---- */

/* Blocked kernel (reference factorization) vs columnwise kernel with factorization `factor_b`. */
static void compare_kernels_f(const struct cfg *c, int method, int blocksize, uint64_t seed,
                              enum gptq_factor factor_b) {
    int N = c->N, K = c->K, G = quant_int_n_groups(K, c->gs), T = 4 * K;
    float *X = make_x(T, K, seed), *H = make_h(X, T, K), *W = make_w(N, K, seed);
    float *H2 = fdup(H, (size_t)K * K), *W2 = fdup(W, (size_t)N * K), *D = NULL, *D2 = NULL;
    struct gptq_opts o = opts_of(c), o2;
    o.method = method;
    o.blocksize = blocksize;
    if (method == GPTQ_METHOD_GPTAQ) {
        uint64_t s = seed;
        D = malloc(sizeof(float) * (size_t)K * K);
        for (long i = 0; i < (long)K * K; i++)
            D[i] = 0.05f * H[i] + 0.01f * randn(&s);
        D2 = fdup(D, (size_t)K * K);
        o.dxxt = D;
    }
    o2 = o;
    o2.dxxt = D2;
    o2.factor = factor_b;
    struct gptq_result a, b;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &a), 0);
    assert_int_equal(gptq_quantize_columnwise(&o2, W2, N, K, H2, &b), 0);
    /* Rounding differs (one GEMM vs K rank-1 updates), so a code sitting on a rounding boundary
     * may flip; a flip then changes the rest of its row's updates (rows are independent). So:
     * almost all codes equal, and only a few rows touched at all. */
    long same = 0, rows_diff = 0;
    for (int n = 0; n < N; n++) {
        long rs = 0;
        for (int k = 0; k < K; k++)
            rs += a.q[(long)n * K + k] == b.q[(long)n * K + k];
        same += rs;
        rows_diff += rs != K;
    }
    double frac = (double)same / ((double)N * K);
    if (getenv("GPTQ_TEST_VERBOSE") || frac < 0.99 || rows_diff > 2 + N / 20)
        print_error("cfg N%d K%d b%d g%d sym%d act%d st%d m%d B%d: same %.5f rows differing %ld\n",
                    N, K, c->bits, c->gs, c->sym, c->act, c->stat, method, blocksize, frac,
                    rows_diff);
    assert_true(frac >= 0.99);
    assert_true(rows_diff <= 2 + N / 20);
    assert_memory_equal(a.g_idx, b.g_idx, sizeof(int32_t) * (size_t)K);
    long zsame = 0, ssame = 0;
    for (long i = 0; i < (long)N * G; i++) {
        zsame += a.zero[i] == b.zero[i];
        ssame += fabsf(a.scale[i] - b.scale[i]) <= 1e-4f * fabsf(b.scale[i]);
    }
    assert_true(zsame >= (long)(0.98 * N * G));
    assert_true(ssame >= (long)(0.98 * N * G));
    assert_true(fabs(a.loss - b.loss) <= 0.01 * b.loss + 1e-12);
    assert_true(a.damp == b.damp && a.damp_retries == b.damp_retries);
    gptq_result_free(&a), gptq_result_free(&b);
    free(X), free(H), free(W), free(H2), free(W2), free(D), free(D2);
}

static void compare_kernels(const struct cfg *c, int method, int blocksize, uint64_t seed) {
    compare_kernels_f(c, method, blocksize, seed, GPTQ_FACTOR_REFERENCE);
}

static void test_blocked_equals_columnwise(void **state) {
    (void)state;
    const struct cfg cs[] = {
        {48, 256, 4, 128, 1, 0, 0}, {48, 256, 4, 128, 0, 1, 0}, {40, 172, 4, 32, 1, 0, 0},
        {40, 172, 4, 32, 0, 1, 0},  {40, 172, 3, 32, 1, 1, 1},  {40, 172, 2, 64, 0, 0, 1},
        {33, 200, 8, -1, 1, 1, 0},  {33, 200, 3, -1, 0, 0, 0},  {24, 130, 2, 48, 1, 1, 0},
        {24, 300, 4, 100, 0, 1, 1},
    };
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        compare_kernels(&cs[t], GPTQ_METHOD_GPTQ, 128, 100 + t);
        compare_kernels(&cs[t], GPTQ_METHOD_GPTQ, 32, 200 + t);
    }
}

static void test_gptaq_blocked_equals_columnwise(void **state) {
    (void)state;
    const struct cfg cs[] = {{40, 172, 4, 32, 1, 0, 0},
                             {40, 172, 4, 32, 0, 1, 0},
                             {32, 256, 3, -1, 1, 1, 0},
                             {32, 200, 4, 64, 0, 1, 1}};
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        compare_kernels(&cs[t], GPTQ_METHOD_GPTAQ, 128, 300 + t);
        compare_kernels(&cs[t], GPTQ_METHOD_GPTAQ, 64, 400 + t);
    }
}

/* GPTQ_FACTOR_REVERSE computes the same U without forming H^-1: same results up to rounding
 * (checked through the columnwise kernel, so both the kernel and the factorization vary). */
static void test_factor_reverse(void **state) {
    (void)state;
    const struct cfg cs[] = {
        {40, 172, 4, 32, 1, 0, 0}, {40, 256, 4, 128, 0, 1, 0}, {32, 200, 3, -1, 1, 1, 0}};
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        compare_kernels_f(&cs[t], GPTQ_METHOD_GPTQ, 128, 600 + t, GPTQ_FACTOR_REVERSE);
        compare_kernels_f(&cs[t], GPTQ_METHOD_GPTAQ, 128, 700 + t, GPTQ_FACTOR_REVERSE);
    }
    /* diagonal H: U is exactly diag(1/sqrt(h)) either way, so REVERSE is still exactly RTN */
    int N = 8, K = 40;
    float *W = make_w(N, K, 1), *W0 = fdup(W, (size_t)N * K), *H = calloc((size_t)K * K, 4);
    for (int k = 0; k < K; k++)
        H[k * K + k] = 1.0f + (float)k;
    struct cfg c = {N, K, 4, 16, 0, 0, 0};
    struct gptq_opts o = opts_of(&c);
    o.factor = GPTQ_FACTOR_REVERSE;
    struct gptq_result r;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
    uint8_t q[8 * 40];
    float sc[8 * 3];
    int32_t zp[8 * 3], gi[40];
    struct quant_int_params p = {4, 16, 0};
    assert_int_equal(quant_int_rtn(W0, N, K, &p, q, sc, zp, gi, NULL), 0);
    assert_memory_equal(r.q, q, sizeof q);
    gptq_result_free(&r);
    free(W), free(W0), free(H);
}

/* Row-parallel in-block updates: rows are independent, so the thread count cannot change a bit. */
static void test_threads_bitwise(void **state) {
    (void)state;
    int N = 96, K = 160, T = 400;
    float *X = make_x(T, K, 9), *H = make_h(X, T, K), *W = make_w(N, K, 9);
    float *H2 = fdup(H, (size_t)K * K), *W2 = fdup(W, (size_t)N * K);
    struct cfg c = {N, K, 4, 32, 0, 1, 0};
    struct gptq_opts o = opts_of(&c);
    struct gptq_result a, b;
    o.threads = 1;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &a), 0);
    o.threads = 3;
    assert_int_equal(gptq_quantize(&o, W2, N, K, H2, &b), 0);
    assert_memory_equal(a.q, b.q, (size_t)N * K);
    assert_memory_equal(W, W2, sizeof(float) * (size_t)N * K);
    gptq_result_free(&a), gptq_result_free(&b);
    free(X), free(H), free(W), free(H2), free(W2);
}

/* ---- GPTQ beats RTN on the layer output ---- */

static void test_gptq_beats_rtn(void **state) {
    (void)state;
    const struct cfg cs[] = {{64, 192, 4, 64, 1, 0, 0},
                             {64, 192, 3, -1, 0, 1, 0},
                             {64, 192, 4, 32, 0, 1, 1},
                             {64, 192, 2, 64, 1, 1, 0}};
    for (int seed = 1; seed <= 3; seed++)
        for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
            const struct cfg *c = &cs[t];
            int N = c->N, K = c->K, T = 512, G = quant_int_n_groups(K, c->gs);
            float *X = make_x(T, K, 1000 + seed), *H = make_h(X, T, K), *W = make_w(N, K, seed);
            float *W0 = fdup(W, (size_t)N * K), *wr = malloc(sizeof(float) * (size_t)N * K);
            uint8_t *q = malloc((size_t)N * K);
            float *sc = malloc(sizeof(float) * (size_t)N * G);
            int32_t *zp = malloc(sizeof(int32_t) * (size_t)N * G),
                    *gi = malloc(sizeof(int32_t) * K);
            struct quant_int_params p = {c->bits, c->gs, c->sym};
            assert_int_equal(quant_int_rtn(W0, N, K, &p, q, sc, zp, gi, wr), 0);
            struct gptq_opts o = opts_of(c);
            struct gptq_result r;
            assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
            double eg = out_err(X, W0, X, W, T, N, K), er = out_err(X, W0, X, wr, T, N, K);
            if (!(eg < 0.9 * er)) print_error("seed %d cfg %zu: gptq %g rtn %g\n", seed, t, eg, er);
            assert_true(eg < 0.9 * er);
            gptq_result_free(&r);
            free(X), free(H), free(W), free(W0), free(wr), free(q), free(sc), free(zp), free(gi);
        }
}

/* ---- GPTAQ ---- */

static void test_gptaq_zero_dxxt_is_gptq(void **state) {
    (void)state;
    const struct cfg cs[] = {{32, 172, 4, 32, 1, 0, 0}, {32, 200, 3, 64, 0, 1, 0}};
    for (size_t t = 0; t < 2; t++) {
        const struct cfg *c = &cs[t];
        int N = c->N, K = c->K, T = 400;
        float *X = make_x(T, K, 77 + t), *H = make_h(X, T, K), *W = make_w(N, K, 77 + t);
        float *H2 = fdup(H, (size_t)K * K), *W2 = fdup(W, (size_t)N * K);
        float *D = calloc((size_t)K * K, sizeof(float));
        struct gptq_opts o = opts_of(c), o2 = o;
        o2.method = GPTQ_METHOD_GPTAQ, o2.dxxt = D, o2.gptaq_alpha = 1.0f;
        struct gptq_result a, b;
        assert_int_equal(gptq_quantize(&o, W, N, K, H, &a), 0);
        assert_int_equal(gptq_quantize(&o2, W2, N, K, H2, &b), 0);
        assert_memory_equal(a.q, b.q, (size_t)N * K);
        assert_memory_equal(a.scale, b.scale, sizeof(float) * (size_t)N * a.G);
        assert_memory_equal(a.zero, b.zero, sizeof(int32_t) * (size_t)N * a.G);
        assert_memory_equal(W, W2, sizeof(float) * (size_t)N * K);
        assert_true(a.loss == b.loss);
        gptq_result_free(&a), gptq_result_free(&b);
        free(X), free(H), free(W), free(H2), free(W2), free(D);
    }
}

/* Quantized-model inputs X_q = X_fp + noise. GPTAQ (alpha 1) targets X_fp W^T; plain GPTQ only
 * X_q W^T; so GPTAQ's ||X_fp W^T - X_q W_hat^T||^2 must be lower. */
static void test_gptaq_lowers_asymmetric_error(void **state) {
    (void)state;
    for (int seed = 1; seed <= 3; seed++) {
        int N = 64, K = 160, T = 640;
        float *Xf = make_x(T, K, 500 + seed), *Xq = fdup(Xf, (size_t)T * K);
        uint64_t s = 900 + seed;
        for (long i = 0; i < (long)T * K; i++)
            Xq[i] += 0.3f * fabsf(Xf[i]) * randn(&s);
        float *H = make_h(Xq, T, K), *H2 = fdup(H, (size_t)K * K), *W = make_w(N, K, seed);
        float *W0 = fdup(W, (size_t)N * K), *W2 = fdup(W, (size_t)N * K);
        float *dX = malloc(sizeof(float) * (size_t)T * K),
              *D = malloc(sizeof(float) * (size_t)K * K);
        for (long i = 0; i < (long)T * K; i++)
            dX[i] = Xf[i] - Xq[i];
        /* D[a,b] = (2/T) sum_t dX[t,a] Xq[t,b] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, K, T, 2.0f / (float)T, dX, K, Xq, K,
                    0.0f, D, K);
        struct cfg c = {N, K, 4, 32, 0, seed == 2, 0};
        struct gptq_opts o = opts_of(&c), o2 = o;
        o2.method = GPTQ_METHOD_GPTAQ, o2.dxxt = D, o2.gptaq_alpha = 1.0f;
        struct gptq_result a, b;
        assert_int_equal(gptq_quantize(&o, W, N, K, H, &a), 0);
        assert_int_equal(gptq_quantize(&o2, W2, N, K, H2, &b), 0);
        double eq = out_err(Xf, W0, Xq, W, T, N, K), ea = out_err(Xf, W0, Xq, W2, T, N, K);
        if (!(ea < eq)) print_error("seed %d: gptaq %g gptq %g\n", seed, ea, eq);
        assert_true(ea < eq);
        gptq_result_free(&a), gptq_result_free(&b);
        free(Xf), free(Xq), free(H), free(H2), free(W), free(W0), free(W2), free(dX), free(D);
    }
}

/* ---- robustness ---- */

/* H = (2/T) X^T X with rank 8 < K, minus 3% of its mean diagonal: negative eigenvalues of about
 * -0.03 mean(diag) so 0.01 damping fails and the retry must reach > 0.03. */
static void test_indefinite_retried(void **state) {
    (void)state;
    int N = 16, K = 64, T = 8;
    float *X = make_x(T, K, 4), *H = make_h(X, T, K), *W = make_w(N, K, 4);
    double m = 0;
    for (int k = 0; k < K; k++)
        m += H[(long)k * K + k];
    m /= K;
    for (int k = 0; k < K; k++)
        H[(long)k * K + k] -= (float)(0.03 * m);
    struct cfg c = {N, K, 4, 32, 1, 1, 0};
    struct gptq_opts o = opts_of(&c);
    struct gptq_result r;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
    assert_true(r.damp_retries >= 2 && r.damp_retries <= 4);
    assert_true(fabsf(r.percdamp - (0.01f + 0.01f * (float)r.damp_retries)) < 1e-6f);
    assert_true(r.percdamp > 0.03f);
    for (long i = 0; i < (long)N * K; i++)
        assert_true(isfinite(W[i]));
    gptq_result_free(&r);
    free(X), free(H), free(W);

    /* [[1, 2], [2, 1]] (eigenvalue -1 = -mean diag): beyond a 5-retry limit -> clean error */
    float H2[4] = {1, 2, 2, 1}, W2[4] = {0.1f, -0.2f, 0.3f, 0.4f};
    struct cfg c2 = {2, 2, 4, -1, 1, 0, 0};
    o = opts_of(&c2);
    o.max_damp_retries = 5;
    assert_int_equal(gptq_quantize(&o, W2, 2, 2, H2, &r), -1);
    assert_non_null(strstr(as_last_error(), "hessian: not positive definite"));
    assert_null(r.q);

    /* asymmetric: only the lower triangle is factorised, so H[0,1] != H[1,0] must be caught */
    float H3[4] = {2, 0.5f, 0.1f, 2};
    assert_int_equal(gptq_quantize(&o, W2, 2, 2, H3, &r), -1);
    assert_non_null(
        strstr(as_last_error(), "hessian: not symmetric: H[1, 0] = 0.1 but H[0, 1] = 0.5"));
    assert_null(r.q);
    /* a rounding-level difference is not an asymmetry */
    float H4[4] = {2, 0.5f, 0.5f + 1e-6f, 2};
    assert_int_equal(gptq_quantize(&o, W2, 2, 2, H4, &r), 0);
    gptq_result_free(&r);
}

/* Dead inputs: all of H zero but one entry. Their weights are zeroed before quantization, so
 * their codes are the zero point (dequant exactly 0); the live column is quantized normally. */
static void test_dead_columns(void **state) {
    (void)state;
    int N = 4, K = 8;
    float *W = make_w(N, K, 8), *H = calloc(64, sizeof(float));
    H[3 * K + 3] = 2.0f;
    struct cfg c = {N, K, 4, -1, 0, 1, 0};
    struct gptq_opts o = opts_of(&c);
    struct gptq_result r;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
    assert_int_equal(r.n_dead, 7);
    assert_int_equal(r.perm[0], 3); /* largest diag first, then the dead ones in order */
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            if (k != 3) {
                assert_int_equal(r.q[n * K + k], r.zero[n]);
                assert_true(W[n * K + k] == 0.0f);
            }
    gptq_result_free(&r);
    free(W), free(H);
}

static void test_bad_input(void **state) {
    (void)state;
    int N = 4, K = 8;
    float *W = make_w(N, K, 2), *H = calloc(64, sizeof(float));
    for (int k = 0; k < K; k++)
        H[k * K + k] = 1.0f;
    struct cfg c = {N, K, 4, -1, 1, 0, 0};
    struct gptq_opts o = opts_of(&c);
    struct gptq_result r;
    W[2 * K + 5] = NAN;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), -1);
    assert_non_null(strstr(as_last_error(), "weight: non-finite value nan at [2, 5]"));
    W[2 * K + 5] = 0.5f;
    H[1 * K + 6] = INFINITY;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), -1);
    assert_non_null(strstr(as_last_error(), "hessian: non-finite value inf at [1, 6]"));
    H[1 * K + 6] = 0.0f;
    o.bits = 1;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), -1);
    assert_non_null(strstr(as_last_error(), "bits 1"));
    o.bits = 4, o.blocksize = 0;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), -1);
    assert_non_null(strstr(as_last_error(), "block size"));
    o.blocksize = 128, o.method = GPTQ_METHOD_GPTAQ;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), -1);
    assert_non_null(strstr(as_last_error(), "GPTAQ needs"));
    o.method = GPTQ_METHOD_GPTQ, o.percdamp = -1.0f;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), -1);
    assert_non_null(strstr(as_last_error(), "damping"));
    free(W), free(H);
}

/* ---- numpy oracle ---- */

#define ORACLE "tests/tools/gptq_oracle.py"

/* The oracle needs python3 with numpy (.venv from `make deps`, which tests/run puts first in
 * PATH): without them the oracle tests FAIL, naming what is missing, never skip. */
static int oracle_ok(void) {
    static int ok = -1;
    if (ok < 0)
        ok = access(ORACLE, R_OK) == 0 && system("python3 -c 'import numpy' >/dev/null 2>&1") == 0;
    return ok;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}
static void read_file(const char *dir, const char *name, void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(p, 1, n, f), n);
    fclose(f);
    unlink(path);
}

/* How far a case may differ from the float64 oracle: codes, W_hat elements and scales that
 * differ, and the relative difference of the loss. Zero points always match. */
struct oracle_tol {
    long codes, what, scales;
    double loss;
};
/* Exact: every code, zero point and scale (to 1e-4) and W_hat element (to 1e-6) equal; the loss
 * (a float32 sum) within 2.5e-5 of float64's (measured at most 1.9e-5, +30%). */
static const struct oracle_tol EXACT = {0, 0, 0, 2.5e-5};

static void oracle_case(const struct cfg *c, int method, uint64_t seed,
                        const struct oracle_tol *tol) {
    int N = c->N, K = c->K, G = quant_int_n_groups(K, c->gs), T = 3 * K;
    float *X = make_x(T, K, seed), *H = make_h(X, T, K), *W = make_w(N, K, seed), *D = NULL;
    if (method == GPTQ_METHOD_GPTAQ) {
        uint64_t s = seed;
        D = malloc(sizeof(float) * (size_t)K * K);
        for (long i = 0; i < (long)K * K; i++)
            D[i] = 0.05f * H[i] + 0.01f * randn(&s);
    }
    char dir[] = "/tmp/gptq_oracle_XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct gptq_opts o = opts_of(c);
    o.method = method;
    char meta[256];
    int ml = snprintf(meta, sizeof meta, "%d %d %d %d %d %d %d %.9g %d %d %.9g\n%.9g %d\n", N, K,
                      c->bits, c->gs, c->sym, c->act, c->stat, (double)o.percdamp, o.blocksize,
                      method, (double)o.gptaq_alpha, (double)o.damp_step, o.max_damp_retries);
    write_file(dir, "meta.txt", meta, (size_t)ml);
    write_file(dir, "W.f32", W, sizeof(float) * (size_t)N * K);
    write_file(dir, "H.f32", H, sizeof(float) * (size_t)K * K);
    if (D) write_file(dir, "D.f32", D, sizeof(float) * (size_t)K * K);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "python3 " ORACLE " %s", dir);
    assert_int_equal(system(cmd), 0);

    o.dxxt = D;
    struct gptq_result r;
    assert_int_equal(gptq_quantize(&o, W, N, K, H, &r), 0);
    uint8_t *q = malloc((size_t)N * K);
    float *sc = malloc(sizeof(float) * (size_t)N * G), *wh = malloc(sizeof(float) * (size_t)N * K);
    int32_t *zp = malloc(sizeof(int32_t) * (size_t)N * G),
            *gi = malloc(sizeof(int32_t) * (size_t)K);
    read_file(dir, "q.u8", q, (size_t)N * K);
    read_file(dir, "scale.f32", sc, sizeof(float) * (size_t)N * G);
    read_file(dir, "zero.i32", zp, sizeof(int32_t) * (size_t)N * G);
    read_file(dir, "gidx.i32", gi, sizeof(int32_t) * (size_t)K);
    read_file(dir, "what.f32", wh, sizeof(float) * (size_t)N * K);
    char info[128] = {0};
    double loss, damp;
    int retries;
    char path[600];
    snprintf(path, sizeof path, "%s/info.txt", dir);
    FILE *fi = fopen(path, "r");
    assert_non_null(fi);
    assert_true(fread(info, 1, sizeof info - 1, fi) > 0);
    fclose(fi);
    unlink(path);
    assert_int_equal(sscanf(info, "%lf %lf %d", &loss, &damp, &retries), 3);
    for (const char *n = "meta.txt\0W.f32\0H.f32\0D.f32\0"; *n; n += strlen(n) + 1) {
        snprintf(path, sizeof path, "%s/%s", dir, n);
        unlink(path);
    }
    rmdir(dir);

    long same = 0, close = 0, zsame = 0, ssame = 0;
    for (long i = 0; i < (long)N * K; i++) {
        same += r.q[i] == q[i];
        close += fabsf(W[i] - wh[i]) <= 1e-6f * (1 + fabsf(wh[i]));
    }
    for (long i = 0; i < (long)N * G; i++) {
        zsame += r.zero[i] == zp[i];
        ssame += fabsf(r.scale[i] - sc[i]) <= 1e-4f * fabsf(sc[i]);
    }
    long nk = (long)N * K, ng = (long)N * G;
    double dloss = fabs(r.loss - loss) / loss;
    /* Another BLAS kernel (under valgrind OpenBLAS runs without AVX-512) sums in another order
     * and can flip a code that sits on a rounding boundary: 3 of 5504 seen. Up to 8 such flips
     * are allowed beyond the case's own tolerance; each moves W_hat at that element and the loss
     * (0.35% for those 3), so those allowances grow with the flips actually seen. */
    long flips = nk - same > tol->codes ? nk - same - tol->codes : 0;
    double loss_tol = tol->loss + 2e-3 * (double)flips;
    if (getenv("GPTQ_TEST_VERBOSE") || same < nk - tol->codes - 8 ||
        close < nk - tol->what - flips || zsame < ng || ssame < ng - tol->scales ||
        dloss > loss_tol)
        print_error(
            "oracle cfg N%d K%d b%d g%d sym%d act%d st%d m%d: codes %ld/%ld, W_hat %ld/%ld, "
            "zeros %ld/%ld, scales %ld/%ld equal; loss %.3g, damp %.3g relative\n",
            N, K, c->bits, c->gs, c->sym, c->act, c->stat, method, same, nk, close, nk, zsame, ng,
            ssame, ng, dloss, fabs(r.damp - damp) / damp);
    assert_true(same >= nk - tol->codes - 8);
    assert_true(close >= nk - tol->what - flips);
    assert_true(zsame == ng);
    assert_true(ssame >= ng - tol->scales);
    assert_memory_equal(r.g_idx, gi, sizeof(int32_t) * (size_t)K);
    assert_int_equal(r.damp_retries, retries);
    /* damp = percdamp * mean(diag H), a float32 value: within float32's resolution (2^-24 =
     * 6e-8; measured <= 3e-9) */
    assert_true(fabs(r.damp - damp) <= 1e-7 * damp);
    assert_true(dloss <= loss_tol);
    gptq_result_free(&r);
    free(X), free(H), free(W), free(D), free(q), free(sc), free(wh), free(zp), free(gi);
}

static void test_oracle_gptq(void **state) {
    (void)state;
    if (!oracle_ok())
        fail_msg("python3 with numpy or " ORACLE
                 " missing (make deps; tests/run puts .venv in PATH)");
    const struct cfg cs[] = {
        {32, 256, 4, 128, 1, 0, 0}, {32, 172, 4, 32, 0, 1, 0}, {32, 172, 3, 32, 1, 1, 1},
        {24, 200, 2, -1, 0, 1, 0},  {24, 192, 8, 64, 1, 0, 0}, {24, 150, 4, 50, 0, 0, 1},
    };
    /* Case 1 (asymmetric, act-order, dynamic groups of 32 over K = 172) is the one that is not
     * exact: float32 vs float64 rounding flips a code at a near tie, and GPTQ's error feedback
     * carries that into later columns of its row. Measured: 14 of 5504 codes, 46 W_hat elements
     * and 2 of 192 scales differ, loss 3.9e-4 relative; allowed +30%. */
    const struct oracle_tol near = {18, 60, 3, 5e-4};
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++)
        oracle_case(&cs[t], GPTQ_METHOD_GPTQ, 60 + t, t == 1 ? &near : &EXACT);
}

static void test_oracle_gptaq(void **state) {
    (void)state;
    if (!oracle_ok())
        fail_msg("python3 with numpy or " ORACLE
                 " missing (make deps; tests/run puts .venv in PATH)");
    const struct cfg cs[] = {{32, 172, 4, 32, 1, 0, 0}, {24, 200, 4, 64, 0, 1, 0}};
    for (size_t t = 0; t < 2; t++)
        oracle_case(&cs[t], GPTQ_METHOD_GPTAQ, 80 + t, &EXACT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diag_h_is_rtn),
        cmocka_unit_test(test_diag_h_actorder_dynamic),
        cmocka_unit_test(test_blocked_equals_columnwise),
        cmocka_unit_test(test_gptaq_blocked_equals_columnwise),
        cmocka_unit_test(test_factor_reverse),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_gptaq_zero_dxxt_is_gptq),
        cmocka_unit_test(test_gptaq_lowers_asymmetric_error),
        cmocka_unit_test(test_indefinite_retried),
        cmocka_unit_test(test_dead_columns),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_oracle_gptq),
        cmocka_unit_test(test_oracle_gptaq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
