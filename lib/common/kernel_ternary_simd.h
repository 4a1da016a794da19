/* kernel_ternary_simd.h: the SIMD kernel bodies, included by kernel_ternary.c once per ISA with
 * SFX(name) (the ISA suffix) and DOT_U8S8(acc, codes_u8, acts_s8) (32 u8 x s8 products added
 * into 8 int32 lanes) defined, under the matching GCC target pragma; AS_ZMM (AVX-512) adds the
 * 512-bit paths. Not a public header. */

#define AS_AI static inline __attribute__((always_inline))
/* acc[][] lives in registers only if every index is a constant: unroll the loops over them */
#ifdef __clang__
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 8")
#endif

AS_AI int32_t SFX(hsum)(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* The 4 planes of 32 bytes of 2-bit codes against the 4 runs of 32 activations at qp + off, for
 * M tokens. Each plane has its own accumulator: one chain per plane keeps the adds (VNNI's
 * vpdpbusd has a latency of several cycles) from serialising the loop. */
AS_AI void SFX(planes_s)(__m256i (*acc)[4], __m256i w, const struct as_act8 *a, int M, size_t off,
                         size_t ps) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i c0 = _mm256_and_si256(w, m3);
    const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(w, 2), m3);
    const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(w, 4), m3);
    const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(w, 6), m3);
    for (int m = 0; m < M; m++) {
        const int8_t *x = a[m].qp + off;
        acc[m][0] = DOT_U8S8(acc[m][0], c0, _mm256_loadu_si256((const __m256i *)x));
        acc[m][1] = DOT_U8S8(acc[m][1], c1, _mm256_loadu_si256((const __m256i *)(x + ps)));
        acc[m][2] = DOT_U8S8(acc[m][2], c2, _mm256_loadu_si256((const __m256i *)(x + 2 * ps)));
        acc[m][3] = DOT_U8S8(acc[m][3], c3, _mm256_loadu_si256((const __m256i *)(x + 3 * ps)));
    }
}
/* plane p at qp + off + 32 p (Sherry: chunk c's planes at 256 (c / 2) + 32 (c % 2) + 64 p) */
AS_AI void SFX(planes)(__m256i (*acc)[4], __m256i w, const struct as_act8 *a, int M, size_t off) {
    SFX(planes_s)(acc, w, a, M, off, 32);
}

/* Sum of a token's 4 accumulators, reset to zero. */
AS_AI int32_t SFX(take)(__m256i *acc) {
    __m256i s =
        _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[1]), _mm256_add_epi32(acc[2], acc[3]));
    acc[0] = acc[1] = acc[2] = acc[3] = _mm256_setzero_si256();
    return SFX(hsum)(s);
}

/* Sherry: nb <= 4 blocks (5 bytes each, 8 five-bit pattern indices: pack_ternary.h) to the 32
 * bytes of 2-bit codes of their 32 quads, quad 8 t + g in byte 8 t + g: pdep spreads each block's
 * 40 bits to 8 index bytes, pshufb looks the slots up in the first 16 codebook entries, and where
 * the sign bit (0x10) is set the negated pattern 0xAA - pattern is blended in. Blocks past nb
 * decode as index 0: they meet zero activations. */
AS_AI __m256i SFX(sherry_decode)(const uint8_t *p, int nb) {
    uint64_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
    if (nb == 4) { /* 8-byte loads inside the chunk's 20 bytes (pdep ignores the bits past 40) */
        memcpy(&x0, p, 8);
        memcpy(&x1, p + 5, 8);
        memcpy(&x2, p + 10, 8);
        memcpy(&x3, p + 12, 8);
        x3 >>= 24;
    } else { /* a row's tail of nb < 4 blocks */
        memcpy(&x0, p, 5);
        if (nb > 1) memcpy(&x1, p + 5, 5);
        if (nb > 2) memcpy(&x2, p + 10, 5);
    }
    const unsigned long long m5 = 0x1F1F1F1F1F1F1F1Full;
    const __m256i idx =
        _mm256_setr_epi64x((long long)_pdep_u64(x0, m5), (long long)_pdep_u64(x1, m5),
                           (long long)_pdep_u64(x2, m5), (long long)_pdep_u64(x3, m5));
    const __m256i cb =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)as_sherry_codebook));
    const __m256i pat = _mm256_shuffle_epi8(cb, idx);
    const __m256i s10 = _mm256_set1_epi8(0x10);
    const __m256i sm = _mm256_cmpeq_epi8(_mm256_and_si256(idx, s10), s10);
    return _mm256_blendv_epi8(pat, _mm256_sub_epi8(_mm256_set1_epi8((char)0xAA), pat), sm);
}

/* TQ1_0 trits: byte u times k (mod 256, per byte: even and odd bytes of each 16-bit lane apart),
 * then (3 u) >> 8 by a 16-bit high multiply. k may differ per lane. */
AS_AI __m256i SFX(tq1_trits)(__m256i v, __m256i k) {
    const __m256i three = _mm256_set1_epi16(3);
    const __m256i e = _mm256_and_si256(v, _mm256_set1_epi16(0x00FF));
    const __m256i o = _mm256_and_si256(v, _mm256_set1_epi16((short)0xFF00));
    const __m256i me = _mm256_slli_epi16(_mm256_mullo_epi16(e, k), 8);
    const __m256i mo = _mm256_and_si256(_mm256_mullo_epi16(o, k), _mm256_set1_epi16((short)0xFF00));
    return _mm256_or_si256(_mm256_mulhi_epu16(me, three),
                           _mm256_slli_epi16(_mm256_mulhi_epu16(mo, three), 8));
}

#ifdef AS_ZMM
/* ---- AVX-512 with 512-bit vectors (Zen 5 and Intel run them at full width) ----
 * One 128-weight chunk of 2-bit codes (32 bytes, plane p = bits 2p) becomes two vectors,
 * A = [plane 0 | plane 1] and B = [plane 2 | plane 3], which meet the chunk's activations in plane
 * order as two contiguous 64-byte loads: half the instructions of the 256-bit loop per weight. */
AS_AI void SFX(split512)(__m256i w, __m512i *A, __m512i *B) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m512i ww = _mm512_broadcast_i64x4(w);
    *A = _mm512_and_si512(_mm512_srlv_epi64(ww, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2)), m3);
    *B = _mm512_and_si512(_mm512_srlv_epi64(ww, _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6)), m3);
}

/* Sherry, two chunks (8 blocks, 40 bytes: lo = bytes 0..31, hi = 32..39) at a time, no 2-bit
 * packing between: vpermt2b puts block L's 5 bytes in qword L, vpmultishiftqb moves field t of
 * each qword to byte t (bits 5t..5t+7), and vpermb (6 index bits: the fields' garbage bit 5 meets a
 * table holding the 32 entries twice) looks up T[p] = lane p codes of the 32 patterns, giving
 * P[p] = [chunk 2s lane p | chunk 2s + 1 lane p], which meets the 64 contiguous activation bytes
 * of plane p of the pair (plane_pos). 6 shuffles per 256 weights. */
AS_AI void SFX(sherry2x)(__m256i lo, __m128i hi, const __m512i *T, __m512i *P) {
    const __m512i gather = _mm512_setr_epi64(
        0x0404040403020100ll, 0x0909090908070605ll, 0x0E0E0E0E0D0C0B0All, 0x131313131211100Fll,
        0x1818181817161514ll, 0x1D1D1D1D1C1B1A19ll, 0x4242424241401F1Ell, 0x4747474746454443ll);
    const __m512i q =
        _mm512_permutex2var_epi8(_mm512_castsi256_si512(lo), gather, _mm512_castsi128_si512(hi));
    const __m512i ms = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x231E19140F0A0500ll), q);
    const __m512i e = _mm512_permutexvar_epi8(ms, *T);
    UNROLL for (int p = 0; p < 4; p++) P[p] = _mm512_gf2p8affine_epi64_epi8(
        e, _mm512_set1_epi64((long long)((1ull << (2 * p)) << 56 | (2ull << (2 * p)) << 48)), 0);
}
/* The 2-chunk window at p: n bytes (40: whole; less at a row's end: masked loads, their missing
 * blocks decode as index 0 and meet zero activations). */
/* The same from one 64-byte load at p (the 24 bytes past the pair are ignored: only where the
 * row goes on for 24 more bytes), gathered by a one-source vpermb instead of vpermt2b. */
AS_AI void SFX(sherry2_64)(const uint8_t *p, const __m512i *T, __m512i *P) {
    const __m512i gather = _mm512_setr_epi64(
        0x0404040403020100ll, 0x0909090908070605ll, 0x0E0E0E0E0D0C0B0All, 0x131313131211100Fll,
        0x1818181817161514ll, 0x1D1D1D1D1C1B1A19ll, 0x2222222221201F1Ell, 0x2727272726252423ll);
    const __m512i q = _mm512_permutexvar_epi8(gather, _mm512_loadu_si512(p));
    const __m512i ms = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x231E19140F0A0500ll), q);
    UNROLL for (int p = 0; p < 4; p++) P[p] = _mm512_permutexvar_epi8(ms, T[1 + p]);
}
AS_AI void SFX(sherry2_at)(const uint8_t *p, int n, const __m512i *T, __m512i *P) {
    if (n >= 64)
        SFX(sherry2_64)(p, T, P);
    else if (n >= 40)
        SFX(sherry2x)
    (_mm256_loadu_si256((const __m256i *)p), _mm_loadl_epi64((const __m128i *)(p + 32)), T, P);
    else SFX(sherry2x)(_mm256_maskz_loadu_epi8((__mmask32)((1ull << (n < 32 ? n : 32)) - 1), p),
                       _mm_maskz_loadu_epi8((__mmask16)((1u << (n > 32 ? n - 32 : 0)) - 1), p + 32),
                       T, P);
}

/* acc[m][2 h], acc[m][2 h + 1] += A, B against chunk activations at qp + off: h cycles over
 * U512(M) consecutive chunks so that 2 U independent chains per token hide vpdpbusd's latency (a
 * single token needs 8: with 4, the loop ran at the latency, 2.5 cycles per chunk). */
#define U512(M) ((M) == 1 ? 4 : 2)
AS_AI void SFX(dot512)(__m512i (*acc)[8], int h, __m512i A, __m512i B, const struct as_act8 *a,
                       int M, size_t off) {
    UNROLL for (int m = 0; m < M; m++) {
        const int8_t *x = a[m].qp + off;
        acc[m][2 * h] = _mm512_dpbusd_epi32(acc[m][2 * h], A, _mm512_loadu_si512(x));
        acc[m][2 * h + 1] = _mm512_dpbusd_epi32(acc[m][2 * h + 1], B, _mm512_loadu_si512(x + 64));
    }
}

AS_AI int32_t SFX(take512)(__m512i *acc, int M) {
    __m512i s =
        _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
    acc[0] = acc[1] = acc[2] = acc[3] = _mm512_setzero_si512();
    if (U512(M) == 4) {
        s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(acc[4], acc[5]),
                                                 _mm512_add_epi32(acc[6], acc[7])));
        acc[4] = acc[5] = acc[6] = acc[7] = _mm512_setzero_si512();
    }
    return _mm512_reduce_add_epi32(s);
}

/* The nc chunks of a plain 2-bit row (I2_S, SEQ2, TQ2_0: 32 bytes per chunk at row + 32 c,
 * activations at off0 + 128 c), U512(M) at a time. */
AS_AI void SFX(plain512)(__m512i (*acc)[8], const uint8_t *row, int nc, const struct as_act8 *a,
                         int M, size_t off0) {
    const int U = U512(M);
    __m512i A, B;
    int c = 0;
    for (; c + U <= nc; c += U)
        UNROLL for (int h = 0; h < U; h++) {
            SFX(split512)(_mm256_loadu_si256((const __m256i *)(row + 32 * (c + h))), &A, &B);
            SFX(dot512)(acc, h, A, B, a, M, off0 + 128 * (size_t)(c + h));
        }
    UNROLL for (int h = 0; h < U && c < nc; c++, h++) {
        SFX(split512)(_mm256_loadu_si256((const __m256i *)(row + 32 * c)), &A, &B);
        SFX(dot512)(acc, h, A, B, a, M, off0 + 128 * (size_t)c);
    }
}

/* TQ1_0 on 512-bit vectors: a byte's trit n is ((uint8)(b 3^n) 3) >> 8, i.e. 0, 1, 2 as
 * (uint8)(b 3^n) is below 86, below 171, or above; the byte products are exact mod 256 as adds
 * (3 v = v + v + v), so no 16-bit multiplies. The 4 vectors of a 256-block below hold, byte for
 * byte, the multiples whose trits meet the natural-order activations 64 i .. 64 i + 63. */
AS_AI __m512i SFX(x3)(__m512i v) {
    return _mm512_add_epi8(v, _mm512_add_epi8(v, v));
}
AS_AI __m512i SFX(trit512)(__m512i v) {
    const __m512i one = _mm512_set1_epi8(1);
    const __m512i t = _mm512_maskz_mov_epi8(_mm512_cmpge_epu8_mask(v, _mm512_set1_epi8(86)), one);
    return _mm512_mask_add_epi8(t, _mm512_cmpge_epu8_mask(v, _mm512_set1_epi8((char)171)), t, one);
}
/* Z[0] = [qs * 1 | qs * 3] (elements 0..63: trit n of qs[m] is element 32 n + m), Z[1] = [* 9 |
 * * 27], Z[2] = [qs * 81 | c * 1, c * 3] (c = qs[32..47]: trit n of c[m] is element 160 + 16 n +
 * m), Z[3] = [c * 9, c * 27 | c * 81, h] (h: byte 4 n + j = qh[j] * 3^n, element 240 + 4 n + j). */
AS_AI void SFX(tq1_build)(const uint8_t *blk, __m512i *Z) {
    const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)blk));
    const __m512i c = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 32)));
    uint32_t qh;
    memcpy(&qh, blk + 48, 4);
    /* multipliers by 128-bit lane: q: 1 1 3 3 (then 9, 81 ...), c: 1 3 9 27 (then 81) */
    Z[0] = _mm512_mask_blend_epi64(0xF0, q, SFX(x3)(q));
    Z[1] = SFX(x3)(SFX(x3)(Z[0]));
    const __m512i q81 = SFX(x3)(SFX(x3)(Z[1])); /* [81 | 243]: the low half is used */
    const __m512i c3 = SFX(x3)(c), c9 = SFX(x3)(c3), c27 = SFX(x3)(c9), c81 = SFX(x3)(c27);
    Z[2] = _mm512_mask_blend_epi64(0x30, _mm512_mask_blend_epi64(0xC0, q81, c3), c);
    /* h: qh times 1, 3, 9, 27 by dword (4 n + j) */
    const __m128i h1 = _mm_set1_epi32((int)qh);
    const __m128i h3 = _mm_add_epi8(h1, _mm_add_epi8(h1, h1));
    const __m128i h9 = _mm_add_epi8(h3, _mm_add_epi8(h3, h3));
    const __m128i h27 = _mm_add_epi8(h9, _mm_add_epi8(h9, h9));
    const __m128i h =
        _mm_blend_epi32(_mm_blend_epi32(h1, h3, 0x2), _mm_blend_epi32(h9, h27, 0x8), 0xC);
    Z[3] = _mm512_mask_blend_epi64(0x03, c27, c9);
    Z[3] = _mm512_mask_blend_epi64(0x30, Z[3], c81);
    Z[3] = _mm512_inserti32x4(Z[3], h, 3);
}

/* The partial last chunk (nt < 4 blocks of 32) of a SEQ2 row as A, B, its 8-byte blocks
 * assembled in registers (no read past the row; a copy through a stack buffer stalled store
 * forwarding); the missing blocks meet zero activations. */
AS_AI void SFX(tail512)(const uint8_t *row, int nc, int nt, __m512i *A, __m512i *B) {
    const uint8_t *p = row + 32 * nc;
    uint64_t q0, q1 = 0, q2 = 0;
    memcpy(&q0, p, 8);
    if (nt > 1) memcpy(&q1, p + 8, 8);
    if (nt > 2) memcpy(&q2, p + 16, 8);
    SFX(split512)(_mm256_setr_epi64x((long long)q0, (long long)q1, (long long)q2, 0), A, B);
}

/* SFX(row_sums) for the 2-bit formats and Sherry; 0 when the format has no 512-bit path. */
AS_AI int SFX(row_sums512)(const struct as_tern_matrix *W, const uint8_t *row,
                           const struct as_act8 *a, int M, int32_t *S, int nsb, const __m512i *T) {
    const int K = W->K, nc = K / 128, nt = K % 128 / 32;
    __m512i acc[4][8];
    UNROLL for (int m = 0; m < M; m++) UNROLL for (int i = 0; i < 8; i++) acc[m][i] =
        _mm512_setzero_si512();
    __m512i A, B;
    switch (W->fmt) {
    case AS_TF_I2_S:
        SFX(plain512)(acc, row, nc, a, M, 0);
        break;
    case AS_TF_SEQ2:
        SFX(plain512)(acc, row, nc, a, M, 0);
        if (nt) {
            SFX(tail512)(row, nc, nt, &A, &B);
            SFX(dot512)(acc, 0, A, B, a, M, 128 * (size_t)nc);
        }
        break;
    case AS_TF_SHERRY: {
        const int nb = K / 32, np = nb / 8, rem = 5 * (nb - 8 * np);
        __m512i P[4];
        for (int i = 0; i <= np; i++) {
            if (i == np && !rem) break;
            SFX(sherry2_at)(row + 40 * (size_t)i, i < np ? 40 : rem, T, P);
            UNROLL for (int m = 0; m < M; m++) UNROLL for (int p = 0; p < 4; p++) acc[m][p] =
                _mm512_dpbusd_epi32(acc[m][p], P[p],
                                    _mm512_loadu_si512(a[m].qp + 256 * (size_t)i + 64 * p));
        }
        break;
    }
    case AS_TF_TQ2_0:
        for (int b = 0; b < K / 256; b++) {
            SFX(plain512)(acc, row + (size_t)b * sizeof(as_block_tq2_0), 2, a, M, 256 * (size_t)b);
            for (int m = 0; m < M; m++)
                S[m * nsb + b] = SFX(take512)(acc[m], M);
        }
        return 1;
    case AS_TF_TQ1_0:
        for (int b = 0; b < K / 256; b++) {
            __m512i Z[4];
            SFX(tq1_build)(row + (size_t)b * sizeof(as_block_tq1_0), Z);
            UNROLL for (int i = 0; i < 4; i++) {
                const __m512i t = SFX(trit512)(Z[i]);
                UNROLL for (int m = 0; m < M; m++) acc[m][i] = _mm512_dpbusd_epi32(
                    acc[m][i], t, _mm512_loadu_si512(a[m].q + 256 * (size_t)b + 64 * i));
            }
            for (int m = 0; m < M; m++)
                S[m * nsb + b] = SFX(take512)(acc[m], M);
        }
        return 1;
    default:
        return 0;
    }
    for (int m = 0; m < M; m++)
        S[m * nsb] = SFX(take512)(acc[m], M);
    return 1;
}

/* ---- one token (decode), two rows at a time: each chunk's activations are loaded once for both
 * rows (with one row per pass, the 3 loads per chunk bound the loop) ---- */

/* acc[4 h .. 4 h + 3] += rows p and q's chunk (Ap, Bp; Aq, Bq) against activations x */
AS_AI void SFX(dot2r)(__m512i *acc, int h, __m512i Ap, __m512i Bp, __m512i Aq, __m512i Bq,
                      const int8_t *x) {
    const __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 64);
    acc[4 * h] = _mm512_dpbusd_epi32(acc[4 * h], Ap, x0);
    acc[4 * h + 1] = _mm512_dpbusd_epi32(acc[4 * h + 1], Bp, x1);
    acc[4 * h + 2] = _mm512_dpbusd_epi32(acc[4 * h + 2], Aq, x0);
    acc[4 * h + 3] = _mm512_dpbusd_epi32(acc[4 * h + 3], Bq, x1);
}

/* Both reductions at once: 128-bit lanes [p0 + p2, p1 + p3, q0 + q2, q1 + q3], then p's total in
 * lane 0, q's in lane 2, then 4 dwords each. */
AS_AI void SFX(reduce2)(__m512i p, __m512i q, int32_t *sp, int32_t *sq) {
    __m512i pq =
        _mm512_add_epi32(_mm512_shuffle_i64x2(p, q, 0x44), _mm512_shuffle_i64x2(p, q, 0xEE));
    pq = _mm512_add_epi32(pq, _mm512_shuffle_i64x2(pq, pq, 0xB1));
    const __m128i x = _mm512_castsi512_si128(pq), y = _mm512_extracti32x4_epi32(pq, 2);
    __m128i t = _mm_add_epi32(_mm_unpacklo_epi64(x, y), _mm_unpackhi_epi64(x, y));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    *sp = _mm_cvtsi128_si32(t);
    *sq = _mm_extract_epi32(t, 2);
}

/* Sums of rows p, q (zeroing acc): p = acc 0, 1, 4, 5; q = acc 2, 3, 6, 7. */
AS_AI void SFX(take2r)(__m512i *acc, int32_t *sp, int32_t *sq) {
    SFX(reduce2)
    (_mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[4], acc[5])),
     _mm512_add_epi32(_mm512_add_epi32(acc[2], acc[3]), _mm512_add_epi32(acc[6], acc[7])), sp, sq);
    UNROLL for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_si512();
}

/* TQ1_0, two rows, without decoding a trit. A byte's trit n is t_n = (3 y_n - y_{n+1}) / 256 with
 * y_n = (uint8)(b 3^n) (ggml's rule: t_n = (3 y_n) >> 8, and 3 y_n mod 256 is y_{n+1}), so the sum
 * over a 32-byte unit of t_n x_n (x_n: the activations trit n of each byte meets) is
 *   (3 sum_n y_n . x_n - sum_n y_{n+1} . x_n) / 256,
 * exact integer arithmetic: two vpdpbusd per 64 multiples and no per-trit work at all. A block is
 * two units: qs[0..31], and the 32 bytes ending at the block's end (qs[22..31] again, qs[32..47],
 * qh, d: no read past the block; the bytes that are not trits meet zero activations, and so does
 * qh's trit 4, which is 0 in a valid block). Y_i = [y_2i | y_2i+1] for i = 0..2 (y_0 = b: the
 * byte sums by adds, x9 by a GF2P8AFFINE byte shift and an add); a unit's activations are laid out
 * [0 | x_0 | x_1 | x_2 | x_3 | x_4 | 0] (32 bytes each, plane_pos), so Y_i meets [x_2i | x_2i+1]
 * at 32 + 64 i and [x_2i-1 | x_2i] at 64 i. */
AS_AI void SFX(tq1_rows2)(int K, const uint8_t *rp, const uint8_t *rq, const struct as_act8 *a,
                          int32_t *Sp, int32_t *Sq, size_t pf) {
    const size_t bb = sizeof(as_block_tq1_0);
    const __m512i shl3 = _mm512_set1_epi64(0x0000000102040810ll); /* byte << 3 as a GF(2) matrix */
    const __mmask64 hi = 0xFFFFFFFF00000000ull;
    for (int b = 0; b < K / 256; b++) {
        _mm_prefetch((const char *)(rp + pf + bb * b), _MM_HINT_T0);
        _mm_prefetch((const char *)(rq + pf + bb * b), _MM_HINT_T0);
        __m512i d_p = _mm512_setzero_si512(), e_p = d_p, d_q = d_p, e_q = d_p;
        UNROLL for (int u = 0; u < 2; u++) {
            const size_t o = bb * b + (u ? bb - 32 : 0);
            const __m512i U = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(rp + o)));
            const __m512i V = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(rq + o)));
            __m512i Yp = _mm512_mask_add_epi8(U, hi, U, _mm512_add_epi8(U, U));
            __m512i Yq = _mm512_mask_add_epi8(V, hi, V, _mm512_add_epi8(V, V));
            const int8_t *x = a->qp + 448 * (size_t)b + 224 * u;
            UNROLL for (int i = 0; i < 3; i++) {
                if (i) {
                    Yp = _mm512_add_epi8(Yp, _mm512_gf2p8affine_epi64_epi8(Yp, shl3, 0));
                    Yq = _mm512_add_epi8(Yq, _mm512_gf2p8affine_epi64_epi8(Yq, shl3, 0));
                }
                const __m512i xe = _mm512_loadu_si512(x + 64 * i);
                const __m512i xd = _mm512_loadu_si512(x + 32 + 64 * i);
                d_p = _mm512_dpbusd_epi32(d_p, Yp, xd);
                e_p = _mm512_dpbusd_epi32(e_p, Yp, xe);
                d_q = _mm512_dpbusd_epi32(d_q, Yq, xd);
                e_q = _mm512_dpbusd_epi32(e_q, Yq, xe);
            }
        }
        int32_t sp, sq;
        SFX(reduce2)
        (_mm512_sub_epi32(_mm512_add_epi32(d_p, _mm512_add_epi32(d_p, d_p)), e_p),
         _mm512_sub_epi32(_mm512_add_epi32(d_q, _mm512_add_epi32(d_q, d_q)), e_q), &sp, &sq);
        Sp[b] = sp / 256; /* exact: the sum is 256 times the trit sum */
        Sq[b] = sq / 256;
    }
}

/* Sherry, four rows per pass (rows r0 + j rb): a chunk pair's four activation vectors are loaded
 * once for four rows, two accumulators per row (planes 0 + 2 and 1 + 3), and the four rows'
 * sums are reduced together. */
AS_AI void SFX(sherry_rows4)(int K, const uint8_t *r0, size_t rb, const struct as_act8 *a,
                             const __m512i *T, int32_t *S, size_t pf) {
    const int nb = K / 32, np = nb / 8, rem = 5 * (nb - 8 * np);
    __m512i acc[8];
    UNROLL for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_si512();
    for (int i = 0; i <= np; i++) {
        if (i == np && !rem) break;
        const int n = i + 1 < np ? 64 : i < np ? 40 : rem; /* bytes readable at the pair */
        __m512i x[4];
        UNROLL for (int p = 0; p < 4; p++) x[p] =
            _mm512_loadu_si512(a->qp + 256 * (size_t)i + 64 * p);
        UNROLL for (int j = 0; j < 4; j++) {
            const uint8_t *rp = r0 + rb * j + 40 * (size_t)i;
            _mm_prefetch((const char *)(rp + pf), _MM_HINT_T0);
            __m512i P[4];
            SFX(sherry2_at)(rp, n, T, P);
            UNROLL for (int p = 0; p < 4; p++) acc[2 * j + (p & 1)] =
                _mm512_dpbusd_epi32(acc[2 * j + (p & 1)], P[p], x[p]);
        }
    }
    __m512i s4[4];
    UNROLL for (int j = 0; j < 4; j++) s4[j] = _mm512_add_epi32(acc[2 * j], acc[2 * j + 1]);
    /* 128-bit lane j of u: row j's 4 partial sums */
    const __m512i t0 = _mm512_add_epi32(_mm512_shuffle_i64x2(s4[0], s4[1], 0x44),
                                        _mm512_shuffle_i64x2(s4[0], s4[1], 0xEE));
    const __m512i t1 = _mm512_add_epi32(_mm512_shuffle_i64x2(s4[2], s4[3], 0x44),
                                        _mm512_shuffle_i64x2(s4[2], s4[3], 0xEE));
    __m512i u =
        _mm512_add_epi32(_mm512_shuffle_i64x2(t0, t1, 0x88), _mm512_shuffle_i64x2(t0, t1, 0xDD));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0x4E));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0xB1));
    int32_t out[16];
    _mm512_storeu_si512(out, u);
    UNROLL for (int j = 0; j < 4; j++) S[j] = out[4 * j];
}

/* Four rows' sums, acc[2 j] + acc[2 j + 1] for row j, reduced together. */
AS_AI void SFX(reduce4)(const __m512i *acc, int32_t *S) {
    __m512i s4[4];
    UNROLL for (int j = 0; j < 4; j++) s4[j] = _mm512_add_epi32(acc[2 * j], acc[2 * j + 1]);
    /* 128-bit lane j of u: row j's 4 partial sums */
    const __m512i t0 = _mm512_add_epi32(_mm512_shuffle_i64x2(s4[0], s4[1], 0x44),
                                        _mm512_shuffle_i64x2(s4[0], s4[1], 0xEE));
    const __m512i t1 = _mm512_add_epi32(_mm512_shuffle_i64x2(s4[2], s4[3], 0x44),
                                        _mm512_shuffle_i64x2(s4[2], s4[3], 0xEE));
    __m512i u =
        _mm512_add_epi32(_mm512_shuffle_i64x2(t0, t1, 0x88), _mm512_shuffle_i64x2(t0, t1, 0xDD));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0x4E));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0xB1));
    int32_t out[16];
    _mm512_storeu_si512(out, u);
    UNROLL for (int j = 0; j < 4; j++) S[j] = out[4 * j];
}

/* SEQ2, four rows per pass (rows r0 + j rb), sums and finish together. SmolLM2's rows of 576
 * weights are 144 bytes: at two rows per pass (rows2_512) the per-row work beside the dot products
 * (a reduction, the tail chunk assembled from scalar loads, a scalar finish) weighed as much as
 * the 4.5 chunks themselves, and K = 576 ran at 100 GMAC/s from L2 against 185 at K = 1536. Here
 * each chunk's two activation vectors are loaded once for four rows, the tail chunk is one masked
 * load per row, the four sums are reduced together, and the four outputs are finished as one
 * 4-lane vector: the same float operations, in the same order, as finish(), so the same bits. */
AS_AI void SFX(seq2_rows4)(int K, const uint8_t *r0, size_t rb, const struct as_act8 *a,
                           const uint8_t *scales, float *y, size_t pf) {
    const int nc = K / 128, nt = K % 128 / 32;
    __m512i acc[8], A, B;
    UNROLL for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_si512();
    /* the four rows are 4 rb contiguous bytes: prefetch the same span pf bytes on */
    for (size_t o = 0; o < 4 * rb; o += 64)
        _mm_prefetch((const char *)(r0 + pf + o), _MM_HINT_T0);
    /* and the scale of the row 64 rows on: the scales follow the N rows, a second stream that
     * otherwise costs a miss every 16 rows */
    _mm_prefetch((const char *)(scales + 256), _MM_HINT_T0);
    for (int c = 0; c < nc; c++) {
        const int8_t *x = a->qp + 128 * (size_t)c;
        const __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 64);
        UNROLL for (int j = 0; j < 4; j++) {
            SFX(split512)
            (_mm256_loadu_si256((const __m256i *)(r0 + rb * j + 32 * (size_t)c)), &A, &B);
            acc[2 * j] = _mm512_dpbusd_epi32(acc[2 * j], A, x0);
            acc[2 * j + 1] = _mm512_dpbusd_epi32(acc[2 * j + 1], B, x1);
        }
    }
    if (nt) { /* the partial last chunk: 8 nt bytes per row; its missing blocks meet zero
               * activations (qp is zero past K) */
        const int8_t *x = a->qp + 128 * (size_t)nc;
        const __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 64);
        const __mmask32 in = (__mmask32)((1u << (8 * nt)) - 1);
        UNROLL for (int j = 0; j < 4; j++) {
            SFX(split512)(_mm256_maskz_loadu_epi8(in, r0 + rb * j + 32 * (size_t)nc), &A, &B);
            acc[2 * j] = _mm512_dpbusd_epi32(acc[2 * j], A, x0);
            acc[2 * j + 1] = _mm512_dpbusd_epi32(acc[2 * j + 1], B, x1);
        }
    }
    __m512i s4[4];
    UNROLL for (int j = 0; j < 4; j++) s4[j] = _mm512_add_epi32(acc[2 * j], acc[2 * j + 1]);
    /* 128-bit lane j of u: row j's 4 partial sums (as reduce4), then every dword of lane j holds
     * row j's total; dwords 0, 4, 8, 12 to the low 128 bits */
    const __m512i t0 = _mm512_add_epi32(_mm512_shuffle_i64x2(s4[0], s4[1], 0x44),
                                        _mm512_shuffle_i64x2(s4[0], s4[1], 0xEE));
    const __m512i t1 = _mm512_add_epi32(_mm512_shuffle_i64x2(s4[2], s4[3], 0x44),
                                        _mm512_shuffle_i64x2(s4[2], s4[3], 0xEE));
    __m512i u =
        _mm512_add_epi32(_mm512_shuffle_i64x2(t0, t1, 0x88), _mm512_shuffle_i64x2(t0, t1, 0xDD));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0x4E));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0xB1));
    const __m128i S = _mm512_castsi512_si128(_mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), u));
    /* finish(): (float)(2 S - 3 Q) * (0.5f * scale) * d, lane by lane */
    const __m128i v = _mm_sub_epi32(_mm_add_epi32(S, S), _mm_set1_epi32(3 * a->total));
    const __m128 hs =
        _mm_mul_ps(_mm_set1_ps(0.5f), _mm_castsi128_ps(_mm_loadu_si128((const __m128i *)scales)));
    _mm_storeu_ps(y, _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(v), hs), _mm_set1_ps(a->d)));
}

/* TQ1_0, four rows per pass (tq1_rows2's sums; each block's activations loaded once for four
 * rows, the four rows' block sums reduced together). */
AS_AI void SFX(tq1_rows4)(int K, const uint8_t *r0, size_t rb, const struct as_act8 *a, int32_t *S,
                          int nsb, size_t pf) {
    const size_t bb = sizeof(as_block_tq1_0);
    const __m512i shl3 = _mm512_set1_epi64(0x0000000102040810ll);
    const __mmask64 hi = 0xFFFFFFFF00000000ull;
    for (int b = 0; b < K / 256; b++) {
        __m512i d[4], e[4];
        UNROLL for (int j = 0; j < 4; j++) {
            d[j] = e[j] = _mm512_setzero_si512();
            _mm_prefetch((const char *)(r0 + rb * j + pf + bb * b), _MM_HINT_T0);
        }
        UNROLL for (int u = 0; u < 2; u++) {
            const size_t o = bb * b + (u ? bb - 32 : 0);
            const int8_t *x = a->qp + 448 * (size_t)b + 224 * u;
            __m512i Y[4];
            UNROLL for (int j = 0; j < 4; j++) {
                const __m512i U =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(r0 + rb * j + o)));
                Y[j] = _mm512_mask_add_epi8(U, hi, U, _mm512_add_epi8(U, U));
            }
            UNROLL for (int i = 0; i < 3; i++) {
                const __m512i xe = _mm512_loadu_si512(x + 64 * i);
                const __m512i xd = _mm512_loadu_si512(x + 32 + 64 * i);
                UNROLL for (int j = 0; j < 4; j++) {
                    if (i)
                        Y[j] = _mm512_add_epi8(Y[j], _mm512_gf2p8affine_epi64_epi8(Y[j], shl3, 0));
                    d[j] = _mm512_dpbusd_epi32(d[j], Y[j], xd);
                    e[j] = _mm512_dpbusd_epi32(e[j], Y[j], xe);
                }
            }
        }
        __m512i v[8];
        UNROLL for (int j = 0; j < 4; j++) {
            v[2 * j] = _mm512_sub_epi32(_mm512_add_epi32(d[j], _mm512_add_epi32(d[j], d[j])), e[j]);
            v[2 * j + 1] = _mm512_setzero_si512();
        }
        int32_t s4[4];
        SFX(reduce4)(v, s4);
        UNROLL for (int j = 0; j < 4; j++) S[j * nsb + b] = s4[j] / 256; /* exact */
    }
}

/* pf: bytes from a row to the same place in a row further on, prefetched as we go: two rows read
 * in lockstep 1 KiB apart (K = 4096) defeated the hardware prefetcher (42 against 100 GMAC/s
 * streaming from memory); 16 rows ahead gave I2_S 110-130 GMAC/s at both 0.7B shapes. */
AS_AI void SFX(rows2_512)(int fmt, int K, const uint8_t *rp, const uint8_t *rq,
                          const struct as_act8 *a, const __m512i *T, int32_t *Sp, int32_t *Sq,
                          size_t pf) {
    __m512i acc[8], Ap, Bp, Aq, Bq;
    UNROLL for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_si512();
    if (fmt == AS_TF_SHERRY) { /* two chunks at a time; row p in acc 0..3, q in 4..7 */
        const int nb = K / 32, np = nb / 8, rem = 5 * (nb - 8 * np);
        __m512i P[4], Q[4];
        for (int i = 0; i <= np; i++) {
            if (i == np && !rem) break;
            _mm_prefetch((const char *)(rp + pf + 40 * (size_t)i), _MM_HINT_T0);
            _mm_prefetch((const char *)(rq + pf + 40 * (size_t)i), _MM_HINT_T0);
            const int n = i + 1 < np ? 64 : i < np ? 40 : rem; /* bytes readable at the pair */
            SFX(sherry2_at)(rp + 40 * (size_t)i, n, T, P);
            SFX(sherry2_at)(rq + 40 * (size_t)i, n, T, Q);
            UNROLL for (int p = 0; p < 4; p++) {
                const __m512i x = _mm512_loadu_si512(a->qp + 256 * (size_t)i + 64 * p);
                acc[p] = _mm512_dpbusd_epi32(acc[p], P[p], x);
                acc[4 + p] = _mm512_dpbusd_epi32(acc[4 + p], Q[p], x);
            }
        }
        SFX(reduce2)
        (_mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3])),
         _mm512_add_epi32(_mm512_add_epi32(acc[4], acc[5]), _mm512_add_epi32(acc[6], acc[7])), Sp,
         Sq);
        return;
    }
    if (fmt == AS_TF_TQ1_0) { /* trit sums without decoding the trits (tq1_rows2) */
        SFX(tq1_rows2)(K, rp, rq, a, Sp, Sq, pf);
        return;
    }
    if (fmt == AS_TF_TQ2_0) { /* 2 chunks per 256-block, each block summed apart */
        const size_t bb = sizeof(as_block_tq2_0);
        for (int b = 0; b < K / 256; b++) {
            _mm_prefetch((const char *)(rp + pf + bb * b), _MM_HINT_T0);
            _mm_prefetch((const char *)(rq + pf + bb * b), _MM_HINT_T0);
            UNROLL for (int h = 0; h < 2; h++) {
                SFX(split512)
                (_mm256_loadu_si256((const __m256i *)(rp + bb * b + 32 * h)), &Ap, &Bp);
                SFX(split512)
                (_mm256_loadu_si256((const __m256i *)(rq + bb * b + 32 * h)), &Aq, &Bq);
                SFX(dot2r)(acc, h, Ap, Bp, Aq, Bq, a->qp + 256 * (size_t)b + 128 * h);
            }
            SFX(take2r)(acc, &Sp[b], &Sq[b]);
        }
        return;
    }
    const int nc = K / 128, nt = K % 128 / 32;
    const size_t cb = 32; /* bytes per chunk */
    int c = 0;
    for (; c + 2 <= nc; c += 2) {
        if (pf) {
            _mm_prefetch((const char *)(rp + pf + cb * c), _MM_HINT_T0);
            _mm_prefetch((const char *)(rq + pf + cb * c), _MM_HINT_T0);
        }
        UNROLL for (int h = 0; h < 2; h++) {
            SFX(split512)(_mm256_loadu_si256((const __m256i *)(rp + 32 * (c + h))), &Ap, &Bp);
            SFX(split512)(_mm256_loadu_si256((const __m256i *)(rq + 32 * (c + h))), &Aq, &Bq);
            SFX(dot2r)(acc, h, Ap, Bp, Aq, Bq, a->qp + 128 * (size_t)(c + h));
        }
    }
    if (c < nc) {
        SFX(split512)(_mm256_loadu_si256((const __m256i *)(rp + 32 * c)), &Ap, &Bp);
        SFX(split512)(_mm256_loadu_si256((const __m256i *)(rq + 32 * c)), &Aq, &Bq);
        SFX(dot2r)(acc, 0, Ap, Bp, Aq, Bq, a->qp + 128 * (size_t)c);
    }
    if (nt && fmt != AS_TF_I2_S) {
        SFX(tail512)(rp, nc, nt, &Ap, &Bp);
        SFX(tail512)(rq, nc, nt, &Aq, &Bq);
        SFX(dot2r)(acc, 1, Ap, Bp, Aq, Bq, a->qp + 128 * (size_t)nc);
    }
    SFX(take2r)(acc, Sp, Sq);
}
#endif

/* Integer sums S[m * nsb + b] of one row for M tokens (b over 256-blocks for TQ, else b = 0). */
AS_AI void SFX(row_sums)(const struct as_tern_matrix *W, const uint8_t *row,
                         const struct as_act8 *a, int M, int32_t *S, int nsb) {
    const int K = W->K;
    __m256i acc[4][4];
    for (int m = 0; m < M; m++)
        acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = _mm256_setzero_si256();
    switch (W->fmt) {
    case AS_TF_I2_S:
        for (int c = 0; c < K / 128; c++)
            SFX(planes)
        (acc, _mm256_loadu_si256((const __m256i *)(row + 32 * c)), a, M, 128 * (size_t)c);
        for (int m = 0; m < M; m++)
            S[m * nsb] = SFX(take)(acc[m]);
        break;
    case AS_TF_SEQ2: {
        const int nc = K / 128, nt = K % 128 / 32;
        for (int c = 0; c < nc; c++)
            SFX(planes)
        (acc, _mm256_loadu_si256((const __m256i *)(row + 32 * c)), a, M, 128 * (size_t)c);
        if (nt) { /* a partial last chunk (masked load: 2 dwords per block); its missing blocks
                   * meet zero activations */
            const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(2 * nt), lane);
            SFX(planes)
            (acc, _mm256_maskload_epi32((const int *)(row + 32 * nc), mask), a, M,
             128 * (size_t)nc);
        }
        for (int m = 0; m < M; m++)
            S[m * nsb] = SFX(take)(acc[m]);
        break;
    }
    case AS_TF_SHERRY: {
        const int nc = K / 128, nt = K % 128 / 32;
        for (int c = 0; c < nc; c++)
            SFX(planes_s)
        (acc, SFX(sherry_decode)(row + 20 * c, 4), a, M,
         256 * (size_t)(c / 2) + 32 * (size_t)(c % 2), 64);
        if (nt) SFX(planes_s)
        (acc, SFX(sherry_decode)(row + 20 * nc, nt), a, M,
         256 * (size_t)(nc / 2) + 32 * (size_t)(nc % 2), 64);
        for (int m = 0; m < M; m++)
            S[m * nsb] = SFX(take)(acc[m]);
        break;
    }
    case AS_TF_TQ2_0:
        for (int b = 0; b < K / 256; b++) {
            const uint8_t *blk = row + (size_t)b * sizeof(as_block_tq2_0);
            SFX(planes)(acc, _mm256_loadu_si256((const __m256i *)blk), a, M, 256 * (size_t)b);
            SFX(planes)
            (acc, _mm256_loadu_si256((const __m256i *)(blk + 32)), a, M, 256 * (size_t)b + 128);
            for (int m = 0; m < M; m++)
                S[m * nsb + b] = SFX(take)(acc[m]);
        }
        break;
    default: /* TQ1_0 */
        for (int b = 0; b < K / 256; b++) {
            const uint8_t *blk = row + (size_t)b * sizeof(as_block_tq1_0);
            const size_t o = 256 * (size_t)b;
            const __m256i v = _mm256_loadu_si256((const __m256i *)blk);
            const __m256i v16 =
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 32)));
            static const short pow3[5] = {1, 3, 9, 27, 81};
            __m256i t[5], u[3];
            for (int n = 0; n < 5; n++)
                t[n] = SFX(tq1_trits)(v, _mm256_set1_epi16(pow3[n]));
            /* the 16-byte part: trits n (low half) and n + 1 (high half) meet 32 contiguous
             * activations 160 + 16 n ..; the last vector pairs trit 4 of qs[32..47] (elements
             * 224..239) with qh's 4 trits (elements 240 + j + 4 n: byte 4 n + j of the high half
             * holds qh[j] and is multiplied by 3^n) */
            uint32_t qh;
            memcpy(&qh, blk + 48, 4);
            const __m256i vq = _mm256_set_m128i(_mm_set1_epi32((int)qh),
                                                _mm_loadu_si128((const __m128i *)(blk + 32)));
            u[0] = SFX(tq1_trits)(
                v16, _mm256_setr_epi16(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3));
            u[1] = SFX(tq1_trits)(
                v16, _mm256_setr_epi16(9, 9, 9, 9, 9, 9, 9, 9, 27, 27, 27, 27, 27, 27, 27, 27));
            u[2] = SFX(tq1_trits)(
                vq, _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27));
            for (int m = 0; m < M; m++) {
                const int8_t *x = a[m].q + o;
                __m256i s0 = _mm256_setzero_si256(), s1 = s0;
                for (int n = 0; n < 5; n += 2) {
                    s0 = DOT_U8S8(s0, t[n], _mm256_loadu_si256((const __m256i *)(x + 32 * n)));
                    if (n + 1 < 5)
                        s1 = DOT_U8S8(s1, t[n + 1],
                                      _mm256_loadu_si256((const __m256i *)(x + 32 * n + 32)));
                }
                for (int n = 0; n < 3; n++)
                    s1 =
                        DOT_U8S8(s1, u[n], _mm256_loadu_si256((const __m256i *)(x + 160 + 32 * n)));
                int32_t r = SFX(hsum)(_mm256_add_epi32(s0, s1));
                S[m * nsb + b] = r;
            }
        }
        break;
    }
}

/* finish() with the block scales converted by F16C (exact, like as_f16_to_f32, which is a call
 * per 256 weights and weighed 40% of a TQ2_0 GEMV) */
AS_AI float SFX(finish)(const struct as_tern_matrix *W, size_t rb, int r, const int32_t *S,
                        const struct as_act8 *a) {
    if (W->fmt != AS_TF_TQ1_0 && W->fmt != AS_TF_TQ2_0) return finish(W, rb, r, S, a);
    const uint8_t *row = W->data + (size_t)r * rb;
    const size_t bb = W->fmt == AS_TF_TQ1_0 ? sizeof(as_block_tq1_0) : sizeof(as_block_tq2_0);
    float acc = 0.0f;
    for (int b = 0; b < W->K / 256; b++) {
        uint16_t h;
        memcpy(&h, row + (size_t)b * bb + bb - 2, 2);
        acc += (float)(S[b] - a->sum256[b]) * _cvtsh_ss(h);
    }
    return acc * a->d;
}

static void SFX(tern_gemm)(const struct as_tern_matrix *W, const struct as_act8 *a, int M, float *Y,
                           int ldy, int r0, int r1) {
    const size_t rb = as_tern_row_bytes(W->fmt, W->K);
    const int nsb = W->K / 256 + 1;
    int32_t *S = as_xmalloc((size_t)4 * nsb * sizeof *S);
#ifdef AS_ZMM
    /* Sherry's lane tables: the codebook split like a chunk of 2-bit codes */
    __m512i T[5]; /* T[p]: lane p codes of the 32 patterns, twice */
    const __m512i cbb =
        _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)as_sherry_codebook));
    T[0] = cbb;
    for (int p = 0; p < 4; p++)
        T[1 + p] = _mm512_and_si512(_mm512_srli_epi16(cbb, 2 * p), _mm512_set1_epi8(3));
#endif
    int r = r0;
#ifdef AS_ZMM
    const size_t pfd = 16; /* prefetch 16 rows ahead: measured 2, 4, 8, 16 (docs/ternary.md) */
    if (M == 1 && W->fmt == AS_TF_SHERRY)
        for (; r + 3 < r1; r += 4) {
            int32_t S4[4];
            SFX(sherry_rows4)(W->K, W->data + (size_t)r * rb, rb, a, T, S4, pfd * rb);
            for (int j = 0; j < 4; j++)
                Y[r + j] = finish(W, rb, r + j, &S4[j], a);
        }
    if (M == 1 && W->fmt == AS_TF_SEQ2 && as_tern_seq2_rows == 4) {
        /* 8 KiB ahead, not 16 rows: 16 rows of 576 weights are 2.3 KiB, and SmolLM2's matrices
         * ran at 60-73% of the bandwidth with it against 75-85% at 6-14 KiB; at K = 1536, 16 rows
         * (6 KiB) left the four-row pass at 60% against 85% at 8 KiB (docs/ternary.md) */
        const size_t pf_seq2 = 8192;
        for (; r + 3 < r1; r += 4)
            SFX(seq2_rows4)
        (W->K, W->data + (size_t)r * rb, rb, a, W->data + (size_t)W->N * rb + 4 * (size_t)r, Y + r,
         pf_seq2);
    }
    if (M == 1 && W->fmt == AS_TF_TQ1_0)
        for (; r + 3 < r1; r += 4) {
            SFX(tq1_rows4)(W->K, W->data + (size_t)r * rb, rb, a, S, nsb, pfd * rb);
            for (int j = 0; j < 4; j++)
                Y[r + j] = SFX(finish)(W, rb, r + j, S + j * nsb, a);
        }
    if (M == 1)
        for (; r + 1 < r1; r += 2) {
            const uint8_t *rp = W->data + (size_t)r * rb;
            int32_t *Sq = S + nsb;
            switch (W->fmt) { /* constant formats: one specialised loop each */
            case AS_TF_I2_S:
                SFX(rows2_512)(AS_TF_I2_S, W->K, rp, rp + rb, a, T, S, Sq, pfd * rb);
                break;
            case AS_TF_SEQ2:
                SFX(rows2_512)(AS_TF_SEQ2, W->K, rp, rp + rb, a, T, S, Sq, pfd * rb);
                break;
            case AS_TF_SHERRY:
                SFX(rows2_512)(AS_TF_SHERRY, W->K, rp, rp + rb, a, T, S, Sq, pfd * rb);
                break;
            case AS_TF_TQ1_0:
                SFX(rows2_512)(AS_TF_TQ1_0, W->K, rp, rp + rb, a, T, S, Sq, pfd * rb);
                break;
            default:
                SFX(rows2_512)(AS_TF_TQ2_0, W->K, rp, rp + rb, a, T, S, Sq, pfd * rb);
                break;
            }
            Y[r] = SFX(finish)(W, rb, r, S, a);
            Y[r + 1] = SFX(finish)(W, rb, r + 1, Sq, a);
        }
#endif
    for (; r < r1; r++) {
        const uint8_t *row = W->data + (size_t)r * rb;
#ifdef AS_ZMM
        int done;
        switch (M) {
        case 1:
            done = SFX(row_sums512)(W, row, a, 1, S, nsb, T);
            break;
        case 2:
            done = SFX(row_sums512)(W, row, a, 2, S, nsb, T);
            break;
        case 3:
            done = SFX(row_sums512)(W, row, a, 3, S, nsb, T);
            break;
        default:
            done = SFX(row_sums512)(W, row, a, 4, S, nsb, T);
            break;
        }
        if (done) {
            for (int m = 0; m < M; m++)
                Y[(size_t)m * ldy + r] = SFX(finish)(W, rb, r, S + m * nsb, &a[m]);
            continue;
        }
#endif
        switch (M) {
        case 1:
            SFX(row_sums)(W, row, a, 1, S, nsb);
            break;
        case 2:
            SFX(row_sums)(W, row, a, 2, S, nsb);
            break;
        case 3:
            SFX(row_sums)(W, row, a, 3, S, nsb);
            break;
        default:
            SFX(row_sums)(W, row, a, 4, S, nsb);
            break;
        }
        for (int m = 0; m < M; m++)
            Y[(size_t)m * ldy + r] = SFX(finish)(W, rb, r, S + m * nsb, &a[m]);
    }
    free(S);
}

#undef AS_AI
#undef UNROLL
