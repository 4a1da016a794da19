/* bench_smollm2: the engine's forward-pass speed on a real checkpoint, measured the way
 * llama.cpp's llama-bench measures it, for bench/smollm2-speed.sh.
 *   bench_smollm2 MODEL THREADS [PP] [TG] [REPS]
 * MODEL is a checkpoint directory or a llama.cpp FILE.gguf (dequantized to f32 on load).
 *   pp: PP tokens (default 512) through an empty KV cache in one batch, logits of the last one
 *       (llama-bench's pp512: one llama_decode of 512 tokens).
 *   tg: TG tokens (default 128) one at a time from an empty cache, logits each step
 *       (llama-bench's tg128).
 * Token ids are pseudo-random, as llama-bench's are: speed does not depend on them. One warm-up
 * run, then REPS (default 5) timed runs of each; prints "pp PP mean sd" and "tg TG mean sd" in
 * tokens/s, mean and sample standard deviation as llama-bench reports them, then "logits H1 H2":
 * xxh64 of the last logits of pp and of tg (bit-identical across thread counts if the engine's
 * threading is exact). THREADS sets OpenBLAS's threads, which the engine's own follow. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "as_error.h"
#include "forward.h"
#include "gguf.h"
#include "model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void report(const char *what, int n, const double *rate, int reps) {
    double mean = 0, var = 0;
    for (int i = 0; i < reps; i++)
        mean += rate[i];
    mean /= reps;
    for (int i = 0; i < reps; i++)
        var += (rate[i] - mean) * (rate[i] - mean);
    printf("%s %d %.2f %.2f\n", what, n, mean, reps > 1 ? sqrt(var / (reps - 1)) : 0.0);
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc < 3) {
        fprintf(stderr, "usage: bench_smollm2 MODEL THREADS [PP] [TG] [REPS]\n");
        return 2;
    }
    int threads = atoi(argv[2]), pp = argc > 3 ? atoi(argv[3]) : 512,
        tg = argc > 4 ? atoi(argv[4]) : 128, reps = argc > 5 ? atoi(argv[5]) : 5;
    if (threads < 1 || pp < 1 || tg < 1 || reps < 1 || reps > 100) {
        fprintf(stderr, "bench_smollm2: bad arguments\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    double t0 = now();
    struct as_model *m =
        as_path_is_gguf(argv[1]) ? as_model_load_gguf(argv[1]) : as_model_load(argv[1]);
    if (!m) as_die_last();
    fprintf(stderr, "bench_smollm2: loaded %s in %.1f s\n", argv[1], now() - t0);
    int vocab = m->cfg.vocab, max = pp > tg ? pp : tg;
    int *toks = malloc(sizeof(int) * (size_t)max);
    unsigned r = 12345;
    for (int i = 0; i < max; i++)
        toks[i] = (int)((r = r * 1103515245u + 12345u) >> 8) % vocab;
    struct as_run_state *s = as_state_new(m, pp, max, 0);
    if (!s) as_die_last();
    double rate[100];
    for (int rep = -1; rep < reps; rep++) { /* rep -1: warm-up */
        as_state_reset(s);
        double t1 = now();
        if (as_forward(m, s, toks, pp, AS_LOGITS_LAST, NULL) != 0) as_die_last();
        if (rep >= 0) rate[rep] = pp / (now() - t1);
    }
    report("pp", pp, rate, reps);
    unsigned long long h_pp = XXH64(s->logits, sizeof(float) * (size_t)vocab, 0);
    for (int rep = -1; rep < reps; rep++) {
        as_state_reset(s);
        double t1 = now();
        for (int i = 0; i < tg; i++)
            if (as_forward(m, s, &toks[i], 1, AS_LOGITS_LAST, NULL) != 0) as_die_last();
        if (rep >= 0) rate[rep] = tg / (now() - t1);
    }
    report("tg", tg, rate, reps);
    /* the last logits of each: equal across thread counts when the engine's threading is exact */
    printf("logits %016llx %016llx\n", h_pp,
           (unsigned long long)XXH64(s->logits, sizeof(float) * (size_t)vocab, 0));
    free(toks);
    as_state_free(s);
    as_model_free(m);
    return 0;
}
