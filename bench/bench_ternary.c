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
 * Beside the five packed formats and the dense baselines, SHERRY-LUT and TQ1_0-LUT are the same
 * matrices repacked for the table-lookup GEMV (kernel_lut.h; the repacking is not timed, the
 * table build is: in decode as part of each token, in the GEMV table on its own line). SEQ2-R2
 * is SEQ2 through the two-row pass its four-row pass replaced.
 * Codes and scales are random (speed does not depend on them). */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "dtype.h"
#include "kernel_lut.h"
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

/* ---- formats under test: the five packed ones, bf16 and f32 dense, and the LUT copies ---- */
/* SEQ2-R2: SEQ2 through the two-row pass that SEQ2's four-row pass replaced (as_tern_seq2_rows) */
enum { F_BF16 = AS_TF_COUNT, F_F32, F_SEQ2_R2, F_SHERRY_LUT, F_TQ1_LUT, NF };
/* table order: each LUT copy after its source format */
static const int forder[NF] = {AS_TF_TQ1_0, F_TQ1_LUT,    AS_TF_TQ2_0,  AS_TF_I2_S, F_SEQ2_R2,
                               AS_TF_SEQ2,  AS_TF_SHERRY, F_SHERRY_LUT, F_BF16,     F_F32};
static int is_dense(int f) {
    return f == F_BF16 || f == F_F32;
}
static int is_lut(int f) {
    return f >= F_SHERRY_LUT;
}
/* the packed format a LUT copy is made from (and whose activations it takes) */
static enum as_tern_fmt src_fmt(int f) {
    return f == F_SHERRY_LUT ? AS_TF_SHERRY
           : f == F_TQ1_LUT  ? AS_TF_TQ1_0
           : f == F_SEQ2_R2  ? AS_TF_SEQ2
                             : (enum as_tern_fmt)f;
}
static const char *fname(int f) {
    static const char *const extra[NF - AS_TF_COUNT] = {"BF16", "F32", "SEQ2-R2", "SHERRY-LUT",
                                                        "TQ1_0-LUT"};
    if (f < AS_TF_COUNT) return as_tern_layouts[f].name;
    return f < NF ? extra[f - AS_TF_COUNT] : "?";
}
static int usable(int f, int K) {
    if (is_dense(f)) return 1;
    if (is_lut(f)) return as_lut_supported(src_fmt(f), K);
    return as_tern_row_bytes(src_fmt(f), K) != 0;
}
/* bytes a GEMV reads: the LUT copy's own (m: the matrix), or the format's */
static size_t mat_bytes(int f, int N, int K, const void *m) {
    if (f == F_BF16) return (size_t)N * K * 2;
    if (f == F_F32) return (size_t)N * K * 4;
    if (is_lut(f)) return ((const struct as_lut_matrix *)m)->bytes;
    return as_tern_packed_bytes(src_fmt(f), N, K);
}

static void *make_mat(int f, int N, int K);
/* A LUT copy: the source format's matrix, repacked */
static void *make_lut(int f, int N, int K) {
    void *p = make_mat(src_fmt(f), N, K);
    struct as_tern_matrix W = {src_fmt(f), N, K, p};
    struct as_lut_matrix *L = as_xmalloc(sizeof *L);
    as_lut_repack(&W, L);
    free(p);
    return L;
}
static void *copy_mat(int f, const void *m, size_t bytes) {
    if (!is_lut(f)) {
        void *c = as_xmalloc(bytes);
        memcpy(c, m, bytes);
        return c;
    }
    const struct as_lut_matrix *L = m;
    struct as_lut_matrix *c = as_xmalloc(sizeof *c);
    *c = *L;
    const size_t nc = (size_t)L->tiles * L->triples * AS_LUT_TILE * 2, ns = L->bytes - nc;
    c->codes = aligned_alloc(64, (nc + 63) / 64 * 64);
    c->scales = aligned_alloc(64, (ns + 63) / 64 * 64);
    if (!c->codes || !c->scales) as_die("out of memory");
    memcpy(c->codes, L->codes, nc);
    memcpy(c->scales, L->scales, ns);
    return c;
}
static void free_mat(int f, void *m) {
    if (m && is_lut(f)) as_lut_free(m);
    free(m);
}

static void *make_mat(int f, int N, int K) {
    if (is_lut(f)) return make_lut(f, N, K);
    if (f == F_SEQ2_R2) return make_mat(AS_TF_SEQ2, N, K);
    if (is_dense(f)) {
        size_t n = (size_t)N * K;
        if (f == F_BF16) {
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

/* one GEMV of rows r0..r1 of matrix data of format f (t: the token's tables, LUT copies) */
static void run_gemv(enum as_isa isa, int f, int N, int K, const void *data,
                     const struct as_act8 *a, const struct as_lut_act *t, const float *x, float *y,
                     int r0, int r1) {
    if (is_lut(f)) {
        as_lut_gemv(isa, data, t, y, r0, r1);
    } else if (is_dense(f)) {
        struct as_dense_matrix W = {N, K, f == F_BF16, data};
        as_dense_gemv(isa, &W, x, y, r0, r1);
    } else {
        struct as_tern_matrix W = {src_fmt(f), N, K, data};
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
    printf("%-11s %-10s %9s %8s %8s %8s %6s\n", "shape", "format", "bytes", "us/gemv", "GB/s",
           "GMAC/s", "%bw");
    for (int si = 0; si < nshapes; si++) {
        int N, K;
        if (sscanf(shapes[si], "%dx%d", &N, &K) != 2) as_die("shape %s: want NxK", shapes[si]);
        float *x = as_xmalloc((size_t)K * 4), *y = as_xmalloc((size_t)N * 4);
        for (int k = 0; k < K; k++)
            x[k] = (float)(rnd() % 2001) * 1e-3f - 1.0f;
        for (int fi = 0; fi < NF; fi++) {
            const int f = forder[fi];
            if (!usable(f, K)) {
                printf("%-11s %-10s %9s (rows of %d do not fit its %d-weight blocks)\n", shapes[si],
                       fname(f), "-", K, as_tern_layouts[src_fmt(f)].block);
                continue;
            }
            as_tern_seq2_rows = f == F_SEQ2_R2 ? 2 : 4; /* set here, single-threaded */
            void *m0 = make_mat(f, N, K);
            size_t mb = mat_bytes(f, N, K, m0);
            /* AS_BENCH_WSET_MB (256): a working set that fits the caches shows the compute rate */
            const char *ws = getenv("AS_BENCH_WSET_MB"), *wk = getenv("AS_BENCH_WSET_KB");
            const size_t wset = wk ? (size_t)atoi(wk) << 10 : (ws ? (size_t)atoi(ws) : 256) << 20;
            int copies = wset > mb ? (int)((wset + mb - 1) / mb) : 1;
            void **m = as_xmalloc((size_t)copies * sizeof *m);
            m[0] = m0;
            for (int c = 1; c < copies; c++)
                m[c] = copy_mat(f, m[0], mb);
            struct as_act8 a;
            as_act8_init(&a, is_dense(f) ? AS_TF_I2_S : src_fmt(f), K);
            as_act8_quantize(&a, x);
            struct as_lut_act lt = {0};
            if (is_lut(f)) {
                as_lut_act_init(&lt, src_fmt(f), K);
                as_lut_act_build(isa, &lt, &a);
            }
            for (int c = 0; c < copies; c++)
                run_gemv(isa, f, N, K, m[c], &a, &lt, x, y, 0, N);
            int iters = 0;
            double t0 = cpu_now(), t;
            do {
                for (int c = 0; c < copies; c++, iters++)
                    run_gemv(isa, f, N, K, m[c], &a, &lt, x, y, 0, N);
            } while ((t = cpu_now() - t0) < 0.3);
            double per = t / iters;
            double gbs = (double)mb / per / 1e9;
            printf("%-11s %-10s %9zu %8.1f %8.2f %8.2f %5.0f%%", shapes[si], fname(f), mb,
                   per * 1e6, gbs, (double)N * K / per / 1e9, 100.0 * gbs / bw);
            if (is_lut(f)) { /* against the source format's bytes, and the token's table build */
                const double sgbs = (double)as_tern_packed_bytes(src_fmt(f), N, K) / per / 1e9;
                int bi = 0;
                double b0 = cpu_now(), bt;
                do
                    as_lut_act_build(isa, &lt, &a), bi++;
                while ((bt = cpu_now() - b0) < 0.05);
                printf("  %s bytes: %.2f GB/s, %.0f%%; tables %.1f us", fname(src_fmt(f)), sgbs,
                       100.0 * sgbs / bw, bt / bi * 1e6);
                as_lut_act_free(&lt);
            }
            printf("\n");
            fflush(stdout);
            as_act8_free(&a);
            for (int c = 0; c < copies; c++)
                free_mat(f, m[c]);
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
    struct as_act8 ah, af;    /* activations of width H and FF */
    struct as_lut_act th, tf; /* their tables (LUT copies) */
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
    run_gemv(d->isa, d->f, N, K, m, a, a == &d->ah ? &d->th : &d->tf, x, y, r0, r1);
}

/* thread 0: quantize x for the next matrices (and build the LUT copies' tables) */
static void quantize(struct dec *d, struct as_act8 *a, const float *x) {
    if (is_dense(d->f)) return;
    as_act8_quantize(a, x);
    if (is_lut(d->f)) as_lut_act_build(d->isa, a == &d->ah ? &d->th : &d->tf, a);
}

static void *dec_worker(void *arg) {
    struct dec_arg *da = arg;
    struct dec *d = da->d;
    const int t = da->t;
    double t0 = cpu_now();
    for (int tok = 0; tok < d->tokens; tok++)
        for (int l = 0; l < NL; l++) {
            struct layer *L = &d->L[l];
            if (t == 0) quantize(d, &d->ah, d->xh);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->q, H, H, &d->ah, d->xh, d->y1);
            part(d, t, L->k, H, H, &d->ah, d->xh, d->y2);
            part(d, t, L->v, H, H, &d->ah, d->xh, d->y3);
            pthread_barrier_wait(&d->bar);
            if (t == 0) quantize(d, &d->ah, d->y1);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->o, H, H, &d->ah, d->y1, d->xh);
            pthread_barrier_wait(&d->bar);
            if (t == 0) quantize(d, &d->ah, d->xh);
            pthread_barrier_wait(&d->bar);
            part(d, t, L->gate, FF, H, &d->ah, d->xh, d->xf);
            part(d, t, L->up, FF, H, &d->ah, d->xh, d->y2 + H);
            pthread_barrier_wait(&d->bar);
            if (t == 0) quantize(d, &d->af, d->xf);
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
    printf("%-10s %9s %9s %8s %9s\n", "format", "MB", "ms/token", "tok/s", "GB/s");
    struct dec *D[NF] = {0};
    size_t bytes[NF] = {0};
    for (int f = 0; f < NF; f++) {
        if (f == F_F32) continue; /* f32: 2.7 GB, bf16 is the baseline */
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
                bytes[f] += mat_bytes(f, NN[i], KK[i], *mm[i]);
            }
        }
        enum as_tern_fmt af = is_dense(f) ? AS_TF_I2_S : src_fmt(f);
        as_act8_init(&d->ah, af, H);
        as_act8_init(&d->af, af, FF);
        if (is_lut(f)) {
            as_lut_act_init(&d->th, af, H);
            as_lut_act_init(&d->tf, af, FF);
        }
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
            as_tern_seq2_rows = f == F_SEQ2_R2 ? 2 : 4; /* before the threads start */
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
    for (int fi = 0; fi < NF; fi++) {
        const int f = forder[fi];
        struct dec *d = D[f];
        if (!d) continue;
        printf("%-10s %9.1f %9.2f %8.2f %9.2f\n", fname(f), (double)bytes[f] / 1e6, best[f] * 1e3,
               1.0 / best[f], (double)bytes[f] / best[f] / 1e9);
        pthread_barrier_destroy(&d->bar);
        for (int l = 0; l < NL; l++) {
            struct layer *L = &d->L[l];
            void *mm[7] = {L->q, L->k, L->v, L->o, L->gate, L->up, L->down};
            for (int i = 0; i < 7; i++)
                free_mat(f, mm[i]);
        }
        as_act8_free(&d->ah);
        as_act8_free(&d->af);
        if (is_lut(f)) {
            as_lut_act_free(&d->th);
            as_lut_act_free(&d->tf);
        }
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
