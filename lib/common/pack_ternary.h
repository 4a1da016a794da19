/* pack_ternary: ternary and 2-bit weight layouts (docs/ternary.md has the byte pictures).
 *
 * Five layouts, each defined once in as_tern_layouts[] with its block struct's size
 * _Static_assert'ed. A weight matrix W [N out, K in] arrives as integer codes c [N,K] (row-major)
 * plus scales; the value of a weight is
 *   ternary formats (TQ1_0, TQ2_0, I2_S, SHERRY): (c - 1) * scale, c in {0, 1, 2}
 *   SEQ2 (ParetoQ stretched elastic 2-bit):     (c - 1.5) * scale, c in {0, 1, 2, 3}
 *     (the levels {-0.75, -0.25, 0.25, 0.75} * alpha of a per-channel alpha: scale = alpha / 2)
 * with the scale's granularity fixed by the format:
 *   TQ1_0, TQ2_0  one f16 per 256-weight block (ggml's, byte for byte: llama.cpp loads them)
 *   I2_S          one f32 per tensor (BitNet's x86 layout, 128 weights per 32 bytes)
 *   SEQ2          one f32 per row, any K multiple of 32
 *   SHERRY        one f32 per row, any K multiple of 32; 3:4 sparse: every contiguous quad
 *                 (4k .. 4k+3) holds exactly one zero, stored as a 5-bit pattern (1.25 bpw)
 * A packed row is K / block blocks; I2_S appends its tensor scale after all rows (as BitNet
 * does), SEQ2 and SHERRY their N row scales. Packing refuses, naming the tensor: a code out of
 * range, a Sherry quad without exactly one zero, K not a multiple of the block, a scale that is
 * zero, negative, NaN or infinite (or, for the f16 formats, not representable in f16: the packed
 * model must equal its source exactly). */
#ifndef AS_PACK_TERNARY_H
#define AS_PACK_TERNARY_H

#include <stddef.h>
#include <stdint.h>

enum as_tern_fmt {
    AS_TF_TQ1_0 = 0,
    AS_TF_TQ2_0,
    AS_TF_I2_S,
    AS_TF_SEQ2,
    AS_TF_SHERRY,
    AS_TF_COUNT
};
enum as_tern_scale { AS_TS_BLOCK_F16 = 0, AS_TS_TENSOR, AS_TS_ROW };

/* ggml-common.h block_tq1_0: qs[0..31] 5 trits each (elements m + 32n), qs[32..47] 5 trits
 * (160 + m + 16n), qh[j] 4 trits (240 + j + 4n); a byte holds ceil(q * 256 / 243) with q the
 * base-3 number of its trits, first element most significant. */
typedef struct {
    uint8_t qs[48];
    uint8_t qh[4];
    uint16_t d; /* f16 */
} as_block_tq1_0;
/* ggml-common.h block_tq2_0: byte 32h + m holds elements 128h + m + 32n at bits 2n. */
typedef struct {
    uint8_t qs[64];
    uint16_t d; /* f16 */
} as_block_tq2_0;
/* BitNet I2_S (x86 ACT_PARALLEL): byte p holds elements p, p+32, p+64, p+96 at shifts 6,4,2,0. */
typedef struct {
    uint8_t qs[32];
} as_block_i2s;
/* SEQ2: byte g holds elements 4g .. 4g+3 at bits 0, 2, 4, 6 (plain LSB-first 2-bit packing). */
typedef struct {
    uint8_t qs[8];
} as_block_seq2;
/* SHERRY: 8 contiguous quads, quad g's 5-bit index (sign << 4 | slot) in bits 5g .. 5g+4 of the
 * block's 40 bits (little-endian: bit i of the block is bit i % 8 of q[i / 8]). slot = (z << 2) |
 * r: z the zero lane; the non-zero lanes n0 < n1 < n2 are +1, (r&1 ? -1 : +1), (r&2 ? -1 : +1);
 * sign 1 negates the quad (so the first non-zero is -1). These are the 32 patterns of llama.cpp PR
 * #22836's STQ1_0 codebook (as_sherry_codebook), indexed by the 5-bit field itself. A row is its
 * K / 32 blocks in order: a SIMD kernel moves each block's 5 bytes into a 64-bit lane and one
 * vpmultishiftqb puts the 8 fields into 8 bytes, ready for the codebook lookup (docs/ternary.md).
 */
typedef struct {
    uint8_t q[5];
} as_block_sherry;

_Static_assert(sizeof(as_block_tq1_0) == 54, "TQ1_0 block is 54 bytes per 256 weights");
_Static_assert(sizeof(as_block_tq2_0) == 66, "TQ2_0 block is 66 bytes per 256 weights");
_Static_assert(sizeof(as_block_i2s) == 32, "I2_S block is 32 bytes per 128 weights");
_Static_assert(sizeof(as_block_seq2) == 8, "SEQ2 block is 8 bytes per 32 weights");
_Static_assert(sizeof(as_block_sherry) == 5, "SHERRY block is 5 bytes per 32 weights");

struct as_tern_layout {
    const char *name;   /* "TQ1_0", "TQ2_0", "I2_S", "SEQ2", "SHERRY" */
    int block;          /* weights per block */
    size_t block_bytes; /* bytes per block, scale included when it lives in the block */
    int levels;         /* codes are 0 .. levels-1 */
    enum as_tern_scale scale;
    int ggml_type; /* GGUF type number (34, 35), or -1 */
};
extern const struct as_tern_layout as_tern_layouts[AS_TF_COUNT];

/* Byte pattern (4 lanes x 2-bit codes, code = value + 1, lane p at bits 2p) of Sherry index
 * (sign << 4) | slot. */
extern const uint8_t as_sherry_codebook[32];

/* Format by name (case-insensitive), -1 if none. */
int as_tern_fmt_parse(const char *name);
/* Bytes of one packed row of K weights; 0 if K is not a multiple of the block. */
size_t as_tern_row_bytes(enum as_tern_fmt f, int K);
/* Number of scales the format takes for [N,K]: N*K/256, 1 or N. */
size_t as_tern_scale_count(enum as_tern_fmt f, int N, int K);
/* Bytes of the whole packed tensor: the N rows, then I2_S's f32 tensor scale and 32 bytes of
 * padding (BitNet's), or SEQ2's and SHERRY's N f32 row scales. */
size_t as_tern_packed_bytes(enum as_tern_fmt f, int N, int K);

/* Check codes/scales and pack [N,K] into out (as_tern_packed_bytes). -1 with
 * as_fail("tensor NAME: ...") and out untouched on bad input. */
int as_tern_pack(enum as_tern_fmt f, const char *name, int N, int K, const uint8_t *codes,
                 const float *scales, uint8_t *out);
/* Inverse: codes [N,K] and scales (as_tern_scale_count); exact for anything as_tern_pack wrote. */
void as_tern_unpack(enum as_tern_fmt f, int N, int K, const uint8_t *packed, uint8_t *codes,
                    float *scales);
/* Codes [K] (natural order) of one packed row (as_tern_row_bytes bytes) of format f. */
void as_tern_unpack_row_codes(enum as_tern_fmt f, int K, const uint8_t *row, uint8_t *codes);
/* Dequantize to f32 [N,K]: value of code c times its scale, in the order the kernels use. */
void as_tern_dequant(enum as_tern_fmt f, int N, int K, const uint8_t *packed, float *w);

#endif
