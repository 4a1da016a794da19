/* bench_fpquant: FP8 and NVFP4 encoding throughput of bf16 weights against a plain copy of the
 * same bytes (the memory bandwidth bound), and LeptoQuant's search time per decoder layer.
 *
 * Weights: synthetic bf16 with the shapes of a Llama-2-7B layer's q_proj [4096, 4096] and
 * gate_proj [11008, 4096] (AS_BENCH_ROWS overrides the row count of both). Single thread, like
 * the memcpy it is compared with (glibc's, one thread, measured in the same repetition loop);
 * best of AS_BENCH_REPS (default 5) runs. Throughput counts input bytes (bf16) per second.
 * Kernels: the default level (AVX2 when the CPU has it), the portable 4-lane level, and the
 * scalar reference (dtype.c's codec per element) that the fast kernels must equal. NVFP4 both
 * straight from bf16 (as_nvfp4_encode_bf16) and through f32 rows (as_nvfp4_encode, what
 * as_fpq_quantize runs), each including the global absmax pass; the bench checks the bf16
 * kernel's codes equal the portable level's.
 * LeptoQuant: a random model (hidden AS_BENCH_HIDDEN, default 256) with AS_BENCH_SEQS x
 * AS_BENCH_SEQLEN (default 128 x 512) calibration tokens entering one layer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "as_error.h"
#include "dtype.h"
#include "fpquant.h"
#include "lepto.h"
#include "model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The encoders and the copy are timed in this thread's CPU time: on a shared machine a wall
 * clock also counts the time the thread waits for a core (memory stalls still count). */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

static uint64_t rng = 0x853C49E6748FEA9Bull;
static float gauss(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    double u1 = ((rng >> 11) + 1.0) / 9007199254740993.0;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    double u2 = (rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

/* fp8 per channel straight from bf16: row absmax, then encode while the row is in cache. */
static void fp8_channel_bf16(const uint16_t *w, int N, int K, uint8_t *codes, float *scale) {
    for (int n = 0; n < N; n++) {
        const uint16_t *r = w + (size_t)n * K;
        scale[n] = as_scale_for(as_absmax_bf16(r, (size_t)K), AS_FP8_MAX);
        as_fp8_encode_bf16(r, (size_t)K, scale[n], codes + (size_t)n * K);
    }
}

/* fp8 per tensor: one absmax pass, one encode pass. */
static void fp8_tensor_bf16(const uint16_t *w, int N, int K, uint8_t *codes, float *scale) {
    size_t n = (size_t)N * K;
    scale[0] = as_scale_for(as_absmax_bf16(w, n), AS_FP8_MAX);
    as_fp8_encode_bf16(w, n, scale[0], codes);
}

/* fp8 per tensor through the scalar reference kernel (absmax by a plain loop). */
static void fp8_tensor_bf16_ref(const uint16_t *w, int N, int K, uint8_t *codes, float *scale) {
    size_t n = (size_t)N * K;
    float amax = 0;
    for (size_t i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(as_bf16_to_f32(w[i])));
    scale[0] = as_scale_for(amax, AS_FP8_MAX);
    as_fp8_encode_bf16_ref(w, n, scale[0], codes);
}

/* nvfp4 straight from bf16: global amax pass, then one encode pass (block absmax, scale and
 * codes per eight blocks while they are in cache). */
static void nvfp4_bf16(const uint16_t *w, int N, int K, uint8_t *codes, uint8_t *scale8) {
    float g = as_nvfp4_global_scale(as_absmax_bf16(w, (size_t)N * K));
    as_nvfp4_encode_bf16(w, N, K, g, codes, scale8);
}

/* nvfp4 through f32: global amax pass, then rows converted to f32 in chunks of 8 and encoded. */
static void nvfp4_via_f32(const uint16_t *w, int N, int K, uint8_t *codes, uint8_t *scale8,
                          float *tmp) {
    float g = as_nvfp4_global_scale(as_absmax_bf16(w, (size_t)N * K));
    for (int n0 = 0; n0 < N; n0 += 8) {
        int rows = n0 + 8 <= N ? 8 : N - n0;
        as_convert_to_f32(AS_BF16, w + (size_t)n0 * K, tmp, (size_t)rows * K);
        as_nvfp4_encode(tmp, rows, K, g, codes + (size_t)n0 * K / 2,
                        scale8 + (size_t)n0 * (K / 16));
    }
}

int main(void) {
    int reps = env_int("AS_BENCH_REPS", 5);
    int K = 4096, rows_q = env_int("AS_BENCH_ROWS", 4096), rows_g = env_int("AS_BENCH_ROWS", 11008);
    int level = as_fpq_simd_level();
    printf("# FP8 / NVFP4 encoding of bf16 weights, single thread (memcpy too), thread CPU time, "
           "best of %d; kernel level %d (%s)\n",
           reps, level, level >= 2 ? "AVX2" : "portable 4-lane");
    printf("%-28s %-22s %10s %10s %8s\n", "tensor", "kernel", "GB/s(in)", "Gelem/s", "vs copy");
    int shapes[2] = {rows_q, rows_g};
    const char *names[2] = {"q_proj [4096, 4096]", "gate_proj [11008, 4096]"};
    enum { NK = 8 };
    const char *kern[NK] = {
        "memcpy", "fp8 channel",   "fp8 tensor",    "fp8 tensor portable", "fp8 tensor scalar ref",
        "nvfp4",  "nvfp4 via f32", "nvfp4 portable"};
    for (int si = 0; si < 2; si++) {
        int N = shapes[si];
        size_t n = (size_t)N * K;
        uint16_t *w = malloc(n * 2), *copy = malloc(n * 2);
        uint8_t *codes = malloc(n), *ref = malloc(n), *s8 = malloc(n / 16), *s8ref = malloc(n / 16);
        float *scale = malloc(sizeof(float) * N), *tmp = malloc(sizeof(float) * 8 * K);
        for (size_t i = 0; i < n; i++)
            w[i] = as_f32_to_bf16(gauss() * 0.02f);
        memset(copy, 0, n * 2), memset(codes, 0, n), memset(ref, 0, n), memset(s8, 0, n / 16);
        memset(s8ref, 0, n / 16);
        double best[NK];
        for (int k = 0; k < NK; k++)
            best[k] = 1e9;
        for (int r = 0; r < reps; r++) {
            double t[NK + 1];
            t[0] = cpu_s();
            memcpy(copy, w, n * 2);
            t[1] = cpu_s();
            fp8_channel_bf16(w, N, K, codes, scale);
            t[2] = cpu_s();
            fp8_tensor_bf16(w, N, K, codes, scale);
            t[3] = cpu_s();
            as_fpq_set_simd_level(1);
            fp8_tensor_bf16(w, N, K, codes, scale);
            as_fpq_set_simd_level(-1);
            t[4] = cpu_s();
            if (r < 2) fp8_tensor_bf16_ref(w, N, K, ref, scale); /* slow: twice is enough */
            t[5] = cpu_s();
            nvfp4_bf16(w, N, K, codes, s8);
            t[6] = cpu_s();
            nvfp4_via_f32(w, N, K, ref, s8ref, tmp);
            t[7] = cpu_s();
            if (r < 2) { /* slow: twice is enough */
                as_fpq_set_simd_level(1);
                nvfp4_bf16(w, N, K, ref, s8ref);
                as_fpq_set_simd_level(-1);
            }
            t[8] = cpu_s();
            for (int k = 0; k < NK; k++)
                if ((k != 4 && k != 7) || r < 2)
                    best[k] = t[k + 1] - t[k] < best[k] ? t[k + 1] - t[k] : best[k];
        }
        /* sanity: the fast NVFP4 codes equal the portable path's */
        as_fpq_set_simd_level(1);
        nvfp4_bf16(w, N, K, ref, s8ref);
        as_fpq_set_simd_level(-1);
        nvfp4_bf16(w, N, K, codes, s8);
        if (memcmp(codes, ref, n / 2) || memcmp(s8, s8ref, n / 16))
            printf("# WARNING: fast and portable NVFP4 codes differ\n");
        /* sanity: the fast per-tensor codes equal the scalar reference's, and decode close */
        fp8_tensor_bf16_ref(w, N, K, ref, scale);
        fp8_tensor_bf16(w, N, K, codes, scale);
        if (memcmp(codes, ref, n)) printf("# WARNING: fast and reference FP8 codes differ\n");
        fp8_channel_bf16(w, N, K, codes, scale);
        double err = 0;
        for (size_t i = 0; i < 1000; i++)
            err = fmax(err, fabs(as_fp8_dec(codes[i]) * scale[0] - as_bf16_to_f32(w[i])));
        for (int k = 0; k < NK; k++)
            printf("%-28s %-22s %10.2f %10.3f %7.0f%%\n", names[si], kern[k], n * 2 / best[k] / 1e9,
                   n / best[k] / 1e9, 100 * best[0] / best[k]);
        if (err > 0.02 * 4 / 16.0) printf("# WARNING: fp8 decode error %g\n", err);
        free(w), free(copy), free(codes), free(ref), free(s8), free(s8ref), free(scale), free(tmp);
    }

    /* LeptoQuant search per layer */
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.hidden = env_int("AS_BENCH_HIDDEN", 256);
    c.intermediate = c.hidden * 11 / 4;
    c.n_heads = c.hidden / 64, c.n_kv_heads = c.n_heads, c.head_dim = 64, c.n_layers = 1;
    c.vocab = 256, c.max_pos = 4096, c.rms_eps = 1e-5f, c.rope_theta = 10000, c.bos_id = 1;
    int S = env_int("AS_BENCH_SEQS", 128), T = env_int("AS_BENCH_SEQLEN", 512);
    char dir[] = "/tmp/bench_fpquant_XXXXXX";
    if (!mkdtemp(dir) || as_model_write_random(&c, AS_F32, 3, dir)) as_die_last();
    struct as_model *m = as_model_load(dir);
    if (!m) as_die_last();
    size_t nx = (size_t)S * T * c.hidden;
    float *X = malloc(sizeof(float) * nx);
    for (size_t i = 0; i < nx; i++)
        X[i] = gauss() * ((i % c.hidden) == 5 ? 30.0f : 1.0f);
    struct as_lepto_result res[AS_GROUP_COUNT];
    double t0 = now_s();
    if (as_lepto_search_layer(m, 0, X, S, T, NULL, res)) as_die_last();
    double dt = now_s() - t0;
    printf("\n# LeptoQuant search, one decoder layer (hidden %d, intermediate %d, %d heads), "
           "%d x %d tokens, OpenBLAS default threads\n",
           c.hidden, c.intermediate, c.n_heads, S, T);
    printf("%-12s %10s %10s %12s %12s %10s\n", "group", "values", "p", "loss_absmax", "loss",
           "seconds");
    static const char *const gn[4] = {"attn_qkv", "attn_o", "mlp_gate_up", "mlp_down"};
    for (int g = 0; g < AS_GROUP_COUNT; g++)
        printf("%-12s %10zu %10.5f %12.4g %12.4g %10.2f\n", gn[g], res[g].n_values, res[g].best_p,
               res[g].loss_absmax, res[g].loss_best, res[g].seconds);
    printf("layer total  %.2f s (including the full-precision reference pass)\n", dt);
    as_model_free(m);
    free(X);
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}
