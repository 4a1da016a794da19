/* as-awq: activation-aware weight quantization (AWQ) of a model, driven by an as-calib stream.
 *
 * Input: `as-calib --keep-seqs S` output: per decoder layer the residual stream entering it for S
 * whole calibration windows (role layer-input) and the statistics of every group of linears
 * (act-mean-abs gives AWQ's x_mean; Hessians etc. are transformed and passed on). Records must
 * come in layer order, as as-calib writes them; `as-cat --layer N` selects single layers (layers
 * are independent: every layer's inputs come from the full-precision model).
 * Per layer (lib/common/awq.h): scale search for the four scaling groups, folding into the norms
 * and previous linears, clipping search. Output (--emit):
 *   scaled     the scaled and clipped f32 weights of all seven linears (role weight), the
 *              rescaled norms (and v bias), and the statistics transformed for inputs x/s
 *              (H' = diag(1/s) H diag(1/s), mean|x|/s, ...): feed it to as-gptq (AWQ + GPTQ);
 *   quantized  integer codes with AWQ's rounding (qweight/scale/zero/g_idx records) plus the
 *              rescaled norms: feed it to as-pack (-f awq, compressed-tensors, fakequant). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "as_error.h"
#include "cli_args.h"
#include "awq.h"
#include "model.h"
#include "qstream.h"
#include "stream.h"

extern void openblas_set_num_threads(int);

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: as-awq -m MODEL [options] [STREAM...] > OUT_STREAM\n"
        "AWQ scale search, folding and clipping per decoder layer, from `as-calib --keep-seqs S`.\n"
        "  -m, --model DIR        the original (dense) checkpoint\n"
        "  -b, --bits N           2..8 (default 4)\n"
        "  -g, --group N          input columns per group, -1 = per channel (default 128)\n"
        "      --asym / --sym     zero-point (default, as AutoAWQ) or symmetric rounding\n"
        "  -e, --emit MODE        scaled (default: f32 weights + stats for as-gptq) or\n"
        "                         quantized (integer codes for as-pack)\n"
        "      --duo-scaling / --no-duo-scaling\n"
        "                         s = x^a / (w^(1-a) + 1e-4) (default) or s = x^a\n"
        "      --grid N           ratios a = i/N (default 20)\n"
        "      --no-clip          skip the clipping search\n"
        "      --clip-tokens N    input rows sampled for the clipping error (default 512)\n"
        "      --loss-seqs N      use only the first N kept sequences for the losses\n"
        "      --arena DIR        write f32 payloads to an arena file in DIR, send references\n"
        "      --report FILE      JSON lines per layer: ratios, losses, times\n"
        "      --json             summary JSON on stderr at the end\n"
        "      --threads N        OpenBLAS threads\n"
        "  -h, --help\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct held { /* a statistics record of the current layer, transformed once its scales are known */
    char *name, *role;
    int group;
    json_t *attrs;
    int ndim;
    int64_t shape[2];
    float *data;
};

struct awq_tool {
    struct as_model *m;
    struct awq_opts o;
    int quantized, loss_seqs;
    struct as_stream_writer *out;
    struct as_arena *arena;
    FILE *report;
    int cur;      /* layer being gathered, -1 none */
    float *input; /* its layer-input rows */
    int S, T;     /* kept sequences and their length */
    float *x_mean[AS_GROUP_COUNT];
    struct held *held;
    int n_held;
    unsigned char *done; /* [n_layers] */
    int n_done;
    double seconds;
    double loss[AS_GROUP_COUNT], loss_rtn[AS_GROUP_COUNT];
};

static int group_from(const struct as_rec *rec) {
    const char *g = rec->attrs ? json_string_value(json_object_get(rec->attrs, "group")) : NULL;
    for (int i = 0; i < AS_GROUP_COUNT; i++) {
        if (g && !strcmp(g, as_group_names[i])) return i;
        char pat[64];
        snprintf(pat, sizeof pat, ".%s.", as_group_names[i]);
        if (!g && strstr(rec->name, pat)) return i;
    }
    return -1;
}

static int group_dim(const struct as_model *m, int g) {
    const struct as_model_config *c = &m->cfg;
    return g == AS_GROUP_ATTN_O     ? c->n_heads * c->head_dim
           : g == AS_GROUP_MLP_DOWN ? c->intermediate
                                    : c->hidden;
}

static int is_stat_role(const char *role) {
    static const char *const roles[] = {"hessian", "gptaq-dxx", "act-mean-abs", "act-absmax",
                                        "act-sample"};
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
        if (!strcmp(role, roles[i])) return 1;
    return 0;
}

/* Copy a record's payload to f32 (a fresh array of numel floats). */
static float *payload_f32(struct as_stream_reader *r, const struct as_rec *rec) {
    const void *data = as_stream_payload(r);
    if (!data) return NULL;
    uint64_t n = as_rec_numel(rec);
    float *f = as_xmalloc(sizeof(float) * (n ? n : 1));
    if (as_convert_to_f32(rec->dtype, data, f, n)) {
        free(f);
        as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
        return NULL;
    }
    return f;
}

static int write_f32(struct awq_tool *t, const char *name, const char *role, int layer, int ndim,
                     const int64_t *shape, json_t *attrs, const float *data) {
    struct as_rec rec;
    as_rec_init(&rec, name, role, layer, AS_F32, ndim, shape);
    rec.attrs = attrs;
    if (t->arena && as_arena_put(t->arena, &rec, data)) return -1;
    return as_stream_write(t->out, &rec, data);
}

static void free_layer(struct awq_tool *t) {
    free(t->input);
    t->input = NULL;
    for (int g = 0; g < AS_GROUP_COUNT; g++) {
        free(t->x_mean[g]);
        t->x_mean[g] = NULL;
    }
    for (int i = 0; i < t->n_held; i++) {
        free(t->held[i].name), free(t->held[i].role), free(t->held[i].data);
        json_decref(t->held[i].attrs);
    }
    t->n_held = 0;
}

/* The statistics of layer l for inputs x / s (scaled mode). */
static int emit_stats(struct awq_tool *t, int l, const struct awq_layer_report *rep) {
    float absmax[AS_GROUP_COUNT];
    int has_absmax[AS_GROUP_COUNT] = {0};
    for (int i = 0; i < t->n_held; i++) {
        struct held *h = &t->held[i];
        const float *s = h->group >= 0 ? rep->scales[h->group] : NULL;
        if (s) {
            int K = (int)h->shape[h->ndim - 1];
            if (!strcmp(h->role, "hessian") || !strcmp(h->role, "gptaq-dxx"))
                awq_scale_sym_inv(h->data, K, s);
            else
                for (int64_t r = 0; r < (h->ndim == 2 ? h->shape[0] : 1); r++)
                    awq_div_vec(h->data + r * K, s, K);
        }
        if (!strcmp(h->role, "act-absmax") && h->group >= 0) {
            float mx = 0;
            for (int64_t j = 0; j < h->shape[0]; j++)
                mx = h->data[j] > mx ? h->data[j] : mx;
            absmax[h->group] = mx;
            has_absmax[h->group] = 1;
        }
    }
    for (int i = 0; i < t->n_held; i++) {
        struct held *h = &t->held[i];
        if (h->group >= 0 && rep->scales[h->group]) {
            json_object_set_new(h->attrs, "awq_scaled", json_true());
            if (has_absmax[h->group])
                json_object_set_new(h->attrs, "tensor_absmax", json_real(absmax[h->group]));
        }
        if (write_f32(t, h->name, h->role, l, h->ndim, h->shape, h->attrs, h->data)) return -1;
    }
    return 0;
}

static int emit_extras(struct awq_tool *t, int l, const struct awq_layer_report *rep) {
    const struct as_layer_weights *L = &t->m->layers[l];
    int D = t->m->cfg.hidden, kvd = t->m->cfg.n_kv_heads * t->m->cfg.head_dim;
    char name[256];
    int64_t shape[1] = {D};
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if (write_f32(t, name, "weight", l, 1, shape, NULL, L->attn_norm)) return -1;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if (write_f32(t, name, "weight", l, 1, shape, NULL, L->ffn_norm)) return -1;
    if (rep->applied[AS_GROUP_ATTN_O] && L->bv) {
        shape[0] = kvd;
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.bias", l);
        if (write_f32(t, name, "weight", l, 1, shape, NULL, L->bv)) return -1;
    }
    return 0;
}

static int emit_linears(struct awq_tool *t, int l, const struct awq_layer_report *rep) {
    for (int w = 0; w < AS_LIN_COUNT; w++) {
        int rows, cols;
        as_model_linear_shape(t->m, (enum as_linear)w, &rows, &cols);
        const float *W = t->m->layers[l].w[w];
        char name[256];
        if (!t->quantized) {
            int64_t shape[2] = {rows, cols};
            as_linear_tensor_name(l, (enum as_linear)w, name, sizeof name);
            if (write_f32(t, name, "weight", l, 2, shape, NULL, W)) return -1;
            continue;
        }
        struct as_qlinear ql;
        as_linear_prefix(l, (enum as_linear)w, name, sizeof name);
        if (awq_quantize(W, rows, cols, &t->o, &ql)) return as_fail_prefix("tensor %s: ", name);
        enum as_linear_group g = as_linear_group_of((enum as_linear)w);
        json_t *attrs = json_pack("{s:s, s:b, s:b}", "method", "awq", "duo_scaling",
                                  t->o.duo_scaling, "clipped", rep->clipped[w]);
        if (rep->applied[g]) json_object_set_new(attrs, "awq_alpha", json_real(rep->alpha[g]));
        int rc = as_qlinear_write(t->out, name, l, &ql, attrs);
        json_decref(attrs);
        awq_qlinear_free(&ql);
        if (rc) return -1;
    }
    return 0;
}

static int process_layer(struct awq_tool *t) {
    int l = t->cur;
    t->cur = -1;
    if (!t->input)
        return as_fail("layer %d: no layer-input record in the stream (run as-calib with "
                       "--keep-seqs S)",
                       l);
    const float *xm[AS_GROUP_COUNT];
    for (int g = 0; g < AS_GROUP_COUNT; g++)
        xm[g] = t->x_mean[g];
    int S = t->loss_seqs > 0 && t->loss_seqs < t->S ? t->loss_seqs : t->S;
    struct awq_layer_report rep;
    double t0 = now_s();
    int rc = awq_layer(t->m, l, t->input, S, t->T, xm, &t->o, &rep);
    double dt = now_s() - t0;
    if (!rc && !t->quantized) rc = emit_stats(t, l, &rep);
    if (!rc) rc = emit_linears(t, l, &rep);
    if (!rc) rc = emit_extras(t, l, &rep);
    if (!rc) {
        json_t *alpha = json_object(), *loss = json_object(), *rtn = json_object();
        for (int g = 0; g < AS_GROUP_COUNT; g++) {
            if (!rep.applied[g]) continue;
            json_object_set_new(alpha, as_group_names[g], json_real(rep.alpha[g]));
            json_object_set_new(loss, as_group_names[g], json_real(rep.loss[g]));
            json_object_set_new(rtn, as_group_names[g], json_real(rep.loss_rtn[g]));
            t->loss[g] += rep.loss[g];
            t->loss_rtn[g] += rep.loss_rtn[g];
        }
        json_t *line =
            json_pack("{s:i, s:o, s:o, s:o, s:i, s:i, s:f, s:f, s:f}", "layer", l, "alpha", alpha,
                      "loss", loss, "loss_rtn", rtn, "seqs", S, "seqlen", t->T, "seconds", dt,
                      "seconds_search", rep.seconds_search, "seconds_clip", rep.seconds_clip);
        if (t->report) {
            char *s = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(8));
            fprintf(t->report, "%s\n", s);
            fflush(t->report);
            free(s);
        }
        json_decref(line);
    }
    awq_layer_report_free(&rep);
    free_layer(t);
    t->done[l] = 1;
    t->n_done++;
    t->seconds += dt;
    as_progress("layer %d done (%d/%d), %.1f s", l, t->n_done, t->m->cfg.n_layers, dt);
    return rc;
}

static int take(struct awq_tool *t, struct as_stream_reader *r, const struct as_rec *rec) {
    const char *sname = as_stream_name(r), *role = rec->role ? rec->role : "";
    int layer = rec->layer >= 0 ? rec->layer : as_layer_from_name(rec->name);
    if (layer >= t->m->cfg.n_layers)
        return as_fail("stream %s: tensor %s: layer %d, the model has %d", sname, rec->name, layer,
                       t->m->cfg.n_layers);
    if (layer >= 0 && layer != t->cur) {
        if (t->cur >= 0 && process_layer(t)) return -1;
        if (t->done[layer])
            return as_fail("stream %s: tensor %s: layer %d was already processed; records must "
                           "come in layer order, as as-calib writes them",
                           sname, rec->name, layer);
        t->cur = layer;
    }
    int D = t->m->cfg.hidden;
    if (!strcmp(role, "layer-input")) {
        json_t *a = rec->attrs;
        int S = (int)json_integer_value(json_object_get(a, "seqs"));
        int T = (int)json_integer_value(json_object_get(a, "seqlen"));
        if (rec->ndim != 2 || rec->shape[1] != D || S <= 0 || T <= 0 ||
            rec->shape[0] != (int64_t)S * T)
            return as_fail("stream %s: tensor %s: layer-input must be [seqs*seqlen, %d] with "
                           "attrs seqs and seqlen",
                           sname, rec->name, D);
        if (t->input) return as_fail("stream %s: tensor %s appears twice", sname, rec->name);
        if (!(t->input = payload_f32(r, rec))) return -1;
        t->S = S, t->T = T;
        return 0;
    }
    if (is_stat_role(role)) {
        if (layer < 0) return 0;
        int g = group_from(rec), K = g >= 0 ? group_dim(t->m, g) : 0;
        int ok = g >= 0 && rec->ndim >= 1 && rec->ndim <= 2 && rec->shape[rec->ndim - 1] == K;
        if (ok && (!strcmp(role, "hessian") || !strcmp(role, "gptaq-dxx")))
            ok = rec->ndim == 2 && rec->shape[0] == K;
        if (ok && (!strcmp(role, "act-mean-abs") || !strcmp(role, "act-absmax")))
            ok = rec->ndim == 1;
        if (!ok)
            return as_fail("stream %s: tensor %s: %s of group %s must have %d input channels",
                           sname, rec->name, role, g >= 0 ? as_group_names[g] : "(unknown)", K);
        float *f = payload_f32(r, rec);
        if (!f) return -1;
        if (!strcmp(role, "act-mean-abs")) {
            if (t->x_mean[g]) {
                free(f);
                return as_fail("stream %s: tensor %s appears twice", sname, rec->name);
            }
            t->x_mean[g] = as_xmalloc(sizeof(float) * K);
            memcpy(t->x_mean[g], f, sizeof(float) * K);
        }
        if (t->quantized) {
            free(f);
            return 0;
        }
        t->held = as_xrealloc(t->held, (t->n_held + 1) * sizeof *t->held);
        struct held *h = &t->held[t->n_held++];
        *h = (struct held){.name = as_xstrdup(rec->name),
                           .role = as_xstrdup(role),
                           .group = g,
                           .attrs = rec->attrs ? json_deep_copy(rec->attrs) : json_object(),
                           .ndim = rec->ndim,
                           .data = f};
        h->shape[0] = rec->shape[0];
        h->shape[1] = rec->ndim == 2 ? rec->shape[1] : 0;
        return 0;
    }
    if (!strcmp(role, "weight") && layer >= 0) return 0; /* the layer's weights are re-emitted */
    if (t->quantized) return 0;
    /* anything else passes through (scaled mode) */
    const void *data = rec->kind == AS_PAYLOAD_INLINE ? as_stream_payload(r) : NULL;
    if (rec->kind == AS_PAYLOAD_INLINE && !data) return -1;
    return as_stream_write(t->out, rec, data);
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    struct awq_tool t = {.cur = -1};
    awq_opts_default(&t.o);
    const char *model_dir = NULL, *emit = "scaled", *arena_dir = NULL, *report_path = NULL;
    int json = 0, threads = 0;
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"bits", required_argument, 0, 'b'},
                                             {"group", required_argument, 0, 'g'},
                                             {"asym", no_argument, 0, 1},
                                             {"sym", no_argument, 0, 2},
                                             {"emit", required_argument, 0, 'e'},
                                             {"duo-scaling", no_argument, 0, 3},
                                             {"no-duo-scaling", no_argument, 0, 4},
                                             {"grid", required_argument, 0, 5},
                                             {"no-clip", no_argument, 0, 6},
                                             {"clip-tokens", required_argument, 0, 7},
                                             {"loss-seqs", required_argument, 0, 8},
                                             {"arena", required_argument, 0, 9},
                                             {"report", required_argument, 0, 10},
                                             {"json", no_argument, 0, 11},
                                             {"threads", required_argument, 0, 12},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:b:g:e:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_dir = optarg;
            break;
        case 'b':
            t.o.bits = as_arg_int(optarg);
            break;
        case 'g':
            t.o.group_size = as_arg_int(optarg);
            break;
        case 1:
            t.o.sym = 0;
            break;
        case 2:
            t.o.sym = 1;
            break;
        case 'e':
            emit = optarg;
            break;
        case 3:
            t.o.duo_scaling = 1;
            break;
        case 4:
            t.o.duo_scaling = 0;
            break;
        case 5:
            t.o.n_grid = as_arg_int(optarg);
            break;
        case 6:
            t.o.clip = 0;
            break;
        case 7:
            t.o.clip_tokens = as_arg_int(optarg);
            break;
        case 8:
            t.loss_seqs = as_arg_int(optarg);
            break;
        case 9:
            arena_dir = optarg;
            break;
        case 10:
            report_path = optarg;
            break;
        case 11:
            json = 1;
            break;
        case 12:
            threads = as_arg_int(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_dir) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(emit, "quantized"))
        t.quantized = 1;
    else if (strcmp(emit, "scaled"))
        as_die("--emit '%s': expected scaled or quantized", emit);
    if (t.o.bits < 2 || t.o.bits > 8) as_die("--bits %d: expected 2..8", t.o.bits);
    if (t.o.group_size == 0 || t.o.group_size < -1)
        as_die("--group %d: expected -1 or > 0", t.o.group_size);
    if (t.o.n_grid < 1) as_die("--grid %d: expected >= 1", t.o.n_grid);
    if (t.o.clip_tokens < 1) as_die("--clip-tokens %d: expected >= 1", t.o.clip_tokens);
    if (t.loss_seqs < 0) as_die("--loss-seqs %d: expected >= 1", t.loss_seqs);
    if (threads > 0) openblas_set_num_threads(threads);
    signal(SIGPIPE, SIG_IGN);
    if (report_path && !(t.report = fopen(report_path, "w")))
        as_die("%s: cannot write report", report_path);
    t.m = as_model_load(model_dir);
    if (!t.m) as_die_last();
    if (t.m->cfg.quant_method[0])
        as_die("%s: the model is quantized (%s); as-awq needs the original checkpoint", model_dir,
               t.m->cfg.quant_method);
    t.done = as_xcalloc((size_t)t.m->cfg.n_layers, 1);
    t.out = as_stream_writer_fd(1, "stdout");
    if (!t.out) as_die_last();
    if (arena_dir && !(t.arena = as_arena_create(arena_dir))) as_die_last();

    int n_inputs = optind < argc ? argc - optind : 1;
    for (int i = 0; i < n_inputs; i++) {
        struct as_stream_reader *r = as_stream_open(optind < argc ? argv[optind + i] : "-");
        if (!r) as_die_last();
        const struct as_rec *rec;
        int rc;
        while ((rc = as_stream_next(r, &rec)) == 1)
            if (take(&t, r, rec)) as_die_last();
        if (rc < 0) as_die_last();
        as_stream_close(r);
    }
    if (t.cur >= 0 && process_layer(&t)) as_die_last();
    if (!t.n_done)
        as_die("no decoder layer in the input stream (expected as-calib --keep-seqs S output)");
    if (as_stream_write_end(t.out)) as_die_last();
    as_progress_done();
    as_stream_writer_free(t.out);
    if (t.arena) as_arena_close(t.arena);
    if (t.report) fclose(t.report);
    if (json) {
        fprintf(stderr, "{\"layers\":%d,\"seconds\":%.3f,\"seconds_per_layer\":%.3f", t.n_done,
                t.seconds, t.seconds / t.n_done);
        for (int g = 0; g < AS_GROUP_COUNT; g++)
            fprintf(stderr, ",\"loss_%s\":%.6g,\"loss_rtn_%s\":%.6g", as_group_names[g], t.loss[g],
                    as_group_names[g], t.loss_rtn[g]);
        fprintf(stderr, "}\n");
    }
    free(t.held);
    free(t.done);
    as_model_free(t.m);
    return 0;
}
