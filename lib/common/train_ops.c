/* train_ops: backward of the decoder ops (see train_ops.h). Sums over rows and reductions are
 * kept in double where a long reduction meets a subtraction (RMSNorm, softmax), in the same
 * order for any thread count: only BLAS threads run in parallel, over independent outputs. */
#include "train_ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void as_bwd_rmsnorm(float *dx, float *dw, const float *dy, const float *x, const float *w, int T,
                    int dim, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * dim, *g = dy + (size_t)t * dim;
        double ss = 0, dot = 0;
        for (int j = 0; j < dim; j++)
            ss += (double)xr[j] * xr[j];
        /* r as the forward computes it, so dw's xhat is the forward's */
        float r = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int j = 0; j < dim; j++)
            dot += (double)g[j] * w[j] * xr[j];
        if (dw)
            for (int j = 0; j < dim; j++)
                dw[j] += g[j] * (xr[j] * r);
        if (dx) {
            /* d/dx_j of w_j x_j r: r (w_j g_j) - x_j r^3 / dim * sum_k w_k g_k x_k */
            double c = dot * (double)r * r * r / dim;
            float *o = dx + (size_t)t * dim;
            for (int j = 0; j < dim; j++)
                o[j] += (float)((double)r * w[j] * g[j] - c * xr[j]);
        }
    }
}

void as_bwd_linear(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                   int T, int cols, int rows) {
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, cols, rows, 1.0f, dy, rows, W,
                    cols, 1.0f, dx, cols);
    if (dW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, T, 1.0f, dy, rows, x, cols,
                    1.0f, dW, cols);
    if (db)
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int t = 0; t < T; t++)
                s += dy[(size_t)t * rows + r];
            db[r] += (float)s;
        }
}

void as_bwd_rope(float *dx, int T, int n_heads, int head_dim, int pos0, const float *cos,
                 const float *sin) {
    int half = head_dim / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cos + (size_t)(pos0 + t) * half, *s = sin + (size_t)(pos0 + t) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = dx + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                /* transpose of [[c, -s], [s, c]] */
                float g1 = v[i], g2 = v[i + half];
                v[i] = g1 * c[i] + g2 * s[i];
                v[i + half] = g2 * c[i] - g1 * s[i];
            }
        }
    }
}

void as_bwd_swiglu(float *dg, float *du, const float *dh, const float *g, const float *u,
                   size_t n) {
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        if (du) du[i] += dh[i] * g[i] * sg;
        if (dg) dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

void as_bwd_attention(const struct as_model_config *c, float *dq, float *dk, float *dv,
                      const float *dout, const float *q, const float *k, const float *v,
                      const float *P, int ld, size_t p_stride, int T, float *scratch) {
    int hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int kv_mul = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        size_t ko = (size_t)(h / kv_mul) * hd;
        const float *Ph = P + (size_t)h * p_stride, *dO = dout + (size_t)h * hd;
        /* dV += P^T dO */
        if (dv)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, Ph, ld, dO, qd,
                        1.0f, dv + ko, kvd);
        /* dP = dO V^T, then the softmax's backward dS = P (dP - sum_j P dP) in place */
        float *dS = scratch;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, qd, v + ko, kvd,
                    0.0f, dS, T);
        for (int t = 0; t < T; t++) {
            const float *p = Ph + (size_t)t * ld;
            float *d = dS + (size_t)t * T;
            double s = 0;
            for (int j = 0; j <= t; j++)
                s += (double)p[j] * d[j];
            for (int j = 0; j <= t; j++)
                d[j] = p[j] * (float)(d[j] - s);
            memset(d + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
        }
        /* scores = scale Q K^T: dQ += scale dS K, dK += scale dS^T Q */
        if (dq)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dS, T, k + ko,
                        kvd, 1.0f, dq + (size_t)h * hd, qd);
        if (dk)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dS, T,
                        q + (size_t)h * hd, qd, 1.0f, dk + ko, kvd);
    }
}
