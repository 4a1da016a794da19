/* quant_load_fp: reads FP8 / INT8 / NVFP4 / MXFP4 checkpoints back for the engine (pack_fp.h).
 *
 * Weights: compressed-tensors float-quantized (F8_E4M3 weight, weight_scale [1] | [N,1] |
 * [ceil(N/bn), ceil(K/bk)]), int-quantized / naive-quantized (I8 weight, weight_scale [N,1] or
 * [1]), nvfp4-pack-quantized (weight_packed U8 [N,K/2], weight_scale F8_E4M3 [N,K/16],
 * weight_global_scale F32 [1]), mxfp4-pack-quantized (weight_packed, weight_scale U8 E8M0
 * [N,K/32]) and the DeepSeek "fp8" block checkpoint (weight_scale_inv). Each is rebuilt into a
 * struct as_fpq_weight and dequantized by as_fpq_dequant, the same f32 expression the writer's
 * read-back check uses. Activations: the input_activations of the config and the per-linear
 * input_scale / input_global_scale tensors become an as_act_quant for the forward pass. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "as_error.h"
#include "model.h"
#include "pack_fp.h"
#include "safetensors.h"

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

/* DeepSeek / vLLM ignored_layers, transformers modules_to_not_convert: module names (a listed
 * name matches the module or any module under it). */
static int name_listed(const json_t *list, const char *prefix) {
    size_t i;
    const json_t *t;
    json_array_foreach(list, i, t) {
        const char *s = json_string_value(t);
        size_t n = s ? strlen(s) : 0;
        if (n && !strncmp(prefix, s, n) && (prefix[n] == 0 || prefix[n] == '.')) return 1;
    }
    return 0;
}

/* The compressed-tensors config group for a module: NULL when ignored or not targeted. */
static const json_t *ct_group(const json_t *qc, const char *prefix, const char **fmt) {
    if (target_matches(json_object_get(qc, "ignore"), prefix)) return NULL;
    const json_t *v;
    const char *key;
    json_object_foreach((json_t *)json_object_get(qc, "config_groups"), key, v) {
        if (target_matches(json_object_get(v, "targets"), prefix)) {
            *fmt = json_string_value(json_object_get(v, "format"));
            if (!*fmt) *fmt = json_string_value(json_object_get(qc, "format"));
            return v;
        }
    }
    return NULL;
}

/* PREFIX.SUFFIX with a dtype from `dts` (NULL-terminated by AS_DTYPE_INVALID) and exactly the
 * given shape (ndim 0: any of [1], [], [1,1]). */
static const struct as_st_tensor *expect(const struct as_ckpt *c, const char *prefix,
                                         const char *suffix, const enum as_dtype *dts, int ndim,
                                         int64_t d0, int64_t d1) {
    char name[600];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const struct as_st_tensor *t = as_ckpt_find(c, name);
    if (!t) {
        as_fail("file %s: tensor %s: missing", as_ckpt_file_of(c, NULL), name);
        return NULL;
    }
    int ok = 0;
    char want[128] = "";
    for (int i = 0; dts[i] != AS_DTYPE_INVALID; i++) {
        ok |= t->dtype == dts[i];
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", i ? " or " : "",
                 as_dtype_name(dts[i]));
    }
    if (!ok) {
        as_fail("file %s: tensor %s: dtype %s, expected %s", as_ckpt_file_of(c, t), name,
                as_dtype_name(t->dtype), want);
        return NULL;
    }
    int same;
    if (ndim == 0)
        same = t->numel == 1 && t->ndim <= 2;
    else if (ndim == 1)
        same = t->ndim == 1 && t->shape[0] == d0;
    else
        same = t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1;
    if (!same) {
        char got[96] = "[";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        strcat(got, "]");
        if (ndim == 0)
            as_fail("file %s: tensor %s: shape %s, expected one element", as_ckpt_file_of(c, t),
                    name, got);
        else if (ndim == 1)
            as_fail("file %s: tensor %s: shape %s, expected [%lld]", as_ckpt_file_of(c, t), name,
                    got, (long long)d0);
        else
            as_fail("file %s: tensor %s: shape %s, expected [%lld, %lld]", as_ckpt_file_of(c, t),
                    name, got, (long long)d0, (long long)d1);
        return NULL;
    }
    return t;
}

static const enum as_dtype DT_FLOATS[] = {AS_F32, AS_BF16, AS_F16, AS_DTYPE_INVALID};
static const enum as_dtype DT_FP8[] = {AS_F8_E4M3, AS_DTYPE_INVALID};
static const enum as_dtype DT_I8[] = {AS_I8, AS_DTYPE_INVALID};
static const enum as_dtype DT_U8[] = {AS_U8, AS_F8_E8M0, AS_DTYPE_INVALID};

/* f32 copy of a float tensor; scales must be positive and finite. */
static float *read_scales(const struct as_ckpt *c, const struct as_st_tensor *t) {
    float *s = as_xmalloc(sizeof(float) * (t->numel ? t->numel : 1));
    if (as_ckpt_read_f32(c, t, s)) {
        free(s);
        return NULL;
    }
    for (uint64_t i = 0; i < t->numel; i++)
        if (!(s[i] > 0) || isinf(s[i])) {
            as_fail("file %s: tensor %s: scale %g at %llu is not a positive finite number",
                    as_ckpt_file_of(c, t), t->name, (double)s[i], (unsigned long long)i);
            free(s);
            return NULL;
        }
    return s;
}

static int dequant_into(struct as_fpq_weight *q, const void *codes, float *dst) {
    q->codes = (uint8_t *)codes; /* read only: as_fpq_dequant does not write it */
    as_fpq_dequant(q, dst);
    q->codes = NULL;
    free(q->scale), free(q->scale8);
    return 1;
}

/* FP8 (float-quantized or DeepSeek) and INT8 weights with f32-convertible scales. */
static int load_scaled(const struct as_ckpt *c, const char *prefix, int64_t N, int64_t K,
                       enum as_wq_kind kind, int bn, int bk, const char *scale_name, float *dst) {
    const struct as_st_tensor *tw =
        expect(c, prefix, "weight", kind == AS_WQ_INT8_CHANNEL ? DT_I8 : DT_FP8, 2, N, K);
    if (!tw) return -1;
    struct as_fpq_weight q = {.kind = kind, .N = (int)N, .K = (int)K};
    const struct as_st_tensor *ts;
    if (kind == AS_WQ_FP8_BLOCK) {
        q.block_n = bn, q.block_k = bk;
        q.sn = (int)((N + bn - 1) / bn), q.sk = (int)((K + bk - 1) / bk);
        ts = expect(c, prefix, scale_name, DT_FLOATS, 2, q.sn, q.sk);
    } else if (kind == AS_WQ_FP8_TENSOR) {
        q.block_n = (int)N, q.block_k = (int)K, q.sn = q.sk = 1;
        ts = expect(c, prefix, scale_name, DT_FLOATS, 0, 1, 1);
    } else {
        q.block_n = 1, q.block_k = (int)K, q.sn = (int)N, q.sk = 1;
        ts = expect(c, prefix, scale_name, DT_FLOATS, 2, N, 1);
    }
    if (!ts || !(q.scale = read_scales(c, ts))) return -1;
    return dequant_into(&q, tw->data, dst);
}

static int load_fp4(const struct as_ckpt *c, const char *prefix, int64_t N, int64_t K, int nv,
                    float *dst) {
    int g = nv ? 16 : 32;
    if (K % g)
        return as_fail("file %s: tensor %s.weight_packed: K = %lld is not a multiple of %d",
                       as_ckpt_file_of(c, NULL), prefix, (long long)K, g);
    const struct as_st_tensor *tw = expect(c, prefix, "weight_packed", DT_U8, 2, N, K / 2);
    if (!tw) return -1;
    const struct as_st_tensor *ts =
        expect(c, prefix, "weight_scale", nv ? DT_FP8 : DT_U8, 2, N, K / g);
    if (!ts) return -1;
    struct as_fpq_weight q = {.kind = nv ? AS_WQ_NVFP4 : AS_WQ_MXFP4,
                              .N = (int)N,
                              .K = (int)K,
                              .block_n = 1,
                              .block_k = g,
                              .sn = (int)N,
                              .sk = (int)(K / g)};
    if (nv) {
        const struct as_st_tensor *tg =
            expect(c, prefix, "weight_global_scale", DT_FLOATS, 0, 1, 1);
        if (!tg || as_ckpt_read_f32(c, tg, &q.global_scale)) return -1;
        if (!(q.global_scale > 0) || isinf(q.global_scale))
            return as_fail("file %s: tensor %s: global scale %g is not positive finite",
                           as_ckpt_file_of(c, tg), tg->name, (double)q.global_scale);
    }
    q.scale8 = as_xmalloc((size_t)N * (K / g));
    memcpy(q.scale8, ts->data, (size_t)N * (K / g));
    if (!nv)
        for (size_t i = 0; i < (size_t)N * (K / g); i++)
            if (q.scale8[i] == 0xFF) {
                free(q.scale8);
                return as_fail("file %s: tensor %s: E8M0 scale 0xFF (NaN) at %zu",
                               as_ckpt_file_of(c, ts), ts->name, i);
            }
    return dequant_into(&q, tw->data, dst);
}

static int block_of(const json_t *arr, int *bn, int *bk) {
    if (!json_is_array(arr) || json_array_size(arr) != 2) return -1;
    *bn = (int)json_integer_value(json_array_get(arr, 0));
    *bk = (int)json_integer_value(json_array_get(arr, 1));
    return *bn > 0 && *bk > 0 ? 0 : -1;
}

int as_fp_load_linear(const struct as_ckpt *c, const json_t *qc, const char *prefix, int64_t N,
                      int64_t K, float *dst) {
    if (!qc) return 0;
    if (json_object_get(qc, "quantization_config")) qc = json_object_get(qc, "quantization_config");
    const char *method = json_string_value(json_object_get(qc, "quant_method"));
    if (!method) return 0;
    char name[600];
    if (!strcmp(method, "fp8")) {
        if (name_listed(json_object_get(qc, "ignored_layers"), prefix) ||
            name_listed(json_object_get(qc, "modules_to_not_convert"), prefix))
            return 0;
        snprintf(name, sizeof name, "%s.weight_scale_inv", prefix);
        if (!as_ckpt_find(c, name)) {
            snprintf(name, sizeof name, "%s.weight", prefix);
            const struct as_st_tensor *t = as_ckpt_find(c, name);
            if (t && t->dtype == AS_F8_E4M3)
                return as_fail("file %s: tensor %s: FP8 weight without weight_scale_inv",
                               as_ckpt_file_of(c, t), name);
            return 0;
        }
        int bn, bk;
        if (block_of(json_object_get(qc, "weight_block_size"), &bn, &bk))
            return as_fail("file %s: quantization_config: fp8 \"weight_block_size\" must be "
                           "[bn, bk] (positive)",
                           as_ckpt_file_of(c, NULL));
        return load_scaled(c, prefix, N, K, AS_WQ_FP8_BLOCK, bn, bk, "weight_scale_inv", dst);
    }
    if (strcmp(method, "compressed-tensors")) return 0;
    const char *fmt = NULL;
    const json_t *grp = ct_group(qc, prefix, &fmt);
    const json_t *w = grp ? json_object_get(grp, "weights") : NULL;
    if (!w || !fmt) return 0;
    int is_float = !strcmp(fmt, "float-quantized");
    int is_int = !strcmp(fmt, "int-quantized") || !strcmp(fmt, "naive-quantized");
    int is_nv = !strcmp(fmt, "nvfp4-pack-quantized"), is_mx = !strcmp(fmt, "mxfp4-pack-quantized");
    if (!is_float && !is_int && !is_nv && !is_mx) return 0;
    /* a fallback layer kept in the model dtype */
    snprintf(name, sizeof name, "%s.weight", prefix);
    const struct as_st_tensor *tw = as_ckpt_find(c, name);
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    if (!as_ckpt_find(c, name)) {
        if (tw && (tw->dtype == AS_F32 || tw->dtype == AS_BF16 || tw->dtype == AS_F16)) return 0;
        return as_fail("file %s: tensor %s: missing", as_ckpt_file_of(c, NULL), name);
    }
    if (is_nv || is_mx) return load_fp4(c, prefix, N, K, is_nv, dst);
    const char *strategy = json_string_value(json_object_get(w, "strategy"));
    int64_t bits = json_integer_value(json_object_get(w, "num_bits"));
    if (bits != 8 || !strategy)
        return as_fail("file %s: quantization_config: %s weights need num_bits 8 and a strategy",
                       as_ckpt_file_of(c, NULL), fmt);
    if (is_int) {
        if (!strcmp(strategy, "channel"))
            return load_scaled(c, prefix, N, K, AS_WQ_INT8_CHANNEL, 1, (int)K, "weight_scale", dst);
        return as_fail("file %s: quantization_config: int-quantized strategy \"%s\" not supported "
                       "(channel)",
                       as_ckpt_file_of(c, NULL), strategy);
    }
    if (!strcmp(strategy, "tensor"))
        return load_scaled(c, prefix, N, K, AS_WQ_FP8_TENSOR, 0, 0, "weight_scale", dst);
    if (!strcmp(strategy, "channel"))
        return load_scaled(c, prefix, N, K, AS_WQ_FP8_CHANNEL, 0, 0, "weight_scale", dst);
    if (!strcmp(strategy, "block")) {
        int bn, bk;
        if (block_of(json_object_get(w, "block_structure"), &bn, &bk))
            return as_fail("file %s: quantization_config: block strategy needs block_structure "
                           "[bn, bk]",
                           as_ckpt_file_of(c, NULL));
        return load_scaled(c, prefix, N, K, AS_WQ_FP8_BLOCK, bn, bk, "weight_scale", dst);
    }
    return as_fail("file %s: quantization_config: float-quantized strategy \"%s\" not supported "
                   "(tensor, channel, block)",
                   as_ckpt_file_of(c, NULL), strategy);
}

/* ---- engine registration ---- */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static char cached_dir[4096];
static json_t *cached_qc;
static as_weight_loader prev_ct; /* compressed-tensors loader registered before ours */

static struct timespec cached_mtime;

/* The checkpoint's quantization_config, cached per directory and config.json mtime (a directory
 * rewritten in place, as tests and pipelines do, is read again). */
static json_t *quant_config_for(const struct as_ckpt *c) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    struct stat sb;
    memset(&sb, 0, sizeof sb);
    stat(path, &sb);
    pthread_mutex_lock(&cache_lock);
    if (!cached_qc || strcmp(cached_dir, c->dir) || sb.st_mtim.tv_sec != cached_mtime.tv_sec ||
        sb.st_mtim.tv_nsec != cached_mtime.tv_nsec) {
        json_decref(cached_qc);
        cached_qc = NULL;
        cached_mtime = sb.st_mtim;
        json_t *cfg = json_load_file(path, 0, NULL);
        if (cfg) {
            cached_qc = json_incref(json_object_get(cfg, "quantization_config"));
            json_decref(cfg);
        }
        snprintf(cached_dir, sizeof cached_dir, "%s", c->dir);
    }
    json_t *qc = cached_qc;
    pthread_mutex_unlock(&cache_lock);
    return qc;
}

static int fp_loader(const struct as_ckpt *c, const char *name, int64_t rows, int64_t cols,
                     float *dst) {
    size_t n = strlen(name);
    if (n > 7 && n < 1024 && !strcmp(name + n - 7, ".weight")) {
        char prefix[1024];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(n - 7), name);
        int rc = as_fp_load_linear(c, quant_config_for(c), prefix, rows, cols, dst);
        if (rc < 0) return -1;
        if (rc == 1) return 0;
    }
    json_t *qc = quant_config_for(c);
    const char *method = json_string_value(json_object_get(qc, "quant_method"));
    if (prev_ct && method && !strcmp(method, "compressed-tensors"))
        return prev_ct(c, name, rows, cols, dst);
    return as_weight_load_dense(c, name, rows, cols, dst);
}

void as_register_fp_loaders(void) {
    static int done;
    if (done) return;
    done = 1;
    as_weight_loader prev = as_weight_loader_find("compressed-tensors");
    if (prev != fp_loader) prev_ct = prev;
    as_weight_loader_register("compressed-tensors", fp_loader);
    as_weight_loader_register("fp8", fp_loader);
    as_weight_loader_register("as-fakequant", fp_loader);
}

/* ---- activations ---- */

/* The activation quantizer compressed-tensors input_activations args describe. */
static int aq_of_args(const json_t *a, const char *dir, enum as_aq_kind *kind) {
    if (!a || json_is_null(a)) {
        *kind = AS_AQ_NONE;
        return 0;
    }
    const char *type = json_string_value(json_object_get(a, "type"));
    const char *strategy = json_string_value(json_object_get(a, "strategy"));
    int64_t bits = json_integer_value(json_object_get(a, "num_bits"));
    int64_t group = json_integer_value(json_object_get(a, "group_size"));
    const json_t *dyn = json_object_get(a, "dynamic");
    int dynamic = json_is_true(dyn) || json_is_string(dyn);
    if (!type || !strategy) goto bad;
    if (!strcmp(type, "float") && bits == 8) {
        if (!strcmp(strategy, "tensor"))
            *kind = dynamic ? AS_AQ_FP8_TENSOR_DYN : AS_AQ_FP8_STATIC;
        else if (!strcmp(strategy, "token") && dynamic)
            *kind = AS_AQ_FP8_TOKEN;
        else if (!strcmp(strategy, "group") && group == 128 && dynamic)
            *kind = AS_AQ_FP8_GROUP128;
        else
            goto bad;
        return 0;
    }
    if (!strcmp(type, "int") && bits == 8) {
        if (!strcmp(strategy, "token") && dynamic)
            *kind = AS_AQ_INT8_TOKEN;
        else if (!strcmp(strategy, "tensor") && !dynamic)
            *kind = AS_AQ_INT8_STATIC;
        else
            goto bad;
        return 0;
    }
    if (!strcmp(type, "float") && bits == 4) {
        if (!strcmp(strategy, "tensor_group") && group == 16)
            *kind = AS_AQ_NVFP4;
        else if (!strcmp(strategy, "group") && group == 32 && dynamic)
            *kind = AS_AQ_MXFP4;
        else
            goto bad;
        return 0;
    }
bad:
    return as_fail("file %s/config.json: quantization_config: input_activations (%s, %lld bits, "
                   "strategy %s) not supported",
                   dir, type ? type : "?", (long long)bits, strategy ? strategy : "?");
}

static int needs_scale(enum as_aq_kind k) {
    return k == AS_AQ_FP8_STATIC || k == AS_AQ_INT8_STATIC || k == AS_AQ_NVFP4;
}

int as_act_quant_from_checkpoint(const struct as_model *m, const char *dir,
                                 struct as_act_quant **out) {
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    if (!cfg) return as_fail("%s: line %d: %s", path, jerr.line, jerr.text);
    const json_t *qc = json_object_get(cfg, "quantization_config");
    const char *method = json_string_value(json_object_get(qc, "quant_method"));
    if (!method || (strcmp(method, "compressed-tensors") && strcmp(method, "fp8") &&
                    strcmp(method, "as-fakequant"))) {
        json_decref(cfg);
        return 0;
    }
    struct as_ckpt *ck = NULL;
    struct as_act_quant *aq = as_act_quant_new(m->cfg.n_layers);
    int rc = 0;
    for (int l = 0; l < m->cfg.n_layers && !rc; l++)
        for (int which = 0; which < AS_LIN_COUNT && !rc; which++) {
            char tname[300], prefix[300];
            as_linear_tensor_name(l, (enum as_linear)which, tname, sizeof tname);
            snprintf(prefix, sizeof prefix, "%.*s", (int)strlen(tname) - 7, tname);
            enum as_aq_kind kind = AS_AQ_NONE;
            if (!strcmp(method, "fp8")) {
                const char *sch = json_string_value(json_object_get(qc, "activation_scheme"));
                int ign = name_listed(json_object_get(qc, "ignored_layers"), prefix) ||
                          name_listed(json_object_get(qc, "modules_to_not_convert"), prefix);
                kind = ign                             ? AS_AQ_NONE
                       : sch && !strcmp(sch, "static") ? AS_AQ_FP8_STATIC
                                                       : AS_AQ_FP8_GROUP128;
            } else if (!strcmp(method, "as-fakequant")) {
                const char *an = json_string_value(json_object_get(qc, "input_activations"));
                int k = an ? as_aq_from_name(an) : AS_AQ_NONE;
                if (k < 0) {
                    rc = as_fail("%s: quantization_config: input_activations \"%s\" unknown", path,
                                 an);
                    break;
                }
                kind = (enum as_aq_kind)k;
            } else {
                const char *fmt = NULL;
                const json_t *grp = ct_group(qc, prefix, &fmt);
                if (grp && aq_of_args(json_object_get(grp, "input_activations"), dir, &kind)) {
                    rc = -1;
                    break;
                }
            }
            int gi = l * AS_GROUP_COUNT + (int)as_linear_group_of((enum as_linear)which);
            int first = which == AS_LIN_Q || which == AS_LIN_O || which == AS_LIN_GATE ||
                        which == AS_LIN_DOWN;
            if (first)
                aq->kind[gi] = kind;
            else if (aq->kind[gi] != kind) {
                rc = as_fail("%s: %s: activation quantization %s differs from the other linears "
                             "sharing its input (%s)",
                             path, prefix, as_aq_names[kind], as_aq_names[aq->kind[gi]]);
                break;
            }
            if (!needs_scale(kind)) continue;
            if (!ck && !(ck = as_ckpt_open(dir))) {
                rc = -1;
                break;
            }
            const struct as_st_tensor *t =
                expect(ck, prefix,
                       kind == AS_AQ_NVFP4 && strcmp(method, "as-fakequant") ? "input_global_scale"
                                                                             : "input_scale",
                       DT_FLOATS, 0, 1, 1);
            float s;
            if (!t || as_ckpt_read_f32(ck, t, &s)) {
                rc = -1;
                break;
            }
            if (!(s > 0) || isinf(s)) {
                rc = as_fail("file %s: tensor %s: input scale %g is not positive finite",
                             as_ckpt_file_of(ck, t), t->name, (double)s);
                break;
            }
            /* fused q/k/v and gate/up share the largest static scale, as vLLM does */
            if (kind == AS_AQ_NVFP4)
                aq->scale[gi] = first || s < aq->scale[gi] ? s : aq->scale[gi];
            else
                aq->scale[gi] = first || s > aq->scale[gi] ? s : aq->scale[gi];
        }
    as_ckpt_close(ck);
    json_decref(cfg);
    if (rc || !as_act_quant_active(aq)) {
        as_act_quant_free(aq);
        return rc;
    }
    *out = aq;
    return 0;
}

/* kv_cache_scheme (compressed-tensors, as llm-compressor writes it): FP8 E4M3, one static scale
 * per tensor: model.layers.N.self_attn.k_scale / v_scale, one element each. */
int as_kv_quant_from_checkpoint(const struct as_model *m, const char *dir,
                                struct as_kv_quant **out) {
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    if (!cfg) return as_fail("%s: line %d: %s", path, jerr.line, jerr.text);
    const json_t *kv =
        json_object_get(json_object_get(cfg, "quantization_config"), "kv_cache_scheme");
    if (!kv || json_is_null(kv)) {
        json_decref(cfg);
        return 0;
    }
    const char *type = json_string_value(json_object_get(kv, "type"));
    const char *strategy = json_string_value(json_object_get(kv, "strategy"));
    json_int_t bits = json_integer_value(json_object_get(kv, "num_bits"));
    const json_t *dyn = json_object_get(kv, "dynamic");
    if (!json_is_object(kv) || bits != 8 || !type || strcmp(type, "float") ||
        (strategy && strcmp(strategy, "tensor")) || json_is_true(dyn)) {
        int rc = as_fail("%s: quantization_config: kv_cache_scheme (%s, %lld bits, strategy %s%s) "
                         "is not supported: expected FP8 (num_bits 8, type float), strategy "
                         "tensor, static scales",
                         path, type ? type : "?", (long long)bits, strategy ? strategy : "?",
                         json_is_true(dyn) ? ", dynamic" : "");
        json_decref(cfg);
        return rc;
    }
    json_decref(cfg);
    struct as_ckpt *ck = as_ckpt_open(dir);
    if (!ck) return -1;
    struct as_kv_quant *kq = as_kv_quant_new(m->cfg.n_layers);
    int rc = 0;
    for (int l = 0; l < m->cfg.n_layers && !rc; l++)
        for (int which = 0; which < 2 && !rc; which++) {
            char prefix[64], what[700];
            snprintf(prefix, sizeof prefix, "model.layers.%d.self_attn", l);
            const struct as_st_tensor *t =
                expect(ck, prefix, which ? "v_scale" : "k_scale", DT_FLOATS, 0, 1, 1);
            float s;
            if (!t || as_ckpt_read_f32(ck, t, &s)) {
                rc = -1;
                break;
            }
            snprintf(what, sizeof what, "file %s: tensor %s", as_ckpt_file_of(ck, t), t->name);
            rc = as_kv_scale_check(s, what);
            (which ? kq->v_scale : kq->k_scale)[l] = s;
        }
    as_ckpt_close(ck);
    if (rc) {
        as_kv_quant_free(kq);
        return -1;
    }
    *out = kq;
    return 0;
}
