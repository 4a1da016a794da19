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
#include "chat_template.h"
#include "draft_model.h"
#include "draft_spec.h"
#include "draft_train.h"
#include "dtype.h"
#include "safetensors.h"
#include "forward.h"
#include "model_open.h"
#include "text_data.h"
#include "tokenizer.h"
#include "train_ckpt.h"
#include "train_optim.h"

int cmd_train(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);
int cmd_dump(int argc, char **argv);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* CPU seconds of the process, all threads: the training cost on a machine shared with other jobs,
 * where wall time mostly measures the load */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
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

/* Window order: a fresh permutation of the n windows each epoch (Fisher-Yates on a splitmix64
 * stream seeded by the epoch), so a batch mixes windows from across the data instead of B
 * neighbours, and a resumed run reads exactly the windows an uninterrupted one would (the order
 * is a function of the step alone). order->perm caches the current epoch's permutation. */
struct window_order {
    int shuffle;
    long n, epoch, *perm;
};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static long window_at(struct window_order *o, long idx) {
    long e = idx / o->n, i = idx % o->n;
    if (!o->shuffle) return i;
    if (!o->perm || o->epoch != e) {
        if (!o->perm) o->perm = as_xmalloc((size_t)o->n * sizeof(long));
        uint64_t st = 0x5eed0000ull + (uint64_t)e;
        for (long j = 0; j < o->n; j++)
            o->perm[j] = j;
        for (long j = o->n - 1; j > 0; j--) {
            long r = (long)(splitmix64(&st) % (uint64_t)(j + 1)), t = o->perm[j];
            o->perm[j] = o->perm[r], o->perm[r] = t;
        }
        o->epoch = e;
    }
    return o->perm[i];
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

/* ---- offline mode: hidden-state dumps ------------------------------------------------------
 * One safetensors file (memory-mapped when read): tokens I32 [N], taps F32 [N, 3H] (the residual
 * stream entering the tapped layers low|mid|high), hidden F32 [N, H] (the final-normed last hidden
 * state), argmax I32 [N] (the target's full-vocabulary argmax), d2t I64 [Vd] and t2d BOOL [V]
 * (the draft vocabulary from the data), windows of `window` tokens; the target's shape in the
 * metadata. No logits: training recomputes the draft-vocabulary logits as lm_head[used] . hidden
 * (reference section 4). */
struct dump {
    struct as_ckpt *ck;
    const char *path;
    int T, N, H, Vd;
    const int32_t *tok, *amax;
    const float *taps, *hid;
    const int64_t *d2t;
};

static const struct as_st_tensor *dump_tensor(struct as_ckpt *ck, const char *path,
                                              const char *name, enum as_dtype dt, int ndim,
                                              const int64_t *shape) {
    const struct as_st_tensor *t = as_ckpt_expect(ck, name, ndim, shape);
    if (!t) as_die_last();
    if (t->dtype != dt)
        as_die("dump %s: tensor %s is %s, expected %s", path, name, as_dtype_name(t->dtype),
               as_dtype_name(dt));
    return t;
}

static int meta_int(const struct as_ckpt *ck, const char *key) {
    const char *js = ck->files[0]->metadata_json;
    json_t *o = js ? json_loads(js, 0, NULL) : NULL;
    json_t *v = o ? json_object_get(o, key) : NULL;
    int r = v && json_is_string(v) ? atoi(json_string_value(v)) : -1;
    json_decref(o);
    return r;
}

static void dump_open(struct dump *du, const char *path, const struct as_model *m) {
    du->path = path;
    if (!(du->ck = as_ckpt_open(path))) as_die_last();
    const struct as_model_config *c = &m->cfg;
    int H = meta_int(du->ck, "hidden_size"), V = meta_int(du->ck, "vocab_size"),
        L = meta_int(du->ck, "num_hidden_layers");
    if (H != c->hidden)
        as_die("dump %s: made with a target of hidden size %d, the target has %d", path, H,
               c->hidden);
    if (V != c->vocab)
        as_die("dump %s: made with a target vocabulary of %d, the target has %d", path, V,
               c->vocab);
    if (L != c->n_layers)
        as_die("dump %s: made with a target of %d layers, the target has %d", path, L, c->n_layers);
    const struct as_st_tensor *tt = as_ckpt_find(du->ck, "tokens");
    if (!tt) as_die("dump %s: no tensor \"tokens\"", path);
    du->N = (int)tt->numel, du->H = H, du->T = meta_int(du->ck, "window");
    if (du->T < 2 || du->N < du->T || du->N % du->T)
        as_die("dump %s: %d tokens do not make windows of %d", path, du->N, du->T);
    const struct as_st_tensor *td = as_ckpt_find(du->ck, "d2t");
    if (!td) as_die("dump %s: no tensor \"d2t\"", path);
    du->Vd = (int)td->numel;
    int64_t sN[1] = {du->N}, sT[2] = {du->N, 3 * H}, sH[2] = {du->N, H}, sV[1] = {du->Vd};
    du->tok = dump_tensor(du->ck, path, "tokens", AS_I32, 1, sN)->data;
    du->amax = dump_tensor(du->ck, path, "argmax", AS_I32, 1, sN)->data;
    du->taps = dump_tensor(du->ck, path, "taps", AS_F32, 2, sT)->data;
    du->hid = dump_tensor(du->ck, path, "hidden", AS_F32, 2, sH)->data;
    du->d2t = dump_tensor(du->ck, path, "d2t", AS_I64, 1, sV)->data;
    for (int i = 0; i < du->N; i++)
        if (du->tok[i] < 0 || du->tok[i] >= V || du->amax[i] < 0 || du->amax[i] >= V)
            as_die("dump %s: token %d: id out of the vocabulary", path, i);
    for (int i = 0; i < du->Vd; i++)
        if (i + du->d2t[i] < 0 || i + du->d2t[i] >= V)
            as_die("dump %s: d2t[%d] maps outside the vocabulary", path, i);
    /* refuse non-finite states up front, not as a NaN loss hours later */
    for (size_t i = 0; i < (size_t)du->N * 3 * H; i++)
        if (!isfinite(du->taps[i]))
            as_die("dump %s: non-finite value in taps at token %zu", path, i / (3 * (size_t)H));
    for (size_t i = 0; i < (size_t)du->N * H; i++)
        if (!isfinite(du->hid[i]))
            as_die("dump %s: non-finite value in hidden at token %zu", path, i / (size_t)H);
}

/* Window wi of the dump into slot b of w: tokens, taps, mask, and the draft-vocabulary logits
 * wd . hidden, wd = lm_head[used] ([Vd, H], gathered once): one sgemm per window. */
static void dump_window(const struct dump *du, const float *wd, const unsigned char *t2d, long wi,
                        int b, int *tok, struct window_data *w) {
    int T = du->T, H = du->H;
    size_t base = (size_t)wi * T, o = (size_t)b * T;
    for (int t = 0; t < T; t++) {
        tok[o + t] = du->tok[base + t];
        w->tmask[o + t] = t2d[du->amax[base + t]];
    }
    as_op_linear(w->tlogits + o * w->Vd, du->hid + base * H, wd, NULL, T, H, w->Vd);
    memcpy(w->feats + o * 3 * H, du->taps + base * 3 * H, (size_t)T * 3 * H * sizeof(float));
}

int cmd_dump(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *text = NULL;
    int vd = 0, T = 64;
    long bytes = 0;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                       {"output", required_argument, 0, 'o'},
                                       {"text", required_argument, 0, 'f'},
                                       {"vd", required_argument, 0, 1},
                                       {"window", required_argument, 0, 2},
                                       {"bytes", required_argument, 0, 3},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:f:", lo, NULL)) != -1) {
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
        case 1:
            vd = atoi(optarg);
            break;
        case 2:
            T = atoi(optarg);
            break;
        case 3:
            bytes = atol(optarg);
            break;
        default:
            as_die("dump: bad option (see as-draft --help)");
        }
    }
    if (!model || !out || !text) as_die("dump: needs -m TARGET -f TEXT -o DUMP");
    if (T < 2) as_die("--window: at least 2 tokens");
    struct as_model *m = as_model_open(model);
    if (!m) as_die_last();
    struct as_tokenizer *tk = as_tokenizer_open(model);
    if (!tk) as_die_last();
    int V = m->cfg.vocab, H = m->cfg.hidden, taps[3];
    if (!vd) vd = V < 32000 ? V : 32000;
    if (vd > V) as_die("--vd: %d exceeds the target's vocabulary (%d)", vd, V);
    as_draft_default_taps(m->cfg.n_layers, taps);
    char *buf;
    size_t len;
    if (as_text_read(text, (size_t)bytes, &buf, &len) != 0) as_die_last();
    int32_t *ids;
    size_t n_ids;
    if (as_tokenizer_encode(tk, buf, len, 0, &ids, &n_ids) != 0) as_die_last();
    free(buf);
    long n_win = (long)(n_ids / (size_t)T);
    if (n_win < 1) as_die("file %s: %zu tokens, fewer than one window of %d", text, n_ids, T);
    size_t N = (size_t)n_win * T;
    int32_t *used = vocab_from_tokens(ids, N, V, vd);
    float *tp = as_xmalloc(N * 3 * H * sizeof(float)), *hd = as_xmalloc(N * H * sizeof(float));
    int32_t *am = as_xmalloc(N * sizeof(int32_t));
    struct as_run_state *s = as_state_new(m, T, T, AS_STATE_KEEP_ACTS);
    if (!s) as_die_last();
    int *wt = as_xmalloc((size_t)T * sizeof(int));
    for (long wi = 0; wi < n_win; wi++) {
        for (int t = 0; t < T; t++)
            wt[t] = ids[(size_t)wi * T + t];
        as_state_reset(s);
        if (as_forward(m, s, wt, T, AS_LOGITS_ALL, NULL) != 0) as_die_last();
        as_spec_gather_taps(m, s, taps, T, tp + (size_t)wi * T * 3 * H);
        /* xb holds the final-normed rows after an AS_LOGITS_ALL call */
        memcpy(hd + (size_t)wi * T * H, s->xb, (size_t)T * H * sizeof(float));
        for (int t = 0; t < T; t++) {
            const float *z = s->logits + (size_t)t * V;
            int b = 0;
            for (int v = 1; v < V; v++)
                if (z[v] > z[b]) b = v;
            am[(size_t)wi * T + t] = b;
        }
        as_progress("dump: window %ld/%ld", wi + 1, n_win);
    }
    as_progress_done();
    int64_t *d2t = as_xmalloc((size_t)vd * sizeof(int64_t));
    uint8_t *t2d = as_xcalloc((size_t)V, 1);
    for (int j = 0; j < vd; j++)
        d2t[j] = used[j] - j, t2d[used[j]] = 1;
    struct as_st_writer *w = as_st_writer_new(out);
    if (!w) as_die_last();
    int64_t sN[1] = {(int64_t)N}, sT[2] = {(int64_t)N, 3 * H}, sH[2] = {(int64_t)N, H};
    int64_t sV[1] = {vd}, sVV[1] = {V};
    char v1[32], v2[32], v3[32], v4[32], v5[64];
    snprintf(v1, sizeof v1, "%d", H), snprintf(v2, sizeof v2, "%d", V);
    snprintf(v3, sizeof v3, "%d", m->cfg.n_layers), snprintf(v4, sizeof v4, "%d", T);
    snprintf(v5, sizeof v5, "[%d,%d,%d]", taps[0], taps[1], taps[2]);
    if (as_st_writer_add(w, "tokens", AS_I32, 1, sN, ids, N * 4) ||
        as_st_writer_add(w, "taps", AS_F32, 2, sT, tp, N * 3 * H * 4) ||
        as_st_writer_add(w, "hidden", AS_F32, 2, sH, hd, N * H * 4) ||
        as_st_writer_add(w, "argmax", AS_I32, 1, sN, am, N * 4) ||
        as_st_writer_add(w, "d2t", AS_I64, 1, sV, d2t, (uint64_t)vd * 8) ||
        as_st_writer_add(w, "t2d", AS_BOOL, 1, sVV, t2d, (uint64_t)V) ||
        as_st_writer_set_metadata(w, "hidden_size", v1) ||
        as_st_writer_set_metadata(w, "vocab_size", v2) ||
        as_st_writer_set_metadata(w, "num_hidden_layers", v3) ||
        as_st_writer_set_metadata(w, "window", v4) || as_st_writer_set_metadata(w, "taps", v5) ||
        as_st_writer_finish(w))
        as_die_last();
    printf("{\"tokens\":%zu,\"windows\":%ld,\"vd\":%d,\"bytes_per_token\":%d}\n", N, n_win, vd,
           (3 * H + H) * 4 + 8);
    free(ids), free(used), free(tp), free(hd), free(am), free(wt), free(d2t), free(t2d);
    as_state_free(s);
    as_tokenizer_free(tk);
    as_model_free(m);
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *text = NULL, *ckpt = NULL, *evalf = NULL;
    const char *dumpf = NULL;
    int init_head = 0, chat = 0,
        shuffle = 1; /* --chat: eval prompts are user messages (chat_template.h) */
    int vd = 0, T = 64, total = 200, B = 1, ttt = 7, warmup = -1, save_every = 50, eval_every = 50;
    int k = 3, eval_steps = 48;
    long bytes = 0;
    float lr = 1e-3f, clip = 0.5f;
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},    {"output", required_argument, 0, 'o'},
        {"text", required_argument, 0, 'f'},     {"ckpt", required_argument, 0, 'c'},
        {"eval", required_argument, 0, 'e'},     {"vd", required_argument, 0, 1},
        {"window", required_argument, 0, 2},     {"steps", required_argument, 0, 3},
        {"ttt", required_argument, 0, 4},        {"warmup", required_argument, 0, 5},
        {"save-every", required_argument, 0, 6}, {"eval-every", required_argument, 0, 7},
        {"lr", required_argument, 0, 8},         {"clip", required_argument, 0, 9},
        {"bytes", required_argument, 0, 10},     {"eval-steps", required_argument, 0, 11},
        {"dump", required_argument, 0, 12},      {"init-head", no_argument, 0, 13},
        {"batch", required_argument, 0, 14},     {"chat", no_argument, 0, 15},
        {"no-shuffle", no_argument, 0, 16},      {0, 0, 0, 0}};
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
        case 12:
            dumpf = optarg;
            break;
        case 13:
            init_head = 1;
            break;
        case 14:
            B = atoi(optarg);
            break;
        case 15:
            chat = 1;
            break;
        case 16:
            shuffle = 0;
            break;
        default:
            as_die("train: bad option (see as-draft --help)");
        }
    }
    if (!model || !out || !(text || dumpf) || !evalf)
        as_die("train: needs -m TARGET -o DRAFT -f TEXT (or --dump DUMP) -e PROMPTS");
    if (T < 2 || total < 1 || ttt < 1 || ttt > AS_TTT_MAX || k < 1 || k > AS_SPEC_MAX_K || B < 1 ||
        B > 1024)
        as_die("train: --window >= 2, --steps >= 1, --ttt 1..%d, -k 1..%d, --batch 1..1024",
               AS_TTT_MAX, AS_SPEC_MAX_K);
    if (warmup < 0) warmup = total / 20;
    struct as_model *m = as_model_open(model);
    if (!m) as_die_last();
    struct as_tokenizer *tok = as_tokenizer_open(model);
    if (!tok) as_die_last();
    int V = m->cfg.vocab;
    if (!vd) vd = V < 32000 ? V : 32000;
    if (vd > V) as_die("--vd: %d exceeds the target's vocabulary (%d)", vd, V);
    /* data: the text tokenized once, windows of T at stride T; or a dump (offline mode) */
    struct dump du = {0};
    int32_t *ids = NULL, *used;
    long n_win;
    if (dumpf) {
        dump_open(&du, dumpf, m);
        T = du.T, vd = du.Vd, n_win = du.N / du.T;
        used = as_xmalloc((size_t)vd * sizeof(int32_t));
        for (int j = 0; j < vd; j++)
            used[j] = (int32_t)(j + du.d2t[j]);
    } else {
        char *buf;
        size_t len, n_ids;
        if (as_text_read(text, (size_t)bytes, &buf, &len) != 0) as_die_last();
        if (as_tokenizer_encode(tok, buf, len, 0, &ids, &n_ids) != 0) as_die_last();
        free(buf);
        n_win = (long)(n_ids / (size_t)T);
        if (n_win < 1) as_die("file %s: %zu tokens, fewer than one window of %d", text, n_ids, T);
        used = vocab_from_tokens(ids, (size_t)n_win * T, V, vd);
    }
    struct as_draft *d = as_draft_new_random(m, vd, used, 1234);
    if (init_head) { /* start from the target's head: lm_head rows of the draft vocabulary and
                      * the final norm, so step 0 begins at the target's readout of h2 */
        int H = m->cfg.hidden;
        for (int j = 0; j < vd; j++)
            memcpy(d->lm_head + (size_t)j * H, m->lm_head + (size_t)used[j] * H,
                   (size_t)H * sizeof(float));
        memcpy(d->norm, m->norm, (size_t)H * sizeof(float));
    }
    unsigned char *t2d = as_xcalloc((size_t)V, 1);
    for (int j = 0; j < vd; j++)
        t2d[used[j]] = 1;
    /* held-out prompts for AL: one per line */
    char *tmpl = chat ? as_chat_template_open(model) : NULL;
    if (chat && !tmpl) as_die_last();
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
        char *cp = tmpl ? as_chat_user_prompt(tmpl, line) : NULL;
        if (tmpl && !cp) as_die_last();
        if (as_tokenizer_encode(tok, cp ? cp : line, cp ? strlen(cp) : (size_t)ll,
                                as_tokenizer_add_bos(tok), &prompts[n_prompts], &n) != 0)
            as_die_last();
        free(cp);
        if (n == 0 || (int)n > eval_steps) as_die("file %s: an empty or too long prompt", evalf);
        np[n_prompts++] = (int)n;
    }
    free(line);
    free(tmpl);
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
    size_t BT = (size_t)B * T;
    struct window_data w = {T, vd, as_xmalloc(BT * 3 * m->cfg.hidden * 4), as_xmalloc(BT * vd * 4),
                            as_xmalloc(BT)};
    int *wt = as_xmalloc(BT * sizeof(int));
    float *wd = NULL; /* offline: lm_head rows of the draft vocabulary */
    if (dumpf) {
        int H = m->cfg.hidden;
        wd = as_xmalloc((size_t)vd * H * sizeof(float));
        for (int j = 0; j < vd; j++)
            memcpy(wd + (size_t)j * H, m->lm_head + (size_t)used[j] * H, (size_t)H * 4);
    }
    /* where a step's time goes (this run's share; printed with the progress) */
    double t_data = 0, t_ttt = 0, t_opt = 0, t_eval = 0, tc, tlast = 0;
    long slast = step;
    double cpu0 = cpu_now();
    double t0 = now();
    if (step == 0) { /* the untrained draft's AL, the baseline */
        double al = eval_al(m, d, prompts, np, n_prompts, k, eval_steps, stop0, stop1);
        printf("{\"step\":0,\"al\":%.4f}\n", al);
    }
    t_eval = now() - t0;
    struct window_order order = {shuffle, n_win, -1, NULL};
    while (step < total) {
        tc = now();
        for (int b = 0; b < B; b++) { /* step s reads entries s B .. s B + B - 1 of the order */
            long wi = window_at(&order, step * B + b);
            if (dumpf) {
                dump_window(&du, wd, t2d, wi, b, wt, &w);
            } else {
                struct window_data wb = {T, vd, w.feats + (size_t)b * T * 3 * m->cfg.hidden,
                                         w.tlogits + (size_t)b * T * vd, w.tmask + (size_t)b * T};
                for (int t = 0; t < T; t++)
                    wt[b * T + t] = ids[(size_t)wi * T + t];
                target_window(m, s, d, wt + b * T, t2d, &wb);
            }
        }
        t_data += now() - tc, tc = now();
        as_params_zero_grad(&ps);
        struct as_ttt_result r;
        if (as_draft_ttt_batch(d, wt, w.feats, w.tlogits, w.tmask, T, B, ttt, g, &r) != 0)
            as_die_last();
        t_ttt += now() - tc, tc = now();
        if (as_params_nonfinite_grad(&ps) >= 0)
            as_die("train: step %ld: non-finite gradient", step);
        double gn = as_params_clip(&ps, clip);
        float lrs = as_sched_lr(&sch, lr, step);
        as_adamw_step(opt, &ps, lrs);
        t_opt += now() - tc;
        step++;
        double wall = wall0 + now() - t0;
        if (step % 10 == 0 || step == total) {
            double tt = t_data + t_ttt + t_opt;
            printf(
                "{\"step\":%ld,\"loss\":%.5f,\"acc0\":%.4f,\"acc1\":%.4f,\"lr\":%.3g,"
                "\"gnorm\":%.4g,\"tokens\":%ld,\"wall_s\":%.1f,\"train_tok_s\":%.1f,"
                "\"t_data\":%.1f,\"t_ttt\":%.1f,\"t_opt\":%.1f,\"t_eval\":%.1f,\"cpu_s\":%.1f}\n",
                step, r.loss, r.acc_step[0], ttt > 1 ? r.acc_step[1] : 0.0, (double)lrs, gn,
                step * (long)BT, wall,
                tt > tlast ? (double)BT * (step - slast) / (tt - tlast) : 0.0, t_data, t_ttt, t_opt,
                t_eval, cpu_now() - cpu0);
            tlast = tt, slast = step;
        }
        if (step % eval_every == 0 || step == total) {
            tc = now();
            double al = eval_al(m, d, prompts, np, n_prompts, k, eval_steps, stop0, stop1);
            t_eval += now() - tc;
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
    printf("{\"done\":%ld,\"best_al\":%.4f,\"tokens\":%ld}\n", step, best_al, step * (long)BT);
    for (int i = 0; i < n_prompts; i++)
        free(prompts[i]);
    free(wt), free(w.feats), free(w.tlogits), free(w.tmask), free(ids), free(used), free(t2d);
    free(wd), free(order.perm);
    as_ckpt_close(du.ck);
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
    if (argc < 5) as_die("gradcheck: as-draft gradcheck TARGET DRAFT T STEPS [WINDOWS]");
    struct as_model *m = as_model_open(argv[1]);
    if (!m) as_die_last();
    struct as_draft *d = as_draft_load(argv[2], m);
    if (!d) as_die_last();
    int T = atoi(argv[3]), S = atoi(argv[4]), B = argc > 5 ? atoi(argv[5]) : 1;
    int V = m->cfg.vocab, vd = d->vd, H = m->cfg.hidden;
    if (B < 1) as_die("gradcheck: WINDOWS >= 1");
    uint64_t st = 99;
    int *tok = as_xmalloc((size_t)B * T * sizeof(int));
    for (int t = 0; t < B * T; t++)
        tok[t] = (int)((st = st * 6364136223846793005ull + 1442695040888963407ull) >> 33) % V;
    struct as_run_state *s = as_state_new(m, T, T, AS_STATE_KEEP_ACTS);
    unsigned char *t2d = as_xcalloc((size_t)V, 1);
    for (int j = 0; j < vd; j++)
        t2d[as_draft_to_target(d, j)] = 1;
    struct window_data w = {T, vd, as_xmalloc((size_t)B * T * 3 * H * 4),
                            as_xmalloc((size_t)B * T * vd * 4), as_xmalloc((size_t)B * T)};
    for (int b = 0; b < B; b++) {
        struct window_data wb = {T, vd, w.feats + (size_t)b * T * 3 * H,
                                 w.tlogits + (size_t)b * T * vd, w.tmask + (size_t)b * T};
        target_window(m, s, d, tok + b * T, t2d, &wb);
    }
    for (int t = 0; t < B * T; t++)
        w.tmask[t] = 1; /* every position counts (a random draft vocabulary rarely holds them) */
    /* the batched loss must be the mean of the windows' own losses (no attention across
     * windows, the mean over all positions) */
    double mean = 0;
    for (int b = 0; b < B; b++) {
        struct as_ttt_result r1;
        as_draft_ttt(d, tok + b * T, w.feats + (size_t)b * T * 3 * H,
                     w.tlogits + (size_t)b * T * vd, w.tmask + (size_t)b * T, T, S, NULL, &r1);
        mean += r1.loss / B;
    }
    struct as_draft_grads *g = as_draft_grads_new(d);
    struct as_params ps;
    as_params_init(&ps);
    as_draft_params(d, g, &ps);
    struct as_ttt_result r;
    as_draft_ttt_batch(d, tok, w.feats, w.tlogits, w.tmask, T, B, S, g, &r);
    double worst = 0;
    for (int i = 0; i < ps.n; i++) {
        struct as_param *p = &ps.p[i];
        for (int e = 0; e < 4; e++) {
            size_t j = (size_t)((st = st * 6364136223846793005ull + 1) >> 33) % p->n;
            float keep = p->w[j], h = 1e-2f * (fabsf(keep) > 0.1f ? fabsf(keep) : 0.1f);
            struct as_ttt_result a, b;
            p->w[j] = keep + h;
            as_draft_ttt_batch(d, tok, w.feats, w.tlogits, w.tmask, T, B, S, NULL, &a);
            p->w[j] = keep - h;
            as_draft_ttt_batch(d, tok, w.feats, w.tlogits, w.tmask, T, B, S, NULL, &b);
            p->w[j] = keep;
            double fd = (a.loss - b.loss) / (2.0 * h), an = p->g[j];
            /* 1e-3: the float32 central difference of a loss near 15 with h ~ 1e-3 has ~5e-4 of
             * rounding noise, so smaller gradients are compared on that floor */
            double err = fabs(fd - an) / (fabs(fd) + fabs(an) + 1e-3);
            if (err > worst) worst = err;
            printf("{\"param\":\"%s\",\"i\":%zu,\"analytic\":%.6g,\"numeric\":%.6g,\"rel\":%.3g}\n",
                   p->name, j, an, fd, err);
        }
    }
    printf("{\"worst_rel\":%.4g,\"loss\":%.8g,\"window_mean_loss\":%.8g}\n", worst, r.loss, mean);
    as_params_free(&ps);
    as_draft_grads_free(g);
    free(tok), free(t2d), free(w.feats), free(w.tlogits), free(w.tmask);
    as_state_free(s);
    as_draft_free(d);
    as_model_free(m);
    return 0;
}
