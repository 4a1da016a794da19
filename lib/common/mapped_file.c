/* mapped_file: process-wide refcounted cache of read-only mappings (see mapped_file.h). */
#include "mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"

struct retired_map {
    void *map;
    size_t size;
    struct retired_map *next;
};

struct map_entry {
    struct as_mapped_file pub; /* first member: callers hold &entry->pub */
    char *path;
    dev_t dev;
    ino_t ino;
    int refs;
    struct retired_map *retired; /* older, smaller mappings of a file that grew */
    struct map_entry *next;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct map_entry *cache;

struct as_mapped_file *as_mapped_file_get(const char *path, uint64_t need) {
    /* O_NONBLOCK: opening a FIFO (a hostile reference can name one) must not block; it is then
     * refused as not a regular file. The flag means nothing for the regular files we map. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        as_fail("file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        as_fail("file %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        as_fail("file %s: not a regular file", path);
        close(fd);
        return NULL;
    }
    pthread_mutex_lock(&cache_lock);
    struct map_entry *e = cache;
    while (e && !(e->dev == st.st_dev && e->ino == st.st_ino && strcmp(e->path, path) == 0))
        e = e->next;
    if (!e) {
        e = as_xcalloc(1, sizeof *e);
        e->path = as_xstrdup(path);
        e->pub.path = e->path;
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        e->next = cache;
        cache = e;
    }
    uint64_t size = (uint64_t)st.st_size;
    e->pub.size = size;
    e->pub.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    /* Map the whole current file when the existing mapping does not cover the request: one mapping
     * serves every later reference into the same (immutable) file. */
    if (e->pub.map_size < need && e->pub.map_size < size) {
        void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            as_fail("file %s: mmap of %llu bytes failed: %s", path, (unsigned long long)size,
                    strerror(errno));
            if (e->refs == 0 && !e->pub.map) { /* fresh entry: drop it again */
                cache = e->next;
                free(e->path);
                free(e);
            }
            pthread_mutex_unlock(&cache_lock);
            close(fd);
            return NULL;
        }
        if (e->pub.map) {
            struct retired_map *r = as_xmalloc(sizeof *r);
            r->map = (void *)e->pub.map;
            r->size = e->pub.map_size;
            r->next = e->retired;
            e->retired = r;
        }
        e->pub.map = m;
        e->pub.map_size = size;
    }
    e->refs++;
    pthread_mutex_unlock(&cache_lock);
    close(fd);
    return &e->pub;
}

void as_mapped_file_put(struct as_mapped_file *m) {
    if (!m) return;
    struct map_entry *e = (struct map_entry *)m;
    pthread_mutex_lock(&cache_lock);
    if (--e->refs == 0) {
        struct map_entry **pp = &cache;
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
        if (e->pub.map) munmap((void *)e->pub.map, e->pub.map_size);
        while (e->retired) {
            struct retired_map *r = e->retired;
            e->retired = r->next;
            munmap(r->map, r->size);
            free(r);
        }
        free(e->path);
        free(e);
    }
    pthread_mutex_unlock(&cache_lock);
}
