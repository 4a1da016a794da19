/* train_optim: parameters, AdamW, schedules (see train_optim.h). */
#include "train_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

void as_params_init(struct as_params *ps) {
    memset(ps, 0, sizeof *ps);
}

void as_params_free(struct as_params *ps) {
    free(ps->p);
    as_params_init(ps);
}

int as_params_add(struct as_params *ps, const char *name, float *w, float *g, int rows, int cols,
                  int decay) {
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->p = as_xrealloc(ps->p, (size_t)ps->cap * sizeof *ps->p);
    }
    struct as_param *p = &ps->p[ps->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->w = w, p->g = g, p->rows = rows, p->cols = cols, p->decay = decay;
    p->n = (size_t)rows * cols;
    return ps->n++;
}

void as_params_zero_grad(struct as_params *ps) {
    for (int i = 0; i < ps->n; i++)
        memset(ps->p[i].g, 0, ps->p[i].n * sizeof(float));
}

double as_params_grad_norm(const struct as_params *ps) {
    double s = 0;
    for (int i = 0; i < ps->n; i++)
        for (size_t j = 0; j < ps->p[i].n; j++)
            s += (double)ps->p[i].g[j] * ps->p[i].g[j];
    return sqrt(s);
}

int as_params_nonfinite_grad(const struct as_params *ps) {
    for (int i = 0; i < ps->n; i++)
        for (size_t j = 0; j < ps->p[i].n; j++)
            if (!isfinite(ps->p[i].g[j])) return i;
    return -1;
}

double as_params_clip(struct as_params *ps, double max_norm) {
    double norm = as_params_grad_norm(ps);
    if (max_norm > 0 && norm > max_norm) {
        float k = (float)(max_norm / (norm + 1e-6)); /* PyTorch clip_grad_norm_ */
        for (int i = 0; i < ps->n; i++)
            for (size_t j = 0; j < ps->p[i].n; j++)
                ps->p[i].g[j] *= k;
    }
    return norm;
}

struct as_adamw *as_adamw_new(const struct as_params *ps, const struct as_adamw_cfg *cfg) {
    struct as_adamw *o = as_xcalloc(1, sizeof *o);
    o->cfg = *cfg;
    o->n = ps->n;
    o->m = as_xcalloc((size_t)ps->n, sizeof(float *));
    o->v = as_xcalloc((size_t)ps->n, sizeof(float *));
    for (int i = 0; i < ps->n; i++) {
        o->m[i] = as_xcalloc(ps->p[i].n, sizeof(float));
        o->v[i] = as_xcalloc(ps->p[i].n, sizeof(float));
    }
    return o;
}

void as_adamw_free(struct as_adamw *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++)
        free(o->m[i]), free(o->v[i]);
    free(o->m), free(o->v), free(o);
}

void as_adamw_step(struct as_adamw *o, struct as_params *ps, float lr) {
    const struct as_adamw_cfg *c = &o->cfg;
    o->step++;
    double bc1 = 1.0 - pow(c->beta1, (double)o->step), bc2 = 1.0 - pow(c->beta2, (double)o->step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    for (int i = 0; i < ps->n && i < o->n; i++) {
        struct as_param *p = &ps->p[i];
        float *m = o->m[i], *v = o->v[i];
        float keep = p->decay ? 1.0f - lr * c->weight_decay : 1.0f;
        for (size_t j = 0; j < p->n; j++) {
            float g = p->g[j];
            m[j] = c->beta1 * m[j] + (1.0f - c->beta1) * g;
            v[j] = c->beta2 * v[j] + (1.0f - c->beta2) * g * g;
            float denom = sqrtf(v[j]) / bc2_sqrt + c->eps;
            p->w[j] = p->w[j] * keep - step_size * m[j] / denom;
        }
    }
}

static const char *sched_names[] = {"constant", "linear", "cosine", "wsd"};

int as_sched_parse(const char *name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, sched_names[i]) == 0) return i;
    return -1;
}

const char *as_sched_name(enum as_sched_kind k) {
    return (unsigned)k < 4 ? sched_names[k] : "?";
}

float as_sched_lr(const struct as_sched *s, float base, int64_t step) {
    if (s->warmup > 0 && step < s->warmup) return base * (float)(step + 1) / (float)s->warmup;
    double mr = s->min_ratio, f = 1.0;
    int64_t start = s->warmup, len = s->total - s->warmup; /* decay phase [start, start+len) */
    if (s->kind == AS_SCHED_CONSTANT) return base;
    if (s->kind == AS_SCHED_WSD) {
        len = s->decay < s->total - s->warmup ? s->decay : s->total - s->warmup;
        start = s->total - len;
        if (step < start) return base;
    }
    if (len <= 0) return base;
    double prog = (double)(step - start) / (double)len;
    if (prog > 1) prog = 1;
    if (s->kind == AS_SCHED_LINEAR)
        f = 1.0 - prog;
    else /* cosine, and WSD's decay */
        f = 0.5 * (1.0 + cos(M_PI * prog));
    return (float)(base * (mr + (1.0 - mr) * f));
}
