/* gguf: GGUF v3 writer and validating reader, exact encoding of integer codes into ggml blocks.
 * See gguf.h for the file layout; docs/gguf.md for the rules each check enforces. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "atomic_file.h"
#include "dtype.h"

/* GGUF is little-endian and the writer/reader copy numbers and blocks as they lie in memory. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

/* ---- f32 -> float types (the block types are encoded from integer codes below) ---------- */

int as_ggml_from_f32(enum as_ggml_type t, const float *src, void *dst, size_t n) {
    switch (t) {
    case AS_GGML_F32:
        memcpy(dst, src, n * sizeof(float));
        return 0;
    case AS_GGML_F16:
        return as_convert_from_f32(AS_F16, src, dst, n);
    case AS_GGML_BF16:
        return as_convert_from_f32(AS_BF16, src, dst, n);
    default:
        return as_fail("type %s: block types are encoded from integer codes only",
                       as_ggml_type_name(t));
    }
}

/* ---- integer codes -> blocks ---------------------------------------------------------------- */

int as_gguf_qlinear_type(const struct as_qlinear *l, int prefer_q4_1, char *why, size_t why_len) {
    int t = -1;
    if (l->group_size != AS_QK)
        snprintf(why, why_len, "group size %d (GGUF blocks hold 32 columns)", l->group_size);
    else if (l->K % AS_QK)
        snprintf(why, why_len, "K = %d is not a multiple of 32 (ragged last group)", l->K);
    else if (!as_qlinear_gidx_is_trivial(l))
        snprintf(why, why_len, "act-order groups are permuted (g_idx), blocks are contiguous");
    else if (l->bits == 4)
        t = l->sym && !prefer_q4_1 ? AS_GGML_Q4_0 : AS_GGML_Q4_1;
    else if (l->bits == 8 && l->sym)
        t = AS_GGML_Q8_0;
    else
        snprintf(why, why_len, "%d-bit %s has no exact GGUF block type (Q4_0, Q4_1, Q8_0)", l->bits,
                 l->sym ? "sym" : "asym");
    if (t < 0) return -1;
    int G = as_qlinear_groups(l);
    for (size_t i = 0; i < (size_t)l->N * G; i++) {
        uint16_t h = as_f32_to_f16(l->scale[i]);
        if (!isfinite(as_f16_to_f32(h)) || (l->sym && l->zero[i] != 1 << (l->bits - 1))) {
            snprintf(why, why_len, "row %zu group %zu: scale %g %s", i / G, i % G, l->scale[i],
                     isfinite(as_f16_to_f32(h)) ? "with a non-symmetric zero" : "overflows fp16");
            return -1;
        }
    }
    return t;
}

/* fp16(-d * zero) with d already fp16: the one rounding Q4_1 adds. */
static uint16_t q4_1_min(uint16_t d16, int32_t zero) {
    return as_f32_to_f16(-as_f16_to_f32(d16) * (float)zero);
}

void as_gguf_encode_qlinear(const struct as_qlinear *l, enum as_ggml_type t, const int *row_perm,
                            void *out) {
    int G = as_qlinear_groups(l), nb = l->K / AS_QK;
    for (int r = 0; r < l->N; r++) {
        int n = row_perm ? row_perm[r] : r;
        const uint8_t *q = l->q + (size_t)n * l->K;
        for (int b = 0; b < nb; b++) {
            size_t gi = (size_t)n * G + b; /* trivial g_idx: block b is group b */
            uint16_t d = as_f32_to_f16(l->scale[gi]);
            const uint8_t *qb = q + (size_t)b * AS_QK;
            size_t o = (size_t)r * nb + b;
            if (t == AS_GGML_Q8_0) {
                as_block_q8_0 *blk = (as_block_q8_0 *)out + o;
                blk->d = d;
                for (int j = 0; j < AS_QK; j++)
                    blk->qs[j] = (int8_t)((int)qb[j] - 128);
            } else {
                uint8_t *qs;
                if (t == AS_GGML_Q4_0) {
                    as_block_q4_0 *blk = (as_block_q4_0 *)out + o;
                    blk->d = d, qs = blk->qs;
                } else {
                    as_block_q4_1 *blk = (as_block_q4_1 *)out + o;
                    blk->d = d, blk->m = q4_1_min(d, l->zero[gi]), qs = blk->qs;
                }
                for (int j = 0; j < AS_QK / 2; j++)
                    qs[j] = (uint8_t)((qb[j] & 0x0F) | (qb[j + AS_QK / 2] << 4));
            }
        }
    }
}

void as_gguf_qlinear_expected(const struct as_qlinear *l, enum as_ggml_type t, float *out) {
    int G = as_qlinear_groups(l);
    for (int n = 0; n < l->N; n++)
        for (int k = 0; k < l->K; k++) {
            size_t gi = (size_t)n * G + l->g_idx[k];
            uint16_t d16 = as_f32_to_f16(l->scale[gi]);
            float d = as_f16_to_f32(d16), q = (float)l->q[(size_t)n * l->K + k];
            out[(size_t)n * l->K + k] = t == AS_GGML_Q4_1
                                            ? q * d + as_f16_to_f32(q4_1_min(d16, l->zero[gi]))
                                            : d * (q - (float)l->zero[gi]);
        }
}

/* ---- writer --------------------------------------------------------------------------------- */

struct wkv {
    char *key;
    enum as_gguf_vtype type, arr_type;
    uint64_t n;
    uint8_t scalar[8];
    void *data; /* STRING: char*; ARRAY: packed numbers or char** */
};
struct wtensor {
    char *name;
    enum as_ggml_type type;
    int n_dims;
    int64_t ne[4];
    void *data;
    size_t nbytes;
};
struct as_gguf_writer {
    struct wkv *kv;
    int n_kv, cap_kv;
    struct wtensor *t;
    int n_t, cap_t;
};

static const int vtype_size[AS_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

struct as_gguf_writer *as_gguf_writer_new(void) {
    return as_xcalloc(1, sizeof(struct as_gguf_writer));
}

static void wkv_clear(struct wkv *k) {
    if (k->type == AS_GGUF_ARRAY && k->arr_type == AS_GGUF_STRING)
        for (uint64_t i = 0; i < k->n; i++)
            free(((char **)k->data)[i]);
    free(k->data);
    k->data = NULL;
}

void as_gguf_writer_free(struct as_gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) {
        wkv_clear(&w->kv[i]);
        free(w->kv[i].key);
    }
    for (int i = 0; i < w->n_t; i++)
        free(w->t[i].name), free(w->t[i].data);
    free(w->kv), free(w->t), free(w);
}

static struct wkv *wkv_slot(struct as_gguf_writer *w, const char *key, enum as_gguf_vtype type) {
    for (int i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            wkv_clear(&w->kv[i]);
            w->kv[i].type = type;
            return &w->kv[i];
        }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 32;
        w->kv = as_xrealloc(w->kv, (size_t)w->cap_kv * sizeof *w->kv);
    }
    struct wkv *k = &w->kv[w->n_kv++];
    memset(k, 0, sizeof *k);
    k->key = as_xstrdup(key);
    k->type = type;
    return k;
}

static void set_scalar(struct as_gguf_writer *w, const char *key, enum as_gguf_vtype t,
                       const void *v) {
    struct wkv *k = wkv_slot(w, key, t);
    memcpy(k->scalar, v, (size_t)vtype_size[t]);
}
void as_gguf_set_u32(struct as_gguf_writer *w, const char *key, uint32_t v) {
    set_scalar(w, key, AS_GGUF_U32, &v);
}
void as_gguf_set_i32(struct as_gguf_writer *w, const char *key, int32_t v) {
    set_scalar(w, key, AS_GGUF_I32, &v);
}
void as_gguf_set_u64(struct as_gguf_writer *w, const char *key, uint64_t v) {
    set_scalar(w, key, AS_GGUF_U64, &v);
}
void as_gguf_set_f32(struct as_gguf_writer *w, const char *key, float v) {
    set_scalar(w, key, AS_GGUF_F32, &v);
}
void as_gguf_set_f64(struct as_gguf_writer *w, const char *key, double v) {
    set_scalar(w, key, AS_GGUF_F64, &v);
}
void as_gguf_set_bool(struct as_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    set_scalar(w, key, AS_GGUF_BOOL, &b);
}
void as_gguf_set_str(struct as_gguf_writer *w, const char *key, const char *v) {
    wkv_slot(w, key, AS_GGUF_STRING)->data = as_xstrdup(v);
}
void as_gguf_set_arr(struct as_gguf_writer *w, const char *key, enum as_gguf_vtype elem,
                     const void *data, uint64_t n) {
    struct wkv *k = wkv_slot(w, key, AS_GGUF_ARRAY);
    k->arr_type = elem, k->n = n;
    size_t bytes = (size_t)n * (size_t)vtype_size[elem];
    k->data = as_xmalloc(bytes ? bytes : 1);
    if (bytes) memcpy(k->data, data, bytes);
}
void as_gguf_set_arr_str(struct as_gguf_writer *w, const char *key, const char *const *v,
                         uint64_t n) {
    struct wkv *k = wkv_slot(w, key, AS_GGUF_ARRAY);
    k->arr_type = AS_GGUF_STRING, k->n = n;
    char **s = as_xmalloc((size_t)(n ? n : 1) * sizeof *s);
    for (uint64_t i = 0; i < n; i++)
        s[i] = as_xstrdup(v[i]);
    k->data = s;
}

int as_gguf_add_tensor(struct as_gguf_writer *w, const char *name, enum as_ggml_type t, int n_dims,
                       const int64_t *ne, void *data) {
    if (!as_ggml_type_known(t) || n_dims < 1 || n_dims > 4 || strlen(name) >= 64) {
        free(data);
        return as_fail("tensor %s: bad type %d, n_dims %d or name longer than 63 bytes", name, t,
                       n_dims);
    }
    size_t nbytes = as_ggml_row_size(t, ne[0]);
    if (!nbytes) {
        free(data);
        return as_fail("tensor %s: row of %lld elements is not a multiple of the %s block (%d)",
                       name, (long long)ne[0], as_ggml_type_name(t), as_ggml_blck_size(t));
    }
    for (int d = 1; d < n_dims; d++)
        nbytes *= (size_t)ne[d];
    for (int i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) {
            free(data);
            return as_fail("tensor %s: added twice", name);
        }
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 64;
        w->t = as_xrealloc(w->t, (size_t)w->cap_t * sizeof *w->t);
    }
    struct wtensor *x = &w->t[w->n_t++];
    memset(x, 0, sizeof *x);
    x->name = as_xstrdup(name), x->type = t, x->n_dims = n_dims, x->data = data;
    x->nbytes = nbytes;
    for (int d = 0; d < n_dims; d++)
        x->ne[d] = ne[d];
    return 0;
}

static void put(FILE *f, const void *p, size_t n) {
    fwrite(p, 1, n, f);
}
static void put_u32(FILE *f, uint32_t v) {
    put(f, &v, 4);
}
static void put_u64(FILE *f, uint64_t v) {
    put(f, &v, 8);
}
static void put_str(FILE *f, const char *s) {
    put_u64(f, strlen(s));
    put(f, s, strlen(s));
}
static void put_pad(FILE *f, uint64_t pos, uint32_t align) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        put(f, zeros, n);
        pad -= n;
    }
}

int as_gguf_writer_write(struct as_gguf_writer *w, const char *path) {
    uint32_t align = AS_GGUF_DEFAULT_ALIGNMENT;
    for (int i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, "general.alignment")) {
            uint32_t a;
            memcpy(&a, w->kv[i].scalar, 4);
            if (w->kv[i].type != AS_GGUF_U32 || !a || (a & (a - 1)))
                return as_fail("file %s: general.alignment must be a u32 power of two", path);
            align = a;
        }
    struct as_atomic_file af;
    if (as_atomic_open(&af, path)) return -1;
    FILE *f = af.fp;
    put_u32(f, AS_GGUF_MAGIC);
    put_u32(f, AS_GGUF_VERSION);
    put_u64(f, (uint64_t)w->n_t);
    put_u64(f, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        const struct wkv *k = &w->kv[i];
        put_str(f, k->key);
        put_u32(f, k->type);
        if (k->type == AS_GGUF_STRING) {
            put_str(f, k->data);
        } else if (k->type == AS_GGUF_ARRAY) {
            put_u32(f, k->arr_type);
            put_u64(f, k->n);
            if (k->arr_type == AS_GGUF_STRING)
                for (uint64_t j = 0; j < k->n; j++)
                    put_str(f, ((char **)k->data)[j]);
            else
                put(f, k->data, (size_t)k->n * (size_t)vtype_size[k->arr_type]);
        } else {
            put(f, k->scalar, (size_t)vtype_size[k->type]);
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        put_str(f, t->name);
        put_u32(f, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put_u64(f, (uint64_t)t->ne[d]);
        put_u32(f, t->type);
        put_u64(f, off);
        off += (t->nbytes + align - 1) / align * align;
    }
    long pos = ftell(f);
    if (pos < 0) {
        as_atomic_abort(&af);
        return as_fail("file %s: cannot tell position: %s", path, strerror(errno));
    }
    put_pad(f, (uint64_t)pos, align);
    for (int i = 0; i < w->n_t; i++) {
        put(f, w->t[i].data, w->t[i].nbytes);
        put_pad(f, w->t[i].nbytes, align);
    }
    if (ferror(f)) {
        as_atomic_abort(&af);
        return as_fail("file %s: write failed: %s", path, strerror(errno));
    }
    return as_atomic_commit(&af);
}

/* ---- reader --------------------------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t pos, size;
    const char *path;
    int err;
};

static int rd_need(struct rd *r, size_t n, const char *what) {
    if (r->err) return -1;
    if (n > r->size - r->pos) {
        r->err = 1;
        return as_fail("file %s: truncated: %s at offset %zu needs %zu bytes, %zu left", r->path,
                       what, r->pos, n, r->size - r->pos);
    }
    return 0;
}
static uint32_t rd_u32(struct rd *r, const char *what) {
    uint32_t v = 0;
    if (rd_need(r, 4, what)) return 0;
    memcpy(&v, r->p + r->pos, 4);
    r->pos += 4;
    return v;
}
static uint64_t rd_u64(struct rd *r, const char *what) {
    uint64_t v = 0;
    if (rd_need(r, 8, what)) return 0;
    memcpy(&v, r->p + r->pos, 8);
    r->pos += 8;
    return v;
}
/* A gguf string as a fresh NUL-terminated copy; NULL on error. */
static char *rd_str(struct rd *r, const char *what, size_t *len) {
    uint64_t n = rd_u64(r, what);
    if (r->err || rd_need(r, n, what)) return NULL;
    char *s = as_xmalloc((size_t)n + 1);
    memcpy(s, r->p + r->pos, (size_t)n);
    s[n] = 0;
    r->pos += (size_t)n;
    if (len) *len = (size_t)n;
    return s;
}

static void kv_free(struct as_gguf_kv *k) {
    free(k->key), free(k->str), free(k->arr), free(k->lens);
    if (k->strs)
        for (uint64_t i = 0; i < k->n; i++)
            free(k->strs[i]);
    free(k->strs);
}

void as_gguf_close(struct as_gguf *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++)
        kv_free(&g->kv[i]);
    for (int i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->kv), free(g->tensors);
    if (g->map && g->map_size) munmap(g->map, g->map_size);
    free(g->path);
    free(g);
}

static int read_scalar(struct rd *r, enum as_gguf_vtype t, struct as_gguf_kv *k, void *raw) {
    int sz = vtype_size[t];
    if (rd_need(r, (size_t)sz, k->key)) return -1;
    const uint8_t *p = r->p + r->pos;
    if (raw) memcpy(raw, p, (size_t)sz);
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint64_t u64;
        int64_t i64;
        double f64;
    } x;
    memcpy(&x, p, (size_t)sz);
    switch (t) {
    case AS_GGUF_U8:
        k->v.u = x.u8;
        break;
    case AS_GGUF_BOOL:
        if (x.u8 > 1) return as_fail("file %s: key %s: bool value %u", r->path, k->key, x.u8);
        k->v.u = x.u8;
        break;
    case AS_GGUF_I8:
        k->v.i = x.i8;
        break;
    case AS_GGUF_U16:
        k->v.u = x.u16;
        break;
    case AS_GGUF_I16:
        k->v.i = x.i16;
        break;
    case AS_GGUF_U32:
        k->v.u = x.u32;
        break;
    case AS_GGUF_I32:
        k->v.i = x.i32;
        break;
    case AS_GGUF_F32:
        k->v.f = x.f32;
        break;
    case AS_GGUF_U64:
        k->v.u = x.u64;
        break;
    case AS_GGUF_I64:
        k->v.i = x.i64;
        break;
    case AS_GGUF_F64:
        k->v.f = x.f64;
        break;
    default:
        break;
    }
    r->pos += (size_t)sz;
    return 0;
}

static int read_kv(struct rd *r, struct as_gguf_kv *k, int idx) {
    char what[64];
    snprintf(what, sizeof what, "metadata key %d", idx);
    if (!(k->key = rd_str(r, what, NULL))) return -1;
    uint32_t t = rd_u32(r, k->key);
    if (r->err) return -1;
    if (t >= AS_GGUF_VTYPE_COUNT)
        return as_fail("file %s: key %s: unknown value type %u", r->path, k->key, t);
    k->type = (enum as_gguf_vtype)t;
    if (t == AS_GGUF_STRING) return (k->str = rd_str(r, k->key, NULL)) ? 0 : -1;
    if (t != AS_GGUF_ARRAY) return read_scalar(r, k->type, k, NULL);
    uint32_t et = rd_u32(r, k->key);
    uint64_t n = rd_u64(r, k->key);
    if (r->err) return -1;
    if (et >= AS_GGUF_VTYPE_COUNT || et == AS_GGUF_ARRAY)
        return as_fail("file %s: key %s: array of unsupported type %u", r->path, k->key, et);
    k->arr_type = (enum as_gguf_vtype)et;
    /* every element takes at least one byte (a string 8): bound n by what is left */
    size_t min_el = et == AS_GGUF_STRING ? 8 : (size_t)vtype_size[et];
    if (n > (r->size - r->pos) / min_el)
        return as_fail("file %s: truncated: key %s: array of %llu elements does not fit", r->path,
                       k->key, (unsigned long long)n);
    k->n = n;
    if (et == AS_GGUF_STRING) {
        k->strs = as_xcalloc((size_t)(n ? n : 1), sizeof *k->strs);
        k->lens = as_xcalloc((size_t)(n ? n : 1), sizeof *k->lens);
        for (uint64_t i = 0; i < n; i++)
            if (!(k->strs[i] = rd_str(r, k->key, &k->lens[i]))) return -1;
        return 0;
    }
    k->arr = as_xmalloc((size_t)n * min_el + 1);
    memcpy(k->arr, r->p + r->pos, (size_t)n * min_el);
    if (et == AS_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((uint8_t *)k->arr)[i] > 1)
                return as_fail("file %s: key %s: element %llu: bool value %u", r->path, k->key,
                               (unsigned long long)i, ((uint8_t *)k->arr)[i]);
    r->pos += (size_t)n * min_el;
    return 0;
}

static int fail_open(struct as_gguf *g) {
    as_gguf_close(g);
    return -1;
}

struct as_gguf *as_gguf_open(const char *path) {
    int fd =
        open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block (mapped_file.c) */
    if (fd < 0) {
        as_fail("file %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        as_fail("file %s: not a regular file", path);
        return NULL;
    }
    struct as_gguf *g = as_xcalloc(1, sizeof *g);
    g->path = as_xstrdup(path);
    g->map_size = (size_t)st.st_size;
    if (g->map_size) {
        g->map = mmap(NULL, g->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (g->map == MAP_FAILED) {
            g->map = NULL, g->map_size = 0;
            close(fd);
            as_fail("file %s: cannot map: %s", path, strerror(errno));
            fail_open(g);
            return NULL;
        }
    }
    close(fd);
    struct rd r = {.p = g->map, .size = g->map_size, .path = path};
    uint32_t magic = rd_u32(&r, "magic");
    if (r.err) goto fail;
    if (magic != AS_GGUF_MAGIC) {
        as_fail("file %s: bad magic 0x%08x (not a GGUF file)", path, magic);
        goto fail;
    }
    g->version = rd_u32(&r, "version");
    uint64_t n_t = rd_u64(&r, "tensor count"), n_kv = rd_u64(&r, "metadata count");
    if (r.err) goto fail;
    if (g->version != 2 && g->version != 3) {
        as_fail("file %s: GGUF version %u is not supported (2 or 3)", path, g->version);
        goto fail;
    }
    /* a KV takes at least 8+4+1 bytes, a tensor info 8+4+8+4+8 */
    if (n_kv > g->map_size / 13 || n_t > g->map_size / 32) {
        as_fail("file %s: truncated: %llu keys and %llu tensors cannot fit in %zu bytes", path,
                (unsigned long long)n_kv, (unsigned long long)n_t, g->map_size);
        goto fail;
    }
    g->kv = as_xcalloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (int)i + 1;
        if (read_kv(&r, &g->kv[i], (int)i)) goto fail;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->kv[j].key, g->kv[i].key)) {
                as_fail("file %s: key %s appears twice", path, g->kv[i].key);
                goto fail;
            }
    }
    g->alignment = AS_GGUF_DEFAULT_ALIGNMENT;
    const struct as_gguf_kv *ak = as_gguf_find_kv(g, "general.alignment");
    if (ak) {
        if (ak->type != AS_GGUF_U32 || !ak->v.u || (ak->v.u & (ak->v.u - 1))) {
            as_fail("file %s: general.alignment must be a u32 power of two", path);
            goto fail;
        }
        g->alignment = (uint32_t)ak->v.u;
    }
    g->tensors = as_xcalloc((size_t)(n_t ? n_t : 1), sizeof *g->tensors);
    uint64_t expect_off = 0;
    for (uint64_t i = 0; i < n_t; i++) {
        struct as_gguf_tensor *t = &g->tensors[i];
        g->n_tensors = (int)i + 1;
        char what[64];
        snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
        if (!(t->name = rd_str(&r, what, NULL))) goto fail;
        uint32_t nd = rd_u32(&r, t->name);
        if (r.err) goto fail;
        if (nd < 1 || nd > 4) {
            as_fail("file %s: tensor %s: n_dims %u (1..4)", path, t->name, nd);
            goto fail;
        }
        t->n_dims = (int)nd;
        uint64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne = rd_u64(&r, t->name);
            if (r.err) goto fail;
            if (ne == 0 || ne > (1ull << 40) || numel > (1ull << 50) / ne) {
                as_fail("file %s: tensor %s: dimension %u is %llu", path, t->name, d,
                        (unsigned long long)ne);
                goto fail;
            }
            t->ne[d] = (int64_t)ne, numel *= ne;
        }
        for (uint32_t d = nd; d < 4; d++)
            t->ne[d] = 1;
        uint32_t type = rd_u32(&r, t->name);
        t->offset = rd_u64(&r, t->name);
        if (r.err) goto fail;
        if (!as_ggml_type_known(type)) {
            const char *tn = as_ggml_type_name(type);
            as_fail("file %s: tensor %s: unsupported ggml type %u (%s)", path, t->name, type,
                    tn ? tn : "not a ggml type");
            goto fail;
        }
        t->type = (enum as_ggml_type)type;
        size_t row = as_ggml_row_size(t->type, t->ne[0]);
        if (!row) {
            as_fail("file %s: tensor %s: ne[0] = %lld is not a multiple of the %s block size (%d)",
                    path, t->name, (long long)t->ne[0], as_ggml_type_name(t->type),
                    as_ggml_blck_size(t->type));
            goto fail;
        }
        t->nbytes = row * (numel / (uint64_t)t->ne[0]);
        if (t->offset != expect_off) {
            as_fail("file %s: tensor %s: offset %llu, expected %llu (data aligned to %u, in info "
                    "order)",
                    path, t->name, (unsigned long long)t->offset, (unsigned long long)expect_off,
                    g->alignment);
            goto fail;
        }
        expect_off += (t->nbytes + g->alignment - 1) / g->alignment * g->alignment;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->tensors[j].name, t->name)) {
                as_fail("file %s: tensor %s appears twice", path, t->name);
                goto fail;
            }
    }
    g->data_offset = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
    for (int i = 0; i < g->n_tensors; i++) {
        struct as_gguf_tensor *t = &g->tensors[i];
        if (g->data_offset > g->map_size || t->offset + t->nbytes > g->map_size - g->data_offset) {
            as_fail("file %s: truncated: tensor %s data [%llu, %llu) beyond the end of the file "
                    "(%zu bytes)",
                    path, t->name, (unsigned long long)(g->data_offset + t->offset),
                    (unsigned long long)(g->data_offset + t->offset + t->nbytes), g->map_size);
            goto fail;
        }
        t->data = (const uint8_t *)g->map + g->data_offset + t->offset;
    }
    return g;
fail:
    fail_open(g);
    return NULL;
}

const struct as_gguf_kv *as_gguf_find_kv(const struct as_gguf *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const struct as_gguf_tensor *as_gguf_find_tensor(const struct as_gguf *g, const char *name) {
    for (int i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static int is_int_type(enum as_gguf_vtype t) {
    return t == AS_GGUF_U8 || t == AS_GGUF_I8 || t == AS_GGUF_U16 || t == AS_GGUF_I16 ||
           t == AS_GGUF_U32 || t == AS_GGUF_I32 || t == AS_GGUF_U64 || t == AS_GGUF_I64;
}
static int is_signed(enum as_gguf_vtype t) {
    return t == AS_GGUF_I8 || t == AS_GGUF_I16 || t == AS_GGUF_I32 || t == AS_GGUF_I64;
}

int as_gguf_get_u32(const struct as_gguf *g, const char *key, uint32_t *out) {
    const struct as_gguf_kv *k = as_gguf_find_kv(g, key);
    if (!k) return 0;
    if (!is_int_type(k->type) || (is_signed(k->type) && k->v.i < 0) ||
        (is_signed(k->type) ? (uint64_t)k->v.i : k->v.u) > UINT32_MAX)
        return as_fail("file %s: key %s: expected an unsigned 32-bit integer", g->path, key);
    *out = (uint32_t)(is_signed(k->type) ? (uint64_t)k->v.i : k->v.u);
    return 1;
}

int as_gguf_get_f32(const struct as_gguf *g, const char *key, float *out) {
    const struct as_gguf_kv *k = as_gguf_find_kv(g, key);
    if (!k) return 0;
    if (k->type != AS_GGUF_F32 && k->type != AS_GGUF_F64)
        return as_fail("file %s: key %s: expected a float", g->path, key);
    *out = (float)k->v.f;
    return 1;
}

int as_gguf_get_bool(const struct as_gguf *g, const char *key, int *out) {
    const struct as_gguf_kv *k = as_gguf_find_kv(g, key);
    if (!k) return 0;
    if (k->type != AS_GGUF_BOOL) return as_fail("file %s: key %s: expected a bool", g->path, key);
    *out = (int)k->v.u;
    return 1;
}

const char *as_gguf_get_str(const struct as_gguf *g, const char *key) {
    const struct as_gguf_kv *k = as_gguf_find_kv(g, key);
    return k && k->type == AS_GGUF_STRING ? k->str : NULL;
}

uint64_t as_gguf_tensor_numel(const struct as_gguf_tensor *t) {
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
        n *= (uint64_t)t->ne[d];
    return n;
}

void as_gguf_tensor_to_f32(const struct as_gguf_tensor *t, float *dst) {
    as_ggml_to_f32(t->type, t->data, dst, (size_t)as_gguf_tensor_numel(t));
}
