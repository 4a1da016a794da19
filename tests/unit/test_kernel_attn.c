/* test_kernel_attn: the flash-style prefill attention (kernel_attn.c) against an independent
 * oracle: dense masked softmax in double precision over the token-level mask (causal, and for
 * the block-sparse variant the block mask expanded to tokens), written out plainly here.
 *  - dense causal GQA, scalar and AVX2, for query counts that are and are not tile multiples,
 *    first fills and continued fills (pos0 > 0), head dims 8/12/64: equal to 1e-5.
 *  - block-sparse, random masks at several densities (with and without the diagonal block)
 *    for block sizes 16/32/64/128: equal to 1e-5; the all-ones mask equals the dense path.
 *  - any split into parts gives bit-identical outputs.
 *  - errors: a mask with pos0 > 0, a mask that does not cover the sequence. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "kernel_attn.h"

static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float urand(uint64_t *s) { /* [-1, 1) */
    return (float)((double)(rng(s) >> 11) / 4503599627370496.0) - 1.0f;
}

struct prob {
    int T, pos0, H, G, hd;
    float *q, *k, *v;
};

/* Q, K, V with a spread of score scales (some heads peaky) so the softmax is not flat. */
static struct prob make(int T, int pos0, int H, int G, int hd, uint64_t seed) {
    struct prob p = {T, pos0, H, G, hd, NULL, NULL, NULL};
    int n = pos0 + T;
    p.q = malloc(sizeof(float) * (size_t)T * H * hd);
    p.k = malloc(sizeof(float) * (size_t)n * G * hd);
    p.v = malloc(sizeof(float) * (size_t)n * G * hd);
    for (long i = 0; i < (long)T * H * hd; i++)
        p.q[i] = urand(&seed) * (1.0f + 3.0f * (float)((i / hd) % H) / H);
    for (long i = 0; i < (long)n * G * hd; i++)
        p.k[i] = urand(&seed) * 2.0f, p.v[i] = urand(&seed);
    return p;
}
static void drop(struct prob *p) {
    free(p->q), free(p->k), free(p->v);
}

/* o[T, H*hd] by dense masked softmax in double; keep == NULL: causal only. */
static void oracle(const struct prob *p, const struct as_block_mask *m, double *o) {
    int hd = p->hd, kvd = p->G * hd, qd = p->H * hd, n = p->pos0 + p->T;
    double *s = malloc(sizeof(double) * (size_t)n);
    for (int h = 0; h < p->H; h++) {
        int g = h / (p->H / p->G);
        for (int t = 0; t < p->T; t++) {
            int i = p->pos0 + t;
            double mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                int ok = j <= i;
                if (ok && m)
                    ok = m->keep[((size_t)h * m->nqb + i / m->block) * m->nkb + j / m->block];
                if (!ok) {
                    s[j] = -INFINITY;
                    continue;
                }
                double d = 0;
                for (int c = 0; c < hd; c++)
                    d += (double)p->q[(size_t)t * qd + h * hd + c] *
                         p->k[(size_t)j * kvd + g * hd + c];
                s[j] = d / sqrt((double)hd);
                if (s[j] > mx) mx = s[j];
            }
            double sum = 0;
            for (int j = 0; j < n; j++)
                sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
            for (int c = 0; c < hd; c++) {
                double acc = 0;
                for (int j = 0; j < n; j++)
                    if (s[j] != -INFINITY)
                        acc += exp(s[j] - mx) * p->v[(size_t)j * kvd + g * hd + c];
                o[(size_t)t * qd + h * hd + c] = sum > 0 ? acc / sum : 0.0;
            }
        }
    }
    free(s);
}

static float *run(const struct prob *p, const struct as_block_mask *m, enum as_attn_impl impl,
                  int parts) {
    int qd = p->H * p->hd;
    float *o = malloc(sizeof(float) * (size_t)p->T * qd);
    for (long i = 0; i < (long)p->T * qd; i++)
        o[i] = NAN; /* every output must be written */
    struct as_attn_args a = {p->q,
                             p->k,
                             p->v,
                             o,
                             p->T,
                             p->pos0,
                             p->H,
                             p->G,
                             p->hd,
                             qd,
                             p->G * p->hd,
                             qd,
                             1.0f / sqrtf((float)p->hd),
                             m};
    as_attn_impl = impl;
    assert_int_equal(as_attn_check(&a), 0);
    for (int i = 0; i < parts; i++)
        as_attn_part(&a, i, parts);
    as_attn_impl = AS_ATTN_AUTO;
    return o;
}

static double max_err(const float *a, const double *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i]));
        if (!(d <= w)) w = d;
    }
    return w;
}

static void check(const struct prob *p, const struct as_block_mask *m) {
    size_t n = (size_t)p->T * p->H * p->hd;
    double *ref = malloc(sizeof(double) * n);
    oracle(p, m, ref);
    float *s = run(p, m, AS_ATTN_SCALAR, 1);
    double es = max_err(s, ref, n);
    if (es > 1e-5) fail_msg("scalar T=%d pos0=%d hd=%d: err %g", p->T, p->pos0, p->hd, es);
    if (as_attn_have_avx2()) {
        float *v = run(p, m, AS_ATTN_AVX2, 1);
        double ev = max_err(v, ref, n);
        if (ev > 1e-5) fail_msg("avx2 T=%d pos0=%d hd=%d: err %g", p->T, p->pos0, p->hd, ev);
        free(v);
    }
    free(s), free(ref);
}

static void test_dense(void **st) {
    (void)st;
    static const int shapes[][5] = {/* T, pos0, H, G, hd */
                                    {1, 0, 2, 1, 8},    {5, 0, 4, 2, 8},    {64, 0, 4, 2, 64},
                                    {100, 0, 3, 3, 64}, {257, 0, 4, 1, 64}, {70, 37, 4, 2, 64},
                                    {1, 130, 2, 2, 16}, {33, 0, 2, 1, 12},  {130, 65, 2, 1, 24}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        struct prob p = make(s[0], s[1], s[2], s[3], s[4], 100 + i);
        check(&p, NULL);
        drop(&p);
    }
}

static struct as_block_mask random_mask(int H, int T, int B, double density, int diag,
                                        uint64_t seed) {
    int nb = (T + B - 1) / B;
    struct as_block_mask m = {B, H, nb, nb, calloc((size_t)H * nb * nb, 1)};
    for (int h = 0; h < H; h++)
        for (int i = 0; i < nb; i++)
            for (int j = 0; j <= i; j++)
                m.keep[((size_t)h * nb + i) * nb + j] =
                    (j == i && diag) || (double)(rng(&seed) >> 11) / 9007199254740992.0 < density;
    return m;
}

/* Under valgrind (tests/run VALGRIND=1, ~50x slower) the sparse sweep takes two block sizes and
 * two densities: memory errors show on any shape, the full sweep runs natively and under ASan. */
static int under_valgrind(void) {
    const char *e = getenv("VALGRIND");
    return e && !strcmp(e, "1");
}

static void test_sparse(void **st) {
    (void)st;
    static const int blocks[] = {16, 32, 64, 128};
    static const double dens[] = {0.0, 0.2, 0.6, 1.0};
    int vg = under_valgrind();
    for (size_t b = 0; b < 4; b++)
        for (size_t d = 0; d < 4; d++)
            for (int diag = 0; diag < 2; diag++) {
                if (vg && (b % 2 || d % 2)) continue;
                int T = 3 * blocks[b] + 7;
                struct prob p = make(T, 0, 4, 2, 64, 7 * b + d);
                struct as_block_mask m = random_mask(4, T, blocks[b], dens[d], diag, b * 31 + d);
                check(&p, &m);
                free(m.keep);
                drop(&p);
            }
    /* all-ones mask at the dense tile size: the same blocks as the dense path */
    struct prob p = make(200, 0, 2, 1, 64, 9);
    struct as_block_mask m = random_mask(2, 200, 64, 1.0, 1, 1);
    float *a = run(&p, &m, AS_ATTN_AUTO, 1), *b = run(&p, NULL, AS_ATTN_AUTO, 1);
    assert_memory_equal(a, b, sizeof(float) * 200 * 2 * 64);
    assert_true(fabs(as_block_mask_density(&m, 0, 200) - 1.0) < 1e-12);
    free(a), free(b), free(m.keep), drop(&p);
}

static void test_parts(void **st) {
    (void)st;
    struct prob p = make(300, 0, 4, 2, 64, 5);
    struct as_block_mask m = random_mask(4, 300, 32, 0.4, 1, 3);
    for (int sp = 0; sp < 2; sp++) {
        float *a = run(&p, sp ? &m : NULL, AS_ATTN_AUTO, 1);
        for (int n = 2; n <= 7; n += 5) {
            float *b = run(&p, sp ? &m : NULL, AS_ATTN_AUTO, n);
            assert_memory_equal(a, b, sizeof(float) * 300 * 4 * 64);
            free(b);
        }
        free(a);
    }
    free(m.keep), drop(&p);
}

static void test_errors(void **st) {
    (void)st;
    struct prob p = make(40, 8, 2, 1, 8, 1);
    struct as_block_mask m = random_mask(2, 48, 16, 1.0, 1, 1);
    float o[40 * 16];
    struct as_attn_args a = {p.q, p.k, p.v, o, 40, 8, 2, 1, 8, 16, 8, 16, 0.35f, &m};
    assert_int_equal(as_attn(&a), -1);
    assert_string_equal(as_last_error(),
                        "attention: a block mask needs a first fill (pos0 0, not 8)");
    a.pos0 = 0, a.T = 60, m.nqb = 3;
    assert_int_equal(as_attn(&a), -1);
    assert_string_equal(as_last_error(),
                        "attention: block mask 2x3x3 does not cover 2 heads x 4 blocks");
    free(m.keep), drop(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dense), cmocka_unit_test(test_sparse),
                                       cmocka_unit_test(test_parts), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
