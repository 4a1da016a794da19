#include "eval_metrics.h"

#include <math.h>
#include <stdlib.h>

#include "as_error.h"

void as_log_softmax(const float *logits, int n_vocab, double *out) {
    double mx = -INFINITY;
    for (int v = 0; v < n_vocab; v++)
        if (logits[v] > mx) mx = logits[v];
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)logits[v] - mx);
    double lse = mx + log(sum);
    for (int v = 0; v < n_vocab; v++) out[v] = (double)logits[v] - lse;
}

void as_nll_add(struct as_nll_acc *a, double nll) {
    a->sum += nll;
    a->sum2 += nll * nll;
    a->n++;
}

double as_nll_ppl(const struct as_nll_acc *a) { return a->n ? exp(a->sum / a->n) : NAN; }

/* llama.cpp perplexity: err = ppl * sqrt((E[nll²] - E[nll]²) / (n - 1)). */
double as_nll_ppl_err(const struct as_nll_acc *a) {
    if (a->n < 2) return NAN;
    double mean = a->sum / a->n, var = a->sum2 / a->n - mean * mean;
    return var > 0 ? as_nll_ppl(a) * sqrt(var / (a->n - 1)) : 0.0;
}

void as_kld_add(struct as_kld_acc *a, const double *logp_base, const double *logp_cand,
                int n_vocab, int target) {
    double kl = 0;
    int top_b = 0, top_c = 0;
    for (int v = 0; v < n_vocab; v++) {
        kl += exp(logp_base[v]) * (logp_base[v] - logp_cand[v]);
        if (logp_base[v] > logp_base[top_b]) top_b = v;
        if (logp_cand[v] > logp_cand[top_c]) top_c = v;
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4096;
        a->kld = as_xrealloc(a->kld, a->cap * sizeof *a->kld);
    }
    a->kld[a->n++] = kl;
    double dp = exp(logp_cand[target]) - exp(logp_base[target]);
    a->sum_dp += dp;
    a->sum_dp2 += dp * dp;
    a->same_top += top_b == top_c;
}

void as_kld_free(struct as_kld_acc *a) {
    free(a->kld);
    a->kld = NULL;
    a->n = a->cap = 0;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

double as_percentile_sorted(const double *v, size_t n, double q) {
    if (!n) return NAN;
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) return v[n - 1];
    double f = pos - (double)i;
    return v[i] + f * (v[i + 1] - v[i]);
}

void as_kld_summarize(struct as_kld_acc *a, struct as_kld_summary *s) {
    size_t n = a->n;
    s->n = n;
    double sum = 0, sum2 = 0;
    for (size_t i = 0; i < n; i++) {
        sum += a->kld[i];
        sum2 += a->kld[i] * a->kld[i];
    }
    s->mean = n ? sum / n : NAN;
    s->mean_err = n > 1 ? sqrt(fmax(sum2 / n - s->mean * s->mean, 0) / (n - 1)) : NAN;
    qsort(a->kld, n, sizeof *a->kld, cmp_double);
    s->min = n ? a->kld[0] : NAN;
    s->max = n ? a->kld[n - 1] : NAN;
    s->p999 = as_percentile_sorted(a->kld, n, 0.999);
    s->p99 = as_percentile_sorted(a->kld, n, 0.99);
    s->p95 = as_percentile_sorted(a->kld, n, 0.95);
    s->p90 = as_percentile_sorted(a->kld, n, 0.90);
    s->median = as_percentile_sorted(a->kld, n, 0.5);
    s->p10 = as_percentile_sorted(a->kld, n, 0.10);
    s->p05 = as_percentile_sorted(a->kld, n, 0.05);
    s->p01 = as_percentile_sorted(a->kld, n, 0.01);
    s->dp_mean = n ? a->sum_dp / n : NAN;
    s->dp_rms = n ? sqrt(a->sum_dp2 / n) : NAN;
    s->same_top = n ? (double)a->same_top / n : NAN;
}
