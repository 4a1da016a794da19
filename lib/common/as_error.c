#include "as_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *progname = "as";
static _Thread_local char last_error[4096];
static int progress_active;

void as_set_progname(const char *argv0) {
    const char *slash = strrchr(argv0, '/');
    progname = slash ? slash + 1 : argv0;
}

const char *as_progname(void) { return progname; }

int as_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

int as_fail_prefix(const char *fmt, ...) {
    char prefix[1024], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t np = strlen(prefix), no = strlen(old);
    if (np > sizeof last_error - 1) np = sizeof last_error - 1;
    if (no > sizeof last_error - 1 - np) no = sizeof last_error - 1 - np;
    memcpy(last_error, prefix, np);
    memcpy(last_error + np, old, no);
    last_error[np + no] = 0;
    return -1;
}

const char *as_last_error(void) { return last_error[0] ? last_error : "unknown error"; }
void as_clear_error(void) { last_error[0] = 0; }

noreturn void as_die_last(void) {
    as_progress_done();
    fprintf(stderr, "%s: %s\n", progname, as_last_error());
    exit(1);
}

noreturn void as_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    as_die_last();
}

static int progress_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *env = getenv("AS_PROGRESS");
        enabled = env ? atoi(env) != 0 : isatty(2);
    }
    return enabled;
}

void as_progress(const char *fmt, ...) {
    if (!progress_enabled()) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\r%s: ", progname);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\033[K");
    va_end(ap);
    progress_active = 1;
}

void as_progress_done(void) {
    if (progress_active) fputc('\n', stderr);
    progress_active = 0;
}

void *as_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) as_die("out of memory allocating %zu bytes", n);
    return p;
}

void *as_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) as_die("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *as_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) as_die("out of memory reallocating %zu bytes", n);
    return q;
}

char *as_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = as_xmalloc(n);
    memcpy(p, s, n);
    return p;
}
