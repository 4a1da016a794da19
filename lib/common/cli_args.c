#include "cli_args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

int as_arg_int(const char *arg) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end || errno || v < INT_MIN || v > INT_MAX)
        as_die("argument '%s': expected an integer", arg);
    return (int)v;
}

double as_arg_double(const char *arg) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end || errno || !isfinite(v))
        as_die("argument '%s': expected a finite number", arg);
    return v;
}

unsigned long long as_arg_u64(const char *arg) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    /* strtoull accepts "-1" (as 2^64-1): a sign is refused before it gets the chance */
    if (end == arg || *end || errno || strchr(arg, '-'))
        as_die("argument '%s': expected a non-negative integer", arg);
    return v;
}
