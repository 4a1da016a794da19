/* kernel_ternary_simd.h: the SIMD kernel bodies, included by kernel_ternary.c once per ISA with
 * SFX(name) (the ISA suffix) and DOT_U8S8(acc, codes_u8, acts_s8) (32 u8 x s8 products added
 * into 8 int32 lanes) defined, under the matching GCC target pragma; SHERRY_MASK_SUB (AVX-512)
 * applies Sherry's sign bits as a mask register. Not a public header. */

#define AS_AI static inline __attribute__((always_inline))

AS_AI int32_t SFX(hsum)(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* The 4 planes of 32 bytes of 2-bit codes against the 4 runs of 32 activations at qp + off, for
 * M tokens. Each plane has its own accumulator: one chain per plane keeps the adds (VNNI's
 * vpdpbusd has a latency of several cycles) from serialising the loop. */
AS_AI void SFX(planes)(__m256i (*acc)[4], __m256i w, const struct as_act8 *a, int M, size_t off) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i c0 = _mm256_and_si256(w, m3);
    const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(w, 2), m3);
    const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(w, 4), m3);
    const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(w, 6), m3);
    for (int m = 0; m < M; m++) {
        const int8_t *x = a[m].qp + off;
        acc[m][0] = DOT_U8S8(acc[m][0], c0, _mm256_loadu_si256((const __m256i *)x));
        acc[m][1] = DOT_U8S8(acc[m][1], c1, _mm256_loadu_si256((const __m256i *)(x + 32)));
        acc[m][2] = DOT_U8S8(acc[m][2], c2, _mm256_loadu_si256((const __m256i *)(x + 64)));
        acc[m][3] = DOT_U8S8(acc[m][3], c3, _mm256_loadu_si256((const __m256i *)(x + 96)));
    }
}

/* Sum of a token's 4 accumulators, reset to zero. */
AS_AI int32_t SFX(take)(__m256i *acc) {
    __m256i s =
        _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[1]), _mm256_add_epi32(acc[2], acc[3]));
    acc[0] = acc[1] = acc[2] = acc[3] = _mm256_setzero_si256();
    return SFX(hsum)(s);
}

/* Sherry: a 128-weight chunk (as_block_sherry128, 20 bytes) to the 32 bytes of 2-bit codes of their
 * 32 quads, quad j = 8b + g in byte j: nibbles expanded in order, the 16-entry codebook looked up
 * by pshufb, the sign bits spread to byte masks and the negated patterns (0xAA - pattern) blended
 * in. */
AS_AI __m256i SFX(sherry_decode)(__m128i v, uint32_t sg) {
    const __m256i cb =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)as_sherry_codebook));
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i sidx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
    const __m256i idx = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
    const __m256i pat = _mm256_shuffle_epi8(cb, idx);
#ifdef SHERRY_MASK_SUB /* AVX-512: the sign bits are the byte mask of a masked subtract */
    (void)bits, (void)sidx;
    return _mm256_mask_sub_epi8(pat, (__mmask32)sg, _mm256_set1_epi8((char)0xAA), pat);
#else
    __m256i sm = _mm256_shuffle_epi8(_mm256_set1_epi32((int)sg), sidx);
    sm = _mm256_cmpeq_epi8(_mm256_and_si256(sm, bits), bits);
    return _mm256_blendv_epi8(pat, _mm256_sub_epi8(_mm256_set1_epi8((char)0xAA), pat), sm);
#endif
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
        for (int c = 0; c < nc; c++) {
            uint32_t sg;
            memcpy(&sg, row + 20 * c + 16, 4);
            SFX(planes)
            (acc, SFX(sherry_decode)(_mm_loadu_si128((const __m128i *)(row + 20 * c)), sg), a, M,
             128 * (size_t)c);
        }
        if (nt) { /* tail blocks {qs[4], sign} regrouped in registers as a chunk */
            uint32_t n[3] = {0, 0, 0}, sg = 0;
            for (int t = 0; t < nt; t++) {
                memcpy(&n[t], row + 20 * nc + 5 * t, 4);
                sg |= (uint32_t)row[20 * nc + 5 * t + 4] << (8 * t);
            }
            SFX(planes)
            (acc, SFX(sherry_decode)(_mm_setr_epi32((int)n[0], (int)n[1], (int)n[2], 0), sg), a, M,
             128 * (size_t)nc);
        }
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

static void SFX(tern_gemm)(const struct as_tern_matrix *W, const struct as_act8 *a, int M, float *Y,
                           int ldy, int r0, int r1) {
    const size_t rb = as_tern_row_bytes(W->fmt, W->K);
    const int nsb = W->K / 256 + 1;
    int32_t *S = as_xmalloc((size_t)4 * nsb * sizeof *S);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = W->data + (size_t)r * rb;
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
            Y[(size_t)m * ldy + r] = finish(W, rb, r, S + m * nsb, &a[m]);
    }
    free(S);
}

#undef AS_AI
