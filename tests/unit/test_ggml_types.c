/* test_ggml_types: the ggml type-traits table and its reference dequantizers (ggml_types.c), and
 * the GGUF reader's checks for these types (gguf.c).
 *
 * Expectations are independent of the code under test: block sizes are ggml-common.h's numbers;
 * each type gets blocks written by hand from ggml's layout with the values worked out by hand in
 * the comments (codes placed at the layout's odd corners: the fifth bit of Q5, Q3_K's inverted
 * high bit and packed 6-bit scales, Q4_K/Q5_K's split scale/min bytes, Q6_K's two-bit high
 * parts); files with an unsupported type, a row that is not whole blocks and truncated data are
 * refused with a message naming file, tensor and type. The bit-for-bit comparison of random
 * blocks with the gguf package's numpy dequantizer is tests/tools/ggml_types.bats, which drives
 * this program's command line:
 *   test_ggml_types dump FILE.gguf OUT.f32   every tensor dequantized, in info order, to OUT;
 *                                            "name type numel" lines on stdout
 *   test_ggml_types hash FILE.gguf           "name type numel xxh64(f32 bytes)" lines */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "as_error.h"
#include "ggml_types.h"
#include "gguf.h"

#define F16_1 0x3C00
#define F16_HALF 0x3800
#define F16_2 0x4000
#define F16_M1 0xBC00
#define F16_MHALF 0xB800

/* Dequantize one block held at an odd address (a GGUF tensor may sit at any alignment, and
 * UBSan then checks that no field is read through a misaligned pointer). */
static float *deq(enum as_ggml_type t, const void *blk) {
    const struct as_ggml_type_traits *tr = as_ggml_get_type_traits(t);
    assert_non_null(tr);
    assert_non_null(tr->to_float);
    uint8_t *buf = malloc(tr->type_size + 1);
    memcpy(buf + 1, blk, tr->type_size);
    float *out = malloc((size_t)tr->blck_size * sizeof *out);
    tr->to_float(buf + 1, out, (size_t)tr->blck_size);
    free(buf);
    return out;
}

static void expect_eq(const float *y, int i, float want) {
    if (!(y[i] == want)) fail_msg("element %d: got %.9g, want %.9g", i, y[i], want);
}

static void test_table(void **state) {
    (void)state;
    /* ggml-common.h: {type, elements per block, bytes per block} */
    static const struct {
        uint32_t t;
        const char *name;
        int blck;
        size_t size;
    } want[] = {
        {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
        {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
        {8, "Q8_0", 32, 34},    {10, "Q2_K", 256, 84},  {11, "Q3_K", 256, 110},
        {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210},
        {30, "BF16", 1, 2},     {34, "TQ1_0", 256, 54}, {35, "TQ2_0", 256, 66},
    };
    int n_known = 0;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const struct as_ggml_type_traits *tr = as_ggml_get_type_traits(want[i].t);
        assert_non_null(tr);
        assert_string_equal(tr->name, want[i].name);
        assert_int_equal(tr->blck_size, want[i].blck);
        assert_int_equal(tr->type_size, want[i].size);
        assert_non_null(tr->to_float);
        assert_true(as_ggml_type_known(want[i].t));
        assert_int_equal(as_ggml_row_size(want[i].t, 4 * 256),
                         4 * 256 / want[i].blck * want[i].size);
        if (want[i].blck > 1) assert_int_equal(as_ggml_row_size(want[i].t, 4 * 256 + 16), 0);
    }
    for (uint32_t t = 0; t < 64; t++)
        n_known += as_ggml_type_known(t);
    assert_int_equal(n_known, 15);
    /* unsupported types keep their ggml names for the error message */
    assert_string_equal(as_ggml_type_name(16), "IQ2_XXS");
    assert_string_equal(as_ggml_type_name(34), "TQ1_0");
    assert_string_equal(as_ggml_type_name(15), "Q8_K");
    assert_null(as_ggml_type_name(4)); /* Q4_2, retired */
    assert_null(as_ggml_type_name(99));
    assert_null(as_ggml_get_type_traits(99));
    assert_false(as_ggml_type_known(16));
}

static void test_float_types(void **state) {
    (void)state;
    float f = -3.25f;
    float *y = deq(AS_GGML_F32, &f);
    expect_eq(y, 0, -3.25f);
    free(y);
    uint16_t h = 0xC500; /* f16 sign 1, exponent 17, mantissa 256: -(1 + 1/4) * 4 = -5 */
    y = deq(AS_GGML_F16, &h);
    expect_eq(y, 0, -5.0f);
    free(y);
    h = 0x0001; /* smallest f16 subnormal, 2^-24 */
    y = deq(AS_GGML_F16, &h);
    expect_eq(y, 0, 0x1p-24f);
    free(y);
    h = 0x4049; /* bf16: the top half of f32 0x40490000 = 3.140625 */
    y = deq(AS_GGML_BF16, &h);
    expect_eq(y, 0, 3.140625f);
    free(y);
}

static void test_legacy_blocks(void **state) {
    (void)state;
    as_block_q4_0 a = {.d = F16_2};
    a.qs[3] = 0xA1; /* element 3: (1 - 8) * 2; element 19: (10 - 8) * 2 */
    float *y = deq(AS_GGML_Q4_0, &a);
    expect_eq(y, 3, -14.0f);
    expect_eq(y, 19, 4.0f);
    expect_eq(y, 0, -16.0f); /* code 0: (0 - 8) * 2 */
    free(y);

    as_block_q4_1 b = {.d = F16_HALF, .m = F16_M1};
    b.qs[0] = 0xF0; /* element 0: 0 * 0.5 - 1; element 16: 15 * 0.5 - 1 */
    y = deq(AS_GGML_Q4_1, &b);
    expect_eq(y, 0, -1.0f);
    expect_eq(y, 16, 6.5f);
    free(y);

    as_block_q5_0 c = {.d = F16_1};
    c.qh[0] = 1 << 5; /* fifth bit of element 5 */
    c.qh[2] = 1 << 4; /* fifth bit of element 20 */
    c.qs[5] = 0x03;   /* element 5 low 3 -> 19 - 16; element 21: 0 - 16 */
    c.qs[4] = 0x70;   /* element 20: 7 | 16 -> 7; element 4: -16 */
    y = deq(AS_GGML_Q5_0, &c);
    expect_eq(y, 5, 3.0f);
    expect_eq(y, 21, -16.0f);
    expect_eq(y, 20, 7.0f);
    expect_eq(y, 4, -16.0f);
    free(y);

    as_block_q5_1 d = {.d = F16_HALF, .m = F16_1};
    d.qh[3] = 0x80;  /* fifth bit of element 31 */
    d.qs[15] = 0xE0; /* element 31: (14 | 16) * 0.5 + 1 = 16; element 15: 0 * 0.5 + 1 */
    d.qh[0] = 0x04;  /* fifth bit of element 2 */
    d.qs[2] = 0x05;  /* element 2: (5 | 16) * 0.5 + 1 = 11.5 */
    y = deq(AS_GGML_Q5_1, &d);
    expect_eq(y, 31, 16.0f);
    expect_eq(y, 15, 1.0f);
    expect_eq(y, 2, 11.5f);
    free(y);

    as_block_q8_0 e = {.d = F16_MHALF};
    e.qs[7] = -100;
    e.qs[31] = 127;
    y = deq(AS_GGML_Q8_0, &e);
    expect_eq(y, 7, 50.0f);
    expect_eq(y, 31, -63.5f);
    free(y);
}

static void test_k_blocks(void **state) {
    (void)state;
    /* Q2_K: scale byte 9 covers elements 144..159 (h = 1, j = 0, l = 16..31): dl = 1 * 5,
     * ml = 0.5 * 3. Element 148 = 128 + 20: code in bits 0,1 of qs[32 + 20] = 3 -> 15 - 1.5.
     * Scale byte 6 covers 96..111 (h = 0, j = 3): dl = 1, ml = 0.5 * 2; element 101: bits 6,7
     * of qs[5] = 2 -> 2 - 1. */
    as_block_q2_K a = {.d = F16_1, .dmin = F16_HALF};
    a.scales[9] = 0x35, a.qs[52] = 0x03;
    a.scales[6] = 0x21, a.qs[5] = 0x80;
    float *y = deq(AS_GGML_Q2_K, &a);
    expect_eq(y, 148, 13.5f);
    expect_eq(y, 147, -1.5f); /* code 0 */
    expect_eq(y, 101, 1.0f);
    expect_eq(y, 0, 0.0f);
    free(y);

    /* Q3_K: scale 13 (elements 208..223: h = 1, j = 2) = low nibble from the high half of byte
     * 5 (0xB), high bits 6,7 of byte 9 (2): 0x2B - 32 = 11, dl = 0.5 * 11. Element 212 = 128 +
     * 64 + 20: low bits 4,5 of qs[52] = 1, hmask[20] bit 6 set (no offset) -> 1 * 5.5; element
     * 213: low 3, hmask clear -> (3 - 4) * 5.5. Scale 2 (elements 32..47): byte 2 low nibble 3,
     * byte 10 bits 0,1 = 1: 0x13 - 32 = -13, dl = -6.5; code 0, hmask clear: -4 * -6.5 = 26.
     * All-zero scale bytes give -32: dl = -16, element 0 = -4 * -16 = 64. */
    as_block_q3_K b = {.d = F16_HALF};
    b.scales[5] = 0xB0, b.scales[9] = 0x80;
    b.qs[52] = 0x10, b.hmask[20] = 0x40;
    b.qs[53] = 0x30;
    b.scales[2] = 0x03, b.scales[10] = 0x01;
    y = deq(AS_GGML_Q3_K, &b);
    expect_eq(y, 212, 5.5f);
    expect_eq(y, 213, -5.5f);
    expect_eq(y, 40, 26.0f);
    expect_eq(y, 0, 64.0f);
    free(y);

    /* Q4_K: sub-block 5's scale = (byte 9 & 15) | (byte 1 >> 6) << 4 = 3 | 2 << 4 = 35, its min
     * = (byte 9 >> 4) | (byte 5 >> 6) << 4 = 1 | 1 << 4 = 17 (bytes 1 and 5 keep 0 in their low
     * 6 bits: sub-block 1 has scale and min 0). d1 = 1 * 35, m1 = 2 * 17. Element 167 = 32 * 5
     * + 7: high nibble of qs[64 + 7] = 9 -> 35 * 9 - 34 = 281. Sub-block 0: scale byte 0 = 5,
     * min byte 4 = 3: element 0 = 15 * 5 - 2 * 3 = 69. */
    as_block_q4_K c = {.d = F16_1, .dmin = F16_2};
    c.scales[9] = 0x13, c.scales[1] = 0x80, c.scales[5] = 0x40;
    c.scales[0] = 5, c.scales[4] = 3;
    c.qs[71] = 0x90, c.qs[0] = 0x0F;
    y = deq(AS_GGML_Q4_K, &c);
    expect_eq(y, 167, 281.0f);
    expect_eq(y, 0, 69.0f);
    expect_eq(y, 32, 0.0f); /* sub-block 1: 0 * 0 - 0 */
    expect_eq(y, 160, -34.0f);
    free(y);

    /* Q5_K: the same scales; element 167 also has its fifth bit (bit 5 of qh[7]): 35 * 25 - 34. */
    as_block_q5_K d = {.d = F16_1, .dmin = F16_2};
    memcpy(d.scales, c.scales, sizeof d.scales);
    d.qs[71] = 0x90, d.qs[0] = 0x0F, d.qh[7] = 0x20;
    y = deq(AS_GGML_Q5_K, &d);
    expect_eq(y, 167, 841.0f);
    expect_eq(y, 0, 69.0f);
    expect_eq(y, 161, -34.0f); /* element 32 * 5 + 1: code 0, no fifth bit */
    free(y);

    /* Q6_K: element 197 = 128 + 64 + 5 (h = 1, k = 2, l = 5): low 4 bits = high nibble of
     * ql[64 + 5] = 7, high 2 bits = bits 4,5 of qh[32 + 5] = 2 -> 7 | 32 - 32 = 7; scale
     * scales[197 / 16 = 12] = -3: 0.5 * -3 * 7. Element 40 (h = 0, k = 1, l = 8): low nibble of
     * ql[32 + 8] = 12, bits 2,3 of qh[8] = 3 -> 60 - 32 = 28, scales[2] = 4: 0.5 * 4 * 28. */
    as_block_q6_K e = {.d = F16_HALF};
    e.ql[69] = 0x70, e.qh[37] = 0x20, e.scales[12] = -3;
    e.ql[40] = 0x0C, e.qh[8] = 0x0C, e.scales[2] = 4;
    e.scales[0] = 1;
    y = deq(AS_GGML_Q6_K, &e);
    expect_eq(y, 197, -10.5f);
    expect_eq(y, 40, 56.0f);
    expect_eq(y, 0, -16.0f); /* code 0 - 32, scale 1 */
    free(y);
}

/* ---- the reader ---------------------------------------------------------------------------- */

struct buf {
    uint8_t *p;
    size_t n;
};
static void put(struct buf *b, const void *p, size_t n) {
    b->p = realloc(b->p, b->n + n);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void put_u32(struct buf *b, uint32_t v) {
    put(b, &v, 4);
}
static void put_u64(struct buf *b, uint64_t v) {
    put(b, &v, 8);
}

/* A GGUF with no metadata and one 2-D tensor "w" of type `type`, ne = {ne0, 2}, with `data_bytes`
 * bytes of data after the header (padded to 32 as the spec says). */
static char *write_one(uint32_t type, uint64_t ne0, size_t data_bytes) {
    struct buf b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 1); /* tensors */
    put_u64(&b, 0); /* metadata */
    put_u64(&b, 1);
    put(&b, "w", 1);
    put_u32(&b, 2);
    put_u64(&b, ne0);
    put_u64(&b, 2);
    put_u32(&b, type);
    put_u64(&b, 0);
    uint8_t zero[32] = {0};
    put(&b, zero, (32 - b.n % 32) % 32);
    uint8_t *data = calloc(1, data_bytes + 1);
    put(&b, data, data_bytes);
    free(data);
    char *path;
    static int k;
    assert_true(asprintf(&path, "/tmp/as_test_ggml_types.%d.%d.gguf", (int)getpid(), k++) > 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b.p, 1, b.n, f), b.n);
    fclose(f);
    free(b.p);
    return path;
}

static void expect_refused(uint32_t type, uint64_t ne0, size_t data_bytes, const char *msg) {
    char *path = write_one(type, ne0, data_bytes);
    struct as_gguf *g = as_gguf_open(path);
    if (g)
        fail_msg("accepted type %u ne0 %llu with %zu bytes", type, (unsigned long long)ne0,
                 data_bytes);
    char want[512];
    snprintf(want, sizeof want, "file %s: %s", path, msg);
    assert_string_equal(as_last_error(), want);
    unlink(path);
    free(path);
}

static void test_reader(void **state) {
    (void)state;
    /* every supported block type opens with exactly 2 rows of 2 blocks */
    for (uint32_t t = 0; t < AS_GGML_TYPE_COUNT; t++) {
        if (!as_ggml_type_known(t)) continue;
        const struct as_ggml_type_traits *tr = as_ggml_get_type_traits(t);
        char *path = write_one(t, 2 * (uint64_t)tr->blck_size, 4 * tr->type_size);
        struct as_gguf *g = as_gguf_open(path);
        if (!g) fail_msg("type %s: %s", tr->name, as_last_error());
        assert_int_equal(g->tensors[0].nbytes, 4 * tr->type_size);
        assert_int_equal(as_gguf_tensor_numel(&g->tensors[0]), 4 * tr->blck_size);
        as_gguf_close(g);
        unlink(path);
        free(path);
    }
    expect_refused(16, 256, 66 * 2, "tensor w: unsupported ggml type 16 (IQ2_XXS)");
    expect_refused(19, 256, 50 * 2, "tensor w: unsupported ggml type 19 (IQ1_S)");
    expect_refused(77, 256, 1024, "tensor w: unsupported ggml type 77 (not a ggml type)");
    expect_refused(AS_GGML_Q4_K, 300, 144 * 4,
                   "tensor w: ne[0] = 300 is not a multiple of the Q4_K block size (256)");
    expect_refused(AS_GGML_Q5_0, 48, 22 * 4,
                   "tensor w: ne[0] = 48 is not a multiple of the Q5_0 block size (32)");
    /* one byte short of 2 Q6_K rows of 1 block; the header takes 65 bytes, data starts at 96 */
    expect_refused(AS_GGML_Q6_K, 256, 2 * 210 - 1,
                   "truncated: tensor w data [96, 516) beyond the end of the file (515 bytes)");
}

/* ---- command line (for the numpy oracle) --------------------------------------------------- */

static int cli(int argc, char **argv) {
    as_set_progname("test_ggml_types");
    int dump = !strcmp(argv[1], "dump");
    if (!(dump && argc == 4) && !(!strcmp(argv[1], "hash") && argc == 3))
        as_die("usage: test_ggml_types dump FILE.gguf OUT.f32 | hash FILE.gguf");
    struct as_gguf *g = as_gguf_open(argv[2]);
    if (!g) as_die_last();
    FILE *out = NULL;
    if (dump && !(out = fopen(argv[3], "wb"))) as_die("file %s: cannot create", argv[3]);
    for (int i = 0; i < g->n_tensors; i++) {
        const struct as_gguf_tensor *t = &g->tensors[i];
        size_t n = (size_t)as_gguf_tensor_numel(t);
        float *f = as_xmalloc(n * sizeof *f);
        as_gguf_tensor_to_f32(t, f);
        if (dump) {
            printf("%s %s %zu\n", t->name, as_ggml_type_name(t->type), n);
            if (fwrite(f, sizeof *f, n, out) != n) as_die("file %s: write failed", argv[3]);
        } else {
            printf("%s %s %zu %016llx\n", t->name, as_ggml_type_name(t->type), n,
                   (unsigned long long)XXH64(f, n * sizeof *f, 0));
        }
        free(f);
    }
    if (out && fclose(out)) as_die("file %s: write failed", argv[3]);
    as_gguf_close(g);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1) return cli(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),         cmocka_unit_test(test_float_types),
        cmocka_unit_test(test_legacy_blocks), cmocka_unit_test(test_k_blocks),
        cmocka_unit_test(test_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
