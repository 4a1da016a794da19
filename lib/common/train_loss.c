/* train_loss: CE and KD losses (see train_loss.h); every row in double, log-softmax by the
 * max-shifted log-sum-exp. */
#include "train_loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"

static const char *kd_names[] = {"none", "kl", "rkl", "cakld"};

int as_kd_parse(const char *name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, kd_names[i]) == 0) return i;
    return -1;
}

const char *as_kd_name(enum as_kd_kind k) {
    return (unsigned)k < 4 ? kd_names[k] : "?";
}

/* logp[i] = z[i] - logsumexp(z) */
static void log_softmax(const float *z, int V, double *logp) {
    double mx = z[0];
    for (int i = 1; i < V; i++)
        if (z[i] > mx) mx = z[i];
    double s = 0;
    for (int i = 0; i < V; i++)
        s += exp((double)z[i] - mx);
    double lse = mx + log(s);
    for (int i = 0; i < V; i++)
        logp[i] = (double)z[i] - lse;
}

void as_loss_rows(const float *logits, const float *teacher, const int *targets, int T, int V,
                  const struct as_loss_cfg *cfg, float scale, float *dlogits,
                  struct as_loss_sums *sums) {
    double *ls = as_xmalloc((size_t)V * sizeof(double)),
           *lt = as_xmalloc((size_t)V * sizeof(double));
    double *g = as_xmalloc((size_t)V * sizeof(double));
    int use_kd = cfg->kd != AS_KD_NONE && cfg->w_kd != 0 && teacher;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        int y = targets ? targets[t] : -1;
        float *d = dlogits ? dlogits + (size_t)t * V : NULL;
        if (y < 0 && !use_kd) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        log_softmax(z, V, ls);
        double loss = 0, ce = 0, kd = 0;
        for (int i = 0; i < V; i++)
            g[i] = 0;
        if (y >= 0 && cfg->w_ce != 0) {
            ce = -ls[y];
            for (int i = 0; i < V; i++)
                g[i] += cfg->w_ce * exp(ls[i]);
            g[y] -= cfg->w_ce;
            loss += cfg->w_ce * ce;
        }
        if (use_kd) {
            log_softmax(teacher + (size_t)t * V, V, lt);
            double fkl = 0, rkl = 0;
            for (int i = 0; i < V; i++) {
                double pt = exp(lt[i]), ps = exp(ls[i]);
                fkl += pt * (lt[i] - ls[i]);
                rkl += ps * (ls[i] - lt[i]);
            }
            /* d fkl/dz = p - pt; d rkl/dz_i = p_i (log p_i - log pt_i - rkl) */
            double wf = 0, wr = 0;
            if (cfg->kd == AS_KD_KL) wf = 1, kd = fkl;
            if (cfg->kd == AS_KD_RKL) wr = 1, kd = rkl;
            if (cfg->kd == AS_KD_CAKLD) {
                double conf = y >= 0 ? exp(lt[y]) : 0;
                wr = conf, wf = 1 - conf, kd = conf * rkl + (1 - conf) * fkl;
            }
            for (int i = 0; i < V; i++) {
                double ps = exp(ls[i]), pt = exp(lt[i]);
                g[i] += cfg->w_kd * (wf * (ps - pt) + wr * ps * (ls[i] - lt[i] - rkl));
            }
            loss += cfg->w_kd * kd;
        }
        if (d)
            for (int i = 0; i < V; i++)
                d[i] = (float)(scale * g[i]);
        if (sums) sums->ce += ce, sums->kd += kd, sums->loss += loss, sums->rows++;
    }
    free(ls), free(lt), free(g);
}
