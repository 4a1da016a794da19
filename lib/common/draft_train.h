/* draft_train: training-time test (TTT) of an Eagle3 draft on one window of target tokens,
 * forward and backward (../shared/reference/eagle3.md section 3).
 *
 * Window of T target tokens x with the target's taps A [T, 3H] and its logits restricted to the
 * draft vocabulary. Draft position t = 0..T-2; step i = 0..S-1 (S = 7 by default):
 *   input token x[t+1+i] (teacher forcing), hidden g_0 = fc(A[t]), g_i = h2 of step i-1;
 *   RoPE position t + i; the query attends to step-0 keys t' <= t (causal) and, for each step
 *   s = 1..i, to step s's key at the same position t only (one extra column per step);
 *   target p = softmax(target logits at t+1+i over the draft vocabulary), position mask = the
 *   target's full-vocabulary argmax is in the draft vocabulary (and t+1+i < T);
 *   loss_i = -sum_t mask p . log softmax(logits_i) / (T-1), total = sum_i 0.8^i loss_i.
 * The embedding is frozen (the target's); every other draft weight gets a gradient. */
#ifndef AS_DRAFT_TRAIN_H
#define AS_DRAFT_TRAIN_H

#include "draft_model.h"
#include "train_optim.h"

#define AS_TTT_MAX 16

struct as_draft_grads; /* opaque: gradient arrays shaped as the draft's weights */

struct as_draft_grads *as_draft_grads_new(const struct as_draft *d);
void as_draft_grads_free(struct as_draft_grads *g);
/* Append every trainable weight with its gradient (HF names; decay on matrices) to ps. */
int as_draft_params(struct as_draft *d, struct as_draft_grads *g, struct as_params *ps);

struct as_ttt_result {
    double loss; /* weighted total */
    double loss_step[AS_TTT_MAX];
    double acc_step[AS_TTT_MAX]; /* argmax(draft) == argmax(p) over masked positions */
    long valid_step[AS_TTT_MAX]; /* masked positions */
};

/* One window: tokens [T], feats [T, 3H] (taps), tlogits [T, Vd] (the target's logits at the
 * draft vocabulary's ids), tmask [T] (1: the target's argmax is in the draft vocabulary).
 * Computes the loss and, if g is not NULL, ADDS the gradients to g. -1 with as_fail on a bad
 * size. */
int as_draft_ttt(const struct as_draft *d, const int *tokens, const float *feats,
                 const float *tlogits, const unsigned char *tmask, int T, int steps,
                 struct as_draft_grads *g, struct as_ttt_result *r);
/* B windows at once (tokens [B T], feats [B T, 3H], tlogits [B T, Vd], tmask [B T]): the rows of
 * all windows go through each matrix product together (one sgemm per weight instead of B); the
 * loss is the mean over all B (T-1) positions, as the reference's mean over B x T. */
int as_draft_ttt_batch(const struct as_draft *d, const int *tokens, const float *feats,
                       const float *tlogits, const unsigned char *tmask, int T, int B, int steps,
                       struct as_draft_grads *g, struct as_ttt_result *r);

#endif
