/* fakequant_model: one fake quantizer (fakequant.h) per decoder linear of a model, as the
 * training engine's weight map (train_model.h), with the learnable scales as parameters.
 * Embeddings and lm_head stay full precision. */
#ifndef AS_FAKEQUANT_MODEL_H
#define AS_FAKEQUANT_MODEL_H

#include "fakequant.h"
#include "model.h"
#include "train_model.h"
#include "train_optim.h"

struct as_fq_model {
    int n_layers;
    struct as_fq (*q)[AS_LIN_COUNT]; /* [n_layers][AS_LIN_COUNT] */
};

/* Quantizers for every linear of m (group: INT32_MIN for the scheme's default). */
int as_fq_model_init(struct as_fq_model *fm, const struct as_model *m, enum as_fq_scheme s,
                     int group);
void as_fq_model_free(struct as_fq_model *fm);
/* The weight map to give as_train_set_map. */
struct as_weight_map as_fq_model_map(struct as_fq_model *fm);
/* Append the learnable scales ("model.layers.N.self_attn.q_proj.weight_alpha", [rows]) to ps;
 * returns how many. */
int as_fq_model_params(struct as_fq_model *fm, struct as_params *ps);
/* Set lambda of every quantizer (tequila's dead-zone lambda, sherry's Arenas lambda_t). */
void as_fq_model_set_lambda(struct as_fq_model *fm, float lambda);

#endif
