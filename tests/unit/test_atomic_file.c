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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_commit_replaces),
        cmocka_unit_test(test_directory_staging),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
