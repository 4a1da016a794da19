/* train_optim: a list of trainable parameters with gradients, AdamW over it, learning-rate
 * schedules, global-norm clipping.
 *
 * A parameter is any f32 array the caller owns (model weights, a quantizer's scales, a draft
 * head) with a gradient array of the same size; the list names them so checkpoints (train_ckpt.h)
 * can save and restore any parameter set with the optimizer's moments. */
#ifndef AS_TRAIN_OPTIM_H
#define AS_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

struct as_param {
    char name[160];
    float *w, *g; /* value and gradient, n floats each */
    size_t n;
    int rows, cols; /* shape for checkpoints (rows = 1 for vectors) */
    int decay;      /* AdamW weight decay applies (matrices); 0 for norms, scales */
};

struct as_params {
    struct as_param *p;
    int n, cap;
};

void as_params_init(struct as_params *ps);
void as_params_free(struct as_params *ps); /* the list only: w and g belong to the caller */
/* Append; returns its index. */
int as_params_add(struct as_params *ps, const char *name, float *w, float *g, int rows, int cols,
                  int decay);
void as_params_zero_grad(struct as_params *ps);
/* sqrt of the sum of squares of every gradient (double accumulation, list order). */
double as_params_grad_norm(const struct as_params *ps);
/* First parameter whose gradient holds a NaN or Inf, or -1. */
int as_params_nonfinite_grad(const struct as_params *ps);
/* Scale every gradient so the global norm is at most max_norm (max_norm <= 0: no clipping).
 * Returns the norm before clipping. */
double as_params_clip(struct as_params *ps, double max_norm);

struct as_adamw_cfg {
    float beta1, beta2, eps, weight_decay;
};

struct as_adamw {
    struct as_adamw_cfg cfg;
    int64_t step; /* updates done */
    int n;
    float **m, **v; /* first and second moments per parameter */
};

struct as_adamw *as_adamw_new(const struct as_params *ps, const struct as_adamw_cfg *cfg);
void as_adamw_free(struct as_adamw *o);
/* One update at learning rate lr: decoupled decay w -= lr wd w (decay params), then
 * w -= lr mhat / (sqrt(vhat) + eps) with bias-corrected moments (PyTorch AdamW). */
void as_adamw_step(struct as_adamw *o, struct as_params *ps, float lr);

enum as_sched_kind { AS_SCHED_CONSTANT, AS_SCHED_LINEAR, AS_SCHED_COSINE, AS_SCHED_WSD };

struct as_sched {
    enum as_sched_kind kind;
    int64_t total;   /* optimizer steps of the run */
    int64_t warmup;  /* linear warmup steps (any kind): lr = base (s+1)/warmup */
    int64_t decay;   /* WSD: the last `decay` steps decay by cosine (stable before) */
    float min_ratio; /* floor of the decay, as a fraction of base */
};

int as_sched_parse(const char *name); /* "constant", "linear", "cosine", "wsd"; -1 if unknown */
const char *as_sched_name(enum as_sched_kind k);
/* Learning rate of optimizer step s (0-based). */
float as_sched_lr(const struct as_sched *s, float base, int64_t step);

#endif
