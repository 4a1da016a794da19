/* as-lepto: FP8 / INT8 / NVFP4 / MXFP4 / W4A8 scales for every decoder linear, LeptoQuant's
 * search for static FP8 input scales, and FP8 scale diagnostics (docs/lepto.md).
 *
 * Input: the original model (-m) and, for schemes that need data, an as-calib stream: act_absmax
 * records give the static input scales (absmax / 448; NVFP4's input global scale 448*6/absmax)
 * and SmoothQuant's per-channel maxima; `--method lepto` needs the layer inputs of
 * `as-calib --keep-seqs S` (whole sequences: the attention output depends on them). Output: per
 * linear the weight_codes / weight_scale / (weight_global_scale) / (input_scale) records of
 * pack_fp.h, plus SmoothQuant's rescaled norms as role "weight" records; `as-pack -f ct-fp`
 * writes the checkpoint. `--analyze` prints per-tensor statistics instead, and `--svg` draws a
 * weight's histogram before and after FP8 quantize-dequantize. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "as_error.h"
#include "cli_args.h"
#include "fpquant.h"
#include "lepto.h"
#include "model.h"
#include "pack_fp.h"
#include "qstream.h"
#include "stream.h"

extern void openblas_set_num_threads(int);

static void usage(FILE *f) {
    fprintf(f,
            "usage: as-lepto -m MODEL -s SCHEME [options] [STREAM...] > OUT_STREAM\n"
            "       as-lepto -m MODEL --analyze [--svg FILE --tensor NAME] [STREAM...]\n"
            "FP8/INT8/FP4 scales of every decoder linear (records for as-pack -f ct-fp).\n"
            "  -m, --model DIR        the original (dense) checkpoint\n"
            "  -s, --scheme S         fp8-static   FP8 weights (absmax/448), static FP8 inputs\n"
            "                         fp8-dynamic  FP8 per-channel weights, per-token inputs\n"
            "                         fp8-block    FP8 128x128 weight blocks, dynamic inputs\n"
            "                         int8-dynamic INT8 per-channel weights, per-token inputs\n"
            "                         nvfp4        FP4 blocks of 16 (E4M3 scales, global scale)\n"
            "                         mxfp4        FP4 blocks of 32 (E8M0 scales)\n"
            "                         w4a8-fp8     int4 group weights, static FP8 inputs\n"
            "      --method M         absmax (default) or lepto: static FP8 input scales\n"
            "      --weights W        fp8-static weight scales: tensor (default) or channel\n"
            "      --block N          fp8-block edge (default 128)\n"
            "      --group N          w4a8-fp8 group size (default 128)\n"
            "      --smooth ALPHA     int8-dynamic: SmoothQuant into the q/k/v and gate/up norms\n"
            "      --kv-cache fp8     also static FP8 KV-cache scales per layer (k_scale,\n"
            "                         v_scale = absmax / 448 of the keys after RoPE and of the\n"
            "                         values: as-calib --kv-stats)\n"
            "      --layers A[-B]     only these decoder layers\n"
            "      --report FILE      LeptoQuant: one JSON line per layer and group\n"
            "      --analyze          diagnostics: absmax, mean |x|, kurtosis, FP8 zero/saturated\n"
            "                         fractions per weight (and per activation from the stream)\n"
            "      --outlier-kurtosis K  flag tensors whose kurtosis exceeds K (default 10)\n"
            "      --svg FILE         histogram before/after FP8 of --tensor NAME (a weight, or\n"
            "                         model.layers.N.GROUP.act_sample from --keep-inputs)\n"
            "      --json             JSON (summary, or --analyze lines) on stdout\n"
            "      --threads N        OpenBLAS threads\n"
            "  -h, --help\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

enum scheme { S_FP8_STATIC, S_FP8_DYNAMIC, S_FP8_BLOCK, S_INT8, S_NVFP4, S_MXFP4, S_W4A8, S_COUNT };
static const char *const scheme_names[S_COUNT] = {
    "fp8-static", "fp8-dynamic", "fp8-block", "int8-dynamic", "nvfp4", "mxfp4", "w4a8-fp8"};

/* Calibration data per layer and group. */
struct group_data {
    float *absmax; /* [dim] per-channel absmax, or NULL */
    float *mean_abs;
    int dim;
    float *sample; /* act_sample [rows, dim] */
    int rows;
};
struct layer_data {
    struct group_data g[AS_GROUP_COUNT];
    float *input; /* layer-input [S*seqlen, hidden] */
    int seqs, seqlen;
    float kv_absmax[2]; /* kv-absmax: keys (after RoPE), values */
    int has_kv;
};

struct tool {
    struct as_model *m;
    struct layer_data *ld;
    int lo, hi;
};

static float *copy_payload(struct as_stream_reader *r, const struct as_rec *rec) {
    const void *p = as_stream_payload(r);
    if (!p) return NULL;
    uint64_t n = as_rec_numel(rec);
    float *f = as_xmalloc(sizeof(float) * (n ? n : 1));
    if (as_convert_to_f32(rec->dtype, p, f, n)) {
        free(f);
        as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(f[i])) {
            free(f);
            as_fail("stream %s: tensor %s: non-finite value at %llu", as_stream_name(r), rec->name,
                    (unsigned long long)i);
            return NULL;
        }
    return f;
}

static int group_dim(const struct as_model *m, int g) {
    return g == AS_GROUP_ATTN_O     ? m->cfg.n_heads * m->cfg.head_dim
           : g == AS_GROUP_MLP_DOWN ? m->cfg.intermediate
                                    : m->cfg.hidden;
}

/* Take the statistics records we use; everything else (Hessians, weights by reference) is
 * skipped without reading its payload. */
static int read_stream(struct tool *t, const char *path) {
    struct as_stream_reader *r = as_stream_open(path);
    if (!r) return -1;
    const struct as_rec *rec;
    int rc;
    while ((rc = as_stream_next(r, &rec)) == 1) {
        const char *role = rec->role ? rec->role : "";
        int l = rec->layer;
        if (strcmp(role, "act-absmax") && strcmp(role, "act-mean-abs") &&
            strcmp(role, "act-sample") && strcmp(role, "layer-input") && strcmp(role, "kv-absmax"))
            continue;
        if (l < 0 || l >= t->m->cfg.n_layers) {
            rc = as_fail("stream %s: tensor %s: layer %d out of range (model has %d)",
                         as_stream_name(r), rec->name, l, t->m->cfg.n_layers);
            break;
        }
        struct layer_data *ld = &t->ld[l];
        if (!strcmp(role, "kv-absmax")) { /* as-calib --kv-stats: [absmax K, absmax V] */
            if (as_rec_numel(rec) != 2) {
                rc = as_fail("stream %s: tensor %s: kv-absmax must hold 2 values (keys, values), "
                             "got %llu",
                             as_stream_name(r), rec->name, (unsigned long long)as_rec_numel(rec));
                break;
            }
            float *f = copy_payload(r, rec);
            if (!f) {
                rc = -1;
                break;
            }
            if (f[0] < 0 || f[1] < 0) {
                rc = as_fail("stream %s: tensor %s: negative absmax %g, %g", as_stream_name(r),
                             rec->name, (double)f[0], (double)f[1]);
                free(f);
                break;
            }
            ld->kv_absmax[0] = f[0], ld->kv_absmax[1] = f[1], ld->has_kv = 1;
            free(f);
            continue;
        }
        if (!strcmp(role, "layer-input")) {
            int D = t->m->cfg.hidden;
            json_t *a = rec->attrs;
            int seqs = (int)json_integer_value(json_object_get(a, "seqs"));
            int seqlen = (int)json_integer_value(json_object_get(a, "seqlen"));
            if (rec->ndim != 2 || rec->shape[1] != D || seqs < 1 || seqlen < 1 ||
                rec->shape[0] != (int64_t)seqs * seqlen) {
                rc = as_fail("stream %s: tensor %s: layer-input must be [seqs*seqlen, %d] with "
                             "attrs seqs and seqlen",
                             as_stream_name(r), rec->name, D);
                break;
            }
            free(ld->input);
            if (!(ld->input = copy_payload(r, rec))) {
                rc = -1;
                break;
            }
            ld->seqs = seqs, ld->seqlen = seqlen;
            continue;
        }
        /* model.layers.N.GROUP.ROLE */
        int g = -1;
        for (int i = 0; i < AS_GROUP_COUNT; i++) {
            char want[160];
            snprintf(want, sizeof want, "model.layers.%d.%s.", l, as_group_names[i]);
            if (!strncmp(rec->name, want, strlen(want))) g = i;
        }
        if (g < 0) continue;
        int dim = group_dim(t->m, g);
        int is_sample = !strcmp(role, "act-sample");
        if ((is_sample && (rec->ndim != 2 || rec->shape[1] != dim)) ||
            (!is_sample && (rec->ndim != 1 || rec->shape[0] != dim))) {
            rc = as_fail("stream %s: tensor %s: expected %s of dimension %d", as_stream_name(r),
                         rec->name, is_sample ? "[rows, dim]" : "[dim]", dim);
            break;
        }
        float *f = copy_payload(r, rec);
        if (!f) {
            rc = -1;
            break;
        }
        /* absmax and mean |x| are magnitudes: a negative or non-finite one is a damaged record,
         * which fabs() downstream would otherwise turn into a plausible scale */
        if (!is_sample)
            for (int j = 0; j < dim; j++)
                if (!(f[j] >= 0) || !isfinite(f[j])) {
                    rc = as_fail("stream %s: tensor %s: element %d is %g, a magnitude must be "
                                 "finite and >= 0",
                                 as_stream_name(r), rec->name, j, (double)f[j]);
                    break;
                }
        if (rc < 0) {
            free(f);
            break;
        }
        struct group_data *gd = &ld->g[g];
        gd->dim = dim;
        if (is_sample)
            free(gd->sample), gd->sample = f, gd->rows = (int)rec->shape[0];
        else if (!strcmp(role, "act-absmax"))
            free(gd->absmax), gd->absmax = f;
        else
            free(gd->mean_abs), gd->mean_abs = f;
    }
    as_stream_close(r);
    return rc < 0 ? -1 : 0;
}

static float group_absmax(const struct group_data *gd) {
    return gd->absmax ? as_absmax(gd->absmax, (size_t)gd->dim) : 0;
}

static const enum as_linear members[AS_GROUP_COUNT][4] = {
    {AS_LIN_Q, AS_LIN_K, AS_LIN_V, AS_LIN_COUNT},
    {AS_LIN_O, AS_LIN_COUNT},
    {AS_LIN_GATE, AS_LIN_UP, AS_LIN_COUNT},
    {AS_LIN_DOWN, AS_LIN_COUNT}};

/* SmoothQuant (REFERENCE.md): s_j = max|X_j|^a / max|W_j|^(1-a) over the group's linears,
 * W[:, j] *= s_j, previous norm /= s_j. Zero or non-finite factors become 1. */
static void smooth_group(struct as_model *m, int l, int g, const float *xmax, float alpha,
                         float *norm) {
    int D = m->cfg.hidden;
    float *wmax = as_xcalloc(D, sizeof(float)), *s = as_xmalloc(sizeof(float) * D);
    for (int i = 0; members[g][i] != AS_LIN_COUNT; i++) {
        int rows, cols;
        as_model_linear_shape(m, members[g][i], &rows, &cols);
        const float *W = m->layers[l].w[members[g][i]];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++)
                wmax[j] = fmaxf(wmax[j], fabsf(W[(size_t)r * cols + j]));
    }
    for (int j = 0; j < D; j++) {
        double v = pow(xmax[j], alpha) / pow(wmax[j], 1.0 - alpha);
        s[j] = isfinite(v) && v > 1e-5 ? (float)v : 1.0f;
        norm[j] /= s[j];
    }
    for (int i = 0; members[g][i] != AS_LIN_COUNT; i++) {
        int rows, cols;
        as_model_linear_shape(m, members[g][i], &rows, &cols);
        float *W = m->layers[l].w[members[g][i]];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++)
                W[(size_t)r * cols + j] *= s[j];
    }
    free(wmax), free(s);
}

struct opts {
    enum scheme scheme;
    int lepto, weights_channel, block, group, json, kv_fp8;
    float smooth;
    FILE *report;
};

static int quantize_layer(struct tool *t, struct as_stream_writer *w, int l, const struct opts *o,
                          json_t *summary) {
    struct as_model *m = t->m;
    struct layer_data *ld = &t->ld[l];
    enum scheme sc = o->scheme;
    float in_scale[AS_GROUP_COUNT] = {0};
    json_t *gattrs[AS_GROUP_COUNT] = {0};
    int needs_absmax = sc == S_FP8_STATIC || sc == S_W4A8 || sc == S_NVFP4 || o->smooth > 0;
    for (int g = 0; g < AS_GROUP_COUNT; g++) {
        gattrs[g] = json_pack("{s:s, s:s}", "scheme", scheme_names[sc], "method",
                              o->lepto ? "lepto" : "absmax");
        if (needs_absmax && !ld->g[g].absmax) {
            for (int k = 0; k < AS_GROUP_COUNT; k++)
                json_decref(gattrs[k]);
            return as_fail("layer %d: no model.layers.%d.%s.act_absmax record in the stream (%s "
                           "needs calibration statistics: as-calib)",
                           l, l, as_group_names[g], sc == S_INT8 ? "--smooth" : scheme_names[sc]);
        }
    }
    if (sc == S_FP8_STATIC || sc == S_W4A8) {
        float amax[AS_GROUP_COUNT];
        for (int g = 0; g < AS_GROUP_COUNT; g++)
            amax[g] = group_absmax(&ld->g[g]);
        if (o->lepto) {
            struct as_lepto_result res[AS_GROUP_COUNT];
            double t0 = now_s();
            int rc = ld->input
                         ? as_lepto_search_layer(m, l, ld->input, ld->seqs, ld->seqlen, amax, res)
                         : as_fail("layer %d: no model.layers.%d.input record in the stream "
                                   "(--method lepto needs whole sequences: as-calib "
                                   "--keep-seqs S)",
                                   l, l);
            if (rc) {
                for (int g = 0; g < AS_GROUP_COUNT; g++)
                    json_decref(gattrs[g]);
                return -1;
            }
            double dt = now_s() - t0;
            for (int g = 0; g < AS_GROUP_COUNT; g++) {
                struct as_lepto_result *r = &res[g];
                in_scale[g] = r->best_scale;
                double red = r->loss_absmax > 0 ? 1 - r->loss_best / r->loss_absmax : 0;
                json_object_set_new(gattrs[g], "percentile", json_real(r->best_p));
                json_object_set_new(gattrs[g], "loss_absmax", json_real(r->loss_absmax));
                json_object_set_new(gattrs[g], "loss", json_real(r->loss_best));
                json_t *line = json_pack("{s:i, s:s, s:f, s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:f}",
                                         "layer", l, "group", as_group_names[g], "percentile",
                                         r->best_p, "r", r->best_r, "scale", (double)r->best_scale,
                                         "absmax_scale", (double)r->absmax_scale, "loss_absmax",
                                         r->loss_absmax, "loss", r->loss_best, "reduction", red,
                                         "values", (json_int_t)r->n_values, "seconds", r->seconds);
                json_t *cands = json_array();
                for (int i = 0; i < AS_LEPTO_NCAND; i++)
                    json_array_append_new(
                        cands, json_pack("{s:f, s:f, s:f}", "p", 0.999 + 0.00005 * (i + 8), "scale",
                                         (double)r->cand_scale[i], "loss", r->cand_loss[i]));
                json_object_set_new(line, "candidates", cands);
                if (o->report) {
                    char *js = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(9));
                    fprintf(o->report, "%s\n", js);
                    free(js);
                }
                json_array_append_new(json_object_get(summary, "groups"), line);
            }
            json_object_set_new(
                summary, "lepto_seconds",
                json_real(json_real_value(json_object_get(summary, "lepto_seconds")) + dt));
        } else {
            for (int g = 0; g < AS_GROUP_COUNT; g++)
                in_scale[g] = as_scale_for(amax[g], AS_FP8_MAX);
        }
    } else if (sc == S_NVFP4) {
        for (int g = 0; g < AS_GROUP_COUNT; g++)
            in_scale[g] = as_nvfp4_global_scale(group_absmax(&ld->g[g]));
    }
    if (o->smooth > 0) { /* SmoothQuant into the norms before q/k/v and gate/up */
        static const char *const norm_name[2] = {"input_layernorm", "post_attention_layernorm"};
        for (int k = 0; k < 2; k++) {
            int g = k ? AS_GROUP_MLP_GATE_UP : AS_GROUP_ATTN_QKV;
            float *norm = k ? m->layers[l].ffn_norm : m->layers[l].attn_norm;
            smooth_group(m, l, g, ld->g[g].absmax, o->smooth, norm);
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norm_name[k]);
            int64_t shape[1] = {m->cfg.hidden};
            if (as_stream_write_tensor(w, name, "weight", l, AS_F32, 1, shape, NULL, norm))
                goto fail;
            json_object_set_new(gattrs[g], "smooth_alpha", json_real(o->smooth));
        }
    }
    static const enum as_wq_kind wk_of[S_COUNT] = {
        AS_WQ_FP8_TENSOR, AS_WQ_FP8_CHANNEL, AS_WQ_FP8_BLOCK, AS_WQ_INT8_CHANNEL,
        AS_WQ_NVFP4,      AS_WQ_MXFP4,       AS_WQ_INT4_GROUP};
    static const enum as_aq_kind ak_of[S_COUNT] = {
        AS_AQ_FP8_STATIC, AS_AQ_FP8_TOKEN, AS_AQ_FP8_GROUP128, AS_AQ_INT8_TOKEN,
        AS_AQ_NVFP4,      AS_AQ_MXFP4,     AS_AQ_FP8_STATIC};
    enum as_wq_kind wk = wk_of[sc];
    if (sc == S_FP8_STATIC && o->weights_channel) wk = AS_WQ_FP8_CHANNEL;
    for (int g = 0; g < AS_GROUP_COUNT; g++) {
        /* NVFP4: fused q/k/v and gate/up share one weight global scale */
        float global = 0;
        if (sc == S_NVFP4) {
            float amax = 0;
            for (int i = 0; members[g][i] != AS_LIN_COUNT; i++) {
                int rows, cols;
                as_model_linear_shape(m, members[g][i], &rows, &cols);
                amax = fmaxf(amax, as_absmax(m->layers[l].w[members[g][i]], (size_t)rows * cols));
            }
            global = as_nvfp4_global_scale(amax);
        }
        for (int i = 0; members[g][i] != AS_LIN_COUNT; i++) {
            enum as_linear which = members[g][i];
            int rows, cols;
            as_model_linear_shape(m, which, &rows, &cols);
            char prefix[200], name[220];
            as_linear_prefix(l, which, prefix, sizeof prefix);
            snprintf(name, sizeof name, "%s.weight", prefix);
            struct as_fpq_weight q;
            int blk = sc == S_FP8_BLOCK ? o->block : sc == S_W4A8 ? o->group : 0;
            if (as_fpq_quantize(m->layers[l].w[which], rows, cols, wk, blk, global, name, &q))
                goto fail;
            int rc = as_fplinear_write(w, prefix, l, &q, ak_of[sc], in_scale[g], gattrs[g]);
            as_fpq_free(&q);
            if (rc) goto fail;
        }
    }
    for (int g = 0; g < AS_GROUP_COUNT; g++)
        json_decref(gattrs[g]);
    return 0;
fail:
    for (int g = 0; g < AS_GROUP_COUNT; g++)
        json_decref(gattrs[g]);
    return -1;
}

/* --kv-cache fp8: k_scale = max(absmax K / 448, eps), v_scale likewise (compressed-tensors'
 * static per-tensor FP8 rule), from as-calib's statistics over every calibration token. */
static int kv_scales(struct tool *t, struct as_stream_writer *w, int l) {
    const struct layer_data *ld = &t->ld[l];
    if (!ld->has_kv)
        return as_fail("layer %d: no model.layers.%d.self_attn.kv_absmax record in the stream "
                       "(--kv-cache fp8 needs the keys' and values' absmax: as-calib --kv-stats)",
                       l, l);
    if (!w) return 0; /* only checking */
    json_t *a = json_pack("{s:f, s:f}", "k_absmax", (double)ld->kv_absmax[0], "v_absmax",
                          (double)ld->kv_absmax[1]);
    int rc = as_kvscale_write(w, l, as_scale_for(ld->kv_absmax[0], AS_FP8_MAX),
                              as_scale_for(ld->kv_absmax[1], AS_FP8_MAX), a);
    json_decref(a);
    return rc;
}

/* ---- --analyze ---- */

static void diag_line(const char *name, const char *kind, const struct as_tensor_diag *d,
                      int has_dist, double kurt_thr, int json, int *n_flag) {
    int flag = has_dist && d->kurtosis > kurt_thr;
    *n_flag += flag;
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:f, s:f, s:f}", "tensor", name, "kind", kind, "n",
                              (json_int_t)d->n, "absmax", d->absmax, "absmean", d->absmean,
                              "fp8_scale", (double)d->scale);
        if (has_dist) {
            json_object_set_new(o, "kurtosis", json_real(d->kurtosis));
            json_object_set_new(o, "fp8_zero", json_real(d->frac_zero));
            json_object_set_new(o, "fp8_saturated", json_real(d->frac_saturated));
            json_object_set_new(o, "fp8_subnormal", json_real(d->frac_subnormal));
        }
        json_object_set_new(o, "outlier", json_boolean(flag));
        char *js = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7));
        printf("%s\n", js);
        free(js);
        json_decref(o);
        return;
    }
    if (has_dist)
        printf("%-44s %-6s %10.4g %10.4g %9.2f %9.2e %9.2e %9.2e%s\n", name, kind, d->absmax,
               d->absmean, d->kurtosis, d->frac_zero, d->frac_saturated, d->frac_subnormal,
               flag ? "  OUTLIER" : "");
    else
        printf("%-44s %-6s %10.4g %10.4g %9s %9s %9s %9s\n", name, kind, d->absmax, d->absmean, "-",
               "-", "-", "-");
}

static int analyze(struct tool *t, double kurt_thr, int json) {
    struct as_model *m = t->m;
    int n_flag = 0;
    if (!json)
        printf("%-44s %-6s %10s %10s %9s %9s %9s %9s\n", "tensor", "kind", "absmax", "absmean",
               "kurtosis", "fp8_zero", "fp8_sat", "fp8_sub");
    for (int l = t->lo; l <= t->hi; l++) {
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            int rows, cols;
            as_model_linear_shape(m, (enum as_linear)w, &rows, &cols);
            char name[200];
            as_linear_tensor_name(l, (enum as_linear)w, name, sizeof name);
            struct as_tensor_diag d;
            as_tensor_diag(m->layers[l].w[w], (size_t)rows * cols, 0, &d);
            diag_line(name, "weight", &d, 1, kurt_thr, json, &n_flag);
        }
        for (int g = 0; g < AS_GROUP_COUNT; g++) {
            const struct group_data *gd = &t->ld[l].g[g];
            if (!gd->absmax && !gd->sample) continue;
            char name[200];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, as_group_names[g]);
            struct as_tensor_diag d = {0};
            float amax = group_absmax(gd);
            if (gd->sample) { /* distribution from the kept rows; static scale from all tokens */
                as_tensor_diag(gd->sample, (size_t)gd->rows * gd->dim,
                               amax > 0 ? as_scale_for(amax, AS_FP8_MAX) : 0, &d);
                if (amax > d.absmax) d.absmax = amax;
            } else {
                d.absmax = amax;
                d.scale = as_scale_for(amax, AS_FP8_MAX);
                if (gd->mean_abs) {
                    double s = 0;
                    for (int j = 0; j < gd->dim; j++)
                        s += gd->mean_abs[j];
                    d.absmean = s / gd->dim;
                }
            }
            diag_line(name, "input", &d, gd->sample != NULL, kurt_thr, json, &n_flag);
        }
    }
    if (!json) printf("%d tensor(s) flagged with kurtosis > %g\n", n_flag, kurt_thr);
    return 0;
}

static int draw_svg(struct tool *t, const char *tensor, const char *path) {
    int l;
    enum as_linear which;
    const float *x = NULL;
    size_t n = 0;
    if (!as_linear_parse(tensor, &l, &which)) {
        int rows, cols;
        as_model_linear_shape(t->m, which, &rows, &cols);
        x = t->m->layers[l].w[which], n = (size_t)rows * cols;
    } else {
        for (int k = 0; k < t->m->cfg.n_layers && !x; k++)
            for (int g = 0; g < AS_GROUP_COUNT; g++) {
                char name[200];
                snprintf(name, sizeof name, "model.layers.%d.%s.act_sample", k, as_group_names[g]);
                if (!strcmp(name, tensor) && t->ld[k].g[g].sample)
                    x = t->ld[k].g[g].sample, n = (size_t)t->ld[k].g[g].rows * t->ld[k].g[g].dim;
            }
    }
    if (!x)
        return as_fail("--tensor %s: not a decoder linear weight of the model nor an act_sample "
                       "record of the stream",
                       tensor);
    FILE *f = fopen(path, "w");
    if (!f) return as_fail("%s: cannot write", path);
    char title[400];
    snprintf(title, sizeof title, "%s: before and after FP8 E4M3 (per-tensor absmax scale)",
             tensor);
    int rc = as_fp8_histogram_svg(x, n, 0, 201, title, f);
    if (fclose(f)) rc = as_fail("%s: write failed", path);
    return rc;
}

/* Freed at exit on every path (as_die included). */
static struct tool held;
static json_t *held_summary;
static struct as_stream_writer *held_w;
static FILE *held_report;

static void free_held(void) {
    if (held.ld)
        for (int l = 0; l < held.m->cfg.n_layers; l++) {
            for (int g = 0; g < AS_GROUP_COUNT; g++) {
                free(held.ld[l].g[g].absmax), free(held.ld[l].g[g].mean_abs);
                free(held.ld[l].g[g].sample);
            }
            free(held.ld[l].input);
        }
    free(held.ld);
    as_model_free(held.m);
    json_decref(held_summary);
    as_stream_writer_free(held_w);
    if (held_report) fclose(held_report);
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *model_dir = NULL, *scheme = NULL, *layers = NULL, *report = NULL, *svg = NULL,
               *tensor = NULL;
    struct opts o = {.block = 128, .group = 128};
    int do_analyze = 0, threads = 0;
    double kurt_thr = 10;
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"scheme", required_argument, 0, 's'},
                                             {"method", required_argument, 0, 1},
                                             {"weights", required_argument, 0, 2},
                                             {"block", required_argument, 0, 3},
                                             {"group", required_argument, 0, 4},
                                             {"smooth", required_argument, 0, 5},
                                             {"layers", required_argument, 0, 6},
                                             {"report", required_argument, 0, 7},
                                             {"analyze", no_argument, 0, 8},
                                             {"svg", required_argument, 0, 9},
                                             {"tensor", required_argument, 0, 10},
                                             {"json", no_argument, 0, 11},
                                             {"threads", required_argument, 0, 12},
                                             {"outlier-kurtosis", required_argument, 0, 13},
                                             {"kv-cache", required_argument, 0, 14},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_dir = optarg;
            break;
        case 's':
            scheme = optarg;
            break;
        case 1:
            if (!strcmp(optarg, "lepto"))
                o.lepto = 1;
            else if (strcmp(optarg, "absmax"))
                as_die("--method '%s': expected absmax or lepto", optarg);
            break;
        case 2:
            if (!strcmp(optarg, "channel"))
                o.weights_channel = 1;
            else if (strcmp(optarg, "tensor"))
                as_die("--weights '%s': expected tensor or channel", optarg);
            break;
        case 3:
            o.block = as_arg_int(optarg);
            break;
        case 4:
            o.group = as_arg_int(optarg);
            break;
        case 5:
            o.smooth = (float)as_arg_double(optarg);
            break;
        case 6:
            layers = optarg;
            break;
        case 7:
            report = optarg;
            break;
        case 8:
            do_analyze = 1;
            break;
        case 9:
            svg = optarg;
            break;
        case 10:
            tensor = optarg;
            break;
        case 11:
            o.json = 1;
            break;
        case 12:
            threads = as_arg_int(optarg);
            break;
        case 13:
            kurt_thr = as_arg_double(optarg);
            break;
        case 14:
            if (strcmp(optarg, "fp8")) as_die("--kv-cache '%s': expected fp8", optarg);
            o.kv_fp8 = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_dir || (!scheme && !do_analyze) || (svg && !tensor)) {
        usage(stderr);
        return 2;
    }
    if (threads > 0) openblas_set_num_threads(threads);
    int sc = -1;
    for (int i = 0; scheme && i < S_COUNT; i++)
        if (!strcmp(scheme, scheme_names[i])) sc = i;
    if (scheme && sc < 0)
        as_die("--scheme '%s': expected fp8-static, fp8-dynamic, fp8-block, int8-dynamic, nvfp4, "
               "mxfp4 or w4a8-fp8",
               scheme);
    o.scheme = (enum scheme)(sc < 0 ? 0 : sc);
    if (o.block < 1 || o.group < 1) as_die("--block and --group must be positive");
    if (o.lepto && o.scheme != S_FP8_STATIC && o.scheme != S_W4A8)
        as_die("--method lepto searches static FP8 input scales: use it with fp8-static or "
               "w4a8-fp8");
    if (o.smooth < 0 || o.smooth > 1) as_die("--smooth %g: alpha must lie in [0, 1]", o.smooth);
    if (o.smooth > 0 && o.scheme != S_INT8) as_die("--smooth applies to int8-dynamic");

    atexit(free_held);
    struct tool *t = &held;
    if (!(t->m = as_model_load(model_dir))) as_die_last();
    int L = t->m->cfg.n_layers;
    t->lo = 0, t->hi = L - 1;
    if (layers) {
        char *end;
        t->lo = (int)strtol(layers, &end, 10);
        t->hi = *end == '-' ? (int)strtol(end + 1, &end, 10) : t->lo;
        if (*end || t->lo < 0 || t->hi < t->lo || t->hi >= L)
            as_die("--layers '%s': expected A or A-B within 0..%d", layers, L - 1);
    }
    t->ld = as_xcalloc(L, sizeof *t->ld);
    int needs_data = o.scheme == S_FP8_STATIC || o.scheme == S_W4A8 || o.scheme == S_NVFP4 ||
                     o.smooth > 0 || o.kv_fp8;
    if (optind < argc) {
        for (int i = optind; i < argc; i++)
            if (read_stream(t, argv[i])) as_die_last();
    } else if (needs_data || do_analyze) {
        if (!do_analyze || !isatty(0))
            if (read_stream(t, "-")) as_die_last();
    }

    if (do_analyze) {
        if (analyze(t, kurt_thr, o.json)) as_die_last();
        if (svg && draw_svg(t, tensor, svg)) as_die_last();
        return 0;
    }
    /* the whole stream is in memory: a missing statistic is refused before the first record (or
     * the report) is written, so stdout never carries a stream cut short by an error */
    for (int l = t->lo; o.kv_fp8 && l <= t->hi; l++)
        if (kv_scales(t, NULL, l)) as_die_last();
    if (report && !(held_report = fopen(report, "w"))) as_die("%s: cannot write", report);
    o.report = held_report;
    held_summary = json_pack("{s:s, s:s, s:[], s:f}", "scheme", scheme_names[o.scheme], "method",
                             o.lepto ? "lepto" : "absmax", "groups", "lepto_seconds", 0.0);
    struct as_stream_writer *w = held_w = as_stream_writer_fd(1, "stdout");
    double t0 = now_s();
    for (int l = t->lo; l <= t->hi; l++) {
        if (quantize_layer(t, w, l, &o, held_summary)) as_die_last();
        if (o.kv_fp8 && kv_scales(t, w, l)) as_die_last();
        free(t->ld[l].input);
        t->ld[l].input = NULL;
        as_progress("layer %d/%d", l + 1, t->hi + 1);
    }
    as_progress_done();
    if (as_stream_write_end(w)) as_die_last();
    json_object_set_new(held_summary, "layers", json_integer(t->hi - t->lo + 1));
    json_object_set_new(held_summary, "seconds", json_real(now_s() - t0));
    if (o.json) {
        char *js = json_dumps(held_summary, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fprintf(stderr, "%s\n", js);
        free(js);
    }
    return 0;
}
