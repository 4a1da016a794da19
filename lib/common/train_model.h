/* train_model: training forward and backward of the llama decoder (model.h), on windows of T
 * tokens at positions 0..T-1 (no KV cache).
 *
 * Memory: the forward keeps only the residual stream entering each layer ([n_layers+1, T,
 * hidden]) and the final norm's output and logits; the backward recomputes each layer's
 * internals (norms, q/k/v after RoPE, attention probabilities of all heads [n_heads, T, T],
 * gate/up/SwiGLU) from the kept layer input, one layer at a time, just before differentiating
 * it ("recompute per layer": one layer's activations live at a time, the forward runs twice).
 * The ops are forward.h's (as_op_rmsnorm, as_op_linear, as_op_rope, as_op_attention,
 * as_op_swiglu), so the training forward is the engine's forward.
 *
 * Linear weights may be replaced in both passes by a weight map (fake quantization): map()
 * writes the effective weight (and optionally a per-output bias) the linear multiplies; unmap()
 * turns the effective weight's gradient (and the bias's) into the latent weight's gradient
 * (straight-through estimators, quantizer scale gradients). Without a map the linears use the
 * model's weights and their gradients accumulate directly.
 *
 * Supported: llama and mistral layouts (no q/k/v biases, no per-head q/k norm), any GQA,
 * tied or untied lm_head. Deterministic for a given thread count. */
#ifndef AS_TRAIN_MODEL_H
#define AS_TRAIN_MODEL_H

#include "forward.h"
#include "model.h"
#include "train_optim.h"

/* Gradients with the model's layout (lm_head == embed when the model ties them). */
struct as_model_grads {
    float *embed, *norm, *lm_head;
    struct as_layer_weights *layers; /* attn_norm, ffn_norm, w[] */
};

struct as_weight_map {
    /* W_eff [rows, cols] from W; *has_bias set to 1 if b_eff [rows] was written */
    void (*map)(void *ctx, int layer, enum as_linear which, const float *W, int rows, int cols,
                float *W_eff, float *b_eff, int *has_bias);
    /* gW += d/dW given gW_eff (and gb_eff when the map wrote a bias) */
    void (*unmap)(void *ctx, int layer, enum as_linear which, const float *W, int rows, int cols,
                  const float *gW_eff, const float *gb_eff, float *gW);
    void *ctx;
};

struct as_train_state; /* opaque: buffers for windows of up to max_T tokens */

/* Fails (as_fail, NULL) on a model the engine cannot differentiate (qwen2 biases, qwen3 norms). */
struct as_train_state *as_train_state_new(const struct as_model *m, int max_T);
void as_train_state_free(struct as_train_state *st);
/* The [T, vocab] logits of the last as_train_forward (callers may overwrite them with dlogits). */
float *as_train_logits(struct as_train_state *st);
void as_train_set_map(struct as_train_state *st, const struct as_weight_map *map); /* NULL: none */

struct as_model_grads *as_model_grads_new(const struct as_model *m);
void as_model_grads_free(const struct as_model *m, struct as_model_grads *g);
/* Append every weight of m with its gradient in g (HF names; decay on matrices only) to ps.
 * Returns the number added. */
int as_model_params(struct as_model *m, struct as_model_grads *g, struct as_params *ps);

/* Forward of tokens[0..T) (0 < T <= max_T): logits of every position into as_train_logits().
 * Returns 0, or -1 (token out of range). */
int as_train_forward(const struct as_model *m, struct as_train_state *st, const int *tokens, int T);
/* Backward of the last forward given dlogits [T, vocab] (may be as_train_logits()): adds the
 * gradients of every weight to g. */
void as_train_backward(const struct as_model *m, struct as_train_state *st,
                       struct as_model_grads *g, const float *dlogits);

#endif
