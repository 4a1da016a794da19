/* logits_cache: base logits of an evaluation in a file (logits_cache.h). */
#include "logits_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "as_error.h"
#include "atomic_file.h"

#define HEADER_BYTES 64
static const char magic[8] = {'A', 'S', 'L', 'O', 'G', 'I', 'T', '1'};

struct as_logits_cache {
    struct as_logits_key k;
    uint64_t row_bytes, window_bytes;
    /* writing */
    struct as_atomic_file af;
    uint32_t written;
    /* reading */
    char *path;
    void *map;
    size_t map_size;
};

uint64_t as_logits_ids_hash(const int32_t *ids, uint64_t n) {
    return XXH3_64bits(ids, n * sizeof *ids);
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static struct as_logits_cache *cache_new(const struct as_logits_key *k) {
    struct as_logits_cache *c = as_xcalloc(1, sizeof *c);
    c->k = *k;
    c->row_bytes = (uint64_t)k->vocab * sizeof(float);
    c->window_bytes = (uint64_t)(k->ctx - 1 - k->first) * c->row_bytes;
    return c;
}

struct as_logits_cache *as_logits_cache_create(const char *path, const struct as_logits_key *k) {
    if (k->first + 1 >= k->ctx) {
        as_fail("file %s: no scored positions (ctx %u, first %u)", path, k->ctx, k->first);
        return NULL;
    }
    struct as_logits_cache *c = cache_new(k);
    if (as_atomic_open(&c->af, path)) {
        free(c);
        return NULL;
    }
    unsigned char h[HEADER_BYTES] = {0};
    memcpy(h, magic, 8);
    put_u32(h + 8, k->vocab), put_u32(h + 12, k->ctx), put_u32(h + 16, k->first);
    put_u32(h + 20, k->windows);
    put_u64(h + 24, k->ids_hash);
    put_u64(h + 32, c->window_bytes * k->windows);
    if (fwrite(h, 1, sizeof h, c->af.fp) != sizeof h) {
        as_fail("file %s: write failed: %s", path, strerror(errno));
        as_logits_cache_abort(c);
        return NULL;
    }
    return c;
}

int as_logits_cache_put(struct as_logits_cache *c, const float *rows) {
    if (c->written >= c->k.windows)
        return as_fail("file %s: more than %u windows", c->af.path, c->k.windows);
    if (fwrite(rows, 1, c->window_bytes, c->af.fp) != c->window_bytes)
        return as_fail("file %s: write failed: %s", c->af.path, strerror(errno));
    c->written++;
    return 0;
}

int as_logits_cache_commit(struct as_logits_cache *c) {
    int rc;
    if (c->written != c->k.windows) {
        rc = as_fail("file %s: %u of %u windows written", c->af.path, c->written, c->k.windows);
        as_atomic_abort(&c->af);
    } else {
        rc = as_atomic_commit(&c->af);
    }
    free(c);
    return rc;
}

void as_logits_cache_abort(struct as_logits_cache *c) {
    if (!c) return;
    as_atomic_abort(&c->af);
    free(c);
}

struct as_logits_cache *as_logits_cache_open(const char *path, const struct as_logits_key *k) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        as_fail("file %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    unsigned char h[HEADER_BYTES];
    if (fstat(fd, &st) || pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h || memcmp(h, magic, 8)) {
        close(fd);
        as_fail("file %s: not a base-logits file (as-eval --base-logits)", path);
        return NULL;
    }
    struct as_logits_key f = {get_u32(h + 8), get_u32(h + 12), get_u32(h + 16), get_u32(h + 20),
                              get_u64(h + 24)};
    const char *why = f.vocab != k->vocab         ? "vocabulary size"
                      : f.ctx != k->ctx           ? "--ctx"
                      : f.first != k->first       ? "--score"
                      : f.windows != k->windows   ? "number of windows"
                      : f.ids_hash != k->ids_hash ? "text (token ids)"
                                                  : NULL;
    if (why) {
        close(fd);
        as_fail("file %s: base logits were computed for another %s (vocab %u, ctx %u, first %u, "
                "%u windows)",
                path, why, f.vocab, f.ctx, f.first, f.windows);
        return NULL;
    }
    struct as_logits_cache *c = cache_new(&f);
    uint64_t need = HEADER_BYTES + c->window_bytes * f.windows;
    if (get_u64(h + 32) != c->window_bytes * f.windows || (uint64_t)st.st_size != need) {
        close(fd);
        free(c);
        as_fail("file %s: truncated or padded (%lld bytes, expected %llu)", path,
                (long long)st.st_size, (unsigned long long)need);
        return NULL;
    }
    c->map = mmap(NULL, need, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (c->map == MAP_FAILED) {
        free(c);
        as_fail("file %s: mmap failed: %s", path, strerror(errno));
        return NULL;
    }
    c->map_size = need;
    c->path = as_xstrdup(path);
    return c;
}

const float *as_logits_cache_window(const struct as_logits_cache *c, uint32_t w) {
    return (const float *)((const char *)c->map + HEADER_BYTES + c->window_bytes * w);
}

void as_logits_cache_close(struct as_logits_cache *c) {
    if (!c) return;
    if (c->map) munmap(c->map, c->map_size);
    free(c->path);
    free(c);
}
