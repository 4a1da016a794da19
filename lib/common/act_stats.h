/* act_stats: streaming statistics of one linear layer input, for calibration.
 *
 * Fed matrices X [T, dim] (T tokens at a time), it keeps what the quantizers need without storing
 * activations, so memory does not grow with the number of calibration tokens:
 *   - the Hessian sum S = sum_t x_t x_tᵀ (chunk computed with cblas_ssyrk in fp32, accumulated in
 *     fp64); as_act_stats_hessian() returns H = (2/N) S, GPTQ's normalisation (REFERENCE.md);
 *   - mean |x_j| per channel (AWQ), absmax per channel and per tensor (FP8/SmoothQuant);
 *   - optionally a uniform sample of `keep` input rows (reservoir sampling, fixed seed) for
 *     block-output losses. */
#ifndef AS_ACT_STATS_H
#define AS_ACT_STATS_H

#include <stdint.h>

struct as_act_stats {
    int dim;
    uint64_t tokens;
    double *hsum;    /* [dim, dim], upper triangle valid until finalised */
    double *sum_abs; /* [dim] */
    float *absmax;   /* [dim] */
    float tensor_absmax;
    float *chunk;    /* [dim, dim] fp32 scratch for ssyrk */
    int keep;        /* rows to keep (0 = none) */
    int kept;
    float *kept_rows; /* [keep, dim] */
    uint64_t rng;
};

int as_act_stats_init(struct as_act_stats *s, int dim, int keep, uint64_t seed);
void as_act_stats_free(struct as_act_stats *s);
/* Accumulate T rows of X (row-major [T, dim]). Rejects non-finite inputs with as_fail. */
int as_act_stats_add(struct as_act_stats *s, const float *x, int T);
/* H = (2/N) sum x xᵀ as a full symmetric fp32 matrix [dim, dim] (caller-allocated). */
void as_act_stats_hessian(const struct as_act_stats *s, float *H);
/* mean |x_j| over tokens, fp32 [dim]. */
void as_act_stats_mean_abs(const struct as_act_stats *s, float *out);

#endif
