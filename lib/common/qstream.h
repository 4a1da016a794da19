/* qstream: how quantized linear layers and calibration statistics travel in the tensor stream.
 *
 * The record conventions between as-calib, as-gptq and as-pack (docs/pipeline.md):
 *   statistics of a group of linears sharing one input, named "model.layers.N.GROUP.ROLE" with
 *   GROUP in attn_qkv, attn_o, mlp_gate_up, mlp_down and attrs {"targets": [module prefixes],
 *   "tokens": n}: role "hessian" F32 [K,K] (H = 2/N Σ x xᵀ), "gptaq-dxx" F32 [K,K],
 *   "act-mean-abs" F32 [K], "act-absmax" F32 [K], "act-sample" F32 [rows,K];
 *   a quantized linear PREFIX ("model.layers.N.self_attn.q_proj") as four records
 *   PREFIX.qweight (role "qweight", U8 codes [N,K], attrs bits/group_size/sym/act_order/...),
 *   PREFIX.scale ("scale", F32 [N,G]), PREFIX.zero ("zero", I32 [N,G]), PREFIX.g_idx ("g_idx",
 *   I32 [K]); a float-minimum layer (as-gptq --float-min, attrs float_min: true) adds
 *   PREFIX.min ("min", F32 [N,G]; W_hat = scale * q + min). as_qcollect gathers them back into
 *   struct as_qlinear, in any record order. */
#ifndef AS_QSTREAM_H
#define AS_QSTREAM_H

#include <jansson.h>

#include "model.h"
#include "pack_formats.h"
#include "stream.h"

extern const char *const as_group_names[AS_GROUP_COUNT]; /* "attn_qkv", ... */

/* Parse "model.layers.N.self_attn.q_proj[.weight]" into layer and linear; 0 if it is one of the
 * seven decoder linears, -1 otherwise. */
int as_linear_parse(const char *name, int *layer, enum as_linear *which);
/* "model.layers.N.self_attn.q_proj" (no ".weight"). */
void as_linear_prefix(int layer, enum as_linear which, char *buf, size_t n);

/* Write the four records of a quantized linear (five with l->minv, and float_min: true in the
 * qweight attrs). `attrs` (may be NULL) is merged into the qweight record's attrs together with
 * bits/group_size/sym/act_order. */
int as_qlinear_write(struct as_stream_writer *w, const char *prefix, int layer,
                     const struct as_qlinear *l, json_t *attrs);

/* Gathers quantized linears from stream records. */
struct as_qcollect;
struct as_qcollect *as_qcollect_new(void);
/* Offer the reader's current record: returns 1 if it was a qlinear part (payload copied),
 * 0 if not one (untouched), -1 on error (bad shape/dtype, duplicate). */
int as_qcollect_offer(struct as_qcollect *qc, struct as_stream_reader *r, const struct as_rec *rec);
/* Complete layers, in the order they were completed. The qlinear and its attrs (the qweight
 * record's) belong to the collector. */
int as_qcollect_count(const struct as_qcollect *qc);
const struct as_qlinear *as_qcollect_get(const struct as_qcollect *qc, int i, const char **prefix,
                                         const json_t **attrs);
/* Find a complete layer by prefix; NULL if absent. */
const struct as_qlinear *as_qcollect_find(const struct as_qcollect *qc, const char *prefix);
/* -1 with as_fail naming the first incomplete layer (some of its records missing). */
int as_qcollect_check_complete(const struct as_qcollect *qc);
void as_qcollect_free(struct as_qcollect *qc);

/* W_hat = scale * (q - zero) of a qlinear, or scale * q + minv with a float minimum; f32 [N,K]. */
void as_qlinear_dequant(const struct as_qlinear *l, float *w_hat);

#endif
