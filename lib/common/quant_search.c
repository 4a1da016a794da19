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

/* ---- float minimum (GGUF Q4_1: x = d*q + m) ---- */

double quant_fmin_error(const float *w, const float *h, int n, int bits, float d, float m) {
    int maxq = quant_int_maxq(bits);
    double e = 0;
    for (int i = 0; i < n; i++) {
        double r = (double)w[i] -
                   (double)quant_fmin_dequantize(quant_fmin_quantize(w[i], d, m, maxq), d, m);
        e += (h ? (double)h[i] : 1.0) * r * r;
    }
    return e;
}

int32_t quant_fmin_nearest_zero(float d, float m, int bits) {
    int maxq = quant_int_maxq(bits);
    float z = d > 0 ? rintf(-m / d) : 0.0f;
    return (int32_t)(!(z > 0) ? 0 : z > (float)maxq ? maxq : z);
}

/* (d, m) as stored; 0 when unusable (d not positive, non-finite, fp16 overflow). */
static int fmin_stored(float *d, float *m, int fp16) {
    if (fp16) *d = as_f16_to_f32(as_f32_to_f16(*d)), *m = as_f16_to_f32(as_f32_to_f16(*m));
    return isfinite(*d) && *d > 0.0f && isfinite(*m);
}

struct fbest {
    double e;
    float d, m;
};

/* Alternating exact steps from (d, m): the nearest codes, then (d, m) by weighted least squares
 * for those codes (the normal equations of sum h (w - d q - m)^2); with fp16 storage, d is rounded
 * first and m re-solved for the rounded d (m = (X - d B) / A, the exact optimum for fixed d and
 * codes) before its own rounding. Each step is kept only if E (with codes re-rounded) drops. */
static void fmin_refine(const float *w, const float *h, int n, const struct quant_search_params *p,
                        float d, float m, struct fbest *b) {
    int maxq = quant_int_maxq(p->bits);
    if (!fmin_stored(&d, &m, p->fp16_scale)) return;
    double e = quant_fmin_error(w, h, n, p->bits, d, m);
    if (e < b->e) b->e = e, b->d = d, b->m = m;
    for (int it = 0; it < p->iters; it++) {
        double A = 0, B = 0, C = 0, X = 0, Y = 0;
        for (int i = 0; i < n; i++) {
            double hi = h ? h[i] : 1.0, q = quant_fmin_quantize(w[i], d, m, maxq);
            A += hi, B += hi * q, C += hi * q * q, X += hi * w[i], Y += hi * w[i] * q;
        }
        if (!(A > 0)) return;
        double det = A * C - B * B, nd = d;
        if (det > 1e-12 * A * C) {
            double ls = (A * Y - B * X) / det;
            if (ls > 0) nd = ls;
        }
        float fd = (float)nd, fm;
        if (p->fp16_scale) fd = as_f16_to_f32(as_f32_to_f16(fd));
        fm = (float)((X - (double)fd * B) / A);
        if (!fmin_stored(&fd, &fm, p->fp16_scale)) return;
        double ne = quant_fmin_error(w, h, n, p->bits, fd, fm);
        if (!(ne < e)) return;
        e = ne, d = fd, m = fm;
        if (e < b->e) b->e = e, b->d = d, b->m = m;
    }
}

/* fp16 storage: the rounded least-squares point need not be the best stored one; try the
 * neighbouring fp16 values of d and m (one ulp each way) while E drops. */
static void fmin_polish_fp16(const float *w, const float *h, int n, int bits, struct fbest *b) {
    for (int round = 0; round < 8; round++) {
        int moved = 0;
        for (int which = 0; which < 2; which++)
            for (int dir = -1; dir <= 1; dir += 2) {
                float d = b->d, m = b->m;
                float *v = which ? &m : &d;
                uint16_t bits16 = as_f32_to_f16(*v);
                if (*v == 0.0f && dir < 0)
                    bits16 = 0x8001; /* -0 -> smallest negative */
                else
                    bits16 = (uint16_t)(bits16 + dir);
                *v = as_f16_to_f32(bits16);
                if (!(isfinite(d) && d > 0.0f && isfinite(m))) continue;
                double e = quant_fmin_error(w, h, n, bits, d, m);
                if (e < b->e) b->e = e, b->d = d, b->m = m, moved = 1;
            }
        if (!moved) break;
    }
}

double quant_fmin_group(const float *w, const float *h, int n, const struct quant_search_params *pp,
                        float *d_out, float *m_out) {
    struct quant_search_params p = *pp;
    p.sym = 0, p.signed_scale = 0;
    if (!p.n_grid) p.n_grid = 10;
    if (!(p.step > 0)) p.step = 0.1f;
    if (!p.iters) p.iters = 4;
    int maxq = quant_int_maxq(p.bits);
    struct fbest b = {INFINITY, 0.0f, 0.0f};
    /* the integer-zero search, written as (s, -s*z): the floor every result must beat */
    float s;
    int32_t z;
    quant_search_group(w, h, n, &p, &s, &z);
    float d0 = s, m0 = -s * (float)z;
    if (fmin_stored(&d0, &m0, p.fp16_scale)) {
        b.e = quant_fmin_error(w, h, n, p.bits, d0, m0), b.d = d0, b.m = m0;
        fmin_refine(w, h, n, &p, d0, m0, &b);
    }
    float mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mn = w[i] < mn ? w[i] : mn, mx = w[i] > mx ? w[i] : mx;
    if (mx > mn) {
        /* llama.cpp's ranges: the group's own, and one widened to include 0 (make_qkx* force
         * min <= 0) */
        float lo[2] = {mn, mn < 0 ? mn : 0}, hi[2] = {mx, mx > 0 ? mx : 0};
        for (int r = 0; r < 2; r++) {
            if (r == 1 && lo[1] == lo[0] && hi[1] == hi[0]) break;
            for (int is = -p.n_grid; is <= 2 * p.n_grid; is++) {
                /* make_qkx2's iscale = (nmax + rmin + rdelta*is) / (max - min) from min, then
                 * ranges shrunk about their middle by up to 4x (clipping both tails) */
                int clip = is > p.n_grid;
                float den = clip ? (float)maxq * (1.0f + 3.0f * (float)(is - p.n_grid) / p.n_grid)
                                 : (float)maxq + p.step * (float)is;
                if (den < 1.0f) continue;
                float d = (hi[r] - lo[r]) / den;
                float m = clip ? 0.5f * (hi[r] + lo[r]) - 0.5f * (float)maxq * d : lo[r];
                fmin_refine(w, h, n, &p, d, m, &b);
            }
        }
        /* The two most important elements on exact levels k codes apart (k = 1..maxq), the
         * lower one on its natural code or a neighbour: alternation from range-based starts can
         * stall in a local minimum that misses heavy elements (low bits, skewed importances). */
        if (h) {
            int i1 = -1, i2 = -1;
            for (int i = 0; i < n; i++) {
                if (i1 < 0 || h[i] > h[i1])
                    i2 = i1, i1 = i;
                else if (i2 < 0 || h[i] > h[i2])
                    i2 = i;
            }
            if (i2 >= 0 && w[i1] != w[i2]) {
                float a = fminf(w[i1], w[i2]), c = fmaxf(w[i1], w[i2]);
                for (int k = 1; k <= maxq; k++) {
                    float d = (c - a) / (float)k;
                    int c0 = (int)rintf((a - mn) / d);
                    for (int j = c0 - 1; j <= c0 + 1; j++)
                        if (j >= 0 && j + k <= maxq)
                            fmin_refine(w, h, n, &p, d, a - (float)j * d, &b);
                }
            }
        }
    } else if (b.e > 0) { /* all equal: any d, m = the value */
        float d = s, m = mn;
        fmin_refine(w, h, n, &p, d, m, &b);
    }
    if (p.fp16_scale && isfinite(b.e)) fmin_polish_fp16(w, h, n, p.bits, &b);
    if (!isfinite(b.e)) { /* nothing storable (fp16 overflow): the plain fit, unrounded */
        b.d = s, b.m = -s * (float)z;
        b.e = quant_fmin_error(w, h, n, p.bits, b.d, b.m);
    }
    *d_out = b.d, *m_out = b.m;
    return b.e;
}

int quant_fmin_rtn(const float *W, int N, int K, int group_size, const float *h,
                   const struct quant_search_params *p, uint8_t *q, float *scale, float *minv,
                   int32_t *zero, int32_t *g_idx) {
    struct quant_int_params qp = {.bits = p->bits, .group_size = group_size, .sym = 0};
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
            float d, m;
            quant_fmin_group(w, h ? h + k0 : NULL, len, p, &d, &m);
            size_t gi = (size_t)n * G + g;
            scale[gi] = d, minv[gi] = m, zero[gi] = quant_fmin_nearest_zero(d, m, p->bits);
            for (int i = 0; i < len; i++)
                q[(size_t)n * K + k0 + i] = quant_fmin_quantize(w[i], d, m, maxq);
        }
    return 0;
}
