/* draft_cli: as-gen --draft (see draft_cli.h). */
#include "draft_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "draft_model.h"
#include "draft_spec.h"

static int print_piece(void *ctx, int prev, int tok) {
    char piece[256];
    int len = as_tokenizer_decode_piece(ctx, prev, tok, piece, sizeof piece);
    if (len < 0) return -1;
    fwrite(piece, 1, (size_t)len < sizeof piece ? (size_t)len : sizeof piece - 1, stdout);
    return 0;
}

int as_draft_cli_run(const struct as_model *m, const struct as_tokenizer *tok, int *toks,
                     int n_prompt, int skip, int steps, const struct as_draft_cli *o) {
    struct as_draft *d = as_draft_load(o->draft_dir, m);
    if (!d) as_die_last();
    struct as_spec_opts so = {
        o->k, o->temp, o->seed, {as_tokenizer_bos(tok), as_tokenizer_eos(tok)}};
    for (int i = skip; i < n_prompt; i++)
        if (print_piece((void *)tok, i ? toks[i - 1] : -1, toks[i]) != 0) as_die_last();
    struct as_spec_stats st, sp;
    int n = as_spec_generate(m, d, toks, n_prompt, steps, &so, print_piece, (void *)tok, &st);
    if (n < 0) as_die_last();
    printf("\n");
    if (o->verbose) {
        int *b = as_xmalloc(((size_t)steps + 1) * sizeof(int));
        memcpy(b, toks, (size_t)n_prompt * sizeof(int));
        int nb = as_spec_plain(m, b, n_prompt, steps, &so, NULL, NULL, &sp);
        if (nb < 0) as_die_last();
        int same = nb == n && !memcmp(b, toks, (size_t)n * sizeof(int));
        double tps = st.emitted / (st.seconds > 0 ? st.seconds : 1e-9);
        double ptps = sp.emitted / (sp.seconds > 0 ? sp.seconds : 1e-9);
        fprintf(stderr,
                "{\"k\":%d,\"temp\":%g,\"drafts\":%ld,\"accepted\":%ld,\"al\":%.4f,"
                "\"accept_pos\":[",
                o->k, (double)o->temp, st.drafts, st.accepted,
                st.drafts ? 1.0 + (double)st.accepted / st.drafts : 0.0);
        for (int j = 0; j < o->k; j++)
            fprintf(stderr, "%s%.4f", j ? "," : "",
                    st.drafts ? (double)st.accepted_pos[j] / st.drafts : 0.0);
        fprintf(stderr,
                "],\"tokens\":%ld,\"tok_s\":%.1f,\"plain_tokens\":%ld,\"plain_tok_s\":%.1f,"
                "\"speedup\":%.3f,\"identical\":%s}\n",
                st.emitted, tps, sp.emitted, ptps, ptps > 0 ? tps / ptps : 0.0,
                same ? "true" : "false");
        free(b);
    }
    as_draft_free(d);
    return fflush(stdout) == 0 ? 0 : 1;
}
