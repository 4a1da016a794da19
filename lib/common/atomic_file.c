/* atomic_file: crash-safe replacement of a file or a whole directory.
 *
 * The new content is written under a temporary name next to the target (same filesystem, so
 * rename(2) is atomic), flushed to disk with fsync, renamed over the target, and the parent
 * directory is fsynced so the rename itself survives a crash. A failure at any step removes the
 * temporary: the target is either the old version or the complete new one, never half of one.
 * Directories are replaced with renameat2(RENAME_EXCHANGE) where the filesystem supports it.
 * Two runs writing the same output at once would each produce a complete output and the last
 * rename would win silently; instead every writer holds an exclusive flock(2) on PATH.lock from
 * open/begin to commit/abort, and a second writer fails at once with a message naming the holder
 * (or waits, with AS_LOCK_WAIT=1). */
#include "atomic_file.h"

#include "as_error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* PATH.tmp.HOST.PID: the host keeps writers on a shared filesystem apart, and lets a later run
 * on the same host recognise the leftovers of a killed one (remove_stale). */
static char *tmp_name(const char *path) {
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    for (char *c = host; *c; c++)
        if (*c == '/' || *c == '.') *c = '_';
    size_t n = strlen(path) + strlen(host) + 40;
    char *t = as_xmalloc(n);
    snprintf(t, n, "%s.tmp.%s.%ld", path, host, (long)getpid());
    return t;
}

static int rm_tree(const char *path);

/* Staging files or directories of PATH left by runs on this host that were killed (SIGKILL, power
 * loss) and can no longer clean up: their pid is gone. Others' live stagings are left alone. */
static void remove_stale(const char *path) {
    char *mine = tmp_name(path), *dot = strrchr(mine, '.');
    *dot = 0; /* "PATH.tmp.HOST": the prefix of every staging name of this host */
    char *dir = as_xstrdup(mine), *slash = strrchr(dir, '/');
    const char *prefix = slash ? slash + 1 : dir;
    const char *parent = slash ? (slash == dir ? "/" : dir) : ".";
    if (slash) *slash = 0;
    size_t np = strlen(prefix);
    DIR *d = opendir(parent);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, prefix, np) || e->d_name[np] != '.') continue;
        char *end;
        long pid = strtol(e->d_name + np + 1, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to judge) */
        size_t n = strlen(parent) + strlen(e->d_name) + 2;
        char *victim = as_xmalloc(n);
        snprintf(victim, n, "%s/%s", parent, e->d_name);
        rm_tree(victim);
        free(victim);
    }
    if (d) closedir(d);
    free(dir);
    free(mine);
}

/* fsync the directory that holds `path`, so a rename into it is durable. */
static int fsync_parent(const char *path) {
    char *copy = as_xstrdup(path);
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash)
        *slash = 0, dir = copy;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0)
        rc = as_fail("file %s: fsync of directory %s: %s", path, dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(copy);
    return rc;
}

/* ---- output locks ---- */

/* Take the exclusive lock on PATH.lock; returns its fd, -2 where the filesystem has no locks
 * (a warning: the run goes on unprotected rather than failing on such a mount), -1 with as_fail
 * when another run holds it. The holder unlinks the lock file before closing it, so a waiter
 * that locked an unlinked file checks that its fd is still the file at PATH.lock and retries
 * otherwise (two runs could otherwise each hold "the" lock on different inodes). */
int as_output_lock(const char *path) {
    size_t n = strlen(path) + 8;
    char *lp = as_xmalloc(n);
    snprintf(lp, n, "%s.lock", path);
    const char *w = getenv("AS_LOCK_WAIT");
    int wait = w && *w && strcmp(w, "0");
    for (;;) {
        int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) {
            as_fail("output %s: cannot create lock file %s: %s", path, lp, strerror(errno));
            free(lp);
            return -1;
        }
        if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
            int err = errno;
            if (err == EINTR) {
                close(fd);
                continue;
            }
            if (err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS) {
                fprintf(stderr, "warning: output %s: no file locking on this filesystem (%s); "
                                "concurrent writers are not detected\n",
                        path, strerror(err));
                close(fd), free(lp);
                return -2;
            }
            char holder[128] = "";
            ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
            holder[got > 0 ? got : 0] = 0;
            holder[strcspn(holder, "\n")] = 0;
            if (err == EWOULDBLOCK)
                as_fail("output %s: being written by another run (%s, lock %s); wait for it to "
                        "finish or choose another output (AS_LOCK_WAIT=1 waits)",
                        path, *holder ? holder : "holder unknown", lp);
            else
                as_fail("output %s: cannot lock %s: %s", path, lp, strerror(err));
            close(fd), free(lp);
            return -1;
        }
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(lp, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino) {
            char host[256] = "localhost", who[320];
            gethostname(host, sizeof host - 1);
            int len = snprintf(who, sizeof who, "pid %ld on %s\n", (long)getpid(), host);
            if (ftruncate(fd, 0) == 0 && pwrite(fd, who, (size_t)len, 0) < 0) {
                /* the holder's name is only informative */
            }
            free(lp);
            return fd;
        }
        close(fd); /* the previous holder removed it while we waited: lock the new one */
    }
}

/* Release: unlink first (see lock_output), then close, which drops the flock. */
void as_output_unlock(const char *path, int fd) {
    if (fd < 0) return;
    size_t n = strlen(path) + 8;
    char *lp = as_xmalloc(n);
    snprintf(lp, n, "%s.lock", path);
    unlink(lp);
    close(fd);
    free(lp);
}

int as_atomic_open(struct as_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    af->lock_fd = as_output_lock(path);
    if (af->lock_fd == -1) return -1;
    remove_stale(path); /* only the lock holder may judge the leftovers */
    af->tmp_path = tmp_name(path);
    af->path = as_xstrdup(path);
    /* O_TRUNC, not O_EXCL: a leftover from a killed run with the same pid is ours to replace. */
    int fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        as_fail("file %s: cannot create %s: %s", path, af->tmp_path, strerror(errno));
        as_atomic_abort(af);
        return -1;
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        as_fail("file %s: fdopen: %s", path, strerror(errno));
        close(fd);
        as_atomic_abort(af);
        return -1;
    }
    return 0;
}

static void atomic_free(struct as_atomic_file *af) {
    if (af->path) as_output_unlock(af->path, af->lock_fd);
    free(af->path), free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

int as_atomic_commit(struct as_atomic_file *af) {
    if (!af->fp)
        return as_fail("file %s: commit of a file that is not open", af->path ? af->path : "?");
    const char *step = "write";
    int err = 0;
    if (fflush(af->fp) != 0) err = errno;
    if (!err && fsync(fileno(af->fp)) != 0) step = "fsync", err = errno;
    int close_rc = fclose(af->fp);
    af->fp = NULL;
    if (!err && close_rc != 0) step = "close", err = errno;
    if (!err && rename(af->tmp_path, af->path) != 0) step = "rename", err = errno;
    if (err) {
        as_fail("file %s: %s failed: %s", af->path, step, strerror(err));
        unlink(af->tmp_path);
        atomic_free(af);
        return -1;
    }
    int rc = fsync_parent(af->path);
    atomic_free(af);
    return rc;
}

void as_atomic_abort(struct as_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    atomic_free(af);
}

int as_atomic_write_file(const char *path, const void *data, size_t n) {
    struct as_atomic_file af;
    if (as_atomic_open(&af, path) != 0) return -1;
    if (n && fwrite(data, 1, n, af.fp) != n) {
        as_fail("file %s: write failed: %s", path, strerror(errno));
        as_atomic_abort(&af);
        return -1;
    }
    return as_atomic_commit(&af);
}

/* ---- directories ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

static int rm_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int fsync_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)ftw;
    if (flag != FTW_F && flag != FTW_D && flag != FTW_DP) return 0; /* symlinks etc. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | (flag == FTW_F ? 0 : O_DIRECTORY));
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* The locks of the directories being staged, found again by their staging path at commit or
 * abort (the API hands out only that path). A tool stages a handful at most. */
static struct dir_lock {
    char *tmp, *dir;
    int fd;
} dir_locks[32];

static void dir_unlock(const char *tmp_dir) {
    for (size_t i = 0; i < sizeof dir_locks / sizeof *dir_locks; i++)
        if (dir_locks[i].tmp && !strcmp(dir_locks[i].tmp, tmp_dir)) {
            as_output_unlock(dir_locks[i].dir, dir_locks[i].fd);
            free(dir_locks[i].tmp), free(dir_locks[i].dir);
            dir_locks[i] = (struct dir_lock){0};
        }
}

char *as_atomic_dir_begin(const char *dir) {
    size_t slot = 0;
    while (slot < sizeof dir_locks / sizeof *dir_locks && dir_locks[slot].tmp)
        slot++;
    if (slot == sizeof dir_locks / sizeof *dir_locks) {
        as_fail("directory %s: too many directories staged at once", dir);
        return NULL;
    }
    int fd = as_output_lock(dir);
    if (fd == -1) return NULL;
    remove_stale(dir);
    char *tmp = tmp_name(dir);
    if (rm_tree(tmp) != 0 || mkdir(tmp, 0777) != 0) {
        as_fail("directory %s: cannot create %s: %s", dir, tmp, strerror(errno));
        as_output_unlock(dir, fd);
        free(tmp);
        return NULL;
    }
    dir_locks[slot] = (struct dir_lock){as_xstrdup(tmp), as_xstrdup(dir), fd};
    return tmp;
}

static int dir_commit(const char *tmp_dir, const char *dir) {
    if (nftw(tmp_dir, fsync_entry, 16, FTW_PHYS) != 0) {
        as_fail("directory %s: fsync of %s failed: %s", dir, tmp_dir, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (lstat(dir, &st) != 0) { /* no old directory: a plain rename */
        if (rename(tmp_dir, dir) != 0) {
            as_fail("directory %s: rename from %s failed: %s", dir, tmp_dir, strerror(errno));
            goto fail;
        }
        return fsync_parent(dir);
    }
    if (!S_ISDIR(st.st_mode)) {
        as_fail("directory %s: exists and is not a directory", dir);
        goto fail;
    }
    /* Swap old and new in one step; the old tree then sits at tmp_dir and is deleted. */
    if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        int rc = fsync_parent(dir);
        rm_tree(tmp_dir);
        return rc;
    }
    /* Filesystems without RENAME_EXCHANGE: move the old one aside first (a short window where
     * DIR is missing, but never a half-written DIR). */
    size_t n = strlen(dir) + 32;
    char *old = as_xmalloc(n);
    snprintf(old, n, "%s.old.%ld", dir, (long)getpid());
    rm_tree(old);
    if (rename(dir, old) != 0 || rename(tmp_dir, dir) != 0) {
        int err = errno;
        rename(old, dir); /* best effort: put the old one back if it moved */
        as_fail("directory %s: replace failed: %s", dir, strerror(err));
        free(old);
        goto fail;
    }
    int rc = fsync_parent(dir);
    rm_tree(old);
    free(old);
    return rc;
fail:
    rm_tree(tmp_dir);
    return -1;
}

int as_atomic_dir_commit(const char *tmp_dir, const char *dir) {
    int rc = dir_commit(tmp_dir, dir);
    dir_unlock(tmp_dir);
    return rc;
}

void as_atomic_dir_abort(const char *tmp_dir) {
    if (!tmp_dir) return;
    rm_tree(tmp_dir);
    dir_unlock(tmp_dir);
}

int as_copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return errno == ENOENT ? 1 : as_fail("%s: %s", src, strerror(errno));
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return as_fail("%s: %s", dst, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) rc = as_fail("%s: write failed", dst);
    if (ferror(in)) rc = as_fail("%s: read failed", src);
    fclose(in);
    if (fclose(out)) rc = as_fail("%s: write failed", dst);
    return rc;
}
