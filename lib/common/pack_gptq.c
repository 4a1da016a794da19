/* pack_gptq: GPTQ v1 checkpoint layout (AutoGPTQ / transformers / vLLM quant_method "gptq").
 *
 * REFERENCE.md "GPTQ v1": qweight int32 [K*bits/32, N] packed along the input dim, lowest bits
 * first; qzeros int32 [G, N*bits/32] holding zero-1; scales fp16 [G, N]; g_idx int32 [K].
 * For 3 bits AutoGPTQ's pack() puts 32 values in 3 words, values 10 and 21 straddling words:
 * exactly the dense LSB-first bit stream of as_bits_pack. as-gptq emits integer codes directly,
 * so the codes are stored as they are and the scale is rounded to fp16: the file dequantizes to
 * fp16(scale) * (q - zero). Also holds the as_qlinear helpers shared by both writers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "pack_formats.h"
#include "safetensors.h"

int as_qlinear_gidx_is_trivial(const struct as_qlinear *l) {
    for (int k = 0; k < l->K; k++) {
        int g = l->group_size <= 0 ? 0 : k / l->group_size;
        if (l->g_idx[k] != g) return 0;
    }
    return 1;
}

int as_qlinear_check(const struct as_qlinear *l, const char *prefix) {
    if (l->bits < 1 || l->bits > 8)
        return as_fail("layer %s: bits %d out of range 1..8", prefix, l->bits);
    if (l->N <= 0 || l->K <= 0) return as_fail("layer %s: bad shape [%d, %d]", prefix, l->N, l->K);
    if (!l->q || !l->scale || !l->zero || !l->g_idx)
        return as_fail("layer %s: missing q/scale/zero/g_idx array", prefix);
    if (l->minv && l->sym)
        return as_fail(
            "layer %s: a float minimum on a symmetric layer (sym means zero = 2^(bits-1))", prefix);
    int maxq = (1 << l->bits) - 1, G = as_qlinear_groups(l);
    for (size_t i = 0; i < (size_t)l->N * l->K; i++)
        if (l->q[i] > maxq)
            return as_fail("layer %s: code %d at [%zu,%zu] exceeds maxq %d", prefix, l->q[i],
                           i / l->K, i % l->K, maxq);
    for (size_t i = 0; i < (size_t)l->N * G; i++) {
        if (l->zero[i] < 0 || l->zero[i] > maxq)
            return as_fail("layer %s: zero point %d at [%zu,%zu] outside 0..%d", prefix,
                           (int)l->zero[i], i / G, i % G, maxq);
        if (!isfinite(l->scale[i]))
            return as_fail("layer %s: scale at [%zu,%zu] is not finite", prefix, i / G, i % G);
        if (l->minv && !isfinite(l->minv[i]))
            return as_fail("layer %s: float minimum at [%zu,%zu] is not finite", prefix, i / G,
                           i % G);
    }
    for (int k = 0; k < l->K; k++)
        if (l->g_idx[k] < 0 || l->g_idx[k] >= G)
            return as_fail("layer %s: g_idx[%d] = %d outside 0..%d", prefix, k, (int)l->g_idx[k],
                           G - 1);
    return 0;
}

int as_gptq_packable(const struct as_qlinear *l, char *why, size_t why_len) {
    int maxq = (1 << l->bits) - 1, G = as_qlinear_groups(l), half = (maxq + 1) / 2;
    if (l->minv) { /* Q4_1-style x = d*q + m has no integer zero to store */
        snprintf(why, why_len,
                 "float minimum (w = scale*q + min, as-gptq --float-min): GPTQ v1 stores an "
                 "integer zero point");
        return 0;
    }
    if (l->bits != 2 && l->bits != 3 && l->bits != 4 && l->bits != 8) {
        snprintf(why, why_len, "GPTQ stores 2, 3, 4 or 8 bits, not %d", l->bits);
        return 0;
    }
    /* qweight rows = K*bits/32 (AutoGPTQ packs whole words; vLLM requires K % pack factor). */
    if ((int64_t)l->K * l->bits % 32 != 0) {
        snprintf(why, why_len, "in features %d * %d bits is not a multiple of 32", l->K, l->bits);
        return 0;
    }
    if ((int64_t)l->N * l->bits % 32 != 0) {
        snprintf(why, why_len, "out features %d * %d bits is not a multiple of 32 (qzeros)", l->N,
                 l->bits);
        return 0;
    }
    /* vLLM sizes scales as K / group_size: a ragged last group cannot be loaded. */
    if (l->group_size > 0 && l->K % l->group_size != 0) {
        snprintf(why, why_len, "ragged last group: in features %d not divisible by group %d", l->K,
                 l->group_size);
        return 0;
    }
    for (size_t i = 0; i < (size_t)l->N * G; i++) {
        if (l->zero[i] == 0) {
            snprintf(why, why_len,
                     "zero point 0 at [%zu,%zu]: GPTQ v1 stores zero-1, which would underflow",
                     i / G, i % G);
            return 0;
        }
        if (l->sym && l->zero[i] != half) {
            snprintf(why, why_len, "symmetric layer with zero %d != %d at [%zu,%zu]",
                     (int)l->zero[i], half, i / G, i % G);
            return 0;
        }
        float s = as_f16_to_f32(as_f32_to_f16(l->scale[i]));
        if (!isfinite(s)) {
            snprintf(why, why_len, "scale %g at [%zu,%zu] overflows fp16", l->scale[i], i / G,
                     i % G);
            return 0;
        }
    }
    return 1;
}

void as_gptq_pack_qweight(const struct as_qlinear *l, uint32_t *qweight) {
    size_t rows = (size_t)l->K * l->bits / 32;
    memset(qweight, 0, rows * l->N * sizeof *qweight);
    /* Column n of qweight [rows, N] is the bit stream of row n of q: stride N between words. */
    for (int n = 0; n < l->N; n++)
        as_bits_pack(l->q + (size_t)n * l->K, (size_t)l->K, 1, l->bits, qweight + n, l->N);
}

void as_gptq_pack_qzeros(const struct as_qlinear *l, uint32_t *qzeros) {
    int G = as_qlinear_groups(l);
    size_t cols = (size_t)l->N * l->bits / 32;
    memset(qzeros, 0, (size_t)G * cols * sizeof *qzeros);
    uint8_t *zm1 = as_xmalloc((size_t)l->N);
    for (int g = 0; g < G; g++) {
        /* v1 stores zero-1 (consumers add the 1 back); packable() excluded zero == 0. */
        for (int n = 0; n < l->N; n++)
            zm1[n] = (uint8_t)(l->zero[(size_t)n * G + g] - 1);
        as_bits_pack(zm1, (size_t)l->N, 1, l->bits, qzeros + (size_t)g * cols, 1);
    }
    free(zm1);
}

int as_gptq_write(struct as_st_writer *w, const char *prefix, const struct as_qlinear *l) {
    char why[256], name[512];
    if (as_qlinear_check(l, prefix)) return -1;
    if (!as_gptq_packable(l, why, sizeof why))
        return as_fail("layer %s: not packable as GPTQ v1: %s", prefix, why);
    int G = as_qlinear_groups(l), N = l->N, K = l->K;
    size_t rows = (size_t)K * l->bits / 32, cols = (size_t)N * l->bits / 32;
    uint32_t *qweight = as_xmalloc(rows * N * sizeof *qweight);
    uint32_t *qzeros = as_xmalloc((size_t)G * cols * sizeof *qzeros);
    uint16_t *scales = as_xmalloc((size_t)G * N * sizeof *scales);
    as_gptq_pack_qweight(l, qweight);
    as_gptq_pack_qzeros(l, qzeros);
    for (int g = 0; g < G; g++) /* ours is [N, G], GPTQ's is [G, N] */
        for (int n = 0; n < N; n++)
            scales[(size_t)g * N + n] = as_f32_to_f16(l->scale[(size_t)n * G + g]);
    int64_t s_qw[2] = {(int64_t)rows, N}, s_qz[2] = {G, (int64_t)cols}, s_sc[2] = {G, N},
            s_gi[1] = {K};
    int rc = 0;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 2, s_qw, qweight, rows * N * 4);
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 2, s_qz, qzeros, (size_t)G * cols * 4);
    snprintf(name, sizeof name, "%s.scales", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_F16, 2, s_sc, scales, (size_t)G * N * 2);
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    rc = rc ? rc : as_st_writer_add_copy(w, name, AS_I32, 1, s_gi, l->g_idx, (size_t)K * 4);
    free(qweight);
    free(qzeros);
    free(scales);
    return rc ? -1 : 0;
}

/* Escape a module name into an anchored Python regex ("model\.layers\.0\.mlp\.down_proj$"). */
static char *regex_escape_anchored(const char *s) {
    size_t n = strlen(s);
    char *r = as_xmalloc(2 * n + 6), *p = r;
    p += sprintf(p, "-:^");
    for (; *s; s++) {
        if (strchr(".^$*+?()[]{}|\\", *s)) *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '$';
    *p = 0;
    return r;
}

/* vLLM (gptq_utils.get_dynamic_override) and GPTQModel: "-:" patterns are re.match'ed
 * against the module name and excluded from quantization. */
json_t *as_gptqmodel_exclusions(const char *const *skip, int n_skip) {
    json_t *dyn = json_object();
    for (int i = 0; i < n_skip; i++) {
        char *re = regex_escape_anchored(skip[i]);
        json_object_set_new(dyn, re, json_object());
        free(re);
    }
    return dyn;
}

json_t *as_gptq_quant_config(const struct as_gptq_params *p, const char *const *skip, int n_skip) {
    json_t *o = json_object();
    json_object_set_new(o, "bits", json_integer(p->bits));
    json_object_set_new(o, "group_size", json_integer(p->group_size > 0 ? p->group_size : -1));
    json_object_set_new(o, "damp_percent", json_real(p->damp_percent));
    json_object_set_new(o, "desc_act", json_boolean(p->desc_act));
    json_object_set_new(o, "static_groups", json_boolean(p->static_groups));
    json_object_set_new(o, "sym", json_boolean(p->sym));
    json_object_set_new(o, "true_sequential", json_boolean(p->true_sequential));
    json_object_set_new(o, "model_name_or_path", json_null());
    json_object_set_new(o, "model_file_base_name", json_string("model"));
    json_object_set_new(o, "quant_method", json_string("gptq"));
    json_object_set_new(o, "checkpoint_format", json_string("gptq"));
    if (n_skip > 0) json_object_set_new(o, "dynamic", as_gptqmodel_exclusions(skip, n_skip));
    return o;
}
