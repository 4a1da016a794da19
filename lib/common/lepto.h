/* lepto: LeptoQuant's search for FP8 input scales, and FP8 scale diagnostics.
 *
 * LeptoQuant (REFERENCE.md "FP8 and LeptoQuant"): per decoder layer and per group of linears
 * sharing an input (q/k/v, o, gate/up, down), 13 candidate static FP8 input scales from the
 * order statistics of |x| over the calibration sample: p_r = 0.999 + 0.00005 r, r = 8..20;
 * n = min(round(N p), N - 1) in the sorted |x| of all N sample values; c = |FP8(x_n 448/absmax)|;
 * scale_r = absmax / c. Each is scored by the MSE of the block output (attention block for q/k/v
 * and o, MLP block for gate/up and down) with FP8 fake-quantized inputs on the group's linears
 * only, against full precision; the lowest wins. The absmax baseline (calibration absmax / 448,
 * what `--method absmax` uses) is scored too and kept on ties, so the result never loses to it
 * on this objective. The sample is the kept calibration sequences (as-calib --keep-seqs): the
 * group inputs are recomputed from the layer inputs, so N = seqs * seqlen * in_dim.
 *
 * Diagnostics: per tensor absmax, mean |x|, kurtosis, and the fractions FP8 with a given scale
 * flushes to zero or saturates; an SVG histogram before/after FP8 quantize-dequantize. */
#ifndef AS_LEPTO_H
#define AS_LEPTO_H

#include <stddef.h>
#include <stdio.h>

#include "model.h"

#define AS_LEPTO_NCAND 13

struct as_lepto_result {
    float absmax_scale; /* the baseline's scale */
    float best_scale;   /* chosen */
    double loss_absmax; /* block-output MSE with the baseline scale */
    double loss_best;
    int best_r;    /* 8..20, or -1 when the baseline stayed best */
    double best_p; /* 0.999 + 0.00005 r, or 1 for the baseline */
    float cand_scale[AS_LEPTO_NCAND];
    double cand_loss[AS_LEPTO_NCAND];
    float sample_absmax; /* absmax of the sample */
    size_t n_values;     /* N */
    double seconds;
};

/* The 13 candidate scales from |x| values (vals is permuted in place; n >= 1). */
void as_lepto_candidates(float *abs_vals, size_t n, float *absmax, float scales[AS_LEPTO_NCAND]);

/* Search layer l of m. X: the residual stream entering the layer, [S * seqlen, hidden].
 * calib_absmax[g]: the group's input absmax over all calibration tokens (<= 0: use the
 * sample's). res[g] for each group. -1 with as_fail on error. */
int as_lepto_search_layer(const struct as_model *m, int l, const float *X, int S, int seqlen,
                          const float calib_absmax[AS_GROUP_COUNT],
                          struct as_lepto_result res[AS_GROUP_COUNT]);

/* ---- diagnostics ---- */
struct as_tensor_diag {
    size_t n;
    double absmax, absmean, kurtosis; /* kurtosis: Pearson m4 / m2^2 (3 for a normal) */
    double frac_zero;                 /* nonzero values that FP8 with `scale` encodes as ±0 */
    double frac_saturated;            /* values with |x / scale| > 448 */
    double frac_subnormal; /* nonzero values in FP8's subnormal range (|x / scale| < 2^-6) */
    float scale;
};
/* Statistics of x[n] under FP8 with `scale` (<= 0: absmax / 448). */
void as_tensor_diag(const float *x, size_t n, float scale, struct as_tensor_diag *d);

/* SVG: histograms of x (before) and of its FP8 quantize-dequantize with `scale` (<= 0: absmax
 * / 448) over [-absmax, absmax] with `bins` bins, log-scaled counts. -1 with as_fail. */
int as_fp8_histogram_svg(const float *x, size_t n, float scale, int bins, const char *title,
                         FILE *out);

#endif
