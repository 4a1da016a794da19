/* sparse_attn_select: the method table, the static patterns and the run-time selectors
 * (sparse_attn.h). Every selector writes a block mask; the token-level causal mask inside the
 * diagonal block is the kernel's. Scores are float with double sums where rows are long. */
#include "sparse_attn.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "forward.h"

const struct as_sparse_method_info as_sparse_methods[AS_SP_N] = {
    [AS_SP_DENSE] = {"dense", 0, {0}, {0}, "every causal block"},
    [AS_SP_ASHAPE] = {"a_shape",
                      2,
                      {"n_init", "n_local"},
                      {128, 3968},
                      "StreamingLLM: sink tokens + local window"},
    [AS_SP_TRISHAPE] = {"tri_shape",
                        3,
                        {"n_init", "n_local", "n_last"},
                        {128, 3968, 100},
                        "A-shape, last queries attend fully"},
    [AS_SP_DILATED] = {"dilated",
                       3,
                       {"vertical", "dense", "band"},
                       {1024, 0, 8192},
                       "first columns + every 2nd block diagonal in the band (dilated1; "
                       "dilated2: dense 2048, band 6144)"},
    [AS_SP_STRIDED] = {"strided",
                       1,
                       {"stride"},
                       {0},
                       "Sparse Transformer in blocks: local stride + every stride-th diagonal "
                       "(0: sqrt of the blocks)"},
    [AS_SP_VS] = {"vertical_and_slash",
                  3,
                  {"vertical", "slash", "last_q"},
                  {1000, 6096, 64},
                  "MInference: top columns and diagonals of the last queries' attention"},
    [AS_SP_BLOCKTOP] = {"block_sparse",
                        1,
                        {"top_k"},
                        {100},
                        "MInference: top-k key blocks by mean-pooled Q.K per query block"},
    [AS_SP_XATTN] = {"xattention",
                     4,
                     {"stride", "threshold", "window", "n_last"},
                     {8, 0.9, 0, 0},
                     "antidiagonal block scores, cumulative mass per row up to threshold "
                     "(window: key blocks before the diagonal always kept; n_last: the query "
                     "blocks of the last n_last tokens attend fully; both 0 as published)"},
    [AS_SP_FLEX] = {"flexprefill",
                    5,
                    {"gamma", "tau", "min_budget", "max_budget", "n_last"},
                    {0.9, 0.1, 128, 0, 0},
                    "per head query-aware or vertical-slash by JSD, coverage gamma (budgets in "
                    "tokens, max 0 = none; n_last: the query blocks of the last n_last tokens "
                    "attend fully, 0 as published)"},
    [AS_SP_STEM] = {"stem",
                    5,
                    {"stride", "alpha", "dense_layers", "init_blocks", "window"},
                    {8, 1.0, 2, 4, 4},
                    "antidiagonal scores + value-norm bonus, decaying per-row budget"},
};

int as_sparse_method_find(const char *name) {
    for (int i = 0; i < AS_SP_N; i++)
        if (!strcmp(name, as_sparse_methods[i].name)) return i;
    return -1;
}

/* 8 independent sums so the compiler vectorises it (the estimates run it over whole rows) */
static float dotf(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* indices 0..n-1 ordered by score, largest first (ties: smaller index first) */
static int by_score_desc(const void *a, const void *b, void *ctx) {
    const double *s = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (s[i] != s[j]) return s[i] > s[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}
static int *order_desc(const double *s, int n) {
    int *idx = as_xmalloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof(int), by_score_desc, (void *)s);
    return idx;
}

#define KEEP(qb, kb) keep[(size_t)(qb)*nkb + (kb)]

/* ---- static patterns ------------------------------------------------------------------------ */

/* A block is kept when any token pair in it is: j < n_init, or j > i - n_local. */
static void ashape(uint8_t *keep, int nkb, int nb, int B, double n_init, double n_local) {
    for (int qb = 0; qb < nb; qb++)
        for (int kb = 0; kb <= qb; kb++)
            KEEP(qb, kb) = (double)kb * B < n_init || (double)(kb + 1) * B - 1 > qb * B - n_local;
}

/* Full causal rows for the query blocks holding the last min(n_last, L - 1) queries (tri-shape's
 * rule). Not in the published selectors: on a passkey prompt the question sits in the last query
 * block, and a block estimate averaged over its 128 queries (most of them filler) dilutes the
 * needle's mass below the threshold; the block row costs 1/nb of the dense work. */
static void last_rows(uint8_t *keep, int nkb, int nb, int B, int L, double n_last) {
    int nl = n_last < L - 1 ? (int)n_last : L - 1;
    for (int qb = (L - nl) / B; nl > 0 && qb < nb; qb++)
        for (int kb = 0; kb <= qb; kb++)
            KEEP(qb, kb) = 1;
}

/* ---- MInference vertical-slash ---------------------------------------------------------------
 * A = softmax(Q[-last:] K^T / sqrt(d)) (causal in the trailing corner); column sums (first 30
 * forced), diagonal sums (100 nearest forced); top `vertical` columns, top `slash` diagonals;
 * a kept column keeps its key block in every query block at or below it, a kept diagonal s keeps
 * the key blocks that keys [qs - s, qe - s) of each query block fall in. */
static void vs_select(int L, int hd, const float *q, int qs, const float *k, int ks, float scale,
                      int nv, int ns, int last, uint8_t *keep, int nkb, int B) {
    int nb = (L + B - 1) / B;
    if (last > L) last = L;
    double *vert = calloc((size_t)L, sizeof(double)), *slash = calloc((size_t)L, sizeof(double));
    float *row = as_xmalloc(sizeof(float) * (size_t)L);
    for (int r = 0; r < last; r++) {
        int i = L - last + r;
        const float *qi = q + (size_t)i * qs;
        float mx = -INFINITY;
        for (int j = 0; j <= i; j++) {
            row[j] = dotf(qi, k + (size_t)j * ks, hd) * scale;
            if (row[j] > mx) mx = row[j];
        }
        double sum = 0;
        for (int j = 0; j <= i; j++)
            sum += (row[j] = expf(row[j] - mx));
        for (int j = 0; j <= i; j++) {
            double a = row[j] / sum;
            vert[j] += a, slash[i - j] += a;
        }
    }
    for (int j = 0; j < L && j < 30; j++)
        vert[j] = INFINITY;
    for (int s = 0; s < L && s < 100; s++)
        slash[s] = INFINITY;
    if (nv < 30) nv = 30;
    if (ns < 50) ns = 50;
    if (nv > L) nv = L;
    if (ns > L) ns = L;
    int *vo = order_desc(vert, L), *so = order_desc(slash, L);
    uint8_t *col = calloc((size_t)nb, 1);
    for (int t = 0; t < nv; t++)
        col[vo[t] / B] = 1;
    for (int qb = 0; qb < nb; qb++)
        for (int kb = 0; kb <= qb; kb++)
            KEEP(qb, kb) = col[kb];
    for (int t = 0; t < ns; t++) {
        int s = so[t];
        for (int qb = 0; qb < nb; qb++) {
            int lo = qb * B - s, hi = (qb + 1) * B - 1 - s;
            if (hi < 0) continue;
            if (lo < 0) lo = 0;
            for (int kb = lo / B; kb <= hi / B && kb <= qb; kb++)
                KEEP(qb, kb) = 1;
        }
    }
    free(vert), free(slash), free(row), free(vo), free(so), free(col);
}

/* mean of rows [b*B, min(L, (b+1)*B)) of x (stride xs) for every block b: [nb, hd] */
static float *pool_blocks(const float *x, int xs, int L, int hd, int B) {
    int nb = (L + B - 1) / B;
    float *p = calloc((size_t)nb * hd, sizeof(float));
    for (int b = 0; b < nb; b++) {
        int lo = b * B, hi = lo + B < L ? lo + B : L;
        for (int t = lo; t < hi; t++)
            for (int c = 0; c < hd; c++)
                p[(size_t)b * hd + c] += x[(size_t)t * xs + c];
        for (int c = 0; c < hd; c++)
            p[(size_t)b * hd + c] /= (float)(hi - lo);
    }
    return p;
}

/* MInference block_sparse: per query block the top-k key blocks by pooled Q . pooled K. */
static void blocktop_select(int L, int hd, const float *q, int qs, const float *k, int ks, int topk,
                            uint8_t *keep, int nkb, int B) {
    int nb = (L + B - 1) / B;
    float *pq = pool_blocks(q, qs, L, hd, B), *pk = pool_blocks(k, ks, L, hd, B);
    double *sc = as_xmalloc(sizeof(double) * (size_t)nb);
    for (int qb = 0; qb < nb; qb++) {
        for (int kb = 0; kb <= qb; kb++)
            sc[kb] = dotf(pq + (size_t)qb * hd, pk + (size_t)kb * hd, hd);
        int *o = order_desc(sc, qb + 1);
        for (int t = 0; t <= qb; t++)
            KEEP(qb, o[t]) = t < topk;
        KEEP(qb, qb) = 1;
        free(o);
    }
    free(pq), free(pk), free(sc);
}

/* ---- antidiagonal scores (XAttention, Stem) ---------------------------------------------------
 * s[i', j'] = sum_t q[i'S + S-1-t] . k[j'S + t] / (sqrt(d) S) as one GEMM over rows that
 * concatenate the S strided vectors: Qs[i'] = (q[i'S+S-1], ..., q[i'S]), Ks[j'] = (k[j'S], ...,
 * k[j'S+S-1]); rows past L are zero. Returns Qs, Ks: [n', S*hd]. */
static void strided_rows(const float *q, int qs, const float *k, int ks, int L, int hd, int S,
                         int n, float **Qs, float **Ks) {
    *Qs = calloc((size_t)n * S * hd, sizeof(float));
    *Ks = calloc((size_t)n * S * hd, sizeof(float));
    for (int i = 0; i < n; i++)
        for (int t = 0; t < S; t++) {
            int qi = i * S + S - 1 - t, kj = i * S + t;
            if (qi < L)
                memcpy(*Qs + ((size_t)i * S + t) * hd, q + (size_t)qi * qs, sizeof(float) * hd);
            if (kj < L)
                memcpy(*Ks + ((size_t)i * S + t) * hd, k + (size_t)kj * ks, sizeof(float) * hd);
        }
}

/* Rows of query block qb of the antidiagonal scores (row stride n), computed a chunk of CHUNK
 * query blocks per GEMM: one block's 16-row GEMM runs far below the sgemm rate. */
#define CHUNK 8
struct antidiag {
    const float *Qs, *Ks;
    int n, S, hd, R, nb, chunk0;
    float alpha, *buf;
};
static const float *antidiag_block(struct antidiag *ad, int qb) {
    if (ad->chunk0 < 0 || qb >= ad->chunk0 + CHUNK) {
        int last = qb + CHUNK < ad->nb ? qb + CHUNK - 1 : ad->nb - 1, r0 = qb * ad->R;
        int r1 = (last + 1) * ad->R < ad->n ? (last + 1) * ad->R : ad->n;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, ad->S * ad->hd, ad->alpha,
                    ad->Qs + (size_t)r0 * ad->S * ad->hd, ad->S * ad->hd, ad->Ks, ad->S * ad->hd,
                    0.0f, ad->buf, ad->n);
        ad->chunk0 = qb;
    }
    return ad->buf + (size_t)(qb - ad->chunk0) * ad->R * ad->n;
}

/* XAttention: softmax of each downsampled row over its causal keys, block mass M[qb, kb] =
 * sum of the cell; per row keep kb = 0 and the diagonal, then the others by descending mass
 * while the mass kept so far is below threshold * row total. win > 0 also keeps the win key
 * blocks before the diagonal (not in the published method): with blocks of 128 the first
 * queries of a block find their local context only in the previous block, and an LM's
 * attention is mostly local. */
struct xattn_job {
    struct antidiag *ad;
    int nb, chunk0, nq; /* this GEMM chunk: query blocks chunk0 .. chunk0 + nq - 1 */
    double thr;
    int win, nkb;
    uint8_t *keep;
    double *M; /* [CHUNK][nb]: one block-mass row per part */
};

/* Query block qb's row of the mask from its R downsampled score rows (already in ad->buf). */
static void xattn_block_row(const struct xattn_job *jb, int qb, double *M) {
    const struct antidiag *ad = jb->ad;
    int n = ad->n, R = ad->R, r0 = qb * R, rows = r0 + R <= n ? R : n - r0, nkb = jb->nkb;
    uint8_t *keep = jb->keep;
    float *blk = ad->buf + (size_t)(qb - ad->chunk0) * R * n;
    memset(M, 0, sizeof(double) * (size_t)jb->nb);
    for (int r = 0; r < rows; r++) {
        int vis = r0 + r + 1 < n ? r0 + r + 1 : n; /* causal in j' <= i' (keys j' with j'S < L) */
        float *row = blk + (size_t)r * n;
        double inv = 1.0 / as_attn_exp_row(row, vis);
        for (int kb = 0; kb * R < vis; kb++) { /* block mass: the row's R-column groups */
            float cs = 0;
            for (int j = kb * R; j < (kb + 1) * R && j < vis; j++)
                cs += row[j];
            M[kb] += cs * inv;
        }
    }
    double total = 0;
    for (int kb = 0; kb <= qb; kb++)
        total += M[kb];
    double kept = M[0] + (qb ? M[qb] : 0);
    KEEP(qb, 0) = KEEP(qb, qb) = 1;
    for (int kb = qb - jb->win > 1 ? qb - jb->win : 1; kb < qb; kb++)
        KEEP(qb, kb) = 1, kept += M[kb];
    int *o = order_desc(M, qb + 1);
    for (int t = 0; t <= qb; t++) {
        int kb = o[t];
        if (KEEP(qb, kb)) continue;
        if (kept < jb->thr * total) KEEP(qb, kb) = 1, kept += M[kb];
    }
    free(o);
}

/* Rows of a chunk are independent (each query block's own mass and mask row): split over the
 * engine's threads, so the softmax part runs in parallel as the GEMM before it does. */
static void xattn_part(void *arg, int part, int n_parts) {
    struct xattn_job *jb = arg;
    for (int t = part; t < jb->nq; t += n_parts)
        xattn_block_row(jb, jb->chunk0 + t, jb->M + (size_t)part * jb->nb);
}

static void xattn_select(int L, int hd, const float *q, int qs, const float *k, int ks, int S,
                         double thr, int win, uint8_t *keep, int nkb, int B) {
    int nb = (L + B - 1) / B, n = (L + S - 1) / S, R = B / S; /* downsampled rows per block */
    float *Qs, *Ks;
    strided_rows(q, qs, k, ks, L, hd, S, n, &Qs, &Ks);
    float *sc = as_xmalloc(sizeof(float) * (size_t)CHUNK * R * n);
    struct antidiag ad = {Qs, Ks, n, S, hd, R, nb, -1, 1.0f / (sqrtf((float)hd) * (float)S), sc};
    struct xattn_job jb = {
        &ad, nb, 0, 0, thr, win, nkb, keep, as_xmalloc(sizeof(double) * (size_t)CHUNK * nb)};
    for (int c0 = 0; c0 < nb; c0 += CHUNK) {
        antidiag_block(&ad, c0);
        jb.chunk0 = c0, jb.nq = nb - c0 < CHUNK ? nb - c0 : CHUNK;
        as_engine_parallel(xattn_part, &jb, jb.nq);
    }
    free(Qs), free(Ks), free(sc), free(jb.M);
}

/* Stem (TPD budget + OAM scores): logit[qb, kb] = mean over the cell of (s + bonus_j'), bonus =
 * 0.2 relu(standardised log max ||v|| of the stride group); k0 and the per-row budget as coded
 * upstream (the keep ratio's value is ignored unless it is 1); top-budget blocks per row, plus
 * sinks and the band. */
static void stem_select(int L, int hd, const float *q, int qs, const float *k, const float *v,
                        int ks, int S, double alpha, int init_blocks, int window, uint8_t *keep,
                        int nkb, int B) {
    int nb = (L + B - 1) / B, n = (L + S - 1) / S, R = B / S;
    int k0 = nb < 56 ? nb : nb < 160 ? (int)floor(0.2 * nb + 30) : nb / 10 + 30;
    if (k0 >= nb) { /* dense */
        for (int qb = 0; qb < nb; qb++)
            for (int kb = 0; kb <= qb; kb++)
                KEEP(qb, kb) = 1;
        return;
    }
    double *z = as_xmalloc(sizeof(double) * (size_t)n), mean = 0, var = 0;
    for (int j = 0; j < n; j++) {
        double mx = 0;
        for (int t = j * S; t < (j + 1) * S && t < L; t++) {
            double nn = sqrt((double)dotf(v + (size_t)t * ks, v + (size_t)t * ks, hd));
            mx = nn > mx ? nn : mx;
        }
        z[j] = log(mx + 1e-6), mean += z[j];
    }
    mean /= n;
    for (int j = 0; j < n; j++)
        var += (z[j] - mean) * (z[j] - mean);
    double sd = sqrt(var / (n > 1 ? n - 1 : 1));
    for (int j = 0; j < n; j++) {
        double zz = sd > 0 ? (z[j] - mean) / sd : 0;
        z[j] = 0.2 * (zz > 0 ? zz : 0);
    }
    /* No softmax in the OAM score, so a cell's mean of s is bilinear: mean_{r,j} Qs_r . Ks_j =
     * (sum_r Qs_r) . (sum_j Ks_j) / (rows cols). One [nb, S hd] x [S hd, nb] GEMM over the
     * block sums replaces the (L/S)^2 antidiagonal scores: R^2 times less work, the same
     * logits up to float rounding. The bonus depends on the column only: its cell mean is the
     * mean over the block's columns. */
    float *Qs, *Ks;
    strided_rows(q, qs, k, ks, L, hd, S, n, &Qs, &Ks);
    const int w = S * hd;
    float *Qb = calloc((size_t)nb * w, sizeof(float)), *Kb = calloc((size_t)nb * w, sizeof(float));
    float *G = as_xmalloc(sizeof(float) * (size_t)nb * nb);
    for (int i = 0; i < n; i++) {
        float *qd = Qb + (size_t)(i / R) * w, *kd = Kb + (size_t)(i / R) * w;
        const float *qsr = Qs + (size_t)i * w, *ksr = Ks + (size_t)i * w;
        for (int c = 0; c < w; c++)
            qd[c] += qsr[c], kd[c] += ksr[c];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nb, w, 1.0f / (sqrtf((float)hd) * S),
                Qb, w, Kb, w, 0.0f, G, nb);
    double *lg = as_xmalloc(sizeof(double) * (size_t)nb), *zb = calloc((size_t)nb, sizeof(double));
    for (int j = 0; j < n; j++)
        zb[j / R] += z[j];
    int topn = (int)ceil(k0 * (alpha > 1 ? alpha : 1));
    for (int qb = 0; qb < nb; qb++) {
        int rows = (qb + 1) * R <= n ? R : n - qb * R;
        for (int kb = 0; kb <= qb; kb++) {
            int cols = (kb + 1) * R <= n ? R : n - kb * R;
            lg[kb] = ((double)G[(size_t)qb * nb + kb] / rows + zb[kb]) / cols;
        }
        int budget = k0;
        if (qb >= k0) { /* linspace(k0, alpha k0, nb - k0)[qb - k0] */
            int m = nb - k0;
            double t = m > 1 ? (double)(qb - k0) / (m - 1) : 0;
            budget = (int)floor(k0 + t * (alpha * k0 - k0));
            budget = budget < 1 ? 1 : budget > k0 ? k0 : budget;
        }
        int *o = order_desc(lg, qb + 1);
        for (int t = 0; t <= qb; t++)
            KEEP(qb, o[t]) = t < topn && t < budget;
        for (int kb = 0; kb <= qb; kb++)
            if (kb < init_blocks || kb >= qb - (window - 1)) KEEP(qb, kb) = 1;
        free(o);
    }
    free(z), free(zb), free(Qs), free(Ks), free(Qb), free(Kb), free(G), free(lg);
}

/* ---- FlexPrefill ----------------------------------------------------------------------------- */

static double kl_half(const double *p, const double *m, int n) {
    double s = 0;
    for (int i = 0; i < n; i++)
        if (p[i] > 0) s += p[i] * log(p[i] / m[i]);
    return s;
}

/* number of largest entries of x (sums to ~1) whose cumulative sum stays <= gamma */
static int coverage_count(const double *x, int n, double gamma) {
    int *o = order_desc(x, n), c = 0;
    double cum = 0;
    for (; c < n; c++) {
        cum += x[o[c]];
        if (cum > gamma) break;
    }
    free(o);
    return c;
}

static int flex_select(int L, int hd, const float *q, int qs, const float *k, int ks, float scale,
                       double gamma, double tau, double min_budget, double max_budget,
                       uint8_t *keep, int nkb, int B) {
    int nb = (L + B - 1) / B, last = B < L ? B : L;
    int minb = (int)ceil(min_budget / B), maxb = max_budget > 0 ? (int)(max_budget / B) : nb;
    if (minb < 1) minb = 1;
    if (maxb < minb) maxb = minb;
    /* 1. last-block attention: column means (v) and diagonal sums / last (slash) */
    double *vt = calloc((size_t)L, sizeof(double)), *st = calloc((size_t)L, sizeof(double));
    float *row = as_xmalloc(sizeof(float) * (size_t)L);
    float *qm = calloc((size_t)hd, sizeof(float));
    for (int r = 0; r < last; r++) {
        int i = L - last + r;
        const float *qi = q + (size_t)i * qs;
        for (int c = 0; c < hd; c++)
            qm[c] += qi[c] / (float)last;
        float mx = -INFINITY;
        for (int j = 0; j <= i; j++)
            row[j] = dotf(qi, k + (size_t)j * ks, hd) * scale, mx = row[j] > mx ? row[j] : mx;
        double sum = 0;
        for (int j = 0; j <= i; j++)
            sum += (row[j] = expf(row[j] - mx));
        for (int j = 0; j <= i; j++)
            vt[j] += row[j] / sum / last, st[i - j] += row[j] / sum / last;
    }
    /* 2. budgets from coverage, pooled to blocks */
    int nv = (coverage_count(vt, L, gamma) + 1) / B + 1,
        ns = (coverage_count(st, L, gamma) + 1) / B + 1;
    double *vb = calloc((size_t)nb, sizeof(double)), *sb = calloc((size_t)nb, sizeof(double));
    for (int j = 0; j < L; j++)
        vb[j / B] += vt[j], sb[j / B] += st[j];
    /* 3. pooled estimate a = softmax(mean(Q_last) . avgpool(K)^T / sqrt(d)); D = sqrt(JSD) */
    float *pk = pool_blocks(k, ks, L, hd, B);
    double *ab = as_xmalloc(sizeof(double) * (size_t)nb), *mm = as_xmalloc(sizeof(double) * nb);
    double mx = -INFINITY, sum = 0;
    for (int b = 0; b < nb; b++)
        ab[b] = dotf(qm, pk + (size_t)b * hd, hd) * scale, mx = ab[b] > mx ? ab[b] : mx;
    for (int b = 0; b < nb; b++)
        sum += (ab[b] = exp(ab[b] - mx));
    for (int b = 0; b < nb; b++)
        ab[b] /= sum, mm[b] = 0.5 * (ab[b] + vb[b]);
    double D = sqrt(fmax(0, 0.5 * kl_half(ab, mm, nb) + 0.5 * kl_half(vb, mm, nb)));
    int query_aware = D < tau;
    if (query_aware) nv = ns = minb;
    nv = nv < minb ? minb : nv > maxb ? maxb : nv;
    ns = ns < minb ? minb : ns > maxb ? maxb : ns;
    /* 5. vertical-slash blocks: block column 0 and the diagonal always */
    int *vo = order_desc(vb, nb), *so = order_desc(sb, nb);
    for (int qb = 0; qb < nb; qb++)
        KEEP(qb, 0) = KEEP(qb, qb) = 1;
    for (int t = 0; t < nv && t < nb; t++)
        for (int qb = vo[t]; qb < nb; qb++)
            KEEP(qb, vo[t]) = 1;
    for (int t = 0; t < ns && t < nb; t++)
        for (int r = 0; r + so[t] < nb; r++)
            KEEP(r + so[t], r) = 1;
    /* 4. query-aware: the block-causal map of pooled Q and K, flattened, top entries with
     * cumulative mass <= gamma * nb (each row sums to 1) */
    if (query_aware) {
        float *pq = pool_blocks(q, qs, L, hd, B);
        size_t tot = (size_t)nb * (nb + 1) / 2, e = 0;
        double *flat = as_xmalloc(sizeof(double) * tot);
        int *fq = as_xmalloc(sizeof(int) * tot), *fk = as_xmalloc(sizeof(int) * tot);
        for (int qb = 0; qb < nb; qb++) {
            double m2 = -INFINITY, s2 = 0;
            size_t e0 = e;
            for (int kb = 0; kb <= qb; kb++, e++) {
                flat[e] = dotf(pq + (size_t)qb * hd, pk + (size_t)kb * hd, hd) * scale;
                fq[e] = qb, fk[e] = kb, m2 = flat[e] > m2 ? flat[e] : m2;
            }
            for (size_t x = e0; x < e; x++)
                s2 += (flat[x] = exp(flat[x] - m2));
            for (size_t x = e0; x < e; x++)
                flat[x] /= s2;
        }
        int *o = order_desc(flat, (int)tot);
        double cum = 0;
        for (size_t t = 0; t < tot; t++) {
            cum += flat[o[t]];
            if (cum > gamma * nb) break;
            KEEP(fq[o[t]], fk[o[t]]) = 1;
        }
        free(pq), free(flat), free(fq), free(fk), free(o);
    }
    free(vt), free(st), free(row), free(qm), free(vb), free(sb), free(pk), free(ab), free(mm);
    free(vo), free(so);
    return query_aware ? 1 : 2;
}

/* ---- one head -------------------------------------------------------------------------------- */

int as_sparse_head_mask(const struct as_sparse_head *hc, int layer, int n_layers, int block, int L,
                        int hd, const float *q, int q_stride, const float *k, const float *v,
                        int kv_stride, uint8_t *keep, int nkb, struct as_sparse_stat *st) {
    (void)n_layers;
    int B = block, nb = (L + B - 1) / B, kind = 0;
    float scale = 1.0f / sqrtf((float)hd);
    const double *p = hc->p;
    for (int qb = 0; qb < nb; qb++)
        memset(keep + (size_t)qb * nkb, 0, (size_t)nkb);
    switch (hc->method) {
    case AS_SP_DENSE:
        ashape(keep, nkb, nb, B, (double)L, 0);
        break;
    case AS_SP_ASHAPE:
        ashape(keep, nkb, nb, B, p[0], p[1]);
        break;
    case AS_SP_TRISHAPE:
        ashape(keep, nkb, nb, B, p[0], p[1]);
        last_rows(keep, nkb, nb, B, L, p[2]);
        break;
    case AS_SP_DILATED: {
        int vb = (int)ceil(p[0] / B), db = (int)ceil(p[1] / B), band = (int)ceil(p[2] / B);
        for (int qb = 0; qb < nb; qb++)
            for (int kb = 0; kb <= qb; kb++) {
                int d = qb - kb;
                KEEP(qb, kb) = kb < vb || d == 0 || d < db || (d < band && d % 2 == 0);
            }
        break;
    }
    case AS_SP_STRIDED: {
        int l = p[0] > 0 ? (int)p[0] : (int)ceil(sqrt((double)nb));
        for (int qb = 0; qb < nb; qb++)
            for (int kb = 0; kb <= qb; kb++)
                KEEP(qb, kb) = qb - kb < l || (qb - kb) % l == 0;
        break;
    }
    case AS_SP_VS:
        vs_select(L, hd, q, q_stride, k, kv_stride, scale, (int)p[0], (int)p[1], (int)p[2], keep,
                  nkb, B);
        break;
    case AS_SP_BLOCKTOP:
        blocktop_select(L, hd, q, q_stride, k, kv_stride, (int)p[0], keep, nkb, B);
        break;
    case AS_SP_XATTN:
        if (B % (int)p[0])
            return as_fail("xattention: stride %g does not divide block %d", p[0], B);
        xattn_select(L, hd, q, q_stride, k, kv_stride, (int)p[0], p[1], (int)p[2], keep, nkb, B);
        last_rows(keep, nkb, nb, B, L, p[3]);
        break;
    case AS_SP_FLEX:
        kind = flex_select(L, hd, q, q_stride, k, kv_stride, scale, p[0], p[1], p[2], p[3], keep,
                           nkb, B);
        last_rows(keep, nkb, nb, B, L, p[4]);
        break;
    case AS_SP_STEM:
        if (B % (int)p[0]) return as_fail("stem: stride %g does not divide block %d", p[0], B);
        if (layer < (int)p[2]) /* keep ratio 1.0: a dense layer */
            ashape(keep, nkb, nb, B, (double)L, 0);
        else
            stem_select(L, hd, q, q_stride, k, v, kv_stride, (int)p[0], p[1], (int)p[3], (int)p[4],
                        keep, nkb, B);
        break;
    default:
        return as_fail("sparse attention: unknown method %d", (int)hc->method);
    }
    if (st) {
        long kept = 0;
        for (int qb = 0; qb < nb; qb++)
            for (int kb = 0; kb <= qb; kb++)
                kept += KEEP(qb, kb) != 0;
        st->density = (double)kept / ((double)nb * (nb + 1) / 2);
        st->kind = kind;
    }
    return 0;
}

const struct as_block_mask *as_sparse_engine_mask(void *ctx, int layer, const float *q,
                                                  const float *k, const float *v, int T) {
    struct as_sparse_engine *e = ctx;
    struct as_sparse_config *cfg = e->cfg;
    const struct as_model_config *c = e->model;
    int B = cfg->block, nb = (T + B - 1) / B, hd = c->head_dim;
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, kv_mul = c->n_heads / c->n_kv_heads;
    if (T <= B) return NULL; /* one block: dense */
    struct as_block_mask *m = &cfg->mask;
    if (m->nqb < nb || m->n_heads != c->n_heads) {
        free(m->keep);
        m->keep = as_xmalloc((size_t)c->n_heads * nb * nb);
        m->nqb = m->nkb = nb;
        m->n_heads = c->n_heads;
    }
    m->block = B;
    if (!cfg->stats) cfg->stats = calloc((size_t)cfg->n_layers * cfg->n_heads, sizeof *cfg->stats);
    for (int h = 0; h < c->n_heads; h++) {
        int g = h / kv_mul;
        if (as_sparse_head_mask(&cfg->heads[(size_t)layer * cfg->n_heads + h], layer, cfg->n_layers,
                                B, T, hd, q + (size_t)h * hd, qd, k + (size_t)g * hd,
                                v + (size_t)g * hd, kvd, m->keep + (size_t)h * m->nqb * m->nkb,
                                m->nkb, &cfg->stats[(size_t)layer * cfg->n_heads + h]))
            as_die_last();
    }
    return m;
}
