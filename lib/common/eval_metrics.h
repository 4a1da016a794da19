/* eval_metrics: the numbers as-eval reports, computed as llama.cpp's perplexity tool does.
 *
 *   - log-softmax of a logit row in fp64;
 *   - perplexity = exp(mean NLL) with the error estimate ppl * sqrt(var(NLL) / (n - 1));
 *   - KL divergence of a candidate against a base distribution per token,
 *     KL = sum_v p_base(v) (log p_base(v) - log p_cand(v)), its mean ± error, percentiles,
 *     Δp of the correct token (mean and RMS) and top-1 ("same top p") agreement.
 * Per-token KL values are kept (8 bytes a token) for the percentiles. */
#ifndef AS_EVAL_METRICS_H
#define AS_EVAL_METRICS_H

#include <stddef.h>

/* out[v] = logits[v] - logsumexp(logits), in double. */
void as_log_softmax(const float *logits, int n_vocab, double *out);

struct as_nll_acc {
    double sum, sum2;
    size_t n;
};
void as_nll_add(struct as_nll_acc *a, double nll);
double as_nll_ppl(const struct as_nll_acc *a);
double as_nll_ppl_err(const struct as_nll_acc *a);

struct as_kld_acc {
    double *kld; /* per scored token */
    size_t n, cap;
    double sum_dp, sum_dp2; /* Δp = p_cand(correct) - p_base(correct) */
    size_t same_top;
};
/* Add one scored token: base/cand are log-softmax rows, `target` the correct next token. */
void as_kld_add(struct as_kld_acc *a, const double *logp_base, const double *logp_cand,
                int n_vocab, int target);
void as_kld_free(struct as_kld_acc *a);

struct as_kld_summary {
    size_t n;
    double mean, mean_err, max, p999, p99, p95, p90, median, p10, p05, p01, min;
    double dp_mean, dp_rms, same_top; /* same_top as a fraction */
};
/* Sorts the stored values in place. */
void as_kld_summarize(struct as_kld_acc *a, struct as_kld_summary *s);
/* Linear-interpolated percentile (q in [0,1]) of sorted values. */
double as_percentile_sorted(const double *v, size_t n, double q);

#endif
