/* pack_awq: AutoAWQ's GEMM checkpoint layout (what transformers and vLLM load as quant_method
 * "awq", version "gemm"). REFERENCE.md "AWQ GEMM":
 *   qweight int32 [K, N/8]: nibble i (bits 4i..4i+3) of word (k, c) holds q[k, 8c + order[i]],
 *           order = [0, 2, 4, 6, 1, 3, 5, 7] (q indexed [in, out], ours is [out, in]);
 *   qzeros  int32 [K/gs, N/8]: the zero points, same interleave, stored as they are (no -1);
 *   scales  fp16 [K/gs, N].
 * W_hat[n, k] = fp16(scale[n, g]) * (q[n, k] - zero[n, g]), g = k / gs: no g_idx, no act-order.
 * Only 4 bits; N % 8 == 0 and K % gs == 0. Layers that do not fit are the caller's fallback. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "pack_formats.h"
#include "safetensors.h"

const int as_awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

int as_awq_packable(const struct as_qlinear *l, char *why, size_t why_len) {
    int G = as_qlinear_groups(l);
    if (l->minv) { /* Q4_1-style x = d*q + m has no integer zero to store */
        snprintf(why, why_len,
                 "float minimum (w = scale*q + min, as-gptq --float-min): AWQ GEMM stores an "
                 "integer zero point");
        return 0;
    }
    if (l->bits != 4) {
        snprintf(why, why_len, "AWQ GEMM stores 4 bits, not %d", l->bits);
        return 0;
    }
    if (l->group_size <= 0) {
        snprintf(why, why_len, "AWQ GEMM needs a group size (per-channel is not a layout)");
        return 0;
    }
    if (l->K % l->group_size != 0) {
        snprintf(why, why_len, "ragged last group: in features %d not divisible by group %d", l->K,
                 l->group_size);
        return 0;
    }
    if (l->N % 8 != 0) {
        snprintf(why, why_len, "out features %d not a multiple of 8 (8 nibbles per word)", l->N);
        return 0;
    }
    if (!as_qlinear_gidx_is_trivial(l)) {
        snprintf(why, why_len, "act-order g_idx: AWQ GEMM has no g_idx");
        return 0;
    }
    for (size_t i = 0; i < (size_t)l->N * G; i++) {
        float s = as_f16_to_f32(as_f32_to_f16(l->scale[i]));
        if (!isfinite(s)) {
            snprintf(why, why_len, "scale %g at [%zu,%zu] overflows fp16", l->scale[i], i / G,
                     i % G);
            return 0;
        }
    }
    return 1;
}

void as_awq_pack_qweight(const struct as_qlinear *l, uint32_t *qweight) {
    size_t C = (size_t)l->N / 8;
    for (size_t k = 0; k < (size_t)l->K; k++)
        for (size_t c = 0; c < C; c++) {
            uint32_t w = 0;
            for (int i = 0; i < 8; i++)
                w |= (uint32_t)(l->q[(8 * c + as_awq_order[i]) * l->K + k] & 15u) << (4 * i);
            qweight[k * C + c] = w;
        }
}

void as_awq_pack_qzeros(const struct as_qlinear *l, uint32_t *qzeros) {
    size_t C = (size_t)l->N / 8, G = (size_t)as_qlinear_groups(l);
    for (size_t g = 0; g < G; g++)
        for (size_t c = 0; c < C; c++) {
            uint32_t w = 0;
            for (int i = 0; i < 8; i++)
                w |= ((uint32_t)l->zero[(8 * c + as_awq_order[i]) * G + g] & 15u) << (4 * i);
            qzeros[g * C + c] = w;
        }
}

int as_awq_write(struct as_st_writer *w, const char *prefix, const struct as_qlinear *l) {
    char why[256], name[512];
    if (as_qlinear_check(l, prefix)) return -1;
    if (!as_awq_packable(l, why, sizeof why))
        return as_fail("layer %s: not packable as AWQ GEMM: %s", prefix, why);
    size_t N = (size_t)l->N, K = (size_t)l->K, G = (size_t)as_qlinear_groups(l), C = N / 8;
    uint32_t *qweight = as_xmalloc(K * C * sizeof *qweight);
    uint32_t *qzeros = as_xmalloc(G * C * sizeof *qzeros);
    uint16_t *scales = as_xmalloc(G * N * sizeof *scales);
    as_awq_pack_qweight(l, qweight);
    as_awq_pack_qzeros(l, qzeros);
    for (size_t g = 0; g < G; g++) /* ours is [N, G], AWQ's is [G, N] */
        for (size_t n = 0; n < N; n++)
            scales[g * N + n] = as_f32_to_f16(l->scale[n * G + g]);
    int64_t s_qw[2] = {(int64_t)K, (int64_t)C}, s_qz[2] = {(int64_t)G, (int64_t)C},
            s_sc[2] = {(int64_t)G, (int64_t)N};
    int rc = 0;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 2, s_qw, qweight, K * C * 4);
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 2, s_qz, qzeros, G * C * 4);
    snprintf(name, sizeof name, "%s.scales", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_F16, 2, s_sc, scales, G * N * 2);
    free(qweight);
    free(qzeros);
    free(scales);
    return rc ? -1 : 0;
}

json_t *as_awq_quant_config(int group_size, const char *const *skip, int n_skip) {
    json_t *o = json_object();
    json_object_set_new(o, "quant_method", json_string("awq"));
    /* symmetric layers are stored with their zero 8, so the zero point is always present */
    json_object_set_new(o, "zero_point", json_true());
    json_object_set_new(o, "group_size", json_integer(group_size));
    json_object_set_new(o, "bits", json_integer(4));
    json_object_set_new(o, "version", json_string("gemm"));
    if (n_skip > 0) {
        /* transformers / vLLM skip a module when any listed name is a substring of its name */
        json_t *a = json_array();
        for (int i = 0; i < n_skip; i++)
            json_array_append_new(a, json_string(skip[i]));
        json_object_set_new(o, "modules_to_not_convert", a);
        /* GPTQModel.load reads AWQ configs too but ignores modules_to_not_convert: without its
         * own "dynamic" exclusions it packs every linear and fails on the ones kept dense. */
        json_object_set_new(o, "dynamic", as_gptqmodel_exclusions(skip, n_skip));
    } else {
        json_object_set_new(o, "modules_to_not_convert", json_null());
    }
    return o;
}
