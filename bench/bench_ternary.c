/* bench_ternary: speed of the packed ternary / 2-bit kernels (kernel_ternary.c), one run.
 *   bench_ternary bw THREADS            memory read bandwidth (GB/s): AVX2 sum over 1 GiB
 *   bench_ternary gemv SHAPES...        per format and the bf16 / f32 baseline, one thread:
 *                                       GEMV time, GB/s of packed weights, GMAC/s; shapes NxK,
 *                                       weights cycled through copies totalling >= 256 MiB so
 *                                       they stream from memory as in decode (L3 is 32 MiB here)
 *   bench_ternary decode THREADS [TOK]  tokens/s of the linear layers of a synthetic 0.7B-shaped
 *                                       model (24 layers, hidden 1536, FFN 4096: q,k,v,o 1536x1536,
 *                                       gate/up 4096x1536, down 1536x4096; 680M weights) per
 *                                       format: every matrix a GEMV of the token, rows split over
 *                                       THREADS threads; attention, norms and lm_head not counted
 * Codes and scales are random (speed does not depend on them). */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "dtype.h"
#include "kernel_ternary.h"
#include "pack_ternary.h"


/* CPU time of the calling thread: the machine is shared (up to 8 jobs on 2 cores), so wall time
 * measures the other jobs; a thread's CPU time includes its memory stalls but not the time it
 * waits for a core. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}

/* ---- formats under test: the five packed ones, then bf16 and f32 dense ---- */
#define NF (AS_TF_COUNT + 2)
static const char *fname(int f) {
    return f < AS_TF_COUNT ? as_tern_layouts[f].name : f == AS_TF_COUNT ? "BF16" : "F32";
}
static int usable(int f, int K) {
    return f >= AS_TF_COUNT || as_tern_row_bytes((enum as_tern_fmt)f, K) != 0;
}
static size_t mat_bytes(int f, int N, int K) {
    if (f == AS_TF_COUNT) return (size_t)N * K * 2;
    if (f > AS_TF_COUNT) return (size_t)N * K * 4;
    return as_tern_packed_bytes((enum as_tern_fmt)f, N, K);
}

static void *make_mat(int f, int N, int K) {
    if (f >= AS_TF_COUNT) {
        size_t n = (size_t)N * K;
        if (f == AS_TF_COUNT) {
            uint16_t *w = as_xmalloc(n * 2);
            for (size_t i = 0; i < n; i++)
                w[i] = as_f32_to_bf16((float)(rnd() % 1000) * 1e-4f - 0.05f);
            return w;
        }
        float *w = as_xmalloc(n * 4);
        for (size_t i = 0; i < n; i++)
            w[i] = (float)(rnd() % 1000) * 1e-4f - 0.05f;
        return w;
    }
    const struct as_tern_layout *L = &as_tern_layouts[f];
    uint8_t *c = as_xmalloc((size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++)
        c[i] = (uint8_t)(rnd() % (unsigned)L->levels);
    if (f == AS_TF_SHERRY)
        for (size_t i = 0; i < (size_t)N * K; i += 4) {
            int z = (int)(rnd() % 4);
            for (int p = 0; p < 4; p++)
                c[i + p] = p == z ? 1 : (rnd() & 1 ? 2 : 0);
        }
    size_t ns = as_tern_scale_count(f, N, K);
    float *s = as_xmalloc(ns * 4);
    for (size_t i = 0; i < ns; i++)
        s[i] = 0.0234375f;
    uint8_t *p = as_xmalloc(as_tern_packed_bytes(f, N, K));
    if (as_tern_pack(f, "bench", N, K, c, s, p)) as_die_last();
    free(c);
    free(s);
    return p;
}

/* one GEMV of rows r0..r1 of matrix data of format f */
static void run_gemv(enum as_isa isa, int f, int N, int K, const void *data,
                     const struct as_act8 *a, const float *x, float *y, int r0, int r1) {
    if (f >= AS_TF_COUNT) {
        struct as_dense_matrix W = {N, K, f == AS_TF_COUNT, data};
        as_dense_gemv(isa, &W, x, y, r0, r1);
    } else {
        struct as_tern_matrix W = {(enum as_tern_fmt)f, N, K, data};
        as_tern_gemv(isa, &W, a, y, r0, r1);
    }
}

/* ---- memory bandwidth ---- */
enum { BW_PASSES = 4 };
struct bw_job {
    const __m256i *p;
    size_t n;
    long long sink;
    double secs;
};
__attribute__((target("avx2"))) static void *bw_worker(void *arg) {
    struct bw_job *j = arg;
    double t0 = cpu_now();
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int pass = 0; pass < BW_PASSES; pass++) /* long enough to average out preemptions */
        for (size_t i = 0; i < j->n; i += 4) {
            s0 = _mm256_add_epi64(s0, _mm256_load_si256(j->p + i));
            s1 = _mm256_add_epi64(s1, _mm256_load_si256(j->p + i + 1));
            s2 = _mm256_add_epi64(s2, _mm256_load_si256(j->p + i + 2));
            s3 = _mm256_add_epi64(s3, _mm256_load_si256(j->p + i + 3));
        }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    long long out[4];
    memcpy(out, &s, 32);
    j->sink = out[0] + out[1] + out[2] + out[3];
    j->secs = cpu_now() - t0;
    return NULL;
}

static double bandwidth(int threads) {
    /* the GEMV table's working set (256 MiB, 8x L3), read BW_PASSES times per repetition, best of
     * 8 repetitions; time = the slowest thread's CPU time, as everywhere in this program */
    const size_t bytes = (size_t)256 << 20;
    __m256i *buf = aligned_alloc(64, bytes);
    if (!buf) as_die("out of memory");
    memset(buf, 1, bytes);
    double best = 0;
    for (int rep = 0; rep < 8; rep++) {
        pthread_t th[16];
        struct bw_job jobs[16];
        size_t per = bytes / 32 / (size_t)threads;
        double secs = 0;
        for (int t = 0; t < threads; t++) {
            jobs[t] = (struct bw_job){buf + per * t, per, 0, 0};
            pthread_create(&th[t], NULL, bw_worker, &jobs[t]);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            if (jobs[t].secs > secs) secs = jobs[t].secs;
        }
        double gbs = (double)bytes * BW_PASSES / secs / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* ---- GEMV table ---- */
static int cmd_gemv(int nshapes, char **shapes) {
    enum as_isa isa = as_kernel_isa_best();
    double bw = bandwidth(1);
    printf("kernel ISA: %s; memory read bandwidth, 1 thread: %.1f GB/s\n", as_isa_names[isa], bw);
    printf("%-11s %-7s %9s %8s %8s %8s %6s\n", "shape", "format", "bytes", "us/gemv", "GB/s",
           "GMAC/s", "%bw");
    for (int si = 0; si < nshapes; si++) {
        int N, K;
        if (sscanf(shapes[si], "%dx%d", &N, &K) != 2) as_die("shape %s: want NxK", shapes[si]);
        float *x = as_xmalloc((size_t)K * 4), *y = as_xmalloc((size_t)N * 4);
        for (int k = 0; k < K; k++)
            x[k] = (float)(rnd() % 2001) * 1e-3f - 1.0f;
        for (int f = 0; f < NF; f++) {
            if (!usable(f, K)) {
                printf("%-11s %-7s %9s (rows of %d do not fit its %d-weight blocks)\n", shapes[si],
                       fname(f), "-", K, as_tern_layouts[f].block);
                continue;
            }
            size_t mb = mat_bytes(f, N, K);
            /* AS_BENCH_WSET_MB (256): a working set that fits the caches shows the compute rate */
            const char *ws = getenv("AS_BENCH_WSET_MB"), *wk = getenv("AS_BENCH_WSET_KB");
            const size_t wset = wk ? (size_t)atoi(wk) << 10 : (ws ? (size_t)atoi(ws) : 256) << 20;
            int copies = wset > mb ? (int)((wset + mb - 1) / mb) : 1;
            void **m = as_xmalloc((size_t)copies * sizeof *m);
            m[0] = make_mat(f, N, K);
            for (int c = 1; c < copies; c++) {
                m[c] = as_xmalloc(mb);
                memcpy(m[c], m[0], mb);
            }
            struct as_act8 a;
            as_act8_init(&a, f < AS_TF_COUNT ? (enum as_tern_fmt)f : AS_TF_I2_S, K);
            as_act8_quantize(&a, x);
            for (int c = 0; c < copies; c++)
                run_gemv(isa, f, N, K, m[c], &a, x, y, 0, N);
            int iters = 0;
            double t0 = cpu_now(), t;
            do {
                for (int c = 0; c < copies; c++, iters++)
                    run_gemv(isa, f, N, K, m[c], &a, x, y, 0, N);
            } while ((t = cpu_now() - t0) < 0.3);
            double per = t / iters;
            double gbs = (double)mb / per / 1e9;
            printf("%-11s %-7s %9zu %8.1f %8.2f %8.2f %5.0f%%\n", shapes[si], fname(f), mb,
                   per * 1e6, gbs, (double)N * K / per / 1e9, 100.0 * gbs / bw);
            fflush(stdout);
            as_act8_free(&a);
            for (int c = 0; c < copies; c++)
                free(m[c]);
            free(m);
        }
        free(x);
        free(y);
    }
    return 0;
}

/* ---- decode: 0.7B-shaped linears, rows split over threads ---- */
#define NL 24
#define H 1536
#define FF 4096
struct layer {
    void *q, *k, *v, *o, *gate, *up, *down;
};
struct dec {
    int f, threads;
    enum as_isa isa;
    struct layer L[NL];
    struct as_act8 ah, af; /* activations of width H and FF */
    float *xh, *xf, *y1, *y2, *y3;
    pthread_barrier_t bar;
    int tokens;
};
struct dec_arg {
    struct dec *d;
    int t;
    double secs;
};

static void part(struct dec *d, int t, const void *m, int N, int K, struct as_act8 *a,
                 const float *x, float *y) {
    int r0 = (int)((long)N * t / d->threads), r1 = (int)((long)N * (t + 1) / d->threads);
    run_gemv(d->isa, d->f, N, K, m, a, x, y, r0, r1);
}

static void *dec_worker(void *arg) {
    struct dec_arg *da = arg;
    struct dec *d = da->d;
    const int t = da->t;
    double t0 = cpu_now();
    for (int tok = 0; tok < d->tokens; tok++)
        for (int l = 0; l < NL; l++) {
            struct layer *L = &d->L[l];
            if (t == 0 && d->f < AS_TF_COUNT) as_act8_quantize(&d->ah, d->xh);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->q, H, H, &d->ah, d->xh, d->y1);
            part(d, t, L->k, H, H, &d->ah, d->xh, d->y2);
            part(d, t, L->v, H, H, &d->ah, d->xh, d->y3);
            pthread_barrier_wait(&d->bar);
            if (t == 0 && d->f < AS_TF_COUNT) as_act8_quantize(&d->ah, d->y1);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->o, H, H, &d->ah, d->y1, d->xh);
            pthread_barrier_wait(&d->bar);
            if (t == 0 && d->f < AS_TF_COUNT) as_act8_quantize(&d->ah, d->xh);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->gate, FF, H, &d->ah, d->xh, d->xf);
            part(d, t, L->up, FF, H, &d->ah, d->xh, d->y2 + H);
            pthread_barrier_wait(&d->bar);
            if (t == 0 && d->f < AS_TF_COUNT) as_act8_quantize(&d->af, d->xf);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->down, H, FF, &d->af, d->xf, d->xh);
            pthread_barrier_wait(&d->bar);
            /* keep the activations finite and non-zero: scale back into [-1, 1] */
            if (t == 0)
                for (int i = 0; i < H; i++)
                    d->xh[i] = d->xh[i] > 1 ? 1 : d->xh[i] < -1 ? -1 : d->xh[i] + 0.01f;
            if (t == 0)
                for (int i = 0; i < FF; i++)
                    d->xf[i] = d->xf[i] > 1 ? 1 : d->xf[i] < -1 ? -1 : d->xf[i] + 0.01f;
            pthread_barrier_wait(&d->bar);
        }
    da->secs = cpu_now() - t0;
    return NULL;
}

/* Every format's model is built first, then the formats take turns, ROUNDS times: each round
 * runs TOKENS tokens of every format, and a format's time is its best round. The machine is
 * shared: interleaving gives every format the same mix of quiet and busy moments, and the time
 * is the busiest thread's CPU time (what a token takes when each thread has a core). */
enum { ROUNDS = 3 };
static int cmd_decode(int threads, int tokens) {
    enum as_isa isa = as_kernel_isa_best();
    printf("decode, synthetic 0.7B-shaped linears (24 x [4 x 1536x1536, 2 x 4096x1536, "
           "1536x4096] = %.0fM weights), %d thread(s), ISA %s, best of %d rounds of %d tokens\n",
           NL * (4.0 * H * H + 3.0 * H * FF) / 1e6, threads, as_isa_names[isa], ROUNDS, tokens);
    printf("%-7s %9s %9s %8s %9s\n", "format", "MB", "ms/token", "tok/s", "GB/s");
    struct dec *D[NF] = {0};
    size_t bytes[NF] = {0};
    for (int f = 0; f < NF; f++) {
        if (f == AS_TF_COUNT + 1) continue; /* f32: 2.7 GB, bf16 is the baseline */
        struct dec *d = D[f] = as_xcalloc(1, sizeof *d);
        d->f = f;
        d->threads = threads;
        d->isa = isa;
        d->tokens = tokens;
        for (int l = 0; l < NL; l++) {
            struct layer *L = &d->L[l];
            void **mm[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
            const int NN[7] = {H, H, H, H, FF, FF, H}, KK[7] = {H, H, H, H, H, H, FF};
            for (int i = 0; i < 7; i++) {
                *mm[i] = make_mat(f, NN[i], KK[i]);
                bytes[f] += mat_bytes(f, NN[i], KK[i]);
            }
        }
        enum as_tern_fmt af = f < AS_TF_COUNT ? (enum as_tern_fmt)f : AS_TF_I2_S;
        as_act8_init(&d->ah, af, H);
        as_act8_init(&d->af, af, FF);
        d->xh = as_xcalloc(FF, 4);
        d->xf = as_xcalloc(FF, 4);
        d->y1 = as_xcalloc(FF, 4);
        d->y2 = as_xcalloc(2 * FF, 4);
        d->y3 = as_xcalloc(FF, 4);
        for (int i = 0; i < H; i++)
            d->xh[i] = (float)(rnd() % 2001) * 1e-3f - 1.0f;
        pthread_barrier_init(&d->bar, NULL, (unsigned)threads);
    }
    double best[NF];
    for (int f = 0; f < NF; f++)
        best[f] = 1e30;
    for (int round = 0; round < ROUNDS; round++)
        for (int f = 0; f < NF; f++) {
            if (!D[f]) continue;
            pthread_t th[16];
            struct dec_arg args[16];
            double secs = 0;
            for (int t = 0; t < threads; t++) {
                args[t] = (struct dec_arg){D[f], t, 0};
                pthread_create(&th[t], NULL, dec_worker, &args[t]);
            }
            for (int t = 0; t < threads; t++) {
                pthread_join(th[t], NULL);
                if (args[t].secs > secs) secs = args[t].secs;
            }
            if (secs / tokens < best[f]) best[f] = secs / tokens;
        }
    for (int f = 0; f < NF; f++) {
        struct dec *d = D[f];
        if (!d) continue;
        printf("%-7s %9.1f %9.2f %8.2f %9.2f\n", fname(f), (double)bytes[f] / 1e6, best[f] * 1e3,
               1.0 / best[f], (double)bytes[f] / best[f] / 1e9);
        pthread_barrier_destroy(&d->bar);
        for (int l = 0; l < NL; l++) {
            struct layer *L = &d->L[l];
            free(L->q), free(L->k), free(L->v), free(L->o), free(L->gate), free(L->up),
                free(L->down);
        }
        as_act8_free(&d->ah);
        as_act8_free(&d->af);
        free(d->xh), free(d->xf), free(d->y1), free(d->y2), free(d->y3);
        free(d);
    }
    return 0;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc == 3 && !strcmp(argv[1], "bw")) {
        int t = atoi(argv[2]);
        printf("memory read bandwidth, %d thread(s): %.1f GB/s\n", t, bandwidth(t));
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "gemv")) return cmd_gemv(argc - 2, argv + 2);
    if ((argc == 3 || argc == 4) && !strcmp(argv[1], "decode"))
        return cmd_decode(atoi(argv[2]), argc == 4 ? atoi(argv[3]) : 8);
    fprintf(stderr, "usage: bench_ternary bw THREADS | gemv NxK... | decode THREADS [TOKENS]\n");
    return 2;
}
