/* forward: the decoder forward pass over a batch of T tokens, with a KV cache.
 *
 * Every step is an explicit op on [T, dim] row-major matrices held in a run state (llama2.c's
 * RunState, batched): RMSNorm -> q/k/v linears (+bias, + per-head q/k norm) -> rotate-half RoPE
 * (HF layout) -> causal GQA attention against the cache -> o linear -> residual -> RMSNorm ->
 * SiLU(gate) * up -> down -> residual; final norm and lm_head. Linears over T > 1 rows use
 * OpenBLAS sgemm (X[T,in] . W^T); single-token decode uses plain loops (small matrices).
 * Tokens go at positions s->pos .. s->pos+T-1, so a prefill followed by one-token calls decodes.
 * A hook sees each linear's input matrix before its matmul (calibration statistics). */
#ifndef AS_FORWARD_H
#define AS_FORWARD_H

#include "model.h"

struct as_block_mask; /* kernel_attn.h */

struct as_hooks {
    /* x is the [T, in_dim] input shared by the linears of `group` in `layer`. */
    void (*on_linear_input)(void *ctx, int layer, enum as_linear_group group, const float *x, int T,
                            int in_dim);
    void *ctx;
};

enum as_logits_mode { AS_LOGITS_NONE, AS_LOGITS_LAST, AS_LOGITS_ALL };

struct as_run_state {
    int max_T;      /* tokens per forward call */
    int max_seq;    /* KV cache length */
    int pos;        /* positions already in the cache */
    int T;          /* tokens of the last call */
    float *x;       /* [T, hidden] residual stream */
    float *xb;      /* [T, hidden] normed input */
    float *q;       /* [T, n_heads*head_dim] */
    float *k, *v;   /* [T, kv_dim] (the new rows, before they are copied into the cache) */
    float *att_out; /* [T, n_heads*head_dim] */
    float *att;     /* [T, max_seq] scores of one head */
    float *att_dec; /* [att_dec_n, max_seq] decode scores, one row per thread (lazy) */
    int att_dec_n;
    float *hb, *hb2; /* [T, intermediate] */
    float *logits;   /* [T, vocab] (row 0 holds the last position in AS_LOGITS_LAST mode) */
    float *key_cache, *value_cache; /* [n_layers, max_seq, kv_dim] */
    float *rope_cos, *rope_sin;     /* [max_seq, head_dim/2], attn_factor applied */
    /* optional: residual stream entering each layer and after the last, [n_layers+1][max_T*hidden]
     */
    float *layer_acts;
    /* optional activation quantization (fpquant.h): returns the matrix a group's linears multiply
     * instead of x, e.g. an FP8 fake-quantized copy; NULL (as_state_new's default) leaves the
     * pass unchanged. Called after the hooks' on_linear_input, which sees the unquantized x. */
    const float *(*quant_linear_input)(void *qctx, int layer, enum as_linear_group group,
                                       const float *x, int T, int in_dim);
    void *qctx;
    /* optional KV-cache hook (FP8 KV simulation, as-calib's KV statistics): sees the T new rows
     * of layer `layer` right after they are written to the cache (keys after RoPE), k and v
     * [T, kv_dim] pointing into the cache, and may rewrite them in place (attention then reads
     * what the hook left). NULL leaves the pass unchanged. */
    void (*on_kv)(void *kvctx, int layer, float *k, float *v, int T, int kv_dim);
    void *kvctx;
    /* optional sparse prefill attention (sparse_attn.h): on a first fill (pos 0, T > 1) returns
     * the block mask of layer `layer` (q [T, n_heads*hd] after RoPE, k/v the layer's cache), or
     * NULL for dense. Decode and continued fills stay dense. */
    const struct as_block_mask *(*attn_mask)(void *actx, int layer, const float *q, const float *k,
                                             const float *v, int T);
    void *attn_mask_ctx;
    /* 1: calls of T > 1 tokens compute every row exactly as T calls of one token would (decode's
     * matvec and attention loops, each row's sums in the same order), so logits and cache are
     * bit-identical to one-token decoding: speculative verification (draft_spec.h) then emits
     * byte-identical greedy output. The weights are still streamed once per call. Default 0. */
    int rowwise;
};

#define AS_STATE_KEEP_ACTS 1

struct as_run_state *as_state_new(const struct as_model *m, int max_T, int max_seq, int flags);
void as_state_free(struct as_run_state *s);
void as_state_reset(struct as_run_state *s); /* empty the KV cache */

/* Run T tokens at positions s->pos.., append them to the cache, compute logits per `mode`.
 * Returns 0, or -1 with as_fail() (token out of range, cache full, T > max_T). */
/* fn(arg, part, n) for part 0..n-1 on the engine's thread pool, n = min(max_parts, the
 * OpenBLAS thread count); inline when the pool is already running a job. For work next to the
 * forward pass (sparse attention's block selection). */
void as_engine_parallel(void (*fn)(void *arg, int part, int n_parts), void *arg, int max_parts);

int as_forward(const struct as_model *m, struct as_run_state *s, const int *tokens, int T,
               enum as_logits_mode mode, const struct as_hooks *hooks);

/* One decode step of B independent sequences (batched generation): token tokens[b] at position
 * seq[b]->pos of sequence b, each with its own run state and KV cache; w is a scratch state of
 * max_T >= B on the same model whose cache goes unused (as_state_new(m, B, B, 0)). Every weight
 * matrix is streamed once for the B rows; row b's logits (in seq[b]->logits, row 0) and cache
 * are bit-identical to as_forward(m, seq[b], &tokens[b], 1, AS_LOGITS_LAST, NULL), so a batch
 * generates what one-at-a-time generation does. f32 weights only (packed linears refused). */
int as_forward_batch(const struct as_model *m, struct as_run_state *w, struct as_run_state **seq,
                     const int *tokens, int B);

/* One whole decoder layer l on the residual stream s->x [T, hidden], in place: what as_forward
 * does per layer. For callers that carry each layer's input themselves (as-calib's
 * true-sequential mode): tokens sit at positions s->pos.. (not advanced). */
void as_forward_layer(const struct as_model *m, struct as_run_state *s, int l, int T,
                      const struct as_hooks *hk);

/* The two halves of decoder layer l, for callers that evaluate a layer piece by piece with
 * their own weights (AWQ's scale search): L is m->layers[l] or a modified copy. xn [T, hidden]
 * is the block's normed input (RMSNorm of the residual stream), out [T, hidden] receives the
 * block's output before the residual add (out may alias xn). Tokens sit at positions
 * s->pos..s->pos+T-1 (s->pos is not advanced); attention writes their k/v into layer l's cache
 * and attends to cache rows 0..s->pos+T-1. Scratch: s->q/k/v/att/att_out, s->hb/hb2 (T <=
 * s->max_T). The hooks see xn, the attention output and the SwiGLU output as in as_forward. */
void as_layer_attention(const struct as_model *m, const struct as_layer_weights *L,
                        struct as_run_state *s, int l, const float *xn, int T, float *out,
                        const struct as_hooks *hk);
void as_layer_mlp(const struct as_model *m, const struct as_layer_weights *L,
                  struct as_run_state *s, int l, const float *xn, int T, float *out,
                  const struct as_hooks *hk);

/* The ops, exposed for tests and for a later backward pass. */
void as_op_rmsnorm(float *out, const float *x, const float *w, int T, int dim, float eps);
/* out[T, rows] = x[T, cols] . W[rows, cols]^T (+ bias) */
void as_op_linear(float *out, const float *x, const float *W, const float *bias, int T, int cols,
                  int rows);
/* The same product as T single-token matvecs on the engine's pool (each row's sums as decode
 * computes them), weights streamed once for all T: for a few rows (speculative verification,
 * a draft's chain), where sgemm's packing and its threads' spinning after the call cost more
 * than the product. */
void as_op_linear_rows(float *out, const float *x, const float *W, const float *bias, int T,
                       int cols, int rows);
void as_op_rope(float *x, int T, int n_heads, int head_dim, int pos0, const float *cos,
                const float *sin);
void as_op_swiglu(float *gate, const float *up, size_t n); /* gate = silu(gate) * up */
/* Causal GQA attention of T queries at positions pos0.. against key/value rows 0..pos0+T-1 (the
 * engine's multi-token path): q, out [T, n_heads*head_dim], kc, vc [rows, n_kv_heads*head_dim].
 * Head h's softmax probabilities [T, ld] (ld >= pos0+T) are left at att + h*att_head_stride, so
 * a backward pass can keep them (stride 0: one buffer reused for every head). */
void as_op_attention(const struct as_model_config *c, const float *q, const float *kc,
                     const float *vc, float *out, float *att, int ld, size_t att_head_stride, int T,
                     int pos0);

#endif
