/* fakequant: fake quantizers with straight-through estimators for quantization-aware training,
 * one row per scheme in one table (docs/qat.md; formulas from ../shared/reference/ternary-qat.md).
 *
 *   scheme    levels (W_eff = scale * q)          scale                           W gradient
 *   seq2      q in {-3,-1,1,3}, scale = alpha/4   learnable alpha per row,        g * 1[|W/alpha|
 * <= .99] (alpha {+-.25, +-.75})              init max|W_row|, LSQ gradient seq3      q in
 * {-1,0,1}, scale = 2 alpha/3    (k=1.5, s=0: {0, +-2/3} alpha)  same lsq3/4    q in [-2^(b-1),
 * 2^(b-1)-1]          learnable alpha per row,        g * 1[Qn <= W/alpha <= Qp] init max|W_row|/Qp
 *   absmean   q in {-1,0,1} = clamp(round(W/a))   a = mean|W| of the group        g (identity)
 *   twn       q = sign(W) 1[|W| > 0.7 mean|W|]    mean |W| over the kept          g (identity)
 *   tequila   q = sign(W) 1[|W| >= a/2]           a = mean|W| of the group        g, + lambda sum_t
 * g_tj
 *             + bias c_j = lambda sum_dead W_ji                                     on dead-zone
 * weights sherry    3:4: per 4 contiguous inputs the    a = sum|W_kept| / (3/4 gs)      g
 * (identity) smallest |w| is 0, others sign(W)   (Sparse-Absmean) Arenas: W_eff = Q + lambda_t W (1
 * + lambda_t) g
 *
 * Groups: `group` > 0 is consecutive inputs of one row (the last group of a row is shorter
 * when it does not divide cols, as GPTQ's g_idx = i / group), 0 one group per
 * output row, -1 the whole tensor. Learnable scales (seq*, lsq*) are per output row.
 * SEQ/LSQ alpha gradient (ParetoQ): sum over the row of g * gamma * (q_lo if W/alpha below the
 * clip, q_hi above, qhat - W/alpha inside), gamma = 1/sqrt(numel) for SEQ, 1/sqrt(numel Qp) for
 * LSQ; q_lo = -q_hi, q_hi = (k-s)/k for SEQ (Qn, Qp for LSQ). */
#ifndef AS_FAKEQUANT_H
#define AS_FAKEQUANT_H

#include <stdint.h>

enum as_fq_scheme {
    AS_FQ_NONE,
    AS_FQ_SEQ2,
    AS_FQ_SEQ3,
    AS_FQ_LSQ3,
    AS_FQ_LSQ4,
    AS_FQ_ABSMEAN,
    AS_FQ_TWN,
    AS_FQ_TEQUILA,
    AS_FQ_SHERRY,
    AS_FQ_COUNT
};

struct as_fq_info {
    const char *name;
    double bits;       /* bits per weight of the codes, before scales */
    int default_group; /* see above */
    int learnable;     /* per-row alpha is a trainable parameter */
};
const struct as_fq_info *as_fq_info(enum as_fq_scheme s);
int as_fq_parse(const char *name); /* -1 if unknown */

/* One quantized linear: its scheme, shape, grouping and scale parameters. */
struct as_fq {
    enum as_fq_scheme scheme;
    int rows, cols, group, gsize, ngroups; /* gsize inputs per group, ngroups per row */
    float *alpha, *galpha;                 /* [rows] learnable scale and gradient, or NULL */
    float lambda;                          /* tequila dead-zone lambda; sherry Arenas lambda_t */
};

/* Set up for W [rows, cols] (learnable alphas initialised from W). group: as above, or
 * INT32_MIN for the scheme's default. Returns 0, or -1 with as_fail (sherry inputs or group not
 * a multiple of 4, a learnable scheme with groups). */
int as_fq_init(struct as_fq *q, enum as_fq_scheme s, const float *W, int rows, int cols, int group);
void as_fq_free(struct as_fq *q);
/* W_eff [rows, cols] and, for tequila, a per-row bias b_eff (has_bias = 1). */
void as_fq_forward(const struct as_fq *q, const float *W, float *W_eff, float *b_eff,
                   int *has_bias);
/* gW += dL/dW from dL/dW_eff (and dL/db_eff), q->galpha += dL/dalpha. */
void as_fq_backward(const struct as_fq *q, const float *W, const float *gW_eff, const float *gb_eff,
                    float *gW);
/* Integer codes [rows, cols] and per-group scales [rows * n_scale_groups] with
 * W_eff = scales[g] * codes (+ bias [rows] for tequila, which must be non-NULL then);
 * Arenas' lambda_t W term is not part of the codes (it is 0 at the end of its schedule).
 * Returns the number of scale groups per row (1 for per-row and per-tensor); input i of a row
 * is in group i / q->gsize. */
int as_fq_codes(const struct as_fq *q, const float *W, int8_t *codes, float *scales, float *bias);

/* Sherry's Arenas lambda at optimizer step `step` of `total`: linear 0 -> max over total/10,
 * cosine back to 0 at total, 0 after. */
float as_arenas_lambda(int64_t step, int64_t total, float max);

#endif
