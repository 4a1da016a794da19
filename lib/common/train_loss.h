/* train_loss: losses on logits and their gradients, one row (token) at a time.
 *
 * Per row with student logits z (V), teacher logits zt, target y (temperature 1):
 *   ce     -log p(y)                                    p = softmax(z), pt = softmax(zt)
 *   kl     KL(T||S) = sum pt (log pt - log p)           (forward KL, "kl" in AngelSlim)
 *   rkl    KL(S||T) = sum p (log p - log pt)            (reverse KL)
 *   cakld  c KL(S||T) + (1 - c) KL(T||S), c = pt(y)     (AngelSlim's confidence-aware KLD;
 *                                                        c is a constant: no gradient through it)
 * The row's loss is w_ce * ce + w_kd * kd; dlogits receives scale * d(loss)/dz (scale is
 * 1 / tokens of the optimizer step, so micro-batches accumulate a mean). */
#ifndef AS_TRAIN_LOSS_H
#define AS_TRAIN_LOSS_H

enum as_kd_kind { AS_KD_NONE, AS_KD_KL, AS_KD_RKL, AS_KD_CAKLD };

struct as_loss_cfg {
    float w_ce, w_kd;
    enum as_kd_kind kd;
};

struct as_loss_sums { /* sums over rows (divide by rows for means) */
    double ce, kd, loss;
    long rows;
};

/* kd name ("none", "kl", "rkl", "cakld") -> kind; -1 if unknown. */
int as_kd_parse(const char *name);
const char *as_kd_name(enum as_kd_kind k);

/* Rows t = 0..T-1 of logits [T, V] with targets[t] (ignored where < 0: no loss, zero gradient)
 * and teacher [T, V] (may be NULL when w_kd == 0 or kd == NONE). Adds to sums; writes dlogits
 * (may alias logits) unless NULL. */
void as_loss_rows(const float *logits, const float *teacher, const int *targets, int T, int V,
                  const struct as_loss_cfg *cfg, float scale, float *dlogits,
                  struct as_loss_sums *sums);

#endif
