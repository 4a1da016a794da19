/* stream: round trips (inline, by reference, checkpoints), concatenation, the byte layout of
 * docs/stream-format.md checked by hand, and every corruption the reader must name: cut in a
 * prefix/header/payload, missing end record, checksum mismatches, bad magic, invalid JSON, missing
 * or changed referenced files, lost records, broken pipes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "as_error.h"
#include "mapped_file.h"
#include "safetensors.h"
#include "stream.h"

static char tmpdir[] = "/tmp/test_stream.XXXXXX";

static char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void fill(void *dst, size_t n, uint32_t seed) {
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static struct as_stream_writer *writer_to(const char *path, int *fd) {
    *fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(*fd >= 0);
    return as_stream_writer_fd(*fd, path);
}

/* Three records: F32 [3,5] with attrs, BF16 [7] (odd size: padding), U8 [0] (empty). */
static float t_a[15];
static uint16_t t_b[7];
static void write_sample(const char *path, int with_end) {
    fill(t_a, sizeof t_a, 1);
    fill(t_b, sizeof t_b, 2);
    int fd;
    struct as_stream_writer *w = writer_to(path, &fd);
    json_t *attrs = json_pack("{s:i, s:s}", "bits", 4, "note", "h\u00e9");
    assert_int_equal(as_stream_write_tensor(w, "model.layers.3.mlp.up_proj.hessian", "hessian", 3,
                                            AS_F32, 2, (int64_t[]){3, 5}, attrs, t_a),
                     0);
    json_decref(attrs);
    assert_int_equal(
        as_stream_write_tensor(w, "b", "scale", -1, AS_BF16, 1, (int64_t[]){7}, NULL, t_b), 0);
    assert_int_equal(
        as_stream_write_tensor(w, "empty", "config", -1, AS_U8, 1, (int64_t[]){0}, NULL, NULL), 0);
    if (with_end) assert_int_equal(as_stream_write_end(w), 0);
    as_stream_writer_free(w);
    close(fd);
}

static void test_inline_round_trip(void **state) {
    (void)state;
    const char *path = tpath("sample.astr");
    write_sample(path, 1);
    struct as_stream_reader *r = as_stream_open(path);
    assert_non_null(r);
    const struct as_rec *rec;
    assert_int_equal(as_stream_next(r, &rec), 1);
    assert_string_equal(rec->name, "model.layers.3.mlp.up_proj.hessian");
    assert_int_equal(rec->dtype, AS_F32);
    assert_int_equal(rec->ndim, 2);
    assert_int_equal(rec->shape[0], 3);
    assert_int_equal(rec->shape[1], 5);
    assert_string_equal(rec->role, "hessian");
    assert_int_equal(rec->layer, 3);
    assert_int_equal(json_integer_value(json_object_get(rec->attrs, "bits")), 4);
    assert_string_equal(json_string_value(json_object_get(rec->attrs, "note")), "h\u00e9");
    assert_int_equal(rec->kind, AS_PAYLOAD_INLINE);
    assert_int_equal(rec->nbytes, sizeof t_a);
    const void *p = as_stream_payload(r);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    assert_memory_equal(p, t_a, sizeof t_a);
    assert_int_equal(as_stream_next(r, &rec), 1);
    assert_string_equal(rec->name, "b");
    assert_int_equal(rec->layer, -1);
    assert_memory_equal(as_stream_payload(r), t_b, sizeof t_b);
    assert_int_equal(as_stream_next(r, &rec), 1);
    assert_int_equal(rec->nbytes, 0);
    assert_non_null(as_stream_payload(r));
    assert_int_equal(as_stream_next(r, &rec), 0);
    assert_int_equal(as_stream_count(r), 3);
    as_stream_close(r);
}

/* The byte layout, decoded here by hand from the spec rather than by the reader. */
static void test_byte_layout(void **state) {
    (void)state;
    const char *path = tpath("layout.astr");
    write_sample(path, 1);
    size_t n;
    uint8_t *s = slurp(path, &n);
    size_t pos = 0;
    int records = 0;
    for (;;) {
        assert_true(pos + 32 <= n);
        assert_int_equal(pos % 64, 0);
        assert_memory_equal(s + pos, "ASTR", 4);
        uint16_t version = (uint16_t)(s[pos + 4] | s[pos + 5] << 8);
        uint16_t kind = (uint16_t)(s[pos + 6] | s[pos + 7] << 8);
        uint32_t hlen, pad;
        uint64_t plen, hsum;
        memcpy(&hlen, s + pos + 8, 4); /* little-endian host */
        memcpy(&pad, s + pos + 12, 4);
        memcpy(&plen, s + pos + 16, 8);
        memcpy(&hsum, s + pos + 24, 8);
        assert_int_equal(version, 1);
        uint8_t tmp[4096];
        memcpy(tmp, s + pos, 24);
        memcpy(tmp + 24, s + pos + 32, hlen);
        assert_true(XXH3_64bits(tmp, 24 + hlen) == hsum);
        json_t *h = json_loadb((const char *)s + pos + 32, hlen, 0, NULL);
        assert_non_null(h);
        size_t payload = pos + 32 + hlen;
        assert_int_equal(payload % 64, 0); /* payloads 64-byte aligned in the stream */
        assert_int_equal((plen + pad) % 64, 0);
        if (kind == 2) {
            assert_int_equal(json_integer_value(json_object_get(h, "records")), 3);
            assert_int_equal(plen, 0);
            json_decref(h);
            pos = payload;
            break;
        }
        assert_int_equal(kind, 1);
        json_t *pl = json_object_get(h, "payload");
        assert_string_equal(json_string_value(json_object_get(pl, "kind")), "inline");
        assert_int_equal(json_integer_value(json_object_get(pl, "nbytes")), plen);
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(s + payload, plen));
        assert_string_equal(json_string_value(json_object_get(pl, "xxh3")), hex);
        for (uint32_t i = 0; i < pad; i++)
            assert_int_equal(s[payload + plen + i], 0);
        if (records == 0) assert_memory_equal(s + payload, t_a, sizeof t_a);
        json_decref(h);
        pos = payload + plen + pad;
        records++;
    }
    assert_int_equal(pos, n);
    assert_int_equal(records, 3);
    free(s);
}

/* A record made by hand from the spec: prefix, header (unpadded), no payload bytes. */
static size_t forge(uint8_t *out, uint16_t kind, const char *json, uint64_t plen) {
    size_t jl = strlen(json);
    memset(out, 0, 32);
    memcpy(out, "ASTR\x01\x00", 6);
    out[6] = (uint8_t)kind;
    uint32_t hl = (uint32_t)jl;
    memcpy(out + 8, &hl, 4);
    memcpy(out + 16, &plen, 8);
    memcpy(out + 32, json, jl);
    uint8_t *tmp = malloc(24 + jl);
    memcpy(tmp, out, 24);
    memcpy(tmp + 24, json, jl);
    uint64_t hs = XXH3_64bits(tmp, 24 + jl);
    free(tmp);
    memcpy(out + 24, &hs, 8);
    return 32 + jl;
}

static void expect_error(const char *path, const char *needle, int read_payloads) {
    struct as_stream_reader *r = as_stream_open(path);
    assert_non_null(r);
    const struct as_rec *rec;
    int rc;
    as_clear_error();
    while ((rc = as_stream_next(r, &rec)) == 1)
        if (read_payloads && !as_stream_payload(r)) {
            rc = -1;
            break;
        }
    if (rc != -1 || !strstr(as_last_error(), needle))
        fail_msg("expected error containing \"%s\", got rc %d: %s", needle, rc, as_last_error());
    as_stream_close(r);
}

/* Same, through a pipe (no lseek: skipped payloads are read and dropped). */
static void expect_error_pipe(const uint8_t *data, size_t n, const char *needle) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        size_t done = 0;
        while (done < n) {
            ssize_t k = write(fds[1], data + done, n - done);
            if (k <= 0) _exit(1);
            done += (size_t)k;
        }
        _exit(0);
    }
    close(fds[1]);
    struct as_stream_reader *r = as_stream_open_fd(fds[0], "pipe");
    const struct as_rec *rec;
    int rc;
    while ((rc = as_stream_next(r, &rec)) == 1) {
    }
    if (rc != -1 || !strstr(as_last_error(), needle))
        fail_msg("pipe: expected error containing \"%s\", got rc %d: %s", needle, rc,
                 as_last_error());
    as_stream_close(r);
    close(fds[0]);
    waitpid(pid, NULL, 0);
}

static void test_truncations(void **state) {
    (void)state;
    const char *full = tpath("full.astr"), *cut = tpath("cut.astr");
    write_sample(full, 1);
    size_t n;
    uint8_t *s = slurp(full, &n);
    uint32_t hlen;
    memcpy(&hlen, s + 8, 4);
    size_t payload0 = 32 + hlen;
    /* cut inside the first payload */
    spit(cut, s, payload0 + 10);
    expect_error(cut, "stream ", 1);
    expect_error(
        cut,
        "record 1 (model.layers.3.mlp.up_proj.hessian): truncated in payload (got 10 of 60 bytes)",
        1);
    expect_error(cut, "record 1 (model.layers.3.mlp.up_proj.hessian): truncated in payload", 0);
    expect_error_pipe(
        s, payload0 + 10,
        "stream pipe: record 1 (model.layers.3.mlp.up_proj.hessian): truncated in payload");
    /* cut inside the first header and inside the prefix */
    spit(cut, s, 40);
    expect_error(cut, "record 1: truncated in header (got 8 of", 0);
    spit(cut, s, 20);
    expect_error(cut, "record 1: truncated in record prefix (got 20 of 32 bytes)", 0);
    /* everything but the end record: the producer died */
    char msg[600];
    snprintf(msg, sizeof msg, "stream %s: truncated after record 3 (no end record)", cut);
    spit(cut, s, n - 64);
    expect_error(cut, msg, 1);
    expect_error(cut, msg, 0);
    expect_error_pipe(s, n - 64, "stream pipe: truncated after record 3 (no end record)");
    /* an empty input is a stream without end record too */
    spit(cut, s, 0);
    expect_error(cut, "truncated after record 0 (no end record)", 0);
    free(s);
}

static void test_corruptions(void **state) {
    (void)state;
    const char *full = tpath("full2.astr"), *bad = tpath("bad.astr");
    write_sample(full, 1);
    size_t n;
    uint8_t *s = slurp(full, &n);
    uint32_t hlen;
    memcpy(&hlen, s + 8, 4);
    size_t payload0 = 32 + hlen;
    /* a flipped payload byte */
    s[payload0 + 5] ^= 0x40;
    spit(bad, s, n);
    expect_error(bad, "record 1 (model.layers.3.mlp.up_proj.hessian): payload checksum mismatch",
                 1);
    s[payload0 + 5] ^= 0x40;
    /* a flipped header byte (inside the name) */
    s[32 + 12] ^= 0x01;
    spit(bad, s, n);
    expect_error(bad, "record 1: header checksum mismatch", 0);
    s[32 + 12] ^= 0x01;
    /* bad magic: a safetensors file, or garbage */
    memcpy(s, "ASTX", 4);
    spit(bad, s, n);
    char msg[600];
    snprintf(msg, sizeof msg, "stream %s: record 1: bad magic at byte 0 (not a tensor stream)",
             bad);
    expect_error(bad, msg, 0);
    memcpy(s, "ASTR", 4);
    /* unsupported version */
    s[4] = 9;
    spit(bad, s, n);
    expect_error(bad, "record 1: unsupported stream version 9", 0);
    s[4] = 1;
    /* header JSON invalid, with a correct checksum (a buggy producer, not line noise) */
    uint8_t rec[512];
    size_t k = forge(rec, 1, "{\"name\":\"x\",\"dtype\":", 0);
    spit(bad, rec, k);
    expect_error(bad, "record 1: header JSON invalid: ", 0);
    /* valid JSON but not a record: dtype unknown */
    k = forge(rec, 1,
              "{\"name\":\"x\",\"dtype\":\"F33\",\"shape\":[1],\"role\":\"w\",\"layer\":-1,"
              "\"attrs\":{},\"payload\":{\"kind\":\"inline\",\"nbytes\":4,\"xxh3\":"
              "\"0000000000000000\"}}",
              4);
    memset(rec + k, 0, 4);
    spit(bad, rec, k + 4);
    expect_error(bad, "record 1 (x): unknown dtype F33", 0);
    /* the record kind field damaged consistently (checksum recomputed) */
    k = forge(rec, 7, "{}", 0);
    spit(bad, rec, k);
    expect_error(bad, "record 1: unknown record kind 7", 0);
    free(s);
}

static void test_concatenation(void **state) {
    (void)state;
    const char *a = tpath("a.astr"), *cat = tpath("cat.astr");
    write_sample(a, 1);
    size_t n;
    uint8_t *s = slurp(a, &n);
    uint8_t *two = malloc(2 * n);
    memcpy(two, s, n);
    memcpy(two + n, s, n);
    spit(cat, two, 2 * n);
    struct as_stream_reader *r = as_stream_open(cat);
    const struct as_rec *rec;
    int k = 0, rc;
    while ((rc = as_stream_next(r, &rec)) == 1) {
        if (k % 3 == 0) assert_memory_equal(as_stream_payload(r), t_a, sizeof t_a);
        k++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(k, 6);
    as_stream_close(r);
    /* a complete stream followed by one cut short: the second part is the error */
    spit(cat, two, 2 * n - 64);
    expect_error(cat, "truncated after record 6 (no end record)", 1);
    /* an end record whose count disagrees: records were lost in between */
    uint8_t end[128];
    size_t k_end = forge(end, 2, "{\"end\":true,\"records\":2}", 0);
    memcpy(two + n - 64, end, k_end);
    spit(cat, two, n - 64 + k_end);
    expect_error(cat, "end record says 2 records, segment has 3 (records lost)", 0);
    free(two);
    free(s);
}

static void test_arena_refs(void **state) {
    (void)state;
    struct as_arena *a = as_arena_create(tmpdir);
    assert_non_null(a);
    const char *path = tpath("refs.astr");
    int fd;
    struct as_stream_writer *w = writer_to(path, &fd);
    enum { N = 300 };
    static float data[N][33];
    for (int i = 0; i < N; i++) {
        fill(data[i], sizeof data[i], (uint32_t)i + 10);
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.x", i);
        struct as_rec r;
        as_rec_init(&r, name, "qweight", i, AS_F32, 1, (int64_t[]){33});
        assert_int_equal(as_arena_put(a, &r, data[i]), 0);
        assert_int_equal(r.kind, AS_PAYLOAD_REF);
        assert_int_equal(r.offset % 64, 0);
        assert_true(r.has_xxh3);
        assert_int_equal(as_stream_write(w, &r, NULL), 0);
    }
    assert_int_equal(as_stream_write_end(w), 0);
    as_stream_writer_free(w);
    close(fd);
    char arena_path[512];
    snprintf(arena_path, sizeof arena_path, "%s", as_arena_path(a));
    as_arena_close(a);

    struct as_stream_reader *r = as_stream_open(path);
    const struct as_rec *rec;
    const uint8_t *first = NULL;
    uint64_t first_off = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(as_stream_next(r, &rec), 1);
        assert_int_equal(rec->kind, AS_PAYLOAD_REF);
        assert_string_equal(rec->file, arena_path);
        const uint8_t *p = as_stream_payload(r);
        assert_non_null(p);
        assert_memory_equal(p, data[i], sizeof data[i]);
        /* one mapping for all 300 references: pointers differ exactly by the file offsets */
        if (!first) first = p, first_off = rec->offset;
        assert_ptr_equal(p, first + (rec->offset - first_off));
    }
    assert_int_equal(as_stream_next(r, &rec), 0);
    as_stream_close(r);

    /* a flipped byte in the arena: the reference checksum catches it */
    size_t n;
    uint8_t *s = slurp(arena_path, &n);
    s[192 * 4 + 3] ^= 1; /* record 5: 132 bytes at a 192-byte stride in the arena */
    spit(arena_path, s, n);
    expect_error(path, "record 5 (model.layers.4.x): file ", 1);
    expect_error(path, "payload checksum mismatch at offset 768", 1);
    s[192 * 4 + 3] ^= 1;
    /* the arena shorter than the references */
    spit(arena_path, s, 1000);
    expect_error(path, "shorter than the reference (1000 bytes, payload ends at byte 1092)", 1);
    /* the arena gone */
    unlink(arena_path);
    char msg[700];
    snprintf(msg, sizeof msg, "record 1 (model.layers.0.x): file %s: No such file or directory",
             arena_path);
    expect_error(path, msg, 1);
    free(s);
}

/* An arena that grows while the consumer already mapped it (a pipeline in flight). */
static void test_arena_growth(void **state) {
    (void)state;
    struct as_arena *a = as_arena_create(tmpdir);
    static uint8_t big[3][100000];
    for (int i = 0; i < 3; i++)
        fill(big[i], sizeof big[i], 77u + (uint32_t)i);
    struct as_rec r[3];
    const uint8_t *first = NULL;
    for (int i = 0; i < 3; i++) {
        as_rec_init(&r[i], "g", "x", -1, AS_U8, 1, (int64_t[]){100000});
        assert_int_equal(as_arena_put(a, &r[i], big[i]), 0);
        struct as_mapped_file *m = as_mapped_file_get(r[i].file, r[i].offset + r[i].nbytes);
        assert_non_null(m);
        assert_true(m->map_size >= r[i].offset + r[i].nbytes);
        assert_memory_equal(m->map + r[i].offset, big[i], sizeof big[i]);
        /* a pointer from the first, smaller mapping stays valid while held */
        if (i == 0) first = m->map;
        assert_memory_equal(first + r[0].offset, big[0], sizeof big[0]);
        if (i == 2) as_mapped_file_put(m), as_mapped_file_put(m), as_mapped_file_put(m);
    }
    unlink(as_arena_path(a));
    as_arena_close(a);
}

static void test_changed_reference_file(void **state) {
    (void)state;
    /* a by-reference record into an immutable file (size + mtime, no checksum) */
    const char *data_path = tpath("weights.bin"), *path = tpath("st.astr");
    uint8_t bytes[4096];
    fill(bytes, sizeof bytes, 5);
    spit(data_path, bytes, sizeof bytes);
    struct stat st;
    assert_int_equal(stat(data_path, &st), 0);
    struct as_rec r;
    as_rec_init(&r, "w", "weight", -1, AS_U8, 1, (int64_t[]){1000});
    r.kind = AS_PAYLOAD_REF;
    r.file = data_path;
    r.offset = 96;
    r.has_file_stat = 1;
    r.file_size = (uint64_t)st.st_size;
    r.file_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    int fd;
    struct as_stream_writer *w = writer_to(path, &fd);
    assert_int_equal(as_stream_write(w, &r, NULL), 0);
    assert_int_equal(as_stream_write_end(w), 0);
    as_stream_writer_free(w);
    close(fd);
    struct as_stream_reader *rd = as_stream_open(path);
    const struct as_rec *rec;
    assert_int_equal(as_stream_next(rd, &rec), 1);
    assert_false(rec->has_xxh3);
    assert_memory_equal(as_stream_payload(rd), bytes + 96, 1000);
    as_stream_close(rd);
    /* same size, new mtime: replaced */
    struct timespec ts[2] = {{0, UTIME_OMIT}, {st.st_mtim.tv_sec - 100, 0}};
    assert_int_equal(utimensat(AT_FDCWD, data_path, ts, 0), 0);
    expect_error(path, "weights.bin: modified since the reference was made", 1);
    /* truncated */
    spit(data_path, bytes, 500);
    expect_error(path, "weights.bin: size is 500 bytes, the reference was made when it had 4096",
                 1);
}

static void test_ckpt_refs(void **state) {
    (void)state;
    const char *st_path = tpath("model.safetensors");
    struct as_st_writer *sw = as_st_writer_new(st_path);
    assert_non_null(sw);
    static float w[12][6];
    const char *names[12];
    char namebuf[12][64];
    for (int i = 0; i < 12; i++) {
        fill(w[i], sizeof w[i], 100u + (uint32_t)i);
        snprintf(namebuf[i], 64, "model.layers.%d.self_attn.q_proj.weight", i);
        names[i] = namebuf[i];
        assert_int_equal(
            as_st_writer_add(sw, names[i], AS_F32, 2, (int64_t[]){2, 3}, w[i], sizeof w[i]), 0);
    }
    assert_int_equal(
        as_st_writer_add(sw, "lm_head.weight", AS_F32, 1, (int64_t[]){6}, w[0], sizeof w[0]), 0);
    assert_int_equal(as_st_writer_finish(sw), 0);
    struct as_ckpt *c = as_ckpt_open(st_path);
    assert_non_null(c);
    const char *path = tpath("ckpt.astr");
    int fd;
    struct as_stream_writer *wr = writer_to(path, &fd);
    assert_int_equal(as_stream_write_ckpt(wr, c), 0);
    assert_int_equal(as_stream_write_end(wr), 0);
    as_stream_writer_free(wr);
    close(fd);
    as_ckpt_close(c);

    char *abs = realpath(st_path, NULL);
    struct as_stream_reader *r = as_stream_open(path);
    const struct as_rec *rec;
    assert_int_equal(as_stream_next(r, &rec), 1);
    assert_string_equal(rec->name, "lm_head.weight");
    assert_int_equal(rec->layer, -1);
    for (int i = 0; i < 12; i++) { /* natural order: 0, 1, ..., 9, 10, 11 */
        assert_int_equal(as_stream_next(r, &rec), 1);
        assert_string_equal(rec->name, names[i]);
        assert_int_equal(rec->layer, i);
        assert_string_equal(rec->role, "weight");
        assert_int_equal(rec->kind, AS_PAYLOAD_REF);
        assert_string_equal(rec->file, abs);
        assert_false(rec->has_xxh3);
        assert_true(rec->has_file_stat);
        assert_memory_equal(as_stream_payload(r), w[i], sizeof w[i]);
    }
    assert_int_equal(as_stream_next(r, &rec), 0);
    as_stream_close(r);
    free(abs);
}

static void test_names(void **state) {
    (void)state;
    assert_int_equal(as_layer_from_name("model.layers.12.mlp.up_proj.weight"), 12);
    assert_int_equal(as_layer_from_name("layers.0.attention.wq"), 0);
    assert_int_equal(as_layer_from_name("model.language_model.layers.7.x"), 7);
    assert_int_equal(as_layer_from_name("model.embed_tokens.weight"), -1);
    assert_int_equal(as_layer_from_name("model.sublayers.3.x"), -1);
    assert_int_equal(as_layer_from_name("model.layers.x.3"), -1);
    assert_true(as_natural_cmp("layers.2.a", "layers.10.a") < 0);
    assert_true(as_natural_cmp("layers.10.a", "layers.9.b") > 0);
    assert_true(as_natural_cmp("a.b", "a.b") == 0);
    assert_true(as_natural_cmp("a.b", "a.bc") < 0);
    assert_true(as_natural_cmp("x007", "x7") == 0);
}

static void test_writer_rejects_bad_records(void **state) {
    (void)state;
    int fd;
    struct as_stream_writer *w = writer_to(tpath("rej.astr"), &fd);
    struct as_rec r;
    float x[4] = {0};
    as_rec_init(&r, "t", "weight", -1, AS_F32, 1, (int64_t[]){4});
    r.nbytes = 12;
    assert_int_equal(as_stream_write(w, &r, x), -1);
    assert_non_null(
        strstr(as_last_error(), "record t: payload is 12 bytes but F32 shape needs 16"));
    as_rec_init(&r, "t", "weight", -1, AS_F32, 1, (int64_t[]){4});
    r.kind = AS_PAYLOAD_REF;
    r.file = "relative/path";
    r.has_xxh3 = 1;
    assert_int_equal(as_stream_write(w, &r, NULL), -1);
    assert_non_null(strstr(as_last_error(), "absolute path"));
    as_stream_writer_free(w);
    close(fd);
}

static void test_broken_pipe(void **state) {
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    struct as_stream_writer *w = as_stream_writer_fd(fds[1], "stdout");
    static uint8_t big[1 << 20];
    assert_int_equal(
        as_stream_write_tensor(w, "x", "w", -1, AS_U8, 1, (int64_t[]){1 << 20}, NULL, big), -1);
    assert_non_null(strstr(as_last_error(), "stream stdout: write failed: Broken pipe"));
    as_stream_writer_free(w);
    close(fds[1]);
    signal(SIGPIPE, SIG_DFL);
}

/* 24 MiB through a real pipe with a concurrent writer: short reads and writes on both ends. */
static void test_large_through_pipe(void **state) {
    (void)state;
    size_t n = 24u << 20;
    uint8_t *big = malloc(n);
    fill(big, n, 9);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        struct as_stream_writer *w = as_stream_writer_fd(fds[1], "child");
        for (int i = 0; i < 3; i++)
            if (as_stream_write_tensor(w, "big", "w", i, AS_U8, 1, (int64_t[]){(int64_t)n - i},
                                       NULL, big + i))
                _exit(1);
        if (as_stream_write_end(w)) _exit(1);
        _exit(0);
    }
    close(fds[1]);
    struct as_stream_reader *r = as_stream_open_fd(fds[0], "pipe");
    const struct as_rec *rec;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(as_stream_next(r, &rec), 1);
        if (i == 1) continue; /* skipped payload: read and dropped */
        const uint8_t *p = as_stream_payload(r);
        assert_non_null(p);
        assert_int_equal(rec->nbytes, n - (size_t)i);
        assert_memory_equal(p, big + i, n - (size_t)i);
    }
    assert_int_equal(as_stream_next(r, &rec), 0);
    as_stream_close(r);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(big);
}

static int setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inline_round_trip),
        cmocka_unit_test(test_byte_layout),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_corruptions),
        cmocka_unit_test(test_concatenation),
        cmocka_unit_test(test_arena_refs),
        cmocka_unit_test(test_arena_growth),
        cmocka_unit_test(test_changed_reference_file),
        cmocka_unit_test(test_ckpt_refs),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_writer_rejects_bad_records),
        cmocka_unit_test(test_broken_pipe),
        cmocka_unit_test(test_large_through_pipe),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
