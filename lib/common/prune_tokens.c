/* prune_tokens: the strategies and the framework around them (prune_tokens.h). Every score is
 * computed in double and every ranking breaks ties towards the lower index, so an independent
 * float64 implementation (tests/oracles/prune_tokens.py) agrees index for index. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "prune_tokens.h"

/* ---- helpers ---- */

static double dotd(const double *a, const double *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++)
        s += a[i] * b[i];
    return s;
}

struct vi {
    double v;
    int i;
};

static int cmp_desc(const void *pa, const void *pb) {
    const struct vi *a = pa, *b = pb;
    if (a->v > b->v) return -1;
    if (a->v < b->v) return 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* The k largest of v over the n indices in idx (idx NULL: 0..n-1), ties to the lower index;
 * writes the chosen indices to out in rank order. sign -1 ranks the smallest first. */
static void top_k(const double *v, const int *idx, int n, int k, double sign, int *out) {
    struct vi *t = as_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    for (int j = 0; j < n; j++) {
        int i = idx ? idx[j] : j;
        t[j].v = sign * v[i];
        t[j].i = i;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_desc);
    for (int j = 0; j < k && j < n; j++)
        out[j] = t[j].i;
    free(t);
}

/* argmax of v over indices with !taken[i]; values within 1e-9 (relative) of the maximum count as
 * tied and the lower index wins: greedy gains that are equal in exact arithmetic (symmetric
 * coverage terms, equal DPP residuals) differ in their last bits with the summation order, and
 * an implementation must not depend on those bits. -1 if none. */
static int argmax_free(const double *v, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    if (best < 0 || !isfinite(v[best])) return best;
    double floor_v = v[best] - 1e-9 * fmax(1, fabs(v[best]));
    for (int i = 0; i < best; i++)
        if (!taken[i] && v[i] >= floor_v) return i;
    return best;
}

static double cosine(const struct as_prune_ctx *c, int i, int j) {
    return dotd(c->xn + (size_t)i * c->d, c->xn + (size_t)j * c->d, c->d);
}

/* ---- strategies (one function each, one row in the table below) ---- */

/* random: splitmix64, partial Fisher-Yates over the prunable tokens (the floor of every table). */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int s_random(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int *perm = as_xmalloc((size_t)c->nv * sizeof *perm);
    for (int i = 0; i < c->nv; i++)
        perm[i] = i;
    uint64_t s = c->p->seed;
    for (int i = 0; i < k; i++) {
        int j = i + (int)(splitmix64(&s) % (uint64_t)(c->nv - i));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memcpy(o->sel, perm, (size_t)k * sizeof *perm);
    free(perm);
    o->k = k;
    return 0;
}

/* IDPruner: Maximal Marginal Relevance of min-max normalised importance against the max cosine
 * to what is already chosen (with mmr_norm, that max cosine min-max normalised too). Importance is
 * pluggable: the given scores, else the attention each token receives, else the L2 norm of its
 * features. */
static int s_idpruner(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv;
    double *imp = as_xmalloc((size_t)n * sizeof *imp),
           *maxsim = as_xmalloc((size_t)n * sizeof *maxsim),
           *mmr = as_xmalloc((size_t)n * sizeof *mmr);
    unsigned char *taken = as_xcalloc((size_t)n, 1);
    int *free_idx = as_xmalloc((size_t)n * sizeof *free_idx),
        *pick = as_xmalloc((size_t)n * sizeof *pick);
    for (int i = 0; i < n; i++) {
        if (c->score)
            imp[i] = c->score[i];
        else if (c->recv)
            imp[i] = c->recv[i];
        else
            imp[i] = sqrt(dotd(c->x + (size_t)i * c->d, c->x + (size_t)i * c->d, c->d));
    }
    double lo = imp[0], hi = imp[0];
    for (int i = 1; i < n; i++)
        lo = fmin(lo, imp[i]), hi = fmax(hi, imp[i]);
    for (int i = 0; i < n; i++)
        imp[i] = (imp[i] - lo) / (hi - lo + 1e-6), maxsim[i] = -2;
    int got = 0;
    int first = argmax_free(imp, taken, n);
    pick[0] = first;
    int npick = 1;
    while (1) {
        for (int t = 0; t < npick; t++) {
            int s = pick[t];
            taken[s] = 1;
            o->sel[got++] = s;
            for (int i = 0; i < n; i++)
                maxsim[i] = fmax(maxsim[i], cosine(c, i, s));
        }
        if (got >= k) break;
        /* mmr_norm 1: the redundancy min-max normalised over the candidates, as the importance
         * is over all tokens, so that lambda weighs two terms on the same [0, 1] scale. The max
         * cosine alone spans little of [-1, 1] on a language model's hidden states (0.75..1 on
         * SmolLM2's layer-2 rows), which makes any lambda act as nearly 1: importance only.
         * mmr_norm 2: the importance too, over the candidates of the round: attention received
         * is skewed (a few sink tokens at 1, the median at 0.03), so once those are taken the
         * rest would differ by little in importance and diversity alone would decide. */
        double rlo = INFINITY, rhi = -INFINITY, ilo = INFINITY, ihi = -INFINITY;
        for (int i = 0; i < n; i++)
            if (!taken[i]) {
                rlo = fmin(rlo, maxsim[i]), rhi = fmax(rhi, maxsim[i]);
                ilo = fmin(ilo, imp[i]), ihi = fmax(ihi, imp[i]);
            }
        int nf = 0;
        for (int i = 0; i < n; i++)
            if (!taken[i]) {
                int mn = c->p->mmr_norm;
                double red = mn ? (maxsim[i] - rlo) / (rhi - rlo + 1e-6) : maxsim[i];
                double im = mn == 2 ? (imp[i] - ilo) / (ihi - ilo + 1e-6) : imp[i];
                mmr[i] = c->p->lambda * im - (1 - c->p->lambda) * red;
                free_idx[nf++] = i;
            }
        npick = c->p->parallel_k < k - got ? c->p->parallel_k : k - got;
        top_k(mmr, free_idx, nf, npick, 1, pick);
    }
    o->k = k;
    free(imp), free(maxsim), free(mmr), free(taken), free(free_idx), free(pick);
    return 0;
}

/* FastV: the top K by the query token's head-mean attention row (or the given scores). */
static int s_fastv(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    top_k(c->score ? c->score : c->qrow, NULL, c->nv, k, 1, o->sel);
    o->k = k;
    return 0;
}

/* DivPrune: farthest-point sampling (max-min) on D = 1 - cos. */
static int s_divprune(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv;
    double *mind = as_xmalloc((size_t)n * sizeof *mind);
    unsigned char *taken = as_xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        double m = INFINITY;
        for (int j = 0; j < n; j++)
            if (j != i) m = fmin(m, 1 - cosine(c, i, j));
        mind[i] = m; /* a lone token: +inf, chosen first */
    }
    int s = argmax_free(mind, taken, n);
    for (int got = 0;;) {
        taken[s] = 1;
        o->sel[got++] = s;
        if (got >= k) break;
        for (int i = 0; i < n; i++)
            mind[i] = got == 1 ? 1 - cosine(c, i, s) : fmin(mind[i], 1 - cosine(c, i, s));
        s = argmax_free(mind, taken, n);
    }
    o->k = k;
    free(mind), free(taken);
    return 0;
}

/* VisionZip: n_dom dominant tokens by received attention kept as they are; the rest merged into
 * n_ctx uniformly spaced targets, each token joining the target with the highest key cosine;
 * targets and members averaged uniformly (AngelSlim). */
static int s_visionzip(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv;
    const double *a = c->score ? c->score : c->recv;
    int n_ctx = (int)floor(k * c->p->zip_ratio + 0.5), n_dom = k - n_ctx;
    int *dom = as_xmalloc((size_t)(n_dom > 0 ? n_dom : 1) * sizeof *dom);
    int *rest = as_xmalloc((size_t)n * sizeof *rest), *tgt = as_xmalloc((size_t)n * sizeof *tgt);
    unsigned char *isdom = as_xcalloc((size_t)n, 1), *istgt = as_xcalloc((size_t)n, 1);
    top_k(a, NULL, n, n_dom, 1, dom);
    for (int i = 0; i < n_dom; i++)
        isdom[dom[i]] = 1;
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (!isdom[i]) rest[nr++] = i;
    int g = 0, w = 0;
    o->off[0] = 0;
    for (int i = 0; i < n_dom; i++) {
        o->mem[w] = dom[i], o->wt[w++] = 1;
        o->off[++g] = w;
    }
    if (n_ctx > 0) {
        int step = nr / n_ctx > 1 ? nr / n_ctx : 1;
        for (int t = 0; t < n_ctx; t++)
            tgt[t] = rest[t * step], istgt[rest[t * step]] = 1;
        int *owner = as_xmalloc((size_t)n * sizeof *owner);
        for (int j = 0; j < nr; j++) {
            int i = rest[j];
            owner[i] = -1;
            if (istgt[i]) continue;
            double best = -INFINITY;
            for (int t = 0; t < n_ctx; t++) {
                double s = dotd(c->kn + (size_t)i * c->dk, c->kn + (size_t)tgt[t] * c->dk, c->dk);
                if (s > best) best = s, owner[i] = t;
            }
        }
        for (int t = 0; t < n_ctx; t++) {
            o->mem[w] = tgt[t], o->wt[w++] = 1;
            for (int j = 0; j < nr; j++)
                if (!istgt[rest[j]] && owner[rest[j]] == t) o->mem[w] = rest[j], o->wt[w++] = 1;
            o->off[++g] = w;
        }
        free(owner);
    }
    o->k = g;
    free(dom), free(rest), free(tgt), free(isdom), free(istgt);
    return 0;
}

/* DART: pivots = the n_pivots prunable and n_pivots text tokens with the largest L1 key norm;
 * the prunable pivots are kept, and each pivot in turn adds ceil(remaining / #pivots) of the
 * not yet kept tokens least similar (cosine of features) to it. */
static int s_dart(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv, pv = c->p->n_pivots < k ? c->p->n_pivots : k;
    int pt = c->p->n_pivots < c->nt ? c->p->n_pivots : c->nt;
    int *piv = as_xmalloc((size_t)(pv + 1) * sizeof *piv),
        *tpiv = as_xmalloc((size_t)(pt + 1) * sizeof *tpiv);
    int *free_idx = as_xmalloc((size_t)n * sizeof *free_idx),
        *pick = as_xmalloc((size_t)n * sizeof *pick);
    double *cs = as_xmalloc((size_t)n * sizeof *cs);
    unsigned char *taken = as_xcalloc((size_t)n, 1);
    top_k(c->knorm1, NULL, n, pv, 1, piv);
    if (pt) top_k(c->text_knorm1, NULL, c->nt, pt, 1, tpiv);
    int got = 0;
    for (int i = 0; i < pv; i++)
        taken[piv[i]] = 1, o->sel[got++] = piv[i];
    int np = pv + pt, per = np ? (k - got + np - 1) / np : 0;
    for (int p = 0; p < np && got < k; p++) {
        const double *q =
            p < pv ? c->xn + (size_t)piv[p] * c->d : c->text_xn + (size_t)tpiv[p - pv] * c->d;
        int nf = 0;
        for (int i = 0; i < n; i++)
            if (!taken[i]) cs[i] = dotd(q, c->xn + (size_t)i * c->d, c->d), free_idx[nf++] = i;
        int want = per < k - got ? per : k - got;
        top_k(cs, free_idx, nf, want, -1, pick);
        for (int t = 0; t < want; t++)
            taken[pick[t]] = 1, o->sel[got++] = pick[t];
    }
    o->k = got;
    free(piv), free(tpiv), free(free_idx), free(pick), free(cs), free(taken);
    return got == k ? 0 : as_fail("dart: chose %d of %d tokens", got, k);
}

/* SCOPE: greedy saliency-weighted coverage, gain_i = a_i^alpha * sum_j max(0, C_ji - cur_j). */
static int s_scope(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv;
    const double *a = c->score ? c->score : c->recv;
    double *C = as_xmalloc((size_t)n * n * sizeof *C), *cur = as_xcalloc((size_t)n, sizeof *cur);
    double *gain = as_xmalloc((size_t)n * sizeof *gain);
    unsigned char *taken = as_xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            C[(size_t)i * n + j] = cosine(c, i, j);
    for (int got = 0; got < k; got++) {
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++)
                s += fmax(0, C[(size_t)j * n + i] - cur[j]);
            gain[i] = (a ? pow(fmax(a[i], 0), c->p->alpha) : 1) * s;
        }
        int s = argmax_free(gain, taken, n);
        taken[s] = 1;
        o->sel[got] = s;
        for (int j = 0; j < n; j++)
            cur[j] = fmax(cur[j], C[(size_t)j * n + s]);
    }
    o->k = k;
    free(C), free(cur), free(gain), free(taken);
    return 0;
}

/* VisPruner: half the budget by saliency; the rest thinned by bipartite de-duplication (even /
 * odd halves A, B of what is left, drop up to 8 tokens of A most similar to B) until it fits. */
static int s_vispruner(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv;
    const double *a = c->score ? c->score : c->recv;
    int n_imp = (int)floor(0.5 * k + 0.5), n_div = k - n_imp;
    unsigned char *imp = as_xcalloc((size_t)n, 1), *drop = as_xcalloc((size_t)n, 1);
    int *rest = as_xmalloc((size_t)n * sizeof *rest), *ai = as_xmalloc((size_t)n * sizeof *ai);
    double *mx = as_xmalloc((size_t)n * sizeof *mx);
    top_k(a, NULL, n, n_imp, 1, o->sel);
    for (int i = 0; i < n_imp; i++)
        imp[o->sel[i]] = 1;
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (!imp[i]) rest[nr++] = i;
    while (nr > n_div) {
        int na = (nr + 1) / 2, r = nr / 2 > 1 ? nr / 2 : 1;
        if (r > 8) r = 8;
        if (r > nr - n_div) r = nr - n_div;
        for (int t = 0; t < na; t++) {
            int i = rest[2 * t];
            ai[t] = i;
            mx[i] = -INFINITY;
            for (int u = 1; u < nr; u += 2)
                mx[i] = fmax(mx[i], cosine(c, i, rest[u]));
        }
        int *dr = as_xmalloc((size_t)r * sizeof *dr);
        top_k(mx, ai, na, r, 1, dr);
        for (int t = 0; t < r; t++)
            drop[dr[t]] = 1;
        free(dr);
        int w = 0;
        for (int j = 0; j < nr; j++)
            if (!drop[rest[j]]) rest[w++] = rest[j];
        nr = w;
    }
    for (int j = 0; j < nr; j++)
        o->sel[n_imp + j] = rest[j];
    o->k = n_imp + nr;
    free(imp), free(drop), free(rest), free(ai), free(mx);
    return 0;
}

/* Samp (SA-MAP): adjacent groups while the mean cosine to the group stays >= threshold, merged
 * by attention received; then the fast greedy MAP of a DPP on diag(r) S diag(r) picks T groups
 * (T clamped to the number of groups). */
static int s_samp(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv, d = c->d;
    int *gs = as_xmalloc((size_t)(n + 1) * sizeof *gs); /* group starts */
    int ng = 0;
    gs[ng++] = 0;
    for (int i = 0; i + 1 < n; i++) {
        int g0 = gs[ng - 1];
        double s = 0;
        for (int g = g0; g <= i; g++)
            s += cosine(c, g, i + 1);
        if (s / (i + 1 - g0) < c->p->threshold) gs[ng++] = i + 1;
    }
    gs[ng] = n;
    double *mw = as_xmalloc((size_t)n * sizeof *mw), *h = as_xcalloc((size_t)ng * d, sizeof *h);
    double *r = as_xmalloc((size_t)ng * sizeof *r);
    for (int i = 0; i < n; i++)
        mw[i] = c->amax ? c->amax[i] : c->score ? c->score[i] : 1;
    for (int g = 0; g < ng; g++) {
        double sw = 0, sa = 0;
        for (int i = gs[g]; i < gs[g + 1]; i++)
            sw += mw[i];
        for (int i = gs[g]; i < gs[g + 1]; i++) {
            double wi = sw > 0 ? mw[i] / sw : 1.0 / (gs[g + 1] - gs[g]);
            if (sw <= 0) mw[i] = 1;
            for (int j = 0; j < d; j++)
                h[(size_t)g * d + j] += wi * c->x[(size_t)i * d + j];
            sa += c->adiag ? c->adiag[i] : c->score ? c->score[i] : 1;
        }
        r[g] = sa / (gs[g + 1] - gs[g]);
        double nn = sqrt(dotd(h + (size_t)g * d, h + (size_t)g * d, d));
        if (nn > 0)
            for (int j = 0; j < d; j++)
                h[(size_t)g * d + j] /= nn; /* h is only needed as Ŝ now */
    }
    int T = k < ng ? k : ng;
    double *d2 = as_xmalloc((size_t)ng * sizeof *d2), *C = as_xcalloc((size_t)T * ng, sizeof *C);
    unsigned char *taken = as_xcalloc((size_t)ng, 1);
    int *chosen = as_xmalloc((size_t)T * sizeof *chosen);
    for (int g = 0; g < ng; g++)
        d2[g] = r[g] * r[g] * dotd(h + (size_t)g * d, h + (size_t)g * d, d);
    int t = 0;
    for (; t < T; t++) {
        int j = argmax_free(d2, taken, ng);
        if (d2[j] <= 1e-10) break; /* the kernel's rank is spent: fill by relevance below */
        double dj = sqrt(d2[j]);
        chosen[t] = j;
        taken[j] = 1;
        for (int i = 0; i < ng; i++) {
            double L = r[j] * r[i] * dotd(h + (size_t)j * d, h + (size_t)i * d, d);
            for (int s = 0; s < t; s++)
                L -= C[(size_t)s * ng + j] * C[(size_t)s * ng + i];
            C[(size_t)t * ng + i] = L / dj;
            d2[i] -= (L / dj) * (L / dj);
        }
    }
    for (; t < T; t++) {
        int j = argmax_free(r, taken, ng);
        chosen[t] = j;
        taken[j] = 1;
    }
    int w = 0;
    o->off[0] = 0;
    for (int g = 0, q = 0; g < ng; g++) {
        if (!taken[g]) continue;
        for (int i = gs[g]; i < gs[g + 1]; i++)
            o->mem[w] = i, o->wt[w++] = mw[i];
        o->off[++q] = w;
    }
    o->k = T;
    free(gs), free(mw), free(h), free(r), free(d2), free(C), free(taken), free(chosen);
    return 0;
}

/* Emit groups from a "joined to the next token" flag per position (runs become groups). */
static void runs_to_groups(const struct as_prune_ctx *c, const unsigned char *join, int weighted,
                           struct as_prune_choice *o) {
    int w = 0, g = 0;
    o->off[0] = 0;
    for (int i = 0; i < c->nv; i++) {
        o->mem[w] = i;
        o->wt[w++] = weighted && c->score ? c->score[i] : 1;
        if (!(i + 1 < c->nv && join[i])) o->off[++g] = w;
    }
    o->k = g;
}

/* A-ToMe (port at the projector output): average the N - T most similar pairs (2i, 2i+1). */
static int s_atome(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv, np = n / 2, nm = n - k < np ? n - k : np;
    double *cs = as_xmalloc((size_t)(np + 1) * sizeof *cs);
    int *pick = as_xmalloc((size_t)(np + 1) * sizeof *pick);
    unsigned char *join = as_xcalloc((size_t)n, 1);
    for (int i = 0; i < np; i++)
        cs[i] = cosine(c, 2 * i, 2 * i + 1);
    top_k(cs, NULL, np, nm, 1, pick);
    for (int t = 0; t < nm; t++)
        join[2 * pick[t]] = 1;
    runs_to_groups(c, join, 0, o);
    free(cs), free(pick), free(join);
    return 0;
}

/* FastAdaSP (port): mark the N - T most similar adjacent edges, merge each run by its mean. */
static int s_fastadasp(const struct as_prune_ctx *c, int k, struct as_prune_choice *o) {
    int n = c->nv, ne = n - k;
    double *cs = as_xmalloc((size_t)n * sizeof *cs);
    int *pick = as_xmalloc((size_t)n * sizeof *pick);
    unsigned char *join = as_xcalloc((size_t)n, 1);
    for (int i = 0; i + 1 < n; i++)
        cs[i] = cosine(c, i, i + 1);
    top_k(cs, NULL, n - 1, ne, 1, pick);
    for (int t = 0; t < ne; t++)
        join[pick[t]] = 1;
    runs_to_groups(c, join, c->p->weighted, o);
    free(cs), free(pick), free(join);
    return 0;
}

/* ---- the table ---- */

static const struct as_prune_method methods[] = {
    {"random", AS_PRUNE_SELECT, s_random, 0, "nothing", "seed=0"},
    {"idpruner", AS_PRUNE_SELECT, s_idpruner, 0,
     "features; importance = scores, else received attention, else feature L2 norm (in the "
     "engine: received attention, redundancy normalised, lambda 0.875)",
     "lambda=0.5 parallel_k=1 mmr_norm=0"},
    {"idpruner-paper", AS_PRUNE_SELECT, s_idpruner, 0,
     "as idpruner; in the engine it keeps the published defaults (the last token's attention as "
     "importance, lambda 0.5) where idpruner takes the language-model ones",
     "lambda=0.5 parallel_k=1 mmr_norm=0"},
    {"fastv", AS_PRUNE_SELECT, s_fastv, AS_NEED_SCORE,
     "query token's head-mean attention row (or scores)", "query=last text token"},
    {"divprune", AS_PRUNE_SELECT, s_divprune, 0, "features", ""},
    {"visionzip", AS_PRUNE_MERGE, s_visionzip, AS_NEED_SCORE,
     "received attention (or scores), keys (or features)", "zip_ratio=0.15625"},
    {"dart", AS_PRUNE_SELECT, s_dart, AS_NEED_TEXT,
     "keys (or features) for pivots, features, text tokens", "n_pivots=4"},
    {"scope", AS_PRUNE_SELECT, s_scope, 0,
     "features; saliency = scores, else received attention, else 1", "alpha=1"},
    {"vispruner", AS_PRUNE_SELECT, s_vispruner, AS_NEED_SCORE,
     "saliency (scores or received attention), features", ""},
    {"samp", AS_PRUNE_MERGE, s_samp, 0,
     "features; attention [H,N,N] (merge weight head-max column mean, relevance head-mean "
     "diagonal), "
     "else scores, else 1",
     "threshold=0.85"},
    {"atome", AS_PRUNE_MERGE, s_atome, 0, "features", ""},
    {"fastadasp", AS_PRUNE_MERGE, s_fastadasp, 0, "features (+ scores when weighted)",
     "weighted=0"},
};

const struct as_prune_method *as_prune_methods(int *count) {
    *count = (int)(sizeof methods / sizeof methods[0]);
    return methods;
}

const struct as_prune_method *as_prune_find(const char *name) {
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (!strcmp(methods[i].name, name)) return &methods[i];
    return NULL;
}

void as_prune_params_default(struct as_prune_params *p) {
    p->lambda = 0.5;
    p->parallel_k = 1;
    p->mmr_norm = 0;
    p->zip_ratio = 10.0 / 64;
    p->n_pivots = 4;
    p->alpha = 1;
    p->threshold = 0.85;
    p->weighted = 0;
    p->seed = 0;
}

int as_prune_budget(int nv, double keep) {
    if (nv <= 0) return 0;
    int k = (int)floor(keep * nv + 0.5);
    return k < 1 ? 1 : k > nv ? nv : k;
}

/* ---- the framework ---- */

struct row {
    int rep, g; /* representative input index; group (-1 - text index for a text token) */
};

static int cmp_row(const void *pa, const void *pb) {
    const struct row *a = pa, *b = pb;
    return (a->rep > b->rep) - (a->rep < b->rep);
}

static void normalize_rows(const double *x, double *xn, int n, int d) {
    for (int i = 0; i < n; i++) {
        double s = sqrt(dotd(x + (size_t)i * d, x + (size_t)i * d, d));
        for (int j = 0; j < d; j++)
            xn[(size_t)i * d + j] = s > 0 ? x[(size_t)i * d + j] / s : 0;
    }
}

static int check_finite(const float *v, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return as_fail("%s: element %zu is not finite (%g)", what, i, (double)v[i]);
    return 0;
}

int as_prune_run(const struct as_prune_method *m, const struct as_prune_input *in, double keep,
                 const struct as_prune_params *p, struct as_prune_result *res) {
    memset(res, 0, sizeof *res);
    if (!(keep > 0 && keep <= 1)) return as_fail("keep ratio %g outside (0, 1]", keep);
    if (in->n < 1 || in->d < 1 || !in->x) return as_fail("features: need [N, D] with N, D >= 1");
    int n = in->n, d = in->d;
    if (check_finite(in->x, (size_t)n * d, "features")) return -1;
    if (in->attn && check_finite(in->attn, (size_t)in->h * n * n, "attention")) return -1;
    if (in->score && check_finite(in->score, (size_t)n, "scores")) return -1;
    if (in->keys && check_finite(in->keys, (size_t)n * in->dk, "keys")) return -1;
    if ((m->needs & AS_NEED_SCORE) && !in->score && !in->attn)
        return as_fail("method %s needs attention or scores", m->name);
    if (p->parallel_k < 1 || p->n_pivots < 0 || !(p->zip_ratio >= 0 && p->zip_ratio <= 1) ||
        p->mmr_norm < 0 || p->mmr_norm > 2)
        return as_fail("method %s: bad parameters (parallel_k >= 1, n_pivots >= 0, zip_ratio in "
                       "[0, 1], mmr_norm 0, 1 or 2)",
                       m->name);

    int *vi = as_xmalloc((size_t)n * sizeof *vi), *ti = as_xmalloc((size_t)n * sizeof *ti);
    int nv = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        if (!in->prunable || in->prunable[i])
            vi[nv++] = i;
        else
            ti[nt++] = i;
    }
    int q = in->query;
    if (q < 0 || q >= n) q = nt ? ti[nt - 1] : n - 1;
    int dk = in->keys ? in->dk : d;
    const float *keys = in->keys ? in->keys : in->x;
    size_t nvd = (size_t)(nv > 0 ? nv : 1);
    double *x = as_xmalloc(nvd * d * sizeof *x), *xn = as_xmalloc(nvd * d * sizeof *xn);
    double *kx = as_xmalloc(nvd * dk * sizeof *kx), *kn = as_xmalloc(nvd * dk * sizeof *kn);
    double *k1 = as_xcalloc(nvd, sizeof *k1), *sc = NULL, *recv = NULL, *qrow = NULL, *amax = NULL,
           *adiag = NULL;
    double *tx = as_xmalloc((size_t)(nt ? nt : 1) * d * sizeof *tx),
           *txn = as_xmalloc((size_t)(nt ? nt : 1) * d * sizeof *txn);
    double *tk1 = as_xcalloc((size_t)(nt ? nt : 1), sizeof *tk1);
    for (int a = 0; a < nv; a++) {
        for (int j = 0; j < d; j++)
            x[(size_t)a * d + j] = in->x[(size_t)vi[a] * d + j];
        for (int j = 0; j < dk; j++) {
            kx[(size_t)a * dk + j] = keys[(size_t)vi[a] * dk + j];
            k1[a] += fabs(kx[(size_t)a * dk + j]);
        }
    }
    for (int a = 0; a < nt; a++) {
        for (int j = 0; j < d; j++)
            tx[(size_t)a * d + j] = in->x[(size_t)ti[a] * d + j];
        for (int j = 0; j < dk; j++)
            tk1[a] += fabs((double)keys[(size_t)ti[a] * dk + j]);
    }
    normalize_rows(x, xn, nv, d);
    normalize_rows(kx, kn, nv, dk);
    normalize_rows(tx, txn, nt, d);
    if (in->score) {
        sc = as_xmalloc(nvd * sizeof *sc);
        for (int a = 0; a < nv; a++)
            sc[a] = in->score[vi[a]];
    }
    if (in->attn) {
        recv = as_xcalloc(nvd, sizeof *recv), qrow = as_xcalloc(nvd, sizeof *qrow);
        amax = as_xcalloc(nvd, sizeof *amax), adiag = as_xcalloc(nvd, sizeof *adiag);
        int H = in->h;
        for (int a = 0; a < nv; a++) {
            int j = vi[a];
            for (int i = 0; i < n; i++) {
                double mx = -INFINITY, s = 0;
                for (int hh = 0; hh < H; hh++) {
                    double v = in->attn[((size_t)hh * n + i) * n + j];
                    s += v;
                    mx = fmax(mx, v);
                }
                recv[a] += s / H;
                amax[a] += mx;
                if (i == q) qrow[a] = s / H;
                if (i == j) adiag[a] = s / H;
            }
            recv[a] /= n;
            amax[a] /= n;
        }
    }
    struct as_prune_ctx c = {.nv = nv,
                             .d = d,
                             .x = x,
                             .xn = xn,
                             .kn = kn,
                             .dk = dk,
                             .knorm1 = k1,
                             .score = sc,
                             .recv = recv,
                             .qrow = qrow,
                             .amax = amax,
                             .adiag = adiag,
                             .nt = nt,
                             .text_knorm1 = tk1,
                             .text_xn = txn,
                             .p = p};
    int k = as_prune_budget(nv, keep);
    struct as_prune_choice ch = {0};
    ch.sel = as_xmalloc(nvd * sizeof *ch.sel);
    ch.off = as_xmalloc((nvd + 1) * sizeof *ch.off);
    ch.mem = as_xmalloc(nvd * sizeof *ch.mem);
    ch.wt = as_xmalloc(nvd * sizeof *ch.wt);
    int rc = 0;
    if (nv > 0) rc = m->fn(&c, k, &ch);
    if (!rc && nv > 0 && m->kind == AS_PRUNE_SELECT) {
        /* a selection is the merge with singleton groups: one output path below */
        for (int g = 0; g < ch.k; g++)
            ch.off[g] = g, ch.mem[g] = ch.sel[g], ch.wt[g] = 1;
        ch.off[ch.k] = ch.k;
    }
    if (!rc) {
        int M = nt + (nv > 0 ? ch.k : 0);
        struct row *rows = as_xmalloc((size_t)(M ? M : 1) * sizeof *rows);
        unsigned char *seen = as_xcalloc(nvd, 1);
        for (int a = 0; a < nt; a++)
            rows[a].rep = ti[a], rows[a].g = -1 - a;
        for (int g = 0; g < M - nt && !rc; g++) {
            int rep = n;
            for (int t = ch.off[g]; t < ch.off[g + 1]; t++) {
                int a = ch.mem[t];
                if (a < 0 || a >= nv || seen[a] || !(ch.wt[t] >= 0))
                    rc = as_fail("method %s: bad group %d (internal error)", m->name, g);
                else
                    seen[a] = 1, rep = vi[a] < rep ? vi[a] : rep;
            }
            if (ch.off[g + 1] <= ch.off[g])
                rc = as_fail("method %s: empty group %d (internal error)", m->name, g);
            rows[nt + g].rep = rep, rows[nt + g].g = g;
        }
        if (!rc) {
            qsort(rows, (size_t)M, sizeof *rows, cmp_row);
            res->n = n, res->m = M, res->d = d;
            res->kept = as_xmalloc((size_t)(M ? M : 1) * sizeof *res->kept);
            res->w = as_xcalloc((size_t)(M ? M : 1) * n, sizeof *res->w);
            res->y = as_xcalloc((size_t)(M ? M : 1) * d, sizeof *res->y);
            double *acc = as_xmalloc((size_t)d * sizeof *acc);
            for (int r = 0; r < M; r++) {
                res->kept[r] = rows[r].rep;
                for (int j = 0; j < d; j++)
                    acc[j] = 0;
                if (rows[r].g < 0) {
                    res->w[(size_t)r * n + rows[r].rep] = 1;
                    for (int j = 0; j < d; j++)
                        acc[j] = in->x[(size_t)rows[r].rep * d + j];
                } else {
                    int g = rows[r].g;
                    double sw = 0;
                    for (int t = ch.off[g]; t < ch.off[g + 1]; t++)
                        sw += ch.wt[t];
                    for (int t = ch.off[g]; t < ch.off[g + 1]; t++) {
                        double wi = sw > 0 ? ch.wt[t] / sw : 1.0 / (ch.off[g + 1] - ch.off[g]);
                        int i = vi[ch.mem[t]];
                        res->w[(size_t)r * n + i] = (float)wi;
                        for (int j = 0; j < d; j++)
                            acc[j] += wi * in->x[(size_t)i * d + j];
                    }
                }
                for (int j = 0; j < d; j++)
                    res->y[(size_t)r * d + j] = (float)acc[j];
            }
            free(acc);
        }
        free(rows), free(seen);
    }
    free(vi), free(ti), free(x), free(xn), free(kx), free(kn), free(k1), free(sc), free(recv);
    free(qrow), free(amax), free(adiag), free(tx), free(txn), free(tk1);
    free(ch.sel), free(ch.off), free(ch.mem), free(ch.wt);
    if (rc) as_prune_result_free(res);
    return rc;
}

void as_prune_result_free(struct as_prune_result *res) {
    free(res->kept), free(res->w), free(res->y);
    memset(res, 0, sizeof *res);
}
