/* stream: tensor stream reader, writer, checkpoint references and arenas (see stream.h and
 * docs/stream-format.md for the byte format). */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "as_error.h"
#include "mapped_file.h"
#include "ref_policy.h"

#define READ_BUF_BYTES (1u << 20) /* reader's buffer for prefixes and headers */
#define IO_CHUNK (1u << 30)       /* Linux moves at most ~2 GiB per read()/write() */
#define HASH_CHUNK (1u << 20)     /* inline payloads are hashed per chunk while cache-hot */
#define MAX_HEADER_BYTES (256u << 20)
#define MAX_PAYLOAD_PAD 4095u
#define PIPE_BYTES (1 << 20)

/* ---------------------------------------------------------------- records */

static inline uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd_u64(const uint8_t *p) {
    return rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}
static inline void wr_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void wr_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t as_rec_numel(const struct as_rec *r) {
    uint64_t n = 1;
    for (int i = 0; i < r->ndim; i++)
        n *= (uint64_t)r->shape[i];
    return n;
}

void as_rec_init(struct as_rec *r, const char *name, const char *role, int layer,
                 enum as_dtype dtype, int ndim, const int64_t *shape) {
    memset(r, 0, sizeof *r);
    r->name = name;
    r->role = role;
    r->layer = layer;
    r->dtype = dtype;
    r->ndim = ndim < 0 ? 0 : ndim > AS_MAX_DIMS ? AS_MAX_DIMS : ndim;
    for (int i = 0; i < r->ndim; i++)
        r->shape[i] = shape[i];
    r->kind = AS_PAYLOAD_INLINE;
    int overflow = 0;
    r->nbytes = as_dtype_nbytes(dtype, as_rec_numel(r), &overflow);
}

int as_layer_from_name(const char *name) {
    for (const char *p = name; (p = strstr(p, "layers.")) != NULL; p++) {
        if (p != name && p[-1] != '.') continue;
        const char *d = p + 7;
        long v = 0;
        const char *q = d;
        while (*q >= '0' && *q <= '9' && v < 1000000000)
            v = v * 10 + (*q++ - '0');
        if (q > d && (*q == '.' || *q == 0)) return (int)v;
    }
    return -1;
}

static void hex64(char out[17], uint64_t v) {
    snprintf(out, 17, "%016" PRIx64, v);
}

json_t *as_rec_to_json(const struct as_rec *r) {
    json_t *shape = json_array();
    for (int i = 0; i < r->ndim; i++)
        json_array_append_new(shape, json_integer(r->shape[i]));
    json_t *pl = json_object();
    json_object_set_new(pl, "kind", json_string(r->kind == AS_PAYLOAD_REF ? "ref" : "inline"));
    json_object_set_new(pl, "nbytes", json_integer((json_int_t)r->nbytes));
    if (r->kind == AS_PAYLOAD_REF) {
        json_object_set_new(pl, "file", json_string(r->file ? r->file : ""));
        json_object_set_new(pl, "offset", json_integer((json_int_t)r->offset));
        if (r->has_file_stat) {
            json_object_set_new(pl, "file_size", json_integer((json_int_t)r->file_size));
            json_object_set_new(pl, "file_mtime_ns", json_integer(r->file_mtime_ns));
        }
    }
    if (r->has_xxh3) {
        char hex[17];
        hex64(hex, r->xxh3);
        json_object_set_new(pl, "xxh3", json_string(hex));
    }
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->name ? r->name : ""));
    json_object_set_new(o, "dtype", json_string(as_dtype_name(r->dtype)));
    json_object_set_new(o, "shape", shape);
    json_object_set_new(o, "role", json_string(r->role ? r->role : ""));
    json_object_set_new(o, "layer", json_integer(r->layer));
    json_object_set_new(o, "attrs", r->attrs ? json_incref(r->attrs) : json_object());
    json_object_set_new(o, "payload", pl);
    return o;
}

/* Checks a writer or a reader applies to every record: the payload size agrees with dtype x shape
 * (the one rule that makes a record usable without further context). */
static int check_rec(const struct as_rec *r) {
    if (!r->name || !r->name[0]) return as_fail("record without a name");
    if (!r->role) return as_fail("record %s: no role", r->name);
    if (r->dtype <= AS_DTYPE_INVALID || r->dtype >= AS_DTYPE_COUNT)
        return as_fail("record %s: invalid dtype", r->name);
    if (r->ndim < 0 || r->ndim > AS_MAX_DIMS)
        return as_fail("record %s: %d dimensions (at most %d)", r->name, r->ndim, AS_MAX_DIMS);
    uint64_t numel = 1;
    for (int i = 0; i < r->ndim; i++) {
        if (r->shape[i] < 0) return as_fail("record %s: negative dimension", r->name);
        if (r->shape[i] && numel > UINT64_MAX / (uint64_t)r->shape[i])
            return as_fail("record %s: shape overflows", r->name);
        numel *= (uint64_t)r->shape[i];
    }
    int overflow = 0;
    uint64_t need = as_dtype_nbytes(r->dtype, numel, &overflow);
    if (overflow) return as_fail("record %s: shape overflows", r->name);
    if (need != r->nbytes)
        return as_fail("record %s: payload is %" PRIu64 " bytes but %s %s needs %" PRIu64, r->name,
                       r->nbytes, as_dtype_name(r->dtype), "shape", need);
    if (r->kind == AS_PAYLOAD_REF) {
        if (!r->file || r->file[0] != '/')
            return as_fail("record %s: reference file must be an absolute path", r->name);
        if (r->offset + r->nbytes < r->offset)
            return as_fail("record %s: reference offset overflows", r->name);
    } else if (r->kind != AS_PAYLOAD_INLINE) {
        return as_fail("record %s: unknown payload kind", r->name);
    }
    return 0;
}

/* ---------------------------------------------------------------- writer */

struct as_stream_writer {
    int fd;
    char *name;
    uint64_t seg_records, total_records;
    char *hdr; /* prefix + padded header */
    size_t hdr_cap;
};

static void enlarge_pipe(int fd) {
    struct stat st;
    /* Bigger pipes mean fewer context switches per MiB; failure (no permission) is harmless. */
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && fcntl(fd, F_GETPIPE_SZ) < PIPE_BYTES)
        (void)fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES);
}

struct as_stream_writer *as_stream_writer_fd(int fd, const char *name) {
    struct as_stream_writer *w = as_xcalloc(1, sizeof *w);
    w->fd = fd;
    w->name = as_xstrdup(name ? name : "stdout");
    enlarge_pipe(fd);
    return w;
}

void as_stream_writer_free(struct as_stream_writer *w) {
    if (!w) return;
    free(w->name);
    free(w->hdr);
    free(w);
}

uint64_t as_stream_writer_count(const struct as_stream_writer *w) {
    return w->total_records;
}

/* write() until everything is out: short writes, EINTR and non-blocking descriptors (EAGAIN ->
 * poll) are normal on pipes; EPIPE and the rest are errors naming the stream. */
static int write_all(int fd, const char *what, const void *buf, uint64_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        size_t chunk = n > IO_CHUNK ? IO_CHUNK : (size_t)n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                poll(&pfd, 1, -1);
                continue;
            }
            return as_fail("stream %s: write failed: %s", what, strerror(errno));
        }
        if (k == 0) return as_fail("stream %s: write returned 0", what);
        p += k;
        n -= (uint64_t)k;
    }
    return 0;
}

static const uint8_t zero_pad[AS_STREAM_ALIGN];

/* Lay out prefix + header JSON padded with spaces so that the payload starts 64-byte aligned. */
static int emit_record(struct as_stream_writer *w, uint16_t kind, const char *json,
                       uint64_t payload_len, const void *payload) {
    size_t jlen = strlen(json);
    size_t total = AS_STREAM_PREFIX_BYTES + jlen;
    size_t padded = (total + AS_STREAM_ALIGN - 1) / AS_STREAM_ALIGN * AS_STREAM_ALIGN;
    size_t hlen = padded - AS_STREAM_PREFIX_BYTES;
    if (hlen > MAX_HEADER_BYTES) return as_fail("stream %s: header too large", w->name);
    if (padded > w->hdr_cap) {
        w->hdr_cap = padded * 2;
        w->hdr = as_xrealloc(w->hdr, w->hdr_cap);
    }
    uint8_t *h = (uint8_t *)w->hdr;
    memcpy(h, AS_STREAM_MAGIC, 4);
    h[4] = AS_STREAM_VERSION & 0xff;
    h[5] = AS_STREAM_VERSION >> 8;
    h[6] = (uint8_t)kind;
    h[7] = (uint8_t)(kind >> 8);
    wr_u32(h + 8, (uint32_t)hlen);
    uint32_t pad = (uint32_t)((AS_STREAM_ALIGN - payload_len % AS_STREAM_ALIGN) % AS_STREAM_ALIGN);
    wr_u32(h + 12, pad);
    wr_u64(h + 16, payload_len);
    memcpy(h + AS_STREAM_PREFIX_BYTES, json, jlen);
    memset(h + AS_STREAM_PREFIX_BYTES + jlen, ' ', hlen - jlen);
    /* The header checksum covers prefix bytes 0..23 and the header, so a damaged length or kind
     * is caught as well as a damaged name or shape. */
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, h, 24);
    XXH3_64bits_update(&st, h + AS_STREAM_PREFIX_BYTES, hlen);
    wr_u64(h + 24, XXH3_64bits_digest(&st));

    if (payload_len == 0) return write_all(w->fd, w->name, h, padded);
    /* Small payloads go out in one writev with their header; large ones are written straight from
     * the caller's memory (usually a mapping), so no byte is copied in user space. */
    struct iovec iov[3] = {{h, padded}, {(void *)payload, payload_len}, {(void *)zero_pad, pad}};
    if (payload_len <= (64u << 10)) {
        uint64_t all = padded + payload_len + pad;
        ssize_t k;
        do
            k = writev(w->fd, iov, 3);
        while (k < 0 && errno == EINTR);
        if (k == (ssize_t)all) return 0;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return as_fail("stream %s: write failed: %s", w->name, strerror(errno));
        uint64_t done = k < 0 ? 0 : (uint64_t)k;
        for (int i = 0; i < 3; i++) { /* finish a short writev piece by piece */
            uint64_t len = iov[i].iov_len;
            if (done >= len) {
                done -= len;
                continue;
            }
            if (write_all(w->fd, w->name, (uint8_t *)iov[i].iov_base + done, len - done)) return -1;
            done = 0;
        }
        return 0;
    }
    if (write_all(w->fd, w->name, h, padded) || write_all(w->fd, w->name, payload, payload_len) ||
        write_all(w->fd, w->name, zero_pad, pad))
        return -1;
    return 0;
}

int as_stream_write(struct as_stream_writer *w, const struct as_rec *rec, const void *data) {
    if (check_rec(rec)) return as_fail_prefix("stream %s: ", w->name);
    struct as_rec r = *rec;
    if (r.kind == AS_PAYLOAD_INLINE && !r.has_xxh3) {
        if (r.nbytes && !data) return as_fail("stream %s: record %s: no payload", w->name, r.name);
        r.xxh3 = XXH3_64bits(data, r.nbytes);
        r.has_xxh3 = 1;
    }
    json_t *o = as_rec_to_json(&r);
    char *json = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!json) return as_fail("stream %s: record %s: cannot encode header", w->name, r.name);
    static const char empty = 0;
    int rc = r.kind == AS_PAYLOAD_INLINE
                 ? emit_record(w, AS_REC_TENSOR, json, r.nbytes, r.nbytes ? data : &empty)
                 : emit_record(w, AS_REC_TENSOR, json, 0, NULL);
    free(json);
    if (rc) return -1;
    w->seg_records++;
    w->total_records++;
    return 0;
}

int as_stream_write_tensor(struct as_stream_writer *w, const char *name, const char *role,
                           int layer, enum as_dtype dtype, int ndim, const int64_t *shape,
                           json_t *attrs, const void *data) {
    struct as_rec r;
    if (ndim < 0 || ndim > AS_MAX_DIMS)
        return as_fail("stream %s: record %s: %d dimensions", w->name, name, ndim);
    as_rec_init(&r, name, role, layer, dtype, ndim, shape);
    r.attrs = attrs;
    return as_stream_write(w, &r, data);
}

static int write_end(struct as_stream_writer *w, int flush) {
    char json[128];
    snprintf(json, sizeof json, "{\"end\":true,\"records\":%" PRIu64 "%s}", w->seg_records,
             flush ? ",\"flush\":true" : "");
    if (emit_record(w, AS_REC_END, json, 0, NULL)) return -1;
    w->seg_records = 0;
    return 0;
}

int as_stream_write_end(struct as_stream_writer *w) {
    return write_end(w, 0);
}
int as_stream_write_end_flush(struct as_stream_writer *w) {
    return write_end(w, 1);
}

/* ---------------------------------------------------------------- reader */

struct as_stream_reader {
    char *name;
    int fd, own_fd;
    int seekable; /* regular file: unread payloads are skipped with lseek */
    uint64_t file_size;
    uint8_t *buf; /* buffered input for prefixes and headers */
    size_t buf_pos, buf_len;
    uint64_t consumed; /* stream offset of the next unread byte */

    uint64_t n_records, seg_records;
    int last_was_end, started;
    int last_end_flush; /* the last end record asked for a response ("flush": true) */

    /* current record */
    int have_rec;
    struct as_rec rec;
    json_t *hdr;
    char *hdr_text;
    size_t hdr_cap;
    uint64_t inline_left; /* unread payload + pad bytes of the current record */
    uint32_t pad;
    const void *payload; /* the verified payload once as_stream_payload ran */
    uint8_t *pbuf;
    size_t pbuf_cap;

    struct as_mapped_file **maps; /* distinct mappings held until close */
    int n_maps, cap_maps;
};

const char *as_stream_name(const struct as_stream_reader *r) {
    return r->name;
}
uint64_t as_stream_count(const struct as_stream_reader *r) {
    return r->n_records;
}

struct as_stream_reader *as_stream_open_fd(int fd, const char *name) {
    struct as_stream_reader *r = as_xcalloc(1, sizeof *r);
    r->name = as_xstrdup(name ? name : "stdin");
    r->fd = fd;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t pos = lseek(fd, 0, SEEK_CUR);
        r->seekable = pos >= 0;
        r->file_size = (uint64_t)st.st_size;
        r->consumed = pos >= 0 ? (uint64_t)pos : 0;
    }
    enlarge_pipe(fd);
    if (posix_memalign((void **)&r->buf, AS_STREAM_ALIGN, READ_BUF_BYTES)) as_die("out of memory");
    return r;
}

struct as_stream_reader *as_stream_open(const char *path) {
    if (strcmp(path, "-") == 0) return as_stream_open_fd(0, "stdin");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        as_fail("stream %s: %s", path, strerror(errno));
        return NULL;
    }
    struct as_stream_reader *r = as_stream_open_fd(fd, path);
    r->own_fd = 1;
    return r;
}

static void clear_rec(struct as_stream_reader *r) {
    json_decref(r->hdr);
    r->hdr = NULL;
    r->have_rec = 0;
    r->payload = NULL;
}

void as_stream_close(struct as_stream_reader *r) {
    if (!r) return;
    clear_rec(r);
    for (int i = 0; i < r->n_maps; i++)
        as_mapped_file_put(r->maps[i]);
    free(r->maps);
    if (r->own_fd) close(r->fd);
    free(r->name);
    free(r->buf);
    free(r->pbuf);
    free(r->hdr_text);
    free(r);
}

/* read() into dst until n bytes or EOF; returns bytes read, or -1 on an I/O error. */
static int64_t read_raw(struct as_stream_reader *r, void *dst, uint64_t n) {
    uint64_t got = 0;
    while (got < n) {
        uint64_t want = n - got;
        ssize_t k = read(r->fd, (uint8_t *)dst + got, want > IO_CHUNK ? IO_CHUNK : (size_t)want);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
                poll(&pfd, 1, -1);
                continue;
            }
            as_fail("stream %s: read failed: %s", r->name, strerror(errno));
            return -1;
        }
        if (k == 0) break;
        got += (uint64_t)k;
    }
    return (int64_t)got;
}

/* Buffered read of up to n bytes (fewer only at EOF). Large reads bypass the buffer. */
static int64_t read_some(struct as_stream_reader *r, void *dst, uint64_t n) {
    uint64_t got = 0;
    uint64_t avail = r->buf_len - r->buf_pos;
    if (avail) {
        uint64_t k = avail < n ? avail : n;
        memcpy(dst, r->buf + r->buf_pos, k);
        r->buf_pos += k;
        got = k;
    }
    while (got < n) {
        uint64_t want = n - got;
        if (want >= READ_BUF_BYTES / 2) {
            int64_t k = read_raw(r, (uint8_t *)dst + got, want);
            if (k < 0) return -1;
            got += (uint64_t)k;
            break;
        }
        /* Refill with one read(): whatever the pipe holds, up to the buffer size. */
        ssize_t k;
        do
            k = read(r->fd, r->buf, READ_BUF_BYTES);
        while (k < 0 && errno == EINTR);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
            poll(&pfd, 1, -1);
            continue;
        }
        if (k < 0) {
            as_fail("stream %s: read failed: %s", r->name, strerror(errno));
            return -1;
        }
        if (k == 0) break;
        r->buf_pos = 0;
        r->buf_len = (size_t)k;
        uint64_t take = (uint64_t)k < want ? (uint64_t)k : want;
        memcpy((uint8_t *)dst + got, r->buf, take);
        r->buf_pos = take;
        got += take;
    }
    r->consumed += got;
    return (int64_t)got;
}

/* Discard n bytes; returns bytes skipped (fewer at EOF) or -1. */
static int64_t skip_bytes(struct as_stream_reader *r, uint64_t n) {
    uint64_t done = 0;
    uint64_t avail = r->buf_len - r->buf_pos;
    uint64_t k = avail < n ? avail : n;
    r->buf_pos += k;
    r->consumed += k;
    done = k;
    if (done < n && r->seekable) {
        /* The buffer is empty here; the file offset is r->consumed. lseek past EOF would
         * succeed silently, so clamp to the file size to report truncation. */
        uint64_t left = r->file_size > r->consumed ? r->file_size - r->consumed : 0;
        uint64_t step = n - done < left ? n - done : left;
        if (lseek(r->fd, (off_t)(r->consumed + step), SEEK_SET) < 0) {
            as_fail("stream %s: seek failed: %s", r->name, strerror(errno));
            return -1;
        }
        r->consumed += step;
        return (int64_t)(done + step);
    }
    uint8_t tmp[1 << 16];
    while (done < n) {
        uint64_t want = n - done < sizeof tmp ? n - done : sizeof tmp;
        int64_t got = read_some(r, tmp, want);
        if (got < 0) return -1;
        done += (uint64_t)got;
        if ((uint64_t)got < want) break;
    }
    return (int64_t)done;
}

static int parse_hex64(const char *s, uint64_t *out) {
    if (!s || strlen(s) != 16) return -1;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Parse and validate a tensor record's JSON header into r->rec (strings point into r->hdr). */
static int parse_header(struct as_stream_reader *r, uint64_t idx, uint64_t payload_len) {
    struct as_rec *rec = &r->rec;
    memset(rec, 0, sizeof *rec);
    json_t *h = r->hdr;
#define BAD(...)                                                                                   \
    (as_fail(__VA_ARGS__), as_fail_prefix("stream %s: record %" PRIu64 ": ", r->name, idx))
    if (!json_is_object(h)) return BAD("header is not a JSON object");
    json_t *name = json_object_get(h, "name");
    if (!json_is_string(name) || !json_string_length(name)) return BAD("header has no name");
    rec->name = json_string_value(name);
#undef BAD
#define BAD(...)                                                                                   \
    (as_fail(__VA_ARGS__),                                                                         \
     as_fail_prefix("stream %s: record %" PRIu64 " (%s): ", r->name, idx, rec->name))
    json_t *dt = json_object_get(h, "dtype");
    rec->dtype = json_is_string(dt) ? as_dtype_from_name(json_string_value(dt)) : AS_DTYPE_INVALID;
    if (rec->dtype == AS_DTYPE_INVALID)
        return BAD("unknown dtype %s", json_is_string(dt) ? json_string_value(dt) : "(missing)");
    json_t *shape = json_object_get(h, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > AS_MAX_DIMS)
        return BAD("shape must be an array of at most %d integers", AS_MAX_DIMS);
    rec->ndim = (int)json_array_size(shape);
    for (int i = 0; i < rec->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return BAD("shape must hold non-negative integers");
        rec->shape[i] = json_integer_value(d);
    }
    json_t *role = json_object_get(h, "role");
    if (!json_is_string(role)) return BAD("header has no role");
    rec->role = json_string_value(role);
    json_t *layer = json_object_get(h, "layer");
    if (layer && !json_is_integer(layer)) return BAD("layer must be an integer");
    rec->layer = layer ? (int)json_integer_value(layer) : -1;
    json_t *attrs = json_object_get(h, "attrs");
    if (attrs && !json_is_object(attrs)) return BAD("attrs must be an object");
    rec->attrs = attrs;
    json_t *pl = json_object_get(h, "payload");
    if (!json_is_object(pl)) return BAD("header has no payload object");
    const char *kind = json_string_value(json_object_get(pl, "kind"));
    if (!kind) return BAD("payload has no kind");
    if (get_u64(pl, "nbytes", &rec->nbytes)) return BAD("payload has no nbytes");
    json_t *x = json_object_get(pl, "xxh3");
    if (x) {
        if (parse_hex64(json_string_value(x), &rec->xxh3))
            return BAD("payload xxh3 must be 16 hex digits");
        rec->has_xxh3 = 1;
    }
    if (strcmp(kind, "inline") == 0) {
        rec->kind = AS_PAYLOAD_INLINE;
        if (!rec->has_xxh3) return BAD("inline payload without xxh3 checksum");
        if (payload_len != rec->nbytes)
            return BAD("prefix says %" PRIu64 " payload bytes, header says %" PRIu64, payload_len,
                       rec->nbytes);
    } else if (strcmp(kind, "ref") == 0) {
        rec->kind = AS_PAYLOAD_REF;
        if (payload_len)
            return BAD("reference record carries %" PRIu64 " inline bytes", payload_len);
        rec->file = json_string_value(json_object_get(pl, "file"));
        if (!rec->file) return BAD("reference without file");
        if (get_u64(pl, "offset", &rec->offset)) return BAD("reference without offset");
        json_t *fs = json_object_get(pl, "file_size"), *fm = json_object_get(pl, "file_mtime_ns");
        if (fs || fm) {
            if (get_u64(pl, "file_size", &rec->file_size) || !json_is_integer(fm))
                return BAD("reference needs both file_size and file_mtime_ns");
            rec->file_mtime_ns = json_integer_value(fm);
            rec->has_file_stat = 1;
        }
        if (!rec->has_xxh3 && !rec->has_file_stat)
            return BAD("reference carries neither xxh3 nor file_size/file_mtime_ns");
    } else {
        return BAD("unknown payload kind %s", kind);
    }
    if (check_rec(rec)) return as_fail_prefix("stream %s: record %" PRIu64 ": ", r->name, idx);
#undef BAD
    return 0;
}

static int stream_next(struct as_stream_reader *r, const struct as_rec **out, int stop_at_end);

int as_stream_next(struct as_stream_reader *r, const struct as_rec **out) {
    return stream_next(r, out, 0);
}

int as_stream_next_segmented(struct as_stream_reader *r, const struct as_rec **out) {
    return stream_next(r, out, 1);
}

int as_stream_end_flush(const struct as_stream_reader *r) {
    return r->last_end_flush;
}

static int stream_next(struct as_stream_reader *r, const struct as_rec **out, int stop_at_end) {
    *out = NULL;
    if (r->have_rec && r->inline_left) {
        uint64_t left = r->inline_left;
        int64_t k = skip_bytes(r, left);
        if (k < 0) return -1;
        r->inline_left = 0;
        if ((uint64_t)k < left) {
            uint64_t got = r->rec.nbytes + r->pad - left + (uint64_t)k;
            return as_fail("stream %s: record %" PRIu64 " (%s): truncated in payload (got %" PRIu64
                           " of %" PRIu64 " bytes)",
                           r->name, r->n_records, r->rec.name,
                           got < r->rec.nbytes ? got : r->rec.nbytes, r->rec.nbytes);
        }
    }
    clear_rec(r);
    for (;;) {
        uint64_t idx = r->n_records + 1;
        uint8_t p[AS_STREAM_PREFIX_BYTES];
        int64_t k = read_some(r, p, sizeof p);
        if (k < 0) return -1;
        if (k == 0) {
            if (r->last_was_end) return 0;
            return as_fail("stream %s: truncated after record %" PRIu64 " (no end record)", r->name,
                           r->n_records);
        }
        if (memcmp(p, AS_STREAM_MAGIC, (size_t)(k < 4 ? k : 4)) != 0)
            return as_fail("stream %s: record %" PRIu64 ": bad magic at byte %" PRIu64
                           " (not a tensor stream)",
                           r->name, idx, r->consumed - (uint64_t)k);
        if (k < (int64_t)sizeof p)
            return as_fail("stream %s: record %" PRIu64 ": truncated in record prefix (got %" PRId64
                           " of %d bytes)",
                           r->name, idx, k, AS_STREAM_PREFIX_BYTES);
        unsigned version = p[4] | p[5] << 8, kind = p[6] | p[7] << 8;
        uint32_t hlen = rd_u32(p + 8), pad = rd_u32(p + 12);
        uint64_t plen = rd_u64(p + 16), hsum = rd_u64(p + 24);
        if (version != AS_STREAM_VERSION)
            return as_fail("stream %s: record %" PRIu64 ": unsupported stream version %u", r->name,
                           idx, version);
        if (hlen > MAX_HEADER_BYTES || pad > MAX_PAYLOAD_PAD)
            return as_fail("stream %s: record %" PRIu64
                           ": corrupt prefix (header %u bytes, pad %u)",
                           r->name, idx, hlen, pad);
        if (hlen + 1 > r->hdr_cap) {
            r->hdr_cap = hlen + 1 > 4096 ? hlen + 1 : 4096;
            free(r->hdr_text);
            r->hdr_text = as_xmalloc(r->hdr_cap);
        }
        k = read_some(r, r->hdr_text, hlen);
        if (k < 0) return -1;
        if ((uint64_t)k < hlen)
            return as_fail("stream %s: record %" PRIu64 ": truncated in header (got %" PRId64
                           " of %u bytes)",
                           r->name, idx, k, hlen);
        r->hdr_text[hlen] = 0;
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, p, 24);
        XXH3_64bits_update(&st, r->hdr_text, hlen);
        if (XXH3_64bits_digest(&st) != hsum)
            return as_fail("stream %s: record %" PRIu64
                           ": header checksum mismatch (corrupt stream)",
                           r->name, idx);
        json_error_t jerr;
        r->hdr = json_loadb(r->hdr_text, hlen, JSON_REJECT_DUPLICATES, &jerr);
        if (!r->hdr)
            return as_fail("stream %s: record %" PRIu64 ": header JSON invalid: %s (column %d)",
                           r->name, idx, jerr.text, jerr.column);
        if (kind == AS_REC_END) {
            uint64_t n;
            if (get_u64(r->hdr, "records", &n))
                return as_fail("stream %s: end record after record %" PRIu64 " has no count",
                               r->name, r->n_records);
            if (plen || pad)
                return as_fail("stream %s: end record after record %" PRIu64 " carries a payload",
                               r->name, r->n_records);
            if (n != r->seg_records)
                return as_fail("stream %s: end record says %" PRIu64
                               " records, segment has %" PRIu64 " (records lost)",
                               r->name, n, r->seg_records);
            r->last_end_flush = json_is_true(json_object_get(r->hdr, "flush"));
            json_decref(r->hdr);
            r->hdr = NULL;
            r->seg_records = 0;
            r->last_was_end = 1;
            if (stop_at_end) return 2;
            continue;
        }
        if (kind != AS_REC_TENSOR)
            return as_fail("stream %s: record %" PRIu64 ": unknown record kind %u", r->name, idx,
                           kind);
        if (parse_header(r, idx, plen)) return -1;
        r->n_records++;
        r->seg_records++;
        r->last_was_end = 0;
        r->have_rec = 1;
        r->pad = pad;
        r->inline_left = r->rec.kind == AS_PAYLOAD_INLINE ? plen + pad : 0;
        *out = &r->rec;
        return 1;
    }
}

static const uint64_t empty_payload[1];

static const void *load_inline(struct as_stream_reader *r) {
    struct as_rec *rec = &r->rec;
    uint64_t n = rec->nbytes;
    if (r->inline_left != n + r->pad) {
        as_fail("stream %s: record %" PRIu64 " (%s): payload already skipped", r->name,
                r->n_records, rec->name);
        return NULL;
    }
    struct stat fst; /* a regular file tells how much is left: a damaged length is truncation,
                      * found before allocating what it claims */
    if (r->seekable && fstat(r->fd, &fst) == 0) {
        uint64_t size = (uint64_t)fst.st_size, left = size > r->consumed ? size - r->consumed : 0;
        if (n > left) {
            as_fail("stream %s: record %" PRIu64 " (%s): truncated in payload (got %" PRIu64
                    " of %" PRIu64 " bytes)",
                    r->name, r->n_records, rec->name, left, n);
            return NULL;
        }
    }
    if (n > r->pbuf_cap) {
        free(r->pbuf);
        r->pbuf = NULL;
        r->pbuf_cap = 0;
        if (n > SIZE_MAX || posix_memalign((void **)&r->pbuf, AS_STREAM_ALIGN, (size_t)n)) {
            as_fail("stream %s: record %" PRIu64 " (%s): cannot allocate %" PRIu64 " bytes",
                    r->name, r->n_records, rec->name, n);
            return NULL;
        }
        r->pbuf_cap = (size_t)n;
    }
    /* Hash each chunk right after reading it, while it is still in cache. */
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    uint64_t got = 0;
    while (got < n) {
        uint64_t want = n - got < HASH_CHUNK ? n - got : HASH_CHUNK;
        int64_t k = read_some(r, r->pbuf + got, want);
        if (k < 0) return NULL;
        XXH3_64bits_update(&st, r->pbuf + got, (size_t)k);
        got += (uint64_t)k;
        if ((uint64_t)k < want) break;
    }
    r->inline_left -= got;
    if (got < n) {
        as_fail("stream %s: record %" PRIu64 " (%s): truncated in payload (got %" PRIu64
                " of %" PRIu64 " bytes)",
                r->name, r->n_records, rec->name, got, n);
        return NULL;
    }
    int64_t k = skip_bytes(r, r->pad);
    if (k < 0) return NULL;
    r->inline_left = 0;
    if ((uint64_t)k < r->pad) {
        as_fail("stream %s: record %" PRIu64 " (%s): truncated in payload padding", r->name,
                r->n_records, rec->name);
        return NULL;
    }
    uint64_t h = XXH3_64bits_digest(&st);
    if (h != rec->xxh3) {
        as_fail("stream %s: record %" PRIu64 " (%s): payload checksum mismatch (xxh3 %016" PRIx64
                ", header says %016" PRIx64 ")",
                r->name, r->n_records, rec->name, h, rec->xxh3);
        return NULL;
    }
    return n ? (const void *)r->pbuf : (const void *)empty_payload;
}

static void hold_map(struct as_stream_reader *r, struct as_mapped_file *m) {
    for (int i = 0; i < r->n_maps; i++)
        if (r->maps[i] == m) {
            as_mapped_file_put(m); /* already held once by this reader */
            return;
        }
    if (r->n_maps == r->cap_maps) {
        r->cap_maps = r->cap_maps ? 2 * r->cap_maps : 8;
        r->maps = as_xrealloc(r->maps, (size_t)r->cap_maps * sizeof *r->maps);
    }
    r->maps[r->n_maps++] = m;
}

static const void *load_ref(struct as_stream_reader *r) {
    struct as_rec *rec = &r->rec;
    uint64_t end = rec->offset + rec->nbytes;
    /* Only files the user allowed (ref_policy.h); map the resolved path that was checked. */
    char *real = NULL;
    if (as_stream_ref_allowed(rec->file, rec->offset, rec->nbytes, &real)) {
        as_fail_prefix("stream %s: record %" PRIu64 " (%s): ", r->name, r->n_records, rec->name);
        return NULL;
    }
    struct as_mapped_file *m = as_mapped_file_get(real, end);
    free(real);
#define REF_FAIL(...)                                                                              \
    (as_fail(__VA_ARGS__),                                                                         \
     as_fail_prefix("stream %s: record %" PRIu64 " (%s): ", r->name, r->n_records, rec->name))
    if (!m) {
        as_fail_prefix("stream %s: record %" PRIu64 " (%s): ", r->name, r->n_records, rec->name);
        return NULL;
    }
    int bad = 0;
    if (rec->has_file_stat && m->size != rec->file_size)
        bad = REF_FAIL("file %s: size is %" PRIu64
                       " bytes, the reference was made when it had %" PRIu64
                       " (file replaced or truncated)",
                       rec->file, m->size, rec->file_size);
    else if (rec->has_file_stat && m->mtime_ns != rec->file_mtime_ns)
        bad = REF_FAIL("file %s: modified since the reference was made (mtime %" PRId64
                       " ns, reference says %" PRId64 ")",
                       rec->file, m->mtime_ns, rec->file_mtime_ns);
    else if (m->size < end)
        bad = REF_FAIL("file %s: shorter than the reference (%" PRIu64
                       " bytes, payload ends at byte %" PRIu64 ")",
                       rec->file, m->size, end);
    else if (m->map_size < end) /* the file grew while we held a smaller mapping: cannot happen */
        bad = REF_FAIL("file %s: mapping does not cover the reference", rec->file);
    if (bad) {
        as_mapped_file_put(m);
        return NULL;
    }
    hold_map(r, m);
    const uint8_t *p = rec->nbytes ? m->map + rec->offset : (const uint8_t *)empty_payload;
    if (rec->has_xxh3) {
        uint64_t h = XXH3_64bits(p, rec->nbytes);
        if (h != rec->xxh3) {
            REF_FAIL("file %s: payload checksum mismatch at offset %" PRIu64 " (xxh3 %016" PRIx64
                     ", reference says %016" PRIx64 ")",
                     rec->file, rec->offset, h, rec->xxh3);
            return NULL;
        }
    }
#undef REF_FAIL
    return p;
}

const void *as_stream_payload(struct as_stream_reader *r) {
    if (!r->have_rec) {
        as_fail("stream %s: no current record", r->name);
        return NULL;
    }
    if (!r->payload) r->payload = r->rec.kind == AS_PAYLOAD_INLINE ? load_inline(r) : load_ref(r);
    return r->payload;
}

/* ---------------------------------------------------------------- checkpoints */

struct ckpt_shard {
    char *abs_path;
    uint64_t size;
    int64_t mtime_ns;
};

struct as_ckpt_refs {
    const struct as_ckpt *c;
    int n_shards;
    struct ckpt_shard *shards;
    int *tensor_shard;
    int *order; /* natural name order -> index into c->tensors */
};

int as_natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            while (*a == '0')
                a++;
            while (*b == '0')
                b++;
            size_t na = 0, nb = 0;
            while (a[na] >= '0' && a[na] <= '9')
                na++;
            while (b[nb] >= '0' && b[nb] <= '9')
                nb++;
            if (na != nb) return na < nb ? -1 : 1;
            int c = memcmp(a, b, na);
            if (c) return c;
            a += na;
            b += nb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return *a ? 1 : *b ? -1 : 0;
}

struct name_index {
    const char *name;
    int index;
};
static int cmp_name_index(const void *x, const void *y) {
    const struct name_index *a = x, *b = y;
    int c = as_natural_cmp(a->name, b->name);
    return c ? c : strcmp(a->name, b->name);
}

struct as_ckpt_refs *as_ckpt_refs_new(const struct as_ckpt *c) {
    struct as_ckpt_refs *cr = as_xcalloc(1, sizeof *cr);
    cr->c = c;
    cr->n_shards = c->n_files;
    cr->shards = as_xcalloc((size_t)(c->n_files ? c->n_files : 1), sizeof *cr->shards);
    for (int k = 0; k < c->n_files; k++) {
        const struct as_st_file *f = c->files[k];
        char *abs = realpath(f->path, NULL);
        struct stat st;
        int ok = f->fd >= 0 ? fstat(f->fd, &st) == 0 : stat(abs ? abs : f->path, &st) == 0;
        if (!abs || !ok) {
            as_fail("file %s: %s", f->path, strerror(errno));
            free(abs);
            as_ckpt_refs_free(cr);
            return NULL;
        }
        cr->shards[k].abs_path = abs;
        cr->shards[k].size = (uint64_t)st.st_size;
        cr->shards[k].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    }
    cr->tensor_shard = as_xcalloc((size_t)(c->n_tensors ? c->n_tensors : 1), sizeof(int));
    for (int i = 0; i < c->n_tensors; i++) {
        int k = 0;
        while (k < c->n_files && c->tensor_file[i] != c->files[k]->path &&
               strcmp(c->tensor_file[i], c->files[k]->path) != 0)
            k++;
        if (k == c->n_files) {
            as_fail("checkpoint %s: tensor %s: shard %s is not open", c->dir, c->tensors[i]->name,
                    c->tensor_file[i]);
            as_ckpt_refs_free(cr);
            return NULL;
        }
        cr->tensor_shard[i] = k;
    }
    cr->order = as_xcalloc((size_t)(c->n_tensors ? c->n_tensors : 1), sizeof(int));
    struct name_index *ni = as_xcalloc((size_t)(c->n_tensors ? c->n_tensors : 1), sizeof *ni);
    for (int i = 0; i < c->n_tensors; i++)
        ni[i] = (struct name_index){c->tensors[i]->name, i};
    qsort(ni, (size_t)c->n_tensors, sizeof *ni, cmp_name_index);
    for (int i = 0; i < c->n_tensors; i++)
        cr->order[i] = ni[i].index;
    free(ni);
    return cr;
}

const struct as_st_tensor *as_ckpt_refs_tensor(const struct as_ckpt_refs *cr, int i) {
    return cr->c->tensors[cr->order[i]];
}

int as_ckpt_refs_find(const struct as_ckpt_refs *cr, const char *name) {
    int lo = 0, hi = cr->c->n_tensors - 1;
    while (lo <= hi) {
        const char *mid_name = cr->c->tensors[cr->order[(lo + hi) / 2]]->name;
        int mid = (lo + hi) / 2, cmp = as_natural_cmp(mid_name, name);
        if (!cmp) cmp = strcmp(mid_name, name); /* the order's tie-break (cmp_name_index) */
        if (!cmp) return mid;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

void as_ckpt_refs_rec(const struct as_ckpt_refs *cr, int i, struct as_rec *r) {
    const struct as_st_tensor *t = cr->c->tensors[cr->order[i]];
    const struct ckpt_shard *s = &cr->shards[cr->tensor_shard[cr->order[i]]];
    as_rec_init(r, t->name, "weight", as_layer_from_name(t->name), t->dtype, t->ndim, t->shape);
    r->kind = AS_PAYLOAD_REF;
    r->nbytes = t->nbytes;
    r->file = s->abs_path;
    r->offset = t->offset;
    r->has_file_stat = 1;
    r->file_size = s->size;
    r->file_mtime_ns = s->mtime_ns;
}

void as_ckpt_refs_free(struct as_ckpt_refs *cr) {
    if (!cr) return;
    for (int k = 0; k < cr->n_shards; k++)
        free(cr->shards[k].abs_path);
    free(cr->shards);
    free(cr->tensor_shard);
    free(cr->order);
    free(cr);
}

int as_stream_write_ckpt(struct as_stream_writer *w, const struct as_ckpt *c) {
    struct as_ckpt_refs *cr = as_ckpt_refs_new(c);
    if (!cr) return -1;
    for (int i = 0; i < c->n_tensors; i++) {
        struct as_rec r;
        as_ckpt_refs_rec(cr, i, &r);
        if (as_stream_write(w, &r, NULL)) {
            as_ckpt_refs_free(cr);
            return -1;
        }
    }
    as_ckpt_refs_free(cr);
    return 0;
}

/* ---------------------------------------------------------------- sources */

struct as_source {
    char *name;
    struct as_stream_reader *stream; /* either a stream ... */
    struct as_ckpt *ckpt;            /* ... or a checkpoint */
    struct as_ckpt_refs *refs;
    int next_tensor;
    struct as_rec rec;
};

struct as_source *as_source_open(const char *path) {
    struct as_source *s = as_xcalloc(1, sizeof *s);
    s->name = as_xstrdup(strcmp(path, "-") == 0 ? "stdin" : path);
    struct stat st;
    int is_stream = strcmp(path, "-") == 0;
    if (!is_stream) {
        if (stat(path, &st) != 0) {
            as_fail("%s: %s", path, strerror(errno));
            goto fail;
        }
        if (S_ISREG(st.st_mode)) {
            char magic[4] = {0};
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                as_fail("%s: %s", path, strerror(errno));
                goto fail;
            }
            ssize_t k = read(fd, magic, 4);
            close(fd);
            /* A file too short for any header is an empty (killed) stream, not a checkpoint. */
            is_stream = (k >= 0 && k < 4) || memcmp(magic, AS_STREAM_MAGIC, 4) == 0;
        } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
            is_stream = 1; /* /dev/stdin, <(...) process substitution */
        }
    }
    if (is_stream) {
        s->stream = as_stream_open(path);
        if (!s->stream) goto fail;
        return s;
    }
    s->ckpt = as_ckpt_open(path);
    if (!s->ckpt) goto fail;
    s->refs = as_ckpt_refs_new(s->ckpt);
    if (!s->refs) goto fail;
    return s;
fail:
    as_source_close(s);
    return NULL;
}

int as_source_next(struct as_source *s, const struct as_rec **rec) {
    if (s->stream) return as_stream_next(s->stream, rec);
    *rec = NULL;
    if (s->next_tensor >= s->ckpt->n_tensors) return 0;
    as_ckpt_refs_rec(s->refs, s->next_tensor++, &s->rec);
    *rec = &s->rec;
    return 1;
}

const void *as_source_payload(struct as_source *s) {
    if (s->stream) return as_stream_payload(s->stream);
    if (s->next_tensor == 0) {
        as_fail("checkpoint %s: no current record", s->name);
        return NULL;
    }
    const struct as_st_tensor *t = as_ckpt_refs_tensor(s->refs, s->next_tensor - 1);
    return t->nbytes ? t->data : (const void *)empty_payload;
}

int as_source_is_stream(const struct as_source *s) {
    return s->stream != NULL;
}
const char *as_source_name(const struct as_source *s) {
    return s->name;
}

void as_source_close(struct as_source *s) {
    if (!s) return;
    as_stream_close(s->stream);
    as_ckpt_refs_free(s->refs);
    if (s->ckpt) as_ckpt_close(s->ckpt);
    free(s->name);
    free(s);
}

/* ---------------------------------------------------------------- arenas */

struct as_arena {
    char *path;
    int fd;
    uint64_t size;
};

struct as_arena *as_arena_create(const char *dir) {
    char *abs = realpath(dir, NULL);
    if (!abs) {
        as_fail("arena directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    static int counter;
    size_t cap = strlen(abs) + 64;
    char *path = as_xmalloc(cap);
    int fd = -1;
    for (int tries = 0; tries < 1000 && fd < 0; tries++) {
        snprintf(path, cap, "%s/as-arena.%d.%d", abs, (int)getpid(), counter++);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    free(abs);
    if (fd < 0) {
        as_fail("arena %s: %s", path, strerror(errno));
        free(path);
        return NULL;
    }
    struct as_arena *a = as_xcalloc(1, sizeof *a);
    a->path = path;
    a->fd = fd;
    return a;
}

const char *as_arena_path(const struct as_arena *a) {
    return a->path;
}

int as_arena_put(struct as_arena *a, struct as_rec *rec, const void *data) {
    if (rec->nbytes && !data) return as_fail("arena %s: record %s: no data", a->path, rec->name);
    uint64_t off = (a->size + AS_STREAM_ALIGN - 1) / AS_STREAM_ALIGN * AS_STREAM_ALIGN;
    const uint8_t *p = data;
    uint64_t done = 0;
    /* pwrite at the aligned offset: the gap reads back as zeros. */
    while (done < rec->nbytes) {
        uint64_t want = rec->nbytes - done;
        ssize_t k =
            pwrite(a->fd, p + done, want > IO_CHUNK ? IO_CHUNK : (size_t)want, (off_t)(off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return as_fail("arena %s: record %s: write failed: %s", a->path, rec->name,
                           k < 0 ? strerror(errno) : "no progress");
        done += (uint64_t)k;
    }
    if (!rec->has_xxh3) {
        rec->xxh3 = XXH3_64bits(data, rec->nbytes);
        rec->has_xxh3 = 1;
    }
    a->size = off + rec->nbytes;
    rec->kind = AS_PAYLOAD_REF;
    rec->file = a->path;
    rec->offset = off;
    /* Arenas grow while consumers read them: no size/mtime, the checksum guards the bytes. */
    rec->has_file_stat = 0;
    return 0;
}

void as_arena_close(struct as_arena *a) {
    if (!a) return;
    close(a->fd);
    if (a->size == 0) unlink(a->path); /* nothing can refer to an empty arena */
    free(a->path);
    free(a);
}
