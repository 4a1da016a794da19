/* as-draft: Eagle3 draft heads for speculative decoding (draft_model.h, draft_spec.h).
 *   init     a random draft for a target (the untrained baseline, and tests' drafts)
 *   forward  the draft's logits and hidden states on given inputs (checked against numpy)
 *   spec     speculative vs plain decoding on prompts: AL, per-position acceptance, tokens/s,
 *            speedup, and whether greedy output is identical
 *   sample   the distribution of one generated position under plain and speculative sampling
 * Errors are one line naming the file and the problem; outputs are written atomically. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "chat_template.h"
#include "draft_model.h"
#include "draft_spec.h"
#include "model.h"
#include "model_open.h"
#include "safetensors.h"
#include "tokenizer.h"

int cmd_train(int argc, char **argv);     /* train.c */
int cmd_gradcheck(int argc, char **argv); /* train.c */
int cmd_dump(int argc, char **argv);      /* train.c */
int cmd_plot(int argc, char **argv);      /* plot.c */

static void usage(FILE *f) {
    fprintf(f,
            "usage: as-draft COMMAND [options]\n"
            "  init    -m TARGET -o DRAFT_DIR [--vd N] [--seed S] [--dtype f32|bf16|f16]\n"
            "          a random (untrained) draft for TARGET, draft vocabulary ids 0..N-1\n"
            "  forward -m TARGET -d DRAFT_DIR -i IN.safetensors -o OUT.safetensors\n"
            "          IN: tokens [T], feats [T0, 3H] (positions T0.. chain on the draft's own\n"
            "          hidden state); OUT: logits [T, Vd], hidden [T, H]\n"
            "  spec    -m TARGET -d DRAFT_DIR -k K -P PROMPTS [-n STEPS] [--temp T] [--seed S]\n"
            "          [--chat]  speculative and plain decoding of each line of PROMPTS, JSON\n"
            "          lines; --chat: each line a user message in the target's chat template\n"
            "  sample  -m TARGET -d DRAFT_DIR -k K -p PROMPT --temp T --runs N --at J [-n STEPS]\n"
            "          histograms of generated token J over N seeds, plain and speculative\n"
            "  train   -m TARGET -o DRAFT_DIR -f TEXT -e PROMPTS [-c CKPT] [--vd N] [--window T]\n"
            "          [--steps N] [--ttt S] [--lr LR] [--warmup W] [--clip C] [-k K]\n"
            "          [--eval-every N] [--save-every N] [--bytes B] [--eval-steps N]\n"
            "          [--init-head] [--dump DUMP] [--chat] [--no-shuffle]\n"
            "          online TTT training; keeps the draft of best greedy AL on PROMPTS;\n"
            "          with -c, resumes from CKPT when it exists (exactly) and saves it\n"
            "          --dump DUMP instead of -f: offline, from as-draft dump's states\n"
            "          windows in a new random order each epoch (--no-shuffle: file order)\n"
            "  dump    -m TARGET -f TEXT -o DUMP.safetensors [--vd N] [--window T] [--bytes B]\n"
            "          per token: the three tapped states, the final-normed hidden state, the\n"
            "          target argmax; the draft vocabulary (most frequent N ids, padded)\n"
            "  plot    TRAIN_LOG -o CURVES.svg   training loss, AL and lr against the step\n"
            "          (the JSON lines of train; a resumed run's lines replace the killed one's)\n"
            "  gradcheck TARGET DRAFT_DIR T STEPS   TTT gradients vs central differences\n"
            "  rowwise -m TARGET -p PROMPT -k K [-n STEPS]   batched verification rows vs\n"
            "          one-token decoding, bit for bit (logits and taps)\n");
}

struct opts {
    const char *model, *draft, *out, *in, *prompts, *prompt, *dtype;
    int vd, k, steps, runs, at, chat;
    float temp;
    unsigned long long seed;
};

static int parse_int(const char *opt, const char *s, int lo, int hi) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || !*s || v < lo || v > hi)
        as_die("%s: expected an integer in %d..%d, got \"%s\"", opt, lo, hi, s);
    return (int)v;
}

static void parse(int argc, char **argv, struct opts *o) {
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},   {"draft", required_argument, 0, 'd'},
        {"output", required_argument, 0, 'o'},  {"input", required_argument, 0, 'i'},
        {"prompts", required_argument, 0, 'P'}, {"prompt", required_argument, 0, 'p'},
        {"steps", required_argument, 0, 'n'},   {"temp", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},    {"vd", required_argument, 0, 1},
        {"dtype", required_argument, 0, 2},     {"runs", required_argument, 0, 3},
        {"at", required_argument, 0, 4},        {"chat", no_argument, 0, 5},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "m:d:o:i:P:p:n:t:s:k:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model = optarg;
            break;
        case 'd':
            o->draft = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'i':
            o->in = optarg;
            break;
        case 'P':
            o->prompts = optarg;
            break;
        case 'p':
            o->prompt = optarg;
            break;
        case 'n':
            o->steps = parse_int("--steps", optarg, 1, 1 << 20);
            break;
        case 'k':
            o->k = parse_int("-k", optarg, 1, AS_SPEC_MAX_K);
            break;
        case 't':
            o->temp = strtof(optarg, &end);
            if (*end || !(o->temp >= 0))
                as_die("--temp: expected a number >= 0, got \"%s\"", optarg);
            break;
        case 's':
            o->seed = strtoull(optarg, &end, 10);
            if (*end) as_die("--seed: expected an integer, got \"%s\"", optarg);
            break;
        case 1:
            o->vd = parse_int("--vd", optarg, 1, 1 << 24);
            break;
        case 2:
            o->dtype = optarg;
            break;
        case 3:
            o->runs = parse_int("--runs", optarg, 1, 1 << 24);
            break;
        case 4:
            o->at = parse_int("--at", optarg, 0, 1 << 20);
            break;
        case 5:
            o->chat = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
}

static struct as_model *need_model(const struct opts *o) {
    if (!o->model) as_die("missing -m TARGET");
    struct as_model *m = as_model_open(o->model);
    if (!m) as_die_last();
    return m;
}

static int cmd_init(const struct opts *o) {
    if (!o->out) as_die("init: missing -o DRAFT_DIR");
    enum as_dtype dt = AS_F32;
    if (o->dtype && !strcmp(o->dtype, "bf16"))
        dt = AS_BF16;
    else if (o->dtype && !strcmp(o->dtype, "f16"))
        dt = AS_F16;
    else if (o->dtype && strcmp(o->dtype, "f32"))
        as_die("--dtype: expected f32, bf16 or f16, got \"%s\"", o->dtype);
    struct as_model *m = need_model(o);
    int vd = o->vd ? o->vd : (m->cfg.vocab < 32000 ? m->cfg.vocab : 32000);
    if (vd > m->cfg.vocab)
        as_die("--vd: %d exceeds the target's vocabulary (%d)", vd, m->cfg.vocab);
    struct as_draft *d = as_draft_new_random(m, vd, NULL, o->seed);
    if (!d || as_draft_save(d, o->out, dt) != 0) as_die_last();
    as_draft_free(d);
    as_model_free(m);
    return 0;
}

static const struct as_st_tensor *need(const struct as_ckpt *c, const char *name, const char *f) {
    const struct as_st_tensor *t = as_ckpt_find(c, name);
    if (!t) as_die("file %s: no tensor \"%s\"", f, name);
    return t;
}

static int cmd_forward(const struct opts *o) {
    if (!o->draft || !o->in || !o->out) as_die("forward: needs -d DRAFT_DIR -i IN -o OUT");
    struct as_model *m = need_model(o);
    struct as_draft *d = as_draft_load(o->draft, m);
    if (!d) as_die_last();
    struct as_ckpt *c = as_ckpt_open(o->in);
    if (!c) as_die_last();
    const struct as_st_tensor *tt = need(c, "tokens", o->in), *tf = need(c, "feats", o->in);
    int H = d->cfg.hidden, T = (int)tt->numel;
    if (tf->ndim != 2 || tf->shape[1] != 3 * d->target_hidden || tf->shape[0] > T ||
        tf->shape[0] < 1)
        as_die("file %s: feats must be [T0 <= %d, %d]", o->in, T, 3 * d->target_hidden);
    int T0 = (int)tf->shape[0];
    float *tokf = as_xmalloc((size_t)T * sizeof(float)), *feats = as_xmalloc(tf->numel * 4);
    if (as_ckpt_read_f32(c, tt, tokf) || as_ckpt_read_f32(c, tf, feats)) as_die_last();
    int *tok = as_xmalloc((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++)
        tok[t] = (int)tokf[t];
    struct as_draft_state *s = as_draft_state_new(d, T, T);
    if (!s) as_die_last();
    float *logits = as_xmalloc((size_t)T * d->vd * sizeof(float));
    float *hid = as_xmalloc((size_t)T * H * sizeof(float)), *prev = as_xmalloc((size_t)H * 4);
    if (as_draft_forward(d, s, tok, feats, NULL, T0)) as_die_last();
    memcpy(logits, s->logits, (size_t)T0 * d->vd * sizeof(float));
    memcpy(hid, s->hidden, (size_t)T0 * H * sizeof(float));
    for (int t = T0; t < T; t++) { /* chained steps, one at a time as drafting runs them */
        memcpy(prev, hid + (size_t)(t - 1) * H, (size_t)H * sizeof(float));
        if (as_draft_forward(d, s, tok + t, NULL, prev, 1)) as_die_last();
        memcpy(logits + (size_t)t * d->vd, s->logits, (size_t)d->vd * sizeof(float));
        memcpy(hid + (size_t)t * H, s->hidden, (size_t)H * sizeof(float));
    }
    struct as_st_writer *w = as_st_writer_new(o->out);
    int64_t sl[2] = {T, d->vd}, sh[2] = {T, H};
    if (!w || as_st_writer_add(w, "logits", AS_F32, 2, sl, logits, (uint64_t)T * d->vd * 4) ||
        as_st_writer_add(w, "hidden", AS_F32, 2, sh, hid, (uint64_t)T * H * 4) ||
        as_st_writer_finish(w))
        as_die_last();
    free(tokf), free(feats), free(tok), free(logits), free(hid), free(prev);
    as_draft_state_free(s);
    as_ckpt_close(c);
    as_draft_free(d);
    as_model_free(m);
    return 0;
}

/* The prompt's ids with the model's BOS rule; toks has room for steps+1. */
static int *encode(const struct as_tokenizer *tok, const char *text, int steps, int *n) {
    int32_t *ids;
    size_t np;
    int add_bos = as_tokenizer_add_bos(tok);
    if (as_tokenizer_encode(tok, text, strlen(text), add_bos, &ids, &np) != 0) as_die_last();
    if (np == 0) as_die("prompt encodes to no tokens (and the model adds no BOS)");
    if ((int)np > steps + 1) as_die("prompt is %zu tokens, more than --steps %d", np, steps);
    int *t = as_xmalloc(((size_t)steps + 1) * sizeof(int));
    for (size_t i = 0; i < np; i++)
        t[i] = ids[i];
    free(ids);
    *n = (int)np;
    return t;
}

static void setup(const struct opts *o, struct as_model **m, struct as_draft **d,
                  struct as_tokenizer **tok, struct as_spec_opts *so) {
    if (!o->draft) as_die("missing -d DRAFT_DIR");
    if (!o->k) as_die("missing -k K (1..%d)", AS_SPEC_MAX_K);
    *m = need_model(o);
    if (!(*d = as_draft_load(o->draft, *m))) as_die_last();
    if (!(*tok = as_tokenizer_open(o->model))) as_die_last();
    so->k = o->k, so->temp = o->temp, so->seed = o->seed;
    so->stop[0] = as_tokenizer_bos(*tok), so->stop[1] = as_tokenizer_eos(*tok);
}

static json_t *pos_array(const struct as_spec_stats *st, int k) {
    json_t *a = json_array();
    for (int j = 0; j < k; j++)
        json_array_append_new(
            a, json_real(st->drafts ? (double)st->accepted_pos[j] / st->drafts : 0.0));
    return a;
}

static int cmd_spec(const struct opts *o) {
    if (!o->prompts) as_die("spec: missing -P PROMPTS (one prompt per line)");
    struct as_model *m;
    struct as_draft *d;
    struct as_tokenizer *tok;
    struct as_spec_opts so;
    setup(o, &m, &d, &tok, &so);
    char *tmpl = o->chat ? as_chat_template_open(o->model) : NULL;
    if (o->chat && !tmpl) as_die_last();
    FILE *f = fopen(o->prompts, "r");
    if (!f) as_die("file %s: cannot open", o->prompts);
    int steps = o->steps ? o->steps : 64, n_same = 0, n_prompts = 0;
    struct as_spec_stats tot = {0}, ptot = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        int np;
        char *chat = tmpl ? as_chat_user_prompt(tmpl, line) : NULL;
        if (tmpl && !chat) as_die_last();
        int *a = encode(tok, chat ? chat : line, steps, &np),
            *b = as_xmalloc(((size_t)steps + 1) * sizeof(int));
        memcpy(b, a, (size_t)np * sizeof(int));
        struct as_spec_stats sp, st;
        int na = as_spec_plain(m, a, np, steps, &so, NULL, NULL, &sp);
        int nb = as_spec_generate(m, d, b, np, steps, &so, NULL, NULL, &st);
        if (na < 0 || nb < 0) as_die_last();
        int same = na == nb && !memcmp(a, b, (size_t)na * sizeof(int));
        n_same += same, n_prompts++;
        tot.drafts += st.drafts, tot.accepted += st.accepted, tot.emitted += st.emitted;
        tot.seconds += st.seconds, ptot.emitted += sp.emitted, ptot.seconds += sp.seconds;
        for (int j = 0; j < o->k; j++)
            tot.accepted_pos[j] += st.accepted_pos[j];
        json_t *r = json_pack("{s:i, s:b, s:i, s:i, s:f}", "prompt", n_prompts - 1, "identical",
                              same, "plain_tokens", na - np, "spec_tokens", nb - np, "al",
                              st.drafts ? 1.0 + (double)st.accepted / st.drafts : 0.0);
        char *js = json_dumps(r, JSON_COMPACT);
        printf("%s\n", js);
        free(js), json_decref(r), free(a), free(b), free(chat);
    }
    free(line);
    free(tmpl);
    fclose(f);
    double tps = tot.emitted / (tot.seconds > 0 ? tot.seconds : 1e-9);
    double ptps = ptot.emitted / (ptot.seconds > 0 ? ptot.seconds : 1e-9);
    json_t *r =
        json_pack("{s:s, s:i, s:f, s:i, s:i, s:f, s:o, s:i, s:i, s:f, s:f, s:f}", "summary", "spec",
                  "k", o->k, "temp", (double)o->temp, "prompts", n_prompts, "identical", n_same,
                  "al", tot.drafts ? 1.0 + (double)tot.accepted / tot.drafts : 0.0, "accept_pos",
                  pos_array(&tot, o->k), "drafts", (int)tot.drafts, "tokens", (int)tot.emitted,
                  "tok_s", tps, "plain_tok_s", ptps, "speedup", ptps > 0 ? tps / ptps : 0.0);
    char *js = json_dumps(r, JSON_COMPACT);
    printf("%s\n", js);
    free(js), json_decref(r);
    as_tokenizer_free(tok);
    as_draft_free(d);
    as_model_free(m);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_sample(const struct opts *o) {
    if (!o->prompt || !o->runs || !(o->temp > 0))
        as_die("sample: needs -p PROMPT, --runs N and --temp T > 0");
    struct as_model *m;
    struct as_draft *d;
    struct as_tokenizer *tok;
    struct as_spec_opts so;
    setup(o, &m, &d, &tok, &so);
    int steps0 = o->steps ? o->steps : 64, np;
    int *t0 = encode(tok, o->prompt, steps0, &np);
    int steps = np + o->at; /* generation ends right after token J */
    int *a = as_xmalloc(((size_t)steps + 2 + steps0) * sizeof(int));
    long *ha = as_xcalloc((size_t)m->cfg.vocab + 1, sizeof(long));
    long *hb = as_xcalloc((size_t)m->cfg.vocab + 1, sizeof(long));
    struct as_spec_stats st;
    long drafts = 0, acc = 0;
    for (int r = 0; r < o->runs; r++) {
        /* independent streams: plain takes odd seeds, speculative even ones */
        so.seed = o->seed * 1000003ull + 2ull * r + 1;
        memcpy(a, t0, (size_t)np * sizeof(int));
        int na = as_spec_plain(m, a, np, steps, &so, NULL, NULL, &st);
        if (na < 0) as_die_last();
        ha[na > np + o->at ? a[np + o->at] : m->cfg.vocab]++; /* vocab: stopped before J */
        so.seed++;
        memcpy(a, t0, (size_t)np * sizeof(int));
        int nb = as_spec_generate(m, d, a, np, steps, &so, NULL, NULL, &st);
        if (nb < 0) as_die_last();
        hb[nb > np + o->at ? a[np + o->at] : m->cfg.vocab]++;
        drafts += st.drafts, acc += st.accepted;
    }
    json_t *jp = json_object(), *js = json_object();
    char key[32];
    for (int v = 0; v <= m->cfg.vocab; v++) {
        snprintf(key, sizeof key, "%d", v < m->cfg.vocab ? v : -1);
        if (ha[v]) json_object_set_new(jp, key, json_integer(ha[v]));
        if (hb[v]) json_object_set_new(js, key, json_integer(hb[v]));
    }
    json_t *r = json_pack("{s:o, s:o, s:i, s:f}", "plain", jp, "spec", js, "runs", o->runs, "al",
                          drafts ? 1.0 + (double)acc / drafts : 0.0);
    char *out = json_dumps(r, JSON_COMPACT);
    printf("%s\n", out);
    free(out), json_decref(r), free(t0), free(a), free(ha), free(hb);
    as_tokenizer_free(tok);
    as_draft_free(d);
    as_model_free(m);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* The engine's rowwise mode (forward.h) against one-token decoding: greedy-decode STEPS tokens
 * one at a time keeping every step's logits, then feed the same tokens again k+1 at a time in
 * rowwise mode; every row's logits and the tapped states must be the same bits. */
static int cmd_rowwise(const struct opts *o) {
    if (!o->prompt || !o->k) as_die("rowwise: needs -p PROMPT and -k K");
    struct as_model *m = need_model(o);
    struct as_tokenizer *tok = as_tokenizer_open(o->model);
    if (!tok) as_die_last();
    int steps = o->steps ? o->steps : 64, np, V = m->cfg.vocab, H = m->cfg.hidden;
    int *t = encode(tok, o->prompt, steps, &np), n = steps + 1 - np, K = o->k + 1;
    float *ref = as_xmalloc((size_t)n * V * sizeof(float));
    float *acts = as_xmalloc((size_t)n * H * sizeof(float));
    struct as_run_state *s = as_state_new(m, np > K ? np : K, steps + 2, AS_STATE_KEEP_ACTS);
    if (!s || as_forward(m, s, t, np, AS_LOGITS_LAST, NULL)) as_die_last();
    int mid = m->cfg.n_layers / 2;
    size_t act = (size_t)s->max_T * H;
    for (int i = 0; i < n; i++) { /* row i: the logits after token np-1+i */
        memcpy(ref + (size_t)i * V, s->logits, (size_t)V * sizeof(float));
        int best = 0;
        for (int v = 1; v < V; v++)
            if (s->logits[v] > s->logits[best]) best = v;
        t[np + i] = best;
        if (i + 1 == n) break;
        if (as_forward(m, s, &t[np + i], 1, AS_LOGITS_LAST, NULL)) as_die_last();
        memcpy(acts + (size_t)(i + 1) * H, s->layer_acts + mid * act, (size_t)H * sizeof(float));
    }
    as_state_reset(s);
    if (as_forward(m, s, t, np, AS_LOGITS_LAST, NULL)) as_die_last();
    s->rowwise = 1;
    long rows = 0, same = 0, same_acts = 0;
    for (int i = 1; i < n; i += K) { /* tokens np-1+i.. in calls of up to K */
        int c = n - i < K ? n - i : K;
        if (as_forward(m, s, &t[np - 1 + i], c, AS_LOGITS_ALL, NULL)) as_die_last();
        for (int j = 0; j < c; j++, rows++) {
            same += !memcmp(s->logits + (size_t)j * V, ref + (size_t)(i + j) * V,
                            (size_t)V * sizeof(float));
            same_acts += !memcmp(s->layer_acts + mid * act + (size_t)j * H,
                                 acts + (size_t)(i + j) * H, (size_t)H * sizeof(float));
        }
    }
    printf("{\"rows\":%ld,\"logits_identical\":%ld,\"taps_identical\":%ld}\n", rows, same,
           same_acts);
    free(t), free(ref), free(acts);
    as_state_free(s);
    as_tokenizer_free(tok);
    as_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "gradcheck")) return cmd_gradcheck(argc - 1, argv + 1);
    if (!strcmp(cmd, "dump")) return cmd_dump(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return cmd_plot(argc - 1, argv + 1);
    struct opts o = {0};
    o.seed = 42;
    parse(argc - 1, argv + 1, &o);
    if (!strcmp(cmd, "init")) return cmd_init(&o);
    if (!strcmp(cmd, "forward")) return cmd_forward(&o);
    if (!strcmp(cmd, "spec")) return cmd_spec(&o);
    if (!strcmp(cmd, "sample")) return cmd_sample(&o);
    if (!strcmp(cmd, "rowwise")) return cmd_rowwise(&o);
    as_die("unknown command \"%s\" (init, forward, spec, sample, train, dump, gradcheck, rowwise)",
           cmd);
}
