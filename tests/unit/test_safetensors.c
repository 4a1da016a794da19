/* test_safetensors: reader, sharded checkpoints and writer.
 *
 * Round trips of every dtype; interoperability with the Hugging Face `safetensors` package in both
 * directions through tests/tools/safetensors_oracle.py (skipped when python3 or the module is
 * missing); one hand-made bad file per validation rule, each checking that the one-line error
 * names the file, the tensor and the problem; writer failures that must leave no file behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "as_error.h"
#include "safetensors.h"

static char tmpdir[512];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_safetensors.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tpath(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Number of entries in tmpdir whose name starts with prefix (to find stray temporaries). */
static int count_prefix(const char *prefix) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '^%s' > /dev/null", tmpdir, prefix);
    return system(cmd) == 0;
}

/* A safetensors file from a literal header (length hlen, or strlen if hlen < 0) and data_len
 * bytes of data (value = byte index). */
static void write_raw(const char *path, const char *header, long long hlen, size_t data_len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    uint64_t n = hlen < 0 ? strlen(header) : (uint64_t)hlen;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(n >> (8 * i));
    fwrite(le, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i & 0xFF), fp);
    fclose(fp);
}

/* Expect as_st_open(path) to fail with a message containing the path and each given piece. */
static void expect_open_error(const char *path, const char *a, const char *b) {
    as_clear_error();
    struct as_st_file *f = as_st_open(path);
    if (f) {
        as_st_close(f);
        fail_msg("%s: opened, expected an error mentioning '%s'", path, a);
    }
    const char *e = as_last_error();
    if (!strstr(e, path) || !strstr(e, a) || (b && !strstr(e, b)))
        fail_msg("error '%s' lacks '%s' / '%s' / '%s'", e, path, a, b ? b : "");
    if (strchr(e, '\n')) fail_msg("error '%s' spans lines", e);
}

/* ---- round trip ---- */

struct sample {
    const char *name;
    enum as_dtype dt;
    int ndim;
    int64_t shape[3];
};

static const struct sample samples[] = {
    {"f32", AS_F32, 2, {3, 5}},    {"f16", AS_F16, 1, {7}},
    {"bf16", AS_BF16, 2, {2, 3}},  {"f64", AS_F64, 1, {3}},
    {"i8", AS_I8, 1, {5}},         {"u8", AS_U8, 1, {3}},
    {"i16", AS_I16, 1, {2}},       {"u16", AS_U16, 1, {2}},
    {"i32", AS_I32, 2, {2, 2}},    {"u32", AS_U32, 1, {1}},
    {"i64", AS_I64, 1, {3}},       {"u64", AS_U64, 1, {2}},
    {"bool", AS_BOOL, 1, {4}},     {"e4m3", AS_F8_E4M3, 2, {4, 4}},
    {"e5m2", AS_F8_E5M2, 1, {9}},  {"e8m0", AS_F8_E8M0, 1, {5}},
    {"f4", AS_F4, 2, {3, 4}},      {"scalar", AS_F32, 0, {0}},
    {"empty", AS_BF16, 2, {0, 4}}, {"layers.0.\"quoted\"\\name", AS_U8, 1, {1}},
};
#define N_SAMPLES (int)(sizeof samples / sizeof *samples)

/* Deterministic source values that every float type represents exactly (small dyadic numbers),
 * and raw bytes for the integer types. */
static void sample_bytes(const struct sample *s, uint8_t *buf, uint64_t nbytes, uint64_t numel) {
    if (as_dtype_traits[s->dt].is_float) {
        float *v = malloc((numel ? numel : 1) * sizeof *v);
        for (uint64_t i = 0; i < numel; i++) {
            static const float vals[] = {0.5f, -1.0f, 1.5f, 2.0f, -3.0f, 4.0f, 0.0f, -6.0f};
            v[i] = vals[(i + (uint64_t)s->dt) % 8];
            if (s->dt == AS_F8_E8M0) v[i] = ldexpf(1.0f, (int)i - 3);
        }
        assert_int_equal(as_convert_from_f32(s->dt, v, buf, numel), 0);
        free(v);
    } else {
        for (uint64_t i = 0; i < nbytes; i++)
            buf[i] = (uint8_t)(37 * i + 11 * (uint64_t)s->dt);
        if (s->dt == AS_BOOL)
            for (uint64_t i = 0; i < nbytes; i++)
                buf[i] &= 1;
    }
}

static uint64_t sample_numel(const struct sample *s) {
    uint64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= (uint64_t)s->shape[d];
    return n;
}

static void write_samples(const char *path, uint8_t **bufs) {
    struct as_st_writer *w = as_st_writer_new(path);
    assert_non_null(w);
    for (int i = 0; i < N_SAMPLES; i++) {
        const struct sample *s = &samples[i];
        uint64_t numel = sample_numel(s), nb = as_dtype_nbytes(s->dt, numel, NULL);
        bufs[i] = malloc(nb ? nb : 1);
        sample_bytes(s, bufs[i], nb, numel);
        /* Alternate borrowed and copied data; the copied buffer is scribbled on afterwards. */
        if (i & 1) {
            assert_int_equal(
                as_st_writer_add_copy(w, s->name, s->dt, s->ndim, s->shape, bufs[i], nb), 0);
        } else {
            assert_int_equal(as_st_writer_add(w, s->name, s->dt, s->ndim, s->shape, bufs[i], nb),
                             0);
        }
    }
    assert_int_equal(as_st_writer_set_metadata(w, "producer", "as-test \"q\""), 0);
    uint8_t *scratch[N_SAMPLES];
    for (int i = 0; i < N_SAMPLES; i++) {
        uint64_t nb = as_dtype_nbytes(samples[i].dt, sample_numel(&samples[i]), NULL);
        scratch[i] = malloc(nb ? nb : 1);
        memcpy(scratch[i], bufs[i], nb);
        if (i & 1) memset(bufs[i], 0xEE, nb); /* the writer must have copied these */
    }
    if (as_st_writer_finish(w)) fail_msg("%s", as_last_error());
    for (int i = 0; i < N_SAMPLES; i++)
        free(bufs[i]), bufs[i] = scratch[i];
}

static void test_round_trip(void **state) {
    (void)state;
    char *path = tpath("rt.safetensors");
    uint8_t *bufs[N_SAMPLES];
    write_samples(path, bufs);
    assert_false(count_prefix("rt.safetensors.tmp"));
    struct as_st_file *f = as_st_open(path);
    if (!f) fail_msg("%s", as_last_error());
    assert_int_equal(f->n_tensors, N_SAMPLES);
    assert_int_equal(f->header_len % 8, 0);
    assert_non_null(strstr(f->metadata_json, "\"format\":\"pt\""));
    assert_non_null(strstr(f->metadata_json, "as-test \\\"q\\\""));
    uint64_t pos = 8 + f->header_len;
    for (int i = 0; i < N_SAMPLES; i++) {
        const struct sample *s = &samples[i];
        const struct as_st_tensor *t = &f->tensors[i]; /* data order = add order */
        assert_string_equal(t->name, s->name);
        assert_ptr_equal(as_st_find(f, s->name), t);
        assert_int_equal(t->dtype, s->dt);
        assert_int_equal(t->ndim, s->ndim);
        for (int d = 0; d < s->ndim; d++)
            assert_int_equal(t->shape[d], s->shape[d]);
        assert_int_equal(t->numel, sample_numel(s));
        assert_int_equal(t->offset, pos);
        assert_ptr_equal(t->data, (const uint8_t *)f->map + t->offset); /* zero copy */
        assert_memory_equal(t->data, bufs[i], t->nbytes ? t->nbytes : 0);
        pos += t->nbytes;
    }
    assert_int_equal(pos, f->map_size);
    assert_null(as_st_find(f, "nope"));
    as_st_close(f);

    /* The same file as a checkpoint: directly, and as DIR/model.safetensors. */
    mkdir(tpath("ck"), 0777);
    assert_int_equal(rename(path, tpath("ck/model.safetensors")), 0);
    for (int pass = 0; pass < 2; pass++) {
        struct as_ckpt *c = as_ckpt_open(pass ? tpath("ck") : tpath("ck/model.safetensors"));
        if (!c) fail_msg("%s", as_last_error());
        assert_int_equal(c->n_tensors, N_SAMPLES);
        for (int i = 1; i < c->n_tensors; i++)
            assert_true(strcmp(c->tensors[i - 1]->name, c->tensors[i]->name) < 0);
        const struct as_st_tensor *t = as_ckpt_find(c, "bf16");
        assert_non_null(t);
        assert_non_null(strstr(as_ckpt_file_of(c, t), "ck/model.safetensors"));
        float v[6];
        assert_int_equal(as_ckpt_read_f32(c, t, v), 0);
        static const float vals[] = {0.5f, -1.0f, 1.5f, 2.0f, -3.0f, 4.0f, 0.0f, -6.0f};
        for (int i = 0; i < 6; i++)
            assert_true(v[i] == vals[(i + AS_BF16) % 8]);
        int64_t good[2] = {2, 3}, bad[2] = {3, 2};
        assert_ptr_equal(as_ckpt_expect(c, "bf16", 2, good), t);
        assert_null(as_ckpt_expect(c, "bf16", 2, bad));
        assert_non_null(strstr(as_last_error(),
                               "model.safetensors: tensor bf16: shape [2, 3], expected [3, 2]"));
        assert_null(as_ckpt_expect(c, "missing.weight", 1, good));
        assert_non_null(strstr(as_last_error(), "tensor missing.weight: not found"));
        as_ckpt_close(c);
    }
    for (int i = 0; i < N_SAMPLES; i++)
        free(bufs[i]);
}

/* ---- the Python oracle ---- */

static const char *oracle_path(void) {
    static char p[1024];
    const char *src = getenv("AS_SRC"); /* repo root; tests run from it by default */
    snprintf(p, sizeof p, "%s/tests/tools/safetensors_oracle.py", src ? src : ".");
    return p;
}

/* Run the oracle; returns 0 on success, 77 when it cannot run (skip). */
static int run_oracle(const char *mode, const char *a, const char *b) {
    if (!exists(oracle_path())) return 77;
    char cmd[3200];
    snprintf(cmd, sizeof cmd, "python3 '%s' %s '%s' '%s' 2>&1", oracle_path(), mode, a, b);
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc)) return 1;
    rc = WEXITSTATUS(rc);
    return rc == 127 ? 77 : rc;
}

/* Exact value of element i of a tensor as a double: integers from their raw bytes, floats
 * through as_convert_to_f32. */
static double element(const struct as_st_tensor *t, const float *f32, uint64_t i) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case AS_I8:
        return (int8_t)p[i];
    case AS_U8:
    case AS_BOOL:
        return p[i];
#define RAW(T)                                                                                     \
    do {                                                                                           \
        T v;                                                                                       \
        memcpy(&v, p + i * sizeof v, sizeof v);                                                    \
        return (double)v;                                                                          \
    } while (0)
    case AS_I16:
        RAW(int16_t);
    case AS_U16:
        RAW(uint16_t);
    case AS_I32:
        RAW(int32_t);
    case AS_U32:
        RAW(uint32_t);
    case AS_F64:
        RAW(double);
    default:
        return f32[i];
    }
}

/* 64-bit integers compare as integers (doubles would round). */
static int int64_matches(const struct as_st_tensor *t, uint64_t i, const char *tok) {
    if (t->dtype == AS_I64) {
        int64_t v;
        memcpy(&v, (const uint8_t *)t->data + 8 * i, 8);
        return v == strtoll(tok, NULL, 10);
    }
    uint64_t v;
    memcpy(&v, (const uint8_t *)t->data + 8 * i, 8);
    return v == strtoull(tok, NULL, 10);
}

/* Compare every line of an oracle text file with the tensors of f (or of a second file g):
 * dtype, shape and every value (NaN matches NaN; -0 must match -0). Returns the line count. */
static int check_against_text(const char *txt, struct as_st_file *f, struct as_st_file *g) {
    FILE *fp = fopen(txt, "r");
    assert_non_null(fp);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, fp) > 0) {
        line[strcspn(line, "\n")] = 0;
        char *cur = line;
        char *name = strsep(&cur, "\t"), *dtype = strsep(&cur, "\t"), *shape = strsep(&cur, "\t");
        char *vals = cur;
        if (strcmp(name, "__metadata__") == 0) continue;
        assert_non_null(vals);
        const struct as_st_tensor *t = as_st_find(f, name);
        if (!t && g) t = as_st_find(g, name);
        if (!t) fail_msg("oracle tensor %s not found", name);
        if (strcmp(as_dtype_name(t->dtype), dtype) != 0)
            fail_msg("%s: dtype %s vs %s", name, as_dtype_name(t->dtype), dtype);
        char want_shape[256] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(want_shape + strlen(want_shape), sizeof want_shape - strlen(want_shape),
                     "%s%lld", d ? "," : "", (long long)t->shape[d]);
        if (strcmp(want_shape, shape) != 0)
            fail_msg("%s: shape %s vs oracle %s", name, want_shape, shape);
        float *f32 = malloc((t->numel ? t->numel : 1) * sizeof(float));
        assert_int_equal(as_convert_to_f32(t->dtype, t->data, f32, t->numel), 0);
        uint64_t i = 0;
        char *save = NULL;
        for (char *tok = strtok_r(vals, " ", &save); tok; tok = strtok_r(NULL, " ", &save), i++) {
            if (i >= t->numel)
                fail_msg("%s: oracle has more than %llu values", name,
                         (unsigned long long)t->numel);
            if (t->dtype == AS_I64 || t->dtype == AS_U64) {
                if (!int64_matches(t, i, tok))
                    fail_msg("%s[%llu]: oracle %s", name, (unsigned long long)i, tok);
                continue;
            }
            double want = strtod(tok, NULL), got = element(t, f32, i);
            int ok = isnan(want) ? isnan(got) : (got == want && !signbit(got) == !signbit(want));
            if (!ok)
                fail_msg("%s[%llu]: ours %.17g, oracle %s", name, (unsigned long long)i, got, tok);
        }
        if (i != t->numel)
            fail_msg("%s: oracle has %llu values, want %llu", name, (unsigned long long)i,
                     (unsigned long long)t->numel);
        free(f32);
        n++;
    }
    free(line);
    fclose(fp);
    return n;
}

/* Our writer's file, parsed and decoded by the safetensors package and the oracle's own decoders,
 * must give the values we decode and the values we encoded. */
static void test_python_reads_ours(void **state) {
    (void)state;
    char *path = tpath("ours.safetensors"), *txt = tpath("ours.txt");
    uint8_t *bufs[N_SAMPLES];
    write_samples(path, bufs);
    for (int i = 0; i < N_SAMPLES; i++)
        free(bufs[i]);
    int rc = run_oracle("dump", path, txt);
    if (rc == 77) skip();
    assert_int_equal(rc, 0);
    struct as_st_file *f = as_st_open(path);
    assert_non_null(f);
    assert_int_equal(check_against_text(txt, f, NULL), N_SAMPLES);
    /* The metadata as Python saw it. */
    FILE *fp = fopen(txt, "r");
    char line[512];
    assert_non_null(fgets(line, sizeof line, fp));
    fclose(fp);
    assert_non_null(strstr(line, "\"format\": \"pt\""));
    assert_non_null(strstr(line, "\"producer\": \"as-test \\\"q\\\"\""));
    /* Floats decode to the exact source values. */
    static const float vals[] = {0.5f, -1.0f, 1.5f, 2.0f, -3.0f, 4.0f, 0.0f, -6.0f};
    const struct as_st_tensor *t = as_st_find(f, "e4m3");
    float v[16];
    assert_int_equal(as_convert_to_f32(t->dtype, t->data, v, 16), 0);
    for (int i = 0; i < 16; i++)
        assert_true(v[i] == vals[(i + AS_F8_E4M3) % 8]);
    as_st_close(f);
}

/* Files written by the safetensors package (its serializer and safetensors.numpy.save_file). */
static void test_we_read_python(void **state) {
    (void)state;
    char *path = tpath("py.safetensors"), *txt = tpath("py.txt");
    int rc = run_oracle("write", path, txt);
    if (rc == 77) skip();
    assert_int_equal(rc, 0);
    struct as_st_file *f = as_st_open(path), *g = as_st_open(tpath("py.np.safetensors"));
    if (!f || !g) fail_msg("%s", as_last_error());
    assert_int_equal(check_against_text(txt, f, g), f->n_tensors + g->n_tensors);
    assert_int_equal(f->n_tensors, 5);
    assert_non_null(strstr(g->metadata_json, "\"k\":\"v\""));
    const struct as_st_tensor *t = as_st_find(g, "np.scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    t = as_st_find(g, "np.empty");
    assert_int_equal(t->numel, 0);
    as_st_close(f);
    as_st_close(g);
}

/* ---- bad files: one per validation rule ---- */

static void test_bad_truncated(void **state) {
    (void)state;
    char *p = tpath("short.safetensors");
    FILE *fp = fopen(p, "wb");
    fwrite("\x10\0\0\0", 1, 4, fp);
    fclose(fp);
    expect_open_error(p, "truncated", "8-byte");
    /* A whole file cut in the data buffer: the last tensor is out of bounds. */
    p = tpath("cut.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]}}", -1, 40);
    expect_open_error(p, "tensor w: data_offsets [0, 64] out of bounds", "truncated?");
}

static void test_bad_header_len(void **state) {
    (void)state;
    char *p = tpath("hlen.safetensors");
    write_raw(p, "{}", 5000, 0);
    expect_open_error(p, "header length 5000 larger than the file", NULL);
    p = tpath("huge.safetensors");
    write_raw(p, "{}", 200000000, 16);
    expect_open_error(p, "header length 200000000 exceeds the 100 MB limit", NULL);
}

static void test_bad_overlap(void **state) {
    (void)state;
    char *p = tpath("overlap.safetensors");
    write_raw(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
              -1, 24);
    expect_open_error(p, "tensor b: data_offsets [8, 24] overlap tensor a", NULL);
}

static void test_bad_out_of_bounds(void **state) {
    (void)state;
    char *p = tpath("oob.safetensors");
    write_raw(
        p,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[1000000000000,1000000000004]}}",
        -1, 16);
    expect_open_error(p, "tensor b: data_offsets [1000000000000, 1000000000004] out of bounds",
                      "16 bytes");
}

static void test_bad_hole(void **state) {
    (void)state;
    char *p = tpath("hole.safetensors");
    write_raw(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}}",
              -1, 40);
    expect_open_error(p, "tensor b: hole of 8 bytes", NULL);
    p = tpath("start.safetensors"); /* data not starting at 0 */
    write_raw(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", -1, 8);
    expect_open_error(p, "tensor a: hole of 4 bytes", NULL);
    p = tpath("trail.safetensors"); /* bytes after the last tensor */
    write_raw(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", -1, 12);
    expect_open_error(p, "8 bytes at the end of the data buffer belong to no tensor", NULL);
}

static void test_bad_dtype(void **state) {
    (void)state;
    char *p = tpath("dtype.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F12\",\"shape\":[4],\"data_offsets\":[0,6]}}", -1, 6);
    expect_open_error(p, "tensor w: unknown dtype \"F12\"", NULL);
    write_raw(p, "{\"w\":{\"shape\":[4],\"data_offsets\":[0,6]}}", -1, 6);
    expect_open_error(p, "tensor w: missing or non-string \"dtype\"", NULL);
}

static void test_bad_size(void **state) {
    (void)state;
    char *p = tpath("size.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", -1, 16);
    expect_open_error(
        p, "tensor w: data_offsets [0, 16] hold 16 bytes but shape [3] of F32 needs 12", NULL);
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", -1, 16);
    expect_open_error(p, "tensor w: negative dimension -1", NULL);
    write_raw(
        p,
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}}",
        -1, 16);
    expect_open_error(p, "tensor w: element count overflows", NULL);
    write_raw(p,
              "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}",
              -1, 16);
    expect_open_error(p, "tensor w: byte size", "overflows");
    write_raw(p, "{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", -1, 2);
    expect_open_error(p, "tensor w: 3 elements of F4 do not fill whole bytes", NULL);
    write_raw(p, "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,0]}}", -1, 2);
    expect_open_error(p, "tensor w: invalid data_offsets [2, 0]", NULL);
}

static void test_bad_json(void **state) {
    (void)state;
    char *p = tpath("json.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",", -1, 0);
    expect_open_error(p, "invalid JSON header", NULL);
    write_raw(p,
              "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
              -1, 2);
    expect_open_error(p, "invalid JSON header", "duplicate");
    write_raw(p, "{\"__metadata__\":{\"format\":7}}", -1, 0);
    expect_open_error(p, "__metadata__ key \"format\": value is not a string", NULL);
    write_raw(p, "[1,2]   ", -1, 0);
    expect_open_error(p, "header does not start with '{'", NULL);
}

/* ---- sharded checkpoints ---- */

static void write_shard(const char *path, const char *const *names, int n) {
    struct as_st_writer *w = as_st_writer_new(path);
    float v[2] = {1.0f, 2.0f};
    int64_t shape[1] = {2};
    for (int i = 0; i < n; i++)
        assert_int_equal(as_st_writer_add_copy(w, names[i], AS_F32, 1, shape, v, 8), 0);
    if (as_st_writer_finish(w)) fail_msg("%s", as_last_error());
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
}

static void expect_ckpt_error(const char *path, const char *a, const char *b) {
    as_clear_error();
    struct as_ckpt *c = as_ckpt_open(path);
    if (c) {
        as_ckpt_close(c);
        fail_msg("%s: opened, expected '%s'", path, a);
    }
    const char *e = as_last_error();
    if (!strstr(e, a) || (b && !strstr(e, b)))
        fail_msg("error '%s' lacks '%s' / '%s'", e, a, b ? b : "");
    if (strchr(e, '\n')) fail_msg("error '%s' spans lines", e);
}

static void test_sharded(void **state) {
    (void)state;
    char dir[1024], index[1024]; /* tpath's buffers rotate: keep copies */
    snprintf(dir, sizeof dir, "%s", tpath("shards"));
    snprintf(index, sizeof index, "%s", tpath("shards/model.safetensors.index.json"));
    mkdir(dir, 0777);
    const char *n1[] = {"a", "b"}, *n2[] = {"c"};
    write_shard(tpath("shards/model-00001-of-00002.safetensors"), n1, 2);
    write_shard(tpath("shards/model-00002-of-00002.safetensors"), n2, 1);
    write_text(
        index,
        "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
        "\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\","
        "\"b\":\"model-00001-of-00002.safetensors\"}}");
    for (int pass = 0; pass < 2; pass++) {
        struct as_ckpt *c = as_ckpt_open(pass ? index : dir);
        if (!c) fail_msg("%s", as_last_error());
        assert_int_equal(c->n_files, 2);
        assert_int_equal(c->n_tensors, 3);
        assert_string_equal(c->tensors[2]->name, "c");
        assert_non_null(strstr(c->tensor_file[2], "model-00002-of-00002.safetensors"));
        float v[2];
        assert_int_equal(as_ckpt_read_f32(c, as_ckpt_find(c, "c"), v), 0);
        assert_true(v[0] == 1.0f && v[1] == 2.0f);
        as_ckpt_close(c);
    }

    /* Missing shard. */
    write_text(index, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                      "\"z\":\"model-00009-of-00009.safetensors\"}}");
    expect_ckpt_error(
        dir, "model.safetensors.index.json: tensor z: shard model-00009-of-00009.safetensors",
        "cannot open");
    /* Tensor listed for a shard that does not hold it. */
    write_text(
        index,
        "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
        "\"b\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00001-of-00002.safetensors\"}}");
    expect_ckpt_error(dir, "tensor c: not found in shard", "model-00001-of-00002.safetensors");
    /* A shard tensor the index does not list. */
    write_text(index, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\"}}");
    expect_ckpt_error(dir, "tensor b: in shard", "not listed in weight_map");
    /* The same name in two shards. */
    const char *n3[] = {"b", "d"};
    write_shard(tpath("shards/model-00002-of-00002.safetensors"), n3, 2);
    write_text(
        index,
        "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
        "\"b\":\"model-00001-of-00002.safetensors\",\"d\":\"model-00002-of-00002.safetensors\"}}");
    expect_ckpt_error(dir, "tensor b: present in two shards", NULL);
    /* Paths outside the directory, broken JSON, a directory without a checkpoint. */
    write_text(index, "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    expect_ckpt_error(dir, "tensor a: shard name \"../x.safetensors\"", NULL);
    write_text(index, "{\"weight_map\":");
    expect_ckpt_error(dir, "model.safetensors.index.json: invalid JSON", NULL);
    write_text(index, "{\"metadata\":{}}");
    expect_ckpt_error(dir, "missing or non-object \"weight_map\"", NULL);
    mkdir(tpath("emptydir"), 0777);
    expect_ckpt_error(tpath("emptydir"), "emptydir: no model.safetensors", NULL);
}

/* ---- writer failures leave nothing behind ---- */

static void test_writer_failures(void **state) {
    (void)state;
    char *p = tpath("wfail.safetensors");
    float v[4] = {0};
    int64_t shape[1] = {4}, bad[1] = {5};

    struct as_st_writer *w = as_st_writer_new(p);
    assert_int_equal(as_st_writer_add(w, "x", AS_F32, 1, bad, v, 16), -1);
    assert_non_null(
        strstr(as_last_error(),
               "wfail.safetensors: tensor x: 16 bytes given but shape [5] of F32 needs 20"));
    assert_int_equal(as_st_writer_add(w, "__metadata__", AS_F32, 1, shape, v, 16), -1);
    assert_int_equal(as_st_writer_add(w, "x", AS_F32, 1, shape, v, 16), 0);
    assert_int_equal(as_st_writer_add(w, "x", AS_F32, 1, shape, v, 16), 0);
    assert_int_equal(as_st_writer_finish(w), -1);
    assert_non_null(strstr(as_last_error(), "tensor x: added twice"));
    assert_false(exists(p));
    assert_false(count_prefix("wfail.safetensors"));

    /* Existing file survives a failed rewrite. */
    write_text(p, "old");
    w = as_st_writer_new(p);
    assert_int_equal(as_st_writer_add(w, "x", AS_F32, 1, shape, v, 16), 0);
    assert_int_equal(as_st_writer_add(w, "x", AS_F32, 1, shape, v, 16), 0);
    assert_int_equal(as_st_writer_finish(w), -1);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 3);
    unlink(p);

    /* Unwritable location. */
    w = as_st_writer_new(tpath("no/such/dir/x.safetensors"));
    assert_int_equal(as_st_writer_add(w, "x", AS_F32, 1, shape, v, 16), 0);
    assert_int_equal(as_st_writer_finish(w), -1);
    assert_non_null(strstr(as_last_error(), "no/such/dir/x.safetensors"));

    /* A write that fails half way (file size limit): no file, no temporary. Done in a child so
     * the limit and the ignored SIGXFSZ do not leak into other tests. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        static float big[4096];
        int64_t s[1] = {4096};
        struct as_st_writer *cw = as_st_writer_new(p);
        as_st_writer_add(cw, "big", AS_F32, 1, s, big, sizeof big);
        int rc = as_st_writer_finish(cw);
        _exit(rc == -1 && strstr(as_last_error(), "write failed") ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_false(exists(p));
    assert_false(count_prefix("wfail.safetensors"));
}

/* ---- sharded streaming writer ---- */

/* Tensor i: I32 [len] with value i * 1000 + j (an expectation independent of the writer). */
static int64_t shard_len(int i) {
    return 1 + (i * 37) % 50;
}

static void shard_fill(int i, int32_t *v) {
    for (int64_t j = 0; j < shard_len(i); j++)
        v[j] = (int32_t)(i * 1000 + j);
}

/* Write n tensors (names "t.<i>" padded to name_len) into a new directory; return it. */
static const char *write_sharded(const char *dir_name, int n, int name_len, uint64_t max_shard,
                                 uint64_t buffer, struct as_st_shard_report *rep) {
    const char *dir = tpath(dir_name);
    assert_int_equal(mkdir(dir, 0755), 0);
    struct as_st_shard_opts o = {max_shard, buffer, 1, rep};
    struct as_st_writer *w = as_st_writer_new_sharded(dir, &o);
    for (int i = 0; i < n; i++) {
        char name[300];
        snprintf(name, sizeof name, "t.%0*d", name_len, i);
        int32_t v[64];
        shard_fill(i, v);
        int64_t shape[1] = {shard_len(i)};
        if (as_st_writer_add_copy(w, name, AS_I32, 1, shape, v, 4 * (uint64_t)shape[0]))
            fail_msg("%s", as_last_error());
    }
    if (as_st_writer_finish(w)) fail_msg("%s", as_last_error());
    return dir;
}

/* Every tensor back through as_ckpt_open (which follows the index), with its values. */
static void check_sharded(const char *dir, int n, int name_len) {
    struct as_ckpt *c = as_ckpt_open(dir);
    if (!c) fail_msg("%s", as_last_error());
    assert_int_equal(c->n_tensors, n);
    for (int i = 0; i < n; i++) {
        char name[300];
        snprintf(name, sizeof name, "t.%0*d", name_len, i);
        const struct as_st_tensor *t = as_ckpt_find(c, name);
        assert_non_null(t);
        int32_t v[64];
        shard_fill(i, v);
        assert_int_equal(t->nbytes, 4 * shard_len(i));
        assert_memory_equal(t->data, v, t->nbytes);
    }
    as_ckpt_close(c);
}

static void test_shard_writer(void **state) {
    (void)state;
    struct as_st_shard_report rep;
    /* buffered and spilled shards give the same tensors; 100-byte shards hold tensors until the
     * next would exceed 100 bytes (tensors are 4..200 bytes: a 200-byte one stands alone) */
    for (int spill = 0; spill < 2; spill++) {
        const char *d =
            write_sharded(spill ? "sh_spill" : "sh_buf", 40, 2, 100, spill ? 0 : 1 << 20, &rep);
        check_sharded(d, 40, 2);
        assert_int_equal(rep.n_tensors, 40);
        uint64_t total = 0;
        int expect_shards = 0;
        for (int i = 0, cur = 0; i < 40; i++) { /* the greedy rule, computed independently */
            uint64_t b = 4 * (uint64_t)shard_len(i);
            if (!i || cur + b > 100) expect_shards++, cur = 0;
            cur += (int)b;
            total += b;
        }
        assert_int_equal(rep.n_shards, expect_shards);
        assert_int_equal(rep.total_bytes, total);
        char p[1200];
        snprintf(p, sizeof p, "%s/model-%05d-of-%05d.safetensors", d, expect_shards, expect_shards);
        assert_true(exists(p));
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        assert_false(exists(p));
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "ls '%s' | grep -q part", d);
        assert_int_not_equal(system(cmd), 0); /* no temporary left */
    }
    /* one shard: a plain model.safetensors, no index, byte-identical to the plain writer's */
    const char *d = write_sharded("sh_one", 10, 2, 0, AS_ST_DEFAULT_BUFFER, &rep);
    assert_int_equal(rep.n_shards, 1);
    check_sharded(d, 10, 2);
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    assert_false(exists(p));
    struct as_st_writer *w = as_st_writer_new(tpath("plain.safetensors"));
    for (int i = 0; i < 10; i++) {
        char name[32];
        snprintf(name, sizeof name, "t.%02d", i);
        int32_t v[64];
        shard_fill(i, v);
        int64_t shape[1] = {shard_len(i)};
        assert_int_equal(as_st_writer_add_copy(w, name, AS_I32, 1, shape, v, 4 * shape[0]), 0);
    }
    assert_int_equal(as_st_writer_finish(w), 0);
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "cmp -s '%s/model.safetensors' '%s'", d, tpath("plain.safetensors"));
    assert_int_equal(system(cmd), 0);
    /* spilled shards reserve header space; a shard whose header would outgrow it is closed early
     * (2000 names of 200 characters: ~450 KB of header; 64 MB shards reserve 64 KiB) */
    d = write_sharded("sh_names", 2000, 200, 64u << 20, 0, &rep);
    assert_true(rep.n_shards > 1);
    check_sharded(d, 2000, 200);
}

static void test_shard_writer_errors(void **state) {
    (void)state;
    const char *dir = tpath("sh_err");
    assert_int_equal(mkdir(dir, 0755), 0);
    struct as_st_shard_opts o = {16, 0, 1, NULL};
    struct as_st_writer *w = as_st_writer_new_sharded(dir, &o);
    int32_t v[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    assert_int_equal(as_st_writer_add_copy(w, "a", AS_I32, 1, shape, v, 16), 0);
    assert_int_equal(as_st_writer_add_copy(w, "b", AS_I32, 1, shape, v, 16), 0);
    /* a name already written, even to an earlier shard */
    assert_int_equal(as_st_writer_add_copy(w, "a", AS_I32, 1, shape, v, 16), -1);
    assert_non_null(strstr(as_last_error(), "tensor a: added twice"));
    /* the view is for plain writers only */
    assert_null(as_st_writer_view(w));
    as_st_writer_abort(w);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    assert_int_equal(system(cmd), 0); /* abort removed the shards */
    /* sizes as transformers reads max_shard_size */
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {{"5GB", 5000000000ull},  {"2GiB", 2147483648ull}, {"500MB", 500000000ull},
              {"100kB", 100000},       {"1e9", 1000000000ull},  {"123", 123},
              {"1.5gb", 1500000000ull}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint64_t v = 0;
        assert_int_equal(as_st_parse_size(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
    static const char *const bad[] = {"", "GB", "-1GB", "0", "5XB", "1e30"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v;
        assert_int_equal(as_st_parse_size(bad[i], &v), -1);
        assert_non_null(strstr(as_last_error(), "size '"));
    }
}

/* The view of a plain writer reads its tensors through the checkpoint API, without a file. */
static void test_writer_view(void **state) {
    (void)state;
    struct as_st_writer *w = as_st_writer_new(tpath("never.safetensors"));
    float a[3] = {1, 2, 3};
    int64_t shape[1] = {3};
    assert_int_equal(as_st_writer_add_copy(w, "z", AS_F32, 1, shape, a, sizeof a), 0);
    assert_int_equal(as_st_writer_add(w, "y", AS_F32, 1, shape, a, sizeof a), 0);
    struct as_ckpt *c = as_st_writer_view(w);
    assert_non_null(c);
    assert_int_equal(c->n_tensors, 2);
    const struct as_st_tensor *t = as_ckpt_find(c, "z");
    assert_non_null(t);
    float back[3];
    assert_int_equal(as_ckpt_read_f32(c, t, back), 0);
    assert_memory_equal(back, a, sizeof a);
    as_ckpt_close(c);
    /* add_all moves the tensors to another writer and empties the source */
    struct as_st_writer *w2 = as_st_writer_new(tpath("moved.safetensors"));
    assert_int_equal(as_st_writer_add_all(w2, w), 0);
    c = as_st_writer_view(w);
    assert_int_equal(c->n_tensors, 0);
    as_ckpt_close(c);
    as_st_writer_abort(w);
    assert_int_equal(as_st_writer_finish(w2), 0);
    struct as_st_file *f = as_st_open(tpath("moved.safetensors"));
    assert_non_null(f);
    assert_int_equal(f->n_tensors, 2);
    assert_memory_equal(as_st_find(f, "y")->data, a, sizeof a);
    as_st_close(f);
    assert_false(exists(tpath("never.safetensors")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_python_reads_ours),
        cmocka_unit_test(test_we_read_python),
        cmocka_unit_test(test_bad_truncated),
        cmocka_unit_test(test_bad_header_len),
        cmocka_unit_test(test_bad_overlap),
        cmocka_unit_test(test_bad_out_of_bounds),
        cmocka_unit_test(test_bad_hole),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_bad_size),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_writer_failures),
        cmocka_unit_test(test_shard_writer),
        cmocka_unit_test(test_shard_writer_errors),
        cmocka_unit_test(test_writer_view),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
