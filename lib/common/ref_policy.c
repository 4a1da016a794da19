/* ref_policy: the allow-list for by-reference stream payloads (see ref_policy.h and
 * docs/security.md). Process-wide state behind one mutex: the roots (resolved once) and, for the
 * safetensors rule, the tensor extents of each file already checked, keyed by its identity
 * (device, inode, size, mtime) so that a replaced file is examined again. */
#include "ref_policy.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "safetensors.h"

struct ref_root {
    char *path; /* realpath, no trailing '/' except for "/" itself */
    size_t len;
    int scratch; /* shared directory: the file must belong to the effective user */
};

struct extent {
    uint64_t offset, nbytes;
};

/* Tensor data extents of one safetensors file (sorted by offset), or none when not one. */
struct st_extents {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int n; /* -1: not a valid safetensors file */
    struct extent *e;
};

static pthread_mutex_t policy_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ref_root *roots;
static int n_roots, roots_ready;
static char *roots_text;
static struct st_extents *st_cache;
static int n_st_cache;

/* A path is under a root when it equals it or continues it with '/'. */
static int is_under(const struct ref_root *r, const char *real) {
    if (r->len == 1 && r->path[0] == '/') return real[0] == '/';
    return strncmp(real, r->path, r->len) == 0 && (real[r->len] == '/' || real[r->len] == 0);
}

static void rebuild_text(void) {
    size_t n = 1;
    for (int i = 0; i < n_roots; i++)
        n += roots[i].len + 2;
    free(roots_text);
    roots_text = as_xmalloc(n);
    roots_text[0] = 0;
    for (int i = 0; i < n_roots; i++) {
        if (i) strcat(roots_text, ":");
        strcat(roots_text, roots[i].path);
    }
}

/* Resolve and append dir; 0 when added or already present, -1 (errno set) if unresolvable. */
static int add_root_locked(const char *dir, int scratch) {
    char *real = realpath(dir, NULL);
    if (!real) return -1;
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        free(real);
        errno = ENOTDIR;
        return -1;
    }
    for (int i = 0; i < n_roots; i++)
        if (strcmp(roots[i].path, real) == 0) {
            roots[i].scratch &= scratch; /* named explicitly: no ownership rule */
            free(real);
            return 0;
        }
    roots = as_xrealloc(roots, (size_t)(n_roots + 1) * sizeof *roots);
    roots[n_roots++] = (struct ref_root){real, strlen(real), scratch};
    rebuild_text();
    return 0;
}

/* AS_REF_ROOT first, then the scratch directories; entries that do not exist are skipped (a
 * root that does not exist holds nothing to refer to). */
static void init_locked(void) {
    if (roots_ready) return;
    roots_ready = 1;
    const char *env = getenv("AS_REF_ROOT");
    if (env) {
        char *copy = as_xstrdup(env), *save = NULL;
        for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save))
            (void)add_root_locked(p, 0);
        free(copy);
    }
    const char *tmp = getenv("TMPDIR");
    if (tmp && tmp[0]) (void)add_root_locked(tmp, 1);
    (void)add_root_locked("/tmp", 1);
    (void)add_root_locked("/dev/shm", 1);
    if (!roots_text) rebuild_text();
}

int as_ref_root_add(const char *dir) {
    pthread_mutex_lock(&policy_mu);
    init_locked();
    int rc = add_root_locked(dir, 0);
    int e = errno;
    pthread_mutex_unlock(&policy_mu);
    if (rc) return as_fail("reference root %s: %s", dir, strerror(e));
    return 0;
}

const char *as_ref_roots(void) {
    pthread_mutex_lock(&policy_mu);
    init_locked();
    const char *s = roots_text;
    pthread_mutex_unlock(&policy_mu);
    return s;
}

static int cmp_extent(const void *a, const void *b) {
    const struct extent *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The safetensors rule: [offset, offset + nbytes) is exactly one tensor's data in `real`. */
static int is_st_tensor_locked(const char *real, const struct stat *st, uint64_t offset,
                               uint64_t nbytes) {
    struct st_extents *c = NULL;
    for (int i = 0; i < n_st_cache && !c; i++) {
        struct st_extents *x = &st_cache[i];
        if (x->dev == st->st_dev && x->ino == st->st_ino && x->size == st->st_size &&
            x->mtime.tv_sec == st->st_mtim.tv_sec && x->mtime.tv_nsec == st->st_mtim.tv_nsec &&
            strcmp(x->path, real) == 0)
            c = x;
    }
    if (!c) {
        st_cache = as_xrealloc(st_cache, (size_t)(n_st_cache + 1) * sizeof *st_cache);
        c = &st_cache[n_st_cache++];
        *c = (struct st_extents){as_xstrdup(real), st->st_dev, st->st_ino, st->st_size,
                                 st->st_mtim,      -1,         NULL};
        char saved[512];
        snprintf(saved, sizeof saved, "%s", as_last_error()); /* keep the caller's context */
        struct as_st_file *f = S_ISREG(st->st_mode) ? as_st_open(real) : NULL;
        if (f) {
            c->n = f->n_tensors;
            c->e = as_xmalloc(sizeof *c->e * (size_t)(f->n_tensors ? f->n_tensors : 1));
            for (int i = 0; i < f->n_tensors; i++)
                c->e[i] = (struct extent){f->tensors[i].offset, f->tensors[i].nbytes};
            qsort(c->e, (size_t)c->n, sizeof *c->e, cmp_extent);
            as_st_close(f);
        }
        as_clear_error();
        if (saved[0]) as_fail("%s", saved);
    }
    int lo = 0, hi = c->n - 1; /* binary search on offset; zero-byte tensors may share one */
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (c->e[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    for (int i = lo; i < c->n && c->e[i].offset == offset; i++)
        if (c->e[i].nbytes == nbytes) return 1;
    return 0;
}

int as_stream_ref_allowed(const char *file, uint64_t offset, uint64_t nbytes, char **resolved) {
    *resolved = NULL;
    if (!file || file[0] != '/') return as_fail("reference file must be an absolute path");
    char *real = realpath(file, NULL);
    if (!real) return as_fail("file %s: %s", file, strerror(errno));
    struct stat st;
    if (stat(real, &st) != 0) {
        int e = errno;
        free(real);
        return as_fail("file %s: %s", file, strerror(e));
    }
    pthread_mutex_lock(&policy_mu);
    init_locked();
    int ok = 0, bad_owner = -1;
    for (int i = 0; i < n_roots && !ok; i++) {
        if (!is_under(&roots[i], real)) continue;
        if (roots[i].scratch && st.st_uid != geteuid())
            bad_owner = i;
        else
            ok = 1;
    }
    const char *strict = getenv("AS_REF_STRICT");
    if (!ok && !(strict && strcmp(strict, "1") == 0))
        ok = is_st_tensor_locked(real, &st, offset, nbytes);
    if (!ok) {
        if (bad_owner >= 0)
            as_fail("reference to %s: the file is in the shared directory %s and belongs to uid "
                    "%u, not to this user",
                    file, roots[bad_owner].path, (unsigned)st.st_uid);
        else
            as_fail("reference to %s%s%s%s is outside the allowed roots (%s; set AS_REF_ROOT or "
                    "--ref-root to allow more)",
                    file, strcmp(file, real) ? " (resolves to " : "",
                    strcmp(file, real) ? real : "", strcmp(file, real) ? ")" : "",
                    roots_text[0] ? roots_text : "none");
    }
    pthread_mutex_unlock(&policy_mu);
    if (!ok) {
        free(real);
        return -1;
    }
    *resolved = real;
    return 0;
}
