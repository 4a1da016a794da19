/* pack_fp: FP8 / INT8 / FP4 / W4A8 quantized linears in the tensor stream and in deployable
 * checkpoints (docs/lepto.md has the record conventions and the exact file layouts).
 *
 * Stream (as-lepto -> as-pack), for a linear PREFIX ("model.layers.N.self_attn.q_proj"):
 *   PREFIX.weight_codes         role "fp-codes": F8_E4M3 [N,K] (fp8), I8 [N,K] (int8),
 *                               F4 [N,K] (nvfp4/mxfp4, two per byte, even column low nibble),
 *                               U8 [N,K] (int4 codes 0..15, zero 8)
 *                               attrs {scheme, weights (fpquant.h as_wq_names), act (as_aq_names),
 *                                      block: [bn, bk], method, ...}
 *   PREFIX.weight_scale         role "fp-scale": F32 [sn, sk]; nvfp4 F8_E4M3; mxfp4 F8_E8M0
 *   PREFIX.weight_global_scale  role "fp-global-scale": F32 [1] (nvfp4)
 *   PREFIX.input_scale          role "input-scale": F32 [1] (static FP8/INT8 activations; nvfp4:
 *                               the input global scale 448*6/amax)
 *   model.layers.N.self_attn.k_scale / v_scale   role "kv-scale": F32 [1] (FP8 KV cache)
 * plus role "weight" records for tensors the scheme rewrites (SmoothQuant's rescaled norms).
 *
 * Checkpoints (as_pack_fp): compressed-tensors float-quantized, int-quantized,
 * nvfp4-pack-quantized, mxfp4-pack-quantized, pack-quantized W4A8 (FP8 static inputs), the
 * DeepSeek-style "fp8" block checkpoint (weight_scale_inv), and fakequant-fp (dense W_hat plus
 * input scales, for evaluation of any shape). */
#ifndef AS_PACK_FP_H
#define AS_PACK_FP_H

#include <jansson.h>

#include "fpquant.h"
#include "stream.h"

struct as_fplinear {
    char *prefix;
    int layer;
    struct as_fpq_weight w;
    enum as_aq_kind act;
    float input_scale; /* 0 when the activations carry no static scale */
    json_t *attrs;     /* the codes record's attrs (owned) */
};

/* Write the records of one quantized linear. attrs (may be NULL) are merged into the codes
 * record's attrs. */
int as_fplinear_write(struct as_stream_writer *w, const char *prefix, int layer,
                      const struct as_fpq_weight *q, enum as_aq_kind act, float input_scale,
                      json_t *attrs);

/* FP8 KV-cache scales of one layer: records model.layers.N.self_attn.k_scale and v_scale, role
 * "kv-scale", F32 [1] (attrs may be NULL). as_pack_fp writes them as F32 [1] tensors under the
 * same names plus quantization_config.kv_cache_scheme {num_bits 8, type float, strategy tensor,
 * dynamic false, symmetric true}; they must cover every layer. */
int as_kvscale_write(struct as_stream_writer *w, int layer, float k_scale, float v_scale,
                     json_t *attrs);

/* Gathers fp linears from stream records, in any order. */
struct as_fpcollect;
struct as_fpcollect *as_fpcollect_new(void);
/* 1 if the record was a part (payload copied), 0 if not ours, -1 on error. */
int as_fpcollect_offer(struct as_fpcollect *fc, struct as_stream_reader *r,
                       const struct as_rec *rec);
int as_fpcollect_count(const struct as_fpcollect *fc); /* complete linears */
const struct as_fplinear *as_fpcollect_get(const struct as_fpcollect *fc, int i);
const struct as_fplinear *as_fpcollect_find(const struct as_fpcollect *fc, const char *prefix);
int as_fpcollect_check_complete(const struct as_fpcollect *fc); /* -1 naming a partial linear */
void as_fpcollect_free(struct as_fpcollect *fc);

/* ---- as-pack ---- */
/* 1 if as-pack's -f NAME is one of ours: ct-fp (the compressed-tensors format the scheme implies),
 * float-quantized, int-quantized, nvfp4-pack-quantized, mxfp4-pack-quantized, w4a8, fp8
 * (DeepSeek block), fakequant-fp. */
int as_pack_fp_handles(const char *format);
struct as_pack_fp_opts {
    const char *model_dir, *out_dir, *format;
    const char *scale_dtype; /* "model", "f32", "f16", "bf16" (F32-scaled formats only) */
    int verify, json;
    int n_inputs;
    char **inputs; /* streams; none: stdin */
};
/* Everything as-pack does for these formats; 0, or -1 with as_fail (nothing written then). */
int as_pack_fp(const struct as_pack_fp_opts *o);

/* Packability of one linear in a format: 1, or 0 with the reason (nvfp4 K % 16, mxfp4 K % 32,
 * pack-quantized int4 K % group). */
int as_fp_packable(const char *format, const struct as_fpq_weight *q, char *why, size_t n);

/* ---- readers (quant_load_fp.c) ---- */
struct as_ckpt;
struct as_model;
/* Register the engine's loaders for these formats: quant_method "fp8" (DeepSeek block),
 * "as-fakequant" (dense), and compressed-tensors float-/int-/nvfp4-/mxfp4-quantized layers
 * (other compressed-tensors formats go on to the loader registered before). Idempotent. */
void as_register_fp_loaders(void);
/* One linear of these formats as W_hat [N,K] f32: 1 loaded, 0 not one of ours (no config, another
 * format, an ignored module, a fallback stored as PREFIX.weight), -1 with as_fail naming file,
 * tensor and problem. qc: config.json's quantization_config. */
int as_fp_load_linear(const struct as_ckpt *c, const json_t *qc, const char *prefix, int64_t N,
                      int64_t K, float *dst);
/* The activation quantization a checkpoint declares (compressed-tensors input_activations with
 * input_scale / input_global_scale tensors, DeepSeek fp8 dynamic, as-fakequant): *out is a new
 * as_act_quant, or NULL when the checkpoint quantizes no activations. -1 with as_fail. */
int as_act_quant_from_checkpoint(const struct as_model *m, const char *dir,
                                 struct as_act_quant **out);

/* The FP8 KV cache a checkpoint declares (quantization_config.kv_cache_scheme: FP8, strategy
 * tensor, static; per layer model.layers.N.self_attn.k_scale / v_scale, one positive finite
 * element each): *out is a new as_kv_quant, or NULL when there is no kv_cache_scheme. -1 with
 * as_fail naming the file and tensor (missing, bad shape, NaN or non-positive scale). */
int as_kv_quant_from_checkpoint(const struct as_model *m, const char *dir,
                                struct as_kv_quant **out);

#endif
