/* kernel_lut: repacking, table build and table-lookup GEMV for SHERRY and TQ1_0 (kernel_lut.h):
 * the scalar reference and the AVX-512 path side by side, on the same layout and tables. */
#include "kernel_lut.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"

/* TQ1_0: a 256-block as 87 groups of 3 (261 weights, the last 5 padding), 29 triples */
enum { TQ_GROUPS = 87, TQ_TRIPLES = 29 };
/* SHERRY: triples summed in int16 before widening: 84 groups of |sum| <= 3 * 128 = 384 stay
 * below 32767 (32256) */
enum { SHERRY_SEG = 28 };

int as_lut_supported(enum as_tern_fmt f, int K) {
    if (f == AS_TF_SHERRY) return K > 0 && K % 32 == 0;
    if (f == AS_TF_TQ1_0) return K > 0 && K % 256 == 0;
    return 0;
}

/* Word offset of (tile, triple 0) in L->codes, and the stride between its triples in 64-byte
 * units: tiles go in blocks of 4 (fewer in the last block), the block's tiles side by side per
 * triple, so that a GEMV over four tiles reads one sequential stream (four streams, one per tile,
 * restarted every 32 KiB at K = 1536, left the prefetcher behind: 20 against 25-27 GB/s). */
static size_t lut_tile_at(const struct as_lut_matrix *L, int tile, int *stride) {
    const int b = tile / 4, rb = L->tiles - 4 * b < 4 ? L->tiles - 4 * b : 4;
    *stride = rb;
    return ((size_t)4 * b * L->triples + (size_t)(tile - 4 * b)) * AS_LUT_TILE;
}

static int lut_triples(enum as_tern_fmt f, int K) {
    return f == AS_TF_TQ1_0 ? K / 256 * TQ_TRIPLES : (K / 4 + 2) / 3;
}

/* Value (code - 1) of lane p of the pattern at table position pos: SHERRY's 5-bit index is the
 * position itself (its codebook entry); TQ1_0's three trits are pos = c0 + 3 c1 + 9 c2 (27
 * positions; 27..31 and lane 3 are 0). */
static int lut_value(enum as_tern_fmt f, int pos, int p) {
    if (f == AS_TF_SHERRY) return (as_sherry_codebook[pos] >> (2 * p) & 3) - 1;
    if (pos >= 27 || p == 3) return 0;
    static const int pow3[3] = {1, 3, 9};
    return pos / pow3[p] % 3 - 1;
}

void as_lut_repack(const struct as_tern_matrix *W, struct as_lut_matrix *L) {
    if (!as_lut_supported(W->fmt, W->K))
        as_die("as_lut_repack: %s rows of %d have no LUT path", as_tern_layouts[W->fmt].name, W->K);
    const int N = W->N, K = W->K, tq = W->fmt == AS_TF_TQ1_0, nb = K / 256;
    memset(L, 0, sizeof *L);
    L->fmt = W->fmt;
    L->N = N;
    L->K = K;
    L->tiles = (N + AS_LUT_TILE - 1) / AS_LUT_TILE;
    L->triples = lut_triples(W->fmt, K);
    L->seg = tq ? TQ_TRIPLES : SHERRY_SEG;
    const size_t ncodes = (size_t)L->tiles * L->triples * AS_LUT_TILE;
    const size_t nscales = (size_t)L->tiles * AS_LUT_TILE * (tq ? (size_t)nb : 1);
    L->codes = aligned_alloc(64, (ncodes * 2 + 63) / 64 * 64);
    L->scales = aligned_alloc(64, (nscales * 4 + 63) / 64 * 64);
    if (!L->codes || !L->scales) as_die("out of memory (LUT copy of %d x %d)", N, K);
    memset(L->codes, 0, ncodes * 2); /* padding rows: any index; their sums are not written */
    memset(L->scales, 0, nscales * 4);
    L->bytes = ncodes * 2 + nscales * 4;
    const size_t rb = as_tern_row_bytes(W->fmt, K);
    uint8_t *codes = as_xmalloc((size_t)K);
    uint8_t *gi = as_xcalloc((size_t)L->triples * 3, 1); /* pattern index per group */
    for (int r = 0; r < N; r++) {
        const uint8_t *row = W->data + (size_t)r * rb;
        const int tile = r / AS_LUT_TILE, lane = r % AS_LUT_TILE;
        if (tq) {
            as_tern_unpack_row_codes(W->fmt, K, row, codes);
            for (int b = 0; b < nb; b++) {
                for (int g = 0; g < TQ_GROUPS; g++) {
                    int pos = 0;
                    for (int p = 2; p >= 0; p--) {
                        const int e = 3 * g + p; /* padding weights: code 1, value 0 */
                        pos = 3 * pos + (e < 256 ? codes[256 * b + e] : 1);
                    }
                    gi[TQ_GROUPS * b + g] = (uint8_t)pos;
                }
                uint16_t h;
                memcpy(&h, row + (size_t)b * sizeof(as_block_tq1_0) + 52, 2);
                L->scales[((size_t)tile * nb + b) * AS_LUT_TILE + lane] = as_f16_to_f32(h);
            }
        } else {
            for (int b = 0; b < K / 32; b++) { /* the 5-bit fields are the table positions */
                uint64_t bits = 0;
                for (int i = 0; i < 5; i++)
                    bits |= (uint64_t)row[5 * b + i] << (8 * i);
                for (int g = 0; g < 8; g++)
                    gi[8 * b + g] = (uint8_t)(bits >> (5 * g) & 31);
            }
            memcpy(&L->scales[r], W->data + (size_t)N * rb + 4 * (size_t)r, 4);
        }
        int stride;
        uint16_t *cw = L->codes + lut_tile_at(L, tile, &stride) + lane;
        for (int t = 0; t < L->triples; t++)
            cw[(size_t)t * stride * AS_LUT_TILE] =
                (uint16_t)(gi[3 * t] | gi[3 * t + 1] << 5 | gi[3 * t + 2] << 10);
    }
    free(codes);
    free(gi);
}

void as_lut_free(struct as_lut_matrix *L) {
    free(L->codes);
    free(L->scales);
    memset(L, 0, sizeof *L);
}

/* ---- tables ---- */

void as_lut_act_init(struct as_lut_act *t, enum as_tern_fmt f, int K) {
    if (!as_lut_supported(f, K))
        as_die("as_lut_act_init: %s rows of %d have no LUT path", as_tern_layouts[f].name, K);
    memset(t, 0, sizeof *t);
    t->fmt = f;
    t->K = K;
    t->groups = 3 * lut_triples(f, K);
    t->T = aligned_alloc(64, (size_t)t->groups * 64);
    t->xg = aligned_alloc(64, ((size_t)t->groups * 4 + 63) / 64 * 64);
    if (!t->T || !t->xg) as_die("out of memory (LUT tables of %d)", K);
}

void as_lut_act_free(struct as_lut_act *t) {
    free(t->T);
    free(t->xg);
    memset(t, 0, sizeof *t);
}

/* xg[g]: the activations of group g as bytes q + 128 (lane p in byte p; lanes past the group and
 * padding groups hold 128, i.e. q = 0) */
static void lut_gather(struct as_lut_act *t, const struct as_act8 *a) {
    if (t->fmt == AS_TF_SHERRY) {
        for (int g = 0; g < t->K / 4; g++) {
            uint32_t v;
            memcpy(&v, a->q + 4 * g, 4);
            t->xg[g] = v ^ 0x80808080u;
        }
        for (int g = t->K / 4; g < t->groups; g++)
            t->xg[g] = 0x80808080u;
        return;
    }
    for (int b = 0; b < t->K / 256; b++)
        for (int g = 0; g < TQ_GROUPS; g++) {
            uint32_t v = 0x80808080u;
            for (int p = 0; p < 3; p++) {
                const int e = 3 * g + p;
                const uint8_t u = (uint8_t)((e < 256 ? a->q[256 * b + e] : 0) + 128);
                v = (v & ~(0xFFu << (8 * p))) | (uint32_t)u << (8 * p);
            }
            t->xg[TQ_GROUPS * b + g] = v;
        }
}

static void lut_build_ref(struct as_lut_act *t) {
    for (int g = 0; g < t->groups; g++)
        for (int pos = 0; pos < 32; pos++) {
            int s = 0;
            for (int p = 0; p < 4; p++)
                s += lut_value(t->fmt, pos, p) * ((int)(t->xg[g] >> (8 * p) & 0xFF) - 128);
            t->T[(size_t)g * 32 + pos] = (int16_t)s;
        }
}

#define LUT_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))
#define LUT_INLINE static inline __attribute__((always_inline)) LUT_TARGET
/* a16[], s_lo[] ... stay in registers only if every index is a constant */
#ifdef __clang__
#define LUT_UNROLL _Pragma("clang loop unroll(full)")
#else
#define LUT_UNROLL _Pragma("GCC unroll 4")
#endif

/* T_g by vpdpbusd: dword j of A computes the entry that vpackssdw puts at word 8 (j / 4) + j % 4,
 * of B the one at 8 (j / 4) + 4 + j % 4; each takes the group's 4 activation bytes + 128 (u8,
 * broadcast) times the pattern's 4 values (s8), starting from -128 times the values' sum. */
LUT_TARGET static void lut_build512(struct as_lut_act *t) {
    int8_t v[2][64];
    int32_t c[2][16];
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 16; j++) {
            const int pos = 8 * (j / 4) + 4 * h + j % 4;
            c[h][j] = 0;
            for (int p = 0; p < 4; p++) {
                v[h][4 * j + p] = (int8_t)lut_value(t->fmt, pos, p);
                c[h][j] -= 128 * v[h][4 * j + p];
            }
        }
    const __m512i VA = _mm512_loadu_si512(v[0]), VB = _mm512_loadu_si512(v[1]);
    const __m512i CA = _mm512_loadu_si512(c[0]), CB = _mm512_loadu_si512(c[1]);
    __m512i *T = (__m512i *)t->T;
    for (int g = 0; g < t->groups; g++) {
        const __m512i x = _mm512_set1_epi32((int)t->xg[g]);
        const __m512i A = _mm512_dpbusd_epi32(CA, x, VA), B = _mm512_dpbusd_epi32(CB, x, VB);
        _mm512_store_si512(T + g, _mm512_packs_epi32(A, B));
    }
}

void as_lut_act_build(enum as_isa isa, struct as_lut_act *t, const struct as_act8 *a) {
    t->d = a->d;
    lut_gather(t, a);
    if (isa == AS_ISA_AVX512)
        lut_build512(t);
    else
        lut_build_ref(t);
}

/* ---- GEMV ---- */

/* Scalar reference: per row, per segment (SHERRY: 28 triples; TQ1_0: a block) the exact sum of
 * the looked-up entries, then kernel_ternary's finish. */
static void lut_gemv_ref(const struct as_lut_matrix *L, const struct as_lut_act *t, float *y,
                         int r0, int r1) {
    const int tq = L->fmt == AS_TF_TQ1_0, nb = L->K / 256;
    for (int r = r0; r < r1; r++) {
        const int tile = r / AS_LUT_TILE, lane = r % AS_LUT_TILE;
        int stride;
        const uint16_t *cw = L->codes + lut_tile_at(L, tile, &stride) + lane;
        int32_t S = 0;
        float acc = 0.0f;
        for (int s0 = 0, b = 0; s0 < L->triples; s0 += L->seg, b++) {
            const int s1 = s0 + L->seg < L->triples ? s0 + L->seg : L->triples;
            int32_t s = 0;
            for (int tr = s0; tr < s1; tr++) {
                const unsigned w = cw[(size_t)tr * stride * AS_LUT_TILE];
                for (int k = 0; k < 3; k++)
                    s += t->T[(size_t)(3 * tr + k) * 32 + (w >> (5 * k) & 31)];
            }
            if (tq)
                acc += (float)s * L->scales[((size_t)tile * nb + b) * AS_LUT_TILE + lane];
            else
                S += s;
        }
        y[r] = tq ? acc * t->d : (float)S * L->scales[(size_t)tile * AS_LUT_TILE + lane] * t->d;
    }
}

/* Prefetch distance in 64-byte lines of the one sequential stream, and the hint: streamed from
 * memory (256 MiB of copies) at 4096x1536 / 1536x4096, into L1 (T0): none 138 / 152 GMAC/s, 16
 * lines 136-147 / 138-154, 32 161 / 163, 64 166-187 / 172-189, 128 176-185 / 176-196, 256
 * 157-166 / 162-175; into L2 (T1) 151-157; non-temporal (NTA) 64 181 / 183, 128 191 / 191, 256
 * 193 / 185 (into L1 the prefetched lines also evict the token's tables: 64 KiB at K = 4096). */
enum { LUT_PREFETCH = 128 };
/* R tiles (32 R rows) from tile0 into out[32 R]: per group triple the three tables are loaded
 * once for the R tiles; per tile one 64-byte load, two shifts, three vpermw and three adds give
 * 32 rows' sums of 3 groups in int16, widened to int32 (SHERRY) or to float times the block scale
 * (TQ1_0) after each segment. */
LUT_INLINE void lut_tiles512(const struct as_lut_matrix *L, const struct as_lut_act *t, int tile0,
                             const int R, const int tq, float *out) {
    const int ntr = L->triples, nb = L->K / 256;
    const __m512i *tab = (const __m512i *)t->T;
    int stride;
    const __m512i *cw = (const __m512i *)(L->codes + lut_tile_at(L, tile0, &stride));
    __m512i s_lo[4], s_hi[4];
    __m512 f_lo[4], f_hi[4];
    LUT_UNROLL for (int j = 0; j < R; j++) {
        s_lo[j] = s_hi[j] = _mm512_setzero_si512();
        f_lo[j] = f_hi[j] = _mm512_setzero_ps();
    }
    for (int s0 = 0, b = 0; s0 < ntr; s0 += L->seg, b++) {
        const int s1 = s0 + L->seg < ntr ? s0 + L->seg : ntr;
        __m512i a16[4];
        LUT_UNROLL for (int j = 0; j < R; j++) a16[j] = _mm512_setzero_si512();
        for (int tr = s0; tr < s1; tr++) {
            const __m512i T0 = _mm512_load_si512(tab + 3 * tr);
            const __m512i T1 = _mm512_load_si512(tab + 3 * tr + 1);
            const __m512i T2 = _mm512_load_si512(tab + 3 * tr + 2);
            const __m512i *c = cw + (size_t)tr * stride;
            LUT_UNROLL for (int j = 0; j < R; j++) {
                _mm_prefetch((const char *)(c + j + LUT_PREFETCH), _MM_HINT_NTA);
                const __m512i w = _mm512_load_si512(c + j);
                __m512i p = _mm512_add_epi16(_mm512_permutexvar_epi16(w, T0),
                                             _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 5), T1));
                p = _mm512_add_epi16(p, _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 10), T2));
                a16[j] = _mm512_add_epi16(a16[j], p);
            }
        }
        LUT_UNROLL for (int j = 0; j < R; j++) {
            const __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(a16[j]));
            const __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(a16[j], 1));
            if (tq) {
                const float *db = L->scales + ((size_t)(tile0 + j) * nb + b) * AS_LUT_TILE;
                f_lo[j] = _mm512_add_ps(f_lo[j],
                                        _mm512_mul_ps(_mm512_cvtepi32_ps(lo), _mm512_load_ps(db)));
                f_hi[j] = _mm512_add_ps(
                    f_hi[j], _mm512_mul_ps(_mm512_cvtepi32_ps(hi), _mm512_load_ps(db + 16)));
            } else {
                s_lo[j] = _mm512_add_epi32(s_lo[j], lo);
                s_hi[j] = _mm512_add_epi32(s_hi[j], hi);
            }
        }
    }
    const __m512 d = _mm512_set1_ps(t->d);
    LUT_UNROLL for (int j = 0; j < R; j++) {
        if (tq) {
            _mm512_storeu_ps(out + 32 * j, _mm512_mul_ps(f_lo[j], d));
            _mm512_storeu_ps(out + 32 * j + 16, _mm512_mul_ps(f_hi[j], d));
        } else {
            const float *sc = L->scales + (size_t)(tile0 + j) * AS_LUT_TILE;
            _mm512_storeu_ps(
                out + 32 * j,
                _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s_lo[j]), _mm512_load_ps(sc)), d));
            _mm512_storeu_ps(
                out + 32 * j + 16,
                _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s_hi[j]), _mm512_load_ps(sc + 16)),
                              d));
        }
    }
}

/* Whole tiles covering rows r0..r1-1, four at a time, then one at a time; only rows in range
 * are written (a thread's range need not start on a tile). */
LUT_TARGET static void lut_gemv512(const struct as_lut_matrix *L, const struct as_lut_act *t,
                                   float *y, int r0, int r1) {
    const int tq = L->fmt == AS_TF_TQ1_0;
    float out[4 * AS_LUT_TILE];
    for (int tile = r0 / AS_LUT_TILE, t1 = (r1 + AS_LUT_TILE - 1) / AS_LUT_TILE; tile < t1;) {
        /* four tiles: a whole block of the layout */
        const int R = tile % 4 == 0 && t1 - tile >= 4 ? 4 : 1;
        if (R == 4 && tq)
            lut_tiles512(L, t, tile, 4, 1, out);
        else if (R == 4)
            lut_tiles512(L, t, tile, 4, 0, out);
        else if (tq)
            lut_tiles512(L, t, tile, 1, 1, out);
        else
            lut_tiles512(L, t, tile, 1, 0, out);
        const int base = tile * AS_LUT_TILE;
        const int lo = r0 > base ? r0 : base,
                  hi = r1 < base + R * AS_LUT_TILE ? r1 : base + R * AS_LUT_TILE;
        memcpy(y + lo, out + (lo - base), (size_t)(hi - lo) * sizeof *y);
        tile += R;
    }
}

void as_lut_gemv(enum as_isa isa, const struct as_lut_matrix *L, const struct as_lut_act *t,
                 float *y, int r0, int r1) {
    if (r0 >= r1) return;
    if (isa == AS_ISA_AVX512)
        lut_gemv512(L, t, y, r0, r1);
    else
        lut_gemv_ref(L, t, y, r0, r1);
}
