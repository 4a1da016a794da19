/* pack_ternary: the ternary / 2-bit layouts of pack_ternary.h, packing and unpacking.
 *
 * TQ1_0 and TQ2_0 follow ggml-quants.c quantize_row_tq{1,2}_0_ref / dequantize_row_tq{1,2}_0 byte
 * for byte (the codes are given, so only the packing half of the quantizer is used); I2_S follows
 * BitNet's ggml-bitnet-mad.cpp quantize_i2_s. SEQ2 and SHERRY are ours (docs/ternary.md). */
#include "pack_ternary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "as_error.h"
#include "dtype.h"

const struct as_tern_layout as_tern_layouts[AS_TF_COUNT] = {
    [AS_TF_TQ1_0] = {"TQ1_0", 256, sizeof(as_block_tq1_0), 3, AS_TS_BLOCK_F16, 34},
    [AS_TF_TQ2_0] = {"TQ2_0", 256, sizeof(as_block_tq2_0), 3, AS_TS_BLOCK_F16, 35},
    [AS_TF_I2_S] = {"I2_S", 128, sizeof(as_block_i2s), 3, AS_TS_TENSOR, -1},
    [AS_TF_SEQ2] = {"SEQ2", 32, sizeof(as_block_seq2), 4, AS_TS_ROW, -1},
    [AS_TF_SHERRY] = {"SHERRY", 32, sizeof(as_block_sherry), 3, AS_TS_ROW, -1},
};

const uint8_t as_sherry_codebook[32] = {
    0xA9, 0x89, 0x29, 0x09, 0xA6, 0x86, 0x26, 0x06, 0x9A, 0x92, 0x1A, 0x12, 0x6A, 0x62, 0x4A, 0x42,
    0x01, 0x21, 0x81, 0xA1, 0x04, 0x24, 0x84, 0xA4, 0x10, 0x18, 0x90, 0x98, 0x40, 0x48, 0x60, 0x68,
};

int as_tern_fmt_parse(const char *name) {
    for (int f = 0; f < AS_TF_COUNT; f++)
        if (!strcasecmp(name, as_tern_layouts[f].name)) return f;
    return -1;
}

size_t as_tern_row_bytes(enum as_tern_fmt f, int K) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    if (K <= 0 || K % L->block) return 0;
    return (size_t)(K / L->block) * L->block_bytes;
}

size_t as_tern_scale_count(enum as_tern_fmt f, int N, int K) {
    switch (as_tern_layouts[f].scale) {
    case AS_TS_BLOCK_F16:
        return (size_t)N * (size_t)(K / 256);
    case AS_TS_TENSOR:
        return 1;
    default:
        return (size_t)N;
    }
}

size_t as_tern_packed_bytes(enum as_tern_fmt f, int N, int K) {
    size_t rb = as_tern_row_bytes(f, K);
    if (!rb || N <= 0) return 0;
    if (f == AS_TF_I2_S) return (size_t)N * rb + 4 + 32;
    return (size_t)N * rb + (as_tern_layouts[f].scale == AS_TS_ROW ? (size_t)N * 4 : 0);
}

/* ---- per-block packers (codes of one block in, bytes out) ---- */

static void pack_tq1_0(const uint8_t *c, float d, uint8_t *out) {
    as_block_tq1_0 b;
    for (int m = 0; m < 32; m++) {
        unsigned q = 0;
        for (int n = 0; n < 5; n++)
            q = q * 3 + c[m + 32 * n];
        b.qs[m] = (uint8_t)((q * 256 + 242) / 243); /* ceiling division, as ggml */
    }
    for (int m = 0; m < 16; m++) {
        unsigned q = 0;
        for (int n = 0; n < 5; n++)
            q = q * 3 + c[160 + m + 16 * n];
        b.qs[32 + m] = (uint8_t)((q * 256 + 242) / 243);
    }
    for (int j = 0; j < 4; j++) {
        unsigned q = 0;
        for (int n = 0; n < 4; n++)
            q = q * 3 + c[240 + j + 4 * n];
        q *= 3; /* the first value becomes the most significant of 5 trits */
        b.qh[j] = (uint8_t)((q * 256 + 242) / 243);
    }
    b.d = as_f32_to_f16(d);
    memcpy(out, &b, sizeof b);
}

/* trit n (0 = most significant) of a TQ1_0 byte: ggml's ((uint8)(b * 3^n) * 3) >> 8 */
static inline int tq1_trit(uint8_t b, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t q = (uint8_t)(b * pow3[n]);
    return (int)(((uint16_t)q * 3) >> 8);
}

static void unpack_tq1_0(const uint8_t *in, uint8_t *c, float *d) {
    as_block_tq1_0 b;
    memcpy(&b, in, sizeof b);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++)
            c[m + 32 * n] = (uint8_t)tq1_trit(b.qs[m], n);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++)
            c[160 + m + 16 * n] = (uint8_t)tq1_trit(b.qs[32 + m], n);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++)
            c[240 + j + 4 * n] = (uint8_t)tq1_trit(b.qh[j], n);
    *d = as_f16_to_f32(b.d);
}

static void pack_tq2_0(const uint8_t *c, float d, uint8_t *out) {
    as_block_tq2_0 b;
    memset(&b, 0, sizeof b);
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < 32; m++)
            for (int n = 0; n < 4; n++)
                b.qs[32 * h + m] |= (uint8_t)(c[128 * h + m + 32 * n] << (2 * n));
    b.d = as_f32_to_f16(d);
    memcpy(out, &b, sizeof b);
}

static void unpack_tq2_0(const uint8_t *in, uint8_t *c, float *d) {
    as_block_tq2_0 b;
    memcpy(&b, in, sizeof b);
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 4; n++)
            for (int m = 0; m < 32; m++)
                c[128 * h + m + 32 * n] = (b.qs[32 * h + m] >> (2 * n)) & 3;
    *d = as_f16_to_f32(b.d);
}

static void pack_i2s(const uint8_t *c, uint8_t *out) {
    for (int p = 0; p < 32; p++)
        out[p] = (uint8_t)(c[p] << 6 | c[p + 32] << 4 | c[p + 64] << 2 | c[p + 96]);
}
static void unpack_i2s(const uint8_t *in, uint8_t *c) {
    for (int p = 0; p < 32; p++)
        for (int i = 0; i < 4; i++)
            c[p + 32 * i] = (in[p] >> (6 - 2 * i)) & 3;
}

static void pack_seq2(const uint8_t *c, uint8_t *out) {
    for (int g = 0; g < 8; g++)
        out[g] = (uint8_t)(c[4 * g] | c[4 * g + 1] << 2 | c[4 * g + 2] << 4 | c[4 * g + 3] << 6);
}
static void unpack_seq2(const uint8_t *in, uint8_t *c) {
    for (int k = 0; k < 32; k++)
        c[k] = (in[k / 4] >> (2 * (k % 4))) & 3;
}

/* Sherry index (sign << 4 | slot) of a quad with exactly one zero (code 1); checked by caller. */
static int sherry_index(const uint8_t *q) {
    int z = 0, v[3], nv = 0;
    for (int p = 0; p < 4; p++) {
        if (q[p] == 1)
            z = p;
        else
            v[nv++] = (int)q[p] - 1;
    }
    int sign = v[0] < 0;
    if (sign)
        for (int i = 0; i < 3; i++)
            v[i] = -v[i];
    int r = (v[1] < 0) | (v[2] < 0) << 1;
    return sign << 4 | z << 2 | r;
}

/* A Sherry 32-block: 8 five-bit indices, LSB first (pack_ternary.h). */
static void pack_sherry(const uint8_t *c, uint8_t *out) {
    uint64_t bits = 0;
    for (int g = 0; g < 8; g++)
        bits |= (uint64_t)sherry_index(c + 4 * g) << (5 * g);
    for (int i = 0; i < 5; i++)
        out[i] = (uint8_t)(bits >> (8 * i));
}
static void unpack_sherry(const uint8_t *in, uint8_t *c) {
    uint64_t bits = 0;
    for (int i = 0; i < 5; i++)
        bits |= (uint64_t)in[i] << (8 * i);
    for (int g = 0; g < 8; g++) {
        uint8_t pat = as_sherry_codebook[(bits >> (5 * g)) & 31];
        for (int p = 0; p < 4; p++)
            c[4 * g + p] = (pat >> (2 * p)) & 3;
    }
}

/* ---- checks ---- */

static int check_scale(enum as_tern_fmt f, const char *name, float s, size_t i) {
    if (!isfinite(s) || s <= 0.0f)
        return as_fail("tensor %s: scale %zu is %g (must be finite and > 0)", name, i, (double)s);
    if (as_tern_layouts[f].scale == AS_TS_BLOCK_F16 && as_f16_to_f32(as_f32_to_f16(s)) != s)
        return as_fail("tensor %s: scale %zu = %.9g is not exact in f16 (%s stores f16 scales)",
                       name, i, (double)s, as_tern_layouts[f].name);
    return 0;
}

static int check_input(enum as_tern_fmt f, const char *name, int N, int K, const uint8_t *codes,
                       const float *scales) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    if (N <= 0 || K <= 0 || K % L->block)
        return as_fail("tensor %s: shape [%d, %d]: %s needs rows of a multiple of %d weights", name,
                       N, K, L->name, L->block);
    size_t ns = as_tern_scale_count(f, N, K);
    for (size_t i = 0; i < ns; i++)
        if (check_scale(f, name, scales[i], i)) return -1;
    for (int n = 0; n < N; n++) {
        const uint8_t *c = codes + (size_t)n * K;
        for (int k = 0; k < K; k++)
            if (c[k] >= L->levels)
                return as_fail("tensor %s: code %d at [%d, %d] is outside %s's 0..%d", name, c[k],
                               n, k, L->name, L->levels - 1);
        if (f == AS_TF_SHERRY)
            for (int k = 0; k < K; k += 4) {
                int zeros = (c[k] == 1) + (c[k + 1] == 1) + (c[k + 2] == 1) + (c[k + 3] == 1);
                if (zeros != 1)
                    return as_fail("tensor %s: quad [%d, %d..%d] has %d zeros (SHERRY's 3:4 mask "
                                   "needs exactly one per contiguous quad)",
                                   name, n, k, k + 3, zeros);
            }
    }
    return 0;
}

int as_tern_pack(enum as_tern_fmt f, const char *name, int N, int K, const uint8_t *codes,
                 const float *scales, uint8_t *out) {
    if (check_input(f, name, N, K, codes, scales)) return -1;
    const struct as_tern_layout *L = &as_tern_layouts[f];
    const int nb = K / L->block;
    uint8_t *o = out;
    for (int n = 0; n < N; n++)
        for (int b = 0; b < nb; b++, o += L->block_bytes) {
            const uint8_t *c = codes + (size_t)n * K + (size_t)b * L->block;
            switch (f) {
            case AS_TF_TQ1_0:
                pack_tq1_0(c, scales[(size_t)n * nb + b], o);
                break;
            case AS_TF_TQ2_0:
                pack_tq2_0(c, scales[(size_t)n * nb + b], o);
                break;
            case AS_TF_I2_S:
                pack_i2s(c, o);
                break;
            case AS_TF_SEQ2:
                pack_seq2(c, o);
                break;
            default:
                pack_sherry(c, o);
                break;
            }
        }
    if (f == AS_TF_I2_S) {
        memcpy(o, &scales[0], 4);
        memset(o + 4, 0, 32);
    } else if (L->scale == AS_TS_ROW) {
        memcpy(o, scales, (size_t)N * 4);
    }
    return 0;
}

void as_tern_unpack(enum as_tern_fmt f, int N, int K, const uint8_t *packed, uint8_t *codes,
                    float *scales) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    const int nb = K / L->block;
    const uint8_t *p = packed;
    for (int n = 0; n < N; n++)
        for (int b = 0; b < nb; b++, p += L->block_bytes) {
            uint8_t *c = codes + (size_t)n * K + (size_t)b * L->block;
            switch (f) {
            case AS_TF_TQ1_0:
                unpack_tq1_0(p, c, &scales[(size_t)n * nb + b]);
                break;
            case AS_TF_TQ2_0:
                unpack_tq2_0(p, c, &scales[(size_t)n * nb + b]);
                break;
            case AS_TF_I2_S:
                unpack_i2s(p, c);
                break;
            case AS_TF_SEQ2:
                unpack_seq2(p, c);
                break;
            default:
                unpack_sherry(p, c);
                break;
            }
        }
    if (f == AS_TF_I2_S)
        memcpy(&scales[0], p, 4);
    else if (L->scale == AS_TS_ROW)
        memcpy(scales, p, (size_t)N * 4);
}

void as_tern_unpack_row_codes(enum as_tern_fmt f, int K, const uint8_t *row, uint8_t *codes) {
    const struct as_tern_layout *L = &as_tern_layouts[f];
    float d;
    for (int b = 0; b < K / L->block; b++, row += L->block_bytes) {
        uint8_t *c = codes + (size_t)b * L->block;
        switch (f) {
        case AS_TF_TQ1_0:
            unpack_tq1_0(row, c, &d);
            break;
        case AS_TF_TQ2_0:
            unpack_tq2_0(row, c, &d);
            break;
        case AS_TF_I2_S:
            unpack_i2s(row, c);
            break;
        case AS_TF_SEQ2:
            unpack_seq2(row, c);
            break;
        default:
            unpack_sherry(row, c);
            break;
        }
    }
}

void as_tern_dequant(enum as_tern_fmt f, int N, int K, const uint8_t *packed, float *w) {
    size_t ns = as_tern_scale_count(f, N, K);
    uint8_t *c = as_xmalloc((size_t)N * K);
    float *s = as_xmalloc(ns * sizeof *s);
    as_tern_unpack(f, N, K, packed, c, s);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            size_t i = (size_t)n * K + k;
            float sc = as_tern_layouts[f].scale == AS_TS_BLOCK_F16
                           ? s[(size_t)n * (K / 256) + k / 256]
                       : as_tern_layouts[f].scale == AS_TS_TENSOR ? s[0]
                                                                  : s[n];
            w[i] = f == AS_TF_SEQ2 ? ((float)c[i] - 1.5f) * sc : (float)((int)c[i] - 1) * sc;
        }
    free(c);
    free(s);
}
