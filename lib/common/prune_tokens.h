/* prune_tokens: training-free token pruning and merging (issue 21; formulas and defaults from
 * ../shared/reference/sparse-pruning.md sections 3-5, contract in docs/token-pruning.md).
 *
 * A strategy is one function from the run-time context (features, attention, scores, token-type
 * mask) to a choice among the prunable tokens: either K kept indices, or K merged tokens given as
 * groups with weights. The framework (as_prune_run) does the rest: it gathers the prunable tokens,
 * calls the strategy, puts the text tokens back (they are never dropped), sorts the output rows
 * into the original order and builds the merged features and the merge matrix [M, N].
 *
 * Adding a strategy: write one function of type as_prune_fn in prune_tokens.c and add one row to
 * the table there (name, kind, what it needs, parameter defaults). */
#ifndef AS_PRUNE_TOKENS_H
#define AS_PRUNE_TOKENS_H

#include <stdint.h>

enum as_prune_kind { AS_PRUNE_SELECT = 1, AS_PRUNE_MERGE = 2 };

/* Parameters of every strategy; each strategy reads the ones it documents (defaults in its row). */
struct as_prune_params {
    double lambda;    /* IDPruner MMR weight of importance (0.5) */
    int parallel_k;   /* IDPruner picks per iteration (1) */
    int mmr_norm;     /* IDPruner: redundancy min-max normalised over the candidates (0) */
    double zip_ratio; /* VisionZip contextual share of the budget (10/64) */
    int n_pivots;     /* DART pivots per token type (4) */
    double alpha;     /* SCOPE saliency exponent (1) */
    double threshold; /* Samp adjacent-merge cosine threshold (0.85) */
    int weighted;     /* FastAdaSP: weight run members by score (0: plain mean) */
    uint64_t seed;    /* random: splitmix64 seed (0) */
};

/* Inputs over all N tokens. Pointers may be NULL where optional; the strategy's row says what it
 * needs, and as_prune_run fails with one line when a needed input is missing. */
struct as_prune_input {
    int n, d;
    const float *x; /* features [n, d] (embeddings, projector output, hidden states) */
    int h;
    const float *attn;       /* attention [h, n, n], rows = queries, or NULL */
    const float *score;      /* per-token importance / received attention / saliency [n], or NULL */
    int dk;                  /* width of keys */
    const float *keys;       /* keys [n, dk] (DART pivots, VisionZip matching), or NULL -> x */
    const uint8_t *prunable; /* [n]: 1 = vision/audio token, 0 = text (always kept); NULL = all */
    int query;               /* FastV: the query token (default -1 = last non-prunable token, else
                                the last token) */
};

struct as_prune_result {
    int n;     /* input tokens */
    int m;     /* output tokens (kept text + K chosen or merged) */
    int *kept; /* [m] representative input index of each output row, increasing */
    float *w;  /* merge matrix [m, n]: row i holds the weights of the inputs merged into output i
                  (one-hot for a kept token); each row sums to one */
    float *y;  /* output features [m, d] = w . x */
    int d;
};

/* The prunable-subset view handed to a strategy: nv tokens, local indices 0..nv-1. */
struct as_prune_ctx {
    int nv, d;
    const double *x;  /* [nv, d] features of the prunable tokens (double) */
    const double *xn; /* [nv, d] the same, rows L2-normalised (zero rows stay zero) */
    const double *kn; /* [nv, dk] keys normalised (= xn when no keys) */
    int dk;
    const double *knorm1; /* [nv] L1 norm of keys (of x when no keys) */
    const double *score;  /* [nv] importance (see the table: given, or from attention), or NULL */
    const double *recv;   /* [nv] received attention: head-mean column mean over all rows */
    const double *qrow;   /* [nv] head-mean attention row of the query token, or NULL */
    const double *amax;   /* [nv] Samp merge weight: head-max column mean, or NULL */
    const double *adiag;  /* [nv] Samp relevance: head-mean diagonal, or NULL */
    int nt;               /* text tokens */
    const double *text_knorm1; /* [nt] L1 norm of the text tokens' keys */
    const double *text_xn;     /* [nt, d] text tokens' normalised features */
    const struct as_prune_params *p;
};

/* Strategy output: k groups over local indices. SELECT: group i = {sel[i]} (weights ignored).
 * MERGE: members of group i are mem[off[i] .. off[i+1]) with weights wt[...] (any positive
 * scale; the framework normalises them to sum to one). */
struct as_prune_choice {
    int k;
    int *sel;   /* SELECT: [k] chosen local indices, any order */
    int *off;   /* MERGE: [k + 1] */
    int *mem;   /* MERGE: [nv] */
    double *wt; /* MERGE: [nv] */
};

/* Returns 0 or -1 with as_fail(). k is the budget (1 <= k <= nv); a merge strategy may return
 * fewer groups only when fewer exist (it must say so in its row). */
typedef int (*as_prune_fn)(const struct as_prune_ctx *c, int k, struct as_prune_choice *out);

enum as_prune_need {
    AS_NEED_NONE = 0,
    AS_NEED_SCORE = 1, /* score vector, or attention (received or query row, by strategy) */
    AS_NEED_ATTN = 2,  /* the attention matrix itself */
    AS_NEED_TEXT = 4,  /* works with text tokens present (DART pivots); not required */
};

struct as_prune_method {
    const char *name;
    enum as_prune_kind kind;
    as_prune_fn fn;
    int needs;          /* as_prune_need bits */
    const char *inputs; /* what it reads, for --help and docs */
    const char *params; /* its parameters with defaults, for --help and docs */
};

const struct as_prune_method *as_prune_methods(int *count);
const struct as_prune_method *as_prune_find(const char *name);
void as_prune_params_default(struct as_prune_params *p);

/* K = max(1, floor(keep * nv + 0.5)) prunable tokens kept (0 when nv = 0). */
int as_prune_budget(int nv, double keep);

/* Check inputs (keep in (0, 1], finite features, attention shape), run the strategy, fill *res.
 * Errors: -1 with as_fail() naming the problem. */
int as_prune_run(const struct as_prune_method *m, const struct as_prune_input *in, double keep,
                 const struct as_prune_params *p, struct as_prune_result *res);
void as_prune_result_free(struct as_prune_result *res);

#endif
