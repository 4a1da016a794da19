/* as-gen's batched mode (batch.c): many prompts from a JSON-lines file, decoded B at a time. */
#ifndef AS_GEN_BATCH_H
#define AS_GEN_BATCH_H

#include <stdint.h>

#include "model.h"
#include "tokenizer.h"

struct as_gen_batch_opts {
    const char *path; /* JSON lines, "-" for stdin */
    int batch;        /* sequences decoded together */
    /* defaults for the lines' optional fields */
    int steps, chat;
    float temp;
    uint64_t seed;
    const char *system;
    int verbose;
};

/* Generates every line's answer, one JSON line each on stdout in input order; -1 with as_fail
 * (nothing written when a line is bad: all are checked first). */
int as_gen_batch_run(const struct as_model *m, struct as_tokenizer *tok, const char *dir,
                     const struct as_gen_batch_opts *o);

#endif
