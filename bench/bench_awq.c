/* bench_awq: seconds per decoder layer of the AWQ search (lib/common/awq.c) on the synthetic
 * realistic-size checkpoint of the engine bench (hidden 2048, intermediate 5632, 16 heads, no GQA,
 * 4 layers, bf16; written to DIR if missing, as bench_gen does).
 *
 *   bench_awq DIR SEQS SEQLEN LAYERS [GROUP]
 *
 * The layer inputs of SEQS sequences of SEQLEN tokens (as `as-calib --keep-seqs SEQS` keeps them)
 * come from one full-precision forward pass with AS_STATE_KEEP_ACTS; then awq_layer (scale search
 * over the four groups with 20 ratios, folding, clipping on 512 sampled rows; W4, group GROUP,
 * asymmetric, duo scaling) runs on the first LAYERS layers, timed. The search cost does not depend
 * on how many calibration tokens produced x_mean (as-calib's statistics have a fixed size), so
 * x_mean is taken from the kept rows here. Prints one table row per layer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "as_error.h"
#include "awq.h"
#include "forward.h"
#include "model.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double now(void) {
    return clock_s(CLOCK_MONOTONIC);
}
/* CPU seconds of all threads: on a shared machine wall time grows with the load, this does not */
static double cpu(void) {
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

int main(int argc, char **argv) {
    as_set_progname("bench_awq");
    if (argc < 5) {
        fprintf(stderr, "usage: bench_awq DIR SEQS SEQLEN LAYERS [GROUP]\n");
        return 2;
    }
    const char *dir = argv[1];
    int S = atoi(argv[2]), T = atoi(argv[3]), n_layers = atoi(argv[4]);
    int group = argc > 5 ? atoi(argv[5]) : 128;
    char cfgpath[4200];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
    struct stat st;
    if (stat(cfgpath, &st) != 0) {
        struct as_model_config c = {0};
        snprintf(c.model_type, sizeof c.model_type, "llama");
        c.arch = AS_ARCH_LLAMA, c.hidden = 2048, c.intermediate = 5632, c.n_layers = 4;
        c.n_heads = 16, c.n_kv_heads = 16, c.head_dim = 128, c.vocab = 32000, c.max_pos = 2048;
        c.rms_eps = 1e-5f, c.rope_theta = 10000.0f, c.tie_embeddings = 1;
        mkdir(dir, 0755);
        if (as_model_write_random(&c, AS_BF16, 1, dir) != 0) as_die_last();
    }
    struct as_model *m = as_model_load(dir);
    if (!m) as_die_last();
    const struct as_model_config *c = &m->cfg;
    if (n_layers > c->n_layers) n_layers = c->n_layers;
    size_t D = (size_t)c->hidden, per = (size_t)S * T * D;
    float *X = as_xmalloc(sizeof(float) * per * n_layers);
    struct as_run_state *s = as_state_new(m, T, T, AS_STATE_KEEP_ACTS);
    if (!s) as_die_last();
    int *tok = as_xmalloc(sizeof(int) * T);
    double t0 = now();
    for (int i = 0; i < S; i++) {
        for (int j = 0; j < T; j++)
            tok[j] = (int)(((size_t)i * 7919 + (size_t)j * 104729 + 1) % c->vocab);
        as_state_reset(s);
        if (as_forward(m, s, tok, T, AS_LOGITS_NONE, NULL)) as_die_last();
        for (int l = 0; l < n_layers; l++)
            memcpy(X + l * per + (size_t)i * T * D, s->layer_acts + (size_t)l * T * D,
                   sizeof(float) * T * D);
    }
    as_state_free(s);
    fprintf(stderr, "bench_awq: layer inputs of %d x %d tokens in %.1f s\n", S, T, now() - t0);
    struct awq_opts o;
    awq_opts_default(&o);
    o.bits = 4, o.group_size = group;
    for (int l = 0; l < n_layers; l++) {
        struct awq_layer_report rep;
        double t1 = now(), c1 = cpu();
        if (awq_layer(m, l, X + l * per, S, T, NULL, &o, &rep)) as_die_last();
        double dt = now() - t1, dc = cpu() - c1;
        double gain = 0;
        int ng = 0;
        for (int g = 0; g < AS_GROUP_COUNT; g++)
            if (rep.applied[g]) gain += rep.loss[g] / rep.loss_rtn[g], ng++;
        printf("%-34s %10d %12.1f %10s\n", "AWQ s/layer (wall, W4 g128)", S * T, dt, "");
        printf("%-34s %10d %12.1f %10s\n", "AWQ CPU s/layer (all threads)", S * T, dc, "");
        printf("  layer %d: search %.1f s, clip %.1f s (wall), mean loss/RTN loss %.3f\n", l,
               rep.seconds_search, rep.seconds_clip, gain / ng);
        fflush(stdout);
        awq_layer_report_free(&rep);
    }
    free(X);
    free(tok);
    as_model_free(m);
    return 0;
}
