/* awq: activation-aware weight quantization (AWQ; REFERENCE.md "AWQ", AutoAWQ's quantizer.py).
 *
 * Per decoder layer, four scaling groups (prev op -> scaled linears, compared output):
 *   input_layernorm -> q,k,v (attention output); v_proj -> o_proj (o output; only when the two
 *   weights have the same shape, i.e. not under GQA); post_attention_layernorm -> gate,up (MLP
 *   output); up_proj -> down_proj (down output). They are indexed by the as_linear_group of the
 *   scaled linears' input (AS_GROUP_ATTN_QKV, _ATTN_O, _MLP_GATE_UP, _MLP_DOWN).
 * For each group a grid of ratios a = i/n_grid gives s = x_mean^a / (w_mean^(1-a) + 1e-4)
 * (duo scaling) or x_mean^a, clamped >= 1e-4 and normalised by sqrt(max s * min s); the trial
 * weights Q(W diag s) diag(1/s) replace the group's linears and the block output on cached
 * inputs is compared with full precision (MSE); the argmin is kept. The scales are then folded
 * (previous norm weight or previous linear's output rows /= s, the group's columns *= s), so the
 * layer computes the same function before rounding, and every linear but q/k gets a clipping
 * search of its per-(row, group) range. Q is AWQ's rounding (quant_int_fit_group_awq).
 * Every division is guarded: all-zero groups, dead channels and zero means give finite scales. */
#ifndef AS_AWQ_H
#define AS_AWQ_H

#include <stdint.h>

#include "model.h"
#include "pack_formats.h"

struct awq_opts {
    int bits;              /* 2..8 (4) */
    int group_size;        /* input columns per group; <= 0: one group per row (128) */
    int sym;               /* AWQ default: asymmetric (zero point) */
    int duo_scaling;       /* 1 (AutoAWQ default): s = x^a / (w^(1-a) + 1e-4); 0: s = x^a */
    int n_grid;            /* ratios a = i/n_grid, i = 0..n_grid-1 (20) */
    int clip;              /* 1: clipping search on every linear but q/k */
    int clip_tokens;       /* input rows sampled for the clipping error (512) */
    int clip_grid;         /* shrink steps m = m0 (1 - i/clip_grid) (20) */
    float clip_max_shrink; /* i < clip_max_shrink * clip_grid (0.5: 10 steps, down to 0.55 m0) */
};
void awq_opts_default(struct awq_opts *o);

/* ---- the math, on plain matrices (W [N out, K in] row-major) ---- */

/* out = Q(W) with AWQ's rounding per (row, group); out may alias W. */
void awq_fake_quant(const float *W, int N, int K, const struct awq_opts *o, float *out);
/* w_mean[j] = mean over the rows of the n_mats matrices stacked along the output dim of
 * |w| / (max |w| of its (row, group) + 1e-6): AutoAWQ's per-column weight magnitude. */
void awq_w_mean(const float *const *W, const int *rows, int n_mats, int K, int group_size,
                float *w_mean);
/* The scales of grid ratio alpha (w_mean unused unless duo). Always finite and > 0. */
void awq_scales(const float *x_mean, const float *w_mean, int K, float alpha, int duo, float *s);
/* out = Q(W diag s) diag(1/s), the weights AWQ evaluates for scales s. */
void awq_trial_weight(const float *W, int N, int K, const float *s, const struct awq_opts *o,
                      float *out);
/* Mean over the n rows of X [n, K] and the N outputs of (X Dᵀ)², D [N, K]. When gram != NULL it
 * must be XᵀX [K, K] and is used instead of X (cheaper when n > K; same value). */
double awq_linear_loss(const float *X, const float *gram, int n, int K, const float *D, int N);
/* Clipping search, in place: for every (row, group) of W, m = m0 (1 - i/clip_grid) with m0 the
 * group's max |w|, keeping the m whose Q(clamp(w, -m, m)) minimises the mean over the rows of X
 * [n, K] (the linear's actual inputs) of (Σ_group x (Q(clamp w) - w))²; W is clamped to it.
 * max_val [N*G] receives the chosen m (may be NULL). -1 with as_fail on bad arguments. */
int awq_clip(float *W, int N, int K, const float *X, int n, const struct awq_opts *o,
             float *max_val);
/* Folding: v[j] /= s[j] (norm weight, bias, or one row); W[:, j] *= s[j]; W[i, :] /= s[i];
 * H' = diag(1/s) H diag(1/s) (Hessian-like [K,K] statistics of the input x / s). */
void awq_div_vec(float *v, const float *s, int K);
void awq_scale_cols(float *W, int N, int K, const float *s);
void awq_div_rows(float *W, int N, int K, const float *s);
void awq_scale_sym_inv(float *H, int K, const float *s);
/* Integer codes of W with AWQ's rounding (the emitted quantizer); allocates ql's arrays. */
int awq_quantize(const float *W, int N, int K, const struct awq_opts *o, struct as_qlinear *ql);
void awq_qlinear_free(struct as_qlinear *ql);

/* ---- one decoder layer ---- */

struct awq_layer_report {
    int applied[AS_GROUP_COUNT];         /* 0: group skipped (v->o under GQA) */
    float alpha[AS_GROUP_COUNT];         /* chosen grid ratio */
    double loss[AS_GROUP_COUNT];         /* compared-output MSE at the chosen scales */
    double loss_rtn[AS_GROUP_COUNT];     /* same with s = 1 (plain AWQ-rounding RTN) */
    float *scales[AS_GROUP_COUNT];       /* [input dim of the group], NULL when skipped */
    int clipped[AS_LIN_COUNT];           /* 1 for the linears that had a clipping search */
    double seconds_search, seconds_clip; /* wall time */
};

/* Search, fold and clip layer l of m in place (m->layers[l] norms and linears change; every other
 * layer is untouched). X [S*T, hidden]: the residual stream entering layer l for S whole
 * sequences of T tokens (positions 0..T-1), from the full-precision model. x_mean[g]: mean |x|
 * per input channel of group g over the calibration set (act-mean-abs), or NULL to take it from
 * the S*T cached rows. Returns 0, or -1 with as_fail. */
int awq_layer(struct as_model *m, int l, const float *X, int S, int T,
              const float *const x_mean[AS_GROUP_COUNT], const struct awq_opts *o,
              struct awq_layer_report *rep);
void awq_layer_report_free(struct awq_layer_report *rep);

#endif
