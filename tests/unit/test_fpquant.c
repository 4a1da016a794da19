/* Tests of lib/common/fpquant.c (FP8/INT8/FP4 weight encoders, activation fake-quant), the
 * forward pass's activation-quantization hook, and pack_fp.c / quant_load_fp.c round trips.
 *
 * Expectations are independent of the code under test: dtype.c's scalar reference codecs, value
 * grids enumerated from REFERENCE.md's definitions (nearest representable value, ties to even),
 * hand-computed cases, and the forward pass run without the hook. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "as_error.h"
#include "dtype.h"
#include "forward.h"
#include "fpquant.h"
#include "model.h"
#include "model_loaders.h"
#include "pack_fp.h"
#include "safetensors.h"
#include "stream.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* The E4M3 value grid from the definition: bias 7, 3 mantissa bits, subnormals m 2^-9, max 448. */
static int e4m3_grid(float *v) {
    int n = 0;
    for (int m = 0; m < 8; m++)
        v[n++] = m * 0x1p-9f;
    for (int e = 1; e < 16; e++)
        for (int m = 0; m < 8; m++) {
            if (e == 15 && m == 7) continue; /* NaN */
            v[n++] = ldexpf(1.0f + m / 8.0f, e - 7);
        }
    return n; /* ascending, 0 .. 448 */
}

/* Nearest grid value to |x| with ties to the even mantissa (even index), saturating. */
static float nearest_even(const float *g, int n, float a) {
    if (a >= g[n - 1]) return g[n - 1];
    int i = 0;
    while (g[i + 1] < a)
        i++;
    double lo = a - g[i], hi = g[i + 1] - a;
    if (lo < hi) return g[i];
    if (hi < lo) return g[i + 1];
    return (i % 2 == 0) ? g[i] : g[i + 1];
}

static void test_fp8_codec_against_reference(void **st) {
    (void)st;
    /* every f32 whose top 20 bits vary (covers all E4M3 rounding boundaries and ties) */
    for (uint32_t hi = 0; hi < (1u << 20); hi++) {
        uint32_t u = hi << 12 | (hi & 0xFFF);
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        assert_int_equal(as_fp8_enc(f), as_f32_to_fp8_e4m3(f));
    }
    /* the array kernels (4- and 8-lane vector paths plus scalar tails) on the same inputs */
    size_t nb = (size_t)1 << 20;
    float *xs = malloc(sizeof(float) * nb);
    uint8_t *codes = malloc(nb);
    for (size_t i = 0; i < nb; i++) {
        uint32_t u = (uint32_t)i << 12 | (uint32_t)(i & 0xFFF);
        if ((u & 0x7F800000) == 0x7F800000) u &= 0xFF7FFFFF; /* no NaN/inf inputs */
        memcpy(&xs[i], &u, 4);
    }
    float scales[3] = {1.0f, 0.37f, 3.0e-3f};
    for (int si = 0; si < 3; si++) {
        as_fp8_encode(xs, nb - 3, scales[si], codes); /* odd length: exercises the tail */
        for (size_t i = 0; i < nb - 3; i++)
            assert_int_equal(codes[i], as_f32_to_fp8_e4m3(xs[i] / scales[si]));
    }
    uint16_t *hs = malloc(sizeof(uint16_t) * 65536);
    for (int i = 0; i < 65536; i++)
        hs[i] = (uint16_t)((i & 0x7F80) == 0x7F80 ? i & 0xFF7F : i);
    as_fp8_encode_bf16(hs, 65533, 0.37f, codes);
    for (int i = 0; i < 65533; i++)
        assert_int_equal(codes[i], as_f32_to_fp8_e4m3(as_bf16_to_f32(hs[i]) / 0.37f));
    float am = as_absmax_bf16(hs, 65536), want = 0;
    for (int i = 0; i < 65536; i++)
        want = fmaxf(want, fabsf(as_bf16_to_f32(hs[i])));
    assert_true(am == want);
    assert_true(as_absmax(xs, nb - 1) == 0x1.fffffep127f);
    free(xs), free(codes), free(hs);
    for (int c = 0; c < 256; c++) {
        float a = as_fp8_dec((uint8_t)c), b = as_fp8_e4m3_to_f32((uint8_t)c);
        assert_true((isnan(a) && isnan(b)) || a == b);
    }
    /* against the grid built from the definition */
    float g[128];
    int n = e4m3_grid(g);
    assert_int_equal(n, 127);
    for (int i = 0; i < 200000; i++) {
        float x = frand() * 500.0f * (i % 3 == 0 ? 0.01f : 1.0f);
        float want = copysignf(nearest_even(g, n, fabsf(x)), x);
        assert_true(as_fp8_dec(as_fp8_enc(x)) == want);
    }
    /* hand cases: ties to even, saturation */
    assert_true(as_fp8_dec(as_fp8_enc(1.0625f)) == 1.0f);  /* tie between 1 and 1.125 */
    assert_true(as_fp8_dec(as_fp8_enc(1.1875f)) == 1.25f); /* tie between 1.125 and 1.25 */
    assert_true(as_fp8_dec(as_fp8_enc(1000.0f)) == 448.0f);
    assert_true(as_fp8_dec(as_fp8_enc(-460.0f)) == -448.0f);
    assert_true(as_fp8_dec(as_fp8_enc(0x1p-10f)) == 0.0f); /* tie 0 / 2^-9 -> 0 */
}

static void test_fp4_codec(void **st) {
    (void)st;
    static const float grid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int i = 0; i < 100000; i++) {
        float x = frand() * 8.0f;
        assert_int_equal(as_fp4_enc(x), as_f32_to_fp4_e2m1(x));
        float want = copysignf(nearest_even(grid, 8, fabsf(x)), x);
        float got = as_fp4_dec(as_fp4_enc(x));
        assert_true(got == want || (want == 0 && got == 0));
    }
    assert_true(as_fp4_dec(as_fp4_enc(2.5f)) == 2.0f); /* tie -> even code (2.0 = idx 4) */
    assert_true(as_fp4_dec(as_fp4_enc(5.0f)) == 4.0f);
    assert_true(as_fp4_dec(as_fp4_enc(0.75f)) == 1.0f);
}

static void test_weight_fp8_tensor_channel(void **st) {
    (void)st;
    int N = 7, K = 37;
    float *w = malloc(sizeof(float) * N * K), *wh = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++)
        w[i] = frand() * (i % 11 == 0 ? 3.0f : 0.2f);
    struct as_fpq_weight q;
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_FP8_TENSOR, 0, 0, "w", &q), 0);
    float amax = 0;
    for (int i = 0; i < N * K; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    assert_true(q.scale[0] == amax / 448.0f);
    as_fpq_dequant(&q, wh);
    for (int i = 0; i < N * K; i++) {
        assert_int_equal(q.codes[i], as_f32_to_fp8_e4m3(w[i] / q.scale[0]));
        assert_true(wh[i] == as_fp8_e4m3_to_f32(q.codes[i]) * q.scale[0]);
    }
    as_fpq_free(&q);
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_FP8_CHANNEL, 0, 0, "w", &q), 0);
    for (int n = 0; n < N; n++) {
        float m = 0;
        for (int k = 0; k < K; k++)
            m = fmaxf(m, fabsf(w[n * K + k]));
        assert_true(q.scale[n] == m / 448.0f);
        /* the row max maps to exactly 448 */
        for (int k = 0; k < K; k++)
            if (fabsf(w[n * K + k]) == m) assert_int_equal(q.codes[n * K + k] & 0x7F, 0x7E);
    }
    as_fpq_free(&q);
    /* non-finite input is rejected with the tensor's name */
    w[5] = NAN;
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_FP8_TENSOR, 0, 0, "layer.q", &q), -1);
    assert_non_null(strstr(as_last_error(), "layer.q"));
    free(w), free(wh);
}

static void test_weight_fp8_block_ragged(void **st) {
    (void)st;
    int N = 20, K = 70, B = 16; /* ragged in both dimensions: 2x5 grid */
    float *w = malloc(sizeof(float) * N * K), *wh = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++)
        w[i] = frand();
    w[19 * K + 69] = 9.0f; /* the corner block's max */
    struct as_fpq_weight q;
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_FP8_BLOCK, B, 0, "w", &q), 0);
    assert_int_equal(q.sn, 2), assert_int_equal(q.sk, 5);
    assert_true(q.scale[1 * 5 + 4] == 9.0f / 448.0f);
    as_fpq_dequant(&q, wh);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            float s = q.scale[(n / B) * 5 + k / B];
            assert_true(wh[n * K + k] ==
                        as_fp8_e4m3_to_f32(as_f32_to_fp8_e4m3(w[n * K + k] / s)) * s);
        }
    as_fpq_free(&q);
    free(w), free(wh);
}

static void test_weight_int8_int4(void **st) {
    (void)st;
    int N = 5, K = 40;
    float *w = malloc(sizeof(float) * N * K), *wh = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++)
        w[i] = frand();
    struct as_fpq_weight q;
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_INT8_CHANNEL, 0, 0, "w", &q), 0);
    for (int n = 0; n < N; n++) {
        float m = 0;
        for (int k = 0; k < K; k++)
            m = fmaxf(m, fabsf(w[n * K + k]));
        assert_true(q.scale[n] == m / 127.0f);
        for (int k = 0; k < K; k++) {
            double r = nearbyint((double)(w[n * K + k] / q.scale[n]));
            assert_int_equal((int8_t)q.codes[n * K + k], (int)r);
        }
    }
    as_fpq_free(&q);
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_INT4_GROUP, 16, 0, "w", &q), 0);
    assert_int_equal(q.sk, 3); /* 16 + 16 + 8 */
    as_fpq_dequant(&q, wh);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int g = k / 16, len = g == 2 ? 8 : 16;
            float m = 0;
            for (int i = 0; i < len; i++)
                m = fmaxf(m, fabsf(w[n * K + g * 16 + i]));
            float s = 2 * m / 15.0f;
            assert_true(q.scale[n * 3 + g] == s);
            float c = fminf(fmaxf(rintf(w[n * K + k] / s) + 8, 0), 15);
            assert_true(wh[n * K + k] == s * (c - 8));
        }
    as_fpq_free(&q);
    free(w), free(wh);
}

static void test_weight_nvfp4_mxfp4(void **st) {
    (void)st;
    int N = 3, K = 64;
    float *w = malloc(sizeof(float) * N * K), *wh = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++)
        w[i] = frand() * 2.0f;
    for (int k = 16; k < 32; k++)
        w[k] = 0; /* an all-zero block */
    struct as_fpq_weight q;
    float amax = 0;
    for (int i = 0; i < N * K; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_NVFP4, 0, 0, "w", &q), 0);
    assert_true(q.global_scale == 448.0f * 6.0f / amax);
    as_fpq_dequant(&q, wh);
    for (int n = 0; n < N; n++)
        for (int b = 0; b < K / 16; b++) {
            float m = 0;
            for (int i = 0; i < 16; i++)
                m = fmaxf(m, fabsf(w[n * K + b * 16 + i]));
            uint8_t bs = as_f32_to_fp8_e4m3(q.global_scale * m / 6.0f); /* REFERENCE NVFP4 */
            assert_int_equal(q.scale8[n * 4 + b], bs);
            float eff = as_fp8_e4m3_to_f32(bs) / q.global_scale;
            for (int i = 0; i < 16; i++) {
                int k = b * 16 + i;
                uint8_t c = eff > 0 ? as_f32_to_fp4_e2m1(w[n * K + k] / eff) : 0;
                uint8_t byte = q.codes[(n * K + k) / 2];
                assert_int_equal((k % 2 ? byte >> 4 : byte) & 15, c); /* even column low nibble */
                assert_true(wh[n * K + k] == as_fp4_e2m1_to_f32(c) * eff);
            }
        }
    as_fpq_free(&q);
    /* a given (shared) global scale is used as is */
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_NVFP4, 0, 123.0f, "w", &q), 0);
    assert_true(q.global_scale == 123.0f);
    as_fpq_free(&q);
    assert_int_equal(as_fpq_quantize(w, N, K, AS_WQ_MXFP4, 0, 0, "w", &q), 0);
    for (int n = 0; n < N; n++)
        for (int b = 0; b < 2; b++) {
            float m = 0;
            for (int i = 0; i < 32; i++)
                m = fmaxf(m, fabsf(w[n * K + b * 32 + i]));
            /* OCP MX: 2^(floor(log2 amax) - 2) */
            int e = (int)floor(log2(m)) - 2;
            assert_int_equal(q.scale8[n * 2 + b], e + 127);
            float s = ldexpf(1.0f, e);
            for (int i = 0; i < 32; i++) {
                int k = b * 32 + i;
                uint8_t byte = q.codes[(n * K + k) / 2];
                assert_int_equal((k % 2 ? byte >> 4 : byte) & 15,
                                 as_f32_to_fp4_e2m1(w[n * K + k] / s));
            }
        }
    as_fpq_free(&q);
    assert_int_equal(as_fpq_quantize(w, 1, 63, AS_WQ_NVFP4, 0, 0, "odd", &q), -1);
    assert_non_null(strstr(as_last_error(), "odd"));
    free(w), free(wh);
}

static void test_act_fake_quant(void **st) {
    (void)st;
    int T = 4, D = 300;
    float *x = malloc(sizeof(float) * T * D), *y = malloc(sizeof(float) * T * D);
    for (int i = 0; i < T * D; i++)
        x[i] = frand() * (i % 97 == 0 ? 20.0f : 1.0f);
    /* static FP8 */
    as_act_fake_quant(AS_AQ_FP8_STATIC, 0.01f, x, y, T, D);
    for (int i = 0; i < T * D; i++)
        assert_true(y[i] == as_fp8_e4m3_to_f32(as_f32_to_fp8_e4m3(x[i] / 0.01f)) * 0.01f);
    /* per token FP8 and INT8 */
    as_act_fake_quant(AS_AQ_FP8_TOKEN, 0, x, y, T, D);
    for (int t = 0; t < T; t++) {
        float m = 0;
        for (int j = 0; j < D; j++)
            m = fmaxf(m, fabsf(x[t * D + j]));
        float s = m / 448.0f;
        for (int j = 0; j < D; j++)
            assert_true(y[t * D + j] ==
                        as_fp8_e4m3_to_f32(as_f32_to_fp8_e4m3(x[t * D + j] / s)) * s);
    }
    as_act_fake_quant(AS_AQ_INT8_TOKEN, 0, x, y, T, D);
    for (int t = 0; t < T; t++) {
        float m = 0;
        for (int j = 0; j < D; j++)
            m = fmaxf(m, fabsf(x[t * D + j]));
        float s = m / 127.0f;
        for (int j = 0; j < D; j++)
            assert_true(y[t * D + j] == rintf(x[t * D + j] / s) * s);
    }
    /* FP8 group 128: the third group of 44 columns has its own scale */
    as_act_fake_quant(AS_AQ_FP8_GROUP128, 0, x, y, 1, D);
    float m = 0;
    for (int j = 256; j < D; j++)
        m = fmaxf(m, fabsf(x[j]));
    assert_true(y[299] ==
                as_fp8_e4m3_to_f32(as_f32_to_fp8_e4m3(x[299] / (m / 448.0f))) * (m / 448.0f));
    /* static INT8 clamps */
    float big[2] = {1000.0f, -1000.0f}, out[2];
    as_act_fake_quant(AS_AQ_INT8_STATIC, 1.0f, big, out, 1, 2);
    assert_true(out[0] == 127.0f && out[1] == -128.0f);
    /* none copies */
    as_act_fake_quant(AS_AQ_NONE, 0, x, y, T, D);
    assert_memory_equal(x, y, sizeof(float) * T * D);
    /* names round-trip */
    for (int k = 0; k < AS_AQ_COUNT; k++)
        assert_int_equal(as_aq_from_name(as_aq_names[k]), k);
    for (int k = 0; k < AS_WQ_COUNT; k++)
        assert_int_equal(as_wq_from_name(as_wq_names[k]), k);
    assert_int_equal(as_aq_from_name("fp9"), -1);
    free(x), free(y);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static struct as_model_config small_cfg(void) {
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.hidden = 32, c.intermediate = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 8, c.vocab = 40, c.max_pos = 64, c.rms_eps = 1e-5f, c.rope_theta = 10000;
    c.bos_id = 1, c.eos_id = 2;
    return c;
}

/* An identity quant hook gives bit-identical logits; FP8 fake quant changes them, slightly. */
static const float *copy_hook(void *ctx, int layer, enum as_linear_group g, const float *x, int T,
                              int d) {
    (void)layer, (void)g;
    float *buf = ctx;
    memcpy(buf, x, sizeof(float) * T * d);
    return buf;
}

static void test_forward_hook(void **st) {
    (void)st;
    char dir[] = "/tmp/test_fpquant_XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct as_model_config c = small_cfg();
    assert_int_equal(as_model_write_random(&c, AS_F32, 7, dir), 0);
    struct as_model *m = as_model_load(dir);
    assert_non_null(m);
    int T = 16, tok[16];
    for (int i = 0; i < T; i++)
        tok[i] = (i * 7 + 3) % c.vocab;
    struct as_run_state *s = as_state_new(m, T, T, 0);
    size_t nl = (size_t)T * c.vocab;
    float *ref = malloc(sizeof(float) * nl), *got = malloc(sizeof(float) * nl);
    assert_int_equal(as_forward(m, s, tok, T, AS_LOGITS_ALL, NULL), 0);
    memcpy(ref, s->logits, sizeof(float) * nl);
    float *buf = malloc(sizeof(float) * T * c.intermediate);
    s->quant_linear_input = copy_hook, s->qctx = buf;
    as_state_reset(s);
    assert_int_equal(as_forward(m, s, tok, T, AS_LOGITS_ALL, NULL), 0);
    assert_memory_equal(ref, s->logits, sizeof(float) * nl);
    /* FP8 per token on every group: close but not equal */
    struct as_act_quant *aq = as_act_quant_new(c.n_layers);
    assert_int_equal(as_act_quant_attach(aq, s), 0); /* inactive: detaches */
    assert_null(s->quant_linear_input);
    as_act_quant_set_all(aq, AS_AQ_FP8_TOKEN);
    assert_int_equal(as_act_quant_attach(aq, s), 1);
    as_state_reset(s);
    assert_int_equal(as_forward(m, s, tok, T, AS_LOGITS_ALL, NULL), 0);
    memcpy(got, s->logits, sizeof(float) * nl);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < nl; i++)
        diff += fabs(got[i] - ref[i]), norm += fabs(ref[i]);
    assert_true(diff > 0 && diff < 0.1 * norm);
    as_act_quant_free(aq);
    as_state_free(s);
    as_model_free(m);
    free(ref), free(got), free(buf);
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* as_pack_fp round trip on a random model: every format read back through the engine loaders
 * equals DEC(code) * scale; input scales come back as the act-quant config. */
static void test_pack_roundtrip(void **st) {
    (void)st;
    char dir[] = "/tmp/test_fpquant_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char model[300], strm[300], out[300];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(strm, sizeof strm, "%s/q.astr", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    struct as_model_config c = small_cfg();
    assert_int_equal(mkdir(model, 0755), 0);
    assert_int_equal(as_model_write_random(&c, AS_F32, 11, model), 0);
    as_register_model_loaders();
    struct as_model *m = as_model_load(model);
    assert_non_null(m);
    static const struct {
        enum as_wq_kind wk;
        enum as_aq_kind ak;
        const char *fmt;
        int block;
    } cases[] = {{AS_WQ_FP8_TENSOR, AS_AQ_FP8_STATIC, "float-quantized", 0},
                 {AS_WQ_FP8_CHANNEL, AS_AQ_FP8_TOKEN, "ct-fp", 0},
                 {AS_WQ_FP8_BLOCK, AS_AQ_FP8_GROUP128, "float-quantized", 16},
                 {AS_WQ_FP8_BLOCK, AS_AQ_FP8_GROUP128, "fp8", 16},
                 {AS_WQ_INT8_CHANNEL, AS_AQ_INT8_TOKEN, "int-quantized", 0},
                 {AS_WQ_NVFP4, AS_AQ_NVFP4, "nvfp4-pack-quantized", 0},
                 {AS_WQ_MXFP4, AS_AQ_MXFP4, "mxfp4-pack-quantized", 0},
                 {AS_WQ_INT4_GROUP, AS_AQ_FP8_STATIC, "w4a8", 16},
                 {AS_WQ_NVFP4, AS_AQ_NVFP4, "fakequant-fp", 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        FILE *f = fopen(strm, "wb");
        struct as_stream_writer *w = as_stream_writer_fd(fileno(f), strm);
        for (int l = 0; l < c.n_layers; l++)
            for (int which = 0; which < AS_LIN_COUNT; which++) {
                int rows, cols;
                as_model_linear_shape(m, (enum as_linear)which, &rows, &cols);
                struct as_fpq_weight q;
                assert_int_equal(as_fpq_quantize(m->layers[l].w[which], rows, cols, cases[ci].wk,
                                                 cases[ci].block, 0, "w", &q),
                                 0);
                char prefix[200];
                snprintf(prefix, sizeof prefix, "model.layers.%d.%s.%s", l,
                         which <= AS_LIN_O ? "self_attn" : "mlp", as_linear_name(which));
                float is = cases[ci].ak == AS_AQ_FP8_STATIC ? 0.01f * (which + 1)
                           : cases[ci].ak == AS_AQ_NVFP4    ? 500.0f + which
                                                            : 0;
                assert_int_equal(as_fplinear_write(w, prefix, l, &q, cases[ci].ak, is, NULL), 0);
                as_fpq_free(&q);
            }
        assert_int_equal(as_stream_write_end(w), 0);
        as_stream_writer_free(w);
        fclose(f);
        /* a fresh directory per case: model_loaders.c caches configs per directory name */
        snprintf(out, sizeof out, "%s/out%zu", dir, ci);
        char *inputs[1] = {strm};
        struct as_pack_fp_opts po = {model, out, cases[ci].fmt, "model", 1, 0, 1, inputs};
        int rc = as_pack_fp(&po);
        if (rc) fprintf(stderr, "%s\n", as_last_error());
        assert_int_equal(rc, 0);
        struct as_model *qm = as_model_load(out);
        if (!qm) fprintf(stderr, "%s\n", as_last_error());
        assert_non_null(qm);
        /* weights: independent dequant of a fresh quantization */
        for (int l = 0; l < c.n_layers; l++)
            for (int which = 0; which < AS_LIN_COUNT; which++) {
                int rows, cols;
                as_model_linear_shape(m, (enum as_linear)which, &rows, &cols);
                struct as_fpq_weight q;
                as_fpq_quantize(m->layers[l].w[which], rows, cols, cases[ci].wk, cases[ci].block, 0,
                                "w", &q);
                float *wh = malloc(sizeof(float) * rows * cols);
                as_fpq_dequant(&q, wh);
                assert_memory_equal(wh, qm->layers[l].w[which], sizeof(float) * rows * cols);
                free(wh);
                as_fpq_free(&q);
            }
        struct as_act_quant *aq;
        assert_int_equal(as_act_quant_from_checkpoint(qm, out, &aq), 0);
        assert_non_null(aq);
        for (int l = 0; l < c.n_layers; l++) {
            for (int g = 0; g < AS_GROUP_COUNT; g++)
                assert_int_equal(aq->kind[l * AS_GROUP_COUNT + g], cases[ci].ak);
            if (cases[ci].ak == AS_AQ_FP8_STATIC) { /* q/k/v share the max: v's 0.03 */
                assert_true(aq->scale[l * AS_GROUP_COUNT + AS_GROUP_ATTN_QKV] == 0.01f * 3);
                assert_true(aq->scale[l * AS_GROUP_COUNT + AS_GROUP_MLP_DOWN] == 0.01f * 7);
            }
            if (cases[ci].ak == AS_AQ_NVFP4) /* global scales: the min (largest amax) */
                assert_true(aq->scale[l * AS_GROUP_COUNT + AS_GROUP_ATTN_QKV] == 500.0f);
        }
        as_act_quant_free(aq);
        as_model_free(qm);
    }
    as_model_free(m);
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* Bad checkpoints give one-line errors naming file and tensor. */
static void test_loader_errors(void **st) {
    (void)st;
    char dir[] = "/tmp/test_fpquant_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int N = 4, K = 32;
    uint8_t codes[128] = {0};
    float s2[2] = {1, 1}, s1 = 0.5f, neg = -1.0f;
    struct as_st_writer *w = as_st_writer_new(path);
    int64_t sh[2] = {N, K}, sh2[2] = {2, 1}, sh1[1] = {1};
    as_st_writer_add_copy(w, "a.weight", AS_F8_E4M3, 2, sh, codes, 128);
    as_st_writer_add_copy(w, "a.weight_scale", AS_F32, 2, sh2, s2, 8); /* wrong: [2,1] */
    as_st_writer_add_copy(w, "b.weight", AS_F8_E4M3, 2, sh, codes, 128);
    as_st_writer_add_copy(w, "b.weight_scale", AS_F32, 1, sh1, &neg, 4); /* negative */
    as_st_writer_add_copy(w, "c.weight", AS_F8_E4M3, 2, sh, codes, 128);
    as_st_writer_add_copy(w, "c.weight_scale", AS_F32, 1, sh1, &s1, 4);
    assert_int_equal(as_st_writer_finish(w), 0);
    struct as_ckpt *ck = as_ckpt_open(dir);
    assert_non_null(ck);
    json_error_t e;
    json_t *qc =
        json_loads("{\"quant_method\":\"compressed-tensors\",\"format\":\"float-quantized\","
                   "\"config_groups\":{\"g\":{\"targets\":[\"Linear\"],\"weights\":"
                   "{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"channel\"},"
                   "\"format\":\"float-quantized\"}},\"ignore\":[\"lm_head\"]}",
                   0, &e);
    assert_non_null(qc);
    float dst[128];
    assert_int_equal(as_fp_load_linear(ck, qc, "a", N, K, dst), -1);
    assert_non_null(strstr(as_last_error(), "a.weight_scale"));
    assert_non_null(strstr(as_last_error(), "expected [4, 1]"));
    json_object_set_new(
        json_object_get(json_object_get(json_object_get(qc, "config_groups"), "g"), "weights"),
        "strategy", json_string("tensor"));
    assert_int_equal(as_fp_load_linear(ck, qc, "b", N, K, dst), -1);
    assert_non_null(strstr(as_last_error(), "b.weight_scale"));
    assert_int_equal(as_fp_load_linear(ck, qc, "c", N, K, dst), 1);
    assert_true(dst[0] == 0.0f);
    assert_int_equal(as_fp_load_linear(ck, qc, "missing", N, K, dst), -1);
    assert_non_null(strstr(as_last_error(), "missing.weight_scale"));
    assert_int_equal(as_fp_load_linear(ck, qc, "lm_head", N, K, dst), 0); /* ignored */
    assert_int_equal(as_fp_load_linear(ck, qc, "c", N, K + 1, dst), -1);  /* wrong shape */
    assert_non_null(strstr(as_last_error(), "c.weight"));
    json_decref(qc);
    as_ckpt_close(ck);
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_codec_against_reference),
        cmocka_unit_test(test_fp4_codec),
        cmocka_unit_test(test_weight_fp8_tensor_channel),
        cmocka_unit_test(test_weight_fp8_block_ragged),
        cmocka_unit_test(test_weight_int8_int4),
        cmocka_unit_test(test_weight_nvfp4_mxfp4),
        cmocka_unit_test(test_act_fake_quant),
        cmocka_unit_test(test_forward_hook),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_loader_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
