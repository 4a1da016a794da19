#include "act_stats.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

int as_act_stats_init(struct as_act_stats *s, int dim, int keep, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (dim <= 0) return as_fail("act_stats: invalid dimension %d", dim);
    s->dim = dim;
    s->hsum = as_xcalloc((size_t)dim * dim, sizeof *s->hsum);
    s->sum_abs = as_xcalloc(dim, sizeof *s->sum_abs);
    s->absmax = as_xcalloc(dim, sizeof *s->absmax);
    s->chunk = as_xmalloc((size_t)dim * dim * sizeof *s->chunk);
    s->keep = keep > 0 ? keep : 0;
    if (s->keep) s->kept_rows = as_xmalloc((size_t)s->keep * dim * sizeof *s->kept_rows);
    s->rng = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    return 0;
}

void as_act_stats_free(struct as_act_stats *s) {
    free(s->hsum);
    free(s->sum_abs);
    free(s->absmax);
    free(s->chunk);
    free(s->kept_rows);
    memset(s, 0, sizeof *s);
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int as_act_stats_add(struct as_act_stats *s, const float *x, int T) {
    const int d = s->dim;
    for (int t = 0; t < T; t++) {
        const float *row = x + (size_t)t * d;
        for (int j = 0; j < d; j++) {
            float a = fabsf(row[j]);
            if (!isfinite(a))
                return as_fail("non-finite activation at token %llu, channel %d",
                               (unsigned long long)(s->tokens + t), j);
            s->sum_abs[j] += a;
            if (a > s->absmax[j]) s->absmax[j] = a;
        }
        if (s->keep) { /* reservoir sampling (Algorithm R) keeps a uniform sample of rows */
            uint64_t seen = s->tokens + t;
            if (s->kept < s->keep) {
                memcpy(s->kept_rows + (size_t)s->kept * d, row, d * sizeof *row);
                s->kept++;
            } else {
                uint64_t r = splitmix64(&s->rng) % (seen + 1);
                if (r < (uint64_t)s->keep) memcpy(s->kept_rows + r * d, row, d * sizeof *row);
            }
        }
    }
    for (int j = 0; j < d; j++)
        if (s->absmax[j] > s->tensor_absmax) s->tensor_absmax = s->absmax[j];
    /* fp32 SYRK per chunk (BLAS-3 speed), fp64 across chunks so that long calibration runs do not
     * lose the small contributions of later tokens. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, T, 1.0f, x, d, 0.0f, s->chunk, d);
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) s->hsum[(size_t)i * d + j] += s->chunk[(size_t)i * d + j];
    s->tokens += T;
    return 0;
}

void as_act_stats_hessian(const struct as_act_stats *s, float *H) {
    const int d = s->dim;
    double norm = s->tokens ? 2.0 / (double)s->tokens : 0.0;
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            float v = (float)(s->hsum[(size_t)i * d + j] * norm);
            H[(size_t)i * d + j] = v;
            H[(size_t)j * d + i] = v;
        }
}

void as_act_stats_mean_abs(const struct as_act_stats *s, float *out) {
    for (int j = 0; j < s->dim; j++)
        out[j] = s->tokens ? (float)(s->sum_abs[j] / (double)s->tokens) : 0.0f;
}
