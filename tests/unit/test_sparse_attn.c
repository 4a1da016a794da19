/* test_sparse_attn: the sparse-attention patterns and selectors (sparse_attn_*.c) with the
 * block-sparse kernel.
 *  - every method of the table, block sizes 16/32/64/128: the mask is causal (no block above the
 *    diagonal), keeps the diagonal, and the kernel over it equals dense masked softmax over the
 *    mask expanded to tokens (double-precision oracle written here) to 1e-5.
 *  - A-shape's block mask is exactly the smallest block cover of the token rule (j < n_init or
 *    j > i - n_local), enumerated pair by pair.
 *  - tensor needle (reference doc section 2a): a 16-token needle whose keys align with the last
 *    queries, at 10%..90% depth of 2048 tokens: vertical-slash, XAttention, FlexPrefill and Stem
 *    keep its blocks for the last query block and the last row's output is the needle's value;
 *    A-shape loses it mid-context (as expected).
 *  - n_last (XAttention, FlexPrefill): the query blocks of the last n_last queries are full
 *    rows, the others unchanged; a needle read by the last 4 queries only is then kept.
 *  - vertical-slash, XAttention and Stem masks equal a numpy oracle written from the reference doc
 *    (tests/oracles/sparse_select.py) but for at most 1% of the blocks (float32 ties).
 *  - config: save/load round trip, MInference best_pattern, a fingerprint of another model, an
 *    unknown method, a budget larger than the sequence, a sequence longer than the context:
 *    one-line errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "kernel_attn.h"
#include "sparse_attn.h"

static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float urand(uint64_t *s) { /* [-1, 1) */
    return (float)((double)(rng(s) >> 11) / 4503599627370496.0) - 1.0f;
}

/* Under valgrind (tests/run VALGRIND=1, ~50x slower) the long cases shrink: memory errors show
 * on any shape; the full cases run natively and under ASan. */
static int under_valgrind(void) {
    const char *e = getenv("VALGRIND");
    return e && !strcmp(e, "1");
}

/* o[L, hd] of one head by dense masked softmax in double (keep: [nb][nkb] of that head) */
static void oracle(int L, int hd, const float *q, const float *k, const float *v,
                   const uint8_t *keep, int nkb, int B, double *o) {
    double *s = malloc(sizeof(double) * L);
    for (int i = 0; i < L; i++) {
        double mx = -INFINITY;
        for (int j = 0; j < L; j++) {
            if (j > i || !keep[(size_t)(i / B) * nkb + j / B]) {
                s[j] = -INFINITY;
                continue;
            }
            double d = 0;
            for (int c = 0; c < hd; c++)
                d += (double)q[(size_t)i * hd + c] * k[(size_t)j * hd + c];
            s[j] = d / sqrt((double)hd);
            mx = s[j] > mx ? s[j] : mx;
        }
        double sum = 0;
        for (int j = 0; j < L; j++)
            sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
        for (int c = 0; c < hd; c++) {
            double a = 0;
            for (int j = 0; j < L; j++)
                if (s[j] != -INFINITY) a += exp(s[j] - mx) * v[(size_t)j * hd + c];
            o[(size_t)i * hd + c] = sum > 0 ? a / sum : 0;
        }
    }
    free(s);
}

/* random head with local + sink structure so selectors have something to find */
static void make_head(int L, int hd, uint64_t seed, float **q, float **k, float **v) {
    *q = malloc(sizeof(float) * L * hd), *k = malloc(sizeof(float) * L * hd);
    *v = malloc(sizeof(float) * L * hd);
    for (int i = 0; i < L; i++)
        for (int c = 0; c < hd; c++) {
            float drift = sinf(0.01f * i * (1 + c % 5));
            (*q)[i * hd + c] = urand(&seed) + drift;
            (*k)[i * hd + c] = urand(&seed) + drift + (i < 4 ? 2.0f : 0.0f);
            (*v)[i * hd + c] = urand(&seed) * (i % 37 == 0 ? 3.0f : 1.0f);
        }
}

/* small budgets so every method leaves blocks out at these lengths */
static void small_params(int m, int B, double *p) {
    for (int i = 0; i < AS_SP_MAXP; i++)
        p[i] = as_sparse_methods[m].def[i];
    switch (m) {
    case AS_SP_ASHAPE:
    case AS_SP_TRISHAPE:
        p[0] = B, p[1] = 2 * B, p[2] = 5;
        break;
    case AS_SP_DILATED:
        p[0] = B, p[1] = 0, p[2] = 6 * B;
        break;
    case AS_SP_VS:
        p[0] = 40, p[1] = 60, p[2] = 64;
        break;
    case AS_SP_BLOCKTOP:
        p[0] = 2;
        break;
    case AS_SP_FLEX:
        p[0] = 0.5, p[2] = B;
        break;
    case AS_SP_STEM:
        p[2] = 0; /* no dense layers */
        break;
    }
}

static void test_methods_vs_oracle(void **st) {
    (void)st;
    static const int blocks[] = {16, 32, 64, 128};
    int hd = 32;
    for (int bi = 0; bi < 4; bi++) {
        int B = blocks[bi],
            L = bi == 0 ? 60 * B + 5 : 6 * B + 5; /* Stem is sparse from 56 blocks */
        if (L > 2100) L = 2100;
        int nb = (L + B - 1) / B;
        float *q, *k, *v;
        make_head(L, hd, 11 + bi, &q, &k, &v);
        double *ref = malloc(sizeof(double) * L * hd);
        float *o = malloc(sizeof(float) * L * hd);
        struct as_block_mask mk = {B, 1, nb, nb, malloc((size_t)nb * nb)};
        for (int m = 0; m < AS_SP_N; m++) {
            struct as_sparse_head h = {m, {0}};
            small_params(m, B, h.p);
            struct as_sparse_stat stt;
            assert_int_equal(
                as_sparse_head_mask(&h, 3, 8, B, L, hd, q, hd, k, v, hd, mk.keep, nb, &stt), 0);
            for (int qb = 0; qb < nb; qb++) {
                if (!mk.keep[(size_t)qb * nb + qb])
                    fail_msg("%s B=%d: diagonal block %d dropped", as_sparse_methods[m].name, B,
                             qb);
                for (int kb = qb + 1; kb < nb; kb++)
                    if (mk.keep[(size_t)qb * nb + kb])
                        fail_msg("%s B=%d: block (%d,%d) above the diagonal",
                                 as_sparse_methods[m].name, B, qb, kb);
            }
            if (m != AS_SP_DENSE && !(m == AS_SP_STEM && nb < 56) && stt.density >= 1.0)
                fail_msg("%s B=%d L=%d: nothing left out", as_sparse_methods[m].name, B, L);
            if (m == AS_SP_DENSE) assert_true(stt.density == 1.0);
            if ((L > 1000 || (L > 400 && under_valgrind())) && m != AS_SP_DENSE)
                continue; /* the oracle is O(L^2 hd) */
            struct as_attn_args a = {
                q, k, v, o, L, 0, 1, 1, hd, hd, hd, hd, 1.0f / sqrtf((float)hd), &mk};
            assert_int_equal(as_attn(&a), 0);
            oracle(L, hd, q, k, v, mk.keep, nb, B, ref);
            double worst = 0;
            for (int i = 0; i < L * hd; i++) {
                double d = fabs(o[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
                worst = d > worst || d != d ? d : worst;
            }
            if (!(worst <= 1e-5))
                fail_msg("%s B=%d: kernel vs oracle %g", as_sparse_methods[m].name, B, worst);
        }
        free(q), free(k), free(v), free(ref), free(o), free(mk.keep);
    }
}

static void test_ashape_cover(void **st) {
    (void)st;
    int B = 16, L = 300, nb = (L + B - 1) / B, n_init = 20, n_local = 50;
    uint8_t *keep = malloc((size_t)nb * nb), *want = calloc((size_t)nb * nb, 1);
    struct as_sparse_head h = {AS_SP_ASHAPE, {n_init, n_local}};
    float z[4] = {0};
    assert_int_equal(as_sparse_head_mask(&h, 0, 1, B, L, 1, z, 0, z, z, 0, keep, nb, NULL), 0);
    for (int i = 0; i < L; i++)
        for (int j = 0; j <= i; j++)
            if (j < n_init || j > i - n_local) want[(i / B) * nb + j / B] = 1;
    assert_memory_equal(keep, want, (size_t)nb * nb);
    free(keep), free(want);
}

/* needle: rows L-64.. carry direction u, keys [p, p+16) carry u, their values carry w */
static void test_needle(void **st) {
    (void)st;
    int L = under_valgrind() ? 1024 : 2048, hd = 64;
    static const int methods[] = {AS_SP_VS, AS_SP_XATTN, AS_SP_FLEX, AS_SP_STEM, AS_SP_ASHAPE};
    for (int depth = 10; depth <= 90; depth += under_valgrind() ? 80 : 40) {
        float *q, *k, *v;
        uint64_t seed = 77 + depth;
        q = malloc(sizeof(float) * L * hd), k = malloc(sizeof(float) * L * hd);
        v = malloc(sizeof(float) * L * hd);
        for (int i = 0; i < L * hd; i++)
            q[i] = 0.3f * urand(&seed), k[i] = 0.3f * urand(&seed), v[i] = urand(&seed);
        int p = L * depth / 100;
        for (int c = 0; c < hd; c++) {
            float u = c % 2 ? 1.0f : -1.0f;
            for (int i = L - 64; i < L; i++)
                q[(size_t)i * hd + c] += u;
            for (int j = p; j < p + 16; j++)
                k[(size_t)j * hd + c] += u, v[(size_t)j * hd + c] = c == 5 ? 10.0f : 0.0f;
        }
        for (int mi = 0; mi < 5; mi++) {
            int m = methods[mi], B = m == AS_SP_XATTN || m == AS_SP_FLEX ? 128 : 32;
            int nb = (L + B - 1) / B;
            struct as_sparse_head h = {m, {0}};
            for (int i = 0; i < AS_SP_MAXP; i++)
                h.p[i] = as_sparse_methods[m].def[i];
            if (m == AS_SP_VS) h.p[0] = 100, h.p[1] = 200;
            if (m == AS_SP_ASHAPE) h.p[0] = 64, h.p[1] = 256;
            if (m == AS_SP_STEM) h.p[2] = 0;
            uint8_t *keep = malloc((size_t)nb * nb);
            assert_int_equal(
                as_sparse_head_mask(&h, 5, 30, B, L, hd, q, hd, k, v, hd, keep, nb, NULL), 0);
            int found =
                keep[(size_t)(nb - 1) * nb + p / B] && keep[(size_t)(nb - 1) * nb + (p + 15) / B];
            float *o = malloc(sizeof(float) * L * hd);
            struct as_block_mask mk = {B, 1, nb, nb, keep};
            struct as_attn_args a = {q, k, v, o, L, 0, 1, 1, hd, hd, hd, hd, 0.125f, &mk};
            assert_int_equal(as_attn(&a), 0);
            float got = o[(size_t)(L - 1) * hd + 5]; /* the needle's value dominates when kept */
            if (m == AS_SP_ASHAPE && depth == 90) {  /* inside the local window */
                if (!found || got < 5.0f) fail_msg("a_shape lost a needle in its window");
            } else if (m == AS_SP_ASHAPE) {
                if (found || got > 2.0f) fail_msg("a_shape found the needle at depth %d", depth);
            } else if (!found || got < 5.0f) {
                fail_msg("%s lost the needle at depth %d (kept %d, value %g)",
                         as_sparse_methods[m].name, depth, found, got);
            }
            free(keep), free(o);
        }
        free(q), free(k), free(v);
    }
}

/* n_last (XAttention, FlexPrefill; not in the published selectors): the query blocks holding any
 * of the last min(n_last, L - 1) queries keep every causal block, enumerated query by query; the
 * other rows are the n_last = 0 mask unchanged. A needle read by the last 4 queries only (its
 * estimate diluted over a 128-query block) is then kept and its value returned. */
static void test_n_last(void **st) {
    (void)st;
    int L = 1029, hd = 32, B = 32, nb = (L + B - 1) / B;
    float *q, *k, *v;
    make_head(L, hd, 9, &q, &k, &v);
    uint8_t *base = malloc((size_t)nb * nb), *keep = malloc((size_t)nb * nb);
    static const int methods[] = {AS_SP_XATTN, AS_SP_FLEX}, idx[] = {3, 4};
    static const double nls[] = {1, 5, 40, 64, 5000};
    for (int mi = 0; mi < 2; mi++)
        for (int ni = 0; ni < 5; ni++) {
            struct as_sparse_head h = {methods[mi], {0}};
            small_params(methods[mi], B, h.p);
            assert_int_equal(
                as_sparse_head_mask(&h, 3, 8, B, L, hd, q, hd, k, v, hd, base, nb, NULL), 0);
            h.p[idx[mi]] = nls[ni];
            assert_int_equal(
                as_sparse_head_mask(&h, 3, 8, B, L, hd, q, hd, k, v, hd, keep, nb, NULL), 0);
            int lo = L - (nls[ni] < L - 1 ? (int)nls[ni] : L - 1); /* first of the last queries */
            for (int qb = 0; qb < nb; qb++) {
                int full = 0;
                for (int i = qb * B; i < (qb + 1) * B && i < L; i++)
                    full |= i >= lo;
                for (int kb = 0; kb <= qb; kb++) {
                    int want = full ? 1 : base[(size_t)qb * nb + kb] != 0;
                    if ((keep[(size_t)qb * nb + kb] != 0) != want)
                        fail_msg("%s n_last=%g: block (%d,%d) is %d, want %d",
                                 as_sparse_methods[methods[mi]].name, nls[ni], qb, kb,
                                 keep[(size_t)qb * nb + kb], want);
                }
            }
        }
    free(q), free(k), free(v), free(base), free(keep);
    /* diluted needle: keys [p, p+16) match only the last 4 queries */
    L = 2048, hd = 64, B = 128, nb = L / B;
    uint64_t seed = 5;
    q = malloc(sizeof(float) * L * hd), k = malloc(sizeof(float) * L * hd);
    v = malloc(sizeof(float) * L * hd);
    for (int i = 0; i < L * hd; i++)
        q[i] = 0.3f * urand(&seed), k[i] = 0.3f * urand(&seed), v[i] = urand(&seed);
    int p = L / 5;
    for (int c = 0; c < hd; c++) {
        float u = c % 2 ? 1.0f : -1.0f;
        for (int i = L - 4; i < L; i++)
            q[(size_t)i * hd + c] += u;
        for (int j = p; j < p + 16; j++)
            k[(size_t)j * hd + c] += u, v[(size_t)j * hd + c] = c == 5 ? 10.0f : 0.0f;
    }
    keep = malloc((size_t)nb * nb);
    float *o = malloc(sizeof(float) * L * hd);
    for (int mi = 0; mi < 2; mi++) {
        struct as_sparse_head h = {methods[mi], {0}};
        for (int i = 0; i < AS_SP_MAXP; i++)
            h.p[i] = as_sparse_methods[methods[mi]].def[i];
        h.p[idx[mi]] = 64;
        assert_int_equal(as_sparse_head_mask(&h, 5, 30, B, L, hd, q, hd, k, v, hd, keep, nb, NULL),
                         0);
        struct as_block_mask mk = {B, 1, nb, nb, keep};
        struct as_attn_args a = {q, k, v, o, L, 0, 1, 1, hd, hd, hd, hd, 0.125f, &mk};
        assert_int_equal(as_attn(&a), 0);
        if (!keep[(size_t)(nb - 1) * nb + p / B] || o[(size_t)(L - 1) * hd + 5] < 5.0f)
            fail_msg("%s n_last=64 lost the diluted needle (value %g)",
                     as_sparse_methods[methods[mi]].name, o[(size_t)(L - 1) * hd + 5]);
    }
    free(q), free(k), free(v), free(keep), free(o);
}

/* The selectors' masks against tests/oracles/sparse_select.py (numpy float64, written from the
 * reference doc): at most 1% of the causal blocks may differ (float32 vs float64 scores near a
 * threshold or a tie). */
static void test_selectors_vs_numpy(void **st) {
    (void)st;
    int L = 1029, hd = 32, B = 16, nb = (L + B - 1) / B;
    float *q, *k, *v;
    make_head(L, hd, 5, &q, &k, &v);
    char dir[] = "/tmp/as_test_sel.XXXXXX", path[256], cmd[1024];
    assert_non_null(mkdtemp(dir));
    const float *arr[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%c.f32", dir, "qkv"[i]);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(arr[i], sizeof(float), (size_t)L * hd, f), (size_t)L * hd);
        fclose(f);
    }
    static const struct {
        int m;
        double p[AS_SP_MAXP];
    } cases[] = {{AS_SP_VS, {60, 90, 64}},        {AS_SP_XATTN, {8, 0.9}},
                 {AS_SP_XATTN, {4, 0.7}},         {AS_SP_XATTN, {8, 0.8, 3}},
                 {AS_SP_STEM, {8, 0.7, 0, 4, 4}}, {AS_SP_STEM, {4, 1.0, 0, 2, 3}}};
    uint8_t *keep = malloc((size_t)nb * nb);
    char *line = malloc(4096);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct as_sparse_head h = {cases[c].m, {0}};
        memcpy(h.p, cases[c].p, sizeof h.p);
        assert_int_equal(as_sparse_head_mask(&h, 3, 8, B, L, hd, q, hd, k, v, hd, keep, nb, NULL),
                         0);
        snprintf(cmd, sizeof cmd,
                 "python3 tests/oracles/sparse_select.py %s %d %d %d %s %g %g %g %g %g", dir, L, hd,
                 B, as_sparse_methods[h.method].name, h.p[0], h.p[1], h.p[2], h.p[3], h.p[4]);
        FILE *pp = popen(cmd, "r");
        assert_non_null(pp);
        int rows = 0, diff = 0, kept = 0;
        while (fgets(line, 4096, pp)) {
            assert_true(rows < nb && (int)strcspn(line, "\n") == nb);
            for (int kb = 0; kb <= rows; kb++) {
                diff += (line[kb] == '1') != (keep[(size_t)rows * nb + kb] != 0);
                kept += line[kb] == '1';
            }
            rows++;
        }
        if (pclose(pp) != 0 || rows != nb)
            fail_msg("%s: the oracle failed (%d rows): %s", as_sparse_methods[h.method].name, rows,
                     cmd);
        int causal = nb * (nb + 1) / 2;
        if (diff > causal / 100 || kept == causal)
            fail_msg("%s case %zu: %d of %d blocks differ from the oracle (oracle keeps %d)",
                     as_sparse_methods[h.method].name, c, diff, causal, kept);
    }
    free(keep), free(line), free(q), free(k), free(v);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%c.f32", dir, "qkv"[i]);
        unlink(path);
    }
    rmdir(dir);
}

static struct as_model_config smol(void) {
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.n_layers = 4, c.n_heads = 9, c.n_kv_heads = 3, c.hidden = 576, c.head_dim = 64;
    c.rope_theta = 100000, c.max_pos = 8192;
    return c;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config(void **st) {
    (void)st;
    struct as_model_config c = smol();
    char dir[] = "/tmp/as_test_sparse.XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    double p[AS_SP_MAXP] = {4, 0.5};
    struct as_sparse_config *a = as_sparse_config_uniform(&c, AS_SP_XATTN, p, 0);
    assert_int_equal(a->block, 128);
    a->heads[2 * 9 + 4].method = AS_SP_ASHAPE, a->heads[2 * 9 + 4].p[0] = 7;
    a->heads[2 * 9 + 4].p[1] = 99;
    assert_int_equal(as_sparse_config_save(a, path), 0);
    struct as_sparse_config *b = as_sparse_config_load(path, &c);
    assert_non_null(b);
    assert_int_equal(b->block, 128);
    for (int i = 0; i < 4 * 9; i++) {
        assert_int_equal(b->heads[i].method, a->heads[i].method);
        assert_memory_equal(b->heads[i].p, a->heads[i].p, sizeof b->heads[i].p);
    }
    as_sparse_config_free(b);
    /* another model: one more head */
    struct as_model_config c2 = c;
    c2.n_heads = 12;
    assert_null(as_sparse_config_load(path, &c2));
    char want[256];
    snprintf(want, sizeof want, "%s: model fingerprint mismatch: heads 9, model has 12", path);
    assert_string_equal(as_last_error(), want);
    /* MInference's best_pattern, over a default */
    write_file(path, "{\"schema_version\": 1, \"model_fingerprint\": {\"model_type\": \"llama\", "
                     "\"rope_theta\": 100000, \"heads\": 9, \"kv_heads\": 3, \"hidden\": 576, "
                     "\"layers\": 4}, \"block\": 64, \"default\": {\"method\": \"a_shape\"}, "
                     "\"layers\": {\"1\": {\"method\": \"dense\"}}, \"best_pattern\": {\"3\": "
                     "{\"8\": [\"vertical_and_slash\", 500, 700, 0.9]}}}");
    b = as_sparse_config_load(path, &c);
    assert_non_null(b);
    assert_int_equal(b->heads[0].method, AS_SP_ASHAPE);
    assert_true(b->heads[0].p[1] == 3968);
    assert_int_equal(b->heads[9 + 3].method, AS_SP_DENSE);
    assert_int_equal(b->heads[3 * 9 + 8].method, AS_SP_VS);
    assert_true(b->heads[3 * 9 + 8].p[0] == 500 && b->heads[3 * 9 + 8].p[1] == 700);
    /* budgets against the sequence, sequence against the context */
    assert_int_equal(as_sparse_config_check(b, 700), 0);
    assert_int_equal(as_sparse_config_check(b, 600), -1);
    assert_string_equal(as_last_error(), "sparse attention: layer 3 head 8: vertical_and_slash "
                                         "slash 700 larger than the sequence (600)");
    assert_int_equal(as_sparse_config_check(b, 9000), -1);
    assert_string_equal(as_last_error(),
                        "sparse attention: sequence of 9000 tokens exceeds the model's context "
                        "(8192)");
    as_sparse_config_free(b);
    write_file(path, "{\"schema_version\": 1, \"model_fingerprint\": {\"model_type\": \"llama\", "
                     "\"rope_theta\": 100000, \"heads\": 9, \"kv_heads\": 3, \"hidden\": 576, "
                     "\"layers\": 4}, \"default\": {\"method\": \"magic\"}}");
    assert_null(as_sparse_config_load(path, &c));
    snprintf(want, sizeof want, "%s: default: unknown method 'magic'", path);
    assert_string_equal(as_last_error(), want);
    /* method specs of the command line */
    b = as_sparse_config_from_spec("stem:alpha=0.7,block=64", &c);
    assert_non_null(b);
    assert_int_equal(b->block, 64);
    assert_true(b->heads[5].method == AS_SP_STEM && b->heads[5].p[1] == 0.7);
    as_sparse_config_free(b);
    assert_null(as_sparse_config_from_spec("stem:beta=1", &c));
    assert_string_equal(as_last_error(), "--sparse-attn 'stem:beta=1': method stem has no "
                                         "parameter 'beta'");
    as_sparse_config_free(a);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_methods_vs_oracle),
                                       cmocka_unit_test(test_ashape_cover),
                                       cmocka_unit_test(test_needle),
                                       cmocka_unit_test(test_n_last),
                                       cmocka_unit_test(test_config),
                                       cmocka_unit_test(test_selectors_vs_numpy)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
