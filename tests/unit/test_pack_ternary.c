/* test_pack_ternary: the ternary / 2-bit layouts of pack_ternary.c.
 *
 * Expectations come from the layouts' definitions, not from the packer: I2_S's all-zero byte is
 * 0x55 (BitNet) and a single +1 at element j lands in byte j % 32 at shift 6 - 2 (j / 32); SEQ2
 * byte g is the 4 codes of quad g LSB first; every Sherry codebook entry is rebuilt from the rule
 * in ../shared/reference/ternary-qat.md (slot = z << 2 | r, sign negates, entry[16+i] = 0xAA -
 * entry[i]); TQ1_0 / TQ2_0 dequantize through ggml_types.c's rows (themselves held bit for bit to
 * the gguf package's numpy by ggml_types.bats). Round trips are exact on random codes for every
 * format; bad input (code out of range, 3:4 mask violated, K not whole blocks, zero / NaN / non-f16
 * scale) is refused with one line naming the tensor and the output left untouched.
 * CLI for tests/tools/ternary.bats (gguf's numpy quantizer as the oracle of the TQ bytes):
 *   test_pack_ternary write FMT N K SEED VALUES.f32 PACKED.bin */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "ggml_types.h"
#include "pack_ternary.h"
#include "qstream.h"
#include "quant_ternary.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Random valid codes for format f (Sherry: one zero per quad at a random lane). */
static void random_codes(enum as_tern_fmt f, int N, int K, uint8_t *c) {
    for (size_t i = 0; i < (size_t)N * K; i++)
        c[i] = (uint8_t)(rnd() % (unsigned)as_tern_layouts[f].levels);
    if (f == AS_TF_SHERRY)
        for (size_t i = 0; i < (size_t)N * K; i += 4) {
            int z = (int)(rnd() % 4);
            for (int p = 0; p < 4; p++)
                c[i + p] = p == z ? 1 : (rnd() & 1 ? 2 : 0);
        }
}
static void random_scales(enum as_tern_fmt f, int N, int K, float *s) {
    size_t ns = as_tern_scale_count(f, N, K);
    for (size_t i = 0; i < ns; i++) {
        float v = 0.001f + (float)(rnd() % 100000) * 1e-6f;
        /* the f16 formats store f16: give them exact f16 values */
        s[i] = as_tern_layouts[f].scale == AS_TS_BLOCK_F16 ? as_f16_to_f32(as_f32_to_f16(v)) : v;
    }
}

static void test_layout_table(void **state) {
    (void)state;
    /* bits per weight from the definitions: 54*8/256, 66*8/256, 2, 2, 1.25 */
    const double bpw[AS_TF_COUNT] = {1.6875, 2.0625, 2.0, 2.0, 1.25};
    for (int f = 0; f < AS_TF_COUNT; f++) {
        const struct as_tern_layout *L = &as_tern_layouts[f];
        assert_true(fabs((double)L->block_bytes * 8.0 / L->block - bpw[f]) < 1e-12);
        assert_int_equal(as_tern_fmt_parse(L->name), f);
    }
    assert_int_equal(as_tern_fmt_parse("sherry"), AS_TF_SHERRY);
    assert_int_equal(as_tern_fmt_parse("Q4_0"), -1);
    assert_int_equal(as_tern_row_bytes(AS_TF_SHERRY, 576), 576 / 32 * 5);
    assert_int_equal(as_tern_row_bytes(AS_TF_TQ2_0, 576), 0);
    assert_int_equal(as_tern_row_bytes(AS_TF_I2_S, 1536), 1536 / 4);
    assert_int_equal(as_tern_packed_bytes(AS_TF_I2_S, 3, 128), 3 * 32 + 4 + 32);
    assert_int_equal(as_tern_packed_bytes(AS_TF_SEQ2, 3, 64), 3 * 16 + 3 * 4);
    assert_int_equal(as_tern_packed_bytes(AS_TF_TQ1_0, 2, 512), 2 * 2 * 54);
}

static void test_sherry_codebook_rule(void **state) {
    (void)state;
    for (int ix = 0; ix < 32; ix++) {
        int sign = ix >> 4, z = (ix >> 2) & 3, r = ix & 3, nz = 0;
        unsigned want = 0;
        for (int p = 0; p < 4; p++) {
            int v = 0;
            if (p != z) {
                v = nz == 0 ? 1 : nz == 1 ? (r & 1 ? -1 : 1) : (r & 2 ? -1 : 1);
                nz++;
            }
            if (sign) v = -v;
            want |= (unsigned)(v + 1) << (2 * p);
        }
        assert_int_equal(as_sherry_codebook[ix], want);
        if (ix < 16) assert_int_equal(as_sherry_codebook[ix + 16], 0xAA - as_sherry_codebook[ix]);
    }
}

static void test_i2s_seq2_bytes(void **state) {
    (void)state;
    uint8_t c[128], out[32 + 36];
    float s = 0.5f;
    for (int j = 0; j < 128; j += 7) {
        memset(c, 1, sizeof c);
        c[j] = 2;
        assert_int_equal(as_tern_pack(AS_TF_I2_S, "t", 1, 128, c, &s, out), 0);
        for (int p = 0; p < 32; p++) {
            uint8_t want = 0x55;
            if (p == j % 32)
                want = (uint8_t)((0x55 & ~(3 << (6 - 2 * (j / 32)))) | 2 << (6 - 2 * (j / 32)));
            assert_int_equal(out[p], want);
        }
        float back;
        memcpy(&back, out + 32, 4);
        assert_true(back == 0.5f);
    }
    uint8_t q[32];
    for (int k = 0; k < 32; k++)
        q[k] = (uint8_t)((k * 5 + 1) & 3);
    uint8_t o2[8 + 4];
    assert_int_equal(as_tern_pack(AS_TF_SEQ2, "t", 1, 32, q, &s, o2), 0);
    for (int g = 0; g < 8; g++)
        assert_int_equal(o2[g],
                         q[4 * g] + 4 * q[4 * g + 1] + 16 * q[4 * g + 2] + 64 * q[4 * g + 3]);
}

static void test_roundtrip_all(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 256}, {3, 512}, {5, 768}, {2, 1536}};
    for (int f = 0; f < AS_TF_COUNT; f++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int N = shapes[si][0], K = shapes[si][1];
            size_t ns = as_tern_scale_count(f, N, K);
            uint8_t *c = malloc((size_t)N * K), *c2 = malloc((size_t)N * K);
            float *s = malloc(ns * 4), *s2 = malloc(ns * 4);
            uint8_t *p = malloc(as_tern_packed_bytes(f, N, K));
            random_codes(f, N, K, c);
            random_scales(f, N, K, s);
            assert_int_equal(as_tern_pack(f, "t", N, K, c, s, p), 0);
            as_tern_unpack(f, N, K, p, c2, s2);
            assert_memory_equal(c, c2, (size_t)N * K);
            assert_memory_equal(s, s2, ns * 4);
            /* TQ: ggml's own dequantizer reads what we wrote as (code - 1) * d */
            if (as_tern_layouts[f].ggml_type >= 0) {
                float *w = malloc((size_t)N * K * 4);
                as_ggml_to_f32((enum as_ggml_type)as_tern_layouts[f].ggml_type, p, w,
                               (size_t)N * K);
                for (size_t i = 0; i < (size_t)N * K; i++)
                    assert_true(w[i] == (float)((int)c[i] - 1) * s[i / 256]);
                free(w);
            }
            free(c), free(c2), free(s), free(s2), free(p);
        }
    /* SEQ2 and SHERRY take any K multiple of 32: SmolLM2's 576 and stories260K's 64 */
    for (int f = AS_TF_SEQ2; f <= AS_TF_SHERRY; f++)
        for (int K = 32; K <= 576; K += 32) {
            uint8_t c[3 * 576], c2[3 * 576], p[3 * 576];
            float s[3], s2[3];
            random_codes(f, 3, K, c);
            random_scales(f, 3, K, s);
            assert_int_equal(as_tern_pack(f, "t", 3, K, c, s, p), 0);
            as_tern_unpack(f, 3, K, p, c2, s2);
            assert_memory_equal(c, c2, (size_t)3 * K);
            assert_memory_equal(s, s2, sizeof s);
        }
}

/* One bad input: refused with exactly msg, the output buffer untouched. */
static void refused(enum as_tern_fmt f, int N, int K, const uint8_t *c, const float *s,
                    const char *msg) {
    size_t nb = (size_t)N * K + 64;
    uint8_t *out = malloc(nb);
    memset(out, 0xEE, nb);
    as_clear_error();
    assert_int_equal(as_tern_pack(f, "model.layers.0.mlp.down_proj", N, K, c, s, out), -1);
    assert_string_equal(as_last_error(), msg);
    for (size_t i = 0; i < nb; i++)
        assert_int_equal(out[i], 0xEE);
    free(out);
}

static void test_bad_input(void **state) {
    (void)state;
    uint8_t c[2 * 512];
    float s[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    memset(c, 1, sizeof c);
    c[300] = 3;
    refused(AS_TF_TQ2_0, 2, 256, c, s,
            "tensor model.layers.0.mlp.down_proj: code 3 at [1, 44] is outside TQ2_0's 0..2");
    refused(AS_TF_SHERRY, 2, 256, c, s,
            "tensor model.layers.0.mlp.down_proj: quad [0, 0..3] has 4 zeros (SHERRY's 3:4 mask "
            "needs exactly one per contiguous quad)");
    random_codes(AS_TF_SHERRY, 2, 256, c);
    c[256 + 40] = c[256 + 41] = 1; /* row 1, quad 40..43 now has at least two zeros */
    c[256 + 42] = 2;
    c[256 + 43] = 0;
    refused(AS_TF_SHERRY, 2, 256, c, s,
            "tensor model.layers.0.mlp.down_proj: quad [1, 40..43] has 2 zeros (SHERRY's 3:4 mask "
            "needs exactly one per contiguous quad)");
    memset(c, 1, sizeof c);
    refused(AS_TF_SEQ2, 2, 48, c, s,
            "tensor model.layers.0.mlp.down_proj: shape [2, 48]: SEQ2 needs rows of a multiple of "
            "32 weights");
    refused(AS_TF_TQ1_0, 1, 576, c, s,
            "tensor model.layers.0.mlp.down_proj: shape [1, 576]: TQ1_0 needs rows of a multiple "
            "of 256 weights");
    s[1] = 0.0f;
    refused(AS_TF_SEQ2, 2, 64, c, s,
            "tensor model.layers.0.mlp.down_proj: scale 1 is 0 (must be finite and > 0)");
    s[1] = NAN;
    refused(AS_TF_I2_S, 2, 128, c, s + 1,
            "tensor model.layers.0.mlp.down_proj: scale 0 is nan (must be finite and > 0)");
    s[1] = 0.1f;
    refused(AS_TF_TQ2_0, 2, 256, c, s,
            "tensor model.layers.0.mlp.down_proj: scale 1 = 0.100000001 is not exact in f16 (TQ2_0 "
            "stores f16 scales)");
}

/* RTN by hand: SEQ2 codes of 1, -1, 0.3, -0.2 with alpha = max |w| = 1 are round(1.98 - .5) + 2
 * = 3, round(-1.98 - .5) + 2 = 0, round(.6 - .5) + 2 = 2, round(-.4 - .5) + 2 = 1; the Sherry quad
 * (0.5, -0.1, 0.3, -0.7) zeroes lane 1 and alpha = (0.5 + 0.3 + 0.7) / 3 = 0.5; absmean ternary
 * of a block of 0.75 / -0.25 alternating: alpha = 0.5, codes 2 (1.5 -> 1) and 1 (-0.5 -> -0, half
 * to even). */
static void test_rtn_hand(void **state) {
    (void)state;
    float w[256];
    struct as_qlinear l;
    for (int k = 0; k < 32; k++)
        w[k] = (const float[]){1.0f, -1.0f, 0.3f, -0.2f}[k % 4] * (k < 4 ? 1 : 0.5f);
    assert_int_equal(as_tern_rtn(AS_TF_SEQ2, w, 1, 32, &l), 0);
    assert_true(l.scale[0] == 0.5f);
    assert_true(l.minv[0] == -0.75f);
    const uint8_t want_seq[4] = {3, 0, 2, 1};
    assert_memory_equal(l.q, want_seq, 4);
    char why[256];
    assert_int_equal(as_tern_packable(AS_TF_SEQ2, &l, why, sizeof why), 1);
    assert_int_equal(as_tern_packable(AS_TF_SHERRY, &l, why, sizeof why), 0);
    assert_string_equal(why, "not ternary (needs zero point 1, got a float minimum, 2)");
    as_tern_qlinear_free(&l);
    for (int k = 0; k < 32; k++)
        w[k] = (const float[]){0.5f, -0.1f, 0.3f, -0.7f}[k % 4];
    assert_int_equal(as_tern_rtn(AS_TF_SHERRY, w, 1, 32, &l), 0);
    assert_true(fabsf(l.scale[0] - 0.5f) < 1e-7f);
    const uint8_t want_sh[4] = {2, 1, 2, 0};
    for (int k = 0; k < 32; k++)
        assert_int_equal(l.q[k], want_sh[k % 4]);
    as_tern_qlinear_free(&l);
    for (int k = 0; k < 256; k++)
        w[k] = k % 2 ? -0.25f : 0.75f;
    assert_int_equal(as_tern_rtn(AS_TF_TQ2_0, w, 1, 256, &l), 0);
    assert_true(l.scale[0] == 0.5f);
    for (int k = 0; k < 256; k++)
        assert_int_equal(l.q[k], k % 2 ? 1 : 2);
    assert_int_equal(as_tern_packable(AS_TF_TQ2_0, &l, why, sizeof why), 1);
    as_tern_qlinear_free(&l);
    /* two 256-blocks with different alphas: no single row scale for SHERRY */
    float w2[512];
    for (int k = 0; k < 512; k++)
        w2[k] = k < 256 ? w[k] : 2 * w[k - 256];
    assert_int_equal(as_tern_rtn(AS_TF_TQ2_0, w2, 1, 512, &l), 0);
    assert_int_equal(as_tern_packable(AS_TF_SHERRY, &l, why, sizeof why), 0);
    assert_string_equal(why, "scales differ within row 0 (SHERRY has one per row)");
    as_tern_qlinear_free(&l);
    /* a row TQ cannot hold: absmean per row, reported unpackable (as-pack keeps it dense) */
    assert_int_equal(as_tern_rtn(AS_TF_TQ1_0, w, 1, 64, &l), 0);
    assert_true(l.scale[0] == 0.5f);
    assert_int_equal(as_tern_packable(AS_TF_TQ1_0, &l, why, sizeof why), 0);
    assert_string_equal(why, "rows of 64 weights do not fill TQ1_0's 256-weight blocks");
    as_tern_qlinear_free(&l);
    assert_int_equal(as_tern_rtn(AS_TF_SHERRY, w, 1, 30, &l), -1);
    assert_string_equal(as_last_error(),
                        "shape [1, 30]: SHERRY needs rows of a multiple of 4 weights");
}

/* RTN -> pack -> dequantize equals the fakequant weights (as_qlinear_dequant) of the same layer:
 * bit for bit for the ternary formats (both compute scale * (code - 1)), within one rounding for
 * SEQ2 (scale * q + minv against (q - 1.5) * scale). */
static void test_rtn_pack_equals_fakequant(void **state) {
    (void)state;
    const int N = 6, K = 512;
    float *w = malloc((size_t)N * K * 4), *fq = malloc((size_t)N * K * 4),
          *pk = malloc((size_t)N * K * 4);
    for (int i = 0; i < N * K; i++)
        w[i] = (float)((int)(rnd() % 20001) - 10000) * 1e-5f;
    for (int f = 0; f < AS_TF_COUNT; f++) {
        struct as_qlinear l;
        char why[256];
        assert_int_equal(as_tern_rtn(f, w, N, K, &l), 0);
        assert_int_equal(as_tern_packable(f, &l, why, sizeof why), 1);
        uint8_t *p = malloc(as_tern_packed_bytes(f, N, K));
        assert_int_equal(as_tern_pack_qlinear(f, "t", &l, p), 0);
        as_qlinear_dequant(&l, fq);
        as_tern_dequant(f, N, K, p, pk);
        for (int i = 0; i < N * K; i++) {
            if (f == AS_TF_SEQ2)
                assert_true(fabsf(fq[i] - pk[i]) <= 1e-7f * fabsf(fq[i]));
            else
                assert_true(fq[i] == pk[i]);
        }
        free(p);
        as_tern_qlinear_free(&l);
    }
    free(w), free(fq), free(pk);
}

static int cli_write(char **argv) {
    int f = as_tern_fmt_parse(argv[2]), N = atoi(argv[3]), K = atoi(argv[4]);
    rng_state ^= (uint64_t)atoll(argv[5]) * 0x2545F4914F6CDD1Dull;
    if (f < 0 || N <= 0 || K <= 0) return 2;
    uint8_t *c = malloc((size_t)N * K), *p = malloc(as_tern_packed_bytes(f, N, K) + 1);
    size_t ns = as_tern_scale_count(f, N, K);
    float *s = malloc(ns * 4), *v = malloc((size_t)N * K * 4);
    random_codes(f, N, K, c);
    random_scales(f, N, K, s);
    if (as_tern_pack(f, "t", N, K, c, s, p)) {
        fprintf(stderr, "test_pack_ternary: %s\n", as_last_error());
        return 1;
    }
    as_tern_dequant(f, N, K, p, v);
    FILE *a = fopen(argv[6], "wb"), *b = fopen(argv[7], "wb");
    if (!a || !b) return 1;
    fwrite(v, 4, (size_t)N * K, a);
    fwrite(p, 1, as_tern_packed_bytes(f, N, K), b);
    fclose(a), fclose(b);
    free(c), free(p), free(s), free(v);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 8 && !strcmp(argv[1], "write")) return cli_write(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_table),
        cmocka_unit_test(test_sherry_codebook_rule),
        cmocka_unit_test(test_i2s_seq2_bytes),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_rtn_hand),
        cmocka_unit_test(test_rtn_pack_equals_fakequant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
