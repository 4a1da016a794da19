/* kernel_attn: flash-style causal GQA prefill attention, dense or block-sparse (kernel_attn.h). */
#include "kernel_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

enum as_attn_impl as_attn_impl = AS_ATTN_AUTO;

int as_attn_have_avx2(void) {
#ifdef HAVE_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#define DENSE_TILE 64 /* query and key tile of the dense path: S is 16 KB, stays in L1 */

static int tile_of(const struct as_attn_args *a) {
    return a->mask ? a->mask->block : DENSE_TILE;
}

int as_attn_items(const struct as_attn_args *a) {
    int B = tile_of(a);
    int first = a->pos0 / B, last = (a->pos0 + a->T - 1) / B;
    return a->n_heads * (last - first + 1);
}

int as_attn_check(const struct as_attn_args *a) {
    if (a->T <= 0 || a->pos0 < 0 || a->hd <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads)
        return as_fail("attention: bad shape T=%d pos0=%d heads=%d/%d hd=%d", a->T, a->pos0,
                       a->n_heads, a->n_kv_heads, a->hd);
    const struct as_block_mask *m = a->mask;
    if (!m) return 0;
    if (a->pos0 != 0)
        return as_fail("attention: a block mask needs a first fill (pos0 0, not %d)", a->pos0);
    if (m->block < 8 || m->block > 256)
        return as_fail("attention: block size %d outside 8..256", m->block);
    int nb = (a->T + m->block - 1) / m->block;
    if (m->n_heads != a->n_heads || m->nqb < nb || m->nkb < nb)
        return as_fail("attention: block mask %dx%dx%d does not cover %d heads x %d blocks",
                       m->n_heads, m->nqb, m->nkb, a->n_heads, nb);
    return 0;
}

struct scratch {
    float *S;   /* [B][B] scores, then probabilities (row stride ldS) */
    float *Kt;  /* [hd][ldS] packed keys of the tile */
    float *Qp;  /* [Bpad][hd] query rows of the tile, zero-padded to a multiple of 4 */
    float *acc; /* [Bpad][hd] */
    float *m, *l;
    int ldS;
};

/* ---- scalar reference ----------------------------------------------------------------------- */

static void tile_scalar(const struct as_attn_args *a, struct scratch *w, const float *q, int p_lo,
                        int nq, const float *k, const float *v, int k_lo, int nk) {
    int hd = a->hd;
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * a->q_stride;
        float *s = w->S, mx = -INFINITY;
        for (int j = 0; j < nk; j++) {
            if (k_lo + j > p_lo + i) {
                s[j] = -INFINITY;
                continue;
            }
            const float *kj = k + (size_t)j * a->kv_stride;
            float d = 0;
            for (int c = 0; c < hd; c++)
                d += qi[c] * kj[c];
            s[j] = d * a->scale;
            if (s[j] > mx) mx = s[j];
        }
        if (mx == -INFINITY) continue; /* nothing visible to this row in this tile */
        float mnew = mx > w->m[i] ? mx : w->m[i];
        float alpha = w->m[i] == -INFINITY ? 0.0f : expf(w->m[i] - mnew), sum = 0;
        float *acc = w->acc + (size_t)i * hd;
        for (int c = 0; c < hd; c++)
            acc[c] *= alpha;
        for (int j = 0; j < nk; j++) {
            if (s[j] == -INFINITY) continue;
            float p = expf(s[j] - mnew);
            sum += p;
            const float *vj = v + (size_t)j * a->kv_stride;
            for (int c = 0; c < hd; c++)
                acc[c] += p * vj[c];
        }
        w->l[i] = w->l[i] * alpha + sum;
        w->m[i] = mnew;
    }
}

static double exp_row_scalar(float *x, int n) {
    float mx = x[0];
    for (int j = 1; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    double sum = 0;
    for (int j = 0; j < n; j++)
        sum += (x[j] = expf(x[j] - mx));
    return sum;
}

/* ---- AVX2 + FMA ------------------------------------------------------------------------------ */
#ifdef HAVE_X86
#define AVX2 __attribute__((target("avx2,fma")))

/* e^x for x <= 0 (Cephes expf: range reduction by ln 2 in two parts, degree-5 polynomial,
 * relative error ~1e-7); x below -87 (masked entries are -inf) gives exactly 0, and NaN stays NaN
 * (a NaN score from a NaN weight must reach the logits, not become probability 0). */
AVX2 static inline __m256 exp_v(__m256 x) {
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GT_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 fx = _mm256_floor_ps(
        _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_or_ps(_mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep), nan);
}

AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* hd % 8 == 0. S[i][j] (row stride ldS, ldS % 16 == 0) for rows < nq4 (multiple of 4), keys
 * padded with zero columns; then the online softmax update; then acc += P V. */
AVX2 static void tile_avx2(const struct as_attn_args *a, struct scratch *w, const float *q,
                           int p_lo, int nq, const float *k, const float *v, int k_lo, int nk) {
    int hd = a->hd, ld = w->ldS, nk16 = (nk + 15) & ~15, nq4 = (nq + 3) & ~3;
    /* pack K^T: Kt[c][j], zero beyond nk */
    for (int j = 0; j < nk; j++) {
        const float *kj = k + (size_t)j * a->kv_stride;
        for (int c = 0; c < hd; c++)
            w->Kt[(size_t)c * ld + j] = kj[c];
    }
    for (int c = 0; c < hd; c++)
        for (int j = nk; j < nk16; j++)
            w->Kt[(size_t)c * ld + j] = 0.0f;
    for (int i = 0; i < nq; i++)
        memcpy(w->Qp + (size_t)i * hd, q + (size_t)i * a->q_stride, (size_t)hd * sizeof(float));
    for (int i = nq; i < nq4; i++)
        memset(w->Qp + (size_t)i * hd, 0, (size_t)hd * sizeof(float));
    /* S = Q K^T: 4 rows x 16 keys of accumulators per step */
    for (int i = 0; i < nq4; i += 4) {
        const float *q0 = w->Qp + (size_t)i * hd;
        for (int j = 0; j < nk16; j += 16) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
                   c30 = c00, c31 = c00;
            const float *kt = w->Kt + j;
            for (int c = 0; c < hd; c++, kt += ld) {
                __m256 k0 = _mm256_loadu_ps(kt), k1 = _mm256_loadu_ps(kt + 8);
                __m256 b = _mm256_broadcast_ss(q0 + c);
                c00 = _mm256_fmadd_ps(b, k0, c00), c01 = _mm256_fmadd_ps(b, k1, c01);
                b = _mm256_broadcast_ss(q0 + hd + c);
                c10 = _mm256_fmadd_ps(b, k0, c10), c11 = _mm256_fmadd_ps(b, k1, c11);
                b = _mm256_broadcast_ss(q0 + 2 * hd + c);
                c20 = _mm256_fmadd_ps(b, k0, c20), c21 = _mm256_fmadd_ps(b, k1, c21);
                b = _mm256_broadcast_ss(q0 + 3 * hd + c);
                c30 = _mm256_fmadd_ps(b, k0, c30), c31 = _mm256_fmadd_ps(b, k1, c31);
            }
            float *s = w->S + (size_t)i * ld + j;
            _mm256_storeu_ps(s, c00), _mm256_storeu_ps(s + 8, c01);
            _mm256_storeu_ps(s + ld, c10), _mm256_storeu_ps(s + ld + 8, c11);
            _mm256_storeu_ps(s + 2 * ld, c20), _mm256_storeu_ps(s + 2 * ld + 8, c21);
            _mm256_storeu_ps(s + 3 * ld, c30), _mm256_storeu_ps(s + 3 * ld + 8, c31);
        }
    }
    /* online softmax per row; S becomes P (0 where masked or padded) */
    __m256 scale = _mm256_set1_ps(a->scale), ninf = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < nq4; i++) {
        float *s = w->S + (size_t)i * ld;
        int vis = i < nq ? p_lo + i - k_lo + 1 : 0; /* keys of this tile the row sees */
        if (vis > nk) vis = nk;
        if (vis <= 0) {
            memset(s, 0, (size_t)nk16 * sizeof(float));
            continue;
        }
        __m256 mx = ninf;
        for (int j = 0; j < nk16; j += 8) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + j), scale);
            if (j + 8 > vis) { /* lanes at or beyond vis are masked */
                __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(j),
                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                __m256 in = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(vis), idx));
                x = _mm256_blendv_ps(ninf, x, in);
            }
            _mm256_storeu_ps(s + j, x);
            mx = _mm256_max_ps(mx, x);
        }
        float rmax = hmax(mx), mold = w->m[i];
        float mnew = rmax > mold ? rmax : mold;
        float alpha = mold == -INFINITY ? 0.0f : expf(mold - mnew);
        __m256 mn = _mm256_set1_ps(mnew), sum = _mm256_setzero_ps();
        for (int j = 0; j < nk16; j += 8) {
            __m256 p = exp_v(_mm256_sub_ps(_mm256_loadu_ps(s + j), mn));
            _mm256_storeu_ps(s + j, p);
            sum = _mm256_add_ps(sum, p);
        }
        w->l[i] = w->l[i] * alpha + hsum(sum);
        w->m[i] = mnew;
        float *acc = w->acc + (size_t)i * hd;
        __m256 al = _mm256_set1_ps(alpha);
        for (int c = 0; c < hd; c += 8)
            _mm256_storeu_ps(acc + c, _mm256_mul_ps(_mm256_loadu_ps(acc + c), al));
    }
    /* acc += P V: 4 rows x 16 columns of accumulators per step (8 columns at the tail) */
    for (int i = 0; i < nq4; i += 4) {
        const float *p0 = w->S + (size_t)i * ld;
        float *a0 = w->acc + (size_t)i * hd;
        int c = 0;
        for (; c + 16 <= hd; c += 16) {
            __m256 c00 = _mm256_loadu_ps(a0 + c), c01 = _mm256_loadu_ps(a0 + c + 8);
            __m256 c10 = _mm256_loadu_ps(a0 + hd + c), c11 = _mm256_loadu_ps(a0 + hd + c + 8);
            __m256 c20 = _mm256_loadu_ps(a0 + 2 * hd + c),
                   c21 = _mm256_loadu_ps(a0 + 2 * hd + c + 8);
            __m256 c30 = _mm256_loadu_ps(a0 + 3 * hd + c),
                   c31 = _mm256_loadu_ps(a0 + 3 * hd + c + 8);
            const float *vj = v + c;
            for (int j = 0; j < nk; j++, vj += a->kv_stride) {
                __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
                __m256 b = _mm256_broadcast_ss(p0 + j);
                c00 = _mm256_fmadd_ps(b, v0, c00), c01 = _mm256_fmadd_ps(b, v1, c01);
                b = _mm256_broadcast_ss(p0 + ld + j);
                c10 = _mm256_fmadd_ps(b, v0, c10), c11 = _mm256_fmadd_ps(b, v1, c11);
                b = _mm256_broadcast_ss(p0 + 2 * ld + j);
                c20 = _mm256_fmadd_ps(b, v0, c20), c21 = _mm256_fmadd_ps(b, v1, c21);
                b = _mm256_broadcast_ss(p0 + 3 * ld + j);
                c30 = _mm256_fmadd_ps(b, v0, c30), c31 = _mm256_fmadd_ps(b, v1, c31);
            }
            _mm256_storeu_ps(a0 + c, c00), _mm256_storeu_ps(a0 + c + 8, c01);
            _mm256_storeu_ps(a0 + hd + c, c10), _mm256_storeu_ps(a0 + hd + c + 8, c11);
            _mm256_storeu_ps(a0 + 2 * hd + c, c20), _mm256_storeu_ps(a0 + 2 * hd + c + 8, c21);
            _mm256_storeu_ps(a0 + 3 * hd + c, c30), _mm256_storeu_ps(a0 + 3 * hd + c + 8, c31);
        }
        for (; c < hd; c += 8) {
            __m256 c0 = _mm256_loadu_ps(a0 + c), c1 = _mm256_loadu_ps(a0 + hd + c);
            __m256 c2 = _mm256_loadu_ps(a0 + 2 * hd + c), c3 = _mm256_loadu_ps(a0 + 3 * hd + c);
            const float *vj = v + c;
            for (int j = 0; j < nk; j++, vj += a->kv_stride) {
                __m256 v0 = _mm256_loadu_ps(vj);
                c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), v0, c0);
                c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + ld + j), v0, c1);
                c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + 2 * ld + j), v0, c2);
                c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + 3 * ld + j), v0, c3);
            }
            _mm256_storeu_ps(a0 + c, c0), _mm256_storeu_ps(a0 + hd + c, c1);
            _mm256_storeu_ps(a0 + 2 * hd + c, c2), _mm256_storeu_ps(a0 + 3 * hd + c, c3);
        }
    }
}

AVX2 static double exp_row_avx2(float *x, int n) {
    int n8 = n & ~7;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < n8; j += 8)
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + j));
    float mx = hmax(mv);
    for (int j = n8; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    const __m256 m = _mm256_set1_ps(mx);
    __m256 sv = _mm256_setzero_ps();
    for (int j = 0; j < n8; j += 8) {
        __m256 e = exp_v(_mm256_sub_ps(_mm256_loadu_ps(x + j), m));
        _mm256_storeu_ps(x + j, e), sv = _mm256_add_ps(sv, e);
    }
    double sum = hsum(sv);
    for (int j = n8; j < n; j++)
        sum += (x[j] = expf(x[j] - mx));
    return sum;
}
#endif

/* ---- driver --------------------------------------------------------------------------------- */

double as_attn_exp_row(float *x, int n) {
#ifdef HAVE_X86
    if (as_attn_impl != AS_ATTN_SCALAR && as_attn_have_avx2()) return exp_row_avx2(x, n);
#endif
    return exp_row_scalar(x, n);
}

static int use_avx2(const struct as_attn_args *a) {
#ifdef HAVE_X86
    if (a->hd % 8 || as_attn_impl == AS_ATTN_SCALAR) return 0;
    return as_attn_have_avx2();
#else
    (void)a;
    return 0;
#endif
}

/* One (head h, query tile qt) item: queries at absolute positions [p_lo, p_hi). */
static void run_item(const struct as_attn_args *a, struct scratch *w, int h, int qt, int avx) {
    int B = tile_of(a), hd = a->hd, g = h / (a->n_heads / a->n_kv_heads);
    int p_lo = qt * B > a->pos0 ? qt * B : a->pos0;
    int p_hi = (qt + 1) * B < a->pos0 + a->T ? (qt + 1) * B : a->pos0 + a->T, nq = p_hi - p_lo;
    const float *q = a->q + (size_t)(p_lo - a->pos0) * a->q_stride + (size_t)h * hd;
    const uint8_t *keep =
        a->mask ? a->mask->keep + ((size_t)h * a->mask->nqb + qt) * a->mask->nkb : NULL;
    for (int i = 0; i < nq + 4; i++)
        w->m[i] = -INFINITY, w->l[i] = 0.0f;
    memset(w->acc, 0, (size_t)(nq + 4) * hd * sizeof(float));
    for (int kb = 0; kb <= qt; kb++) {
        if (keep && !keep[kb]) continue;
        int k_lo = kb * B, k_hi = k_lo + B < p_hi ? k_lo + B : p_hi;
        const float *k = a->k + (size_t)k_lo * a->kv_stride + (size_t)g * hd;
        const float *v = a->v + (size_t)k_lo * a->kv_stride + (size_t)g * hd;
#ifdef HAVE_X86
        if (avx) {
            tile_avx2(a, w, q, p_lo, nq, k, v, k_lo, k_hi - k_lo);
            continue;
        }
#endif
        tile_scalar(a, w, q, p_lo, nq, k, v, k_lo, k_hi - k_lo);
    }
    for (int i = 0; i < nq; i++) {
        float *o = a->o + (size_t)(p_lo - a->pos0 + i) * a->o_stride + (size_t)h * hd;
        /* a row that saw no key (a mask without its diagonal block) outputs zeros */
        float inv = w->l[i] > 0 ? 1.0f / w->l[i] : 0.0f;
        for (int c = 0; c < hd; c++)
            o[c] = w->acc[(size_t)i * hd + c] * inv;
    }
    (void)avx;
}

void as_attn_part(const struct as_attn_args *a, int part, int n) {
    int B = tile_of(a), hd = a->hd, avx = use_avx2(a);
    int first = a->pos0 / B, last = (a->pos0 + a->T - 1) / B, nt = last - first + 1;
    int ld = (B + 15) & ~15;
    struct scratch w = {.ldS = ld};
    float *buf = as_xmalloc(
        ((size_t)(B + 4) * ld + (size_t)hd * ld + 2 * (size_t)(B + 4) * hd + 2 * (size_t)(B + 4)) *
        sizeof(float));
    w.S = buf;
    w.Kt = w.S + (size_t)(B + 4) * ld;
    w.Qp = w.Kt + (size_t)hd * ld;
    w.acc = w.Qp + (size_t)(B + 4) * hd;
    w.m = w.acc + (size_t)(B + 4) * hd;
    w.l = w.m + B + 4;
    /* items ordered by query tile, last (most keys) first, dealt round-robin: parts get equal
     * shares of the causal triangle */
    int items = a->n_heads * nt;
    for (int it = part; it < items; it += n) {
        int qt = last - it / a->n_heads, h = it % a->n_heads;
        run_item(a, &w, h, qt, avx);
    }
    (void)first;
    free(buf);
}

int as_attn(const struct as_attn_args *a) {
    if (as_attn_check(a)) return -1;
    as_attn_part(a, 0, 1);
    return 0;
}

double as_block_mask_density(const struct as_block_mask *m, int h, int L) {
    int nb = (L + m->block - 1) / m->block;
    long kept = 0;
    for (int qb = 0; qb < nb; qb++)
        for (int kb = 0; kb <= qb; kb++)
            kept += m->keep[((size_t)h * m->nqb + qb) * m->nkb + kb] != 0;
    return (double)kept / ((double)nb * (nb + 1) / 2);
}
