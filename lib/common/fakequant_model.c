/* fakequant_model: per-linear fake quantizers as a weight map (see fakequant_model.h). */
#include "fakequant_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

int as_fq_model_init(struct as_fq_model *fm, const struct as_model *m, enum as_fq_scheme s,
                     int group) {
    fm->n_layers = m->cfg.n_layers;
    fm->q = as_xcalloc((size_t)fm->n_layers, sizeof *fm->q);
    for (int l = 0; l < fm->n_layers; l++)
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            int r, c;
            as_model_linear_shape(m, w, &r, &c);
            if (as_fq_init(&fm->q[l][w], s, m->layers[l].w[w], r, c, group) != 0) {
                char name[128];
                as_linear_tensor_name(l, w, name, sizeof name);
                as_fail_prefix("tensor %s: ", name);
                as_fq_model_free(fm);
                return -1;
            }
        }
    return 0;
}

void as_fq_model_free(struct as_fq_model *fm) {
    if (!fm->q) return;
    for (int l = 0; l < fm->n_layers; l++)
        for (int w = 0; w < AS_LIN_COUNT; w++)
            as_fq_free(&fm->q[l][w]);
    free(fm->q);
    fm->q = NULL;
}

static void fm_map(void *ctx, int layer, enum as_linear which, const float *W, int rows, int cols,
                   float *W_eff, float *b_eff, int *has_bias) {
    (void)rows, (void)cols;
    struct as_fq_model *fm = ctx;
    as_fq_forward(&fm->q[layer][which], W, W_eff, b_eff, has_bias);
}

static void fm_unmap(void *ctx, int layer, enum as_linear which, const float *W, int rows, int cols,
                     const float *gW_eff, const float *gb_eff, float *gW) {
    (void)rows, (void)cols;
    struct as_fq_model *fm = ctx;
    as_fq_backward(&fm->q[layer][which], W, gW_eff, gb_eff, gW);
}

struct as_weight_map as_fq_model_map(struct as_fq_model *fm) {
    return (struct as_weight_map){fm_map, fm_unmap, fm};
}

int as_fq_model_params(struct as_fq_model *fm, struct as_params *ps) {
    int n0 = ps->n;
    char name[160], base[128];
    for (int l = 0; l < fm->n_layers; l++)
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            struct as_fq *q = &fm->q[l][w];
            if (!q->alpha) continue;
            as_linear_tensor_name(l, w, base, sizeof base);
            snprintf(name, sizeof name, "%s_alpha", base);
            as_params_add(ps, name, q->alpha, q->galpha, 1, q->rows, 0);
        }
    return ps->n - n0;
}

void as_fq_model_set_lambda(struct as_fq_model *fm, float lambda) {
    for (int l = 0; l < fm->n_layers; l++)
        for (int w = 0; w < AS_LIN_COUNT; w++)
            fm->q[l][w].lambda = lambda;
}
