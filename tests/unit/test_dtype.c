/* test_dtype: the codecs against independent references.
 *
 * Decoders are checked code by code against values computed from the bit layout with ldexp in
 * double precision. Encoders are checked against a reference that binary-searches the sorted
 * representable values and breaks ties towards the even code (the code's last bit is the
 * mantissa's last bit in every format here), at every midpoint, just above and below it, and on
 * random bit patterns. Array kernels must agree bit for bit with the scalar functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

/* ---- a generic description of an IEEE-like minifloat, for the references ---- */

struct fmt {
    const char *name;
    int ebits, mbits, bias;
    int ieee_special; /* all-ones exponent is inf/NaN (f16, bf16, e5m2) */
    int e4m3fn;       /* only S.1111.111 is NaN, no inf */
    uint32_t (*enc)(float);
    float (*dec)(uint32_t);
    enum as_dtype dtype;
};

/* Value of code c from its bit layout: (-1)^s * 2^(e-bias) * (1 + m/2^M), subnormal when e == 0. */
static double ref_decode(const struct fmt *F, uint32_t c) {
    int nbits = 1 + F->ebits + F->mbits;
    int s = (c >> (nbits - 1)) & 1;
    int e = (c >> F->mbits) & ((1 << F->ebits) - 1);
    int m = c & ((1 << F->mbits) - 1);
    int emax = (1 << F->ebits) - 1;
    double v;
    if (F->ieee_special && e == emax)
        v = m ? NAN : INFINITY;
    else if (F->e4m3fn && e == emax && m == (1 << F->mbits) - 1)
        v = NAN;
    else if (e == 0)
        v = ldexp((double)m, 1 - F->bias - F->mbits);
    else
        v = ldexp(1.0 + ldexp((double)m, -F->mbits), e - F->bias);
    return s ? -v : v;
}

static uint32_t max_finite_code(const struct fmt *F) {
    uint32_t top = (1u << (F->ebits + F->mbits)) - 1;   /* all ones, positive */
    if (F->ieee_special) return top - (1u << F->mbits); /* exponent emax-1, mantissa all ones */
    return top - 1;                                     /* e4m3fn: 0x7E */
}

/* Reference rounding of a finite double to the nearest code (positive side), ties to even.
 * Overflow: ieee formats round to inf beyond the virtual next power 2^(emax-bias+1) midpoint;
 * e4m3fn saturates to the max finite value (the project's documented clamp). */
static uint32_t ref_encode_pos(const struct fmt *F, double d) {
    uint32_t maxc = max_finite_code(F);
    double maxv = ref_decode(F, maxc);
    if (d >= maxv) {
        if (F->e4m3fn) return maxc;
        double next = ldexp(1.0, (1 << F->ebits) - 1 - F->bias); /* where inf would sit */
        double mid = (maxv + next) / 2;
        return d >= mid ? maxc + 1 : maxc; /* maxc is odd, inf code even: ties go to inf */
    }
    uint32_t lo = 0, hi = maxc; /* largest code with value <= d */
    while (lo < hi) {
        uint32_t mid = (lo + hi + 1) / 2;
        if (ref_decode(F, mid) <= d)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (ref_decode(F, lo) == d) return lo;
    double a = d - ref_decode(F, lo), b = ref_decode(F, lo + 1) - d;
    if (a < b) return lo;
    if (b < a) return lo + 1;
    return (lo & 1) ? lo + 1 : lo;
}

static uint32_t ref_encode(const struct fmt *F, float f) {
    int nbits = 1 + F->ebits + F->mbits;
    uint32_t sign = (bits_of(f) >> 31) << (nbits - 1);
    double d = fabs((double)f);
    return sign | ref_encode_pos(F, d);
}

static uint32_t enc_f16(float f) {
    return as_f32_to_f16(f);
}
static float dec_f16(uint32_t c) {
    return as_f16_to_f32((uint16_t)c);
}
static uint32_t enc_bf16(float f) {
    return as_f32_to_bf16(f);
}
static float dec_bf16(uint32_t c) {
    return as_bf16_to_f32((uint16_t)c);
}
static uint32_t enc_e4m3(float f) {
    return as_f32_to_fp8_e4m3(f);
}
static float dec_e4m3(uint32_t c) {
    return as_fp8_e4m3_to_f32((uint8_t)c);
}
static uint32_t enc_e5m2(float f) {
    return as_f32_to_fp8_e5m2(f);
}
static float dec_e5m2(uint32_t c) {
    return as_fp8_e5m2_to_f32((uint8_t)c);
}

static const struct fmt F16 = {"f16", 5, 10, 15, 1, 0, enc_f16, dec_f16, AS_F16};
static const struct fmt BF16 = {"bf16", 8, 7, 127, 1, 0, enc_bf16, dec_bf16, AS_BF16};
static const struct fmt E4M3 = {"e4m3", 4, 3, 7, 0, 1, enc_e4m3, dec_e4m3, AS_F8_E4M3};
static const struct fmt E5M2 = {"e5m2", 5, 2, 15, 1, 0, enc_e5m2, dec_e5m2, AS_F8_E5M2};

static int fmt_is_nan(const struct fmt *F, uint32_t c) {
    return isnan(ref_decode(F, c));
}

/* Every code decodes to the value of its bit layout, and re-encodes to itself (NaN to NaN of the
 * same sign). */
static void check_all_codes(const struct fmt *F) {
    uint32_t ncodes = 1u << (1 + F->ebits + F->mbits);
    for (uint32_t c = 0; c < ncodes; c++) {
        double want = ref_decode(F, c);
        float got = F->dec(c);
        if (isnan(want)) {
            if (!isnan(got)) fail_msg("%s code 0x%x: want NaN, got %g", F->name, c, got);
            uint32_t back = F->enc(got);
            if (!fmt_is_nan(F, back))
                fail_msg("%s NaN code 0x%x re-encodes to 0x%x", F->name, c, back);
            if ((back ^ c) >> (F->ebits + F->mbits))
                fail_msg("%s NaN 0x%x lost its sign", F->name, c);
            continue;
        }
        if ((double)got != want || !signbit(got) != !signbit(want))
            fail_msg("%s code 0x%x: want %.17g, got %.17g", F->name, c, want, (double)got);
        uint32_t back = F->enc(got);
        if (back != c) fail_msg("%s code 0x%x: round trip gives 0x%x", F->name, c, back);
    }
}

/* Midpoints between adjacent positive codes round to the even code; one ulp (of f32) above goes
 * up, one below goes down. Both signs. Includes the overflow midpoint where the format has inf. */
static void check_midpoints(const struct fmt *F) {
    uint32_t maxc = max_finite_code(F);
    uint32_t signbit_c = 1u << (F->ebits + F->mbits);
    uint32_t last = F->ieee_special ? maxc + 1 : maxc;
    for (uint32_t c = 0; c < last; c++) {
        double lo = ref_decode(F, c);
        double hi =
            c + 1 <= maxc ? ref_decode(F, c + 1) : ldexp(1.0, (1 << F->ebits) - 1 - F->bias);
        double midd = (lo + hi) / 2;
        float mid = (float)midd;
        assert_true((double)mid == midd); /* every midpoint here is exact in f32 */
        uint32_t even = (c & 1) ? c + 1 : c;
        uint32_t got = F->enc(mid);
        if (got != even)
            fail_msg("%s midpoint %.17g of 0x%x/0x%x: got 0x%x", F->name, midd, c, c + 1, got);
        got = F->enc(-mid);
        if (got != (even | signbit_c)) fail_msg("%s midpoint -%.17g: got 0x%x", F->name, midd, got);
        got = F->enc(nextafterf(mid, INFINITY));
        if (got != c + 1)
            fail_msg("%s just above %.17g: got 0x%x want 0x%x", F->name, midd, got, c + 1);
        got = F->enc(nextafterf(mid, 0));
        if (got != c) fail_msg("%s just below %.17g: got 0x%x want 0x%x", F->name, midd, got, c);
    }
}

/* Random f32 bit patterns (all exponents, NaN, inf, subnormals) against the reference encoder. */
static void check_random(const struct fmt *F, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t u = rng();
        if (i & 1) { /* concentrate half the samples in the format's own exponent range */
            int lo = 127 - F->bias - F->mbits - 2, span = (1 << F->ebits) + F->mbits + 4;
            int e = (lo < 1 ? 1 : lo) + (int)(rng() % (uint32_t)span);
            u = (u & 0x807FFFFF) | ((uint32_t)(e > 254 ? 254 : e) << 23);
        }
        float f = float_of(u);
        uint32_t got = F->enc(f);
        if (isnan(f)) {
            if (!fmt_is_nan(F, got))
                fail_msg("%s: NaN 0x%08x encodes to non-NaN 0x%x", F->name, u, got);
            continue;
        }
        uint32_t want = ref_encode(F, f);
        if (got != want)
            fail_msg("%s: %.9g (0x%08x) -> 0x%x, want 0x%x", F->name, (double)f, u, got, want);
    }
}

/* The array kernels agree bit for bit with the scalar functions: decoding every code, encoding
 * every decoded value, the midpoints and random patterns. Source offset by one byte so the
 * kernels' unaligned loads are exercised. */
static void check_arrays(const struct fmt *F) {
    int bytes = (1 + F->ebits + F->mbits) / 8;
    uint32_t ncodes = 1u << (1 + F->ebits + F->mbits);
    size_t n = ncodes + 4096;
    uint8_t *codes = malloc(n * bytes + 1);
    float *dec = malloc(n * sizeof(float));
    float *src = malloc(n * sizeof(float));
    uint8_t *enc = malloc(n * bytes);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = i < ncodes ? (uint32_t)i : rng() & (ncodes - 1);
        memcpy(codes + 1 + i * bytes, &c, bytes); /* little endian */
    }
    assert_int_equal(as_convert_to_f32(F->dtype, codes + 1, dec, n), 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = 0;
        memcpy(&c, codes + 1 + i * bytes, bytes);
        float s = F->dec(c);
        if (bits_of(s) != bits_of(dec[i]))
            fail_msg("%s decode 0x%x: scalar 0x%08x array 0x%08x", F->name, c, bits_of(s),
                     bits_of(dec[i]));
        src[i] = i < ncodes ? s : float_of(rng());
        if (i >= ncodes && (i & 3) == 0)
            src[i] = (F->dec(c) + F->dec(c + 1 < ncodes ? c + 1 : c)) / 2;
    }
    src[0] = INFINITY, src[1] = -INFINITY, src[2] = NAN, src[3] = -NAN, src[4] = 1e30f;
    assert_int_equal(as_convert_from_f32(F->dtype, src, enc, n), 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = 0;
        memcpy(&c, enc + i * bytes, bytes);
        if (c != F->enc(src[i]))
            fail_msg("%s encode %.9g (0x%08x): scalar 0x%x array 0x%x", F->name, (double)src[i],
                     bits_of(src[i]), F->enc(src[i]), c);
    }
    free(codes), free(dec), free(src), free(enc);
}

static void run_format(const struct fmt *F) {
    check_all_codes(F);
    check_midpoints(F);
    check_random(F, 200000);
    check_arrays(F);
}

static void test_f16(void **state) {
    (void)state;
    run_format(&F16);
    assert_true(as_f32_to_f16(65504.0f) == 0x7BFF);
    assert_true(as_f32_to_f16(65519.99f) == 0x7BFF);
    assert_true(as_f32_to_f16(65520.0f) == 0x7C00);
    assert_true(as_f32_to_f16(0x1p-25f) == 0x0000);                /* tie to even zero */
    assert_true(as_f32_to_f16(nextafterf(0x1p-25f, 1)) == 0x0001); /* min subnormal */
    assert_true(as_f16_to_f32(0x3C00) == 1.0f);
    /* NaN keeps its sign and top payload bits and becomes quiet. */
    assert_true(as_f32_to_f16(float_of(0x7F802000)) == 0x7E01);
    assert_true(as_f32_to_f16(float_of(0xFFC00000)) == 0xFE00);
    assert_true(bits_of(as_f16_to_f32(0x7C01)) == 0x7FC02000);
}

static void test_bf16(void **state) {
    (void)state;
    run_format(&BF16);
    assert_true(as_f32_to_bf16(float_of(0x3F808000)) == 0x3F80); /* tie, even below */
    assert_true(as_f32_to_bf16(float_of(0x3F818000)) == 0x3F82); /* tie, even above */
    assert_true(as_f32_to_bf16(float_of(0x7F7FFFFF)) == 0x7F80); /* FLT_MAX rounds to inf */
    assert_true(as_f32_to_bf16(float_of(0x7F800001)) == 0x7FC0); /* sNaN -> qNaN */
    assert_true(as_f32_to_bf16(float_of(0xFFA10000)) == 0xFFE1); /* sign and payload kept */
}

static void test_e4m3(void **state) {
    (void)state;
    run_format(&E4M3);
    /* Saturation: everything finite beyond 448 and inf clamps to +-448; NaN stays NaN. */
    const float big[] = {448.0f, 449.0f, 464.0f, 479.99f, 480.0f, 1e6f, 3e38f, INFINITY};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) {
        assert_int_equal(as_f32_to_fp8_e4m3(big[i]), 0x7E);
        assert_int_equal(as_f32_to_fp8_e4m3(-big[i]), 0xFE);
    }
    assert_int_equal(as_f32_to_fp8_e4m3(NAN), 0x7F);
    assert_int_equal(as_f32_to_fp8_e4m3(-NAN), 0xFF);
    assert_true(as_fp8_e4m3_to_f32(0x7E) == 448.0f);
    assert_true(as_fp8_e4m3_to_f32(0x08) == 0x1p-6f);     /* min normal */
    assert_true(as_fp8_e4m3_to_f32(0x01) == 0x1p-9f);     /* min subnormal */
    assert_int_equal(as_f32_to_fp8_e4m3(0x1p-10f), 0x00); /* half of min subnormal: tie to 0 */
    assert_int_equal(as_f32_to_fp8_e4m3(0x3p-10f), 0x02); /* 1.5 steps: tie to even 2 */
}

static void test_e5m2(void **state) {
    (void)state;
    run_format(&E5M2);
    assert_int_equal(as_f32_to_fp8_e5m2(57344.0f), 0x7B);
    assert_int_equal(as_f32_to_fp8_e5m2(61439.99f), 0x7B);
    assert_int_equal(as_f32_to_fp8_e5m2(61440.0f), 0x7C); /* overflow rounds to inf */
    assert_int_equal(as_f32_to_fp8_e5m2(1e9f), 0x7C);
    assert_int_equal(as_f32_to_fp8_e5m2(-INFINITY), 0xFC);
    assert_true(isinf(as_fp8_e5m2_to_f32(0x7C)));
    assert_true(isnan(as_fp8_e5m2_to_f32(0x7D)));
    assert_int_equal(as_f32_to_fp8_e5m2(0x1p-17f), 0x00); /* half of min subnormal 2^-16 */
}

/* FP4: nearest of the 8 magnitudes by brute force, ties to the even index, saturating at 6. */
static uint8_t ref_fp4(float f) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    double a = fabs((double)f);
    int best = 0;
    for (int i = 1; i < 8; i++) {
        double di = fabs(a - mag[i]), db = fabs(a - mag[best]);
        if (di < db || (di == db && (i & 1) == 0)) best = i;
    }
    return (uint8_t)((signbit(f) ? 8 : 0) | best);
}

static void test_fp4(void **state) {
    (void)state;
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    for (int c = 0; c < 16; c++) {
        double want = (c & 8) ? -mag[c & 7] : mag[c & 7];
        float got = as_fp4_e2m1_to_f32((uint8_t)c);
        assert_true((double)got == want && !!signbit(got) == !!(c & 8));
        assert_int_equal(as_f32_to_fp4_e2m1(got), c);
    }
    /* Midpoints and their neighbours, and a fine sweep. */
    for (int i = 0; i < 7; i++) {
        float mid = (float)((mag[i] + mag[i + 1]) / 2);
        int even = (i & 1) ? i + 1 : i;
        assert_int_equal(as_f32_to_fp4_e2m1(mid), even);
        assert_int_equal(as_f32_to_fp4_e2m1(-mid), 8 | even);
        assert_int_equal(as_f32_to_fp4_e2m1(nextafterf(mid, 100)), i + 1);
        assert_int_equal(as_f32_to_fp4_e2m1(nextafterf(mid, 0)), i);
    }
    for (int k = -1000; k <= 1000; k++) {
        float f = (float)k / 128.0f;
        if (as_f32_to_fp4_e2m1(f) != ref_fp4(f))
            fail_msg("fp4 %g: got %d want %d", (double)f, as_f32_to_fp4_e2m1(f), ref_fp4(f));
    }
    assert_int_equal(as_f32_to_fp4_e2m1(7.0f), 7);
    assert_int_equal(as_f32_to_fp4_e2m1(1e30f), 7);
    assert_int_equal(as_f32_to_fp4_e2m1(-INFINITY), 15);
    assert_int_equal(as_f32_to_fp4_e2m1(NAN), 0); /* documented: NaN -> +0 */
    /* Packing: element 2i in the low nibble; odd counts leave the top nibble zero. */
    float src[5] = {0.5f, -6.0f, 1.0f, 3.0f, -0.5f}, back[5];
    uint8_t packed[3] = {0xAA, 0xAA, 0xAA};
    assert_int_equal(as_convert_from_f32(AS_F4, src, packed, 5), 0);
    assert_int_equal(packed[0], 0xF1);
    assert_int_equal(packed[1], 0x52);
    assert_int_equal(packed[2], 0x09);
    assert_int_equal(as_convert_to_f32(AS_F4, packed, back, 5), 0);
    assert_memory_equal(src, back, sizeof src);
}

static void test_e8m0(void **state) {
    (void)state;
    for (int c = 0; c < 255; c++) {
        float v = as_e8m0_to_f32((uint8_t)c);
        assert_true((double)v == ldexp(1.0, c - 127));
        assert_int_equal(as_f32_to_e8m0(v), c);
        if (c >= 1 && c < 254) { /* non-powers round up to the next power of two */
            assert_int_equal(as_f32_to_e8m0(v * 1.5f), c + 1);
            assert_int_equal(as_f32_to_e8m0(nextafterf(v, INFINITY)), c + 1);
            assert_int_equal(as_f32_to_e8m0(nextafterf(v, 0)), c);
        }
    }
    assert_true(isnan(as_e8m0_to_f32(0xFF)));
    assert_int_equal(as_f32_to_e8m0(NAN), 0xFF);
    assert_int_equal(as_f32_to_e8m0(INFINITY), 0xFF);
    assert_int_equal(as_f32_to_e8m0(0.0f), 0x00);
    assert_int_equal(as_f32_to_e8m0(1e-45f), 0x00);
    assert_int_equal(as_f32_to_e8m0(-4.0f), 129); /* sign ignored */
    assert_int_equal(as_f32_to_e8m0(3e38f), 254); /* saturates */
    uint8_t codes[256];
    float out[256];
    for (int c = 0; c < 256; c++)
        codes[c] = (uint8_t)c;
    assert_int_equal(as_convert_to_f32(AS_F8_E8M0, codes, out, 256), 0);
    for (int c = 0; c < 256; c++)
        assert_true(bits_of(out[c]) == bits_of(as_e8m0_to_f32((uint8_t)c)));
    uint8_t enc[256];
    assert_int_equal(as_convert_from_f32(AS_F8_E8M0, out, enc, 256), 0);
    assert_memory_equal(enc, codes, 256);
}

static void test_traits_and_ints(void **state) {
    (void)state;
    for (int t = 1; t < AS_DTYPE_COUNT; t++) {
        assert_int_equal(as_dtype_from_name(as_dtype_name((enum as_dtype)t)), t);
        assert_true(as_dtype_traits[t].bits > 0);
    }
    assert_int_equal(as_dtype_from_name("F8_E4M3FN"), AS_DTYPE_INVALID);
    assert_int_equal(as_dtype_from_name("f32"), AS_DTYPE_INVALID);
    int ovf;
    assert_true(as_dtype_nbytes(AS_F4, 5, &ovf) == 3 && !ovf);
    assert_true(as_dtype_nbytes(AS_BF16, 10, &ovf) == 20 && !ovf);
    assert_true(as_dtype_nbytes(AS_F64, UINT64_MAX / 4, &ovf) == 0 && ovf);

    int8_t i8[3] = {-128, 0, 127};
    uint16_t u16[2] = {0, 65535};
    int64_t i64[2] = {-5, 1ll << 40};
    uint8_t bl[2] = {0, 3};
    double f64[2] = {0.1, -1e300};
    float out[3];
    assert_int_equal(as_convert_to_f32(AS_I8, i8, out, 3), 0);
    assert_true(out[0] == -128 && out[2] == 127);
    assert_int_equal(as_convert_to_f32(AS_U16, u16, out, 2), 0);
    assert_true(out[1] == 65535);
    assert_int_equal(as_convert_to_f32(AS_I64, i64, out, 2), 0);
    assert_true(out[0] == -5 && out[1] == 0x1p40f);
    assert_int_equal(as_convert_to_f32(AS_BOOL, bl, out, 2), 0);
    assert_true(out[0] == 0 && out[1] == 1);
    assert_int_equal(as_convert_to_f32(AS_F64, f64, out, 2), 0);
    assert_true(out[0] == 0.1f && isinf(out[1]) && out[1] < 0);
    assert_int_equal(as_convert_from_f32(AS_I32, out, i64, 1), -1);
    assert_non_null(strstr(as_last_error(), "I32"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_e4m3),
        cmocka_unit_test(test_e5m2),
        cmocka_unit_test(test_fp4),
        cmocka_unit_test(test_e8m0),
        cmocka_unit_test(test_traits_and_ints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
