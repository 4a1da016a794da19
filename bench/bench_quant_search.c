/* bench_quant_search: round-to-nearest with the importance-weighted scale search (quant_search.c)
 * on a real model, as a quantized tensor stream for as-pack, until the lead wires the search into
 * as-gptq. The importance of input column k is diag(H)[k] of the layer group's Hessian from
 * as-calib (llama.cpp's importance matrix is the same quantity: mean x_k^2).
 *   as-calib -m MODEL -d TEXT | bench_quant_search MODEL BITS SYM SIGNED > quant.stream
 * stderr: per-layer weighted error of the searched fit relative to the plain GPTQ-convention fit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "model.h"
#include "qstream.h"
#include "quant_int.h"
#include "quant_search.h"
#include "stream.h"

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc != 5) as_die("usage: bench_quant_search MODEL BITS SYM SIGNED < calib > quant");
    struct as_model *m = as_model_load(argv[1]);
    if (!m) as_die_last();
    struct quant_search_params p = {.bits = atoi(argv[2]),
                                    .sym = atoi(argv[3]),
                                    .signed_scale = atoi(argv[4]),
                                    .fp16_scale = 1};
    int L = m->cfg.n_layers;
    float **hdiag = as_xcalloc((size_t)L * AS_GROUP_COUNT, sizeof *hdiag);
    struct as_stream_reader *r = as_stream_open("-");
    if (!r) as_die_last();
    const struct as_rec *rec;
    int rc;
    while ((rc = as_stream_next(r, &rec)) == 1) {
        if (!rec->role || strcmp(rec->role, "hessian") || rec->layer < 0 || rec->layer >= L)
            continue;
        int g = -1;
        for (int i = 0; i < AS_GROUP_COUNT; i++)
            if (strstr(rec->name, as_group_names[i])) g = i;
        const float *H = as_stream_payload(r);
        if (g < 0 || !H) as_die("tensor %s: not a hessian of a known group", rec->name);
        int K = (int)rec->shape[0];
        float *d = as_xmalloc(sizeof(float) * K);
        for (int k = 0; k < K; k++)
            d[k] = H[(size_t)k * K + k] > 0 ? H[(size_t)k * K + k] : 0;
        free(hdiag[rec->layer * AS_GROUP_COUNT + g]);
        hdiag[rec->layer * AS_GROUP_COUNT + g] = d;
    }
    if (rc < 0) as_die_last();
    as_stream_close(r);
    struct as_stream_writer *w = as_stream_writer_fd(1, "stdout");
    double tot_plain = 0, tot_search = 0;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < AS_LIN_COUNT; k++) {
            int N, K;
            as_model_linear_shape(m, (enum as_linear)k, &N, &K);
            const float *W = m->layers[l].w[k];
            const float *h = hdiag[l * AS_GROUP_COUNT + as_linear_group_of((enum as_linear)k)];
            if (!h) as_die("layer %d: no hessian for %s in the input stream", l, as_linear_name(k));
            struct as_qlinear ql = {.N = N, .K = K, .bits = p.bits, .group_size = 32, .sym = p.sym};
            int G = as_qlinear_groups(&ql);
            ql.q = as_xmalloc((size_t)N * K);
            ql.scale = as_xmalloc(sizeof(float) * N * G);
            ql.zero = as_xmalloc(sizeof(int32_t) * N * G);
            ql.g_idx = as_xmalloc(sizeof(int32_t) * K);
            if (quant_search_rtn(W, N, K, 32, h, &p, ql.q, ql.scale, ql.zero, ql.g_idx))
                as_die_last();
            double ep = 0, es = 0;
            for (int n = 0; n < N; n++)
                for (int g = 0; g < G; g++) {
                    int k0 = 32 * g, len = K - k0 < 32 ? K - k0 : 32;
                    float s0;
                    int32_t z0;
                    quant_int_fit_group(W + (size_t)n * K + k0, len, p.bits, p.sym, &s0, &z0);
                    ep += quant_search_error(W + (size_t)n * K + k0, h + k0, len, p.bits, s0, z0);
                    es += quant_search_error(W + (size_t)n * K + k0, h + k0, len, p.bits,
                                             ql.scale[n * G + g], ql.zero[n * G + g]);
                }
            tot_plain += ep, tot_search += es;
            char pfx[256];
            as_linear_prefix(l, (enum as_linear)k, pfx, sizeof pfx);
            if (as_qlinear_write(w, pfx, l, &ql, NULL)) as_die_last();
            free(ql.q), free(ql.scale), free(ql.zero), free(ql.g_idx);
        }
    if (as_stream_write_end(w)) as_die_last();
    as_stream_writer_free(w);
    fprintf(stderr, "weighted error, search / plain fit: %.4f\n", tot_search / tot_plain);
    for (int i = 0; i < L * AS_GROUP_COUNT; i++)
        free(hdiag[i]);
    free(hdiag);
    as_model_free(m);
    return 0;
}
