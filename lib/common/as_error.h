/* as_error: one-line error messages that carry their context up the call chain.
 *
 * A library function that fails calls as_fail("file %s: tensor %s: problem", ...) and returns its
 * result (-1 or NULL). The message is kept per thread; the tool prints it once, prefixed with the
 * program name, and exits non-zero (as_die). Callers may add outer context with as_fail_prefix().
 * Progress lines go to stderr only when stderr is a terminal (as_progress). */
#ifndef AS_ERROR_H
#define AS_ERROR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdnoreturn.h>

void as_set_progname(const char *argv0);
const char *as_progname(void);

/* Record an error message (printf-style); always returns -1 so `return as_fail(...)` works. */
int as_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prepend context ("file x: ") to the current message; returns -1. */
int as_fail_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *as_last_error(void);
void as_clear_error(void);

/* Print "prog: <last error>" (or the given message) and exit(1). */
noreturn void as_die_last(void);
noreturn void as_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Progress on stderr, only when stderr is a tty (or AS_PROGRESS=1); rewrites one line. */
void as_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void as_progress_done(void);

/* Allocation that dies with a clear message instead of returning NULL. */
void *as_xmalloc(size_t n);
void *as_xcalloc(size_t n, size_t size);
void *as_xrealloc(void *p, size_t n);
char *as_xstrdup(const char *s);

#endif
