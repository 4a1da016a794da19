/* draft_model: the Eagle3 draft head (one decoder layer on target features), its forward pass
 * with its own KV cache, and the checkpoint directory vLLM and SGLang load.
 *
 * Architecture (../shared/reference/eagle3.md section 1, vLLM llama_eagle3.py with
 * norm_before_residual false): per position,
 *   g  = fc(concat(a_low, a_mid, a_high))       [3 H_t] -> [H], only on target features
 *   x  = concat(RMSNorm_in(embed(tok)), RMSNorm_hid(g))   [2H], embedding first
 *   h1 = g + o(Attn(RoPE(q x), RoPE(k x), v x))           q/k/v take 2H inputs, GQA
 *   h2 = h1 + down(silu(gate y) * up y),  y = RMSNorm_post(h1)
 *   logits = lm_head(RMSNorm_final(h2))                   [Vd]; draft id i is target id i + d2t[i]
 * A chained step feeds h2 (pre-norm) back as g, with no fc. The taps a_low/mid/high are the
 * target's residual stream entering layers (2, L/2, L-3) (vLLM's convention).
 *
 * Checkpoint: config.json (architectures ["LlamaForCausalLMEagle3"], model_type llama,
 * num_hidden_layers 1, draft_vocab_size, tie_word_embeddings false, rope_theta as trained,
 * rope_scaling null, eagle_aux_hidden_state_layer_ids [2, L/2, L-3], and "as_target_layers" L so
 * a draft for another depth is refused) and model.safetensors with names without "model.":
 * fc.weight, midlayer.*, norm.weight, lm_head.weight, d2t (I64), t2d (BOOL). The embedding is the
 * target's (frozen in training), not shipped: vLLM then shares the target's. */
#ifndef AS_DRAFT_MODEL_H
#define AS_DRAFT_MODEL_H

#include <stdint.h>

#include "dtype.h"
#include "model.h"

struct as_draft {
    struct as_model_config cfg; /* hidden, heads, head_dim, intermediate, vocab (target V), rope */
    int vd;                     /* draft vocabulary */
    int target_hidden;          /* H_t: fc takes 3 H_t */
    int target_layers;          /* L of the target it was made for (0: unknown) */
    int taps[3];                /* target layers whose input is tapped (low, mid, high) */
    float *fc;                  /* [H, 3 H_t] */
    float *in_norm, *hid_norm, *post_norm, *norm; /* [H] */
    float *wq, *wk, *wv;                          /* [nh*hd, 2H], [nkv*hd, 2H] x2 */
    float *wo;                                    /* [H, nh*hd] */
    float *wgate, *wup, *wdown;                   /* [I, H] x2, [H, I] */
    float *lm_head;                               /* [Vd, H] */
    int64_t *d2t;                                 /* [Vd]: target id = i + d2t[i] */
    const float *embed;                           /* [V, H]: the target's (borrowed) */
    float *inv_freq;                              /* [head_dim/2] */
    float attn_factor;
};

/* The vLLM default taps of an L-layer target: (2, L/2, L-3), clamped into 0..L-1. */
void as_draft_default_taps(int n_layers, int taps[3]);

/* A random draft for target m (uniform 1/sqrt(fan_in) weights, unit norms; deterministic in
 * seed), Vd = vd draft tokens mapped to `used` (vd ascending target ids; NULL: 0..vd-1). */
struct as_draft *as_draft_new_random(const struct as_model *m, int vd, const int32_t *used,
                                     uint64_t seed);
/* Load DIR and check it against target m (hidden size, vocabulary, layer count, taps): NULL
 * with as_fail naming the directory and the mismatch. Borrows m's embedding. */
struct as_draft *as_draft_load(const char *dir, const struct as_model *m);
/* Write DIR atomically (config.json, model.safetensors; weights in dt: F32, BF16 or F16). */
int as_draft_save(const struct as_draft *d, const char *dir, enum as_dtype dt);
void as_draft_free(struct as_draft *d);
/* Check a draft against a target; -1 with as_fail("draft DIR: ...") naming the mismatch. */
int as_draft_check_target(const struct as_draft *d, const struct as_model *m, const char *dir);

/* Forward state: its own KV cache of max_seq positions, calls of up to max_T tokens. */
struct as_draft_state {
    int max_T, max_seq, pos;
    int T;                      /* rows of the last call */
    float *kc, *vc;             /* [max_seq, kv_dim] */
    float *rope_cos, *rope_sin; /* [max_seq, head_dim/2] */
    float *g, *x2, *q, *k, *v, *att_out, *att, *h, *xb, *hb, *hb2;
    float *hidden; /* [T, H]: h2 of the last call (pre-norm), the next chained step's input */
    float *logits; /* [T, Vd] of the last call */
};
struct as_draft_state *as_draft_state_new(const struct as_draft *d, int max_T, int max_seq);
void as_draft_state_free(struct as_draft_state *s);

/* T positions at s->pos.. (appended to the cache, pos advanced): tokens [T] (target ids), and
 * either feats [T, 3 H_t] (low|mid|high, through fc) or hidden [T, H] (a previous call's
 * s->hidden rows, chained). Fills s->hidden and s->logits. -1 with as_fail on a token out of
 * range or a full cache. */
int as_draft_forward(const struct as_draft *d, struct as_draft_state *s, const int *tokens,
                     const float *feats, const float *hidden, int T);

/* Draft id -> target id. */
static inline int as_draft_to_target(const struct as_draft *d, int i) {
    return (int)(i + d->d2t[i]);
}

#endif
