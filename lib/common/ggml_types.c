/* ggml_types: the ggml type-traits table and the reference dequantizers (see ggml_types.h).
 *
 * Each routine is ggml-quants.c's dequantize_row_* for that type: the same products in the same
 * order (an integer code converted to float, times the f16 scale or the float sub-block scale
 * d * sc, minus the float min), so the result is ggml's bit for bit. The build is ISO C
 * (-std=c11), where GCC does not contract a * b + c into an FMA, which would round once instead
 * of twice. The test oracle is the gguf package's numpy dequantizer (tests/tools/ggml_oracle.py).
 */
#include "ggml_types.h"

#include <string.h>

#include "dtype.h"
#include "pack_ternary.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ggml_types.c reads little-endian blocks as they lie in memory"
#endif

/* f16 field at byte offset off of block b (blocks may sit at any address: memcpy, not a cast). */
static inline float f16_at(const uint8_t *b, size_t off) {
    uint16_t h;
    memcpy(&h, b + off, sizeof h);
    return as_f16_to_f32(h);
}

static void to_f32_f32(const void *src, float *dst, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}
static void to_f32_f16(const void *src, float *dst, size_t n) {
    as_convert_to_f32(AS_F16, src, dst, n);
}
static void to_f32_bf16(const void *src, float *dst, size_t n) {
    as_convert_to_f32(AS_BF16, src, dst, n);
}

/* ---- legacy blocks of 32: element j in the low nibble of qs[j], j + 16 in the high nibble ---- */

static void to_f32_q4_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK; i++, b += sizeof(as_block_q4_0), dst += AS_QK) {
        const float d = f16_at(b, offsetof(as_block_q4_0, d));
        const uint8_t *qs = b + offsetof(as_block_q4_0, qs);
        for (int j = 0; j < AS_QK / 2; j++) {
            dst[j] = (float)((qs[j] & 0x0F) - 8) * d;
            dst[j + AS_QK / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

static void to_f32_q4_1(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK; i++, b += sizeof(as_block_q4_1), dst += AS_QK) {
        const float d = f16_at(b, offsetof(as_block_q4_1, d));
        const float m = f16_at(b, offsetof(as_block_q4_1, m));
        const uint8_t *qs = b + offsetof(as_block_q4_1, qs);
        for (int j = 0; j < AS_QK / 2; j++) {
            dst[j] = (float)(qs[j] & 0x0F) * d + m;
            dst[j + AS_QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Q5: the fifth bit of element j is bit j of the little-endian u32 qh. */
static void to_f32_q5_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK; i++, b += sizeof(as_block_q5_0), dst += AS_QK) {
        const float d = f16_at(b, offsetof(as_block_q5_0, d));
        uint32_t qh;
        memcpy(&qh, b + offsetof(as_block_q5_0, qh), 4);
        const uint8_t *qs = b + offsetof(as_block_q5_0, qs);
        for (int j = 0; j < AS_QK / 2; j++) {
            int lo = (int)((qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - 16;
            int hi = (int)((qs[j] >> 4) | (((qh >> (j + AS_QK / 2)) & 1) << 4)) - 16;
            dst[j] = (float)lo * d;
            dst[j + AS_QK / 2] = (float)hi * d;
        }
    }
}

static void to_f32_q5_1(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK; i++, b += sizeof(as_block_q5_1), dst += AS_QK) {
        const float d = f16_at(b, offsetof(as_block_q5_1, d));
        const float m = f16_at(b, offsetof(as_block_q5_1, m));
        uint32_t qh;
        memcpy(&qh, b + offsetof(as_block_q5_1, qh), 4);
        const uint8_t *qs = b + offsetof(as_block_q5_1, qs);
        for (int j = 0; j < AS_QK / 2; j++) {
            int lo = (int)((qs[j] & 0x0F) | (((qh >> j) & 1) << 4));
            int hi = (int)((qs[j] >> 4) | (((qh >> (j + AS_QK / 2)) & 1) << 4));
            dst[j] = (float)lo * d + m;
            dst[j + AS_QK / 2] = (float)hi * d + m;
        }
    }
}

static void to_f32_q8_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK; i++, b += sizeof(as_block_q8_0), dst += AS_QK) {
        const float d = f16_at(b, offsetof(as_block_q8_0, d));
        const int8_t *qs = (const int8_t *)(b + offsetof(as_block_q8_0, qs));
        for (int j = 0; j < AS_QK; j++)
            dst[j] = (float)qs[j] * d;
    }
}

/* ---- k-quants: super-blocks of 256 --------------------------------------------------------- *
 * The codes of element e = 128 h + 32 j + l (h = 0, 1; j = 0..3; l = 0..31) of Q2_K and Q3_K
 * are bits 2j, 2j+1 of qs[32 h + l]; Q3_K's third bit is bit 4h + j of hmask[l]. Q4_K / Q5_K
 * have 8 sub-blocks of 32: sub-block s in the low (s even) or high nibble of qs[32 (s/2) + l],
 * Q5_K's fifth bit is bit s of qh[l]. Q6_K: element 128 h + 32 k + l has its low 4 bits in the
 * low (k < 2) or high nibble of ql[64 h + 32 (k & 1) + l] and its high 2 bits at bits 2k, 2k+1
 * of qh[32 h + l]. The scale of Q2_K, Q3_K and Q6_K elements is per 16: scales[e / 16]. */

static void to_f32_q2_K(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_q2_K), dst += AS_QK_K) {
        const float d = f16_at(b, offsetof(as_block_q2_K, d));
        const float min = f16_at(b, offsetof(as_block_q2_K, dmin));
        const uint8_t *sc = b + offsetof(as_block_q2_K, scales);
        const uint8_t *qs = b + offsetof(as_block_q2_K, qs);
        for (int s = 0; s < AS_QK_K / 16; s++) {
            const float dl = d * (float)(sc[s] & 0x0F), ml = min * (float)(sc[s] >> 4);
            int h = s / 8, j = (s % 8) / 2;
            for (int l = 16 * (s & 1); l < 16 * (s & 1) + 16; l++) {
                int q = (qs[32 * h + l] >> (2 * j)) & 3;
                dst[128 * h + 32 * j + l] = dl * (float)q - ml;
            }
        }
    }
}

/* Q3_K's 16 6-bit scales: low 4 bits in the nibbles of scales[0..7] (scale s < 8 low nibble of
 * byte s, s >= 8 high nibble of byte s - 8), high 2 bits at bits 2 (s / 4) of byte 8 + s % 4. */
static int q3_K_scale(const uint8_t *sc, int s) {
    int lo = s < 8 ? sc[s] & 0x0F : sc[s - 8] >> 4;
    int hi = (sc[8 + (s & 3)] >> (2 * (s >> 2))) & 3;
    return (lo | hi << 4) - 32;
}

static void to_f32_q3_K(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_q3_K), dst += AS_QK_K) {
        const float d_all = f16_at(b, offsetof(as_block_q3_K, d));
        const uint8_t *sc = b + offsetof(as_block_q3_K, scales);
        const uint8_t *hm = b + offsetof(as_block_q3_K, hmask);
        const uint8_t *qs = b + offsetof(as_block_q3_K, qs);
        for (int s = 0; s < AS_QK_K / 16; s++) {
            const float dl = d_all * (float)q3_K_scale(sc, s);
            int h = s / 8, j = (s % 8) / 2;
            for (int l = 16 * (s & 1); l < 16 * (s & 1) + 16; l++) {
                int q = ((qs[32 * h + l] >> (2 * j)) & 3) - ((hm[l] >> (4 * h + j)) & 1 ? 0 : 4);
                dst[128 * h + 32 * j + l] = dl * (float)q;
            }
        }
    }
}

/* Q4_K / Q5_K: 8 6-bit scales and 8 6-bit mins in 12 bytes (ggml's get_scale_min_k4): for
 * s < 4 the low 6 bits of bytes s and s + 4; else the nibbles of byte s + 4 with the top 2 bits
 * of bytes s - 4 and s as bits 4, 5. */
static void k4_scale_min(const uint8_t *q, int s, int *sc, int *m) {
    if (s < 4) {
        *sc = q[s] & 63;
        *m = q[s + 4] & 63;
    } else {
        *sc = (q[s + 4] & 0x0F) | ((q[s - 4] >> 6) << 4);
        *m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
    }
}

static void to_f32_q4_K(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_q4_K), dst += AS_QK_K) {
        const float d = f16_at(b, offsetof(as_block_q4_K, d));
        const float min = f16_at(b, offsetof(as_block_q4_K, dmin));
        const uint8_t *scales = b + offsetof(as_block_q4_K, scales);
        const uint8_t *qs = b + offsetof(as_block_q4_K, qs);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(scales, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            const uint8_t *q = qs + 32 * (s / 2);
            for (int l = 0; l < 32; l++) {
                int v = s & 1 ? q[l] >> 4 : q[l] & 0x0F;
                dst[32 * s + l] = d1 * (float)v - m1;
            }
        }
    }
}

static void to_f32_q5_K(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_q5_K), dst += AS_QK_K) {
        const float d = f16_at(b, offsetof(as_block_q5_K, d));
        const float min = f16_at(b, offsetof(as_block_q5_K, dmin));
        const uint8_t *scales = b + offsetof(as_block_q5_K, scales);
        const uint8_t *qh = b + offsetof(as_block_q5_K, qh);
        const uint8_t *qs = b + offsetof(as_block_q5_K, qs);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            k4_scale_min(scales, s, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            const uint8_t *q = qs + 32 * (s / 2);
            for (int l = 0; l < 32; l++) {
                int v = (s & 1 ? q[l] >> 4 : q[l] & 0x0F) + ((qh[l] >> s) & 1 ? 16 : 0);
                dst[32 * s + l] = d1 * (float)v - m1;
            }
        }
    }
}

static void to_f32_q6_K(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_q6_K), dst += AS_QK_K) {
        const float d = f16_at(b, offsetof(as_block_q6_K, d));
        const int8_t *sc = (const int8_t *)(b + offsetof(as_block_q6_K, scales));
        const uint8_t *ql = b + offsetof(as_block_q6_K, ql);
        const uint8_t *qh = b + offsetof(as_block_q6_K, qh);
        for (int e = 0; e < AS_QK_K; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            int lo = ql[64 * h + 32 * (k & 1) + l];
            lo = k < 2 ? lo & 0x0F : lo >> 4;
            int q = (lo | ((qh[32 * h + l] >> (2 * k)) & 3) << 4) - 32;
            /* ggml: d * sc[is] * q, i.e. (d * sc) * q */
            dst[e] = d * (float)sc[e / 16] * (float)q;
        }
    }
}

/* ---- ternary: ggml's dequantize_row_tq1_0 / tq2_0, (float)(code - 1) * d ---- */

static void to_f32_tq1_0(const void *src, float *dst, size_t n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_tq1_0), dst += AS_QK_K) {
        const float d = f16_at(b, offsetof(as_block_tq1_0, d));
        const uint8_t *qs = b + offsetof(as_block_tq1_0, qs);
        const uint8_t *qh = b + offsetof(as_block_tq1_0, qh);
        float *y = dst;
        /* trit t of a byte: the byte times 3^t (mod 256), times 3, top byte of 16 bits */
        for (int t = 0; t < 5; t++)
            for (int m = 0; m < 32; m++)
                *y++ = (float)(((uint16_t)(uint8_t)(qs[m] * pow3[t]) * 3 >> 8) - 1) * d;
        for (int t = 0; t < 5; t++)
            for (int m = 0; m < 16; m++)
                *y++ = (float)(((uint16_t)(uint8_t)(qs[32 + m] * pow3[t]) * 3 >> 8) - 1) * d;
        for (int t = 0; t < 4; t++)
            for (int j = 0; j < 4; j++)
                *y++ = (float)(((uint16_t)(uint8_t)(qh[j] * pow3[t]) * 3 >> 8) - 1) * d;
    }
}

static void to_f32_tq2_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n / AS_QK_K; i++, b += sizeof(as_block_tq2_0), dst += AS_QK_K) {
        const float d = f16_at(b, offsetof(as_block_tq2_0, d));
        const uint8_t *qs = b + offsetof(as_block_tq2_0, qs);
        float *y = dst;
        for (int j = 0; j < 64; j += 32)
            for (int l = 0; l < 4; l++)
                for (int m = 0; m < 32; m++)
                    *y++ = (float)(((qs[j + m] >> (2 * l)) & 3) - 1) * d;
    }
}

/* ---- the table ----------------------------------------------------------------------------- */

#define SUPPORTED(T, NAME, BLCK, SIZE, FN) [T] = {NAME, BLCK, SIZE, FN}
#define NAMED(N, NAME) [N] = {NAME, 0, 0, NULL}

static const struct as_ggml_type_traits type_traits[AS_GGML_TYPE_COUNT] = {
    SUPPORTED(AS_GGML_F32, "F32", 1, 4, to_f32_f32),
    SUPPORTED(AS_GGML_F16, "F16", 1, 2, to_f32_f16),
    SUPPORTED(AS_GGML_Q4_0, "Q4_0", AS_QK, sizeof(as_block_q4_0), to_f32_q4_0),
    SUPPORTED(AS_GGML_Q4_1, "Q4_1", AS_QK, sizeof(as_block_q4_1), to_f32_q4_1),
    SUPPORTED(AS_GGML_Q5_0, "Q5_0", AS_QK, sizeof(as_block_q5_0), to_f32_q5_0),
    SUPPORTED(AS_GGML_Q5_1, "Q5_1", AS_QK, sizeof(as_block_q5_1), to_f32_q5_1),
    SUPPORTED(AS_GGML_Q8_0, "Q8_0", AS_QK, sizeof(as_block_q8_0), to_f32_q8_0),
    NAMED(9, "Q8_1"),
    SUPPORTED(AS_GGML_Q2_K, "Q2_K", AS_QK_K, sizeof(as_block_q2_K), to_f32_q2_K),
    SUPPORTED(AS_GGML_Q3_K, "Q3_K", AS_QK_K, sizeof(as_block_q3_K), to_f32_q3_K),
    SUPPORTED(AS_GGML_Q4_K, "Q4_K", AS_QK_K, sizeof(as_block_q4_K), to_f32_q4_K),
    SUPPORTED(AS_GGML_Q5_K, "Q5_K", AS_QK_K, sizeof(as_block_q5_K), to_f32_q5_K),
    SUPPORTED(AS_GGML_Q6_K, "Q6_K", AS_QK_K, sizeof(as_block_q6_K), to_f32_q6_K),
    NAMED(15, "Q8_K"),
    NAMED(16, "IQ2_XXS"),
    NAMED(17, "IQ2_XS"),
    NAMED(18, "IQ3_XXS"),
    NAMED(19, "IQ1_S"),
    NAMED(20, "IQ4_NL"),
    NAMED(21, "IQ3_S"),
    NAMED(22, "IQ2_S"),
    NAMED(23, "IQ4_XS"),
    NAMED(24, "I8"),
    NAMED(25, "I16"),
    NAMED(26, "I32"),
    NAMED(27, "I64"),
    NAMED(28, "F64"),
    NAMED(29, "IQ1_M"),
    SUPPORTED(AS_GGML_BF16, "BF16", 1, 2, to_f32_bf16),
    SUPPORTED(AS_GGML_TQ1_0, "TQ1_0", AS_QK_K, sizeof(as_block_tq1_0), to_f32_tq1_0),
    SUPPORTED(AS_GGML_TQ2_0, "TQ2_0", AS_QK_K, sizeof(as_block_tq2_0), to_f32_tq2_0),
    NAMED(39, "MXFP4"),
    NAMED(40, "NVFP4"),
    NAMED(41, "Q1_0"),
};

const struct as_ggml_type_traits *as_ggml_get_type_traits(uint32_t t) {
    return t < AS_GGML_TYPE_COUNT ? &type_traits[t] : NULL;
}

const char *as_ggml_type_name(uint32_t t) {
    return t < AS_GGML_TYPE_COUNT ? type_traits[t].name : NULL;
}

int as_ggml_type_known(uint32_t t) {
    return t < AS_GGML_TYPE_COUNT && type_traits[t].to_float != NULL;
}

int as_ggml_blck_size(enum as_ggml_type t) {
    return as_ggml_type_known(t) ? type_traits[t].blck_size : 1;
}

size_t as_ggml_type_size(enum as_ggml_type t) {
    return as_ggml_type_known(t) ? type_traits[t].type_size : 0;
}

size_t as_ggml_row_size(enum as_ggml_type t, int64_t ne0) {
    if (!as_ggml_type_known(t)) return 0;
    int bs = type_traits[t].blck_size;
    if (ne0 <= 0 || ne0 % bs) return 0;
    return (size_t)(ne0 / bs) * type_traits[t].type_size;
}

void as_ggml_to_f32(enum as_ggml_type t, const void *src, float *dst, size_t n) {
    type_traits[t].to_float(src, dst, n);
}
