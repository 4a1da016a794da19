/* prune_engine: pruned prefill on top of the engine's public layer API (prune_engine.h). Nothing
 * in forward.c changes: the pass is embed -> as_forward_layer for layers < L on N rows -> choose
 * -> compact rows and caches -> as_forward_layer for layers >= L on M rows -> final norm and
 * lm_head of the last row, exactly what as_forward does without pruning. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "prune_engine.h"

double as_prune_prefill_flops(const struct as_model_config *c, int T, int layers) {
    double D = c->hidden, qd = (double)c->n_heads * c->head_dim,
           kvd = (double)c->n_kv_heads * c->head_dim, ffn = c->intermediate;
    double lin = 2 * (D * qd + 2 * D * kvd + qd * D + 3 * D * ffn);              /* per token */
    double att = 2.0 * 2 * c->n_heads * c->head_dim * ((double)T * (T + 1) / 2); /* QK and PV */
    return layers * (T * lin + att);
}

int as_prune_engine_parse(const char *opt, const char *spec, struct as_prune_engine *e) {
    char name[64];
    double keep;
    int layer = 2, keep_last = 1, used = 0;
    int got = sscanf(spec, "%63[^:]:%lf%n:%d%n:%d%n", name, &keep, &used, &layer, &used, &keep_last,
                     &used);
    if (got < 2 || spec[used])
        return as_fail("%s %s: expected METHOD:KEEP[:LAYER[:KEEP_LAST]]", opt, spec);
    memset(e, 0, sizeof *e);
    e->method = as_prune_find(name);
    if (!e->method) return as_fail("%s %s: unknown method '%s'", opt, spec, name);
    if (!(keep > 0 && keep <= 1)) return as_fail("%s %s: keep %g outside (0, 1]", opt, spec, keep);
    if (keep_last < 1) return as_fail("%s %s: KEEP_LAST must be >= 1", opt, spec);
    as_prune_params_default(&e->params);
    e->keep = keep, e->layer = layer, e->keep_first = 1, e->keep_last = keep_last;
    as_prune_lm_defaults(e->method, &e->params, &e->importance, 0);
    return 0;
}

void as_prune_lm_defaults(const struct as_prune_method *m, struct as_prune_params *p,
                          int *importance, int given) {
    if (strcmp(m->name, "idpruner")) return;
    if (*importance == AS_IMP_DEFAULT) *importance = AS_PRUNE_LM_IMPORTANCE;
    if (!(given & AS_PRUNE_GIVEN_LAMBDA)) p->lambda = AS_PRUNE_LM_LAMBDA;
    if (!(given & AS_PRUNE_GIVEN_MMR_NORM)) p->mmr_norm = AS_PRUNE_LM_MMR_NORM;
}

int as_prune_engine_from_spec(const char *spec, struct as_prune_engine *e) {
    return as_prune_engine_parse("--prune", spec, e);
}

/* Rotate one head's key from RoPE position `from` to `to` (rotate-half layout): undo the
 * rotation at `from` with its table entries, apply the one at `to`. The tables carry the
 * attention factor f on both cos and sin, so undoing divides by f^2. */
static void rerotate(float *v, int hd, const struct as_run_state *s, int from, int to, float f2) {
    int half = hd / 2;
    const float *c0 = s->rope_cos + (size_t)from * half, *s0 = s->rope_sin + (size_t)from * half;
    const float *c1 = s->rope_cos + (size_t)to * half, *s1 = s->rope_sin + (size_t)to * half;
    for (int i = 0; i < half; i++) {
        float y1 = v[i], y2 = v[i + half];
        float x1 = (y1 * c0[i] + y2 * s0[i]) / f2, x2 = (y2 * c0[i] - y1 * s0[i]) / f2;
        v[i] = x1 * c1[i] - x2 * s1[i];
        v[i + half] = x2 * c1[i] + x1 * s1[i];
    }
}

/* Add to acc[j] the head-mean causal attention of queries q0..n-1 on key j at layer l, from the
 * post-RoPE queries the layer left in s->q and its cached keys (double accumulation). */
static void attn_rows(const struct as_model *m, const struct as_run_state *s, int l, int q0, int n,
                      double *acc) {
    const struct as_model_config *c = &m->cfg;
    int hd = c->head_dim, H = c->n_heads, kvd = c->n_kv_heads * hd, qd = H * hd;
    const float *kc = s->key_cache + (size_t)l * s->max_seq * kvd;
    double *row = as_xmalloc((size_t)n * sizeof *row);
    /* many queries (recv, accum): their scores by SGEMM in blocks of BQ rows, softmax in double;
     * few (last, tail): dot products in double */
    enum { BQ = 64 };
    int gemm = n - q0 > 16;
    float *blk = gemm ? as_xmalloc((size_t)BQ * n * sizeof *blk) : NULL;
    for (int b0 = q0; b0 < n; b0 += BQ) {
        int b1 = b0 + BQ < n ? b0 + BQ : n;
        for (int h = 0; h < H; h++) {
            int kh = h / (H / c->n_kv_heads);
            if (gemm) /* rows b0..b1-1 against keys 0..b1-1 */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b1 - b0, b1, hd, 1.0f,
                            s->q + (size_t)b0 * qd + h * hd, qd, kc + kh * hd, kvd, 0.0f, blk, b1);
            for (int t = b0; t < b1; t++) {
                const float *q = s->q + (size_t)t * qd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double d = 0;
                    if (gemm)
                        d = blk[(size_t)(t - b0) * b1 + j];
                    else
                        for (int i = 0; i < hd; i++)
                            d += (double)q[h * hd + i] * kc[(size_t)j * kvd + kh * hd + i];
                    row[j] = d / sqrt((double)hd);
                    mx = fmax(mx, row[j]);
                }
                for (int j = 0; j <= t; j++)
                    sum += (row[j] = exp(row[j] - mx));
                for (int j = 0; j <= t; j++)
                    acc[j] += row[j] / sum / H;
            }
        }
    }
    free(row), free(blk);
}

static const char *const imp_names[] = {"default", "last", "tail", "recv", "accum", "norm"};

int as_prune_importance_parse(const char *name) {
    for (int i = 1; i < (int)(sizeof imp_names / sizeof *imp_names); i++)
        if (!strcmp(name, imp_names[i])) return i;
    return -1;
}

const char *as_prune_importance_name(int imp) {
    return imp >= 0 && imp < (int)(sizeof imp_names / sizeof *imp_names) ? imp_names[imp] : "?";
}

int as_prune_prefill(const struct as_model *m, struct as_run_state *s, const int *tokens, int n,
                     const struct as_prune_engine *e, int *kept,
                     struct as_prune_prefill_stats *st) {
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden, hd = c->head_dim, kvd = c->n_kv_heads * hd;
    int L = e->layer;
    if (n < 1) return as_fail("prune: empty prompt");
    if (n > s->max_T || n > s->max_seq)
        return as_fail("prune: prompt of %d tokens is longer than the context (%d)", n,
                       s->max_T < s->max_seq ? s->max_T : s->max_seq);
    if (L < 0 || L > c->n_layers) return as_fail("prune: layer %d outside 0..%d", L, c->n_layers);
    if (s->pos != 0) return as_fail("prune: the run state is not empty (pos %d)", s->pos);
    if (L == 0 && e->method->fn && (e->method->needs & AS_NEED_SCORE))
        return as_fail("prune: method %s needs attention: choose a layer >= 1", e->method->name);
    for (int t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return as_fail("prune: token id %d out of range (vocab %d)", tokens[t], c->vocab);
        memcpy(s->x + (size_t)t * D, m->embed + (size_t)tokens[t] * D, (size_t)D * sizeof(float));
    }
    for (int l = 0; l < L; l++)
        as_forward_layer(m, s, l, n, NULL);

    /* the score: by default the last token's head-mean attention at layer L-1, from its
     * post-RoPE query (left in s->q by the layer) and the layer's cached keys */
    float *score = NULL, *keys = NULL;
    int imp = e->importance ? e->importance : AS_IMP_LAST;
    if (imp == AS_IMP_NORM) {
        score = as_xmalloc((size_t)n * sizeof *score);
        for (int j = 0; j < n; j++) {
            double ss = 0;
            for (int i = 0; i < D; i++)
                ss += (double)s->x[(size_t)j * D + i] * s->x[(size_t)j * D + i];
            score[j] = (float)sqrt(ss);
        }
    } else if (L > 0) {
        int q0 = imp == AS_IMP_LAST ? n - 1 : imp == AS_IMP_TAIL ? n - e->keep_last : 0;
        if (q0 < 0) q0 = 0;
        double *acc = as_xcalloc((size_t)n, sizeof *acc);
        attn_rows(m, s, L - 1, q0, n, acc);
        score = as_xmalloc((size_t)n * sizeof *score);
        for (int j = 0; j < n; j++) /* recv: mean over the queries i >= j that see token j */
            score[j] = (float)(imp == AS_IMP_RECV    ? acc[j] / (n - (j > q0 ? j : q0))
                               : imp == AS_IMP_ACCUM ? acc[j]
                                                     : acc[j] / (n - q0));
        free(acc);
    }
    if (L > 0) {
        const float *kc = s->key_cache + (size_t)(L - 1) * s->max_seq * kvd;
        keys = as_xmalloc((size_t)n * kvd * sizeof *keys);
        memcpy(keys, kc, (size_t)n * kvd * sizeof *keys);
    }
    uint8_t *pr = as_xmalloc((size_t)n);
    for (int i = 0; i < n; i++)
        pr[i] = i >= e->keep_first && i < n - e->keep_last;
    struct as_prune_input in = {.n = n,
                                .d = D,
                                .x = s->x,
                                .h = 0,
                                .attn = NULL,
                                .score = score,
                                .dk = keys ? kvd : 0,
                                .keys = keys,
                                .prunable = pr,
                                .query = n - 1};
    struct as_prune_result res;
    int rc = as_prune_run(e->method, &in, e->keep, &e->params, &res);
    free(score), free(keys), free(pr);
    if (rc) return as_fail_prefix("prune: ");
    int M = res.m;

    /* compact: output row r only reads input rows >= its representative >= r, so rows can be
     * rewritten in increasing order through one scratch row */
    float f2 = m->attn_factor * m->attn_factor;
    float *kt = as_xmalloc((size_t)kvd * sizeof *kt), *ka = as_xmalloc((size_t)kvd * sizeof *ka),
          *va = as_xmalloc((size_t)kvd * sizeof *va);
    for (int l = 0; l < L; l++) {
        float *kc = s->key_cache + (size_t)l * s->max_seq * kvd;
        float *vc = s->value_cache + (size_t)l * s->max_seq * kvd;
        for (int r = 0; r < M; r++) {
            memset(ka, 0, (size_t)kvd * sizeof *ka);
            memset(va, 0, (size_t)kvd * sizeof *va);
            for (int i = res.kept[r]; i < n; i++) {
                float w = res.w[(size_t)r * n + i];
                if (w == 0) continue;
                memcpy(kt, kc + (size_t)i * kvd, (size_t)kvd * sizeof *kt);
                if (i != r)
                    for (int h = 0; h < c->n_kv_heads; h++)
                        rerotate(kt + h * hd, hd, s, i, r, f2);
                for (int j = 0; j < kvd; j++)
                    ka[j] += w * kt[j], va[j] += w * vc[(size_t)i * kvd + j];
            }
            memcpy(kc + (size_t)r * kvd, ka, (size_t)kvd * sizeof *ka);
            memcpy(vc + (size_t)r * kvd, va, (size_t)kvd * sizeof *va);
        }
    }
    free(kt), free(ka), free(va);
    memcpy(s->x, res.y, (size_t)M * D * sizeof(float));
    s->pos = 0;
    for (int l = L; l < c->n_layers; l++)
        as_forward_layer(m, s, l, M, NULL);
    s->pos = M;
    s->T = M;
    as_op_rmsnorm(s->xb, s->x + (size_t)(M - 1) * D, m->norm, 1, D, c->rms_eps);
    as_op_linear(s->logits, s->xb, m->lm_head, NULL, 1, D, c->vocab);
    if (kept) memcpy(kept, res.kept, (size_t)M * sizeof *kept);
    if (st) {
        st->n = n, st->m = M;
        st->flops_full = as_prune_prefill_flops(c, n, c->n_layers);
        st->flops_pruned =
            as_prune_prefill_flops(c, n, L) + as_prune_prefill_flops(c, M, c->n_layers - L);
    }
    as_prune_result_free(&res);
    return 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int as_prune_eval_window(const struct as_model *m, struct as_run_state *s, const int *win, int ctx,
                         int first, const struct as_prune_engine *e, const float *ref,
                         struct as_prune_eval *acc) {
    int V = m->cfg.vocab;
    if (first < 1 || first >= ctx)
        return as_fail("prune: prompt of %d tokens in a window of %d", first, ctx);
    /* the first window warms the state up untimed: its first pass pays the page faults of the
     * fresh cache and scratch buffers, which would otherwise count against the unpruned side */
    if (acc->n == 0) {
        as_state_reset(s);
        if (as_forward(m, s, win, first, AS_LOGITS_LAST, NULL)) return -1;
    }
    /* the unpruned prefill of the same prompt, in the same run: the speedup's denominator */
    as_state_reset(s);
    double t0 = now_s();
    if (as_forward(m, s, win, first, AS_LOGITS_LAST, NULL)) return -1;
    double t1 = now_s();
    as_state_reset(s);
    struct as_prune_prefill_stats st;
    if (as_prune_prefill(m, s, win, first, e, NULL, &st)) return -1;
    double t2 = now_s();
    acc->n += st.n, acc->m += st.m, acc->t_full += t1 - t0, acc->t_pruned += t2 - t1;
    acc->flops_full += st.flops_full, acc->flops_pruned += st.flops_pruned;
    int T = ctx - 1 - first;
    if (T < 1) return 0;
    if (as_forward(m, s, win + first, T, AS_LOGITS_ALL, NULL)) return -1;
    double *lp = as_xmalloc((size_t)V * sizeof *lp), *lr = as_xmalloc((size_t)V * sizeof *lr);
    for (int j = 0; j < T; j++) {
        int target = win[first + j + 1];
        as_log_softmax(s->logits + (size_t)j * V, V, lp);
        as_log_softmax(ref + (size_t)j * V, V, lr);
        as_nll_add(&acc->nll, -lp[target]);
        as_kld_add(&acc->kld, lr, lp, V, target);
    }
    free(lp), free(lr);
    return 0;
}
