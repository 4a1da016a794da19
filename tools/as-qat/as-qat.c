/* as-qat: quantization-aware training and distillation of a checkpoint (docs/qat.md).
 *
 * The student's decoder linears train through a fake quantizer (fakequant.h: seq2, seq3, lsq3,
 * lsq4, absmean, twn, tequila, sherry, or none for a full-precision control) with the training
 * engine (train_model.h); the loss is w_ce * CE(next token) + w_kd * KD(teacher logits,
 * computed on the fly by the engine's forward pass). Windows of --seq+1 tokens are drawn from
 * the tokenized text with a splitmix64 generator. Every --save-every steps, the whole training
 * state (parameters, AdamW moments, step, generator state, configuration) is written atomically
 * to --state; --resume continues from it, bit for bit as if the run had not stopped (same
 * --threads). Outputs: -o DIR, a fakequant checkpoint (the linears hold W_eff), and --codes
 * FILE, the integer codes and scales as a tensor stream (qstream.h records). */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "as_error.h"
#include "atomic_file.h"
#include "cli_args.h"
#include "dtype.h"
#include "fakequant_model.h"
#include "forward.h"
#include "logits_cache.h"
#include "model.h"
#include "model_loaders.h"
#include "model_open.h"
#include "model_save.h"
#include "qstream.h"
#include "stream.h"
#include "text_data.h"
#include "tokenizer.h"
#include "train_ckpt.h"
#include "train_loss.h"
#include "train_model.h"
#include "train_optim.h"
#include "train_plot.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: as-qat -m STUDENT -d TEXT --steps N [options]\n"
            "Quantization-aware training with distillation (docs/qat.md).\n"
            "  -m, --model DIR       student checkpoint (trained in fp32)\n"
            "  -t, --teacher DIR     full-precision teacher for KD (default: none)\n"
            "  -d, --data FILE       training text (tokenized with the student's tokenizer)\n"
            "  -o, --out DIR         fakequant checkpoint written at the end\n"
            "      --codes FILE      integer codes and scales as a tensor stream\n"
            "      --init-codes FILE start from a PTQ result: each linear's latent weights are\n"
            "                        the dequantized codes of FILE (as-gptq's stream), and a\n"
            "                        learnable per-row scale starts at the codes' scale\n"
            "      --teacher-cache FILE  teacher logits of the run's windows: read from FILE,\n"
            "                        or computed with --teacher and written there first\n"
            "      --scheme S        seq2 seq3 lsq3 lsq4 absmean twn tequila sherry none\n"
            "                        (default seq2)\n"
            "      --group G         quantizer group (default: the scheme's; 0 per row,\n"
            "                        -1 per tensor)\n"
            "      --lambda X        tequila dead-zone lambda (default 1e-3)\n"
            "      --arenas X        sherry Arenas peak lambda (default 0: off)\n"
            "      --steps N         optimizer steps (required)\n"
            "      --seq T           tokens per window (default 256)\n"
            "      --batch B         windows per optimizer step (default 8): their gradients\n"
            "                        accumulate one window at a time (memory of one window)\n"
            "      --lr X            peak learning rate (default 1e-3)\n"
            "      --sched S         constant, linear, cosine, wsd (default cosine)\n"
            "      --warmup X        warmup steps, or a fraction of --steps if < 1 (default 0.05)\n"
            "      --decay X         wsd: decay steps, or a fraction if < 1 (default 0.2)\n"
            "      --min-lr X        floor as a fraction of --lr (default 0)\n"
            "      --wd X            AdamW weight decay (default 0)\n"
            "      --clip X          gradient clipping by global norm (default 1; 0 off)\n"
            "      --w-ce X          cross-entropy weight (default 1)\n"
            "      --w-kd X          KD weight (default 1 with --teacher, else 0)\n"
            "      --kd K            kl, rkl, cakld (default kl)\n"
            "      --seed N          data sampling seed (default 1)\n"
            "      --state FILE      training state, written every --save-every steps\n"
            "      --save-every N    (default 100)\n"
            "      --resume          continue from --state if it exists\n"
            "      --stop-after N    stop (saving the state) after N steps of this run\n"
            "      --export          with --resume: write -o and --codes from the state's\n"
            "                        current step, without training (a long run's checkpoint)\n"
            "      --log FILE        JSON lines, one per step\n"
            "      --svg FILE        loss / KD / lr curves\n"
            "      --threads N       OpenBLAS threads (results are reproducible per count)\n"
            "      --speed           print a JSON summary: tokens/s, matmul GFLOP/s against the\n"
            "                        sgemm peak measured in the same run, peak RSS (with\n"
            "                        more than one step the first is a warm-up, not timed)\n"
            "  -h, --help            this help\n");
}

struct opts {
    const char *model, *teacher, *data, *out, *codes, *state, *log, *svg, *init_codes, *tcache;
    int scheme, group, steps, seq, batch, sched, kd, save_every, resume, stop_after, peak,
        export_now;
    double lambda, arenas, lr, warmup, decay, min_lr, wd, clip, w_ce, w_kd;
    uint64_t seed;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The options that define the run (a resumed run must match them all). */
static char *config_string(const struct opts *o) {
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    fprintf(f,
            "scheme=%s group=%d lambda=%.9g arenas=%.9g steps=%d seq=%d batch=%d "
            "lr=%.9g sched=%s warmup=%.9g decay=%.9g min_lr=%.9g wd=%.9g clip=%.9g w_ce=%.9g "
            "w_kd=%.9g kd=%s seed=%" PRIu64 " teacher=%s",
            as_fq_info(o->scheme)->name, o->group, o->lambda, o->arenas, o->steps, o->seq, o->batch,
            o->lr, as_sched_name(o->sched), o->warmup, o->decay, o->min_lr, o->wd, o->clip, o->w_ce,
            o->w_kd, as_kd_name(o->kd), o->seed, o->teacher || o->tcache ? "yes" : "no");
    fclose(f);
    return s;
}

/* The first "key=value" of a that differs in b, for the error message. */
static void first_difference(const char *a, const char *b, char *out, size_t n) {
    char *x = as_xstrdup(a), *y = as_xstrdup(b), *sa, *sb;
    char *ta = strtok_r(x, " ", &sa), *tb = strtok_r(y, " ", &sb);
    snprintf(out, n, "?");
    for (; ta && tb; ta = strtok_r(NULL, " ", &sa), tb = strtok_r(NULL, " ", &sb))
        if (strcmp(ta, tb)) {
            snprintf(out, n, "%s, this run %s", tb, ta);
            break;
        }
    free(x), free(y);
}

struct logrow {
    double loss, kd, lr;
};

/* Loss and KD share one scale, lr its own; this run's steps (a resumed run starts at its
 * checkpoint's step). */
static void write_svg(const char *path, const struct logrow *r, int64_t from, int64_t n) {
    if (n <= from) return;
    int m = (int)(n - from);
    double *x = as_xmalloc((size_t)m * 4 * sizeof(double)), *l = x + m, *k = l + m, *lr = k + m;
    double mx = 0;
    for (int i = 0; i < m; i++) {
        const struct logrow *ri = &r[from + i];
        x[i] = (double)(from + i + 1), l[i] = ri->loss, k[i] = ri->kd, lr[i] = ri->lr;
        mx = fmax(mx, fmax(ri->loss, ri->kd));
    }
    char title[96];
    snprintf(title, sizeof title, "as-qat: steps %" PRId64 "..%" PRId64, from + 1, n);
    const struct as_plot_series s[3] = {{"loss", "blue", x, l, m, mx, 0},
                                        {"KD", "red", x, k, m, mx, 0},
                                        {"lr", "gray", x, lr, m, 0, 0}};
    if (as_plot_svg(path, title, s, 3) != 0) as_die_last();
    free(x);
}

/* Copy the tokenizer files of the student into the output directory. */
static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    char *buf;
    size_t n;
    if (access(a, R_OK)) return;
    if (as_text_read(a, 0, &buf, &n)) as_die_last();
    FILE *f = fopen(b, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f)) as_die("%s: cannot write", b);
    free(buf);
}

static void write_codes(const char *path, const struct as_model *m, struct as_fq_model *fm) {
    struct as_atomic_file af;
    if (as_atomic_open(&af, path)) as_die_last();
    struct as_stream_writer *w = as_stream_writer_fd(fileno(af.fp), path);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            struct as_fq *q = &fm->q[l][k];
            int N = q->rows, K = q->cols;
            int8_t *codes = as_xmalloc((size_t)N * K);
            float *sc = as_xmalloc((size_t)N * K * sizeof(float)), *bias = as_xcalloc(N, 4);
            int G = as_fq_codes(q, m->layers[l].w[k], codes, sc, bias);
            /* as_qlinear: W = scale * (q - zero) (+ minv); codes shifted to 0..2^bits-1 */
            int seq2 = q->scheme == AS_FQ_SEQ2;
            int lsq = q->scheme == AS_FQ_LSQ3 || q->scheme == AS_FQ_LSQ4;
            int bits = lsq ? (q->scheme == AS_FQ_LSQ3 ? 3 : 4) : 2;
            int off = seq2 ? 3 : lsq ? 1 << (bits - 1) : 1;
            struct as_qlinear ql = {
                .N = N, .K = K, .bits = bits, .group_size = G > 1 ? q->gsize : 0, .sym = 1};
            ql.q = as_xmalloc((size_t)N * K);
            ql.scale = as_xmalloc((size_t)N * G * sizeof(float));
            ql.zero = as_xmalloc((size_t)N * G * sizeof(int32_t));
            ql.g_idx = as_xmalloc((size_t)K * sizeof(int32_t));
            for (int i = 0; i < K; i++)
                ql.g_idx[i] = G > 1 ? i / q->gsize : 0;
            for (size_t i = 0; i < (size_t)N * K; i++) /* seq2: (c+3)/2 in 0..3 */
                ql.q[i] = (uint8_t)(seq2 ? (codes[i] + 3) / 2 : codes[i] + off);
            for (int i = 0; i < N * G; i++) {
                /* seq2: W = (a/4) c = (a/2) (q - 1.5): a float minimum -0.75 a */
                ql.scale[i] = seq2 ? 2 * sc[i] : sc[i];
                ql.zero[i] = seq2 ? 2 : off;
            }
            if (seq2) {
                ql.minv = as_xmalloc((size_t)N * G * sizeof(float));
                for (int i = 0; i < N * G; i++)
                    ql.minv[i] = -3 * sc[i];
            }
            char prefix[128];
            as_linear_prefix(l, k, prefix, sizeof prefix);
            json_t *attrs = json_pack("{s:s}", "qat_scheme", as_fq_info(q->scheme)->name);
            if (as_qlinear_write(w, prefix, l, &ql, attrs)) as_die_last();
            json_decref(attrs);
            if (q->scheme == AS_FQ_TEQUILA) { /* the merged dead-zone bias c_j */
                char name[160];
                int64_t shape[1] = {N};
                snprintf(name, sizeof name, "%s.bias", prefix);
                if (as_stream_write_tensor(w, name, "bias", l, AS_F32, 1, shape, NULL, bias))
                    as_die_last();
            }
            free(ql.q), free(ql.scale), free(ql.zero), free(ql.g_idx), free(ql.minv);
            free(codes), free(sc), free(bias);
        }
    if (as_stream_write_end(w)) as_die_last();
    as_stream_writer_free(w);
    if (as_atomic_commit(&af)) as_die_last();
}

/* sgemm GFLOP/s on a [T, hidden] x [hidden, intermediate] product (the shape of gate/up), with
 * the run's thread count, repeated for at least 0.3 s: the peak a training step is measured
 * against. */
static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* Also *per_cpu: GFLOP per CPU-second of this process (robust to a shared machine's load). */
static double sgemm_peak(int T, int K, int N, double *per_cpu) {
    float *a = as_xcalloc((size_t)T * K, 4), *b = as_xcalloc((size_t)K * N, 4);
    float *c = as_xmalloc((size_t)T * N * 4);
    for (size_t i = 0; i < (size_t)T * K; i++)
        a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        b[i] = (float)(i % 5) * 0.1f;
    double t0 = now_s(), c0 = cpu_now(), el;
    long reps = 0;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        reps++;
    } while ((el = now_s() - t0) < 0.3);
    *per_cpu = 2.0 * T * K * N * reps / (cpu_now() - c0) / 1e9;
    free(a), free(b), free(c);
    return 2.0 * T * K * N * reps / el / 1e9;
}

/* Matmul FLOPs of one window of T tokens: the student's layers run forward twice (forward, and
 * the per-layer recompute) and backward (twice the forward: dX and dW), its lm_head forward and
 * backward, the teacher forward once. Attention counts the full T x T products it computes. */
static double step_flops(const struct as_model *m, int T, int teacher) {
    const struct as_model_config *c = &m->cfg;
    double lin = 0;
    for (int k = 0; k < AS_LIN_COUNT; k++) {
        int r, cc;
        as_model_linear_shape(m, k, &r, &cc);
        lin += (double)r * cc;
    }
    double layer = (lin + 2.0 * T * c->n_heads * c->head_dim) * c->n_layers * T; /* MACs */
    double head = (double)c->vocab * c->hidden * T;
    return 2 * (4 * layer + 3 * head + (teacher ? layer + head : 0));
}

/* --init-codes: every decoder linear of the student takes W_hat, the dequantized codes of the
 * PTQ stream, as its latent weights (the codes' grid is the starting point; all 7 linears of
 * every layer must be there). Returns the collector for init_scales. */
static struct as_qcollect *init_from_codes(struct as_model *m, const char *path) {
    /* static: reachable when as_die exits (LeakSanitizer) */
    static struct as_stream_reader *r;
    static struct as_qcollect *qc;
    r = as_stream_open(path);
    if (!r) as_die_last();
    qc = as_qcollect_new();
    const struct as_rec *rec;
    int rc;
    while ((rc = as_stream_next(r, &rec)) == 1)
        if (as_qcollect_offer(qc, r, rec) < 0) as_die_last();
    if (rc < 0) as_die_last();
    as_stream_close(r);
    if (as_qcollect_check_complete(qc)) as_die_last();
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            char prefix[128];
            as_linear_prefix(l, k, prefix, sizeof prefix);
            const struct as_qlinear *ql = as_qcollect_find(qc, prefix);
            int rows, cols;
            as_model_linear_shape(m, k, &rows, &cols);
            if (!ql) as_die("--init-codes %s: no quantized layer %s", path, prefix);
            if (ql->N != rows || ql->K != cols)
                as_die("--init-codes %s: %s is [%d, %d], the student's is [%d, %d]", path, prefix,
                       ql->N, ql->K, rows, cols);
            as_qlinear_dequant(ql, m->layers[l].w[k]);
        }
    return qc;
}

/* The learnable per-row scale (seq2, seq3, lsq3, lsq4) starts where the codes' grid is, so that
 * the step-0 fake-quantized weights are W_hat: seq2 W_hat = scale (q - 1.5) = (alpha/4) c gives
 * alpha = 2 scale; seq3 W_hat = scale t = (2 alpha/3) t gives alpha = 1.5 scale; lsq W_hat =
 * scale (q - 2^(b-1)) gives alpha = scale. Codes with groups (one scale per group, not per row)
 * keep as_fq_init's alpha = max|W_hat row| (the grid then differs from the codes'). A notice says
 * how far the step-0 W_eff is from W_hat. */
static void init_scales(const struct as_model *m, struct as_fq_model *fm,
                        const struct as_qcollect *qc, const char *path) {
    double worst = 0;
    int per_row = 0, n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            struct as_fq *q = &fm->q[l][k];
            char prefix[128];
            as_linear_prefix(l, k, prefix, sizeof prefix);
            const struct as_qlinear *ql = as_qcollect_find(qc, prefix);
            if (q->alpha && as_qlinear_groups(ql) == 1) {
                double f = q->scheme == AS_FQ_SEQ2 ? 2 : q->scheme == AS_FQ_SEQ3 ? 1.5 : 1;
                for (int i = 0; i < q->rows; i++)
                    q->alpha[i] = (float)(f * ql->scale[i]);
                per_row++;
            }
            const float *W = m->layers[l].w[k];
            size_t numel = (size_t)q->rows * q->cols;
            float *we = as_xmalloc(numel * sizeof(float)), *b = as_xmalloc(q->rows * 4);
            int hb;
            as_fq_forward(q, W, we, b, &hb);
            double mx = 0, d = 0;
            for (size_t i = 0; i < numel; i++)
                mx = fmax(mx, fabs(W[i])), d = fmax(d, fabs((double)we[i] - W[i]));
            worst = fmax(worst, mx > 0 ? d / mx : d);
            free(we), free(b);
            n++;
        }
    fprintf(stderr,
            "%s: --init-codes %s: %d linears, %d with the codes' per-row scale; step-0 "
            "fake-quantized weights differ from the codes' by %.3g of the largest weight at "
            "most\n",
            as_progname(), path, n, per_row, worst);
}

/* --teacher-cache: the teacher's logits for every window of the run (window w = step * batch + b,
 * drawn from --seed as the training loop draws them), in logits_cache.h's file with ctx = seq+1
 * and first = 0 (seq rows a window) keyed by the hash of all windows' tokens. Written first when
 * the file does not exist (needs --teacher), then read through mmap. */
static struct as_logits_cache *teacher_cache(const struct opts *o, const struct as_model *teacher,
                                             struct as_run_state *ts, const int32_t *toks,
                                             size_t n_tok, int vocab) {
    int T = o->seq;
    uint64_t nwin = (uint64_t)o->steps * o->batch, rng = o->seed;
    if (nwin > UINT32_MAX) as_die("--teacher-cache: %" PRIu64 " windows, too many", nwin);
    static int32_t *ids; /* static: reachable when as_die exits (LeakSanitizer) */
    ids = as_xmalloc(nwin * (T + 1) * sizeof(int32_t));
    for (uint64_t w = 0; w < nwin; w++) {
        uint64_t start = splitmix64(&rng) % (n_tok - (size_t)T);
        memcpy(ids + w * (T + 1), toks + start, (T + 1) * sizeof(int32_t));
    }
    struct as_logits_key key = {(uint32_t)vocab, (uint32_t)T + 1, 0, (uint32_t)nwin,
                                as_logits_ids_hash(ids, nwin * (T + 1))};
    if (access(o->tcache, F_OK) != 0) {
        if (!teacher)
            as_die("--teacher-cache %s: no such file, and no --teacher to compute it", o->tcache);
        struct as_logits_cache *wc = as_logits_cache_create(o->tcache, &key);
        if (!wc) as_die_last();
        for (uint64_t w = 0; w < nwin; w++) {
            as_state_reset(ts);
            if (as_forward(teacher, ts, ids + w * (T + 1), T, AS_LOGITS_ALL, NULL) ||
                as_logits_cache_put(wc, ts->logits)) {
                as_logits_cache_abort(wc);
                as_die_last();
            }
        }
        if (as_logits_cache_commit(wc)) as_die_last();
    }
    free(ids);
    ids = NULL;
    struct as_logits_cache *c = as_logits_cache_open(o->tcache, &key);
    if (!c) {
        as_fail_prefix("--teacher-cache: ");
        as_die_last();
    }
    return c;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    struct opts o = {.scheme = AS_FQ_SEQ2,
                     .group = INT32_MIN,
                     .seq = 256,
                     .batch = 8,
                     .sched = AS_SCHED_COSINE,
                     .kd = AS_KD_KL,
                     .save_every = 100,
                     .lambda = 1e-3,
                     .lr = 1e-3,
                     .warmup = 0.05,
                     .decay = 0.2,
                     .clip = 1,
                     .w_ce = 1,
                     .w_kd = -1,
                     .seed = 1};
    int threads = 0;
    static const struct option lo[] = {{"model", 1, 0, 'm'},     {"teacher", 1, 0, 't'},
                                       {"data", 1, 0, 'd'},      {"out", 1, 0, 'o'},
                                       {"codes", 1, 0, 1},       {"scheme", 1, 0, 2},
                                       {"group", 1, 0, 3},       {"lambda", 1, 0, 4},
                                       {"arenas", 1, 0, 5},      {"steps", 1, 0, 6},
                                       {"seq", 1, 0, 7},         {"batch", 1, 0, 8},
                                       {"lr", 1, 0, 10},         {"sched", 1, 0, 11},
                                       {"warmup", 1, 0, 12},     {"decay", 1, 0, 13},
                                       {"min-lr", 1, 0, 14},     {"wd", 1, 0, 15},
                                       {"clip", 1, 0, 16},       {"w-ce", 1, 0, 17},
                                       {"w-kd", 1, 0, 18},       {"kd", 1, 0, 19},
                                       {"seed", 1, 0, 20},       {"state", 1, 0, 21},
                                       {"save-every", 1, 0, 22}, {"resume", 0, 0, 23},
                                       {"stop-after", 1, 0, 24}, {"export", 0, 0, 31},
                                       {"log", 1, 0, 25},        {"svg", 1, 0, 26},
                                       {"threads", 1, 0, 27},    {"speed", 0, 0, 28},
                                       {"init-codes", 1, 0, 29}, {"teacher-cache", 1, 0, 30},
                                       {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:t:d:o:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.model = optarg;
            break;
        case 't':
            o.teacher = optarg;
            break;
        case 'd':
            o.data = optarg;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 1:
            o.codes = optarg;
            break;
        case 2:
            if ((o.scheme = as_fq_parse(optarg)) < 0)
                as_die("--scheme: unknown scheme '%s'", optarg);
            break;
        case 3:
            o.group = as_arg_int(optarg);
            break;
        case 4:
            o.lambda = as_arg_double(optarg);
            break;
        case 5:
            o.arenas = as_arg_double(optarg);
            break;
        case 6:
            o.steps = as_arg_int(optarg);
            break;
        case 7:
            o.seq = as_arg_int(optarg);
            break;
        case 8:
            o.batch = as_arg_int(optarg);
            break;
        case 10:
            o.lr = as_arg_double(optarg);
            break;
        case 11:
            if ((o.sched = as_sched_parse(optarg)) < 0)
                as_die("--sched: unknown schedule '%s'", optarg);
            break;
        case 12:
            o.warmup = as_arg_double(optarg);
            break;
        case 13:
            o.decay = as_arg_double(optarg);
            break;
        case 14:
            o.min_lr = as_arg_double(optarg);
            break;
        case 15:
            o.wd = as_arg_double(optarg);
            break;
        case 16:
            o.clip = as_arg_double(optarg);
            break;
        case 17:
            o.w_ce = as_arg_double(optarg);
            break;
        case 18:
            o.w_kd = as_arg_double(optarg);
            break;
        case 19:
            if ((o.kd = as_kd_parse(optarg)) < 1)
                as_die("--kd: expected kl, rkl or cakld, got '%s'", optarg);
            break;
        case 20:
            o.seed = as_arg_u64(optarg);
            break;
        case 21:
            o.state = optarg;
            break;
        case 22:
            o.save_every = as_arg_int(optarg);
            break;
        case 23:
            o.resume = 1;
            break;
        case 24:
            o.stop_after = as_arg_int(optarg);
            break;
        case 25:
            o.log = optarg;
            break;
        case 26:
            o.svg = optarg;
            break;
        case 28:
            o.peak = 1;
            break;
        case 27:
            threads = as_arg_int(optarg);
            break;
        case 31:
            o.export_now = 1;
            break;
        case 29:
            o.init_codes = optarg;
            break;
        case 30:
            o.tcache = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!o.model || !o.data || o.steps <= 0) {
        usage(stderr);
        return 2;
    }
    if (o.seq < 2 || o.batch < 1)
        as_die("--seq %d --batch %d: need seq >= 2 and batch >= 1", o.seq, o.batch);
    if (o.resume && !o.state) as_die("--resume needs --state FILE");
    if (o.export_now && (!o.resume || access(o.state, F_OK)))
        as_die("--export needs --resume and an existing --state");
    if (o.w_kd < 0) o.w_kd = o.teacher || o.tcache ? 1 : 0;
    if (o.w_kd > 0 && !o.teacher && !o.tcache)
        as_die("--w-kd %g needs a --teacher or --teacher-cache", o.w_kd);
    if (threads > 0) openblas_set_num_threads(threads);
    as_register_model_loaders();

    /* static: what main allocates stays reachable when as_die exits (LeakSanitizer) */
    static struct as_model *m, *teacher;
    static struct as_model_grads *g;
    static struct as_adamw *opt;
    static struct as_train_state *st;
    static struct as_run_state *ts;
    static struct as_fq_model fm;
    static struct as_params ps;
    static struct logrow *rows;
    static char *cfgstr;
    static float *tlog;
    static int *win;
    static int32_t *toks;
    m = as_model_open(o.model);
    if (!m) as_die_last();
    if (o.teacher) {
        teacher = as_model_open(o.teacher);
        if (!teacher) as_die_last();
        if (teacher->cfg.vocab != m->cfg.vocab)
            as_die("teacher %s: vocabulary size %d differs from the student's %d (%s)", o.teacher,
                   teacher->cfg.vocab, m->cfg.vocab, o.model);
    }
    /* data: the whole text, tokenized once (no BOS: windows are slices of running text) */
    char tok_path[4200], *text;
    size_t text_len, n_tok;
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o.model);
    struct as_tokenizer *tok = as_tokenizer_load(tok_path);
    if (!tok) as_die_last();
    if (as_text_read(o.data, 0, &text, &text_len)) as_die_last();
    if (as_tokenizer_encode(tok, text, text_len, 0, &toks, &n_tok)) as_die_last();
    free(text);
    as_tokenizer_free(tok);
    int T = o.seq;
    if (n_tok < (size_t)T + 1)
        as_die("%s: %zu tokens, shorter than one window of %d (--seq %d, plus the next token)",
               o.data, n_tok, T + 1, T);
    for (size_t i = 0; i < n_tok; i++)
        if (toks[i] >= m->cfg.vocab)
            as_die("%s: token id %d out of the student's vocabulary (%d)", o.data, toks[i],
                   m->cfg.vocab);

    /* the trainable set: every weight of the student, plus the quantizers' scales */
    static struct as_qcollect *qc;
    if (o.init_codes) qc = init_from_codes(m, o.init_codes);
    if (as_fq_model_init(&fm, m, o.scheme, o.group)) as_die_last();
    if (qc) {
        init_scales(m, &fm, qc, o.init_codes);
        as_qcollect_free(qc);
        qc = NULL;
    }
    if (o.scheme == AS_FQ_TEQUILA) as_fq_model_set_lambda(&fm, (float)o.lambda);
    struct as_weight_map map = as_fq_model_map(&fm);
    g = as_model_grads_new(m);
    as_params_init(&ps);
    as_model_params(m, g, &ps);
    as_fq_model_params(&fm, &ps);
    struct as_adamw_cfg acfg = {0.9f, 0.999f, 1e-8f, (float)o.wd};
    opt = as_adamw_new(&ps, &acfg);
    int64_t warm = o.warmup < 1 ? (int64_t)(o.warmup * o.steps) : (int64_t)o.warmup;
    int64_t dec = o.decay < 1 ? (int64_t)(o.decay * o.steps) : (int64_t)o.decay;
    struct as_sched sched = {o.sched, o.steps, warm, dec, (float)o.min_lr};
    cfgstr = config_string(&o);

    int64_t step = 0;
    uint64_t rng = o.seed;
    if (o.resume && access(o.state, F_OK) == 0) {
        json_t *meta = as_train_ckpt_load(o.state, &ps, opt);
        if (!meta) as_die_last();
        const char *sc = json_string_value(json_object_get(meta, "config"));
        if (!sc || strcmp(sc, cfgstr)) {
            char diff[512];
            first_difference(cfgstr, sc ? sc : "", diff, sizeof diff);
            json_decref(meta); /* LeakSanitizer checks at exit too */
            as_die("--resume %s: written by another configuration (%s)", o.state, diff);
        }
        step = strtoll(json_string_value(json_object_get(meta, "step")), NULL, 10);
        rng = strtoull(json_string_value(json_object_get(meta, "rng")), NULL, 10);
        json_decref(meta);
    }

    st = as_train_state_new(m, T);
    if (!st) as_die_last();
    as_train_set_map(st, &map);
    ts = teacher ? as_state_new(teacher, T, T, 0) : NULL;
    if (teacher && !ts) as_die_last();
    tlog = teacher ? as_xmalloc((size_t)T * m->cfg.vocab * sizeof(float)) : NULL;
    static struct as_logits_cache *tc;
    if (o.tcache) tc = teacher_cache(&o, teacher, ts, toks, n_tok, m->cfg.vocab);
    win = as_xmalloc(((size_t)T + 1) * sizeof(int));
    struct as_loss_cfg lcfg = {(float)o.w_ce, (float)o.w_kd, teacher || tc ? o.kd : AS_KD_NONE};
    FILE *logf = NULL;
    if (o.log && !(logf = fopen(o.log, step > 0 ? "a" : "w")))
        as_die("%s: cannot open: %s", o.log, strerror(errno));
    rows = as_xcalloc((size_t)o.steps, sizeof *rows);
    double pc0 = 0, peak0 = o.peak ? sgemm_peak(T, m->cfg.hidden, m->cfg.intermediate, &pc0) : 0;
    double cpu0 = cpu_now();
    int64_t start_step = step, last_saved = step;
    int have_state = step > 0; /* resumed from one */
    double t0 = now_s();
    long tokens_run = 0;
    /* --speed times the steps after the first: the first touches every gradient and AdamW
     * moment page (2 GB of page zeroing for a 135M model), a start-up cost, not a step's */
    double sp_t0 = t0, sp_c0 = cpu0;
    int64_t sp_step0 = start_step;
    long sp_tok0 = 0;

    while (step < o.steps && !o.export_now) {
        as_params_zero_grad(&ps);
        float lr = as_sched_lr(&sched, (float)o.lr, step);
        if (o.scheme == AS_FQ_SHERRY)
            as_fq_model_set_lambda(&fm, as_arenas_lambda(step, o.steps, (float)o.arenas));
        struct as_loss_sums sums = {0};
        float scale = 1.0f / ((float)o.batch * T);
        for (int b = 0; b < o.batch; b++) {
            uint64_t start = splitmix64(&rng) % (n_tok - (size_t)T);
            for (int t = 0; t <= T; t++)
                win[t] = toks[start + t];
            if (as_train_forward(m, st, win, T)) as_die_last();
            const float *tl = tlog;
            if (tc) /* window number step * batch + b of the run, as the cache was written */
                tl = as_logits_cache_window(tc, (uint32_t)(step * o.batch + b));
            else if (teacher) {
                as_state_reset(ts);
                if (as_forward(teacher, ts, win, T, AS_LOGITS_ALL, NULL)) as_die_last();
                memcpy(tlog, ts->logits, (size_t)T * m->cfg.vocab * sizeof(float));
            }
            float *lg = as_train_logits(st);
            as_loss_rows(lg, tl, win + 1, T, m->cfg.vocab, &lcfg, scale, lg, &sums);
            as_train_backward(m, st, g, lg);
        }
        double loss = sums.loss / sums.rows, kd = sums.kd / sums.rows, ce = sums.ce / sums.rows;
        /* stop before the update: the state on disk stays the last good one */
        char good[4400] = "no state saved";
        if (have_state)
            snprintf(good, sizeof good, "last good state: %s, step %" PRId64, o.state, last_saved);
        if (!isfinite(loss)) as_die("step %" PRId64 ": loss is %g (%s)", step + 1, loss, good);
        int bad = as_params_nonfinite_grad(&ps);
        if (bad >= 0)
            as_die("step %" PRId64 ": non-finite gradient in tensor %s (%s)", step + 1,
                   ps.p[bad].name, good);
        double gnorm = as_params_clip(&ps, o.clip);
        as_adamw_step(opt, &ps, lr);
        step++;
        tokens_run += (long)o.batch * T;
        if (o.peak && step == start_step + 1 && step < o.steps)
            sp_t0 = now_s(), sp_c0 = cpu_now(), sp_step0 = step, sp_tok0 = tokens_run;
        double el = now_s() - t0, tps = tokens_run / el;
        double eta = (o.steps - step) * (el / (double)(step - start_step));
        rows[step - 1] = (struct logrow){loss, kd, lr};
        as_progress("step %" PRId64 "/%d loss %.4f kd %.4f lr %.3g %.0f tok/s ETA %.0fs", step,
                    o.steps, loss, kd, lr, tps, eta);
        if (logf) {
            fprintf(logf,
                    "{\"step\":%" PRId64 ",\"loss\":%.9g,\"ce\":%.9g,\"kd\":%.9g,\"lr\":%.9g,"
                    "\"grad_norm\":%.9g,\"tokens\":%" PRId64
                    ",\"tok_per_s\":%.1f,\"eta_s\":%.1f}\n",
                    step, loss, ce, kd, lr, gnorm, step * (int64_t)o.batch * T, tps, eta);
            fflush(logf);
        }
        int stop = o.stop_after > 0 && step - start_step >= o.stop_after;
        if (o.state && (step % o.save_every == 0 || step == o.steps || stop)) {
            char sstep[32], srng[32];
            snprintf(sstep, sizeof sstep, "%" PRId64, step);
            snprintf(srng, sizeof srng, "%" PRIu64, rng);
            const char *keys[] = {"config", "step", "rng"}, *vals[] = {cfgstr, sstep, srng};
            if (as_train_ckpt_save(o.state, &ps, opt, keys, vals, 3)) as_die_last();
            last_saved = step, have_state = 1;
        }
        if (stop) break;
    }
    as_progress_done();
    if (logf) fclose(logf);
    if (o.peak) {
        /* a summary on stdout: speed against the sgemm peak of this machine and thread count */
        double el = now_s() - sp_t0, fl = step_flops(m, T, teacher != NULL) * o.batch;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double cpu = cpu_now() - sp_c0, pc1;
        /* the better of a measurement before and after training (a shared machine's load
         * moves both; the peak is what the machine gives at best) */
        double peak = fmax(peak0, sgemm_peak(T, m->cfg.hidden, m->cfg.intermediate, &pc1));
        int64_t n = step - sp_step0;
        long tok = tokens_run - sp_tok0;
        double total = fl * (double)n / 1e9, pcpu = fmax(pc0, pc1);
        printf("{\"steps\":%" PRId64 ",\"warmup_steps\":%" PRId64
               ",\"tokens\":%ld,\"seq\":%d,\"seconds\":%.3f,\"tok_per_s\":%.1f,"
               "\"gflop_s\":%.2f,\"sgemm_peak_gflop_s\":%.2f,\"fraction_of_peak\":%.3f,"
               "\"cpu_seconds\":%.3f,\"gflop_per_cpu_s\":%.2f,\"sgemm_gflop_per_cpu_s\":%.2f,"
               "\"fraction_of_peak_cpu\":%.3f,\"peak_rss_mib\":%.1f}\n",
               n, sp_step0 - start_step, tok, T, el, tok / el, total / el, peak, total / el / peak,
               cpu, total / cpu, pcpu, total / cpu / pcpu, ru.ru_maxrss / 1024.0);
    }
    if (o.svg) write_svg(o.svg, rows, start_step, step);
    int final = step == o.steps || o.export_now;
    if (final && o.codes) write_codes(o.codes, m, &fm);
    if (final && o.out) {
        /* the fakequant checkpoint: each linear holds W_eff (tequila's bias is in --codes) */
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int k = 0; k < AS_LIN_COUNT; k++) {
                int r, cc, hb;
                as_model_linear_shape(m, k, &r, &cc);
                float *we = as_xmalloc((size_t)r * cc * sizeof(float)), *b = as_xmalloc(r * 4);
                if (o.scheme == AS_FQ_SHERRY) fm.q[l][k].lambda = 0; /* Arenas ends at 0 */
                as_fq_forward(&fm.q[l][k], m->layers[l].w[k], we, b, &hb);
                memcpy(m->layers[l].w[k], we, (size_t)r * cc * sizeof(float));
                free(we), free(b);
            }
        char *tmp = as_atomic_dir_begin(o.out);
        if (!tmp) as_die_last();
        if (as_model_save_hf(m, tmp, AS_F32)) {
            as_atomic_dir_abort(tmp);
            as_die_last();
        }
        copy_file(o.model, tmp, "tokenizer.json");
        copy_file(o.model, tmp, "tokenizer_config.json");
        if (as_atomic_dir_commit(tmp, o.out)) as_die_last();
        free(tmp);
    }
    free(rows), free(win), free(tlog), free(toks), free(cfgstr);
    as_state_free(ts);
    as_logits_cache_close(tc);
    as_train_state_free(st);
    as_adamw_free(opt);
    as_params_free(&ps);
    as_model_grads_free(m, g);
    as_fq_model_free(&fm);
    as_model_free(m);
    as_model_free(teacher);
    return 0;
}
