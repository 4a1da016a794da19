/* test_kernel_lut: the table-lookup GEMV (kernel_lut.c) against kernel_ternary's scalar reference.
 *
 * For SHERRY and TQ1_0, the LUT GEMV (scalar and AVX-512, where the CPU has it) must equal
 * as_tern_gemv(AS_ISA_REF) bit for bit: on random codes and activations; on every pattern at every
 * group position; on the largest sums (every group at +1 +1 +1 against activations all +127, and
 * -1 -1 -1 against all -128 for SHERRY, which as_act8_quantize never makes but the int16 bound
 * holds for: 84 groups of 384 per segment; TQ1_0's block bound is 256 * 127); on an all-zero token
 * (d = 0); for N that leave a partial tile (1, 31, 33, 100) and rows split at places that are
 * not tile boundaries, as threads split them; and K from 32 to 4096 (SHERRY tails of 1 and 2
 * groups past a triple, more than one int16 segment). The two table builds (scalar, vpdpbusd)
 * give the same tables. The AVX-512 activation quantizer (kernel_ternary.c) gives the scalar
 * one's bytes, plane order and sums, on ties (x * 127 / amax = n + 0.5), NaN, infinities, zeros
 * and K with a partial last 16 / 32 / 256. The engine's linear (qlinear.c) with its LUT copy gives
 * what it gives without, for one token (rows split over parts) and for three (GEMM). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kernel_lut.h"
#include "kernel_ternary.h"
#include "pack_ternary.h"
#include "qlinear.h"

static uint64_t rs = 0x13198A2E03707344ull;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}
static float urand(void) {
    return (float)(rnd() % 2000001) / 1000000.0f - 1.0f;
}

enum wfill { W_RANDOM, W_ALL_PATTERNS, W_TOP };

/* Codes [N,K] of format f, packed. W_ALL_PATTERNS: SHERRY group g of row r is pattern
 * (r + 7 g) % 32, TQ1_0 trits count up through all 27 triples; W_TOP: even rows +1 everywhere but
 * the first lane of a quad, odd rows -1 (TQ1_0: all +1, all -1). */
static uint8_t *make_packed(enum as_tern_fmt f, int N, int K, enum wfill fill) {
    uint8_t *c = malloc((size_t)N * K);
    for (int r = 0; r < N; r++)
        for (int k = 0; k < K; k++) {
            uint8_t *q = c + (size_t)r * K + k;
            if (f == AS_TF_SHERRY && k % 4 == 0) {
                int pat = fill == W_RANDOM         ? (int)(rnd() % 32)
                          : fill == W_ALL_PATTERNS ? (r + 7 * (k / 4)) % 32
                                                   : (r % 2 ? 16 : 0);
                for (int p = 0; p < 4; p++)
                    q[p] = as_sherry_codebook[pat] >> (2 * p) & 3;
            } else if (f == AS_TF_TQ1_0) {
                static const int pow3[3] = {1, 3, 9};
                const int pat = (r + k / 3) % 27; /* group k / 3 of row r */
                *q = fill == W_RANDOM         ? (uint8_t)(rnd() % 3)
                     : fill == W_ALL_PATTERNS ? (uint8_t)(pat / pow3[k % 3] % 3)
                                              : (uint8_t)(r % 2 ? 0 : 2);
            }
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

enum xfill { X_RANDOM, X_PLUS, X_MINUS128, X_ZERO };

static void make_act(struct as_act8 *a, enum as_tern_fmt f, int K, enum xfill xk) {
    float *x = malloc((size_t)K * 4);
    for (int k = 0; k < K; k++)
        x[k] = xk == X_RANDOM ? urand() : xk == X_ZERO ? 0.0f : 2.5f;
    as_act8_init(a, f, K);
    as_act8_quantize(a, x); /* X_PLUS: every q = +127 */
    if (xk == X_MINUS128) { /* beyond the quantizer's range: the int16 bound's worst case */
        memset(a->q, 0x80, (size_t)K);
        a->total = -128 * K;
        for (int b = 0; b < K / 256; b++)
            a->sum256[b] = -128 * 256;
    }
    free(x);
}

static void check(enum as_tern_fmt f, int N, int K, enum wfill wf, enum xfill xk) {
    uint8_t *p = make_packed(f, N, K, wf);
    struct as_tern_matrix W = {f, N, K, p};
    struct as_act8 a;
    make_act(&a, f, K, xk);
    float *yr = malloc((size_t)N * 4), *y = malloc((size_t)N * 4);
    as_tern_gemv(AS_ISA_REF, &W, &a, yr, 0, N);
    struct as_lut_matrix L;
    as_lut_repack(&W, &L);
    struct as_lut_act t, t2;
    as_lut_act_init(&t, f, K);
    as_lut_act_init(&t2, f, K);
    as_lut_act_build(AS_ISA_REF, &t, &a);
    const int splits[][2] = {{0, N}, {0, N / 3}, {N / 3, N - N / 5}, {N - N / 5, N}};
    for (int isa = AS_ISA_REF; isa < AS_ISA_COUNT; isa++) {
        if (!as_kernel_isa_supported(isa)) continue;
        as_lut_act_build(isa, &t2, &a);
        assert_memory_equal(t.T, t2.T, (size_t)t.groups * 64);
        memset(y, 0xAB, (size_t)N * 4);
        for (size_t s = 1; s < 4; s++) /* three calls over the rows, as threads */
            as_lut_gemv(isa, &L, &t2, y, splits[s][0], splits[s][1]);
        if (memcmp(yr, y, (size_t)N * 4)) {
            for (int r = 0; r < N; r++)
                if (memcmp(&yr[r], &y[r], 4)) {
                    fprintf(stderr, "%s LUT %s N=%d K=%d fill %d/%d row %d: %.9g vs ref %.9g\n",
                            as_isa_names[isa], as_tern_layouts[f].name, N, K, wf, xk, r, y[r],
                            yr[r]);
                    break;
                }
            fail();
        }
        memset(y, 0xAB, (size_t)N * 4);
        as_lut_gemv(isa, &L, &t2, y, splits[0][0], splits[0][1]);
        assert_memory_equal(yr, y, (size_t)N * 4);
    }
    as_lut_act_free(&t);
    as_lut_act_free(&t2);
    as_lut_free(&L);
    as_act8_free(&a);
    free(yr), free(y), free(p);
}

static void test_random(void **state) {
    (void)state;
    const int Ns[] = {1,   31,  32, 33,
                      100, 160, 300}; /* 300: a split starting inside a block of 4 tiles */
    for (size_t i = 0; i < sizeof Ns / sizeof *Ns; i++) {
        for (int K = 32; K <= 608; K += 32)
            check(AS_TF_SHERRY, Ns[i], K, W_RANDOM, X_RANDOM);
        check(AS_TF_SHERRY, Ns[i], 1536, W_RANDOM, X_RANDOM);
        check(AS_TF_SHERRY, Ns[i], 4096, W_RANDOM, X_RANDOM);
        for (int K = 256; K <= 1536; K += 256)
            check(AS_TF_TQ1_0, Ns[i], K, W_RANDOM, X_RANDOM);
        check(AS_TF_TQ1_0, Ns[i], 4096, W_RANDOM, X_RANDOM);
    }
}

static void test_patterns(void **state) {
    (void)state;
    for (int xk = X_RANDOM; xk <= X_ZERO; xk++) {
        check(AS_TF_SHERRY, 64, 1536, W_ALL_PATTERNS, xk);
        check(AS_TF_SHERRY, 33, 96, W_ALL_PATTERNS, xk);
        check(AS_TF_TQ1_0, 64, 1536, W_ALL_PATTERNS, xk);
        check(AS_TF_TQ1_0, 33, 256, W_ALL_PATTERNS, xk);
    }
}

static void test_extremes(void **state) {
    (void)state;
    for (int xk = X_PLUS; xk <= X_ZERO; xk++) {
        check(AS_TF_SHERRY, 70, 4096, W_TOP, xk);
        check(AS_TF_SHERRY, 4, 352, W_TOP, xk); /* 88 groups: two segments, the second short */
        /* TQ1_0's block sum is 256 * 127 at most; 256 * 128 would not fit int16 (kernel_lut.h:
         * activations in the quantizer's range -127..127) */
        if (xk != X_MINUS128) check(AS_TF_TQ1_0, 70, 4096, W_TOP, xk);
    }
}

static void check_quantize(enum as_tern_fmt f, int K, const float *x) {
    struct as_act8 r, v;
    as_act8_init(&r, f, K);
    as_act8_init(&v, f, K);
    as_act8_quantize_isa(AS_ISA_REF, &r, x);
    as_act8_quantize_isa(AS_ISA_AVX512, &v, x);
    const size_t qp = f == AS_TF_TQ1_0
                          ? ((size_t)K + 255) / 256 * 448 + 64
                          : ((size_t)K + 255) / 256 * 256; /* kernel_ternary qp_bytes */
    assert_memory_equal(&r.d, &v.d, sizeof r.d);
    assert_memory_equal(r.q, v.q, (size_t)K);
    assert_memory_equal(r.qp, v.qp, qp);
    assert_memory_equal(r.sum32, v.sum32, ((size_t)K / 32 + 1) * 4);
    assert_memory_equal(r.sum256, v.sum256, ((size_t)K / 256 + 1) * 4);
    assert_int_equal(r.total, v.total);
    as_act8_free(&r);
    as_act8_free(&v);
}

static void test_quantize(void **state) {
    (void)state;
    if (!as_kernel_isa_supported(AS_ISA_AVX512)) return; /* main() prints the ISAs compared */
    const int Ks[] = {32, 96, 100, 256, 576, 1536, 4000, 4096};
    float *x = malloc(4096 * 4);
    for (int f = 0; f < AS_TF_COUNT; f++)
        for (size_t i = 0; i < sizeof Ks / sizeof *Ks; i++) {
            const int K = Ks[i];
            for (int kind = 0; kind < 5; kind++) {
                for (int k = 0; k < K; k++)
                    x[k] = kind == 0   ? urand() * 3.0f
                           : kind == 1 ? (float)(k % 255 - 127) + 0.5f * (k % 3 == 0) /* ties */
                           : kind == 2 ? 0.0f
                           : kind == 3 ? (k % 7 ? urand() : NAN)
                                       : (k % 11 ? urand() : (k % 2 ? INFINITY : -INFINITY));
                if (kind == 1) x[K / 2] = 127.0f; /* amax 127: scale 1, the .5 stay ties */
                check_quantize((enum as_tern_fmt)f, K, x);
            }
        }
    free(x);
}

/* the engine pool's contract: parts 0..n-1, here run last first on the caller */
static int parts_run;
static void run_reversed(as_qlin_part_fn fn, void *arg, int max_parts) {
    const int n = max_parts < 5 ? max_parts : 5;
    parts_run = n;
    for (int i = n; i-- > 0;)
        fn(arg, i, n);
}

static void test_qlin(void **state) {
    (void)state;
    if (!as_kernel_isa_supported(AS_ISA_AVX512)) return; /* main() prints the ISAs compared */
    const int N = 300, K = 4096, T = 3;
    const enum as_tern_fmt fmts[] = {AS_TF_SHERRY, AS_TF_TQ1_0};
    for (int i = 0; i < 2; i++) {
        uint8_t *p = make_packed(fmts[i], N, K, W_RANDOM);
        struct as_qlin plain = {{fmts[i], N, K, p}, AS_ISA_AVX512, NULL};
        struct as_qlin lut = plain;
        as_qlin_use_lut(&lut);
        assert_non_null(lut.lut);
        float *x = malloc((size_t)T * K * 4), *y = malloc((size_t)T * N * 4),
              *z = malloc((size_t)T * N * 4), bias[300];
        for (int k = 0; k < T * K; k++)
            x[k] = urand();
        for (int r = 0; r < N; r++)
            bias[r] = urand();
        for (int t = 1; t <= T; t += 2) {
            as_qlin_apply(&plain, x, t, y, bias);
            memset(z, 0xAB, (size_t)T * N * 4);
            parts_run = 0;
            as_qlin_apply_par(&lut, x, t, z, bias, run_reversed);
            assert_true(parts_run > 1); /* 1.2M multiply-adds: split */
            assert_memory_equal(y, z, (size_t)t * N * 4);
        }
        as_lut_free(lut.lut);
        free(lut.lut);
        free(x), free(y), free(z), free(p);
    }
}

int main(void) {
    for (int i = 0; i < AS_ISA_COUNT; i++)
        printf("# kernel ISA %s: %s\n", as_isa_names[i],
               as_kernel_isa_supported(i) ? "compared" : "not on this CPU");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),   cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_extremes), cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_qlin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
