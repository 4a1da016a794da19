/* draft_spec: chain speculative decoding (see draft_spec.h). */
#include "draft_spec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "gen_sample.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

void as_spec_gather_taps(const struct as_model *m, const struct as_run_state *s, const int taps[3],
                         int T, float *feats) {
    size_t H = (size_t)m->cfg.hidden, act = (size_t)s->max_T * H;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 3; i++)
            memcpy(feats + ((size_t)t * 3 + i) * H, s->layer_acts + taps[i] * act + (size_t)t * H,
                   H * sizeof(float));
}

static int is_stop(const struct as_spec_opts *o, int t) {
    return t == o->stop[0] || t == o->stop[1];
}

int as_spec_plain(const struct as_model *m, int *toks, int n_prompt, int steps,
                  const struct as_spec_opts *o, as_spec_emit emit, void *ctx,
                  struct as_spec_stats *st) {
    int V = m->cfg.vocab, n = n_prompt, rc = -1;
    uint64_t rng = o->seed ? o->seed : 1;
    memset(st, 0, sizeof *st);
    struct as_run_state *s = as_state_new(m, n_prompt, steps + 1, 0);
    if (!s) return -1;
    float *e = as_xmalloc((size_t)V * sizeof(float));
    double t0 = now();
    if (as_forward(m, s, toks, n_prompt, AS_LOGITS_LAST, NULL) != 0) goto out;
    while (n <= steps) {
        int next = as_sample_token(s->logits, V, o->temp, e, &rng);
        if (is_stop(o, next)) break;
        toks[n] = next;
        if (emit && emit(ctx, toks[n - 1], next) != 0) goto out;
        n++, st->emitted++;
        if (n > steps) break;
        if (as_forward(m, s, &toks[n - 1], 1, AS_LOGITS_LAST, NULL) != 0) goto out;
    }
    rc = n;
out:
    st->seconds = now() - t0;
    free(e);
    as_state_free(s);
    return rc;
}

int as_spec_generate(const struct as_model *m, const struct as_draft *d, int *toks, int n_prompt,
                     int steps, const struct as_spec_opts *o, as_spec_emit emit, void *ctx,
                     struct as_spec_stats *st) {
    int V = m->cfg.vocab, H = m->cfg.hidden, k = o->k, n = n_prompt, rc = -1;
    if (k < 1 || k > AS_SPEC_MAX_K)
        return as_fail("speculative decoding: k = %d out of range 1..%d", k, AS_SPEC_MAX_K);
    uint64_t rng = o->seed ? o->seed : 1;
    memset(st, 0, sizeof *st);
    int maxT = n_prompt > k + 1 ? n_prompt : k + 1, max_seq = steps + 2 + k;
    struct as_run_state *s = as_state_new(m, maxT, max_seq, AS_STATE_KEEP_ACTS);
    struct as_draft_state *ds = as_draft_state_new(d, maxT, max_seq);
    float *feats = as_xmalloc((size_t)maxT * 3 * H * sizeof(float));
    float *e = as_xmalloc((size_t)V * sizeof(float));
    int *batch = as_xmalloc((size_t)(k + 1) * sizeof(int));
    double t0 = now();
    if (!s || !ds) goto out;
    /* prefill: the prompt, as plain decoding does it (same bits), then the first token */
    if (as_forward(m, s, toks, n_prompt, AS_LOGITS_LAST, NULL) != 0) goto out;
    int next = as_sample_token(s->logits, V, o->temp, e, &rng);
    if (is_stop(o, next) || n > steps) {
        rc = n;
        goto out;
    }
    toks[n] = next;
    if (emit && emit(ctx, toks[n - 1], next) != 0) goto out;
    n++, st->emitted++;
    if (n > steps) {
        rc = n;
        goto out;
    }
    /* draft prefill: position t holds (token t+1, taps of target position t) */
    as_spec_gather_taps(m, s, d->taps, n_prompt, feats);
    if (as_draft_forward(d, ds, toks + 1, feats, NULL, n_prompt) != 0) goto out;
    s->rowwise = 1; /* verification rows as one-token decoding computes them */
    /* invariant: toks[0..n) decided; the target cache holds 0..n-2, the draft's 0..n-2 */
    for (;;) {
        /* chain: d_1 from the draft's last row, d_j from (d_{j-1}, its own hidden) */
        batch[0] = toks[n - 1];
        for (int j = 1; j <= k; j++) {
            /* the previous call's last row */
            const float *row = ds->logits + (size_t)(ds->T - 1) * d->vd;
            batch[j] = as_draft_to_target(d, as_sample_argmax(row, d->vd));
            if (j == k) break;
            float *hid = ds->hidden + (size_t)(ds->T - 1) * H;
            memcpy(feats, hid, (size_t)H * sizeof(float));
            if (as_draft_forward(d, ds, &batch[j], NULL, feats, 1) != 0) goto out;
        }
        /* verify: target rows 0..k at positions n-1..n-1+k */
        if (as_forward(m, s, batch, k + 1, AS_LOGITS_ALL, NULL) != 0) goto out;
        st->drafts++;
        int a = 0, done = 0, tok = -1;
        for (int j = 0; j <= k; j++) {
            const float *lj = s->logits + (size_t)j * V;
            if (j == k) { /* every draft accepted: the bonus token */
                tok = as_sample_token(lj, V, o->temp, e, &rng);
                break;
            }
            int dj = batch[j + 1];
            if (o->temp <= 0) {
                int t = as_sample_argmax(lj, V);
                if (t == dj) {
                    a++;
                    continue;
                }
                tok = t;
                break;
            }
            float sum = as_sample_exps(lj, V, o->temp, e);
            if (as_sample_uniform(&rng) < e[dj] / sum) {
                a++;
                continue;
            }
            sum -= e[dj], e[dj] = 0; /* the residual max(p - q, 0) with q one-hot at dj */
            tok = as_sample_from(e, V, sum, &rng);
            break;
        }
        st->accepted += a;
        for (int j = 0; j < a; j++)
            st->accepted_pos[j]++;
        /* emit d_1..d_a, then tok, stopping as plain decoding would */
        for (int j = 1; j <= a + 1 && !done; j++) {
            int t = j <= a ? batch[j] : tok;
            if (is_stop(o, t)) {
                done = 1;
                break;
            }
            toks[n] = t;
            if (emit && emit(ctx, toks[n - 1], t) != 0) goto out;
            n++, st->emitted++;
            if (n > steps) done = 1;
        }
        if (done) break;
        /* roll back: the target keeps rows 0..a (positions n-1-(a+1)+1..), the draft its
         * positions before the chain, then re-reads the accepted ones with the real taps */
        s->pos = n - 1;
        int npos = n - 1 - (a + 1); /* draft position of the first newly decided token pair */
        ds->pos = npos;
        as_spec_gather_taps(m, s, d->taps, a + 1, feats);
        if (as_draft_forward(d, ds, &toks[npos + 1], feats, NULL, a + 1) != 0) goto out;
    }
    rc = n;
out:
    st->seconds = now() - t0;
    free(feats), free(e), free(batch);
    as_state_free(s);
    as_draft_state_free(ds);
    return rc;
}
