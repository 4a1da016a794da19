/* fpquant: weight encoders and activation fake-quantization for FP8 / INT8 / FP4 (fpquant.h).
 *
 * Three levels of the array encoders live side by side (ggml style): dtype.c's scalar reference
 * codecs (as_fp8_encode_ref...), portable branchless lane code (GCC vector extensions, 4 lanes),
 * and AVX2 kernels chosen at run time (FP8 at 58-78% of a single-thread memcpy's bandwidth on
 * bf16 weights, NVFP4 from bf16 about half of it, division-free: bench/lepto.sh). Unit tests
 * compare every level byte for byte with the reference.
 * The FP8 KV-cache simulation (as_kv_quant) is at the end. */
#include "fpquant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"

static inline uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float ffrom(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* E4M3FN (REFERENCE.md): saturate to 448 first, subnormals m*2^-9 rounded by adding 2^14 (the
 * f32 ulp becomes 2^-9), normals by RNE on the top 3 mantissa bits. */
static inline uint8_t e4m3(float f) {
    uint32_t x = fbits(f);
    uint32_t sign = (x >> 24) & 0x80, ax = x & 0x7FFFFFFF;
    uint32_t ab = ax > 0x43E00000u ? 0x43E00000u : ax;
    uint32_t sub = fbits(ffrom(ab) + 16384.0f) - 0x46800000u;
    uint32_t norm = (ab + ((uint32_t)(7 - 127) << 23) + 0x7FFFF + ((ab >> 20) & 1)) >> 20;
    uint32_t r = ab < 0x3C800000u ? sub : norm;
    r = ax > 0x7F800000u ? 0x7F : r;
    return (uint8_t)(sign | r);
}

/* E2M1: count the midpoints below |f|; ties to the even code (> before an odd index, >= before
 * an even one); beyond 5 saturates to 6. */
static inline uint8_t e2m1(float f) {
    uint32_t x = fbits(f);
    float a = ffrom(x & 0x7FFFFFFF);
    uint8_t idx = (uint8_t)((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                            (a >= 3.5f) + (a > 5.0f));
    return (uint8_t)(((x >> 28) & 8) | idx);
}

/* The same two encoders on 4 lanes (GCC/Clang vector extensions: one SSE2 / NEON register, the
 * baseline of x86-64 and AArch64; comparisons give -1/0 lane masks). Values stay below 2^31 once
 * the sign is masked off, so signed lanes are safe. */
typedef float v8f __attribute__((vector_size(16)));
typedef int32_t v8i __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(16)));
typedef uint16_t v8h __attribute__((vector_size(8)));
typedef uint8_t v8b __attribute__((vector_size(4)));
#define VL 4

static inline v8i vsel(v8i m, v8i a, v8i b) {
    return (m & a) | (~m & b);
}

static inline v8b e4m3_v8(v8f f) {
    v8u x = (v8u)f;
    v8i sign = (v8i)((x >> 24) & 0x80), ax = (v8i)(x & 0x7FFFFFFF);
    v8i ab = vsel(ax > 0x43E00000, (v8i){0} + 0x43E00000, ax);
    v8i sub = (v8i)((v8f)ab + 16384.0f) - 0x46800000;
    v8i norm = (v8i)(((v8u)ab - (120u << 23) + 0x7FFFFu + (((v8u)ab >> 20) & 1)) >> 20);
    v8i r = vsel(ab < 0x3C800000, sub, norm);
    r = vsel(ax > 0x7F800000, (v8i){0} + 0x7F, r);
    return __builtin_convertvector(sign | r, v8b);
}

static inline v8b e2m1_v8(v8f f) {
    v8u x = (v8u)f;
    v8f a = (v8f)(x & 0x7FFFFFFF);
    v8i idx = -((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
                (a > 5.0f));
    return __builtin_convertvector((v8i)((x >> 28) & 8) | idx, v8b);
}

/* AVX2 kernels (x86-64, chosen at run time when the CPU has AVX2). The E4M3 rounding is
 * reformulated for fewer vector operations than the lane code above, with identical results
 * (unit-tested exhaustively against dtype.c's reference):
 *   a = min(448, |v|)            saturate first; min_ps returns its second operand (NaN) for NaN
 *   e = max(exponent bits of a, those of 2^-6);  m = e + 20 in the exponent: a power of two
 *                                whose ulp is a's E4M3 step (2^-9 in the subnormal range)
 *   steps = bits(a + m) - bits(m)   the FPU rounds a to that step, ties to even: steps is the
 *                                rounded a in steps, 8 + mantissa for normals (16 when it rounds
 *                                up a binade), k for subnormals k 2^-9
 *   code = steps + 8 (exponent of a + 6)  = 8 E + M with E4M3's biased exponent E
 * No step makes a subnormal f32 (they cost microcode assists). NaN stays NaN (a + m is a's NaN),
 * whose bits minus m's give a negative int32: packed with signed saturation it becomes 0x80, and
 * the final min(byte, 0x7F) turns it into 0x7F while leaving the codes 0..0x7E. The sign comes
 * from packing the quotients' bits with signed saturation (negative stays negative, -0.0 too). */
#if defined(__x86_64__) && defined(__GNUC__)
#define AS_FPQ_AVX2 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2")))

/* The E4M3 magnitude code of |v|; *dec (if not NULL) receives the decoded magnitude, the
 * rounded a itself (what the code's table entry holds, for finite v). */
AVX2 static inline __m256i e4m3_mag_dec_avx2(__m256 v, __m256 *dec) {
    __m256 a = _mm256_min_ps(_mm256_set1_ps(AS_FP8_MAX),
                             _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))));
    __m256i e =
        _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(a), _mm256_set1_epi32(0x7F800000)),
                         _mm256_set1_epi32(0x3C800000));
    __m256i m = _mm256_add_epi32(e, _mm256_set1_epi32(20 << 23));
    __m256 am = _mm256_add_ps(a, _mm256_castsi256_ps(m));
    if (dec) *dec = _mm256_sub_ps(am, _mm256_castsi256_ps(m)); /* exact: both multiples of ulp(m) */
    __m256i steps = _mm256_sub_epi32(_mm256_castps_si256(am), m);
    return _mm256_add_epi32(
        steps, _mm256_srli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(0x3C800000)), 20));
}

AVX2 static inline __m256i e4m3_mag_avx2(__m256 v) {
    return e4m3_mag_dec_avx2(v, NULL);
}

/* Codes of 32 quotients, as 32 bytes in 128-bit-lane pack order (the caller permutes). */
AVX2 static inline __m256i e4m3_pack32_avx2(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    __m256i c = _mm256_packs_epi16(_mm256_packs_epi32(e4m3_mag_avx2(v0), e4m3_mag_avx2(v1)),
                                   _mm256_packs_epi32(e4m3_mag_avx2(v2), e4m3_mag_avx2(v3)));
    __m256i sg =
        _mm256_packs_epi16(_mm256_packs_epi32(_mm256_castps_si256(v0), _mm256_castps_si256(v1)),
                           _mm256_packs_epi32(_mm256_castps_si256(v2), _mm256_castps_si256(v3)));
    return _mm256_or_si256(_mm256_min_epu8(c, _mm256_set1_epi8(0x7F)),
                           _mm256_and_si256(sg, _mm256_set1_epi8((char)0x80)));
}

/* codes = E4M3(x / scale), 32 elements per step; the division is the true f32 division the
 * encoding rule requires. Pack order of x[0..7], x[8..15], ... leaves the dwords (4 codes each)
 * as elements [0 8 16 24 4 12 20 28]: one cross-lane permute restores them. */
AVX2 static size_t fp8_encode_avx2(const float *x, size_t n, float scale, uint8_t *codes) {
    __m256 s = _mm256_set1_ps(scale);
    __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c = e4m3_pack32_avx2(_mm256_div_ps(_mm256_loadu_ps(x + i), s),
                                     _mm256_div_ps(_mm256_loadu_ps(x + i + 8), s),
                                     _mm256_div_ps(_mm256_loadu_ps(x + i + 16), s),
                                     _mm256_div_ps(_mm256_loadu_ps(x + i + 24), s));
        _mm256_storeu_si256((__m256i *)(codes + i), _mm256_permutevar8x32_epi32(c, order));
    }
    return i;
}

/* bf16 -> f32 is bf16 << 16: interleaving zeros below 16 bf16 values makes the lanes
 * [0-3 | 8-11] (unpacklo) and [4-7 | 12-15] (unpackhi); after packing, the 64-bit groups are
 * elements [0 16 8 24] (x 8): permute4x64 (0, 2, 1, 3) restores them. */
AVX2 static size_t fp8_encode_bf16_avx2(const uint16_t *x, size_t n, float scale, uint8_t *codes) {
    __m256 s = _mm256_set1_ps(scale);
    __m256i z = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i ha = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(x + i + 16));
        __m256 v0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, ha));
        __m256 v1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, ha));
        __m256 v2 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, hb));
        __m256 v3 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, hb));
        __m256i c = e4m3_pack32_avx2(_mm256_div_ps(v0, s), _mm256_div_ps(v1, s),
                                     _mm256_div_ps(v2, s), _mm256_div_ps(v3, s));
        _mm256_storeu_si256((__m256i *)(codes + i), _mm256_permute4x64_epi64(c, 0xD8));
    }
    return i;
}

/* max over |bf16| as 15-bit integers, 64 elements per step in four accumulators. */
AVX2 static size_t absmax_bf16_avx2(const uint16_t *x, size_t n, uint16_t *out) {
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
    __m256i mask = _mm256_set1_epi16(0x7FFF);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m256i *p = (const __m256i *)(x + i);
        m0 = _mm256_max_epu16(m0, _mm256_and_si256(_mm256_loadu_si256(p), mask));
        m1 = _mm256_max_epu16(m1, _mm256_and_si256(_mm256_loadu_si256(p + 1), mask));
        m2 = _mm256_max_epu16(m2, _mm256_and_si256(_mm256_loadu_si256(p + 2), mask));
        m3 = _mm256_max_epu16(m3, _mm256_and_si256(_mm256_loadu_si256(p + 3), mask));
    }
    m0 = _mm256_max_epu16(_mm256_max_epu16(m0, m1), _mm256_max_epu16(m2, m3));
    uint16_t lanes[16];
    _mm256_storeu_si256((__m256i *)lanes, m0);
    uint16_t r = 0;
    for (int j = 0; j < 16; j++)
        r = lanes[j] > r ? lanes[j] : r;
    *out = r;
    return i;
}

/* max over |f32| as 31-bit integers (finite values: integer order is float order). */
AVX2 static size_t absmax_avx2(const float *x, size_t n, uint32_t *out) {
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
    __m256i mask = _mm256_set1_epi32(0x7FFFFFFF);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i *p = (const __m256i *)(x + i);
        m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_loadu_si256(p), mask));
        m1 = _mm256_max_epi32(m1, _mm256_and_si256(_mm256_loadu_si256(p + 1), mask));
        m2 = _mm256_max_epi32(m2, _mm256_and_si256(_mm256_loadu_si256(p + 2), mask));
        m3 = _mm256_max_epi32(m3, _mm256_and_si256(_mm256_loadu_si256(p + 3), mask));
    }
    m0 = _mm256_max_epi32(_mm256_max_epi32(m0, m1), _mm256_max_epi32(m2, m3));
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, m0);
    uint32_t r = 0;
    for (int j = 0; j < 8; j++)
        r = lanes[j] > r ? lanes[j] : r;
    *out = r;
    return i;
}

#endif

/* Kernel level: 2 = AVX2 (when the CPU has it), 1 = portable 4-lane vector code. Tests and the
 * bench force a level to compare the paths; the default is the best the CPU supports. */
static int simd_forced = -1;
static int simd_cpu(void) {
    static int v = -1; /* benign race: every thread computes the same value */
    if (v < 0) {
#ifdef AS_FPQ_AVX2
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") ? 2 : 1;
#else
        v = 1;
#endif
    }
    return v;
}
int as_fpq_simd_level(void) {
    return simd_forced >= 0 && simd_forced < simd_cpu() ? simd_forced : simd_cpu();
}
int as_fpq_set_simd_level(int level) {
    simd_forced = level;
    return as_fpq_simd_level();
}
static inline int have_avx2(void) {
    return as_fpq_simd_level() >= 2;
}

static const float fp4_vals[16] = {0,     0.5f,  1,  1.5f,  2,  3,  4,  6,
                                   -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
static float e4m3_tab[256];
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;
static void tab_init(void) {
    for (int c = 0; c < 256; c++)
        e4m3_tab[c] = as_fp8_e4m3_to_f32((uint8_t)c);
}
static inline const float *e4m3_table(void) {
    pthread_once(&tab_once, tab_init);
    return e4m3_tab;
}

uint8_t as_fp8_enc(float x) {
    return e4m3(x);
}
float as_fp8_dec(uint8_t c) {
    return e4m3_table()[c];
}
uint8_t as_fp4_enc(float x) {
    return e2m1(x);
}
float as_fp4_dec(uint8_t c) {
    return fp4_vals[c & 15];
}

float as_absmax(const float *x, size_t n) {
    /* |x| as the low 31 bits: for finite values an integer max is the float max */
    v8i m = {0};
    size_t i = 0;
#ifdef AS_FPQ_AVX2
    if (have_avx2()) {
        uint32_t r;
        i = absmax_avx2(x, n, &r);
        m[0] = (int32_t)r;
    }
#endif
    for (; i + VL <= n; i += VL) {
        v8i v;
        memcpy(&v, x + i, sizeof v);
        v &= 0x7FFFFFFF;
        m = vsel(v > m, v, m);
    }
    int32_t r = 0;
    for (int j = 0; j < VL; j++)
        r = m[j] > r ? m[j] : r;
    float f = ffrom((uint32_t)r);
    for (; i < n; i++)
        f = fmaxf(f, fabsf(x[i]));
    return f;
}

float as_absmax_bf16(const uint16_t *x, size_t n) {
    /* |bf16| is a monotone function of its low 15 bits (finite values): integer max */
    uint16_t m[16] = {0};
    size_t i = 0;
#ifdef AS_FPQ_AVX2
    if (have_avx2()) i = absmax_bf16_avx2(x, n, &m[0]);
#endif
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            uint16_t a = x[i + j] & 0x7FFF;
            m[j] = a > m[j] ? a : m[j];
        }
    for (; i < n; i++) {
        uint16_t a = x[i] & 0x7FFF;
        m[0] = a > m[0] ? a : m[0];
    }
    uint16_t r = 0;
    for (int j = 0; j < 16; j++)
        r = m[j] > r ? m[j] : r;
    return ffrom((uint32_t)r << 16);
}

void as_fp8_encode(const float *x, size_t n, float scale, uint8_t *codes) {
    size_t i = 0;
#ifdef AS_FPQ_AVX2
    if (have_avx2()) i = fp8_encode_avx2(x, n, scale, codes);
#endif
    for (; i + VL <= n; i += VL) {
        v8f v;
        memcpy(&v, x + i, sizeof v);
        v8b c = e4m3_v8(v / scale);
        memcpy(codes + i, &c, VL);
    }
    for (; i < n; i++)
        codes[i] = e4m3(x[i] / scale);
}

void as_fp8_encode_bf16(const uint16_t *x, size_t n, float scale, uint8_t *codes) {
    size_t i = 0;
#ifdef AS_FPQ_AVX2
    if (have_avx2()) i = fp8_encode_bf16_avx2(x, n, scale, codes);
#endif
    for (; i + VL <= n; i += VL) {
        v8h h;
        memcpy(&h, x + i, sizeof h);
        v8f v = (v8f)(__builtin_convertvector(h, v8u) << 16);
        v8b c = e4m3_v8(v / scale);
        memcpy(codes + i, &c, VL);
    }
    for (; i < n; i++)
        codes[i] = e4m3(ffrom((uint32_t)x[i] << 16) / scale);
}

/* The scalar reference kernels: dtype.c's codec, one element at a time (tests, bench). */
void as_fp8_encode_ref(const float *x, size_t n, float scale, uint8_t *codes) {
    for (size_t i = 0; i < n; i++)
        codes[i] = as_f32_to_fp8_e4m3(x[i] / scale);
}
void as_fp8_encode_bf16_ref(const uint16_t *x, size_t n, float scale, uint8_t *codes) {
    for (size_t i = 0; i < n; i++)
        codes[i] = as_f32_to_fp8_e4m3(as_bf16_to_f32(x[i]) / scale);
}

void as_fp8_qdq(const float *x, size_t n, float scale, float *y) {
    const float *t = e4m3_table();
    for (size_t i = 0; i < n; i++)
        y[i] = t[e4m3(x[i] / scale)] * scale;
}

float as_scale_for(float amax, float qmax) {
    float s = amax / qmax;
    return s > AS_SCALE_EPS ? s : AS_SCALE_EPS;
}

/* OCP MX v1.0: shared exponent floor(log2(amax)) - emax_elem, emax_elem = 2 for E2M1, clamped to
 * E8M0's range; amax == 0 gives the smallest scale (every code is then 0). */
uint8_t as_mx_scale_e8m0(float amax) {
    if (!(amax > 0)) return 0;
    int e;
    frexpf(amax, &e); /* amax = m 2^e, m in [0.5, 1): floor(log2 amax) = e - 1 */
    int code = e - 1 - 2 + 127;
    return (uint8_t)(code < 0 ? 0 : code > 254 ? 254 : code);
}

float as_nvfp4_global_scale(float amax) {
    return amax > 0 ? AS_FP8_MAX * AS_FP4_MAX / amax : 1.0f;
}

/* ---- weights ---- */

const char *const as_wq_names[AS_WQ_COUNT] = {
    "fp8-tensor", "fp8-channel", "fp8-block", "int8-channel", "nvfp4", "mxfp4", "int4-group"};

int as_wq_from_name(const char *name) {
    for (int i = 0; i < AS_WQ_COUNT; i++)
        if (!strcmp(name, as_wq_names[i])) return i;
    return -1;
}

static inline int8_t int8_round(float v) {
    float r = rintf(v);
    r = r > 127.0f ? 127.0f : r < -128.0f ? -128.0f : r;
    return (int8_t)r;
}

/* NVFP4 block scale (E4M3 of g * amax16 / 6) and its f32 effective scale DEC(bs) / g. */
static inline uint8_t nvfp4_block_scale(float g, float amax, float *eff) {
    uint8_t bs = e4m3(g * amax / AS_FP4_MAX);
    *eff = e4m3_table()[bs] / g;
    return bs;
}

/* FP4 codes of one block: q = E2M1(w / s); s == 0 (all-zero block) gives zeros. */
static inline void fp4_block(const float *w, int n, float s, uint8_t *codes4) {
    if (!(s > 0)) {
        memset(codes4, 0, (size_t)n);
        return;
    }
    int i = 0;
    for (; i + VL <= n; i += VL) {
        v8f v;
        memcpy(&v, w + i, sizeof v);
        v8b c = e2m1_v8(v / s);
        memcpy(codes4 + i, &c, VL);
    }
    for (; i < n; i++)
        codes4[i] = e2m1(w[i] / s);
}

#ifdef AS_FPQ_AVX2
/* Division-free NVFP4 (REFERENCE.md NVFP4: code = E2M1(fl(w / s)), s = DEC(bs) / g). For one
 * block scale s > 0 the reference magnitude is the number of k in 1..7 whose midpoint rule
 * holds for q = fl(|w| / s) (q > 0.25, q >= 0.75, q > 1.25, ..., q > 5: ties to the even code).
 * The division is correctly rounded, so q is monotone in |w| and each rule holds exactly when
 * |w| >= t_k, the smallest float satisfying it. t_k is found from the estimate m_k s by stepping
 * with nextafterf and checking dtype.c's reference codec on t / s itself (a few divisions), so
 * the ties and the f32 rounding of the quotient are the reference's by construction. The block
 * scale byte has at most 128 values under one global scale g: a table of rows (t_1..t_7, sign
 * mask) per byte, cached per thread for the last g, turns encoding into 7 compares per element.
 * Rows for s == 0, NaN (all-zero, underflowing or NaN blocks: codes 0, as the scalar path's
 * !(s > 0) test) never pass and drop the sign; s == inf (x / s = +-0) never passes.
 * bf16 input: x >= t  <=>  x >= ceil_bf16(t), compared as 15-bit integers, 16 lanes a vector. */
struct nvfp4_tab {
    uint32_t g_bits;
    int valid;
    uint32_t f32[128][8]; /* float bits of t_1..t_7 (NaN: never), [7] 0x80000000 or 0 */
    uint32_t b16[128][8]; /* ceil_bf16(t_k) - 1 in both halves (0x7FFF: never), [7] 0x00080008
                             (sign bit 3 kept) or 0 */
};
static _Thread_local struct nvfp4_tab nv_tab;

static float nvfp4_threshold(float s, int k) {
    static const float mid[8] = {0, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
#define NV_REACHES(t) ((as_f32_to_fp4_e2m1((t) / s) & 7) >= k)
    float t = mid[k] * s;
    if (t > 0x1.fffffep127f) t = 0x1.fffffep127f;
    while (t > 0 && NV_REACHES(nextafterf(t, 0)))
        t = nextafterf(t, 0);
    while (t < INFINITY && !NV_REACHES(t))
        t = nextafterf(t, INFINITY);
#undef NV_REACHES
    return t;
}

static const struct nvfp4_tab *nvfp4_table(float g) {
    struct nvfp4_tab *tb = &nv_tab;
    if (tb->valid && tb->g_bits == fbits(g)) return tb;
    const float *dec = e4m3_table();
    for (int c = 0; c < 128; c++) {
        float s = dec[c] / g; /* the scalar path's effective scale */
        int live = s > 0, finite = s < INFINITY;
        for (int k = 1; k <= 7; k++) {
            uint32_t t = 0x7FC00000u, t16 = 0x7FFF;
            if (live && finite) {
                t = fbits(nvfp4_threshold(s, k));
                t16 = ((t + 0xFFFFu) >> 16) - 1; /* t > 0: ceil_bf16(t) >= 1 */
            }
            tb->f32[c][k - 1] = t;
            tb->b16[c][k - 1] = t16 | t16 << 16;
        }
        tb->f32[c][7] = live ? 0x80000000u : 0;
        tb->b16[c][7] = live ? 0x00080008u : 0;
    }
    tb->g_bits = fbits(g), tb->valid = 1;
    return tb;
}

/* Block scale bytes of 8 blocks whose absmaxes are the lanes of amax: E4M3(g amax / 6) with the
 * scalar path's f32 operations, NaN -> 0x7F (whose row zeroes the block). */
AVX2 static inline void nvfp4_scale_bytes_avx2(__m256 amax, __m256 gv, uint32_t *bs) {
    __m256i c = e4m3_mag_avx2(_mm256_div_ps(_mm256_mul_ps(gv, amax), _mm256_set1_ps(AS_FP4_MAX)));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(amax, amax, _CMP_UNORD_Q));
    c = _mm256_blendv_epi8(c, _mm256_set1_epi32(0x7F), nan);
    _mm256_storeu_si256((__m256i *)bs, _mm256_and_si256(c, _mm256_set1_epi32(0x7F)));
}

/* Packs the 16-bit codes (0..15, element order) of 4 blocks two per byte, even element in the
 * low nibble: madd gives c[2i] + 16 c[2i+1] per dword, the packs interleave 128-bit lanes. */
AVX2 static inline void nvfp4_store4_avx2(__m256i c0, __m256i c1, __m256i c2, __m256i c3,
                                          uint8_t *dst) {
    const __m256i nib = _mm256_set1_epi32(0x00100001);
    __m256i p = _mm256_packus_epi16(
        _mm256_packus_epi32(_mm256_madd_epi16(c0, nib), _mm256_madd_epi16(c1, nib)),
        _mm256_packus_epi32(_mm256_madd_epi16(c2, nib), _mm256_madd_epi16(c3, nib)));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, p);
}

/* 16 f32 elements -> 16 codes as 16-bit lanes in element order. */
AVX2 static inline __m256i nvfp4_codes16_f32_avx2(const float *r, const uint32_t *row) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 x0 = _mm256_loadu_ps(r), x1 = _mm256_loadu_ps(r + 8);
    __m256 a0 = _mm256_and_ps(x0, absm), a1 = _mm256_and_ps(x1, absm);
    __m256i c0 = _mm256_setzero_si256(), c1 = c0;
#pragma GCC unroll 8
    for (int k = 0; k < 7; k++) { /* each passed threshold adds 1 (mask -1 subtracted) */
        __m256 t = _mm256_broadcast_ss((const float *)&row[k]);
        c0 = _mm256_sub_epi32(c0, _mm256_castps_si256(_mm256_cmp_ps(a0, t, _CMP_GE_OQ)));
        c1 = _mm256_sub_epi32(c1, _mm256_castps_si256(_mm256_cmp_ps(a1, t, _CMP_GE_OQ)));
    }
    __m256 sm = _mm256_broadcast_ss((const float *)&row[7]);
    c0 = _mm256_or_si256(c0, _mm256_srli_epi32(_mm256_castps_si256(_mm256_and_ps(x0, sm)), 28));
    c1 = _mm256_or_si256(c1, _mm256_srli_epi32(_mm256_castps_si256(_mm256_and_ps(x1, sm)), 28));
    return _mm256_permute4x64_epi64(_mm256_packus_epi32(c0, c1), 0xD8);
}

/* 16 bf16 elements (a: their |x| bits) -> 16 codes as 16-bit lanes: the compare masks (-1)
 * summed give -magnitude; the sign (bit 15 -> bit 3, masked by the row) minus that sum. */
AVX2 static inline __m256i nvfp4_codes16_bf16_avx2(__m256i x, __m256i a, const uint32_t *row) {
    __m256i m[7];
#pragma GCC unroll 8
    for (int k = 0; k < 7; k++)
        m[k] = _mm256_cmpgt_epi16(a, _mm256_set1_epi32((int)row[k]));
    __m256i neg = _mm256_add_epi16(
        _mm256_add_epi16(_mm256_add_epi16(m[0], m[1]), _mm256_add_epi16(m[2], m[3])),
        _mm256_add_epi16(_mm256_add_epi16(m[4], m[5]), m[6]));
    __m256i sign = _mm256_and_si256(_mm256_srli_epi16(x, 12), _mm256_set1_epi32((int)row[7]));
    return _mm256_sub_epi16(sign, neg);
}

/* Scale bytes of eight f32 blocks (128 elements at r) to bs[0..7]. Block absmaxes as 31-bit
 * integers (NaN stays the largest, as in as_absmax), reduced so that lane j holds block j's:
 * pairwise unpack/max, 64-bit unpack/max, then the 128-bit halves. */
AVX2 static inline void nvfp4_scales8_f32_avx2(const float *r, __m256 gv, uint32_t *bs) {
    const __m256i absm = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i m[8], u[4], v[2];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        m[j] = _mm256_max_epi32(
            _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(r + 16 * j)), absm),
            _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(r + 16 * j + 8)), absm));
#pragma GCC unroll 8
    for (int k = 0; k < 4; k++)
        u[k] = _mm256_max_epi32(_mm256_unpacklo_epi32(m[2 * k], m[2 * k + 1]),
                                _mm256_unpackhi_epi32(m[2 * k], m[2 * k + 1]));
#pragma GCC unroll 8
    for (int k = 0; k < 2; k++)
        v[k] = _mm256_max_epi32(_mm256_unpacklo_epi64(u[2 * k], u[2 * k + 1]),
                                _mm256_unpackhi_epi64(u[2 * k], u[2 * k + 1]));
    __m256i amax = _mm256_max_epi32(_mm256_permute2x128_si256(v[0], v[1], 0x20),
                                    _mm256_permute2x128_si256(v[0], v[1], 0x31));
    nvfp4_scale_bytes_avx2(_mm256_castsi256_ps(amax), gv, bs);
}

/* The same for eight bf16 blocks: one vector per block, 16-bit integer max (16 -> 8 lanes per
 * level), the absmaxes widened to f32 (bf16 << 16) for the block scales. */
AVX2 static inline void nvfp4_scales8_bf16_avx2(const uint16_t *r, __m256 gv, uint32_t *bs) {
    const __m256i absm = _mm256_set1_epi16(0x7FFF);
    __m256i a[8], u[4], v[2];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        a[j] = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(r + 16 * j)), absm);
#pragma GCC unroll 8
    for (int k = 0; k < 4; k++)
        u[k] = _mm256_max_epu16(_mm256_unpacklo_epi16(a[2 * k], a[2 * k + 1]),
                                _mm256_unpackhi_epi16(a[2 * k], a[2 * k + 1]));
#pragma GCC unroll 8
    for (int k = 0; k < 2; k++)
        v[k] = _mm256_max_epu16(_mm256_unpacklo_epi32(u[2 * k], u[2 * k + 1]),
                                _mm256_unpackhi_epi32(u[2 * k], u[2 * k + 1]));
    __m256i w8 =
        _mm256_max_epu16(_mm256_unpacklo_epi64(v[0], v[1]), _mm256_unpackhi_epi64(v[0], v[1]));
    __m128i m8 = _mm_max_epu16(_mm256_castsi256_si128(w8), _mm256_extracti128_si256(w8, 1));
    nvfp4_scale_bytes_avx2(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(m8), 16)),
                           gv, bs);
}

/* Codes of eight blocks with scale bytes bs: scale bytes to s8[0..7], codes to dst[0..63]. */
AVX2 static inline void nvfp4_codes8_f32_avx2(const float *r, const struct nvfp4_tab *tb,
                                              const uint32_t *bs, uint8_t *s8, uint8_t *dst) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        s8[j] = (uint8_t)bs[j];
#pragma GCC unroll 8
    for (int h = 0; h < 2; h++) {
        const float *q = r + 64 * h;
        const uint32_t *b = bs + 4 * h;
        nvfp4_store4_avx2(nvfp4_codes16_f32_avx2(q, tb->f32[b[0]]),
                          nvfp4_codes16_f32_avx2(q + 16, tb->f32[b[1]]),
                          nvfp4_codes16_f32_avx2(q + 32, tb->f32[b[2]]),
                          nvfp4_codes16_f32_avx2(q + 48, tb->f32[b[3]]), dst + 32 * h);
    }
}

AVX2 static inline void nvfp4_codes8_bf16_avx2(const uint16_t *r, const struct nvfp4_tab *tb,
                                               const uint32_t *bs, uint8_t *s8, uint8_t *dst) {
    const __m256i absm = _mm256_set1_epi16(0x7FFF);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        s8[j] = (uint8_t)bs[j];
#pragma GCC unroll 8
    for (int h = 0; h < 2; h++) {
        const uint16_t *q = r + 64 * h;
        const uint32_t *b = bs + 4 * h;
        __m256i c[4];
#pragma GCC unroll 8
        for (int j = 0; j < 4; j++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(q + 16 * j));
            c[j] = nvfp4_codes16_bf16_avx2(x, _mm256_and_si256(x, absm), tb->b16[b[j]]);
        }
        nvfp4_store4_avx2(c[0], c[1], c[2], c[3], dst + 32 * h);
    }
}

/* NVFP4 with K % 16 == 0: the blocks of all rows form one flat sequence (block b: elements
 * 16b.., codes bytes 8b.., scale byte b), eight per step. Software-pipelined: the scale bytes of
 * the next eight blocks (a long dependency chain through a division) are computed before the
 * codes of the current eight, so the two overlap. The last < 8 blocks go through a zero-padded
 * copy. */
#define NVFP4_ROWS_AVX2(T, scales8, codes8)                                                        \
    do {                                                                                           \
        const struct nvfp4_tab *tb = nvfp4_table(g);                                               \
        const __m256 gv = _mm256_set1_ps(g);                                                       \
        size_t nb = (size_t)N * (K / 16), nfull = nb / 8 * 8;                                      \
        uint32_t bs[2][8];                                                                         \
        if (nfull) scales8(w, gv, bs[0]);                                                          \
        for (size_t b = 0, i = 0; b < nfull; b += 8, i ^= 1) {                                     \
            if (b + 8 < nfull) scales8(w + (b + 8) * 16, gv, bs[i ^ 1]);                           \
            codes8(w + b * 16, tb, bs[i], scale8 + b, codes + b * 8);                              \
        }                                                                                          \
        if (nfull < nb) {                                                                          \
            T pad[128] = {0};                                                                      \
            uint8_t s8[8], c[64];                                                                  \
            memcpy(pad, w + nfull * 16, (nb - nfull) * 16 * sizeof(T));                            \
            scales8(pad, gv, bs[0]);                                                               \
            codes8(pad, tb, bs[0], s8, c);                                                         \
            memcpy(scale8 + nfull, s8, nb - nfull),                                                \
                memcpy(codes + nfull * 8, c, (nb - nfull) * 8);                                    \
        }                                                                                          \
    } while (0)

AVX2 static void nvfp4_rows_avx2(const float *w, int N, int K, float g, uint8_t *codes,
                                 uint8_t *scale8) {
    NVFP4_ROWS_AVX2(float, nvfp4_scales8_f32_avx2, nvfp4_codes8_f32_avx2);
}

AVX2 static void nvfp4_rows_bf16_avx2(const uint16_t *w, int N, int K, float g, uint8_t *codes,
                                      uint8_t *scale8) {
    NVFP4_ROWS_AVX2(uint16_t, nvfp4_scales8_bf16_avx2, nvfp4_codes8_bf16_avx2);
}
#endif

/* FP4 rows with block g: NVFP4 (E4M3 block scales of 16 under global scale gs) or MXFP4 (E8M0
 * block scales of 32). codes: [N, K/2] zeroed by the caller; scale8: [N, ceil(K/g)]. */
static void fp4_rows(const float *w, int N, int K, int nv, float gs, uint8_t *codes,
                     uint8_t *scale8) {
    int g = nv ? 16 : 32, sk = (K + g - 1) / g;
#ifdef AS_FPQ_AVX2
    if (nv && K % 16 == 0 && have_avx2()) {
        nvfp4_rows_avx2(w, N, K, gs, codes, scale8);
        return;
    }
#endif
    uint8_t c4[32];
    for (int n = 0; n < N; n++)
        for (int j = 0; j < sk; j++) {
            int k0 = j * g, len = k0 + g <= K ? g : K - k0;
            const float *r = w + (size_t)n * K + k0;
            float amax = as_absmax(r, (size_t)len), s;
            if (nv) {
                scale8[n * sk + j] = nvfp4_block_scale(gs, amax, &s);
            } else {
                uint8_t e = scale8[n * sk + j] = as_mx_scale_e8m0(amax);
                s = as_e8m0_to_f32(e);
            }
            fp4_block(r, len, s, c4);
            uint8_t *dst = codes + ((size_t)n * K + k0) / 2;
            for (int i = 0; i < len; i += 2)
                dst[i / 2] = (uint8_t)(c4[i] | (i + 1 < len ? c4[i + 1] << 4 : 0));
        }
}

void as_nvfp4_encode(const float *w, int N, int K, float global_scale, uint8_t *codes,
                     uint8_t *scale8) {
    memset(codes, 0, (size_t)N * K / 2);
    fp4_rows(w, N, K, 1, global_scale, codes, scale8);
}

void as_nvfp4_encode_bf16(const uint16_t *w, int N, int K, float global_scale, uint8_t *codes,
                          uint8_t *scale8) {
#ifdef AS_FPQ_AVX2
    if (K % 16 == 0 && have_avx2()) {
        nvfp4_rows_bf16_avx2(w, N, K, global_scale, codes, scale8);
        return;
    }
#endif
    /* portable: rows widened to f32 in chunks of about 16K elements */
    int rows = K < 16384 ? 16384 / K : 1, sk = (K + 15) / 16;
    float *tmp = as_xmalloc(sizeof(float) * (size_t)rows * K);
    for (int n0 = 0; n0 < N; n0 += rows) {
        int r = n0 + rows <= N ? rows : N - n0;
        for (size_t i = 0; i < (size_t)r * K; i++)
            tmp[i] = as_bf16_to_f32(w[(size_t)n0 * K + i]);
        as_nvfp4_encode(tmp, r, K, global_scale, codes + (size_t)n0 * K / 2,
                        scale8 + (size_t)n0 * sk);
    }
    free(tmp);
}

int as_fpq_quantize(const float *w, int N, int K, enum as_wq_kind kind, int block,
                    float nvfp4_global, const char *name, struct as_fpq_weight *q) {
    memset(q, 0, sizeof *q);
    if (N <= 0 || K <= 0) return as_fail("tensor %s: bad shape [%d, %d]", name, N, K);
    for (size_t i = 0; i < (size_t)N * K; i++)
        if (!isfinite(w[i]))
            return as_fail("tensor %s: non-finite weight at [%zu, %zu]", name, i / (size_t)K,
                           i % (size_t)K);
    q->kind = kind, q->N = N, q->K = K;
    size_t nk = (size_t)N * K;
    switch (kind) {
    case AS_WQ_FP8_TENSOR: {
        q->block_n = N, q->block_k = K, q->sn = 1, q->sk = 1;
        q->scale = as_xmalloc(sizeof(float));
        q->scale[0] = as_scale_for(as_absmax(w, nk), AS_FP8_MAX);
        q->codes_bytes = nk;
        q->codes = as_xmalloc(nk);
        as_fp8_encode(w, nk, q->scale[0], q->codes);
        return 0;
    }
    case AS_WQ_FP8_CHANNEL:
    case AS_WQ_INT8_CHANNEL: {
        q->block_n = 1, q->block_k = K, q->sn = N, q->sk = 1;
        q->scale = as_xmalloc(sizeof(float) * N);
        q->codes_bytes = nk;
        q->codes = as_xmalloc(nk);
        for (int n = 0; n < N; n++) {
            const float *r = w + (size_t)n * K;
            uint8_t *c = q->codes + (size_t)n * K;
            if (kind == AS_WQ_FP8_CHANNEL) {
                float s = q->scale[n] = as_scale_for(as_absmax(r, K), AS_FP8_MAX);
                as_fp8_encode(r, K, s, c);
            } else {
                float s = q->scale[n] = as_scale_for(as_absmax(r, K), 127.0f);
                for (int k = 0; k < K; k++)
                    c[k] = (uint8_t)int8_round(r[k] / s);
            }
        }
        return 0;
    }
    case AS_WQ_FP8_BLOCK: {
        int bs = block > 0 ? block : 128;
        q->block_n = bs, q->block_k = bs;
        q->sn = (N + bs - 1) / bs, q->sk = (K + bs - 1) / bs;
        q->scale = as_xmalloc(sizeof(float) * q->sn * q->sk);
        q->codes_bytes = nk;
        q->codes = as_xmalloc(nk);
        for (int bi = 0; bi < q->sn; bi++)
            for (int bj = 0; bj < q->sk; bj++) {
                int n0 = bi * bs, n1 = n0 + bs < N ? n0 + bs : N;
                int k0 = bj * bs, k1 = k0 + bs < K ? k0 + bs : K;
                float amax = 0;
                for (int n = n0; n < n1; n++)
                    amax = fmaxf(amax, as_absmax(w + (size_t)n * K + k0, (size_t)(k1 - k0)));
                float s = q->scale[bi * q->sk + bj] = as_scale_for(amax, AS_FP8_MAX);
                for (int n = n0; n < n1; n++)
                    as_fp8_encode(w + (size_t)n * K + k0, (size_t)(k1 - k0), s,
                                  q->codes + (size_t)n * K + k0);
            }
        return 0;
    }
    case AS_WQ_NVFP4:
    case AS_WQ_MXFP4: {
        int g = kind == AS_WQ_NVFP4 ? 16 : 32;
        if (K % 2)
            return as_fail("tensor %s: %s needs an even number of input columns, got %d", name,
                           as_wq_names[kind], K);
        q->block_n = 1, q->block_k = g, q->sn = N, q->sk = (K + g - 1) / g;
        q->scale8 = as_xmalloc((size_t)q->sn * q->sk);
        q->codes_bytes = nk / 2;
        q->codes = as_xcalloc(nk / 2, 1);
        if (kind == AS_WQ_NVFP4)
            q->global_scale =
                nvfp4_global > 0 ? nvfp4_global : as_nvfp4_global_scale(as_absmax(w, nk));
        fp4_rows(w, N, K, kind == AS_WQ_NVFP4, q->global_scale, q->codes, q->scale8);
        return 0;
    }
    case AS_WQ_INT4_GROUP: {
        int g = block > 0 ? block : 128;
        q->block_n = 1, q->block_k = g, q->sn = N, q->sk = (K + g - 1) / g;
        q->scale = as_xmalloc(sizeof(float) * q->sn * q->sk);
        q->codes_bytes = nk;
        q->codes = as_xmalloc(nk);
        for (int n = 0; n < N; n++)
            for (int j = 0; j < q->sk; j++) {
                int k0 = j * g, len = k0 + g <= K ? g : K - k0;
                const float *r = w + (size_t)n * K + k0;
                /* REFERENCE "Integer quantizer", symmetric: xmax = absmax (±1 if 0),
                 * scale = 2 xmax / 15, zero 8 */
                float xmax = as_absmax(r, (size_t)len);
                if (xmax == 0) xmax = 1;
                float s = q->scale[n * q->sk + j] = 2 * xmax / 15.0f;
                for (int i = 0; i < len; i++) {
                    float v = rintf(r[i] / s) + 8.0f;
                    q->codes[(size_t)n * K + k0 + i] = (uint8_t)(v < 0 ? 0 : v > 15 ? 15 : v);
                }
            }
        return 0;
    }
    default:
        return as_fail("tensor %s: unknown weight scheme %d", name, (int)kind);
    }
}

void as_fpq_dequant(const struct as_fpq_weight *q, float *w_hat) {
    const float *t = e4m3_table();
    int N = q->N, K = q->K;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            size_t i = (size_t)n * K + k;
            int si = (n / q->block_n) * q->sk + k / q->block_k;
            float v;
            switch (q->kind) {
            case AS_WQ_FP8_TENSOR:
            case AS_WQ_FP8_CHANNEL:
            case AS_WQ_FP8_BLOCK:
                v = t[q->codes[i]] * q->scale[si];
                break;
            case AS_WQ_INT8_CHANNEL:
                v = (float)(int8_t)q->codes[i] * q->scale[si];
                break;
            case AS_WQ_INT4_GROUP:
                v = q->scale[si] * (float)((int)q->codes[i] - 8);
                break;
            case AS_WQ_NVFP4:
            case AS_WQ_MXFP4: {
                uint8_t c = (q->codes[i / 2] >> (4 * (i & 1))) & 15;
                float s = q->kind == AS_WQ_NVFP4 ? t[q->scale8[si]] / q->global_scale
                                                 : as_e8m0_to_f32(q->scale8[si]);
                v = fp4_vals[c] * s;
                break;
            }
            default:
                v = 0;
            }
            w_hat[i] = v;
        }
}

void as_fpq_free(struct as_fpq_weight *q) {
    if (!q) return;
    free(q->codes), free(q->scale), free(q->scale8);
    memset(q, 0, sizeof *q);
}

/* ---- activations ---- */

const char *const as_aq_names[AS_AQ_COUNT] = {
    "none",         "fp8-static",  "fp8-dynamic",  "fp8-tensor-dynamic",
    "fp8-group128", "int8-static", "int8-dynamic", "nvfp4",
    "mxfp4"};

int as_aq_from_name(const char *name) {
    for (int i = 0; i < AS_AQ_COUNT; i++)
        if (!strcmp(name, as_aq_names[i])) return i;
    return -1;
}

static void int8_qdq(const float *x, float *y, size_t n, float s) {
    for (size_t i = 0; i < n; i++)
        y[i] = (float)int8_round(x[i] / s) * s;
}

/* FP4 fake quant of one block with effective scale s. */
static void fp4_qdq(const float *x, float *y, int n, float s) {
    for (int i = 0; i < n; i++)
        y[i] = s > 0 ? fp4_vals[e2m1(x[i] / s)] * s : 0.0f;
}

void as_act_fake_quant(enum as_aq_kind kind, float scale, const float *x, float *y, int T,
                       int dim) {
    size_t n = (size_t)T * dim;
    switch (kind) {
    case AS_AQ_FP8_STATIC:
        as_fp8_qdq(x, n, scale, y);
        return;
    case AS_AQ_FP8_TENSOR_DYN:
        as_fp8_qdq(x, n, as_scale_for(as_absmax(x, n), AS_FP8_MAX), y);
        return;
    case AS_AQ_INT8_STATIC:
        int8_qdq(x, y, n, scale);
        return;
    case AS_AQ_FP8_TOKEN:
    case AS_AQ_INT8_TOKEN:
        for (int t = 0; t < T; t++) {
            const float *r = x + (size_t)t * dim;
            float *o = y + (size_t)t * dim;
            float amax = as_absmax(r, (size_t)dim);
            if (kind == AS_AQ_FP8_TOKEN)
                as_fp8_qdq(r, (size_t)dim, as_scale_for(amax, AS_FP8_MAX), o);
            else
                int8_qdq(r, o, (size_t)dim, as_scale_for(amax, 127.0f));
        }
        return;
    case AS_AQ_FP8_GROUP128:
        for (int t = 0; t < T; t++)
            for (int k0 = 0; k0 < dim; k0 += 128) {
                size_t len = (size_t)(k0 + 128 <= dim ? 128 : dim - k0), off = (size_t)t * dim + k0;
                as_fp8_qdq(x + off, len, as_scale_for(as_absmax(x + off, len), AS_FP8_MAX),
                           y + off);
            }
        return;
    case AS_AQ_NVFP4:
    case AS_AQ_MXFP4: {
        int g = kind == AS_AQ_NVFP4 ? 16 : 32;
        for (int t = 0; t < T; t++)
            for (int k0 = 0; k0 < dim; k0 += g) {
                int len = k0 + g <= dim ? g : dim - k0;
                const float *r = x + (size_t)t * dim + k0;
                float amax = as_absmax(r, (size_t)len), s;
                if (kind == AS_AQ_NVFP4)
                    nvfp4_block_scale(scale, amax, &s);
                else
                    s = as_e8m0_to_f32(as_mx_scale_e8m0(amax));
                fp4_qdq(r, y + (size_t)t * dim + k0, len, s);
            }
        return;
    }
    default:
        if (y != x) memcpy(y, x, n * sizeof(float));
        return;
    }
}

struct as_act_quant *as_act_quant_new(int n_layers) {
    struct as_act_quant *aq = as_xcalloc(1, sizeof *aq);
    aq->n_layers = n_layers;
    aq->kind = as_xcalloc((size_t)n_layers * AS_GROUP_COUNT, sizeof *aq->kind);
    aq->scale = as_xcalloc((size_t)n_layers * AS_GROUP_COUNT, sizeof *aq->scale);
    return aq;
}

void as_act_quant_free(struct as_act_quant *aq) {
    if (!aq) return;
    free(aq->kind), free(aq->scale), free(aq->buf);
    free(aq);
}

void as_act_quant_set_all(struct as_act_quant *aq, enum as_aq_kind kind) {
    for (int i = 0; i < aq->n_layers * AS_GROUP_COUNT; i++)
        aq->kind[i] = kind, aq->scale[i] = 0;
}

int as_act_quant_active(const struct as_act_quant *aq) {
    for (int i = 0; aq && i < aq->n_layers * AS_GROUP_COUNT; i++)
        if (aq->kind[i] != AS_AQ_NONE) return 1;
    return 0;
}

const float *as_act_quant_apply(void *ctx, int layer, enum as_linear_group g, const float *x, int T,
                                int dim) {
    struct as_act_quant *aq = ctx;
    if (layer < 0 || layer >= aq->n_layers) return x;
    int i = layer * AS_GROUP_COUNT + (int)g;
    if (aq->kind[i] == AS_AQ_NONE) return x;
    size_t n = (size_t)T * dim;
    if (n > aq->cap) {
        free(aq->buf);
        aq->buf = as_xmalloc(n * sizeof(float));
        aq->cap = n;
    }
    as_act_fake_quant(aq->kind[i], aq->scale[i], x, aq->buf, T, dim);
    return aq->buf;
}

int as_act_quant_attach(struct as_act_quant *aq, struct as_run_state *s) {
    int on = as_act_quant_active(aq);
    s->quant_linear_input = on ? as_act_quant_apply : NULL;
    s->qctx = on ? aq : NULL;
    return on;
}

/* ---- FP8 KV cache ---- */

struct as_kv_quant *as_kv_quant_new(int n_layers) {
    struct as_kv_quant *kq = as_xcalloc(1, sizeof *kq);
    kq->n_layers = n_layers;
    kq->k_scale = as_xcalloc((size_t)n_layers, sizeof(float));
    kq->v_scale = as_xcalloc((size_t)n_layers, sizeof(float));
    return kq;
}

void as_kv_quant_free(struct as_kv_quant *kq) {
    if (!kq) return;
    free(kq->k_scale), free(kq->v_scale);
    free(kq);
}

int as_kv_scale_check(float s, const char *what) {
    if (!(s > 0) || isinf(s))
        return as_fail("%s: scale %g is not a positive finite number", what, (double)s);
    return 0;
}

void as_kv_quant_apply(void *ctx, int layer, float *k, float *v, int T, int kv_dim) {
    struct as_kv_quant *kq = ctx;
    if (layer < 0 || layer >= kq->n_layers) return;
    size_t n = (size_t)T * kv_dim;
    as_fp8_qdq(k, n, kq->k_scale[layer], k);
    as_fp8_qdq(v, n, kq->v_scale[layer], v);
}

int as_kv_quant_attach(struct as_kv_quant *kq, struct as_run_state *s) {
    s->on_kv = kq ? as_kv_quant_apply : NULL;
    s->kvctx = kq;
    return kq != NULL;
}
