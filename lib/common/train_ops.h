/* train_ops: the backward of each decoder op of forward.h, for the training engine.
 *
 * Each function takes the forward op's inputs (and, where cheaper, its saved outputs) and the
 * gradient of the loss with respect to the op's output dy, and ACCUMULATES (+=) the gradients of
 * the op's inputs and parameters: a residual stream, a shared KV head or a tied embedding sums
 * the gradients of its consumers without copies. A NULL gradient pointer skips that term.
 * Layouts are forward.h's: row-major [T, dim] activations, [rows, cols] = [out, in] weights. */
#ifndef AS_TRAIN_OPS_H
#define AS_TRAIN_OPS_H

#include <stddef.h>

#include "model.h"

/* y = w * x / sqrt(mean(x^2) + eps), per row of x [T, dim]. */
void as_bwd_rmsnorm(float *dx, float *dw, const float *dy, const float *x, const float *w, int T,
                    int dim, float eps);
/* y[T, rows] = x[T, cols] . W^T + b. dx += dy . W, dW += dy^T . x, db += sum_t dy (BLAS). */
void as_bwd_linear(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                   int T, int cols, int rows);
/* Rotate-half RoPE at positions pos0..: the gradient is the inverse rotation, applied to dx in
 * place (dx holds dy on entry). */
void as_bwd_rope(float *dx, int T, int n_heads, int head_dim, int pos0, const float *cos,
                 const float *sin);
/* h = silu(g) * u over n elements: dg += dh * u * s(g) (1 + g (1 - s(g))), du += dh * silu(g). */
void as_bwd_swiglu(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
/* Causal GQA attention of T queries at positions 0..T-1 over keys 0..T-1 (as_op_attention with
 * pos0 = 0): q [T, n_heads*hd], k, v [T, kv_dim] after RoPE, P the saved probabilities (head h at
 * P + h*p_stride, rows of length ld), dout [T, n_heads*hd]. dq, dk, dv accumulate; scratch holds
 * T*T floats. */
void as_bwd_attention(const struct as_model_config *c, float *dq, float *dk, float *dv,
                      const float *dout, const float *q, const float *k, const float *v,
                      const float *P, int ld, size_t p_stride, int T, float *scratch);

#endif
