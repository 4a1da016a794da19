/* draft_cli: as-gen's --draft mode (speculative decoding, draft_spec.h), kept out of as-gen so
 * its hook is a few lines: prints the prompt and the generated text as as-gen does; with
 * verbose, also runs plain decoding of the same prompt (silently) and prints one JSON line of
 * metrics to stderr: AL, per-position acceptance, tokens/s of both, speedup, and (greedy)
 * whether the two outputs are identical. */
#ifndef AS_DRAFT_CLI_H
#define AS_DRAFT_CLI_H

#include <stdint.h>

#include "model.h"
#include "tokenizer.h"

struct as_draft_cli {
    const char *draft_dir;
    int k;
    float temp;
    uint64_t seed;
    int verbose;
};

/* toks[0..n_prompt) (room for steps+1); skip: leading tokens not printed (BOS). Returns the exit
 * status (dies with one line on error). */
int as_draft_cli_run(const struct as_model *m, const struct as_tokenizer *tok, int *toks,
                     int n_prompt, int skip, int steps, const struct as_draft_cli *o);

#endif
