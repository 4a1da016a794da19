/* quant_search: per-group scale (and zero) search minimising the importance-weighted error.
 *
 * For one group of weights w[0..n) with importances h[0..n) (the Hessian diagonal, or the mean
 * square of the activations: llama.cpp's importance matrix), find the GPTQ-convention parameters
 * (scale s, integer zero z; w_hat = s * (q - z), q = clamp(round(w/s) + z, 0, maxq)) minimising
 *     E(s, z) = sum_i h_i (w_i - w_hat_i)^2.
 * Candidates (llama.cpp ggml-quants.c make_qx_quants / make_qkx2_quants, adapted to an integer
 * zero): the plain GPTQ fit (quant_int_fit_group), so the result is never worse than it; the
 * signed extreme mapped to the most negative code (-2^(bits-1), Q4_0's trick: it uses the longer
 * half of the code range) and a grid of scales around it; for asymmetric groups, a grid of
 * (min, max) shrinkages. Each candidate is refined by alternating exact steps that never increase
 * E: codes by rounding for fixed (s, z), then s by weighted least squares for fixed codes (and z
 * by rounding the least-squares offset). Scales can be evaluated as stored in fp16 (GGUF's d).
 * GPTQ uses it as its per-group fit, with error feedback (gptq_opts.scale_search).
 *
 * quant_fmin_*: the float-minimum asymmetric quantizer of GGUF Q4_1 (ggml-common.h block_q4_1,
 * x = d*q + m): w_hat = d * q + m, q = clamp(round((w - m) / d), 0, maxq), with d and m both free
 * (as stored in fp16 with fp16_scale), not tied to an integer zero (m = -s*z). Searched like
 * llama.cpp's make_qkx2_quants / make_qkx3_quants: a grid of (min, scale) shrinkages of the
 * group's range and of clipped ranges, each refined by alternating exact steps (codes by rounding
 * for fixed (d, m); (d, m) by weighted least squares for fixed codes), each step accepted only if
 * it lowers E; the integer-zero search's result (d, m) = (s, -s*z) is a candidate, so the result
 * is never worse than it on the same objective. */
#ifndef AS_QUANT_SEARCH_H
#define AS_QUANT_SEARCH_H

#include <stdint.h>

struct quant_search_params {
    int bits;         /* 2..8 */
    int sym;          /* 1: zero fixed at 2^(bits-1) */
    int n_grid;       /* scale candidates on each side of the base one; 0 -> 10 */
    float step;       /* relative grid step of the code range; 0 -> 0.1 (llama.cpp's is/10) */
    int iters;        /* refinement rounds per candidate; 0 -> 4 */
    int fp16_scale;   /* evaluate and return scales rounded to fp16 (as GGUF / GPTQ store them) */
    int signed_scale; /* sym: allow a negative scale, so a positive extreme can take the code
                       * -2^(bits-1) too (llama.cpp's Q4_0 d = max / -8); every dequantizer
                       * computes scale * (q - zero) and accepts it */
};

/* E(scale, zero) of one group; h NULL = all ones. */
double quant_search_error(const float *w, const float *h, int n, int bits, float scale,
                          int32_t zero);

/* Best (scale, zero) for one group; returns its E. h NULL = all ones. A group of zeros gets the
 * plain fit's parameters. Never returns an E above the plain GPTQ fit's (quant_int_fit_group). */
double quant_search_group(const float *w, const float *h, int n,
                          const struct quant_search_params *p, float *scale, int32_t *zero);

/* Round-to-nearest of a matrix W [N,K] with searched parameters per (row, group of group_size
 * input columns; <= 0 = per row); h [K] importance of each input column (NULL = uniform).
 * Outputs as quant_int_rtn: q [N*K], scale/zero [N*G], g_idx [K]. -1 with as_fail on bad input. */
int quant_search_rtn(const float *W, int N, int K, int group_size, const float *h,
                     const struct quant_search_params *p, uint8_t *q, float *scale, int32_t *zero,
                     int32_t *g_idx);

/* ---- float minimum: w_hat = d * q + m ---- */

/* q = clamp(round((x - m) / d), 0, maxq): the nearest code for fixed (d, m), d > 0. */
static inline uint8_t quant_fmin_quantize(float x, float d, float m, int maxq) {
    float q = __builtin_rintf((x - m) / d);
    q = q < 0.0f ? 0.0f : q;
    q = q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}
/* d * q + m, one rounding per operation (no fma), as ggml's dequantize_row_q4_1. */
static inline float quant_fmin_dequantize(uint8_t q, float d, float m) {
    return d * (float)q + m;
}

/* E(d, m) of one group with the nearest codes; h NULL = all ones. */
double quant_fmin_error(const float *w, const float *h, int n, int bits, float d, float m);

/* Best (d, m) for one group (p->sym ignored; p->fp16_scale: d and m evaluated and returned as
 * stored in fp16). Returns its E. Never above the E of the integer-zero search
 * (quant_search_group, asymmetric) written as (d, m) = (s, -s*z), rounded the same way. A group
 * of equal values gets d from the plain fit and m reproducing the value where fp16 allows. */
double quant_fmin_group(const float *w, const float *h, int n, const struct quant_search_params *p,
                        float *d, float *m);

/* Round-to-nearest of W [N,K] with quant_fmin_group per (row, group): q [N*K], scale (= d) and
 * minv (= m) [N*G], zero [N*G] = the nearest integer zero clamp(round(-m/d), 0, maxq) (for
 * readers that only know the integer convention; informative), g_idx [K]. -1 with as_fail. */
int quant_fmin_rtn(const float *W, int N, int K, int group_size, const float *h,
                   const struct quant_search_params *p, uint8_t *q, float *scale, float *minv,
                   int32_t *zero, int32_t *g_idx);

/* The integer zero nearest to a float minimum: clamp(round(-m / d), 0, maxq). */
int32_t quant_fmin_nearest_zero(float d, float m, int bits);

#endif
