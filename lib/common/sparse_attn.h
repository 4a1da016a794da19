/* sparse_attn: training-free sparse prefill attention: which (query block, key block) pairs of
 * the causal map each head computes (static patterns and run-time selectors), one table of
 * methods with their parameters and defaults, and the per-layer / per-head configuration file.
 * Formulas and defaults follow ../shared/reference/sparse-pruning.md sections 1-2 (AngelSlim,
 * MInference, XAttention, FlexPrefill, Stem); docs/sparse-attention.md lists where this
 * implementation differs (everything here is block-granular: verticals and slashes select whole
 * blocks, dilated/strided are block patterns). The masks feed kernel_attn.c. */
#ifndef AS_SPARSE_ATTN_H
#define AS_SPARSE_ATTN_H

#include <stdint.h>

#include "forward.h"
#include "kernel_attn.h"
#include "model.h"

enum as_sparse_method {
    AS_SP_DENSE,
    AS_SP_ASHAPE,   /* n_init, n_local (tokens) */
    AS_SP_TRISHAPE, /* n_init, n_local, n_last (last queries attend fully) */
    AS_SP_DILATED,  /* vertical, dense, band (tokens): every 2nd block diagonal in the band */
    AS_SP_STRIDED,  /* stride (blocks; 0 = ceil(sqrt(blocks))) */
    AS_SP_VS,       /* MInference vertical-slash: vertical, slash (token counts), last_q */
    AS_SP_BLOCKTOP, /* MInference block_sparse: top-k key blocks by mean-pooled Q.K */
    AS_SP_XATTN,    /* XAttention: stride, threshold, window, n_last */
    AS_SP_FLEX,     /* FlexPrefill: gamma, tau, min_budget, max_budget, n_last (tokens) */
    AS_SP_STEM,     /* Stem: stride, alpha, keep_ratio, init_blocks, window */
    AS_SP_N
};

#define AS_SP_MAXP 5

struct as_sparse_method_info {
    const char *name;
    int n_params;
    const char *param[AS_SP_MAXP];
    double def[AS_SP_MAXP];
    const char *what;
};
extern const struct as_sparse_method_info as_sparse_methods[AS_SP_N];

struct as_sparse_head {
    enum as_sparse_method method;
    double p[AS_SP_MAXP];
};

/* What a selector reports for one head (for as-prune analyze and the benchmarks). */
struct as_sparse_stat {
    double density;
    int kind; /* FlexPrefill: 1 query-aware, 2 vertical-slash; else 0 */
};

struct as_sparse_config {
    int block; /* tokens per block of the masks */
    int n_layers, n_heads;
    struct as_sparse_head *heads; /* [n_layers * n_heads] */
    /* model fingerprint (reference doc section 2) */
    char model_type[32];
    double rope_theta;
    int fp_heads, fp_kv_heads, fp_hidden, fp_layers;
    /* run-time state of the engine hook: the mask of the last call, per-head stats */
    struct as_block_mask mask;
    struct as_sparse_stat *stats; /* [n_layers * n_heads], of the last first fill */
    int max_pos;                  /* the model's context (for the budget checks) */
};

/* Method by name; -1 if unknown. */
int as_sparse_method_find(const char *name);

/* A config with every layer and head on `method` (params: NULL = the table's defaults), with the
 * model's fingerprint. */
struct as_sparse_config *as_sparse_config_uniform(const struct as_model_config *c,
                                                  enum as_sparse_method method, const double *p,
                                                  int block);
/* Read a JSON config (docs/sparse-attention.md); refuses one whose fingerprint differs from c.
 * NULL with as_fail naming the file and the problem. */
struct as_sparse_config *as_sparse_config_load(const char *path, const struct as_model_config *c);
/* Write cfg as JSON (atomically); 0 or -1 with as_fail. */
int as_sparse_config_save(const struct as_sparse_config *cfg, const char *path);
void as_sparse_config_free(struct as_sparse_config *cfg);

/* Check the budgets of every head against a sequence of L tokens (a budget larger than the
 * sequence, a sequence longer than the model's context): 0 or -1 with as_fail. */
int as_sparse_config_check(const struct as_sparse_config *cfg, int L);

/* The block mask of one head over a first fill of L tokens: keep[qb * nkb + kb] for qb, kb <
 * ceil(L / block). q: the head's queries (row stride q_stride), k, v: its kv head's keys and
 * values (row stride kv_stride), all post-RoPE. Returns 0, or -1 with as_fail. */
int as_sparse_head_mask(const struct as_sparse_head *hc, int layer, int n_layers, int block, int L,
                        int hd, const float *q, int q_stride, const float *k, const float *v,
                        int kv_stride, uint8_t *keep, int nkb, struct as_sparse_stat *st);

/* The engine hook (forward.h attn_mask): masks of every head of `layer` into cfg->mask. Use as
 * s->attn_mask = as_sparse_engine_mask, s->attn_mask_ctx = &(struct as_sparse_engine){...}. */
struct as_sparse_engine {
    struct as_sparse_config *cfg;
    const struct as_model_config *model;
};
const struct as_block_mask *as_sparse_engine_mask(void *ctx, int layer, const float *q,
                                                  const float *k, const float *v, int T);

/* --sparse-attn SPEC of as-eval / as-gen: a JSON config (a path: contains '/' or ".json"), or
 * METHOD[:PARAM=VALUE,...] for every layer and head (block=N sets the block size). */
struct as_sparse_config *as_sparse_config_from_spec(const char *spec,
                                                    const struct as_model_config *c);
/* Point s's attention-mask hook at e (e must outlive s's use). */
void as_sparse_attach(struct as_sparse_engine *e, struct as_run_state *s);
/* Mean density over layers and heads of the last first fill (1 before any). */
double as_sparse_mean_density(const struct as_sparse_config *cfg);

#endif
