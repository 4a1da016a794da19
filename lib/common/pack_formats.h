/* pack_formats: integer-quantized linear layers and their deployable packed layouts.
 *
 * struct as_qlinear is what as-gptq / as-awq produce for one linear layer W [N out, K in]:
 * integer codes q [N,K] in 0..maxq, per-(row, group) scale [N,G] and integer zero [N,G], and the
 * group of every input column g_idx [K] (non-monotonic under act-order). Dequantization
 * (REFERENCE.md "Integer quantizer"): W_hat[n,k] = scale[n,g] * (q[n,k] - zero[n,g]), g = g_idx[k].
 * Float-minimum layers (as-gptq --float-min, GGUF Q4_1's x = d*q + m) also carry minv [N,G]:
 * W_hat[n,k] = scale[n,g] * q[n,k] + minv[n,g]; their zero is then only the nearest integer zero
 * (informative). Only GGUF Q4_1 stores them exactly; the GPTQ, compressed-tensors and AWQ
 * packability checks refuse them (the caller keeps such a layer as dequantized floats).
 *
 * Two writers turn it into checkpoint tensors (docs/formats.md has the exact layouts):
 *   pack_gptq.c  GPTQ v1 (AutoGPTQ / transformers / vLLM "gptq"): qweight, qzeros, scales, g_idx
 *   pack_ct.c    compressed-tensors "pack-quantized": weight_packed, weight_scale, weight_shape,
 *                weight_zero_point (asymmetric), weight_g_idx (group act-order)
 * Each format has a packability check that says, with a reason, when a layer cannot be stored
 * faithfully (or would be refused by vLLM/transformers); the caller then keeps that layer
 * unquantized and lists it in the config (as llama.cpp does with odd shapes).
 * quant_load.c reads both back to f32. All packing is little-endian (x86, ARM): an int32 word is
 * the u32 bit pattern, element i of a packed run at bit offset bits*i of the run's bit stream. */
#ifndef AS_PACK_FORMATS_H
#define AS_PACK_FORMATS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

struct as_st_writer;

struct as_qlinear {
    int N, K;          /* out features (rows), in features (columns) */
    int bits;          /* 2, 3, 4 or 8 */
    int group_size;    /* input columns per group; <= 0 means one group per row (per channel) */
    int sym;           /* symmetric: every zero == 2^(bits-1) */
    int has_act_order; /* columns were processed in act-order (g_idx may be non-monotonic) */
    uint8_t *q;        /* [N*K] codes, row-major, 0..2^bits-1 */
    float *scale;      /* [N*G] */
    int32_t *zero;     /* [N*G] integer zero points, 0..2^bits-1 */
    int32_t *g_idx;    /* [K] group of each input column, 0..G-1 */
    float *minv;       /* [N*G] float minimum (W_hat = scale*q + minv), or NULL: integer zero */
};

/* G = ceil(K / group_size), or 1 for group_size <= 0. */
static inline int as_qlinear_groups(const struct as_qlinear *l) {
    return l->group_size <= 0 ? 1 : (l->K + l->group_size - 1) / l->group_size;
}
/* 1 when g_idx[k] == k / group_size for all k (no act-order permutation of the groups). */
int as_qlinear_gidx_is_trivial(const struct as_qlinear *l);
/* Validate code, zero and g_idx ranges, finite scales (and minimums, on an asymmetric layer);
 * -1 with as_fail("layer PREFIX: ..."). */
int as_qlinear_check(const struct as_qlinear *l, const char *prefix);

/* Dense LSB-first bit stream: value i of a run of n values occupies bits [bits*i, bits*i + bits)
 * of consecutive u32 words (a value may straddle two words). This is the layout of both
 * compressed-tensors pack_to_int32 (dense packing, any bits) and AutoGPTQ's pack() (for 3-bit,
 * 32 values in 3 words with values 10 and 21 split across words). `in_stride` / `out_stride` step
 * through strided values and words (GPTQ packs down the columns of [K, N]). words must be zeroed
 * by the caller, ceil(n*bits/32) of them. */
static inline void as_bits_pack(const uint8_t *vals, size_t n, size_t in_stride, int bits,
                                uint32_t *words, size_t out_stride) {
    for (size_t i = 0; i < n; i++) {
        uint64_t bit = (uint64_t)i * (uint64_t)bits;
        size_t w = (size_t)(bit / 32), off = (size_t)(bit % 32);
        uint32_t v = vals[i * in_stride];
        words[w * out_stride] |= v << off;
        if (off + (size_t)bits > 32) words[(w + 1) * out_stride] |= v >> (32 - off);
    }
}
static inline uint32_t as_bits_get(const uint32_t *words, size_t i, int bits, size_t stride) {
    uint64_t bit = (uint64_t)i * (uint64_t)bits;
    size_t w = (size_t)(bit / 32), off = (size_t)(bit % 32);
    uint32_t v = words[w * stride] >> off;
    if (off + (size_t)bits > 32) v |= words[(w + 1) * stride] << (32 - off);
    return v & ((1u << bits) - 1u);
}

/* ---- GPTQ v1 (pack_gptq.c) ---- */
struct as_gptq_params {
    int bits, group_size; /* group_size -1 = per channel */
    int sym, desc_act, static_groups, true_sequential;
    double damp_percent;
};
/* 1 if the layer can be stored as GPTQ v1 and loaded by transformers/vLLM, else 0 with the
 * reason in why[]: bits not in {2,3,4,8}; K*bits or N*bits not a multiple of 32; ragged last group
 * (K % group_size != 0); zero point 0 (qzeros store zero-1, which would underflow); sym flag with a
 * zero != 2^(bits-1); scale not finite in fp16. */
int as_gptq_packable(const struct as_qlinear *l, char *why, size_t why_len);
/* qweight [K*bits/32, N] from q [N,K]: column n is the bit stream of q[n, 0..K-1]. */
void as_gptq_pack_qweight(const struct as_qlinear *l, uint32_t *qweight);
/* qzeros [G, N*bits/32]: row g is the bit stream of (zero[0..N-1, g] - 1). */
void as_gptq_pack_qzeros(const struct as_qlinear *l, uint32_t *qzeros);
/* Adds PREFIX.qweight (I32), PREFIX.qzeros (I32), PREFIX.scales (F16 [G,N]), PREFIX.g_idx (I32).
 * The bias, if any, is the caller's (PREFIX.bias in the model dtype). -1 on error. */
int as_gptq_write(struct as_st_writer *w, const char *prefix, const struct as_qlinear *l);
/* quantization_config for config.json (same object for quantize_config.json). `skip` names modules
 * kept unquantized (fallbacks): emitted as vLLM/GPTQModel "dynamic" {"-:^name$": {}}. New ref. */
json_t *as_gptq_quant_config(const struct as_gptq_params *p, const char *const *skip, int n_skip);
/* gptqmodel's "dynamic" object excluding each module of skip ({"-:^name$": {}}, name escaped). */
json_t *as_gptqmodel_exclusions(const char *const *skip, int n_skip);

/* ---- compressed-tensors pack-quantized (pack_ct.c) ---- */
enum as_ct_actorder { AS_CT_ACTORDER_NONE = 0, AS_CT_ACTORDER_GROUP, AS_CT_ACTORDER_WEIGHT };
struct as_ct_params {
    int bits, group_size; /* group_size <= 0: strategy "channel" */
    int sym;
    enum as_ct_actorder actorder;
    const char *const *ignore; /* modules kept unquantized; NULL -> ["lm_head"] */
    int n_ignore;
};
#define AS_CT_VERSION "0.9.2"
/* 1 if storable as pack-quantized and loadable by vLLM, else 0 with the reason: bits not in
 * {2,4,8} (3-bit packing differs between compressed-tensors versions); ragged last group; sym
 * with a zero != 2^(bits-1); a float minimum (minv: no integer zero point). */
int as_ct_packable(const struct as_qlinear *l, char *why, size_t why_len);
/* weight_packed [N, ceil(K*bits/32)]: row n is the bit stream of the stored values q[n, :]
 * (offset binary: the signed value q - 2^(bits-1) plus 2^(bits-1), i.e. q itself). */
void as_ct_pack_weight(const struct as_qlinear *l, uint32_t *packed);
/* weight_zero_point [ceil(N*bits/32), G]: column g is the bit stream of zero[0..N-1, g]. */
void as_ct_pack_zero(const struct as_qlinear *l, uint32_t *packed);
/* Adds PREFIX.weight_packed, PREFIX.weight_scale (scale_dtype: F32, F16 or BF16),
 * PREFIX.weight_shape, PREFIX.weight_zero_point (asymmetric only) and PREFIX.weight_g_idx (when
 * with_g_idx, i.e. the config says actorder "group"). Without g_idx the layer's g_idx must be
 * trivial. -1 on error. */
int as_ct_write(struct as_st_writer *w, const char *prefix, const struct as_qlinear *l,
                enum as_dtype scale_dtype, int with_g_idx);
json_t *as_ct_quant_config(const struct as_ct_params *p);

/* ---- AWQ GEMM (pack_awq.c; AutoAWQ / transformers / vLLM quant_method "awq") ----
 * qweight int32 [K, N/8]: nibble i of word (k, c) = q[8c + as_awq_order[i]][k] (our q is [N,K]);
 * qzeros int32 [K/gs, N/8], same interleave, zeros stored as they are; scales fp16 [K/gs, N]. */
extern const int as_awq_order[8]; /* {0, 2, 4, 6, 1, 3, 5, 7} */
/* 1 if storable, else 0 with the reason: bits != 4; per channel (no group); K % group_size;
 * N % 8; non-trivial g_idx (act-order); scale not finite in fp16; a float minimum (minv). */
int as_awq_packable(const struct as_qlinear *l, char *why, size_t why_len);
void as_awq_pack_qweight(const struct as_qlinear *l, uint32_t *qweight); /* [K, N/8] */
void as_awq_pack_qzeros(const struct as_qlinear *l, uint32_t *qzeros);   /* [K/gs, N/8] */
/* Adds PREFIX.qweight (I32), PREFIX.qzeros (I32), PREFIX.scales (F16). -1 on error. */
int as_awq_write(struct as_st_writer *w, const char *prefix, const struct as_qlinear *l);
/* {"quant_method":"awq","zero_point":true,"group_size":gs,"bits":4,"version":"gemm",
 *  "modules_to_not_convert": null or the fallback modules}. New reference. */
json_t *as_awq_quant_config(int group_size, const char *const *skip, int n_skip);

#endif
