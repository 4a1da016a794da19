/* kernel_ternary: scalar reference, AVX2 and AVX-512 kernels for the packed ternary / 2-bit
 * layouts, runtime dispatch, and the dense f32 / bf16 baseline (kernel_ternary.h).
 *
 * The SIMD bodies are written once (kernel_ternary_simd.h) and compiled twice under GCC's target
 * pragma: with AVX2's maddubs + madd (u8 x s8 pairs to int16, then int32) on 256-bit vectors, and
 * with AVX-512 (VNNI's vpdpbusd, u8 x s8 quads straight into int32, and VBMI's byte permutes for
 * Sherry), where AS_ZMM adds the 512-bit paths used for every format. All give the same integer
 * sums; the library itself is built without -mavx2, so the scalar path runs anywhere and the
 * dispatcher (cpuid) picks the best. */
#include "kernel_ternary.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"

const char *const as_isa_names[AS_ISA_COUNT] = {"ref", "avx2", "avx512vnni"};
int as_tern_seq2_rows = 4;

/* F16C (cpuid 1: ecx bit 29) and BMI2 (cpuid 7.0: ebx bit 8), which every AVX2 CPU has in
 * practice; asked of cpuid directly because clang's __builtin_cpu_supports knows neither. */
static int f16c_bmi2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c >> 29 & 1)) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return b >> 8 & 1;
}

/* GFNI (cpuid 7.0: ecx bit 8; TQ1_0's byte shifts), on every CPU with AVX-512 VBMI but Cannon Lake
 */
static int gfni(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c >> 8 & 1);
}

int as_kernel_isa_supported(enum as_isa isa) {
    __builtin_cpu_init();
    switch (isa) {
    case AS_ISA_REF:
        return 1;
    case AS_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c_bmi2();
    case AS_ISA_AVX512:
        return as_kernel_isa_supported(AS_ISA_AVX2) && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("avx512vbmi") && gfni();
    default:
        return 0;
    }
}

enum as_isa as_kernel_isa_best(void) {
    const char *e = getenv("AS_KERNEL_ISA");
    if (e)
        for (int i = 0; i < AS_ISA_COUNT; i++)
            if (!strcmp(e, as_isa_names[i]) && as_kernel_isa_supported((enum as_isa)i))
                return (enum as_isa)i;
    if (as_kernel_isa_supported(AS_ISA_AVX512)) return AS_ISA_AVX512;
    if (as_kernel_isa_supported(AS_ISA_AVX2)) return AS_ISA_AVX2;
    return AS_ISA_REF;
}

/* ---- activations ---- */

/* Plane order of format f: position of natural element k inside qp. Within each 128-chunk (a
 * SEQ2 / SHERRY row's last chunk may be partial: its missing lanes stay 0 in qp, so whatever codes
 * the kernel pairs with them add nothing),
 * plane p (bits 2p of the packed bytes) lane j meets:
 *   I2_S          element 32 (3 - p) + j        (BitNet: shift 6 - 2i holds elements 32i + j)
 *   SEQ2          element 32 (j / 8) + 4 (j % 8) + p   (byte / quad j of the 4 blocks, lane p)
 *   SHERRY        the same, but plane p of a pair of chunks 2s, 2s + 1 is 64 contiguous bytes
 *                 (at 256 s + 64 p + 32 (c % 2)): one 512-bit vector of decoded lane-p codes of
 *                 both chunks meets them
 *   TQ1_0, TQ2_0  element 32 p + j              (ggml's layouts are already plane-major) */
static int plane_pos(enum as_tern_fmt f, int k, int K) {
    int c = k / 128, e = k % 128;
    (void)K;
    switch (f) {
    case AS_TF_I2_S:
        return c * 128 + 32 * (3 - e / 32) + e % 32;
    case AS_TF_SEQ2: {
        int b = e / 32, g = (e % 32) / 4, p = e % 4;
        return c * 128 + 32 * p + 8 * b + g;
    }
    case AS_TF_SHERRY: { /* pairs of chunks: plane p of chunks 2s, 2s + 1 side by side */
        int b = e / 32, g = (e % 32) / 4, p = e % 4;
        return c / 2 * 256 + 64 * p + 32 * (c % 2) + 8 * b + g;
    }
    case AS_TF_TQ1_0: { /* 448 bytes per 256-block: two units [0 | x_0 .. x_4 | 0] (tq1_rows2) */
        int b = k / 256, e = k % 256, u = e >= 160, n, m;
        if (e < 160)
            n = e / 32, m = e % 32;
        else if (e < 240)
            n = (e - 160) / 16, m = 10 + (e - 160) % 16; /* qs[32..47]: bytes 10..25 of unit 1 */
        else
            n = (e - 240) / 4, m = 26 + (e - 240) % 4; /* qh: bytes 26..29 */
        return 448 * b + 224 * u + 32 * (1 + n) + m;
    }
    default:
        return k;
    }
}

/* bytes of qp: whole chunk pairs (zero-padded); TQ1_0 448 per 256-block plus one load's overhang */
static size_t qp_bytes(enum as_tern_fmt f, int K) {
    if (f == AS_TF_TQ1_0) return ((size_t)K + 255) / 256 * 448 + 64;
    return ((size_t)K + 255) / 256 * 256;
}

void as_act8_init(struct as_act8 *a, enum as_tern_fmt f, int K) {
    memset(a, 0, sizeof *a);
    a->K = K;
    a->fmt = f;
    a->q = aligned_alloc(64, ((size_t)K + 63) / 64 * 64);
    a->qp = aligned_alloc(64, qp_bytes(f, K));
    a->sum32 = as_xcalloc((size_t)K / 32 + 1, sizeof *a->sum32);
    a->sum256 = as_xcalloc((size_t)K / 256 + 1, sizeof *a->sum256);
    a->pos = as_xmalloc(((size_t)K + 1) * sizeof *a->pos);
    if (!a->q || !a->qp) as_die("out of memory (activations of %d)", K);
    memset(a->qp, 0, qp_bytes(f, K));
    for (int k = 0; k < K; k++)
        a->pos[k] = plane_pos(f, k, K);
}

void as_act8_free(struct as_act8 *a) {
    free(a->q);
    free(a->qp);
    free(a->sum32);
    free(a->sum256);
    free(a->pos);
    memset(a, 0, sizeof *a);
}

static void act8_quantize_ref(struct as_act8 *a, const float *x) {
    const int K = a->K;
    float amax = 0.0f;
    for (int k = 0; k < K; k++)
        amax = fmaxf(amax, fabsf(x[k]));
    const float s = amax > 0.0f ? 127.0f / amax : 0.0f;
    a->d = amax / 127.0f;
    a->total = 0;
    memset(a->sum32, 0, ((size_t)K / 32 + 1) * sizeof *a->sum32);
    memset(a->sum256, 0, ((size_t)K / 256 + 1) * sizeof *a->sum256);
    for (int k = 0; k < K; k++) {
        float v = nearbyintf(x[k] * s);
        int q = (int)fmaxf(-127.0f, fminf(127.0f, v));
        a->q[k] = (int8_t)q;
        a->qp[plane_pos(a->fmt, k, K)] = (int8_t)q;
        a->sum32[k / 32] += q;
        a->sum256[k / 256] += q;
        a->total += q;
    }
}

/* The reference's float operations on 16 lanes: max_ps(|x|, acc) keeps acc where |x| is NaN, as
 * fmaxf does; roundscale rounds half to even, as nearbyintf in the default mode; min_ps(v, 127)
 * gives 127 for a NaN v, as fminf(127, v). Then the int8 bytes are summed and scattered into
 * plane order by a->pos. The scalar quantizer (nearbyintf is a libm call, plane_pos a switch per
 * element) took 11 us per 1536 activations: a quarter of a 0.7B decode token. */
__attribute__((target("avx2,avx512f,avx512bw,avx512vl"))) static void
act8_quantize512(struct as_act8 *a, const float *x) {
    const int K = a->K;
    __m512 m = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        const __mmask16 in = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        m = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(in, x + k)), m);
    }
    const float amax = fmaxf(0.0f, _mm512_reduce_max_ps(m));
    const float s = amax > 0.0f ? 127.0f / amax : 0.0f;
    a->d = amax / 127.0f;
    const __m512 vs = _mm512_set1_ps(s), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    for (int k = 0; k < K; k += 16) {
        const __mmask16 in = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(in, x + k), vs),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i q = _mm512_cvttps_epi32(_mm512_max_ps(_mm512_min_ps(v, hi), lo));
        _mm_mask_storeu_epi8(a->q + k, in, _mm512_cvtepi32_epi8(q));
    }
    memset(a->sum32, 0, ((size_t)K / 32 + 1) * sizeof *a->sum32);
    memset(a->sum256, 0, ((size_t)K / 256 + 1) * sizeof *a->sum256);
    a->total = 0;
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(a->q + k)));
        const int32_t s32 = _mm512_reduce_add_epi32(_mm512_madd_epi16(w, _mm512_set1_epi16(1)));
        a->sum32[k / 32] = s32;
        a->sum256[k / 256] += s32;
        a->total += s32;
    }
    for (; k < K; k++) {
        a->sum32[k / 32] += a->q[k];
        a->sum256[k / 256] += a->q[k];
        a->total += a->q[k];
    }
    for (k = 0; k < K; k++)
        a->qp[a->pos[k]] = a->q[k];
}

void as_act8_quantize_isa(enum as_isa isa, struct as_act8 *a, const float *x) {
    if (isa == AS_ISA_AVX512)
        act8_quantize512(a, x);
    else
        act8_quantize_ref(a, x);
}

void as_act8_quantize(struct as_act8 *a, const float *x) {
    static int isa = -1; /* cpuid once; a racing first call writes the same value */
    if (isa < 0) isa = (int)as_kernel_isa_best();
    as_act8_quantize_isa((enum as_isa)isa, a, x);
}

/* ---- the shared finish: integer sums to the output float, the same for every ISA ---- */

static inline float tq_block_d(const uint8_t *block, size_t block_bytes) {
    uint16_t h;
    memcpy(&h, block + block_bytes - 2, 2);
    return as_f16_to_f32(h);
}

/* Scale of row r: I2_S's tensor scale, or the row scales after the N rows (rb: row bytes). */
static inline float row_scale(const struct as_tern_matrix *W, size_t rb, int r) {
    float s;
    memcpy(&s, W->data + (size_t)W->N * rb + (W->fmt == AS_TF_I2_S ? 0 : 4 * (size_t)r), 4);
    return s;
}

/* S[b]: sum of code * q per 256-block (TQ) or S[0] over the row (others); rb the row bytes
 * (as_tern_row_bytes, computed once per call by the caller: it divides). */
static inline float finish(const struct as_tern_matrix *W, size_t rb, int r, const int32_t *S,
                           const struct as_act8 *a) {
    switch (W->fmt) {
    case AS_TF_TQ1_0:
    case AS_TF_TQ2_0: {
        const uint8_t *row = W->data + (size_t)r * rb;
        const size_t bb = W->fmt == AS_TF_TQ1_0 ? sizeof(as_block_tq1_0) : sizeof(as_block_tq2_0);
        float acc = 0.0f;
        for (int b = 0; b < W->K / 256; b++)
            acc += (float)(S[b] - a->sum256[b]) * tq_block_d(row + (size_t)b * bb, bb);
        return acc * a->d;
    }
    case AS_TF_SEQ2:
        return (float)(2 * S[0] - 3 * a->total) * (0.5f * row_scale(W, rb, r)) * a->d;
    default:
        return (float)(S[0] - a->total) * row_scale(W, rb, r) * a->d;
    }
}

/* ---- scalar reference: decode the row's codes, natural order ---- */

static void ref_row_sums(const struct as_tern_matrix *W, int r, const struct as_act8 *a, int32_t *S,
                         uint8_t *codes) {
    const size_t rb = as_tern_row_bytes(W->fmt, W->K);
    as_tern_unpack_row_codes(W->fmt, W->K, W->data + (size_t)r * rb, codes);
    const int tq = W->fmt == AS_TF_TQ1_0 || W->fmt == AS_TF_TQ2_0;
    int32_t s = 0;
    for (int k = 0; k < W->K; k++) {
        s += (int32_t)codes[k] * a->q[k];
        if (tq && k % 256 == 255) {
            S[k / 256] = s;
            s = 0;
        }
    }
    if (!tq) S[0] = s;
}

static void ref_gemm(const struct as_tern_matrix *W, const struct as_act8 *a, int M, float *Y,
                     int ldy, int r0, int r1) {
    uint8_t *codes = as_xmalloc((size_t)W->K);
    int32_t *S = as_xmalloc(((size_t)W->K / 256 + 1) * sizeof *S);
    for (int r = r0; r < r1; r++)
        for (int m = 0; m < M; m++) {
            ref_row_sums(W, r, &a[m], S, codes);
            Y[(size_t)m * ldy + r] = finish(W, as_tern_row_bytes(W->fmt, W->K), r, S, &a[m]);
        }
    free(codes);
    free(S);
}

/* ---- SIMD bodies ---- */

/* GCC takes a target pragma for a region; clang ignores it and needs the attribute applied to
 * every function of the region instead (the fuzz targets build the library with clang). */
/* _Pragma takes one string literal, not concatenated pieces: keep these lines whole */
// clang-format off
#ifdef __clang__
#define TARGET_BEGIN_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,bmi2\"))), apply_to = function)")
#define TARGET_BEGIN_VNNI _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,bmi2,avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,gfni\"))), apply_to = function)")
#define TARGET_END _Pragma("clang attribute pop")
#else
#define TARGET_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,bmi2\")")
#define TARGET_BEGIN_VNNI _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,bmi2,avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,gfni\")")
#define TARGET_END _Pragma("GCC pop_options")
#endif
// clang-format on

TARGET_BEGIN_AVX2
#define SFX(name) name##_avx2
#define DOT_U8S8(acc, c, x)                                                                        \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((c), (x)), _mm256_set1_epi16(1)))
#include "kernel_ternary_simd.h"
#undef SFX
#undef DOT_U8S8
TARGET_END

TARGET_BEGIN_VNNI
#define SFX(name) name##_vnni
#define DOT_U8S8(acc, c, x) _mm256_dpbusd_epi32((acc), (c), (x))
#define AS_ZMM
#include "kernel_ternary_simd.h"
#undef SFX
#undef DOT_U8S8
#undef AS_ZMM
TARGET_END

void as_tern_gemm(enum as_isa isa, const struct as_tern_matrix *W, const struct as_act8 *a, int M,
                  float *Y, int r0, int r1) {
    for (int m0 = 0; m0 < M; m0 += 4) {
        int mm = M - m0 < 4 ? M - m0 : 4;
        float *Ym = Y + (size_t)m0 * W->N;
        switch (isa) {
        case AS_ISA_AVX2:
            tern_gemm_avx2(W, a + m0, mm, Ym, W->N, r0, r1);
            break;
        case AS_ISA_AVX512:
            tern_gemm_vnni(W, a + m0, mm, Ym, W->N, r0, r1);
            break;
        default:
            ref_gemm(W, a + m0, mm, Ym, W->N, r0, r1);
            break;
        }
    }
}

void as_tern_gemv(enum as_isa isa, const struct as_tern_matrix *W, const struct as_act8 *a,
                  float *y, int r0, int r1) {
    switch (isa) {
    case AS_ISA_AVX2:
        tern_gemm_avx2(W, a, 1, y, W->N, r0, r1);
        break;
    case AS_ISA_AVX512:
        tern_gemm_vnni(W, a, 1, y, W->N, r0, r1);
        break;
    default:
        ref_gemm(W, a, 1, y, W->N, r0, r1);
        break;
    }
}

/* ---- dense baseline ---- */

static inline float dense_w(const struct as_dense_matrix *W, size_t i) {
    if (!W->bf16) return ((const float *)W->data)[i];
    uint32_t u = (uint32_t)((const uint16_t *)W->data)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* 16 partial sums, k mod 16, then s[i] + s[i+8], + s[i+4], + s[i+2], + s[i+1]. */
static float dense_dot_ref(const struct as_dense_matrix *W, int r, const float *x) {
    float s[16] = {0};
    const size_t base = (size_t)r * W->K;
    for (int k = 0; k < W->K; k++) {
        float p = dense_w(W, base + k) * x[k];
        s[k % 16] = s[k % 16] + p;
    }
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++)
            s[i] = s[i] + s[i + w];
    return s[0];
}

TARGET_BEGIN_AVX2
static float dense_dot_avx2(const struct as_dense_matrix *W, int r, const float *x) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    const size_t base = (size_t)r * W->K;
    if (W->bf16) {
        const uint16_t *w = (const uint16_t *)W->data + base;
        for (int k = 0; k < W->K; k += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(w + k));
            __m256 w0 = _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16));
            __m256 w1 = _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16));
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(w0, _mm256_loadu_ps(x + k)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(w1, _mm256_loadu_ps(x + k + 8)));
        }
    } else {
        const float *w = (const float *)W->data + base;
        for (int k = 0; k < W->K; k += 16) {
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k)));
            a1 = _mm256_add_ps(
                a1, _mm256_mul_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8)));
        }
    }
    __m256 s8 = _mm256_add_ps(a0, a1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}
TARGET_END

void as_dense_gemv(enum as_isa isa, const struct as_dense_matrix *W, const float *x, float *y,
                   int r0, int r1) {
    for (int r = r0; r < r1; r++)
        y[r] = isa == AS_ISA_REF ? dense_dot_ref(W, r, x) : dense_dot_avx2(W, r, x);
}

void as_dense_gemm(enum as_isa isa, const struct as_dense_matrix *W, const float *X, int M,
                   float *Y, int r0, int r1) {
    for (int m = 0; m < M; m++)
        as_dense_gemv(isa, W, X + (size_t)m * W->K, Y + (size_t)m * W->N, r0, r1);
}
