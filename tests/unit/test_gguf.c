/* test_gguf: GGUF writer/reader (gguf.c), packing (gguf_pack.c) and loading (gguf_load.c).
 *
 * Expectations are independent of the code under test: block bytes written out by hand from
 * ggml-common.h's layout; dequantized blocks against the GPTQ formula scale * (q - zero) with
 * the scale rounded to fp16 (Q4_1: fp16(d) * q + fp16(m), the documented rounding of m); the q/k
 * row order against RoPE itself (rotate-half on HF rows == interleaved rotation on GGUF rows);
 * a model packed to F32 and loaded back equals the checkpoint bit for bit; a tokenizer rebuilt
 * from GGUF metadata encodes like the tokenizer.json it came from. Every truncation of a valid
 * file, a bad magic, a bad alignment and misplaced data are rejected with a message. */
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
#include "dtype.h"
#include "gguf.h"
#include "model.h"
#include "qstream.h"
#include "quant_search.h"
#include "tokenizer.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float rndf(void) { /* [-1, 1) */
    return (float)(rnd() >> 40) / (float)(1 << 23) - 1.0f;
}

#include <sys/stat.h>

static char *tmpname(const char *suffix) {
    char *p;
    static int n;
    assert_true(asprintf(&p, "/tmp/as_test_gguf.%d.%d%s", (int)getpid(), n++, suffix) > 0);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*n + 1);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

/* A random integer-quantized layer in the GPTQ convention. */
static struct as_qlinear make_qlinear(int N, int K, int bits, int sym) {
    struct as_qlinear l = {.N = N, .K = K, .bits = bits, .group_size = 32, .sym = sym};
    int G = as_qlinear_groups(&l), maxq = (1 << bits) - 1;
    l.q = malloc((size_t)N * K);
    l.scale = malloc(sizeof(float) * N * G);
    l.zero = malloc(sizeof(int32_t) * N * G);
    l.g_idx = malloc(sizeof(int32_t) * K);
    for (int i = 0; i < N * K; i++)
        l.q[i] = (uint8_t)(rnd() % (uint64_t)(maxq + 1));
    for (int i = 0; i < N * G; i++) {
        l.scale[i] = 0.001f + fabsf(rndf()) * 0.05f;
        l.zero[i] = sym ? 1 << (bits - 1) : (int32_t)(rnd() % (uint64_t)(maxq + 1));
    }
    for (int k = 0; k < K; k++)
        l.g_idx[k] = k / 32;
    return l;
}
static void free_qlinear(struct as_qlinear *l) {
    free(l->q), free(l->scale), free(l->zero), free(l->g_idx);
}

/* ---- blocks ---- */

static void test_block_layout_by_hand(void **state) {
    (void)state;
    /* one row, one block: codes 0..15 then 15..0; scale 0.5 (exact in fp16), zero 8 / 3 */
    struct as_qlinear l = make_qlinear(1, 32, 4, 1);
    for (int j = 0; j < 16; j++)
        l.q[j] = (uint8_t)j, l.q[16 + j] = (uint8_t)(15 - j);
    l.scale[0] = 0.5f;
    as_block_q4_0 b0;
    as_gguf_encode_qlinear(&l, AS_GGML_Q4_0, NULL, &b0);
    assert_int_equal(b0.d, 0x3800); /* 0.5 in binary16 */
    for (int j = 0; j < 16; j++)    /* element j in the low nibble, j + 16 in the high nibble */
        assert_int_equal(b0.qs[j], j | (15 - j) << 4);
    float out[32];
    as_ggml_to_f32(AS_GGML_Q4_0, &b0, out, 32);
    assert_true(out[0] == -4.0f && out[15] == 3.5f && out[16] == 3.5f && out[31] == -4.0f);

    l.sym = 0, l.zero[0] = 3;
    as_block_q4_1 b1;
    as_gguf_encode_qlinear(&l, AS_GGML_Q4_1, NULL, &b1);
    assert_int_equal(b1.d, 0x3800);
    assert_int_equal(b1.m, 0xBE00); /* -1.5 */
    as_ggml_to_f32(AS_GGML_Q4_1, &b1, out, 32);
    assert_true(out[0] == -1.5f && out[15] == 6.0f && out[31] == -1.5f);
    free_qlinear(&l);

    struct as_qlinear l8 = make_qlinear(1, 32, 8, 1);
    for (int j = 0; j < 32; j++)
        l8.q[j] = (uint8_t)(j * 8);
    l8.q[31] = 255;
    l8.scale[0] = 0.25f;
    as_block_q8_0 b8;
    as_gguf_encode_qlinear(&l8, AS_GGML_Q8_0, NULL, &b8);
    assert_int_equal(b8.d, 0x3400);
    assert_int_equal(b8.qs[0], -128);
    assert_int_equal(b8.qs[16], 0);
    assert_int_equal(b8.qs[31], 127);
    free_qlinear(&l8);
}

/* GGUF dequant == GPTQ dequant with fp16 scales (Q4_0, Q8_0: bit for bit); Q4_1 == fp16(d)*q +
 * fp16(-fp16(d)*zero) and within half an fp16 ulp of |m| of the GPTQ value. */
static void test_blocks_exact(void **state) {
    (void)state;
    const int N = 24, K = 96;
    struct {
        int bits, sym;
        enum as_ggml_type t;
    } cases[] = {{4, 1, AS_GGML_Q4_0}, {4, 0, AS_GGML_Q4_1}, {8, 1, AS_GGML_Q8_0}};
    for (size_t c = 0; c < 3; c++) {
        struct as_qlinear l = make_qlinear(N, K, cases[c].bits, cases[c].sym);
        char why[128];
        assert_int_equal(as_gguf_qlinear_type(&l, 0, why, sizeof why), cases[c].t);
        size_t bytes = as_ggml_row_size(cases[c].t, K) * N;
        void *blocks = malloc(bytes);
        as_gguf_encode_qlinear(&l, cases[c].t, NULL, blocks);
        float *got = malloc(sizeof(float) * N * K), *want = malloc(sizeof(float) * N * K);
        as_ggml_to_f32(cases[c].t, blocks, got, (size_t)N * K);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                int g = k / 32;
                float d = as_f16_to_f32(as_f32_to_f16(l.scale[n * 3 + g]));
                float q = (float)l.q[n * K + k], z = (float)l.zero[n * 3 + g];
                float gptq = d * (q - z);
                if (cases[c].t == AS_GGML_Q4_1) {
                    float m = as_f16_to_f32(as_f32_to_f16(-d * z));
                    want[n * K + k] = q * d + m;
                    assert_true(fabsf(got[n * K + k] - gptq) <= fabsf(d * z) * 0x1p-11f + 1e-9f);
                } else {
                    want[n * K + k] = gptq;
                }
            }
        assert_memory_equal(got, want, sizeof(float) * N * K);
        as_gguf_qlinear_expected(&l, cases[c].t, want);
        assert_memory_equal(got, want, sizeof(float) * N * K);
        free(blocks), free(got), free(want);
        free_qlinear(&l);
    }
}

static void test_block_type_refusals(void **state) {
    (void)state;
    char why[128];
    struct as_qlinear l = make_qlinear(4, 64, 4, 1);
    assert_int_equal(as_gguf_qlinear_type(&l, 1, why, sizeof why), AS_GGML_Q4_1);
    l.group_size = 64;
    assert_int_equal(as_gguf_qlinear_type(&l, 0, why, sizeof why), -1);
    assert_non_null(strstr(why, "group size 64"));
    l.group_size = 32, l.g_idx[0] = 1;
    assert_int_equal(as_gguf_qlinear_type(&l, 0, why, sizeof why), -1);
    assert_non_null(strstr(why, "act-order"));
    l.g_idx[0] = 0, l.scale[5] = 1e6f;
    assert_int_equal(as_gguf_qlinear_type(&l, 0, why, sizeof why), -1);
    assert_non_null(strstr(why, "fp16"));
    free_qlinear(&l);
    struct as_qlinear r = make_qlinear(2, 40, 4, 1); /* ragged: 40 = 32 + 8 */
    assert_int_equal(as_gguf_qlinear_type(&r, 0, why, sizeof why), -1);
    assert_non_null(strstr(why, "not a multiple of 32"));
    free_qlinear(&r);
    struct as_qlinear a8 = make_qlinear(2, 32, 8, 0), b3 = make_qlinear(2, 32, 3, 1);
    assert_int_equal(as_gguf_qlinear_type(&a8, 0, why, sizeof why), -1);
    assert_int_equal(as_gguf_qlinear_type(&b3, 0, why, sizeof why), -1);
    free_qlinear(&a8), free_qlinear(&b3);
}

/* ---- q/k rows ---- */

/* The permutation must turn HF's rotate-half RoPE into ggml's interleaved (adjacent pairs) RoPE:
 * rope_interleaved(P x) == P rope_half(x) for every position. */
static void test_qk_perm_is_rope_layout(void **state) {
    (void)state;
    const int n_head = 3, hd = 8, R = n_head * hd;
    int perm[24];
    as_gguf_qk_perm(n_head, hd, perm);
    int seen[24] = {0};
    for (int r = 0; r < R; r++)
        seen[perm[r]]++;
    for (int r = 0; r < R; r++)
        assert_int_equal(seen[r], 1);
    /* by hand for one head of 8: GGUF rows = HF rows 0,4,1,5,2,6,3,7 */
    static const int head0[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int r = 0; r < 8; r++)
        assert_int_equal(perm[r], head0[r]);
    assert_int_equal(perm[8 + 1], 8 + 4);
    double x[24], hf[24], gg[24];
    for (int i = 0; i < R; i++)
        x[i] = rndf();
    for (int pos = 0; pos < 5; pos++) {
        for (int h = 0; h < n_head; h++)
            for (int i = 0; i < hd / 2; i++) {
                double th = pos * pow(10000.0, -2.0 * i / hd), c = cos(th), s = sin(th);
                const double *v = x + h * hd;
                hf[h * hd + i] = v[i] * c - v[i + hd / 2] * s; /* rotate half */
                hf[h * hd + i + hd / 2] = v[i + hd / 2] * c + v[i] * s;
                double a = x[perm[h * hd + 2 * i]], b = x[perm[h * hd + 2 * i + 1]];
                gg[h * hd + 2 * i] = a * c - b * s; /* interleaved on permuted rows */
                gg[h * hd + 2 * i + 1] = b * c + a * s;
            }
        for (int r = 0; r < R; r++)
            assert_true(fabs(gg[r] - hf[perm[r]]) < 1e-12);
    }
}

/* ---- file format ---- */

static char *write_small_file(uint32_t align) {
    struct as_gguf_writer *w = as_gguf_writer_new();
    as_gguf_set_str(w, "general.architecture", "test");
    if (align) as_gguf_set_u32(w, "general.alignment", align);
    as_gguf_set_i32(w, "t.i32", -7);
    as_gguf_set_u64(w, "t.u64", 1ull << 40);
    as_gguf_set_f32(w, "t.f32", 0.25f);
    as_gguf_set_f64(w, "t.f64", -2.5);
    as_gguf_set_bool(w, "t.bool", 1);
    as_gguf_set_u32(w, "t.u32", 5);
    as_gguf_set_u32(w, "t.u32", 6); /* set twice: last value wins, one key */
    int16_t i16[3] = {-1, 2, -3};
    as_gguf_set_arr(w, "t.arr_i16", AS_GGUF_I16, i16, 3);
    as_gguf_set_arr(w, "t.arr_empty", AS_GGUF_F32, NULL, 0);
    const char *strs[3] = {"a", "", "\xe2\x96\x81hello"};
    as_gguf_set_arr_str(w, "t.arr_str", strs, 3);
    int64_t ne[2] = {32, 3};
    float *f = malloc(sizeof(float) * 96);
    for (int i = 0; i < 96; i++)
        f[i] = (float)i - 40.5f;
    assert_int_equal(as_gguf_add_tensor(w, "f32", AS_GGML_F32, 2, ne, f), 0);
    uint16_t *h = malloc(2 * 5);
    for (int i = 0; i < 5; i++)
        h[i] = as_f32_to_f16((float)i);
    int64_t ne5[1] = {5};
    assert_int_equal(as_gguf_add_tensor(w, "f16", AS_GGML_F16, 1, ne5, h), 0);
    uint16_t *bf = malloc(2 * 5);
    for (int i = 0; i < 5; i++)
        bf[i] = as_f32_to_bf16((float)i * 3);
    assert_int_equal(as_gguf_add_tensor(w, "bf16", AS_GGML_BF16, 1, ne5, bf), 0);
    struct as_qlinear l = make_qlinear(3, 32, 4, 1);
    void *b = malloc(as_ggml_row_size(AS_GGML_Q4_0, 32) * 3);
    as_gguf_encode_qlinear(&l, AS_GGML_Q4_0, NULL, b);
    assert_int_equal(as_gguf_add_tensor(w, "q4", AS_GGML_Q4_0, 2, ne, b), 0);
    free_qlinear(&l);
    /* bad tensors are refused */
    int64_t bad[1] = {33};
    assert_int_equal(as_gguf_add_tensor(w, "x", AS_GGML_Q8_0, 1, bad, malloc(64)), -1);
    assert_int_equal(as_gguf_add_tensor(w, "f32", AS_GGML_F32, 1, ne5, malloc(20)), -1);
    char *path = tmpname(".gguf");
    assert_int_equal(as_gguf_writer_write(w, path), 0);
    as_gguf_writer_free(w);
    return path;
}

static void test_roundtrip_kv_and_tensors(void **state) {
    (void)state;
    uint32_t aligns[2] = {0, 64};
    for (int a = 0; a < 2; a++) {
        char *path = write_small_file(aligns[a]);
        struct as_gguf *g = as_gguf_open(path);
        if (!g) fail_msg("%s", as_last_error());
        assert_int_equal(g->version, 3);
        assert_int_equal(g->alignment, aligns[a] ? aligns[a] : 32);
        assert_int_equal(g->n_kv, aligns[a] ? 11 : 10);
        assert_string_equal(as_gguf_get_str(g, "general.architecture"), "test");
        uint32_t u;
        assert_int_equal(as_gguf_get_u32(g, "t.u32", &u), 1);
        assert_int_equal(u, 6);
        assert_int_equal(as_gguf_get_u32(g, "t.i32", &u), -1); /* negative: not a u32 */
        assert_int_equal(as_gguf_get_u32(g, "t.u64", &u), -1); /* out of range */
        assert_int_equal(as_gguf_get_u32(g, "nope", &u), 0);
        assert_int_equal(as_gguf_find_kv(g, "t.i32")->v.i, -7);
        assert_true(as_gguf_find_kv(g, "t.u64")->v.u == 1ull << 40);
        float fv;
        assert_int_equal(as_gguf_get_f32(g, "t.f32", &fv), 1);
        assert_true(fv == 0.25f);
        assert_int_equal(as_gguf_get_f32(g, "t.f64", &fv), 1);
        assert_true(fv == -2.5f);
        int bv;
        assert_int_equal(as_gguf_get_bool(g, "t.bool", &bv), 1);
        assert_int_equal(bv, 1);
        const struct as_gguf_kv *k = as_gguf_find_kv(g, "t.arr_i16");
        assert_int_equal(k->arr_type, AS_GGUF_I16);
        assert_int_equal(k->n, 3);
        assert_int_equal(((int16_t *)k->arr)[2], -3);
        assert_int_equal(as_gguf_find_kv(g, "t.arr_empty")->n, 0);
        k = as_gguf_find_kv(g, "t.arr_str");
        assert_int_equal(k->n, 3);
        assert_string_equal(k->strs[1], "");
        assert_string_equal(k->strs[2], "\xe2\x96\x81hello");
        assert_int_equal(g->n_tensors, 4);
        for (int i = 0; i < g->n_tensors; i++) {
            assert_int_equal(g->tensors[i].offset % g->alignment, 0);
            assert_int_equal((g->data_offset + g->tensors[i].offset) % g->alignment, 0);
        }
        float out[96];
        as_gguf_tensor_to_f32(as_gguf_find_tensor(g, "f32"), out);
        assert_true(out[95] == 95 - 40.5f);
        as_gguf_tensor_to_f32(as_gguf_find_tensor(g, "f16"), out);
        assert_true(out[4] == 4.0f);
        as_gguf_tensor_to_f32(as_gguf_find_tensor(g, "bf16"), out);
        assert_true(out[4] == 12.0f);
        const struct as_gguf_tensor *q = as_gguf_find_tensor(g, "q4");
        assert_int_equal(q->type, AS_GGML_Q4_0);
        assert_int_equal(q->ne[0], 32);
        assert_int_equal(q->ne[1], 3);
        assert_int_equal(q->nbytes, 3 * 18);
        as_gguf_close(g);
        unlink(path);
        free(path);
    }
}

static void expect_open_error(const void *data, size_t n, const char *needle) {
    char *path = tmpname(".gguf");
    write_bytes(path, data, n);
    struct as_gguf *g = as_gguf_open(path);
    if (g) fail_msg("accepted a bad file (%zu bytes), expected '%s'", n, needle);
    const char *e = as_last_error();
    if (!strstr(e, path) || !strstr(e, needle))
        fail_msg("error '%s' does not name the file and '%s'", e, needle);
    unlink(path);
    free(path);
}

static void test_rejects_corrupt(void **state) {
    (void)state;
    char *path = write_small_file(0);
    size_t n;
    uint8_t *p = read_all(path, &n);
    /* every truncation before the end of the last tensor's data: the reader must refuse, never
     * crash or read past the end (the last tensor's trailing padding may go, as in llama.cpp) */
    struct as_gguf *full = as_gguf_open(path);
    assert_non_null(full);
    const struct as_gguf_tensor *last = &full->tensors[full->n_tensors - 1];
    size_t end = (size_t)(full->data_offset + last->offset + last->nbytes);
    as_gguf_close(full);
    assert_true(end <= n && n - end < 32);
    for (size_t cut = 0; cut < end; cut++) {
        char *tp = tmpname(".gguf");
        write_bytes(tp, p, cut);
        struct as_gguf *g = as_gguf_open(tp);
        if (g) fail_msg("truncated to %zu of %zu bytes and accepted", cut, n);
        unlink(tp);
        free(tp);
    }
    expect_open_error(p, 40, "truncated");
    uint8_t *c = malloc(n);
    memcpy(c, p, n);
    c[0] = 'X';
    expect_open_error(c, n, "bad magic");
    memcpy(c, p, n);
    c[4] = 1; /* version 1 */
    expect_open_error(c, n, "version 1");
    free(c);
    /* alignment 24 (not a power of two) */
    struct as_gguf_writer *w = as_gguf_writer_new();
    as_gguf_set_u32(w, "general.alignment", 24);
    char *bp = tmpname(".gguf");
    assert_int_equal(as_gguf_writer_write(w, bp), -1);
    assert_non_null(strstr(as_last_error(), "power of two"));
    assert_null(strchr(as_last_error(), '\n')); /* one line */
    assert_int_equal(access(bp, F_OK), -1);     /* and nothing written */
    as_gguf_writer_free(w);
    /* hand-made files: alignment key of the wrong value, then a misplaced offset */
    uint8_t buf[256];
    size_t o = 0;
#define PUT(v, sz)                                                                                 \
    do {                                                                                           \
        uint64_t _v = (uint64_t)(v);                                                               \
        memcpy(buf + o, &_v, sz);                                                                  \
        o += sz;                                                                                   \
    } while (0)
#define PUTS(s)                                                                                    \
    do {                                                                                           \
        PUT(strlen(s), 8);                                                                         \
        memcpy(buf + o, s, strlen(s));                                                             \
        o += strlen(s);                                                                            \
    } while (0)
    PUT(AS_GGUF_MAGIC, 4);
    PUT(3, 4);
    PUT(0, 8);
    PUT(1, 8);
    PUTS("general.alignment");
    PUT(AS_GGUF_U32, 4);
    PUT(48, 4);
    expect_open_error(buf, o, "general.alignment");
    o = 0;
    PUT(AS_GGUF_MAGIC, 4);
    PUT(3, 4);
    PUT(1, 8);
    PUT(0, 8);
    PUTS("t");
    PUT(1, 4);
    PUT(8, 8);
    PUT(AS_GGML_F32, 4);
    PUT(4, 8); /* offset 4: misaligned */
    size_t data = (o + 31) / 32 * 32;
    memset(buf + o, 0, data + 64 - o);
    expect_open_error(buf, data + 64, "offset 4, expected 0");
    o = 0;
    PUT(AS_GGUF_MAGIC, 4);
    PUT(3, 4);
    PUT(1, 8);
    PUT(0, 8);
    PUTS("t");
    PUT(1, 4);
    PUT(8, 8);
    PUT(77, 4);
    PUT(0, 8); /* unknown ggml type */
    expect_open_error(buf, data + 64, "unsupported ggml type 77");
    o = 0;
    PUT(AS_GGUF_MAGIC, 4);
    PUT(3, 4);
    PUT(0, 8);
    PUT(2, 8);
    PUTS("k");
    PUT(AS_GGUF_U8, 4);
    PUT(1, 1);
    PUTS("k");
    PUT(AS_GGUF_U8, 4);
    PUT(2, 1);
    expect_open_error(buf, o, "appears twice");
    o = 0;
    PUT(AS_GGUF_MAGIC, 4);
    PUT(3, 4);
    PUT(0, 8);
    PUT(1, 8);
    PUTS("k");
    PUT(AS_GGUF_ARRAY, 4);
    PUT(AS_GGUF_U32, 4);
    PUT(1ull << 60, 8);
    expect_open_error(buf, o, "does not fit");
#undef PUT
#undef PUTS
    free(bp);
    free(p);
    unlink(path);
    free(path);
}

/* ---- packing and loading ---- */

/* ids 0..255 = bytes, 256 Ġt, 257 he, 258 Ġthe, 259 <|endoftext|> (GPT-2 alphabet) */
static void write_bytelevel_tokenizer(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"added_tokens\":[{\"id\":259,\"content\":\"<|endoftext|>\",\"special\":true}],"
               "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\","
               "\"add_prefix_space\":false,\"use_regex\":true},"
               "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{");
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = printable ? b : 256 + n++;
        if (cp == '"' || cp == '\\')
            fprintf(f, "\"\\%c\":%d,", cp, b);
        else
            fprintf(f, "\"\\u%04x\":%d,", cp, b);
    }
    fprintf(f, "\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258},"
               "\"merges\":[\"\\u0120 t\",\"h e\",\"\\u0120t he\"]}}");
    fclose(f);
}

static void test_pack_load_roundtrip(void **state) {
    (void)state;
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.arch = AS_ARCH_LLAMA;
    c.hidden = 64, c.intermediate = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 16, c.vocab = 300, c.max_pos = 64, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f;
    char *dir = tmpname(".dir");
    assert_int_equal(mkdir(dir, 0755), 0);
    if (as_model_write_random(&c, AS_F32, 7, dir)) fail_msg("%s", as_last_error());
    write_bytelevel_tokenizer(dir);
    char *out = tmpname(".gguf");
    struct as_gguf_pack_opts o = {.float_type = AS_GGML_F32, .verify = 1};
    struct as_gguf_pack_report rep;
    if (as_gguf_pack(dir, NULL, out, &o, &rep)) fail_msg("%s", as_last_error());
    assert_int_equal(rep.n_quant, 0);
    assert_int_equal(rep.file_type, AS_FTYPE_ALL_F32);
    assert_int_equal(rep.n_tensors, 2 + 2 * 9 + 1); /* embd, norm, output + 9 per layer */

    struct as_model *a = as_model_load(dir), *b = as_model_load_gguf(out);
    if (!b) fail_msg("%s", as_last_error());
    assert_int_equal(b->cfg.hidden, 64);
    assert_int_equal(b->cfg.n_kv_heads, 2);
    assert_int_equal(b->cfg.head_dim, 16);
    assert_int_equal(b->cfg.vocab, 300);
    assert_int_equal(b->cfg.tie_embeddings, 0);
    assert_true(b->cfg.rms_eps == 1e-5f);
    assert_memory_equal(a->embed, b->embed, sizeof(float) * 300 * 64);
    assert_memory_equal(a->lm_head, b->lm_head, sizeof(float) * 300 * 64);
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            int rows, cols;
            as_model_linear_shape(a, (enum as_linear)k, &rows, &cols);
            assert_memory_equal(a->layers[l].w[k], b->layers[l].w[k], sizeof(float) * rows * cols);
        }
    /* q rows in the file are the HF rows in interleaved order */
    struct as_gguf *g = as_gguf_open(out);
    assert_non_null(g);
    const struct as_gguf_tensor *tq = as_gguf_find_tensor(g, "blk.1.attn_q.weight");
    assert_non_null(tq);
    const float *fq = tq->data;
    assert_memory_equal(fq + 1 * 64, a->layers[1].w[AS_LIN_Q] + 8 * 64, sizeof(float) * 64);
    assert_string_equal(as_gguf_get_str(g, "tokenizer.ggml.model"), "gpt2");
    assert_string_equal(as_gguf_get_str(g, "tokenizer.ggml.pre"), "gpt-2");
    const struct as_gguf_kv *tt = as_gguf_find_kv(g, "tokenizer.ggml.token_type");
    assert_int_equal(tt->n, 300);
    assert_int_equal(((int32_t *)tt->arr)[259], 3); /* control */
    assert_int_equal(((int32_t *)tt->arr)[258], 1); /* normal */
    assert_int_equal(((int32_t *)tt->arr)[299], 5); /* padding: unused */
    assert_string_equal(as_gguf_find_kv(g, "tokenizer.ggml.tokens")->strs[299], "[PAD299]");
    assert_string_equal(as_gguf_find_kv(g, "tokenizer.ggml.merges")->strs[2], "\xc4\xa0t he");
    as_gguf_close(g);

    /* the tokenizer rebuilt from the metadata encodes like the original */
    struct as_tokenizer *ta = as_tokenizer_load(dir), *tb = as_tokenizer_load_gguf(out);
    if (!tb) fail_msg("%s", as_last_error());
    const char *text = "the cat and the hen<|endoftext|> then\n na\xc3\xafve the";
    int32_t *ia, *ib;
    size_t na, nb;
    assert_int_equal(as_tokenizer_encode(ta, text, strlen(text), 0, &ia, &na), 0);
    assert_int_equal(as_tokenizer_encode(tb, text, strlen(text), 0, &ib, &nb), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, na * sizeof *ia);
    assert_int_equal(as_tokenizer_eos(tb), 259);
    char *dec = as_tokenizer_decode(tb, ib, nb, NULL);
    assert_string_equal(dec, "the cat and the hen then\n na\xc3\xafve the");
    free(dec), free(ia), free(ib);
    as_tokenizer_free(ta), as_tokenizer_free(tb);

    /* F16 matrices: the loaded weights are the fp16-rounded checkpoint */
    o.float_type = AS_GGML_F16;
    if (as_gguf_pack(dir, NULL, out, &o, &rep)) fail_msg("%s", as_last_error());
    assert_int_equal(rep.file_type, AS_FTYPE_MOSTLY_F16);
    struct as_model *h = as_model_load_gguf(out);
    assert_non_null(h);
    float *w = a->layers[0].w[AS_LIN_K];
    for (int i = 0; i < 32 * 64; i++)
        assert_true(h->layers[0].w[AS_LIN_K][i] == as_f16_to_f32(as_f32_to_f16(w[i])));
    assert_memory_equal(a->layers[0].attn_norm, h->layers[0].attn_norm, sizeof(float) * 64);
    as_model_free(h);

    /* unsupported architecture: one message naming the file */
    c.arch = AS_ARCH_QWEN2, c.qkv_bias = 1;
    snprintf(c.model_type, sizeof c.model_type, "qwen2");
    char *dir2 = tmpname(".dir");
    assert_int_equal(mkdir(dir2, 0755), 0);
    assert_int_equal(as_model_write_random(&c, AS_F32, 7, dir2), 0);
    assert_int_equal(as_gguf_pack(dir2, NULL, out, &o, &rep), -1);
    assert_non_null(strstr(as_last_error(), "config.json"));
    assert_non_null(strstr(as_last_error(), "qwen2"));
    as_model_free(a), as_model_free(b);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", dir, dir2, out);
    assert_int_equal(system(cmd), 0);
    free(dir), free(dir2), free(out);
}

/* Float-minimum layers (as_qlinear.minv): Q4_1 blocks hold d = scale and m = minv exactly (the
 * search returns fp16 values), the file reads back as scale * q + minv computed here, q rows of
 * attn_q in llama.cpp's interleaved order. The layers travel through stream records. */
static void test_pack_float_min(void **state) {
    (void)state;
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.arch = AS_ARCH_LLAMA;
    c.hidden = 64, c.intermediate = 96, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 16, c.vocab = 300, c.max_pos = 64, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f;
    char *dir = tmpname(".dir");
    assert_int_equal(mkdir(dir, 0755), 0);
    if (as_model_write_random(&c, AS_F32, 11, dir)) fail_msg("%s", as_last_error());
    write_bytelevel_tokenizer(dir);
    struct as_model *a = as_model_load(dir);
    assert_non_null(a);
    enum as_linear which[2] = {AS_LIN_Q, AS_LIN_DOWN};
    struct as_qlinear ql[2];
    char *spath = tmpname(".stream");
    FILE *f = fopen(spath, "wb");
    struct as_stream_writer *sw = as_stream_writer_fd(fileno(f), spath);
    struct quant_search_params sp = {.bits = 4, .fp16_scale = 1};
    for (int i = 0; i < 2; i++) {
        int N, K;
        as_model_linear_shape(a, which[i], &N, &K);
        int G = K / 32;
        ql[i] = (struct as_qlinear){.N = N, .K = K, .bits = 4, .group_size = 32, .sym = 0};
        ql[i].q = malloc((size_t)N * K), ql[i].scale = malloc(sizeof(float) * N * G);
        ql[i].minv = malloc(sizeof(float) * N * G), ql[i].zero = malloc(sizeof(int32_t) * N * G);
        ql[i].g_idx = malloc(sizeof(int32_t) * K);
        assert_int_equal(quant_fmin_rtn(a->layers[0].w[which[i]], N, K, 32, NULL, &sp, ql[i].q,
                                        ql[i].scale, ql[i].minv, ql[i].zero, ql[i].g_idx),
                         0);
        char pfx[128];
        as_linear_prefix(0, which[i], pfx, sizeof pfx);
        assert_int_equal(as_qlinear_write(sw, pfx, 0, &ql[i], NULL), 0);
    }
    assert_int_equal(as_stream_write_end(sw), 0);
    as_stream_writer_free(sw);
    fclose(f);
    struct as_stream_reader *r = as_stream_open(spath);
    struct as_qcollect *qc = as_qcollect_new();
    const struct as_rec *rec;
    while (as_stream_next(r, &rec) == 1)
        assert_true(as_qcollect_offer(qc, r, rec) >= 0);
    as_stream_close(r);
    assert_int_equal(as_qcollect_count(qc), 2);

    char *out = tmpname(".gguf");
    struct as_gguf_pack_opts o = {.float_type = AS_GGML_F32, .verify = 1};
    struct as_gguf_pack_report rep;
    if (as_gguf_pack(dir, qc, out, &o, &rep)) fail_msg("%s", as_last_error());
    assert_int_equal(rep.n_blocks, 2);
    assert_int_equal(rep.file_type, AS_FTYPE_MOSTLY_Q4_1);
    struct as_gguf *g = as_gguf_open(out);
    assert_non_null(g);
    const char *names[2] = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"};
    int perm[64];
    as_gguf_qk_perm(c.n_heads, c.head_dim, perm);
    int nonint = 0;
    for (int i = 0; i < 2; i++) {
        const struct as_gguf_tensor *t = as_gguf_find_tensor(g, names[i]);
        assert_non_null(t);
        assert_int_equal(t->type, AS_GGML_Q4_1);
        int N = ql[i].N, K = ql[i].K, G = K / 32;
        const as_block_q4_1 *blk = t->data;
        float *got = malloc(sizeof(float) * N * K);
        as_ggml_to_f32(AS_GGML_Q4_1, blk, got, (size_t)N * K);
        for (int row = 0; row < N; row++) {
            int n = i == 0 ? perm[row] : row;
            for (int b = 0; b < G; b++) {
                const as_block_q4_1 *x = &blk[row * G + b];
                float d = ql[i].scale[n * G + b], m = ql[i].minv[n * G + b];
                assert_true(as_f16_to_f32(x->d) == d && as_f16_to_f32(x->m) == m);
                nonint += fabsf(m / d - rintf(m / d)) > 0.01f;
                for (int j = 0; j < 32; j++) {
                    int qv = j < 16 ? x->qs[j] & 15 : x->qs[j - 16] >> 4;
                    assert_int_equal(qv, ql[i].q[n * K + b * 32 + j]);
                    assert_true(got[row * K + b * 32 + j] == d * (float)qv + m);
                }
            }
        }
        free(got);
    }
    assert_true(nonint > 0); /* minimums that no integer zero could express */
    as_gguf_close(g);
    as_qcollect_free(qc);
    for (int i = 0; i < 2; i++)
        free(ql[i].q), free(ql[i].scale), free(ql[i].minv), free(ql[i].zero), free(ql[i].g_idx);
    as_model_free(a);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", dir, out, spath);
    assert_int_equal(system(cmd), 0);
    free(dir), free(out), free(spath);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_layout_by_hand),
        cmocka_unit_test(test_blocks_exact),
        cmocka_unit_test(test_block_type_refusals),
        cmocka_unit_test(test_qk_perm_is_rope_layout),
        cmocka_unit_test(test_roundtrip_kv_and_tensors),
        cmocka_unit_test(test_rejects_corrupt),
        cmocka_unit_test(test_pack_load_roundtrip),
        cmocka_unit_test(test_pack_float_min),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
