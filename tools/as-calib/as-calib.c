/* as-calib: run a model over calibration text and emit, per decoder layer and per group of
 * linears sharing an input, the statistics quantizers need (qstream.h): the Hessian
 * H = 2/N Σ x xᵀ, mean |x| and absmax per channel (and optionally a sample of input rows),
 * followed by the group's weights by reference into the checkpoint. Memory depends on the model
 * and the selected layers, never on the number of calibration tokens.
 *
 * True-sequential mode (--sequential CMD) closes the loop GPTQ needs: as-calib runs the quantizer
 * CMD (e.g. "as-gptq -b 4 -g 32") as a coprocess, and for each layer and each group in the order
 * qkv -> o -> gate/up -> down it measures the group's inputs through the already-quantized
 * earlier groups, sends statistics and weights to CMD, reads the quantized layer back, puts the
 * dequantized weights into its model and forwards the quantized records to stdout.
 * With --gptaq it also runs the full-precision model side by side and sends GPTAQ's
 * dXXᵀ = (X_fp - X_q)ᵀ X_q (same 2/N scale as H). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "act_stats.h"
#include "as_error.h"
#include "cli_args.h"
#include "forward.h"
#include "model.h"
#include "qstream.h"
#include "stream.h"
#include "text_data.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: as-calib -m MODEL -d TEXT [options] > STREAM\n"
        "Calibration statistics of every decoder linear's input, as a tensor stream.\n"
        "  -m, --model DIR       Hugging Face checkpoint (dense)\n"
        "  -d, --data PATH       calibration text file, or a directory of text files\n"
        "  -n, --samples N       calibration windows (default 128)\n"
        "  -l, --seqlen N        tokens per window (BOS first if the model adds one; default 512)\n"
        "      --seed S          window selection seed (default 0)\n"
        "      --layers A[-B]    only these decoder layers (default all)\n"
        "      --keep-inputs N   also emit a sample of N input rows per group\n"
        "      --keep-seqs S     also emit the residual stream entering each layer for the\n"
        "                        first S windows (role layer-input, F32 [S*seqlen, hidden];\n"
        "                        for as-awq)\n"
        "      --kv-stats        also emit per layer the absmax of the keys (after RoPE) and\n"
        "                        values (role kv-absmax, F32 [2]; as-lepto --kv-cache fp8)\n"
        "      --no-weights      do not emit the weights by reference\n"
        "      --arena DIR       write payloads to an arena file in DIR and send references\n"
        "      --sequential CMD  true-sequential quantization with quantizer coprocess CMD;\n"
        "                        stdout then carries CMD's quantized layers\n"
        "      --gptaq           (with --sequential) also send GPTAQ's dXXᵀ records\n"
        "      --threads N       OpenBLAS threads\n"
        "  -h, --help\n");
}

extern void openblas_set_num_threads(int);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const enum as_linear group_members[AS_GROUP_COUNT][4] = {
    {AS_LIN_Q, AS_LIN_K, AS_LIN_V, AS_LIN_COUNT},
    {AS_LIN_O, AS_LIN_COUNT},
    {AS_LIN_GATE, AS_LIN_UP, AS_LIN_COUNT},
    {AS_LIN_DOWN, AS_LIN_COUNT}};

struct calib {
    struct as_model *m, *fp; /* fp: full-precision twin for GPTAQ */
    struct as_ckpt *ck;
    struct as_ckpt_refs *refs;
    const char *model_dir;
    int layer_lo, layer_hi; /* inclusive range being measured */
    int only_group;         /* -1: all groups; else the one group measured (sequential) */
    int keep;
    uint64_t seed;
    struct as_act_stats *st; /* [(layer - lo) * AS_GROUP_COUNT + group] */
    int hook_error;
    /* GPTAQ: the fp input of the measured group for the current sample, and dXXᵀ sums */
    float *x_fp;
    double *dxx;
    float *dxx_chunk;
    int capture_fp;
    /* --keep-seqs: the layer inputs of the first keep_seqs windows, [layer - lo][S*seqlen*D] */
    int keep_seqs;
    float *seq_inputs;
    /* --kv-stats: absmax of the keys (after RoPE, as cached) and values, [layer - lo][2] */
    float *kv_absmax;
    uint64_t kv_tokens;
};

/* forward.h on_kv: the new cache rows of one layer (read only here). */
static void on_kv(void *ctx, int layer, float *k, float *v, int T, int kv_dim) {
    struct calib *c = ctx;
    if (layer < c->layer_lo || layer > c->layer_hi) return;
    float *a = c->kv_absmax + (size_t)(layer - c->layer_lo) * 2;
    size_t n = (size_t)T * kv_dim;
    for (size_t i = 0; i < n; i++) { /* NaN propagates (fmaxf would drop it): as-lepto rejects it */
        float ak = fabsf(k[i]), av = fabsf(v[i]);
        a[0] = ak > a[0] || isnan(ak) ? ak : a[0];
        a[1] = av > a[1] || isnan(av) ? av : a[1];
    }
    if (layer == c->layer_lo) c->kv_tokens += (uint64_t)T;
}

/* --kv-stats: "model.layers.N.self_attn.kv_absmax", F32 [2] = {absmax K, absmax V}. */
static int emit_kv(struct calib *c, struct as_stream_writer *w, int layer) {
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.self_attn.kv_absmax", layer);
    int64_t shape[1] = {2};
    struct as_rec rec;
    as_rec_init(&rec, name, "kv-absmax", layer, AS_F32, 1, shape);
    rec.attrs = json_pack("{s:I}", "tokens", (json_int_t)c->kv_tokens);
    int rc = as_stream_write(w, &rec, c->kv_absmax + (size_t)(layer - c->layer_lo) * 2);
    json_decref(rec.attrs);
    return rc;
}

static struct as_act_stats *stats_for(struct calib *c, int layer, enum as_linear_group g) {
    if (layer < c->layer_lo || layer > c->layer_hi) return NULL;
    if (c->only_group >= 0 && (int)g != c->only_group) return NULL;
    return &c->st[(layer - c->layer_lo) * AS_GROUP_COUNT + g];
}

static void on_input(void *ctx, int layer, enum as_linear_group g, const float *x, int T, int d) {
    struct calib *c = ctx;
    struct as_act_stats *s = stats_for(c, layer, g);
    if (!s || c->hook_error) return;
    if (c->capture_fp) { /* the full-precision twin's pass: keep X_fp for this sample */
        memcpy(c->x_fp, x, sizeof(float) * T * d);
        return;
    }
    if (!s->dim && as_act_stats_init(s, d, c->keep, c->seed + layer * 8 + g)) {
        c->hook_error = 1;
        return;
    }
    if (as_act_stats_add(s, x, T)) {
        as_fail_prefix("layer %d %s input: ", layer, as_group_names[g]);
        c->hook_error = 1;
        return;
    }
    if (c->dxx) { /* dXXᵀ += (X_fp - X_q)ᵀ X_q, X_fp minus X_q computed in place */
        for (size_t i = 0; i < (size_t)T * d; i++)
            c->x_fp[i] -= x[i];
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, T, 1.0f, c->x_fp, d, x, d, 0.0f,
                    c->dxx_chunk, d);
        for (size_t i = 0; i < (size_t)d * d; i++)
            c->dxx[i] += c->dxx_chunk[i];
    }
}

/* Runs every calibration window through the model (and the fp twin when GPTAQ needs it). */
static int run_samples(struct calib *c, const int32_t *tokens, int samples, int seqlen,
                       struct as_run_state *s, struct as_run_state *sfp) {
    struct as_hooks hk = {.on_linear_input = on_input, .ctx = c};
    int *win = as_xmalloc(sizeof(int) * seqlen);
    for (int i = 0; i < samples; i++) {
        for (int j = 0; j < seqlen; j++)
            win[j] = tokens[(size_t)i * seqlen + j];
        if (sfp) {
            c->capture_fp = 1;
            as_state_reset(sfp);
            if (as_forward(c->fp, sfp, win, seqlen, AS_LOGITS_NONE, &hk)) goto fail;
            c->capture_fp = 0;
        }
        as_state_reset(s);
        if (as_forward(c->m, s, win, seqlen, AS_LOGITS_NONE, &hk) || c->hook_error) goto fail;
        if (c->seq_inputs && i < c->keep_seqs) { /* s->layer_acts: [n_layers+1][max_T*D] */
            size_t D = (size_t)c->m->cfg.hidden, per = (size_t)c->keep_seqs * seqlen * D;
            for (int l = c->layer_lo; l <= c->layer_hi; l++)
                memcpy(c->seq_inputs + (l - c->layer_lo) * per + (size_t)i * seqlen * D,
                       s->layer_acts + (size_t)l * s->max_T * D, sizeof(float) * seqlen * D);
        }
        as_progress("sample %d/%d", i + 1, samples);
    }
    free(win);
    return 0;
fail:
    free(win);
    return -1;
}

static int write_payload(struct as_stream_writer *w, struct as_arena *arena, struct as_rec *rec,
                         const void *data) {
    if (arena && as_arena_put(arena, rec, data)) return -1;
    return as_stream_write(w, rec, data);
}

/* Statistics records of one group, then (optionally) its weights by reference. */
static int emit_group(struct calib *c, struct as_stream_writer *w, struct as_arena *arena,
                      int layer, enum as_linear_group g, int with_weights, const double *dxx) {
    struct as_act_stats *s = stats_for(c, layer, g);
    if (!s || !s->dim)
        return as_fail("layer %d %s: no activations were seen", layer, as_group_names[g]);
    int d = s->dim;
    json_t *attrs = json_object(), *targets = json_array();
    char buf[1024], name[1100];
    for (int i = 0; group_members[g][i] != AS_LIN_COUNT; i++) {
        as_linear_prefix(layer, group_members[g][i], buf, sizeof buf);
        json_array_append_new(targets, json_string(buf));
    }
    json_object_set_new(attrs, "targets", targets);
    json_object_set_new(attrs, "tokens", json_integer((json_int_t)s->tokens));
    json_object_set_new(attrs, "group", json_string(as_group_names[g]));
    json_object_set_new(attrs, "tensor_absmax", json_real(s->tensor_absmax));
    float *H = as_xmalloc(sizeof(float) * d * d);
    int rc = 0;
    struct as_rec rec;
    int64_t shape2[2] = {d, d}, shape1[1] = {d};
    as_act_stats_hessian(s, H);
    snprintf(name, sizeof name, "model.layers.%d.%s.hessian", layer, as_group_names[g]);
    as_rec_init(&rec, name, "hessian", layer, AS_F32, 2, shape2);
    rec.attrs = attrs;
    rc |= write_payload(w, arena, &rec, H);
    if (dxx && !rc) {
        double norm = 2.0 / (double)s->tokens;
        for (size_t i = 0; i < (size_t)d * d; i++)
            H[i] = (float)(dxx[i] * norm);
        snprintf(name, sizeof name, "model.layers.%d.%s.gptaq_dxx", layer, as_group_names[g]);
        as_rec_init(&rec, name, "gptaq-dxx", layer, AS_F32, 2, shape2);
        rec.attrs = attrs;
        rc |= write_payload(w, arena, &rec, H);
    }
    if (!rc) {
        as_act_stats_mean_abs(s, H);
        snprintf(name, sizeof name, "model.layers.%d.%s.act_mean_abs", layer, as_group_names[g]);
        as_rec_init(&rec, name, "act-mean-abs", layer, AS_F32, 1, shape1);
        rec.attrs = attrs;
        rc |= write_payload(w, arena, &rec, H);
    }
    if (!rc) {
        snprintf(name, sizeof name, "model.layers.%d.%s.act_absmax", layer, as_group_names[g]);
        as_rec_init(&rec, name, "act-absmax", layer, AS_F32, 1, shape1);
        rec.attrs = attrs;
        rc |= write_payload(w, arena, &rec, s->absmax);
    }
    if (!rc && s->keep) {
        int64_t shape_k[2] = {s->kept, d};
        snprintf(name, sizeof name, "model.layers.%d.%s.act_sample", layer, as_group_names[g]);
        as_rec_init(&rec, name, "act-sample", layer, AS_F32, 2, shape_k);
        rec.attrs = attrs;
        rc |= write_payload(w, arena, &rec, s->kept_rows);
    }
    free(H);
    json_decref(attrs);
    for (int i = 0; with_weights && !rc && group_members[g][i] != AS_LIN_COUNT; i++) {
        as_linear_tensor_name(layer, group_members[g][i], name, sizeof name);
        int idx = as_ckpt_refs_find(c->refs, name);
        if (idx < 0) return as_fail("%s: tensor %s missing", c->model_dir, name);
        as_ckpt_refs_rec(c->refs, idx, &rec);
        rc |= as_stream_write(w, &rec, NULL);
    }
    return rc ? -1 : 0;
}

/* --keep-seqs: "model.layers.N.input", the residual stream entering layer N (kept windows). */
static int emit_layer_input(struct calib *c, struct as_stream_writer *w, struct as_arena *arena,
                            int layer, int seqlen) {
    size_t D = (size_t)c->m->cfg.hidden, per = (size_t)c->keep_seqs * seqlen * D;
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.input", layer);
    int64_t shape[2] = {(int64_t)c->keep_seqs * seqlen, (int64_t)D};
    struct as_rec rec;
    as_rec_init(&rec, name, "layer-input", layer, AS_F32, 2, shape);
    rec.attrs = json_pack("{s:i, s:i}", "seqs", c->keep_seqs, "seqlen", seqlen);
    int rc = write_payload(w, arena, &rec, c->seq_inputs + (layer - c->layer_lo) * per);
    json_decref(rec.attrs);
    return rc;
}

/* X [samples, seqlen, hidden] := layer l applied to X (the model's current weights). */
static void advance_layer(const struct as_model *m, struct as_run_state *s, int l, float *X,
                          int samples, int seqlen) {
    size_t win = (size_t)seqlen * m->cfg.hidden;
    for (int i = 0; i < samples; i++) {
        as_state_reset(s);
        memcpy(s->x, X + i * win, sizeof(float) * win);
        as_forward_layer(m, s, l, seqlen, NULL);
        memcpy(X + i * win, s->x, sizeof(float) * win);
    }
}

/* Runs layer l on every window's carried input with the statistics hook (GPTAQ: the
 * full-precision twin first, on its own carried input, to capture X_fp of the same window). */
static int measure_layer(struct calib *c, int l, const float *X, const float *Xfp, int samples,
                         int seqlen, struct as_run_state *s, struct as_run_state *sfp) {
    struct as_hooks hk = {.on_linear_input = on_input, .ctx = c};
    size_t win = (size_t)seqlen * c->m->cfg.hidden;
    for (int i = 0; i < samples; i++) {
        if (Xfp) {
            c->capture_fp = 1;
            as_state_reset(sfp);
            memcpy(sfp->x, Xfp + i * win, sizeof(float) * win);
            as_forward_layer(c->fp, sfp, l, seqlen, &hk);
            c->capture_fp = 0;
        }
        as_state_reset(s);
        memcpy(s->x, X + i * win, sizeof(float) * win);
        as_forward_layer(c->m, s, l, seqlen, &hk);
        if (c->hook_error) return -1;
    }
    return 0;
}

struct coproc {
    pid_t pid;
    struct as_stream_writer *to;
    struct as_stream_reader *from;
    int to_fd, from_fd;
};

static int coproc_start(struct coproc *cp, const char *cmd) {
    int in[2], out[2];
    if (pipe(in) || pipe(out)) return as_fail("--sequential: pipe: %s", strerror(errno));
    cp->pid = fork();
    if (cp->pid < 0) return as_fail("--sequential: fork: %s", strerror(errno));
    if (cp->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    cp->to_fd = in[1];
    cp->from_fd = out[0];
    cp->to = as_stream_writer_fd(cp->to_fd, "quantizer input");
    cp->from = as_stream_open_fd(cp->from_fd, "quantizer output");
    return cp->to && cp->from ? 0 : -1;
}

static int coproc_finish(struct coproc *cp, const char *cmd) {
    int rc = 0;
    if (cp->to) {
        if (as_stream_write_end(cp->to)) rc = -1;
        as_stream_writer_free(cp->to);
        cp->to = NULL;
    }
    close(cp->to_fd);
    if (cp->from) {
        const struct as_rec *rec;
        int r;
        while ((r = as_stream_next(cp->from, &rec)) == 1) {
        }
        if (r < 0 && !rc) rc = -1;
        as_stream_close(cp->from);
        cp->from = NULL;
    }
    close(cp->from_fd);
    int status;
    if (waitpid(cp->pid, &status, 0) < 0)
        return as_fail("--sequential: quantizer '%s': %s", cmd, strerror(errno));
    if (WIFSIGNALED(status))
        return as_fail("--sequential: quantizer '%s' killed by signal %d", cmd, WTERMSIG(status));
    if (WEXITSTATUS(status))
        return as_fail("--sequential: quantizer '%s' failed (exit status %d)", cmd,
                       WEXITSTATUS(status));
    return rc;
}

/* Quantize group g of layer l through the coprocess, install W_hat in the model, forward the
 * quantized records to `out`. */
static int sequential_group(struct calib *c, struct coproc *cp, struct as_arena *arena,
                            struct as_stream_writer *out, int layer, enum as_linear_group g) {
    if (emit_group(c, cp->to, arena, layer, g, 1, c->dxx)) return -1;
    if (as_stream_write_end_flush(cp->to)) return -1; /* "answer this group now" */
    struct as_qcollect *qc = as_qcollect_new();
    int need = 0;
    while (group_members[g][need] != AS_LIN_COUNT)
        need++;
    const struct as_rec *rec;
    int rc = 0;
    while (as_qcollect_count(qc) < need) {
        int r = as_stream_next_segmented(cp->from, &rec);
        if (r == 2) continue; /* an answer's end; the check below catches a short answer */
        if (r <= 0) {
            rc = r < 0 ? -1
                       : as_fail("quantizer ended before layer %d %s was quantized", layer,
                                 as_group_names[g]);
            break;
        }
        if (as_qcollect_offer(qc, cp->from, rec) < 0) {
            rc = -1;
            break;
        }
    }
    for (int i = 0; !rc && i < need; i++) {
        const char *pfx;
        const json_t *attrs;
        const struct as_qlinear *l = as_qcollect_get(qc, i, &pfx, &attrs);
        int lyr;
        enum as_linear which;
        if (as_linear_parse(pfx, &lyr, &which) || lyr != layer || as_linear_group_of(which) != g) {
            rc = as_fail("quantizer returned %s while layer %d %s was expected", pfx, layer,
                         as_group_names[g]);
            break;
        }
        int rows, cols;
        as_model_linear_shape(c->m, which, &rows, &cols);
        if (rows != l->N || cols != l->K) {
            rc = as_fail("quantizer returned %s as [%d,%d], expected [%d,%d]", pfx, l->N, l->K,
                         rows, cols);
            break;
        }
        as_qlinear_dequant(l, as_model_linear_weight(c->m, layer, which));
        json_t *a = json_deep_copy(attrs);
        json_object_set_new(a, "true_sequential", json_true());
        rc = as_qlinear_write(out, pfx, layer, l, a);
        json_decref(a);
    }
    if (!rc) { /* the answer ends with the quantizer's own flush end record */
        int r = as_stream_next_segmented(cp->from, &rec);
        if (r != 2)
            rc = r < 0 ? -1
                       : as_fail("quantizer answered layer %d %s with extra records", layer,
                                 as_group_names[g]);
    }
    as_qcollect_free(qc);
    return rc;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *model_dir = NULL, *data = NULL, *layers = NULL, *arena_dir = NULL, *seq_cmd = NULL;
    int samples = 128, seqlen = 512, keep = 0, with_weights = 1, gptaq = 0, threads = 0;
    int keep_seqs = 0, kv_stats = 0;
    uint64_t seed = 0;
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"data", required_argument, 0, 'd'},
                                             {"samples", required_argument, 0, 'n'},
                                             {"seqlen", required_argument, 0, 'l'},
                                             {"seed", required_argument, 0, 1},
                                             {"layers", required_argument, 0, 2},
                                             {"keep-inputs", required_argument, 0, 3},
                                             {"no-weights", no_argument, 0, 4},
                                             {"arena", required_argument, 0, 5},
                                             {"sequential", required_argument, 0, 6},
                                             {"gptaq", no_argument, 0, 7},
                                             {"threads", required_argument, 0, 8},
                                             {"keep-seqs", required_argument, 0, 9},
                                             {"kv-stats", no_argument, 0, 10},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "m:d:n:l:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            model_dir = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'n':
            samples = as_arg_int(optarg);
            break;
        case 'l':
            seqlen = as_arg_int(optarg);
            break;
        case 1:
            seed = as_arg_u64(optarg);
            break;
        case 2:
            layers = optarg;
            break;
        case 3:
            keep = as_arg_int(optarg);
            break;
        case 4:
            with_weights = 0;
            break;
        case 5:
            arena_dir = optarg;
            break;
        case 6:
            seq_cmd = optarg;
            break;
        case 7:
            gptaq = 1;
            break;
        case 8:
            threads = as_arg_int(optarg);
            break;
        case 9:
            keep_seqs = as_arg_int(optarg);
            break;
        case 10:
            kv_stats = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_dir || !data || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (samples < 1 || seqlen < 2) as_die("--samples and --seqlen must be >= 1 and >= 2");
    if (gptaq && !seq_cmd)
        as_die("--gptaq needs --sequential (it compares fp and quantized inputs)");
    if (keep_seqs < 0 || keep_seqs > samples)
        as_die("--keep-seqs %d: expected 0..%d (the number of windows)", keep_seqs, samples);
    if (keep_seqs && seq_cmd)
        as_die("--keep-seqs keeps full-precision layer inputs; it does not combine with "
               "--sequential");
    if (kv_stats && seq_cmd)
        as_die("--kv-stats measures the full-precision model's KV cache; it does not combine "
               "with --sequential");
    if (threads > 0) openblas_set_num_threads(threads);
    signal(SIGPIPE, SIG_IGN);

    struct calib c = {.model_dir = model_dir, .keep = keep, .seed = seed, .only_group = -1};
    c.m = as_model_load(model_dir);
    if (!c.m) as_die_last();
    if (c.m->cfg.quant_method[0])
        as_die("%s: the model is quantized (%s); calibrate the original checkpoint", model_dir,
               c.m->cfg.quant_method);
    if (seqlen > c.m->cfg.max_pos)
        as_die("--seqlen %d is larger than the model's maximum context %d", seqlen,
               c.m->cfg.max_pos);
    c.ck = as_ckpt_open(model_dir);
    if (!c.ck) as_die_last();
    c.refs = as_ckpt_refs_new(c.ck);
    if (!c.refs) as_die_last();
    c.layer_lo = 0;
    c.layer_hi = c.m->cfg.n_layers - 1;
    if (layers) {
        char *end;
        c.layer_lo = c.layer_hi = (int)strtol(layers, &end, 10);
        if (*end == '-') c.layer_hi = (int)strtol(end + 1, &end, 10);
        if (*end || c.layer_lo < 0 || c.layer_hi < c.layer_lo || c.layer_hi >= c.m->cfg.n_layers)
            as_die("--layers '%s': expected A or A-B within 0..%d", layers, c.m->cfg.n_layers - 1);
    }
    char tok_path[4096];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", model_dir);
    struct as_tokenizer *tok = as_tokenizer_load(tok_path);
    if (!tok) as_die_last();
    int32_t *tokens;
    /* windows start with BOS only for models whose tokenizer adds one (llama.cpp's rule) */
    if (as_calib_sample(tok, data, samples, seqlen, seed, as_tokenizer_add_bos(tok), &tokens))
        as_die_last();
    as_tokenizer_free(tok);

    int n_layers_sel = c.layer_hi - c.layer_lo + 1;
    c.st = as_xcalloc((size_t)n_layers_sel * AS_GROUP_COUNT, sizeof *c.st);
    struct as_run_state *s = as_state_new(c.m, seqlen, seqlen, keep_seqs ? AS_STATE_KEEP_ACTS : 0);
    if (keep_seqs) {
        c.keep_seqs = keep_seqs;
        c.seq_inputs =
            as_xmalloc(sizeof(float) * n_layers_sel * keep_seqs * seqlen * c.m->cfg.hidden);
    }
    if (!s) as_die_last();
    if (kv_stats) {
        c.kv_absmax = as_xcalloc((size_t)n_layers_sel * 2, sizeof(float));
        s->on_kv = on_kv, s->kvctx = &c;
    }
    struct as_stream_writer *out = as_stream_writer_fd(1, "stdout");
    if (!out) as_die_last();
    struct as_arena *arena = NULL;
    if (arena_dir || seq_cmd) {
        const char *dir = arena_dir ? arena_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        if (!(arena = as_arena_create(dir))) as_die_last();
    }
    double t0 = now_s();
    int rc = 0;
    if (!seq_cmd) {
        rc = run_samples(&c, tokens, samples, seqlen, s, NULL);
        for (int l = c.layer_lo; !rc && l <= c.layer_hi; l++) {
            if (c.seq_inputs) rc = emit_layer_input(&c, out, arena, l, seqlen);
            if (!rc && c.kv_absmax) rc = emit_kv(&c, out, l);
            for (int g = 0; !rc && g < AS_GROUP_COUNT; g++)
                rc = emit_group(&c, out, arena, l, (enum as_linear_group)g, with_weights, NULL);
        }
    } else {
        struct as_run_state *sfp = NULL;
        int maxd =
            c.m->cfg.intermediate > c.m->cfg.hidden ? c.m->cfg.intermediate : c.m->cfg.hidden;
        if (c.m->cfg.n_heads * c.m->cfg.head_dim > maxd)
            maxd = c.m->cfg.n_heads * c.m->cfg.head_dim;
        if (gptaq) {
            if (!(c.fp = as_model_load(model_dir))) as_die_last();
            sfp = as_state_new(c.fp, seqlen, seqlen, 0);
            c.x_fp = as_xmalloc(sizeof(float) * seqlen * maxd);
            c.dxx_chunk = as_xmalloc(sizeof(float) * maxd * maxd);
            c.dxx = as_xmalloc(sizeof(double) * maxd * maxd);
            fprintf(stderr, "%s: GPTAQ: running the full-precision model side by side\n",
                    as_progname());
        }
        struct coproc cp = {0};
        rc = coproc_start(&cp, seq_cmd);
        /* Each layer's input for every window is carried from layer to layer (through the
         * quantized layers; GPTAQ also through the full-precision ones), so every group costs one
         * pass of one layer: 5 layer passes per layer in all, not a forward per group. */
        int D = c.m->cfg.hidden, lo = c.layer_lo, hi = c.layer_hi;
        size_t win = (size_t)seqlen * D;
        float *X = as_xmalloc(sizeof(float) * win * samples);
        float *Xfp = gptaq ? as_xmalloc(sizeof(float) * win * samples) : NULL;
        for (int i = 0; i < samples; i++)
            for (int t = 0; t < seqlen; t++) {
                int tok = tokens[(size_t)i * seqlen + t];
                if (tok < 0 || tok >= c.m->cfg.vocab) {
                    rc = as_fail("token id %d out of range (vocab %d)", tok, c.m->cfg.vocab);
                    break;
                }
                memcpy(X + i * win + (size_t)t * D, c.m->embed + (size_t)tok * D,
                       sizeof(float) * D);
            }
        for (int l = 0; !rc && l < lo; l++) /* layers before the range: as they are */
            advance_layer(c.m, s, l, X, samples, seqlen);
        if (Xfp) memcpy(Xfp, X, sizeof(float) * win * samples);
        for (int l = lo; !rc && l <= hi; l++) {
            for (int g = 0; !rc && g < AS_GROUP_COUNT; g++) {
                /* measure only this group of this layer: its accumulator is c.st[g] */
                c.layer_lo = c.layer_hi = l;
                c.only_group = g;
                if (c.dxx) memset(c.dxx, 0, sizeof(double) * maxd * maxd);
                rc = measure_layer(&c, l, X, Xfp, samples, seqlen, s, sfp);
                if (!rc) rc = sequential_group(&c, &cp, arena, out, l, (enum as_linear_group)g);
                as_act_stats_free(stats_for(&c, l, (enum as_linear_group)g));
                as_progress("layer %d %s quantized", l, as_group_names[g]);
            }
            if (!rc) advance_layer(c.m, s, l, X, samples, seqlen);
            if (!rc && Xfp) advance_layer(c.fp, sfp, l, Xfp, samples, seqlen);
        }
        free(X);
        free(Xfp);
        c.layer_lo = lo;
        c.layer_hi = hi;
        if (cp.pid > 0) {
            /* When the quantizer failed, its own one-line error (on the shared stderr) says why;
             * ours names the command rather than the broken pipe it left behind. */
            char msg[4096];
            snprintf(msg, sizeof msg, "%s", as_last_error());
            int prc = coproc_finish(&cp, seq_cmd);
            if (rc && !prc) as_fail("%s", msg);
            rc = rc || prc ? -1 : 0;
        }
        as_state_free(sfp);
        as_model_free(c.fp);
        free(c.x_fp);
        free(c.dxx_chunk);
        free(c.dxx);
    }
    as_progress_done();
    /* In sequential mode the arena only carries statistics to the coprocess (our own output is
     * inline): remove it. A --arena of the statistics stream must outlive us for its readers. */
    int private_arena = seq_cmd != NULL;
    if (rc) {
        if (arena) {
            if (private_arena) unlink(as_arena_path(arena));
            as_arena_close(arena);
        }
        as_die_last();
    }
    if (as_stream_write_end(out)) as_die_last();
    fprintf(stderr, "%s: %d samples x %d tokens, layers %d-%d, %.2f s\n", as_progname(), samples,
            seqlen, c.layer_lo, c.layer_hi, now_s() - t0);
    as_stream_writer_free(out);
    if (arena) {
        if (private_arena) unlink(as_arena_path(arena));
        as_arena_close(arena);
    }
    for (int i = 0; i < n_layers_sel * AS_GROUP_COUNT; i++)
        as_act_stats_free(&c.st[i]);
    free(c.st);
    free(c.seq_inputs);
    free(c.kv_absmax);
    free(tokens);
    as_state_free(s);
    as_ckpt_refs_free(c.refs);
    as_ckpt_close(c.ck);
    as_model_free(c.m);
    return 0;
}
