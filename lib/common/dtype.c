/* dtype: traits table and exact codecs between f32 and the safetensors element types.
 *
 * Every codec exists twice: a scalar reference (as_f32_to_*) written for clarity, and an array
 * kernel (as_convert_*) written to vectorise. Both follow REFERENCE.md and docs/dtypes.md:
 * round to nearest, ties to even; NaN stays a quiet NaN with its sign and top payload bits.
 * f16 arrays use F16C when the CPU has it (checked once at run time); tables for the 8-bit
 * decoders are built once under pthread_once. Tests compare scalar and array paths on all codes. */
#include "dtype.h"

/* The array loops are written branch-free so GCC vectorises them; -O2 alone uses the "very
 * cheap" cost model, which refuses loops of unknown trip count. Applied file-wide so that the
 * inline scalar codecs still inline into the loops (GCC does not inline across option sets). */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")

#include "as_error.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AS_HAVE_X86 1
#endif

_Static_assert(sizeof(float) == 4, "f32 must be 4 bytes");
_Static_assert(sizeof(double) == 8, "f64 must be 8 bytes");
_Static_assert(AS_DTYPE_COUNT == 18, "update as_dtype_traits when adding a dtype");

const struct as_dtype_traits as_dtype_traits[AS_DTYPE_COUNT] = {
    [AS_DTYPE_INVALID] = {"INVALID", 0, 0},
    [AS_F32] = {"F32", 32, 1},
    [AS_F16] = {"F16", 16, 1},
    [AS_BF16] = {"BF16", 16, 1},
    [AS_F64] = {"F64", 64, 1},
    [AS_I8] = {"I8", 8, 0},
    [AS_U8] = {"U8", 8, 0},
    [AS_I16] = {"I16", 16, 0},
    [AS_U16] = {"U16", 16, 0},
    [AS_I32] = {"I32", 32, 0},
    [AS_U32] = {"U32", 32, 0},
    [AS_I64] = {"I64", 64, 0},
    [AS_U64] = {"U64", 64, 0},
    [AS_BOOL] = {"BOOL", 8, 0},
    [AS_F8_E4M3] = {"F8_E4M3", 8, 1},
    [AS_F8_E5M2] = {"F8_E5M2", 8, 1},
    [AS_F8_E8M0] = {"F8_E8M0", 8, 1},
    [AS_F4] = {"F4", 4, 1},
};

enum as_dtype as_dtype_from_name(const char *name) {
    if (!name) return AS_DTYPE_INVALID;
    for (int t = 1; t < AS_DTYPE_COUNT; t++)
        if (strcmp(name, as_dtype_traits[t].name) == 0) return (enum as_dtype)t;
    return AS_DTYPE_INVALID;
}

const char *as_dtype_name(enum as_dtype t) {
    if ((int)t <= 0 || (int)t >= AS_DTYPE_COUNT) return "INVALID";
    return as_dtype_traits[t].name;
}

uint64_t as_dtype_nbytes(enum as_dtype t, uint64_t numel, int *overflow) {
    if (overflow) *overflow = 0;
    if ((int)t <= 0 || (int)t >= AS_DTYPE_COUNT) return 0;
    uint64_t bits = (uint64_t)as_dtype_traits[t].bits;
    if (numel > (UINT64_MAX - 7) / bits) {
        if (overflow) *overflow = 1;
        return 0;
    }
    return (numel * bits + 7) / 8;
}

/* ---- bit helpers ---- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* c ? a : b without a branch (GCC does not if-convert the nested ternaries of the encoders,
 * which blocks vectorisation). */
static inline uint32_t sel(int c, uint32_t a, uint32_t b) {
    uint32_t m = 0u - (uint32_t)(c != 0);
    return (a & m) | (b & ~m);
}

/* ---- f16 (IEEE binary16: bias 15, 10 mantissa bits, max 65504) ---- */

float as_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) /* inf, or NaN made quiet (what F16C's vcvtph2ps does too) */
        return f32_from_bits(sign | 0x7F800000 | (mant << 13) | (mant ? 0x00400000 : 0));
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in f32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Branch-free f32 -> f16, round to nearest even (after F. Giesen's float_to_half_fast3_rtne). */
static inline uint16_t f32_to_f16_inline(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    x &= 0x7FFFFFFF;
    uint32_t nan = 0x7E00 | ((x >> 13) & 0x3FF); /* quiet bit set, top payload kept */
    /* >= 65520 is past the midpoint between 65504 (odd mantissa) and 2^16: rounds to inf. */
    uint32_t inf = 0x7C00;
    /* Below 2^-14 the result is subnormal: adding 0.5 puts the f16 subnormal step (2^-24) at the
     * f32 ulp of 0.5, so the FPU's own round-to-nearest-even does the rounding. */
    uint32_t sub = f32_bits(f32_from_bits(x) + 0.5f) - 0x3F000000u;
    uint32_t odd = (x >> 13) & 1;
    uint32_t norm = (x + ((uint32_t)(15 - 127) << 23) + 0xFFF + odd) >> 13;
    uint32_t r =
        sel(x > 0x7F800000, nan, sel(x >= 0x477FF000, inf, sel(x < 0x38800000, sub, norm)));
    return (uint16_t)(sign | r);
}

uint16_t as_f32_to_f16(float f) {
    return f32_to_f16_inline(f);
}

/* ---- bf16: top 16 bits of f32 ---- */

float as_bf16_to_f32(uint16_t h) {
    return f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t f32_to_bf16_inline(float f) {
    uint32_t x = f32_bits(f);
    uint32_t rne = (x + 0x7FFF + ((x >> 16) & 1)) >> 16; /* overflow carries into inf: correct */
    uint32_t nan = (x >> 16) | 0x0040;                   /* keep sign and payload, force quiet */
    return (uint16_t)sel((x & 0x7FFFFFFF) > 0x7F800000, nan, rne);
}

uint16_t as_f32_to_bf16(float f) {
    return f32_to_bf16_inline(f);
}

/* ---- FP8 E4M3FN: bias 7, 3 mantissa bits, max 448 = 0x7E, 0x7F/0xFF NaN, no inf ---- */

float as_fp8_e4m3_to_f32(uint8_t c) {
    uint32_t exp = (c >> 3) & 0xF, mant = c & 7;
    float v;
    if (exp == 0xF && mant == 7) return (c & 0x80) ? -NAN : NAN;
    if (exp == 0)
        v = (float)mant * 0x1p-9f; /* subnormal: m * 2^-9 */
    else
        v = f32_from_bits(((exp + 120) << 23) | (mant << 20));
    return (c & 0x80) ? -v : v;
}

static inline uint8_t f32_to_e4m3_inline(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 24) & 0x80, ax = x & 0x7FFFFFFF;
    /* Saturate first (REFERENCE.md): every finite value and inf beyond 448 (0x43E00000) becomes
     * 448, so the band (448, 480) that a cast would round to 448 and everything beyond agree. */
    uint32_t ab = sel(ax > 0x43E00000, 0x43E00000, ax);
    /* Below 2^-6 (min normal) the code is the subnormal count m: adding 2^14 puts the step 2^-9
     * at the f32 ulp, so the FPU rounds to nearest even; 8 lands on min normal (code 0x08). */
    uint32_t sub = f32_bits(f32_from_bits(ab) + 16384.0f) - 0x46800000u;
    uint32_t odd = (ab >> 20) & 1;
    uint32_t norm = (ab + ((uint32_t)(7 - 127) << 23) + 0x7FFFF + odd) >> 20;
    uint32_t r = sel(ax > 0x7F800000, 0x7F, sel(ab < 0x3C800000, sub, norm));
    return (uint8_t)(sign | r);
}

uint8_t as_f32_to_fp8_e4m3(float f) {
    return f32_to_e4m3_inline(f);
}

/* ---- FP8 E5M2: bias 15, 2 mantissa bits, max 57344 = 0x7B, 0x7C inf, 0x7D-0x7F NaN ---- */

float as_fp8_e5m2_to_f32(uint8_t c) {
    /* E5M2 is the top byte of an f16. */
    return as_f16_to_f32((uint16_t)(c << 8));
}

static inline uint8_t f32_to_e5m2_inline(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 24) & 0x80, ax = x & 0x7FFFFFFF;
    /* Subnormals (below 2^-14) step by 2^-16: adding 2^7 puts that step at the f32 ulp. */
    uint32_t sub = f32_bits(f32_from_bits(ax) + 128.0f) - 0x43000000u;
    uint32_t odd = (ax >> 21) & 1;
    uint32_t norm = (ax + ((uint32_t)(15 - 127) << 23) + 0xFFFFF + odd) >> 21;
    /* From 61440 (midpoint of 57344 and 2^16, ties to the even "2^16") the rounding carries into
     * exponent 31 mantissa 0 = 0x7C = inf, as a cast does. Clamp larger finite values and inf. */
    uint32_t r =
        sel(ax > 0x7F800000, 0x7F, sel(ax >= 0x47800000, 0x7C, sel(ax < 0x38800000, sub, norm)));
    return (uint8_t)(sign | r);
}

uint8_t as_f32_to_fp8_e5m2(float f) {
    return f32_to_e5m2_inline(f);
}

/* ---- FP4 E2M1: code = sign<<3 | index into {0, 0.5, 1, 1.5, 2, 3, 4, 6} ---- */

static const float fp4_values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float as_fp4_e2m1_to_f32(uint8_t code) {
    float v = fp4_values[code & 7];
    return (code & 8) ? -v : v;
}

static inline uint8_t f32_to_fp4_inline(float f) {
    uint32_t x = f32_bits(f);
    float a = f32_from_bits(x & 0x7FFFFFFF);
    /* Count the midpoints below |f|. Ties go to the even code (mantissa bit 0), so a midpoint
     * whose upper neighbour has an odd index is excluded (>), one with an even index included
     * (>=). Beyond 5 everything saturates to 6; NaN compares false everywhere and gives 0. */
    uint8_t idx = (uint8_t)((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                            (a >= 3.5f) + (a > 5.0f));
    uint8_t sign = (uint8_t)((x >> 28) & 8);
    return (uint8_t)((a != a ? 0 : sign) | idx);
}

uint8_t as_f32_to_fp4_e2m1(float f) {
    return f32_to_fp4_inline(f);
}

/* ---- E8M0: 2^(e-127), no sign, no mantissa, 0xFF NaN ---- */

float as_e8m0_to_f32(uint8_t c) {
    if (c == 0xFF) return NAN;
    if (c == 0) return 0x1p-127f; /* f32 subnormal, exact */
    return f32_from_bits((uint32_t)c << 23);
}

/* Encoding rule (docs/dtypes.md): the sign is ignored; an exact power of two 2^e encodes as
 * e + 127; anything else rounds UP to the next power of two, so a scale encoded this way never
 * shrinks (elements divided by it cannot overflow). Choosing the OCP MX shared exponent
 * floor(log2(amax)) - emax(element) is the caller's job; it then passes an exact power of two.
 * Clamps: below 2^-127 (including 0) -> 0x00; above 2^127 -> 0xFE; NaN and inf -> 0xFF. */
uint8_t as_f32_to_e8m0(float f) {
    uint32_t x = f32_bits(f) & 0x7FFFFFFF;
    if (x >= 0x7F800000) return 0xFF;
    if (x <= 0x00400000) return 0; /* <= 2^-127 */
    int e;
    float m = frexpf(f32_from_bits(x), &e); /* |f| = m * 2^e, m in [0.5, 1) */
    int code = (m == 0.5f ? e - 1 : e) + 127;
    return (uint8_t)(code < 0 ? 0 : code > 254 ? 254 : code);
}

/* ---- array kernels ---- */

static float e4m3_table[256], e5m2_table[256], e8m0_table[256];
static int have_f16c;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void tables_init(void) {
    for (int c = 0; c < 256; c++) {
        e4m3_table[c] = as_fp8_e4m3_to_f32((uint8_t)c);
        e5m2_table[c] = as_fp8_e5m2_to_f32((uint8_t)c);
        e8m0_table[c] = as_e8m0_to_f32((uint8_t)c);
    }
#ifdef AS_HAVE_X86
    __builtin_cpu_init();
    have_f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
}

/* Loads through memcpy: tensors in a safetensors mapping need not be aligned to their size. */
static inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline void store_u16(uint8_t *p, uint16_t v) {
    memcpy(p, &v, 2);
}

#ifdef AS_HAVE_X86
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint8_t *s, float *d,
                                                                size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
    for (; i < n; i++)
        d[i] = as_f16_to_f32(load_u16(s + 2 * i));
}

__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float *s, uint8_t *d,
                                                                size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        store_u16(d + 2 * i, f32_to_f16_inline(s[i]));
}
#endif

static void bf16_to_f32_loop(const uint8_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = f32_from_bits((uint32_t)load_u16(s + 2 * i) << 16);
}

static void f32_to_bf16_loop(const float *s, uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        store_u16(d + 2 * i, f32_to_bf16_inline(s[i]));
}

static void f16_to_f32_loop(const uint8_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = as_f16_to_f32(load_u16(s + 2 * i));
}

static void f32_to_f16_loop(const float *s, uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        store_u16(d + 2 * i, f32_to_f16_inline(s[i]));
}

static void f32_to_e4m3_loop(const float *s, uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_e4m3_inline(s[i]);
}

static void f32_to_e5m2_loop(const float *s, uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_e5m2_inline(s[i]);
}

static void table_loop(const float *table, const uint8_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = table[s[i]];
}

#define CONVERT_LOOP(T, EXPR)                                                                      \
    do {                                                                                           \
        for (size_t i = 0; i < n; i++) {                                                           \
            T v;                                                                                   \
            memcpy(&v, s + i * sizeof(T), sizeof(T));                                              \
            dst[i] = (EXPR);                                                                       \
        }                                                                                          \
    } while (0)

int as_convert_to_f32(enum as_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    pthread_once(&tables_once, tables_init);
    switch (t) {
    case AS_F32:
        memmove(dst, src, n * sizeof(float));
        return 0;
    case AS_BF16:
        bf16_to_f32_loop(s, dst, n);
        return 0;
    case AS_F16:
#ifdef AS_HAVE_X86
        if (have_f16c) {
            f16_to_f32_f16c(s, dst, n);
            return 0;
        }
#endif
        f16_to_f32_loop(s, dst, n);
        return 0;
    case AS_F64:
        CONVERT_LOOP(double, (float)v);
        return 0;
    case AS_F8_E4M3:
        table_loop(e4m3_table, s, dst, n);
        return 0;
    case AS_F8_E5M2:
        table_loop(e5m2_table, s, dst, n);
        return 0;
    case AS_F8_E8M0:
        table_loop(e8m0_table, s, dst, n);
        return 0;
    case AS_F4:
        for (size_t i = 0; i < n; i++)
            dst[i] = as_fp4_e2m1_to_f32((s[i / 2] >> (4 * (i & 1))) & 15);
        return 0;
    case AS_I8:
        CONVERT_LOOP(int8_t, (float)v);
        return 0;
    case AS_U8:
        CONVERT_LOOP(uint8_t, (float)v);
        return 0;
    case AS_BOOL:
        CONVERT_LOOP(uint8_t, v ? 1.0f : 0.0f);
        return 0;
    case AS_I16:
        CONVERT_LOOP(int16_t, (float)v);
        return 0;
    case AS_U16:
        CONVERT_LOOP(uint16_t, (float)v);
        return 0;
    case AS_I32:
        CONVERT_LOOP(int32_t, (float)v);
        return 0;
    case AS_U32:
        CONVERT_LOOP(uint32_t, (float)v);
        return 0;
    case AS_I64:
        CONVERT_LOOP(int64_t, (float)v);
        return 0;
    case AS_U64:
        CONVERT_LOOP(uint64_t, (float)v);
        return 0;
    default:
        return as_fail("dtype %s: cannot convert to F32", as_dtype_name(t));
    }
}

int as_convert_from_f32(enum as_dtype t, const float *src, void *dst, size_t n) {
    uint8_t *d = dst;
    pthread_once(&tables_once, tables_init);
    switch (t) {
    case AS_F32:
        memmove(dst, src, n * sizeof(float));
        return 0;
    case AS_BF16:
        f32_to_bf16_loop(src, d, n);
        return 0;
    case AS_F16:
#ifdef AS_HAVE_X86
        if (have_f16c) {
            f32_to_f16_f16c(src, d, n);
            return 0;
        }
#endif
        f32_to_f16_loop(src, d, n);
        return 0;
    case AS_F64:
        for (size_t i = 0; i < n; i++) {
            double v = src[i];
            memcpy(d + 8 * i, &v, 8);
        }
        return 0;
    case AS_F8_E4M3:
        f32_to_e4m3_loop(src, d, n);
        return 0;
    case AS_F8_E5M2:
        f32_to_e5m2_loop(src, d, n);
        return 0;
    case AS_F8_E8M0:
        for (size_t i = 0; i < n; i++)
            d[i] = as_f32_to_e8m0(src[i]);
        return 0;
    case AS_F4:
        /* Element 2i in the low nibble; an odd count leaves the last high nibble zero. */
        for (size_t i = 0; i + 1 < n; i += 2)
            d[i / 2] = (uint8_t)(f32_to_fp4_inline(src[i]) | f32_to_fp4_inline(src[i + 1]) << 4);
        if (n & 1) d[n / 2] = f32_to_fp4_inline(src[n - 1]);
        return 0;
    default:
        return as_fail("dtype %s: cannot convert from F32", as_dtype_name(t));
    }
}
