/* draft_spec: speculative decoding with an Eagle3 draft (draft_model.h).
 *
 * Chain drafting (vLLM's default): the draft proposes k tokens by argmax, each step feeding back
 * its own pre-norm hidden state; the target verifies them in one pass of k+1 tokens (the last
 * verified token and the k drafts) with per-position logits, and its KV cache is rolled back to
 * the accepted prefix. The target runs in rowwise mode (forward.h), so its logits equal one-token
 * decoding's bit for bit and greedy output is byte-identical to plain greedy decoding.
 *   greedy: accept d_j while d_j == argmax p_j; emit the target's argmax at the first mismatch,
 *     or the bonus token after k acceptances.
 *   temperature: the draft is argmax (q one-hot), so accept d_j with probability p_j(d_j); on
 *     rejection sample from p_j with d_j removed (renormalised): the emitted tokens have exactly
 *     the target's sampling distribution (vLLM rejection_random_sample_kernel with q one-hot).
 * The draft then re-reads the accepted positions with the target's real taps (its chain
 * positions are discarded) and proposes from the last one.
 * Metrics (vLLM's): AL = 1 + accepted / drafts, per-position acceptance accepted_pos[j] / drafts.
 */
#ifndef AS_DRAFT_SPEC_H
#define AS_DRAFT_SPEC_H

#include <stdint.h>

#include "draft_model.h"
#include "forward.h"

#define AS_SPEC_MAX_K 16

struct as_spec_stats {
    long drafts;   /* verification passes (each with k drafted tokens) */
    long accepted; /* drafted tokens accepted */
    long accepted_pos[AS_SPEC_MAX_K];
    long emitted; /* tokens emitted after the prompt */
    double seconds;
};

struct as_spec_opts {
    int k;         /* drafted tokens per pass, 1..AS_SPEC_MAX_K */
    float temp;    /* 0: greedy */
    uint64_t seed; /* sampling */
    int stop[2];   /* token ids that end generation unemitted (BOS, EOS; -1: none) */
};

/* Emitted token callback (prev = the token before it). */
typedef int (*as_spec_emit)(void *ctx, int prev, int tok);

/* Generate after toks[0..n_prompt) until toks holds steps+1 tokens or a stop token comes, as
 * as-gen's plain loop does; toks has room for steps+1 ids. Returns the number of tokens in toks,
 * or -1 with as_fail. */
int as_spec_generate(const struct as_model *m, const struct as_draft *d, int *toks, int n_prompt,
                     int steps, const struct as_spec_opts *o, as_spec_emit emit, void *ctx,
                     struct as_spec_stats *st);

/* Plain decoding with the same conventions and sampler (the baseline of the speedup, and the
 * reference of the tests). */
int as_spec_plain(const struct as_model *m, int *toks, int n_prompt, int steps,
                  const struct as_spec_opts *o, as_spec_emit emit, void *ctx,
                  struct as_spec_stats *st);

/* The target's taps of T rows of its last forward call (s with AS_STATE_KEEP_ACTS): feats
 * [T, 3H] = residual stream entering layers taps[0], taps[1], taps[2]. */
void as_spec_gather_taps(const struct as_model *m, const struct as_run_state *s, const int taps[3],
                         int T, float *feats);

#endif
