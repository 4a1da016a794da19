/* kernel_attn: causal GQA prefill attention, flash style (FlashAttention-2 over tiles with an
 * online softmax per query row: m' = max(m, rowmax S), acc = acc e^(m-m') + e^(S-m') V,
 * l = l e^(m-m') + sum e^(S-m'), O = acc / l), never materialising the [T, n_keys] score matrix.
 *
 * Dense: every causal key. Block-sparse: a mask of kept (query block, key block) pairs per head
 * (blocks of `block` absolute positions); the token-level causal mask applies inside each block,
 * so the result equals dense masked softmax over the expanded mask (the oracle of the tests).
 *
 * Two implementations: a scalar reference (plain loops, expf) and an AVX2+FMA one (packed K
 * tiles, 4x16 register tiles, a polynomial exp); as_attn_impl selects (default: AVX2 where the
 * CPU has it). Work is split into (head, query tile) items so a caller's thread pool can run
 * parts of it (as_attn_part). */
#ifndef AS_KERNEL_ATTN_H
#define AS_KERNEL_ATTN_H

#include <stdint.h>

/* Kept blocks: keep[(h * nqb + qb) * nkb + kb] != 0, for absolute query block qb and key block
 * kb (kb > qb is never computed). Block sizes 8..256. */
struct as_block_mask {
    int block, n_heads, nqb, nkb;
    uint8_t *keep;
};

struct as_attn_args {
    const float *q; /* [T, q_stride]: head h at column h*hd (RoPE already applied) */
    const float *k; /* [pos0+T, kv_stride]: kv head g at column g*hd (the cache) */
    const float *v;
    float *o; /* [T, o_stride] */
    int T, pos0, n_heads, n_kv_heads, hd;
    int q_stride, kv_stride, o_stride;
    float scale;                      /* usually 1/sqrt(hd) */
    const struct as_block_mask *mask; /* NULL: dense causal; else needs pos0 == 0 */
};

/* AS_ATTN_MATRIX: the engine (forward.c) keeps its scores-matrix prefill loop instead (dense
 * only; the reference the flash kernel replaced, for benchmarks). */
enum as_attn_impl { AS_ATTN_AUTO, AS_ATTN_SCALAR, AS_ATTN_AVX2, AS_ATTN_MATRIX };
extern enum as_attn_impl as_attn_impl; /* for tests and benchmarks */

/* 1 if the AVX2 path would run under AS_ATTN_AUTO. */
int as_attn_have_avx2(void);

/* Number of independent work items (head, query tile) of a call: the most parts worth using. */
int as_attn_items(const struct as_attn_args *a);
/* Part `part` of n (0 <= part < n) of the items; any split gives bit-identical results. */
void as_attn_part(const struct as_attn_args *a, int part, int n);
/* Everything on this thread. Returns 0, or -1 with as_fail (mask shape, pos0 with a mask). */
int as_attn_check(const struct as_attn_args *a);
int as_attn(const struct as_attn_args *a);

/* x[j] = e^(x[j] - max x) for j < n, in place; returns the sum (n >= 1). The selectors' row
 * softmax (XAttention's antidiagonal rows): the same exp as the kernel under as_attn_impl. */
double as_attn_exp_row(float *x, int n);

/* Kept / causal (query block, key block) pairs of head h over the first L tokens (the density
 * of the reference doc: causal blocks nqb(nqb+1)/2). */
double as_block_mask_density(const struct as_block_mask *m, int h, int L);

#endif
