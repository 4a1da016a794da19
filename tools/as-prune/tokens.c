/* as-prune tokens: prune or merge the tokens of a feature stream with one strategy of the table in
 * lib/common/prune_tokens.c (docs/token-pruning.md). Input records by name: "features" [N, D]
 * (required), "attention" [H, N, N], "scores" [N], "keys" [N, Dk], "prunable" [N] (nonzero =
 * vision/audio token; text tokens are never dropped). Output stream: "kept" I32 [M] (input index
 * of each output row, increasing), "merge" F32 [M, N] (rows sum to one), "features" F32 [M, D].
 * A JSON report goes to stdout (or --report FILE). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as-prune.h"
#include "as_error.h"
#include "atomic_file.h"
#include "cli_args.h"
#include "prune_tokens.h"
#include "stream.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: as-prune tokens --method M --keep R [-i IN] -o OUT [--report FILE]\n"
            "                       [--param NAME=VALUE]... [--query I] [--max-tokens N]\n"
            "  -i IN            tensor stream or safetensors file (default stdin): features\n"
            "                   [N,D] F32 (required), attention [H,N,N], scores [N], keys [N,Dk]\n"
            "                   (F32), prunable [N] (U8/I32/F32, nonzero = prunable)\n"
            "  -o OUT           output stream (\"-\": stdout, then the report needs --report):\n"
            "                   kept I32 [M], merge F32 [M,N], features F32 [M,D]\n"
            "  --keep R         fraction of prunable tokens kept, in (0, 1]\n"
            "  --max-tokens N   refuse inputs of more than N tokens (a model's context)\n"
            "  --query I        FastV query token (default: the last text token)\n"
            "methods:\n");
    int n;
    const struct as_prune_method *m = as_prune_methods(&n);
    for (int i = 0; i < n; i++)
        fprintf(f, "  %-10s %s: %s%s%s\n", m[i].name,
                m[i].kind == AS_PRUNE_MERGE ? "merge" : "select", m[i].inputs,
                m[i].params[0] ? "; " : "", m[i].params);
}

static void set_param(struct as_prune_params *p, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq) as_die("--param %s: expected NAME=VALUE", arg);
    char name[64];
    size_t len = (size_t)(eq - arg);
    if (len >= sizeof name) as_die("--param %s: unknown parameter", arg);
    memcpy(name, arg, len);
    name[len] = 0;
    const char *v = eq + 1;
    if (!strcmp(name, "lambda"))
        p->lambda = as_arg_double(v);
    else if (!strcmp(name, "parallel_k"))
        p->parallel_k = as_arg_int(v);
    else if (!strcmp(name, "zip_ratio"))
        p->zip_ratio = as_arg_double(v);
    else if (!strcmp(name, "n_pivots"))
        p->n_pivots = as_arg_int(v);
    else if (!strcmp(name, "alpha"))
        p->alpha = as_arg_double(v);
    else if (!strcmp(name, "threshold"))
        p->threshold = as_arg_double(v);
    else if (!strcmp(name, "weighted"))
        p->weighted = as_arg_int(v);
    else if (!strcmp(name, "seed"))
        p->seed = as_arg_u64(v);
    else
        as_die("--param %s: unknown parameter (lambda, parallel_k, zip_ratio, n_pivots, alpha, "
               "threshold, weighted, seed)",
               arg);
}

struct tensor {
    float *v;
    int ndim;
    int64_t shape[4];
};

/* Copy the current record's payload as F32 (the mask may come as U8 / I32 too). */
static void take(struct as_source *s, const struct as_rec *r, struct tensor *t, int mask_ok) {
    const char *src = as_source_name(s);
    if (t->v) as_die("%s: record %s appears twice", src, r->name);
    if (r->ndim < 1 || r->ndim > 4) as_die("%s: record %s: %d dimensions", src, r->name, r->ndim);
    if (r->dtype != AS_F32 &&
        !(mask_ok && (r->dtype == AS_U8 || r->dtype == AS_I32 || r->dtype == AS_BOOL)))
        as_die("%s: record %s: dtype %s, expected F32", src, r->name, as_dtype_name(r->dtype));
    const void *p = as_source_payload(s);
    if (!p) as_die_last();
    uint64_t n = as_rec_numel(r);
    t->v = as_xmalloc((size_t)(n ? n : 1) * sizeof *t->v);
    for (uint64_t i = 0; i < n; i++)
        t->v[i] = r->dtype == AS_F32   ? ((const float *)p)[i]
                  : r->dtype == AS_I32 ? (float)((const int32_t *)p)[i]
                                       : (float)((const uint8_t *)p)[i];
    t->ndim = r->ndim;
    memcpy(t->shape, r->shape, (size_t)r->ndim * sizeof r->shape[0]);
}

static char *shape_str(const struct tensor *t, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

int as_prune_cmd_tokens(int argc, char **argv) {
    const char *in = "-", *out = NULL, *report = NULL, *method = NULL;
    double keep = NAN;
    int query = -1;
    long long max_tokens = -1;
    struct as_prune_params p;
    as_prune_params_default(&p);
    static const struct option lo[] = {
        {"method", required_argument, 0, 'm'}, {"keep", required_argument, 0, 'k'},
        {"report", required_argument, 0, 'r'}, {"param", required_argument, 0, 'p'},
        {"query", required_argument, 0, 'q'},  {"max-tokens", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "i:o:m:k:h", lo, NULL)) != -1) {
        switch (c) {
        case 'i':
            in = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'm':
            method = optarg;
            break;
        case 'k':
            keep = as_arg_double(optarg);
            break;
        case 'r':
            report = optarg;
            break;
        case 'p':
            set_param(&p, optarg);
            break;
        case 'q':
            query = as_arg_int(optarg);
            break;
        case 'T':
            max_tokens = as_arg_int(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) as_die("tokens: unexpected argument '%s'", argv[optind]);
    if (!method) as_die("tokens: --method is required (as-prune tokens --help lists them)");
    const struct as_prune_method *m = as_prune_find(method);
    if (!m) as_die("tokens: unknown method '%s' (as-prune tokens --help lists them)", method);
    if (isnan(keep)) as_die("tokens: --keep is required");
    if (!(keep > 0 && keep <= 1)) as_die("tokens: --keep %g outside (0, 1]", keep);
    if (!out) as_die("tokens: -o OUT is required");
    if (!strcmp(out, "-") && !report)
        as_die("tokens: -o - writes the stream to stdout: give --report FILE");

    struct as_source *s = as_source_open(in);
    if (!s) as_die_last();
    const char *src = as_source_name(s);
    struct tensor x = {0}, att = {0}, sc = {0}, keys = {0}, mask = {0};
    const struct as_rec *r;
    int rc;
    while ((rc = as_source_next(s, &r)) == 1) {
        if (!strcmp(r->name, "features"))
            take(s, r, &x, 0);
        else if (!strcmp(r->name, "attention"))
            take(s, r, &att, 0);
        else if (!strcmp(r->name, "scores"))
            take(s, r, &sc, 0);
        else if (!strcmp(r->name, "keys"))
            take(s, r, &keys, 0);
        else if (!strcmp(r->name, "prunable"))
            take(s, r, &mask, 1);
        else
            as_die("%s: record %s: unknown (features, attention, scores, keys, prunable)", src,
                   r->name);
    }
    if (rc < 0) as_die_last();
    if (!x.v) as_die("%s: no features record", src);
    char b1[96], b2[96];
    if (x.ndim != 2) as_die("%s: features %s: expected [N, D]", src, shape_str(&x, b1, sizeof b1));
    int64_t N = x.shape[0], D = x.shape[1];
    if (N < 1 || D < 1 || N > 1 << 20 || D > 1 << 20)
        as_die("%s: features %s: expected [N, D] with 1 <= N, D <= 1048576", src,
               shape_str(&x, b1, sizeof b1));
    if (max_tokens >= 0 && N > max_tokens)
        as_die("%s: %lld tokens, more than --max-tokens %lld", src, (long long)N, max_tokens);
    if (att.v && (att.ndim != 3 || att.shape[1] != N || att.shape[2] != N || att.shape[0] < 1))
        as_die("%s: attention %s does not match features %s: expected [H, %lld, %lld]", src,
               shape_str(&att, b1, sizeof b1), shape_str(&x, b2, sizeof b2), (long long)N,
               (long long)N);
    if (sc.v && (sc.ndim != 1 || sc.shape[0] != N))
        as_die("%s: scores %s does not match features %s: expected [%lld]", src,
               shape_str(&sc, b1, sizeof b1), shape_str(&x, b2, sizeof b2), (long long)N);
    if (mask.v && (mask.ndim != 1 || mask.shape[0] != N))
        as_die("%s: prunable %s does not match features %s: expected [%lld]", src,
               shape_str(&mask, b1, sizeof b1), shape_str(&x, b2, sizeof b2), (long long)N);
    if (keys.v && (keys.ndim != 2 || keys.shape[0] != N || keys.shape[1] < 1))
        as_die("%s: keys %s does not match features %s: expected [%lld, Dk]", src,
               shape_str(&keys, b1, sizeof b1), shape_str(&x, b2, sizeof b2), (long long)N);
    if (query >= N) as_die("tokens: --query %d outside the %lld tokens", query, (long long)N);
    if (att.v && (double)att.shape[0] * N * N > 1e9)
        as_die("%s: attention %s: too large", src, shape_str(&att, b1, sizeof b1));
    uint8_t *pr = NULL;
    int nv = (int)N;
    if (mask.v) {
        pr = as_xmalloc((size_t)N);
        nv = 0;
        for (int64_t i = 0; i < N; i++)
            pr[i] = mask.v[i] != 0, nv += pr[i];
    }
    struct as_prune_input pin = {.n = (int)N,
                                 .d = (int)D,
                                 .x = x.v,
                                 .h = att.v ? (int)att.shape[0] : 0,
                                 .attn = att.v,
                                 .score = sc.v,
                                 .dk = keys.v ? (int)keys.shape[1] : 0,
                                 .keys = keys.v,
                                 .prunable = pr,
                                 .query = query};
    struct as_prune_result res;
    if (as_prune_run(m, &pin, keep, &p, &res)) {
        as_fail_prefix("%s: ", src);
        as_die_last();
    }

    /* report first into memory, so nothing is written when anything fails */
    json_t *rep = json_pack("{s:s, s:s, s:f, s:I, s:I, s:I, s:I}", "method", m->name, "kind",
                            m->kind == AS_PRUNE_MERGE ? "merge" : "select", "keep", keep, "n",
                            (json_int_t)N, "prunable", (json_int_t)nv, "k",
                            (json_int_t)as_prune_budget(nv, keep), "m", (json_int_t)res.m);
    json_t *kept = json_array();
    int32_t *k32 = as_xmalloc((size_t)(res.m ? res.m : 1) * sizeof *k32);
    for (int i = 0; i < res.m; i++)
        k32[i] = res.kept[i], json_array_append_new(kept, json_integer(res.kept[i]));
    json_object_set_new(rep, "kept", kept);
    json_object_set_new(rep, "params",
                        json_pack("{s:f, s:i, s:f, s:i, s:f, s:f, s:i, s:I}", "lambda", p.lambda,
                                  "parallel_k", p.parallel_k, "zip_ratio", p.zip_ratio, "n_pivots",
                                  p.n_pivots, "alpha", p.alpha, "threshold", p.threshold,
                                  "weighted", p.weighted, "seed", (json_int_t)p.seed));
    char *rep_s = json_dumps(rep, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(rep);

    json_t *attrs = json_pack("{s:s, s:f}", "method", m->name, "keep", keep);
    struct as_atomic_file af = {0};
    int fd = 1;
    if (strcmp(out, "-")) {
        if (as_atomic_open(&af, out)) as_die_last();
        fd = fileno(af.fp);
    }
    struct as_stream_writer *w = as_stream_writer_fd(fd, strcmp(out, "-") ? out : "stdout");
    int64_t s1[1] = {res.m}, s2[2] = {res.m, N}, s3[2] = {res.m, D};
    int bad = !w ||
              as_stream_write_tensor(w, "kept", "token-index", -1, AS_I32, 1, s1, attrs, k32) ||
              as_stream_write_tensor(w, "merge", "token-merge", -1, AS_F32, 2, s2, attrs, res.w) ||
              as_stream_write_tensor(w, "features", "features", -1, AS_F32, 2, s3, attrs, res.y) ||
              as_stream_write_end(w);
    if (bad) {
        if (strcmp(out, "-")) as_atomic_abort(&af);
        as_die_last();
    }
    as_stream_writer_free(w);
    if (strcmp(out, "-") && as_atomic_commit(&af)) as_die_last();
    if (report) {
        size_t len = strlen(rep_s);
        rep_s[len] = '\n';
        if (as_atomic_write_file(report, rep_s, len + 1)) as_die_last();
        rep_s[len] = 0;
    } else {
        printf("%s\n", rep_s);
    }
    free(rep_s);
    json_decref(attrs);
    free(k32), free(pr), free(x.v), free(att.v), free(sc.v), free(keys.v), free(mask.v);
    as_prune_result_free(&res);
    as_source_close(s);
    return 0;
}
