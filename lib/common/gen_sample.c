/* gen_sample: the generators' token choice (see gen_sample.h). */
#include "gen_sample.h"

#include <math.h>

float as_sample_uniform(uint64_t *st) {
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return (float)((*st * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

int as_sample_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

float as_sample_exps(const float *logits, int n, float temp, float *e) {
    float mx = logits[as_sample_argmax(logits, n)], sum = 0;
    for (int i = 0; i < n; i++)
        sum += (e[i] = expf((logits[i] - mx) / temp));
    return sum;
}

int as_sample_from(const float *e, int n, float sum, uint64_t *st) {
    float r = as_sample_uniform(st) * sum, cdf = 0;
    for (int i = 0; i < n; i++) {
        cdf += e[i];
        if (r < cdf) return i;
    }
    for (int i = n - 1; i > 0; i--) /* r rounded up to the sum: the last token with mass */
        if (e[i] > 0) return i;
    return 0;
}

int as_sample_token(const float *logits, int n, float temp, float *e, uint64_t *st) {
    if (temp <= 0) return as_sample_argmax(logits, n);
    return as_sample_from(e, n, as_sample_exps(logits, n, temp, e), st);
}
