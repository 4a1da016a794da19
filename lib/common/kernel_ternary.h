/* kernel_ternary: int8-activation GEMV (decode) and GEMM (prefill) on the packed layouts of
 * pack_ternary.h, plus the dense f32 / bf16 baseline with the same interface (docs/ternary.md).
 *
 * Activations are quantized once per token (BitNet's per-token absmax: q = round(x * 127 / amax),
 * x ~ q * d, d = amax / 127) and laid out in each format's plane order, so that one 32-byte vector
 * of packed 2-bit codes meets 4 contiguous 32-byte runs of activations (plane p = bits 2p of every
 * byte). A kernel computes exact integer sums: S = sum over the weights of code * q, and the
 * result per output row is
 *   TQ1_0, TQ2_0  sum over 256-blocks b, in order, of (float)(S_b - Q_b) * d_b, then * d
 *   I2_S, SHERRY  (float)(S - Q) * scale * d            (Q = sum of q over the block / row)
 *   SEQ2          (float)(2 S - 3 Q) * (0.5f * scale) * d
 * The scalar reference and the AVX2 / AVX-512 VNNI kernels compute S (and everything after it)
 * identically, so their outputs are equal bit for bit (tests/unit/test_kernel_ternary.c).
 * Dense baseline: y = sum w x in 16 interleaved f32 partial sums (k mod 16), mul then add (no FMA),
 * summed pairwise at the end; the reference does the same, so again bit for bit. */
#ifndef AS_KERNEL_TERNARY_H
#define AS_KERNEL_TERNARY_H

#include <stddef.h>
#include <stdint.h>

#include "pack_ternary.h"

enum as_isa { AS_ISA_REF = 0, AS_ISA_AVX2, AS_ISA_AVX512, AS_ISA_COUNT };
extern const char *const as_isa_names[AS_ISA_COUNT]; /* "ref", "avx2", "avx512vnni" */
/* The best the CPU has (cpuid), or AS_KERNEL_ISA=ref|avx2|avx512vnni if set (and supported). */
enum as_isa as_kernel_isa_best(void);
int as_kernel_isa_supported(enum as_isa isa);

/* One token's activations, quantized for format f (as_act8_init / as_act8_quantize). */
struct as_act8 {
    int K;
    enum as_tern_fmt fmt;
    float d;         /* x ~ q * d */
    int8_t *q;       /* [K] natural order */
    int8_t *qp;      /* the format's plane order (natural in a tail of < 128); TQ1_0: 448 bytes
                      * per 256-block, each element once, the rest 0 (kernel_ternary.c plane_pos) */
    int32_t *sum32;  /* [K/32] sums of q over 32-blocks */
    int32_t *sum256; /* [K/256] sums over 256-blocks (K % 256 == 0) */
    int32_t total;   /* sum of q over the row */
    int32_t *pos;    /* [K] where element k goes in qp */
};
void as_act8_init(struct as_act8 *a, enum as_tern_fmt f, int K);
void as_act8_free(struct as_act8 *a);
/* Quantize x [K] into a (per-token absmax; an all-zero x gives d = 0, q = 0), with the best ISA's
 * quantizer; every ISA's gives the same bytes and sums. */
void as_act8_quantize(struct as_act8 *a, const float *x);
void as_act8_quantize_isa(enum as_isa isa, struct as_act8 *a, const float *x);

/* A packed weight matrix: N rows of as_tern_row_bytes(fmt, K) bytes, then its scales (as
 * as_tern_pack writes them). */
struct as_tern_matrix {
    enum as_tern_fmt fmt;
    int N, K;
    const uint8_t *data;
};

/* SEQ2's one-token AVX-512 GEMV: 4 rows per pass (the default), or 2 (the pass it replaced, kept
 * so that bench_ternary can time both in one run); both give the reference's bits. */
extern int as_tern_seq2_rows;

/* y[r] for rows r0 <= r < r1 (y indexed by row) of W x, one token, with the given ISA. */
void as_tern_gemv(enum as_isa isa, const struct as_tern_matrix *W, const struct as_act8 *a,
                  float *y, int r0, int r1);
/* Y[m*N + r] for M tokens a[0..M-1], rows r0..r1-1: the packed codes are decoded once per row
 * chunk and used for up to 4 tokens at a time. Equal to M calls of as_tern_gemv. */
void as_tern_gemm(enum as_isa isa, const struct as_tern_matrix *W, const struct as_act8 *a, int M,
                  float *Y, int r0, int r1);

/* Dense baseline: W [N,K] f32 or bf16 (dtype_bf16 = 1), f32 activations, K a multiple of 16. */
struct as_dense_matrix {
    int N, K;
    int bf16;
    const void *data;
};
void as_dense_gemv(enum as_isa isa, const struct as_dense_matrix *W, const float *x, float *y,
                   int r0, int r1);
void as_dense_gemm(enum as_isa isa, const struct as_dense_matrix *W, const float *X, int M,
                   float *Y, int r0, int r1);

#endif
