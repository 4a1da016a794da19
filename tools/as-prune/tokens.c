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
#include <time.h>

#include "as-prune.h"
#include "as_error.h"
#include "atomic_file.h"
#include "cli_args.h"
#include "model_open.h"
#include "prune_engine.h"
#include "prune_tokens.h"
#include "stream.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: as-prune tokens --method M --keep R [-i IN] -o OUT [--report FILE]\n"
           "                       [--param NAME=VALUE]... [--query I] [--max-tokens N]\n"
           "  -i IN            tensor stream or safetensors file (default stdin): features\n"
           "                   [N,D] F32 (required), attention [H,N,N], scores [N], keys [N,Dk]\n"
           "                   (F32), prunable [N] (U8/I32/F32, nonzero = prunable)\n"
           "  -o OUT           output stream (\"-\": stdout, then the report needs --report):\n"
           "                   kept I32 [M], merge F32 [M,N], features F32 [M,D]\n"
           "  --keep R         fraction of prunable tokens kept, in (0, 1]\n"
           "  --max-tokens N   refuse inputs of more than N tokens (a model's context)\n"
           "  --query I        FastV query token (default: the last text token)\n"
           "engine mode (prune a prompt inside the model's prefill, docs/token-pruning.md):\n"
           "  as-prune tokens --model DIR --method M --keep R [--layer L] [--keep-first F]\n"
           "                  [--keep-last Q] (--ids LIST -o OUT | --prompts FILE [--gen G]\n"
           "                  [--methods M1,M2,..] [--keeps R1,R2,..])\n"
           "  --layer L        prune before layer L (0: on the embeddings; default 2), scored by\n"
           "                   the last token's attention at layer L-1 (see --importance)\n"
           "  --importance I   the score the strategies read: last (the last token's attention\n"
           "                   row), tail (mean row of the --keep-last tokens), recv (attention\n"
           "                   received, mean over the queries that see the token), accum (its\n"
           "                   sum over all queries), norm (L2 norm of the hidden state)\n"
           "  --keep-first F   first tokens never pruned (default 1); --keep-last Q: the last\n"
           "                   ones (default: the question's tokens with --prompts, 1 with --ids)\n"
           "  --ids LIST       comma-separated token ids; OUT gets kept I32 [M] and logits F32\n"
           "                   [2, V] (after the prefill, and after one greedy token)\n"
           "  --prompts FILE   JSON lines {context, question, answer}: per prompt and (method,\n"
           "                   keep) the next-token KLD vs the full prefill, greedy continuations\n"
           "                   (G tokens, default 16), passkey hit, prefill times; then one\n"
           "                   summary line per (method, keep) with FLOP reduction and speedup\n"
           "methods:\n");
    int n;
    const struct as_prune_method *m = as_prune_methods(&n);
    for (int i = 0; i < n; i++)
        fprintf(f, "  %-10s %s: %s%s%s\n", m[i].name,
                m[i].kind == AS_PRUNE_MERGE ? "merge" : "select", m[i].inputs,
                m[i].params[0] ? "; " : "", m[i].params);
}

/* Returns the AS_PRUNE_GIVEN_ bit of the parameter it set, if any (then IDPruner's
 * language-model default for it does not apply). */
static int set_param(struct as_prune_params *p, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq) as_die("--param %s: expected NAME=VALUE", arg);
    char name[64];
    size_t len = (size_t)(eq - arg);
    if (len >= sizeof name) as_die("--param %s: unknown parameter", arg);
    memcpy(name, arg, len);
    name[len] = 0;
    const char *v = eq + 1;
    if (!strcmp(name, "lambda"))
        return p->lambda = as_arg_double(v), AS_PRUNE_GIVEN_LAMBDA;
    else if (!strcmp(name, "mmr_norm"))
        return p->mmr_norm = as_arg_int(v), AS_PRUNE_GIVEN_MMR_NORM;
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
        as_die("--param %s: unknown parameter (lambda, mmr_norm, parallel_k, zip_ratio, n_pivots, "
               "alpha, threshold, weighted, seed)",
               arg);
    return 0;
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

/* ---- engine mode: prune a model's prompt inside its prefill ---- */

/* one entry of --methods: a method with its own parameters and importance */
struct variant {
    const struct as_prune_method *m;
    struct as_prune_params p;
    int importance;
    char label[128]; /* the entry as given: NAME[:PARAM=VALUE]... */
};

struct engine_opts {
    const char *model, *ids, *prompts, *out, *report;
    int gen;
    struct variant methods[32]; /* --prompts: the grid, methods x keeps */
    double keeps[32];
    int n_methods, n_keeps;
    int keep_last; /* -1: the question's tokens (--prompts) or 1 (--ids) */
    struct as_prune_engine e;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int argmax_f(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* KL(p || q) of softmax(a), softmax(b), in double */
static double kld_logits(const float *a, const float *b, int n) {
    double ma = -INFINITY, mb = -INFINITY, za = 0, zb = 0, k = 0;
    for (int i = 0; i < n; i++)
        ma = fmax(ma, a[i]), mb = fmax(mb, b[i]);
    for (int i = 0; i < n; i++)
        za += exp(a[i] - ma), zb += exp(b[i] - mb);
    for (int i = 0; i < n; i++) {
        double pa = exp(a[i] - ma) / za;
        k += pa * ((a[i] - ma - log(za)) - (b[i] - mb - log(zb)));
    }
    return k;
}

/* Greedy continuation of G tokens from the state's last logits; returns the decoded text. */
static char *greedy(const struct as_model *m, struct as_run_state *s,
                    const struct as_tokenizer *tok, int G) {
    int32_t *out = as_xmalloc((size_t)(G ? G : 1) * sizeof *out);
    int n = 0, eos = as_tokenizer_eos(tok);
    for (; n < G; n++) {
        int next = argmax_f(s->logits, m->cfg.vocab);
        if (next == eos) break;
        out[n] = next;
        if (n + 1 < G && as_forward(m, s, &next, 1, AS_LOGITS_LAST, NULL)) as_die_last();
    }
    char *txt = as_tokenizer_decode(tok, out, (size_t)n, NULL);
    if (!txt) as_die_last();
    free(out);
    return txt;
}

static int engine_main(struct engine_opts *o) {
    static struct as_model *m; /* static here and below: LeakSanitizer sees them at as_die */
    m = as_model_open(o->model);
    if (!m) as_die_last();
    int V = m->cfg.vocab;
    if (o->ids) { /* one prompt of token ids: kept indices and logits for the oracle */
        int n = 0, cap = 16;
        static int *ids;
        ids = as_xmalloc((size_t)cap * sizeof *ids);
        for (const char *p = o->ids; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || (*end && *end != ','))
                as_die("tokens: --ids %s: expected a comma-separated list of token ids", o->ids);
            if (n == cap) ids = as_xrealloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            ids[n++] = (int)v;
            p = *end ? end + 1 : end;
        }
        if (n > m->cfg.max_pos)
            as_die("tokens: %d tokens, more than the model's context (%d)", n, m->cfg.max_pos);
        o->e.keep_last = o->keep_last < 0 ? 1 : o->keep_last;
        static struct as_run_state *s;
        s = as_state_new(m, n, n + 2, 0);
        if (!s) as_die_last();
        static int *kept;
        kept = as_xmalloc((size_t)n * sizeof *kept);
        struct as_prune_prefill_stats st;
        if (as_prune_prefill(m, s, ids, n, &o->e, kept, &st)) as_die_last();
        static float *lg;
        lg = as_xmalloc((size_t)2 * V * sizeof *lg);
        memcpy(lg, s->logits, (size_t)V * sizeof *lg);
        int next = argmax_f(lg, V);
        if (as_forward(m, s, &next, 1, AS_LOGITS_LAST, NULL)) as_die_last();
        memcpy(lg + V, s->logits, (size_t)V * sizeof *lg);
        static json_t *rep;
        rep = json_pack("{s:s, s:f, s:i, s:i, s:i, s:f, s:f}", "method", o->e.method->name, "keep",
                        o->e.keep, "layer", o->e.layer, "n", st.n, "m", st.m, "flops_full",
                        st.flops_full, "flops_pruned", st.flops_pruned);
        /* the settings in force: the language-model defaults are visible here */
        json_object_set_new(
            rep, "importance",
            json_string(as_prune_importance_name(o->e.importance ? o->e.importance : AS_IMP_LAST)));
        json_object_set_new(rep, "lambda", json_real(o->e.params.lambda));
        json_object_set_new(rep, "mmr_norm", json_integer(o->e.params.mmr_norm));
        json_t *ka = json_array();
        static int32_t *k32;
        k32 = as_xmalloc((size_t)st.m * sizeof *k32);
        for (int i = 0; i < st.m; i++)
            k32[i] = kept[i], json_array_append_new(ka, json_integer(kept[i]));
        json_object_set_new(rep, "kept", ka);
        struct as_atomic_file af = {0};
        if (as_atomic_open(&af, o->out)) as_die_last();
        struct as_stream_writer *w = as_stream_writer_fd(fileno(af.fp), o->out);
        int64_t s1[1] = {st.m}, s2[2] = {2, V};
        if (!w || as_stream_write_tensor(w, "kept", "token-index", -1, AS_I32, 1, s1, NULL, k32) ||
            as_stream_write_tensor(w, "logits", "logits", -1, AS_F32, 2, s2, NULL, lg) ||
            as_stream_write_end(w)) {
            as_atomic_abort(&af);
            as_die_last();
        }
        as_stream_writer_free(w);
        if (as_atomic_commit(&af)) as_die_last();
        char *js = json_dumps(rep, JSON_COMPACT | JSON_REAL_PRECISION(12));
        printf("%s\n", js);
        free(js), json_decref(rep), free(k32), free(lg), free(kept), free(ids);
        as_state_free(s);
        as_model_free(m);
        return 0;
    }

    /* --prompts FILE: JSON lines {"context", "question", "answer"}. Per prompt the full prefill
     * runs once, then each (method, keep) of the grid: next-token KLD of the pruned prefill
     * against the full one, greedy continuations of both, passkey hits, prefill times. */
    static struct as_tokenizer *tok;
    tok = as_tokenizer_open(o->model);
    if (!tok) as_die_last();
    FILE *f = fopen(o->prompts, "r");
    if (!f) as_die("%s: cannot open", o->prompts);
    int nc = o->n_methods * o->n_keeps;
    static struct combo {
        int hit, agree;
        double kld, t, fl, fl_full;
        long toks;
    } * cs;
    cs = as_xcalloc((size_t)nc, sizeof *cs);
    static char *line;
    size_t cap = 0;
    ssize_t len;
    int np = 0, hit_full = 0, n_answer = 0;
    double t_full = 0;
    long tok_full = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        static json_t *j;
        j = json_loadb(line, (size_t)len, 0, &je);
        if (!j) as_die("%s: line %d: %s", o->prompts, np + 1, je.text);
        const char *ctx = json_string_value(json_object_get(j, "context"));
        const char *q = json_string_value(json_object_get(j, "question"));
        const char *ans = json_string_value(json_object_get(j, "answer"));
        if (!ctx || !q)
            as_die("%s: line %d: needs \"context\" and \"question\" strings", o->prompts, np + 1);
        static int32_t *a, *b;
        a = b = NULL;
        size_t na = 0, nb = 0;
        if (as_tokenizer_encode(tok, ctx, strlen(ctx), as_tokenizer_add_bos(tok), &a, &na) ||
            as_tokenizer_encode(tok, q, strlen(q), 0, &b, &nb))
            as_die_last();
        int n = (int)(na + nb);
        if (n > m->cfg.max_pos)
            as_die("%s: line %d: %d tokens, more than the model's context (%d)", o->prompts, np + 1,
                   n, m->cfg.max_pos);
        static int *ids;
        ids = as_xmalloc((size_t)n * sizeof *ids);
        for (size_t i = 0; i < na; i++)
            ids[i] = a[i];
        for (size_t i = 0; i < nb; i++)
            ids[na + i] = b[i];
        o->e.keep_last = o->keep_last < 0 ? (int)nb : o->keep_last;
        if (o->e.keep_last < 1) o->e.keep_last = 1;
        static struct as_run_state *s;
        s = as_state_new(m, n, n + o->gen + 1, 0);
        if (!s) as_die_last();
        static float *lf;
        lf = as_xmalloc((size_t)V * sizeof *lf);
        double t0 = now_s();
        if (as_forward(m, s, ids, n, AS_LOGITS_LAST, NULL)) as_die_last();
        double t1 = now_s();
        memcpy(lf, s->logits, (size_t)V * sizeof *lf);
        static char *gf;
        gf = greedy(m, s, tok, o->gen);
        int hf = ans && *ans && strstr(gf, ans);
        if (ans && *ans) n_answer++, hit_full += hf != 0;
        t_full += t1 - t0, tok_full += n;
        for (int ci = 0; ci < nc; ci++) {
            struct combo *cc = &cs[ci];
            const struct variant *va = &o->methods[ci / o->n_keeps];
            o->e.method = va->m, o->e.params = va->p, o->e.importance = va->importance;
            o->e.keep = o->keeps[ci % o->n_keeps];
            as_state_reset(s);
            struct as_prune_prefill_stats st;
            double t2 = now_s();
            if (as_prune_prefill(m, s, ids, n, &o->e, NULL, &st))
                as_die("%s: line %d: %s", o->prompts, np + 1, as_last_error());
            double t3 = now_s();
            double kl = kld_logits(lf, s->logits, V);
            int same = argmax_f(lf, V) == argmax_f(s->logits, V);
            char *gp = greedy(m, s, tok, o->gen);
            int hp = ans && *ans && strstr(gp, ans);
            json_t *r = json_pack("{s:i, s:s, s:f, s:i, s:i, s:f, s:b, s:f, s:f, s:s, s:s}",
                                  "prompt", np, "method", va->label, "keep", o->e.keep, "n", n, "m",
                                  st.m, "kld", kl, "top1_same", same, "prefill_full_s", t1 - t0,
                                  "prefill_pruned_s", t3 - t2, "gen_full", gf, "gen_pruned", gp);
            if (ans && *ans) {
                json_object_set_new(r, "answer", json_string(ans));
                json_object_set_new(r, "hit_full", json_boolean(hf));
                json_object_set_new(r, "hit_pruned", json_boolean(hp));
                cc->hit += hp != 0;
            }
            char *js = json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(8));
            printf("%s\n", js);
            fflush(stdout);
            free(js), json_decref(r), free(gp);
            cc->kld += kl, cc->agree += same, cc->t += t3 - t2;
            cc->fl += st.flops_pruned, cc->fl_full += st.flops_full, cc->toks += st.m;
        }
        np++;
        free(gf), free(lf), free(ids), free(a), free(b);
        as_state_free(s);
        json_decref(j);
    }
    free(line);
    fclose(f);
    if (!np) as_die("%s: no prompts", o->prompts);
    for (int ci = 0; ci < nc; ci++) {
        struct combo *cc = &cs[ci];
        json_t *sum = json_pack("{s:b, s:s, s:f, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                                "summary", 1, "method", o->methods[ci / o->n_keeps].label, "keep",
                                o->keeps[ci % o->n_keeps], "layer", o->e.layer, "prompts", np,
                                "kld_mean", cc->kld / np, "top1_agree", (double)cc->agree / np,
                                "token_ratio", (double)cc->toks / tok_full, "flops_reduction",
                                cc->fl_full / cc->fl, "prefill_speedup", t_full / cc->t,
                                "prefill_full_s", t_full, "prefill_pruned_s", cc->t);
        if (n_answer) {
            json_object_set_new(sum, "passkey_full", json_real((double)hit_full / n_answer));
            json_object_set_new(sum, "passkey_pruned", json_real((double)cc->hit / n_answer));
        }
        char *js = json_dumps(sum, JSON_COMPACT | JSON_REAL_PRECISION(8));
        printf("%s\n", js);
        free(js), json_decref(sum);
    }
    free(cs);
    as_tokenizer_free(tok);
    as_model_free(m);
    return 0;
}

/* --methods a,b:lambda=0.8:importance=recv,c (the --prompts grid): each entry a method, then
 * parameters that override --param and --importance for that entry only */
static void parse_methods(const char *arg, struct engine_opts *o, const struct as_prune_params *p,
                          int importance, int given) {
    char *dup = as_xstrdup(arg), *save = NULL;
    o->n_methods = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_methods == 32) as_die("tokens: --methods: more than 32");
        struct variant *v = &o->methods[o->n_methods++];
        if (strlen(t) >= sizeof v->label) as_die("tokens: --methods: '%s' too long", t);
        strcpy(v->label, t);
        char *save2 = NULL, *name = strtok_r(t, ":", &save2);
        v->m = name ? as_prune_find(name) : NULL;
        if (!v->m) as_die("tokens: --methods: unknown method '%s'", name ? name : "");
        v->p = *p, v->importance = importance;
        int lg = given;
        for (char *kv = strtok_r(NULL, ":", &save2); kv; kv = strtok_r(NULL, ":", &save2)) {
            if (!strncmp(kv, "importance=", 11)) {
                v->importance = as_prune_importance_parse(kv + 11);
                if (v->importance < 0)
                    as_die("tokens: --methods %s: unknown importance '%s' (last, tail, recv, "
                           "accum, norm)",
                           v->label, kv + 11);
            } else {
                lg |= set_param(&v->p, kv);
            }
        }
        as_prune_lm_defaults(v->m, &v->p, &v->importance, lg);
    }
    free(dup);
    if (!o->n_methods) as_die("tokens: --methods: empty list");
}

static void parse_keeps(const char *arg, struct engine_opts *o) {
    char *dup = as_xstrdup(arg), *save = NULL;
    o->n_keeps = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        double k = as_arg_double(t);
        if (!(k > 0 && k <= 1)) as_die("tokens: --keeps: %g outside (0, 1]", k);
        if (o->n_keeps == 32) as_die("tokens: --keeps: more than 32");
        o->keeps[o->n_keeps++] = k;
    }
    free(dup);
    if (!o->n_keeps) as_die("tokens: --keeps: empty list");
}

int as_prune_cmd_tokens(int argc, char **argv) {
    const char *in = "-", *out = NULL, *report = NULL, *method = NULL;
    double keep = NAN;
    int query = -1;
    long long max_tokens = -1;
    struct as_prune_params p;
    as_prune_params_default(&p);
    static const struct option lo[] = {{"method", required_argument, 0, 'm'},
                                       {"keep", required_argument, 0, 'k'},
                                       {"report", required_argument, 0, 'r'},
                                       {"param", required_argument, 0, 'p'},
                                       {"query", required_argument, 0, 'q'},
                                       {"max-tokens", required_argument, 0, 'T'},
                                       {"model", required_argument, 0, 'M'},
                                       {"layer", required_argument, 0, 'L'},
                                       {"keep-first", required_argument, 0, 'F'},
                                       {"keep-last", required_argument, 0, 'Q'},
                                       {"ids", required_argument, 0, 'I'},
                                       {"prompts", required_argument, 0, 'P'},
                                       {"gen", required_argument, 0, 'G'},
                                       {"methods", required_argument, 0, 'U'},
                                       {"keeps", required_argument, 0, 'K'},
                                       {"importance", required_argument, 0, 'W'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *methods_arg = NULL, *keeps_arg = NULL;
    int importance = AS_IMP_DEFAULT, given = 0;
    struct engine_opts eo = {.gen = 16, .keep_last = -1, .e = {.layer = 2, .keep_first = 1}};
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
            given |= set_param(&p, optarg);
            break;
        case 'q':
            query = as_arg_int(optarg);
            break;
        case 'T':
            max_tokens = as_arg_int(optarg);
            break;
        case 'M':
            eo.model = optarg;
            break;
        case 'L':
            eo.e.layer = as_arg_int(optarg);
            break;
        case 'F':
            eo.e.keep_first = as_arg_int(optarg);
            break;
        case 'Q':
            eo.keep_last = as_arg_int(optarg);
            break;
        case 'I':
            eo.ids = optarg;
            break;
        case 'P':
            eo.prompts = optarg;
            break;
        case 'U':
            methods_arg = optarg;
            break;
        case 'K':
            keeps_arg = optarg;
            break;
        case 'G':
            eo.gen = as_arg_int(optarg);
            break;
        case 'W':
            importance = as_prune_importance_parse(optarg);
            if (importance < 0)
                as_die("tokens: --importance %s: unknown (last, tail, recv, accum, norm)", optarg);
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
    if (eo.model) {
        struct as_prune_params base_p = p; /* --methods entries start from these */
        int base_imp = importance;
        if (!eo.ids == !eo.prompts)
            as_die("tokens: --model needs one of --ids LIST or --prompts FILE");
        if (eo.ids && !out) as_die("tokens: -o OUT is required");
        if (eo.e.keep_first < 0 || eo.gen < 0)
            as_die("tokens: --keep-first and --gen must be >= 0");
        if (eo.keep_last == 0 || eo.keep_last < -1)
            as_die("tokens: --keep-last must be >= 1 (the last token predicts the next)");
        as_prune_lm_defaults(m, &p, &importance, given);
        eo.e.method = m, eo.e.keep = keep, eo.e.params = p, eo.out = out;
        eo.e.importance = importance;
        eo.methods[0] = (struct variant){.m = m, .p = p, .importance = importance};
        snprintf(eo.methods[0].label, sizeof eo.methods[0].label, "%s", m->name);
        eo.keeps[0] = keep, eo.n_methods = eo.n_keeps = 1;
        if (methods_arg) parse_methods(methods_arg, &eo, &base_p, base_imp, given);
        if (keeps_arg) parse_keeps(keeps_arg, &eo);
        return engine_main(&eo);
    }
    if (!out) as_die("tokens: -o OUT is required");
    if (!strcmp(out, "-") && !report)
        as_die("tokens: -o - writes the stream to stdout: give --report FILE");

    static struct as_source *s;
    s = as_source_open(in);
    if (!s) as_die_last();
    const char *src = as_source_name(s);
    static struct tensor x, att, sc, keys, mask; /* static: LeakSanitizer sees them at as_die */
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
    static uint8_t *pr;
    pr = NULL;
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
    static json_t *rep;
    rep = json_pack("{s:s, s:s, s:f, s:I, s:I, s:I, s:I}", "method", m->name, "kind",
                    m->kind == AS_PRUNE_MERGE ? "merge" : "select", "keep", keep, "n",
                    (json_int_t)N, "prunable", (json_int_t)nv, "k",
                    (json_int_t)as_prune_budget(nv, keep), "m", (json_int_t)res.m);
    json_t *kept = json_array();
    static int32_t *k32;
    k32 = as_xmalloc((size_t)(res.m ? res.m : 1) * sizeof *k32);
    for (int i = 0; i < res.m; i++)
        k32[i] = res.kept[i], json_array_append_new(kept, json_integer(res.kept[i]));
    json_object_set_new(rep, "kept", kept);
    json_object_set_new(rep, "params",
                        json_pack("{s:f, s:i, s:i, s:f, s:i, s:f, s:f, s:i, s:I}", "lambda",
                                  p.lambda, "mmr_norm", p.mmr_norm, "parallel_k", p.parallel_k,
                                  "zip_ratio", p.zip_ratio, "n_pivots", p.n_pivots, "alpha",
                                  p.alpha, "threshold", p.threshold, "weighted", p.weighted, "seed",
                                  (json_int_t)p.seed));
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
