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
 * The lead wires this into as-gptq / as-awq (GPTQ's per-group fit, with error feedback). */
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

#endif
