/* bench_tokenizer: encode/decode throughput of lib/common/tokenizer on a text file.
 *   bench_tokenizer TOKENIZER.json TEXT [RUNS]
 * Prints one table row: load ms, input MB, tokens, bytes/token, encode MB/s and decode MB/s
 * (best of RUNS, default 5; the whole text is encoded as one sequence, as the perplexity tool). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc < 3) as_die("usage: bench_tokenizer TOKENIZER.json TEXT [RUNS]");
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    FILE *f = fopen(argv[2], "rb");
    if (!f) as_die("%s: cannot open", argv[2]);
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = as_xmalloc(len + 1);
    if (fread(text, 1, len, f) != len) as_die("%s: short read", argv[2]);
    fclose(f);
    double t0 = now();
    struct as_tokenizer *t = as_tokenizer_load(argv[1]);
    if (!t) as_die_last();
    double load = now() - t0, enc = 1e30, dec = 1e30;
    int32_t *ids = NULL;
    size_t n = 0;
    for (int r = 0; r < runs; r++) {
        free(ids);
        t0 = now();
        if (as_tokenizer_encode(t, text, len, 1, &ids, &n)) as_die_last();
        double e = now() - t0;
        if (e < enc) enc = e;
        t0 = now();
        size_t dn;
        char *s = as_tokenizer_decode(t, ids, n, &dn);
        if (!s) as_die_last();
        e = now() - t0;
        if (e < dec) dec = e;
        free(s);
    }
    printf("%-14s %8.1f %8.2f %9zu %7.2f %10.2f %10.2f\n", argc > 4 ? argv[4] : "tokenizer",
           load * 1e3, (double)len / 1e6, n, (double)len / (double)n, (double)len / 1e6 / enc,
           (double)len / 1e6 / dec);
    free(ids), free(text);
    as_tokenizer_free(t);
    return 0;
}
