/* test_atomic_file: files and directories appear whole or not at all.
 *
 * Abort leaves neither the target nor a temporary; commit replaces an existing file; a staged
 * directory replaces an existing one completely (no old files survive) and an aborted one leaves
 * the old directory untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "as_error.h"
#include "atomic_file.h"

static char tmpdir[512];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_atomic.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_of(char *buf, const char *name) {
    snprintf(buf, 1024, "%s/%s", tmpdir, name);
}

/* Entries of tmpdir (excluding . and ..). */
static int n_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static char *slurp(const char *p) {
    static char buf[256];
    FILE *fp = fopen(p, "r");
    if (!fp) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = 0;
    fclose(fp);
    return buf;
}

static void test_abort_leaves_nothing(void **state) {
    (void)state;
    char p[1024];
    path_of(p, "a.txt");
    struct as_atomic_file af;
    assert_int_equal(as_atomic_open(&af, p), 0);
    fputs("partial", af.fp);
    fflush(af.fp);
    assert_int_equal(access(af.tmp_path, F_OK), 0); /* the temporary exists meanwhile */
    assert_int_not_equal(access(p, F_OK), 0);       /* the target does not */
    as_atomic_abort(&af);
    assert_int_equal(n_entries(tmpdir), 0);
}

static void test_commit_replaces(void **state) {
    (void)state;
    char p[1024];
    path_of(p, "b.txt");
    assert_int_equal(as_atomic_write_file(p, "first", 5), 0);
    assert_string_equal(slurp(p), "first");
    struct as_atomic_file af;
    assert_int_equal(as_atomic_open(&af, p), 0);
    fputs("second version", af.fp);
    assert_string_equal(slurp(p), "first"); /* untouched until commit */
    assert_int_equal(as_atomic_commit(&af), 0);
    assert_string_equal(slurp(p), "second version");
    assert_int_equal(n_entries(tmpdir), 1);
    unlink(p);
    /* Failure: the directory does not exist. Message names the file; nothing is left. */
    path_of(p, "missing/c.txt");
    assert_int_equal(as_atomic_write_file(p, "x", 1), -1);
    assert_non_null(strstr(as_last_error(), p));
    assert_int_equal(n_entries(tmpdir), 0);
}

static void test_directory_staging(void **state) {
    (void)state;
    char dir[1024], f[1100];
    path_of(dir, "out");
    /* First version: new directory. */
    char *tmp = as_atomic_dir_begin(dir);
    assert_non_null(tmp);
    snprintf(f, sizeof f, "%s/old-only.txt", tmp);
    assert_int_equal(as_atomic_write_file(f, "v1", 2), 0);
    assert_int_not_equal(access(dir, F_OK), 0);
    assert_int_equal(as_atomic_dir_commit(tmp, dir), 0);
    free(tmp);
    snprintf(f, sizeof f, "%s/old-only.txt", dir);
    assert_string_equal(slurp(f), "v1");

    /* Aborted second version: the old one is untouched, the staging dir is gone. */
    tmp = as_atomic_dir_begin(dir);
    snprintf(f, sizeof f, "%s/new.txt", tmp);
    assert_int_equal(as_atomic_write_file(f, "v2", 2), 0);
    as_atomic_dir_abort(tmp);
    free(tmp);
    assert_int_equal(n_entries(tmpdir), 1);
    assert_int_equal(n_entries(dir), 1);

    /* Committed second version replaces the whole directory. */
    tmp = as_atomic_dir_begin(dir);
    snprintf(f, sizeof f, "%s/sub", tmp);
    mkdir(f, 0777);
    snprintf(f, sizeof f, "%s/sub/new.txt", tmp);
    assert_int_equal(as_atomic_write_file(f, "v2", 2), 0);
    assert_int_equal(as_atomic_dir_commit(tmp, dir), 0);
    free(tmp);
    snprintf(f, sizeof f, "%s/sub/new.txt", dir);
    assert_string_equal(slurp(f), "v2");
    snprintf(f, sizeof f, "%s/old-only.txt", dir);
    assert_int_not_equal(access(f, F_OK), 0);
    assert_int_equal(n_entries(tmpdir), 1); /* no staging or old copies left */

    /* A file in the way is an error that names the target, and the staging dir is removed. */
    char file[1024];
    path_of(file, "plain");
    assert_int_equal(as_atomic_write_file(file, "x", 1), 0);
    tmp = as_atomic_dir_begin(file);
    assert_int_equal(as_atomic_dir_commit(tmp, file), -1);
    free(tmp);
    assert_non_null(strstr(as_last_error(), "plain: exists and is not a directory"));
    assert_int_equal(n_entries(tmpdir), 2);
}

/* A child process holds PATH (a file, or a staged directory when `dir`) until told to commit. */
struct holder {
    pid_t pid;
    int go; /* write a byte: commit and exit */
};

static struct holder hold_output(const char *path, int dir) {
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]), close(go[1]);
        struct as_atomic_file af;
        char *tmp = NULL;
        int rc = dir ? !(tmp = as_atomic_dir_begin(path)) : as_atomic_open(&af, path);
        if (!rc && !dir) fputs("child", af.fp);
        char c = rc ? 'E' : 'R';
        if (write(ready[1], &c, 1) != 1) _exit(3);
        if (read(go[0], &c, 1) != 1) _exit(4);
        usleep(100000); /* a waiter must really block meanwhile */
        rc = rc ? 1 : dir ? as_atomic_dir_commit(tmp, path) : as_atomic_commit(&af);
        free(tmp);
        _exit(rc ? 1 : 0);
    }
    close(ready[1]), close(go[0]);
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'R');
    close(ready[0]);
    return (struct holder){pid, go[1]};
}

static void release_output(struct holder h) {
    assert_int_equal(write(h.go, "g", 1), 1);
    close(h.go);
}

static void reap(struct holder h) {
    int st;
    assert_int_equal(waitpid(h.pid, &st, 0), h.pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Two writers of one output: the second fails at once naming the first (its pid), and leaves
 * the first's output alone; with AS_LOCK_WAIT=1 it waits and then replaces it. The lock file is
 * gone once nobody writes. */
static void test_concurrent_writers(void **state) {
    (void)state;
    char p[1024], who[64];
    int before = n_entries(tmpdir);
    path_of(p, "shared.txt");
    struct holder h = hold_output(p, 0);
    snprintf(who, sizeof who, "pid %ld on ", (long)h.pid);
    struct as_atomic_file af;
    assert_int_equal(as_atomic_open(&af, p), -1);
    assert_non_null(strstr(as_last_error(), "being written by another run"));
    assert_non_null(strstr(as_last_error(), who));
    assert_non_null(strstr(as_last_error(), p));
    release_output(h);
    reap(h);
    assert_string_equal(slurp(p), "child");

    h = hold_output(p, 0);
    setenv("AS_LOCK_WAIT", "1", 1);
    release_output(h);
    assert_int_equal(as_atomic_open(&af, p), 0); /* returns only after the child committed */
    unsetenv("AS_LOCK_WAIT");
    reap(h);
    assert_string_equal(slurp(p), "child");
    fputs("parent", af.fp);
    assert_int_equal(as_atomic_commit(&af), 0);
    assert_string_equal(slurp(p), "parent");
    assert_int_equal(n_entries(tmpdir), before + 1); /* no lock file or staging left */

    /* directories */
    char dir[1024];
    path_of(dir, "outdir");
    h = hold_output(dir, 1);
    assert_null(as_atomic_dir_begin(dir));
    assert_non_null(strstr(as_last_error(), "being written by another run"));
    release_output(h);
    reap(h);
    char *tmp = as_atomic_dir_begin(dir);
    assert_non_null(tmp);
    assert_int_equal(as_atomic_dir_commit(tmp, dir), 0);
    free(tmp);
    assert_int_equal(n_entries(tmpdir), before + 2);
    rmdir(dir);
    unlink(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_commit_replaces),
        cmocka_unit_test(test_directory_staging),
        cmocka_unit_test(test_concurrent_writers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
