/* safetensors: strict memory-mapped reader, sharded checkpoints, and an atomic writer.
 *
 * Layout (REFERENCE.md "safetensors"): u64 LE header length N, N bytes of JSON, data buffer.
 * The reader checks everything the format promises before handing out a pointer, so a tensor's
 * data is always inside the mapping and exactly numel * dtype size long: header size vs file
 * size, the 100 MB header limit, JSON syntax (duplicate keys rejected), "__metadata__" as a
 * string->string map, dtype/shape/data_offsets of each entry, element-count overflow, and that
 * the tensors tile the data buffer from 0 to its end with no hole and no overlap (the same rules
 * as the reference Rust implementation). Every error is one line "FILE: tensor NAME: problem". */
#include "safetensors.h"

#include "as_error.h"
#include "atomic_file.h"
#include "ref_policy.h"

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define AS_ST_MAX_HEADER 100000000ull /* 100 MB, as in the reference implementation */

static uint64_t load_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* "[a, b, c]" into buf, for messages. */
static const char *shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* numel and byte size of a dtype/shape pair; -1 with a message (no file prefix) on overflow or a
 * sub-byte type whose elements do not fill whole bytes. */
static int tensor_size(enum as_dtype dt, int ndim, const int64_t *shape, uint64_t *numel,
                       uint64_t *nbytes) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return as_fail("negative dimension %" PRId64 " in shape", shape[i]);
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n))
            return as_fail("element count overflows");
    }
    int ovf;
    uint64_t b = as_dtype_nbytes(dt, n, &ovf);
    if (ovf)
        return as_fail("byte size of %" PRIu64 " elements of %s overflows", n, as_dtype_name(dt));
    if ((n * (uint64_t)as_dtype_traits[dt].bits) % 8)
        return as_fail("%" PRIu64 " elements of %s do not fill whole bytes", n, as_dtype_name(dt));
    *numel = n, *nbytes = b;
    return 0;
}

/* ---- reader ---- */

static int cmp_offset(const void *a, const void *b) {
    const struct as_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    const struct as_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Parse one header entry into t (offset holds the begin relative to the data buffer). */
static int parse_entry(const char *path, const char *name, json_t *e, uint64_t data_size,
                       struct as_st_tensor *t) {
    if (!json_is_object(e)) return as_fail("%s: tensor %s: entry is not a JSON object", path, name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd))
        return as_fail("%s: tensor %s: missing or non-string \"dtype\"", path, name);
    t->dtype = as_dtype_from_name(json_string_value(jd));
    if (t->dtype == AS_DTYPE_INVALID)
        return as_fail("%s: tensor %s: unknown dtype \"%s\"", path, name, json_string_value(jd));
    if (!json_is_array(js))
        return as_fail("%s: tensor %s: missing or non-array \"shape\"", path, name);
    if (json_array_size(js) > AS_MAX_DIMS)
        return as_fail("%s: tensor %s: shape has %zu dimensions, at most %d supported", path, name,
                       json_array_size(js), AS_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d))
            return as_fail("%s: tensor %s: shape entry %d is not an integer", path, name, i);
        t->shape[i] = json_integer_value(d);
    }
    if (tensor_size(t->dtype, t->ndim, t->shape, &t->numel, &t->nbytes))
        return as_fail_prefix("%s: tensor %s: ", path, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return as_fail("%s: tensor %s: \"data_offsets\" must be [begin, end] integers", path, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)),
               end = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || end < b)
        return as_fail("%s: tensor %s: invalid data_offsets [%lld, %lld]", path, name, (long long)b,
                       (long long)end);
    if ((uint64_t)end - (uint64_t)b != t->nbytes) {
        char sb[256];
        return as_fail("%s: tensor %s: data_offsets [%lld, %lld] hold %" PRIu64
                       " bytes but shape %s of %s needs %" PRIu64,
                       path, name, (long long)b, (long long)end, (uint64_t)(end - b),
                       shape_str(sb, sizeof sb, t->ndim, t->shape), as_dtype_name(t->dtype),
                       t->nbytes);
    }
    if ((uint64_t)end > data_size)
        return as_fail(
            "%s: tensor %s: data_offsets [%lld, %lld] out of bounds: data buffer is %" PRIu64
            " bytes (file truncated?)",
            path, name, (long long)b, (long long)end, data_size);
    t->offset = (uint64_t)b;
    return 0;
}

static int parse_metadata(const char *path, json_t *m, char **out) {
    if (!json_is_object(m)) return as_fail("%s: \"__metadata__\" is not a JSON object", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return as_fail("%s: __metadata__ key \"%s\": value is not a string", path, k);
    }
    *out = json_dumps(m, JSON_COMPACT);
    return 0;
}

/* Validate the header JSON and fill f->tensors. */
static int parse_header(struct as_st_file *f, const char *hdr, uint64_t hlen, uint64_t data_size) {
    const char *path = f->path;
    if (hlen == 0 || hdr[0] != '{') return as_fail("%s: header does not start with '{'", path);
    json_error_t err;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return as_fail("%s: invalid JSON header: %s at byte %d", path, err.text, err.position);
    int rc = -1;
    if (!json_is_object(root)) {
        as_fail("%s: header is not a JSON object", path);
        goto out;
    }
    size_t cap = json_object_size(root);
    f->tensors = as_xcalloc(cap ? cap : 1, sizeof *f->tensors);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(path, val, &f->metadata_json)) goto out;
            continue;
        }
        struct as_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = as_xstrdup(key);
        f->n_tensors++;
        if (parse_entry(path, key, val, data_size, t)) goto out;
    }
    /* Sorted by begin, the tensors must tile [0, data_size) exactly. */
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_offset);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n_tensors; i++) {
        struct as_st_tensor *t = &f->tensors[i];
        if (t->offset > pos) {
            as_fail("%s: tensor %s: hole of %" PRIu64 " bytes before data_offsets [%" PRIu64
                    ", %" PRIu64 "] (previous data ends at %" PRIu64 ")",
                    path, t->name, t->offset - pos, t->offset, t->offset + t->nbytes, pos);
            goto out;
        }
        if (t->offset < pos) {
            as_fail("%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64
                    "] overlap tensor %s (ends at %" PRIu64 ")",
                    path, t->name, t->offset, t->offset + t->nbytes, prev, pos);
            goto out;
        }
        pos = t->offset + t->nbytes;
        prev = t->name;
    }
    if (pos != data_size) {
        as_fail("%s: %" PRIu64 " bytes at the end of the data buffer belong to no tensor", path,
                data_size - pos);
        goto out;
    }
    for (int i = 0; i < f->n_tensors; i++) {
        struct as_st_tensor *t = &f->tensors[i];
        t->offset += 8 + hlen;
        t->data = (const uint8_t *)f->map + t->offset;
    }
    f->by_name = as_xmalloc(sizeof *f->by_name * (size_t)(f->n_tensors ? f->n_tensors : 1));
    for (int i = 0; i < f->n_tensors; i++)
        f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_tensor_ptr_name);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* Validate a whole file image f->map[0, size): the 8-byte length, the header bounds and the header
 * itself. Shared by the file reader (a mapping) and as_st_open_mem (a caller's buffer). */
static int validate_image(struct as_st_file *f, uint64_t size) {
    const char *path = f->path;
    if (size < 8)
        return as_fail("%s: truncated: %" PRIu64 " bytes, too short for the 8-byte header length",
                       path, size);
    uint64_t hlen = load_le64(f->map);
    if (hlen > AS_ST_MAX_HEADER)
        return as_fail("%s: header length %" PRIu64 " exceeds the 100 MB limit", path, hlen);
    if (hlen > size - 8)
        return as_fail("%s: header length %" PRIu64 " larger than the file allows (file is %" PRIu64
                       " bytes; truncated?)",
                       path, hlen, size);
    f->header_len = hlen;
    return parse_header(f, (const char *)f->map + 8, hlen, size - 8 - hlen);
}

struct as_st_file *as_st_open(const char *path) {
    struct as_st_file *f = as_xcalloc(1, sizeof *f);
    f->path = as_xstrdup(path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        as_fail("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        as_fail("%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        as_fail("%s: truncated: %" PRIu64 " bytes, too short for the 8-byte header length", path,
                size);
        goto fail;
    }
    f->map = mmap(NULL, size, PROT_READ, MAP_SHARED, f->fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        as_fail("%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    f->map_size = size;
    if (validate_image(f, size)) goto fail;
    return f;
fail:
    as_st_close(f);
    return NULL;
}

struct as_st_file *as_st_open_mem(const void *buf, uint64_t size, const char *name) {
    struct as_st_file *f = as_xcalloc(1, sizeof *f);
    f->path = as_xstrdup(name ? name : "(memory)");
    f->fd = -1; /* marks a borrowed buffer: as_st_close does not unmap it */
    f->map = (void *)buf;
    f->map_size = size;
    if (!buf && size) {
        as_fail("%s: no buffer", f->path);
        f->map = NULL;
        goto fail;
    }
    if (validate_image(f, size)) goto fail;
    return f;
fail:
    f->map = NULL;
    as_st_close(f);
    return NULL;
}

void as_st_close(struct as_st_file *f) {
    if (!f) return;
    if (f->map && f->fd >= 0) munmap(f->map, f->map_size); /* fd < 0: as_st_open_mem's buffer */
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    free(f->metadata_json);
    free(f->path);
    free(f);
}

static int find_in_sorted(const struct as_st_tensor *const *v, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(v[mid]->name, name);
        if (c == 0) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

const struct as_st_tensor *as_st_find(const struct as_st_file *f, const char *name) {
    int i = find_in_sorted((const struct as_st_tensor *const *)f->by_name, f->n_tensors, name);
    return i < 0 ? NULL : f->by_name[i];
}

/* ---- checkpoints ---- */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = as_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return as_xstrdup(".");
    if (slash == path) return as_xstrdup("/");
    char *d = as_xstrdup(path);
    d[slash - path] = 0;
    return d;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void ckpt_add_file(struct as_ckpt *c, struct as_st_file *f) {
    c->files = as_xrealloc(c->files, sizeof *c->files * (size_t)(c->n_files + 1));
    c->files[c->n_files++] = f;
}

struct named_tensor {
    const struct as_st_tensor *t;
    const char *file;
};

static int cmp_named(const void *a, const void *b) {
    const struct named_tensor *x = a, *y = b;
    return strcmp(x->t->name, y->t->name);
}

/* All tensors of all files, sorted by name; a name present in two shards is an error. */
static int ckpt_index_tensors(struct as_ckpt *c, const char *what) {
    int n = 0;
    for (int i = 0; i < c->n_files; i++)
        n += c->files[i]->n_tensors;
    struct named_tensor *all = as_xmalloc(sizeof *all * (size_t)(n ? n : 1));
    int k = 0;
    for (int i = 0; i < c->n_files; i++)
        for (int j = 0; j < c->files[i]->n_tensors; j++)
            all[k].t = &c->files[i]->tensors[j], all[k].file = c->files[i]->path, k++;
    qsort(all, (size_t)n, sizeof *all, cmp_named);
    for (int i = 1; i < n; i++)
        if (strcmp(all[i - 1].t->name, all[i].t->name) == 0) {
            as_fail("%s: tensor %s: present in two shards, %s and %s", what, all[i].t->name,
                    all[i - 1].file, all[i].file);
            free(all);
            return -1;
        }
    c->tensors = as_xmalloc(sizeof *c->tensors * (size_t)(n ? n : 1));
    c->tensor_file = as_xmalloc(sizeof *c->tensor_file * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++)
        c->tensors[i] = all[i].t, c->tensor_file[i] = all[i].file;
    c->n_tensors = n;
    free(all);
    return 0;
}

static int find_tensor_index(const struct as_ckpt *c, const char *name) {
    return find_in_sorted(c->tensors, c->n_tensors, name);
}

/* Shards listed in model.safetensors.index.json's weight_map; every listed tensor must be in its
 * shard, and every tensor of every shard must be listed (where it is). */
static int ckpt_open_index(struct as_ckpt *c, const char *index_path) {
    json_error_t err;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        if (!file_exists(index_path))
            return as_fail("%s: cannot open: %s", index_path, strerror(errno));
        return as_fail("%s: invalid JSON: %s at line %d", index_path, err.text, err.line);
    }
    int rc = -1;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        as_fail("%s: missing or non-object \"weight_map\"", index_path);
        goto out;
    }
    const char *name;
    json_t *v;
    /* Open each distinct shard once, in order of first mention. */
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) {
            as_fail("%s: tensor %s: weight_map value is not a string", index_path, name);
            goto out;
        }
        const char *shard = json_string_value(v);
        if (shard[0] == '/' || strstr(shard, "..") || !shard[0]) {
            as_fail(
                "%s: tensor %s: shard name \"%s\" is not a file inside the checkpoint directory",
                index_path, name, shard);
            goto out;
        }
        char *p = path_join(c->dir, shard);
        int have = 0;
        for (int i = 0; i < c->n_files && !have; i++)
            have = strcmp(c->files[i]->path, p) == 0;
        if (!have) {
            struct as_st_file *f = as_st_open(p);
            if (!f) {
                free(p);
                as_fail_prefix("%s: tensor %s: shard %s: ", index_path, name, shard);
                goto out;
            }
            ckpt_add_file(c, f);
        }
        free(p);
    }
    if (ckpt_index_tensors(c, index_path)) goto out;
    json_object_foreach(wm, name, v) {
        char *p = path_join(c->dir, json_string_value(v));
        int i = find_tensor_index(c, name);
        if (i < 0 || strcmp(c->tensor_file[i], p) != 0) {
            as_fail("%s: tensor %s: not found in shard %s", index_path, name, p);
            free(p);
            goto out;
        }
        free(p);
    }
    if ((size_t)c->n_tensors != json_object_size(wm)) {
        for (int i = 0; i < c->n_tensors; i++)
            if (!json_object_get(wm, c->tensors[i]->name)) {
                as_fail("%s: tensor %s: in shard %s but not listed in weight_map", index_path,
                        c->tensors[i]->name, c->tensor_file[i]);
                goto out;
            }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

struct as_ckpt *as_ckpt_open(const char *path) {
    struct as_ckpt *c = as_xcalloc(1, sizeof *c);
    struct stat st;
    char *index = NULL, *single = NULL;
    int rc = -1;
    if (stat(path, &st) != 0) {
        as_fail("%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        c->dir = as_xstrdup(path);
        index = path_join(path, "model.safetensors.index.json");
        single = path_join(path, "model.safetensors");
        if (!file_exists(index)) free(index), index = NULL;
        if (!index && !file_exists(single)) {
            as_fail("%s: no model.safetensors or model.safetensors.index.json in the directory",
                    path);
            goto done;
        }
    } else {
        c->dir = dir_of(path);
        if (ends_with(path, ".index.json"))
            index = as_xstrdup(path);
        else
            single = as_xstrdup(path);
    }
    if (index) {
        rc = ckpt_open_index(c, index);
    } else {
        struct as_st_file *f = as_st_open(single);
        if (f) {
            ckpt_add_file(c, f);
            rc = ckpt_index_tensors(c, single);
        }
    }
done:
    free(index), free(single);
    if (rc) {
        as_ckpt_close(c);
        return NULL;
    }
    /* A checkpoint this process opened itself may be referred to by the streams it reads. */
    if (as_ref_root_add(c->dir)) as_clear_error();
    return c;
}

void as_ckpt_close(struct as_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n_files; i++)
        as_st_close(c->files[i]);
    free(c->files);
    free(c->tensors);
    free(c->tensor_file);
    free(c->dir);
    free(c);
}

const struct as_st_tensor *as_ckpt_find(const struct as_ckpt *c, const char *name) {
    int i = find_tensor_index(c, name);
    return i < 0 ? NULL : c->tensors[i];
}

const char *as_ckpt_file_of(const struct as_ckpt *c, const struct as_st_tensor *t) {
    int i = t ? find_tensor_index(c, t->name) : -1;
    return i >= 0 && c->tensors[i] == t ? c->tensor_file[i] : c->dir;
}

const struct as_st_tensor *as_ckpt_expect(const struct as_ckpt *c, const char *name, int ndim,
                                          const int64_t *shape) {
    int i = find_tensor_index(c, name);
    if (i < 0) {
        as_fail("%s: tensor %s: not found in the checkpoint", c->dir, name);
        return NULL;
    }
    const struct as_st_tensor *t = c->tensors[i];
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char a[256], b[256];
        as_fail("%s: tensor %s: shape %s, expected %s", c->tensor_file[i], name,
                shape_str(a, sizeof a, t->ndim, t->shape), shape_str(b, sizeof b, ndim, shape));
        return NULL;
    }
    return t;
}

int as_ckpt_read_f32(const struct as_ckpt *c, const struct as_st_tensor *t, float *dst) {
    if (as_convert_to_f32(t->dtype, t->data, dst, (size_t)t->numel))
        return as_fail_prefix("%s: tensor %s: ", as_ckpt_file_of(c, t), t->name);
    return 0;
}

/* ---- writer ---- */

/* Plain mode: entries hold the caller's pointers (or copies) until finish writes the one file.
 * Sharded mode: entries describe the current shard; their data is either buffered (owned copies,
 * up to buf_limit bytes) or already written to the shard file ("spilled"), whose header space was
 * reserved: the JSON header is written last, padded with spaces to the reserved size (the format
 * allows trailing spaces in the header). xxh records what was written, for the read-back. */
struct st_entry {
    char *name;
    enum as_dtype dtype;
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    const void *data;
    void *owned; /* copy made by as_st_writer_add_copy (or buffered by a sharded writer) */
    uint64_t nbytes;
    uint64_t xxh; /* sharded: XXH3-64 of the data */
};

struct as_st_writer {
    char *path; /* plain: the file; sharded: the directory */
    struct st_entry *e;
    int n, cap;
    json_t *meta;
    /* sharded mode */
    int sharded, verify;
    uint64_t max_shard, buf_limit;
    struct as_st_shard_report *rep;
    int fd;            /* current shard file once spilled, else -1 */
    uint64_t cur;      /* data bytes of the current shard */
    uint64_t buffered; /* of which held in memory */
    uint64_t reserve;  /* header bytes reserved in the spilled file */
    uint64_t hdr_len;  /* exact compact JSON header length of the current entries */
    int n_shards;      /* finished shards */
    char **names;      /* every tensor written, with its shard (1-based) */
    int *shard_of;
    int n_names, cap_names;
    uint32_t *set; /* open-addressing hash set of indices+1 into names */
    uint32_t set_cap;
    uint64_t total;
};

static struct as_st_writer *writer_alloc(const char *path) {
    struct as_st_writer *w = as_xcalloc(1, sizeof *w);
    w->path = as_xstrdup(path);
    w->meta = json_object();
    json_object_set_new(w->meta, "format", json_string("pt")); /* transformers requires "pt" */
    w->fd = -1;
    return w;
}

struct as_st_writer *as_st_writer_new(const char *path) {
    return writer_alloc(path);
}

static void shard_part_path(const struct as_st_writer *w, int shard, char *buf, size_t n) {
    snprintf(buf, n, "%s/model.safetensors.%05d.part", w->path, shard); /* renamed by finish */
}

struct as_st_writer *as_st_writer_new_sharded(const char *dir, const struct as_st_shard_opts *o) {
    struct as_st_writer *w = writer_alloc(dir);
    w->sharded = 1;
    w->max_shard = o && o->max_shard_bytes ? o->max_shard_bytes : AS_ST_DEFAULT_SHARD;
    w->buf_limit = o ? o->buffer_bytes : AS_ST_DEFAULT_BUFFER;
    w->verify = o ? o->verify : 1;
    w->rep = o ? o->report : NULL;
    return w;
}

/* ---- sharded writer internals ---- */

static uint32_t name_hash(const char *s) {
    return (uint32_t)XXH3_64bits(s, strlen(s));
}

/* 1 if the name was already written by this writer, else records it (shard filled in later). */
static int names_add(struct as_st_writer *w, const char *name) {
    if ((uint64_t)(w->n_names + 1) * 2 > w->set_cap) { /* grow and rehash */
        uint32_t cap = w->set_cap ? 2 * w->set_cap : 1024;
        uint32_t *set = as_xcalloc(cap, sizeof *set);
        for (int i = 0; i < w->n_names; i++) {
            uint32_t h = name_hash(w->names[i]) & (cap - 1);
            while (set[h])
                h = (h + 1) & (cap - 1);
            set[h] = (uint32_t)i + 1;
        }
        free(w->set);
        w->set = set, w->set_cap = cap;
    }
    uint32_t h = name_hash(name) & (w->set_cap - 1);
    for (; w->set[h]; h = (h + 1) & (w->set_cap - 1))
        if (!strcmp(w->names[w->set[h] - 1], name)) return 1;
    if (w->n_names == w->cap_names) {
        w->cap_names = w->cap_names ? 2 * w->cap_names : 256;
        w->names = as_xrealloc(w->names, sizeof *w->names * (size_t)w->cap_names);
        w->shard_of = as_xrealloc(w->shard_of, sizeof *w->shard_of * (size_t)w->cap_names);
    }
    w->names[w->n_names] = as_xstrdup(name);
    w->shard_of[w->n_names] = w->n_shards + 1;
    w->set[h] = (uint32_t)++w->n_names;
    return 0;
}

static json_t *entry_json(const struct st_entry *e, uint64_t off) {
    json_t *shape = json_array(), *t = json_object();
    for (int d = 0; d < e->ndim; d++)
        json_array_append_new(shape, json_integer(e->shape[d]));
    json_object_set_new(t, "dtype", json_string(as_dtype_name(e->dtype)));
    json_object_set_new(t, "shape", shape);
    json_object_set_new(t, "data_offsets",
                        json_pack("[II]", (json_int_t)off, (json_int_t)(off + e->nbytes)));
    return t;
}

/* Length of ,"name":{...} in the compact header (0 if the name cannot be encoded). */
static uint64_t entry_json_len(const struct st_entry *e, uint64_t off) {
    json_t *o = json_object();
    json_object_set_new(o, e->name, entry_json(e, off));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    uint64_t n = s ? strlen(s) - 2 + 1 : 0;
    free(s);
    return n;
}

static int write_all(int fd, const void *buf, uint64_t n);

/* Spill the buffered shard: create its file, reserve the header, write the buffered data. */
static int shard_spill(struct as_st_writer *w) {
    char path[4200];
    shard_part_path(w, w->n_shards + 1, path, sizeof path);
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) return as_fail("%s: cannot create: %s", path, strerror(errno));
    /* Room for this shard's header: generous (a large shard has few tensors), and at least twice
     * what the tensors so far need; a shard whose header would outgrow it is closed early. */
    uint64_t r = w->max_shard / 1024;
    if (r < 65536) r = 65536;
    if (r > 4u << 20) r = 4u << 20;
    if (r < 2 * w->hdr_len + 4096) r = 2 * w->hdr_len + 4096;
    w->reserve = (r + 7) & ~(uint64_t)7;
    uint8_t zero[4096] = {0};
    int bad = 0;
    for (uint64_t k = 0; k < 8 + w->reserve && !bad; k += sizeof zero) {
        uint64_t m = 8 + w->reserve - k;
        bad = write_all(w->fd, zero, m < sizeof zero ? m : sizeof zero);
    }
    for (int i = 0; i < w->n && !bad; i++) {
        bad = write_all(w->fd, w->e[i].data, w->e[i].nbytes);
        free(w->e[i].owned);
        w->e[i].owned = NULL, w->e[i].data = NULL;
    }
    if (bad) return as_fail("%s: write failed: %s", path, strerror(errno));
    w->buffered = 0;
    return 0;
}

static char *build_header(struct as_st_writer *w, uint64_t *len);

/* Read the shard back: the strict reader parses its header, and every tensor must have the
 * dtype, shape and data (XXH3-64, read with pread: no mapping stays resident) written. */
static int shard_verify(struct as_st_writer *w, const char *path) {
    struct as_st_file *f = as_st_open(path);
    if (!f) return as_fail_prefix("verify: ");
    int rc = -1;
    uint64_t cap = 8u << 20;
    uint8_t *buf = as_xmalloc(cap);
    if (f->n_tensors != w->n) {
        as_fail("%s: verify: %d tensors read back, %d written", path, f->n_tensors, w->n);
        goto out;
    }
    for (int i = 0; i < w->n; i++) {
        const struct st_entry *e = &w->e[i];
        const struct as_st_tensor *t = as_st_find(f, e->name);
        int same = t && t->dtype == e->dtype && t->ndim == e->ndim && t->nbytes == e->nbytes;
        for (int d = 0; same && d < e->ndim; d++)
            same = t->shape[d] == e->shape[d];
        if (!same) {
            as_fail("%s: tensor %s: verify: %s", path, e->name,
                    t ? "dtype or shape read back differ from what was written" : "missing");
            goto out;
        }
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        for (uint64_t k = 0; k < t->nbytes;) {
            uint64_t m = t->nbytes - k < cap ? t->nbytes - k : cap;
            ssize_t got = pread(f->fd, buf, (size_t)m, (off_t)(t->offset + k));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                as_fail("%s: tensor %s: verify: read failed: %s", path, e->name,
                        got ? strerror(errno) : "end of file");
                goto out;
            }
            XXH3_64bits_update(&st, buf, (size_t)got);
            k += (uint64_t)got;
        }
        if (XXH3_64bits_digest(&st) != e->xxh) {
            as_fail("%s: tensor %s: verify: data read back differ from what was written", path,
                    e->name);
            goto out;
        }
    }
    rc = 0;
out:
    free(buf);
    as_st_close(f);
    return rc;
}

static void entries_clear(struct as_st_writer *w) {
    for (int i = 0; i < w->n; i++)
        free(w->e[i].name), free(w->e[i].owned);
    w->n = 0;
}

/* Finish the current shard: write its header (and, if still buffered, its data), verify. */
static int shard_close(struct as_st_writer *w) {
    char path[4200];
    shard_part_path(w, w->n_shards + 1, path, sizeof path);
    uint64_t hlen;
    char *hdr = build_header(w, &hlen);
    if (!hdr) return as_fail("%s: cannot build the header (tensor name not valid UTF-8?)", path);
    int bad = 0;
    if (w->fd < 0) { /* buffered: the exact header, then the data */
        w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (w->fd < 0) {
            free(hdr);
            return as_fail("%s: cannot create: %s", path, strerror(errno));
        }
        uint8_t lenbuf[8];
        for (int i = 0; i < 8; i++)
            lenbuf[i] = (uint8_t)(hlen >> (8 * i));
        bad = write_all(w->fd, lenbuf, 8) || write_all(w->fd, hdr, hlen);
        for (int i = 0; i < w->n && !bad; i++)
            bad = write_all(w->fd, w->e[i].data, w->e[i].nbytes);
    } else { /* spilled: the header into the reserved space, padded with spaces */
        if (hlen > w->reserve) { /* cannot happen: adds close the shard before */
            free(hdr);
            return as_fail("%s: header of %" PRIu64 " bytes outgrew its %" PRIu64 " reserved", path,
                           hlen, w->reserve);
        }
        char *h = as_xmalloc(8 + w->reserve);
        for (int i = 0; i < 8; i++)
            h[i] = (char)(uint8_t)(w->reserve >> (8 * i));
        memcpy(h + 8, hdr, hlen);
        memset(h + 8 + hlen, ' ', w->reserve - hlen);
        bad = lseek(w->fd, 0, SEEK_SET) != 0 || write_all(w->fd, h, 8 + w->reserve);
        free(h);
    }
    free(hdr);
    if (bad) as_fail("%s: write failed: %s", path, strerror(errno));
    if (close(w->fd) && !bad) bad = as_fail("%s: write failed: %s", path, strerror(errno));
    w->fd = -1;
    if (bad) return -1;
    if (w->verify && shard_verify(w, path)) return -1;
    w->n_shards++;
    w->total += w->cur;
    entries_clear(w);
    w->cur = w->buffered = w->reserve = w->hdr_len = 0;
    return 0;
}

/* Write (or buffer) one tensor into the current shard; mapped: data is a read-only file
 * mapping whose pages are dropped once written, so copying a tensor never grows the RSS. */
static int sharded_add(struct as_st_writer *w, struct st_entry *e, int mapped) {
    if (names_add(w, e->name)) return as_fail("%s: tensor %s: added twice", w->path, e->name);
    int idx = w->n_names - 1;
    /* HF semantics: a shard takes tensors until the next would exceed max_shard; a tensor larger
     * than max_shard gets a shard of its own. */
    if (w->n && w->cur + e->nbytes > w->max_shard && shard_close(w)) return -1;
    uint64_t elen = entry_json_len(e, w->cur);
    if (!elen) return as_fail("%s: tensor %s: name is not valid UTF-8", w->path, e->name);
    if (w->fd >= 0 && w->hdr_len + elen > w->reserve) { /* header space used up: next shard */
        if (shard_close(w)) return -1;
        elen = entry_json_len(e, 0);
    }
    if (!w->n) { /* a new shard: its header starts with the metadata */
        json_t *o = json_object();
        json_object_set(o, "__metadata__", w->meta);
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        w->hdr_len = s ? strlen(s) : 2;
        free(s);
    }
    w->hdr_len += elen;
    if (w->fd < 0 && w->buffered + e->nbytes > w->buf_limit && shard_spill(w)) return -1;
    w->shard_of[idx] = w->n_shards + 1;
    const uint8_t *src = e->data;
    uint8_t *copy = w->fd < 0 && e->nbytes ? as_xmalloc((size_t)e->nbytes) : NULL;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    const uint64_t chunk = 64u << 20;
    long page = sysconf(_SC_PAGESIZE);
    for (uint64_t k = 0; k < e->nbytes; k += chunk) {
        uint64_t m = e->nbytes - k < chunk ? e->nbytes - k : chunk;
        XXH3_64bits_update(&st, src + k, (size_t)m);
        if (copy)
            memcpy(copy + k, src + k, (size_t)m);
        else if (write_all(w->fd, src + k, m)) {
            free(copy);
            return as_fail("%s: tensor %s: write failed: %s", w->path, e->name, strerror(errno));
        }
        if (mapped) { /* whole pages inside [k, k+m) */
            uintptr_t a = ((uintptr_t)(src + k) + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
            uintptr_t b = (uintptr_t)(src + k + m) & ~((uintptr_t)page - 1);
            if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
        }
    }
    e->xxh = XXH3_64bits_digest(&st);
    e->owned = copy;
    e->data = copy;
    if (copy) w->buffered += e->nbytes;
    w->cur += e->nbytes;
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->e = as_xrealloc(w->e, sizeof *w->e * (size_t)w->cap);
    }
    w->e[w->n++] = *e;
    return 0;
}

static int writer_add(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                      const int64_t *shape, const void *data, uint64_t nbytes, int copy) {
    if (!name || !name[0] || strcmp(name, "__metadata__") == 0)
        return as_fail("%s: tensor \"%s\": invalid tensor name", w->path, name ? name : "");
    if ((int)dtype <= 0 || (int)dtype >= AS_DTYPE_COUNT)
        return as_fail("%s: tensor %s: invalid dtype %d", w->path, name, (int)dtype);
    if (ndim < 0 || ndim > AS_MAX_DIMS)
        return as_fail("%s: tensor %s: %d dimensions, at most %d supported", w->path, name, ndim,
                       AS_MAX_DIMS);
    uint64_t numel, need;
    if (tensor_size(dtype, ndim, shape, &numel, &need))
        return as_fail_prefix("%s: tensor %s: ", w->path, name);
    if (need != nbytes) {
        char sb[256];
        return as_fail("%s: tensor %s: %" PRIu64 " bytes given but shape %s of %s needs %" PRIu64,
                       w->path, name, nbytes, shape_str(sb, sizeof sb, ndim, shape),
                       as_dtype_name(dtype), need);
    }
    if (nbytes && !data) return as_fail("%s: tensor %s: no data", w->path, name);
    struct st_entry ne = {.dtype = dtype, .ndim = ndim, .nbytes = nbytes, .data = data};
    if (ndim) memcpy(ne.shape, shape, sizeof *shape * (size_t)ndim);
    if (w->sharded) {
        ne.name = as_xstrdup(name);
        if (sharded_add(w, &ne, copy == 2) == 0) return 0;
        free(ne.name);
        return -1;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->e = as_xrealloc(w->e, sizeof *w->e * (size_t)w->cap);
    }
    ne.name = as_xstrdup(name);
    if (copy && nbytes) {
        ne.owned = as_xmalloc((size_t)nbytes);
        memcpy(ne.owned, data, (size_t)nbytes);
        ne.data = ne.owned;
    }
    w->e[w->n++] = ne;
    return 0;
}

int as_st_writer_add(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                     const int64_t *shape, const void *data, uint64_t nbytes) {
    return writer_add(w, name, dtype, ndim, shape, data, nbytes, 0);
}

int as_st_writer_add_copy(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                          const int64_t *shape, const void *data, uint64_t nbytes) {
    return writer_add(w, name, dtype, ndim, shape, data, nbytes, 1);
}

int as_st_writer_add_mapped(struct as_st_writer *w, const char *name, enum as_dtype dtype, int ndim,
                            const int64_t *shape, const void *data, uint64_t nbytes) {
    return writer_add(w, name, dtype, ndim, shape, data, nbytes, w->sharded ? 2 : 0);
}

int as_st_writer_add_all(struct as_st_writer *dst, struct as_st_writer *src) {
    int rc = 0;
    for (int i = 0; i < src->n && !rc; i++) {
        struct st_entry *e = &src->e[i];
        if (!dst->sharded && e->owned) { /* hand the copy over */
            rc = writer_add(dst, e->name, e->dtype, e->ndim, e->shape, e->data, e->nbytes, 0);
            if (!rc) dst->e[dst->n - 1].owned = e->owned, e->owned = NULL;
        } else {
            rc = writer_add(dst, e->name, e->dtype, e->ndim, e->shape, e->data, e->nbytes, 0);
        }
    }
    entries_clear(src);
    return rc;
}

struct as_ckpt *as_st_writer_view(const struct as_st_writer *w) {
    if (w->sharded) {
        as_fail("%s: a sharded writer has no view (its tensors are on disk)", w->path);
        return NULL;
    }
    struct as_st_file *f = as_xcalloc(1, sizeof *f);
    f->path = as_xstrdup(w->path);
    f->fd = -1; /* no mapping of ours: as_st_close only frees */
    f->tensors = as_xcalloc((size_t)(w->n ? w->n : 1), sizeof *f->tensors);
    f->by_name = as_xmalloc(sizeof *f->by_name * (size_t)(w->n ? w->n : 1));
    for (int i = 0; i < w->n; i++) {
        struct as_st_tensor *t = &f->tensors[i];
        const struct st_entry *e = &w->e[i];
        t->name = as_xstrdup(e->name);
        t->dtype = e->dtype, t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        tensor_size(e->dtype, e->ndim, e->shape, &t->numel, &t->nbytes);
        t->data = e->data;
        f->by_name[i] = t;
    }
    f->n_tensors = w->n;
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_tensor_ptr_name);
    struct as_ckpt *c = as_xcalloc(1, sizeof *c);
    c->dir = as_xstrdup(w->path);
    ckpt_add_file(c, f);
    if (ckpt_index_tensors(c, w->path)) {
        as_ckpt_close(c);
        return NULL;
    }
    return c;
}

int as_st_writer_set_metadata(struct as_st_writer *w, const char *key, const char *value) {
    json_t *s = value ? json_string(value) : NULL;
    if (!key || !s || json_object_set_new(w->meta, key, s) != 0)
        return as_fail("%s: __metadata__ key \"%s\": key or value is not valid UTF-8", w->path,
                       key ? key : "");
    return 0;
}

void as_st_writer_abort(struct as_st_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->sharded) { /* remove the shards written so far (the staged directory goes anyway) */
        char p[4200];
        for (int s = 1; s <= w->n_shards + 1; s++) {
            shard_part_path(w, s, p, sizeof p);
            unlink(p);
        }
    }
    entries_clear(w);
    free(w->e);
    for (int i = 0; i < w->n_names; i++)
        free(w->names[i]);
    free(w->names);
    free(w->shard_of);
    free(w->set);
    json_decref(w->meta);
    free(w->path);
    free(w);
}

/* write(2) in bounded chunks: a single call may write at most about 2 GB on Linux. */
static int write_all(int fd, const void *buf, uint64_t n) {
    const uint8_t *p = buf;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;
            return -1;
        }
        p += k, n -= (uint64_t)k;
    }
    return 0;
}

static int cmp_entry_ptr_name(const void *a, const void *b) {
    const struct st_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Header JSON: __metadata__ first, then the tensors in add order = data order, padded with
 * spaces so the data buffer starts at a multiple of 8. */
static char *build_header(struct as_st_writer *w, uint64_t *len) {
    json_t *root = json_object();
    json_object_set(root, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        json_object_set_new(root, w->e[i].name, entry_json(&w->e[i], off));
        off += w->e[i].nbytes;
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) return NULL;
    size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
    char *h = as_xmalloc(padded);
    memcpy(h, s, n);
    memset(h + n, ' ', padded - n);
    free(s);
    *len = padded;
    return h;
}

/* Sharded finish: the last shard, then the final names (one shard: model.safetensors as an
 * unsharded checkpoint; else model-0000i-of-0000n.safetensors and the index). */
static int sharded_finish(struct as_st_writer *w) {
    if ((w->n || !w->n_shards) && shard_close(w)) return -1;
    char from[4200], to[4200];
    int n = w->n_shards;
    for (int s = 1; s <= n; s++) {
        shard_part_path(w, s, from, sizeof from);
        if (n == 1)
            snprintf(to, sizeof to, "%s/model.safetensors", w->path);
        else
            snprintf(to, sizeof to, "%s/model-%05d-of-%05d.safetensors", w->path, s, n);
        if (rename(from, to))
            return as_fail("%s: cannot rename to %s: %s", from, to, strerror(errno));
    }
    if (w->rep) {
        w->rep->n_shards = n;
        w->rep->n_tensors = w->n_names;
        w->rep->total_bytes = w->total;
    }
    if (n == 1) return 0;
    /* model.safetensors.index.json as transformers writes it: metadata.total_size (the tensor
     * data bytes) and weight_map (tensor -> shard file). */
    json_t *wm = json_object();
    for (int i = 0; i < w->n_names; i++) {
        snprintf(to, sizeof to, "model-%05d-of-%05d.safetensors", w->shard_of[i], n);
        json_object_set_new(wm, w->names[i], json_string(to));
    }
    json_t *idx = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)w->total,
                            "weight_map", wm);
    snprintf(to, sizeof to, "%s/model.safetensors.index.json", w->path);
    int rc = json_dump_file(idx, to, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(idx);
    return rc ? as_fail("%s: cannot write", to) : 0;
}

int as_st_writer_finish(struct as_st_writer *w) {
    if (w->sharded) {
        int rc = sharded_finish(w);
        if (rc) { /* leave no shard behind */
            as_st_writer_abort(w);
            return -1;
        }
        w->sharded = 0; /* the renamed files stay: abort only frees */
        as_st_writer_abort(w);
        return 0;
    }
    int rc = -1;
    char *hdr = NULL;
    struct as_atomic_file af = {0};
    /* Tensor names must be unique (JSON object keys). */
    struct st_entry **byname = as_xmalloc(sizeof *byname * (size_t)(w->n ? w->n : 1));
    for (int i = 0; i < w->n; i++)
        byname[i] = &w->e[i];
    qsort(byname, (size_t)w->n, sizeof *byname, cmp_entry_ptr_name);
    for (int i = 1; i < w->n; i++)
        if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
            as_fail("%s: tensor %s: added twice", w->path, byname[i]->name);
            goto out;
        }
    uint64_t hlen;
    hdr = build_header(w, &hlen);
    if (!hdr) {
        as_fail("%s: cannot build the header (tensor name not valid UTF-8?)", w->path);
        goto out;
    }
    if (hlen > AS_ST_MAX_HEADER) {
        as_fail("%s: header of %" PRIu64 " bytes exceeds the 100 MB limit", w->path, hlen);
        goto out;
    }
    if (as_atomic_open(&af, w->path)) goto out;
    int fd = fileno(af.fp);
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)(hlen >> (8 * i));
    int werr = write_all(fd, lenbuf, 8) || write_all(fd, hdr, hlen);
    for (int i = 0; i < w->n && !werr; i++)
        werr = write_all(fd, w->e[i].data, w->e[i].nbytes);
    if (werr) {
        as_fail("%s: write failed: %s", w->path, strerror(errno));
        as_atomic_abort(&af);
        goto out;
    }
    rc = as_atomic_commit(&af);
out:
    free(byname);
    free(hdr);
    as_st_writer_abort(w);
    return rc;
}

/* "5GB", "2GiB", "500MB", "1e9", "123": bytes, as transformers' max_shard_size reads them
 * (KB/MB/GB/TB powers of 1000, KiB/MiB/GiB/TiB powers of 1024; case-insensitive). */
int as_st_parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || end == s || errno || !(v > 0))
        return as_fail("size '%s': expected e.g. 5GB, 2GiB, 500MB or a byte count", s ? s : "");
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"kb", 1e3},
                 {"mb", 1e6},
                 {"gb", 1e9},
                 {"tb", 1e12},
                 {"kib", 1024.0},
                 {"mib", 1048576.0},
                 {"gib", 1073741824.0},
                 {"tib", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcasecmp(end, units[i].unit)) {
            double b = v * units[i].mult;
            if (b < 1 || b > 1e18) break;
            *out = (uint64_t)b;
            return 0;
        }
    return as_fail("size '%s': expected e.g. 5GB, 2GiB, 500MB or a byte count", s);
}
