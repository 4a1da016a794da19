/* quant_search: importance-weighted scale/zero search per group (see quant_search.h). */
#include "quant_search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "quant_int.h"

double quant_search_error(const float *w, const float *h, int n, int bits, float scale,
                          int32_t zero) {
    int maxq = quant_int_maxq(bits);
    double e = 0;
    for (int i = 0; i < n; i++) {
        uint8_t q = quant_int_quantize(w[i], scale, zero, maxq);
        double d = (double)w[i] - (double)quant_int_dequantize(q, scale, zero);
        e += (h ? (double)h[i] : 1.0) * d * d;
    }
    return e;
}

/* The scale as it will be stored; 0 when unusable (zero, non-finite, fp16 overflow). */
static float stored_scale(float s, int fp16) {
    if (fp16) s = as_f16_to_f32(as_f32_to_f16(s));
    return isfinite(s) && s != 0.0f ? s : 0.0f;
}

struct best {
    double e;
    float s;
    int32_t z;
};

/* Alternating exact steps from (s, z): codes by rounding, then the weighted least-squares scale
 * (sym) or scale and offset (asym, offset rounded to an integer zero) for those codes. Keeps the
 * best point seen; every accepted step lowers E. */
static void refine(const float *w, const float *h, int n, const struct quant_search_params *p,
                   float s, int32_t z, struct best *b) {
    int maxq = quant_int_maxq(p->bits);
    s = stored_scale(s, p->fp16_scale);
    if (s == 0.0f || (s < 0 && !(p->sym && p->signed_scale))) return;
    double e = quant_search_error(w, h, n, p->bits, s, z);
    if (e < b->e) b->e = e, b->s = s, b->z = z;
    for (int it = 0; it < p->iters; it++) {
        double A = 0, B = 0, C = 0, X = 0, Y = 0;
        for (int i = 0; i < n; i++) {
            double hi = h ? h[i] : 1.0, q = quant_int_quantize(w[i], s, z, maxq);
            if (p->sym) q -= z;
            A += hi, B += hi * q, C += hi * q * q, X += hi * w[i], Y += hi * w[i] * q;
        }
        double ns;
        int32_t nz = z;
        if (p->sym) {
            if (C <= 0) return;
            ns = Y / C;
        } else {
            double det = A * C - B * B;
            if (!(det > 0)) return;
            ns = (A * Y - B * X) / det;
            double m = (C * X - B * Y) / det;
            if (!(ns > 0)) return;
            double zr = rint(-m / ns);
            nz = (int32_t)(zr < 0 ? 0 : zr > maxq ? maxq : zr);
            /* best scale for the rounded zero: codes shift by z - nz in the new frame */
            double num = 0, den = 0;
            for (int i = 0; i < n; i++) {
                double hi = h ? h[i] : 1.0;
                double l = (double)quant_int_quantize(w[i], s, z, maxq) - nz;
                num += hi * w[i] * l, den += hi * l * l;
            }
            if (den > 0 && num > 0) ns = num / den;
        }
        float fs = stored_scale((float)ns, p->fp16_scale);
        if (fs == 0.0f || (fs < 0 && !(p->sym && p->signed_scale))) return;
        double ne = quant_search_error(w, h, n, p->bits, fs, nz);
        if (!(ne < e)) return;
        e = ne, s = fs, z = nz;
        if (e < b->e) b->e = e, b->s = s, b->z = z;
    }
}

double quant_search_group(const float *w, const float *h, int n,
                          const struct quant_search_params *pp, float *scale, int32_t *zero) {
    struct quant_search_params p = *pp;
    if (!p.n_grid) p.n_grid = 10;
    if (!(p.step > 0)) p.step = 0.1f;
    if (!p.iters) p.iters = 4;
    int maxq = quant_int_maxq(p.bits), half = 1 << (p.bits - 1);
    float s0;
    int32_t z0;
    quant_int_fit_group(w, n, p.bits, p.sym, &s0, &z0);
    /* the plain fit, scored as stored, is the floor every result must beat */
    struct best b = {INFINITY, stored_scale(s0, p.fp16_scale), z0};
    if (b.s == 0.0f) b.s = s0;
    b.e = quant_search_error(w, h, n, p.bits, b.s, b.z);
    refine(w, h, n, &p, s0, z0, &b);
    float mn = INFINITY, mx = -INFINITY, xm = 0;
    for (int i = 0; i < n; i++) {
        mn = w[i] < mn ? w[i] : mn, mx = w[i] > mx ? w[i] : mx;
        if (fabsf(w[i]) > fabsf(xm)) xm = w[i];
    }
    if (xm != 0.0f) {
        if (p.sym) {
            for (int is = -p.n_grid; is <= 2 * p.n_grid; is++) {
                /* the signed extreme on code -half (a negative scale for a positive extreme), or
                 * a positive extreme on code half - 1 when scales must stay positive; beyond the
                 * llama.cpp grid (is > n_grid), scales that clip it by up to 4x: an outlier of
                 * little importance should not set the step of the whole group */
                float f = is <= p.n_grid ? 1.0f : 1.0f + 3.0f * (float)(is - p.n_grid) / p.n_grid;
                int k = is <= p.n_grid ? is : 0;
                float den = ((float)half + p.step * (float)k) * f;
                if (den > 0.5f) refine(w, h, n, &p, xm / -den, half, &b);
                float den1 = ((float)(half - 1) + p.step * (float)k) * f;
                if (xm > 0 && den1 > 0.5f) refine(w, h, n, &p, xm / den1, half, &b);
            }
        } else {
            float lo[2] = {mn, mn < 0 ? mn : 0}, hi[2] = {mx, mx > 0 ? mx : 0};
            for (int r = 0; r < 2; r++) {
                if (!(hi[r] > lo[r])) continue;
                for (int is = -p.n_grid; is <= 2 * p.n_grid; is++) {
                    /* llama.cpp's grid, then ranges shrunk about their middle by up to 4x */
                    int clip = is > p.n_grid;
                    float den =
                        clip ? (float)maxq * (1.0f + 3.0f * (float)(is - p.n_grid) / p.n_grid)
                             : (float)maxq + p.step * (float)is;
                    if (den < 1.0f) continue;
                    float s = (hi[r] - lo[r]) / den;
                    float zr = clip ? rintf(0.5f * (float)maxq - 0.5f * (hi[r] + lo[r]) / s)
                                    : rintf(-lo[r] / s);
                    refine(w, h, n, &p, s, (int32_t)(zr < 0 ? 0 : zr > maxq ? maxq : zr), &b);
                }
            }
        }
    }
    *scale = b.s, *zero = b.z;
    return b.e;
}

int quant_search_rtn(const float *W, int N, int K, int group_size, const float *h,
                     const struct quant_search_params *p, uint8_t *q, float *scale, int32_t *zero,
                     int32_t *g_idx) {
    struct quant_int_params qp = {.bits = p->bits, .group_size = group_size, .sym = p->sym};
    if (quant_int_check_params(&qp, N, K)) return -1;
    int G = quant_int_n_groups(K, group_size), gs = group_size <= 0 ? K : group_size;
    int maxq = quant_int_maxq(p->bits);
    for (int k = 0; k < K; k++)
        g_idx[k] = k / gs;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            int k0 = g * gs, len = K - k0 < gs ? K - k0 : gs;
            const float *w = W + (size_t)n * K + k0;
            for (int i = 0; i < len; i++)
                if (!isfinite(w[i]))
                    return as_fail("row %d column %d: weight %g is not finite", n, k0 + i, w[i]);
            float s;
            int32_t z;
            quant_search_group(w, h ? h + k0 : NULL, len, p, &s, &z);
            scale[(size_t)n * G + g] = s, zero[(size_t)n * G + g] = z;
            for (int i = 0; i < len; i++)
                q[(size_t)n * K + k0 + i] = quant_int_quantize(w[i], s, z, maxq);
        }
    return 0;
}
