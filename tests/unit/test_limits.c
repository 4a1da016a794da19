/* limits: every size, count and offset a file or stream declares is checked before it is used.
 * Each case crafts the hostile bytes by hand (safetensors images in memory, stream records with a
 * correct header checksum so that the check under test is the one that fires) and asserts the
 * one-line error: shape products that overflow 64 bits, byte sizes that overflow, offsets near
 * 2^63 and 2^64, header lengths near 2^64 and over the limits, too many dimensions, negative
 * dimensions, and by-reference regions that wrap around. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "as_error.h"
#include "llama2c.h"
#include "safetensors.h"
#include "stream.h"

/* ---- safetensors images in memory ---- */

/* u64 LE length + header + ndata bytes of data; caller frees. */
static uint8_t *st_image(const char *hdr, uint64_t declared_len, size_t ndata, size_t *size) {
    size_t h = strlen(hdr);
    *size = 8 + h + ndata;
    uint8_t *b = calloc(1, *size);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(declared_len >> (8 * i));
    memcpy(b + 8, hdr, h);
    return b;
}

/* Parse the image and expect failure with `want` in the message. */
static void st_expect_error(const char *hdr, uint64_t declared_len, size_t ndata,
                            const char *want) {
    size_t size;
    uint8_t *b = st_image(hdr, declared_len, ndata, &size);
    as_clear_error();
    struct as_st_file *f = as_st_open_mem(b, size, "lim.safetensors");
    if (f || !strstr(as_last_error(), want))
        fail_msg("header %s: expected error containing \"%s\", got %s", hdr, want,
                 f ? "success" : as_last_error());
    assert_non_null(strstr(as_last_error(), "lim.safetensors"));
    free(b);
}

static void st_expect_error_auto(const char *hdr, size_t ndata, const char *want) {
    st_expect_error(hdr, strlen(hdr), ndata, want);
}

static void test_st_shape_product_overflow(void **state) {
    (void)state;
    /* 2^32 * 2^32 = 2^64: the element count itself overflows */
    st_expect_error_auto("{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                         "\"data_offsets\":[0,0]}}",
                         0, "tensor t: element count overflows");
    /* 2^62 elements fit, but 2^62 * 4 bytes does not */
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                         "\"data_offsets\":[0,0]}}",
                         0, "tensor t: byte size of 4611686018427387904 elements of F32 overflows");
    /* a zero dimension makes any product zero: valid, zero bytes */
    size_t size;
    const char *zero = "{\"t\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],"
                       "\"data_offsets\":[0,0]}}";
    uint8_t *b = st_image(zero, strlen(zero), 0, &size);
    struct as_st_file *f = as_st_open_mem(b, size, "zero");
    assert_non_null(f);
    assert_int_equal(f->tensors[0].numel, 0);
    assert_int_equal(f->tensors[0].nbytes, 0);
    as_st_close(f);
    free(b);
}

static void test_st_dims(void **state) {
    (void)state;
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                         "\"data_offsets\":[0,4]}}",
                         4, "tensor t: shape has 9 dimensions, at most 8 supported");
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                         "tensor t: negative dimension -1 in shape");
    st_expect_error_auto("{\"t\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                         "tensor t: 3 elements of F4 do not fill whole bytes");
}

static void test_st_offsets_near_limits(void **state) {
    (void)state;
    /* begin/end near 2^63: sizes agree with the shape but lie far beyond the file */
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
                         "\"data_offsets\":[9223372036854775803,9223372036854775807]}}",
                         4,
                         "tensor t: data_offsets [9223372036854775803, 9223372036854775807] "
                         "out of bounds: data buffer is 4 bytes");
    /* end - begin would wrap if computed naively */
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
                         "\"data_offsets\":[9223372036854775807,3]}}",
                         4, "tensor t: invalid data_offsets");
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                         "tensor t: invalid data_offsets [-4, 0]");
    /* 2^64 - 1 is not a JSON integer jansson (int64) accepts: a syntax error, not a wrap */
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
                         "\"data_offsets\":[0,18446744073709551615]}}",
                         4, "invalid JSON header");
    st_expect_error_auto("{\"t\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],"
                         "\"data_offsets\":[0,4]}}",
                         4, "invalid JSON header");
}

static void test_st_header_length(void **state) {
    (void)state;
    const char *h = "{}";
    st_expect_error(h, UINT64_MAX, 0,
                    "header length 18446744073709551615 exceeds the 100 MB limit");
    st_expect_error(h, UINT64_MAX - 7, 0, "exceeds the 100 MB limit");
    st_expect_error(h, 100000001, 0, "header length 100000001 exceeds the 100 MB limit");
    /* within the limit but beyond the file: 8 + 3 > 10 bytes */
    st_expect_error(h, 3, 0, "header length 3 larger than the file allows (file is 10 bytes");
    size_t size;
    uint8_t *b = st_image(h, 2, 0, &size);
    assert_null(as_st_open_mem(b, 7, "short"));
    assert_non_null(strstr(as_last_error(), "short: truncated: 7 bytes"));
    assert_null(as_st_open_mem(b, 0, "empty"));
    struct as_st_file *f = as_st_open_mem(b, size, "ok");
    assert_non_null(f);
    assert_int_equal(f->n_tensors, 0);
    as_st_close(f);
    free(b);
}

static void test_st_writer_limits(void **state) {
    (void)state;
    struct as_st_writer *w = as_st_writer_new("/nonexistent/never-written.safetensors");
    int64_t huge[2] = {INT64_C(1) << 32, INT64_C(1) << 32};
    uint8_t x = 0;
    assert_int_equal(as_st_writer_add(w, "t", AS_U8, 2, huge, &x, 0), -1);
    assert_non_null(strstr(as_last_error(), "tensor t: element count overflows"));
    int64_t neg[1] = {-3};
    assert_int_equal(as_st_writer_add(w, "n", AS_F32, 1, neg, &x, 0), -1);
    assert_non_null(strstr(as_last_error(), "negative dimension"));
    int64_t one[1] = {1};
    assert_int_equal(as_st_writer_add(w, "d", AS_F32, 9, one, &x, 4), -1);
    assert_non_null(strstr(as_last_error(), "9 dimensions, at most 8"));
    as_st_writer_abort(w);
}

/* ---- stream records with a valid header checksum ---- */

struct sbuf {
    uint8_t *p;
    size_t n;
};

static void put_record(struct sbuf *s, unsigned kind, const char *json, uint64_t plen, uint32_t pad,
                       uint32_t hlen_override, const void *payload, size_t payload_bytes) {
    size_t jlen = strlen(json), hlen = (32 + jlen + 63) / 64 * 64 - 32;
    s->p = realloc(s->p, s->n + 32 + hlen + payload_bytes);
    uint8_t *h = s->p + s->n;
    memcpy(h, "ASTR", 4);
    h[4] = 1, h[5] = 0, h[6] = (uint8_t)kind, h[7] = 0;
    uint32_t hl = hlen_override ? hlen_override : (uint32_t)hlen;
    for (int i = 0; i < 4; i++)
        h[8 + i] = (uint8_t)(hl >> (8 * i)), h[12 + i] = (uint8_t)(pad >> (8 * i));
    for (int i = 0; i < 8; i++)
        h[16 + i] = (uint8_t)(plen >> (8 * i));
    memcpy(h + 32, json, jlen);
    memset(h + 32 + jlen, ' ', hlen - jlen);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, h, 24);
    XXH3_64bits_update(&st, h + 32, hlen);
    uint64_t sum = XXH3_64bits_digest(&st);
    for (int i = 0; i < 8; i++)
        h[24 + i] = (uint8_t)(sum >> (8 * i));
    if (payload_bytes) memcpy(h + 32 + hlen, payload, payload_bytes);
    s->n += 32 + hlen + payload_bytes;
}

/* Read the stream from a temporary file; expect an error containing `want` (payloads read). */
static void stream_expect_error(struct sbuf *s, const char *want) {
    char path[] = "/tmp/test_limits.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s->p, s->n), (ssize_t)s->n);
    lseek(fd, 0, SEEK_SET);
    struct as_stream_reader *r = as_stream_open_fd(fd, "lim.astr");
    const struct as_rec *rec;
    int k;
    const char *got = NULL;
    as_clear_error();
    while ((k = as_stream_next(r, &rec)) == 1)
        if (!as_stream_payload(r)) {
            k = -1;
            break;
        }
    if (k < 0) got = as_last_error();
    if (!got || !strstr(got, want))
        fail_msg("expected error containing \"%s\", got %s", want, got ? got : "success");
    assert_non_null(strstr(got, "stream lim.astr: "));
    as_stream_close(r);
    close(fd);
    unlink(path);
    free(s->p);
    s->p = NULL, s->n = 0;
}

static void test_stream_shape_and_size(void **state) {
    (void)state;
    struct sbuf s = {0};
    put_record(
        &s, 1,
        "{\"name\":\"t\",\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"role\":\"weight\","
        "\"layer\":-1,\"payload\":{\"kind\":\"inline\",\"nbytes\":0,\"xxh3\":"
        "\"0000000000000000\"}}",
        0, 0, 0, NULL, 0);
    stream_expect_error(&s, "record 1: record t: shape overflows");
    put_record(
        &s, 1,
        "{\"name\":\"t\",\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"role\":\"weight\","
        "\"payload\":{\"kind\":\"inline\",\"nbytes\":0,\"xxh3\":\"0000000000000000\"}}",
        0, 0, 0, NULL, 0);
    stream_expect_error(&s, "record t: shape overflows");
    put_record(
        &s, 1,
        "{\"name\":\"t\",\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"role\":\"weight\","
        "\"payload\":{\"kind\":\"inline\",\"nbytes\":4,\"xxh3\":\"0000000000000000\"}}",
        4, 60, 0, NULL, 0);
    stream_expect_error(&s, "record 1 (t): shape must be an array of at most 8 integers");
    put_record(&s, 1,
               "{\"name\":\"t\",\"dtype\":\"F32\",\"shape\":[-2],\"role\":\"weight\","
               "\"payload\":{\"kind\":\"inline\",\"nbytes\":4,\"xxh3\":\"0000000000000000\"}}",
               4, 60, 0, NULL, 0);
    stream_expect_error(&s, "record 1 (t): shape must hold non-negative integers");
}

static void test_stream_prefix_limits(void **state) {
    (void)state;
    struct sbuf s = {0};
    const char *ok =
        "{\"name\":\"t\",\"dtype\":\"U8\",\"shape\":[4],\"role\":\"weight\","
        "\"payload\":{\"kind\":\"inline\",\"nbytes\":4,\"xxh3\":\"0000000000000000\"}}";
    /* header length over the 256 MiB limit (checked before anything is allocated) */
    put_record(&s, 1, ok, 4, 60, 0x7fffffffu, NULL, 0);
    stream_expect_error(&s, "record 1: corrupt prefix (header 2147483647 bytes, pad 60)");
    put_record(&s, 1, ok, 4, 4096, 0, NULL, 0);
    stream_expect_error(&s, "record 1: corrupt prefix (header 160 bytes, pad 4096)");
    /* payload length 2^64 - 1 in the prefix: disagrees with the header, no allocation */
    put_record(&s, 1, ok, UINT64_MAX, 0, 0, NULL, 0);
    stream_expect_error(&s, "prefix says 18446744073709551615 payload bytes, header says 4");
    /* a payload of 2^60 bytes that the stream does not hold: truncation, never an allocation */
    put_record(
        &s, 1,
        "{\"name\":\"t\",\"dtype\":\"U8\",\"shape\":[1152921504606846976],\"role\":\"weight\","
        "\"payload\":{\"kind\":\"inline\",\"nbytes\":1152921504606846976,"
        "\"xxh3\":\"0000000000000000\"}}",
        UINT64_C(1152921504606846976), 0, 0, NULL, 0);
    stream_expect_error(&s, "record 1 (t): truncated in payload");
    /* end record whose count is beyond int64: rejected by the JSON parser, never compared */
    put_record(&s, 2, "{\"end\":true,\"records\":18446744073709551615}", 0, 0, 0, NULL, 0);
    stream_expect_error(&s, "record 1: header JSON invalid: too big integer");
}

static void test_stream_ref_offsets(void **state) {
    (void)state;
    struct sbuf s = {0};
    char json[512];
    /* offset + nbytes wraps past 2^64 */
    snprintf(json, sizeof json,
             "{\"name\":\"r\",\"dtype\":\"U8\",\"shape\":[32],\"role\":\"weight\",\"payload\":{"
             "\"kind\":\"ref\",\"nbytes\":32,\"file\":\"/tmp/x\",\"offset\":%" PRId64
             ",\"xxh3\":\"0000000000000000\"}}",
             INT64_MAX - 8);
    put_record(&s, 1, json, 0, 0, 0, NULL, 0);
    put_record(&s, 2, "{\"end\":true,\"records\":1}", 0, 0, 0, NULL, 0);
    /* INT64_MAX - 8 + 32 does not wrap uint64: the file is simply too short or missing */
    stream_expect_error(&s, "record 1 (r): ");
    snprintf(json, sizeof json,
             "{\"name\":\"r\",\"dtype\":\"U8\",\"shape\":[32],\"role\":\"weight\",\"payload\":{"
             "\"kind\":\"ref\",\"nbytes\":32,\"file\":\"/tmp/x\",\"offset\":18446744073709551600,"
             "\"xxh3\":\"0000000000000000\"}}");
    put_record(&s, 1, json, 0, 0, 0, NULL, 0);
    stream_expect_error(&s, "header JSON invalid"); /* beyond int64: rejected by the parser */
    /* relative path */
    put_record(&s, 1,
               "{\"name\":\"r\",\"dtype\":\"U8\",\"shape\":[1],\"role\":\"weight\",\"payload\":{"
               "\"kind\":\"ref\",\"nbytes\":1,\"file\":\"etc/passwd\",\"offset\":0,"
               "\"xxh3\":\"0000000000000000\"}}",
               0, 0, 0, NULL, 0);
    stream_expect_error(&s, "reference file must be an absolute path");
}

static void test_stream_writer_limits(void **state) {
    (void)state;
    char path[] = "/tmp/test_limits_w.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    struct as_stream_writer *w = as_stream_writer_fd(fd, "out");
    int64_t huge[2] = {INT64_C(1) << 32, INT64_C(1) << 32};
    uint8_t x = 0;
    assert_int_equal(as_stream_write_tensor(w, "t", "weight", -1, AS_U8, 2, huge, NULL, &x), -1);
    assert_non_null(strstr(as_last_error(), "stream out: record t: "));
    assert_int_equal(as_stream_write_tensor(w, "t", "weight", -1, AS_U8, 9, huge, NULL, &x), -1);
    struct as_rec r;
    int64_t one[1] = {16};
    as_rec_init(&r, "r", "weight", -1, AS_U8, 1, one);
    r.kind = AS_PAYLOAD_REF;
    r.file = "/tmp/x";
    r.offset = UINT64_MAX - 4;
    assert_int_equal(as_stream_write(w, &r, NULL), -1);
    assert_non_null(strstr(as_last_error(), "record r: reference offset overflows"));
    as_stream_writer_free(w);
    close(fd);
    unlink(path);
}

/* ---- llama2.c tokenizer.bin (regressions found by fuzz_llama2c) ---- */

/* tokenizer.bin: i32 max_len, then per token f32 score, i32 len, bytes. Token i is pieces[i] if
 * given (len from plens), else "<i>" spelled out. */
static void write_l2c_tok(const char *path, int n, const char **pieces, const int *plens, int np) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int32_t mx = 16;
    fwrite(&mx, 4, 1, f);
    for (int i = 0; i < n; i++) {
        char buf[16];
        const char *p = buf;
        int32_t len;
        if (i < np) {
            p = pieces[i], len = plens[i];
        } else {
            len = snprintf(buf, sizeof buf, "<%d>", i);
        }
        float score = (float)i;
        fwrite(&score, 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(p, 1, (size_t)len, f);
    }
    fclose(f);
}

static void test_l2c_tokenizer_hostile(void **state) {
    (void)state;
    char path[] = "/tmp/test_limits_tok.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct as_l2c_tokenizer t;
    /* vocab 1: the encoder's byte fallback (ids 3..258) would index past the table */
    write_l2c_tok(path, 1, NULL, NULL, 0);
    assert_int_equal(as_l2c_tokenizer_load(path, 1, &t), -1);
    assert_non_null(strstr(as_last_error(), "a llama2.c tokenizer needs at least 259 tokens"));
    /* pieces holding NUL bytes: lookups compare by length, never read past a piece */
    const char *pieces[] = {"a\0", "a\0b", "ab", " "};
    int lens[] = {2, 3, 2, 1};
    write_l2c_tok(path, 300, pieces, lens, 4);
    assert_int_equal(as_l2c_tokenizer_load(path, 300, &t), 0);
    assert_int_equal(as_l2c_lookup(&t, "a\0b", 3), 1);
    assert_int_equal(as_l2c_lookup(&t, "a\0", 2), 0);
    assert_int_equal(as_l2c_lookup(&t, "a\0bc", 4), -1);
    assert_int_equal(as_l2c_lookup(&t, "ab", 2), 2);
    int ids[32];
    /* "a" and "b" are no pieces: byte fallback (byte + 3), and no pair merges into a piece */
    int n = as_l2c_encode(&t, "ab", 1, 1, ids);
    int want[] = {1, 3, 'a' + 3, 'b' + 3, 2}; /* BOS, " ", <0x61>, <0x62>, EOS */
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof want);
    as_l2c_tokenizer_free(&t);
    /* no " " in the vocabulary: no dummy prefix instead of an id of -1 */
    write_l2c_tok(path, 300, pieces, lens, 3);
    assert_int_equal(as_l2c_tokenizer_load(path, 300, &t), 0);
    n = as_l2c_encode(&t, "ab", 0, 0, ids);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 'a' + 3);
    as_l2c_tokenizer_free(&t);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_st_shape_product_overflow),
        cmocka_unit_test(test_st_dims),
        cmocka_unit_test(test_st_offsets_near_limits),
        cmocka_unit_test(test_st_header_length),
        cmocka_unit_test(test_st_writer_limits),
        cmocka_unit_test(test_stream_shape_and_size),
        cmocka_unit_test(test_stream_prefix_limits),
        cmocka_unit_test(test_stream_ref_offsets),
        cmocka_unit_test(test_stream_writer_limits),
        cmocka_unit_test(test_l2c_tokenizer_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
