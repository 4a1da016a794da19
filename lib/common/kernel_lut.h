/* kernel_lut: table-lookup GEMV (decode, one token) for SHERRY and TQ1_0 on a row-interleaved
 * copy of the weights made once per matrix at load time (T-MAC's idea; docs/ternary.md "Lookup
 * tables").
 *
 * The weights of a row are cut into groups of G = 4 (SHERRY: one 3:4 quad, 32 patterns) or G = 3
 * (TQ1_0: three trits, 27 patterns) and each group is stored as the 5-bit index of its pattern.
 * For one token, every group g gets a table T_g of the 32 exact integer sums
 * sum_p (c_p - 1) q[G g + p] over its possible patterns (int16: |T| <= 3 * 128). Repacked layout:
 * tiles of 32 rows; in a tile, one 16-bit word per row holds the indices of three consecutive
 * groups (bits 0-4, 5-9, 10-14), and the 32 words of a tile's group triple are 64 contiguous
 * bytes, so one 512-bit load, two shifts and three vpermw (AVX-512 BW: 32 word lookups in a
 * 32-word table, index bits 0-4) give 32 rows' sums for 3 G weights. Sums add up in int16 (mod
 * 2^16: only a segment's total must fit) and are widened after at most 84 SHERRY groups (|sum|
 * <= 84 * 3 * 128 = 32256) or one TQ1_0 block (<= 256 * 127 = 32512: activations in
 * as_act8_quantize's range -127..127).
 *
 *   SHERRY  groups in order (K / 4, padded to whole triples with groups whose table is 0);
 *           y = (float)(S - Q) * scale_r * d, as kernel_ternary's finish
 *   TQ1_0   each 256-block is 87 groups (261 weights: its 256, then 5 that meet zero
 *           activations): 29 triples per block; y = sum_b (float)(S_b - Q_b) * d_b, then * d
 * The sums are exact integers computed from the same codes, and the float finish is the same
 * expression per row, so every output equals as_tern_gemv's reference bit for bit
 * (tests/unit/test_kernel_lut.c). Bytes per weight: 16 / (3 G) bits: 1.33 (SHERRY, against its
 * 1.25) and 1.81 plus the block scales (TQ1_0, against 1.69). */
#ifndef AS_KERNEL_LUT_H
#define AS_KERNEL_LUT_H

#include <stddef.h>
#include <stdint.h>

#include "kernel_ternary.h"

enum { AS_LUT_TILE = 32 }; /* rows per tile: one vpermw's worth of words */

/* The repacked copy of a SHERRY or TQ1_0 matrix. */
struct as_lut_matrix {
    enum as_tern_fmt fmt;
    int N, K;
    int tiles;       /* ceil(N / 32) */
    int triples;     /* group triples per row (TQ1_0: 29 per 256-block) */
    int seg;         /* triples summed in int16 before widening (TQ1_0: one block) */
    uint16_t *codes; /* [tiles][triples][32] */
    float *scales;   /* SHERRY [tiles * 32] row scales; TQ1_0 [tiles][K / 256][32] block scales */
    size_t bytes;    /* of codes and scales: what a GEMV streams */
};

/* 1 if format f with rows of K has a LUT path (SHERRY, K % 32 == 0; TQ1_0, K % 256 == 0). */
int as_lut_supported(enum as_tern_fmt f, int K);
/* Repack W (as_lut_supported) into L; as_lut_free releases it. */
void as_lut_repack(const struct as_tern_matrix *W, struct as_lut_matrix *L);
void as_lut_free(struct as_lut_matrix *L);

/* One token's tables, built from its quantized activations. */
struct as_lut_act {
    enum as_tern_fmt fmt;
    int K, groups; /* groups = 3 * triples of the matrix */
    float d;
    int16_t *T;   /* [groups][32] */
    uint32_t *xg; /* [groups] the group's activations + 128 as u8 (scratch of the build) */
};
void as_lut_act_init(struct as_lut_act *t, enum as_tern_fmt f, int K);
void as_lut_act_free(struct as_lut_act *t);
/* Tables of the token a (quantized by as_act8_quantize for any format; only a->q and a->d are
 * read). AS_ISA_AVX512 builds them with vpdpbusd, any other ISA in scalar code: same tables. */
void as_lut_act_build(enum as_isa isa, struct as_lut_act *t, const struct as_act8 *a);

/* y[r] for rows r0 <= r < r1 of one token. AS_ISA_AVX512: vpermw; any other ISA: the scalar
 * reference on the same layout (AVX2 has no word permute over 32 entries: callers keep
 * as_tern_gemv there). */
void as_lut_gemv(enum as_isa isa, const struct as_lut_matrix *L, const struct as_lut_act *t,
                 float *y, int r0, int r1);

#endif
