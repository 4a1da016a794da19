/* test_kernel_ternary: the packed ternary / 2-bit kernels (kernel_ternary.c).
 *
 * Every fast kernel (AVX2, AVX-512 VNNI: those the CPU has) must equal the scalar reference bit
 * for bit (their integer sums are the same, and so is the float finish) on random codes and
 * activations and on the edges: all codes at the top level against all activations at +127 /
 * -127 (the largest sums, where an int16 pair sum would saturate if the kernel summed too much
 * in 16 bits), an all-zero token (d = 0), rows whose K leaves a tail of 32, 64 and 96 after the
 * 128-chunks (SEQ2, SHERRY), and SmolLM2 / 0.7B shapes. GEMM for M = 1..6 tokens equals M GEMVs.
 * The reference itself is held to an independent double-precision sum over the dequantized
 * weights (as_tern_dequant) times the dequantized activations q * d. The dense f32 / bf16
 * baseline: AVX2 equals its reference bit for bit, and both are within 1e-5 of a double sum. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kernel_ternary.h"
#include "pack_ternary.h"
#include "qlinear.h"

static uint64_t rs = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}
static float urand(void) {
    return (float)(rnd() % 2000001) / 1000000.0f - 1.0f;
}

enum fill { RANDOM, TOP };

static uint8_t *make_packed(enum as_tern_fmt f, int N, int K, enum fill fill) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    uint8_t *c = malloc((size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++)
        c[i] = fill == TOP ? (uint8_t)(L->levels - 1) : (uint8_t)(rnd() % (unsigned)L->levels);
    if (f == AS_TF_SHERRY)
        for (size_t i = 0; i < (size_t)N * K; i += 4) {
            int z = fill == TOP ? 0 : (int)(rnd() % 4);
            for (int p = 0; p < 4; p++)
                c[i + p] = p == z ? 1 : (fill == TOP || rnd() & 1 ? 2 : 0);
        }
    size_t ns = as_tern_scale_count(f, N, K);
    float *s = malloc(ns * 4);
    for (size_t i = 0; i < ns; i++)
        s[i] = as_f16_to_f32(as_f32_to_f16(0.01f + 0.05f * fabsf(urand())));
    uint8_t *p = malloc(as_tern_packed_bytes(f, N, K));
    assert_int_equal(as_tern_pack(f, "t", N, K, c, s, p), 0);
    free(c);
    free(s);
    return p;
}

/* Every fast kernel against the reference on the packed matrix p (freed here). */
static void check_mat(enum as_tern_fmt f, int N, int K, uint8_t *p, int xkind) {
    struct as_tern_matrix W = {f, N, K, p};
    enum { MT = 6 };
    struct as_act8 a[MT];
    float *x = malloc((size_t)K * 4);
    for (int m = 0; m < MT; m++) {
        for (int k = 0; k < K; k++)
            x[k] = xkind == 0 ? urand() * (m + 1) : xkind == 1 ? 3.0f : xkind == 2 ? -2.0f : 0.0f;
        as_act8_init(&a[m], f, K);
        as_act8_quantize(&a[m], x);
    }
    float *yr = malloc((size_t)N * MT * 4), *yf = malloc((size_t)N * MT * 4);
    for (int m = 0; m < MT; m++)
        as_tern_gemv(AS_ISA_REF, &W, &a[m], yr + (size_t)m * N, 0, N);
    /* the reference against a double sum of dequantized weights and activations */
    float *w = malloc((size_t)N * K * 4);
    as_tern_dequant(f, N, K, p, w);
    for (int m = 0; m < MT; m++)
        for (int r = 0; r < N; r++) {
            double s = 0, sa = 0;
            for (int k = 0; k < K; k++) {
                s += (double)w[(size_t)r * K + k] * a[m].q[k] * a[m].d;
                sa += fabs((double)w[(size_t)r * K + k] * a[m].q[k] * a[m].d);
            }
            double got = yr[(size_t)m * N + r];
            if (fabs(got - s) > 1e-5 * sa + 1e-30) {
                fprintf(stderr, "%s N=%d K=%d row %d token %d: ref %.9g, double %.9g\n",
                        as_tern_layouts[f].name, N, K, r, m, got, s);
                fail();
            }
        }
    for (int isa = AS_ISA_AVX2; isa < AS_ISA_COUNT; isa++) {
        if (!as_kernel_isa_supported(isa)) continue;
        memset(yf, 0xAB, (size_t)N * MT * 4);
        for (int m = 0; m < MT; m++)
            as_tern_gemv(isa, &W, &a[m], yf + (size_t)m * N, 0, N);
        if (memcmp(yr, yf, (size_t)N * MT * 4)) {
            for (size_t i = 0; i < (size_t)N * MT; i++)
                if (memcmp(&yr[i], &yf[i], 4)) {
                    fprintf(stderr, "%s %s gemv N=%d K=%d at %zu: %.9g vs ref %.9g\n",
                            as_isa_names[isa], as_tern_layouts[f].name, N, K, i, yf[i], yr[i]);
                    break;
                }
            fail();
        }
        for (int M = 1; M <= MT; M++) {
            memset(yf, 0xAB, (size_t)N * MT * 4);
            /* rows split in two calls, as threads would */
            as_tern_gemm(isa, &W, a, M, yf, 0, N / 2);
            as_tern_gemm(isa, &W, a, M, yf, N / 2, N);
            assert_memory_equal(yr, yf, (size_t)N * M * 4);
        }
    }
    for (int M = 1; M <= 3; M++) {
        memset(yf, 0xAB, (size_t)N * MT * 4);
        as_tern_gemm(AS_ISA_REF, &W, a, M, yf, 0, N);
        assert_memory_equal(yr, yf, (size_t)N * M * 4);
    }
    for (int m = 0; m < MT; m++)
        as_act8_free(&a[m]);
    free(x), free(yr), free(yf), free(w), free(p);
}

static void check_one(enum as_tern_fmt f, int N, int K, enum fill wfill, int xkind) {
    check_mat(f, N, K, make_packed(f, N, K, wfill), xkind);
}

/* TQ1_0 from raw bytes: over the 256 blocks of 16 rows x 4096, every qs and qh byte position
 * takes all 256 byte values (the 243 that ggml's quantizer writes, and the 13 above, which its
 * decoder reads all the same), qh bytes included (4 trits; the 5th is not a weight). The AVX-512
 * kernel sums trits without decoding them ((3 y_n - y_n+1) / 256, kernel_ternary_simd.h): any
 * byte value where that identity and the decoder disagreed would show here. */
static void test_tq1_bytes(void **state) {
    (void)state;
    const int N = 16, K = 4096, nb = K / 256;
    for (int xk = 0; xk <= 2; xk++) {
        uint8_t *p = malloc(as_tern_packed_bytes(AS_TF_TQ1_0, N, K));
        for (int t = 0; t < N * nb; t++) {
            as_block_tq1_0 b;
            for (int i = 0; i < 48; i++)
                b.qs[i] = (uint8_t)(t + 7 * i + 3 * xk);
            for (int j = 0; j < 4; j++)
                b.qh[j] = (uint8_t)(t + 11 * j + 5 * xk);
            b.d = as_f32_to_f16(0.01f + 0.001f * (float)(t % 13));
            memcpy(p + (size_t)t * sizeof b, &b, sizeof b);
        }
        check_mat(AS_TF_TQ1_0, N, K, p, xk);
    }
}

static void test_random(void **state) {
    (void)state;
    /* N = 1, 2: one row (no pair for the two-row pass), a pair split 1 + 1 */
    const int shapes[][2] = {{5, 256}, {3, 512}, {7, 1536}, {1, 256}, {2, 4096}};
    for (int f = 0; f < AS_TF_COUNT; f++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            check_one(f, shapes[i][0], shapes[i][1], RANDOM, 0);
}

static void test_edges(void **state) {
    (void)state;
    for (int f = 0; f < AS_TF_COUNT; f++)
        for (int xk = 1; xk <= 3; xk++)
            check_one(f, 3, 4096, TOP, xk);
}

static void test_tails(void **state) {
    (void)state;
    for (int f = AS_TF_SEQ2; f <= AS_TF_SHERRY; f++)
        for (int K = 32; K <= 576; K += 32)
            check_one(f, 4, K, RANDOM, 0);
    check_one(AS_TF_I2_S, 4, 128 * 9, RANDOM, 0);
}

/* SEQ2's four-row pass (and the two-row pass it replaced, as_tern_seq2_rows = 2) against the
 * reference: N not a multiple of 4 (the rows left after the passes, and check_mat's split at
 * N / 2 starts a pass on an odd row), every K up to 576 (tails of 1, 2, 3 blocks), SmolLM2 / 0.7B
 * widths, and the edges: top codes against +127 / -127 activations, an all-zero token. */
static void test_seq2_passes(void **state) {
    (void)state;
    const int Ns[] = {4, 5, 6, 7, 9, 13, 32}, Ks[] = {576, 1536, 4096};
    for (int rows = 4; rows >= 2; rows -= 2) {
        as_tern_seq2_rows = rows;
        for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++)
            for (int K = 32; K <= 576; K += 32)
                check_one(AS_TF_SEQ2, Ns[i], K, RANDOM, 0);
        for (size_t i = 0; i < sizeof Ks / sizeof Ks[0]; i++) {
            check_one(AS_TF_SEQ2, 11, Ks[i], RANDOM, 0);
            for (int xk = 1; xk <= 3; xk++)
                check_one(AS_TF_SEQ2, 7, Ks[i], TOP, xk);
        }
        for (int xk = 1; xk <= 3; xk++)
            check_one(AS_TF_SEQ2, 6, 544, TOP, xk);
    }
    as_tern_seq2_rows = 4;
}

static void test_dense(void **state) {
    (void)state;
    const int N = 9, K = 576;
    float *wf = malloc((size_t)N * K * 4), *x = malloc((size_t)K * 4);
    uint16_t *wb = malloc((size_t)N * K * 2);
    for (int i = 0; i < N * K; i++) {
        wb[i] = as_f32_to_bf16(urand());
        wf[i] = urand();
    }
    for (int k = 0; k < K; k++)
        x[k] = urand();
    for (int bf = 0; bf < 2; bf++) {
        struct as_dense_matrix W = {N, K, bf, bf ? (const void *)wb : (const void *)wf};
        float yr[9], yf[9];
        as_dense_gemv(AS_ISA_REF, &W, x, yr, 0, N);
        for (int r = 0; r < N; r++) {
            double s = 0, sa = 0;
            for (int k = 0; k < K; k++) {
                double wv = bf ? as_bf16_to_f32(wb[r * K + k]) : wf[r * K + k];
                s += wv * x[k];
                sa += fabs(wv * x[k]);
            }
            assert_true(fabs(yr[r] - s) <= 1e-5 * sa);
        }
        for (int isa = AS_ISA_AVX2; isa < AS_ISA_COUNT; isa++) {
            if (!as_kernel_isa_supported(isa)) continue;
            as_dense_gemv(isa, &W, x, yf, 0, N);
            assert_memory_equal(yr, yf, sizeof yr);
        }
    }
    free(wf), free(wb), free(x);
}

/* qlinear: T tokens (4 at a time through the GEMM) plus bias equal per-token GEMVs plus bias. */
static void test_qlin_apply(void **state) {
    (void)state;
    const int N = 40, K = 576, T = 7;
    uint8_t *p = make_packed(AS_TF_SEQ2, N, K, RANDOM);
    struct as_qlin q = {{AS_TF_SEQ2, N, K, p}, as_kernel_isa_best(), NULL};
    float *x = malloc((size_t)T * K * 4), *y = malloc((size_t)T * N * 4), bias[40];
    for (int i = 0; i < T * K; i++)
        x[i] = urand();
    for (int r = 0; r < N; r++)
        bias[r] = urand();
    as_qlin_apply(&q, x, T, y, bias);
    struct as_act8 a;
    as_act8_init(&a, AS_TF_SEQ2, K);
    float want[40];
    for (int t = 0; t < T; t++) {
        as_act8_quantize(&a, x + (size_t)t * K);
        as_tern_gemv(AS_ISA_REF, &q.W, &a, want, 0, N);
        for (int r = 0; r < N; r++)
            assert_true(y[(size_t)t * N + r] == want[r] + bias[r]);
    }
    as_act8_free(&a);
    free(x), free(y), free(p);
}

/* as_qlin_apply_par's runners: every part on its own thread (the engine's pool does this), and
 * all parts on the caller, last part first (a split that missed or repeated rows would show). */
struct part_arg {
    as_qlin_part_fn fn;
    void *arg;
    int part, n;
};
static void *part_thread(void *p) {
    struct part_arg *a = p;
    a->fn(a->arg, a->part, a->n);
    return NULL;
}
static int runs; /* runner calls: the split must really happen */
static void run_threads(as_qlin_part_fn fn, void *arg, int max_parts) {
    enum { MAXT = 8 };
    runs++;
    int n = max_parts < MAXT ? max_parts : MAXT;
    pthread_t th[MAXT];
    struct part_arg pa[MAXT];
    for (int i = 0; i < n; i++)
        pa[i] = (struct part_arg){fn, arg, i, n};
    for (int i = 1; i < n; i++)
        assert_int_equal(pthread_create(&th[i], NULL, part_thread, &pa[i]), 0);
    fn(arg, 0, n);
    for (int i = 1; i < n; i++)
        pthread_join(th[i], NULL);
}
static void run_reversed(as_qlin_part_fn fn, void *arg, int max_parts) {
    runs++;
    for (int i = max_parts; i-- > 0;)
        fn(arg, i, max_parts);
}

/* The rows split over threads: bit for bit what one part gives (each row's kernel calls are the
 * same whatever the split), with a bias and T = 7 tokens (4 + 3 through the GEMM): 1.2M
 * multiply-adds, above as_qlin_apply_par's threshold for splitting; one token is below it and
 * runs on the caller. */
static void test_qlin_apply_par(void **state) {
    (void)state;
    const int N = 300, K = 576, T = 7;
    for (int f = 0; f < AS_TF_COUNT; f++) {
        if (as_tern_row_bytes((enum as_tern_fmt)f, K) == 0) continue; /* TQ: 576 not 256-blocks */
        uint8_t *p = make_packed((enum as_tern_fmt)f, N, K, RANDOM);
        struct as_qlin q = {{(enum as_tern_fmt)f, N, K, p}, as_kernel_isa_best(), NULL};
        float *x = malloc((size_t)T * K * 4), *y = malloc((size_t)T * N * 4),
              *z = malloc((size_t)T * N * 4), bias[300];
        for (int i = 0; i < T * K; i++)
            x[i] = urand();
        for (int r = 0; r < N; r++)
            bias[r] = urand();
        as_qlin_apply(&q, x, T, y, bias);
        memset(z, 0xff, (size_t)T * N * 4);
        as_qlin_apply_par(&q, x, T, z, bias, run_threads);
        assert_memory_equal(y, z, (size_t)T * N * 4);
        memset(z, 0xff, (size_t)T * N * 4);
        as_qlin_apply_par(&q, x, T, z, bias, run_reversed);
        assert_memory_equal(y, z, (size_t)T * N * 4);
        assert_int_equal(runs, 2);
        as_qlin_apply_par(&q, x, 1, z, bias, run_threads); /* 0.17M: not split */
        assert_memory_equal(y, z, (size_t)N * 4);
        assert_int_equal(runs, 2);
        runs = 0;
        free(x), free(y), free(z), free(p);
    }
}

int main(void) {
    for (int i = 0; i < AS_ISA_COUNT; i++)
        printf("# kernel ISA %s: %s\n", as_isa_names[i],
               as_kernel_isa_supported(i) ? "compared" : "not on this CPU");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),         cmocka_unit_test(test_edges),
        cmocka_unit_test(test_tq1_bytes),      cmocka_unit_test(test_tails),
        cmocka_unit_test(test_dense),          cmocka_unit_test(test_qlin_apply),
        cmocka_unit_test(test_qlin_apply_par), cmocka_unit_test(test_seq2_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
