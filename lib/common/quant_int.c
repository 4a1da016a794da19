/* quant_int: GPTQ-convention and AWQ-convention fits of integer groups, and whole-matrix RTN.
 * See quant_int.h for the layout; REFERENCE.md "Integer quantizer (GPTQ convention)". */
#include "quant_int.h"

#include <math.h>

#include "as_error.h"

int quant_int_check_params(const struct quant_int_params *p, int N, int K) {
    if (p->bits < 2 || p->bits > 8)
        return as_fail("quantizer: bits %d not supported (2..8)", p->bits);
    if (N <= 0 || K <= 0) return as_fail("quantizer: bad shape [%d, %d]", N, K);
    if (p->group_size == 0 || p->group_size < -1)
        return as_fail("quantizer: group size %d (use -1 for per channel)", p->group_size);
    return 0;
}

/* The parameter computation shared by the contiguous and strided fits (reference find_params). */
static void fit_from_minmax(float mn, float mx, int bits, int sym, float *scale, int32_t *zero) {
    int maxq = quant_int_maxq(bits);
    float xmin = fminf(mn, 0.0f), xmax = fmaxf(mx, 0.0f);
    if (sym) {
        xmax = fmaxf(fabsf(xmin), xmax);
        /* The reference only mirrors xmin where it is negative: an all-non-negative group keeps
         * xmin = 0, so scale = xmax/maxq with zero (maxq+1)/2 (its top codes then clamp). */
        if (xmin < 0.0f) xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) xmin = -1.0f, xmax = 1.0f;
    float s = (xmax - xmin) / (float)maxq;
    /* A group of subnormals can underflow the scale to 0; treat it as an all-zero group (the
     * reference would produce NaN here). */
    if (!(s > 0.0f)) xmin = -1.0f, xmax = 1.0f, s = 2.0f / (float)maxq;
    *scale = s;
    *zero = sym ? (maxq + 1) / 2 : (int32_t)rintf(-xmin / s);
}

void quant_int_fit_group_strided(const float *x, int n, long stride, int bits, int sym,
                                 float *scale, int32_t *zero) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(long)i * stride];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    fit_from_minmax(mn, mx, bits, sym, scale, zero);
}

void quant_int_fit_group(const float *x, int n, int bits, int sym, float *scale, int32_t *zero) {
    quant_int_fit_group_strided(x, n, 1, bits, sym, scale, zero);
}

void quant_int_fit_group_awq(const float *x, int n, int bits, int sym, float *scale,
                             int32_t *zero) {
    int maxq = quant_int_maxq(bits);
    if (sym) {
        float amax = 0.0f;
        for (int i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        *scale = fmaxf(amax, 1e-5f) / (float)((1 << (bits - 1)) - 1);
        *zero = 1 << (bits - 1);
        return;
    }
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++)
        mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
    float s = fmaxf(mx - mn, 1e-5f) / (float)maxq;
    float z = -rintf(mn / s);
    z = z < 0.0f ? 0.0f : (z > (float)maxq ? (float)maxq : z);
    *scale = s;
    *zero = (int32_t)z;
}

int quant_int_rtn(const float *W, int N, int K, const struct quant_int_params *p, uint8_t *q,
                  float *scale, int32_t *zero, int32_t *g_idx, float *w_hat) {
    if (quant_int_check_params(p, N, K)) return -1;
    int gs = p->group_size <= 0 ? K : p->group_size;
    int G = quant_int_n_groups(K, p->group_size), maxq = quant_int_maxq(p->bits);
    for (long i = 0; i < (long)N * K; i++)
        if (!isfinite(W[i])) return as_fail("weight: non-finite value at [%ld, %ld]", i / K, i % K);
    for (int k = 0; k < K; k++)
        g_idx[k] = k / gs;
    for (int n = 0; n < N; n++) {
        const float *w = W + (long)n * K;
        for (int g = 0; g < G; g++) {
            int k0 = g * gs, k1 = k0 + gs < K ? k0 + gs : K;
            float s;
            int32_t z;
            quant_int_fit_group(w + k0, k1 - k0, p->bits, p->sym, &s, &z);
            scale[(long)n * G + g] = s;
            zero[(long)n * G + g] = z;
            for (int k = k0; k < k1; k++) {
                uint8_t c = quant_int_quantize(w[k], s, z, maxq);
                q[(long)n * K + k] = c;
                if (w_hat) w_hat[(long)n * K + k] = quant_int_dequantize(c, s, z);
            }
        }
    }
    return 0;
}
