/* bench_codec: throughput of the dtype array codecs (lib/common/dtype.c), single thread.
 *
 * Each codec converts an input array of AS_BENCH_MB MiB (default 256) of realistic values
 * (normal-ish weights, scaled into the target's range); the best of 5 runs is reported as GB/s
 * of input bytes (1 GB = 1e9 bytes) and as elements per second. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "dtype.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 88172645463325252ull;
static float rand_weight(void) { /* sum of uniforms: roughly normal, sd ~ 0.6 */
    float s = 0;
    for (int k = 0; k < 4; k++) {
        rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
        s += (float)(rng_state >> 40) / (float)(1 << 24) - 0.5f;
    }
    return s;
}

struct codec {
    const char *name;
    enum as_dtype t;
    int to_f32; /* 1: t -> f32, 0: f32 -> t */
};

int main(void) {
    as_set_progname("bench_codec");
    const char *env = getenv("AS_BENCH_MB");
    size_t mb = env ? (size_t)atol(env) : 256;
    if (mb == 0) mb = 256;
    const struct codec codecs[] = {
        {"bf16 -> f32", AS_BF16, 1},        {"f16 -> f32", AS_F16, 1},
        {"f32 -> bf16", AS_BF16, 0},        {"f32 -> f16", AS_F16, 0},
        {"f32 -> fp8 e4m3", AS_F8_E4M3, 0}, {"fp8 e4m3 -> f32", AS_F8_E4M3, 1},
        {"f32 -> fp8 e5m2", AS_F8_E5M2, 0},
    };
    /* One f32 source, reused (and re-encoded) for every codec: elements sized so the *input*
     * of each codec is mb MiB. */
    size_t max_n = mb * 1024 * 1024; /* fp8 input: 1 byte per element */
    float *f32 = malloc(max_n * sizeof(float));
    void *enc = malloc(max_n * 2);
    if (!f32 || !enc) as_die("out of memory for %zu MiB arrays", mb);
    for (size_t i = 0; i < max_n; i++)
        f32[i] = rand_weight() * 100.0f;

    printf("# dtype codec throughput, single thread, input %zu MiB, best of 5\n", mb);
    printf("%-18s %12s %14s\n", "codec", "GB/s(in)", "Gelem/s");
    for (size_t c = 0; c < sizeof codecs / sizeof *codecs; c++) {
        const struct codec *k = &codecs[c];
        size_t in_elem = k->to_f32 ? (size_t)as_dtype_traits[k->t].bits / 8 : 4;
        size_t n = mb * 1024 * 1024 / in_elem;
        if (k->to_f32 && as_convert_from_f32(k->t, f32, enc, n)) as_die_last(); /* input data */
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now();
            int rc = k->to_f32 ? as_convert_to_f32(k->t, enc, f32, n)
                               : as_convert_from_f32(k->t, f32, enc, n);
            double dt = now() - t0;
            if (rc) as_die_last();
            if (dt < best)
                best = dt; /* decoding overwrites f32 with decoded, still realistic values */
        }
        printf("%-18s %12.2f %14.3f\n", k->name, (double)(n * in_elem) / best / 1e9,
               (double)n / best / 1e9);
    }
    free(f32);
    free(enc);
    return 0;
}
