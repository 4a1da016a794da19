/* gptq: GPTQ and GPTAQ weight quantization of one linear layer from its Hessian.
 *
 * Follows the reference fasterquant (IST-DASLab/gptq, AutoGPTQ) step by step; REFERENCE.md "GPTQ
 * (order of operations of the reference)" and docs/gptq.md say what is done and in which order:
 * dead inputs, static groups, act-order, relative damping (retried when Cholesky fails),
 * U = upper Cholesky of H^-1, then columns in blocks with rank-1 updates inside a block and one
 * GEMM (the "lazy batch") after it. Output uses the project layout of quant_int.h (codes, scale,
 * integer zero, g_idx). GPTAQ (Li et al. 2025) adds the asymmetric-calibration term
 * P = alpha * triu(dXX^T U^T, 1) U to both updates.
 * gptq_quantize_columnwise is the plain column-by-column version (every column immediately
 * updates all later ones with a rank-1 BLAS-2 update): same result up to fp rounding, used by the
 * tests as the reference kernel and by the benchmark to show what blocking buys. */
#ifndef AS_GPTQ_H
#define AS_GPTQ_H

#include <stdint.h>

enum gptq_method { GPTQ_METHOD_GPTQ = 0, GPTQ_METHOD_GPTAQ = 1 };
/* How U (upper Cholesky factor of H^-1) is computed. REFERENCE: the reference's three steps,
 * Cholesky of H, its inverse (potri), Cholesky of H^-1: 4K^3/3 flops. REVERSE: the same U in
 * 2K^3/3 flops and without forming H^-1: factor H = U~ U~^T with U~ upper (a Cholesky of H with
 * rows/columns reversed), then U = U~^-1 (trtri); U^T U = (U~ U~^T)^-1 = H^-1 and a Cholesky
 * factor is unique, so only the fp rounding differs. */
enum gptq_factor { GPTQ_FACTOR_REFERENCE = 0, GPTQ_FACTOR_REVERSE = 1 };

struct gptq_opts {
    int bits;       /* 2, 3, 4, 8 (anything in 2..8 works) */
    int group_size; /* -1 = per row; otherwise input columns per group (last one may be ragged) */
    int sym;        /* symmetric quantizer */
    int act_order;  /* desc_act: process columns by decreasing diag(H) */
    int static_groups; /* fit all group params on the original weights before any update */
    float percdamp;    /* relative damping, default 0.01 (of mean diag H) */
    int blocksize;     /* columns per lazy-batch block, default 128 */
    enum gptq_method method;
    /* GPTAQ only: dXX^T = (X_fp - X_q) X_q^T, K x K, accumulated with the same scale as H (e.g.
     * 2/n); entry [a,b] = sum_t dX[t,a] X_q[t,b]. Overwritten (used as workspace for P). */
    float *dxxt;
    float gptaq_alpha; /* GPTAQ scale of the asymmetric term, default 0.25 as in the paper's code */
    float damp_step;   /* added to percdamp at each Cholesky retry, default 0.01 */
    int max_damp_retries; /* default 30; beyond it the Hessian is rejected */
    int threads; /* row-parallel threads for the in-block updates; 0 = online CPUs (max 64) */
    /* Per-group parameter search (quant_search.h) instead of the min/max fit: minimises
     * sum_i (w_i - w_hat_i)^2 / U[i,i]^2, the weight GPTQ's own loss gives column i. Off by
     * default (the reference fit). scale_search_fp16: evaluate scales as stored in fp16;
     * scale_search_signed: symmetric scales may be negative (llama.cpp's Q4_0 trick). */
    int scale_search, scale_search_fp16, scale_search_signed;
    /* Float minimum (asymmetric only): each group is w_hat = scale * q + minv with scale and minv
     * both free (GGUF Q4_1's x = d*q + m), fitted by quant_fmin_group on the same weighted
     * objective (evaluated in fp16 when scale_search_fp16), codes q = round((w - minv) / scale)
     * inside the column loop with GPTQ's error feedback. Outputs gain minv [N*G]. */
    int float_min;
    enum gptq_factor factor; /* default GPTQ_FACTOR_REFERENCE */
};

struct gptq_result {
    int N, K, G;
    uint8_t *q;    /* [N*K] codes 0..maxq, original column order */
    float *scale;  /* [N*G] */
    int32_t *zero; /* [N*G] integer zero points (float_min: the nearest integer zero) */
    float *minv;   /* [N*G] float minimums with opts.float_min, else NULL */
    int32_t
        *g_idx; /* [K] group of each input column (non-monotonic with act-order, dynamic groups) */
    int32_t *perm;    /* [K] act-order processing order (perm[i] = original column), NULL without */
    double loss;      /* sum over all weights of (w - q)^2 / U[i,i]^2 / 2 (reference "Losses") */
    float damp;       /* absolute damping finally added to diag(H) */
    float percdamp;   /* relative damping finally used (opts.percdamp + retries * damp_step) */
    int damp_retries; /* number of failed Cholesky attempts before the one that worked */
    int n_dead;       /* inputs with H[d,d] == 0 (their weights were zeroed) */
    double t_factor;  /* seconds in damping + Cholesky + inverse (+ P for GPTAQ) */
    double t_update;  /* seconds in the column loop (+ the final dequantization) */
    double t_inblock; /* part of t_update outside the lazy-batch GEMMs (blocked kernel) */
};

void gptq_opts_default(struct gptq_opts *o);

/* Quantize W [N out, K in] (row-major f32) with Hessian H [K, K] (symmetric; overwritten: it
 * becomes workspace). On success W holds the dequantized weights W_hat (original column order)
 * and r owns freshly allocated arrays (gptq_result_free). Returns 0, or -1 with as_fail naming the
 * problem ("weight: non-finite value at [n, k]", "hessian: not positive definite ...") -- the
 * caller prefixes the tensor name. */
int gptq_quantize(const struct gptq_opts *o, float *W, int N, int K, float *H,
                  struct gptq_result *r);
/* Same contract, column-by-column kernel (no lazy batch). */
int gptq_quantize_columnwise(const struct gptq_opts *o, float *W, int N, int K, float *H,
                             struct gptq_result *r);
void gptq_result_free(struct gptq_result *r);

/* ---- row blocks: factor once, then quantize the rows of W in blocks (bounded memory) ----
 * Rows of W are independent given U (each row has its own group params), so a caller that cannot
 * hold W in f32 (a 28672 x 8192 weight is 940 MB) converts and quantizes it a block of rows at a
 * time. gptq_plan_init does everything that depends on H only (dead inputs, act-order, damping
 * with retries, U) in place: the plan's U *is* the caller's H buffer, and no second K x K matrix
 * is allocated (a retry restores H from the triangle LAPACK did not touch). gptq_quantize is
 * gptq_plan_init + gptq_plan_rows over all rows: codes, scales and zeros are bit-identical when
 * every block but the last has a multiple of GPTQ_ROW_TILE rows (the kernel's GEMMs work on
 * tiles of that many rows, tests/unit/test_gptq_rows.c); only the loss sum may round differently.
 * Peak memory: H (K^2 floats) + one block of rows + the outputs (codes are 1 byte per weight). */
#define GPTQ_ROW_TILE 256
struct gptq_plan {
    struct gptq_opts o;
    int K, G, gs;
    float *U;       /* the caller's H buffer, now U (row-major upper); borrowed */
    float *P;       /* GPTAQ term (the caller's dxxt buffer), NULL for GPTQ; borrowed */
    uint8_t *dead;  /* [K] 1 where H[d,d] == 0 */
    int32_t *gcol;  /* [K] group of processing position i */
    int32_t *g_idx; /* [K] group of each original input column (as gptq_result.g_idx) */
    int32_t *perm;  /* [K] act-order processing order, NULL without */
    int n_dead, damp_retries;
    float damp, percdamp;
    double t_factor;
};
/* Validate (N, K only for the shape checks), symmetrize H from its lower triangle, factor it. 0,
 * or -1 with as_fail (the plan then owns nothing). H (and o->dxxt) must outlive the plan. */
int gptq_plan_init(struct gptq_plan *p, const struct gptq_opts *o, int N, int K, float *H);
/* Quantize `rows` rows of W (row-major f32 [rows, K], overwritten with W_hat) whose first row is
 * row `row0` of the weight (for error messages): codes q [rows*K], scale and zero [rows*G] of
 * these rows; adds their loss to *loss. 0, or -1 with as_fail ("weight: non-finite value ..."). */
int gptq_plan_rows(const struct gptq_plan *p, float *W, int rows, int row0, uint8_t *q,
                   float *scale, int32_t *zero, double *loss);
/* Same, with the float minimums minv [rows*G] (required when the plan's opts.float_min). */
int gptq_plan_rows_min(const struct gptq_plan *p, float *W, int rows, int row0, uint8_t *q,
                       float *scale, int32_t *zero, float *minv, double *loss);
void gptq_plan_free(struct gptq_plan *p);

/* Flop count used by the benchmark: Cholesky K^3/3, inverse (potri) 2K^3/3, Cholesky of the
 * inverse K^3/3 (REVERSE: Cholesky K^3/3 + trtri K^3/3), column updates N*K^2 (one multiply-add per
 * weight pair i < j). GPTAQ adds the two triangular products for P (K^3 each) and a second update
 * term (N*K^2). */
double gptq_flops(int N, int K, enum gptq_method m, enum gptq_factor f);

#endif
