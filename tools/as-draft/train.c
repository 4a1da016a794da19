/* as-draft train / gradcheck: online TTT training of an Eagle3 draft (draft_train.h) on text
 * windows, the target's forward computed on the fly; AdamW, warmup + cosine, gradient clipping
 * (train_optim.h), exact resume from a checkpoint (train_ckpt.h), progress as JSON lines, and the
 * draft kept by measured acceptance length on held-out prompts, not by loss. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "as_error.h"
#include "draft_model.h"
#include "draft_spec.h"
#include "draft_train.h"
#include "forward.h"
#include "model_open.h"
#include "text_data.h"
#include "tokenizer.h"
#include "train_ckpt.h"
#include "train_optim.h"

int cmd_train(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_int(const void *a, const void *b) {
    return *(const int32_t *)a - *(const int32_t *)b;
}

/* The draft vocabulary: the vd most frequent ids of toks (ties: lower id first), padded with the
 * lowest unused ids when fewer occur, ascending (reference section 1). */
static int32_t *vocab_from_tokens(const int32_t *toks, size_t n, int V, int vd) {
    long *cnt = as_xcalloc((size_t)V, sizeof(long));
    for (size_t i = 0; i < n; i++)
        cnt[toks[i]]++;
    int32_t *used = as_xmalloc((size_t)vd * sizeof(int32_t));
    char *taken = as_xcalloc((size_t)V, 1);
    for (int j = 0; j < vd; j++) {
        int best = -1;
        for (int v = 0; v < V; v++)
            if (!taken[v] && (best < 0 || cnt[v] > cnt[best])) best = v;
        taken[best] = 1, used[j] = best;
    }
    qsort(used, (size_t)vd, sizeof *used, cmp_int);
    free(cnt), free(taken);
    return used;
}

struct window_data {
    int T, Vd;
    float *feats, *tlogits;
    unsigned char *tmask;
};

/* The target's taps, restricted logits and argmax mask of one window. */
static void target_window(const struct as_model *m, struct as_run_state *s,
                          const struct as_draft *d, const int *tok, const unsigned char *t2d,
                          struct window_data *w) {
    int V = m->cfg.vocab;
    as_state_reset(s);
    if (as_forward(m, s, tok, w->T, AS_LOGITS_ALL, NULL) != 0) as_die_last();
    as_spec_gather_taps(m, s, d->taps, w->T, w->feats);
    for (int t = 0; t < w->T; t++) {
        const float *z = s->logits + (size_t)t * V;
        int am = 0;
        for (int v = 1; v < V; v++)
            if (z[v] > z[am]) am = v;
        w->tmask[t] = t2d[am];
        for (int j = 0; j < d->vd; j++)
            w->tlogits[(size_t)t * d->vd + j] = z[as_draft_to_target(d, j)];
    }
}

static double eval_al(const struct as_model *m, const struct as_draft *d, int32_t **prompts,
                      const int *np, int n, int k, int steps, int stop0, int stop1) {
    struct as_spec_opts so = {k, 0, 1, {stop0, stop1}};
    long drafts = 0, acc = 0;
    int *buf = as_xmalloc(((size_t)steps + 1) * sizeof(int));
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < np[i]; j++)
            buf[j] = prompts[i][j];
        struct as_spec_stats st;
        if (as_spec_generate(m, d, buf, np[i], steps, &so, NULL, NULL, &st) < 0) as_die_last();
        drafts += st.drafts, acc += st.accepted;
    }
    free(buf);
    return drafts ? 1.0 + (double)acc / drafts : 1.0;
}

int cmd_train(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *text = NULL, *ckpt = NULL, *evalf = NULL;
    int vd = 0, T = 64, total = 200, ttt = 7, warmup = -1, save_every = 50, eval_every = 50;
    int k = 3, eval_steps = 48;
    long bytes = 0;
    float lr = 1e-3f, clip = 0.5f;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                       {"output", required_argument, 0, 'o'},
                                       {"text", required_argument, 0, 'f'},
                                       {"ckpt", required_argument, 0, 'c'},
                                       {"eval", required_argument, 0, 'e'},
                                       {"vd", required_argument, 0, 1},
                                       {"window", required_argument, 0, 2},
                                       {"steps", required_argument, 0, 3},
                                       {"ttt", required_argument, 0, 4},
                                       {"warmup", required_argument, 0, 5},
                                       {"save-every", required_argument, 0, 6},
                                       {"eval-every", required_argument, 0, 7},
                                       {"lr", required_argument, 0, 8},
                                       {"clip", required_argument, 0, 9},
                                       {"bytes", required_argument, 0, 10},
                                       {"eval-steps", required_argument, 0, 11},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:f:c:e:k:", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'f':
            text = optarg;
            break;
        case 'c':
            ckpt = optarg;
            break;
        case 'e':
            evalf = optarg;
            break;
        case 'k':
            k = atoi(optarg);
            break;
        case 1:
            vd = atoi(optarg);
            break;
        case 2:
            T = atoi(optarg);
            break;
        case 3:
            total = atoi(optarg);
            break;
        case 4:
            ttt = atoi(optarg);
            break;
        case 5:
            warmup = atoi(optarg);
            break;
        case 6:
            save_every = atoi(optarg);
            break;
        case 7:
            eval_every = atoi(optarg);
            break;
        case 8:
            lr = strtof(optarg, NULL);
            break;
        case 9:
            clip = strtof(optarg, NULL);
            break;
        case 10:
            bytes = atol(optarg);
            break;
        case 11:
            eval_steps = atoi(optarg);
            break;
        default:
            as_die("train: bad option (see as-draft --help)");
        }
    }
    if (!model || !out || !text || !evalf)
        as_die("train: needs -m TARGET -o DRAFT -f TEXT -e PROMPTS");
    if (T < 2 || total < 1 || ttt < 1 || ttt > AS_TTT_MAX || k < 1 || k > AS_SPEC_MAX_K)
        as_die("train: --window >= 2, --steps >= 1, --ttt 1..%d, -k 1..%d", AS_TTT_MAX,
               AS_SPEC_MAX_K);
    if (warmup < 0) warmup = total / 20;
    struct as_model *m = as_model_open(model);
    if (!m) as_die_last();
    struct as_tokenizer *tok = as_tokenizer_open(model);
    if (!tok) as_die_last();
    int V = m->cfg.vocab;
    if (!vd) vd = V < 32000 ? V : 32000;
    if (vd > V) as_die("--vd: %d exceeds the target's vocabulary (%d)", vd, V);
    /* data: the text tokenized once, windows of T at stride T */
    char *buf;
    size_t len;
    if (as_text_read(text, (size_t)bytes, &buf, &len) != 0) as_die_last();
    int32_t *ids;
    size_t n_ids;
    if (as_tokenizer_encode(tok, buf, len, 0, &ids, &n_ids) != 0) as_die_last();
    free(buf);
    long n_win = (long)(n_ids / (size_t)T);
    if (n_win < 1) as_die("file %s: %zu tokens, fewer than one window of %d", text, n_ids, T);
    int32_t *used = vocab_from_tokens(ids, n_ids, V, vd);
    struct as_draft *d = as_draft_new_random(m, vd, used, 1234);
    unsigned char *t2d = as_xcalloc((size_t)V, 1);
    for (int j = 0; j < vd; j++)
        t2d[used[j]] = 1;
    /* held-out prompts for AL: one per line */
    FILE *ef = fopen(evalf, "r");
    if (!ef) as_die("file %s: cannot open", evalf);
    int32_t *prompts[256];
    int np[256], n_prompts = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t ll;
    while (n_prompts < 256 && (ll = getline(&line, &cap, ef)) > 0) {
        while (ll > 0 && (line[ll - 1] == '\n' || line[ll - 1] == '\r'))
            line[--ll] = 0;
        size_t n;
        if (as_tokenizer_encode(tok, line, (size_t)ll, as_tokenizer_add_bos(tok),
                                &prompts[n_prompts], &n) != 0)
            as_die_last();
        if (n == 0 || (int)n > eval_steps) as_die("file %s: an empty or too long prompt", evalf);
        np[n_prompts++] = (int)n;
    }
    free(line);
    fclose(ef);
    if (!n_prompts) as_die("file %s: no prompts", evalf);
    int stop0 = as_tokenizer_bos(tok), stop1 = as_tokenizer_eos(tok);
    /* optimizer */
    struct as_draft_grads *g = as_draft_grads_new(d);
    struct as_params ps;
    as_params_init(&ps);
    as_draft_params(d, g, &ps);
    struct as_adamw_cfg acfg = {0.9f, 0.95f, 1e-8f, 0.0f};
    struct as_adamw *opt = as_adamw_new(&ps, &acfg);
    struct as_sched sch = {AS_SCHED_COSINE, total, warmup, 0, 0.1f};
    long step = 0;
    double best_al = 0, wall0 = 0;
    if (ckpt && access(ckpt, F_OK) == 0) { /* resume exactly where the checkpoint stopped */
        json_t *meta = as_train_ckpt_load(ckpt, &ps, opt);
        if (!meta) as_die_last();
        step = atol(json_string_value(json_object_get(meta, "step")));
        best_al = atof(json_string_value(json_object_get(meta, "best_al")));
        wall0 = atof(json_string_value(json_object_get(meta, "wall_s")));
        json_decref(meta);
        printf("{\"resumed\":%ld,\"best_al\":%.4f}\n", step, best_al);
    }
    struct as_run_state *s = as_state_new(m, T, T, AS_STATE_KEEP_ACTS);
    if (!s) as_die_last();
    struct window_data w = {T, vd, as_xmalloc((size_t)T * 3 * m->cfg.hidden * 4),
                            as_xmalloc((size_t)T * vd * 4), as_xmalloc((size_t)T)};
    int *wt = as_xmalloc((size_t)T * sizeof(int));
    double t0 = now();
    if (step == 0) { /* the untrained draft's AL, the baseline */
        double al = eval_al(m, d, prompts, np, n_prompts, k, eval_steps, stop0, stop1);
        printf("{\"step\":0,\"al\":%.4f}\n", al);
    }
    while (step < total) {
        long wi = step % n_win;
        for (int t = 0; t < T; t++)
            wt[t] = ids[(size_t)wi * T + t];
        target_window(m, s, d, wt, t2d, &w);
        as_params_zero_grad(&ps);
        struct as_ttt_result r;
        if (as_draft_ttt(d, wt, w.feats, w.tlogits, w.tmask, T, ttt, g, &r) != 0) as_die_last();
        if (as_params_nonfinite_grad(&ps) >= 0)
            as_die("train: step %ld: non-finite gradient", step);
        double gn = as_params_clip(&ps, clip);
        float lrs = as_sched_lr(&sch, lr, step);
        as_adamw_step(opt, &ps, lrs);
        step++;
        double wall = wall0 + now() - t0;
        if (step % 10 == 0 || step == total)
            printf("{\"step\":%ld,\"loss\":%.5f,\"acc0\":%.4f,\"acc1\":%.4f,\"lr\":%.3g,"
                   "\"gnorm\":%.4g,\"tokens\":%ld,\"wall_s\":%.1f}\n",
                   step, r.loss, r.acc_step[0], ttt > 1 ? r.acc_step[1] : 0.0, (double)lrs, gn,
                   step * T, wall);
        if (step % eval_every == 0 || step == total) {
            double al = eval_al(m, d, prompts, np, n_prompts, k, eval_steps, stop0, stop1);
            int better = al > best_al;
            printf("{\"step\":%ld,\"al\":%.4f,\"best\":%s}\n", step, al, better ? "true" : "false");
            if (better) {
                best_al = al;
                if (as_draft_save(d, out, AS_F32) != 0) as_die_last();
            }
        }
        if (ckpt && (step % save_every == 0 || step == total)) {
            char sv[32], bv[32], wv[32];
            snprintf(sv, sizeof sv, "%ld", step);
            snprintf(bv, sizeof bv, "%.17g", best_al);
            snprintf(wv, sizeof wv, "%.3f", wall);
            const char *keys[] = {"step", "best_al", "wall_s"}, *vals[] = {sv, bv, wv};
            if (as_train_ckpt_save(ckpt, &ps, opt, keys, vals, 3) != 0) as_die_last();
        }
        fflush(stdout);
    }
    printf("{\"done\":%ld,\"best_al\":%.4f,\"tokens\":%ld}\n", step, best_al, step * T);
    for (int i = 0; i < n_prompts; i++)
        free(prompts[i]);
    free(wt), free(w.feats), free(w.tlogits), free(w.tmask), free(ids), free(used), free(t2d);
    as_state_free(s);
    as_adamw_free(opt);
    as_params_free(&ps);
    as_draft_grads_free(g);
    as_draft_free(d);
    as_tokenizer_free(tok);
    as_model_free(m);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Analytic TTT gradients against central differences of the loss, a few entries per weight. */
int cmd_gradcheck(int argc, char **argv) {
    if (argc < 5) as_die("gradcheck: as-draft gradcheck TARGET DRAFT T STEPS");
    struct as_model *m = as_model_open(argv[1]);
    if (!m) as_die_last();
    struct as_draft *d = as_draft_load(argv[2], m);
    if (!d) as_die_last();
    int T = atoi(argv[3]), S = atoi(argv[4]), V = m->cfg.vocab, vd = d->vd;
    uint64_t st = 99;
    int *tok = as_xmalloc((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++)
        tok[t] = (int)((st = st * 6364136223846793005ull + 1442695040888963407ull) >> 33) % V;
    struct as_run_state *s = as_state_new(m, T, T, AS_STATE_KEEP_ACTS);
    unsigned char *t2d = as_xcalloc((size_t)V, 1);
    for (int j = 0; j < vd; j++)
        t2d[as_draft_to_target(d, j)] = 1;
    struct window_data w = {T, vd, as_xmalloc((size_t)T * 3 * m->cfg.hidden * 4),
                            as_xmalloc((size_t)T * vd * 4), as_xmalloc((size_t)T)};
    target_window(m, s, d, tok, t2d, &w);
    for (int t = 0; t < T; t++)
        w.tmask[t] = 1; /* every position counts (a random draft vocabulary rarely holds them) */
    struct as_draft_grads *g = as_draft_grads_new(d);
    struct as_params ps;
    as_params_init(&ps);
    as_draft_params(d, g, &ps);
    struct as_ttt_result r;
    as_draft_ttt(d, tok, w.feats, w.tlogits, w.tmask, T, S, g, &r);
    double worst = 0;
    for (int i = 0; i < ps.n; i++) {
        struct as_param *p = &ps.p[i];
        for (int e = 0; e < 4; e++) {
            size_t j = (size_t)((st = st * 6364136223846793005ull + 1) >> 33) % p->n;
            float keep = p->w[j], h = 1e-2f * (fabsf(keep) > 0.1f ? fabsf(keep) : 0.1f);
            struct as_ttt_result a, b;
            p->w[j] = keep + h;
            as_draft_ttt(d, tok, w.feats, w.tlogits, w.tmask, T, S, NULL, &a);
            p->w[j] = keep - h;
            as_draft_ttt(d, tok, w.feats, w.tlogits, w.tmask, T, S, NULL, &b);
            p->w[j] = keep;
            double fd = (a.loss - b.loss) / (2.0 * h), an = p->g[j];
            double err = fabs(fd - an) / (fabs(fd) + fabs(an) + 1e-4);
            if (err > worst) worst = err;
            printf("{\"param\":\"%s\",\"i\":%zu,\"analytic\":%.6g,\"numeric\":%.6g,\"rel\":%.3g}\n",
                   p->name, j, an, fd, err);
        }
    }
    printf("{\"worst_rel\":%.4g,\"loss\":%.6g}\n", worst, r.loss);
    as_params_free(&ps);
    as_draft_grads_free(g);
    free(tok), free(t2d), free(w.feats), free(w.tlogits), free(w.tmask);
    as_state_free(s);
    as_draft_free(d);
    as_model_free(m);
    return 0;
}
