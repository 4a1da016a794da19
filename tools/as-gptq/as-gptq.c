/* as-gptq: GPTQ / GPTAQ / round-to-nearest quantization of the linear layers in a tensor stream.
 *
 * Reads weights (usually by reference into the checkpoint) and the Hessian records of as-calib,
 * quantizes each decoder linear as soon as both its weight and its Hessian have arrived, and
 * writes its codes, scales, zeros and g_idx (qstream.h) to stdout. Weights that are not decoder
 * linears (norms, embeddings) pass through unchanged; statistics are consumed.
 * --method rtn needs no Hessian. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "as_error.h"
#include "cli_args.h"
#include "gptq.h"
#include "qstream.h"
#include "quant_int.h"
#include "quant_search.h"
#include "quant_ternary.h"
#include "stream.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: as-gptq [options] [STREAM...] > QUANT_STREAM\n"
           "Quantize every decoder linear of the input stream(s) (default stdin).\n"
           "  -b, --bits N          2, 3, 4 (default) or 8\n"
           "  -g, --group N         input columns per group; -1 = per channel (default 128)\n"
           "      --sym / --asym    symmetric (default) or asymmetric quantizer\n"
           "      --act-order       process columns by decreasing Hessian diagonal (desc_act)\n"
           "      --static-groups   fit group parameters before any update (with --act-order)\n"
           "      --damp P          relative damping, default 0.01\n"
           "      --block N         lazy-batch block size, default 128\n"
           "      --scale-search    per-group scale (and zero) search minimising GPTQ's weighted\n"
           "                        error, scales evaluated in fp16 (GPTQ v1, GGUF store fp16)\n"
           "      --signed-scale    with --scale-search --sym: allow negative scales (Q4_0's -8)\n"
           "      --float-min       with --asym: w = scale*q + min with a free (fp16) minimum per\n"
           "                        group, GGUF Q4_1's x = d*q + m, searched on the same weighted\n"
           "                        error (rtn: unweighted); only -f gguf stores it as blocks\n"
           "  -m, --method M        gptq (default), gptaq (needs gptaq-dxx records), rtn\n"
           "      --ternary F       with -m rtn: ternary / 2-bit RTN for as-pack -f F\n"
           "                        (tq1_0 tq2_0 i2_s seq2 sherry; docs/ternary.md)\n"
           "      --report FILE     JSON lines per layer: loss, damping, time\n"
           "      --json            print a summary JSON report on stderr at the end\n"
           "  -h, --help\n");
}

struct stat_rec { /* a Hessian or GPTAQ dXXᵀ, kept until all its targets are done */
    char role[16];
    int K, remaining;
    float *data;
    char **targets;
    int n_targets;
};

/* A weight waiting for its Hessian, kept in its own dtype: a mapped reference (converted a block
 * of rows at a time when quantized, its pages released after each block) or a copy of an inline
 * payload (the reader reuses its buffer). Never the whole weight in f32. */
struct pending_weight {
    char *prefix;
    int layer, N, K;
    enum as_dtype dtype;
    const uint8_t *raw; /* [N*K] elements of dtype */
    uint8_t *owned;     /* raw when copied, else NULL */
};

enum { ROW_BLOCK = 4 * GPTQ_ROW_TILE }; /* rows converted to f32 at once (bit-identical blocks) */

/* Drop the pages of [p, p+n) of a read-only file mapping from this process (the page cache keeps
 * them): a reference read once must not stay resident for the rest of the run. */
static void release_pages(const void *p, size_t n) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + pg - 1) & ~(pg - 1),
              b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Rows [n0, n0+rows) of a pending weight in f32. */
static int weight_rows(const struct pending_weight *pw, int n0, int rows, float *out) {
    const uint8_t *src = pw->raw + as_dtype_nbytes(pw->dtype, (uint64_t)n0 * pw->K, NULL);
    if (as_convert_to_f32(pw->dtype, src, out, (size_t)rows * pw->K)) return -1;
    if (!pw->owned) release_pages(src, as_dtype_nbytes(pw->dtype, (uint64_t)rows * pw->K, NULL));
    return 0;
}

struct gptq_tool {
    struct gptq_opts o;
    int rtn;
    int ternary; /* --ternary: enum as_tern_fmt + 1 (0: none), quant_ternary.h */
    struct stat_rec *stats;
    int n_stats;
    struct pending_weight *pend;
    int n_pend;
    struct as_stream_writer *out;
    FILE *report;
    int n_done;
    double loss_total, seconds;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct stat_rec *find_stat(struct gptq_tool *t, const char *role, const char *prefix) {
    for (int i = 0; i < t->n_stats; i++) {
        struct stat_rec *s = &t->stats[i];
        if (!s->data || strcmp(s->role, role)) continue;
        for (int j = 0; j < s->n_targets; j++)
            if (!strcmp(s->targets[j], prefix)) return s;
    }
    return NULL;
}

static void stat_release_meta(struct stat_rec *s) {
    for (int j = 0; j < s->n_targets; j++)
        free(s->targets[j]);
    free(s->targets);
    s->targets = NULL;
}

static void stat_release(struct stat_rec *s) {
    if (--s->remaining > 0) return;
    free(s->data);
    s->data = NULL;
    for (int j = 0; j < s->n_targets; j++)
        free(s->targets[j]);
    free(s->targets);
    s->targets = NULL;
}

/* Quantize one weight; H (and dXXᵀ) are copied because GPTQ overwrites them. */
static int quantize_one(struct gptq_tool *t, struct pending_weight *pw) {
    struct as_qlinear ql = {
        .N = pw->N, .K = pw->K, .bits = t->o.bits, .group_size = t->o.group_size, .sym = t->o.sym};
    json_t *attrs = json_object();
    double t0 = now_s();
    int G = quant_int_n_groups(pw->K, t->o.group_size);
    struct gptq_result r = {0};
    if (t->ternary) { /* the whole weight: I2_S has one scale per tensor */
        float *all = as_xmalloc(sizeof(float) * (size_t)pw->N * pw->K);
        int err = weight_rows(pw, 0, pw->N, all) ||
                  as_tern_rtn((enum as_tern_fmt)(t->ternary - 1), all, pw->N, pw->K, &ql);
        free(all);
        if (err) {
            json_decref(attrs);
            return as_fail_prefix("tensor %s.weight: ", pw->prefix);
        }
        json_object_set_new(attrs, "method", json_string("rtn"));
        json_object_set_new(attrs, "ternary", json_string(as_tern_layouts[t->ternary - 1].name));
    } else if (t->rtn) {
        struct quant_int_params p = {t->o.bits, t->o.group_size, t->o.sym};
        /* float minimum without a Hessian: the unweighted error, d and m evaluated in fp16 */
        struct quant_search_params fp = {.bits = t->o.bits, .fp16_scale = 1};
        ql.q = as_xmalloc((size_t)pw->N * pw->K);
        ql.scale = as_xmalloc(sizeof(float) * pw->N * G);
        ql.zero = as_xmalloc(sizeof(int32_t) * pw->N * G);
        ql.g_idx = as_xmalloc(sizeof(int32_t) * pw->K);
        if (t->o.float_min) ql.minv = as_xmalloc(sizeof(float) * pw->N * G);
        float *blk = as_xmalloc(sizeof(float) * (size_t)ROW_BLOCK * pw->K);
        int err = 0;
        for (int n0 = 0; n0 < pw->N && !err; n0 += ROW_BLOCK) { /* rows are independent */
            int rows = pw->N - n0 < ROW_BLOCK ? pw->N - n0 : ROW_BLOCK;
            err =
                weight_rows(pw, n0, rows, blk) ||
                (t->o.float_min
                     ? quant_fmin_rtn(blk, rows, pw->K, t->o.group_size, NULL, &fp,
                                      ql.q + (size_t)n0 * pw->K, ql.scale + (size_t)n0 * G,
                                      ql.minv + (size_t)n0 * G, ql.zero + (size_t)n0 * G, ql.g_idx)
                     : quant_int_rtn(blk, rows, pw->K, &p, ql.q + (size_t)n0 * pw->K,
                                     ql.scale + (size_t)n0 * G, ql.zero + (size_t)n0 * G, ql.g_idx,
                                     NULL));
        }
        free(blk);
        if (err) {
            json_decref(attrs);
            free(ql.q);
            free(ql.scale);
            free(ql.zero);
            free(ql.g_idx);
            free(ql.minv);
            return as_fail_prefix("tensor %s.weight: ", pw->prefix);
        }
        json_object_set_new(attrs, "method", json_string("rtn"));
    } else {
        struct stat_rec *h = find_stat(t, "hessian", pw->prefix);
        struct stat_rec *d =
            t->o.method == GPTQ_METHOD_GPTAQ ? find_stat(t, "gptaq-dxx", pw->prefix) : NULL;
        if (h->K != pw->K) {
            json_decref(attrs);
            return as_fail("tensor %s.weight: has %d input columns but its Hessian is %dx%d",
                           pw->prefix, pw->K, h->K, h->K);
        }
        size_t kk = (size_t)pw->K * pw->K;
        /* GPTQ factors H in place: the last weight of a statistic takes its buffer, no copy. */
        float *H, *dxx = NULL;
        if (h->remaining == 1) {
            H = h->data;
            h->data = NULL;
        } else {
            H = as_xmalloc(kk * sizeof *H);
            memcpy(H, h->data, kk * sizeof *H);
        }
        struct gptq_opts o = t->o;
        if (d) {
            dxx = as_xmalloc(kk * sizeof *dxx);
            memcpy(dxx, d->data, kk * sizeof *dxx);
            o.dxxt = dxx;
        }
        struct gptq_plan plan;
        int rc = gptq_plan_init(&plan, &o, pw->N, pw->K, H);
        if (!rc) {
            r.N = pw->N, r.K = pw->K, r.G = G;
            r.q = as_xmalloc((size_t)pw->N * pw->K);
            r.scale = as_xmalloc(sizeof(float) * pw->N * G);
            r.zero = as_xmalloc(sizeof(int32_t) * pw->N * G);
            if (o.float_min) r.minv = as_xmalloc(sizeof(float) * pw->N * G);
            r.g_idx = as_xmalloc(sizeof(int32_t) * pw->K);
            memcpy(r.g_idx, plan.g_idx, sizeof(int32_t) * pw->K);
            r.damp_retries = plan.damp_retries, r.percdamp = plan.percdamp, r.n_dead = plan.n_dead;
            float *blk = as_xmalloc(sizeof(float) * (size_t)ROW_BLOCK * pw->K);
            for (int n0 = 0; n0 < pw->N && !rc; n0 += ROW_BLOCK) {
                int rows = pw->N - n0 < ROW_BLOCK ? pw->N - n0 : ROW_BLOCK;
                rc = weight_rows(pw, n0, rows, blk) ||
                     gptq_plan_rows_min(&plan, blk, rows, n0, r.q + (size_t)n0 * pw->K,
                                        r.scale + (size_t)n0 * G, r.zero + (size_t)n0 * G,
                                        r.minv ? r.minv + (size_t)n0 * G : NULL, &r.loss);
            }
            free(blk);
            gptq_plan_free(&plan);
        }
        free(H);
        free(dxx);
        if (h->data)
            stat_release(h);
        else if (--h->remaining == 0)
            stat_release_meta(h);
        if (d) stat_release(d);
        if (rc) {
            gptq_result_free(&r);
            json_decref(attrs);
            return as_fail_prefix("tensor %s.weight: ", pw->prefix);
        }
        if (r.damp_retries)
            fprintf(stderr,
                    "%s: tensor %s.weight: Hessian not positive definite, retried %d "
                    "times, damping raised to %.3f\n",
                    as_progname(), pw->prefix, r.damp_retries, r.percdamp);
        ql.q = r.q;
        ql.scale = r.scale;
        ql.zero = r.zero;
        ql.g_idx = r.g_idx;
        ql.minv = r.minv;
        ql.has_act_order = t->o.act_order;
        json_object_set_new(attrs, "method",
                            json_string(t->o.method == GPTQ_METHOD_GPTAQ ? "gptaq" : "gptq"));
        json_object_set_new(attrs, "loss", json_real(r.loss));
        char damp[32]; /* the float as its shortest decimal, so configs read 0.01, not 0.0099999998
                        */
        snprintf(damp, sizeof damp, "%.6g", r.percdamp);
        json_object_set_new(attrs, "percdamp", json_real(strtod(damp, NULL)));
        json_object_set_new(attrs, "damp_retries", json_integer(r.damp_retries));
        json_object_set_new(attrs, "dead_inputs", json_integer(r.n_dead));
        json_object_set_new(attrs, "static_groups", json_boolean(t->o.static_groups));
        t->loss_total += r.loss;
    }
    double dt = now_s() - t0;
    t->seconds += dt;
    json_object_set_new(attrs, "seconds", json_real(dt));
    int rc = as_qlinear_write(t->out, pw->prefix, pw->layer, &ql, attrs);
    if (!rc && t->report) {
        json_t *line = json_deep_copy(attrs);
        json_object_set_new(line, "name", json_string(pw->prefix));
        json_object_set_new(line, "layer", json_integer(pw->layer));
        json_object_set_new(line, "shape", json_pack("[i,i]", pw->N, pw->K));
        char *s = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(8));
        fprintf(t->report, "%s\n", s);
        free(s);
        json_decref(line);
    }
    json_decref(attrs);
    if (t->rtn) {
        free(ql.q);
        free(ql.scale);
        free(ql.zero);
        free(ql.g_idx);
        free(ql.minv);
    } else {
        gptq_result_free(&r);
    }
    t->n_done++;
    as_progress("%d layers quantized", t->n_done);
    return rc;
}

static int ready(struct gptq_tool *t, const struct pending_weight *pw) {
    if (t->rtn) return 1;
    if (!find_stat(t, "hessian", pw->prefix)) return 0;
    return t->o.method != GPTQ_METHOD_GPTAQ || find_stat(t, "gptaq-dxx", pw->prefix);
}

static int flush_ready(struct gptq_tool *t) {
    for (int i = 0; i < t->n_pend;) {
        if (!ready(t, &t->pend[i])) {
            i++;
            continue;
        }
        struct pending_weight pw = t->pend[i];
        t->pend[i] = t->pend[--t->n_pend];
        int rc = quantize_one(t, &pw);
        free(pw.prefix);
        free(pw.owned);
        if (rc) return -1;
    }
    return 0;
}

static int take_stat(struct gptq_tool *t, struct as_stream_reader *r, const struct as_rec *rec) {
    const char *sname = as_stream_name(r);
    if (rec->dtype != AS_F32 || rec->ndim != 2 || rec->shape[0] != rec->shape[1])
        return as_fail("stream %s: tensor %s: %s must be F32 [K,K]", sname, rec->name, rec->role);
    json_t *targets = rec->attrs ? json_object_get(rec->attrs, "targets") : NULL;
    if (!json_is_array(targets) || !json_array_size(targets))
        return as_fail("stream %s: tensor %s: attrs.targets (the linears it serves) missing", sname,
                       rec->name);
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    t->stats = as_xrealloc(t->stats, (t->n_stats + 1) * sizeof *t->stats);
    struct stat_rec *s = &t->stats[t->n_stats++];
    memset(s, 0, sizeof *s);
    snprintf(s->role, sizeof s->role, "%s", rec->role);
    s->K = (int)rec->shape[0];
    s->data = as_xmalloc(rec->nbytes);
    for (size_t off = 0; off < rec->nbytes; off += 64u << 20) { /* mapped pages go as copied */
        size_t n = rec->nbytes - off < (64u << 20) ? rec->nbytes - off : 64u << 20;
        memcpy((char *)s->data + off, (const char *)data + off, n);
        if (rec->kind == AS_PAYLOAD_REF) release_pages((const char *)data + off, n);
    }
    s->n_targets = (int)json_array_size(targets);
    s->remaining = s->n_targets;
    s->targets = as_xcalloc(s->n_targets, sizeof *s->targets);
    for (int j = 0; j < s->n_targets; j++) {
        const char *tg = json_string_value(json_array_get(targets, j));
        s->targets[j] = as_xstrdup(tg ? tg : "");
    }
    return 0;
}

static int take_weight(struct gptq_tool *t, struct as_stream_reader *r, const struct as_rec *rec) {
    int layer;
    enum as_linear which;
    if (as_linear_parse(rec->name, &layer, &which)) {
        /* Embeddings, norms: not ours, passed on (as-awq's rescaled norms reach as-pack so). */
        const void *data = rec->kind == AS_PAYLOAD_INLINE ? as_stream_payload(r) : NULL;
        if (rec->kind == AS_PAYLOAD_INLINE && !data) return -1;
        return as_stream_write(t->out, rec, data);
    }
    if (rec->ndim != 2)
        return as_fail("stream %s: tensor %s: a linear weight must be 2-D", as_stream_name(r),
                       rec->name);
    const void *data = as_stream_payload(r);
    if (!data) return -1;
    struct pending_weight pw = {.layer = layer,
                                .N = (int)rec->shape[0],
                                .K = (int)rec->shape[1],
                                .dtype = rec->dtype,
                                .raw = data};
    float probe;
    if (as_convert_to_f32(rec->dtype, data, &probe, 0)) /* a dtype we can convert */
        return as_fail_prefix("stream %s: tensor %s: ", as_stream_name(r), rec->name);
    if (rec->kind != AS_PAYLOAD_REF) { /* the reader reuses its inline buffer */
        pw.owned = as_xmalloc(rec->nbytes);
        memcpy(pw.owned, data, rec->nbytes);
        pw.raw = pw.owned;
    }
    char prefix[1024];
    as_linear_prefix(layer, which, prefix, sizeof prefix);
    pw.prefix = as_xstrdup(prefix);
    t->pend = as_xrealloc(t->pend, (t->n_pend + 1) * sizeof *t->pend);
    t->pend[t->n_pend++] = pw;
    return 0;
}

/* A weight still waiting for its statistics when no more can come. */
static int fail_pending(struct gptq_tool *t) {
    return as_fail("tensor %s.weight: no %s for it in the stream (run as-calib%s, or use "
                   "--method rtn)",
                   t->pend[0].prefix,
                   find_stat(t, "hessian", t->pend[0].prefix) ? "gptaq-dxx record" : "Hessian",
                   t->o.method == GPTQ_METHOD_GPTAQ ? " --gptaq" : "");
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    struct gptq_tool t = {0};
    gptq_opts_default(&t.o);
    t.o.bits = 4;
    t.o.group_size = 128;
    t.o.sym = 1;
    const char *report_path = NULL;
    int json = 0;
    static const struct option longopts[] = {{"bits", required_argument, 0, 'b'},
                                             {"group", required_argument, 0, 'g'},
                                             {"sym", no_argument, 0, 1},
                                             {"asym", no_argument, 0, 2},
                                             {"act-order", no_argument, 0, 3},
                                             {"static-groups", no_argument, 0, 4},
                                             {"damp", required_argument, 0, 5},
                                             {"block", required_argument, 0, 6},
                                             {"method", required_argument, 0, 'm'},
                                             {"report", required_argument, 0, 7},
                                             {"json", no_argument, 0, 8},
                                             {"help", no_argument, 0, 'h'},
                                             {"scale-search", no_argument, 0, 9},
                                             {"signed-scale", no_argument, 0, 10},
                                             {"float-min", no_argument, 0, 11},
                                             {"ternary", required_argument, 0, 12},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:g:m:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            t.o.bits = as_arg_int(optarg);
            break;
        case 'g':
            t.o.group_size = as_arg_int(optarg);
            break;
        case 1:
            t.o.sym = 1;
            break;
        case 2:
            t.o.sym = 0;
            break;
        case 3:
            t.o.act_order = 1;
            break;
        case 4:
            t.o.static_groups = 1;
            break;
        case 5:
            t.o.percdamp = (float)as_arg_double(optarg);
            break;
        case 6:
            t.o.blocksize = as_arg_int(optarg);
            break;
        case 'm':
            if (!strcmp(optarg, "rtn"))
                t.rtn = 1;
            else if (!strcmp(optarg, "gptaq"))
                t.o.method = GPTQ_METHOD_GPTAQ;
            else if (strcmp(optarg, "gptq"))
                as_die("--method: expected gptq, gptaq or rtn, got '%s'", optarg);
            break;
        case 7:
            report_path = optarg;
            break;
        case 8:
            json = 1;
            break;
        case 9:
            t.o.scale_search = t.o.scale_search_fp16 = 1;
            break;
        case 10:
            t.o.scale_search_signed = 1;
            break;
        case 11:
            t.o.float_min = 1;
            break;
        case 12:
            t.ternary = as_tern_fmt_parse(optarg) + 1;
            if (!t.ternary)
                as_die("--ternary '%s': expected tq1_0, tq2_0, i2_s, seq2 or sherry", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (t.ternary && !t.rtn) as_die("--ternary: needs --method rtn");
    if (t.o.bits < 2 || t.o.bits > 8) as_die("--bits %d: expected 2..8", t.o.bits);
    if (t.o.group_size == 0 || t.o.group_size < -1)
        as_die("--group %d: expected -1 or > 0", t.o.group_size);
    if (!(t.o.percdamp > 0)) as_die("--damp: expected a positive fraction");
    if (t.o.blocksize <= 0) as_die("--block: expected a positive size");
    if (t.o.float_min && t.o.sym)
        as_die("--float-min: needs --asym (a symmetric quantizer has no minimum)");
    if (t.o.float_min) t.o.scale_search_fp16 = 1; /* GGUF Q4_1 stores d and m in fp16 */
    if (report_path && !(t.report = fopen(report_path, "w")))
        as_die("%s: cannot write report", report_path);
    t.out = as_stream_writer_fd(1, "stdout");
    if (!t.out) as_die_last();

    int n_inputs = optind < argc ? argc - optind : 1;
    for (int i = 0; i < n_inputs; i++) {
        struct as_stream_reader *r = as_stream_open(optind < argc ? argv[optind + i] : "-");
        if (!r) as_die_last();
        const struct as_rec *rec;
        int rc;
        while ((rc = as_stream_next_segmented(r, &rec)) > 0) {
            if (rc == 2) { /* segment end: a flush request must be answered now */
                if (!as_stream_end_flush(r)) continue;
                if (flush_ready(&t) || (t.n_pend && fail_pending(&t)) ||
                    as_stream_write_end_flush(t.out))
                    as_die_last();
                continue;
            }
            int err = 0;
            if (rec->role && (!strcmp(rec->role, "hessian") || !strcmp(rec->role, "gptaq-dxx"))) {
                if (!t.rtn) err = take_stat(&t, r, rec);
            } else if (rec->role && !strcmp(rec->role, "weight")) {
                err = take_weight(&t, r, rec);
            }
            if (err || flush_ready(&t)) as_die_last();
        }
        if (rc < 0) as_die_last();
        as_stream_close(r);
    }
    if (t.n_pend) {
        fail_pending(&t);
        as_die_last();
    }
    if (as_stream_write_end(t.out)) as_die_last();
    as_progress_done();
    as_stream_writer_free(t.out);
    if (t.report) fclose(t.report);
    if (json)
        fprintf(stderr, "{\"layers\":%d,\"loss\":%.6g,\"seconds\":%.3f}\n", t.n_done, t.loss_total,
                t.seconds);
    for (int i = 0; i < t.n_stats; i++)
        if (t.stats[i].data) {
            t.stats[i].remaining = 1;
            stat_release(&t.stats[i]);
        }
    free(t.stats);
    free(t.pend);
    return 0;
}
