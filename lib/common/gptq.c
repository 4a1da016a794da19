/* gptq: GPTQ / GPTAQ column loop, blocked (lazy batch, one GEMM per block) and column-by-column.
 *
 * Order of operations = the reference fasterquant (docs/gptq.md has the line-by-line mapping):
 *   per-channel params fitted on W as given; dead inputs (H[d,d] == 0 -> 1, W[:,d] = 0);
 *   static group params on those weights; act-order permutation (stable argsort of diag H,
 *   descending); damping percdamp * mean(diag H), retried with +damp_step on a failed
 *   factorization; U = upper Cholesky of H^-1; column loop; codes back to the original order.
 * Dynamic groups are fitted, like the reference, when their first column is reached, on the
 * weights as they stand at the start of the current block (the reference slices W, not its
 * in-block copy W1): so the group params of a block are all fitted at the block start.
 * Rows are independent given U (each row has its own group params), so the in-block work runs on
 * tiles of 8 rows (a tile's block stays in L1, the U block in L2), split over threads; the update
 * of the columns after the block is one sgemm (two for GPTAQ). */
#include "gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "as_error.h"
#include "quant_int.h"
#include "quant_search.h"

void gptq_opts_default(struct gptq_opts *o) {
    memset(o, 0, sizeof *o);
    o->bits = 4;
    o->group_size = 128;
    o->sym = 1;
    o->percdamp = 0.01f;
    o->blocksize = 128;
    o->method = GPTQ_METHOD_GPTQ;
    o->gptaq_alpha = 0.25f;
    o->damp_step = 0.01f;
    o->max_damp_retries = 30;
}

void gptq_result_free(struct gptq_result *r) {
    free(r->q);
    free(r->scale);
    free(r->zero);
    free(r->g_idx);
    free(r->perm);
    free(r->minv);
    memset(r, 0, sizeof *r);
}

double gptq_flops(int N, int K, enum gptq_method m, enum gptq_factor fm) {
    double k = K, n = N;
    double f = (fm == GPTQ_FACTOR_REVERSE ? 2 * k * k * k / 3 : 4 * k * k * k / 3) + n * k * k;
    if (m == GPTQ_METHOD_GPTAQ) f += 2 * k * k * k + n * k * k;
    return f;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* State shared by the preparation and both kernels. Columns are in processing (permuted) order. */
struct gq {
    const struct gptq_opts *o;
    int N, K, G, gs, maxq, B;
    int gptaq;
    float *W;       /* [N*K], columns permuted under act-order */
    const float *U; /* [K*K] row-major upper Cholesky factor of H^-1 */
    const float *P; /* [K*K] GPTAQ term, NULL for GPTQ */
    int32_t *gcol;  /* [K] group (index into scale/zero) of processing position i */
    const int32_t *perm;
    struct gptq_result *r;
    const float *imp; /* [K] importance of processing position i (scale search), or NULL */
    float *minv;      /* [N*G] float minimums (opts.float_min), or NULL */
};

/* One group's parameters: the reference min/max fit, the importance-weighted search, or the
 * float-minimum search (minv != NULL). */
static void fit_params(const struct gptq_opts *o, const float *w, int len, const float *imp,
                       float *scale, int32_t *zero, float *minv) {
    if (minv) {
        struct quant_search_params sp = {.bits = o->bits, .fp16_scale = o->scale_search_fp16};
        quant_fmin_group(w, imp, len, &sp, scale, minv);
        *zero = quant_fmin_nearest_zero(*scale, *minv, o->bits);
        return;
    }
    if (!o->scale_search || !imp) {
        quant_int_fit_group(w, len, o->bits, o->sym, scale, zero);
        return;
    }
    struct quant_search_params sp = {.bits = o->bits,
                                     .sym = o->sym,
                                     .fp16_scale = o->scale_search_fp16,
                                     .signed_scale = o->scale_search_signed};
    quant_search_group(w, imp, len, &sp, scale, zero);
}

static int orig_col(const struct gq *s, int i) {
    return s->perm ? s->perm[i] : i;
}

/* Dynamic groups whose first column lies in [i1, i2): fit on the current W (block-start state). */
static void fit_dynamic_groups(struct gq *s, int i1, int i2) {
    if (s->o->group_size <= 0 || s->o->static_groups) return;
    for (int c = ((i1 + s->gs - 1) / s->gs) * s->gs; c < i2; c += s->gs) {
        int len = c + s->gs <= s->K ? s->gs : s->K - c, g = c / s->gs;
        for (int n = 0; n < s->N; n++)
            fit_params(s->o, s->W + (long)n * s->K + c, len, s->imp ? s->imp + c : NULL,
                       &s->r->scale[(long)n * s->G + g], &s->r->zero[(long)n * s->G + g],
                       s->minv ? &s->minv[(long)n * s->G + g] : NULL);
    }
}

/* ---- blocked kernel ---- */

/* In-block work is done on tiles of RT rows stored transposed (tile[k][r], column k of the block,
 * row r of the tile): the rank-1 update of column i is then, for each later column k, one
 * RT-wide vector operation with U[i,k] broadcast, and the per-column quantization runs on RT
 * rows at once. Every element sees exactly the same floating-point operations as the reference
 * (w -= err*u; GPTAQ w -= err*u - w_i*p), so the result does not depend on the tiling. */
enum { RT = 8 };

/* GCC's -O2 does not vectorize these loops, so they ask for O3 (and an AVX2 clone picked at load
 * time); ISO C mode keeps FMA contraction off, so every clone rounds exactly like scalar code. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GPTQ_VEC __attribute__((optimize("O3"), target_clones("avx2", "default")))
#else
#define GPTQ_VEC
#endif
/* One tile row (RT floats) as a GCC vector, so the loop over k stays scalar and each step is one
 * vector operation (left alone, GCC vectorizes across k with permutes). aligned(4): no alignment
 * assumption on the buffer. */
typedef float tile_vec __attribute__((vector_size(RT * sizeof(float)), aligned(4)));

GPTQ_VEC static void tile_update(float *restrict t, const float *restrict u,
                                 const float *restrict er, int from, int cnt) {
    tile_vec e;
    memcpy(&e, er, sizeof e);
    tile_vec *tv = (tile_vec *)t;
    for (int k = from; k < cnt; k++)
        tv[k] -= e * u[k];
}
GPTQ_VEC static void tile_update_gptaq(float *restrict t, const float *restrict u,
                                       const float *restrict p, const float *restrict er,
                                       const float *restrict wi, int from, int cnt) {
    tile_vec e, w;
    memcpy(&e, er, sizeof e);
    memcpy(&w, wi, sizeof w);
    tile_vec *tv = (tile_vec *)t;
    for (int k = from; k < cnt; k++)
        tv[k] -= e * u[k] - w * p[k];
}

/* Quantize column i of a tile (RT rows): same operations as quant_int_quantize/_dequantize. */
GPTQ_VEC static void tile_quant(const float *restrict x, const float *restrict sc,
                                const float *restrict zf, float maxq, float d, float *restrict code,
                                float *restrict er, float *restrict loss) {
    for (int r = 0; r < RT; r++) {
        float q = __builtin_rintf(x[r] / sc[r]) + zf[r];
        q = q < 0.0f ? 0.0f : q;
        q = q > maxq ? maxq : q;
        float diff = x[r] - sc[r] * (q - zf[r]);
        code[r] = q;
        er[r] = diff / d;
        loss[r] = (diff * diff) / (d * d);
    }
}

/* Float-minimum variant: q = round((x - m) / scale), w_hat = scale * q + m (quant_fmin_*). */
GPTQ_VEC static void tile_quant_min(const float *restrict x, const float *restrict sc,
                                    const float *restrict mf, float maxq, float d,
                                    float *restrict code, float *restrict er,
                                    float *restrict loss) {
    for (int r = 0; r < RT; r++) {
        float q = __builtin_rintf((x[r] - mf[r]) / sc[r]);
        q = q < 0.0f ? 0.0f : q;
        q = q > maxq ? maxq : q;
        float diff = x[r] - (sc[r] * q + mf[r]);
        code[r] = q;
        er[r] = diff / d;
        loss[r] = (diff * diff) / (d * d);
    }
}

struct rows_job {
    struct gq *s;
    float *err;  /* [N*B] this block's scaled errors, row stride B */
    float *tile; /* [B*RT] this job's tile */
    int n0, n1, i1, cnt;
    double loss;
};

/* In-block work for rows [n0, n1): quantize each column, then the rank-1 update of the rest of
 * the block (REFERENCE.md step 7: W[:, i+1..] -= err * U[i, i+1..]). */
static void *block_rows(void *arg) {
    struct rows_job *j = arg;
    struct gq *s = j->s;
    const int K = s->K, G = s->G, i1 = j->i1, cnt = j->cnt;
    float *t = j->tile, er[RT], wi[RT];
    double loss = 0;
    for (int n0 = j->n0; n0 < j->n1; n0 += RT) {
        int nr = j->n1 - n0 < RT ? j->n1 - n0 : RT;
        for (int r = 0; r < RT; r++) {
            if (r >= nr) {
                for (int k = 0; k < cnt; k++)
                    t[k * RT + r] = 0.0f;
                continue;
            }
            const float *w = s->W + (long)(n0 + r) * K + i1;
            for (int k = 0; k < cnt; k++)
                t[k * RT + r] = w[k];
        }
        float sc[RT], zf[RT], code[RT], lv[RT];
        int gprev = -1;
        for (int i = 0; i < cnt; i++) {
            int col = i1 + i, g = s->gcol[col], oc = orig_col(s, col);
            const float *u = s->U + (long)col * K + i1;
            float d = u[i];
            if (g != gprev) { /* padding rows get scale 1, zero 0: harmless values */
                for (int r = 0; r < RT; r++) {
                    sc[r] = r < nr ? s->r->scale[(long)(n0 + r) * G + g] : 1.0f;
                    zf[r] = r >= nr   ? 0.0f
                            : s->minv ? s->minv[(long)(n0 + r) * G + g]
                                      : (float)s->r->zero[(long)(n0 + r) * G + g];
                }
                gprev = g;
            }
            memcpy(wi, t + (long)i * RT, sizeof wi);
            if (s->minv) /* zf holds the float minimums */
                tile_quant_min(wi, sc, zf, (float)s->maxq, d, code, er, lv);
            else
                tile_quant(wi, sc, zf, (float)s->maxq, d, code, er, lv);
            for (int r = 0; r < nr; r++) {
                long n = n0 + r;
                s->r->q[n * K + oc] = (uint8_t)code[r];
                loss += (double)lv[r];
                j->err[n * s->B + i] = er[r];
            }
            if (s->gptaq) {
                /* GPTAQ: W1[:, i:] -= err*U[i, i:] - w*P[i, i:]; column i itself becomes
                 * w - err*d (~ q), which the lazy batch multiplies with P. */
                tile_update_gptaq(t, u, s->P + (long)col * K + i1, er, wi, i, cnt);
            } else {
                tile_update(t, u, er, i + 1, cnt);
            }
        }
        if (s->gptaq) /* the lazy batch reads the block back from W */
            for (int r = 0; r < nr; r++) {
                float *w = s->W + (long)(n0 + r) * K + i1;
                for (int k = 0; k < cnt; k++)
                    w[k] = t[k * RT + r];
            }
    }
    j->loss = loss;
    return NULL;
}

static int n_threads(const struct gptq_opts *o, int N) {
    long t = o->threads > 0 ? o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (t < 1) t = 1;
    if (t > 64) t = 64;
    if (t > N / 16) t = N / 16 > 0 ? N / 16 : 1; /* not worth a thread for a few rows */
    return (int)t;
}

static void run_blocked(struct gq *s) {
    const int N = s->N, K = s->K, B = s->B;
    int T = n_threads(s->o, N);
    float *err = as_xmalloc(sizeof(float) * (size_t)N * (size_t)B);
    float *tiles = as_xmalloc(sizeof(float) * (size_t)T * (size_t)B * RT);
    struct rows_job jobs[64];
    pthread_t tid[64];
    for (int i1 = 0; i1 < K; i1 += B) {
        int i2 = i1 + B < K ? i1 + B : K, cnt = i2 - i1;
        double t0 = now_s();
        fit_dynamic_groups(s, i1, i2);
        for (int t = 0; t < T; t++) {
            /* split on tile boundaries so that only the last job has a partial tile */
            int n0 = (int)(((long)N / RT) * t / T) * RT,
                n1 = (int)(((long)N / RT) * (t + 1) / T) * RT;
            if (t == T - 1) n1 = N;
            jobs[t] = (struct rows_job){s, err, tiles + (size_t)t * B * RT, n0, n1, i1, cnt, 0};
        }
        int started = 0;
        for (int t = 1; t < T; t++, started++)
            if (pthread_create(&tid[t], NULL, block_rows, &jobs[t])) break;
        block_rows(&jobs[0]);
        for (int t = 1; t <= started; t++)
            pthread_join(tid[t], NULL);
        for (int t = started + 1; t < T; t++)
            block_rows(&jobs[t]); /* thread creation failed */
        for (int t = 0; t < T; t++)
            s->r->loss += jobs[t].loss;
        s->r->t_inblock += now_s() - t0;
        /* Lazy batch: W[:, i2:] -= Err1 . U[i1:i2, i2:] as GEMMs (BLAS-3) over fixed tiles of
         * GPTQ_ROW_TILE rows: a BLAS may round a row differently depending on how many rows a
         * call has (OpenBLAS sends one-row calls to GEMV), so fixed tiles make every row's result
         * independent of the total row count, and row blocks (gptq_plan_rows) bit-identical. */
        for (int t0 = 0; i2 < K && t0 < N; t0 += GPTQ_ROW_TILE) {
            int m = N - t0 < GPTQ_ROW_TILE ? N - t0 : GPTQ_ROW_TILE;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, K - i2, cnt, -1.0f,
                        err + (long)t0 * B, B, s->U + (long)i1 * K + i2, K, 1.0f,
                        s->W + (long)t0 * K + i2, K);
            /* GPTAQ: ... + W1 . P[i1:i2, i2:], W1 = the block after its in-block updates. */
            if (s->gptaq)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, K - i2, cnt, 1.0f,
                            s->W + (long)t0 * K + i1, K, s->P + (long)i1 * K + i2, K, 1.0f,
                            s->W + (long)t0 * K + i2, K);
        }
    }
    free(err);
    free(tiles);
}

/* ---- column-by-column kernel ---- */

static void run_columnwise(struct gq *s) {
    const int N = s->N, K = s->K, G = s->G, B = s->B;
    float *errv = as_xmalloc(sizeof(float) * (size_t)N);
    float *wv = as_xmalloc(sizeof(float) * (size_t)N), *wq = as_xmalloc(sizeof(float) * (size_t)N);
    for (int i = 0; i < K; i++) {
        /* The block structure only decides when dynamic groups are fitted and, for GPTAQ, which
         * value of w multiplies P (see run_blocked); the updates themselves are immediate. */
        if (i % B == 0) fit_dynamic_groups(s, i, i + B < K ? i + B : K);
        int bend = (i / B + 1) * B < K ? (i / B + 1) * B : K;
        float d = s->U[(long)i * K + i];
        for (int n = 0; n < N; n++) {
            int g = s->gcol[i];
            float sc = s->r->scale[(long)n * G + g], wi = s->W[(long)n * K + i];
            int32_t zp = s->r->zero[(long)n * G + g];
            float mv = s->minv ? s->minv[(long)n * G + g] : 0.0f;
            uint8_t c = s->minv ? quant_fmin_quantize(wi, sc, mv, s->maxq)
                                : quant_int_quantize(wi, sc, zp, s->maxq);
            float diff =
                wi - (s->minv ? quant_fmin_dequantize(c, sc, mv) : quant_int_dequantize(c, sc, zp));
            s->r->q[(long)n * K + orig_col(s, i)] = c;
            s->r->loss += (double)((diff * diff) / (d * d));
            errv[n] = diff / d;
            wv[n] = wi;
            wq[n] = wi - errv[n] * d;
        }
        if (i + 1 < K)
            cblas_sger(CblasRowMajor, N, K - i - 1, -1.0f, errv, 1, s->U + (long)i * K + i + 1, 1,
                       s->W + i + 1, K);
        if (s->gptaq) {
            const float *p = s->P + (long)i * K;
            if (i + 1 < bend)
                cblas_sger(CblasRowMajor, N, bend - i - 1, 1.0f, wv, 1, p + i + 1, 1, s->W + i + 1,
                           K);
            if (bend < K)
                cblas_sger(CblasRowMajor, N, K - bend, 1.0f, wq, 1, p + bend, 1, s->W + bend, K);
        }
    }
    free(errv);
    free(wv);
    free(wq);
}

/* ---- preparation ---- */

static int check_opts(const struct gptq_opts *o, int N, int K) {
    struct quant_int_params p = {o->bits, o->group_size, o->sym};
    if (quant_int_check_params(&p, N, K)) return -1;
    if (o->blocksize < 1) return as_fail("gptq: block size %d must be >= 1", o->blocksize);
    if (!(o->percdamp >= 0.0f) || !isfinite(o->percdamp))
        return as_fail("gptq: damping %g must be a finite value >= 0", (double)o->percdamp);
    if (!(o->damp_step > 0.0f) || o->max_damp_retries < 0)
        return as_fail("gptq: damping retry step %g / limit %d invalid", (double)o->damp_step,
                       o->max_damp_retries);
    if (o->factor != GPTQ_FACTOR_REFERENCE && o->factor != GPTQ_FACTOR_REVERSE)
        return as_fail("gptq: unknown factorization %d", (int)o->factor);
    if (o->method != GPTQ_METHOD_GPTQ && o->method != GPTQ_METHOD_GPTAQ)
        return as_fail("gptq: unknown method %d", (int)o->method);
    if (o->method == GPTQ_METHOD_GPTAQ && !o->dxxt)
        return as_fail("gptq: GPTAQ needs the dXX^T matrix");
    if (o->float_min && o->sym)
        return as_fail("gptq: a float minimum needs the asymmetric quantizer (sym = 0)");
    if ((long)K * K > (1L << 40) / 4 || (long)N * K > (1L << 40))
        return as_fail("gptq: shape [%d, %d] too large", N, K);
    return 0;
}

static int check_finite(const float *a, long rows, long cols, const char *what) {
    for (long i = 0; i < rows * cols; i++)
        if (!isfinite(a[i]))
            return as_fail("%s: non-finite value %g at [%ld, %ld]", what, (double)a[i], i / cols,
                           i % cols);
    return 0;
}

/* H = 2 X X^T is symmetric; only its lower triangle is factorised, so an asymmetric H (a damaged
 * or mislabelled record) would be used silently. Rounding of the accumulation may differ between
 * H[i,j] and H[j,i]; a difference beyond 1e-3 of the entry's scale sqrt(H_ii H_jj) is not that. */
static int check_symmetric(const float *H, long K) {
    for (long i = 0; i < K; i++)
        for (long j = 0; j < i; j++) {
            double a = H[i * K + j], b = H[j * K + i];
            double scale = sqrt(fabs((double)H[i * K + i] * H[j * K + j])) + 1e-30;
            if (fabs(a - b) > 1e-3 * scale + 1e-6 * (fabs(a) + fabs(b)))
                return as_fail("hessian: not symmetric: H[%ld, %ld] = %g but H[%ld, %ld] = %g", i,
                               j, a, j, i, b);
        }
    return 0;
}

static int cmp_diag_desc(const void *a, const void *b, void *ctx) {
    const float *diag = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (diag[i] > diag[j]) return -1;
    if (diag[i] < diag[j]) return 1;
    return (i > j) - (i < j); /* ties keep the original column order: a stable argsort */
}

static void act_order_perm(const float *H, int K, int32_t *perm) {
    float *diag = as_xmalloc(sizeof(float) * (size_t)K);
    for (int k = 0; k < K; k++)
        diag[k] = H[(long)k * K + k], perm[k] = k;
    qsort_r(perm, (size_t)K, sizeof *perm, cmp_diag_desc, diag);
    free(diag);
}

/* A = P A P^T in place (A[i][j] <- A[perm[i]][perm[j]]) with two K-float buffers instead of a
 * second K x K matrix: rows follow the permutation's cycles, then each row's columns. */
static void permute_sym_inplace(float *A, int K, const int32_t *perm) {
    float *tmp = as_xmalloc(sizeof(float) * (size_t)K);
    uint8_t *done = as_xcalloc((size_t)K, 1);
    const size_t row = sizeof(float) * (size_t)K;
    for (int start = 0; start < K; start++) {
        if (done[start]) continue;
        memcpy(tmp, A + (long)start * K, row);
        for (int i = start;;) {
            done[i] = 1;
            int j = perm[i];
            if (j == start) {
                memcpy(A + (long)i * K, tmp, row);
                break;
            }
            memcpy(A + (long)i * K, A + (long)j * K, row);
            i = j;
        }
    }
    for (int i = 0; i < K; i++) {
        float *r = A + (long)i * K;
        for (int j = 0; j < K; j++)
            tmp[j] = r[perm[j]];
        memcpy(r, tmp, row);
    }
    free(done);
    free(tmp);
}

/* Copy one strict triangle of a row-major K x K matrix onto the other, in 64 x 64 tiles.
 * lower_to_upper: A[i][j] = A[j][i] for j > i; otherwise A[j][i] = A[i][j]. */
static void mirror_triangle(float *A, int K, int lower_to_upper) {
    const int T = 64;
    for (int i0 = 0; i0 < K; i0 += T)
        for (int j0 = i0; j0 < K; j0 += T)
            for (int i = i0; i < i0 + T && i < K; i++)
                for (int j = j0 > i ? j0 : i + 1; j < j0 + T && j < K; j++) {
                    if (lower_to_upper)
                        A[(long)i * K + j] = A[(long)j * K + i];
                    else
                        A[(long)j * K + i] = A[(long)i * K + j];
                }
}

static int diag_ok(const float *U, int K) {
    for (int i = 0; i < K; i++) {
        float d = U[(long)i * K + i];
        if (!(d > 0.0f) || !isfinite(d)) return 0;
    }
    return 1;
}

/* Zero the strict lower triangle of U (its diagonal was checked). */
static void finish_upper(float *U, int K) {
    for (int i = 1; i < K; i++)
        memset(U + (long)i * K, 0, sizeof(float) * (size_t)i);
}

/* The factorizations read and write one triangle only (LAPACK on a symmetric matrix), so after a
 * failure the other strict triangle still holds H: a damping retry restores H from it and a saved
 * diagonal instead of from a K x K copy (the memory of one Hessian, not two).
 *
 * H (damped, row-major) -> row-major upper U with U^T U = H^-1, like the reference
 * cholesky -> cholesky_inverse -> cholesky(upper). A row-major symmetric matrix is its own
 * column-major image, so LAPACK works column-major on the 'U' triangle (= our lower one); the
 * factor V of H^-1 = V^T V ends up transposed in our lower triangle and is moved up. Our strict
 * upper triangle is untouched until the factor is known to be good. */
static int factor_reference(float *H, int K) {
    if (LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', K, H, K) != 0) return -1;
    if (LAPACKE_spotri(LAPACK_COL_MAJOR, 'U', K, H, K) != 0) return -1;
    if (LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', K, H, K) != 0) return -1;
    if (!diag_ok(H, K)) return -1;
    mirror_triangle(H, K, 1);
    finish_upper(H, K);
    return 0;
}

/* Reversing a row-major K x K array end to end maps [i][j] to [K-1-i][K-1-j] (J A J). */
static void reverse_all(float *a, long n) {
    for (long i = 0, j = n - 1; i < j; i++, j--) {
        float t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

/* GPTQ_FACTOR_REVERSE (gptq.h): J H J = L' L'^T, so H = U~ U~^T with U~ = J L' J upper and
 * U = U~^-1 = J L'^-1 J. Column-major 'U' on our buffer is L'^T, so trtri('U') leaves L'^-1 in
 * our lower triangle; reversing the array moves it, flipped, to the upper one. The strict lower
 * triangle of H is never touched (on failure the array is reversed back). */
static int factor_reverse(float *H, int K) {
    reverse_all(H, (long)K * K);
    int rc = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', K, H, K) != 0 ||
                     LAPACKE_strtri(LAPACK_COL_MAJOR, 'U', 'N', K, H, K) != 0
                 ? -1
                 : 0;
    reverse_all(H, (long)K * K);
    if (rc || !diag_ok(H, K)) return -1;
    finish_upper(H, K);
    return 0;
}

/* ---- the plan: everything that depends on H only ---- */

int gptq_plan_init(struct gptq_plan *p, const struct gptq_opts *o, int N, int K, float *H) {
    memset(p, 0, sizeof *p);
    if (check_opts(o, N, K)) return -1;
    if (check_finite(H, K, K, "hessian") || check_symmetric(H, K)) return -1;
    const int gptaq = o->method == GPTQ_METHOD_GPTAQ;
    if (gptaq && check_finite(o->dxxt, K, K, "dXXT")) return -1;
    double t0 = now_s();
    p->o = *o;
    p->K = K;
    p->gs = o->group_size <= 0 ? K : o->group_size;
    p->G = quant_int_n_groups(K, o->group_size);
    p->U = H;
    p->P = gptaq ? o->dxxt : NULL;
    p->dead = as_xcalloc((size_t)K, 1);
    p->gcol = as_xmalloc(sizeof(int32_t) * (size_t)K);
    p->g_idx = as_xcalloc((size_t)K, sizeof(int32_t));
    float *hdiag = as_xmalloc(sizeof(float) * (size_t)K);
    const int static_groups = o->static_groups && o->group_size > 0;

    /* The factorization reads the lower triangle; make the upper one equal to it, so that a
     * damping retry (which restores H from the untouched triangle) sees the same matrix. */
    mirror_triangle(H, K, 1);

    /* Dead inputs (step 2). GPTAQ zeroes the matching columns of dXX^T. The weight columns are
     * zeroed row by row (gptq_plan_rows). */
    for (int d = 0; d < K; d++) {
        if (H[(long)d * K + d] != 0.0f) continue;
        p->dead[d] = 1;
        p->n_dead++;
        H[(long)d * K + d] = 1.0f;
        if (gptaq)
            for (int a = 0; a < K; a++)
                o->dxxt[(long)a * K + d] = 0.0f;
    }

    /* Act-order (step 4). g_idx is the group of each original column: with dynamic groups the
     * groups follow the processing order (g_idx[perm[i]] = i / gs), with static ones the original
     * order (g_idx[k] = k / gs), exactly as AutoGPTQ builds it. */
    if (o->act_order) {
        p->perm = as_xmalloc(sizeof(int32_t) * (size_t)K);
        act_order_perm(H, K, p->perm);
        if (gptaq) permute_sym_inplace(o->dxxt, K, p->perm);
        permute_sym_inplace(H, K, p->perm);
    }
    for (int i = 0; i < K; i++) {
        int k = p->perm ? p->perm[i] : i;
        if (o->group_size <= 0)
            p->gcol[i] = 0, p->g_idx[k] = 0;
        else if (static_groups)
            p->gcol[i] = k / p->gs, p->g_idx[k] = k / p->gs;
        else
            p->gcol[i] = i / p->gs, p->g_idx[k] = i / p->gs;
    }

    /* Damping (step 5) and U (step 6); a failed factorization restarts from H restored out of
     * the triangle the factorization did not touch, with more damping. */
    double dsum = 0;
    for (int i = 0; i < K; i++)
        hdiag[i] = H[(long)i * K + i], dsum += hdiag[i];
    float mean_diag = (float)(dsum / K);
    int rc = -1;
    for (int retry = 0;; retry++) {
        if (retry > o->max_damp_retries) {
            as_fail("hessian: not positive definite even with damping %g of mean diag %g (%d "
                    "retries)",
                    (double)p->percdamp, (double)mean_diag, o->max_damp_retries);
            goto out;
        }
        p->percdamp = o->percdamp + (float)retry * o->damp_step;
        p->damp = p->percdamp * mean_diag;
        p->damp_retries = retry;
        if (retry > 0) /* reference: upper intact; reverse: lower intact */
            mirror_triangle(H, K, o->factor == GPTQ_FACTOR_REVERSE);
        for (int i = 0; i < K; i++)
            H[(long)i * K + i] = hdiag[i] + p->damp;
        int ok = o->factor == GPTQ_FACTOR_REVERSE ? factor_reverse(H, K) : factor_reference(H, K);
        if (ok == 0) break;
    }

    /* GPTAQ: P = alpha * triu(dXX^T U^T, 1) U, with two triangular products. */
    if (gptaq) {
        float *P = o->dxxt;
        cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit, K, K, 1.0f, H,
                    K, P, K);
        for (int i = 0; i < K; i++)
            memset(P + (long)i * K, 0, sizeof(float) * (size_t)(i + 1));
        cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, K, K,
                    o->gptaq_alpha, H, K, P, K);
    }
    p->t_factor = now_s() - t0;
    rc = 0;
out:
    free(hdiag);
    if (rc) gptq_plan_free(p);
    return rc;
}

void gptq_plan_free(struct gptq_plan *p) {
    free(p->dead);
    free(p->gcol);
    free(p->g_idx);
    free(p->perm);
    memset(p, 0, sizeof *p);
}

static int plan_rows(const struct gptq_plan *p, float *W, int rows, int row0, uint8_t *q,
                     float *scale, int32_t *zero, float *minv, double *loss, double *t_inblock,
                     int columnwise) {
    const struct gptq_opts *o = &p->o;
    const int K = p->K, G = p->G, gs = p->gs;
    if (o->float_min && !minv)
        return as_fail("gptq: float_min needs the minv output (gptq_plan_rows_min)");
    if (!o->float_min) minv = NULL;
    for (long i = 0; i < (long)rows * K; i++)
        if (!isfinite(W[i]))
            return as_fail("weight: non-finite value %g at [%ld, %ld]", (double)W[i], row0 + i / K,
                           i % K);
    memset(scale, 0, sizeof(float) * (size_t)rows * G);
    memset(zero, 0, sizeof(int32_t) * (size_t)rows * G);
    if (minv) memset(minv, 0, sizeof(float) * (size_t)rows * G);

    /* Scale search importances: 1/U[i,i]^2 by processing position, and by original column. */
    float *imp = NULL, *imp_orig = NULL;
    if (o->scale_search || minv) {
        imp = as_xmalloc(sizeof(float) * (size_t)K);
        imp_orig = as_xmalloc(sizeof(float) * (size_t)K);
        for (int i = 0; i < K; i++) {
            float d = p->U[(size_t)i * K + i];
            imp[i] = 1.0f / (d * d);
            imp_orig[p->perm ? p->perm[i] : i] = imp[i];
        }
    }
    /* Per-channel params: the reference calls find_params(W) before zeroing dead columns. */
    if (o->group_size <= 0)
        for (int n = 0; n < rows; n++)
            fit_params(o, W + (long)n * K, K, imp_orig, &scale[n], &zero[n],
                       minv ? &minv[n] : NULL);
    if (p->n_dead)
        for (int d = 0; d < K; d++)
            if (p->dead[d])
                for (int n = 0; n < rows; n++)
                    W[(long)n * K + d] = 0.0f;
    /* Static groups (step 3): original column order, weights before any update. */
    if (o->static_groups && o->group_size > 0)
        for (int n = 0; n < rows; n++)
            for (int g = 0; g < G; g++) {
                int k0 = g * gs, len = k0 + gs <= K ? gs : K - k0;
                fit_params(o, W + (long)n * K + k0, len, imp_orig ? imp_orig + k0 : NULL,
                           &scale[(long)n * G + g], &zero[(long)n * G + g],
                           minv ? &minv[(long)n * G + g] : NULL);
            }
    if (p->perm) {
        float *row = as_xmalloc(sizeof(float) * (size_t)K);
        for (int n = 0; n < rows; n++) {
            float *w = W + (long)n * K;
            for (int i = 0; i < K; i++)
                row[i] = w[p->perm[i]];
            memcpy(w, row, sizeof(float) * (size_t)K);
        }
        free(row);
    }

    /* The kernels write codes/params of rows [0, rows) through a result view of this block. */
    struct gptq_result r = {.N = rows,
                            .K = K,
                            .G = G,
                            .q = q,
                            .scale = scale,
                            .zero = zero,
                            .g_idx = p->g_idx,
                            .perm = p->perm};
    struct gq s = {o,
                   rows,
                   K,
                   G,
                   gs,
                   quant_int_maxq(o->bits),
                   o->blocksize,
                   o->method == GPTQ_METHOD_GPTAQ,
                   W,
                   p->U,
                   p->P,
                   p->gcol,
                   p->perm,
                   &r,
                   imp,
                   minv};
    if (columnwise)
        run_columnwise(&s);
    else
        run_blocked(&s);
    *loss += r.loss / 2;
    if (t_inblock) *t_inblock += r.t_inblock;
    free(imp);
    free(imp_orig);

    /* Step 8: W_hat in the original column order, from the codes and their group params. */
    for (int n = 0; n < rows; n++) {
        float *w = W + (long)n * K;
        const uint8_t *qr = q + (long)n * K;
        for (int k = 0; k < K; k++) {
            long g = (long)n * G + p->g_idx[k];
            w[k] = minv ? quant_fmin_dequantize(qr[k], scale[g], minv[g])
                        : quant_int_dequantize(qr[k], scale[g], zero[g]);
        }
    }
    return 0;
}

int gptq_plan_rows(const struct gptq_plan *p, float *W, int rows, int row0, uint8_t *q,
                   float *scale, int32_t *zero, double *loss) {
    return plan_rows(p, W, rows, row0, q, scale, zero, NULL, loss, NULL, 0);
}

int gptq_plan_rows_min(const struct gptq_plan *p, float *W, int rows, int row0, uint8_t *q,
                       float *scale, int32_t *zero, float *minv, double *loss) {
    return plan_rows(p, W, rows, row0, q, scale, zero, minv, loss, NULL, 0);
}

static int gptq_run(const struct gptq_opts *o, float *W, int N, int K, float *H,
                    struct gptq_result *r, int columnwise) {
    memset(r, 0, sizeof *r);
    if (check_opts(o, N, K)) return -1;
    if (check_finite(W, N, K, "weight")) return -1;
    struct gptq_plan p;
    if (gptq_plan_init(&p, o, N, K, H)) return -1;
    const int G = p.G;
    r->N = N, r->K = K, r->G = G;
    r->q = as_xcalloc((size_t)N * K, 1);
    r->scale = as_xcalloc((size_t)N * G, sizeof(float));
    r->zero = as_xcalloc((size_t)N * G, sizeof(int32_t));
    if (o->float_min) r->minv = as_xcalloc((size_t)N * G, sizeof(float));
    r->g_idx = p.g_idx, p.g_idx = NULL; /* the result takes them over */
    r->perm = p.perm, p.perm = NULL;
    struct gptq_plan view = p;
    view.g_idx = r->g_idx, view.perm = r->perm;
    r->damp = p.damp, r->percdamp = p.percdamp, r->damp_retries = p.damp_retries;
    r->n_dead = p.n_dead, r->t_factor = p.t_factor;
    double t0 = now_s();
    int rc = plan_rows(&view, W, N, 0, r->q, r->scale, r->zero, r->minv, &r->loss, &r->t_inblock,
                       columnwise);
    r->t_update = now_s() - t0;
    gptq_plan_free(&p);
    if (rc) gptq_result_free(r);
    return rc;
}

int gptq_quantize(const struct gptq_opts *o, float *W, int N, int K, float *H,
                  struct gptq_result *r) {
    return gptq_run(o, W, N, K, H, r, 0);
}

int gptq_quantize_columnwise(const struct gptq_opts *o, float *W, int N, int K, float *H,
                             struct gptq_result *r) {
    return gptq_run(o, W, N, K, H, r, 1);
}
