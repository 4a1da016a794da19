/* prune_engine: token pruning inside the engine's prefill (issue 21, docs/token-pruning.md).
 *
 * The prompt's N tokens run through layers 0..L-1 whole; before layer L the strategy (a row of
 * prune_tokens.c) chooses or merges M tokens from the hidden states (the embeddings when L = 0),
 * scored by the last token's head-mean attention at layer L-1 (FastV; also the importance /
 * saliency the other strategies read) and the layer's post-RoPE keys. The first keep_first and the
 * last keep_last tokens (BOS, the question) are never pruned. The kept tokens are renumbered to
 * positions 0..M-1: their residual rows are compacted, the KV cache of layers 0..L-1 is compacted
 * the same way (merged rows: the merge weights applied to keys and values) with each key rotated
 * from its old RoPE position to its new one, and layers L.. run on the M rows. Afterwards
 * s->pos = M and the state decodes on as usual (as_forward), so generation continues on the
 * kept tokens. */
#ifndef AS_PRUNE_ENGINE_H
#define AS_PRUNE_ENGINE_H

#include "eval_metrics.h"
#include "forward.h"
#include "prune_tokens.h"

/* Where the engine's per-token score (the importance / saliency the strategies read) comes from,
 * all at layer L-1 (L >= 1) except NORM. */
enum as_prune_importance {
    AS_IMP_DEFAULT = 0, /* LAST for every method */
    AS_IMP_LAST,        /* the last token's head-mean attention row (FastV) */
    AS_IMP_TAIL,        /* mean head-mean attention row of the keep_last protected tokens */
    AS_IMP_RECV,        /* received attention: mean over the queries that see the token */
    AS_IMP_ACCUM,       /* accumulated attention: sum over all queries (H2O) */
    AS_IMP_NORM,        /* L2 norm of the token's residual row entering layer L */
};

/* IDPruner's defaults on language-model tokens (chosen by bench/prune_study.sh on texts and
 * passkey prompts the tables do not use, docs/token-pruning.md): the attention received as
 * importance, the redundancy term normalised to the importance's [0, 1] scale, lambda. */
#define AS_PRUNE_LM_IMPORTANCE AS_IMP_RECV
#define AS_PRUNE_LM_LAMBDA 0.875
#define AS_PRUNE_LM_MMR_NORM 1

/* Which of the language-model defaults the caller set itself (bits of `given`). */
#define AS_PRUNE_GIVEN_LAMBDA 1
#define AS_PRUNE_GIVEN_MMR_NORM 2

/* Apply a method's language-model defaults before the caller's own settings: for "idpruner" the
 * importance (when *importance is AS_IMP_DEFAULT), lambda and mmr_norm (unless the matching
 * AS_PRUNE_GIVEN_ bit is set in given). Every other method, and "idpruner-paper" (the published
 * lambda 0.5 on the caller's scores, in the engine the last token's attention, raw max cosine),
 * keeps its table defaults. */
void as_prune_lm_defaults(const struct as_prune_method *m, struct as_prune_params *p,
                          int *importance, int given);

/* "last", "tail", "recv", "accum", "norm" -> the enum; -1 when unknown. */
int as_prune_importance_parse(const char *name);
const char *as_prune_importance_name(int imp);

struct as_prune_engine {
    const struct as_prune_method *method;
    int importance; /* enum as_prune_importance */
    double keep;    /* fraction of the prunable tokens kept, (0, 1] */
    struct as_prune_params params;
    int layer;      /* 0: on the embeddings; L >= 1: after layer L-1 */
    int keep_first; /* never pruned: the first tokens (BOS, a system prefix) */
    int keep_last;  /* never pruned: the last tokens (the question) */
};

struct as_prune_prefill_stats {
    int n, m;            /* prompt tokens, tokens after pruning */
    double flops_full;   /* theoretical prefill FLOPs without pruning (linears + attention) */
    double flops_pruned; /* with pruning at the chosen layer */
};

/* Pruned prefill of tokens[0..n) into s (s->pos must be 0, n <= s->max_T); logits of the last
 * token in s->logits (as AS_LOGITS_LAST). kept (may be NULL) receives the M representative input
 * indices. Returns 0, or -1 with as_fail (prompt longer than the context, bad layer, strategy
 * errors). */
int as_prune_prefill(const struct as_model *m, struct as_run_state *s, const int *tokens, int n,
                     const struct as_prune_engine *e, int *kept, struct as_prune_prefill_stats *st);

/* Parse METHOD:KEEP[:LAYER[:KEEP_LAST]] (as-gen --prune) into *e with default parameters,
 * keep_first 1, layer 2 and keep_last 1 unless given. -1 with as_fail naming the problem. */
int as_prune_engine_from_spec(const char *spec, struct as_prune_engine *e);
/* The same, errors naming the option opt ("--prune-tokens SPEC: ..."). */
int as_prune_engine_parse(const char *opt, const char *spec, struct as_prune_engine *e);

/* Theoretical prefill FLOPs of T tokens through `layers` layers (2 per multiply-add; causal
 * attention counts the T(T+1)/2 scored pairs), without the lm_head. */
double as_prune_prefill_flops(const struct as_model_config *c, int T, int layers);

/* as-eval --prune-tokens: one perplexity window with its first `first` tokens as the prompt.
 * The unpruned prefill of the prompt (timed), then the pruned one (timed, selection included),
 * then tokens first..ctx-2 decode on the pruned cache; their logit rows are scored against the
 * window's next tokens (win[j + 1]) and, by KL divergence, against ref (the unpruned model's
 * rows for positions first..ctx-2, [ctx-1-first, V]). s: a state of max_T, max_seq >= ctx. */
struct as_prune_eval {
    long n, m; /* prompt tokens before / after pruning, summed over windows */
    double flops_full, flops_pruned, t_full, t_pruned;
    struct as_nll_acc nll;
    struct as_kld_acc kld;
};
int as_prune_eval_window(const struct as_model *m, struct as_run_state *s, const int *win, int ctx,
                         int first, const struct as_prune_engine *e, const float *ref,
                         struct as_prune_eval *acc);

#endif
