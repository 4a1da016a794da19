/* pack_ct: compressed-tensors "pack-quantized" layout (llm-compressor W4A16 and friends).
 *
 * REFERENCE.md "compressed-tensors": weight_packed int32 [N, ceil(K*bits/32)], element i of a row
 * at bits bits*i of the row's bit stream; values are offset binary: the signed int value v (what
 * compressed-tensors quantize() returns, v = q - 2^(bits-1) for our unsigned codes q) is stored
 * as v + 2^(bits-1) = q. Symmetric layers have signed zero point 0, i.e. our zero == 2^(bits-1),
 * and no zero tensor. Asymmetric: weight_zero_point = pack_to_int32(zp, packed_dim=0), i.e.
 * [ceil(N*bits/32), G] packed down the output dim, storing zp_signed + 2^(bits-1) = our zero.
 * weight_scale [N, G] in the model dtype; weight_shape int32 [2] = [N, K]; weight_g_idx int32 [K]
 * only when actorder is "group". Dequant: scale * (stored - zero) = scale * (q - zero). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "pack_formats.h"
#include "safetensors.h"

int as_ct_packable(const struct as_qlinear *l, char *why, size_t why_len) {
    int G = as_qlinear_groups(l), half = 1 << (l->bits - 1);
    if (l->minv) { /* Q4_1-style x = d*q + m has no integer zero to store */
        snprintf(why, why_len,
                 "float minimum (w = scale*q + min, as-gptq --float-min): pack-quantized stores an "
                 "integer zero point");
        return 0;
    }
    /* For 2/4/8 bits the old padded packing (pack factor 32/bits) and the new dense packing of
     * compressed-tensors agree bit for bit; for 3 bits they differ, and vLLM runs 4/8 only. */
    if (l->bits != 2 && l->bits != 4 && l->bits != 8) {
        snprintf(why, why_len, "pack-quantized is written for 2, 4 or 8 bits, not %d", l->bits);
        return 0;
    }
    /* weight_scale is [N, K/gs] for consumers (vLLM checks divisibility): no ragged group. */
    if (l->group_size > 0 && l->K % l->group_size != 0) {
        snprintf(why, why_len, "ragged last group: in features %d not divisible by group %d", l->K,
                 l->group_size);
        return 0;
    }
    if (l->sym)
        for (size_t i = 0; i < (size_t)l->N * G; i++)
            if (l->zero[i] != half) {
                snprintf(why, why_len, "symmetric layer with zero %d != %d at [%zu,%zu]",
                         (int)l->zero[i], half, i / G, i % G);
                return 0;
            }
    return 1;
}

void as_ct_pack_weight(const struct as_qlinear *l, uint32_t *packed) {
    size_t cols = ((size_t)l->K * l->bits + 31) / 32;
    memset(packed, 0, (size_t)l->N * cols * sizeof *packed);
    /* stored = (q - 2^(b-1)) + 2^(b-1) = q: the unsigned code is already offset binary. */
    for (int n = 0; n < l->N; n++)
        as_bits_pack(l->q + (size_t)n * l->K, (size_t)l->K, 1, l->bits, packed + n * cols, 1);
}

void as_ct_pack_zero(const struct as_qlinear *l, uint32_t *packed) {
    int G = as_qlinear_groups(l);
    size_t rows = ((size_t)l->N * l->bits + 31) / 32;
    memset(packed, 0, rows * G * sizeof *packed);
    uint8_t *col = as_xmalloc((size_t)l->N);
    for (int g = 0; g < G; g++) {
        for (int n = 0; n < l->N; n++)
            col[n] = (uint8_t)l->zero[(size_t)n * G + g];
        as_bits_pack(col, (size_t)l->N, 1, l->bits, packed + g, (size_t)G);
    }
    free(col);
}

int as_ct_write(struct as_st_writer *w, const char *prefix, const struct as_qlinear *l,
                enum as_dtype scale_dtype, int with_g_idx) {
    char why[256], name[512];
    if (as_qlinear_check(l, prefix)) return -1;
    if (!as_ct_packable(l, why, sizeof why))
        return as_fail("layer %s: not packable as compressed-tensors: %s", prefix, why);
    if (scale_dtype != AS_F32 && scale_dtype != AS_F16 && scale_dtype != AS_BF16)
        return as_fail("layer %s: scale dtype %s: expected F32, F16 or BF16", prefix,
                       as_dtype_name(scale_dtype));
    /* Without weight_g_idx consumers assume g = k / group_size ("weight" actorder keeps that). */
    if (!with_g_idx && !as_qlinear_gidx_is_trivial(l))
        return as_fail("layer %s: g_idx is permuted (act-order groups) but actorder is not "
                       "\"group\": weight_g_idx is required",
                       prefix);
    int G = as_qlinear_groups(l), N = l->N, K = l->K;
    size_t cols = ((size_t)K * l->bits + 31) / 32, zrows = ((size_t)N * l->bits + 31) / 32;
    size_t es = (size_t)as_dtype_traits[scale_dtype].bits / 8;
    uint32_t *wp = as_xmalloc((size_t)N * cols * 4);
    void *sc = as_xmalloc((size_t)N * G * es);
    as_ct_pack_weight(l, wp);
    if (as_convert_from_f32(scale_dtype, l->scale, sc, (size_t)N * G)) {
        free(wp);
        free(sc);
        return as_fail_prefix("layer %s: weight_scale: ", prefix);
    }
    int32_t shape_val[2] = {N, K};
    int64_t s_wp[2] = {N, (int64_t)cols}, s_sc[2] = {N, G}, s_sh[1] = {2}, s_gi[1] = {K};
    int rc = 0;
    snprintf(name, sizeof name, "%s.weight_packed", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 2, s_wp, wp, (size_t)N * cols * 4);
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, scale_dtype, 2, s_sc, sc, (size_t)N * G * es);
    snprintf(name, sizeof name, "%s.weight_shape", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 1, s_sh, shape_val, sizeof shape_val);
    if (!rc && !l->sym) {
        uint32_t *zp = as_xmalloc(zrows * G * 4);
        as_ct_pack_zero(l, zp);
        int64_t s_zp[2] = {(int64_t)zrows, G};
        snprintf(name, sizeof name, "%s.weight_zero_point", prefix);
        rc = as_st_writer_add_copy(w, name, AS_I32, 2, s_zp, zp, zrows * G * 4);
        free(zp);
    }
    if (!rc && with_g_idx) {
        snprintf(name, sizeof name, "%s.weight_g_idx", prefix);
        rc = as_st_writer_add_copy(w, name, AS_I32, 1, s_gi, l->g_idx, (size_t)K * 4);
    }
    free(wp);
    free(sc);
    return rc ? -1 : 0;
}

json_t *as_ct_quant_config(const struct as_ct_params *p) {
    static const char *const default_ignore[] = {"lm_head"};
    const char *const *ignore = p->ignore ? p->ignore : default_ignore;
    int n_ignore = p->ignore ? p->n_ignore : 1;
    static const char *const actorder_name[] = {NULL, "group", "weight"};

    json_t *wt = json_object();
    json_object_set_new(wt, "num_bits", json_integer(p->bits));
    json_object_set_new(wt, "type", json_string("int"));
    json_object_set_new(wt, "symmetric", json_boolean(p->sym));
    json_object_set_new(wt, "group_size",
                        p->group_size > 0 ? json_integer(p->group_size) : json_null());
    json_object_set_new(wt, "strategy", json_string(p->group_size > 0 ? "group" : "channel"));
    json_object_set_new(wt, "block_structure", json_null());
    json_object_set_new(wt, "dynamic", json_false());
    json_object_set_new(
        wt, "actorder",
        p->actorder == AS_CT_ACTORDER_NONE ? json_null() : json_string(actorder_name[p->actorder]));
    json_object_set_new(wt, "observer", json_string("minmax"));
    json_object_set_new(wt, "observer_kwargs", json_object());

    json_t *g0 = json_object();
    json_object_set_new(g0, "targets", json_pack("[s]", "Linear"));
    json_object_set_new(g0, "weights", wt);
    json_object_set_new(g0, "input_activations", json_null());
    json_object_set_new(g0, "output_activations", json_null());
    json_object_set_new(g0, "format", json_string("pack-quantized"));

    json_t *ign = json_array();
    for (int i = 0; i < n_ignore; i++)
        json_array_append_new(ign, json_string(ignore[i]));

    json_t *o = json_object();
    json_object_set_new(o, "quant_method", json_string("compressed-tensors"));
    json_object_set_new(o, "format", json_string("pack-quantized"));
    json_object_set_new(o, "config_groups", json_pack("{s:o}", "group_0", g0));
    json_object_set_new(o, "ignore", ign);
    json_object_set_new(o, "kv_cache_scheme", json_null());
    json_object_set_new(o, "quantization_status", json_string("compressed"));
    json_object_set_new(o, "sparsity_config", json_object());
    json_object_set_new(o, "global_compression_ratio", json_null());
    json_object_set_new(o, "version", json_string(AS_CT_VERSION));
    return o;
}
