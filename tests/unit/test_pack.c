/* test_pack: GPTQ v1 and compressed-tensors pack-quantized writers (pack_gptq.c, pack_ct.c) and
 * the dequantizing loader (quant_load.c).
 *
 * Expectations are computed independently of the packers: the dequantized file must equal
 * stored_scale * (q - zero) bit for bit, where stored_scale is the scale rounded to the file's
 * dtype; word layouts are checked against REFERENCE.md's formulas and a literal transcription of
 * AutoGPTQ's 3-bit pack() loop; tests/tools/pack_oracle.py (numpy + safetensors, written from the
 * format description) re-reads every round-trip file and must produce the same matrix.
 * Float-minimum layers (minv): every integer format refuses them with a reason naming the float
 * minimum; the stream records carry minv and dequantize to scale * q + minv. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "dtype.h"
#include "pack_formats.h"
#include "qstream.h"
#include "quant_load.h"
#include "safetensors.h"

static char tmpdir[256];
static const char *PREFIX = "model.layers.3.self_attn.q_proj";

/* ---- helpers ---- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rndf(void) {
    return (float)(rnd() >> 40) / (float)(1 << 24);
}

struct spec {
    int N, K, bits, group, sym, act;
};

/* Random layer. zero_min: smallest asymmetric zero point (GPTQ v1 cannot store 0). */
static struct as_qlinear make_layer(struct spec s, int zero_min) {
    struct as_qlinear l = {.N = s.N,
                           .K = s.K,
                           .bits = s.bits,
                           .group_size = s.group,
                           .sym = s.sym,
                           .has_act_order = s.act};
    int G = as_qlinear_groups(&l), maxq = (1 << s.bits) - 1;
    l.q = malloc((size_t)s.N * s.K);
    l.scale = malloc((size_t)s.N * G * sizeof(float));
    l.zero = malloc((size_t)s.N * G * sizeof(int32_t));
    l.g_idx = malloc((size_t)s.K * sizeof(int32_t));
    for (int i = 0; i < s.N * s.K; i++)
        l.q[i] = (uint8_t)(rnd() % (uint64_t)(maxq + 1));
    for (int i = 0; i < s.N * G; i++) {
        l.scale[i] = 1e-3f + 0.05f * rndf(); /* not fp16/bf16-exact: rounding matters */
        l.zero[i] =
            s.sym ? (maxq + 1) / 2 : zero_min + (int32_t)(rnd() % (uint64_t)(maxq + 1 - zero_min));
    }
    /* Act-order: columns processed in a random order, group = position / group_size. */
    int *perm = malloc((size_t)s.K * sizeof(int));
    for (int k = 0; k < s.K; k++)
        perm[k] = k;
    if (s.act)
        for (int k = s.K - 1; k > 0; k--) {
            int j = (int)(rnd() % (uint64_t)(k + 1)), t = perm[k];
            perm[k] = perm[j];
            perm[j] = t;
        }
    for (int i = 0; i < s.K; i++)
        l.g_idx[perm[i]] = s.group > 0 ? i / s.group : 0;
    free(perm);
    return l;
}

static void free_layer(struct as_qlinear *l) {
    free(l->q);
    free(l->scale);
    free(l->zero);
    free(l->g_idx);
}

static float round_to(enum as_dtype t, float x) {
    if (t == AS_F16) return as_f16_to_f32(as_f32_to_f16(x));
    if (t == AS_BF16) return as_bf16_to_f32(as_f32_to_bf16(x));
    return x;
}

/* The independent expectation: stored_scale * (q - zero) in f32. */
static float *expected_dequant(const struct as_qlinear *l, enum as_dtype scale_t) {
    int G = as_qlinear_groups(l);
    float *e = malloc((size_t)l->N * l->K * sizeof(float));
    for (int n = 0; n < l->N; n++)
        for (int k = 0; k < l->K; k++) {
            int g = l->g_idx[k];
            e[(size_t)n * l->K + k] = round_to(scale_t, l->scale[n * G + g]) *
                                      (float)((int)l->q[(size_t)n * l->K + k] - l->zero[n * G + g]);
        }
    return e;
}

static void path_in(char *buf, size_t n, const char *sub, const char *file) {
    snprintf(buf, n, "%s/%s%s%s", tmpdir, sub, *file ? "/" : "", file);
}

static void write_json(const char *path, const json_t *j) {
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(1)), 0);
}

static void write_f32(const char *path, const float *v, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(v, sizeof(float), n, f), n);
    fclose(f);
}

/* Jobs for the Python oracle, run once by test_oracle (one interpreter start). */
static FILE *jobs;
static int n_jobs;

static void add_job(const char *fmt, const char *sub, const float *expect, size_t n) {
    char cfg[512], st[512], exp[512], out[512];
    path_in(cfg, sizeof cfg, sub, "quant_config.json");
    path_in(st, sizeof st, sub, "model.safetensors");
    path_in(exp, sizeof exp, sub, "expected.f32");
    path_in(out, sizeof out, sub, "oracle.f32");
    write_f32(exp, expect, n);
    fprintf(jobs, "%s %s %s %s %s %s\n", fmt, cfg, st, PREFIX, exp, out);
    n_jobs++;
}

/* Load the layer back through the engine's entry point and compare bitwise. */
static void load_and_compare(const char *dir, const json_t *cfg, const struct as_qlinear *l,
                             const float *expect) {
    struct as_ckpt *c = as_ckpt_open(dir);
    if (!c) fail_msg("open %s: %s", dir, as_last_error());
    float *got = malloc((size_t)l->N * l->K * sizeof(float));
    int rc = as_quant_load_linear(c, cfg, PREFIX, l->N, l->K, got);
    if (rc != 1) fail_msg("load rc %d: %s", rc, as_last_error());
    for (size_t i = 0; i < (size_t)l->N * l->K; i++)
        if (memcmp(&got[i], &expect[i], 4))
            fail_msg("mismatch at [%zu,%zu]: got %.9g expected %.9g", i / l->K, i % l->K, got[i],
                     expect[i]);
    free(got);
    as_ckpt_close(c);
}

/* Find tensor NAME in an open checkpoint and copy its u32 words. */
static uint32_t *tensor_words(struct as_ckpt *c, const char *suffix, size_t *n) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", PREFIX, suffix);
    const struct as_st_tensor *t = as_ckpt_find(c, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, AS_I32);
    uint32_t *w = malloc(t->nbytes);
    memcpy(w, t->data, t->nbytes);
    *n = t->numel;
    return w;
}

static void write_gptq_case(const char *sub, const struct as_qlinear *l, json_t **cfg_out) {
    char dir[512], st[512], cfgp[512];
    path_in(dir, sizeof dir, sub, "");
    mkdir(dir, 0755);
    path_in(st, sizeof st, sub, "model.safetensors");
    path_in(cfgp, sizeof cfgp, sub, "quant_config.json");
    struct as_st_writer *w = as_st_writer_new(st);
    assert_non_null(w);
    if (as_gptq_write(w, PREFIX, l)) fail_msg("%s", as_last_error());
    assert_int_equal(as_st_writer_finish(w), 0);
    struct as_gptq_params p = {.bits = l->bits,
                               .group_size = l->group_size,
                               .sym = l->sym,
                               .desc_act = l->has_act_order,
                               .true_sequential = 1,
                               .damp_percent = 0.01};
    json_t *cfg = as_gptq_quant_config(&p, NULL, 0);
    write_json(cfgp, cfg);
    *cfg_out = cfg;
}

/* Literal transcription of AutoGPTQ QuantLinear.pack() for one column (bits 2/4/8 and 3). */
static void autogptq_pack_column(const uint32_t *iw, int K, int bits, uint32_t *out) {
    int i = 0, row = 0, rows = K / 32 * bits;
    memset(out, 0, (size_t)rows * 4);
    while (row < rows) {
        if (bits != 3) {
            for (int j = i; j < i + 32 / bits; j++)
                out[row] |= iw[j] << (bits * (j - i));
            i += 32 / bits;
            row++;
        } else {
            for (int j = i; j < i + 10; j++)
                out[row] |= iw[j] << (3 * (j - i));
            i += 10;
            out[row] |= iw[i] << 30;
            row++;
            out[row] |= (iw[i] >> 2) & 1;
            i++;
            for (int j = i; j < i + 10; j++)
                out[row] |= iw[j] << (3 * (j - i) + 1);
            i += 10;
            out[row] |= iw[i] << 31;
            row++;
            out[row] |= (iw[i] >> 1) & 0x3;
            i++;
            for (int j = i; j < i + 10; j++)
                out[row] |= iw[j] << (3 * (j - i) + 2);
            i += 10;
            row++;
        }
    }
}

/* ---- tests ---- */
static void test_gptq_pack_matches_autogptq(void **state) {
    (void)state;
    int bitsv[] = {2, 3, 4, 8};
    for (int b = 0; b < 4; b++) {
        struct spec s = {32, 96, bitsv[b], 32, 0, 0};
        struct as_qlinear l = make_layer(s, 1);
        int rows = s.K * s.bits / 32;
        uint32_t *qw = malloc((size_t)rows * s.N * 4), *col = malloc((size_t)rows * 4),
                 *iw = malloc((size_t)s.K * 4);
        as_gptq_pack_qweight(&l, qw);
        for (int n = 0; n < s.N; n++) {
            for (int k = 0; k < s.K; k++)
                iw[k] = l.q[n * s.K + k];
            autogptq_pack_column(iw, s.K, s.bits, col);
            for (int r = 0; r < rows; r++)
                if (qw[r * s.N + n] != col[r])
                    fail_msg("bits %d: qweight[%d,%d] = %08x, AutoGPTQ %08x", s.bits, r, n,
                             qw[r * s.N + n], col[r]);
        }
        /* qzeros: AutoGPTQ packs zero-1 along N with the same loop. */
        int G = as_qlinear_groups(&l), zc = s.N * s.bits / 32;
        uint32_t *qz = malloc((size_t)G * zc * 4), *zcol = malloc((size_t)zc * 4),
                 *zv = malloc((size_t)s.N * 4);
        as_gptq_pack_qzeros(&l, qz);
        for (int g = 0; g < G; g++) {
            for (int n = 0; n < s.N; n++)
                zv[n] = (uint32_t)(l.zero[n * G + g] - 1);
            autogptq_pack_column(zv, s.N, s.bits, zcol);
            for (int c = 0; c < zc; c++)
                assert_int_equal(qz[g * zc + c], zcol[c]);
        }
        free(qz);
        free(zcol);
        free(zv);
        free(qw);
        free(col);
        free(iw);
        free_layer(&l);
    }
}

/* REFERENCE.md: 4-bit word[r,n] bits 4j..4j+3 = q[8r+j, n] (q as [K,N]); symmetric qzeros. */
static void test_gptq_layout_and_sym_qzeros(void **state) {
    (void)state;
    struct spec s = {64, 128, 4, 32, 1, 0};
    struct as_qlinear l = make_layer(s, 1);
    json_t *cfg;
    write_gptq_case("layout4", &l, &cfg);
    char dir[512];
    path_in(dir, sizeof dir, "layout4", "");
    struct as_ckpt *c = as_ckpt_open(dir);
    assert_non_null(c);
    size_t n;
    uint32_t *qw = tensor_words(c, "qweight", &n);
    assert_int_equal(n, (size_t)(s.K / 8) * s.N);
    for (int r = 0; r < s.K / 8; r++)
        for (int col = 0; col < s.N; col++)
            for (int j = 0; j < 8; j++)
                assert_int_equal((qw[r * s.N + col] >> (4 * j)) & 15, l.q[col * s.K + 8 * r + j]);
    uint32_t *qz = tensor_words(c, "qzeros", &n);
    assert_int_equal(n, 4 * (size_t)s.N / 8);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(qz[i], 0x77777777u);
    const struct as_st_tensor *t = as_ckpt_find(c, "model.layers.3.self_attn.q_proj.scales");
    assert_non_null(t);
    assert_int_equal(t->dtype, AS_F16);
    assert_int_equal(t->shape[0], 4);
    assert_int_equal(t->shape[1], s.N);
    free(qw);
    free(qz);
    as_ckpt_close(c);
    json_decref(cfg);
    free_layer(&l);

    /* Symmetric 8-bit stores 127 = 0x7F per byte; 2-bit stores 1 per lane. */
    struct {
        int bits;
        uint32_t word;
    } sy[] = {{8, 0x7F7F7F7Fu}, {2, 0x55555555u}};
    for (int i = 0; i < 2; i++) {
        struct spec s2 = {32, 64, sy[i].bits, -1, 1, 0};
        struct as_qlinear l2 = make_layer(s2, 1);
        uint32_t z[8];
        as_gptq_pack_qzeros(&l2, z);
        for (int j = 0; j < s2.N * s2.bits / 32; j++)
            assert_int_equal(z[j], sy[i].word);
        free_layer(&l2);
    }
}

static void test_gptq_roundtrip(void **state) {
    (void)state;
    int bitsv[] = {2, 3, 4, 8}, cases = 0;
    for (int b = 0; b < 4; b++)
        for (int sym = 0; sym < 2; sym++)
            for (int gi = 0; gi < 3; gi++) {
                int group = gi == 0 ? -1 : 32, act = gi == 2;
                struct spec s = {64, 128, bitsv[b], group, sym, act};
                struct as_qlinear l = make_layer(s, 1);
                char why[256], sub[64];
                assert_int_equal(as_gptq_packable(&l, why, sizeof why), 1);
                snprintf(sub, sizeof sub, "gptq_%d_%d_%d", s.bits, sym, gi);
                json_t *cfg;
                write_gptq_case(sub, &l, &cfg);
                float *e = expected_dequant(&l, AS_F16);
                char dir[512];
                path_in(dir, sizeof dir, sub, "");
                load_and_compare(dir, cfg, &l, e);
                /* config.json form (quantization_config nested) is accepted as well */
                json_t *full = json_pack("{s:O}", "quantization_config", cfg);
                load_and_compare(dir, full, &l, e);
                json_decref(full);
                add_job("gptq", sub, e, (size_t)s.N * s.K);
                free(e);
                json_decref(cfg);
                free_layer(&l);
                cases++;
            }
    assert_int_equal(cases, 24);
}

/* checkpoint_format "gptq_v2" (GPTQModel) stores zero itself: the same file then dequantizes
 * with every zero one lower, scale * (q - (zero - 1)). */
static void test_gptq_v2_zero_semantics(void **state) {
    (void)state;
    struct spec s = {32, 64, 4, 32, 0, 0};
    struct as_qlinear l = make_layer(s, 1);
    json_t *cfg;
    write_gptq_case("gptqv2", &l, &cfg);
    json_object_set_new(cfg, "checkpoint_format", json_string("gptq_v2"));
    for (int i = 0; i < s.N * 2; i++)
        l.zero[i] -= 1;
    float *e = expected_dequant(&l, AS_F16);
    char dir[512];
    path_in(dir, sizeof dir, "gptqv2", "");
    load_and_compare(dir, cfg, &l, e);
    free(e);
    json_decref(cfg);
    free_layer(&l);
}

static void write_ct_case(const char *sub, const struct as_qlinear *l, enum as_dtype st_t,
                          enum as_ct_actorder ao, json_t **cfg_out) {
    char dir[512], st[512], cfgp[512];
    path_in(dir, sizeof dir, sub, "");
    mkdir(dir, 0755);
    path_in(st, sizeof st, sub, "model.safetensors");
    path_in(cfgp, sizeof cfgp, sub, "quant_config.json");
    struct as_st_writer *w = as_st_writer_new(st);
    assert_non_null(w);
    if (as_ct_write(w, PREFIX, l, st_t, ao == AS_CT_ACTORDER_GROUP))
        fail_msg("%s", as_last_error());
    assert_int_equal(as_st_writer_finish(w), 0);
    struct as_ct_params p = {
        .bits = l->bits, .group_size = l->group_size, .sym = l->sym, .actorder = ao};
    json_t *cfg = as_ct_quant_config(&p);
    write_json(cfgp, cfg);
    *cfg_out = cfg;
}

/* REFERENCE.md: weight_packed element i at bits 4(i%8) of word i/8; zero point [ceil(N/8), G]
 * packed along the output dim. N = 20 and K = 44 exercise the padded last words. */
static void test_ct_layout(void **state) {
    (void)state;
    struct spec s = {20, 44, 4, -1, 0, 0};
    struct as_qlinear l = make_layer(s, 0);
    json_t *cfg;
    write_ct_case("ctlayout", &l, AS_BF16, AS_CT_ACTORDER_NONE, &cfg);
    char dir[512];
    path_in(dir, sizeof dir, "ctlayout", "");
    struct as_ckpt *c = as_ckpt_open(dir);
    assert_non_null(c);
    size_t n;
    uint32_t *wp = tensor_words(c, "weight_packed", &n);
    int cols = (s.K + 7) / 8;
    assert_int_equal(n, (size_t)s.N * cols);
    for (int r = 0; r < s.N; r++)
        for (int i = 0; i < cols * 8; i++) {
            uint32_t v = (wp[r * cols + i / 8] >> (4 * (i % 8))) & 15;
            assert_int_equal(v, i < s.K ? l.q[r * s.K + i] : 0); /* padding is zero */
        }
    uint32_t *zp = tensor_words(c, "weight_zero_point", &n);
    assert_int_equal(n, 3); /* [ceil(20/8), 1] */
    for (int i = 0; i < 24; i++)
        assert_int_equal((zp[i / 8] >> (4 * (i % 8))) & 15, i < s.N ? (uint32_t)l.zero[i] : 0);
    const struct as_st_tensor *t = as_ckpt_find(c, "model.layers.3.self_attn.q_proj.weight_shape");
    assert_non_null(t);
    int32_t shp[2];
    memcpy(shp, t->data, 8);
    assert_int_equal(shp[0], s.N);
    assert_int_equal(shp[1], s.K);
    t = as_ckpt_find(c, "model.layers.3.self_attn.q_proj.weight_scale");
    assert_int_equal(t->dtype, AS_BF16);
    assert_null(as_ckpt_find(c, "model.layers.3.self_attn.q_proj.weight_g_idx"));
    float *e = expected_dequant(&l, AS_BF16);
    as_ckpt_close(c);
    load_and_compare(dir, cfg, &l, e);
    add_job("ct", "ctlayout", e, (size_t)s.N * s.K);
    free(e);
    free(wp);
    free(zp);
    json_decref(cfg);
    free_layer(&l);
}

static void test_ct_roundtrip(void **state) {
    (void)state;
    int bitsv[] = {2, 4, 8}, cases = 0;
    enum as_dtype dts[] = {AS_F16, AS_BF16, AS_F32};
    for (int b = 0; b < 3; b++)
        for (int sym = 0; sym < 2; sym++)
            for (int gi = 0; gi < 3; gi++) {
                int group = gi == 0 ? -1 : 16, act = gi == 2;
                struct spec s = {40, 96, bitsv[b], group, sym, act};
                struct as_qlinear l = make_layer(s, 0);
                enum as_dtype dt = dts[cases % 3];
                char why[256], sub[64];
                assert_int_equal(as_ct_packable(&l, why, sizeof why), 1);
                snprintf(sub, sizeof sub, "ct_%d_%d_%d", s.bits, sym, gi);
                json_t *cfg;
                write_ct_case(sub, &l, dt, act ? AS_CT_ACTORDER_GROUP : AS_CT_ACTORDER_NONE, &cfg);
                float *e = expected_dequant(&l, dt);
                char dir[512];
                path_in(dir, sizeof dir, sub, "");
                load_and_compare(dir, cfg, &l, e);
                add_job("ct", sub, e, (size_t)s.N * s.K);
                free(e);
                json_decref(cfg);
                free_layer(&l);
                cases++;
            }
    assert_int_equal(cases, 18);
}

static void test_packable(void **state) {
    (void)state;
    char why[256];
    /* Ragged K = 172 with group 32: neither format (vLLM sizes scales K / group). */
    struct as_qlinear l = make_layer((struct spec){64, 172, 4, 32, 1, 0}, 1);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "multiple of 32")); /* 172*4 bits is not whole words */
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "ragged"));
    free_layer(&l);
    l = make_layer((struct spec){64, 168, 4, 32, 1, 0}, 1); /* 168*4 % 32 == 0, still ragged */
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "ragged"));
    free_layer(&l);
    /* Per channel, K = 172 is fine for compressed-tensors (ceil words), not for GPTQ. */
    l = make_layer((struct spec){64, 172, 4, -1, 1, 0}, 1);
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 1);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    free_layer(&l);
    /* Zero point 0: fine for compressed-tensors, impossible for GPTQ v1 (stores zero-1). */
    l = make_layer((struct spec){32, 64, 4, 32, 0, 0}, 1);
    l.zero[5] = 0;
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 1);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "zero point 0"));
    free_layer(&l);
    /* Symmetric flag with a zero other than 2^(bits-1). */
    l = make_layer((struct spec){32, 64, 4, 32, 1, 0}, 1);
    l.zero[3] = 7;
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 0);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    free_layer(&l);
    /* 3-bit: GPTQ yes, pack-quantized no; N*bits must fill whole qzeros words. */
    l = make_layer((struct spec){32, 64, 3, 32, 0, 0}, 1);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 1);
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 0);
    free_layer(&l);
    l = make_layer((struct spec){40, 64, 3, 32, 0, 0}, 1);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "qzeros"));
    free_layer(&l);
    /* fp16 overflow of a scale. */
    l = make_layer((struct spec){32, 64, 4, 32, 0, 0}, 1);
    l.scale[0] = 1e6f;
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "fp16"));
    free_layer(&l);
}

static void test_writer_bad_input(void **state) {
    (void)state;
    char st[512];
    path_in(st, sizeof st, "", "bad_writer.safetensors");
    struct as_st_writer *w = as_st_writer_new(st);
    assert_non_null(w);
    struct as_qlinear l = make_layer((struct spec){32, 64, 4, 32, 0, 1}, 1);
    l.q[70] = 16;
    assert_int_equal(as_gptq_write(w, PREFIX, &l), -1);
    assert_non_null(strstr(as_last_error(), "exceeds maxq"));
    assert_non_null(strstr(as_last_error(), PREFIX));
    l.q[70] = 3;
    l.g_idx[9] = 2;
    assert_int_equal(as_ct_write(w, PREFIX, &l, AS_F16, 1), -1);
    assert_non_null(strstr(as_last_error(), "g_idx[9]"));
    l.g_idx[9] = 1;
    /* permuted g_idx but no weight_g_idx requested */
    assert_int_equal(as_ct_write(w, PREFIX, &l, AS_F16, 0), -1);
    assert_non_null(strstr(as_last_error(), "weight_g_idx"));
    assert_int_equal(as_ct_write(w, PREFIX, &l, AS_I32, 1), -1);
    assert_non_null(strstr(as_last_error(), "scale dtype"));
    l.zero[0] = 0;
    assert_int_equal(as_gptq_write(w, PREFIX, &l), -1);
    assert_non_null(strstr(as_last_error(), "not packable as GPTQ"));
    assert_null(strchr(as_last_error(), '\n')); /* one line */
    as_st_writer_abort(w);
    assert_int_equal(access(st, F_OK), -1); /* the refused writes left no file */
    free_layer(&l);
}

static void test_configs(void **state) {
    (void)state;
    struct as_gptq_params gp = {.bits = 4,
                                .group_size = 128,
                                .sym = 1,
                                .desc_act = 1,
                                .static_groups = 0,
                                .true_sequential = 1,
                                .damp_percent = 0.01};
    const char *skip[] = {"model.layers.0.mlp.down_proj"};
    json_t *g = as_gptq_quant_config(&gp, skip, 1);
    assert_string_equal(json_string_value(json_object_get(g, "quant_method")), "gptq");
    assert_string_equal(json_string_value(json_object_get(g, "checkpoint_format")), "gptq");
    assert_int_equal(json_integer_value(json_object_get(g, "bits")), 4);
    assert_int_equal(json_integer_value(json_object_get(g, "group_size")), 128);
    assert_true(json_is_true(json_object_get(g, "desc_act")));
    assert_true(json_is_true(json_object_get(g, "sym")));
    assert_true(json_is_false(json_object_get(g, "static_groups")));
    assert_true(json_is_true(json_object_get(g, "true_sequential")));
    assert_true(json_is_real(json_object_get(g, "damp_percent")));
    assert_non_null(
        json_object_get(json_object_get(g, "dynamic"), "-:^model\\.layers\\.0\\.mlp\\.down_proj$"));
    json_decref(g);
    gp.group_size = 0;
    g = as_gptq_quant_config(&gp, NULL, 0);
    assert_int_equal(json_integer_value(json_object_get(g, "group_size")), -1);
    assert_null(json_object_get(g, "dynamic"));
    json_decref(g);

    struct as_ct_params cp = {
        .bits = 4, .group_size = 128, .sym = 0, .actorder = AS_CT_ACTORDER_GROUP};
    json_t *c = as_ct_quant_config(&cp);
    assert_string_equal(json_string_value(json_object_get(c, "quant_method")),
                        "compressed-tensors");
    assert_string_equal(json_string_value(json_object_get(c, "format")), "pack-quantized");
    assert_string_equal(json_string_value(json_object_get(c, "quantization_status")), "compressed");
    json_t *ign = json_object_get(c, "ignore");
    assert_int_equal(json_array_size(ign), 1);
    assert_string_equal(json_string_value(json_array_get(ign, 0)), "lm_head");
    json_t *wt =
        json_object_get(json_object_get(json_object_get(c, "config_groups"), "group_0"), "weights");
    assert_int_equal(json_integer_value(json_object_get(wt, "num_bits")), 4);
    assert_string_equal(json_string_value(json_object_get(wt, "type")), "int");
    assert_true(json_is_false(json_object_get(wt, "symmetric")));
    assert_string_equal(json_string_value(json_object_get(wt, "strategy")), "group");
    assert_string_equal(json_string_value(json_object_get(wt, "actorder")), "group");
    assert_true(json_is_null(json_object_get(wt, "block_structure")));
    assert_true(json_is_false(json_object_get(wt, "dynamic")));
    json_decref(c);
    cp.group_size = -1;
    cp.actorder = AS_CT_ACTORDER_NONE;
    c = as_ct_quant_config(&cp);
    wt =
        json_object_get(json_object_get(json_object_get(c, "config_groups"), "group_0"), "weights");
    assert_string_equal(json_string_value(json_object_get(wt, "strategy")), "channel");
    assert_true(json_is_null(json_object_get(wt, "group_size")));
    assert_true(json_is_null(json_object_get(wt, "actorder")));
    json_decref(c);
}

/* Returns 0 (caller loads PREFIX.weight) for unquantized layers. */
static void test_loader_not_quantized(void **state) {
    (void)state;
    char dir[512], st[512];
    path_in(dir, sizeof dir, "plain", "");
    mkdir(dir, 0755);
    path_in(st, sizeof st, "plain", "model.safetensors");
    struct as_st_writer *w = as_st_writer_new(st);
    float wt[4 * 32] = {0};
    int64_t shp[2] = {4, 32};
    char name[256];
    snprintf(name, sizeof name, "%s.weight", PREFIX);
    assert_int_equal(as_st_writer_add_copy(w, name, AS_F32, 2, shp, wt, sizeof wt), 0);
    assert_int_equal(as_st_writer_finish(w), 0);
    struct as_ckpt *c = as_ckpt_open(dir);
    assert_non_null(c);
    float dst[4 * 32];
    assert_int_equal(as_quant_load_linear(c, NULL, PREFIX, 4, 32, dst), 0);
    struct as_gptq_params gp = {.bits = 4, .group_size = 32, .sym = 1};
    json_t *g = as_gptq_quant_config(&gp, NULL, 0);
    assert_int_equal(as_quant_load_linear(c, g, PREFIX, 4, 32, dst), 0); /* fallback layer */
    json_decref(g);
    const char *skip[] = {PREFIX};
    g = as_gptq_quant_config(&gp, skip, 1);
    assert_int_equal(as_quant_load_linear(c, g, PREFIX, 4, 32, dst), 0);
    json_decref(g);
    struct as_ct_params cp = {.bits = 4, .group_size = 32, .sym = 1, .ignore = skip, .n_ignore = 1};
    json_t *ct = as_ct_quant_config(&cp);
    assert_int_equal(as_quant_load_linear(c, ct, PREFIX, 4, 32, dst), 0);
    json_decref(ct);
    json_t *awq = json_pack("{s:s}", "quant_method", "awq");
    assert_int_equal(as_quant_load_linear(c, awq, PREFIX, 4, 32, dst), 0);
    json_decref(awq);
    as_ckpt_close(c);
}

/* Hand-built GPTQ tensors (N = 32, K = 64, 4-bit, group 32 -> G = 2) with one defect each. */
enum gptq_defect {
    QW_DTYPE,
    QW_SHAPE,
    SC_DTYPE,
    SC_SHAPE,
    QZ_MISSING,
    GIDX_RANGE,
    QW_MISSING,
    N_GPTQ_DEFECTS
};

static int write_gptq_defect(const char *st, enum gptq_defect d) {
    static uint32_t qw[8 * 32], qz[2 * 4];
    static uint16_t sc[3 * 32];
    static int32_t gidx[64];
    for (int k = 0; k < 64; k++)
        gidx[k] = k / 32;
    if (d == GIDX_RANGE) gidx[3] = 5;
    for (int i = 0; i < 3 * 32; i++)
        sc[i] = 0x3C00; /* 1.0 */
    struct as_st_writer *w = as_st_writer_new(st);
    char name[256];
    int64_t s_qw[2] = {8, d == QW_SHAPE ? 31 : 32}, s_qz[2] = {2, 4},
            s_sc[2] = {d == SC_SHAPE ? 3 : 2, 32}, s_gi[1] = {64};
    int rc = 0;
    if (d != QW_MISSING) {
        snprintf(name, sizeof name, "%s.qweight", PREFIX);
        rc |= as_st_writer_add(w, name, d == QW_DTYPE ? AS_F32 : AS_I32, 2, s_qw, qw,
                               (uint64_t)s_qw[0] * s_qw[1] * 4);
    }
    if (d != QZ_MISSING) {
        snprintf(name, sizeof name, "%s.qzeros", PREFIX);
        rc |= as_st_writer_add(w, name, AS_I32, 2, s_qz, qz, sizeof qz);
    }
    snprintf(name, sizeof name, "%s.scales", PREFIX);
    if (d == SC_DTYPE)
        rc |= as_st_writer_add(w, name, AS_I16, 2, s_sc, sc, 2 * 32 * 2);
    else
        rc |= as_st_writer_add(w, name, AS_F16, 2, s_sc, sc, (uint64_t)s_sc[0] * 32 * 2);
    snprintf(name, sizeof name, "%s.g_idx", PREFIX);
    rc |= as_st_writer_add(w, name, AS_I32, 1, s_gi, gidx, sizeof gidx);
    return rc | as_st_writer_finish(w);
}

static void expect_load_error(const char *dir, const json_t *cfg, int N, int K,
                              const char *tensor_suffix, const char *problem) {
    struct as_ckpt *c = as_ckpt_open(dir);
    if (!c) fail_msg("open: %s", as_last_error());
    float *dst = malloc((size_t)N * K * sizeof(float));
    as_clear_error();
    int rc = as_quant_load_linear(c, cfg, PREFIX, N, K, dst);
    const char *e = as_last_error();
    if (rc != -1) fail_msg("expected -1, got %d for %s", rc, problem);
    if (tensor_suffix) {
        char name[256];
        snprintf(name, sizeof name, "%s.%s", PREFIX, tensor_suffix);
        if (!strstr(e, name)) fail_msg("error lacks tensor %s: %s", name, e);
    }
    if (!strstr(e, problem)) fail_msg("error lacks \"%s\": %s", problem, e);
    if (!strstr(e, tmpdir)) fail_msg("error lacks the file: %s", e);
    if (strchr(e, '\n')) fail_msg("error is not one line: %s", e);
    free(dst);
    as_ckpt_close(c);
}

static void test_loader_bad_gptq(void **state) {
    (void)state;
    static const struct {
        const char *tensor, *problem;
    } want[N_GPTQ_DEFECTS] = {
        [QW_DTYPE] = {"qweight", "dtype F32"}, [QW_SHAPE] = {"qweight", "shape [8, 31]"},
        [SC_DTYPE] = {"scales", "dtype I16"},  [SC_SHAPE] = {"scales", "shape [3, 32]"},
        [QZ_MISSING] = {"qzeros", "missing"},  [GIDX_RANGE] = {"g_idx", "g_idx[3] = 5"},
        [QW_MISSING] = {"qweight", "missing"},
    };
    char dir[512], st[512];
    path_in(dir, sizeof dir, "badgptq", "");
    mkdir(dir, 0755);
    path_in(st, sizeof st, "badgptq", "model.safetensors");
    struct as_gptq_params gp = {.bits = 4, .group_size = 32, .sym = 1};
    json_t *cfg = as_gptq_quant_config(&gp, NULL, 0);
    for (int d = 0; d < N_GPTQ_DEFECTS; d++) {
        assert_int_equal(write_gptq_defect(st, d), 0);
        expect_load_error(dir, cfg, 32, 64, want[d].tensor, want[d].problem);
    }
    /* config problems: bits missing, unknown checkpoint_format */
    assert_int_equal(write_gptq_defect(st, N_GPTQ_DEFECTS), 0);
    json_t *bad = json_deep_copy(cfg);
    json_object_del(bad, "bits");
    expect_load_error(dir, bad, 32, 64, NULL, "\"bits\"");
    json_decref(bad);
    bad = json_deep_copy(cfg);
    json_object_set_new(bad, "checkpoint_format", json_string("marlin"));
    expect_load_error(dir, bad, 32, 64, NULL, "checkpoint_format");
    json_decref(bad);
    /* a caller whose model says K = 72 (72*4 % 32 == 0) gets a shape error on qweight */
    expect_load_error(dir, cfg, 32, 72, "qweight", "expected [9, 32]");
    json_decref(cfg);
}

enum ct_defect { WP_DTYPE, WS_VALUE, SCALE_SHAPE, ZP_MISSING, ZP_SHAPE, N_CT_DEFECTS };

static int write_ct_defect(const char *st, enum ct_defect d) {
    /* N = 24, K = 64, 4-bit, group 32, asymmetric: packed [24, 8], scale [24, 2], zp [3, 2]. */
    static uint32_t wp[24 * 8], zp[4 * 2];
    static uint16_t sc[24 * 3];
    struct as_st_writer *w = as_st_writer_new(st);
    char name[256];
    int32_t shape[2] = {24, d == WS_VALUE ? 65 : 64};
    int64_t s_wp[2] = {24, 8}, s_sh[1] = {2}, s_sc[2] = {24, d == SCALE_SHAPE ? 3 : 2},
            s_zp[2] = {d == ZP_SHAPE ? 4 : 3, 2};
    int rc = 0;
    snprintf(name, sizeof name, "%s.weight_packed", PREFIX);
    if (d == WP_DTYPE)
        rc |= as_st_writer_add(w, name, AS_U32, 2, s_wp, wp, sizeof wp);
    else
        rc |= as_st_writer_add(w, name, AS_I32, 2, s_wp, wp, sizeof wp);
    snprintf(name, sizeof name, "%s.weight_shape", PREFIX);
    rc |= as_st_writer_add(w, name, AS_I32, 1, s_sh, shape, sizeof shape);
    snprintf(name, sizeof name, "%s.weight_scale", PREFIX);
    rc |= as_st_writer_add(w, name, AS_BF16, 2, s_sc, sc, (uint64_t)s_sc[1] * 24 * 2);
    if (d != ZP_MISSING) {
        snprintf(name, sizeof name, "%s.weight_zero_point", PREFIX);
        rc |= as_st_writer_add(w, name, AS_I32, 2, s_zp, zp, (uint64_t)s_zp[0] * 2 * 4);
    }
    return rc | as_st_writer_finish(w);
}

static void test_loader_bad_ct(void **state) {
    (void)state;
    static const struct {
        const char *tensor, *problem;
    } want[N_CT_DEFECTS] = {
        [WP_DTYPE] = {"weight_packed", "dtype U32"},
        [WS_VALUE] = {"weight_shape", "holds [24, 65]"},
        [SCALE_SHAPE] = {"weight_scale", "shape [24, 3]"},
        [ZP_MISSING] = {"weight_zero_point", "missing"},
        [ZP_SHAPE] = {"weight_zero_point", "shape [4, 2]"},
    };
    char dir[512], st[512];
    path_in(dir, sizeof dir, "badct", "");
    mkdir(dir, 0755);
    path_in(st, sizeof st, "badct", "model.safetensors");
    struct as_ct_params cp = {.bits = 4, .group_size = 32, .sym = 0};
    json_t *cfg = as_ct_quant_config(&cp);
    for (int d = 0; d < N_CT_DEFECTS; d++) {
        assert_int_equal(write_ct_defect(st, d), 0);
        expect_load_error(dir, cfg, 24, 64, want[d].tensor, want[d].problem);
    }
    /* 3-bit pack-quantized is refused by the reader with a reason */
    assert_int_equal(write_ct_defect(st, N_CT_DEFECTS), 0);
    json_t *bad = json_deep_copy(cfg);
    json_object_set_new(
        json_object_get(json_object_get(json_object_get(bad, "config_groups"), "group_0"),
                        "weights"),
        "num_bits", json_integer(3));
    expect_load_error(dir, bad, 24, 64, NULL, "num_bits");
    json_decref(bad);
    json_decref(cfg);
}

/* Runs tests/tools/pack_oracle.py once over all round-trip files. numpy and safetensors come with
 * `make deps` (.venv, first in PATH under tests/run): without them this fails, never skips. */
static void test_oracle(void **state) {
    (void)state;
    fclose(jobs);
    jobs = NULL;
    const char *script = "tests/tools/pack_oracle.py";
    if (access(script, R_OK) != 0 ||
        system("python3 -c 'import numpy, safetensors' >/dev/null 2>&1") != 0)
        fail_msg("%s or python3 with numpy and safetensors missing (make deps)", script);
    assert_true(n_jobs >= 40);
    char cmd[2048], jl[512], cwd[512];
    path_in(jl, sizeof jl, "", "jobs.txt");
    assert_non_null(getcwd(cwd, sizeof cwd));
    /* The oracle dequantizes every job's file, writes its matrix and compares it itself too. */
    snprintf(cmd, sizeof cmd, "python3 '%s/%s' '%s'", cwd, script, jl);
    int rc = system(cmd);
    assert_int_equal(rc, 0);
    /* Compare bitwise here as well: the oracle's matrix vs the independent expectation. */
    FILE *f = fopen(jl, "r");
    assert_non_null(f);
    char fmt[16], cfg[512], st[512], pre[256], exp[512], out[512];
    int n = 0;
    while (fscanf(f, "%15s %511s %511s %255s %511s %511s", fmt, cfg, st, pre, exp, out) == 6) {
        FILE *a = fopen(exp, "rb"), *b = fopen(out, "rb");
        assert_non_null(a);
        if (!b) fail_msg("oracle wrote no %s", out);
        int ca, cb;
        size_t pos = 0;
        do {
            ca = fgetc(a);
            cb = fgetc(b);
            if (ca != cb) fail_msg("%s: oracle differs from expectation at byte %zu", st, pos);
            pos++;
        } while (ca != EOF);
        fclose(a);
        fclose(b);
        n++;
    }
    fclose(f);
    assert_int_equal(n, n_jobs);
}

static void rm_rf(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        rm_rf(p);
    }
    closedir(d);
    rmdir(path);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/as_test_pack.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    char jl[512];
    path_in(jl, sizeof jl, "", "jobs.txt");
    jobs = fopen(jl, "w");
    return jobs ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (jobs) fclose(jobs);
    rm_rf(tmpdir);
    return 0;
}

static void test_float_min_refused(void **state) {
    (void)state;
    struct as_qlinear l = make_layer((struct spec){32, 64, 4, 32, 0, 0}, 1);
    char why[256];
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 1);
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 1);
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 1);
    l.minv = malloc(sizeof(float) * 32 * 2);
    for (int i = 0; i < 64; i++)
        l.minv[i] = -0.01f * (float)(i % 5);
    assert_int_equal(as_qlinear_check(&l, PREFIX), 0);
    assert_int_equal(as_gptq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "float minimum"));
    assert_non_null(strstr(why, "GPTQ"));
    assert_int_equal(as_ct_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "float minimum"));
    assert_int_equal(as_awq_packable(&l, why, sizeof why), 0);
    assert_non_null(strstr(why, "float minimum"));
    char st[512];
    path_in(st, sizeof st, "", "fmin.safetensors");
    struct as_st_writer *w = as_st_writer_new(st);
    assert_int_equal(as_gptq_write(w, PREFIX, &l), -1);
    assert_non_null(strstr(as_last_error(), "float minimum"));
    assert_int_equal(as_ct_write(w, PREFIX, &l, AS_F16, 0), -1);
    assert_int_equal(as_awq_write(w, PREFIX, &l), -1);
    as_st_writer_abort(w);
    l.minv[5] = NAN;
    assert_int_equal(as_qlinear_check(&l, PREFIX), -1);
    assert_non_null(strstr(as_last_error(), "float minimum at [2,1]"));
    l.minv[5] = 0, l.sym = 1;
    assert_int_equal(as_qlinear_check(&l, PREFIX), -1);
    assert_non_null(strstr(as_last_error(), "symmetric"));
    free(l.minv);
    free_layer(&l);
}

/* Write N layers' records to a stream file, then gather them back. */
static struct as_qcollect *stream_roundtrip(const char *path, const struct as_qlinear *l,
                                            const char *extra_name, int *rc_out) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    struct as_stream_writer *w = as_stream_writer_fd(fileno(f), path);
    assert_int_equal(as_qlinear_write(w, PREFIX, 3, l, NULL), 0);
    if (extra_name) { /* a stray .min record for a layer that does not announce float_min */
        int64_t shape[2] = {l->N, as_qlinear_groups(l)};
        float *z = calloc((size_t)shape[0] * shape[1], sizeof(float));
        assert_int_equal(as_stream_write_tensor(w, extra_name, "min", 3, AS_F32, 2, shape, NULL, z),
                         0);
        free(z);
    }
    assert_int_equal(as_stream_write_end(w), 0);
    as_stream_writer_free(w);
    fclose(f);
    struct as_stream_reader *r = as_stream_open(path);
    assert_non_null(r);
    struct as_qcollect *qc = as_qcollect_new();
    const struct as_rec *rec;
    int rc = 0, n;
    while (rc >= 0 && (n = as_stream_next(r, &rec)) == 1)
        rc = as_qcollect_offer(qc, r, rec) < 0 ? -1 : 0;
    as_stream_close(r);
    *rc_out = rc;
    return qc;
}

static void test_qstream_float_min(void **state) {
    (void)state;
    struct as_qlinear l = make_layer((struct spec){8, 64, 4, 32, 0, 0}, 0);
    l.minv = malloc(sizeof(float) * 8 * 2);
    for (int i = 0; i < 16; i++)
        l.minv[i] = 0.003f * (float)i - 0.02f;
    char path[512];
    path_in(path, sizeof path, "", "fmin.stream");
    int rc;
    struct as_qcollect *qc = stream_roundtrip(path, &l, NULL, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(as_qcollect_check_complete(qc), 0);
    const struct as_qlinear *b = as_qcollect_find(qc, PREFIX);
    assert_non_null(b);
    assert_non_null(b->minv);
    assert_memory_equal(b->minv, l.minv, sizeof(float) * 16);
    float got[8 * 64];
    as_qlinear_dequant(b, got);
    for (int n = 0; n < 8; n++) /* scale * q + minv, independently */
        for (int k = 0; k < 64; k++) {
            float want = l.scale[n * 2 + k / 32] * (float)l.q[n * 64 + k] + l.minv[n * 2 + k / 32];
            assert_true(got[n * 64 + k] == want);
        }
    as_qcollect_free(qc);
    /* an integer-zero layer with a stray .min record is refused */
    float *mv = l.minv;
    l.minv = NULL;
    char stray[256];
    snprintf(stray, sizeof stray, "%s.min", PREFIX);
    qc = stream_roundtrip(path, &l, stray, &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(as_last_error(), "do not say float_min"));
    as_qcollect_free(qc);
    free(mv);
    free_layer(&l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_pack_matches_autogptq),
        cmocka_unit_test(test_gptq_layout_and_sym_qzeros),
        cmocka_unit_test(test_gptq_roundtrip),
        cmocka_unit_test(test_gptq_v2_zero_semantics),
        cmocka_unit_test(test_ct_layout),
        cmocka_unit_test(test_ct_roundtrip),
        cmocka_unit_test(test_packable),
        cmocka_unit_test(test_float_min_refused),
        cmocka_unit_test(test_qstream_float_min),
        cmocka_unit_test(test_writer_bad_input),
        cmocka_unit_test(test_configs),
        cmocka_unit_test(test_loader_not_quantized),
        cmocka_unit_test(test_loader_bad_gptq),
        cmocka_unit_test(test_loader_bad_ct),
        cmocka_unit_test(test_oracle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
