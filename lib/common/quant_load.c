/* quant_load: GPTQ v1/v2 and compressed-tensors pack-quantized linear layers back to f32.
 *
 * GPTQ (REFERENCE.md "GPTQ v1"): qweight int32 [K*bits/32, N] (column n = bit stream of row n of
 * q along K), qzeros int32 [G, N*bits/32] holding zero-1 (v1) or zero (checkpoint_format
 * "gptq_v2"), scales [G, N], g_idx [K] (optional: k / group_size when absent).
 * compressed-tensors pack-quantized: weight_packed int32 [N, ceil(K*bits/32)], weight_scale
 * [N, G], weight_shape [2], weight_zero_point int32 [ceil(N*bits/32), G] when asymmetric,
 * weight_g_idx [K] optional. AWQ GEMM (version "gemm"): qweight int32 [K, N/8] and qzeros
 * int32 [K/gs, N/8] with the [0,2,4,6,1,3,5,7] nibble order, scales [K/gs, N], zeros stored as
 * they are. W_hat[n,k] = scale[n,g] * (q[n,k] - zero[n,g]), g = g_idx[k] (AWQ: k / gs),
 * one f32 multiply of an exactly representable difference, so the result is bitwise defined. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "pack_formats.h"
#include "quant_load.h"
#include "safetensors.h"


static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

enum { DT_INT32 = 1, DT_FLOAT = 2, DT_INT64 = 4, DT_INT8 = 8 };

static int dtype_ok(enum as_dtype d, int mask) {
    return ((mask & DT_INT32) && d == AS_I32) || ((mask & DT_INT64) && d == AS_I64) ||
           ((mask & DT_INT8) && d == AS_I8) ||
           ((mask & DT_FLOAT) && (d == AS_F32 || d == AS_F16 || d == AS_BF16));
}

static const char *mask_str(int mask) {
    switch (mask) {
    case DT_INT32:
        return "I32";
    case DT_FLOAT:
        return "F16, BF16 or F32";
    case DT_INT32 | DT_INT64:
        return "I32 or I64";
    case DT_INT32 | DT_INT8:
        return "I32 or I8";
    default:
        return "?";
    }
}

/* Find PREFIX.SUFFIX; check dtype class and (when shape != NULL) the exact shape. *t = NULL and
 * 0 when absent and !required. */
static int get_tensor(const struct as_ckpt *c, const char *prefix, const char *suffix, int required,
                      int mask, int ndim, const int64_t *shape, const struct as_st_tensor **out) {
    char name[600];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const struct as_st_tensor *t = as_ckpt_find(c, name);
    *out = t;
    if (!t) {
        if (!required) return 0;
        return as_fail("file %s: tensor %s: missing", as_ckpt_file_of(c, NULL), name);
    }
    if (!dtype_ok(t->dtype, mask))
        return as_fail("file %s: tensor %s: dtype %s, expected %s", as_ckpt_file_of(c, t), name,
                       as_dtype_name(t->dtype), mask_str(mask));
    if (shape) {
        int same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++)
            same = t->shape[i] == shape[i];
        if (!same) {
            char want[128], got[128];
            shape_str(want, sizeof want, ndim, shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            return as_fail("file %s: tensor %s: shape %s, expected %s", as_ckpt_file_of(c, t), name, got,
                           want);
        }
    }
    return 0;
}

/* Little-endian int32 payload copied out (the mapping need not be 4-byte aligned). */
static uint32_t *read_u32(const struct as_st_tensor *t) {
    uint32_t *v = as_xmalloc(t->numel ? t->numel * 4 : 4);
    memcpy(v, t->data, t->numel * 4);
    return v;
}

/* g_idx from the file (values checked against G) or k / group_size. */
static int32_t *load_gidx(const struct as_ckpt *c, const struct as_st_tensor *t, int64_t K,
                          int64_t group, int64_t G) {
    int32_t *g = as_xmalloc((size_t)K * sizeof *g);
    if (t) {
        memcpy(g, t->data, (size_t)K * 4);
        for (int64_t k = 0; k < K; k++)
            if (g[k] < 0 || g[k] >= G) {
                as_fail("file %s: tensor %s: g_idx[%lld] = %d outside 0..%lld", as_ckpt_file_of(c, t),
                        t->name, (long long)k, (int)g[k], (long long)G - 1);
                free(g);
                return NULL;
            }
    } else {
        for (int64_t k = 0; k < K; k++) {
            int64_t v = group > 0 ? k / group : 0;
            if (v >= G) {
                as_fail("file %s: tensor g_idx absent and group %lld gives group %lld >= %lld "
                        "scale groups",
                        as_ckpt_file_of(c, NULL), (long long)group, (long long)v, (long long)G);
                free(g);
                return NULL;
            }
            g[k] = (int32_t)v;
        }
    }
    return g;
}

/* Python re.match semantics (anchored at the start) via PCRE2. */
static int re_match(const char *pattern, const char *subject) {
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, &err, &eoff, 0);
    if (!re) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

static int json_int(const json_t *o, const char *key, int64_t *v) {
    const json_t *j = json_object_get(o, key);
    if (!json_is_integer(j)) return -1;
    *v = json_integer_value(j);
    return 0;
}

/* ---- GPTQ ---- */
static int load_gptq(const struct as_ckpt *c, const json_t *qc, const char *prefix, int64_t N,
                     int64_t K, float *dst) {
    int64_t bits, group;
    if (json_int(qc, "bits", &bits) || (bits != 2 && bits != 3 && bits != 4 && bits != 8))
        return as_fail("file %s: quantization_config: gptq \"bits\" missing or not 2/3/4/8",
                       as_ckpt_file_of(c, NULL));
    if (json_int(qc, "group_size", &group)) group = -1;
    const char *fmt = json_string_value(json_object_get(qc, "checkpoint_format"));
    int zero_add = 1; /* v1 stores zero-1; consumers add 1 without wrapping */
    if (fmt && !strcmp(fmt, "gptq_v2"))
        zero_add = 0;
    else if (fmt && strcmp(fmt, "gptq"))
        return as_fail("file %s: quantization_config: checkpoint_format \"%s\" not supported",
                       as_ckpt_file_of(c, NULL), fmt);

    /* Modules excluded with a "-:" dynamic pattern stay unquantized. */
    const json_t *dyn = json_object_get(qc, "dynamic");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)dyn, key, val) {
        if (!strncmp(key, "-:", 2) && re_match(key + 2, prefix)) return 0;
    }

    const struct as_st_tensor *tq, *ts, *tz, *tg;
    char name[600];
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if (!as_ckpt_find(c, name)) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        if (as_ckpt_find(c, name)) return 0; /* fallback layer kept in the model dtype */
    }
    if (K * bits % 32 != 0)
        return as_fail("file %s: tensor %s.qweight: in features %lld * %lld bits is not a "
                       "multiple of 32",
                       as_ckpt_file_of(c, NULL), prefix, (long long)K, (long long)bits);
    int64_t sq[2] = {K * bits / 32, N};
    if (get_tensor(c, prefix, "qweight", 1, DT_INT32, 2, sq, &tq)) return -1;
    /* Consumers size scales as [K / group_size, N] (per channel: one row). */
    int64_t G = group > 0 ? (K + group - 1) / group : 1;
    int64_t ss[2] = {G, N};
    if (get_tensor(c, prefix, "scales", 1, DT_FLOAT, 2, ss, &ts)) return -1;
    int64_t sz[2] = {G, (N * bits + 31) / 32}, sg[1] = {K};
    if (get_tensor(c, prefix, "qzeros", 1, DT_INT32, 2, sz, &tz)) return -1;
    if (get_tensor(c, prefix, "g_idx", 0, DT_INT32, 1, sg, &tg)) return -1;

    int32_t *gidx = load_gidx(c, tg, K, group, G);
    if (!gidx) return -1;
    float *scale = as_xmalloc((size_t)(G * N) * sizeof *scale);
    if (as_ckpt_read_f32(c, ts, scale)) {
        free(gidx);
        free(scale);
        return -1;
    }
    uint32_t *qw = read_u32(tq), *qz = read_u32(tz);
    int32_t *zero = as_xmalloc((size_t)(G * N) * sizeof *zero); /* [G, N] */
    for (int64_t g = 0; g < G; g++)
        for (int64_t n = 0; n < N; n++)
            zero[g * N + n] =
                (int32_t)as_bits_get(qz + g * sz[1], (size_t)n, (int)bits, 1) + zero_add;
    /* Tiles of 16 output rows: qweight words of neighbouring n share a cache line, and each of
     * the 16 destination rows is written contiguously along k. */
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
        int64_t n1 = n0 + 16 < N ? n0 + 16 : N;
        for (int64_t k = 0; k < K; k++) {
            int64_t g = gidx[k];
            for (int64_t n = n0; n < n1; n++) {
                int32_t q = (int32_t)as_bits_get(qw + n, (size_t)k, (int)bits, (size_t)N);
                dst[n * K + k] = scale[g * N + n] * (float)(q - zero[g * N + n]);
            }
        }
    }
    free(qw);
    free(qz);
    free(zero);
    free(scale);
    free(gidx);
    return 1;
}

/* ---- compressed-tensors ---- */
static int target_matches(const json_t *targets, const char *prefix) {
    size_t i;
    const json_t *t;
    json_array_foreach(targets, i, t) {
        const char *s = json_string_value(t);
        if (!s) continue;
        if (!strcmp(s, "Linear") || !strcmp(s, prefix)) return 1;
        if (!strncmp(s, "re:", 3) && re_match(s + 3, prefix)) return 1;
    }
    return 0;
}

static int load_ct(const struct as_ckpt *c, const json_t *qc, const char *prefix, int64_t N,
                   int64_t K, float *dst) {
    if (target_matches(json_object_get(qc, "ignore"), prefix)) return 0;
    /* First config group whose targets match the module (insertion order, as vLLM). */
    const json_t *grp = NULL, *v;
    const char *key;
    json_object_foreach((json_t *)json_object_get(qc, "config_groups"), key, v) {
        if (target_matches(json_object_get(v, "targets"), prefix)) {
            grp = v;
            break;
        }
    }
    const json_t *w = grp ? json_object_get(grp, "weights") : NULL;
    if (!w) return 0;
    const char *fmt = json_string_value(json_object_get(grp, "format"));
    if (!fmt) fmt = json_string_value(json_object_get(qc, "format"));
    const char *type = json_string_value(json_object_get(w, "type"));
    if (!fmt || strcmp(fmt, "pack-quantized") || !type || strcmp(type, "int")) return 0;

    char name[600];
    snprintf(name, sizeof name, "%s.weight_packed", prefix);
    if (!as_ckpt_find(c, name)) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        if (as_ckpt_find(c, name)) return 0;
    }
    int64_t bits, group = -1;
    if (json_int(w, "num_bits", &bits) || bits < 1 || bits > 8 || 32 % bits != 0)
        return as_fail("file %s: quantization_config: pack-quantized num_bits missing or not "
                       "1/2/4/8 (3-bit packing differs between compressed-tensors versions)",
                       as_ckpt_file_of(c, NULL));
    const json_t *js = json_object_get(w, "symmetric");
    int sym = js ? json_is_true(js) : 1;
    const char *strat = json_string_value(json_object_get(w, "strategy"));
    int64_t G;
    if (strat && !strcmp(strat, "group")) {
        if (json_int(w, "group_size", &group) || group <= 0)
            return as_fail("file %s: quantization_config: strategy group without group_size",
                           as_ckpt_file_of(c, NULL));
        G = (K + group - 1) / group;
    } else if (strat && (!strcmp(strat, "channel") || !strcmp(strat, "tensor"))) {
        G = 1;
    } else {
        return as_fail("file %s: quantization_config: weight strategy \"%s\" not supported for "
                       "pack-quantized",
                       as_ckpt_file_of(c, NULL), strat ? strat : "(none)");
    }
    int per_tensor = !strcmp(strat, "tensor");

    const struct as_st_tensor *tp, *ts, *tsh, *tz = NULL, *tg;
    int64_t sp[2] = {N, (K * bits + 31) / 32}, ssh[1] = {2}, ss[2] = {N, G}, sg[1] = {K};
    if (get_tensor(c, prefix, "weight_packed", 1, DT_INT32, 2, sp, &tp)) return -1;
    if (get_tensor(c, prefix, "weight_shape", 1, DT_INT32 | DT_INT64, 1, ssh, &tsh)) return -1;
    int64_t shp[2];
    if (tsh->dtype == AS_I32) {
        int32_t s32[2];
        memcpy(s32, tsh->data, 8);
        shp[0] = s32[0], shp[1] = s32[1];
    } else {
        memcpy(shp, tsh->data, 16);
    }
    if (shp[0] != N || shp[1] != K)
        return as_fail("file %s: tensor %s: holds [%lld, %lld], expected [%lld, %lld]",
                       as_ckpt_file_of(c, tsh), tsh->name, (long long)shp[0], (long long)shp[1],
                       (long long)N, (long long)K);
    if (per_tensor) {
        if (get_tensor(c, prefix, "weight_scale", 1, DT_FLOAT, 0, NULL, &ts)) return -1;
        if (ts->numel != 1)
            return as_fail("file %s: tensor %s: %llu elements, expected 1 (tensor strategy)",
                           as_ckpt_file_of(c, ts), ts->name, (unsigned long long)ts->numel);
    } else if (get_tensor(c, prefix, "weight_scale", 1, DT_FLOAT, 2, ss, &ts)) {
        return -1;
    }
    if (!sym) {
        if (per_tensor)
            return as_fail("file %s: quantization_config: asymmetric tensor strategy not "
                           "supported for pack-quantized",
                           as_ckpt_file_of(c, NULL));
        /* Packed down the output dim (pack_to_int32 packed_dim=0); older releases kept int8. */
        if (get_tensor(c, prefix, "weight_zero_point", 1, DT_INT32 | DT_INT8, 0, NULL, &tz))
            return -1;
        int is32 = tz->dtype == AS_I32;
        int64_t szp[2] = {is32 ? (N * bits + 31) / 32 : N, G};
        if (get_tensor(c, prefix, "weight_zero_point", 1, is32 ? DT_INT32 : DT_INT8, 2, szp, &tz))
            return -1;
    }
    if (get_tensor(c, prefix, "weight_g_idx", 0, DT_INT32, 1, sg, &tg)) return -1;

    int32_t *gidx = load_gidx(c, tg, K, group, G);
    if (!gidx) return -1;
    float *scale = as_xmalloc((size_t)(N * G) * sizeof *scale);
    if (as_ckpt_read_f32(c, ts, scale)) {
        free(gidx);
        free(scale);
        return -1;
    }
    int half = 1 << (bits - 1);
    int32_t *zero = as_xmalloc((size_t)(N * G) * sizeof *zero); /* [N, G], unsigned */
    if (!tz) {
        for (int64_t i = 0; i < N * G; i++)
            zero[i] = half; /* signed zero point 0 */
    } else if (tz->dtype == AS_I32) {
        uint32_t *zp = read_u32(tz);
        for (int64_t n = 0; n < N; n++)
            for (int64_t g = 0; g < G; g++)
                zero[n * G + g] = (int32_t)as_bits_get(zp + g, (size_t)n, (int)bits, (size_t)G);
        free(zp);
    } else {
        const int8_t *zp = tz->data;
        for (int64_t i = 0; i < N * G; i++)
            zero[i] = zp[i] + half;
    }
    uint32_t *wp = read_u32(tp);
    for (int64_t n = 0; n < N; n++) {
        const uint32_t *row = wp + n * sp[1];
        for (int64_t k = 0; k < K; k++) {
            int64_t g = per_tensor ? 0 : gidx[k];
            int32_t q = (int32_t)as_bits_get(row, (size_t)k, (int)bits, 1);
            dst[n * K + k] = scale[per_tensor ? 0 : n * G + g] * (float)(q - zero[n * G + g]);
        }
    }
    free(wp);
    free(zero);
    free(scale);
    free(gidx);
    return 1;
}

/* ---- AWQ GEMM (REFERENCE.md "AWQ GEMM"; writer in pack_awq.c) ---- */
static int load_awq(const struct as_ckpt *c, const json_t *qc, const char *prefix, int64_t N,
                    int64_t K, float *dst) {
    /* transformers/vLLM keep a module unquantized when a listed name is a substring of its name */
    const json_t *skip = json_object_get(qc, "modules_to_not_convert"), *v;
    size_t i;
    json_array_foreach(skip, i, v) {
        const char *s = json_string_value(v);
        if (s && strstr(prefix, s)) return 0;
    }
    char name[600];
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if (!as_ckpt_find(c, name)) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        if (as_ckpt_find(c, name)) return 0; /* fallback layer */
    }
    const char *version = json_string_value(json_object_get(qc, "version"));
    if (version && strcasecmp(version, "gemm"))
        return as_fail("file %s: quantization_config: AWQ version \"%s\" not supported (gemm "
                       "only)",
                       as_ckpt_file_of(c, NULL), version);
    int64_t bits, group;
    if (json_int(qc, "bits", &bits) || bits != 4)
        return as_fail("file %s: quantization_config: AWQ bits missing or not 4", as_ckpt_file_of(c, NULL));
    if (json_int(qc, "group_size", &group) || group <= 0 || K % group != 0)
        return as_fail("file %s: quantization_config: AWQ group_size missing, not positive or "
                       "not dividing %lld in features of %s",
                       as_ckpt_file_of(c, NULL), (long long)K, prefix);
    if (json_is_false(json_object_get(qc, "zero_point")))
        return as_fail("file %s: quantization_config: AWQ without zero_point not supported",
                       as_ckpt_file_of(c, NULL));
    if (N % 8 != 0)
        return as_fail("file %s: layer %s: %lld out features, AWQ GEMM needs a multiple of 8",
                       as_ckpt_file_of(c, NULL), prefix, (long long)N);
    int64_t G = K / group, C = N / 8;
    const struct as_st_tensor *tq, *tz, *ts;
    int64_t sq[2] = {K, C}, sz[2] = {G, C}, ss[2] = {G, N};
    if (get_tensor(c, prefix, "qweight", 1, DT_INT32, 2, sq, &tq)) return -1;
    if (get_tensor(c, prefix, "qzeros", 1, DT_INT32, 2, sz, &tz)) return -1;
    if (get_tensor(c, prefix, "scales", 1, DT_FLOAT, 2, ss, &ts)) return -1;
    float *scale = as_xmalloc((size_t)(G * N) * sizeof *scale);
    if (as_ckpt_read_f32(c, ts, scale)) {
        free(scale);
        return -1;
    }
    uint32_t *qw = read_u32(tq), *qz = read_u32(tz);
    int32_t *zero = as_xmalloc((size_t)(G * N) * sizeof *zero); /* [G, N] */
    for (int64_t g = 0; g < G; g++)
        for (int64_t cc = 0; cc < C; cc++)
            for (int j = 0; j < 8; j++)
                zero[g * N + 8 * cc + as_awq_order[j]] =
                    (int32_t)((qz[g * C + cc] >> (4 * j)) & 15u);
    for (int64_t k = 0; k < K; k++) {
        int64_t g = k / group;
        for (int64_t cc = 0; cc < C; cc++) {
            uint32_t w = qw[k * C + cc];
            for (int j = 0; j < 8; j++) {
                int64_t n = 8 * cc + as_awq_order[j];
                int32_t q = (int32_t)((w >> (4 * j)) & 15u);
                dst[n * K + k] = scale[g * N + n] * (float)(q - zero[g * N + n]);
            }
        }
    }
    free(qw);
    free(qz);
    free(zero);
    free(scale);
    return 1;
}

int as_quant_load_linear(const struct as_ckpt *c, const json_t *quant_config, const char *prefix,
                         int64_t N, int64_t K, float *dst) {
    if (!quant_config) return 0;
    const json_t *inner = json_object_get(quant_config, "quantization_config");
    if (json_is_object(inner)) quant_config = inner;
    const char *method = json_string_value(json_object_get(quant_config, "quant_method"));
    if (!method) return 0;
    if (N <= 0 || K <= 0)
        return as_fail("layer %s: bad shape [%lld, %lld]", prefix, (long long)N, (long long)K);
    if (!strcmp(method, "gptq")) return load_gptq(c, quant_config, prefix, N, K, dst);
    if (!strcmp(method, "compressed-tensors")) return load_ct(c, quant_config, prefix, N, K, dst);
    if (!strcmp(method, "awq")) return load_awq(c, quant_config, prefix, N, K, dst);
    return 0;
}
