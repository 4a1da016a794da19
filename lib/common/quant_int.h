/* quant_int: integer (uniform, zero-point) weight quantizer in the GPTQ convention, plus AWQ's fit.
 *
 * Layout shared by the whole project (see lib/common/pack_formats.h, struct as_qlinear):
 *   W [N out rows, K in cols] row-major f32; codes q uint8 [N,K] in 0..maxq (maxq = 2^bits - 1);
 *   scale f32 [N,G]; zero int32 [N,G] (always an integer in 0..maxq); g_idx int32 [K] = group of
 *   input column k. Groups run along the input dim: G = ceil(K / group_size) (the last one may be
 *   shorter), or G = 1 for group_size <= 0 (one group per row, "per channel").
 * Dequant: w_hat = scale * (q - zero). Rounding is rintf (round half to even, like torch.round). */
#ifndef AS_QUANT_INT_H
#define AS_QUANT_INT_H

#include <stdint.h>

struct quant_int_params {
    int bits;       /* 2..8 */
    int group_size; /* input columns per group; <= 0 (conventionally -1) = one group per row */
    int sym;        /* 1 = symmetric (zero fixed at (maxq+1)/2) */
};

static inline int quant_int_maxq(int bits) {
    return (1 << bits) - 1;
}
/* G = ceil(K / group_size), or 1 for group_size <= 0 (also when group_size >= K). */
static inline int quant_int_n_groups(int K, int group_size) {
    return group_size <= 0 ? 1 : (K + group_size - 1) / group_size;
}

/* GPTQ convention (quant.py Quantizer.find_params, weight=True): fit one group of n values.
 * xmin = min(min x, 0), xmax = max(max x, 0); sym: xmax = max(|xmin|, xmax) and, where xmin < 0,
 * xmin = -xmax; both zero -> xmin = -1, xmax = +1; scale = (xmax - xmin)/maxq; zero = (maxq+1)/2
 * (sym) or round(-xmin/scale) (asym). All arithmetic in f32 as in the reference. */
void quant_int_fit_group(const float *x, int n, int bits, int sym, float *scale, int32_t *zero);
/* Same on a strided run (x[0], x[stride], ...). */
void quant_int_fit_group_strided(const float *x, int n, long stride, int bits, int sym,
                                 float *scale, int32_t *zero);

/* AWQ convention (AutoAWQ pseudo_quantize_tensor): min/max not forced to include 0.
 * asym: scale = max(max - min, 1e-5)/maxq, zero = clamp(-round(min/scale), 0, maxq).
 * sym:  scale = max(max|x|, 1e-5)/(2^(bits-1) - 1), zero = 2^(bits-1) (AWQ's signed
 *       clamp(round(x/s), -2^(b-1), 2^(b-1)-1) expressed with unsigned codes). */
void quant_int_fit_group_awq(const float *x, int n, int bits, int sym, float *scale, int32_t *zero);

/* q = clamp(round(x/scale) + zero, 0, maxq); x/scale is a true division, as in the reference. */
static inline uint8_t quant_int_quantize(float x, float scale, int32_t zero, int maxq) {
    float q = __builtin_rintf(x / scale) + (float)zero;
    q = q < 0.0f ? 0.0f : q;
    q = q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}
static inline float quant_int_dequantize(uint8_t q, float scale, int32_t zero) {
    return scale * ((float)q - (float)zero);
}

/* Round-to-nearest of a whole matrix with the GPTQ fit (quant_int_fit_group per row and group).
 * q [N*K], scale/zero [N*G], g_idx [K] (k / group_size), w_hat [N*K] (may be NULL).
 * Returns 0, or -1 with as_fail on bad parameters or non-finite weights. */
int quant_int_rtn(const float *W, int N, int K, const struct quant_int_params *p, uint8_t *q,
                  float *scale, int32_t *zero, int32_t *g_idx, float *w_hat);

/* Validate bits (2..8) and shapes; -1 with as_fail("...") naming the problem. */
int quant_int_check_params(const struct quant_int_params *p, int N, int K);

#endif
